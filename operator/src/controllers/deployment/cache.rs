//! What a Deployment's reconcile reads without asking the API server, and the children it
//! skips re-applying.
//!
//! The controller's watches fill the stores: ModelVersions and DataPipelines in full (they
//! trigger reconciles too), the owned apps/v1 Deployments without their spec (only the ready
//! replicas and metadata are read), and only the metadata of the owned ConfigMaps and Services,
//! selected by the `app.kubernetes.io/managed-by` label the operator puts on every child.
//! `managedFields` are dropped from every stored object. Secrets are never listed or watched
//! (the operator's RBAC does not allow it): the review-token Secret is created when this
//! process has not confirmed it for its Deployment in the last [`TOKEN_RECHECK`], and read
//! back by name after that, as before.
//!
//! A child is applied again only when its desired content changed or the object is not the
//! one the last apply wrote: its resourceVersion in the store differs from the one that apply
//! returned (anyone else's write, a deletion, or an operator restart all re-apply). Once
//! applied and unchanged, a child costs a reconcile no request.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flywheel_api::{DataPipeline, FlywheelDeployment, ModelVersion};
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment as AppsDeployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use kube::api::{Patch, PatchParams, PostParams};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::build;
use super::desired::Children;
use crate::context::{Context, FIELD_MANAGER};
use crate::{Error, Result};

/// The label selector of the children's watches (every child carries it, see
/// [`build::labels`]).
pub const CHILD_SELECTOR: &str = "app.kubernetes.io/managed-by=flywheel-operator";

/// The Deployment controller's context: the shared [`Context`] and its own stores.
pub struct Env {
    pub ctx: Arc<Context>,
    pub cache: Cache,
}

impl std::ops::Deref for Env {
    type Target = Context;
    fn deref(&self) -> &Context {
        &self.ctx
    }
}

/// The stores the Deployment controller's watches fill.
pub struct Cache {
    pub models: Store<ModelVersion>,
    pub pipelines: Store<DataPipeline>,
    pub apps: Store<AppsDeployment>,
    pub config_maps: Store<PartialObjectMeta<ConfigMap>>,
    pub services: Store<PartialObjectMeta<Service>>,
    applied: Mutex<Applied>,
    /// Review-token Secrets confirmed to exist, by (namespace, name, owner uid), and when.
    tokens: Mutex<HashMap<(String, String, String), Instant>>,
}

/// How long a confirmed review-token Secret is taken to exist before it is read again (a
/// deleted one is recreated at the first reconcile after this).
pub const TOKEN_RECHECK: Duration = Duration::from_secs(30);

/// Children applied by this process: (kind, namespace, name) → (hash of the applied object,
/// the resourceVersion the apply returned).
#[derive(Default)]
struct Applied {
    entries: HashMap<(&'static str, String, String), (u64, String)>,
    /// Entries of children no longer in the stores are dropped when the map outgrows this.
    prune_at: usize,
}

const PRUNE_MIN: usize = 1024;

impl Cache {
    pub fn new(
        models: Store<ModelVersion>,
        pipelines: Store<DataPipeline>,
        apps: Store<AppsDeployment>,
        config_maps: Store<PartialObjectMeta<ConfigMap>>,
        services: Store<PartialObjectMeta<Service>>,
    ) -> Self {
        let applied = Mutex::new(Applied { entries: HashMap::new(), prune_at: PRUNE_MIN });
        Self { models, pipelines, apps, config_maps, services, applied, tokens: Mutex::default() }
    }

    /// Waits until every store holds its watch's first list (at once after start-up), so an
    /// empty store never reads as "nothing exists". Fails only when a watch stopped before its
    /// first list (the controller is shutting down).
    pub async fn ready(&self) -> Result<()> {
        let not_ready = |e: kube::runtime::reflector::store::WriterDropped| {
            Error::Serialization(format!("a watch of the Deployment controller stopped: {e}"))
        };
        self.models.wait_until_ready().await.map_err(not_ready)?;
        self.pipelines.wait_until_ready().await.map_err(not_ready)?;
        self.apps.wait_until_ready().await.map_err(not_ready)?;
        self.config_maps.wait_until_ready().await.map_err(not_ready)?;
        self.services.wait_until_ready().await.map_err(not_ready)?;
        Ok(())
    }

