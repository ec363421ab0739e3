//! Fetching sources over HTTP(S), streaming.

use std::time::Duration;

use reqwest::StatusCode;

use zipkit_egress::EgressPolicy;
use zipkit_runtime::backoff::Backoff;

use crate::failure::{Blame, JobFailure, Retry};

/// Why a source could not be fetched; `code` is what the job's `error.code` shows, and `retry`
/// whether the source may answer differently later (5xx, 429, connection trouble, a stall, a
/// source that changed mid-download), decided where the failure is seen.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct SourceError {
    pub code: &'static str,
    pub message: String,
    pub retry: Retry,
}

impl SourceError {
    /// A failure the source may get over: retried here, and the job again later.
    pub fn transient(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry: Retry::Later,
        }
    }

    /// A failure another request would meet again (a missing source, a refused address).
    pub fn permanent(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry: Retry::Never,
        }
    }

    /// Worth another request now.
    pub fn is_transient(&self) -> bool {
        self.retry != Retry::Never
    }

    /// The job's failure: the request's problem, at `urls[index]`.
    pub fn into_failure(self, index: i32) -> JobFailure {
        JobFailure::new(
            self.code,
            format!("urls[{index}]: {}", self.message),
            Blame::Request,
            self.retry,
        )
        .with_param(format!("urls[{index}]"))
    }
}

/// Where to pick a download up: `Range: bytes=from-`, valid only while the source still answers
/// with the same ETag (or Last-Modified) as first seen, which `If-Range` checks.
#[derive(Debug, Clone)]
pub struct Resume {
    pub from: u64,
    pub validator: String,
}

impl Resume {
    /// The validator a resumed request can send, if the source accepts byte ranges (it says so,
    /// or it just answered a range) and gave one. Weak ETags are not allowed in `If-Range`.
    pub fn validator(response: &reqwest::Response) -> Option<String> {
        let headers = response.headers();
        let ranges = response.status() == StatusCode::PARTIAL_CONTENT
            || headers
                .get(reqwest::header::ACCEPT_RANGES)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.eq_ignore_ascii_case("bytes"));
        if !ranges {
            return None;
        }
        let text = |name| {
            headers
                .get(name)
                .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
        };
        text(reqwest::header::ETAG)
            .filter(|etag| !etag.starts_with("W/"))
            .or_else(|| text(reqwest::header::LAST_MODIFIED))
            .map(str::to_owned)
    }
}

/// The source's `Last-Modified`, which becomes its entry's time (any of HTTP's three date forms).
pub fn last_modified(response: &reqwest::Response) -> Option<chrono::DateTime<chrono::Utc>> {
    let text = response
        .headers()
        .get(reqwest::header::LAST_MODIFIED)?
        .to_str()
        .ok()?;
    httpdate::parse_http_date(text).ok().map(Into::into)
}

/// Attempts per source before its error is final, and the wait after each failed one (250 ms,
/// 500 ms, 1 s).
pub const ATTEMPTS: u32 = 4;
pub const BACKOFF: Backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(30));

/// `fetch` with retries and exponential backoff on transient errors. Only the start of a
/// download is retried here (later breaks are picked up by the download itself).
pub async fn fetch_with_retries(
    client: &reqwest::Client,
    url: &str,
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

/// What a `206 Partial Content` answer holds: where its bytes start in the source, and the
/// source's whole length when it says (`Content-Range: bytes FIRST-LAST/LENGTH`, or `/*`).
pub fn content_range(response: &reqwest::Response) -> Option<(u64, Option<u64>)> {
    let value = response
        .headers()
        .get(reqwest::header::CONTENT_RANGE)?
        .to_str()
        .ok()?;
    let (range, length) = value.strip_prefix("bytes ")?.split_once('/')?;
    let first = range.split_once('-')?.0.trim().parse().ok()?;
    Some((first, length.trim().parse().ok()))
}

/// The HTTP client for sources: every name it resolves and every redirect hop passes the egress
/// policy (`fetch` checks the first URL's literal).
pub fn client(
    connect_timeout: Duration,
    read_timeout: Duration,
    egress: &EgressPolicy,
) -> reqwest::Client {
    zipkit_egress::reqwest_builder(egress, MAX_REDIRECTS)
        .connect_timeout(connect_timeout)
        .read_timeout(read_timeout)
        .user_agent(concat!("zipkit/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("the HTTP client configuration is valid")
}

const MAX_REDIRECTS: usize = 5;

/// Starts the download; an answer other than 2xx is an error naming the status.
pub async fn fetch(
    client: &reqwest::Client,
    url: &str,
    egress: &EgressPolicy,
    resume: Option<&Resume>,
) -> Result<reqwest::Response, SourceError> {
    let forbidden = || {
        SourceError::permanent(
            "source_address_forbidden",
            "the source's address is private, loopback, link-local or otherwise internal, which this deployment does not fetch from",
        )
    };
    let parsed = reqwest::Url::parse(url)
        .map_err(|_| SourceError::permanent("source_rejected", "not a URL"))?;
    if egress.check_url(&parsed).is_err() {
        return Err(forbidden());
    }
    let mut request = client.get(parsed);
    if let Some(resume) = resume {
        request = request
            .header(reqwest::header::RANGE, format!("bytes={}-", resume.from))
            .header(reqwest::header::IF_RANGE, &resume.validator);
    }
    let response = request.send().await.map_err(|e| {
        if zipkit_egress::is_forbidden(&e) {
            return forbidden();
        }
        let why = if e.is_timeout() {
            "timed out"
        } else if e.is_redirect() {
            "too many redirects"
        } else {
            "connection failed"
        };
        SourceError::transient(
            "source_unreachable",
            format!("the source could not be reached ({why})"),
        )
    })?;
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let message = format!("the source answered HTTP {}", status.as_u16());
    Err(match status {
        StatusCode::NOT_FOUND | StatusCode::GONE => {
            SourceError::permanent("source_not_found", message)
        }
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            SourceError::permanent("source_forbidden", message)
        }
        StatusCode::TOO_MANY_REQUESTS => SourceError::transient("source_rate_limited", message),
        s if s.is_server_error() => SourceError::transient("source_unavailable", message),
        _ => SourceError::permanent("source_rejected", message),
    })
}
