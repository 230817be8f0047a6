//! The PromQL of a Grafana dashboard's panels, with Grafana's variables substituted, for
//! running each one against a real Prometheus.

use std::path::Path;

use serde_json::Value;

use super::PrometheusError;

/// Every panel target's PromQL in a Grafana dashboard (rows' nested panels included), with
/// the variables substituted: `vars` maps names to values, e.g. `("namespace", "ns")`,
/// `("__rate_interval", "30s")`; both `$name` and `${name}` forms are replaced. Returns
/// `(panel title, expr)`; a variable left unsubstituted is an error.
pub fn dashboard_queries(path: &Path, vars: &[(&str, &str)]) -> Result<Vec<(String, String)>, PrometheusError> {
    let fail = |message: String| PrometheusError::Dashboard { path: path.display().to_string(), message };
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    let dashboard: Value = serde_json::from_str(&text).map_err(|e| fail(format!("invalid JSON: {e}")))?;
    let mut panels = Vec::new();
    collect_panels(&dashboard["panels"], &mut panels);
    let mut out = Vec::new();
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or("(untitled)").to_string();
        for target in panel["targets"].as_array().into_iter().flatten() {
            let Some(expr) = target["expr"].as_str() else {
                continue;
            };
            let expr = substitute(expr, vars);
            if let Some(at) = expr.find('$') {
                return Err(fail(format!("panel {title:?}: unsubstituted variable at {:?} in {expr}", &expr[at..])));
            }
            out.push((title.clone(), expr));
        }
    }
    Ok(out)
}

/// Panels in display order, descending into rows (collapsed rows keep theirs in `panels`).
pub fn collect_panels<'a>(panels: &'a Value, out: &mut Vec<&'a Value>) {
    for p in panels.as_array().into_iter().flatten() {
        out.push(p);
        collect_panels(&p["panels"], out);
    }
}

/// Replaces `${name}` and `$name` (longest names first, so `$__range_s` is not read as `$__range`).
pub fn substitute(expr: &str, vars: &[(&str, &str)]) -> String {
    let mut sorted: Vec<&(&str, &str)> = vars.iter().collect();
    sorted.sort_by_key(|(name, _)| std::cmp::Reverse(name.len()));
    let mut s = expr.to_string();
    for (name, value) in sorted {
        s = s.replace(&format!("${{{name}}}"), value).replace(&format!("${name}"), value);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longer_variables_are_substituted_first() {
        let vars = [("__range", "5m"), ("__range_s", "300"), ("namespace", "ns")];
        assert_eq!(
            substitute("x{n=\"$namespace\"}[$__range] / $__range_s / ${namespace}", &vars),
            "x{n=\"ns\"}[5m] / 300 / ns"
        );
    }
}
