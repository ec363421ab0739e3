//! Both zipkit binaries as operators run them, against the test's database, vhost and bucket:
//! the API and a worker as child processes (logs in files, so a chatty process never blocks on a
//! full pipe), the CLI to set up a project, token and bucket, and a job driven through HTTP.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::process::{KillOnDrop, free_port, run_with_input, zipkit_command};
use crate::services::{s3_access_key, s3_endpoint, s3_secret_key};

/// The worker binary beside the API's (cargo builds every binary of the workspace for
/// `cargo test --workspace`; a test of one package only sees its own in `CARGO_BIN_EXE_*`).
pub fn sibling_binary(binary: &str, name: &str) -> PathBuf {
    let path = Path::new(binary).with_file_name(name);
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build --bin {name}` (scripts/test.sh does)",
        path.display()
    );
    path
}

/// A running API and worker.
#[derive(Debug)]
pub struct Stack {
    pub api_port: u16,
    pub worker_port: u16,
    api: KillOnDrop,
    worker: KillOnDrop,
    logs: tempfile_dir::Dir,
    api_binary: String,
    database_url: String,
    amqp_url: String,
    /// The launch's variables, for the CLI too (a test CA, say).
    env: Vec<(String, String)>,
}

/// How to start a stack.
#[derive(Debug, Clone, Copy)]
pub struct Launch<'a> {
    pub api_binary: &'a str,
    pub worker_binary: &'a Path,
    pub database_url: &'a str,
    /// The worker's broker (and the CLI's).
    pub amqp_url: &'a str,
    /// The API's broker: another address for the same vhost (a proxy) lets a test take the
    /// broker away from the API alone.
    pub api_amqp_url: &'a str,
    pub env: &'a [(&'a str, &'a str)],
}

/// What the CLI set up for a job.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub project_id: String,
    pub token: String,
    pub bucket: String,
    pub bucket_id: String,
}

impl Stack {
    /// Starts both binaries with `env` on top of the test environment and waits until both
    /// answer `/readyz` with 200.
    pub async fn start(
        api_binary: &str,
        worker_binary: &Path,
        database_url: &str,
        amqp_url: &str,
        env: &[(&str, &str)],
    ) -> Self {
        Self::launch(Launch {
            api_binary,
            worker_binary,
            database_url,
            amqp_url,
            api_amqp_url: amqp_url,
            env,
        })
        .await
    }

    /// Starts both binaries as `launch` says. Waits for the worker's readiness, and for the
    /// API's when it reaches the same broker as the worker.
    pub async fn launch(launch: Launch<'_>) -> Self {
        let logs = tempfile_dir::Dir::new();
        let (api_port, worker_port) = (free_port(), free_port());
        let spawn = |binary: &Path, amqp_url: &str, log: &str, port_key: &str, port: u16| {
            let file = std::fs::File::create(logs.path().join(log)).expect("log file");
            let mut command =
                zipkit_command(&binary.to_string_lossy(), launch.database_url, amqp_url);
            command
                .env(port_key, port.to_string())
                .envs(launch.env.iter().copied())
                .stdout(file.try_clone().expect("log file"))
                .stderr(file);
            KillOnDrop(command.spawn().expect("start a zipkit binary"))
        };
        let api = spawn(
            Path::new(launch.api_binary),
            launch.api_amqp_url,
            "api.log",
            "ZIPKIT__API__PORT",
            api_port,
        );
        let worker = spawn(
            launch.worker_binary,
            launch.amqp_url,
            "worker.log",
            "ZIPKIT__WORKER__HTTP_PORT",
            worker_port,
        );
        let stack = Self {
            api_port,
            worker_port,
            api,
            worker,
            logs,
            api_binary: launch.api_binary.to_owned(),
            database_url: launch.database_url.to_owned(),
            amqp_url: launch.amqp_url.to_owned(),
            env: launch
                .env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        stack.wait_ready(worker_port).await;
        if launch.api_amqp_url == launch.amqp_url {
            stack.wait_ready(api_port).await;
        } else {
            stack.wait_alive(api_port).await;
        }
        stack
    }

    async fn wait_alive(&self, port: u16) {
        for _ in 0..300 {
            let answer = reqwest::get(format!("http://127.0.0.1:{port}/healthz")).await;
            if answer.is_ok_and(|r| r.status() == 200) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("port {port} never answered /healthz\n{}", self.logs());
    }

    async fn wait_ready(&self, port: u16) {
        for _ in 0..300 {
            let answer = reqwest::get(format!("http://127.0.0.1:{port}/readyz")).await;
            if answer.is_ok_and(|r| r.status() == 200) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("port {port} never became ready\n{}", self.logs());
    }

    pub fn api_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.api_port)
    }

    pub fn worker_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.worker_port)
    }

    /// Both processes' output so far.
    pub fn logs(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.logs.path().join(name));
        format!(
            "--- api ---\n{}\n--- worker ---\n{}",
            read("api.log").unwrap_or_default(),
            read("worker.log").unwrap_or_default()
        )
    }

    /// The worker process (to stop or signal it).
    pub fn worker_pid(&self) -> u32 {
        self.worker.0.id()
    }

    /// The API process.
    pub fn api_pid(&self) -> u32 {
        self.api.0.id()
    }

    /// Runs the API binary's CLI with `--output json` and returns the object it printed.
    pub fn cli(&self, args: &[&str], stdin: &str) -> serde_json::Value {
        let mut command = zipkit_command(&self.api_binary, &self.database_url, &self.amqp_url);
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        cli_json(command, args, stdin)
    }

    /// A project, a token and the test bucket (on the local S3 store), through the CLI.
    pub fn tenant(&self, bucket: &str) -> Tenant {
        self.tenant_at(bucket, &s3_endpoint())
    }

    /// As `tenant`, with the store reached at `endpoint` (a TLS front, say).
    pub fn tenant_at(&self, bucket: &str, endpoint: &str) -> Tenant {
        make_tenant(
            |args, stdin| self.cli(args, stdin),
            "Observed",
            bucket,
            endpoint,
        )
    }

    /// Posts a job and waits until it has ended; returns the final job object.
    pub async fn run_job(
        &self,
        token: &str,
        body: &serde_json::Value,
        headers: &[(&str, &str)],
    ) -> serde_json::Value {
        let id = self.create_job(token, body, headers).await;
        self.wait_for_job(token, &id, Duration::from_secs(60)).await
    }

    /// Posts a job (expecting 202) and returns its id.
    pub async fn create_job(
        &self,
        token: &str,
        body: &serde_json::Value,
        headers: &[(&str, &str)],
    ) -> String {
        let http = reqwest::Client::new();
        let mut request = http.post(self.api_url("/v1/zips")).bearer_auth(token);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let created = request.json(body).send().await.expect("POST /v1/zips");
        assert_eq!(created.status(), 202, "{}", self.logs());
        let created: serde_json::Value = created.json().await.expect("JSON");
        created["data"]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no id in {created}"))
            .to_owned()
    }

    /// Polls the job until it has ended.
    pub async fn wait_for_job(
        &self,
        token: &str,
        id: &str,
        timeout: Duration,
    ) -> serde_json::Value {
        wait_for_job(&self.api_url(""), token, id, timeout, || self.logs()).await
    }
}

/// A project `name`, a token and `bucket` at `endpoint` (path style, the test store's keys;
/// the CLI's Save and Test included), made through `cli` (`--output json` CLI calls: a process,
/// or inside a container).
pub fn make_tenant(
    cli: impl Fn(&[&str], &str) -> serde_json::Value,
    name: &str,
    bucket: &str,
    endpoint: &str,
) -> Tenant {
    make_tenant_with_keys(
        cli,
        name,
        bucket,
        endpoint,
        (&s3_access_key(), &s3_secret_key()),
    )
}

/// [`make_tenant`] for a store with other keys than the test store's: `(access key, secret)`.
pub fn make_tenant_with_keys(
    cli: impl Fn(&[&str], &str) -> serde_json::Value,
    name: &str,
    bucket: &str,
    endpoint: &str,
    (access_key, secret_key): (&str, &str),
) -> Tenant {
    let project = cli(&["project", "create", "--name", name], "");
    let project_id = project["id"].as_str().expect("a project id").to_owned();
    let token = cli(
        &["token", "create", "--project", &project_id, "--name", "ops"],
        "",
    );
    let added = cli(
        &[
            "bucket",
            "add",
            "--project",
            &project_id,
            "--service",
            "s3",
            "--name",
            bucket,
            "--endpoint",
            endpoint,
            "--path-style",
            "--access-key-id",
            access_key,
        ],
        secret_key,
    );
    assert!(added["id"].is_string(), "bucket add: {added}");
    Tenant {
        project_id,
        token: token["secret"].as_str().expect("a token secret").to_owned(),
        bucket: bucket.to_owned(),
        bucket_id: added["id"].as_str().unwrap_or_default().to_owned(),
    }
}

/// `GET <api>/v1/zips/{id}`: the job object.
pub async fn get_job(api: &str, token: &str, id: &str) -> serde_json::Value {
    let request = reqwest::Client::new().get(format!("{api}/v1/zips/{id}"));
    answer_of(request.bearer_auth(token)).await["data"].clone()
}

/// `POST <api>/v1/zips` with `body`: the whole answer, whatever its status.
pub async fn post_job(api: &str, token: &str, body: &serde_json::Value) -> serde_json::Value {
    let request = reqwest::Client::new().post(format!("{api}/v1/zips"));
    answer_of(request.bearer_auth(token).json(body)).await
}

async fn answer_of(request: reqwest::RequestBuilder) -> serde_json::Value {
    let answer = request.send().await.expect("an answer from the API");
    answer.json().await.expect("a JSON answer")
}

/// Polls `GET <api>/v1/zips/{id}` until the job has ended; returns the job object, or panics
/// with `logs()` after `timeout`.
pub async fn wait_for_job(
    api: &str,
    token: &str,
    id: &str,
    timeout: Duration,
    logs: impl Fn() -> String,
) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let job = get_job(api, token, id).await;
        if !matches!(job["status"].as_str(), Some("none" | "processing")) {
            return job;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "job {id} did not end: {job}\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs a CLI command (`--output json` added) and parses what it printed.
pub fn cli_json(mut command: Command, args: &[&str], stdin: &str) -> serde_json::Value {
    let output =
        run_with_input(command.arg("--output").arg("json").args(args), stdin).expect("run the CLI");
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "{args:?} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// A temporary directory removed on drop (the tests' only need for one).
mod tempfile_dir {
    use std::path::{Path, PathBuf};

    #[derive(Debug)]
    pub struct Dir(PathBuf);

    impl Dir {
        pub fn new() -> Self {
            let path = std::env::temp_dir().join(format!("zipkit-test-{}", uuid::Uuid::new_v4()));
            std::fs::create_dir_all(&path).expect("a temporary directory");
            Self(path)
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
