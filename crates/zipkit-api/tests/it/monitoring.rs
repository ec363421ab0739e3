//! What the chart ships for monitoring, checked against the binaries: the alerts
//! (`helm/zipkit/files/alerts.yaml`) by `promtool test rules` on synthetic series, each alert
//! with a case that fires and one that stays silent, a runbook entry and a `for:`; the Grafana
//! dashboard (`helm/zipkit/files/grafana-dashboard.json`) as a dashboard whose every query parses
//! (promtool) and names a metric the binaries export; and both as the chart renders them.

use std::collections::BTreeSet;
use std::process::Command;

use serde_json::Value;
use zipkit_runtime::metrics::{CATALOGUE, Kind, PROCESS};
use zipkit_test_support::chart::{objects, of_kind, repo, run, template};

fn promtool() -> String {
    std::env::var("ZIPKIT_TEST_PROMTOOL").unwrap_or_else(|_| "promtool".into())
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn alerts() -> Vec<Value> {
    let file = objects(&read("helm/zipkit/files/alerts.yaml"));
    file[0]["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules").clone())
        .collect()
}

fn dashboard() -> Value {
    serde_json::from_str(&read("helm/zipkit/files/grafana-dashboard.json")).expect("JSON")
}

/// Every series name the binaries may export: the catalogue's, a histogram's three.
fn exported() -> BTreeSet<String> {
    CATALOGUE
        .iter()
        .chain(PROCESS)
        .flat_map(|m| match m.kind {
            Kind::Histogram => ["_bucket", "_sum", "_count"]
                .iter()
                .map(|s| format!("{}{s}", m.name))
                .collect(),
            _ => vec![m.name.to_owned()],
        })
        .collect()
}

/// The metric names a PromQL expression reads (zipkit's and the process's).
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
        let starts_word = i == 0 || !word(bytes[i - 1]);
        if starts_word && (expr[i..].starts_with("zipkit_") || expr[i..].starts_with("process_")) {
            let end = (i..bytes.len())
                .find(|&j| !word(bytes[j]))
                .unwrap_or(bytes.len());
            names.push(expr[i..end].to_owned());
            i = end;
        } else {
            i += 1;
        }
    }
    names
}

#[test]
fn every_alert_fires_on_its_trouble_and_stays_silent_on_a_healthy_series() {
    let tests = "helm/tests/alerts.test.yaml";
    let (ok, out, err) = run(
        Command::new(promtool())
            .args(["test", "rules"])
            .arg(repo().join(tests)),
        None,
    );
    assert!(ok, "promtool test rules {tests}:\n{out}{err}");
    // Each alert has both kinds of case.
    let cases = objects(&read(tests));
    let checks: Vec<&Value> = cases[0]["tests"]
        .as_array()
        .expect("tests")
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_array().expect("alert_rule_test"))
        .collect();
    for alert in alerts() {
        let name = alert["alert"].as_str().expect("an alert name");
        let of_it = || checks.iter().filter(|c| c["alertname"] == name);
        assert!(
            of_it().any(|c| c["exp_alerts"].as_array().is_some_and(|a| !a.is_empty())),
            "{name}: no case where it fires"
        );
        assert!(
            of_it().any(|c| c["exp_alerts"].as_array().is_some_and(Vec::is_empty)),
            "{name}: no case where it stays silent"
        );
    }
}

#[test]
fn every_alert_waits_before_firing_has_a_severity_and_a_runbook_entry() {
    let guide = read("docs/OPERATIONS.md");
    let headings: BTreeSet<String> = guide
        .lines()
        .filter_map(|l| l.strip_prefix("### "))
        .map(|h| h.trim().to_lowercase())
        .collect();
    let all = alerts();
    assert!(all.len() >= 8, "{} alerts", all.len());
    for alert in all {
        let name = alert["alert"].as_str().expect("an alert name");
        let wait = alert["for"].as_str().unwrap_or_default();
        assert!(
            wait.ends_with('m') && wait != "0m",
            "{name}: fires without waiting (`for: {wait}`)"
        );
        let severity = alert["labels"]["severity"].as_str().unwrap_or_default();
        assert!(
            ["info", "warning", "critical"].contains(&severity),
            "{name}: severity {severity:?}"
        );
        let runbook = alert["annotations"]["runbook_url"]
            .as_str()
            .unwrap_or_default();
        let anchor = runbook
            .strip_prefix("https://github.com/zipkit/zipkit/blob/main/docs/OPERATIONS.md#")
            .unwrap_or_else(|| panic!("{name}: runbook {runbook}"));
        assert_eq!(anchor, name.to_lowercase());
        assert!(
            headings.contains(anchor),
            "{name}: no `### {name}` in docs/OPERATIONS.md"
        );
        assert!(alert["annotations"]["summary"].is_string(), "{name}");
    }
}

