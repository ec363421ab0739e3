//! The operator CLI as a script would drive it, against the test's database and the real S3 store.

use std::process::Output;

use zipkit_domain::models::{Bucket, NewZip, NewZipEntry, Zip};
use zipkit_domain::values::{EntryName, ObjectKey, SourceUrl};
use zipkit_domain::{BucketId, Compression, OnError, ProjectId};
use zipkit_test_support::TestBucket;
use zipkit_test_support::TestDatabase;
use zipkit_test_support::internal::InternalService;
use zipkit_test_support::process::{run_with_input, zipkit_command};
use zipkit_test_support::services::{s3_access_key, s3_endpoint, s3_secret_key};

const BINARY: &str = env!("CARGO_BIN_EXE_zipkit-api");
const PASSWORD: &str = "a long enough password";

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run(db: &TestDatabase, env: &[(&str, &str)], args: &[&str], stdin: Option<&str>) -> Run {
    let mut command = zipkit_command(BINARY, db.url(), "amqp://127.0.0.1:1/%2f");
    command.args(args).envs(env.iter().copied());
    // A line as a person types it; no input at all when the test gives none.
    let input = stdin.map(|line| format!("{line}\n")).unwrap_or_default();
    let Output {
        status,
        stdout,
        stderr,
    } = run_with_input(&mut command, &input).expect("run the CLI");
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// The uuid in parentheses in "created … (uuid)".
fn id_in(text: &str) -> String {
    text.match_indices('(')
        .filter_map(|(at, _)| text.get(at + 1..at + 37))
        .find(|id| id.parse::<uuid::Uuid>().is_ok())
        .expect("an id")
        .to_owned()
}

#[tokio::test]
async fn the_cli_scripts_a_deployment_and_never_prints_a_secret() {
    let db = TestDatabase::migrated(zipkit_domain::db::MIGRATIONS).await;
    let store = TestBucket::new().await;
    let mut outputs = Vec::new();
    let mut step = |args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]| {
        let result = run(&db, env, args, stdin);
        outputs.push(format!("{}{}", result.stdout, result.stderr));
        result
    };

    let created = step(
        &["user", "create", "--email", "Admin@Example.com"],
        Some(PASSWORD),
        &[],
    );
    assert_eq!(created.code, 0, "{}", created.stderr);
    assert!(created.stdout.contains("created user admin@example.com"));
    assert_eq!(
        step(
            &["user", "create", "--email", "admin@example.com"],
            Some(PASSWORD),
            &[]
        )
        .code,
        6
    );
    let short = step(
        &["user", "create", "--email", "b@example.com"],
        Some("short"),
        &[],
    );
    assert_eq!(short.code, 3);
    assert!(
        short.stderr.contains("at least 12 characters"),
        "{}",
        short.stderr
    );

    let project = step(
        &[
            "project",
            "create",
            "--name",
            "Acme",
            "--owner",
            "admin@example.com",
        ],
        None,
        &[],
    );
    assert_eq!(project.code, 0, "{}", project.stderr);
    let project_id = id_in(&project.stdout);
    assert!(
        step(&["project", "list"], None, &[])
            .stdout
            .contains(&project_id)
    );
    assert_eq!(
        step(
            &[
                "project",
                "create",
                "--name",
                "X",
                "--owner",
                "nobody@example.com"
            ],
            None,
            &[]
        )
        .code,
        4
    );

    let token = step(
        &["token", "create", "--project", &project_id, "--name", "ci"],
        None,
        &[],
    );
    assert_eq!(token.code, 0, "{}", token.stderr);
    let secret_token = token.stdout.trim().to_owned();
    assert!(
        secret_token.starts_with("zk_") && secret_token.len() == 46,
        "{secret_token}"
    );
    assert!(token.stderr.contains("shown once"));
    let listed = step(&["token", "list", "--project", &project_id], None, &[]);
    assert!(listed.stdout.contains(&secret_token[..11]) && listed.stdout.contains("live"));

    let endpoint = s3_endpoint();
    let access_key = s3_access_key();
    let add_args = [
        "bucket",
        "add",
        "--project",
        &project_id,
        "--service",
        "s3",
        "--name",
        store.name(),
        "--endpoint",
        &endpoint,
        "--path-style",
        "--access-key-id",
        &access_key,
    ];
    let wrong_args = add_args.as_slice();
    let refused = step(wrong_args, Some("not-the-secret"), &[]);
    assert_eq!(refused.code, 5, "{}", refused.stderr);
    assert!(
        refused
            .stderr
            .contains("The secret access key does not match"),
        "{}",
        refused.stderr
    );
    let added = step(wrong_args, Some(&s3_secret_key()), &[]);
    assert_eq!(added.code, 0, "{}", added.stderr);
    assert!(added.stdout.contains("write test passed"));
    let bucket_id = id_in(&added.stdout);
    assert_eq!(
        step(wrong_args, Some(&s3_secret_key()), &[]).code,
        6,
        "a duplicate is refused"
    );
    let invalid = step(
        &[
            "bucket",
            "add",
            "--project",
            &project_id,
            "--service",
            "s3",
            "--name",
            "Bad_Name",
            "--access-key-id",
            "x",
        ],
        Some("y"),
        &[],
    );
    assert_eq!(invalid.code, 3);
    assert!(invalid.stderr.contains("--name"), "{}", invalid.stderr);

    let buckets = step(&["bucket", "list", "--project", &project_id], None, &[]);
    let line = buckets
        .stdout
        .lines()
        .find(|l| l.contains(store.name()))
        .expect("listed");
    assert!(
        line.contains("S3") && line.contains("us-east-1") && line.contains("ok"),
        "{line}"
    );

    // A job refers to the bucket: deleting it is refused with the count.
    let mut conn = db.connect().await;
    let project: ProjectId = project_id.parse().unwrap();
    let bucket: BucketId = bucket_id.parse().unwrap();
    let stored = Bucket::find(&mut conn, project, bucket)
        .await
        .unwrap()
        .unwrap();
    Zip::create(
        &mut conn,
        NewZip {
            listings: Vec::new(),
            manifest: None,
            traceparent: None,
            expected_size: None,
            result_settings: Default::default(),
            project_id: project,
            bucket_id: stored.id,
            key: ObjectKey::parse("a.zip").unwrap(),
            metadata: Default::default(),
            compression: Compression::Auto,
            on_error: OnError::Fail,
            idempotency: None,
            entries: vec![NewZipEntry {
                url: SourceUrl::parse("https://example.com/a").unwrap(),
                filename: EntryName::parse("a").unwrap(),
                given_filename: None,
                modified_at: None,
                declared_size: None,
            }],
        },
    )
    .await
    .unwrap();
    let delete = step(
        &[
            "bucket",
            "delete",
            "--project",
            &project_id,
            "--bucket",
            &bucket_id,
        ],
        None,
        &[],
    );
    assert_eq!(delete.code, 6);
    assert!(
        delete
            .stderr
            .contains("1 zip job still refers to this bucket"),
        "{}",
        delete.stderr
    );

    // Rotation to a new key; the bucket still works with only... the new key active.
    let new_key = step(&["keys", "generate"], None, &[])
        .stdout
        .trim()
        .to_owned();
    let rotated_env = [
        ("ZIPKIT__CRYPTO__KEYS__NEXT", new_key.as_str()),
        ("ZIPKIT__CRYPTO__ACTIVE_KEY", "next"),
    ];
    let rotate = step(&["keys", "rotate"], None, &rotated_env);
    assert_eq!(rotate.code, 0, "{}", rotate.stderr);
    assert!(
        rotate.stdout.contains("re-sealed 1 bucket(s)"),
        "{}",
        rotate.stdout
    );
    assert_eq!(
        Bucket::find(&mut conn, project, bucket)
            .await
            .unwrap()
            .unwrap()
            .encryption_key_id,
        "next"
    );
    let test_args = [
        "bucket",
        "test",
        "--project",
        &project_id,
        "--bucket",
        &bucket_id,
    ];
    let tested = step(&test_args, None, &rotated_env);
    assert_eq!(tested.code, 0, "{}", tested.stderr);
    // What the keys may do, a line each; as JSON, each by name.
    assert!(
        tested.stdout.contains("write test passed; the keys may:")
            && tested
                .stdout
                .lines()
                .any(|l| l.split_whitespace().eq(["UploadPartCopy", "yes"])),
        "{}",
        tested.stdout
    );
    let tested = step(
        &[&["--output", "json"], &test_args[..]].concat(),
        None,
        &rotated_env,
    );
    let tested: serde_json::Value = serde_json::from_str(&tested.stdout).expect("JSON");
    assert_eq!(tested["object"], "bucket_test");
    assert_eq!(
        tested["capabilities"],
        serde_json::json!({
            "write": true, "read": true, "list": true, "abort_multipart": true, "acl": true,
            "full_object_crc32": true, "upload_part_copy": true, "tagging": true,
            "sse_s3": true, "sse_kms": true, "delete": true,
            "storage_classes": ["REDUCED_REDUNDANCY"],
        })
    );

    // Jobs may read sources from it once allowed; the keys were found able to read and list.
    let mut sources = |flag: &str| {
        let args = [
            "--output",
            "json",
            "bucket",
            "sources",
            "--project",
            &project_id,
            "--bucket",
            &bucket_id,
            flag,
        ];
        let answer = step(&args, None, &rotated_env);
        assert_eq!(answer.code, 0, "{}", answer.stderr);
        serde_json::from_str::<serde_json::Value>(&answer.stdout).expect("JSON")
    };
    let allowed = sources("--allow");
    assert_eq!(
        (&allowed["read_sources"], &allowed["warning"]),
        (&serde_json::json!(true), &serde_json::Value::Null)
    );
    assert!(
        Bucket::find(&mut conn, project, bucket)
            .await
            .unwrap()
            .unwrap()
            .read_sources
    );
    assert_eq!(sources("--deny")["read_sources"], false);
    let neither = step(
        &[
            "bucket",
            "sources",
            "--project",
            &project_id,
            "--bucket",
            &bucket_id,
        ],
        None,
        &rotated_env,
    );
    assert_ne!(neither.code, 0, "--allow or --deny is required");

    let edit = step(
        &[
            "bucket",
            "edit",
            "--project",
            &project_id,
            "--bucket",
            &bucket_id,
            "--access-key-id",
            &s3_access_key(),
        ],
        Some("still-wrong"),
        &rotated_env,
    );
    assert_eq!(
        edit.code, 5,
        "a failing edit is refused and changes nothing"
    );
    assert_eq!(step(&test_args, None, &rotated_env).code, 0);

    let token_id = listed
        .stdout
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    let revoked = step(
        &[
            "token",
            "revoke",
            "--project",
            &project_id,
            "--token",
            &token_id,
        ],
        None,
        &[],
    );
    assert!(
        revoked.stdout.contains("revoked token"),
        "{}",
        revoked.stderr
    );
    assert_eq!(
        step(&["token", "list", "--project", "not-a-uuid"], None, &[]).code,
        2
    );
    assert_eq!(
        step(
            &["token", "list", "--project", &BucketId::new().to_string()],
            None,
            &[]
        )
        .code,
        4
    );

    let everything = outputs.join("\n");
    for secret in [s3_secret_key().as_str(), PASSWORD, new_key.as_str()] {
        let shown = everything.matches(secret).count();
        // The generated key is printed once, by `keys generate` itself, and nowhere else.
        let allowed = usize::from(secret == new_key);
        assert_eq!(shown, allowed, "a secret was printed");
    }
    assert_eq!(
        everything.matches(&secret_token).count(),
        1,
        "the token is shown once, at creation"
    );
}

