//! `zipkit-api serve` runs the HTTP API; `zipkit-api migrate` applies database migrations
//! (run once per release, e.g. as a Helm hook, never on every pod start).

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use zipkit_api::{Application, Settings};
use zipkit_runtime::settings::{self, SettingsSources};
use zipkit_runtime::{shutdown, telemetry};

#[derive(Parser)]
#[command(name = "zipkit-api", version, about = "zipkit HTTP API")]
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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings: Settings =
        settings::load(&SettingsSources::from_env()).context("loading settings")?;
    telemetry::init("zipkit-api", &settings.telemetry);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let app = Application::build(settings).await?;
            app.run_until(shutdown::signal()).await?;
        }
        Command::Migrate => {
            let applied = zipkit_domain::db::run_migrations(&settings.database.url).await?;
            if applied.is_empty() {
                println!("database is up to date");
            }
            for version in applied {
                println!("applied {version}");
            }
        }
    }
    Ok(())
}
