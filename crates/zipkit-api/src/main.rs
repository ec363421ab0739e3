//! `zipkit-api`: `serve` runs the HTTP API (the default); `migrate` applies database migrations
//! (once per release, e.g. as a Helm hook, never on every pod start); the other subcommands are
//! the operator CLI (see `cli/` and docs/CLI.md).

use clap::{Parser, Subcommand};
use zipkit_api::cli::{
    self, BucketCommand, CliError, KeysCommand, Output, ProjectCommand, TokenCommand, UserCommand,
    WebhookCommand,
};
use zipkit_api::{Application, Settings};
use zipkit_runtime::settings::{self, SettingsSources};
use zipkit_runtime::{shutdown, telemetry};

#[derive(Parser)]
#[command(
    name = "zipkit-api",
    version,
    about = "zipkit HTTP API and operator CLI"
)]
struct Cli {
    /// `json` prints what a command made as one JSON object (ids, names, a secret shown once),
    /// and errors as `{"error": {...}}` on stderr, for scripts.
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    output: Output,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Dashboard users.
    #[command(subcommand)]
    User(UserCommand),
    /// Projects and their members.
    #[command(subcommand)]
    Project(ProjectCommand),
    /// API access tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Buckets archives are written to.
    #[command(subcommand)]
    Bucket(BucketCommand),
    /// Encryption keys for stored secrets.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Webhook endpoints: add, list, test, remove.
    #[command(subcommand)]
    Webhook(WebhookCommand),
}

fn main() {
    // Before any thread starts: mallopt settings are process-wide.
    zipkit_runtime::allocator::tune();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            std::process::exit(1);
        }
    };
    runtime.block_on(main_async());
}

async fn main_async() {
    let cli = Cli::parse();
    let output = cli.output;
    if let Err(err) = run(cli).await {
        match output {
            Output::Text => eprintln!("error: {}", err.message),
            Output::Json => eprintln!(
                "{}",
                serde_json::json!({"error": {"message": err.message, "exit_code": err.exit_code}})
            ),
        }
        std::process::exit(err.exit_code);
    }
}

fn init_telemetry(settings: &Settings, stream: telemetry::LogStream) -> Result<(), CliError> {
    telemetry::init("zipkit-api", &settings.telemetry, stream).map_err(|e| CliError {
        exit_code: 1,
        message: e.to_string(),
    })
}

async fn run(cli: Cli) -> Result<(), CliError> {
    let (output, command) = (cli.output, cli.command.unwrap_or(Command::Serve));
    if let Command::Keys(KeysCommand::Generate) = command {
        // Needs no configuration: it is how the first key is made.
        return cli::keys_generate(output);
    }
    let settings: Settings =
        settings::load(&SettingsSources::from_env()).map_err(|e| CliError {
            exit_code: 1,
            message: format!("loading settings: {e}"),
        })?;
    match command {
        Command::Serve => {
            init_telemetry(&settings, telemetry::LogStream::Stdout)?;
            let app = Application::build(settings).await?;
            app.run_until(shutdown::signal()).await?;
            telemetry::shutdown();
        }
        Command::Migrate => {
            // Standard output carries the result (`--output json`): logs go to standard error.
            init_telemetry(&settings, telemetry::LogStream::Stderr)?;
            let applied = zipkit_domain::db::run_migrations(&settings.database.url).await?;
            if output == Output::Json {
                println!("{}", serde_json::json!({"applied": applied}));
                return Ok(());
            }
            if applied.is_empty() {
                println!("database is up to date");
            }
            for version in applied {
                println!("applied {version}");
            }
        }
        Command::User(c) => cli::user(&settings, c, output).await?,
        Command::Project(c) => cli::project(&settings, c, output).await?,
        Command::Token(c) => cli::token(&settings, c, output).await?,
        Command::Bucket(c) => cli::bucket(&settings, c, output).await?,
        Command::Keys(c) => cli::keys(&settings, c, output).await?,
        Command::Webhook(c) => cli::webhook(&settings, c, output).await?,
    }
    Ok(())
}
