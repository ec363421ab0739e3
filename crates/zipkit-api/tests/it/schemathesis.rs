//! The API against its own OpenAPI document, by schemathesis (PyPI): every check on, a bounded
//! number of generated requests per operation with a fixed seed. It fails on any 5xx, response
//! that breaks the documented schema, undocumented status or header, schema-valid request
//! refused, schema-invalid request accepted, or 405 without `Allow`. The one rule JSON Schema
//! cannot state (filenames unique ignoring case) is taught to the generator by
//! `schemathesis/hooks.py`. `scripts/test.sh` installs schemathesis (`scripts/tools.sh
//! schemathesis`) and names it in `ZIPKIT_TEST_SCHEMATHESIS`.

use crate::common;

use std::process::Command;

use zipkit_domain::Service;

/// Requests per operation in the fuzzing phase (the coverage phase adds its boundary cases).
const EXAMPLES: &str = "40";
const SEED: &str = "7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_nothing_with_every_check_on() {
    let st = std::env::var("ZIPKIT_TEST_SCHEMATHESIS").unwrap_or_else(|_| {
        panic!(
            "ZIPKIT_TEST_SCHEMATHESIS is not set: run scripts/test.sh, or \
             `export ZIPKIT_TEST_SCHEMATHESIS=$(scripts/tools.sh schemathesis)`"
        )
    });
    let (db, _broker, app) = common::start().await;
    let (project, token) = app.project(&db, "Schemathesis").await;
    // A bucket the generated requests may name (others answer 404, which is documented).
    app.bucket(&db, project, Service::S3, "my-archives").await;
    let hooks = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/schemathesis/hooks.py");
    let document = format!("{}/v1/openapi.json", app.base);
    let output = tokio::task::spawn_blocking(move || {
        Command::new(st)
            .args([
                "run",
                &document,
                "--header",
                &format!("Authorization: Bearer {token}"),
                "--checks",
                "all",
                "--max-examples",
                EXAMPLES,
                "--seed",
                SEED,
                "--generation-database",
                "none",
                "--no-color",
            ])
            .env("SCHEMATHESIS_HOOKS", hooks)
            .current_dir(std::env::temp_dir())
            .output()
            .expect("run schemathesis")
    })
    .await
    .expect("schemathesis finished");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "schemathesis found problems:\n{report}"
    );
    assert!(report.contains("passed"), "{report}");
}
