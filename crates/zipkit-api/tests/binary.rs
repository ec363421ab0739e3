//! The `zipkit-api` binary as operators run it: `migrate`, `serve`, SIGTERM, bad configuration.

use std::time::Duration;

use zipkit_test_support::process::{KillOnDrop, free_port, sigterm, wait_for_exit, zipkit_command};
use zipkit_test_support::{TestBroker, TestDatabase};

const BINARY: &str = env!("CARGO_BIN_EXE_zipkit-api");

#[tokio::test]
async fn migrate_applies_every_migration_once() {
    let (db, vhost) = (TestDatabase::empty().await, TestBroker::new().await);
    let mut first = zipkit_command(BINARY, db.url(), &vhost.url())
        .arg("migrate")
        .spawn()
        .unwrap();
    let (status, output) = wait_for_exit(&mut first, Duration::from_secs(60));
    assert!(status.success(), "{output}");
    assert_eq!(output.matches("applied ").count(), 4, "{output}");

    let mut second = zipkit_command(BINARY, db.url(), &vhost.url())
        .arg("migrate")
        .spawn()
        .unwrap();
    let (status, output) = wait_for_exit(&mut second, Duration::from_secs(60));
    assert!(status.success(), "{output}");
    assert!(output.contains("database is up to date"), "{output}");
}

#[tokio::test]
async fn serve_becomes_ready_and_exits_zero_on_sigterm() {
    let (db, vhost) = (
        TestDatabase::migrated(zipkit_domain::db::MIGRATIONS).await,
        TestBroker::new().await,
    );
    let port = free_port();
    let mut child = KillOnDrop(
        zipkit_command(BINARY, db.url(), &vhost.url())
            .env("ZIPKIT__API__PORT", port.to_string())
            .spawn()
            .unwrap(),
    );
    let mut ready = false;
    for _ in 0..200 {
        let answer = reqwest::get(format!("http://127.0.0.1:{port}/readyz")).await;
        if answer.is_ok_and(|r| r.status() == 200) {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "the API never became ready");
    sigterm(&child.0);
    let (status, output) = wait_for_exit(&mut child.0, Duration::from_secs(20));
    assert!(status.success(), "exit {status:?}: {output}");
    assert!(output.contains("zipkit-api stopped"), "{output}");
}

#[test]
fn a_missing_setting_stops_the_start_naming_the_key() {
    // Production has no environment file: every secret must come from the deployment.
    let mut child = zipkit_command(BINARY, "", "")
        .env("ZIPKIT_ENV", "production")
        .env_remove("ZIPKIT__DATABASE__URL")
        .spawn()
        .unwrap();
    let (status, output) = wait_for_exit(&mut child, Duration::from_secs(20));
    assert!(!status.success());
    assert!(
        output.contains("missing configuration field \"database.url\""),
        "{output}"
    );

    let mut child = zipkit_command(BINARY, "postgres://x@127.0.0.1/x", "amqp://127.0.0.1")
        .env("ZIPKIT_ENV", "production")
        .spawn()
        .unwrap();
    let (status, output) = wait_for_exit(&mut child, Duration::from_secs(20));
    assert!(!status.success());
    assert!(
        output.contains("missing configuration field \"crypto\""),
        "{output}"
    );
}

#[test]
fn a_malformed_setting_stops_the_start_naming_the_key() {
    let mut child = zipkit_command(BINARY, "postgres://x@127.0.0.1/x", "amqp://127.0.0.1")
        .env("ZIPKIT__API__PORT", "eighty")
        .spawn()
        .unwrap();
    let (status, output) = wait_for_exit(&mut child, Duration::from_secs(20));
    assert!(!status.success());
    assert!(output.contains("api.port"), "{output}");
}
