//! zipkit's image (deploy/Dockerfile, built by `scripts/docker.sh images`) run the way the Helm
//! chart runs it: each container started from the rendered chart's own spec (command, args, env
//! from the rendered ConfigMap and Secret, read-only root, the non-root user, no capabilities,
//! the memory limit), with host networking, against this machine's PostgreSQL, RabbitMQ and S3
//! store. The migration Job's command migrates an empty database, the API and the worker pass
//! their rendered readiness probes, a job posted to the containerised API is built by the
//! containerised worker, and `docker stop` on a worker in the middle of a job loses nothing.
//! Also: `docker compose config` accepts deploy/compose.yaml, and `docker compose up` with it
//! builds an archive end to end (registry images stood in for, see scripts/standins/).
//!
//! Needs DOCKER_HOST (scripts/docker.sh's private engine), ZIPKIT_TEST_IMAGE, the chart tools
//! (see `zipkit_test_support::chart`) and ZIPKIT_TEST_COMPOSE; scripts/test.sh sets them all.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};
use zipkit_test_support::chart::{containers, named, objects, of_kind, repo, run, template, tool};
use zipkit_test_support::process::free_port;
use zipkit_test_support::services::s3_endpoint;
use zipkit_test_support::sources::{Behaviour, SourceServer};
use zipkit_test_support::stack::{
    Tenant, get_job, make_tenant, make_tenant_with_keys, post_job, wait_for_job,
};
use zipkit_test_support::{TestBroker, TestBucket, TestDatabase};

fn docker(args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    run(Command::new("docker").args(args), stdin)
}

/// A container that is removed when the test ends, however it ends.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.0], None);
    }
}

impl Container {
    fn logs(&self) -> String {
        let (_, out, err) = docker(&["logs", &self.0], None);
        format!("{out}{err}")
    }
}

/// What `docker run` needs to start a container as Kubernetes would from this spec.
struct Spec {
    command: Vec<String>,
    env: BTreeMap<String, String>,
    security: Vec<String>,
    /// `--volume` / `--tmpfs` flags for the pod's volumes the container mounts.
    mounts: Vec<String>,
    /// Folders holding the mounted Secrets' and ConfigMaps' files, removed with the spec.
    folders: Vec<PathBuf>,
}

impl Drop for Spec {
    fn drop(&mut self) {
        for folder in &self.folders {
            let _ = std::fs::remove_dir_all(folder);
        }
    }
}

/// A Secret's or ConfigMap's entries as bytes (Secrets are base64), if the object exists.
fn entries(objects: &[Value], kind: &str, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
    let object = objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)?;
    let data = object["data"].as_object()?;
    Some(
        data.iter()
            .map(|(key, value)| {
                let text = value.as_str().expect("string data");
                let bytes = if kind == "Secret" {
                    base64::engine::general_purpose::STANDARD
                        .decode(text)
                        .expect("base64")
                } else {
                    text.as_bytes().to_vec()
                };
                (key.clone(), bytes)
            })
            .collect(),
    )
}

