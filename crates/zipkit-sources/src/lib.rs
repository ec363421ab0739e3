//! Requests to sources over HTTP(S), each through the egress policy: the worker's downloads and
//! the API's dry run ask the same way and read the answers the same way (the same failure codes
//! for the same answers).

use std::time::Duration;

use reqwest::{StatusCode, Url};

use zipkit_egress::EgressPolicy;

/// Why a source could not be fetched; `code` is what the job's `error.code` shows, and
/// `transient` whether the source may answer differently later (5xx, 429, connection trouble, a
/// stall, a source that changed mid-download), decided where the failure is seen.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct SourceError {
    pub code: &'static str,
    pub message: String,
    pub transient: bool,
}

impl SourceError {
    /// A failure the source may get over: retried here, and the job again later.
    pub fn transient(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            transient: true,
        }
    }

    /// A failure another request would meet again (a missing source, a refused address).
    pub fn permanent(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            transient: false,
        }
    }

    /// Worth another request now.
    /// The source sends or announces another length than the request declared (`size`).
    pub fn size_mismatch(declared: u64, what_it_did: &str) -> Self {
        Self::permanent(
            "source_size_mismatch",
            format!("the request declared {declared} bytes (`size`); the source {what_it_did}"),
        )
    }

    /// The source is larger than the deployment takes (`worker.max_source_bytes`).
    pub fn too_large(limit: u64) -> Self {
        Self::permanent(
            "source_too_large",
            format!("the source is larger than this deployment's limit of {limit} bytes"),
        )
    }

    pub fn is_transient(&self) -> bool {
        self.transient
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
/// policy (`fetch` checks the first URL's literal). It keeps `idle_per_host` idle connections to
/// a host for reuse, as many as are used at once: more would only hold their buffers (an idle
/// connection keeps the read buffer it grew, up to ~400 KiB), fewer would open new connections
/// (a TCP and TLS handshake each) for a job of many small sources.
pub fn client(
    connect_timeout: Duration,
    read_timeout: Duration,
    idle_per_host: usize,
    egress: &EgressPolicy,
) -> reqwest::Client {
    zipkit_egress::reqwest_builder(egress, MAX_REDIRECTS)
        .connect_timeout(connect_timeout)
        .read_timeout(read_timeout)
        .pool_max_idle_per_host(idle_per_host)
        .pool_idle_timeout(IDLE_CONNECTION_TIMEOUT)
        .user_agent(concat!("zipkit/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("the HTTP client configuration is valid")
}

const MAX_REDIRECTS: usize = 5;
/// How long an idle connection is kept for reuse.
const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(15);

/// Starts the download; an answer other than 2xx is an error naming the status.
pub async fn fetch(
    client: &reqwest::Client,
    url: &Url,
    egress: &EgressPolicy,
    resume: Option<&Resume>,
) -> Result<reqwest::Response, SourceError> {
    let response = send(client, url, egress, |request| match resume {
        Some(resume) => request
            .header(reqwest::header::RANGE, format!("bytes={}-", resume.from))
            .header(reqwest::header::IF_RANGE, &resume.validator),
        None => request,
    })
    .await?;
    successful(response)
}

/// What a source says of itself before it is downloaded: its length, when it gives one, and its
/// first bytes (up to the `head` asked for), which `auto` compression looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probed {
    pub length: Option<u64>,
    pub head: Vec<u8>,
}

/// Asks a source for its first `head` bytes (`Range: bytes=0-…`; a source that ignores ranges
/// answers with all of itself, of which only those are read): the same request a download makes,
/// through the same policy, answered with the same failure codes.
pub async fn probe(
    client: &reqwest::Client,
    url: &Url,
    egress: &EgressPolicy,
    head: usize,
) -> Result<Probed, SourceError> {
    let last = head.max(1) - 1;
    let response = send(client, url, egress, |request| {
        request.header(reqwest::header::RANGE, format!("bytes=0-{last}"))
    })
    .await?;
    // Nothing to range over: an empty source.
    if response.status() == StatusCode::RANGE_NOT_SATISFIABLE {
        return Ok(Probed {
            length: Some(0),
            head: Vec::new(),
        });
    }
    let mut response = successful(response)?;
    let length = if response.status() == StatusCode::PARTIAL_CONTENT {
        content_range(&response).and_then(|(_, length)| length)
    } else {
        response.content_length()
    };
    let mut bytes = Vec::with_capacity(head);
    while bytes.len() < head {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                bytes.extend_from_slice(&chunk[..chunk.len().min(head - bytes.len())])
            }
            Ok(None) => break,
            Err(_) => return Err(unreachable("the connection broke")),
        }
    }
    Ok(Probed {
        length,
        head: bytes,
    })
}

/// Sends a GET for `url` (parsed once, where the request was read) once the policy allows its
/// address; any status.
async fn send(
    client: &reqwest::Client,
    url: &Url,
    egress: &EgressPolicy,
    shape: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
) -> Result<reqwest::Response, SourceError> {
    let forbidden = || {
        SourceError::permanent(
            "source_address_forbidden",
            "the source's address is private, loopback, link-local or otherwise internal, which this deployment does not fetch from",
        )
    };
    if egress.check_url(url).is_err() {
        return Err(forbidden());
    }
    shape(client.get(url.clone())).send().await.map_err(|e| {
        if zipkit_egress::is_forbidden(&e) {
            return forbidden();
        }
        unreachable(if e.is_timeout() {
            "timed out"
        } else if e.is_redirect() {
            "too many redirects"
        } else {
            "connection failed"
        })
    })
}

fn unreachable(why: &str) -> SourceError {
    SourceError::transient(
        "source_unreachable",
        format!("the source could not be reached ({why})"),
    )
}

/// The answer when it is a success; otherwise the failure its status means.
fn successful(response: reqwest::Response) -> Result<reqwest::Response, SourceError> {
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
