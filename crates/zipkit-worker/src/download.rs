//! Fetching sources for a build: `zipkit_sources` makes the requests; here they are retried, and
//! a source's failure becomes the job's.

use std::time::Duration;

use zipkit_egress::EgressPolicy;
use zipkit_runtime::backoff::Backoff;
pub use zipkit_sources::{Resume, SourceError, client, content_range, fetch, last_modified};

use crate::failure::{Blame, JobFailure, Retry};

/// The job's failure for a source's: the request's problem, at `urls[index]`.
pub fn failure_of(error: SourceError, index: i32) -> JobFailure {
    JobFailure::new(
        error.code,
        format!("urls[{index}]: {}", error.message),
        Blame::Request,
        if error.transient {
            Retry::Later
        } else {
            Retry::Never
        },
    )
    .with_param(format!("urls[{index}]"))
}

/// Attempts per source before its error is final, and the wait after each failed one (250 ms,
/// 500 ms, 1 s).
pub const ATTEMPTS: u32 = 4;
pub const BACKOFF: Backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(30));

/// `fetch` with retries and exponential backoff on transient errors. Only the start of a
/// download is retried here (later breaks are picked up by the download itself).
pub async fn fetch_with_retries(
    client: &reqwest::Client,
    url: &url::Url,
    egress: &EgressPolicy,
    range: Option<&Resume>,
) -> Result<reqwest::Response, SourceError> {
    let mut attempt = 1;
    loop {
        match fetch(client, url, egress, range).await {
            Err(e) if e.is_transient() && attempt < ATTEMPTS => {
                metrics::counter!(zipkit_runtime::metrics::RETRIES, "stage" => "download", "cause" => e.code)
                    .increment(1);
                tracing::info!(
                    attempt,
                    code = e.code,
                    retry_in_ms = BACKOFF.delay(attempt).as_millis() as u64,
                    "source failed; retrying"
                );
                tokio::time::sleep(BACKOFF.delay(attempt)).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}