/// Resolves a rendered pod's first container as the kubelet would: env from the ConfigMaps and
/// Secrets it names, the Secret and ConfigMap volumes it mounts written out as files (only the
/// `items` asked for, under their paths), emptyDirs as tmpfs, and the security context as
/// `docker run` flags. `objects` holds what the chart rendered plus what the cluster would
/// already have (an existing Secret, an operator's CA).
fn spec(objects: &[Value], owner: &Value) -> Spec {
    let container = containers(owner)[0];
    let pod = if owner["kind"] == "Pod" {
        &owner["spec"]
    } else {
        &owner["spec"]["template"]["spec"]
    };
    let mut env = BTreeMap::new();
    for source in container["envFrom"].as_array().into_iter().flatten() {
        let (kind, reference) = if source["configMapRef"].is_object() {
            ("ConfigMap", &source["configMapRef"])
        } else {
            ("Secret", &source["secretRef"])
        };
        let name = reference["name"].as_str().expect("a name");
        match entries(objects, kind, name) {
            Some(found) => env.extend(
                found
                    .into_iter()
                    .map(|(k, v)| (k, String::from_utf8(v).expect("UTF-8"))),
            ),
            None => assert_eq!(reference["optional"], true, "no {kind} {name}"),
        }
    }
    for variable in container["env"].as_array().into_iter().flatten() {
        let name = variable["name"].as_str().expect("a name").to_owned();
        if let Some(value) = variable["value"].as_str() {
            env.insert(name, value.to_owned());
            continue;
        }
        let reference = &variable["valueFrom"]["secretKeyRef"];
        let secret = reference["name"].as_str().expect("a Secret");
        let found = entries(objects, "Secret", secret)
            .unwrap_or_else(|| panic!("no Secret {secret}"))
            .remove(reference["key"].as_str().expect("a key"));
        match found {
            Some(bytes) => {
                env.insert(name, String::from_utf8(bytes).expect("UTF-8"));
            }
            None => assert_eq!(
                reference["optional"], true,
                "{name} is missing from its Secret"
            ),
        }
    }
    let (mut mounts, mut folders) = (Vec::new(), Vec::new());
    for mount in container["volumeMounts"].as_array().into_iter().flatten() {
        let path = mount["mountPath"].as_str().expect("a mount path");
        let volume = pod["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .find(|v| v["name"] == mount["name"])
            .expect("the mounted volume");
        if volume["emptyDir"].is_object() {
            mounts.push(format!("--tmpfs={path}:uid=65532,gid=65532"));
            continue;
        }
        let (kind, name, items) = if volume["secret"].is_object() {
            let s = &volume["secret"];
            (
                "Secret",
                s["secretName"].as_str().expect("a name"),
                &s["items"],
            )
        } else {
            let c = &volume["configMap"];
            (
                "ConfigMap",
                c["name"].as_str().expect("a name"),
                &c["items"],
            )
        };
        let data = entries(objects, kind, name).unwrap_or_else(|| panic!("no {kind} {name}"));
        let folder = std::env::temp_dir().join(format!("zipkit-volume-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&folder).expect("a volume folder");
        let files: Vec<(String, String)> = match items.as_array() {
            Some(items) => items
                .iter()
                .map(|i| {
                    (
                        i["key"].as_str().expect("a key").to_owned(),
                        i["path"].as_str().expect("a path").to_owned(),
                    )
                })
                .collect(),
            None => data.keys().map(|k| (k.clone(), k.clone())).collect(),
        };
        for (key, file) in files {
            let bytes = data
                .get(&key)
                .unwrap_or_else(|| panic!("{kind} {name} has no {key}"));
            std::fs::write(folder.join(&file), bytes).expect("a volume file");
        }
        mounts.push(format!("--volume={}:{path}:ro", folder.display()));
        folders.push(folder);
    }
    let context = &container["securityContext"];
    let mut security = vec![format!(
        "--user={}:{}",
        context["runAsUser"], context["runAsGroup"]
    )];
    if context["readOnlyRootFilesystem"] == true {
        security.push("--read-only".into());
    }
    if context["allowPrivilegeEscalation"] == false {
        security.push("--security-opt=no-new-privileges".into());
    }
    for capability in context["capabilities"]["drop"]
        .as_array()
        .into_iter()
        .flatten()
    {
        security.push(format!(
            "--cap-drop={}",
            capability.as_str().expect("a name")
        ));
    }
    if let Some(memory) = container["resources"]["limits"]["memory"].as_str() {
        // Kubernetes' Mi/Gi are docker's m/g.
        security.push(format!(
            "--memory={}",
            memory.replace("Mi", "m").replace("Gi", "g")
        ));
    }
    let mut command: Vec<String> = container["command"]
        .as_array()
        .expect("a command")
        .iter()
        .chain(container["args"].as_array().into_iter().flatten())
        .map(|v| v.as_str().expect("a string").to_owned())
        .collect();
    command.retain(|c| !c.is_empty());
    Spec {
        command,
        env,
        security,
        mounts,
        folders,
    }
}

fn docker_run_args(spec: &Spec, name: &str, detach: bool) -> Vec<String> {
    let mut args = vec![
        "run".to_owned(),
        format!("--name={name}"),
        "--network=host".to_owned(),
    ];
    if detach {
        args.push("--detach".into());
    }
    args.extend(spec.security.iter().cloned());
    args.extend(spec.mounts.iter().cloned());
    for (key, value) in &spec.env {
        args.push(format!("--env={key}={value}"));
    }
    args.push(format!("--entrypoint={}", spec.command[0]));
    args.push(tool("ZIPKIT_TEST_IMAGE"));
    args.extend(spec.command[1..].iter().cloned());
    args
}

fn start(spec: &Spec, role: &str) -> Container {
    let name = format!("zipkit-test-{role}-{}", uuid::Uuid::new_v4().simple());
    let args = docker_run_args(spec, &name, true);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, _, err) = docker(&args, None);
    assert!(ok, "docker run {role}: {err}");
    Container(name)
}

/// Waits until the container's rendered readiness probe answers 200 on the host's network.
async fn wait_ready(container: &Container, rendered: &Value, port: &str) {
    let probe = &rendered["readinessProbe"]["httpGet"];
    let path = probe["path"].as_str().expect("a probe path");
    let url = format!("http://127.0.0.1:{port}{path}");
    for _ in 0..300 {
        if reqwest::get(&url).await.is_ok_and(|r| r.status() == 200) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{url} never became ready:\n{}", container.logs());
}

/// The API and a worker started from their rendered Deployments, ready by their own probes, and
/// their specs (which hold the files their volumes mount: keep them while the containers run).
async fn start_ready(
    objects: &[Value],
    api_port: u16,
    worker_port: u16,
) -> (Container, Container, [Spec; 2]) {
    let api_owner = named(objects, "Deployment", "zipkit-api");
    let worker_owner = named(objects, "Deployment", "zipkit-worker");
    let (api_spec, worker_spec) = (spec(objects, api_owner), spec(objects, worker_owner));
    let api = start(&api_spec, "api");
    let worker = start(&worker_spec, "worker");
    wait_ready(&api, containers(api_owner)[0], &api_port.to_string()).await;
    wait_ready(
        &worker,
        containers(worker_owner)[0],
        &worker_port.to_string(),
    )
    .await;
    (api, worker, [api_spec, worker_spec])
}

/// Runs the CLI inside the API's container (as NOTES.txt tells operators to) and parses its JSON.
fn cli(api: &Container, args: &[&str], stdin: &str) -> Value {
    let mut all = vec!["exec", "-i", &api.0, "zipkit-api", "--output", "json"];
    all.extend_from_slice(args);
    let (ok, out, err) = docker(&all, Some(stdin));
    assert!(ok, "{args:?}: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}): {out}"))
}

/// The chart rendered by Helm 4 with these values.
fn render(values: &Value) -> Vec<Value> {
    render_files(&[], values)
}

/// The chart rendered by Helm 4 with the values files (under helm/tests/values/) and then
/// `overrides` (KEDA "installed").
fn render_files(files: &[&str], overrides: &Value) -> Vec<Value> {
    let values_file =
        std::env::temp_dir().join(format!("zipkit-values-{}.json", uuid::Uuid::new_v4()));
    std::fs::write(&values_file, overrides.to_string()).expect("values");
    let mut all: Vec<PathBuf> = files
        .iter()
        .map(|f| repo().join(format!("helm/tests/values/{f}.yaml")))
        .collect();
    all.push(values_file.clone());
    let rendered = template(&tool("ZIPKIT_TEST_HELM4"), &all, &["keda.sh/v1alpha1"])
        .unwrap_or_else(|e| panic!("helm template: {e}"));
    let _ = std::fs::remove_file(&values_file);
    objects(&rendered)
}

/// A Secret or ConfigMap as the cluster would already hold it (an existing Secret, an
/// operator's CA), for `spec` to resolve.
fn cluster_object(kind: &str, name: &str, data: &[(&str, &str)]) -> Value {
    let data: serde_json::Map<String, Value> = data
        .iter()
        .map(|(k, v)| {
            let v = if kind == "Secret" {
                base64::engine::general_purpose::STANDARD.encode(v)
            } else {
                (*v).to_owned()
            };
            ((*k).to_owned(), Value::String(v))
        })
        .collect();
    json!({"apiVersion": "v1", "kind": kind, "metadata": {"name": name}, "data": data})
}

/// Values for this machine: the image under test, the test's database, vhost and a key, free
/// ports, loopback allowed as the sources and the store are there, and a short shutdown grace
/// and lease so a stop is quick to observe.
fn machine_values(db: &TestDatabase, vhost: &TestBroker, api_port: u16, worker_port: u16) -> Value {
    let image = tool("ZIPKIT_TEST_IMAGE");
    let (repository, tag) = image.rsplit_once(':').expect("name:tag");
    json!({
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        "secrets": {
            "databaseUrl": db.url(),
            "brokerUrl": vhost.url(),
            "cryptoKeys": {"k1": base64::engine::general_purpose::STANDARD.encode([7u8; 32])},
        },
        "crypto": {"activeKey": "k1"},
        "api": {"port": api_port},
        "worker": {"port": worker_port},
        "config": {
            "egress": {"allowed_networks": ["127.0.0.0/8"]},
            "worker": {"concurrency": 2, "shutdown_grace_secs": 1, "lease_secs": 3, "retry_backoff_secs": 1},
            "api": {"secure_cookies": false},
        },
    })
}

/// Runs the migration Job's container to completion; what it printed (`--output json`).
fn migrate(objects: &[Value]) -> Value {
    let jobs = of_kind(objects, "Job");
    assert_eq!(jobs.len(), 1, "one migration Job");
    let migrate_spec = spec(objects, jobs[0]);
    let name = format!("zipkit-test-migrate-{}", uuid::Uuid::new_v4().simple());
    let _migrate = Container(name.clone());
    let args = docker_run_args(&migrate_spec, &name, false);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, out, err) = docker(&args, None);
    assert!(ok, "the migrate Job's command failed: {out}{err}");
    serde_json::from_str(out.trim()).expect("migrate --output json")
}

/// Independent check of the archive: Python's zipfile reads every entry and its CRC.
fn assert_valid_zip(bytes: &[u8], names: &[&str]) {
    let path = std::env::temp_dir().join(format!("zipkit-container-{}.zip", uuid::Uuid::new_v4()));
    std::fs::write(&path, bytes).expect("write the archive");
    let (ok, out, err) = run(
        Command::new("python3").args([
            "-c",
            "import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); assert z.testzip() is None; print('\\n'.join(z.namelist()))",
        ]).arg(&path),
        None,
    );
    let _ = std::fs::remove_file(&path);
    assert!(ok, "not a valid archive: {err}");
    assert_eq!(out.lines().collect::<Vec<_>>(), names);
}

#[tokio::test]
async fn the_image_runs_the_rendered_chart_migrates_serves_builds_a_zip_and_survives_docker_stop() {
    let (db, vhost, bucket) = (
        TestDatabase::empty().await,
        TestBroker::new().await,
        TestBucket::new().await,
    );
    let small = b"hello from a container".to_vec();
    let sources = SourceServer::start(vec![
        ("hello.txt", Behaviour::Serve(small.clone())),
        // About 6 s of download: long enough to stop the worker in the middle of it.
        (
            "slow.bin",
            Behaviour::Slow {
                chunk: 64 * 1024,
                chunks: 24,
                pause: Duration::from_millis(250),
            },
        ),
    ])
    .await;

    let (api_port, worker_port) = (free_port(), free_port());
    let objects = render(&machine_values(&db, &vhost, api_port, worker_port));

    // The migration Job's container applies every migration to the empty database.
    let printed = migrate(&objects);
    let on_disk = std::fs::read_dir(repo().join("migrations"))
        .expect("migrations")
        .filter(|e| e.as_ref().is_ok_and(|e| e.path().is_dir()))
        .count();
    assert_eq!(
        printed["applied"].as_array().map(Vec::len),
        Some(on_disk),
        "{printed}"
    );

    // The API and a worker from their Deployments, ready by their own readiness probes.
    let api_owner = named(&objects, "Deployment", "zipkit-api");
    let worker_owner = named(&objects, "Deployment", "zipkit-worker");
    let api_spec_json = containers(api_owner)[0].clone();
    let worker_spec_json = containers(worker_owner)[0].clone();
    let (api_spec, worker_spec) = (spec(&objects, api_owner), spec(&objects, worker_owner));
    let api = start(&api_spec, "api");
    let worker = start(&worker_spec, "worker");
    let api_port = api_port.to_string();
    let api_url = format!("http://127.0.0.1:{api_port}");
    wait_ready(&api, &api_spec_json, &api_port).await;
    wait_ready(&worker, &worker_spec_json, &worker_port.to_string()).await;

    // An operator sets up a project from inside the API's container.
    let token = make_tenant(
        |args, stdin| cli(&api, args, stdin),
        "Containers",
        bucket.name(),
        &s3_endpoint(),
    )
    .token;

    // A job posted to the containerised API is built by the containerised worker.
    let job =
        |key: &str, urls: Value| json!({"urls": urls, "bucket_name": bucket.name(), "key": key});
    let first = job(
        "first.zip",
        json!([{"url": sources.url("hello.txt"), "filename": "hello.txt"}]),
    );
    let created = post_job(&api_url, &token, &first).await;
    let id = created["data"]["id"].as_str().expect("an id").to_owned();
    let logs = || format!("{}\n{}", api.logs(), worker.logs());
    let done = wait_for_job(&api_url, &token, &id, Duration::from_secs(120), logs).await;
    assert_eq!(done["status"], "succeeded", "{done}\n{}", logs());
    assert_valid_zip(&bucket.get("first.zip").await, &["hello.txt"]);

    // `docker stop` (SIGTERM, then the pod's grace) on the worker in the middle of a job: it
    // stops cleanly, and the job is finished by the next worker with nothing lost.
    let second = job(
        "second.zip",
        json!([
            {"url": sources.url("hello.txt"), "filename": "hello.txt"},
            {"url": sources.url("slow.bin"), "filename": "slow.bin"},
        ]),
    );
    let created = post_job(&api_url, &token, &second).await;
    let id = created["data"]["id"].as_str().expect("an id").to_owned();
    for _ in 0..100 {
        let now = get_job(&api_url, &token, &id).await;
        if now["status"] == "processing" && sources.chunks_sent("slow.bin") > 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        sources.chunks_sent("slow.bin") < 24,
        "the job must still be running"
    );
    let grace = named(&objects, "Deployment", "zipkit-worker")["spec"]["template"]["spec"]
        ["terminationGracePeriodSeconds"]
        .to_string();
    let (ok, _, err) = docker(&["stop", "--time", &grace, &worker.0], None);
    assert!(ok, "docker stop: {err}");
    let (_, code, _) = docker(
        &["inspect", "--format", "{{.State.ExitCode}}", &worker.0],
        None,
    );
    assert_eq!(
        code.trim(),
        "0",
        "the worker stopped on SIGTERM by itself:\n{}",
        worker.logs()
    );
    assert!(
        worker.logs().contains("received SIGTERM"),
        "{}",
        worker.logs()
    );

    let replacement = start(&worker_spec, "worker");
    let logs = || format!("{}\n{}\n{}", api.logs(), worker.logs(), replacement.logs());
    let done = wait_for_job(&api_url, &token, &id, Duration::from_secs(120), logs).await;
    assert_eq!(done["status"], "succeeded", "{done}\n{}", logs());
    let archive = bucket.get("second.zip").await;
    assert_valid_zip(&archive, &["hello.txt", "slow.bin"]);
    assert_eq!(done["result"]["size"].as_u64(), Some(archive.len() as u64));
}

#[test]
fn docker_compose_accepts_the_compose_file() {
    let compose = tool("ZIPKIT_TEST_COMPOSE");
    let file: PathBuf = repo().join("deploy/compose.yaml");
    let (ok, out, err) = run(
        Command::new(&compose)
            .arg("-f")
            .arg(&file)
            .args(["config", "--format", "json"])
            .env("ZIPKIT_CRYPTO_KEY", "a-key-for-the-check"),
        None,
    );
    assert!(ok, "docker compose config: {err}");
    let config: Value = serde_json::from_str(&out).expect("JSON");
    let services = config["services"].as_object().expect("services");
    for name in [
        "postgres",
        "rabbitmq",
        "minio",
        "minio-bucket",
        "migrate",
        "api",
        "worker",
    ] {
        assert!(services.contains_key(name), "{name} missing");
        // Host networking only: the default bridge is a private range.
        assert_eq!(services[name]["network_mode"], "host", "{name}");
        // Every image pinned to a version: `latest` or no tag changes under the user.
        let image = services[name]["image"].as_str().expect("an image");
        let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or("");
        assert!(
            !tag.is_empty() && tag != "latest" && tag.chars().any(|c| c.is_ascii_digit())
                || services[name]["build"].is_object(),
            "{name}: {image} is not pinned"
        );
    }
    // zipkit is built from this checkout: a fresh clone needs no registry for it.
    for zipkit in ["migrate", "api", "worker"] {
        let build = &services[zipkit]["build"];
        assert_eq!(build["dockerfile"], "deploy/Dockerfile", "{zipkit}");
        assert_eq!(
            std::path::Path::new(build["context"].as_str().expect("a context"))
                .canonicalize()
                .expect("the context exists"),
            repo().canonicalize().expect("the checkout"),
            "{zipkit}"
        );
    }
    // Every listener on loopback: PostgreSQL by its command, RabbitMQ's AMQP, management and
    // distribution listeners by its config, epmd by its variable, MinIO by its command.
    let postgres = services["postgres"]["command"].to_string();
    assert!(
        postgres.contains("listen_addresses=127.0.0.1"),
        "{postgres}"
    );
    let rabbit_config = config["configs"]["rabbitmq-loopback"]["content"]
        .as_str()
        .expect("RabbitMQ's config");
    for line in [
        "listeners.tcp.default = 127.0.0.1:5672",
        "management.tcp.ip = 127.0.0.1",
        "distribution.listener.interface = 127.0.0.1",
    ] {
        assert!(rabbit_config.contains(line), "{line}: {rabbit_config}");
    }
    assert_eq!(
        services["rabbitmq"]["configs"][0]["target"],
        "/etc/rabbitmq/conf.d/90-loopback.conf"
    );
    assert_eq!(
        services["rabbitmq"]["environment"]["ERL_EPMD_ADDRESS"],
        "127.0.0.1"
    );
    let minio = services["minio"]["command"].to_string();
    assert!(
        minio.contains("127.0.0.1:9000") && minio.contains("127.0.0.1:9001"),
        "{minio}"
    );
    // The bucket exists once MinIO is up.
    assert_eq!(
        services["minio-bucket"]["command"],
        json!(["mb", "--ignore-existing", "local/zipkit-archives"])
    );
    for zipkit in ["migrate", "api", "worker"] {
        let service = &services[zipkit];
        assert_eq!(service["read_only"], true, "{zipkit}");
        assert_eq!(service["user"], "65532:65532", "{zipkit}");
        assert_eq!(service["cap_drop"], json!(["ALL"]), "{zipkit}");
    }
    assert_eq!(
        services["migrate"]["command"],
        json!(["zipkit-api", "--output", "json", "migrate"])
    );
    // Without the key it refuses to start at all, naming the variable.
    let (ok, _, err) = run(
        Command::new(&compose)
            .arg("-f")
            .arg(&file)
            .args(["config", "--quiet"])
            .env_remove("ZIPKIT_CRYPTO_KEY"),
        None,
    );
    assert!(!ok && err.contains("ZIPKIT_CRYPTO_KEY"), "{err}");
}

/// A compose project of deploy/compose.yaml as it is, with its own name and ports: taken down
/// with its volumes when the test ends, however it ends.
struct ComposeProject {
    compose: String,
    name: String,
    env: Vec<(&'static str, String)>,
}

impl ComposeProject {
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.compose);
        command
            .arg("--project-name")
            .arg(&self.name)
            .arg("--file")
            .arg(repo().join("deploy/compose.yaml"))
            .args(args)
            .env(
                "DOCKER_HOST",
                std::env::var("DOCKER_HOST").expect("DOCKER_HOST"),
            );
        for (key, value) in &self.env {
            command.env(key, value);
        }
        command
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
        run(&mut self.command(args), stdin)
    }

    fn logs(&self) -> String {
        let (_, out, err) = self.run(&["logs", "--no-color", "--tail", "60"], None);
        format!("{out}{err}")
    }
}

