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
pub const RETRIES: &str = "zipkit_retries_total";
pub const BYTES_DOWNLOADED: &str = "zipkit_source_bytes_downloaded_total";
pub const BYTES_UPLOADED: &str = "zipkit_archive_bytes_uploaded_total";
pub const PARTS_UPLOADED: &str = "zipkit_parts_uploaded_total";
pub const PARTS_COPIED: &str = "zipkit_parts_copied_total";
pub const BYTES_COPIED: &str = "zipkit_archive_copied_bytes_total";
pub const WEBHOOK_DELIVERIES: &str = "zipkit_webhook_deliveries_total";
pub const COMPRESSION_QUEUE: &str = "zipkit_compression_queue_blocks";

// Both.
pub const BUILD_INFO: &str = "zipkit_build_info";

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
        name: BYTES_UPLOADED,
        kind: Kind::Counter,
        labels: &[],
        help: "Archive bytes written to buckets (parts the store acknowledged).",
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
        name: BUILD_INFO,
        kind: Kind::Gauge,
        labels: &["service", "version"],
        help: "Always 1; the labels name the binary and its version.",
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

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

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
            .map(PrometheusBuilder::build_recorder);
        let recorder = built.expect("the bucket lists are constant and not empty");
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics stays empty");
        }
        describe();
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

/// The Prometheus text exposition of everything recorded so far.
pub fn render() -> String {
    HANDLE
        .get()
        .map(PrometheusHandle::render)
        .unwrap_or_default()
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
    fn the_operations_guide_lists_every_metric_with_its_type_and_labels() {
        let guide = include_str!("../../../docs/OPERATIONS.md");
        for metric in CATALOGUE {
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
            .filter(|l| l.starts_with("| `zipkit_"))
            .count();
        assert_eq!(
            documented,
            CATALOGUE.len(),
            "a documented metric no longer exists"
        );
    }
}
