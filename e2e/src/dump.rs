//! A readable dump of a namespace for failing tests: Pods with container states, Events, and the
//! tail of every container's log file.

use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};

use crate::cluster::TestCluster;

/// Lines of each container log in a dump; `FLYWHEEL_DUMP_LOG_LINES` overrides it.
const LOG_LINES: usize = 40;

fn log_lines() -> usize {
    std::env::var("FLYWHEEL_DUMP_LOG_LINES").ok().and_then(|v| v.parse().ok()).unwrap_or(LOG_LINES)
}

pub async fn dump_namespace(client: &Client, cluster: &TestCluster, namespace: &str) -> String {
    let mut out = format!("===== dump of namespace {namespace} (cluster {}) =====\n", cluster.id);
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    match pods.list(&ListParams::default()).await {
        Ok(list) => {
            out.push_str(&format!("--- pods ({})\n", list.items.len()));
            for pod in &list.items {
                out.push_str(&describe_pod(pod));
            }
            for pod in &list.items {
                let spec = pod.spec.clone().unwrap_or_default();
                let names = spec.init_containers.unwrap_or_default().into_iter().chain(spec.containers).map(|c| c.name);
                for container in names {
                    if let Some(log) = cluster.container_log(namespace, &pod.name_any(), &container) {
                        let lines: Vec<&str> = log.lines().collect();
                        let keep = log_lines();
                        out.push_str(&format!("--- log {}/{container} (last {keep} lines)\n", pod.name_any()));
                        for l in &lines[lines.len().saturating_sub(keep)..] {
                            out.push_str(&format!("    {l}\n"));
                        }
                    }
                }
            }
        }
        Err(e) => out.push_str(&format!("listing pods failed: {e}\n")),
    }
    let events: Api<Event> = Api::namespaced(client.clone(), namespace);
    match events.list(&ListParams::default()).await {
        Ok(list) => {
            out.push_str(&format!("--- events ({})\n", list.items.len()));
            let mut items = list.items;
            items.sort_by_key(|e| e.metadata.creation_timestamp.as_ref().map(|t| t.0));
            for e in items {
                out.push_str(&format!(
                    "    {} {} {}/{}: {}\n",
                    e.type_.unwrap_or_default(),
                    e.reason.unwrap_or_default(),
                    e.involved_object.kind.unwrap_or_default(),
                    e.involved_object.name.unwrap_or_default(),
                    e.message.unwrap_or_default().trim()
                ));
            }
        }
        Err(e) => out.push_str(&format!("listing events failed: {e}\n")),
    }
    out.push_str("===== end of dump =====\n");
    out
}

fn describe_pod(pod: &Pod) -> String {
    let status = pod.status.clone().unwrap_or_default();
    let mut s = format!(
        "    {} phase={} ip={} node={}{}\n",
        pod.name_any(),
        status.phase.unwrap_or_default(),
        status.pod_ip.unwrap_or_default(),
        pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_else(|| "<unbound>".into()),
        if pod.metadata.deletion_timestamp.is_some() { " (terminating)" } else { "" }
    );
    for c in status
        .init_container_statuses
        .unwrap_or_default()
        .into_iter()
        .chain(status.container_statuses.unwrap_or_default())
    {
        let state = c.state.unwrap_or_default();
        let state = if let Some(w) = state.waiting {
            format!("waiting {} {}", w.reason.unwrap_or_default(), w.message.unwrap_or_default())
        } else if let Some(t) = state.terminated {
            format!("terminated exit={} {}", t.exit_code, t.reason.unwrap_or_default())
        } else if state.running.is_some() {
            "running".to_string()
        } else {
            "unknown".to_string()
        };
        s.push_str(&format!("      container {} ready={} restarts={} {state}\n", c.name, c.ready, c.restart_count));
    }
    s
}
