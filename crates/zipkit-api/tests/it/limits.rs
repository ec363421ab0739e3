//! Server limits seen from a raw TCP client: a body that trickles in times out, and bodies
//! being read at once share one memory budget.

use crate::common;

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use zipkit_domain::Service;

/// Sends the head of a POST /v1/zips announcing `length` bytes, then `body` (all or part of it).
async fn post_head(base: &str, token: &str, length: usize, body: &[u8]) -> TcpStream {
    let address = base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).await.expect("connect");
    let head = format!(
        "POST /v1/zips HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("head");
    stream.write_all(body).await.expect("body");
    stream
}

/// Reads the response until the connection closes or `wait` passes; its status line and text.
async fn response(stream: &mut TcpStream, wait: Duration) -> String {
    let mut text = Vec::new();
    let _ = tokio::time::timeout(wait, stream.read_to_end(&mut text)).await;
    String::from_utf8_lossy(&text).into_owned()
}

/// A JSON body of exactly `len` bytes (a long bucket name; refused later, for an empty `urls`).
fn body_of(len: usize) -> Vec<u8> {
    let frame = r#"{"urls": [], "bucket_name": "", "key": "k"}"#;
    let filler = "x".repeat(len - frame.len());
    frame
        .replace(
            r#""bucket_name": """#,
            &format!(r#""bucket_name": "{filler}""#),
        )
        .into_bytes()
}

#[tokio::test]
async fn a_body_that_trickles_in_is_cut_off_with_408_at_the_deadline() {
    let (db, _broker, app) = common::start_adjusted(|s| s.api.body_timeout_secs = 1).await;
    let (_, token) = app.project(&db, "Acme").await;
    let started = Instant::now();
    let mut stream = post_head(&app.base, &token, 100, b"{\"ur").await;
    // One more byte after a while: still far from the 100 announced.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let _ = stream.write_all(b"l").await;
    let answer = response(&mut stream, Duration::from_secs(5)).await;
    let took = started.elapsed();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"code\":\"request_timeout\""), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    assert!(took < Duration::from_secs(4), "cut off after {took:?}");
}

#[tokio::test]
async fn bodies_read_at_once_share_one_budget_and_the_overflow_is_told_to_retry() {
    let (db, _broker, app) = common::start_adjusted(|s| {
        s.api.max_body_bytes = 64 * 1024;
        s.api.max_body_bytes_in_flight = 96 * 1024;
    })
    .await;
    let (project, token) = app.project(&db, "Acme").await;
    app.bucket(&db, project, Service::S3, "bucket").await;

    // A: 50 KB of a 60 KB body arrive, then it pauses, holding its share.
    let a_body = body_of(60_000);
    let mut a = post_head(&app.base, &token, a_body.len(), &a_body[..50_000]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // B, whole, does not fit beside A: 503 with Retry-After, in the envelope.
    let b_body = body_of(50_000);
    let mut b = post_head(&app.base, &token, b_body.len(), &b_body).await;
    let answer = response(&mut b, Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("\"code\":\"server_busy\""), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 1"),
        "{answer}"
    );

    // A finishes and is answered on its merits (a 400 for the empty `urls`), not refused.
    a.write_all(&a_body[50_000..]).await.expect("rest of A");
    let answer = response(&mut a, Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("\"code\":\"urls_empty\""), "{answer}");

    // With A done, its share is back: the same body as B now gets through.
    let mut c = post_head(&app.base, &token, b_body.len(), &b_body).await;
    let answer = response(&mut c, Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("\"code\":\"urls_empty\""), "{answer}");
}

#[tokio::test]
async fn connections_beyond_the_limit_wait_until_one_closes() {
    // One connection per worker thread, and one worker per core.
    let (_db, _broker, app) = common::start_adjusted(|s| s.api.max_connections = 1).await;
    let workers = std::thread::available_parallelism().map_or(1, usize::from);
    let address = app.base.trim_start_matches("http://").to_owned();
    let get = format!("GET /healthz HTTP/1.1\r\nHost: {address}\r\n\r\n");

    // Open connections, each asking once, until one is not answered: the limit. (The test
    // client's own pooled connection may hold one of the places.)
    let mut held = Vec::new();
    let mut waiting = None;
    for _ in 0..workers + 3 {
        let mut stream = TcpStream::connect(&address).await.expect("connect");
        stream.write_all(get.as_bytes()).await.expect("request");
        let mut buffer = [0u8; 512];
        match tokio::time::timeout(Duration::from_millis(700), stream.read(&mut buffer)).await {
            Ok(Ok(n)) if buffer[..n].starts_with(b"HTTP/1.1 200") => held.push(stream),
            Ok(other) => panic!("unexpected answer: {other:?}"),
            Err(_) => {
                waiting = Some(stream);
                break;
            }
        }
    }
    let mut waiting = waiting.expect("a connection beyond the limit waits");
    assert!(
        held.len() <= workers,
        "{} connections were served at once",
        held.len()
    );

    // Once the others close, the waiting one is served.
    drop(held);
    let mut buffer = [0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(6), waiting.read(&mut buffer))
        .await
        .expect("answered once connections closed")
        .expect("read");
    assert!(
        buffer[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buffer[..n])
    );
}

#[tokio::test]
async fn guessing_tokens_from_one_address_is_cut_off_with_429_and_retry_after() {
    let (_db, _broker, app) = common::start_adjusted(|s| {
        s.rate_limits.api_per_address_per_minute = 60;
        s.rate_limits.api_per_address_burst = 5;
    })
    .await;
    let guess = |n: usize| {
        app.http
            .get(format!("{}/v1/zips", app.base))
            .bearer_auth(format!("zk_{n:0>43}"))
    };
    for n in 0..5 {
        let (status, body) = app.send(guess(n)).await;
        assert_eq!(status, 401, "{body}");
    }
    let response = guess(5).send().await.expect("GET");
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    let body: serde_json::Value = response.json().await.expect("JSON");
    assert_eq!(body["error"]["type"], "rate_limit_error", "{body}");
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    assert!(body["error"]["request_id"].is_string(), "{body}");
    // The API under /api/v1 shares the allowance; health checks are not limited.
    let (status, _) = app
        .send(app.http.get(format!("{}/api/v1/zips", app.base)))
        .await;
    assert_eq!(status, 429);
    let (status, _) = app.get("/healthz").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn each_token_has_its_own_allowance() {
    let (db, _broker, app) = common::start_adjusted(|s| {
        s.rate_limits.api_per_token_per_minute = 60;
        s.rate_limits.api_per_token_burst = 3;
    })
    .await;
    let (_, busy) = app.project(&db, "Busy").await;
    let (_, quiet) = app.project(&db, "Quiet").await;
    let list = |token: &str| {
        app.http
            .get(format!("{}/v1/zips", app.base))
            .bearer_auth(token)
    };
    for _ in 0..3 {
        assert_eq!(app.send(list(&busy)).await.0, 200);
    }
    let (status, body) = app.send(list(&busy)).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("access token")),
        "{body}"
    );
    assert_eq!(
        app.send(list(&quiet)).await.0,
        200,
        "another token is not affected"
    );
}
