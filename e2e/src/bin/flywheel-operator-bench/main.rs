//! `flywheel-operator-bench`: how long the operator takes to converge N Flywheel Deployments
//! on the local cluster, and its peak RSS, beside the time the API server alone needs to create
//! the same objects. A separate binary so it never runs with the tests.
//!
//! ```sh
//! cargo build -p flywheel-operator -p flywheel-e2e --bins
//! target/debug/flywheel-operator-bench --count 1000
//! ```
//!
//! Each round runs two phases, each on a fresh local cluster (so neither sees the other's
//! objects, or the controller-manager's work on them):
//! - **Operator**: the real `flywheel-operator` binary runs as a child process watching one
//!   namespace (so its RSS is its own). Once its ModelVersion is Ready, the bench applies N
//!   flywheel Deployments (replicas 0), `--concurrency` in flight, and watches them until
//!   every one reports ChampionReady=True (then checks that its four children exist).
//! - **API server alone**: no operator. For each Deployment the bench applies the flywheel
//!   Deployment (its children need its uid as owner) and then creates its children exactly as
//!   the operator does (review-token Secret by POST, then server-side apply of ConfigMap,
//!   apps/v1 Deployment and Service, built with the operator's own builders), with the same
//!   concurrency.
//!
//! The peak RSS is the operator's VmHWM from /proc at the end of the round.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use flywheel_api::condition;
use flywheel_api::deployment::conditions::CHAMPION_READY;
use flywheel_api::model_version::ModelPhase;
use flywheel_api::{FlywheelDeployment, ModelVersion};
use flywheel_cluster::Cluster;
use flywheel_cluster::process::{ManagedChild, log_tail};
use flywheel_e2e::cluster::{default_bin_dir, test_options};
use flywheel_e2e::{install_crds, workspace_root};
use flywheel_operator::context::Settings;
use flywheel_operator::controllers::deployment::build;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::ByteString;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::Deployment as AppsDeployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

mod direct;
mod observe;

use direct::api_server_phase;
use observe::{deployment_reconciles, mib, peak_rss_kib, print_table, wait_converged};

const FIELD_MANAGER: &str = "flywheel-operator-bench";
/// The ModelVersion every benchmark Deployment serves.
const MODEL: &str = "bench-model";
/// Interval of the liveness, timeout and progress checks while waiting, and of the ModelVersion polls.
const POLL: Duration = Duration::from_millis(250);
/// Label the operator puts on every child (see `build::labels`).
const CHILD_SELECTOR: &str = "app.kubernetes.io/managed-by=flywheel-operator";

#[derive(Parser, Debug)]
#[command(about = "Times the operator converging N Deployments against the API server alone creating the same objects")]
struct Args {
    /// Flywheel Deployments to create per round.
    #[arg(long, default_value_t = 1000)]
    count: usize,
    /// Deployments in flight at once, for the bench's own creates in both runs.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Rounds (fresh namespaces and a fresh operator each); the table shows medians.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// The operator binary (default: flywheel-operator next to this executable).
    #[arg(long)]
    operator_bin: Option<PathBuf>,
    /// Skip the check of --count against the cluster's Service range (for a control plane whose
    /// kube-apiserver is started with a wider --service-cluster-ip-range).
    #[arg(long)]
    ignore_service_range: bool,
    /// Give up waiting for any one phase after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout_secs: u64,
}

/// What one round measured.
#[derive(Debug, Clone)]
struct Round {
    api_server_alone: Duration,
    operator_converge: Duration,
    operator_idle_rss_kib: u64,
    operator_peak_rss_kib: u64,
    /// Deployment reconciles the operator had started when it converged (its /metrics).
    operator_reconciles: f64,
    /// Server-side applies of children the operator had made by then (its /metrics).
    operator_child_applies: f64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // The cluster's start-up probes log connection errors while the API server comes up: not ours to show.
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn,kube_client=off".into());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let args = Args::parse();
    if args.count == 0 || args.concurrency == 0 || args.rounds == 0 {
        bail!("--count, --concurrency and --rounds must be at least 1");
    }
    let operator_bin = match &args.operator_bin {
        Some(path) => path.clone(),
        None => default_bin_dir().context("cannot locate the bin dir; pass --operator-bin")?.join("flywheel-operator"),
    };
    if !operator_bin.is_file() {
        bail!(
            "{} does not exist: build it with `cargo build -p flywheel-operator` or pass --operator-bin",
            operator_bin.display()
        );
    }

