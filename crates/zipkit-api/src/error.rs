//! The one error type of the API. Every failure — from auth to a malformed body, an unknown
//! route or a database outage — renders the same envelope:
//! `{"error": {"type", "code", "message", "param"}}`. Internal causes are logged with their chain
//! and never sent to the client. docs/API.md lists every code.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

type Cause = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed or a parameter is invalid.
    #[error("{message}")]
    BadRequest {
        code: &'static str,
        message: String,
        param: Option<String>,
    },
    /// 401: no usable credentials.
    #[error("{message}")]
    Unauthenticated { code: &'static str, message: String },
    /// 404: nothing of that name exists *for the caller*.
    #[error("{message}")]
    NotFound {
        code: &'static str,
        message: String,
        param: Option<String>,
    },
    /// 405: the path exists, the method does not.
    #[error("{message}")]
    MethodNotAllowed {
        message: String,
        /// The methods the resource takes, for the `Allow` header.
        allow: &'static str,
    },
    /// 409: the request conflicts with the current state.
    #[error("{message}")]
    Conflict {
        code: &'static str,
        message: String,
        param: Option<String>,
    },
    /// 413: the body is over the limit.
    #[error("{message}")]
    PayloadTooLarge { message: String },
    /// 415: the body is not JSON.
    #[error("{message}")]
    UnsupportedMediaType { message: String },
    /// 408: the body did not arrive in time.
    #[error("{message}")]
    RequestTimeout { message: String },
    /// 429: over a rate limit; retry after `retry_after` seconds.
    #[error("{message}")]
    RateLimited { message: String, retry_after: u64 },
    /// 503: too many bodies are being read at once; the client may retry shortly.
    #[error("{message}")]
    Busy { message: String },
    /// 503: a dependency (PostgreSQL) is unavailable; the client may retry.
    #[error("the service is temporarily unavailable")]
    Unavailable(#[source] Cause),
    /// 500: a bug or an unexpected failure.
    #[error("something went wrong on our side")]
    Internal(#[source] Cause),
}

/// The one error envelope.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorEnvelope<'a> {
    error: ErrorBody<'a>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody<'a> {
    /// `invalid_request_error`, `authentication_error`, `rate_limit_error` or `api_error`.
    #[serde(rename = "type")]
    #[schema(value_type = String)]
    error_type: &'static str,
    /// Stable code; docs/API.md lists them all.
    #[schema(value_type = String)]
    code: &'static str,
    message: String,
    /// The offending parameter (`urls[3].filename`), or null.
    #[schema(value_type = Option<String>)]
    param: Option<&'a str>,
    /// The `Request-Id` of this response, also on the log line: quote it to support.
    request_id: Option<String>,
}

impl ApiError {
    pub fn bad_request(
        code: &'static str,
        message: impl Into<String>,
        param: impl Into<Option<String>>,
    ) -> Self {
        Self::BadRequest {
            code,
            message: message.into(),
            param: param.into(),
        }
    }

    pub fn not_found(
        code: &'static str,
        message: impl Into<String>,
        param: impl Into<Option<String>>,
    ) -> Self {
        Self::NotFound {
            code,
            message: message.into(),
            param: param.into(),
        }
    }

    pub fn conflict(
        code: &'static str,
        message: impl Into<String>,
        param: impl Into<Option<String>>,
    ) -> Self {
        Self::Conflict {
            code,
            message: message.into(),
            param: param.into(),
        }
    }

    /// Over a rate limit; `whose` names it ("this address", "this access token").
    pub fn rate_limited(whose: &str, wait: std::time::Duration) -> Self {
        let retry_after = retry_after_secs(wait);
        Self::RateLimited {
            message: format!("too many requests from {whose}; retry in {retry_after} s"),
            retry_after,
        }
    }

    pub fn internal(cause: impl Into<Cause>) -> Self {
        Self::Internal(cause.into())
    }

    pub fn error_type(&self) -> &'static str {
        match self {
            Self::Unauthenticated { .. } => "authentication_error",
            Self::Unavailable(_) | Self::Internal(_) | Self::Busy { .. } => "api_error",
            Self::RateLimited { .. } => "rate_limit_error",
            _ => "invalid_request_error",
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest { code, .. }
            | Self::Unauthenticated { code, .. }
            | Self::NotFound { code, .. }
            | Self::Conflict { code, .. } => code,
            Self::MethodNotAllowed { .. } => "method_not_allowed",
            Self::PayloadTooLarge { .. } => "body_too_large",
            Self::UnsupportedMediaType { .. } => "content_type_unsupported",
            Self::RequestTimeout { .. } => "request_timeout",
            Self::Busy { .. } => "server_busy",
            Self::RateLimited { .. } => "rate_limited",
            Self::Unavailable(_) => "service_unavailable",
            Self::Internal(_) => "internal_error",
        }
    }

    fn param(&self) -> Option<&str> {
        match self {
            Self::BadRequest { param, .. }
            | Self::NotFound { param, .. }
            | Self::Conflict { param, .. } => param.as_deref(),
            _ => None,
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthenticated { .. } => StatusCode::UNAUTHORIZED,
            Self::NotFound { .. } => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::RequestTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Self::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let Self::Internal(cause) | Self::Unavailable(cause) = self {
            let mut chain = cause.to_string();
            let mut source = cause.source();
            while let Some(inner) = source {
                chain.push_str(": ");
                chain.push_str(&inner.to_string());
                source = inner.source();
            }
            tracing::error!(error = %chain, code = self.code(), "request failed");
        }
        let mut response = HttpResponse::build(self.status_code());
        if matches!(self, Self::Unauthenticated { .. }) {
            response.insert_header(("WWW-Authenticate", "Bearer"));
        }
        if matches!(self, Self::Busy { .. }) {
            response.insert_header(("Retry-After", "1"));
        }
        if let Self::MethodNotAllowed { allow, .. } = self {
            response.insert_header(("Allow", *allow));
        }
        if let Self::RateLimited { retry_after, .. } = self {
            response.insert_header(("Retry-After", retry_after.to_string()));
        }
        if matches!(self, Self::RequestTimeout { .. }) {
            // The rest of a body that did not arrive would be read as the next request.
            response.insert_header(("Connection", "close"));
        }
        response.json(ErrorEnvelope {
            error: ErrorBody {
                error_type: self.error_type(),
                code: self.code(),
                message: self.to_string(),
                param: self.param(),
                request_id: crate::middleware::current_request_id(),
            },
        })
    }
}

impl From<diesel::result::Error> for ApiError {
    fn from(err: diesel::result::Error) -> Self {
        Self::internal(err)
    }
}

impl From<zipkit_domain::db::DbError> for ApiError {
    fn from(err: zipkit_domain::db::DbError) -> Self {
        match err {
            zipkit_domain::db::DbError::Pool(_) => Self::Unavailable(err.into()),
            other => Self::internal(other),
        }
    }
}

/// Seconds for `Retry-After`: rounded up, at least 1.
pub fn retry_after_secs(wait: std::time::Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::retry_after_secs;

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1000)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
    }
}
