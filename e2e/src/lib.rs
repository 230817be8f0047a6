//! flywheel-e2e: helpers for end-to-end tests on the local cluster (flywheel-cluster).
//!
//! ```no_run
//! # async fn t() -> anyhow::Result<()> {
//! use flywheel_e2e::{TestNamespace, conditions, shared_cluster};
//! use k8s_openapi::api::apps::v1::Deployment;
//! let cluster = shared_cluster();                 // one cluster per test binary, started once
//! let ns = TestNamespace::new(cluster, "demo").await?; // deleted on drop; dumps on panic
//! ns.apply_yaml("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a: b}\n").await?;
//! ns.wait_for::<Deployment>("web", conditions::deployment_available(2), 60).await?;
//! # Ok(()) }
//! ```
//!
//! Pods run workspace binaries: image `flywheel/<x>` runs `flywheel-<x>` from FLYWHEEL_BIN_DIR,
//! or by default from the directory of the test executable's sibling `target/<profile>`.

pub mod apply;
pub mod cluster;
pub mod conditions;
pub mod dump;
pub mod namespace;
pub mod operator;
pub mod prometheus;
pub mod trainer;
pub mod wait;

pub use apply::{apply_yaml, install_crds, parse_yaml_documents};
pub use cluster::{TestCluster, shared_cluster, start_cluster, workspace_root};
pub use namespace::TestNamespace;
pub use operator::{start_operator, test_settings};
pub use trainer::generate;
pub use wait::{WaitError, wait_for};
