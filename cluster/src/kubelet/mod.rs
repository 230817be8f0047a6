//! The process kubelet: registers a Node, binds pending Pods to it (it is the scheduler too) and
//! runs each Pod's containers as local processes on the Pod's own loopback address.

mod atomic_dir;
mod container;
mod env;
pub mod images;
mod node;
mod pod_status;
mod pod_worker;
mod probes;
mod scheduler;
mod service_account;
mod volumes;

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Api, Client};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use images::ImageMap;

use crate::error::ClusterError;
use crate::ip_block::IpBlock;

/// Shared by the kubelet's loops and every Pod worker.
pub struct KubeletContext {
    pub client: Client,
    pub node_name: String,
    /// Pod directories live under `root/pods`, PVC directories under `root/claims`.
    pub root: PathBuf,
    pub images: ImageMap,
    /// API server URL and CA for the Pods' service-account kubeconfigs.
    pub server: String,
    pub ca_pem: String,
    pub cluster_id: String,
    ips: Mutex<(IpBlock, HashSet<Ipv4Addr>)>,
    /// Process groups of running containers; killed synchronously when the kubelet is dropped.
    pub process_groups: Mutex<HashSet<i32>>,
    pub recorder: Recorder,
}

impl KubeletContext {
    pub fn allocate_ip(&self) -> Option<Ipv4Addr> {
        let mut guard = self.ips.lock().expect("ip pool lock");
        let (block, in_use) = &mut *guard;
        let ip = block.allocate(in_use)?;
        in_use.insert(ip);
        Some(ip)
    }

    pub fn release_ip(&self, ip: Ipv4Addr) {
        self.ips.lock().expect("ip pool lock").1.remove(&ip);
    }

    pub fn pod_cidr(&self) -> String {
        self.ips.lock().expect("ip pool lock").0.cidr()
    }

    /// Directory of one Pod, `pods/<namespace>_<name>_<uid>` like /var/log/pods.
    pub fn pod_dir(&self, namespace: &str, name: &str, uid: &str) -> PathBuf {
        self.root.join("pods").join(format!("{namespace}_{name}_{uid}"))
    }
}

/// Settings for [`Kubelet::start`].
pub struct KubeletConfig {
    pub node_name: String,
    pub root: PathBuf,
    pub images: ImageMap,
    pub server: String,
    pub ca_pem: String,
    pub cluster_id: String,
}

/// The running kubelet; dropping it stops all Pods' processes.
pub struct Kubelet {
    ctx: Arc<KubeletContext>,
    tasks: Vec<JoinHandle<()>>,
}

impl Kubelet {
    /// Registers the Node and starts the scheduler and Pod sync loops.
    pub async fn start(client: Client, config: KubeletConfig) -> Result<Self, ClusterError> {
        std::fs::create_dir_all(config.root.join("pods")).map_err(ClusterError::io(&config.root))?;
        let block = IpBlock::reserve()?;
        let reporter = Reporter { controller: "kubelet".into(), instance: Some(config.node_name.clone()) };
        let ctx = Arc::new(KubeletContext {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            node_name: config.node_name,
            root: config.root,
            images: config.images,
            server: config.server,
            ca_pem: config.ca_pem,
            cluster_id: config.cluster_id,
            ips: Mutex::new((block, HashSet::new())),
            process_groups: Mutex::new(HashSet::new()),
        });
        node::register(&ctx).await?;
        let tasks = vec![tokio::spawn(scheduler::run(ctx.clone())), tokio::spawn(sync_pods(ctx.clone()))];
        Ok(Self { ctx, tasks })
    }

    pub fn node_name(&self) -> &str {
        &self.ctx.node_name
    }

    pub fn pod_cidr(&self) -> String {
        self.ctx.pod_cidr()
    }

    pub fn root(&self) -> &Path {
        &self.ctx.root
    }

    /// Kills every container process now (SIGKILL to each process group).
    pub fn kill_all(&self) {
        for pgid in self.ctx.process_groups.lock().expect("pgid lock").drain() {
            crate::process::signal_group(pgid, libc::SIGKILL);
        }
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        self.kill_all();
    }
}

/// One worker task per Pod UID bound to this node; Pod updates reach it through a watch channel,
/// and dropping the sender (Pod gone from the API) tells it to stop at once.
async fn sync_pods(ctx: Arc<KubeletContext>) {
    let pods: Api<Pod> = Api::all(ctx.client.clone());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={}", ctx.node_name));
    let mut workers: HashMap<String, (watch::Sender<Pod>, JoinHandle<()>)> = HashMap::new();
    let mut seen_in_relist: HashSet<String> = HashSet::new();
    let mut stream = watcher(pods, config).boxed();
    loop {
        let event = match stream.try_next().await {
            Ok(Some(event)) => event,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "pod watch failed; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                continue;
            }
        };
        workers.retain(|_, (_, task)| !task.is_finished());
        match event {
            watcher::Event::Init => seen_in_relist.clear(),
            watcher::Event::InitApply(pod) | watcher::Event::Apply(pod) => {
                let Some(uid) = pod.metadata.uid.clone() else {
                    continue;
                };
                seen_in_relist.insert(uid.clone());
                match workers.get(&uid) {
                    Some((tx, _)) => {
                        let _ = tx.send(pod);
                    }
                    None => {
                        let (tx, rx) = watch::channel(pod);
                        let task = tokio::spawn(pod_worker::run(ctx.clone(), rx));
                        workers.insert(uid, (tx, task));
                    }
                }
            }
            watcher::Event::InitDone => {
                workers.retain(|uid, _| seen_in_relist.contains(uid));
            }
            watcher::Event::Delete(pod) => {
                if let Some(uid) = pod.metadata.uid {
                    workers.remove(&uid);
                }
            }
        }
    }
}