    if !args.ignore_service_range {
        check_service_capacity(args.count)?;
    }
    // The operator only reads and hashes the artifact (replicas 0: no server loads it).
    let models = tempfile::tempdir().context("creating a temporary directory")?;
    let model_path = models.path().join("model.onnx");
    std::fs::write(&model_path, b"benchmark model: hashed by the operator, never loaded")?;
    let uri = format!("file://{}", model_path.display());

    let mut rounds = Vec::new();
    for round in 1..=args.rounds {
        // Each phase gets a fresh cluster, so neither sees the other's objects or leftover work.
        let cluster = start_cluster().await?;
        let outcome = operator_phase(&cluster, &args, &operator_bin, &uri, round).await;
        stop_cluster(cluster).await;
        let (champion, operator) = outcome?;
        let cluster = start_cluster().await?;
        let outcome = api_server_phase(&cluster, &args, &champion, round).await;
        stop_cluster(cluster).await;
        let api_server_alone = outcome?;
        let r = Round { api_server_alone, ..operator };
        eprintln!(
            "round {round}: API server alone {:.2}s, operator {:.2}s, operator peak RSS {:.1} MiB, {} Deployment reconciles, {} child applies",
            r.api_server_alone.as_secs_f64(),
            r.operator_converge.as_secs_f64(),
            mib(r.operator_peak_rss_kib),
            r.operator_reconciles,
            r.operator_child_applies
        );
        rounds.push(r);
    }
    print_table(&args, &rounds);
    Ok(())
}

/// Every Service gets a ClusterIP; the local cluster's range bounds how many can exist.
fn check_service_capacity(count: usize) -> anyhow::Result<()> {
    let cidr = flywheel_cluster::control_plane::SERVICE_CIDR;
    let prefix: u32 =
        cidr.rsplit_once('/').and_then(|(_, p)| p.parse().ok()).context("SERVICE_CIDR without a prefix length")?;
    // Network and broadcast addresses are not handed out, and `kubernetes` takes one.
    let free = (1usize << (32 - prefix)).saturating_sub(3);
    if count > free {
        bail!(
            "--count {count} needs {count} Services, but the local cluster's Service range {cidr} has room for {free} \
             besides `kubernetes` (widen SERVICE_CIDR in cluster/src/control_plane.rs)"
        );
    }
    Ok(())
}

/// A fresh local cluster with the CRDs installed.
async fn start_cluster() -> anyhow::Result<Cluster> {
    let started = Instant::now();
    let cluster = Cluster::start(test_options("opbench")).await.context(
        "starting the local cluster (the control plane is installed by `cargo run -p flywheel-cluster -- install`)",
    )?;
    eprintln!("cluster {} up in {:.1}s", cluster.id(), started.elapsed().as_secs_f64());
    if let Err(e) = install_crds(&cluster.client(), &workspace_root().join("crds")).await {
        stop_cluster(cluster).await;
        return Err(anyhow::Error::new(e).context("installing the CRDs"));
    }
    Ok(cluster)
}

/// Stops every process of the cluster and removes its state.
async fn stop_cluster(cluster: Cluster) {
    let id = cluster.id().to_string();
    cluster.stop().await;
    let leftovers = flywheel_cluster::find_leftovers(Some(&id));
    if !leftovers.is_empty() {
        eprintln!("warning: processes of cluster {id} still running: {leftovers:?}");
    }
}

/// The real operator converging `count` Deployments. Returns the verified ModelVersion (for
/// the other phase's builders) and the round's operator figures.
async fn operator_phase(
    cluster: &Cluster,
    args: &Args,
    operator_bin: &Path,
    uri: &str,
    round: usize,
) -> anyhow::Result<(ModelVersion, Round)> {
    let client = cluster.client();
    let ns = create_namespace(&client, "bench-operator").await?;
    let log = cluster.state_dir().join(format!("flywheel-operator-bench-{round}.log"));
    let metrics_port = free_port()?;
    let mut operator = start_operator(cluster, operator_bin, &ns, metrics_port, &log)?;
    let outcome = async {
        let champion = ready_model(&client, &ns, uri, &mut operator, &log).await?;
        let operator_idle_rss_kib = peak_rss_kib(operator.pid())?;
        eprintln!("round {round}: operator converging {} Deployments", args.count);
        let start = Instant::now();
        futures::stream::iter(0..args.count)
            .map(|i| {
                let (client, ns) = (&client, &ns);
                async move { apply::<FlywheelDeployment, _>(client, ns, &deployment_manifest(&name(i))).await }
            })
            .buffer_unordered(args.concurrency)
            .try_collect::<Vec<_>>()
            .await?;
        let timeout = Duration::from_secs(args.timeout_secs);
        let operator_converge = wait_converged(&client, &ns, args.count, start, timeout, &mut operator, &log).await?;
        let operator_peak_rss_kib = peak_rss_kib(operator.pid())?;
        let (operator_reconciles, operator_child_applies) = deployment_reconciles(metrics_port).await?;
        let round = Round {
            api_server_alone: Duration::ZERO,
            operator_converge,
            operator_idle_rss_kib,
            operator_peak_rss_kib,
            operator_reconciles,
            operator_child_applies,
        };
        anyhow::Ok((champion, round))
    }
    .await;
    operator.terminate(Duration::from_secs(5)).await;
    outcome
}

