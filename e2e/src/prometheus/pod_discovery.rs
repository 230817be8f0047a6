//! Pod discovery for Prometheus builds without Kubernetes service discovery (Debian's
//! `prometheus` package is built without it): lists the Pods of some namespaces from the API
//! server and hands them to Prometheus as a `file_sd` target file carrying the same
//! `__meta_kubernetes_pod_*` labels as `kubernetes_sd_configs` with `role: pod`, so the same
//! relabelling (a chart's PodMonitor) applies unchanged.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;
use serde_json::{Value, json};

/// A Kubernetes label or annotation name as Prometheus writes it in a meta label.
pub fn sanitize(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect()
}

/// One target group per container port of every Pod with an IP, labelled as Prometheus'
/// Kubernetes SD (role pod) labels it.
pub fn target_groups(pods: &[Pod]) -> Vec<Value> {
    let mut groups = Vec::new();
    for pod in pods {
        let status = pod.status.clone().unwrap_or_default();
        let Some(ip) = status.pod_ip.clone().filter(|ip| !ip.is_empty()) else {
            continue;
        };
        let meta = &pod.metadata;
        let ready = status.conditions.iter().flatten().any(|c| c.type_ == "Ready" && c.status == "True");
        let mut pod_labels: BTreeMap<String, String> = BTreeMap::from([
            ("__meta_kubernetes_namespace".into(), meta.namespace.clone().unwrap_or_default()),
            ("__meta_kubernetes_pod_name".into(), meta.name.clone().unwrap_or_default()),
            ("__meta_kubernetes_pod_uid".into(), meta.uid.clone().unwrap_or_default()),
            ("__meta_kubernetes_pod_ip".into(), ip.clone()),
            ("__meta_kubernetes_pod_phase".into(), status.phase.clone().unwrap_or_default()),
            ("__meta_kubernetes_pod_ready".into(), ready.to_string()),
            (
                "__meta_kubernetes_pod_node_name".into(),
                pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default(),
            ),
            ("__meta_kubernetes_pod_host_ip".into(), status.host_ip.clone().unwrap_or_default()),
        ]);
        for (k, v) in meta.labels.iter().flatten() {
            pod_labels.insert(format!("__meta_kubernetes_pod_label_{}", sanitize(k)), v.clone());
            pod_labels.insert(format!("__meta_kubernetes_pod_labelpresent_{}", sanitize(k)), "true".into());
        }
        for (k, v) in meta.annotations.iter().flatten() {
            pod_labels.insert(format!("__meta_kubernetes_pod_annotation_{}", sanitize(k)), v.clone());
            pod_labels.insert(format!("__meta_kubernetes_pod_annotationpresent_{}", sanitize(k)), "true".into());
        }
        if let Some(owner) = meta.owner_references.iter().flatten().find(|o| o.controller == Some(true)) {
            pod_labels.insert("__meta_kubernetes_pod_controller_kind".into(), owner.kind.clone());
            pod_labels.insert("__meta_kubernetes_pod_controller_name".into(), owner.name.clone());
        }
        for container in pod.spec.iter().flat_map(|s| s.containers.iter()) {
            for port in container.ports.iter().flatten() {
                let mut labels = pod_labels.clone();
                labels.insert("__meta_kubernetes_pod_container_name".into(), container.name.clone());
                labels.insert(
                    "__meta_kubernetes_pod_container_image".into(),
                    container.image.clone().unwrap_or_default(),
                );
                labels.insert("__meta_kubernetes_pod_container_init".into(), "false".into());
                labels
                    .insert("__meta_kubernetes_pod_container_port_name".into(), port.name.clone().unwrap_or_default());
                labels.insert("__meta_kubernetes_pod_container_port_number".into(), port.container_port.to_string());
                labels.insert(
                    "__meta_kubernetes_pod_container_port_protocol".into(),
                    port.protocol.clone().unwrap_or_else(|| "TCP".into()),
                );
                groups.push(json!({"targets": [format!("{ip}:{}", port.container_port)], "labels": labels}));
            }
        }
    }
    groups
}

/// Writes `groups` to `file` atomically (write, then rename), as file_sd expects.
pub fn write_targets(file: &Path, groups: &[Value]) -> std::io::Result<()> {
    let tmp = file.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(groups).expect("JSON"))?;
    std::fs::rename(&tmp, file)
}

/// Re-lists the Pods of `namespaces` every second and rewrites `file` when they change.
pub async fn run(client: kube::Client, namespaces: Vec<String>, file: PathBuf) {
    let mut last = Vec::new();
    loop {
        let mut pods = Vec::new();
        let mut complete = true;
        for ns in &namespaces {
            match Api::<Pod>::namespaced(client.clone(), ns).list(&ListParams::default()).await {
                Ok(list) => pods.extend(list.items),
                Err(e) => {
                    tracing::debug!(namespace = %ns, error = %e, "listing pods for Prometheus");
                    complete = false;
                }
            }
        }
        let groups = target_groups(&pods);
        if complete && groups != last {
            match write_targets(&file, &groups) {
                Ok(()) => last = groups,
                Err(e) => {
                    tracing::warn!(file = %file.display(), error = %e, "writing Prometheus targets")
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_become_one_target_per_container_port_with_kubernetes_sd_labels() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "shapes-1", "namespace": "ns", "labels": {"flywheel.dev/deployment": "shapes"}},
            "spec": {"nodeName": "n", "containers": [{"name": "server", "image": "flywheel/inference-server", "ports": [
                {"name": "http", "containerPort": 8080, "protocol": "TCP"}]}]},
            "status": {"podIP": "127.100.0.5", "phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
        }))
        .unwrap();
        let pending: Pod =
            serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}}))
                .unwrap();
        let groups = target_groups(&[pod, pending]);
        assert_eq!(groups.len(), 1, "a Pod without an IP is no target");
        assert_eq!(groups[0]["targets"][0], "127.100.0.5:8080");
        let labels = &groups[0]["labels"];
        assert_eq!(labels["__meta_kubernetes_pod_label_flywheel_dev_deployment"], "shapes");
        assert_eq!(labels["__meta_kubernetes_pod_container_port_name"], "http");
        assert_eq!(labels["__meta_kubernetes_namespace"], "ns");
        assert_eq!(labels["__meta_kubernetes_pod_ready"], "true");
    }
}
