//! An HTTP proxy in front of the local S3 store that records every call by its S3 operation and
//! can answer chosen calls itself (a 500 that repeats, AccessDenied, NoSuchUpload), so tests can
//! count what the worker sent and see what it does with a store's refusals. Requests are
//! forwarded unchanged (the `Host` header included, so SigV4 signatures still verify).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};

use crate::serve;
use crate::services::s3_endpoint;

/// One call the store received (or the proxy answered).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreCall {
    /// `PutObject`, `GetObject`, `HeadObject`, `DeleteObject`, `ListObjectsV2`, `CreateMultipartUpload`,
    /// `UploadPart`, `UploadPartCopy`, `CompleteMultipartUpload`, `AbortMultipartUpload`, or
    /// the method and query for anything else.
    pub operation: String,
    pub part: Option<i32>,
    pub upload_id: Option<String>,
    pub status: u16,
    /// What the call asked of the object: its `x-amz-*` headers (signing ones aside),
    /// `cache-control` and `range`, lower-case names.
    pub headers: BTreeMap<String, String>,
    /// The bytes of the request's body: what the caller sent the store.
    pub body: u64,
}

/// The request headers a call records.
fn object_headers(request: &HttpRequest) -> BTreeMap<String, String> {
    request
        .headers()
        .iter()
        .filter(|(name, _)| {
            let name = name.as_str();
            (name.starts_with("x-amz-") || name == "cache-control" || name == "range")
                && !matches!(
                    name,
                    "x-amz-date" | "x-amz-content-sha256" | "x-amz-user-agent"
                )
        })
        .map(|(name, value)| {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            (name.as_str().to_owned(), value)
        })
        .collect()
}

/// An answer the proxy gives instead of the store.
#[derive(Debug, Clone)]
struct Rule {
    operation: String,
    /// Only calls on this upload (`None`: any).
    upload_id: Option<String>,
    /// Only calls carrying this header (`None`: any).
    header: Option<String>,
    status: u16,
    body: String,
    /// How many more calls it answers (`None`: every one).
    left: Option<usize>,
}

#[derive(Debug, Default)]
struct State {
    calls: Mutex<Vec<StoreCall>>,
    rules: Mutex<Vec<Rule>>,
}

#[derive(Debug)]
pub struct StoreProxy {
    url: String,
    handle: actix_web::dev::ServerHandle,
    state: Arc<State>,
}

/// Names the S3 operation of a request from its method, its query and whether it names a copy
/// source (path-style requests: `/bucket/key`).
fn operation(method: &str, query: &str, copies: bool) -> (String, Option<i32>, Option<String>) {
    let params: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let upload_id = get("uploadId");
    let part = get("partNumber").and_then(|p| p.parse().ok());
    let name = match (method, upload_id.is_some(), part.is_some()) {
        ("PUT", true, true) if copies => "UploadPartCopy",
        ("PUT", true, true) => "UploadPart",
        ("PUT", _, _) => "PutObject",
        ("GET", _, _) if get("list-type").is_some() => "ListObjectsV2",
        ("GET", false, _) if query.is_empty() || get("x-id").is_some() => "GetObject",
        ("HEAD", _, _) => "HeadObject",
        ("POST", false, _) if get("uploads").is_some() => "CreateMultipartUpload",
        ("POST", true, _) => "CompleteMultipartUpload",
        ("DELETE", true, _) => "AbortMultipartUpload",
        ("DELETE", false, _) => "DeleteObject",
        _ => "",
    };
    let name = if name.is_empty() {
        format!("{method} ?{query}")
    } else {
        name.to_owned()
    };
    (name, part, upload_id)
}

async fn forward(
    request: HttpRequest,
    body: web::Bytes,
    state: web::Data<Arc<State>>,
    client: web::Data<reqwest::Client>,
) -> HttpResponse {
    let method = request.method().as_str().to_owned();
    let query = request.query_string().to_owned();
    let copies = request.headers().contains_key("x-amz-copy-source");
    let (name, part, upload_id) = operation(&method, &query, copies);
    let headers = object_headers(&request);
    let body_len = body.len() as u64;
    let canned = {
        let mut rules = state.rules.lock().expect("rules");
        rules
            .iter_mut()
            .find(|r| {
                r.operation == name
                    && r.left != Some(0)
                    && (r.upload_id.is_none() || r.upload_id == upload_id)
                    && r.header.as_ref().is_none_or(|h| headers.contains_key(h))
            })
            .map(|rule| {
                if let Some(left) = &mut rule.left {
                    *left -= 1;
                }
                (rule.status, rule.body.clone())
            })
    };
    let record = |status: u16| {
        state.calls.lock().expect("calls").push(StoreCall {
            operation: name.clone(),
            part,
            upload_id: upload_id.clone(),
            status,
            headers: headers.clone(),
            body: body_len,
        });
    };
    if let Some((status, body)) = canned {
        record(status);
        return HttpResponse::build(
            actix_web::http::StatusCode::from_u16(status).expect("a valid status"),
        )
        .content_type("application/xml")
        .body(body);
    }
    let target = format!(
        "{}{}",
        s3_endpoint(),
        request.uri().path_and_query().map_or("/", |p| p.as_str())
    );
    let mut forwarded = client.request(
        reqwest::Method::from_bytes(method.as_bytes()).expect("a method"),
        target,
    );
    for (name, value) in request.headers() {
        if name.as_str() != "content-length" {
            forwarded = forwarded.header(name.as_str(), value.as_bytes());
        }
    }
    let answer = match forwarded.body(body).send().await {
        Ok(answer) => answer,
        Err(e) => {
            record(502);
            return HttpResponse::BadGateway().body(e.to_string());
        }
    };
    let status = answer.status().as_u16();
    record(status);
    let mut response =
        HttpResponse::build(actix_web::http::StatusCode::from_u16(status).expect("a valid status"));
    for (name, value) in answer.headers() {
        if !matches!(
            name.as_str(),
            "content-length" | "transfer-encoding" | "connection"
        ) {
            response.insert_header((name.as_str(), value.as_bytes()));
        }
    }
    // Streamed as it comes (a large object must not wait to be whole here), with its length;
    // a HEAD's length is the object's, without a body.
    // The header, not the body's size: a HEAD's body is empty.
    let length = answer
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let body = futures_util::StreamExt::map(answer.bytes_stream(), |chunk| {
        chunk.map_err(|e| Box::new(e) as Box<dyn std::error::Error>)
    });
    match length {
        Some(length) if method == "HEAD" => {
            let nothing =
                futures_util::stream::empty::<Result<web::Bytes, Box<dyn std::error::Error>>>();
            response.body(actix_web::body::SizedStream::new(length, nothing))
        }
        Some(length) => response.body(actix_web::body::SizedStream::new(length, body)),
        None => response.streaming(body),
    }
}