impl Drop for ComposeProject {
    fn drop(&mut self) {
        let _ = self.run(
            &["down", "--volumes", "--remove-orphans", "--timeout", "5"],
            None,
        );
    }
}

/// What a new user does with a fresh clone: `docker compose up` (zipkit built from the checkout,
/// PostgreSQL, RabbitMQ and MinIO from the pinned images, the bucket made at start), a project
/// made with the CLI inside the API's container, one job posted, and the archive read back from
/// the compose file's own MinIO. Every port moved by its variable, so the machine's own services
/// are no obstacle. The registry images are stand-ins built from Debian's packages
/// (scripts/standins/), since no registry can be reached here.
#[tokio::test]
async fn docker_compose_up_builds_an_archive_end_to_end() {
    let ports = [
        "ZIPKIT_API_PORT",
        "ZIPKIT_WORKER_PORT",
        "ZIPKIT_PG_PORT",
        "ZIPKIT_AMQP_PORT",
        "ZIPKIT_RABBITMQ_MANAGEMENT_PORT",
        "ZIPKIT_RABBITMQ_DIST_PORT",
        "ZIPKIT_EPMD_PORT",
        "ZIPKIT_S3_PORT",
        "ZIPKIT_MINIO_CONSOLE_PORT",
    ]
    .map(|variable| (variable, free_port().to_string()));
    let port = |variable: &str| {
        ports
            .iter()
            .find(|(v, _)| *v == variable)
            .map(|(_, p)| p.clone())
            .expect("a port variable")
    };
    let random: Vec<u8> = [uuid::Uuid::new_v4(), uuid::Uuid::new_v4()]
        .iter()
        .flat_map(|u| *u.as_bytes())
        .collect();
    let key = base64::engine::general_purpose::STANDARD.encode(random);
    let mut env: Vec<(&'static str, String)> = ports.to_vec();
    env.push(("ZIPKIT_CRYPTO_KEY", key));
    // The classic builder, whose cache holds the layers scripts/docker.sh built from the same
    // Dockerfile and checkout: `build:` runs for real and takes seconds.
    env.push(("DOCKER_BUILDKIT", "0".to_owned()));
    let project = ComposeProject {
        compose: tool("ZIPKIT_TEST_COMPOSE"),
        name: format!(
            "zipkit-test-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        ),
        env,
    };

    // `up` starts each service once what it depends on is healthy or has completed (`--wait`
    // would count the two one-shot services' exits as failures).
    let (ok, out, err) = project.run(&["up", "--detach"], None);
    assert!(ok, "docker compose up:\n{out}\n{err}\n{}", project.logs());
    let api = format!("http://127.0.0.1:{}", port("ZIPKIT_API_PORT"));
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let (_, out, _) = project.run(&["ps", "--all", "--format", "json", "minio-bucket"], None);
        let bucket_made = out.lines().any(|line| {
            serde_json::from_str::<Value>(line)
                .is_ok_and(|c| c["State"] == "exited" && c["ExitCode"] == 0)
        });
        let ready = reqwest::get(format!("{api}/readyz"))
            .await
            .is_ok_and(|r| r.status().is_success());
        if bucket_made && ready {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not up after 120 s (bucket made: {bucket_made}, API ready: {ready}):\n{}",
            project.logs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let sources = SourceServer::start(vec![
        ("report.txt", Behaviour::Serve(b"from compose".to_vec())),
        ("data.bin", Behaviour::Serve(vec![7u8; 300_000])),
    ])
    .await;
    let cli = |args: &[&str], stdin: &str| {
        let mut all = vec!["exec", "-T", "api", "zipkit-api", "--output", "json"];
        all.extend_from_slice(args);
        let (ok, out, err) = project.run(&all, Some(stdin));
        assert!(ok, "{args:?}: {err}\n{}", project.logs());
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}): {out}"))
    };
    let store = format!("http://127.0.0.1:{}", port("ZIPKIT_S3_PORT"));
    let token = make_tenant_with_keys(
        cli,
        "Compose",
        "zipkit-archives",
        &store,
        ("zipkit", "zipkit-secret"),
    )
    .token;

    let created: Value = reqwest::Client::new()
        .post(format!("{api}/v1/zips"))
        .bearer_auth(&token)
        .json(&json!({
            "urls": [
                {"url": sources.url("report.txt"), "filename": "report.txt"},
                {"url": sources.url("data.bin"), "filename": "data.bin"},
            ],
            "bucket_name": "zipkit-archives",
            "key": "from-compose.zip",
        }))
        .send()
        .await
        .expect("POST /v1/zips")
        .json()
        .await
        .expect("JSON");
    let id = created["data"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{created}"));
    let done = wait_for_job(&api, &token, id, Duration::from_secs(120), || {
        project.logs()
    })
    .await;
    assert_eq!(done["status"], "succeeded", "{done}\n{}", project.logs());

    let archive = zipkit_test_support::bucket::client_for(&store, "zipkit", "zipkit-secret")
        .get_object()
        .bucket("zipkit-archives")
        .key("from-compose.zip")
        .send()
        .await
        .expect("the archive in compose's MinIO")
        .body
        .collect()
        .await
        .expect("its bytes")
        .into_bytes();
    assert_valid_zip(&archive, &["report.txt", "data.bin"]);
    assert_eq!(done["result"]["size"].as_u64(), Some(archive.len() as u64));
}

/// Resident memory of a process, from /proc.
fn rss_mib(pid: u32) -> f64 {
    zipkit_test_support::process::memory_mib(pid, "VmRSS")
}

/// The highest resident memory seen while `work` runs, sampled every 10 ms.
async fn peak_rss_during<T>(pid: u32, work: impl Future<Output = T>) -> (T, f64) {
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let sampler = tokio::spawn(async move {
        let mut peak: f64 = 0.0;
        loop {
            peak = peak.max(rss_mib(pid));
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(10)) => {}
                _ = stopped.changed() => return peak.max(rss_mib(pid)),
            }
        }
    });
    let out = work.await;
    let _ = stop.send(true);
    (out, sampler.await.expect("sampler"))
}

