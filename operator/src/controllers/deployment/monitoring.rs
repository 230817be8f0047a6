//! The monitoring summary in a Deployment's status, read from the inference pods' /status.
//! The promotion gate compares champion and shadow on reviewed samples with it.

use std::time::Duration;

use flywheel_api::FlywheelDeployment;
use flywheel_api::deployment::MonitoringSummary;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, ResourceExt};

use super::build::HTTP_PORT;

/// Pure: the summary from the pods' `/status` documents: the pod that has seen the most
/// reviewed samples speaks for the Deployment. None when no pod has scored anything yet.
pub fn summarise(statuses: &[serde_json::Value]) -> Option<MonitoringSummary> {
    let best = statuses
        .iter()
        .filter_map(|s| s.get("quality"))
        .filter(|q| q["reviewedSamples"].as_u64().unwrap_or(0) > 0)
        .max_by_key(|q| q["reviewedSamples"].as_u64().unwrap_or(0))?;
    Some(MonitoringSummary {
        time: None,
        max_drift: None,
        outlier_score: None,
        champion_metric: best["champion"].as_f64(),
        shadow_metric: best["shadow"].as_f64(),
        reviewed_samples: best["reviewedSamples"].as_u64(),
    })
}

/// Pure: the model-load errors the pods report (`reload.errors` in their /status), each once.
/// A pod that cannot load a model keeps serving the previous one and retries.
pub fn load_errors(statuses: &[serde_json::Value]) -> Vec<String> {
    let mut errors: Vec<String> = statuses
        .iter()
        .filter_map(|s| s["reload"]["errors"].as_array())
        .flatten()
        .filter_map(|e| e.as_str().map(str::to_string))
        .collect();
    errors.sort();
    errors.dedup();
    errors
}

/// GETs /status from every ready inference pod (short timeout: a slow pod is skipped).
pub async fn read_pods(client: &kube::Client, d: &FlywheelDeployment) -> Vec<serde_json::Value> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &d.namespace().unwrap_or_default());
    let selector = format!("flywheel.dev/deployment={}", d.name_any());
    let Ok(list) = pods.list(&ListParams::default().labels(&selector)).await else { return Vec::new() };
    let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().expect("HTTP client");
    let mut statuses = Vec::new();
    for pod in list.items {
        let status = pod.status.unwrap_or_default();
        let ready = status.conditions.iter().flatten().any(|c| c.type_ == "Ready" && c.status == "True");
        let Some(ip) = status.pod_ip.filter(|_| ready) else { continue };
        let url = format!("http://{ip}:{HTTP_PORT}/status");
        match http.get(&url).send().await {
            Ok(r) => match r.json::<serde_json::Value>().await {
                Ok(v) => statuses.push(v),
                Err(e) => tracing::debug!(%url, error = %e, "unreadable /status"),
            },
            Err(e) => tracing::debug!(%url, error = %e, "pod /status unreachable"),
        }
    }
    statuses
}

/// Whether two summaries report the same figures (the time stamp aside).
pub fn same_figures(a: Option<&MonitoringSummary>, b: Option<&MonitoringSummary>) -> bool {
    let strip = |m: Option<&MonitoringSummary>| m.map(|m| MonitoringSummary { time: None, ..m.clone() });
    strip(a) == strip(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_pod_with_most_reviews_speaks() {
        let statuses = [
            json!({"quality": {"metric": "mAP50", "reviewedSamples": 3, "champion": 0.2, "shadow": 0.4}}),
            json!({"quality": {"metric": "mAP50", "reviewedSamples": 30, "champion": 0.5, "shadow": 0.6}}),
            json!({"ready": false}),
        ];
        let m = summarise(&statuses).unwrap();
        assert_eq!((m.champion_metric, m.shadow_metric, m.reviewed_samples), (Some(0.5), Some(0.6), Some(30)));
    }

    #[test]
    fn nothing_scored_means_no_summary_and_missing_scores_stay_missing() {
        assert!(summarise(&[json!({"quality": {"reviewedSamples": 0, "champion": null, "shadow": null}})]).is_none());
    }

    #[test]
    fn load_errors_are_collected_once_across_pods() {
        let failing = json!({"reload": {"errors": ["champion m-v3: not an ONNX model"]}});
        let healthy = json!({"reload": {"errors": []}});
        assert_eq!(
            load_errors(&[failing.clone(), healthy.clone(), failing]),
            vec!["champion m-v3: not an ONNX model".to_string()]
        );
        assert!(load_errors(&[healthy, json!({})]).is_empty());
        let m = summarise(&[json!({"quality": {"reviewedSamples": 4, "champion": 0.5, "shadow": null}})]).unwrap();
        assert_eq!(m.shadow_metric, None);
    }

    #[test]
    fn time_does_not_count_as_a_change() {
        let a = MonitoringSummary { champion_metric: Some(0.5), ..Default::default() };
        let b = MonitoringSummary {
            time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now())),
            ..a.clone()
        };
        assert!(same_figures(Some(&a), Some(&b)));
        assert!(!same_figures(Some(&a), None));
    }
}
