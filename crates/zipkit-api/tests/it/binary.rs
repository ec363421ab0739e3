//! The `zipkit-api` binary as operators run it: `migrate`, `serve`, SIGTERM, bad configuration.

use std::time::Duration;

use zipkit_test_support::process::{
    KillOnDrop, free_port, run_with_input, sigterm, wait_for_exit, zipkit_command,
};
use zipkit_test_support::{TestBroker, TestDatabase};

const BINARY: &str = env!("CARGO_BIN_EXE_zipkit-api");

/// Waits up to 20 s for `url` (a `/readyz`) to answer 200.
async fn wait_ready(url: &str) {
    for _ in 0..200 {
        let answer = reqwest::get(url).await;
        if answer.is_ok_and(|r| r.status() == 200) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{url} never answered 200");
}

#[tokio::test]
async fn migrate_applies_every_migration_once() {
    let (db, vhost) = (TestDatabase::empty().await, TestBroker::new().await);
    let mut first = zipkit_command(BINARY, db.url(), &vhost.url())
        .arg("migrate")
        .spawn()
        .unwrap();
    let (status, output) = wait_for_exit(&mut first, Duration::from_secs(60));
    assert!(status.success(), "{output}");
    let on_disk = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../../migrations"))
        .unwrap()
        .filter(|e| e.as_ref().is_ok_and(|e| e.path().is_dir()))
        .count();
    assert_eq!(output.matches("applied ").count(), on_disk, "{output}");

    let mut second = zipkit_command(BINARY, db.url(), &vhost.url())
        .arg("migrate")
        .spawn()
        .unwrap();
    let (status, output) = wait_for_exit(&mut second, Duration::from_secs(60));
    assert!(status.success(), "{output}");
    assert!(output.contains("database is up to date"), "{output}");
}

#[tokio::test]
async fn migrate_with_json_output_prints_only_its_result_on_stdout_and_logs_on_stderr() {
    let (db, vhost) = (TestDatabase::empty().await, TestBroker::new().await);
    // JSON logs at info, as in production: they must not end up in the result.
    let output = zipkit_command(BINARY, db.url(), &vhost.url())
        .args(["--output", "json", "migrate"])
        .output()
        .expect("migrate runs");
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    let result: serde_json::Value =
        serde_json::from_str(&stdout).expect("stdout is one JSON object");
    assert!(
        result["applied"].as_array().is_some_and(|a| !a.is_empty()),
        "{result}"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("telemetry initialised"),
        "logs go to stderr: {stderr}"
    );
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
    wait_ready(&format!("http://127.0.0.1:{port}/readyz")).await;

    // Real traffic with a token and a bucket whose secret we know; neither may reach the logs.
    let cli = |args: &[&str], stdin: &str| {
        let output = run_with_input(
            zipkit_command(BINARY, db.url(), &vhost.url()).args(args),
            stdin,
        )
        .expect("run the CLI");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let created = cli(&["project", "create", "--name", "Acme"], "");
    let project = &created[created.rfind('(').expect("id") + 1..][..36];
    let token = cli(
        &["token", "create", "--project", project, "--name", "t"],
        "",
    )
    .trim()
    .to_owned();
    let bucket_secret = "SECRET-bucket-key-that-must-never-be-logged";
    cli(
        &[
            "bucket",
            "add",
            "--project",
            project,
            "--service",
            "s3",
            "--name",
            "logged-bucket",
            "--access-key-id",
            "AKIALOG",
            "--no-test",
        ],
        bucket_secret,
    );
    let body = serde_json::json!({"urls": [{"url": "https://example.com/a", "filename": "a"}], "bucket_name": "logged-bucket", "key": "k.zip"});
    let http = reqwest::Client::new();
    let created = http
        .post(format!("http://127.0.0.1:{port}/v1/zips"))
        .bearer_auth(&token)
        .json(&body)
        .send()
        .await
        .expect("POST");
    assert_eq!(created.status(), 202);
    let refused = http
        .get(format!("http://127.0.0.1:{port}/v1/zips"))
        .bearer_auth("zk_wrong")
        .send()
        .await
        .expect("GET");
    assert_eq!(refused.status(), 401);
    let request_id = refused
        .headers()
        .get("request-id")
        .expect("a Request-Id")
        .to_str()
        .expect("ascii")
        .to_owned();
    let envelope: serde_json::Value = refused.json().await.expect("JSON");
    assert_eq!(envelope["error"]["request_id"], request_id.as_str());
    // A token where no token belongs: in the query (as some clients send it) and in the path.
    for url in [
        format!("http://127.0.0.1:{port}/v1/zips?access_token={token}&limit=5"),
        format!("http://127.0.0.1:{port}/v1/zips?{token}"),
        format!("http://127.0.0.1:{port}/v1/{token}"),
    ] {
        let answer = http.get(url).send().await.expect("GET");
        assert!(answer.status().is_client_error());
    }

    sigterm(&child.0);
    let (status, output) = wait_for_exit(&mut child.0, Duration::from_secs(20));
    assert!(status.success(), "exit {status:?}: {output}");
    assert!(output.contains("zipkit-api stopped"), "{output}");
    assert!(
        output.contains("POST /v1/zips 202"),
        "requests are logged: {output}"
    );
    assert!(
        output.contains("GET /v1/zips 401") && output.contains(&format!("request_id={request_id}")),
        "the access log line carries the Request-Id: {output}"
    );
    assert!(
        output.contains("GET /v1/zips?REDACTED&limit=5 401"),
        "unknown query values are redacted: {output}"
    );
    assert!(!output.contains(&token), "the token was logged");
    assert!(
        !output.contains(&token[3..]),
        "part of the token was logged"
    );
    assert!(
        !output.contains(bucket_secret),
        "the bucket secret was logged"
    );
}

/// Kubernetes keeps sending to a pod for a moment after SIGTERM, until every node has seen the
/// endpoint removed. A load generator that goes on for that moment sees no failed request, and
/// `/readyz` says `draining` meanwhile.
#[tokio::test]
async fn a_load_running_through_sigterm_sees_no_failed_request_while_the_api_drains() {
    let (db, vhost) = (
        TestDatabase::migrated(zipkit_domain::db::MIGRATIONS).await,
        TestBroker::new().await,
    );
    let port = free_port();
    // Thousands of access-log lines: into a file, as a pipe nobody reads until the exit fills.
    let log = std::env::temp_dir().join(format!("zipkit-drain-{}.log", uuid::Uuid::new_v4()));
    let mut child = KillOnDrop(
        zipkit_command(BINARY, db.url(), &vhost.url())
            .env("ZIPKIT__API__PORT", port.to_string())
            .env("ZIPKIT__API__DRAIN_DELAY_SECS", "3")
            // One address sends the whole load here: the per-address limit is not under test.
            .env(
                "ZIPKIT__RATE_LIMITS__API_PER_ADDRESS_PER_MINUTE",
                "10000000",
            )
            .env("ZIPKIT__RATE_LIMITS__API_PER_ADDRESS_BURST", "10000000")
            .stdout(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&format!("{base}/readyz")).await;

    // Eight clients in a loop until `stop_at`: what endpoints still route during propagation.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let loads: Vec<_> = (0..8)
        .map(|_| {
            let (url, mut stop) = (format!("{base}/v1/openapi.json"), stop_rx.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                let (mut ok, mut failed) = (0u32, Vec::new());
                while !*stop.borrow_and_update() {
                    match http.get(&url).send().await {
                        Ok(r) if r.status() == 200 => ok += 1,
                        Ok(r) => failed.push(r.status().to_string()),
                        Err(e) => failed.push(e.to_string()),
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let signalled = std::time::Instant::now();
    sigterm(&child.0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let during = reqwest::get(format!("{base}/readyz"))
        .await
        .expect("served");
    assert_eq!(during.status(), 503, "readiness fails while draining");
    let body: serde_json::Value = during.json().await.expect("JSON");
    assert_eq!(body["status"], "draining");
    // Endpoint propagation: the load goes on for 1.5 s after SIGTERM.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    stop_tx.send(true).expect("stop the load");
    let (mut ok, mut failed) = (0, Vec::new());
    for load in loads {
        let (o, f) = load.await.expect("load");
        ok += o;
        failed.extend(f);
    }
    assert!(ok > 50, "the load ran: {ok} requests");
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        ok as usize + failed.len(),
        &failed[..failed.len().min(5)]
    );
    let (status, errors) = wait_for_exit(&mut child.0, Duration::from_secs(20));
    let output = std::fs::read_to_string(&log).expect("the log");
    let _ = std::fs::remove_file(&log);
    assert!(status.success(), "exit {status:?}: {errors}");
    assert!(
        signalled.elapsed() >= Duration::from_secs(3),
        "it served for the drain delay before stopping"
    );
    assert!(output.contains("draining"), "{errors}");
    assert!(output.contains("zipkit-api stopped"), "{errors}");
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

/// The worker's part size, which the API reads for dry runs, is checked as the worker checks it.
#[test]
fn a_part_size_the_worker_refuses_stops_the_api_too() {
    let mut child = zipkit_command(BINARY, "postgres://x@127.0.0.1/x", "amqp://127.0.0.1")
        .env("ZIPKIT__WORKER__PART_SIZE_MIB", "0")
        .env("ZIPKIT__API__PORT", "0")
        .spawn()
        .unwrap();
    let (status, output) = wait_for_exit(&mut child, Duration::from_secs(20));
    assert!(!status.success());
    assert!(
        output.contains("worker.part_size_mib must be between 5") && output.contains("(it is 0)"),
        "{output}"
    );
}

/// Two API processes on one database allow a token, and an address, the configured rate once
/// between them: the limits hold whatever the number of replicas.
#[tokio::test]
async fn two_api_processes_share_one_rate_limit_per_token_and_per_address() {
    let (db, vhost) = (
        TestDatabase::migrated(zipkit_domain::db::MIGRATIONS).await,
        TestBroker::new().await,
    );
    let ports = [free_port(), free_port()];
    let mut children: Vec<KillOnDrop> = ports
        .iter()
        .map(|port| {
            KillOnDrop(
                zipkit_command(BINARY, db.url(), &vhost.url())
                    .env("ZIPKIT__API__PORT", port.to_string())
                    .env("ZIPKIT__RATE_LIMITS__API_PER_TOKEN_PER_MINUTE", "6")
                    .env("ZIPKIT__RATE_LIMITS__API_PER_TOKEN_BURST", "3")
                    .env("ZIPKIT__RATE_LIMITS__API_PER_ADDRESS_PER_MINUTE", "6")
                    .env("ZIPKIT__RATE_LIMITS__API_PER_ADDRESS_BURST", "8")
                    .stdout(std::process::Stdio::null())
                    .spawn()
                    .unwrap(),
            )
        })
        .collect();
    for port in ports {
        wait_ready(&format!("http://127.0.0.1:{port}/readyz")).await;
    }
    let created = zipkit_command(BINARY, db.url(), &vhost.url())
        .args(["--output", "json", "project", "create", "--name", "Limits"])
        .output()
        .expect("CLI");
    let project: serde_json::Value = serde_json::from_slice(&created.stdout).expect("JSON");
    let project = project["id"].as_str().expect("an id");
    let created = zipkit_command(BINARY, db.url(), &vhost.url())
        .args([
            "--output",
            "json",
            "token",
            "create",
            "--project",
            project,
            "--name",
            "t",
        ])
        .output()
        .expect("CLI");
    let token: serde_json::Value = serde_json::from_slice(&created.stdout).expect("JSON");
    let token = token["secret"].as_str().expect("a secret").to_owned();

    let http = reqwest::Client::new();
    let list = |n: usize, token: &str| {
        http.get(format!("http://127.0.0.1:{}/v1/zips", ports[n % 2]))
            .bearer_auth(token)
            .send()
    };
    // The token's burst of 3, spread over both processes, then refused by either.
    let mut statuses = Vec::new();
    for n in 0..4 {
        statuses.push(list(n, &token).await.expect("GET").status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 429], "per token");
    // The address has made 4 requests; 4 more (with a wrong token) are counted, then refused.
    let mut statuses = Vec::new();
    for n in 0..5 {
        statuses.push(list(n, "zk_wrong").await.expect("GET").status().as_u16());
    }
    assert_eq!(statuses, [401, 401, 401, 401, 429], "per address");
    let refused = list(1, "zk_wrong").await.expect("GET");
    assert!(refused.headers().contains_key("retry-after"));
    let body: serde_json::Value = refused.json().await.expect("JSON");
    assert_eq!(body["error"]["code"], "rate_limited");
    for child in &mut children {
        sigterm(&child.0);
        let (status, _) = wait_for_exit(&mut child.0, Duration::from_secs(20));
        assert!(status.success());
    }
}