/// Waits up to 10 s for the process to come back within `slack` MiB of `idle`; the last reading.
async fn settled_rss(pid: u32, idle: f64, slack: f64) -> f64 {
    let mut now = rss_mib(pid);
    for _ in 0..100 {
        if now <= idle + slack {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        now = rss_mib(pid);
    }
    now
}

/// A stranger at its own loopback address, holding the login page's CSRF cookie.
struct Stranger {
    http: reqwest::Client,
    from: std::net::Ipv4Addr,
    csrf: String,
}

impl Stranger {
    async fn at(base: &str, from: std::net::Ipv4Addr) -> Self {
        let http = reqwest::Client::builder()
            .local_address(std::net::IpAddr::V4(from))
            .build()
            .expect("client");
        let page = http
            .get(format!("{base}/dashboard/login"))
            .send()
            .await
            .expect("GET login");
        let csrf = page
            .headers()
            .get_all(reqwest::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| v.strip_prefix("zipkit_login_csrf="))
            .and_then(|v| v.split(';').next())
            .expect("a login CSRF cookie")
            .to_owned();
        Self { http, from, csrf }
    }

    /// A wrong password for an address nobody has: the status and `Retry-After`.
    async fn signs_in(&self, base: &str) -> (u16, Option<String>) {
        let answer = self
            .http
            .post(format!("{base}/dashboard/login"))
            .header(
                reqwest::header::COOKIE,
                format!("zipkit_login_csrf={}", self.csrf),
            )
            .form(&[
                ("email", format!("stranger-{}@example.com", self.from)),
                ("password", format!("not the password of {}", self.from)),
                ("csrf", self.csrf.clone()),
            ])
            .send()
            .await
            .expect("POST login");
        let retry_after = answer
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        (answer.status().as_u16(), retry_after)
    }
}

/// The API's documented bound (docs/OPERATIONS.md, "Memory"): the peak under abuse stays below
/// it, and the chart's default limit (512 Mi) covers it with room.
const API_PEAK_MIB: f64 = 256.0;
/// How far above idle the API may stay once the abuse is over.
const API_SETTLED_SLACK_MIB: f64 = 24.0;

#[tokio::test]
async fn the_api_stays_within_its_memory_bound_under_concurrent_wrong_sign_ins_and_maximal_bodies()
{
    let (db, vhost) = (TestDatabase::empty().await, TestBroker::new().await);
    let api_port = free_port();
    let objects = render(&machine_values(&db, &vhost, api_port, free_port()));
    migrate(&objects);
    let api_owner = named(&objects, "Deployment", "zipkit-api");
    let api_json = containers(api_owner)[0].clone();
    let api_spec = spec(&objects, api_owner);
    let api = start(&api_spec, "api");
    wait_ready(&api, &api_json, &api_port.to_string()).await;
    let (_, pid, _) = docker(&["inspect", "--format", "{{.State.Pid}}", &api.0], None);
    let pid: u32 = pid.trim().parse().expect("the API's pid");
    let project = cli(&api, &["project", "create", "--name", "Memory"], "");
    let project_id = project["id"].as_str().expect("an id");
    let token = cli(
        &api,
        &["token", "create", "--project", project_id, "--name", "m"],
        "",
    );
    let token = token["secret"].as_str().expect("a secret").to_owned();
    let base = format!("http://127.0.0.1:{api_port}");
    // Warm: one sign-in, so idle counts what any served API holds.
    Stranger::at(&base, std::net::Ipv4Addr::new(127, 0, 2, 1))
        .await
        .signs_in(&base)
        .await;
    let idle = settled_rss(pid, 0.0, f64::MAX).await;

    // A hundred strangers, each from its own address (no per-address throttle applies), each
    // with the page's CSRF cookie, then all their wrong passwords at once.
    let strangers = futures_util::future::join_all(
        (0..100u8).map(|i| Stranger::at(&base, std::net::Ipv4Addr::new(127, 0, 1, i + 1))),
    )
    .await;
    let (answers, sign_in_peak) = peak_rss_during(
        pid,
        futures_util::future::join_all(strangers.iter().map(|s| s.signs_in(&base))),
    )
    .await;
    let after_sign_ins = settled_rss(pid, idle, API_SETTLED_SLACK_MIB).await;
    let wrong = answers.iter().filter(|(s, _)| *s == 401).count();
    let busy: Vec<_> = answers.iter().filter(|(s, _)| *s == 503).collect();
    assert_eq!(wrong + busy.len(), 100, "only 401 or 503: {answers:?}");
    assert!(wrong >= 2, "some sign-ins were checked: {answers:?}");
    assert!(
        busy.iter().all(|(_, retry)| retry.as_deref() == Some("1")),
        "a busy answer says when to come back: {busy:?}"
    );

    // Twenty bodies at once, each just under the API's largest (16 MiB): parsed, then refused.
    let item = format!(
        r#"{{"url":"https://example.com/{}","filename":"f.bin"}}"#,
        "a".repeat(1400)
    );
    let body = format!(
        r#"{{"urls":[{}],"bucket_name":"nowhere","key":"k.zip"}}"#,
        vec![item; 10_000].join(",")
    );
    assert!(body.len() < 16 * 1024 * 1024, "{}", body.len());
    let http = reqwest::Client::new();
    let (statuses, body_peak) = peak_rss_during(
        pid,
        futures_util::future::join_all((0..20).map(|_| {
            http.post(format!("{base}/v1/zips"))
                .bearer_auth(&token)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone())
                .send()
        })),
    )
    .await;
    for status in statuses {
        let status = status.expect("an answer").status().as_u16();
        // Refused after parsing (no such bucket), or 503 `server_busy` past the bytes all
        // bodies being read may hold at once.
        assert!((400..500).contains(&status) || status == 503, "{status}");
    }
    let after_bodies = settled_rss(pid, idle, API_SETTLED_SLACK_MIB).await;

    eprintln!(
        "API RSS: idle {idle:.1} MiB; 100 sign-ins ({wrong} checked, {} busy): peak {sign_in_peak:.1}, after {after_sign_ins:.1}; 20 bodies of {:.1} MB: peak {body_peak:.1}, after {after_bodies:.1}",
        busy.len(),
        body.len() as f64 / 1e6
    );
    let logs = api.logs();
    assert!(
        sign_in_peak < API_PEAK_MIB && body_peak < API_PEAK_MIB,
        "peaks {sign_in_peak:.1} / {body_peak:.1} MiB over {API_PEAK_MIB}:\n{logs}"
    );
    assert!(
        after_sign_ins <= idle + API_SETTLED_SLACK_MIB
            && after_bodies <= idle + API_SETTLED_SLACK_MIB,
        "memory kept: idle {idle:.1}, after {after_sign_ins:.1} / {after_bodies:.1} MiB"
    );
}

