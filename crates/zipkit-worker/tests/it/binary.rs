//! The `zipkit-worker` binary as operators run it: connects, declares the topology, stops on SIGTERM.

use std::time::Duration;

use zipkit_test_support::process::{KillOnDrop, sigterm, wait_for_exit, zipkit_command};
use zipkit_test_support::{TestBroker, TestDatabase};

const BINARY: &str = env!("CARGO_BIN_EXE_zipkit-worker");

#[tokio::test]
async fn the_worker_connects_declares_its_queues_and_exits_zero_on_sigterm() {
    let (db, vhost) = (
        TestDatabase::migrated(zipkit_domain::db::MIGRATIONS).await,
        TestBroker::new().await,
    );
    let mut child = KillOnDrop(
        zipkit_command(BINARY, db.url(), &vhost.url())
            .spawn()
            .unwrap(),
    );

    let mut queues = Vec::new();
    for _ in 0..100 {
        queues = vhost
            .queues()
            .await
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        if queues.len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    queues.sort();
    assert_eq!(
        queues,
        ["zipkit.jobs", "zipkit.jobs.dead", "zipkit.jobs.retry"]
    );
    // Ready means PostgreSQL answered too; give the readiness loop its moment.
    tokio::time::sleep(Duration::from_millis(500)).await;

    sigterm(&child.0);
    let (status, output) = wait_for_exit(&mut child.0, Duration::from_secs(20));
    assert!(status.success(), "exit {status:?}: {output}");
    assert!(output.contains("zipkit-worker ready"), "{output}");
    assert!(output.contains("received SIGTERM"), "{output}");
    assert!(output.contains("zipkit-worker stopped"), "{output}");
}
