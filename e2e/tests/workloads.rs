//! End-to-end tests of the local cluster's workloads: Deployments with Endpoints, Jobs, Pod
//! status reporting, graceful deletion, and cleanup. One shared cluster per test binary; each
//! test uses its own namespace.

mod common;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use common::{http_get, pod_ip};
use flywheel_e2e::wait::eventually;
use flywheel_e2e::{TestNamespace, conditions, shared_cluster};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Endpoints, Pod};
use kube::ResourceExt;
use kube::api::{DeleteParams, ListParams};

#[tokio::test]
async fn deployment_pods_get_ready_with_distinct_ips_and_endpoints() {
    let cluster = shared_cluster();
    let ns = TestNamespace::new(cluster, "deploy").await.unwrap();
    ns.apply_yaml(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: app
        image: flywheel/testapp:latest
        args: [serve, --port, "8080"]
        ports: [{name: http, containerPort: 8080, protocol: TCP}]
        readinessProbe: {httpGet: {path: /readyz, port: http}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http, protocol: TCP}]
"#,
    )
    .await
    .unwrap();
    ns.wait_for::<Deployment>("web", conditions::deployment_available(3), 120).await.unwrap();

    let pods = ns.api::<Pod>().list(&ListParams::default().labels("app=web")).await.unwrap();
    let ips: BTreeSet<String> = pods.items.iter().map(pod_ip).collect();
    assert_eq!(ips.len(), 3, "each Pod has its own address: {ips:?}");
    let prefix = cluster.pod_cidr.trim_end_matches("0/24");
    for ip in &ips {
        assert!(ip.starts_with(prefix), "{ip} is outside the Pod range {}", cluster.pod_cidr);
        assert!(ip.parse::<Ipv4Addr>().unwrap().is_loopback());
        // The process bound its own POD_IP and reports it.
        assert_eq!(&http_get(ip, 8080, "/ip").await.unwrap(), ip);
    }

    // The real endpoints controller lists exactly the ready Pods.
    let endpoint_ips = |e: Option<&Endpoints>| -> BTreeSet<String> {
        e.and_then(|e| e.subsets.clone())
            .unwrap_or_default()
            .into_iter()
            .flat_map(|s| s.addresses.unwrap_or_default())
            .map(|a| a.ip)
            .collect()
    };
    let want = ips.clone();
    let endpoints = ns.wait_for::<Endpoints>("web", move |e| endpoint_ips(e) == want, 60).await.unwrap();
    let port = endpoints.unwrap().subsets.unwrap()[0].ports.clone().unwrap()[0].port;
    assert_eq!(port, 8080);
    let addr = ns.service_address("web", "http", 10).await.unwrap();
    assert!(ips.contains(&addr.ip().to_string()) && addr.port() == 8080, "{addr}");
}

#[tokio::test]
async fn jobs_succeed_and_fail_with_backoff() {
    let ns = TestNamespace::new(shared_cluster(), "jobs").await.unwrap();
    ns.apply_yaml(
        r#"
apiVersion: batch/v1
kind: Job
metadata: {name: ok}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
      - {name: main, image: flywheel/testapp, args: [exit, --code, "0", --message, "job done"]}
---
apiVersion: batch/v1
kind: Job
metadata: {name: broken}
spec:
  backoffLimit: 1
  template:
    spec:
      restartPolicy: Never
      containers:
      - {name: main, image: flywheel/testapp, args: [exit, --code, "3", --message, "failing on purpose"]}
"#,
    )
    .await
    .unwrap();
    ns.wait_for::<Job>("ok", conditions::job_condition("Complete"), 90).await.unwrap();
    let failed = ns.wait_for::<Job>("broken", conditions::job_condition("Failed"), 120).await.unwrap().unwrap();
    let status = failed.status.unwrap();
    let condition = status.conditions.unwrap().into_iter().find(|c| c.type_ == "Failed").unwrap();
    assert_eq!(condition.reason.as_deref(), Some("BackoffLimitExceeded"));
    assert_eq!(status.failed, Some(2), "backoffLimit 1 = one retry");

    let pods = ns.api::<Pod>().list(&ListParams::default().labels("job-name=broken")).await.unwrap();
    assert_eq!(pods.items.len(), 2);
    for pod in &pods.items {
        let s = pod.status.clone().unwrap();
        assert_eq!(s.phase.as_deref(), Some("Failed"));
        let terminated = s.container_statuses.unwrap()[0].state.clone().unwrap().terminated.unwrap();
        assert_eq!(terminated.exit_code, 3);
        assert_eq!(terminated.reason.as_deref(), Some("Error"));
        let log = ns.container_log(&pod.name_any(), "main").unwrap();
        assert!(log.contains("failing on purpose"), "{log}");
    }
    let ok_pods = ns.api::<Pod>().list(&ListParams::default().labels("job-name=ok")).await.unwrap();
    assert_eq!(ok_pods.items[0].status.clone().unwrap().phase.as_deref(), Some("Succeeded"));
}

