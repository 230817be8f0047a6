//! flywheel-cluster: run a local Kubernetes cluster (real control plane + process kubelet).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use flywheel_cluster::{Cluster, ClusterOptions, ImageMap, cache_dir, find_leftovers};
use serde::{Deserialize, Serialize};

#[derive(Parser)]
#[command(
    about = "Local Kubernetes without containers: etcd + kube-apiserver + kube-controller-manager + a process kubelet"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build (once) and cache kube-apiserver and kube-controller-manager 1.20.2 from Debian source.
    Install,
    /// Start a cluster and stay in the foreground until Ctrl-C or `down`.
    Up {
        #[arg(long, default_value = "flywheel")]
        name: String,
        /// Directory with the workspace binaries Pods run (flywheel/<x> → flywheel-<x>).
        /// Defaults to FLYWHEEL_BIN_DIR, else the directory of this executable.
        #[arg(long)]
        bin_dir: Option<PathBuf>,
    },
    /// Stop the cluster started by `up`.
    Down {
        #[arg(long, default_value = "flywheel")]
        name: String,
    },
    /// Show whether the cluster started by `up` is running.
    Status {
        #[arg(long, default_value = "flywheel")]
        name: String,
    },
    /// Start and stop a cluster several times; print the start-up times and their median.
    Bench {
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// List processes started by any cluster that are still alive; exit 1 if there are some.
    Leftovers,
}

/// What `up` records for `down` and `status`.
#[derive(Serialize, Deserialize)]
struct UpState {
    pid: u32,
    server: String,
    kubeconfig: PathBuf,
    pod_cidr: Option<String>,
}

fn state_dir(name: &str) -> PathBuf {
    cache_dir().join("clusters").join(name)
}

fn state_file(name: &str) -> PathBuf {
    state_dir(name).join("up.json")
}

fn default_bin_dir() -> Option<PathBuf> {
    std::env::current_exe().ok().and_then(|p| p.parent().map(PathBuf::from))
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,kube_client::client::builder=off".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match cli.command {
        Cmd::Install => {
            let bins = flywheel_cluster::install::install()?;
            println!("kube-apiserver:          {}", bins.kube_apiserver.display());
            println!("kube-controller-manager: {}", bins.kube_controller_manager.display());
            println!("etcd:                    {}", bins.etcd.display());
            Ok(())
        }
        Cmd::Up { name, bin_dir } => rt.block_on(up(name, bin_dir)),
        Cmd::Down { name } => down(&name),
        Cmd::Status { name } => rt.block_on(status(&name)),
        Cmd::Bench { runs } => rt.block_on(bench(runs)),
        Cmd::Leftovers => {
            // Processes of a cluster whose owner just exited get SIGKILL at once, but may take a
            // moment to disappear; only report what is still there after a few seconds.
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            let mut left = find_leftovers(None);
            while !left.is_empty() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(200));
                left = find_leftovers(None);
            }
            for l in &left {
                println!("{} (cluster {}): {}", l.pid, l.cluster_id, l.command);
            }
            if left.is_empty() {
                println!("no cluster process is running");
                Ok(())
            } else {
                bail!("{} cluster process(es) still running", left.len())
            }
        }
    }
}

