//! `zipkit-worker`: loads settings, starts the worker, stops on SIGTERM.

use anyhow::Context as _;
use zipkit_runtime::settings::{self, SettingsSources};
use zipkit_runtime::{shutdown, telemetry};
use zipkit_worker::{Settings, Worker};

/// mimalloc instead of glibc's malloc: with many threads handing buffers to each other (download
/// tasks, the compression pool, part uploads) glibc's per-thread arenas fragment, and the
/// worker's resident memory crept up with archive size (docs/PERFORMANCE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
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
