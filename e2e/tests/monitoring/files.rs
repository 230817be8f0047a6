//! The shipped monitoring files on their own (no cluster): the alert rules pass
//! `promtool check rules` and their unit tests (`promtool test rules`); the Grafana dashboard
//! is well formed, filters every inference-pod query on the Deployment, and every PromQL
//! expression in it parses (promtool checks them as recording rules).

use std::path::{Path, PathBuf};
use std::process::Command;

use flywheel_e2e::prometheus::{collect_panels, dashboard_queries};
use flywheel_e2e::workspace_root;
use serde_json::Value;

pub fn dashboard_path() -> PathBuf {
    workspace_root().join("charts/flywheel/files/dashboards/flywheel.json")
}

pub fn alerts_path() -> PathBuf {
    workspace_root().join("charts/flywheel/files/alerts.yaml")
}

/// Variable values Grafana would substitute; the time ranges fit a short test run.
pub fn dashboard_vars<'a>(namespace: &'a str, deployment: &'a str) -> Vec<(&'static str, &'a str)> {
    vec![
        ("datasource", "prometheus"),
        ("namespace", namespace),
        ("deployment", deployment),
        ("__rate_interval", "30s"),
        ("__interval", "5s"),
        ("__range", "10m"),
        ("__range_s", "600"),
    ]
}

fn promtool(args: &[&str], dir: &Path) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("promtool (Debian package `prometheus`, see scripts/apt-packages.txt): {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    let root = workspace_root();
    let checked = promtool(&["check", "rules", alerts_path().to_str().unwrap()], root);
    assert!(checked.contains("SUCCESS"), "{checked}");
    let tested = promtool(&["test", "rules", "alerts.test.yaml"], &root.join("charts/flywheel/tests"));
    assert!(tested.contains("SUCCESS"), "{tested}");
}

#[test]
fn every_alert_has_a_test_a_severity_and_names_what_it_is_about() {
    let rules: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(alerts_path()).unwrap()).unwrap();
    let tests = std::fs::read_to_string(workspace_root().join("charts/flywheel/tests/alerts.test.yaml")).unwrap();
    let mut names = Vec::new();
    for group in rules["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            let name = rule["alert"].as_str().expect("only alerting rules").to_string();
            let severity = rule["labels"]["severity"].as_str().unwrap_or_default();
            assert!(["critical", "warning", "info"].contains(&severity), "{name}: severity {severity:?}");
            for key in ["summary", "description"] {
                let text = rule["annotations"][key].as_str().unwrap_or_else(|| panic!("{name}: no {key}"));
                assert!(
                    text.contains("$labels.deployment") || text.contains("$labels.pipeline"),
                    "{name}: the {key} must name the Deployment or pipeline: {text}"
                );
            }
            // One firing case (exp_alerts with labels) and one not-firing case (exp_alerts: []).
            let cases: Vec<&str> =
                tests.split("alertname: ").skip(1).filter(|c| c.starts_with(&format!("{name}\n"))).collect();
            assert!(cases.iter().any(|c| c.contains("exp_labels")), "{name}: no firing unit test");
            assert!(cases.iter().any(|c| c.contains("exp_alerts: []")), "{name}: no not-firing unit test");
            names.push(name);
        }
    }
    for expected in [
        "FlywheelDriftHigh",
        "FlywheelShadowBeatsChampion",
        "FlywheelRetrainingFailed",
        "FlywheelModelLoadFailed",
        "FlywheelPredictionsStopped",
        "FlywheelNoPredictions",
    ] {
        assert!(names.iter().any(|n| n == expected), "missing alert {expected}: {names:?}");
    }
}

fn dashboard() -> Value {
    serde_json::from_str(&std::fs::read_to_string(dashboard_path()).unwrap()).expect("the dashboard is JSON")
}

/// Index of the `}` closing the selector that opens at `open`, skipping quoted label values.
fn selector_end(expr: &str, open: usize) -> usize {
    let bytes = expr.as_bytes();
    let mut i = open + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'}' => return i,
            _ => {}
        }
        i += 1;
    }
    expr.len()
}

/// Metric names an expression selects, each with the matchers of its selector (if any).
fn selectors(expr: &str) -> Vec<(String, String)> {
    let bytes = expr.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c == b'"' {
            // Skip string literals (label values may contain anything).
            i += 1;
            while i < bytes.len() && bytes[i] != b'"' {
                i += if bytes[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b':') {
                i += 1;
            }
            let name = &expr[start..i];
            let matchers = if bytes.get(i) == Some(&b'{') {
                let end = selector_end(expr, i);
                let m = expr[i + 1..end].to_string();
                i = end + 1;
                m
            } else {
                String::new()
            };
            out.push((name.to_string(), matchers));
        } else if c == b'{' {
            // A selector by __name__ only: {__name__=~"a|b", ...}.
            let end = selector_end(expr, i);
            out.push(("{}".into(), expr[i + 1..end].to_string()));
            i = end + 1;
        } else {
            i += 1;
        }
    }
    out
}

fn is_server_metric(name: &str) -> bool {
    (name.starts_with("flywheel_") && !name.starts_with("flywheel_operator_")) || name == "up"
}

