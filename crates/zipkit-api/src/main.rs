//! `zipkit-api`: `serve` runs the HTTP API (the default); `migrate` applies database migrations
//! (once per release, e.g. as a Helm hook, never on every pod start); the other subcommands are
//! the operator CLI (see `cli.rs` and docs/CLI.md).

use clap::{Parser, Subcommand};
use zipkit_api::cli::{
    self, BucketCommand, CliError, KeysCommand, ProjectCommand, TokenCommand, UserCommand,
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

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    if let Err(err) = run(cli).await {
        eprintln!("error: {}", err.message);
        std::process::exit(err.exit_code);
    }
}

async fn run(cli: Cli) -> Result<(), CliError> {
    let command = cli.command.unwrap_or(Command::Serve);
    if let Command::Keys(KeysCommand::Generate) = command {
        // Needs no configuration: it is how the first key is made.
        return cli::keys_generate();
    }
    let settings: Settings =
        settings::load(&SettingsSources::from_env()).map_err(|e| CliError {
            exit_code: 1,
            message: format!("loading settings: {e}"),
        })?;
    match command {
        Command::Serve => {
            telemetry::init("zipkit-api", &settings.telemetry);
            let app = Application::build(settings).await?;
            app.run_until(shutdown::signal()).await?;
        }
        Command::Migrate => {
            telemetry::init("zipkit-api", &settings.telemetry);
            let applied = zipkit_domain::db::run_migrations(&settings.database.url).await?;
            if applied.is_empty() {
                println!("database is up to date");
            }
            for version in applied {
                println!("applied {version}");
            }
        }
        Command::User(c) => cli::user(&settings, c).await?,
        Command::Project(c) => cli::project(&settings, c).await?,
        Command::Token(c) => cli::token(&settings, c).await?,
        Command::Bucket(c) => cli::bucket(&settings, c).await?,
        Command::Keys(c) => cli::keys(&settings, c).await?,
        Command::Webhook(c) => cli::webhook(&settings, c).await?,
    }
    Ok(())
}
