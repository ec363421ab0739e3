//! What every response gets, whatever route answers it: a `Request-Id` (also on the access-log
//! line, in every log event of the request and in error envelopes, so a support request can be
//! matched to a log line), `X-Content-Type-Options: nosniff`, and HEAD answered wherever GET is.
//! The dashboard's pages also get a strict Content-Security-Policy and the framing, referrer and
//! permissions headers (`dashboard_headers`). And the access log, which never shows a query
//! value that is not known to be harmless (a token sent as `?access_token=` stays out of it).

use actix_web::HttpMessage;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::middleware::{DefaultHeaders, Logger, Next};
use tracing::Instrument;
use tracing::field::Empty;
use zipkit_domain::tokens::TOKEN_PREFIX;
use zipkit_runtime::metrics::{HTTP_REQUEST_DURATION, HTTP_REQUESTS};
use zipkit_runtime::telemetry;

tokio::task_local! {
    static REQUEST_ID: String;
}

pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("request-id");

/// The id of the request being handled (inside `request_id`), for error envelopes.
pub fn current_request_id() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// Gives the request an id, makes it current for everything the request runs (its log events
/// carry it as `request.id`), and returns it as `Request-Id`. Ids are generated here, never
/// taken from the client, so a log line cannot be forged to match another request. The
/// request's span is the root of its trace, or continues the client's `traceparent`.
pub async fn request_id(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let id = format!("req_{}", uuid::Uuid::new_v4().simple());
    let method = req.method().to_string();
    let span = tracing::info_span!(
        "HTTP request",
        otel.kind = "server",
        http.request.method = %method,
        http.route = Empty,
        http.response.status_code = Empty,
        request.id = %id,
    );
    let incoming = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok());
    telemetry::continue_trace(&span, incoming);
    let result = REQUEST_ID
        .scope(id.clone(), next.call(req).instrument(span.clone()))
        .await;
    let status = match &result {
        Ok(response) => response.status(),
        Err(error) => error.as_response_error().status_code(),
    };
    // Named after the route pattern, never the path (ids would make every name unique).
    let route = result
        .as_ref()
        .ok()
        .and_then(|r| r.request().match_pattern());
    telemetry::rename(
        &span,
        format!("{method} {}", route.as_deref().unwrap_or("unmatched")),
    );
    span.record("http.route", route.as_deref().unwrap_or("unmatched"));
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        telemetry::mark_error(&span, format!("HTTP {status}"));
    }
    let mut response = result?;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    Ok(response)
}

/// Counts the request and times it, labelled by the route pattern that answered (never the
/// path itself: ids would make every request its own series).
pub async fn record_metrics(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = std::time::Instant::now();
    let method = match *req.method() {
        Method::GET | Method::POST | Method::PUT | Method::PATCH | Method::DELETE => {
            req.method().as_str().to_owned()
        }
        _ => "other".to_owned(),
    };
    let result = next.call(req).await;
    let (route, status) = match &result {
        Ok(response) => (
            response.request().match_pattern(),
            response.status().as_u16(),
        ),
        Err(error) => (None, error.as_response_error().status_code().as_u16()),
    };
    // Requests no route matched share one label, whatever path they probed.
    let route = route.unwrap_or_else(|| "unmatched".to_owned());
    let elapsed = started.elapsed().as_secs_f64();
    metrics::histogram!(HTTP_REQUEST_DURATION, "method" => method.clone(), "route" => route.clone())
        .record(elapsed);
    metrics::counter!(HTTP_REQUESTS, "method" => method, "route" => route, "status" => status.to_string())
        .increment(1);
    result
}

/// The method a request came with, when `head_as_get` changed it (for the access log).
#[derive(Debug, Clone)]
struct OriginalMethod(Method);

/// HEAD is GET without the body: routed as GET; the HTTP layer, which saw the HEAD, sends the
/// headers only. Outermost, so nothing holds the request yet.
pub async fn head_as_get(
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if req.method() == Method::HEAD {
        req.extensions_mut().insert(OriginalMethod(Method::HEAD));
        req.head_mut().method = Method::GET;
    }
    next.call(req).await
}

/// Headers every response carries.
pub fn common_headers() -> DefaultHeaders {
    DefaultHeaders::new().add((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
}

/// The dashboard's own: nothing runs, loads or frames but what the dashboard serves itself (its
/// stylesheet and one script file; no inline script or style), forms post only to itself, no
/// referrer leaves it, and no powerful browser feature is available to it.
pub fn dashboard_headers() -> DefaultHeaders {
    DefaultHeaders::new()
        .add((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ))
        .add((header::X_FRAME_OPTIONS, "DENY"))
        .add((header::REFERRER_POLICY, "no-referrer"))
        .add((
            HeaderName::from_static("permissions-policy"),
            "camera=(), microphone=(), geolocation=(), payment=(), usb=(), interest-cohort=()",
        ))
        .add((
            HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ))
}

/// Query parameters whose values may appear in the access log; any other value is replaced.
const LOGGED_QUERY_PARAMETERS: &[&str] = &["limit", "status", "starting_after", "service"];

/// One line per request: method, path, the query with unknown parameters redacted, status,
/// seconds and the request id. Headers (and so the bearer token) are never logged, and neither is
/// anything shaped like a token wherever a client put it.
pub fn access_log() -> Logger {
    Logger::new("%{method}xi %{path}xi%{query}xi %s %Ts request_id=%{request-id}o")
        .custom_request_replace("method", |req| {
            req.extensions()
                .get::<OriginalMethod>()
                .map_or_else(|| req.method().to_string(), |m| m.0.to_string())
        })
        .custom_request_replace("path", |req| redacted_path(req.path()))
        .custom_request_replace("query", |req| redacted_query(req.query_string()))
}

fn redacted_path(path: &str) -> String {
    path.split('/')
        .map(|segment| {
            if segment.contains(TOKEN_PREFIX) {
                "REDACTED"
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn redacted_query(query: &str) -> String {
    if query.is_empty() {
        return String::new();
    }
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            // Names too: a client may put a token anywhere.
            if LOGGED_QUERY_PARAMETERS.contains(&name)
                && value.len() <= 64
                && !value.contains(TOKEN_PREFIX)
            {
                pair.to_owned()
            } else {
                "REDACTED".to_owned()
            }
        })
        .collect();
    format!("?{}", pairs.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_logged_query_keeps_only_known_values() {
        assert_eq!(redacted_query(""), "");
        assert_eq!(
            redacted_query("limit=10&status=failed"),
            "?limit=10&status=failed"
        );
        assert_eq!(
            redacted_query("access_token=zk_secret&limit=5"),
            "?REDACTED&limit=5"
        );
        assert_eq!(redacted_query("zk_secret"), "?REDACTED");
        assert_eq!(redacted_query("status=zk_secret"), "?REDACTED");
        assert_eq!(redacted_query("X-Amz-Signature=abc"), "?REDACTED");
    }

    #[test]
    fn a_token_in_the_path_is_not_logged() {
        assert_eq!(redacted_path("/v1/zips/abc"), "/v1/zips/abc");
        assert_eq!(redacted_path("/v1/zk_secret/x"), "/v1/REDACTED/x");
    }
}
