//! The cluster tests run on. One shared cluster per test binary, started on first use on a
//! runtime of its own (each `#[tokio::test]` has its own runtime, and a kube client must live on
//! the runtime that created it: tests get fresh clients through [`TestCluster::client`]).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use flywheel_cluster::{Cluster, ClusterOptions, ImageMap};
use kube::Client;

/// Connection facts of a running cluster, shareable across test runtimes.
#[derive(Debug, Clone)]
pub struct TestCluster {
    pub id: String,
    pub server: String,
    pub kubeconfig: PathBuf,
    pub state_dir: PathBuf,
    pub etcd_dir: PathBuf,
    pub pod_cidr: String,
}

impl TestCluster {
    /// A new admin client bound to the calling runtime.
    pub async fn client(&self) -> Client {
        flywheel_cluster::kubeconfig::client_from_file(&self.kubeconfig)
            .await
            .unwrap_or_else(|e| panic!("client for cluster {}: {e}", self.id))
    }

    /// Latest run's output of a container (stdout + stderr), read from the kubelet's log file.
    pub fn container_log(&self, namespace: &str, pod: &str, container: &str) -> Option<String> {
        flywheel_cluster::pod_logs::container_log(&self.state_dir, namespace, pod, container)
    }

    pub fn from_cluster(cluster: &Cluster) -> Self {
        Self {
            id: cluster.id().to_string(),
            server: cluster.server().to_string(),
            kubeconfig: cluster.kubeconfig_path().to_path_buf(),
            state_dir: cluster.state_dir().to_path_buf(),
            etcd_dir: cluster.etcd_dir().to_path_buf(),
            pod_cidr: cluster.pod_cidr().unwrap_or_default(),
        }
    }
}

/// The workspace root (parent of e2e/), for crds/ and examples/.
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("e2e/ has a parent")
}

/// Where Pods' binaries are: FLYWHEEL_BIN_DIR, else the directory holding the running test's
/// target profile (`target/debug/deps/<test>` → `target/debug`).
pub fn default_bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("FLYWHEEL_BIN_DIR").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    Some(if dir.ends_with("deps") { dir.parent()?.to_path_buf() } else { dir.to_path_buf() })
}

/// Options tests use: temporary state, images from [`default_bin_dir`].
pub fn test_options(name: &str) -> ClusterOptions {
    ClusterOptions { name: name.into(), images: ImageMap::from_env(default_bin_dir()), ..Default::default() }
}

/// Starts a cluster owned by the caller (dropped = everything stopped). For tests that need
/// isolation, e.g. checking that no process survives a cluster.
pub async fn start_cluster(name: &str) -> Cluster {
    Cluster::start(test_options(name)).await.unwrap_or_else(|e| panic!("starting local cluster: {e}"))
}

static SHARED: OnceLock<Result<TestCluster, String>> = OnceLock::new();

/// The test binary's shared cluster, started on first call. Panics with the reason (including
/// the command that installs the control plane) if it cannot start: e2e tests never skip.
pub fn shared_cluster() -> &'static TestCluster {
    let result = SHARED.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("flywheel-shared-cluster".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async move {
                    match Cluster::start(test_options("e2e")).await {
                        Ok(cluster) => {
                            let _ = tx.send(Ok(TestCluster::from_cluster(&cluster)));
                            // SAFETY: registers a plain extern "C" fn.
                            unsafe {
                                libc::atexit(stop_shared_cluster_at_exit);
                            }
                            // Lives until the test process exits; its processes die with it
                            // (PR_SET_PDEATHSIG), and stale state is collected by the next start.
                            std::future::pending::<()>().await;
                            drop(cluster);
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e.to_string()));
                        }
                    }
                });
            })
            .expect("spawning the shared-cluster thread");
        rx.recv().unwrap_or_else(|_| Err("shared cluster thread died".into()))
    });
    match result {
        Ok(c) => c,
        Err(e) => panic!("local cluster unavailable: {e}"),
    }
}

/// Registered once the shared cluster is up: the harness exits without dropping statics, so
/// this kills the cluster's processes and removes its state at process exit. (Were the process
/// killed instead, PR_SET_PDEATHSIG still takes the processes down and the next start collects
/// the state.)
extern "C" fn stop_shared_cluster_at_exit() {
    let Some(Ok(cluster)) = SHARED.get() else {
        return;
    };
    for process in flywheel_cluster::find_leftovers(Some(&cluster.id)) {
        // SAFETY: kill(2) on a pid that carries this cluster's marker.
        unsafe {
            libc::kill(process.pid as i32, libc::SIGKILL);
        }
    }
    // The kubelet may still be writing into the state dir as its Pods die: retry briefly.
    for _ in 0..10 {
        let _ = std::fs::remove_dir_all(&cluster.etcd_dir);
        let _ = std::fs::remove_dir_all(&cluster.state_dir);
        if !cluster.state_dir.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
