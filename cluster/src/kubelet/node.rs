//! Registers the kubelet's Node and marks it Ready. No heartbeats: the node lifecycle controller
//! is disabled in this cluster, so the Node stays Ready for the cluster's lifetime.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeCondition, NodeSpec, NodeStatus, NodeSystemInfo};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};

use super::KubeletContext;
use super::container::now;
use crate::error::ClusterError;

pub async fn register(ctx: &KubeletContext) -> Result<(), ClusterError> {
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let mut labels = BTreeMap::new();
    labels.insert("kubernetes.io/hostname".to_string(), ctx.node_name.clone());
    labels.insert("kubernetes.io/os".to_string(), "linux".to_string());
    labels.insert("kubernetes.io/arch".to_string(), "amd64".to_string());
    let node = Node {
        metadata: kube::api::ObjectMeta {
            name: Some(ctx.node_name.clone()),
            labels: Some(labels),
            ..Default::default()
        },
        spec: Some(NodeSpec { pod_cidr: Some(ctx.pod_cidr()), ..Default::default() }),
        status: None,
    };
    if nodes.get_opt(&ctx.node_name).await?.is_none() {
        nodes.create(&PostParams::default(), &node).await?;
    }
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).to_string();
    let capacity: BTreeMap<String, Quantity> = [
        ("cpu".to_string(), Quantity(cpus)),
        ("memory".to_string(), Quantity(format!("{}Ki", total_memory_kib()))),
        ("pods".to_string(), Quantity("250".into())),
        ("ephemeral-storage".to_string(), Quantity("100Gi".into())),
    ]
    .into_iter()
    .collect();
    let t = now();
    let status = NodeStatus {
        capacity: Some(capacity.clone()),
        allocatable: Some(capacity),
        addresses: Some(vec![
            NodeAddress { type_: "InternalIP".into(), address: "127.0.0.1".into() },
            NodeAddress { type_: "Hostname".into(), address: ctx.node_name.clone() },
        ]),
        conditions: Some(vec![NodeCondition {
            type_: "Ready".into(),
            status: "True".into(),
            reason: Some("KubeletReady".into()),
            message: Some("process kubelet is posting ready status".into()),
            last_heartbeat_time: Some(t.clone()),
            last_transition_time: Some(t),
        }]),
        node_info: Some(NodeSystemInfo {
            architecture: "amd64".into(),
            operating_system: "linux".into(),
            kubelet_version: "v1.20.2-flywheel-process".into(),
            kube_proxy_version: "none".into(),
            container_runtime_version: "process://flywheel".into(),
            kernel_version: std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().into(),
            os_image: "local processes".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let patch = serde_json::json!({ "status": status });
    nodes.patch_status(&ctx.node_name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    let registered = nodes.get(&ctx.node_name).await?;
    tracing::info!(node = %registered.name_any(), "node registered");
    Ok(())
}

fn total_memory_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines().find(|l| l.starts_with("MemTotal:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(8 * 1024 * 1024)
}
