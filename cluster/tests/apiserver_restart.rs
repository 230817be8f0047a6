//! Restarting the kube-apiserver of a running cluster: etcd keeps the objects, the Pods keep
//! running, and the kubelet's and controller-manager's watches reconnect on their own.
//!
//! Pods run `flywheel/testapp` (the e2e crate's `flywheel-testapp` binary), found in the
//! directory of this test's target profile or in FLYWHEEL_BIN_DIR.

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use flywheel_cluster::{Cluster, ClusterOptions, ImageMap, find_leftovers};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};

const WAIT: Duration = Duration::from_secs(60);

/// `target/<profile>/deps/<test>` → `target/<profile>`, unless FLYWHEEL_BIN_DIR is set.
fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("FLYWHEEL_BIN_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let deps = exe.parent().expect("executable has a directory");
    deps.parent().expect("deps/ has a parent").to_path_buf()
}

/// Polls `check` until it yields `Some`, panicking with `what` after [`WAIT`].
async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let begin = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(begin.elapsed() < WAIT, "timed out after {}s waiting for {what}", WAIT.as_secs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn serving_pod(name: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"containers": [{
            "name": "app",
            "image": "flywheel/testapp",
            "args": ["serve", "--port", "8080"],
            "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
            "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 1},
        }]},
    }))
    .expect("valid Pod")
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The ready Pod `name`, once the kubelet reports it Ready.
async fn ready_pod(client: &Client, name: &str) -> Pod {
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    wait_for(&format!("Pod {name} to be Ready"), || {
        let pods = pods.clone();
        async move { pods.get(name).await.ok().filter(is_ready) }
    })
    .await
}

/// (container id = `process://<pid>`, restart count) of the Pod's only container.
fn container_identity(pod: &Pod) -> (Option<String>, i32) {
    let status = &pod.status.as_ref().expect("status").container_statuses.as_ref().expect("container statuses")[0];
    (status.container_id.clone(), status.restart_count)
}

fn apiserver_pids(cluster: &Cluster) -> Vec<u32> {
    find_leftovers(Some(cluster.id()))
        .into_iter()
        .filter(|p| p.command.contains("kube-apiserver"))
        .map(|p| p.pid)
        .collect()
}

#[tokio::test]
async fn restarted_apiserver_keeps_objects_and_the_kubelet_reconnects() {
    let bins = bin_dir();
    assert!(
        bins.join("flywheel-testapp").is_file(),
        "{} has no flywheel-testapp; build it with `cargo build -p flywheel-e2e --bin flywheel-testapp` \
         (or set FLYWHEEL_BIN_DIR)",
        bins.display()
    );
    let mut cluster = Cluster::start(ClusterOptions {
        name: "restart".into(),
        images: ImageMap::from_env(Some(bins)),
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("starting local cluster: {e}"));
    let client = cluster.client();
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let config_maps: Api<ConfigMap> = Api::default_namespaced(client.clone());

    let note: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "written-before-restart"},
        "data": {"answer": "42"},
    }))
    .unwrap();
    config_maps.create(&PostParams::default(), &note).await.unwrap();
    pods.create(&PostParams::default(), &serving_pod("before")).await.unwrap();
    let before = ready_pod(&client, "before").await;

    let old_pids = apiserver_pids(&cluster);
    assert_eq!(old_pids.len(), 1, "one kube-apiserver runs: {old_pids:?}");
    let downtime = cluster.restart_apiserver().await.unwrap();
    let new_pids = apiserver_pids(&cluster);
    assert_eq!(new_pids.len(), 1, "one kube-apiserver runs: {new_pids:?}");
    assert_ne!(old_pids, new_pids, "the API server process was replaced");
    assert!(downtime > Duration::ZERO);
    eprintln!("kube-apiserver was down for {downtime:?}");
    cluster.check_processes().expect("etcd and controller-manager survived");

    // The client made before the restart reconnects by itself.
    wait_for("the pre-restart client to list Pods", || {
        let pods = pods.clone();
        async move { pods.list(&ListParams::default()).await.ok() }
    })
    .await;
    // etcd kept what was written before the restart.
    let kept = config_maps.get("written-before-restart").await.unwrap();
    assert_eq!(kept.data.unwrap()["answer"], "42");
    assert_eq!(pods.get("before").await.unwrap().metadata.uid, before.metadata.uid, "the same Pod object survived");

    // A new Pod is scheduled and started (the kubelet's watches reconnected), and a Deployment
    // gets its Pod (the controller-manager's watches reconnected).
    pods.create(&PostParams::default(), &serving_pod("after")).await.unwrap();
    let deployment: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": serving_pod("web").spec,
            },
        },
    }))
    .unwrap();
    let deployments: Api<Deployment> = Api::default_namespaced(client.clone());
    deployments.create(&PostParams::default(), &deployment).await.unwrap();

    ready_pod(&client, "after").await;
    wait_for("Deployment web to have an available replica", || {
        let deployments = deployments.clone();
        async move {
            let d = deployments.get("web").await.ok()?;
            (d.status?.available_replicas? == 1).then_some(())
        }
    })
    .await;

    // The first Pod's process kept running through the restart and is still Ready.
    let before_now = ready_pod(&client, "before").await;
    assert_eq!(
        container_identity(&before_now),
        container_identity(&before),
        "the Pod's process was neither replaced nor restarted"
    );
    cluster.check_processes().expect("control plane still running");
    let id = cluster.id().to_string();
    cluster.stop().await;
    // The replacement API server dies with the cluster like the original processes.
    wait_for("every process of the cluster to exit", || {
        let id = id.clone();
        async move { find_leftovers(Some(&id)).is_empty().then_some(()) }
    })
    .await;
}
