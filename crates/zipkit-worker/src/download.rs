//! Fetching sources over HTTP(S), streaming.

use std::time::Duration;

use reqwest::StatusCode;

/// Why a source could not be fetched; `code` is what the job's `error.code` shows.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct SourceError {
    pub code: &'static str,
    pub message: String,
}

pub fn client(connect_timeout: Duration, read_timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .read_timeout(read_timeout)
        .redirect(reqwest::redirect::Policy::limited(5))
        .user_agent(concat!("zipkit/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("the HTTP client configuration is valid")
}

/// Starts the download; an answer other than 2xx is an error naming the status.
pub async fn fetch(client: &reqwest::Client, url: &str) -> Result<reqwest::Response, SourceError> {
    let response = client.get(url).send().await.map_err(|e| SourceError {
        code: "source_unreachable",
        message: format!(
            "the source could not be reached ({})",
            if e.is_timeout() {
                "timed out"
            } else {
                "connection failed"
            }
        ),
    })?;
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let code = match status {
        StatusCode::NOT_FOUND | StatusCode::GONE => "source_not_found",
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => "source_forbidden",
        s if s.is_server_error() => "source_unavailable",
        _ => "source_rejected",
    };
    Err(SourceError {
        code,
        message: format!("the source answered HTTP {}", status.as_u16()),
    })
}
