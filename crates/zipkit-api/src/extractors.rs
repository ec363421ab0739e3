//! Actix's extractor failures (JSON body, query string, path) mapped into the error envelope
//! (a body stopped by `body_limits` becomes 408 or 503), and `KnownQuery`, which refuses a
//! query parameter the endpoint does not document.

use std::future::{Ready, ready};

use actix_web::dev::Payload;
use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::{FromRequest, HttpRequest, web};
use serde::de::DeserializeOwned;
use utoipa::IntoParams;

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
    web::QueryConfig::default().error_handler(|err, _req| query_error(&err).into())
}

fn query_error(err: &QueryPayloadError) -> ApiError {
    let message = match err {
        QueryPayloadError::Deserialize(e) => e.to_string(),
        other => other.to_string(),
    };
    ApiError::bad_request(
        "parameter_invalid",
        format!("invalid query string: {message}"),
        None,
    )
}

/// A query string whose every name is one of `T`'s documented parameters (`parameter_unknown`
/// names the first that is not), then read as `T`. The names come from the same derive the
/// OpenAPI document lists them from.
#[derive(Debug)]
pub struct KnownQuery<T>(pub T);

impl<T: IntoParams + DeserializeOwned> FromRequest for KnownQuery<T> {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(known_query(req.query_string()))
    }
}

fn known_query<T: IntoParams + DeserializeOwned>(query: &str) -> Result<KnownQuery<T>, ApiError> {
    let known: Vec<String> = T::into_params(|| None)
        .into_iter()
        .map(|p| p.name)
        .collect();
    if let Some((name, _)) = url::form_urlencoded::parse(query.as_bytes())
        .find(|(name, _)| !known.contains(&name.to_string()))
    {
        return Err(ApiError::bad_request(
            "parameter_unknown",
            format!("`{name}` is not a known query parameter"),
            name.into_owned(),
        ));
    }
    web::Query::<T>::from_query(query)
        .map(|q| KnownQuery(q.into_inner()))
        .map_err(|e| query_error(&e))
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
