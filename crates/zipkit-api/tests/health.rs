//! The API started in-process on port 0 against the test's own database and vhost.

use std::time::Duration;

use secrecy::SecretString;
use serde_json::Value;
use tokio::sync::oneshot;
use zipkit_api::{ApiSettings, Application, Settings};
use zipkit_domain::crypto::{CryptoSettings, generate_key};
use zipkit_domain::db::DatabaseSettings;
use zipkit_runtime::broker::BrokerSettings;
use zipkit_runtime::telemetry::{LogFormat, TelemetrySettings};
use zipkit_test_support::process::free_port;
use zipkit_test_support::{TestBroker, TestDatabase};

struct TestApp {
    base: String,
    stop: Option<oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

fn settings(database_url: &str, amqp_url: &str) -> Settings {
    Settings {
        api: ApiSettings {
            host: "127.0.0.1".into(),
            port: 0,
        },
        database: DatabaseSettings {
            url: SecretString::from(database_url.to_owned()),
            max_connections: 4,
            connect_timeout_secs: 2,
        },
        broker: BrokerSettings {
            url: SecretString::from(amqp_url.to_owned()),
            queue_prefix: "zipkit".into(),
            connection_name: "zipkit-api-test".into(),
            reconnect_max_secs: 1,
        },
        crypto: CryptoSettings {
            active_key: "k1".into(),
            keys: [(
                "k1".to_owned(),
                SecretString::from(generate_key().expect("a key")),
            )]
            .into(),
        },
        telemetry: TelemetrySettings {
            format: LogFormat::Pretty,
            filter: "warn".into(),
        },
    }
}

impl TestApp {
    async fn start(settings: Settings) -> Self {
        let app = Application::build(settings).await.expect("the API starts");
        let base = format!("http://127.0.0.1:{}", app.port());
        let (stop, stopped) = oneshot::channel();
        let server = tokio::spawn(app.run_until(async move {
            let _ = stopped.await;
        }));
        Self {
            base,
            stop: Some(stop),
            server,
        }
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let response = reqwest::get(format!("{}{path}", self.base))
            .await
            .expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON body"))
    }

    /// GETs until `done` holds for the answer (components connect in the background) or 10 s pass.
    async fn get_until(&self, path: &str, done: impl Fn(u16, &Value) -> bool) -> (u16, Value) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut last = self.get(path).await;
        while !done(last.0, &last.1) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            last = self.get(path).await;
        }
        last
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.server)
            .await
            .expect("server task")
            .expect("server stops cleanly");
    }
}

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
    let (status, body) = app.get_until("/readyz", |status, _| status == 200).await;
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
async fn readyz_reports_an_unreachable_broker_and_the_api_still_serves() {
    let db = TestDatabase::empty().await;
    let app = TestApp::start(settings(
        db.url(),
        &format!("amqp://guest:guest@127.0.0.1:{}/%2f", free_port()),
    ))
    .await;
    let (status, body) = app.get("/readyz").await;
    assert_eq!(status, 503);
    assert_eq!(
        body,
        serde_json::json!({"status": "not_ready", "checks": {"database": "ok", "broker": "down"}})
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
