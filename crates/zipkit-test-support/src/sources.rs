//! A real HTTP server for source files, on loopback, with the misbehaviours worker tests need.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use actix_web::{App, HttpResponse, HttpServer, web};

use crate::serve;

#[derive(Debug, Clone)]
pub enum Behaviour {
    /// Serves the bytes.
    Serve(Vec<u8>),
    /// Serves the bytes with this `Last-Modified` header.
    ServeModified(Vec<u8>, String),
    /// Serves the bytes with chunked transfer encoding: no `Content-Length`.
    Chunked(Vec<u8>),
    /// Answers this status.
    Status(u16),
    /// Answers 302 with this `Location`.
    Redirect(String),
    /// Answers 500 this many times, then serves the bytes.
    FailThenServe(usize, Vec<u8>),
    /// Advertises byte ranges (with an ETag); the first request breaks off after `cut` bytes,
    /// later ones honour `Range` + `If-Range` with 206 and the rest.
    BreakThenResume { bytes: Vec<u8>, cut: usize },
    /// Without ranges or validators: the first request breaks off after `cut` bytes of `bytes`,
    /// later ones serve `then` whole (the same bytes, or changed ones).
    BreakThenServe {
        bytes: Vec<u8>,
        cut: usize,
        then: Vec<u8>,
    },
    /// Announces the length of `bytes` but breaks off after `cut` of them, every time.
    Truncated { bytes: Vec<u8>, cut: usize },
    /// Serves `bytes` in chunks of `chunk`, waiting `pause` before each (counted in
    /// `chunks_sent`); with `then`, those bytes to every request after the first (a source
    /// that changed). With `ranges`, it gives an ETag (`"v1"`, `"v2"` once changed) and
    /// `Range: bytes=N-` gets 206 and the rest from N, unless an `If-Range` names another ETag.
    /// Its `Last-Modified` is a day later once changed.
    Trickle {
        bytes: Vec<u8>,
        chunk: usize,
        pause: std::time::Duration,
        then: Option<Vec<u8>>,
        ranges: bool,
    },
    /// Serves `chunks` chunks of `chunk` bytes, waiting `pause` before each.
    Slow {
        chunk: usize,
        chunks: usize,
        pause: std::time::Duration,
    },
}

#[derive(Debug)]
struct Files {
    routes: HashMap<String, Behaviour>,
    hits: HashMap<String, AtomicUsize>,
    /// Chunks actually sent by `Slow` sources (stops growing when the client lets go).
    chunks_sent: HashMap<String, AtomicUsize>,
    /// Each request's `Range` header, in order.
    ranges: std::sync::Mutex<HashMap<String, Vec<Option<String>>>>,
}

#[derive(Debug)]
pub struct SourceServer {
    base: String,
    handle: actix_web::dev::ServerHandle,
    files: Arc<Files>,
}

const ETAG: &str = "\"v1\"";

/// The first `cut` bytes with the full length announced, then a broken connection; `ranges`
/// advertises byte ranges and an ETag.
fn broken_off(bytes: &[u8], cut: usize, ranges: bool) -> HttpResponse {
    let head = web::Bytes::copy_from_slice(&bytes[..cut]);
    let body = futures_util::stream::iter([
        Ok::<_, std::io::Error>(head),
        Err(std::io::Error::other("connection broken on purpose")),
    ]);
    let mut response = HttpResponse::Ok();
    if ranges {
        response
            .insert_header(("ETag", ETAG))
            .insert_header(("Accept-Ranges", "bytes"));
    }
    response.no_chunking(bytes.len() as u64).streaming(body)
}

/// `Range: bytes=N-` with a matching `If-Range` gets 206 and the rest; anything else, all of it.
fn ranged(request: &actix_web::HttpRequest, bytes: &[u8]) -> HttpResponse {
    let header = |name| {
        request
            .headers()
            .get(name)
            .and_then(|v: &actix_web::http::header::HeaderValue| v.to_str().ok())
    };
    let from = header("range")
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|n| *n < bytes.len() && header("if-range") == Some(ETAG));
    match from {
        Some(from) => HttpResponse::PartialContent()
            .insert_header(("ETag", ETAG))
            .insert_header((
                "Content-Range",
                format!("bytes {from}-{}/{}", bytes.len() - 1, bytes.len()),
            ))
            .body(bytes[from..].to_vec()),
        None => HttpResponse::Ok()
            .insert_header(("ETag", ETAG))
            .insert_header(("Accept-Ranges", "bytes"))
            .body(bytes.to_vec()),
    }
}

