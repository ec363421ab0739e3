//! Prometheus metrics: one recorder per process, rendered at `/metrics` (the API's port and the
//! worker's probe port). Every metric either binary records is named and described here, in
//! `CATALOGUE`, which docs/OPERATIONS.md mirrors (a test keeps them equal). Call sites use the
//! name constants with the `metrics` macros; labels hold only bounded sets of values (route
//! patterns, outcomes, error codes), never ids or URLs.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::Unit;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

// The API.
pub const HTTP_REQUESTS: &str = "zipkit_http_requests_total";
pub const HTTP_REQUEST_DURATION: &str = "zipkit_http_request_duration_seconds";
pub const JOBS_ACCEPTED: &str = "zipkit_jobs_accepted_total";
pub const JOBS_PUBLISHED: &str = "zipkit_jobs_published_total";
pub const PUBLISH_FAILURES: &str = "zipkit_job_publish_failures_total";

// The worker.
pub const JOBS_FINISHED: &str = "zipkit_jobs_finished_total";
pub const JOB_DURATION: &str = "zipkit_job_duration_seconds";
pub const JOB_QUEUE_WAIT: &str = "zipkit_job_queue_wait_seconds";
pub const JOBS_IN_FLIGHT: &str = "zipkit_jobs_in_flight";
pub const JOB_END_TO_END: &str = "zipkit_job_end_to_end_seconds";
pub const WORKER_SLOTS: &str = "zipkit_worker_slots";
pub const RETRIES: &str = "zipkit_retries_total";
pub const BYTES_DOWNLOADED: &str = "zipkit_source_downloaded_bytes_total";
pub const BYTES_UPLOADED: &str = "zipkit_archive_uploaded_bytes_total";
/// The names the two byte counters had before their unit went last; still recorded, as
/// deprecated, for one release.
pub const BYTES_DOWNLOADED_DEPRECATED: &str = "zipkit_source_bytes_downloaded_total";
pub const BYTES_UPLOADED_DEPRECATED: &str = "zipkit_archive_bytes_uploaded_total";
pub const PARTS_UPLOADED: &str = "zipkit_parts_uploaded_total";
pub const PARTS_COPIED: &str = "zipkit_parts_copied_total";
pub const BYTES_COPIED: &str = "zipkit_archive_copied_bytes_total";
pub const WEBHOOK_DELIVERIES: &str = "zipkit_webhook_deliveries_total";
pub const COMPRESSION_QUEUE: &str = "zipkit_compression_queue_blocks";
pub const BUFFER_WAIT: &str = "zipkit_buffer_wait_seconds";
pub const QUEUE_MESSAGES: &str = "zipkit_queue_messages";
pub const WEBHOOK_BACKLOG: &str = "zipkit_webhook_backlog";

// Both.
pub const BUILD_INFO: &str = "zipkit_build_info";
pub const DB_CONNECTIONS: &str = "zipkit_db_pool_connections";
pub const DB_MAX_CONNECTIONS: &str = "zipkit_db_pool_max_connections";
pub const DB_WAITS: &str = "zipkit_db_pool_waits_total";
pub const DB_TIMEOUTS: &str = "zipkit_db_pool_timeouts_total";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// A metric as operators see it: name, type, unit, labels and what it counts.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    pub name: &'static str,
    pub kind: Kind,
    pub labels: &'static [&'static str],
    pub help: &'static str,
}