#[test]
fn the_dashboard_is_well_formed_and_filters_on_the_deployment() {
    let d = dashboard();
    assert!(d["schemaVersion"].as_u64().unwrap() >= 36, "schemaVersion");
    assert!(d["uid"].as_str().is_some_and(|u| !u.is_empty() && u.len() <= 40));
    let vars = d["templating"]["list"].as_array().unwrap();
    let var = |name: &str| vars.iter().find(|v| v["name"] == name).unwrap_or_else(|| panic!("no ${name} variable"));
    assert_eq!(var("datasource")["type"], "datasource");
    assert_eq!(var("datasource")["query"], "prometheus");
    for name in ["namespace", "deployment"] {
        let v = var(name);
        assert_eq!(v["type"], "query");
        assert_eq!(v["datasource"]["uid"], "${datasource}");
        assert!(v["definition"].as_str().unwrap().starts_with("label_values(flywheel_model_info"), "{v}");
    }

    let mut panels = Vec::new();
    collect_panels(&d["panels"], &mut panels);
    let mut ids = std::collections::HashSet::new();
    let mut all_exprs = String::new();
    for p in panels {
        let title = p["title"].as_str().unwrap_or_default();
        assert!(ids.insert(p["id"].as_u64().expect("panel id")), "duplicate id in {title}");
        let g = &p["gridPos"];
        assert!(g["x"].as_u64().unwrap() + g["w"].as_u64().unwrap() <= 24, "{title}: gridPos {g}");
        if p["type"] == "row" {
            continue;
        }
        assert!(
            !title.is_empty() && p["description"].as_str().is_some_and(|s| !s.is_empty()),
            "{title}: title and description"
        );
        assert_eq!(p["datasource"]["type"], "prometheus", "{title}");
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
        let targets =
            p["targets"].as_array().filter(|t| !t.is_empty()).unwrap_or_else(|| panic!("{title}: no targets"));
        let mut refs = std::collections::HashSet::new();
        for t in targets {
            assert!(refs.insert(t["refId"].as_str().unwrap().to_string()), "{title}: duplicate refId");
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{title}");
            let expr =
                t["expr"].as_str().filter(|e| !e.trim().is_empty()).unwrap_or_else(|| panic!("{title}: empty expr"));
            for (name, matchers) in selectors(expr) {
                let names_server_metric = is_server_metric(&name)
                    || (name == "{}" && matchers.contains("\"flywheel_") && !matchers.contains("flywheel_operator_"));
                let per_deployment = name.starts_with("flywheel_operator_training_runs")
                    || name.starts_with("flywheel_operator_promotions");
                if names_server_metric || per_deployment {
                    assert!(
                        matchers.contains("namespace=\"$namespace\"")
                            && matchers.contains("deployment=\"$deployment\""),
                        "{title}: {name} must be filtered on namespace and deployment: {expr}"
                    );
                }
            }
            all_exprs.push_str(expr);
            all_exprs.push('\n');
        }
    }
    // The monitoring view the design asks for.
    for metric in [
        "flywheel_http_requests_total",
        "flywheel_inference_duration_seconds_bucket",
        "flywheel_box_centres_total",
        "flywheel_drift_ks",
        "flywheel_outlier_score",
        "flywheel_reviewed_map50",
        "flywheel_reviewed_accuracy",
        "flywheel_reviewed_samples",
        "flywheel_shapes_total",
        "flywheel_shadow_runs_total",
        "flywheel_shadow_dropped_total",
        "flywheel_model_load_failures_total",
        "flywheel_model_info",
        "flywheel_operator_training_runs_total",
        "flywheel_operator_promotions_total",
        "flywheel_operator_reconciles_total",
        "flywheel_operator_reconcile_errors_total",
    ] {
        assert!(all_exprs.contains(metric), "no panel shows {metric}");
    }
}

#[test]
fn the_selector_scanner_sees_every_selector() {
    let found = selectors(r#"sum by (le) (rate(a_b{x="}{", y="1"}[5m])) / {__name__=~"c|d", z="2"} + up"#);
    let names: Vec<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
    assert!(names.contains(&"a_b") && names.contains(&"{}") && names.contains(&"up"), "{found:?}");
    assert_eq!(found.iter().find(|(n, _)| n == "a_b").unwrap().1, r#"x="}{", y="1""#);
    assert_eq!(found.iter().find(|(n, _)| n == "{}").unwrap().1, r#"__name__=~"c|d", z="2""#);
}

#[test]
fn every_dashboard_expression_parses() {
    let queries = dashboard_queries(&dashboard_path(), &dashboard_vars("ns", "shapes")).unwrap();
    assert!(queries.len() >= 15, "{} queries", queries.len());
    // promtool parses rule expressions: check each one as a recording rule.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, (title, expr)) in queries.iter().enumerate() {
        rules.push_str(&format!(
            "      # {title}\n      - record: dashboard:query_{i}\n        expr: {}\n",
            serde_json::to_string(expr).unwrap()
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("dashboard-rules.yaml"), rules).unwrap();
    let out = promtool(&["check", "rules", "dashboard-rules.yaml"], dir.path());
    assert!(out.contains(&format!("SUCCESS: {} rules found", queries.len())), "{out}");
}
