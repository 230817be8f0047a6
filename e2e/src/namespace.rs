//! A namespace per test: created with a unique name, deleted when dropped; if the test panics,
//! the namespace's Pods, Events and logs are printed first.

use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{DeleteParams, DynamicObject, PostParams};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;

use crate::apply::{ApplyError, apply_yaml};
use crate::cluster::TestCluster;
use crate::dump::dump_namespace;
use crate::wait::{WaitError, wait_for};

pub struct TestNamespace {
    pub name: String,
    pub client: Client,
    pub cluster: TestCluster,
}

fn suffix() -> String {
    let mut buf = [0u8; 3];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut buf);
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

impl TestNamespace {
    /// Creates `<prefix>-<random>` and waits until its `default` ServiceAccount has a token,
    /// so Pods can be created right away.
    pub async fn new(cluster: &TestCluster, prefix: &str) -> Result<Self, WaitError> {
        let client = cluster.client().await;
        let name = format!("{prefix}-{}", suffix());
        let ns = Namespace {
            metadata: kube::api::ObjectMeta { name: Some(name.clone()), ..Default::default() },
            ..Default::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .map_err(|source| WaitError::Kube { what: format!("namespace {name}"), source })?;
        let this = Self { name, client, cluster: cluster.clone() };
        let has_token =
            |sa: Option<&ServiceAccount>| sa.and_then(|s| s.secrets.as_ref()).is_some_and(|s| !s.is_empty());
        this.wait_for::<ServiceAccount>("default", has_token, 60).await?;
        Ok(this)
    }

    /// Typed API for a namespaced kind in this namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// Server-side applies multi-document YAML; objects without a namespace land here.
    pub async fn apply_yaml(&self, yaml: &str) -> Result<Vec<DynamicObject>, ApplyError> {
        apply_yaml(&self.client, Some(&self.name), yaml).await
    }

    /// [`wait_for`] in this namespace; a timeout error includes a dump of the namespace.
    pub async fn wait_for<K>(
        &self,
        name: &str,
        condition: impl Fn(Option<&K>) -> bool,
        timeout_secs: u64,
    ) -> Result<Option<K>, WaitError>
    where
        K: Resource<Scope = NamespaceResourceScope> + Clone + DeserializeOwned + Debug + serde::Serialize,
        <K as Resource>::DynamicType: Default,
    {
        match wait_for(&self.api::<K>(), name, condition, timeout_secs).await {
            Err(e @ WaitError::Timeout { .. }) => Err(e.with_dump(self.dump().await)),
            other => other,
        }
    }

    /// Address of a ready Pod behind a Service (there is no kube-proxy: ClusterIPs are not
    /// routed, so clients use the Endpoints the real endpoints controller publishes).
    /// `port` is the Service port's name, or "" for the first port.
    pub async fn service_address(
        &self,
        service: &str,
        port: &str,
        timeout_secs: u64,
    ) -> Result<std::net::SocketAddr, WaitError> {
        use k8s_openapi::api::core::v1::Endpoints;
        let pick = |e: Option<&Endpoints>| -> Option<std::net::SocketAddr> {
            e?.subsets.as_ref()?.iter().find_map(|subset| {
                let ip = subset.addresses.as_ref()?.first()?.ip.parse().ok()?;
                let p = subset.ports.as_ref()?.iter().find(|p| port.is_empty() || p.name.as_deref() == Some(port))?;
                Some(std::net::SocketAddr::new(ip, u16::try_from(p.port).ok()?))
            })
        };
        let endpoints = self.wait_for::<Endpoints>(service, |e| pick(e).is_some(), timeout_secs).await?;
        Ok(pick(endpoints.as_ref()).expect("condition held"))
    }

    /// Pods (with container states), Events and container log tails of this namespace.
    pub async fn dump(&self) -> String {
        dump_namespace(&self.client, &self.cluster, &self.name).await
    }

    /// Latest run's output of a container of a Pod in this namespace.
    pub fn container_log(&self, pod: &str, container: &str) -> Option<String> {
        self.cluster.container_log(&self.name, pod, container)
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        let keep = std::env::var_os("FLYWHEEL_E2E_KEEP_NAMESPACES").is_some();
        let (cluster, name) = (self.cluster.clone(), self.name.clone());
        // Drop cannot await, and this runtime may be shutting down: use a short-lived one.
        let worker = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async move {
                let client = cluster.client().await;
                if panicking {
                    eprintln!("{}", dump_namespace(&client, &cluster, &name).await);
                }
                if !keep {
                    let _ = Api::<Namespace>::all(client).delete(&name, &DeleteParams::default()).await;
                }
            });
        });
        let _ = worker.join();
    }
}
