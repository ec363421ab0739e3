//! `zipkit-worker`: loads settings, starts the worker, stops on SIGTERM.

use anyhow::Context as _;
use zipkit_runtime::settings::{self, SettingsSources};
use zipkit_runtime::{shutdown, telemetry};
use zipkit_worker::{Settings, Worker};

fn main() -> anyhow::Result<()> {
    zipkit_runtime::allocator::tune();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?
        .block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let settings: Settings =
        settings::load(&SettingsSources::from_env()).context("loading settings")?;
    telemetry::init(
        "zipkit-worker",
        &settings.telemetry,
        telemetry::LogStream::Stdout,
    )?;
    let worker = Worker::build(settings).await?;
    worker.run_until(shutdown::signal()).await;
    telemetry::shutdown();
    Ok(())
}
