//! The platform the loop runs on: a namespace of the local cluster, a real S3 server
//! (SeaweedFS) holding models, datasets and prediction logs, and the operator installed from
//! the Helm chart under its own service account.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use flywheel_e2e::{TestCluster, WaitError};
use flywheel_test_support::seaweed::Seaweed;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, Client};

use crate::assets::BUCKET;

/// Name of the Helm release (and of the operator's Deployment and ServiceAccount).
pub const RELEASE: &str = "flywheel";
/// The inference server's HTTP port in its Pod.
pub const INFERENCE_PORT: u16 = 8080;
/// The review service's port (the operator's `review_service::PORT`).
pub const REVIEW_PORT: u16 = 8090;

pub struct Platform {
    pub cluster: TestCluster,
    pub client: Client,
    pub namespace: String,
    pub s3: Seaweed,
    /// Where the Pods' binaries are (the kubelet runs `flywheel/<x>` as `<bin_dir>/flywheel-<x>`).
    pub bin_dir: PathBuf,
    /// Scratch space (production images), removed on drop.
    pub work: tempfile::TempDir,
}

impl Platform {
    /// Starts the S3 server and creates the demo bucket. `namespace` must exist.
    pub async fn new(cluster: TestCluster, namespace: &str, bin_dir: PathBuf) -> anyhow::Result<Self> {
        let client = cluster.client().await;
        let s3 = tokio::task::spawn_blocking(|| {
            let s3 = Seaweed::start();
            s3.create_bucket(BUCKET);
            s3
        })
        .await?;
        Ok(Self { cluster, client, namespace: namespace.to_string(), s3, bin_dir, work: tempfile::tempdir()? })
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// The object store's environment for local processes (the trainer's `generate`).
    pub fn s3_env(&self) -> Vec<(&'static str, String)> {
        self.s3.env()
    }

    /// Waits for `condition` on `name`; a timeout carries a dump of the namespace (Pods,
    /// Events, logs) so a failure says what the cluster was doing.
    pub async fn wait_for<K>(
        &self,
        name: &str,
        condition: impl Fn(Option<&K>) -> bool,
        timeout_secs: u64,
    ) -> Result<Option<K>, WaitError>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug
            + serde::Serialize,
        <K as kube::Resource>::DynamicType: Default,
    {
        match flywheel_e2e::wait_for(&self.api::<K>(), name, condition, timeout_secs).await {
            Err(e @ WaitError::Timeout { .. }) => Err(e.with_dump(self.dump().await)),
            other => other,
        }
    }

    pub async fn dump(&self) -> String {
        flywheel_e2e::dump::dump_namespace(&self.client, &self.cluster, &self.namespace).await
    }

    /// `helm upgrade --install` of charts/flywheel, watching only this namespace, with trained
    /// models written under `s3://flywheel-demo/runs`. Returns when the operator Pod is Ready
    /// and holds the leader Lease. `FLYWHEEL_OPERATOR_LOG`, when set, replaces the chart's
    /// RUST_LOG filter (e.g. `info,kube_runtime=debug` to see the watchers).
    pub async fn install_operator(&self) -> anyhow::Result<Pod> {
        let chart = flywheel_e2e::workspace_root().join("charts/flywheel");
        let helm = helm_binary()?;
        let out = Command::new(&helm)
            .args(["upgrade", "--install", RELEASE])
            .arg(&chart)
            .args(["--namespace", &self.namespace, "--kubeconfig"])
            .arg(&self.cluster.kubeconfig)
            .args(["--set", &format!("watchNamespace={}", self.namespace)])
            .args(["--set", &format!("defaultOutputUri=s3://{BUCKET}/runs/")])
            .args(
                std::env::var("FLYWHEEL_OPERATOR_LOG")
                    .map(|level| ["--set-string".to_string(), format!("logging.level={}", level.replace(',', "\\,"))])
                    .into_iter()
                    .flatten(),
            )
            .args(["--wait", "--timeout", "180s"])
            .output()
            .with_context(|| format!("running {}", helm.display()))?;
        if !out.status.success() {
            bail!(
                "helm install failed: {}{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                self.dump().await
            );
        }
        self.wait_for::<Lease>(
            "flywheel-operator",
            |l| l.and_then(|l| l.spec.as_ref()?.holder_identity.as_ref()).is_some(),
            120,
        )
        .await?;
        let pods: Api<Pod> = self.api();
        let selector = format!("app.kubernetes.io/instance={RELEASE}");
        let list = pods.list(&ListParams::default().labels(&selector)).await?;
        list.items.into_iter().next().context("the chart created no operator Pod")
    }

    /// Address of a ready inference Pod of a Flywheel Deployment. There is no kube-proxy on
    /// the local cluster, so clients talk to Pod IPs (the Service's Endpoints) directly.
    pub async fn inference_address(&self, deployment: &str, timeout_secs: u64) -> anyhow::Result<SocketAddr> {
        let what = format!("a ready inference Pod of {deployment}");
        self.ready_pod_address(&format!("flywheel.dev/deployment={deployment}"), INFERENCE_PORT, &what, timeout_secs)
            .await
    }

    /// Address of the ready review-service Pod of a DataPipeline (reviewers' API and page).
    pub async fn review_address(&self, pipeline: &str, timeout_secs: u64) -> anyhow::Result<SocketAddr> {
        let what = format!("the ready review-service Pod of {pipeline}");
        self.ready_pod_address(&format!("flywheel.dev/review-service={pipeline}"), REVIEW_PORT, &what, timeout_secs)
            .await
    }

    async fn ready_pod_address(
        &self,
        selector: &str,
        port: u16,
        what: &str,
        timeout_secs: u64,
    ) -> anyhow::Result<SocketAddr> {
        let pods: Api<Pod> = self.api();
        let found = flywheel_e2e::wait::eventually(what, timeout_secs, || {
            let pods = pods.clone();
            async move {
                let list = pods.list(&ListParams::default().labels(selector)).await.map_err(|e| e.to_string())?;
                list.items
                    .iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                    .find_map(|p| {
                        let status = p.status.as_ref()?;
                        let ready =
                            status.conditions.iter().flatten().any(|c| c.type_ == "Ready" && c.status == "True");
                        let ip: std::net::IpAddr = status.pod_ip.as_ref()?.parse().ok()?;
                        ready.then_some(SocketAddr::new(ip, port))
                    })
                    .ok_or_else(|| format!("{} Pods, none ready", list.items.len()))
            }
        })
        .await;
        match found {
            Ok(a) => Ok(a),
            Err(e) => Err(e.with_dump(self.dump().await).into()),
        }
    }
}

/// helm: `$FLYWHEEL_HELM`, else helm 3 from the tool cache scripts/install-deps.sh fills, else
/// `helm` on PATH.
pub fn helm_binary() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("FLYWHEEL_HELM") {
        return Ok(PathBuf::from(p));
    }
    let cached = flywheel_test_support::tools::cached_helm(3);
    if cached.exists() {
        return Ok(cached);
    }
    if let Some(found) = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join("helm"))
        .find(|p| Path::new(p).exists())
    {
        return Ok(found);
    }
    bail!("helm not found: run scripts/install-deps.sh (it installs helm into {})", cached.display())
}