async fn serve(
    request: actix_web::HttpRequest,
    files: web::Data<Arc<Files>>,
    path: web::Path<String>,
) -> HttpResponse {
    let files: Arc<Files> = Arc::clone(&files);
    let name = path.into_inner();
    let hit = files
        .hits
        .get(&name)
        .map_or(0, |h| h.fetch_add(1, Ordering::SeqCst));
    let range = request
        .headers()
        .get("range")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if let Ok(mut ranges) = files.ranges.lock() {
        ranges.entry(name.clone()).or_default().push(range.clone());
    }
    match files.routes.get(&name) {
        None => HttpResponse::NotFound().finish(),
        Some(Behaviour::Serve(bytes)) => HttpResponse::Ok().body(bytes.clone()),
        Some(Behaviour::Chunked(bytes)) => {
            let chunks: Vec<Result<web::Bytes, std::io::Error>> = bytes
                .chunks(64 * 1024)
                .map(|c| Ok(web::Bytes::copy_from_slice(c)))
                .collect();
            HttpResponse::Ok().streaming(futures_util::stream::iter(chunks))
        }
        Some(Behaviour::ServeModified(bytes, modified)) => HttpResponse::Ok()
            .insert_header(("Last-Modified", modified.as_str()))
            .body(bytes.clone()),
        Some(Behaviour::Redirect(location)) => HttpResponse::Found()
            .insert_header(("Location", location.as_str()))
            .finish(),
        Some(Behaviour::Status(code)) => {
            HttpResponse::build(actix_web::http::StatusCode::from_u16(*code).unwrap_or_default())
                .finish()
        }
        Some(Behaviour::Slow {
            chunk,
            chunks,
            pause,
        }) => {
            let (chunk, pause) = (*chunk, *pause);
            let files = Arc::clone(&files);
            let body = futures_util::stream::unfold(*chunks, move |left| {
                let (files, name) = (Arc::clone(&files), name.clone());
                async move {
                    if left == 0 {
                        return None;
                    }
                    tokio::time::sleep(pause).await;
                    if let Some(sent) = files.chunks_sent.get(&name) {
                        sent.fetch_add(1, Ordering::SeqCst);
                    }
                    Some((
                        Ok::<_, std::io::Error>(web::Bytes::from(vec![b'x'; chunk])),
                        left - 1,
                    ))
                }
            });
            HttpResponse::Ok().streaming(body)
        }
        Some(Behaviour::Truncated { bytes, cut }) => broken_off(bytes, *cut, false),
        Some(Behaviour::Trickle {
            bytes,
            chunk,
            pause,
            then,
            ranges,
        }) => {
            let (bytes, etag, version) = match then {
                Some(then) if hit > 0 => (then, "\"v2\"", 1),
                _ => (bytes, ETAG, 0),
            };
            let total = bytes.len();
            let if_range = request
                .headers()
                .get("if-range")
                .and_then(|v| v.to_str().ok());
            let from = range
                .as_deref()
                .and_then(|r| r.strip_prefix("bytes="))
                .and_then(|r| r.strip_suffix('-'))
                .and_then(|n| n.parse::<usize>().ok())
                .filter(|n| *ranges && *n < total && if_range.is_none_or(|v| v == etag));
            let (chunk, pause) = (*chunk, *pause);
            let bytes = web::Bytes::from(bytes[from.unwrap_or(0)..].to_vec());
            let length = bytes.len() as u64;
            let files = Arc::clone(&files);
            let body = futures_util::stream::unfold(0usize, move |at| {
                let (files, name, bytes) = (Arc::clone(&files), name.clone(), bytes.clone());
                async move {
                    if at >= bytes.len() {
                        return None;
                    }
                    tokio::time::sleep(pause).await;
                    if let Some(sent) = files.chunks_sent.get(&name) {
                        sent.fetch_add(1, Ordering::SeqCst);
                    }
                    let end = (at + chunk).min(bytes.len());
                    Some((Ok::<_, std::io::Error>(bytes.slice(at..end)), end))
                }
            });
            let mut response = match from {
                Some(from) => {
                    let mut partial = HttpResponse::PartialContent();
                    partial.insert_header((
                        "Content-Range",
                        format!("bytes {from}-{}/{total}", total - 1),
                    ));
                    partial
                }
                None => HttpResponse::Ok(),
            };

            if *ranges {
                response
                    .insert_header(("Accept-Ranges", "bytes"))
                    .insert_header(("ETag", etag));
            }
            let modified = std::time::UNIX_EPOCH
                + std::time::Duration::from_secs(1_770_000_000 + 86_400 * version);
            response
                .insert_header(("Last-Modified", httpdate::fmt_http_date(modified)))
                .no_chunking(length)
                .streaming(body)
        }
        Some(Behaviour::BreakThenResume { bytes, cut }) if hit == 0 => {
            broken_off(bytes, *cut, true)
        }
        Some(Behaviour::BreakThenResume { bytes, .. }) => ranged(&request, bytes),
        Some(Behaviour::BreakThenServe { bytes, cut, .. }) if hit == 0 => {
            broken_off(bytes, *cut, false)
        }
        Some(Behaviour::BreakThenServe { then, .. }) => HttpResponse::Ok().body(then.clone()),
        Some(Behaviour::FailThenServe(failures, bytes)) => {
            if hit < *failures {
                HttpResponse::InternalServerError().finish()
            } else {
                HttpResponse::Ok().body(bytes.clone())
            }
        }
    }
}