fn name(i: usize) -> String {
    format!("bench-{i:05}")
}

/// A flywheel Deployment as a user would write it.
fn deployment_manifest(name: &str) -> serde_json::Value {
    json!({
        "apiVersion": "flywheel.dev/v1alpha1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {"champion": {"modelVersion": MODEL}, "replicas": 0},
    })
}

async fn create_namespace(client: &Client, name: &str) -> anyhow::Result<String> {
    let mut ns = Namespace::default();
    ns.metadata.name = Some(name.to_string());
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .with_context(|| format!("creating namespace {name}"))?;
    Ok(name.to_string())
}

/// Server-side apply of a namespaced object (typed, or a JSON manifest of kind `K`).
async fn apply<K, P>(client: &Client, ns: &str, obj: &P) -> anyhow::Result<K>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope> + Clone + DeserializeOwned + std::fmt::Debug,
    P: Serialize,
{
    let value = serde_json::to_value(obj)?;
    let name = value["metadata"]["name"].as_str().context("object without metadata.name")?.to_string();
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&value))
        .await
        .with_context(|| format!("applying {} {ns}/{name}", K::kind(&())))
}

/// Runs the operator binary watching `ns`; it dies with this process or the cluster.
fn start_operator(
    cluster: &Cluster,
    bin: &Path,
    ns: &str,
    metrics_port: u16,
    log: &Path,
) -> anyhow::Result<ManagedChild> {
    let mut cmd = tokio::process::Command::new(bin);
    let listen = format!("127.0.0.1:{metrics_port}");
    // The bench's ModelVersion is a file:// artifact.
    cmd.args([
        "--watch-namespace",
        ns,
        "--no-leader-election",
        "--listen",
        &listen,
        "--allow-local-files",
        "--skip-model-verification",
    ])
    .env("KUBECONFIG", cluster.kubeconfig_path())
    .env("RUST_LOG", "info,kube=warn");
    Ok(ManagedChild::spawn("flywheel-operator", cmd, cluster.id(), log)?)
}

fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

fn check_alive(operator: &mut ManagedChild, log: &Path) -> anyhow::Result<()> {
    match operator.try_wait() {
        Some(status) => bail!("the operator exited ({status}); its log ends with:\n{}", log_tail(log, 30)),
        None => Ok(()),
    }
}

/// Creates the ModelVersion in the operator's namespace and waits until the operator has
/// verified it; returns it (with its digest) for the builders of the API-server-alone run.
async fn ready_model(
    client: &Client,
    ns: &str,
    uri: &str,
    operator: &mut ManagedChild,
    log: &Path,
) -> anyhow::Result<ModelVersion> {
    let manifest = json!({
        "apiVersion": "flywheel.dev/v1alpha1",
        "kind": "ModelVersion",
        "metadata": {"name": MODEL},
        "spec": {
            "model": "shapes", "version": "1", "task": "detection", "labels": ["circle", "square", "triangle"],
            "artifact": {"uri": uri},
            "input": {"width": 64, "height": 64, "resize": "letterbox"},
            "output": {"decoder": "yolo"},
        },
    });
    apply::<ModelVersion, _>(client, ns, &manifest).await?;
    let api: Api<ModelVersion> = Api::namespaced(client.clone(), ns);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        check_alive(operator, log)?;
        let mv = api.get(MODEL).await?;
        let status = mv.status.clone().unwrap_or_default();
        if status.phase == Some(ModelPhase::Ready) && status.digest.is_some() {
            return Ok(mv);
        }
        if Instant::now() > deadline {
            bail!("ModelVersion {ns}/{MODEL} not Ready after 120s: {status:?}\noperator log:\n{}", log_tail(log, 30));
        }
        tokio::time::sleep(POLL).await;
    }
}