/// The chart's own test values are not only rendered: for each file, the migration Job, the API
/// and a worker start from the rendered specs (with what only this machine can say: the image,
/// the database, the broker, ports, loopback allowed) and pass their readiness probes. Key ids
/// with hyphens, dots and capitals (`prod-2026`, `Key.2026-b`) seal secrets as themselves.
#[tokio::test]
async fn every_test_values_file_runs_from_its_rendered_specs_and_passes_its_probes() {
    let ca = zipkit_test_support::tls::TestCa::new();
    let image = tool("ZIPKIT_TEST_IMAGE");
    let (repository, tag) = image.rsplit_once(':').expect("name:tag");
    for file in ["default", "everything", "existing-secret", "no-hooks"] {
        let (db, vhost) = (TestDatabase::empty().await, TestBroker::new().await);
        let (api_port, worker_port) = (free_port(), free_port());
        let mut overrides = json!({
            "image": {"repository": repository, "tag": tag, "digest": "", "pullPolicy": "Never"},
            "api": {"port": api_port},
            "worker": {"port": worker_port},
            "config": {
                "egress": {"allowed_networks": ["127.0.0.0/8"]},
                "api": {"secure_cookies": false, "drain_delay_secs": 0},
            },
        });
        let mut cluster = Vec::new();
        let sealing_key = match file {
            "existing-secret" => {
                // The operator's Secret, with the ids the values file names.
                let (old, new) = (
                    base64::engine::general_purpose::STANDARD.encode([1u8; 32]),
                    base64::engine::general_purpose::STANDARD.encode([2u8; 32]),
                );
                cluster.push(cluster_object(
                    "Secret",
                    "zipkit-credentials",
                    &[
                        ("database-url", db.url()),
                        ("broker-url", &vhost.url()),
                        ("crypto-key-prod-2025", &old),
                        ("crypto-key-prod-2026", &new),
                    ],
                ));
                "prod-2026"
            }
            "everything" => {
                overrides["secrets"] = json!({"databaseUrl": db.url(), "brokerUrl": vhost.url()});
                cluster.push(cluster_object(
                    "ConfigMap",
                    "acme-ca",
                    &[("acme-root.pem", ca.pem())],
                ));
                "Key.2026-b"
            }
            _ => {
                overrides["secrets"] = json!({"databaseUrl": db.url(), "brokerUrl": vhost.url()});
                "k1"
            }
        };
        let mut objects = render_files(&[file], &overrides);
        objects.extend(cluster);

        let printed = migrate(&objects);
        assert!(
            printed["applied"].as_array().is_some_and(|a| !a.is_empty()),
            "{file}: {printed}"
        );
        let (api, worker, _specs) = start_ready(&objects, api_port, worker_port).await;

        // A secret sealed through the running API's container is sealed with the active key,
        // under its own id.
        let project = cli(&api, &["project", "create", "--name", file], "");
        let project_id = project["id"].as_str().expect("an id");
        cli(
            &api,
            &[
                "bucket",
                "add",
                "--project",
                project_id,
                "--service",
                "s3",
                "--name",
                "sealed-bucket",
                "--access-key-id",
                "AKIASEALED",
                "--no-test",
            ],
            "a-secret-to-seal",
        );
        let mut conn = db.connect().await;
        let key_ids: Vec<String> = {
            use diesel::prelude::*;
            use diesel_async::RunQueryDsl;
            zipkit_domain::schema::buckets::table
                .select(zipkit_domain::schema::buckets::encryption_key_id)
                .load(&mut conn)
                .await
                .expect("the bucket rows")
        };
        assert_eq!(key_ids, [sealing_key], "{file}");
        drop((api, worker));
    }
}