pub const CATALOGUE: &[Metric] = &[
    Metric {
        name: HTTP_REQUESTS,
        kind: Kind::Counter,
        labels: &["method", "route", "status"],
        help: "HTTP requests answered by the API, by method, route pattern and status code.",
    },
    Metric {
        name: HTTP_REQUEST_DURATION,
        kind: Kind::Histogram,
        labels: &["method", "route"],
        help: "Time from receiving a request to its response, by method and route pattern.",
    },
    Metric {
        name: JOBS_ACCEPTED,
        kind: Kind::Counter,
        labels: &[],
        help: "Zip jobs accepted (stored) by the API.",
    },
    Metric {
        name: JOBS_PUBLISHED,
        kind: Kind::Counter,
        labels: &["by"],
        help: "Job messages confirmed by the broker, by who published them (request or sweeper).",
    },
    Metric {
        name: PUBLISH_FAILURES,
        kind: Kind::Counter,
        labels: &["by"],
        help: "Job messages the broker did not confirm (the sweeper publishes them later).",
    },
    Metric {
        name: JOBS_FINISHED,
        kind: Kind::Counter,
        labels: &["outcome", "code"],
        help: "Jobs that reached a final state, by outcome (succeeded, failed, cancelled) and \
               failure code (empty on success).",
    },
    Metric {
        name: JOB_DURATION,
        kind: Kind::Histogram,
        labels: &["outcome"],
        help: "Time one attempt at a job took, from claim to outcome, by outcome (succeeded, \
               failed, cancelled, retried, handed_back).",
    },
    Metric {
        name: JOB_QUEUE_WAIT,
        kind: Kind::Histogram,
        labels: &[],
        help: "Time from a job's creation to its first claim by a worker.",
    },
    Metric {
        name: JOBS_IN_FLIGHT,
        kind: Kind::Gauge,
        labels: &[],
        help: "Jobs this worker is running now.",
    },
    Metric {
        name: JOB_END_TO_END,
        kind: Kind::Histogram,
        labels: &["outcome"],
        help: "Time from a job's creation to its final state, across all its attempts and \
               waits, by outcome (succeeded, failed, cancelled); observed once per job.",
    },
    Metric {
        name: WORKER_SLOTS,
        kind: Kind::Gauge,
        labels: &[],
        help: "Jobs this worker may run at once (worker.concurrency); the busy ones are \
               zipkit_jobs_in_flight.",
    },
    Metric {
        name: RETRIES,
        kind: Kind::Counter,
        labels: &["stage", "cause"],
        help: "Retries, by stage (job: a whole attempt rescheduled; download: a source fetched \
               again) and cause (the failure code).",
    },
    Metric {
        name: BYTES_DOWNLOADED,
        kind: Kind::Counter,
        labels: &[],
        help: "Bytes received from sources.",
    },
    Metric {
        name: BYTES_DOWNLOADED_DEPRECATED,
        kind: Kind::Counter,
        labels: &[],
        help: "Deprecated name of zipkit_source_downloaded_bytes_total (same value); removed in \
               the next release.",
    },
    Metric {
        name: BYTES_UPLOADED,
        kind: Kind::Counter,
        labels: &[],
        help: "Archive bytes written to buckets (parts the store acknowledged).",
    },
    Metric {
        name: BYTES_UPLOADED_DEPRECATED,
        kind: Kind::Counter,
        labels: &[],
        help: "Deprecated name of zipkit_archive_uploaded_bytes_total (same value); removed in \
               the next release.",
    },
    Metric {
        name: PARTS_UPLOADED,
        kind: Kind::Counter,
        labels: &[],
        help: "Multipart parts (and single-request archives) the stores acknowledged.",
    },
    Metric {
        name: PARTS_COPIED,
        kind: Kind::Counter,
        labels: &[],
        help: "Parts the stores copied from objects they hold (server-side assembly).",
    },
    Metric {
        name: BYTES_COPIED,
        kind: Kind::Counter,
        labels: &[],
        help: "Archive bytes the stores copied from objects they hold instead of receiving them.",
    },
    Metric {
        name: WEBHOOK_DELIVERIES,
        kind: Kind::Counter,
        labels: &["outcome"],
        help: "Webhook delivery attempts, by outcome (delivered, retrying, failed, refused).",
    },
    Metric {
        name: COMPRESSION_QUEUE,
        kind: Kind::Gauge,
        labels: &[],
        help: "Deflate blocks queued for or being compressed by the compression threads.",
    },
    Metric {
        name: BUFFER_WAIT,
        kind: Kind::Histogram,
        labels: &[],
        help: "Waits for buffer memory (worker.buffer_mib) before a download or a part could \
               go on, each as long as it lasted; a reservation granted at once is not one.",
    },
    Metric {
        name: QUEUE_MESSAGES,
        kind: Kind::Gauge,
        labels: &["queue"],
        help: "Messages ready in the broker's queues (jobs, retry, dead), as the worker last \
               read them (every 15 s).",
    },
    Metric {
        name: WEBHOOK_BACKLOG,
        kind: Kind::Gauge,
        labels: &[],
        help: "Webhook deliveries not yet made: due now or waiting for a retry (every 15 s).",
    },
    Metric {
        name: DB_CONNECTIONS,
        kind: Kind::Gauge,
        labels: &["state"],
        help: "PostgreSQL connections of this process's pool, by state (in_use, idle).",
    },
    Metric {
        name: DB_MAX_CONNECTIONS,
        kind: Kind::Gauge,
        labels: &[],
        help: "The most connections this process's pool opens (database.max_connections).",
    },
    Metric {
        name: DB_WAITS,
        kind: Kind::Counter,
        labels: &[],
        help: "Times a connection was asked of the pool and none was free at once.",
    },
    Metric {
        name: DB_TIMEOUTS,
        kind: Kind::Counter,
        labels: &[],
        help: "Times no connection came within database.connect_timeout_secs.",
    },
    Metric {
        name: BUILD_INFO,
        kind: Kind::Gauge,
        labels: &["service", "version"],
        help: "Always 1; the labels name the binary and its version.",
    },
];