#[tokio::test]
async fn the_cli_refuses_internal_bucket_endpoints_and_webhook_urls_before_any_connection() {
    let db = TestDatabase::migrated(zipkit_domain::db::MIGRATIONS).await;
    let internal = InternalService::start().await;
    let port = internal.port();
    // One listed network, given as the operator would: everything else on loopback is internal.
    let env = [("ZIPKIT__EGRESS__ALLOWED_NETWORKS", "127.0.0.3/32,fd12::/16")];
    let project = run(
        &db,
        &env,
        &["project", "create", "--name", "Internal"],
        None,
    );
    assert_eq!(project.code, 0, "{}", project.stderr);
    let project_id = id_in(&project.stdout);
    let p = project_id.as_str();

    for endpoint in [
        format!("http://127.0.0.2:{port}"),
        format!("http://2130706434:{port}"),
        format!("http://[::ffff:127.0.0.2]:{port}"),
        format!("http://localhost:{port}"),
    ] {
        for no_test in [false, true] {
            let mut args = vec![
                "bucket",
                "add",
                "--project",
                p,
                "--service",
                "s3",
                "--name",
                "internal-archives",
                "--endpoint",
                endpoint.as_str(),
                "--path-style",
                "--access-key-id",
                "AKIAEXAMPLE",
            ];
            if no_test {
                args.push("--no-test");
            }
            let refused = run(&db, &env, &args, Some("secret"));
            assert_eq!(refused.code, 3, "{endpoint}: {}", refused.stderr);
            assert!(refused.stderr.contains("--endpoint"), "{}", refused.stderr);
            assert!(
                refused
                    .stderr
                    .contains("which this deployment does not connect to"),
                "{}",
                refused.stderr
            );
        }
    }
    for url in [
        format!("https://127.0.0.2:{port}/x"),
        format!("https://2130706434:{port}/x"),
        format!("https://localhost:{port}/x"),
    ] {
        let refused = run(
            &db,
            &env,
            &["webhook", "add", "--project", p, "--url", url.as_str()],
            None,
        );
        assert_eq!(refused.code, 3, "{url}: {}", refused.stderr);
        assert!(refused.stderr.contains("--url"), "{}", refused.stderr);
        assert!(
            refused.stderr.contains("does not send webhooks to"),
            "{}",
            refused.stderr
        );
    }
    let listed = run(&db, &env, &["bucket", "list", "--project", p], None);
    assert!(
        !listed.stdout.contains("internal-archives"),
        "{}",
        listed.stdout
    );
    internal.assert_untouched().await;
}

