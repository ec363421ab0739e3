//! A webhook receiver on loopback that records every request and answers 500 to the first
//! `failures` of them, then 200.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};

use crate::serve;

/// One request as the receiver got it.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: std::collections::BTreeMap<String, String>,
    pub body: Vec<u8>,
    /// What the receiver answered.
    pub status: u16,
}

#[derive(Debug)]
struct State {
    failures: usize,
    seen: AtomicUsize,
    received: Mutex<Vec<Received>>,
}

#[derive(Debug)]
pub struct WebhookReceiver {
    url: String,
    handle: actix_web::dev::ServerHandle,
    state: Arc<State>,
}

async fn receive(
    request: HttpRequest,
    body: web::Bytes,
    state: web::Data<Arc<State>>,
) -> HttpResponse {
    let n = state.seen.fetch_add(1, Ordering::SeqCst);
    let status = if n < state.failures { 500 } else { 200 };
    let headers = request
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                v.to_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    state
        .received
        .lock()
        .expect("the receiver's lock is never poisoned")
        .push(Received {
            headers,
            body: body.to_vec(),
            status,
        });
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap_or_default()).finish()
}

impl WebhookReceiver {
    pub async fn start(failures: usize) -> Self {
        let state = Arc::new(State {
            failures,
            seen: AtomicUsize::new(0),
            received: Mutex::new(Vec::new()),
        });
        let data = web::Data::new(Arc::clone(&state));
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .route("/hook", web::post().to(receive))
        })
        .workers(1);
        let (port, handle) = serve::on_loopback(server, "127.0.0.1", "the webhook receiver");
        Self {
            url: format!("http://127.0.0.1:{port}/hook"),
            handle,
            state,
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.state
            .received
            .lock()
            .expect("the receiver's lock is never poisoned")
            .clone()
    }

    /// Waits until `count` requests arrived (or `timeout` passes); returns them.
    pub async fn wait_for(&self, count: usize, timeout: std::time::Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.received().len() < count && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        self.received()
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}