/// The process's own metrics (metrics-process: read from `/proc` at every scrape), under the
/// names Prometheus client libraries give them, so dashboards made for those work unchanged.
pub const PROCESS: &[Metric] = &[
    Metric {
        name: "process_cpu_seconds_total",
        kind: Kind::Counter,
        labels: &[],
        help: "User and system CPU time the process used (whole seconds).",
    },
    Metric {
        name: "process_resident_memory_bytes",
        kind: Kind::Gauge,
        labels: &[],
        help: "Resident memory (RSS).",
    },
    Metric {
        name: "process_virtual_memory_bytes",
        kind: Kind::Gauge,
        labels: &[],
        help: "Virtual memory size.",
    },
    Metric {
        name: "process_virtual_memory_max_bytes",
        kind: Kind::Gauge,
        labels: &[],
        help: "The most virtual memory the process may have.",
    },
    Metric {
        name: "process_open_fds",
        kind: Kind::Gauge,
        labels: &[],
        help: "Open file descriptors.",
    },
    Metric {
        name: "process_max_fds",
        kind: Kind::Gauge,
        labels: &[],
        help: "The most file descriptors the process may open.",
    },
    Metric {
        name: "process_start_time_seconds",
        kind: Kind::Gauge,
        labels: &[],
        help: "When the process started (Unix time).",
    },
    Metric {
        name: "process_threads",
        kind: Kind::Gauge,
        labels: &[],
        help: "OS threads of the process.",
    },
];

/// Latency buckets (seconds) for HTTP requests: 1 ms to 10 s.
const HTTP_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Buckets (seconds) for jobs and queue waits: 50 ms to 1 hour.
const JOB_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];

/// Buckets (seconds) for a job from creation to its end: 1 s to a day (a job may wait in the
/// retry queue for hours).
const END_TO_END_BUCKETS: &[f64] = &[
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0,
    43200.0, 86400.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
static PROCESS_COLLECTOR: OnceLock<metrics_process::Collector> = OnceLock::new();

/// Installs the process's recorder (once; tests that start several apps share it), describes
/// every metric and records `zipkit_build_info`.
pub fn install(service: &'static str) -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let built = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(HTTP_REQUEST_DURATION.into()), HTTP_BUCKETS)
            .and_then(|b| b.set_buckets_for_metric(Matcher::Full(JOB_DURATION.into()), JOB_BUCKETS))
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(JOB_QUEUE_WAIT.into()), JOB_BUCKETS)
            })
            .and_then(|b| b.set_buckets_for_metric(Matcher::Full(BUFFER_WAIT.into()), JOB_BUCKETS))
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(JOB_END_TO_END.into()), END_TO_END_BUCKETS)
            })
            .map(PrometheusBuilder::build_recorder);
        let recorder = built.expect("the bucket lists are constant and not empty");
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics stays empty");
        }
        describe();
        PROCESS_COLLECTOR
            .get_or_init(metrics_process::Collector::default)
            .describe();
        metrics::gauge!(BUILD_INFO, "service" => service, "version" => env!("CARGO_PKG_VERSION"))
            .set(1.0);
        // Histograms keep raw samples until drained; drain them even when nobody scrapes.
        let upkeep = handle.clone();
        let _ = std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(Duration::from_secs(5));
                    upkeep.run_upkeep();
                }
            });
        handle
    })
}

