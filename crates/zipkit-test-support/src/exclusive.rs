//! Tests that load the local S3 store with gigabytes and count what crossed it run one at a time,
//! also across test processes (nextest runs each test in its own): beside another such test the
//! store's disk is shared, reads slow past the worker's stall watch, and the counts measure the
//! machine rather than zipkit. Each holds an advisory lock on a file for its run.

/// Held for a test's run; the lock goes with it (closing the file releases it, also when the
/// test process dies).
#[derive(Debug)]
pub struct Exclusive(#[allow(dead_code, reason = "held for its lock")] std::fs::File);

/// Waits until no other test holds `name`, then holds it.
pub async fn exclusive(name: &str) -> Exclusive {
    let path = std::env::temp_dir().join(format!("zipkit-exclusive-{name}.lock"));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    tokio::task::spawn_blocking(move || {
        file.lock().expect("lock the file");
        Exclusive(file)
    })
    .await
    .expect("the lock's task")
}
