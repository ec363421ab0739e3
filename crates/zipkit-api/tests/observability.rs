//! What operators watch, seen from outside on the real binaries: both `/metrics` endpoints after
//! a real job (valid exposition by promtool's judgement, counters moved by exactly that job).

use serde_json::json;
use zipkit_test_support::prometheus::{promtool_check, sample};
use zipkit_test_support::sources::{Behaviour, SourceServer};
use zipkit_test_support::stack::{Stack, sibling_binary};
use zipkit_test_support::{TestBroker, TestBucket, TestDatabase};

const BINARY: &str = env!("CARGO_BIN_EXE_zipkit-api");

async fn scrape(url: &str) -> String {
    let answer = reqwest::get(url).await.expect("scrape");
    assert_eq!(answer.status(), 200);
    let content_type = answer.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    answer.text().await.expect("text")
}

#[tokio::test]
async fn both_metrics_endpoints_pass_promtool_and_count_a_real_job() {
    let (db, vhost, bucket) = (
        TestDatabase::migrated(zipkit_domain::db::MIGRATIONS).await,
        TestBroker::new().await,
        TestBucket::new().await,
    );
    let (small, large) = (vec![b'a'; 1_000], vec![7u8; 300_000]);
    let sources = SourceServer::start(vec![
        ("small.txt", Behaviour::Serve(small.clone())),
        ("large.bin", Behaviour::Serve(large.clone())),
        ("gone.txt", Behaviour::Status(404)),
    ])
    .await;
    let worker = sibling_binary(BINARY, "zipkit-worker");
    let stack = Stack::start(BINARY, &worker, db.url(), &vhost.url(), &[]).await;
    let tenant = stack.tenant(bucket.name());

    let job = stack
        .run_job(
            &tenant.token,
            &json!({
                "urls": [
                    {"url": sources.url("small.txt"), "filename": "small.txt"},
                    {"url": sources.url("large.bin"), "filename": "large.bin"},
                    {"url": sources.url("gone.txt"), "filename": "gone.txt"},
                ],
                "bucket_name": tenant.bucket,
                "key": "observed.zip",
                "on_error": "skip",
            }),
            &[],
        )
        .await;
    assert_eq!(job["status"], "succeeded", "{job}\n{}", stack.logs());
    let archive = bucket.get("observed.zip").await;

    let api = scrape(&stack.api_url("/metrics")).await;
    let worker = scrape(&stack.worker_url("/metrics")).await;
    promtool_check(&api);
    promtool_check(&worker);

    // The API: one job accepted and published by the request that created it.
    let created = [("method", "POST"), ("route", "/v1/zips"), ("status", "202")];
    assert_eq!(
        sample(&api, "zipkit_http_requests_total", &created),
        Some(1.0),
        "{api}"
    );
    assert_eq!(
        sample(
            &api,
            "zipkit_http_request_duration_seconds_count",
            &[("method", "POST"), ("route", "/v1/zips")]
        ),
        Some(1.0)
    );
    assert_eq!(sample(&api, "zipkit_jobs_accepted_total", &[]), Some(1.0));
    assert_eq!(
        sample(&api, "zipkit_jobs_published_total", &[("by", "request")]),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &api,
            "zipkit_job_publish_failures_total",
            &[("by", "request")]
        ),
        None
    );
    // Polling the job went to the route pattern, never to a path with the id in it.
    assert!(
        sample(
            &api,
            "zipkit_http_requests_total",
            &[
                ("method", "GET"),
                ("route", "/v1/zips/{uuid}"),
                ("status", "200")
            ]
        )
        .is_some_and(|n| n >= 1.0),
        "{api}"
    );
    assert!(
        !api.contains(job["id"].as_str().expect("an id")),
        "no job id in a label"
    );
    assert_eq!(
        sample(
            &api,
            "zipkit_build_info",
            &[
                ("service", "zipkit-api"),
                ("version", env!("CARGO_PKG_VERSION"))
            ]
        ),
        Some(1.0)
    );

    // The worker: the job, its bytes both ways, its one part and the skipped source's retries
    // (none: a 404 is final).
    let finished = [("outcome", "succeeded"), ("code", "")];
    assert_eq!(
        sample(&worker, "zipkit_jobs_finished_total", &finished),
        Some(1.0),
        "{worker}"
    );
    assert_eq!(
        sample(
            &worker,
            "zipkit_job_duration_seconds_count",
            &[("outcome", "succeeded")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&worker, "zipkit_job_queue_wait_seconds_count", &[]),
        Some(1.0)
    );
    assert_eq!(sample(&worker, "zipkit_jobs_in_flight", &[]), Some(0.0));
    assert_eq!(
        sample(&worker, "zipkit_source_bytes_downloaded_total", &[]),
        Some((small.len() + large.len()) as f64)
    );
    assert_eq!(
        sample(&worker, "zipkit_archive_bytes_uploaded_total", &[]),
        Some(archive.len() as f64)
    );
    assert_eq!(
        sample(&worker, "zipkit_parts_uploaded_total", &[]),
        Some(1.0)
    );
    assert!(!worker.contains("zipkit_retries_total{"), "{worker}");
    assert_eq!(
        sample(
            &worker,
            "zipkit_build_info",
            &[
                ("service", "zipkit-worker"),
                ("version", env!("CARGO_PKG_VERSION"))
            ]
        ),
        Some(1.0)
    );
}
