//! flywheel-cluster: a local Kubernetes cluster without containers.
//!
//! Real etcd, kube-apiserver and kube-controller-manager run on loopback; a process kubelet
//! registers a Node, binds Pods and runs their containers as local processes, each Pod on its
//! own 127.x.y.z address (given to the process as `POD_IP`; Flywheel's binaries bind it).
//! Every process dies with the cluster (process groups, PR_SET_PDEATHSIG, kill on drop).

pub mod certs;
pub mod cluster;
pub mod control_plane;
pub mod error;
pub mod install;
pub mod ip_block;
pub mod kubeconfig;
pub mod kubelet;
pub mod leftovers;
pub mod paths;
pub mod pod_logs;
pub mod process;

pub use cluster::{Cluster, ClusterOptions};
pub use error::ClusterError;
pub use kubelet::ImageMap;
pub use leftovers::{Leftover, find_leftovers};
pub use paths::{ControlPlaneBinaries, KUBERNETES_VERSION, cache_dir};
