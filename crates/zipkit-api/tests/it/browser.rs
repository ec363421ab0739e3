//! The dashboard in a real browser: runs the API, a worker and every service for real, then
//! `tests/browser/dashboard.mjs` drives Debian's Chromium through it (Playwright, JavaScript off
//! for the main walk). Afterwards this side checks what the browser cannot see: the webhook's
//! signature at the receiver and the archive in the bucket.
//!
//! Needs Node.js, `npm ci` in `tests/browser` and `/usr/bin/chromium`; `scripts/test.sh`
//! installs all three.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::{TestApp, settings};
use zipkit_domain::enums::ZipStatus;
use zipkit_domain::models::Zip;
use zipkit_test_support::receiver::WebhookReceiver;
use zipkit_test_support::services::{s3_access_key, s3_endpoint, s3_secret_key};
use zipkit_test_support::sources::{Behaviour, SourceServer};
use zipkit_test_support::{TestBroker, TestBucket, TestDatabase};

const PASSWORD: &str = "a browser-typed password";

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Where the screenshots go: `ZIPKIT_SCREENSHOTS`, or `target/dashboard-screenshots`.
fn screenshot_dir() -> PathBuf {
    std::env::var_os("ZIPKIT_SCREENSHOTS").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/dashboard-screenshots"),
        PathBuf::from,
    )
}

fn chromium() -> String {
    std::env::var("CHROMIUM_PATH").unwrap_or_else(|_| "/usr/bin/chromium".into())
}

/// What the test needs from the machine, with how to get it when missing.
fn check_prerequisites() {
    assert!(
        std::process::Command::new("node")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success()),
        "Node.js is missing: run scripts/test.sh (it installs it) or apt-get install nodejs npm"
    );
    assert!(
        browser_dir().join("node_modules/playwright-core").is_dir(),
        "playwright-core is missing: run scripts/test.sh, or npm ci in {}",
        browser_dir().display()
    );
    assert!(
        Path::new(&chromium()).exists(),
        "{} is missing: run scripts/test.sh, or apt-get install chromium",
        chromium()
    );
}

// Multi-threaded: the browser script runs while the API and the worker serve in this process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_manages_the_project_in_a_real_browser() {
    check_prerequisites();
    let db = TestDatabase::migrated(zipkit_domain::db::MIGRATIONS).await;
    let broker = TestBroker::new().await;
    let store = TestBucket::new().await;
    let receiver = WebhookReceiver::start(0).await;
    let sources = SourceServer::start(vec![(
        "report.txt",
        Behaviour::Serve(b"Monthly figures, as the browser test asked for them.\n".repeat(200)),
    )])
    .await;

    let api_settings = settings(db.url(), &broker.url());
    let crypto = api_settings.crypto.clone();
    let app = TestApp::start(api_settings).await;
    let (status, _) = app
        .get_until("/readyz", |_, body| body["checks"]["broker"] == "ok")
        .await;
    assert_eq!(status, 200);
    // A worker in this process builds the zip and delivers the webhook, configured as in
    // development (private networks allowed: every service here is on loopback).
    let mut worker_settings: zipkit_worker::Settings =
        common::development_worker(db.url(), &broker.url()).load();
    // The API's key ring, so the worker can open the bucket credentials the browser stored.
    worker_settings.crypto = crypto;
    let worker = zipkit_worker::Worker::build(worker_settings)
        .await
        .expect("worker");
    let (stop_worker, worker_stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(worker.run_until(async move {
        let _ = worker_stopped.await;
    }));

    let project_name = "Browser project";
    let email = "person@example.com";
    common::owner_of_new_project(&db, email, PASSWORD, project_name).await;

    let shots = screenshot_dir();
    // Only this run's screenshots count below: earlier ones are removed first.
    if let Ok(old) = std::fs::read_dir(&shots) {
        for file in old.flatten() {
            if file.path().extension().is_some_and(|e| e == "png") {
                std::fs::remove_file(file.path()).expect("remove an old screenshot");
            }
        }
    }
    let mut node = std::process::Command::new("node");
    node.arg(browser_dir().join("dashboard.mjs"))
        .current_dir(browser_dir())
        .env("ZIPKIT_BASE_URL", &app.base)
        .env("ZIPKIT_EMAIL", email)
        .env("ZIPKIT_PASSWORD", PASSWORD)
        .env("ZIPKIT_PROJECT", project_name)
        .env("ZIPKIT_BUCKET", store.name())
        .env("ZIPKIT_S3_ENDPOINT", s3_endpoint())
        .env("ZIPKIT_S3_ACCESS_KEY", s3_access_key())
        .env("ZIPKIT_S3_SECRET_KEY", s3_secret_key())
        .env("ZIPKIT_SOURCE_URL", sources.url("report.txt"))
        .env("ZIPKIT_RECEIVER_URL", receiver.url())
        .env("ZIPKIT_SCREENSHOTS", &shots)
        .env("CHROMIUM_PATH", chromium())
        .stdin(Stdio::null());
    // Off the async threads: the API and the worker keep serving while the browser walks.
    let output = tokio::task::spawn_blocking(move || node.output())
        .await
        .expect("join")
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the browser walk failed (screenshot: {}/failure.png)\n{stdout}\n{stderr}",
        shots.display()
    );
    let result: serde_json::Value = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .map(|json| serde_json::from_str(json).expect("RESULT is JSON"))
        .expect("the script reports its result");

    // The test event reached the receiver, signed with the secret the browser was shown once.
    let secret = result["signing_secret"].as_str().expect("secret");
    let received = receiver.received();
    let test_event = received
        .iter()
        .find(|r| {
            serde_json::from_slice::<serde_json::Value>(&r.body)
                .is_ok_and(|e| e["type"] == "webhook.test")
        })
        .expect("the receiver got the test event");
    assert!(zipkit_domain::webhooks::verify(
        secret,
        &test_event.headers["zipkit-signature"],
        &test_event.body,
        chrono::Utc::now().timestamp(),
        300
    ));

    // The zip the browser saw succeed is in the bucket.
    let zip_id: zipkit_domain::ZipId = result["zip_id"]
        .as_str()
        .expect("zip id")
        .parse()
        .expect("a zip id");
    let zip = Zip::find_any(&mut db.connect().await, zip_id)
        .await
        .expect("query")
        .expect("zip");
    assert_eq!(zip.status, ZipStatus::Succeeded);
    let object = store
        .client()
        .head_object()
        .bucket(store.name())
        .key("browser/monthly.zip")
        .send()
        .await
        .expect("the archive is in the bucket");
    assert_eq!(object.content_length(), zip.result_size);
    for name in ["01-sign-in", "04-buckets", "10-zips", "12-webhook"] {
        assert!(
            shots.join(format!("{name}.png")).is_file(),
            "screenshot {name}"
        );
    }

    let _ = stop_worker.send(());
    worker.await.expect("worker task");
    app.stop().await;
}
