//! The Helm chart (`helm/zipkit`), rendered by the real Helm 4 and Helm 3 binaries for every values
//! file in `helm/tests/values/`: `helm lint --strict`, every object validated by
//! `kubernetes-validate --strict` (custom resources by their published models), and what the
//! rendered objects must say checked against the binaries themselves. No Kubernetes API server can
//! run here, so nothing is installed; the container image test runs the rendered specs instead.
//!
//! Tools (scripts/test.sh installs them and sets the variables): ZIPKIT_TEST_HELM4,
//! ZIPKIT_TEST_HELM3, ZIPKIT_TEST_KUBERNETES_VALIDATE, ZIPKIT_TEST_KUBERNETES_MODELS.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;
use zipkit_test_support::chart::{
    annotation, chart, config_map, containers, named, objects, of_kind, repo, run, template,
    template_as, tool,
};
use zipkit_test_support::stack::{Stack, sibling_binary};
use zipkit_test_support::{TestBroker, TestDatabase};

const BINARY: &str = env!("CARGO_BIN_EXE_zipkit-api");

fn helms() -> [(&'static str, String); 2] {
    [
        ("Helm 4", tool("ZIPKIT_TEST_HELM4")),
        ("Helm 3", tool("ZIPKIT_TEST_HELM3")),
    ]
}

/// Every values file the chart must render with (the defaults plus secrets, and each option on).
const VALUES: &[&str] = &["default", "everything", "existing-secret", "no-hooks"];

fn values(name: &str) -> PathBuf {
    repo().join(format!("helm/tests/values/{name}.yaml"))
}

fn render(values_name: &str, api_versions: &[&str]) -> Vec<Value> {
    render_with(values_name, api_versions, &[])
}

/// As `render`, with `--set` values.
fn render_with(values_name: &str, api_versions: &[&str], set: &[&str]) -> Vec<Value> {
    let (_, helm) = &helms()[0];
    let yaml = template_as(helm, "zipkit", &[values(values_name)], api_versions, set)
        .unwrap_or_else(|e| panic!("{values_name}: {e}"));
    objects(&yaml)
}

/// The pod spec of a Deployment, Job or Pod.
fn pod_spec(owner: &Value) -> &Value {
    if owner["kind"] == "Pod" {
        &owner["spec"]
    } else {
        &owner["spec"]["template"]["spec"]
    }
}

#[test]
fn the_chart_lints_renders_and_validates_with_helm_4_and_helm_3_for_every_values_file() {
    let validate = tool("ZIPKIT_TEST_KUBERNETES_VALIDATE");
    let models = tool("ZIPKIT_TEST_KUBERNETES_MODELS");
    for (version, helm) in helms() {
        for name in VALUES {
            let (ok, out, err) = run(
                Command::new(&helm)
                    .args(["lint", "--strict", &chart().to_string_lossy(), "-f"])
                    .arg(values(name)),
                None,
            );
            assert!(ok, "{version} lint --strict with {name}: {out}{err}");
            // KEDA and the Prometheus Operator "installed", so their objects render too.
            let yaml = template(
                &helm,
                &[values(name)],
                &["keda.sh/v1alpha1", "monitoring.coreos.com/v1"],
            )
            .unwrap_or_else(|e| panic!("{version} template with {name}: {e}"));
            let rendered = std::env::temp_dir()
                .join(format!("zipkit-chart-{}-{name}.yaml", uuid::Uuid::new_v4()));
            std::fs::write(&rendered, &yaml).expect("write the rendered chart");
            let (ok, out, err) = run(
                Command::new(&validate)
                    .args(["--strict", "--kubernetes-version", "1.35"])
                    .arg(&rendered),
                None,
            );
            let _ = std::fs::remove_file(&rendered);
            assert!(ok, "{version}, {name}: kubernetes-validate: {out}{err}");
            let parsed = objects(&yaml);
            let (ok, out, err) = run(
                Command::new("node")
                    .arg(repo().join("helm/tests/validate-crds.cjs"))
                    .arg(&models),
                Some(&Value::Array(parsed.clone()).to_string()),
            );
            assert!(ok, "{version}, {name}: custom resources: {out}{err}");
            let custom = parsed
                .iter()
                .filter(|o| {
                    o["apiVersion"] != "v1"
                        && o["kind"].as_str().is_some_and(|k| {
                            [
                                "ScaledObject",
                                "TriggerAuthentication",
                                "ServiceMonitor",
                                "PrometheusRule",
                            ]
                            .contains(&k)
                        })
                })
                .count();
            assert!(
                out.starts_with(&format!("{custom} custom resources valid")),
                "{out}"
            );
            if *name == "everything" {
                assert_eq!(
                    custom, 4,
                    "KEDA's two objects, the ServiceMonitor and the PrometheusRule"
                );
            }
        }
    }
    // Helm 4 can also go through an install without a cluster.
    let (_, helm4) = &helms()[0];
    let (ok, out, err) = run(
        Command::new(helm4)
            .args([
                "install",
                "zipkit",
                &chart().to_string_lossy(),
                "--dry-run=client",
                // No cluster to ask whether KEDA is there.
                "--set",
                "worker.autoscaling.keda.skipCapabilityCheck=true",
                "-f",
            ])
            .arg(values("everything")),
        None,
    );
    assert!(ok, "install --dry-run=client: {out}{err}");
    assert!(
        out.contains("zipkit-api --output json user create"),
        "NOTES.txt tells how to create the first user: {out}"
    );
}

#[test]
fn bad_values_are_refused_by_the_schema_naming_the_key() {
    let cases = [
        // Helm 4 writes /worker/replicas, Helm 3 worker.replicas.
        ("negative-replicas", "replicas"),
        ("unknown-key", "replica"),
        ("unknown-setting", "concurrencyy"),
        ("missing-secret", "databaseUrl"),
        ("keda-without-management-url", "managementUrl"),
    ];
    for (version, helm) in helms() {
        for (case, named) in cases {
            let refused = repo().join(format!("helm/tests/refused/{case}.yaml"));
            let error = template(&helm, &[values("default"), refused], &[])
                .expect_err(&format!("{version} accepted {case}"));
            assert!(error.contains(named), "{version}, {case}: {error}");
        }
    }
}

#[test]
fn the_schema_still_works_when_zipkit_is_a_subchart() {
    // A parent chart with zipkit vendored under charts/, passing `global` and zipkit's values.
    let parent = std::env::temp_dir().join(format!("zipkit-parent-{}", uuid::Uuid::new_v4()));
    let charts = parent.join("charts");
    std::fs::create_dir_all(&charts).expect("parent chart");
    let (ok, _, err) = run(
        Command::new("cp")
            .arg("-r")
            .arg(chart())
            .arg(charts.join("zipkit")),
        None,
    );
    assert!(ok, "{err}");
    std::fs::write(
        parent.join("Chart.yaml"),
        "apiVersion: v2\nname: platform\nversion: 1.0.0\ndependencies:\n  - name: zipkit\n    version: 0.1.0\n",
    )
    .expect("Chart.yaml");
    let default = std::fs::read_to_string(values("default")).expect("default values");
    let nested: String = default.lines().map(|l| format!("  {l}\n")).collect();
    std::fs::write(
        parent.join("values.yaml"),
        format!("global:\n  imageRegistry: registry.example\nzipkit:\n{nested}"),
    )
    .expect("values.yaml");
    for (version, helm) in helms() {
        let (ok, out, err) = run(
            Command::new(&helm)
                .args(["template", "platform"])
                .arg(&parent),
            None,
        );
        assert!(ok, "{version}: {err}");
        assert!(out.contains("kind: Deployment"), "{out}");
    }
    let _ = std::fs::remove_dir_all(&parent);
}

#[test]
fn the_migration_job_runs_as_a_hook_after_what_it_needs_or_as_a_plain_job_in_a_sync_wave() {
    let hooked = render("default", &[]);
    let job = named(&hooked, "Job", "zipkit-migrate");
    assert_eq!(
        annotation(job, "helm.sh/hook"),
        Some("pre-install,pre-upgrade")
    );
    let weight = |o: &Value| -> i32 {
        annotation(o, "helm.sh/hook-weight")
            .expect("a hook weight")
            .parse()
            .expect("a number")
    };
    let container = containers(job)[0];
    assert_eq!(container["command"], serde_json::json!(["zipkit-api"]));
    assert_eq!(
        container["args"],
        serde_json::json!(["--output", "json", "migrate"])
    );
    // Everything the Job reads exists before it: hooks of a lower weight.
    let config = container["envFrom"][0]["configMapRef"]["name"]
        .as_str()
        .expect("a ConfigMap");
    let config = named(&hooked, "ConfigMap", config);
    assert!(weight(config) < weight(job));
    for env in container["env"].as_array().expect("env") {
        let secret = env["valueFrom"]["secretKeyRef"]["name"]
            .as_str()
            .expect("a secret");
        assert!(
            weight(named(&hooked, "Secret", secret)) < weight(job),
            "{env}"
        );
    }
    let account = job["spec"]["template"]["spec"]["serviceAccountName"]
        .as_str()
        .expect("a service account");
    assert!(weight(named(&hooked, "ServiceAccount", account)) < weight(job));
    for helper in [config, named(&hooked, "ServiceAccount", account)] {
        assert_eq!(
            annotation(helper, "helm.sh/hook"),
            Some("pre-install,pre-upgrade")
        );
    }

    let plain = render("no-hooks", &[]);
    let jobs = of_kind(&plain, "Job");
    assert_eq!(jobs.len(), 1);
    assert_eq!(annotation(jobs[0], "helm.sh/hook"), None);
    assert_eq!(
        annotation(jobs[0], "argocd.argoproj.io/sync-wave"),
        Some("-1")
    );
    for kind in ["ConfigMap", "Secret", "ServiceAccount"] {
        for object in of_kind(&plain, kind) {
            assert_eq!(
                annotation(object, "argocd.argoproj.io/sync-wave"),
                Some("-2"),
                "{kind}"
            );
        }
    }
    for deployment in of_kind(&plain, "Deployment") {
        assert_eq!(annotation(deployment, "argocd.argoproj.io/sync-wave"), None);
    }
}

#[test]
fn every_pod_runs_restricted_and_every_deployment_has_a_disruption_budget() {
    for name in VALUES {
        let objects = render(name, &["keda.sh/v1alpha1"]);
        let owners: Vec<&Value> = objects
            .iter()
            .filter(|o| ["Deployment", "Job", "Pod"].contains(&o["kind"].as_str().unwrap_or("")))
            .collect();
        assert!(owners.len() >= 4, "{name}");
        for owner in owners {
            for container in containers(owner) {
                let context = &container["securityContext"];
                assert_eq!(context["runAsNonRoot"], true, "{name}: {owner}");
                assert_eq!(context["readOnlyRootFilesystem"], true);
                assert_eq!(context["allowPrivilegeEscalation"], false);
                assert_eq!(context["capabilities"]["drop"], serde_json::json!(["ALL"]));
                assert_eq!(context["seccompProfile"]["type"], "RuntimeDefault");
                assert!(context["runAsUser"].as_u64().is_some_and(|u| u > 0));
                assert!(container["resources"]["limits"]["memory"].is_string());
            }
        }
        let budgets = of_kind(&objects, "PodDisruptionBudget");
        for deployment in of_kind(&objects, "Deployment") {
            let selector = &deployment["spec"]["selector"]["matchLabels"];
            assert!(
                budgets
                    .iter()
                    .any(|b| &b["spec"]["selector"]["matchLabels"] == selector),
                "{name}: no budget for {}",
                deployment["metadata"]["name"]
            );
        }
    }
}

#[test]
fn the_worker_pod_outlives_the_workers_shutdown_grace() {
    for name in VALUES {
        let objects = render(name, &["keda.sh/v1alpha1"]);
        let settings = config_map(&objects, "zipkit");
        let grace: u64 = settings["ZIPKIT__WORKER__SHUTDOWN_GRACE_SECS"]
            .parse()
            .expect("a number");
        let worker = named(&objects, "Deployment", "zipkit-worker");
        let period = worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
            .as_u64()
            .expect("a grace period");
        assert!(period > grace, "{name}: {period} s is not above {grace} s");
    }
}

#[test]
fn workers_scale_on_the_queue_they_consume_through_keda_or_on_cpu_without_it() {
    let with_keda = render("everything", &["keda.sh/v1alpha1"]);
    let settings = config_map(&with_keda, "zipkit");
    let consumed =
        zipkit_runtime::broker::Topology::new(&settings["ZIPKIT__BROKER__QUEUE_PREFIX"]).jobs;
    let scaled = named(&with_keda, "ScaledObject", "zipkit-worker");
    let trigger = &scaled["spec"]["triggers"][0];
    assert_eq!(trigger["type"], "rabbitmq");
    assert_eq!(trigger["metadata"]["queueName"], consumed.as_str());
    assert_eq!(trigger["metadata"]["mode"], "QueueLength");
    // The management API counts ready + unacknowledged messages; AMQP would see ready ones only.
    assert_eq!(trigger["metadata"]["protocol"], "http");
    assert_eq!(trigger["metadata"]["value"], "6", "jobsPerWorker");
    assert_eq!(scaled["spec"]["scaleTargetRef"]["name"], "zipkit-worker");
    assert!(
        scaled["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]
            ["stabilizationWindowSeconds"]
            .as_u64()
            .is_some_and(|s| s > 0)
    );
    let auth = named(
        &with_keda,
        "TriggerAuthentication",
        trigger["authenticationRef"]["name"]
            .as_str()
            .expect("a name"),
    );
    assert_eq!(auth["spec"]["secretTargetRef"][0]["key"], "management-url");
    assert!(
        of_kind(&with_keda, "HorizontalPodAutoscaler")
            .iter()
            .all(|h| h["metadata"]["name"] != "zipkit-worker")
    );
    // The Deployment leaves the replica count to the autoscaler.
    assert!(named(&with_keda, "Deployment", "zipkit-worker")["spec"]["replicas"].is_null());

    // Scale to zero: started again once more jobs wait than the activation threshold; while the
    // queue depth cannot be read, the fallback's replicas.
    assert_eq!(scaled["spec"]["minReplicaCount"], 0);
    assert_eq!(trigger["metadata"]["activationValue"], "1");
    assert_eq!(
        scaled["spec"]["fallback"],
        serde_json::json!({"failureThreshold": 5, "replicas": 3})
    );

    // Asked for where the cluster does not serve KEDA's API: rendering fails naming the value
    // (before, a CPU HPA stood in silently), unless the check is skipped on purpose.
    for (version, helm) in helms() {
        let error = template(&helm, &[values("everything")], &[])
            .expect_err(&format!("{version} rendered KEDA's objects without KEDA"));
        assert!(
            error.contains("worker.autoscaling.keda.enabled")
                && error.contains("skipCapabilityCheck"),
            "{version}: {error}"
        );
    }
    let forced = render_with(
        "everything",
        &[],
        &["worker.autoscaling.keda.skipCapabilityCheck=true"],
    );
    assert_eq!(of_kind(&forced, "ScaledObject").len(), 1);

    // KEDA not asked for: a CPU HPA, which cannot scale to zero.
    let without = render_with(
        "everything",
        &[],
        &[
            "worker.autoscaling.keda.enabled=false",
            "worker.autoscaling.minReplicas=1",
        ],
    );
    assert!(of_kind(&without, "ScaledObject").is_empty());
    let (_, helm) = &helms()[0];
    let zero = template_as(
        helm,
        "zipkit",
        &[values("everything")],
        &[],
        &["worker.autoscaling.keda.enabled=false"],
    )
    .expect_err("a CPU HPA with minReplicas 0");
    assert!(zero.contains("minReplicas"), "{zero}");
    let hpa = named(&without, "HorizontalPodAutoscaler", "zipkit-worker");
    assert_eq!(hpa["spec"]["metrics"][0]["resource"]["name"], "cpu");
    assert!(
        hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"]
            .as_u64()
            .is_some_and(|s| s > 0)
    );
}

#[test]
fn no_secret_value_is_in_a_config_map_or_a_plain_variable() {
    for name in VALUES {
        let source: Value =
            objects(&std::fs::read_to_string(values(name)).expect("values")).remove(0);
        let mut secrets: Vec<String> = ["databaseUrl", "brokerUrl", "managementUrl", "otlpHeaders"]
            .iter()
            .filter_map(|k| source["secrets"][k].as_str().map(str::to_owned))
            .collect();
        if let Some(keys) = source["secrets"]["cryptoKeys"].as_object() {
            secrets.extend(keys.values().filter_map(|v| v.as_str().map(str::to_owned)));
        }
        // The passwords inside the URLs too.
        secrets.extend(["db-password", "mq-password", "otlp-secret"].map(str::to_owned));
        let objects = render(name, &["keda.sh/v1alpha1"]);
        let mut plain = String::new();
        for map in of_kind(&objects, "ConfigMap") {
            plain.push_str(&map["data"].to_string());
        }
        for owner in objects
            .iter()
            .filter(|o| o["kind"] == "Deployment" || o["kind"] == "Job")
        {
            for container in containers(owner) {
                plain.push_str(&container["env"].to_string());
                plain.push_str(&container["args"].to_string());
            }
        }
        for secret in &secrets {
            assert!(
                !plain.contains(secret.as_str()),
                "{name}: a secret in plain sight: {secret}"
            );
        }
    }
}

#[test]
fn every_zipkit_variable_the_chart_sets_is_a_documented_setting() {
    let reference = std::fs::read_to_string(repo().join("docs/CONFIGURATION.md")).expect("docs");
    for name in VALUES {
        let objects = render(name, &["keda.sh/v1alpha1"]);
        let mut variables: Vec<String> = Vec::new();
        for map in of_kind(&objects, "ConfigMap") {
            let data: BTreeMap<String, String> =
                serde_json::from_value(map["data"].clone()).expect("data");
            variables.extend(data.into_keys());
        }
        for owner in of_kind(&objects, "Deployment") {
            for container in containers(owner) {
                for env in container["env"].as_array().expect("env") {
                    variables.push(env["name"].as_str().expect("a name").to_owned());
                }
            }
        }
        let zipkit: Vec<&String> = variables
            .iter()
            .filter(|v| v.starts_with("ZIPKIT__"))
            .collect();
        assert!(zipkit.len() > 8, "{name}");
        for variable in zipkit {
            let key = variable["ZIPKIT__".len()..]
                .to_lowercase()
                .replacen("__", ".", 1);
            assert!(
                !key.starts_with("crypto.keys__"),
                "{name}: crypto keys are mounted as files (crypto.keys_dir), not named in variables: {variable}"
            );
            let documented = key.clone();
            assert!(
                reference.contains(&format!("| `{documented}` |")),
                "{name}: {variable} ({documented}) is not in docs/CONFIGURATION.md"
            );
        }
    }
}

#[tokio::test]
async fn probe_and_scrape_paths_are_routes_the_binaries_serve_on_the_ports_the_chart_names() {
    let objects = render(
        "everything",
        &["monitoring.coreos.com/v1", "keda.sh/v1alpha1"],
    );
    let settings = config_map(&objects, "zipkit");
    let (db, vhost) = (
        TestDatabase::migrated(zipkit_domain::db::MIGRATIONS).await,
        TestBroker::new().await,
    );
    let worker = sibling_binary(BINARY, "zipkit-worker");
    let stack = Stack::start(BINARY, &worker, db.url(), &vhost.url(), &[]).await;
    let http = reqwest::Client::new();
    for (deployment, port_setting) in [
        ("zipkit-api", "ZIPKIT__API__PORT"),
        ("zipkit-worker", "ZIPKIT__WORKER__HTTP_PORT"),
    ] {
        let container = containers(named(&objects, "Deployment", deployment))[0];
        let ports = container["ports"].as_array().expect("ports");
        for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
            // Kubernetes' default of 1 s is shorter than the readiness check's 2 s on the
            // database.
            assert!(
                container[probe]["timeoutSeconds"]
                    .as_u64()
                    .is_some_and(|t| t > 2),
                "{deployment} {probe}: {}",
                container[probe]
            );
            let get = &container[probe]["httpGet"];
            let port = ports
                .iter()
                .find(|p| p["name"] == get["port"])
                .unwrap_or_else(|| panic!("{deployment}: the {probe} names no container port"));
            // The container port is the one the binary is told to listen on.
            assert_eq!(
                port["containerPort"].to_string(),
                settings[port_setting],
                "{deployment}"
            );
            let path = get["path"].as_str().expect("a path");
            let url = if deployment == "zipkit-api" {
                stack.api_url(path)
            } else {
                stack.worker_url(path)
            };
            let status = http.get(&url).send().await.expect("GET").status();
            assert_eq!(status, 200, "{deployment} {probe} {path}");
        }
    }
    // The ServiceMonitor scrapes the Services' named ports at a path both binaries serve.
    let monitor = named(&objects, "ServiceMonitor", "zipkit");
    for endpoint in monitor["spec"]["endpoints"].as_array().expect("endpoints") {
        let service = of_kind(&objects, "Service")
            .into_iter()
            .find(|s| {
                s["spec"]["ports"]
                    .as_array()
                    .is_some_and(|p| p.iter().any(|p| p["name"] == endpoint["port"]))
            })
            .expect("a Service with that port");
        let path = endpoint["path"].as_str().expect("a path");
        let url = if service["metadata"]["name"] == "zipkit-api" {
            stack.api_url(path)
        } else {
            stack.worker_url(path)
        };
        let answer = http.get(&url).send().await.expect("GET");
        assert_eq!(answer.status(), 200, "{url}");
        assert!(
            answer
                .text()
                .await
                .expect("text")
                .contains("zipkit_build_info")
        );
    }
    // The Ingress routes the API and the dashboard, never the probes or metrics.
    let ingress = of_kind(&objects, "Ingress")[0];
    let paths: Vec<&str> = ingress["spec"]["rules"][0]["http"]["paths"]
        .as_array()
        .expect("paths")
        .iter()
        .map(|p| p["path"].as_str().expect("a path"))
        .collect();
    assert_eq!(paths, ["/v1", "/api/v1", "/dashboard"]);
    for path in ["/v1/openapi.json", "/dashboard/login"] {
        let status = http
            .get(stack.api_url(path))
            .send()
            .await
            .expect("GET")
            .status();
        assert_eq!(
            status, 200,
            "{path} is reachable through the Ingress's prefixes"
        );
    }
}

#[test]
fn every_name_fits_kubernetes_limit_for_the_longest_release_name_helm_accepts() {
    // Helm accepts release names of up to 53 characters.
    let release = "a-release-name-that-is-exactly-fifty-three-chars-long";
    assert_eq!(release.len(), 53);
    let (_, helm) = &helms()[0];
    for name in VALUES {
        let yaml = template_as(
            helm,
            release,
            &[values(name)],
            &["keda.sh/v1alpha1", "monitoring.coreos.com/v1"],
            &[],
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let objects = objects(&yaml);
        let mut seen = std::collections::BTreeSet::new();
        for object in &objects {
            let object_name = object["metadata"]["name"].as_str().expect("a name");
            assert!(
                object_name.len() <= 63,
                "{name}: {} {object_name} is {} characters",
                object["kind"],
                object_name.len()
            );
            assert!(
                seen.insert((object["kind"].to_string(), object_name.to_owned())),
                "{name}: two {} named {object_name}",
                object["kind"]
            );
            for (key, value) in object["metadata"]["labels"]
                .as_object()
                .into_iter()
                .flatten()
            {
                assert!(
                    value.as_str().is_some_and(|v| v.len() <= 63),
                    "{name}: label {key}={value}"
                );
            }
        }
    }
}

#[test]
fn migrations_fit_helms_default_timeout_and_a_gitops_job_is_named_by_its_whole_spec() {
    // `helm install`/`upgrade` wait 5 minutes for hooks by default.
    for name in VALUES {
        for job in of_kind(&render(name, &["keda.sh/v1alpha1"]), "Job") {
            let deadline = job["spec"]["activeDeadlineSeconds"]
                .as_u64()
                .expect("a deadline");
            assert!(deadline < 300, "{name}: {deadline} s");
        }
    }
    let job_name = |set: &[&str]| {
        let rendered = render_with("no-hooks", &[], set);
        let jobs = of_kind(&rendered, "Job");
        assert_eq!(jobs.len(), 1);
        (
            jobs[0]["metadata"]["name"]
                .as_str()
                .expect("a name")
                .to_owned(),
            jobs[0]["spec"]["ttlSecondsAfterFinished"].clone(),
        )
    };
    let (plain, ttl) = job_name(&[]);
    assert_eq!(ttl, 86400);
    assert_eq!(job_name(&[]).0, plain, "the same values, the same Job");
    // A Job's pod template cannot be changed: anything the pod runs with names a new Job.
    for change in [
        "secrets.cryptoKeys.k2=dGVzdC1rZXktdGVzdC1rZXktdGVzdC1rZXktdGVzdDI=",
        "config.worker.concurrency=9",
        "image.tag=0.2.0",
        "migrations.resources.limits.memory=300Mi",
        "extraEnv[0].name=OTEL_SERVICE_NAME",
    ] {
        assert_ne!(job_name(&[change]).0, plain, "{change}");
    }
    assert_eq!(job_name(&["migrations.ttlSecondsAfterFinished=600"]).1, 600);
}

#[test]
fn keys_the_operators_ca_and_the_escape_hatches_reach_every_zipkit_pod() {
    let objects = render("everything", &["keda.sh/v1alpha1"]);
    let settings = config_map(&objects, "zipkit");
    assert_eq!(
        settings["ZIPKIT__CRYPTO__KEYS_DIR"],
        "/etc/zipkit/crypto-keys"
    );
    assert_eq!(settings["ZIPKIT__CRYPTO__ACTIVE_KEY"], "Key.2026-b");
    assert_eq!(
        settings["SSL_CERT_FILE"],
        "/etc/ssl/certs/ca-certificates.crt"
    );
    assert_eq!(settings["SSL_CERT_DIR"], "/etc/zipkit/ca");
    let owners: Vec<&Value> = objects
        .iter()
        .filter(|o| o["kind"] == "Deployment" || o["kind"] == "Job")
        .collect();
    assert_eq!(owners.len(), 3, "api, worker, migrations");
    for owner in owners {
        let what = owner["metadata"]["name"].as_str().expect("a name");
        let pod = pod_spec(owner);
        let volumes = pod["volumes"].as_array().expect("volumes");
        let volume = |name: &str| {
            volumes
                .iter()
                .find(|v| v["name"] == name)
                .unwrap_or_else(|| panic!("{what}: no volume {name}"))
        };
        // Each key a file named by its id, whatever characters the id has.
        let keys = &volume("crypto-keys")["secret"]["items"];
        assert_eq!(
            keys,
            &serde_json::json!([
                {"key": "crypto-key-Key.2026-b", "path": "Key.2026-b"},
                {"key": "crypto-key-k1", "path": "k1"}
            ]),
            "{what}"
        );
        assert_eq!(
            volume("extra-ca")["configMap"],
            serde_json::json!({"name": "acme-ca", "items": [{"key": "acme-root.pem", "path": "ca.crt"}]}),
            "{what}"
        );
        assert!(volume("scratch")["emptyDir"].is_object(), "{what}");
        let labels = &owner["spec"]["template"]["metadata"]["labels"];
        assert_eq!(labels["team"], "archives", "{what}");
        let container = containers(owner)[0];
        let mounts: Vec<&str> = container["volumeMounts"]
            .as_array()
            .expect("mounts")
            .iter()
            .map(|m| m["mountPath"].as_str().expect("a path"))
            .collect();
        // The worker's own /tmp, for a large archive's central directory (the root is
        // read-only), sized as the values say.
        let mut expected = vec!["/etc/zipkit/crypto-keys", "/etc/zipkit/ca", "/scratch"];
        if what.ends_with("-worker") {
            expected.push("/tmp");
            assert_eq!(volume("tmp")["emptyDir"]["sizeLimit"], "256Mi", "{what}");
        }
        assert_eq!(mounts, expected, "{what}");
        assert!(
            container["env"]
                .as_array()
                .expect("env")
                .iter()
                .any(|e| e["name"] == "OTEL_RESOURCE_ATTRIBUTES"),
            "{what}"
        );
        assert_eq!(
            container["envFrom"][1]["secretRef"]["name"],
            "acme-extra-env"
        );
        assert!(
            container["image"]
                .as_str()
                .expect("an image")
                .contains("@sha256:")
        );
    }
    let api = pod_spec(named(&objects, "Deployment", "zipkit-api"));
    assert_eq!(api["priorityClassName"], "acme-high");
    assert_eq!(
        api["topologySpreadConstraints"][0]["topologyKey"],
        "topology.kubernetes.io/zone"
    );
    assert_eq!(
        pod_spec(named(&objects, "Deployment", "zipkit-worker"))["priorityClassName"],
        "acme-batch"
    );
    // The API's drain delay is inside its grace period, with the 30 s for requests in flight.
    assert_eq!(api["terminationGracePeriodSeconds"], 8 + 35);

    // Security contexts can be replaced as a whole (e.g. a platform's own restricted profile).
    let replaced = render_with(
        "default",
        &[],
        &[
            "securityContext.runAsUser=10001",
            "securityContext.runAsNonRoot=true",
            "podSecurityContext.fsGroup=10001",
        ],
    );
    let worker = named(&replaced, "Deployment", "zipkit-worker");
    assert_eq!(
        containers(worker)[0]["securityContext"],
        serde_json::json!({"runAsUser": 10001, "runAsNonRoot": true})
    );
    assert_eq!(
        pod_spec(worker)["securityContext"],
        serde_json::json!({"fsGroup": 10001})
    );
}

/// Whether a NetworkPolicy ingress rule lets a pod with `labels` (same namespace) reach `port`.
fn admits(rule: &Value, labels: &Value, port: &str) -> bool {
    let port_ok = rule["ports"]
        .as_array()
        .is_none_or(|ports| ports.iter().any(|p| p["port"] == port));
    let from_ok = match rule["from"].as_array() {
        None => true,
        Some(peers) => peers.iter().any(|peer| {
            peer["namespaceSelector"].is_null()
                && peer["podSelector"]["matchLabels"]
                    .as_object()
                    .is_some_and(|wanted| wanted.iter().all(|(k, v)| &labels[k] == v))
        }),
    };
    port_ok && from_ok
}

#[test]
fn with_every_network_policy_on_helm_test_and_prometheus_still_get_in() {
    let objects = render(
        "everything",
        &["keda.sh/v1alpha1", "monitoring.coreos.com/v1"],
    );
    let api_policy = named(&objects, "NetworkPolicy", "zipkit-api");
    let rules = api_policy["spec"]["ingress"].as_array().expect("rules");
    // `helm test`'s pod, as rendered, reaches the API's port.
    let test_pod = of_kind(&objects, "Pod")
        .into_iter()
        .find(|p| annotation(p, "helm.sh/hook") == Some("test"))
        .expect("the helm test pod");
    let labels = &test_pod["metadata"]["labels"];
    assert!(
        rules.iter().any(|r| admits(r, labels, "http")),
        "the helm test pod is shut out: {rules:?}"
    );
    // A stranger pod of the namespace is not (apiFrom names the ingress controller only).
    let stranger = serde_json::json!({"app": "something-else"});
    assert!(!rules.iter().any(|r| admits(r, &stranger, "http")));
    // Prometheus' namespace has a rule of its own on the API's port (where /metrics is served)
    // and on the workers'.
    let monitoring = serde_json::json!([{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]);
    assert!(rules.iter().any(|r| r["from"] == monitoring), "{rules:?}");
    let worker_policy = named(&objects, "NetworkPolicy", "zipkit-worker");
    assert_eq!(worker_policy["spec"]["ingress"][0]["from"], monitoring);
    // The ServiceMonitor scrapes exactly those ports.
    let monitor = named(&objects, "ServiceMonitor", "zipkit");
    let scraped: Vec<&str> = monitor["spec"]["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .map(|e| e["port"].as_str().expect("a port"))
        .collect();
    assert_eq!(scraped, ["http", "probes"]);
}