#[tokio::test]
async fn unknown_images_and_liveness_failures_are_reported() {
    let ns = TestNamespace::new(shared_cluster(), "status").await.unwrap();
    ns.apply_yaml(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: nginx}
spec:
  containers: [{name: web, image: "nginx:1.25"}]
---
apiVersion: v1
kind: Pod
metadata: {name: flaky}
spec:
  containers:
  - name: app
    image: flywheel/testapp
    args: [serve, --port, "8080", --unhealthy-after, "1"]
    livenessProbe: {httpGet: {path: /healthz, port: 8080}, periodSeconds: 1, failureThreshold: 1}
"#,
    )
    .await
    .unwrap();
    let pull_error = |p: Option<&Pod>| {
        p.and_then(|p| p.status.as_ref()?.container_statuses.as_ref()?.first()?.state.as_ref()?.waiting.clone())
            .is_some_and(|w| w.reason.as_deref() == Some("ErrImagePull"))
    };
    let pod = ns.wait_for::<Pod>("nginx", pull_error, 60).await.unwrap().unwrap();
    let status = pod.status.unwrap();
    assert_eq!(status.phase.as_deref(), Some("Pending"));
    let message = status.container_statuses.unwrap()[0].state.clone().unwrap().waiting.unwrap().message.unwrap();
    assert!(message.contains("nginx:1.25") && message.contains("cannot be pulled"), "{message}");

    let restarted = |p: Option<&Pod>| {
        p.and_then(|p| p.status.as_ref()?.container_statuses.as_ref()?.first().map(|c| c.restart_count))
            .is_some_and(|n| n >= 1)
    };
    let pod = ns.wait_for::<Pod>("flaky", restarted, 90).await.unwrap().unwrap();
    let last = pod.status.unwrap().container_statuses.unwrap()[0].last_state.clone().unwrap().terminated.unwrap();
    assert!(last.message.unwrap_or_default().contains("Liveness probe failed"));
}

#[tokio::test]
async fn deleting_a_pod_terminates_its_process_gracefully() {
    let ns = TestNamespace::new(shared_cluster(), "delete").await.unwrap();
    ns.apply_yaml(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: server}
spec:
  terminationGracePeriodSeconds: 20
  containers:
  - {name: app, image: flywheel/testapp, args: [serve, --port, "8080"]}
"#,
    )
    .await
    .unwrap();
    let pod = ns.wait_for::<Pod>("server", conditions::pod_phase("Running"), 90).await.unwrap().unwrap();
    let container_id = pod.status.unwrap().container_statuses.unwrap()[0].container_id.clone().unwrap();
    let pid: u32 = container_id.strip_prefix("process://").unwrap().parse().unwrap();
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());

    ns.api::<Pod>().delete("server", &DeleteParams::default()).await.unwrap();
    ns.wait_for::<Pod>("server", conditions::deleted(), 30).await.unwrap();
    // The kubelet removes the Pod only after the process exited (SIGTERM handled by the app).
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(stat.is_empty() || stat.contains(") Z"), "process {pid} survived its Pod: {stat}");
    let log = ns.container_log("server", "app").unwrap_or_default();
    assert!(log.contains("SIGTERM received"), "the app was not stopped gracefully: {log}");
}

#[tokio::test]
async fn no_process_survives_a_dropped_cluster() {
    let cluster = flywheel_e2e::start_cluster("leftovers").await;
    let id = cluster.id().to_string();
    let info = flywheel_e2e::TestCluster::from_cluster(&cluster);
    let ns = TestNamespace::new(&info, "leftovers").await.unwrap();
    ns.apply_yaml(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: app}\nspec:\n  containers:\n  - {name: app, image: flywheel/testapp, args: [serve]}\n",
    )
    .await
    .unwrap();
    ns.wait_for::<Pod>("app", conditions::pod_phase("Running"), 90).await.unwrap();
    let before = flywheel_cluster::find_leftovers(Some(&id));
    assert!(before.len() >= 4, "etcd, apiserver, controller-manager and the Pod should run: {before:?}");
    std::mem::forget(ns); // its namespace dies with the cluster
    drop(cluster);
    let left = eventually("every cluster process to exit", 10, || async {
        let left = flywheel_cluster::find_leftovers(Some(&id));
        if left.is_empty() { Ok(()) } else { Err(format!("{left:?}")) }
    })
    .await;
    assert!(left.is_ok(), "{left:?}");
}
