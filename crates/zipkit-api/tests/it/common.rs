//! The API started in-process on port 0 against a test's own database and vhost, with helpers
//! to seed projects, tokens and buckets straight into PostgreSQL.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use tokio::sync::oneshot;
use zipkit_api::{Application, Settings};
use zipkit_domain::crypto::{KeyRing, generate_key};
use zipkit_domain::enums::ProjectRole;
use zipkit_domain::models::{AccessToken, Bucket, BucketCredentials, NewBucket, Project, User};
use zipkit_domain::tokens::generate_token;
use zipkit_domain::values::BucketName;
use zipkit_domain::{ProjectId, Service};
use zipkit_test_support::settings::TestSettings;
use zipkit_test_support::{TestBroker, TestDatabase};

pub const JOBS: &str = "zipkit.jobs";

/// The API's settings as the binary reads them (the shipped config files), on the test's
/// database and vhost, with a fresh crypto key, small limits tests can reach and rate limits
/// generous enough that only the tests about them meet them.
pub fn settings(database_url: &str, amqp_url: &str) -> Settings {
    TestSettings::on(database_url, amqp_url, "zipkit-api-test")
        .set("api.port", 0)
        .set("api.max_body_bytes", 64 * 1024)
        .set("api.body_timeout_secs", 5)
        .set("api.max_body_bytes_in_flight", 16 * 1024 * 1024)
        .set("api.max_connections", 256)
        .set("api.max_urls", 50)
        .set("api.republish_after_secs", 1)
        .set("crypto.active_key", "k1")
        .set("crypto.keys.k1", generate_key().expect("a key"))
        .set("rate_limits.api_per_address_per_minute", 100_000)
        .set("rate_limits.api_per_address_burst", 100_000)
        .set("rate_limits.api_per_token_per_minute", 100_000)
        .set("rate_limits.api_per_token_burst", 100_000)
        .set("worker.part_size_mib", 5)
        .set("worker.max_source_bytes", 1u64 << 30)
        .set("worker.max_archive_bytes", 10u64 << 30)
        .set("worker.source_connect_timeout_secs", 5)
        .set("worker.source_read_timeout_secs", 10)
        .load()
}

pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub keyring: KeyRing,
    stop: Option<oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl TestApp {
    pub async fn start(settings: Settings) -> Self {
        let keyring = KeyRing::from_settings(&settings.crypto).expect("key ring");
        // As the binary does: spans (and so the traceparent of job messages) need it.
        zipkit_runtime::telemetry::init(
            "zipkit-api",
            &settings.telemetry,
            zipkit_runtime::telemetry::LogStream::Stdout,
        )
        .expect("telemetry");
        let app = Application::build(settings).await.expect("the API starts");
        let base = format!("http://127.0.0.1:{}", app.port());
        let (stop, stopped) = oneshot::channel();
        let server = tokio::spawn(app.run_until(async move {
            let _ = stopped.await;
        }));
        Self {
            base,
            http: reqwest::Client::new(),
            keyring,
            stop: Some(stop),
            server,
        }
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    /// A GET with a project's token.
    pub async fn get_as(&self, token: &str, path: &str) -> (u16, Value) {
        self.with_token(reqwest::Method::GET, token, path).await
    }

    /// A POST without a body (an action, as `/cancel`) with a project's token.
    pub async fn post_as(&self, token: &str, path: &str) -> (u16, Value) {
        self.with_token(reqwest::Method::POST, token, path).await
    }

    async fn with_token(&self, method: reqwest::Method, token: &str, path: &str) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        self.send(self.http.request(method, url).bearer_auth(token))
            .await
    }

    pub async fn send(&self, request: reqwest::RequestBuilder) -> (u16, Value) {
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}")),
        )
    }

    /// GETs until `done` holds for the answer (components connect in the background) or 10 s pass.
    pub async fn get_until(&self, path: &str, done: impl Fn(u16, &Value) -> bool) -> (u16, Value) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut last = self.get(path).await;
        while !done(last.0, &last.1) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            last = self.get(path).await;
        }
        last
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.server)
            .await
            .expect("server task")
            .expect("server stops cleanly");
    }

    /// A new project with a live token; returns the project and the token in clear.
    pub async fn project(&self, db: &TestDatabase, name: &str) -> (ProjectId, String) {
        let mut conn = db.connect().await;
        let project = Project::create(&mut conn, name).await.expect("project");
        let token = generate_token().expect("token");
        AccessToken::create(&mut conn, project.id, "test", &token)
            .await
            .expect("store token");
        (project.id, token.secret.expose_secret().to_owned())
    }

    pub async fn bucket(
        &self,
        db: &TestDatabase,
        project: ProjectId,
        service: Service,
        name: &str,
    ) -> Bucket {
        let mut conn = db.connect().await;
        let new = NewBucket {
            project_id: project,
            service,
            name: BucketName::parse(name).expect("bucket name"),
            region: if service == Service::R2 {
                "auto".into()
            } else {
                "us-east-1".into()
            },
            r2_account_id: (service == Service::R2)
                .then(|| "0123456789abcdef0123456789abcdef".into()),
            endpoint_url: None,
            force_path_style: false,
            acl: None,
            credentials: BucketCredentials {
                access_key_id: SecretString::from("AKIATESTKEY".to_owned()),
                secret_access_key: SecretString::from("test-secret-value".to_owned()),
            },
        };
        Bucket::create(&mut conn, &self.keyring, new)
            .await
            .expect("bucket")
    }

    pub fn post_zip(&self, token: &str, body: &Value) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}/v1/zips", self.base))
            .bearer_auth(token)
            .json(body)
    }
}