/// Production talks TLS: the store, the sources and the webhook receivers are HTTPS, with
/// certificates from a CA the operator adds to the chart (`tls.extraCA`) beside the public CA
/// set the image carries. The image as deploy/Dockerfile builds it, on a base with nothing
/// beyond minbase (as debian:bookworm-slim), builds an archive through all three.
#[tokio::test]
async fn the_image_builds_an_archive_through_an_https_store_source_and_webhook() {
    // The public CA set is in the image (the base has none): SSL_CERT_FILE names it.
    let image = tool("ZIPKIT_TEST_IMAGE");
    let (ok, _, err) = docker(
        &[
            "run",
            "--rm",
            "--network=host",
            "--entrypoint=/usr/bin/test",
            &image,
            "-s",
            "/etc/ssl/certs/ca-certificates.crt",
        ],
        None,
    );
    assert!(ok, "the image has no CA bundle: {err}");

    let (db, vhost, bucket) = (
        TestDatabase::empty().await,
        TestBroker::new().await,
        TestBucket::new().await,
    );
    let ca = zipkit_test_support::tls::TestCa::new();
    let body = b"fetched over https".to_vec();
    let sources = SourceServer::start(vec![("secure.txt", Behaviour::Serve(body.clone()))]).await;
    let receiver = zipkit_test_support::receiver::WebhookReceiver::start(0).await;
    let plain_store = s3_endpoint();
    let store = ca
        .front(plain_store.trim_start_matches("http://").to_owned())
        .await;
    let source = ca
        .front(
            sources.url("secure.txt")["http://".len()..]
                .split('/')
                .next()
                .expect("host:port"),
        )
        .await;
    let hooks = ca
        .front(
            receiver.url()["http://".len()..]
                .split('/')
                .next()
                .expect("host:port"),
        )
        .await;

    let (api_port, worker_port) = (free_port(), free_port());
    let mut values = machine_values(&db, &vhost, api_port, worker_port);
    values["tls"] = json!({"extraCA": {"configMap": "zipkit-test-ca", "key": "ca.crt"}});
    let mut objects = render(&values);
    objects.push(cluster_object(
        "ConfigMap",
        "zipkit-test-ca",
        &[("ca.crt", ca.pem())],
    ));
    // Production settings: webhooks must be https.
    let settings = zipkit_test_support::chart::config_map(&objects, "zipkit");
    assert_eq!(settings.get("ZIPKIT__WEBHOOKS__ALLOW_HTTP"), None);
    assert_eq!(settings["ZIPKIT_ENV"], "production");

    migrate(&objects);
    let (api, worker, _specs) = start_ready(&objects, api_port, worker_port).await;

    // Save and Test writes to the bucket through the HTTPS endpoint.
    let Tenant {
        project_id, token, ..
    } = make_tenant(
        |args, stdin| cli(&api, args, stdin),
        "TLS",
        bucket.name(),
        &store.origin(),
    );
    cli(
        &api,
        &[
            "webhook",
            "add",
            "--project",
            &project_id,
            "--url",
            &hooks.https(receiver.url()),
        ],
        "",
    );

    let source_url = source.https(&sources.url("secure.txt"));
    assert!(source_url.starts_with("https://127.0.0.1:"), "{source_url}");
    let api_url = format!("http://127.0.0.1:{api_port}");
    let body = json!({
        "urls": [{"url": source_url, "filename": "secure.txt"}],
        "bucket_name": bucket.name(),
        "key": "tls.zip",
    });
    let created = post_job(&api_url, &token, &body).await;
    let id = created["data"]["id"].as_str().expect("an id").to_owned();
    let logs = || format!("{}\n{}", api.logs(), worker.logs());
    let done = wait_for_job(&api_url, &token, &id, Duration::from_secs(120), logs).await;
    assert_eq!(done["status"], "succeeded", "{done}\n{}", logs());
    assert_valid_zip(&bucket.get("tls.zip").await, &["secure.txt"]);
    let delivered = receiver.wait_for(1, Duration::from_secs(60)).await;
    let event: Value = serde_json::from_slice(&delivered[0].body).expect("an event");
    assert_eq!(event["type"], "zip.completed", "{event}");
    assert_eq!(event["data"]["object"]["id"], id.as_str());
    assert_eq!(sources.hits("secure.txt"), 1);
}