async fn up(name: String, bin_dir: Option<PathBuf>) -> anyhow::Result<()> {
    let file = state_file(&name);
    if let Ok(text) = std::fs::read_to_string(&file)
        && let Ok(state) = serde_json::from_str::<UpState>(&text)
        && PathBuf::from(format!("/proc/{}", state.pid)).exists()
    {
        bail!(
            "cluster {name:?} is already running (pid {}); stop it with `flywheel-cluster down --name {name}`",
            state.pid
        );
    }
    let mut images = ImageMap::from_env(default_bin_dir());
    if bin_dir.is_some() {
        images.bin_dir = bin_dir;
    }
    eprintln!("starting cluster {name:?} ...");
    let options = ClusterOptions {
        name: name.clone(),
        state_dir: Some(state_dir(&name)),
        images: images.clone(),
        ..Default::default()
    };
    let cluster = Cluster::start(options).await?;
    let state = UpState {
        pid: std::process::id(),
        server: cluster.server().to_string(),
        kubeconfig: cluster.kubeconfig_path().to_path_buf(),
        pod_cidr: cluster.pod_cidr(),
    };
    flywheel_cluster::kubeconfig::write_atomic(&file, &serde_json::to_string_pretty(&state)?)?;
    println!("cluster {name:?} is up in {:.1}s", cluster.startup_time().as_secs_f64());
    println!("  API server:          {} (Kubernetes {})", cluster.server(), flywheel_cluster::KUBERNETES_VERSION);
    println!("  kubeconfig:          {}", cluster.kubeconfig_path().display());
    println!(
        "  node:                {} (process kubelet, Pods on {})",
        cluster.node_name().unwrap_or("-"),
        state.pod_cidr.as_deref().unwrap_or("-")
    );
    println!(
        "  images from:         {}",
        images.bin_dir.as_ref().map(|d| d.display().to_string()).unwrap_or("-".into())
    );
    println!("  control-plane logs:  {}", cluster.control_plane_log_dir().display());
    println!("  Pod dirs and logs:   {}", cluster.state_dir().join("kubelet/pods").display());
    println!();
    println!("export KUBECONFIG={}", cluster.kubeconfig_path().display());
    println!("Ctrl-C or `flywheel-cluster down --name {name}` stops it.");

    let mut cluster = cluster;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut health = tokio::time::interval(Duration::from_secs(1));
    let failure = loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break None,
            _ = term.recv() => break None,
            _ = health.tick() => if let Err(e) = cluster.check_processes() { break Some(e) },
        }
    };
    eprintln!("stopping cluster {name:?} ...");
    cluster.stop().await;
    let _ = std::fs::remove_file(&file);
    match failure {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

fn down(name: &str) -> anyhow::Result<()> {
    let file = state_file(name);
    let text =
        std::fs::read_to_string(&file).with_context(|| format!("no cluster {name:?} is up (no {})", file.display()))?;
    let state: UpState = serde_json::from_str(&text)?;
    let proc_dir = PathBuf::from(format!("/proc/{}", state.pid));
    if proc_dir.exists() {
        // SAFETY: plain kill(2) on the pid `up` recorded.
        unsafe { libc::kill(state.pid as i32, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while proc_dir.exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        if proc_dir.exists() {
            bail!("cluster process {} did not stop within 60s", state.pid);
        }
    }
    let _ = std::fs::remove_file(&file);
    println!("cluster {name:?} stopped");
    Ok(())
}

async fn status(name: &str) -> anyhow::Result<()> {
    let file = state_file(name);
    let Ok(text) = std::fs::read_to_string(&file) else {
        println!("cluster {name:?}: down");
        return Ok(());
    };
    let state: UpState = serde_json::from_str(&text)?;
    if !PathBuf::from(format!("/proc/{}", state.pid)).exists() {
        println!("cluster {name:?}: down (stale state from pid {})", state.pid);
        return Ok(());
    }
    let client = flywheel_cluster::kubeconfig::client_from_file(&state.kubeconfig).await?;
    let version = client.apiserver_version().await.context("API server not answering")?;
    use k8s_openapi::api::core::v1::{Node, Pod};
    let nodes = kube::Api::<Node>::all(client.clone()).list(&Default::default()).await?;
    let pods = kube::Api::<Pod>::all(client).list(&Default::default()).await?;
    println!("cluster {name:?}: up (pid {})", state.pid);
    println!("  API server: {} ({})", state.server, version.git_version);
    println!("  kubeconfig: {}", state.kubeconfig.display());
    println!("  nodes: {}  pods: {}", nodes.items.len(), pods.items.len());
    Ok(())
}

async fn bench(runs: usize) -> anyhow::Result<()> {
    let mut times = Vec::new();
    for run in 1..=runs.max(1) {
        let options = ClusterOptions { name: "bench".into(), ..Default::default() };
        let cluster = Cluster::start(options).await?;
        let t = cluster.startup_time();
        println!("run {run}: cluster ready in {:.2}s", t.as_secs_f64());
        times.push(t);
        cluster.stop().await;
    }
    times.sort();
    let median = times[times.len() / 2];
    println!(
        "cluster start (etcd + kube-apiserver + kube-controller-manager + kubelet, until the default ServiceAccount has its token): \
         median {:.2}s over {} runs (min {:.2}s, max {:.2}s); goal < 15s",
        median.as_secs_f64(),
        times.len(),
        times[0].as_secs_f64(),
        times[times.len() - 1].as_secs_f64()
    );
    Ok(())
}
