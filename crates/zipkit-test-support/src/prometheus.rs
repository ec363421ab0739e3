//! Reading what a `/metrics` endpoint exposes: samples by name and exact label set, and
//! `promtool check metrics` on the whole text.

use std::collections::BTreeMap;
use std::process::Command;

use crate::process::run_with_input;

/// The value of the sample `name` whose labels are exactly `labels`; `None` when absent.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let wanted: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(parse_line)
        .find(|(n, l, _)| n == name && *l == wanted)
        .map(|(_, _, value)| value)
}

fn parse_line(line: &str) -> Option<(String, BTreeMap<String, String>, f64)> {
    let (series, value) = line.rsplit_once(' ')?;
    let value = value.parse().ok()?;
    let (name, labels) = match series.split_once('{') {
        Some((name, rest)) => (name, rest.strip_suffix('}')?),
        None => (series, ""),
    };
    let mut parsed = BTreeMap::new();
    // Values here never hold `",` (route patterns, codes, outcomes), so a plain split will do.
    for pair in labels.split("\",").filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once("=\"")?;
        parsed.insert(
            key.trim_start_matches(',').to_owned(),
            value.trim_end_matches('"').to_owned(),
        );
    }
    Some((name.to_owned(), parsed, value))
}

/// Runs `promtool check metrics` on `text`; panics with promtool's complaints if it objects.
/// promtool comes with Debian's `prometheus` package (scripts/test.sh installs it).
pub fn promtool_check(text: &str) {
    let promtool = std::env::var("ZIPKIT_TEST_PROMTOOL").unwrap_or_else(|_| "promtool".into());
    let output = run_with_input(Command::new(&promtool).args(["check", "metrics"]), text)
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {promtool} ({e}): `apt-get install prometheus` (scripts/test.sh does)"
            )
        });
    assert!(
        output.status.success(),
        "promtool check metrics failed:\n{}{}\n--- exposition ---\n{text}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_is_found_by_its_exact_labels() {
        let text = "# HELP x_total X.\n# TYPE x_total counter\n\
                    x_total{a=\"1\",b=\"two\"} 3\nx_total{a=\"1\"} 5\ny 7\n";
        assert_eq!(
            sample(text, "x_total", &[("a", "1"), ("b", "two")]),
            Some(3.0)
        );
        assert_eq!(sample(text, "x_total", &[("a", "1")]), Some(5.0));
        assert_eq!(sample(text, "y", &[]), Some(7.0));
        assert_eq!(sample(text, "x_total", &[("b", "two")]), None);
    }
}