/// The Prometheus text exposition of everything recorded so far, and of the process as it is
/// now.
pub fn render() -> String {
    if let Some(collector) = PROCESS_COLLECTOR.get() {
        collector.collect();
    }
    HANDLE
        .get()
        .map(PrometheusHandle::render)
        .unwrap_or_default()
}

/// Records the most connections this process's database pool opens; once, at start.
pub fn record_pool_size(max_connections: u32) {
    metrics::gauge!(DB_MAX_CONNECTIONS).set(f64::from(max_connections));
}

/// Records a database pool's state as bb8 keeps it (`zipkit_db_pool_*`); at every scrape.
pub fn record_pool(state: &bb8::State) {
    let in_use = state.connections.saturating_sub(state.idle_connections);
    metrics::gauge!(DB_CONNECTIONS, "state" => "in_use").set(f64::from(in_use));
    metrics::gauge!(DB_CONNECTIONS, "state" => "idle").set(f64::from(state.idle_connections));
    metrics::counter!(DB_WAITS).absolute(state.statistics.get_waited);
    metrics::counter!(DB_TIMEOUTS).absolute(state.statistics.get_timed_out);
}

/// The content type Prometheus expects for `render`'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

fn describe() {
    for metric in CATALOGUE {
        let unit = if metric.name.ends_with("_seconds") {
            Some(Unit::Seconds)
        } else if metric.name.contains("bytes") {
            Some(Unit::Bytes)
        } else {
            None
        };
        match (metric.kind, unit) {
            (Kind::Counter, Some(unit)) => {
                metrics::describe_counter!(metric.name, unit, metric.help)
            }
            (Kind::Counter, None) => metrics::describe_counter!(metric.name, metric.help),
            (Kind::Gauge, _) => metrics::describe_gauge!(metric.name, metric.help),
            (Kind::Histogram, Some(unit)) => {
                metrics::describe_histogram!(metric.name, unit, metric.help)
            }
            (Kind::Histogram, None) => metrics::describe_histogram!(metric.name, metric.help),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_name_is_unique_and_prometheus_shaped() {
        let mut seen = std::collections::HashSet::new();
        for metric in CATALOGUE {
            assert!(seen.insert(metric.name), "{} twice", metric.name);
            assert!(metric.name.starts_with("zipkit_"), "{}", metric.name);
            assert_eq!(
                metric.kind == Kind::Counter,
                metric.name.ends_with("_total"),
                "{}: counters and only counters end in _total",
                metric.name
            );
            assert!(!metric.help.is_empty());
        }
    }

    #[test]
    fn every_process_metric_listed_is_in_the_exposition() {
        install("zipkit-test");
        let exposition = render();
        for metric in PROCESS {
            let kind = format!("{:?}", metric.kind).to_lowercase();
            assert!(
                exposition.contains(&format!("# TYPE {} {kind}", metric.name)),
                "{} missing:\n{exposition}",
                metric.name
            );
        }
    }

    #[test]
    fn the_operations_guide_lists_every_metric_with_its_type_and_labels() {
        let guide = include_str!("../../../docs/OPERATIONS.md");
        for metric in CATALOGUE.iter().chain(PROCESS) {
            let row = guide
                .lines()
                .find(|l| l.starts_with(&format!("| `{}` |", metric.name)))
                .unwrap_or_else(|| panic!("{} is not in docs/OPERATIONS.md", metric.name));
            let kind = format!("{:?}", metric.kind).to_lowercase();
            assert!(row.contains(&format!("| {kind} |")), "{row}");
            for label in metric.labels {
                assert!(row.contains(&format!("`{label}`")), "{row} lacks {label}");
            }
        }
        let documented = guide
            .lines()
            .filter(|l| l.starts_with("| `zipkit_") || l.starts_with("| `process_"))
            .count();
        assert_eq!(
            documented,
            CATALOGUE.len() + PROCESS.len(),
            "a documented metric no longer exists"
        );
    }
}
