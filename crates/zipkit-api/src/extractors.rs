//! Actix's extractor failures (JSON body, query string, path) mapped into the error envelope;
//! a body stopped by `body_limits` becomes 408 or 503.

use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::{HttpRequest, web};

use crate::body_limits::{self, BodyLimitError};
use crate::error::ApiError;

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
                    message: "send the body as JSON with `Content-Type: application/json`".into(),
                },
                JsonPayloadError::Payload(payload) => match body_limits::limit_error(&payload) {
                    Some(slow @ BodyLimitError::TooSlow(_)) => ApiError::RequestTimeout {
                        message: slow.to_string(),
                    },
                    Some(BodyLimitError::Busy) => ApiError::Busy {
                        message:
                            "the server is reading too many request bodies at once; retry shortly"
                                .into(),
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