/// A valid create body for bucket `bucket_name`.
/// A worker's settings exactly as development's, on the test's services, with its probes on a
/// free port (something else may use development's 9090).
pub fn development_worker(database_url: &str, broker_url: &str) -> TestSettings {
    TestSettings::new()
        .set("database.url", database_url)
        .set("broker.url", broker_url)
        .set("worker.http_port", 0)
}

/// A person with a password who owns a new project, as the dashboard's sign-up would leave them.
pub async fn owner_of_new_project(
    db: &TestDatabase,
    email: &str,
    password: &str,
    project: &str,
) -> (User, ProjectId) {
    let mut conn = db.connect().await;
    let hash = zipkit_api::admin::passwords::hash(
        password,
        &zipkit_api::admin::passwords::PasswordSettings::default(),
    )
    .expect("hash");
    let user = User::create(&mut conn, email, &hash).await.expect("user");
    let project = Project::create(&mut conn, project).await.expect("project");
    Project::add_member(&mut conn, project.id, user.id, ProjectRole::Owner)
        .await
        .expect("member");
    (user, project.id)
}

pub fn zip_body(bucket_name: &str, files: usize) -> Value {
    let urls: Vec<Value> = (0..files)
        .map(|i| serde_json::json!({"url": format!("https://example.com/f{i}.pdf"), "filename": format!("docs/f{i}.pdf")}))
        .collect();
    serde_json::json!({"urls": urls, "bucket_name": bucket_name, "key": "exports/2026-11.zip", "metadata": {"order_id": "order_456"}})
}

/// Database, vhost and a running API on them.
pub async fn start() -> (TestDatabase, TestBroker, TestApp) {
    start_adjusted(|_| {}).await
}

/// As `start`, with the test settings adjusted first.
pub async fn start_adjusted(
    adjust: impl FnOnce(&mut Settings),
) -> (TestDatabase, TestBroker, TestApp) {
    let db = TestDatabase::migrated(zipkit_domain::db::MIGRATIONS).await;
    let broker = TestBroker::new().await;
    let mut settings = settings(db.url(), &broker.url());
    adjust(&mut settings);
    let app = TestApp::start(settings).await;
    let (status, body) = app
        .get_until("/readyz", |_, body| body["checks"]["broker"] == "ok")
        .await;
    assert_eq!(status, 200, "API not ready: {body}");
    (db, broker, app)
}