impl SourceServer {
    /// Serves `routes` (path without leading slash → behaviour) under `/files/`.
    pub async fn start(routes: Vec<(&str, Behaviour)>) -> Self {
        Self::start_on("127.0.0.1", routes).await
    }

    /// As `start`, listening on another loopback address (all of 127.0.0.0/8 is loopback).
    pub async fn start_on(host: &str, routes: Vec<(&str, Behaviour)>) -> Self {
        let files = Arc::new(Files {
            hits: routes
                .iter()
                .map(|(n, _)| ((*n).to_owned(), AtomicUsize::new(0)))
                .collect(),
            chunks_sent: routes
                .iter()
                .map(|(n, _)| ((*n).to_owned(), AtomicUsize::new(0)))
                .collect(),
            routes: routes.into_iter().map(|(n, b)| (n.to_owned(), b)).collect(),
            ranges: std::sync::Mutex::default(),
        });
        let data = web::Data::new(Arc::clone(&files));
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .route("/files/{name:.*}", web::get().to(serve))
        })
        .workers(1);
        let (port, handle) = serve::on_loopback(server, host, "the source server");
        Self {
            base: format!("http://{host}:{port}/files/"),
            handle,
            files,
        }
    }

    /// The URL of a served path.
    pub fn url(&self, name: &str) -> String {
        format!("{}{name}", self.base)
    }

    /// A job's entry for this source under its own name: (url, name).
    pub fn entry<'a>(&self, name: &'a str) -> (String, &'a str) {
        (self.url(name), name)
    }

    /// How many chunks a `Slow` source has sent so far.
    pub fn chunks_sent(&self, name: &str) -> usize {
        self.files
            .chunks_sent
            .get(name)
            .map_or(0, |c| c.load(Ordering::SeqCst))
    }

    /// The `Range` header of each request `name` received, in order.
    pub fn ranges_asked(&self, name: &str) -> Vec<Option<String>> {
        self.files
            .ranges
            .lock()
            .map(|r| r.get(name).cloned().unwrap_or_default())
            .unwrap_or_default()
    }

    /// How many requests `name` received.
    pub fn hits(&self, name: &str) -> usize {
        self.files
            .hits
            .get(name)
            .map_or(0, |h| h.load(Ordering::SeqCst))
    }
}

impl Drop for SourceServer {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}

/// Word-like text that deflate works hard on (long hash chains), the same for the same seed.
pub fn word_salad(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let rank = ((state >> 20) % 1000).pow(2) / 1000;
        for k in 0..2 + (state >> 40) % 9 {
            out.push(b'a' + ((rank * 7 + k * 13) % 26) as u8);
        }
        out.push(if (state >> 10).is_multiple_of(11) {
            b'\n'
        } else {
            b' '
        });
    }
    out.truncate(len);
    out
}
