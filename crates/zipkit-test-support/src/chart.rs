//! The Helm chart (`helm/zipkit`) as tests see it: rendered by the real Helm binary, parsed into
//! JSON objects, and looked into (objects by kind and name, containers, ConfigMap data). The tool
//! paths come from variables scripts/test.sh sets: ZIPKIT_TEST_HELM4, ZIPKIT_TEST_HELM3,
//! ZIPKIT_TEST_KUBERNETES_VALIDATE (whose Python environment has PyYAML).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::process::run_with_input;

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn chart() -> PathBuf {
    repo().join("helm/zipkit")
}

pub fn tool(variable: &str) -> String {
    std::env::var(variable).unwrap_or_else(|_| {
        panic!("{variable} is not set: run scripts/test.sh (scripts/tools.sh installs the chart's tools)")
    })
}

/// Runs a command; (success, stdout, stderr).
pub fn run(command: &mut Command, stdin: Option<&str>) -> (bool, String, String) {
    let output = run_with_input(command, stdin.unwrap_or_default())
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `helm template` with the values files (and API versions the "cluster" serves); Err(stderr).
pub fn template(helm: &str, files: &[PathBuf], api_versions: &[&str]) -> Result<String, String> {
    template_as(helm, "zipkit", files, api_versions, &[])
}

/// As `template`, as release `release` and with `--set` values (`key=value`).
pub fn template_as(
    helm: &str,
    release: &str,
    files: &[PathBuf],
    api_versions: &[&str],
    set: &[&str],
) -> Result<String, String> {
    let mut command = Command::new(helm);
    command
        .args(["template", release, &chart().to_string_lossy()])
        .args(["--namespace", "apps"]);
    for file in files {
        command.arg("-f").arg(file);
    }
    for version in api_versions {
        command.args(["--api-versions", version]);
    }
    for value in set {
        command.args(["--set", value]);
    }
    let (ok, out, err) = run(&mut command, None);
    if ok { Ok(out) } else { Err(err) }
}

/// The rendered YAML stream as JSON objects (PyYAML from kubernetes-validate's environment).
pub fn objects(yaml: &str) -> Vec<Value> {
    let python = Path::new(&tool("ZIPKIT_TEST_KUBERNETES_VALIDATE")).with_file_name("python");
    let (ok, out, err) = run(
        Command::new(python).args([
            "-c",
            "import json, sys, yaml; print(json.dumps([d for d in yaml.safe_load_all(sys.stdin) if d]))",
        ]),
        Some(yaml),
    );
    assert!(ok, "the rendered chart is not YAML: {err}");
    serde_json::from_str(&out).expect("JSON")
}

pub fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

pub fn named<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

pub fn annotation<'a>(object: &'a Value, key: &str) -> Option<&'a str> {
    object["metadata"]["annotations"][key].as_str()
}

pub fn containers(pod_owner: &Value) -> Vec<&Value> {
    let spec = if pod_owner["kind"] == "Pod" {
        &pod_owner["spec"]
    } else {
        &pod_owner["spec"]["template"]["spec"]
    };
    spec["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .collect()
}

/// The ConfigMap's data as a map.
pub fn config_map(objects: &[Value], name: &str) -> BTreeMap<String, String> {
    serde_json::from_value(named(objects, "ConfigMap", name)["data"].clone()).expect("string data")
}