impl StoreProxy {
    /// A proxy in front of the local store, on a free loopback port.
    pub async fn start() -> Self {
        let state = Arc::new(State::default());
        let data = web::Data::new(Arc::clone(&state));
        let client = web::Data::new(
            reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("a client"),
        );
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(client.clone())
                .app_data(web::PayloadConfig::new(256 * 1024 * 1024))
                .default_service(web::to(forward))
        })
        .workers(2);
        let (port, handle) = serve::on_loopback(server, "127.0.0.1", "the store proxy");
        Self {
            url: format!("http://127.0.0.1:{port}"),
            handle,
            state,
        }
    }

    /// The endpoint to give a bucket.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Answers `operation` with `status` and S3's error body for `code`, `times` times (`None`:
    /// until told otherwise), instead of the store.
    pub fn refuse(&self, operation: &str, status: u16, code: &str, times: Option<usize>) {
        self.refuse_on(operation, (None, None), status, code, times);
    }

    /// As `refuse`, only for calls on the upload `upload_id`.
    pub fn refuse_upload(&self, operation: &str, upload_id: &str, status: u16, code: &str) {
        self.refuse_on(operation, (Some(upload_id), None), status, code, None);
    }

    /// As `refuse`, only for calls carrying the header `header` (lower case), as a store that
    /// does not support what it asks refuses them (R2 and `x-amz-tagging`).
    pub fn refuse_carrying(&self, operation: &str, header: &str, status: u16, code: &str) {
        self.refuse_on(operation, (None, Some(header)), status, code, None);
    }

    fn refuse_on(
        &self,
        operation: &str,
        (upload_id, header): (Option<&str>, Option<&str>),
        status: u16,
        code: &str,
        times: Option<usize>,
    ) {
        self.state.rules.lock().expect("rules").push(Rule {
            operation: operation.to_owned(),
            upload_id: upload_id.map(str::to_owned),
            header: header.map(str::to_owned),
            status,
            body: crate::canned_http::s3_error(code, &format!("{code} (from the test's proxy)")),
            left: times,
        });
    }

    /// Forwards everything again.
    pub fn clear(&self) {
        self.state.rules.lock().expect("rules").clear();
    }

    /// Every call so far, in the order they arrived.
    pub fn calls(&self) -> Vec<StoreCall> {
        self.state.calls.lock().expect("calls").clone()
    }

    /// How many calls of `operation` arrived.
    pub fn count(&self, operation: &str) -> usize {
        self.calls()
            .iter()
            .filter(|c| c.operation == operation)
            .count()
    }

    /// The bytes of every request body the store received (or the proxy answered).
    pub fn body_bytes(&self) -> u64 {
        self.calls().iter().map(|c| c.body).sum()
    }

    /// The operations in the order they arrived.
    pub fn operations(&self) -> Vec<String> {
        self.calls().into_iter().map(|c| c.operation).collect()
    }
}

impl Drop for StoreProxy {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}

#[cfg(test)]
mod tests {
    use super::operation;

    #[test]
    fn calls_are_named_by_their_s3_operation() {
        assert_eq!(operation("PUT", "", false).0, "PutObject");
        assert_eq!(
            operation("POST", "uploads", false).0,
            "CreateMultipartUpload"
        );
        assert_eq!(
            operation("PUT", "partNumber=3&uploadId=abc", false),
            ("UploadPart".to_owned(), Some(3), Some("abc".to_owned()))
        );
        assert_eq!(
            operation("POST", "uploadId=abc", false).0,
            "CompleteMultipartUpload"
        );
        assert_eq!(
            operation("DELETE", "uploadId=abc", false).0,
            "AbortMultipartUpload"
        );
        assert_eq!(
            operation("PUT", "partNumber=1&uploadId=abc", true).0,
            "UploadPartCopy"
        );
        assert_eq!(operation("GET", "x-id=GetObject", false).0, "GetObject");
        assert_eq!(
            operation("GET", "list-type=2&max-keys=1", false).0,
            "ListObjectsV2"
        );
        assert_eq!(operation("HEAD", "", false).0, "HeadObject");
        assert_eq!(
            operation("DELETE", "x-id=DeleteObject", false).0,
            "DeleteObject"
        );
    }
}