/// The packages of an image, from its dpkg database.
fn packages(image: &str) -> Vec<String> {
    let (ok, out, err) = docker(
        &[
            "run",
            "--rm",
            "--network=host",
            "--entrypoint=dpkg-query",
            image,
            "-W",
            "-f",
            "${Package}\\n",
        ],
        None,
    );
    assert!(ok, "dpkg-query in {image}: {err}");
    out.lines().map(str::to_owned).collect()
}

/// The stand-in for debian:bookworm-slim that the image is built on here must lack what the
/// real one lacks, or a missing package in deploy/Dockerfile would pass here and fail in a real
/// cluster: it is debootstrap's minbase (what the slim image is) and nothing more.
#[test]
fn the_runtime_base_carries_nothing_the_real_slim_image_lacks_and_the_image_adds_the_ca_set() {
    let base = packages("debian:bookworm-slim");
    for absent in ["ca-certificates", "openssl", "libssl3", "curl", "wget"] {
        assert!(
            !base.iter().any(|p| p == absent),
            "the stand-in base has {absent}, which debian:bookworm-slim does not"
        );
    }
    // minbase is Debian's required packages, apt and their dependencies (88 in bookworm).
    assert!(base.len() < 100, "{} packages: {base:?}", base.len());
    let image = packages(&tool("ZIPKIT_TEST_IMAGE"));
    let added: Vec<&String> = image.iter().filter(|p| !base.contains(p)).collect();
    assert!(
        added.iter().any(|p| *p == "ca-certificates"),
        "deploy/Dockerfile installs the CA set: {added:?}"
    );
}
