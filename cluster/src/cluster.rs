//! A whole local cluster: control plane + process kubelet, with its state in one directory.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ServiceAccount;
use kube::{Api, Client};

use crate::control_plane::ControlPlane;
use crate::error::ClusterError;
use crate::kubeconfig;
use crate::kubelet::{ImageMap, Kubelet, KubeletConfig};
use crate::paths::ControlPlaneBinaries;

/// How to start a [`Cluster`].
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Short name used in the cluster id and node name.
    pub name: String,
    /// Keep state here (kubeconfig, logs, Pod directories); `None` = a temporary directory removed on drop.
    pub state_dir: Option<PathBuf>,
    pub images: ImageMap,
    /// Run the process kubelet (node + scheduler + Pods). Without it Pods stay Pending.
    pub kubelet: bool,
    pub ready_timeout: Duration,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            name: "flywheel".into(),
            state_dir: None,
            images: ImageMap::from_env(None),
            kubelet: true,
            ready_timeout: Duration::from_secs(90),
        }
    }
}

/// A running cluster. Dropping it kills every process it started (Pods included) and removes
/// its temporary state; [`Cluster::stop`] does the same gracefully.
pub struct Cluster {
    id: String,
    dir: PathBuf,
    remove_dir: bool,
    etcd_dir: PathBuf,
    server: String,
    kubeconfig: PathBuf,
    client: Client,
    startup: Duration,
    kubelet: Option<Kubelet>,
    control_plane: Option<ControlPlane>,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn clusters_root() -> PathBuf {
    std::env::temp_dir().join("flywheel-clusters")
}

/// Removes state of clusters whose owning process is gone (killed test runs).
fn collect_garbage() {
    let shm = Path::new("/dev/shm");
    for root in [clusters_root(), shm.to_path_buf()] {
        let Ok(entries) = std::fs::read_dir(&root) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix("flywheel-").or_else(|| (root != shm).then_some(name.as_str())) else {
                continue;
            };
            let mut parts = rest.rsplit('-');
            let (_n, pid) = (parts.next(), parts.next().and_then(|p| p.parse::<u32>().ok()));
            if let Some(pid) = pid
                && !Path::new(&format!("/proc/{pid}")).exists()
            {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

impl Cluster {
    /// Starts etcd, kube-apiserver, kube-controller-manager and (optionally) the kubelet, and
    /// waits until the API server is ready, the Node is registered and the `default`
    /// ServiceAccount has its token (so Pods can be admitted).
    pub async fn start(options: ClusterOptions) -> Result<Self, ClusterError> {
        let begin = Instant::now();
        let bins = ControlPlaneBinaries::locate()?;
        collect_garbage();
        let id = format!("{}-{}-{}", options.name, std::process::id(), COUNTER.fetch_add(1, Ordering::SeqCst));
        let (dir, remove_dir) = match &options.state_dir {
            Some(d) => (d.clone(), false),
            None => (clusters_root().join(&id), true),
        };
        if !remove_dir {
            // A previous `up` in the same state dir: start from scratch, keep nothing stale.
            for sub in ["pki", "logs", "kubelet"] {
                let _ = std::fs::remove_dir_all(dir.join(sub));
            }
        }
        std::fs::create_dir_all(&dir).map_err(ClusterError::io(&dir))?;
        let shm = Path::new("/dev/shm");
        // etcd fsyncs on every write; tmpfs makes that free.
        let etcd_dir = if shm.is_dir() { shm.join(format!("flywheel-{id}")) } else { dir.join("etcd") };

        let control_plane = ControlPlane::start(&bins, &dir, &etcd_dir, &id, options.ready_timeout).await?;
        let client = kubeconfig::client_from_file(&control_plane.admin_kubeconfig).await?;
        let mut cluster = Self {
            server: control_plane.server.clone(),
            kubeconfig: control_plane.admin_kubeconfig.clone(),
            id: id.clone(),
            dir: dir.clone(),
            remove_dir,
            etcd_dir,
            client: client.clone(),
            startup: Duration::ZERO,
            kubelet: None,
            control_plane: None,
        };
        let ca_pem = control_plane.ca_pem.clone();
        cluster.control_plane = Some(control_plane);
        if options.kubelet {
            let config = KubeletConfig {
                node_name: format!("{}-node", options.name),
                root: dir.join("kubelet"),
                images: options.images.clone(),
                server: cluster.server.clone(),
                ca_pem,
                cluster_id: id,
            };
            cluster.kubelet = Some(Kubelet::start(client.clone(), config).await?);
        }
        cluster.wait_for_default_service_account(begin, options.ready_timeout).await?;
        cluster.startup = begin.elapsed();
        Ok(cluster)
    }

    async fn wait_for_default_service_account(
        &mut self,
        begin: Instant,
        timeout: Duration,
    ) -> Result<(), ClusterError> {
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), "default");
        loop {
            self.check_processes()?;
            if let Ok(Some(sa)) = api.get_opt("default").await
                && sa.secrets.is_some_and(|s| !s.is_empty())
            {
                return Ok(());
            }
            if begin.elapsed() > timeout {
                return Err(ClusterError::Timeout {
                    what: "the default ServiceAccount token".into(),
                    secs: timeout.as_secs(),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Fails if a control-plane process died.
    pub fn check_processes(&mut self) -> Result<(), ClusterError> {
        let Some(cp) = self.control_plane.as_mut() else {
            return Ok(());
        };
        let log_dir = cp.log_dir.clone();
        for child in [&mut cp.etcd, &mut cp.apiserver, &mut cp.controller_manager] {
            if let Some(status) = child.try_wait() {
                return Err(ClusterError::EarlyExit {
                    what: child.name.clone(),
                    status: status.to_string(),
                    log_tail: crate::process::log_tail(&log_dir.join(format!("{}.log", child.name)), 30),
                });
            }
        }
        Ok(())
    }

    /// Stops the kube-apiserver and starts it again with the same command line (same port,
    /// certificates, etcd and flags), waiting until /readyz answers ok (within the start
    /// timeout). etcd, the controller-manager, the kubelet and the Pods keep running, and
    /// objects stay in etcd; clients (this cluster's [`Cluster::client`], the kubelet's and the
    /// controller-manager's watches, operators under test) have to reconnect on their own,
    /// which is what tests use this for. Returns how long the API was down.
    pub async fn restart_apiserver(&mut self) -> Result<Duration, ClusterError> {
        let cp = self.control_plane.as_mut().expect("a started cluster has a control plane until stop or drop");
        cp.restart_apiserver().await
    }

    /// Admin client (system:masters).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn server(&self) -> &str {
        &self.server
    }

    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    pub fn state_dir(&self) -> &Path {
        &self.dir
    }

    /// etcd's data directory (on /dev/shm when available).
    pub fn etcd_dir(&self) -> &Path {
        &self.etcd_dir
    }

    /// Time from `start` being called to the cluster being usable.
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// Loopback range Pod addresses come from, e.g. 127.123.4.0/24.
    pub fn pod_cidr(&self) -> Option<String> {
        self.kubelet.as_ref().map(|k| k.pod_cidr())
    }

    pub fn node_name(&self) -> Option<&str> {
        self.kubelet.as_ref().map(|k| k.node_name())
    }

    /// Log files of the control-plane processes.
    pub fn control_plane_log_dir(&self) -> PathBuf {
        self.dir.join("logs")
    }

    /// Output of the latest run of a container (see [`crate::pod_logs`]).
    pub fn container_log(&self, namespace: &str, pod: &str, container: &str) -> Option<String> {
        crate::pod_logs::container_log(&self.dir, namespace, pod, container)
    }

    /// Graceful shutdown: Pods get SIGTERM, then the control plane stops in order.
    pub async fn stop(mut self) {
        if let Some(kubelet) = self.kubelet.take() {
            kubelet.kill_all();
        }
        if let Some(mut cp) = self.control_plane.take() {
            cp.stop().await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        drop(self.kubelet.take());
        drop(self.control_plane.take());
        let _ = std::fs::remove_dir_all(&self.etcd_dir);
        if self.remove_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
