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
        let retry_after = crate::rate_limit::retry_after_secs(wait);
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

/// Maps actix's extractor failures (JSON body, query string, path) into the envelope.
pub mod extractors {
    use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
    use actix_web::{HttpRequest, web};

    use super::ApiError;
    use crate::body_limits::{self, BodyLimitError};

    pub fn json_config(limit: usize) -> web::JsonConfig {
        web::JsonConfig::default()
            .limit(limit)
            .error_handler(move |err, _req: &HttpRequest| {
                match err {
                    JsonPayloadError::Overflow { .. }
                    | JsonPayloadError::OverflowKnownLength { .. } => ApiError::PayloadTooLarge {
                        message: format!("the request body is larger than {limit} bytes"),
                    },
                    JsonPayloadError::ContentType => ApiError::UnsupportedMediaType {
                        message: "send the body as JSON with `Content-Type: application/json`"
                            .into(),
                    },
                    JsonPayloadError::Payload(payload) => match body_limits::limit_error(&payload) {
                        Some(slow @ BodyLimitError::TooSlow(_)) => ApiError::RequestTimeout {
                            message: slow.to_string(),
                        },
                        Some(BodyLimitError::Busy) => ApiError::Busy {
                            message: "the server is reading too many request bodies at once; retry shortly".into(),
                        },
                        None => ApiError::bad_request(
                            "body_invalid_json",
                            format!("the body could not be read: {payload}"),
                            None,
                        ),
                    },
                    JsonPayloadError::Deserialize(e) => ApiError::bad_request(
                        "body_invalid_json",
                        format!("the body is not valid JSON: {e}"),
                        None,
                    ),
                    other => ApiError::bad_request(
                        "body_invalid_json",
                        format!("the body could not be read: {other}"),
                        None,
                    ),
                }
                .into()
            })
    }

    pub fn query_config() -> web::QueryConfig {
        web::QueryConfig::default().error_handler(|err, _req| {
            let QueryPayloadError::Deserialize(e) = &err else {
                return ApiError::bad_request("parameter_invalid", err.to_string(), None).into();
            };
            let message = e.to_string();
            // serde_urlencoded says "unknown field `name`, expected one of …".
            if let Some(name) = message
                .strip_prefix("unknown field `")
                .and_then(|rest| rest.split('`').next())
            {
                return ApiError::bad_request(
                    "parameter_unknown",
                    format!("`{name}` is not a known query parameter"),
                    name.to_owned(),
                )
                .into();
            }
            ApiError::bad_request(
                "parameter_invalid",
                format!("invalid query string: {message}"),
                None,
            )
            .into()
        })
    }

    pub fn path_config() -> web::PathConfig {
        web::PathConfig::default().error_handler(|err: PathError, _req| {
            ApiError::bad_request(
                "parameter_invalid",
                format!("invalid path parameter: {err}"),
                None,
            )
            .into()
        })
    }
}