    /// The ModelVersion `name` of `ns`: from the store, or from the API server when the store
    /// does not hold it (yet).
    pub async fn model(&self, client: &kube::Client, ns: &str, name: &str) -> Result<Option<ModelVersion>> {
        if let Some(mv) = self.models.get(&ObjectRef::new(name).within(ns)) {
            return Ok(Some(mv.as_ref().clone()));
        }
        Ok(Api::<ModelVersion>::namespaced(client.clone(), ns).get_opt(name).await?)
    }

    /// Whether the stored child is the one the last apply of `hash` wrote.
    fn current(&self, key: &(&'static str, String, String), hash: u64, stored_version: Option<String>) -> bool {
        let applied = self.applied.lock().expect("applied children lock");
        unchanged(applied.entries.get(key), hash, stored_version.as_deref())
    }

    fn record(&self, key: (&'static str, String, String), hash: u64, version: Option<String>) {
        let mut applied = self.applied.lock().expect("applied children lock");
        match version {
            Some(version) => applied.entries.insert(key, (hash, version)),
            None => applied.entries.remove(&key),
        };
        if applied.entries.len() > applied.prune_at {
            applied.entries.retain(|(kind, ns, name), _| self.stored_version(kind, ns, name).is_some());
            applied.prune_at = (2 * applied.entries.len()).max(PRUNE_MIN);
        }
    }

    fn stored_version(&self, kind: &str, ns: &str, name: &str) -> Option<String> {
        fn version<K: Resource<DynamicType = ()> + Clone>(store: &Store<K>, ns: &str, name: &str) -> Option<String> {
            store.get(&ObjectRef::new(name).within(ns)).and_then(|o| o.meta().resource_version.clone())
        }
        match kind {
            "ConfigMap" => version(&self.config_maps, ns, name),
            "Service" => version(&self.services, ns, name),
            "Deployment" => version(&self.apps, ns, name),
            _ => None,
        }
    }

    /// Server-side applies `obj` unless the store shows the object the last apply of the same
    /// content wrote.
    async fn apply<K>(&self, ctx: &Context, ns: &str, obj: &K) -> Result<()>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + Serialize
            + std::fmt::Debug,
    {
        let kind = K::kind(&());
        let name = obj.name_any();
        let hash = content_hash(obj)?;
        let key = (static_kind(&kind), ns.to_string(), name.clone());
        if self.current(&key, hash, self.stored_version(key.0, ns, &name)) {
            return Ok(());
        }
        let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
        let written = api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(obj)).await?;
        ctx.metrics.child_applied(&kind);
        self.record(key, hash, written.resource_version());
        Ok(())
    }

    /// The review-token Secret and the ConfigMap (the pods need both), then the apps/v1
    /// Deployment and the Service, each pair at once and each child only when it is not what
    /// the last apply wrote; then the HPA.
    pub async fn apply_children(&self, ctx: &Context, d: &FlywheelDeployment, children: &Children) -> Result<()> {
        use futures::future::try_join;
        let ns = d.namespace().unwrap_or_default();
        try_join(self.ensure_token_secret(&ctx.client, d, &ns), self.apply(ctx, &ns, &children.config_map)).await?;
        try_join(self.apply(ctx, &ns, &children.apps), self.apply(ctx, &ns, &children.service)).await?;
        if let Some(hpa) = &children.autoscaler {
            // Not watched (autoscaling/v2 needs Kubernetes 1.23): applied on every reconcile.
            let api: Api<HorizontalPodAutoscaler> = Api::namespaced(ctx.client.clone(), &ns);
            api.patch(&hpa.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(hpa)).await?;
            ctx.metrics.child_applied("HorizontalPodAutoscaler");
        }
        Ok(())
    }

    /// Creates the review-token Secret once; its random token is never rewritten. The first
    /// time this process sees the Deployment it creates the Secret straight away (a 409 means
    /// it exists); later it reads it by name once [`TOKEN_RECHECK`] has passed since it was
    /// last confirmed.
    async fn ensure_token_secret(&self, client: &kube::Client, d: &FlywheelDeployment, ns: &str) -> Result<()> {
        let name = build::token_secret_name(d);
        let key = (ns.to_string(), name.clone(), d.uid().unwrap_or_default());
        let confirmed = self.tokens.lock().expect("token secrets lock").get(&key).copied();
        let api: Api<Secret> = Api::namespaced(client.clone(), ns);
        match confirmed {
            Some(at) if at.elapsed() < TOKEN_RECHECK => return Ok(()),
            Some(_) if api.get_opt(&name).await?.is_some() => return self.confirm_token(key),
            _ => {}
        }
        let token = random_token().map_err(|e| Error::Serialization(format!("reading random bytes: {e}")))?;
        let mut secret = Secret::default();
        secret.metadata.name = Some(name);
        secret.metadata.labels = Some(build::labels(d));
        secret.metadata.owner_references = Some(vec![d.controller_owner_ref(&()).expect("stored object has a uid")]);
        secret.data = Some([("token".to_string(), ByteString(token.into_bytes()))].into());
        match api.create(&PostParams::default(), &secret).await {
            Ok(_) => self.confirm_token(key),
            Err(kube::Error::Api(e)) if e.code == 409 => self.confirm_token(key),
            Err(e) => Err(e.into()),
        }
    }

    fn confirm_token(&self, key: (String, String, String)) -> Result<()> {
        let mut tokens = self.tokens.lock().expect("token secrets lock");
        tokens.insert(key, Instant::now());
        if tokens.len() > PRUNE_MIN {
            // Entries past the re-check are read again anyway; dropping them bounds the map.
            tokens.retain(|_, at| at.elapsed() < TOKEN_RECHECK);
        }
        Ok(())
    }
}

/// Pure: a child need not be applied when the last apply wrote the same content and the
/// stored object is still the one that apply returned.
fn unchanged(applied: Option<&(u64, String)>, hash: u64, stored_version: Option<&str>) -> bool {
    match (applied, stored_version) {
        (Some((applied_hash, applied_version)), Some(stored)) => *applied_hash == hash && applied_version == stored,
        _ => false,
    }
}

fn content_hash<K: Serialize>(obj: &K) -> Result<u64> {
    let bytes = serde_json::to_vec(obj).map_err(|e| Error::Serialization(e.to_string()))?;
    let mut hasher = DefaultHasher::new();
    bytes.hash(&mut hasher);
    Ok(hasher.finish())
}

fn static_kind(kind: &str) -> &'static str {
    match kind {
        "ConfigMap" => "ConfigMap",
        "Service" => "Service",
        "Deployment" => "Deployment",
        _ => "Other",
    }
}

fn random_token() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_is_skipped_only_when_content_and_resource_version_match_the_last_apply() {
        let applied = (7, "100".to_string());
        assert!(unchanged(Some(&applied), 7, Some("100")));
        assert!(!unchanged(Some(&applied), 8, Some("100")), "the desired content changed");
        assert!(!unchanged(Some(&applied), 7, Some("101")), "someone else wrote the child");
        assert!(!unchanged(Some(&applied), 7, None), "the child is gone (or not seen yet)");
        assert!(!unchanged(None, 7, Some("100")), "never applied by this process");
    }

    #[test]
    fn the_hash_follows_the_content() {
        let mut a = ConfigMap::default();
        a.metadata.name = Some("x-serving".into());
        let mut b = a.clone();
        assert_eq!(content_hash(&a).unwrap(), content_hash(&b).unwrap());
        b.data = Some([("serving.json".to_string(), "{}".to_string())].into());
        assert_ne!(content_hash(&a).unwrap(), content_hash(&b).unwrap());
    }
}