#[tokio::test]
async fn with_output_json_every_create_prints_one_object_and_errors_are_json_too() {
    let db = TestDatabase::migrated(zipkit_domain::db::MIGRATIONS).await;
    let json = |run: &Run| -> serde_json::Value {
        assert_eq!(run.code, 0, "{}", run.stderr);
        serde_json::from_str(run.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {}", run.stdout))
    };
    let user = json(&run(
        &db,
        &[],
        &[
            "--output",
            "json",
            "user",
            "create",
            "--email",
            "ops@example.com",
        ],
        Some(PASSWORD),
    ));
    assert_eq!(user["object"], "user");
    assert_eq!(user["email"], "ops@example.com");
    let project = json(&run(
        &db,
        &[],
        &[
            "project",
            "create",
            "--name",
            "Scripted",
            "--owner",
            "ops@example.com",
            "--output",
            "json",
        ],
        None,
    ));
    assert_eq!(project["object"], "project");
    assert_eq!(project["owner"], "ops@example.com");
    let project_id = project["id"].as_str().expect("an id").to_owned();
    let token = json(&run(
        &db,
        &[],
        &[
            "--output",
            "json",
            "token",
            "create",
            "--project",
            &project_id,
            "--name",
            "ci",
        ],
        None,
    ));
    assert_eq!(token["object"], "token");
    assert!(
        token["secret"]
            .as_str()
            .is_some_and(|s| s.starts_with("zk_")),
        "{token}"
    );
    assert_eq!(token["project_id"], project_id.as_str());
    let bucket = json(&run(
        &db,
        &[],
        &[
            "--output",
            "json",
            "bucket",
            "add",
            "--project",
            &project_id,
            "--service",
            "s3",
            "--name",
            "scripted-archives",
            "--access-key-id",
            "AKIAEXAMPLE",
            "--no-test",
        ],
        Some("secret"),
    ));
    assert_eq!(bucket["object"], "bucket");
    assert_eq!(bucket["tested"], false);
    assert_eq!(
        bucket["capabilities"],
        serde_json::Value::Null,
        "not known untested"
    );
    assert!(
        !bucket.to_string().contains("secret\""),
        "the bucket secret is not printed"
    );
    let key = json(&run(
        &db,
        &[],
        &["--output", "json", "keys", "generate"],
        None,
    ));
    assert!(key["key"].is_string());

    // A refusal, as JSON on stderr with the same exit code.
    let refused = run(
        &db,
        &[],
        &["--output", "json", "project", "create", "--name", ""],
        None,
    );
    assert_eq!(refused.code, 3);
    let error: serde_json::Value =
        serde_json::from_str(refused.stderr.trim()).expect("a JSON error");
    assert_eq!(error["error"]["exit_code"], 3);
    assert!(
        error["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("--name"))
    );
}

#[tokio::test]
async fn pretty_logs_written_to_a_pipe_carry_no_colour_codes() {
    let db = TestDatabase::migrated(zipkit_domain::db::MIGRATIONS).await;
    let migrated = run(
        &db,
        &[("ZIPKIT__TELEMETRY__FORMAT", "pretty")],
        &["migrate"],
        None,
    );
    assert_eq!(migrated.code, 0, "{}", migrated.stderr);
    let logs = format!("{}{}", migrated.stdout, migrated.stderr);
    assert!(logs.contains("telemetry initialised"), "{logs}");
    assert!(!logs.contains('\u{1b}'), "ANSI escapes in a pipe: {logs:?}");
}

// Multi-threaded: the CLI runs as a blocking child process while the worker delivers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_endpoints_are_added_listed_tested_and_removed() {
    use zipkit_test_support::TestBroker;
    use zipkit_test_support::receiver::WebhookReceiver;

    let db = TestDatabase::migrated(zipkit_domain::db::MIGRATIONS).await;
    let broker = TestBroker::new().await;
    let receiver = WebhookReceiver::start(0).await;
    // A worker in this process, configured as the binary would be in development, delivers.
    let settings: zipkit_worker::Settings =
        crate::common::development_worker(db.url(), &broker.url()).load();
    let worker = zipkit_worker::Worker::build(settings)
        .await
        .expect("worker");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(worker.run_until(async move {
        let _ = stopped.await;
    }));

    assert_eq!(
        run(
            &db,
            &[],
            &["user", "create", "--email", "a@example.com"],
            Some(PASSWORD)
        )
        .code,
        0
    );
    let project = run(
        &db,
        &[],
        &[
            "project",
            "create",
            "--name",
            "Hooks",
            "--owner",
            "a@example.com",
        ],
        None,
    );
    assert_eq!(project.code, 0, "{}", project.stderr);
    let project_id = id_in(&project.stdout);
    let p = project_id.as_str();

    let refused = run(
        &db,
        &[],
        &["webhook", "add", "--project", p, "--url", "ftp://x/"],
        None,
    );
    assert_eq!(refused.code, 3, "{}", refused.stderr);
    assert!(refused.stderr.contains("--url"), "{}", refused.stderr);

    let added = run(
        &db,
        &[],
        &[
            "webhook",
            "add",
            "--project",
            p,
            "--url",
            receiver.url(),
            "--description",
            "ops",
        ],
        None,
    );
    assert_eq!(added.code, 0, "{}", added.stderr);
    let secret = added.stdout.trim().to_owned();
    assert!(secret.starts_with("whsec_"), "{secret}");
    let endpoint_id = id_in(&added.stderr);
    let e = endpoint_id.as_str();

    let listed = run(&db, &[], &["webhook", "list", "--project", p], None);
    assert!(listed.stdout.contains(e) && listed.stdout.contains(receiver.url()));
    assert!(listed.stdout.contains("none"), "{}", listed.stdout);

    let tested = run(
        &db,
        &[],
        &[
            "webhook",
            "test",
            "--project",
            p,
            "--endpoint",
            e,
            "--wait-secs",
            "20",
        ],
        None,
    );
    assert_eq!(tested.code, 0, "{}{}", tested.stdout, tested.stderr);
    assert!(
        tested.stdout.contains("delivered: HTTP 200"),
        "{}",
        tested.stdout
    );
    let received = receiver.received();
    assert_eq!(received.len(), 1);
    let signature = &received[0].headers["zipkit-signature"];
    let now = chrono::Utc::now().timestamp();
    assert!(zipkit_domain::webhooks::verify(
        &secret,
        signature,
        &received[0].body,
        now,
        300
    ));
    let event: serde_json::Value = serde_json::from_slice(&received[0].body).unwrap();
    assert_eq!(event["type"], "webhook.test");

    let listed = run(&db, &[], &["webhook", "list", "--project", p], None);
    assert!(
        listed.stdout.contains("succeeded (HTTP 200)"),
        "{}",
        listed.stdout
    );
    for output in [
        &listed.stdout,
        &listed.stderr,
        &tested.stdout,
        &tested.stderr,
    ] {
        assert!(
            !output.contains(&secret),
            "the signing secret is printed once only"
        );
    }

    let removed = run(
        &db,
        &[],
        &["webhook", "remove", "--project", p, "--endpoint", e],
        None,
    );
    assert_eq!(removed.code, 0, "{}", removed.stderr);
    let listed = run(&db, &[], &["webhook", "list", "--project", p], None);
    assert!(!listed.stdout.contains(e));
    let gone = run(
        &db,
        &[],
        &["webhook", "test", "--project", p, "--endpoint", e],
        None,
    );
    assert_eq!(gone.code, 4, "{}", gone.stderr);

    let _ = stop.send(());
    worker.await.unwrap();
}
