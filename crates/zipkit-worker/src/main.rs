//! `zipkit-worker`: loads settings, starts the worker, stops on SIGTERM.

use anyhow::Context as _;
use zipkit_runtime::settings::{self, SettingsSources};
use zipkit_runtime::{shutdown, telemetry};
use zipkit_worker::{Settings, Worker};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings: Settings =
        settings::load(&SettingsSources::from_env()).context("loading settings")?;
    telemetry::init("zipkit-worker", &settings.telemetry);
    let worker = Worker::build(settings).await?;
    worker.run_until(shutdown::signal()).await;
    Ok(())
}
