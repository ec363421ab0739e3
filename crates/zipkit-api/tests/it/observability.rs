//! What operators watch, seen from outside on the real binaries: both `/metrics` endpoints after
//! a real job (valid exposition by promtool's judgement, counters moved by exactly that job), and
//! the spans an OTLP receiver gets: one trace from the request through RabbitMQ to the last part.

use std::time::Duration;

use serde_json::json;
use zipkit_test_support::otlp::{OtlpReceiver, ReceivedSpan};
use zipkit_test_support::prometheus::{promtool_check, sample};
use zipkit_test_support::proxy::TcpProxy;
use zipkit_test_support::receiver::WebhookReceiver;
use zipkit_test_support::services::{amqp_host_port, s3_endpoint};
use zipkit_test_support::sources::{Behaviour, SourceServer};
use zipkit_test_support::stack::{Launch, Stack, sibling_binary};
use zipkit_test_support::tls::TestCa;
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
    // The byte counters, under their names with the unit last and, for one release, their old
    // ones.
    for name in [
        "zipkit_source_downloaded_bytes_total",
        "zipkit_source_bytes_downloaded_total",
    ] {
        assert_eq!(
            sample(&worker, name, &[]),
            Some((small.len() + large.len()) as f64),
            "{name}"
        );
    }
    for name in [
        "zipkit_archive_uploaded_bytes_total",
        "zipkit_archive_bytes_uploaded_total",
    ] {
        assert_eq!(
            sample(&worker, name, &[]),
            Some(archive.len() as f64),
            "{name}"
        );
    }
    assert_eq!(
        sample(
            &worker,
            "zipkit_job_end_to_end_seconds_count",
            &[("outcome", "succeeded")]
        ),
        Some(1.0)
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

/// The figures an operator reads in an incident, from both binaries while jobs wait: queue depth,
/// busy and free slots, buffer-memory waits, the pool, the process, each job's time from
/// creation to its end, and the webhook backlog. A worker of 3 slots whose buffer holds two jobs'
/// parts: of 4 slow jobs, two run, the third waits for buffer memory and the fourth in the queue;
/// their `zip.completed` events go to a receiver that answers 500, so all four wait for a retry.
#[tokio::test]
async fn the_saturation_figures_show_jobs_waiting_in_the_queue_and_for_memory() {
    let (db, vhost, bucket) = (
        TestDatabase::migrated(zipkit_domain::db::MIGRATIONS).await,
        TestBroker::new().await,
        TestBucket::new().await,
    );
    // About 25 s a job: longer than the worker's 15 s between readings of the queue.
    let slow = || Behaviour::Slow {
        chunk: 64 * 1024,
        chunks: 28,
        pause: Duration::from_millis(900),
    };
    let sources = SourceServer::start(vec![
        ("0.bin", slow()),
        ("1.bin", slow()),
        ("2.bin", slow()),
        ("3.bin", slow()),
    ])
    .await;
    let worker = sibling_binary(BINARY, "zipkit-worker");
    let env = [
        ("ZIPKIT__WORKER__CONCURRENCY", "3"),
        // Parts of 8 MiB: two for the lane, two for two jobs' first parts.
        ("ZIPKIT__WORKER__BUFFER_MIB", "32"),
    ];
    let stack = Stack::start(BINARY, &worker, db.url(), &vhost.url(), &env).await;
    let tenant = stack.tenant(bucket.name());
    let receiver = WebhookReceiver::start(usize::MAX).await;
    stack.cli(
        &[
            "webhook",
            "add",
            "--project",
            tenant.project_id.as_str(),
            "--url",
            receiver.url(),
        ],
        "",
    );
    let mut ids = Vec::new();
    for i in 0..4 {
        let body = json!({
            "urls": [{"url": sources.url(&format!("{i}.bin")), "filename": "slow.bin"}],
            "bucket_name": tenant.bucket,
            "key": format!("slow-{i}.zip"),
        });
        ids.push(stack.create_job(&tenant.token, &body, &[]).await);
    }

    // While they run: one job waits in the queue, three hold slots.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    let busy = loop {
        let figures = scrape(&stack.worker_url("/metrics")).await;
        let waiting = sample(&figures, "zipkit_queue_messages", &[("queue", "jobs")]);
        if waiting.is_some_and(|n| n >= 1.0) {
            break figures;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no job seen waiting in the queue: {figures}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    promtool_check(&busy);
    assert_eq!(sample(&busy, "zipkit_worker_slots", &[]), Some(3.0));
    assert_eq!(
        sample(&busy, "zipkit_jobs_in_flight", &[]),
        Some(3.0),
        "{busy}"
    );
    assert_eq!(
        sample(&busy, "zipkit_queue_messages", &[("queue", "dead")]),
        Some(0.0)
    );
    assert_eq!(
        sample(&busy, "zipkit_queue_messages", &[("queue", "retry")]),
        Some(0.0)
    );
    assert_eq!(sample(&busy, "zipkit_webhook_backlog", &[]), Some(0.0));

    for id in &ids {
        let job = stack
            .wait_for_job(&tenant.token, id, Duration::from_secs(180))
            .await;
        assert_eq!(
            job["status"],
            "succeeded",
            "{job}
{}",
            stack.logs()
        );
    }
    let worker = scrape(&stack.worker_url("/metrics")).await;
    let api = scrape(&stack.api_url("/metrics")).await;
    promtool_check(&worker);
    promtool_check(&api);
    // Once per finished job, from its creation: at least the 25 s its source took.
    assert_eq!(
        sample(
            &worker,
            "zipkit_job_end_to_end_seconds_count",
            &[("outcome", "succeeded")]
        ),
        Some(4.0),
        "{worker}"
    );
    let total = sample(
        &worker,
        "zipkit_job_end_to_end_seconds_sum",
        &[("outcome", "succeeded")],
    )
    .unwrap();
    assert!(total >= 4.0 * 20.0, "{total}");
    // The fourth job waited for a slot, the third for buffer memory: as long as a job takes.
    let waits = sample(&worker, "zipkit_buffer_wait_seconds_count", &[]).unwrap_or(0.0);
    let waited = sample(&worker, "zipkit_buffer_wait_seconds_sum", &[]).unwrap_or(0.0);
    assert!(
        waits >= 1.0 && waited >= 10.0,
        "{waits} waits, {waited} s\n{worker}"
    );
    // The pools, and the processes, in both binaries.
    for (figures, max) in [(&worker, 10.0), (&api, 10.0)] {
        let in_use = sample(
            figures,
            "zipkit_db_pool_connections",
            &[("state", "in_use")],
        );
        let idle = sample(figures, "zipkit_db_pool_connections", &[("state", "idle")]);
        let open = in_use.unwrap() + idle.unwrap();
        assert!((1.0..=max).contains(&open), "{open} open");
        assert_eq!(
            sample(figures, "zipkit_db_pool_max_connections", &[]),
            Some(max)
        );
        assert!(sample(figures, "zipkit_db_pool_waits_total", &[]).is_some_and(|n| n >= 0.0));
        assert_eq!(
            sample(figures, "zipkit_db_pool_timeouts_total", &[]),
            Some(0.0)
        );
        let rss = sample(figures, "process_resident_memory_bytes", &[]).unwrap();
        assert!((1e6..1e9).contains(&rss), "RSS {rss}");
        assert!(sample(figures, "process_open_fds", &[]).unwrap() > 3.0);
        assert!(sample(figures, "process_cpu_seconds_total", &[]).unwrap() >= 0.0);
        assert!(sample(figures, "process_threads", &[]).unwrap() >= 2.0);
        let started = sample(figures, "process_start_time_seconds", &[]).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!((now - 600.0..=now).contains(&started), "{started}");
    }
    // Each job's event was tried, refused and waits for its retry: four in the backlog, as the
    // worker's next reading of it shows.
    receiver.wait_for(4, Duration::from_secs(30)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    loop {
        let figures = scrape(&stack.worker_url("/metrics")).await;
        if sample(&figures, "zipkit_webhook_backlog", &[]) == Some(4.0) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the backlog never showed the four events waiting: {figures}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The spans of `trace` by name (the first of each name), from the receiver.
fn by_name<'a>(spans: &'a [ReceivedSpan], trace: &str, name: &str) -> &'a ReceivedSpan {
    spans
        .iter()
        .find(|s| s.trace_id == trace && s.name == name)
        .unwrap_or_else(|| {
            let names: Vec<_> = spans
                .iter()
                .map(|s| (&s.service, &s.name, &s.trace_id))
                .collect();
            panic!("no span {name:?} in trace {trace}: {names:#?}")
        })
}

fn children<'a>(
    spans: &'a [ReceivedSpan],
    parent: &ReceivedSpan,
    name: &str,
) -> Vec<&'a ReceivedSpan> {
    spans
        .iter()
        .filter(|s| {
            s.parent_span_id == parent.span_id && s.trace_id == parent.trace_id && s.name == name
        })
        .collect()
}

/// Everything the worker does for a job: one span per attempt, with the claim, one download per
/// source, and under it the upload: one PutObject (`parts` 0) or the multipart upload's
/// creation, each part and the completion.
fn assert_worker_spans(spans: &[ReceivedSpan], job: &ReceivedSpan, sources: usize, parts: usize) {
    assert_eq!(job.service, "zipkit-worker");
    assert_eq!(job.attributes["messaging.destination.name"], "zipkit.jobs");
    assert_eq!(
        children(spans, job, "claim").len(),
        1,
        "the claim is the job's child"
    );
    let downloads = children(spans, job, "download");
    assert_eq!(
        downloads.len(),
        sources,
        "one download span per source, under the job"
    );
    assert!(
        downloads
            .iter()
            .all(|d| d.attributes["source.host"] == "127.0.0.1")
    );
    let multipart = usize::from(parts > 0);
    assert_eq!(children(spans, job, "put object").len(), 1 - multipart);
    assert_eq!(children(spans, job, "create upload").len(), multipart);
    assert_eq!(
        children(spans, job, "upload part").len(),
        parts,
        "each part, under the job"
    );
    assert_eq!(children(spans, job, "complete upload").len(), multipart);
}

/// Waits until the receiver has the request's span, the job's (which closes last, after all its
/// children) and `also`; returns every span and the request's.
async fn spans_of_the_job(
    receiver: &OtlpReceiver,
    stack: &Stack,
    also: &[&str],
) -> (Vec<ReceivedSpan>, ReceivedSpan) {
    let spans = receiver
        .wait_for(Duration::from_secs(20), |spans| {
            ["process zipkit.jobs", "POST /v1/zips"]
                .iter()
                .chain(also)
                .all(|name| spans.iter().any(|s| s.name == *name))
        })
        .await;
    let request = spans
        .iter()
        .find(|s| s.name == "POST /v1/zips")
        .cloned()
        .unwrap_or_else(|| panic!("no request span: {spans:#?}\n{}", stack.logs()));
    (spans, request)
}

fn traced_env(receiver: &OtlpReceiver) -> Vec<(&'static str, String)> {
    vec![
        ("ZIPKIT__TELEMETRY__OTLP_ENDPOINT", receiver.endpoint()),
        ("ZIPKIT__TELEMETRY__ENVIRONMENT", "staging".to_owned()),
        // The SDK's batch exporter reads its standard variable: send every 100 ms, not 5 s.
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
    ]
}

fn job_body(sources: &SourceServer, bucket: &str, key: &str) -> serde_json::Value {
    json!({
        "urls": [
            {"url": sources.url("a.txt"), "filename": "a.txt"},
            {"url": sources.url("b.txt"), "filename": "b.txt"},
        ],
        "bucket_name": bucket,
        "key": key,
    })
}

async fn two_sources() -> SourceServer {
    SourceServer::start(vec![
        ("a.txt", Behaviour::Serve(b"first file".to_vec())),
        ("b.txt", Behaviour::Serve(vec![b'b'; 50_000])),
    ])
    .await
}

/// Everything a job talks to is HTTPS here, as in production: the OTLP receiver, the sources,
/// the store and the webhook receiver, behind TLS fronts with certificates from a CA of the
/// test's own, which the binaries (and the CLI's bucket test) trust as an operator's private CA.
#[tokio::test]
async fn one_trace_runs_from_the_request_through_the_queue_to_the_last_part_and_the_webhook() {
    let (db, vhost, bucket) = (
        TestDatabase::migrated(zipkit_domain::db::MIGRATIONS).await,
        TestBroker::new().await,
        TestBucket::new().await,
    );
    // Two small sources and one of 11 MiB that `auto` stores: three parts of 5 MiB at most.
    let big: Vec<u8> = (0..11 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let sources = SourceServer::start(vec![
        ("a.txt", Behaviour::Serve(b"first file".to_vec())),
        ("b.txt", Behaviour::Serve(vec![b'b'; 50_000])),
        ("c.jpg", Behaviour::Serve(big)),
    ])
    .await;
    let ca = TestCa::new();
    let receiver = OtlpReceiver::start().await;
    let otlp = ca.front_for(&receiver.endpoint()).await;
    let source_front = ca.front_for(&sources.url("a.txt")).await;
    let store = ca.front_for(&s3_endpoint()).await;
    let mut env = traced_env(&receiver);
    env[0].1 = otlp.https(&receiver.endpoint());
    assert!(env[0].1.starts_with("https://"), "{env:?}");
    env.push(("ZIPKIT__WORKER__PART_SIZE_MIB", "5".to_owned()));
    env.extend(ca.trust_env());
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let worker = sibling_binary(BINARY, "zipkit-worker");
    let stack = Stack::start(BINARY, &worker, db.url(), &vhost.url(), &env).await;
    let tenant = stack.tenant_at(bucket.name(), &store.origin());
    let hooks = WebhookReceiver::start(0).await;
    let hooks_front = ca.front_for(hooks.url()).await;
    stack.cli(
        &[
            "webhook",
            "add",
            "--project",
            &tenant.project_id,
            "--url",
            &hooks_front.https(hooks.url()),
        ],
        "",
    );

    // No traceparent from the client: the API starts the trace.
    let urls: Vec<serde_json::Value> = ["a.txt", "b.txt", "c.jpg"]
        .iter()
        .map(|name| json!({"url": source_front.https(&sources.url(name)), "filename": name}))
        .collect();
    let body = json!({"urls": urls, "bucket_name": tenant.bucket, "key": "traced.zip"});
    assert!(
        body["urls"][0]["url"]
            .as_str()
            .is_some_and(|u| u.starts_with("https://")),
        "{body}"
    );
    let job = stack.run_job(&tenant.token, &body, &[]).await;
    assert_eq!(job["status"], "succeeded", "{job}\n{}", stack.logs());

    assert_eq!(hooks.wait_for(1, Duration::from_secs(20)).await.len(), 1);
    let (spans, request) = spans_of_the_job(&receiver, &stack, &["webhook delivery"]).await;
    assert_eq!(request.service, "zipkit-api");
    // Every span says which build and which deployment sent it.
    for span in &spans {
        assert_eq!(
            span.resource.get("service.version").map(String::as_str),
            Some(env!("CARGO_PKG_VERSION")),
            "{span:?}"
        );
        assert_eq!(
            span.resource
                .get("deployment.environment.name")
                .map(String::as_str),
            Some("staging"),
            "{span:?}"
        );
    }
    assert!(spans.iter().any(|s| s.service == "zipkit-worker"));
    assert_eq!(request.parent_span_id, "", "the request span is the root");
    assert_eq!(request.attributes["http.route"], "/v1/zips");
    assert_eq!(request.attributes["http.response.status_code"], "202");
    let trace = request.trace_id.clone();
    let trace = trace.as_str();

    assert_eq!(
        by_name(&spans, trace, "store job").parent_span_id,
        request.span_id
    );
    let publish = by_name(&spans, trace, "publish zipkit.jobs");
    assert_eq!(publish.parent_span_id, request.span_id);
    assert_eq!(publish.attributes["published_by"], "request");
    let job_span = by_name(&spans, trace, "process zipkit.jobs");
    assert_eq!(
        job_span.parent_span_id, publish.span_id,
        "the worker continues the publish"
    );
    assert_eq!(
        job_span.attributes["zip.id"],
        job["id"].as_str().expect("an id")
    );
    assert_worker_spans(&spans, job_span, 3, 3);
    // The zip.completed event was queued while the job finished, so its delivery (a later, separate
    // task) continues the job's span.
    let delivery = by_name(&spans, trace, "webhook delivery");
    assert_eq!(delivery.parent_span_id, job_span.span_id);
    assert_eq!(delivery.attributes["event.kind"], "zip.completed");

    // The worker's JSON log lines carry the trace id.
    let logs = stack.logs();
    let claimed = logs
        .lines()
        .find(|l| l.contains("\"job claimed\""))
        .unwrap_or_else(|| panic!("no claim logged: {logs}"));
    let claimed: serde_json::Value = serde_json::from_str(claimed).expect("a JSON log line");
    assert_eq!(claimed["trace_id"], trace, "{claimed}");
}

#[tokio::test]
async fn a_job_the_sweeper_published_stays_in_the_trace_of_its_request() {
    let (db, vhost, bucket) = (
        TestDatabase::migrated(zipkit_domain::db::MIGRATIONS).await,
        TestBroker::new().await,
        TestBucket::new().await,
    );
    let sources = two_sources().await;
    let receiver = OtlpReceiver::start().await;
    let mut env = traced_env(&receiver);
    env.push(("ZIPKIT__API__REPUBLISH_AFTER_SECS", "1".to_owned()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // The API reaches RabbitMQ through a proxy that starts closed; the worker reaches it directly.
    let mut proxy = TcpProxy::closed(amqp_host_port());
    let api_amqp = vhost
        .url()
        .replace(&amqp_host_port(), &format!("127.0.0.1:{}", proxy.port()));
    let worker = sibling_binary(BINARY, "zipkit-worker");
    let amqp = vhost.url();
    let stack = Stack::launch(Launch {
        api_binary: BINARY,
        worker_binary: &worker,
        database_url: db.url(),
        amqp_url: &amqp,
        api_amqp_url: &api_amqp,
        env: &env,
    })
    .await;
    let tenant = stack.tenant(bucket.name());

    let id = stack
        .create_job(
            &tenant.token,
            &job_body(&sources, &tenant.bucket, "swept.zip"),
            &[],
        )
        .await;
    proxy.open().await;
    let job = stack
        .wait_for_job(&tenant.token, &id, Duration::from_secs(60))
        .await;
    assert_eq!(job["status"], "succeeded", "{job}\n{}", stack.logs());

    let (spans, request) = spans_of_the_job(&receiver, &stack, &["sweep"]).await;
    let trace = request.trace_id.clone();
    let trace = trace.as_str();
    // The request's own publish failed (broker away) …
    let failed = children(&spans, &request, "publish zipkit.jobs");
    assert_eq!(failed.len(), 1, "{spans:#?}");
    assert_eq!(failed[0].attributes["published_by"], "request");
    // … the sweeper picked the trace up from the row and published under it …
    let sweep = by_name(&spans, trace, "sweep");
    assert_eq!(sweep.service, "zipkit-api");
    assert_eq!(sweep.parent_span_id, request.span_id);
    let publish = children(&spans, sweep, "publish zipkit.jobs");
    assert_eq!(publish.len(), 1);
    assert_eq!(publish[0].attributes["published_by"], "sweeper");
    // … and the worker continued that publish.
    let job_span = by_name(&spans, trace, "process zipkit.jobs");
    assert_eq!(job_span.parent_span_id, publish[0].span_id);
    assert_worker_spans(&spans, job_span, 2, 0);

    let api = scrape(&stack.api_url("/metrics")).await;
    assert_eq!(
        sample(
            &api,
            "zipkit_job_publish_failures_total",
            &[("by", "request")]
        ),
        Some(1.0),
        "{api}"
    );
    assert_eq!(
        sample(&api, "zipkit_jobs_published_total", &[("by", "sweeper")]),
        Some(1.0)
    );
}