#[test]
fn every_query_of_the_alerts_and_the_dashboard_names_metrics_the_binaries_export() {
    let exported = exported();
    let mut queries: Vec<(String, String)> = alerts()
        .iter()
        .map(|a| {
            (
                a["alert"].to_string(),
                a["expr"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    queries.extend(dashboard_queries());
    for (whose, expr) in &queries {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{whose}: names no metric: {expr}");
        for name in names {
            assert!(
                exported.contains(&name),
                "{whose}: {name} is not a metric the binaries export"
            );
        }
    }
    // The panels cover what an incident asks first.
    let all: String = queries.iter().map(|(_, e)| e.as_str()).collect();
    for needed in [
        "zipkit_jobs_finished_total",
        "zipkit_job_end_to_end_seconds_bucket",
        "zipkit_queue_messages",
        "zipkit_worker_slots",
        "zipkit_db_pool_connections",
        "zipkit_webhook_backlog",
        "zipkit_source_downloaded_bytes_total",
    ] {
        assert!(all.contains(needed), "nothing shows {needed}");
    }
}

/// Every panel's queries, Grafana's variables given values PromQL takes.
fn dashboard_queries() -> Vec<(String, String)> {
    let dashboard = dashboard();
    dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|panel| {
            let title = panel["title"].as_str().unwrap_or_default().to_owned();
            panel["targets"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |t| {
                    let expr = t["expr"].as_str().expect("a target's expr");
                    let expr = expr
                        .replace("$__rate_interval", "5m")
                        .replace("$namespace", "shop");
                    (title.clone(), expr)
                })
        })
        .collect()
}

#[test]
fn the_dashboard_is_a_grafana_dashboard_whose_queries_parse() {
    let dashboard = dashboard();
    for key in ["uid", "title"] {
        assert!(
            dashboard[key].as_str().is_some_and(|s| !s.is_empty()),
            "{key}"
        );
    }
    assert!(dashboard["schemaVersion"].as_u64().is_some_and(|v| v >= 36));
    let variables: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list")
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(variables, ["datasource", "namespace"]);
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    for panel in panels {
        let title = panel["title"].as_str().expect("a title");
        assert!(
            ids.insert(panel["id"].as_u64().expect("an id")),
            "{title}: id twice"
        );
        let grid = &panel["gridPos"];
        for key in ["h", "w", "x", "y"] {
            assert!(grid[key].is_u64(), "{title}: gridPos.{key}");
        }
        assert!(
            grid["x"].as_u64().unwrap() + grid["w"].as_u64().unwrap() <= 24,
            "{title}"
        );
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        let refs: BTreeSet<&str> = targets
            .iter()
            .map(|t| t["refId"].as_str().unwrap())
            .collect();
        assert_eq!(refs.len(), targets.len(), "{title}: refIds repeat");
    }
    // PromQL's own parser on every query: as recording rules, which promtool checks.
    let rules: Vec<Value> = dashboard_queries()
        .iter()
        .enumerate()
        .map(|(i, (_, expr))| serde_json::json!({"record": format!("dashboard:query{i}"), "expr": expr}))
        .collect();
    let file = std::env::temp_dir().join(format!("zipkit-dashboard-{}.json", uuid::Uuid::new_v4()));
    let groups = serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]});
    // JSON is YAML.
    std::fs::write(&file, groups.to_string()).unwrap();
    let (ok, out, err) = run(
        Command::new(promtool()).args(["check", "rules"]).arg(&file),
        None,
    );
    let _ = std::fs::remove_file(&file);
    assert!(ok, "a dashboard query does not parse:\n{out}{err}");
}

#[test]
fn the_chart_ships_the_alerts_and_the_dashboard_as_they_are_tested() {
    let helm = std::env::var("ZIPKIT_TEST_HELM4").expect("ZIPKIT_TEST_HELM4 (scripts/test.sh)");
    let values = repo().join("helm/tests/values/everything.yaml");
    let api_versions = ["monitoring.coreos.com/v1", "keda.sh/v1alpha1"];
    let yaml = template(&helm, &[values], &api_versions).unwrap_or_else(|e| panic!("{e}"));
    let rendered = objects(&yaml);
    let [rule] = of_kind(&rendered, "PrometheusRule")[..] else {
        panic!("one PrometheusRule");
    };
    assert_eq!(rule["metadata"]["labels"]["release"], "prometheus");
    let file = objects(&read("helm/zipkit/files/alerts.yaml"));
    assert_eq!(rule["spec"]["groups"], file[0]["groups"]);
    let boards: Vec<&Value> = of_kind(&rendered, "ConfigMap")
        .into_iter()
        .filter(|c| c["data"]["zipkit.json"].is_string())
        .collect();
    let [board] = boards[..] else {
        panic!("one ConfigMap with the dashboard");
    };
    assert_eq!(board["metadata"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(board["metadata"]["annotations"]["grafana_folder"], "zipkit");
    let shipped: Value =
        serde_json::from_str(board["data"]["zipkit.json"].as_str().expect("zipkit.json")).unwrap();
    assert_eq!(shipped, dashboard());
    // Off by default.
    let defaults = template(
        &helm,
        &[repo().join("helm/tests/values/default.yaml")],
        &["monitoring.coreos.com/v1"],
    )
    .expect("renders");
    let defaults = objects(&defaults);
    assert!(!defaults.iter().any(|o| o["kind"] == "PrometheusRule"));
    assert!(
        !defaults
            .iter()
            .any(|o| o["data"]["zipkit.json"].is_string())
    );
}
