//! `zipkit-worker`: loads settings, starts the worker, stops on SIGTERM.

use anyhow::Context as _;
use zipkit_runtime::settings::{self, SettingsSources};
use zipkit_runtime::{shutdown, telemetry};
use zipkit_worker::{Settings, Worker};

/// glibc's malloc, told at start-up to hand every block of 128 KiB or more straight back to the
/// kernel when it is freed (a fixed mmap threshold instead of one that rises with the largest
/// block freed) and to keep two arenas instead of eight per core. Without it, freed download
/// and compression buffers stayed resident for reuse and the worker's memory sat at 2–3× its live
/// buffers; mimalloc did the same (docs/PERFORMANCE.md, "Memory").
#[allow(unsafe_code)]
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

fn main() -> anyhow::Result<()> {
    tune_allocator();
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
