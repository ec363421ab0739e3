//! Liveness and readiness of the API started in-process.

use crate::common;

use common::{TestApp, settings};
use zipkit_test_support::process::free_port;
use zipkit_test_support::{TestBroker, TestDatabase};

#[tokio::test]
async fn healthz_answers_while_the_process_serves() {
    let (db, vhost) = (TestDatabase::empty().await, TestBroker::new().await);
    let app = TestApp::start(settings(db.url(), &vhost.url())).await;
    let (status, body) = app.get("/healthz").await;
    assert_eq!(status, 200);
    assert_eq!(body, serde_json::json!({"status": "ok"}));
    app.stop().await;
}

#[tokio::test]
async fn readyz_is_ready_once_postgres_and_rabbitmq_answer() {
    let (db, vhost) = (TestDatabase::empty().await, TestBroker::new().await);
    let app = TestApp::start(settings(db.url(), &vhost.url())).await;
    let (status, body) = app
        .get_until("/readyz", |_, body| body["checks"]["broker"] == "ok")
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        serde_json::json!({"status": "ready", "checks": {"database": "ok", "broker": "ok"}})
    );
    // The API declared the broker topology as it connected.
    let queues: Vec<String> = vhost.queues().await.into_iter().map(|(n, _)| n).collect();
    assert!(queues.contains(&"zipkit.jobs".to_owned()), "{queues:?}");
    app.stop().await;
}

#[tokio::test]
async fn readyz_stays_ready_without_the_broker_and_reports_it_down() {
    let db = TestDatabase::empty().await;
    let app = TestApp::start(settings(
        db.url(),
        &format!("amqp://guest:guest@127.0.0.1:{}/%2f", free_port()),
    ))
    .await;
    // The API accepts jobs without the broker (the outbox holds them): a broker outage must not
    // take every API pod out of its Service.
    let (status, body) = app.get("/readyz").await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        serde_json::json!({"status": "ready", "checks": {"database": "ok", "broker": "down"}})
    );
    assert_eq!(app.get("/healthz").await.0, 200);
    app.stop().await;
}

#[tokio::test]
async fn readyz_reports_an_unreachable_database() {
    let vhost = TestBroker::new().await;
    let dead_db = format!("postgres://postgres@127.0.0.1:{}/nothing", free_port());
    let app = TestApp::start(settings(&dead_db, &vhost.url())).await;
    let (status, body) = app
        .get_until("/readyz", |_, body| body["checks"]["broker"] == "ok")
        .await;
    assert_eq!(status, 503);
    assert_eq!(
        body,
        serde_json::json!({"status": "not_ready", "checks": {"database": "down", "broker": "ok"}})
    );
    app.stop().await;
}
