//! One controller per kind, sharing a [`Context`].

pub mod data_pipeline;
pub mod dataset_version;
pub mod deployment;
pub mod model_verification;
pub mod model_version;
pub mod recorder;
pub mod status;
pub mod trust;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use flywheel_api::{DataPipeline, DatasetVersion, FlywheelDeployment, ModelVersion};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment as AppsDeployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};

use crate::Error;
use crate::context::Context;

/// Transient errors retry with a short backoff; errors only the user can fix wait longer
/// (the reconcile has already written a condition and an Event for them).
fn error_policy<K: Resource>(kind: &'static str) -> impl Fn(Arc<K>, &Error, Arc<Context>) -> Action {
    move |obj, error, ctx| {
        ctx.metrics.error(kind, error);
        let (namespace, name) = (obj.namespace().unwrap_or_default(), obj.name_any());
        tracing::warn!(kind, %namespace, %name, %error, "reconcile failed");
        if error.is_user_error() {
            Action::requeue(Duration::from_secs(60))
        } else {
            Action::requeue(Duration::from_secs(5))
        }
    }
}

async fn drain<S, T, E>(kind: &'static str, stream: S)
where
    S: futures::Stream<Item = Result<T, E>>,
    E: std::fmt::Display,
{
    stream
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(kind, error = %e, "controller event");
            }
        })
        .await
}

fn scoped<K>(client: &kube::Client, namespace: &Option<String>) -> Api<K>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Ticks every `period`. kube-runtime drops a reconcile whose object is not in its store yet
/// (e.g. created while the watcher re-lists under load) and never retries it; a periodic
/// reconcile of everything bounds how long such an object can go unnoticed.
fn every(period: Duration) -> impl futures::Stream<Item = ()> + Send + 'static {
    futures::stream::unfold((), move |_| async move {
        tokio::time::sleep(period).await;
        Some(((), ()))
    })
}

const RESYNC: Duration = Duration::from_secs(120);

/// Deployment reconciles in flight at once. Unbounded, a burst of new Deployments opens one
/// API connection per reconcile and holds every reconcile's buffers at the same time; bounded,
/// the same work queues in the controller instead.
const DEPLOYMENT_CONCURRENCY: u16 = 16;

/// Logs a watch error and drops it from the trigger stream. Each watch backs off on its own
/// (see [`touched`]); an error reaching the Controller would instead pause every watch of
/// that controller. After an API server restart each watch reports 410 Gone once, and with
/// one shared backoff those pauses compound to minutes during which the store stays stale.
fn log_watch_error<K>(
    kind: &'static str,
    watch: &'static str,
) -> impl FnMut(Result<K, watcher::Error>) -> futures::future::Ready<Option<Result<K, watcher::Error>>> {
    move |result| {
        futures::future::ready(match result {
            Ok(obj) => Some(Ok(obj)),
            Err(watcher::Error::WatchError(status)) if status.code == 410 => {
                tracing::debug!(kind, watch, "watch expired; re-listing");
                None
            }
            Err(error) => {
                tracing::warn!(kind, watch, %error, "watch failed; retrying with backoff");
                None
            }
        })
    }
}

/// Drops what no reconcile reads from a stored object: `managedFields` (often the bulk of
/// its metadata).
fn lean<K: Resource>(obj: &mut K) {
    obj.meta_mut().managed_fields = None;
}

/// A controller's own objects: reflected into `writer`'s store, one backoff for this watch.
fn reflected<K>(
    api: Api<K>,
    config: watcher::Config,
    writer: reflector::store::Writer<K>,
    kind: &'static str,
) -> impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    settled(watcher(api, config).default_backoff().modify(lean).reflect(writer), false)
        .filter_map(log_watch_error(kind, "self"))
}

/// The objects of a reflected watch, as `applied_objects` (or `touched_objects` with
/// `deletes`) yields them, except that the objects of a (re-)list come out once the list is
/// complete, when the store holds them. kube-runtime's Controller looks each triggered object
/// up in its store and silently drops the reconcile of one that is not there; during a
/// re-list the store still holds the state before it, so objects created while the watch was
/// down (e.g. closed by a loaded API server) would be dropped until the next resync.
fn settled<K, S>(events: S, deletes: bool) -> impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: Send + 'static,
    S: futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
{
    events
        .scan(Vec::new(), move |listed, event| {
            let out = match event {
                Ok(watcher::Event::Apply(obj)) => vec![Ok(obj)],
                Ok(watcher::Event::Delete(obj)) if deletes => vec![Ok(obj)],
                Ok(watcher::Event::Delete(_)) => Vec::new(),
                Ok(watcher::Event::Init) => {
                    listed.clear();
                    Vec::new()
                }
                Ok(watcher::Event::InitApply(obj)) => {
                    listed.push(obj);
                    Vec::new()
                }
                Ok(watcher::Event::InitDone) => std::mem::take(listed).into_iter().map(Ok).collect(),
                Err(e) => vec![Err(e)],
            };
            futures::future::ready(Some(futures::stream::iter(out)))
        })
        .flatten()
}

/// Objects of a related kind (owned or referenced) that a reconcile reads: `events` (full
/// objects, or metadata only for a `PartialObjectMeta` Api) trimmed by `trim` and reflected into `writer`'s store, one
/// backoff for this watch. The store is updated before the object triggers a reconcile.
fn stored<K, S>(
    events: S,
    writer: reflector::store::Writer<K>,
    trim: fn(&mut K),
    kind: &'static str,
    watch: &'static str,
) -> impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + Send + Sync + 'static,
    S: futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
{
    settled(events.default_backoff().modify(trim).reflect(writer), true).filter_map(log_watch_error(kind, watch))
}

/// Objects of a related kind (owned or referenced), one backoff for this watch.
fn touched<K>(
    api: Api<K>,
    config: watcher::Config,
    kind: &'static str,
    watch: &'static str,
) -> impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    watcher(api, config).default_backoff().touched_objects().filter_map(log_watch_error(kind, watch))
}

/// A Controller over `api`'s objects whose watch backs off on its own.
fn controller<K>(api: Api<K>, config: &watcher::Config, kind: &'static str) -> Controller<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    Controller::for_stream(reflected(api, config.clone(), writer, kind), reader)
}

/// Runs every controller until `shutdown` resolves.
pub async fn run(ctx: Arc<Context>, shutdown: impl Future<Output = ()> + Send + 'static) {
    let client = ctx.client.clone();
    let config = watcher::Config::default();
    let namespace = ctx.settings.namespace.clone();

    let shutdown = futures::future::FutureExt::shared(Box::pin(shutdown));

    let model_versions = controller(scoped::<ModelVersion>(&client, &namespace), &config, model_version::KIND)
        .reconcile_all_on(every(RESYNC))
        .graceful_shutdown_on(shutdown.clone())
        .run(model_version::reconcile, error_policy(model_version::KIND), ctx.clone());
    let dataset_versions = controller(scoped::<DatasetVersion>(&client, &namespace), &config, dataset_version::KIND)
        .reconcile_all_on(every(RESYNC))
        .graceful_shutdown_on(shutdown.clone())
        .run(dataset_version::reconcile, error_policy(dataset_version::KIND), ctx.clone());
    let deployments = deployment_controller(ctx.clone(), &client, &namespace, &config, shutdown.clone());
    let pipelines = controller(scoped::<DataPipeline>(&client, &namespace), &config, data_pipeline::KIND)
        .owns_stream(touched(scoped::<Job>(&client, &namespace), config.clone(), data_pipeline::KIND, "Job"))
        .reconcile_all_on(every(RESYNC))
        .graceful_shutdown_on(shutdown.clone())
        .run(data_pipeline::reconcile, error_policy(data_pipeline::KIND), ctx.clone());

    tokio::join!(
        drain(model_version::KIND, model_versions),
        drain(dataset_version::KIND, dataset_versions),
        drain(deployment::KIND, deployments),
        drain(data_pipeline::KIND, pipelines),
    );
}

/// The Deployment controller. Its reconcile reads the related objects from the stores of its
/// watches ([`deployment::Cache`]); the owned ConfigMaps and Services are watched by metadata
/// only, and only those carrying the operator's managed-by label (as are the apps/v1
/// Deployments). Secrets are never listed or watched (the RBAC does not allow it).
fn deployment_controller(
    ctx: Arc<Context>,
    client: &kube::Client,
    namespace: &Option<String>,
    config: &watcher::Config,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> impl futures::Stream<Item = Result<(ObjectRef<FlywheelDeployment>, Action), impl std::fmt::Display>> {
    let kind = deployment::KIND;
    let children = config.clone().labels(deployment::cache::CHILD_SELECTOR);
    let (models, models_writer) = reflector::store();
    let (pipelines, pipelines_writer) = reflector::store();
    let (apps, apps_writer) = reflector::store();
    let (config_maps, config_maps_writer) = reflector::store();
    let (services, services_writer) = reflector::store();
    let cache = deployment::Cache::new(models, pipelines, apps, config_maps, services);

    let deployments = controller(scoped::<FlywheelDeployment>(client, namespace), config, kind);
    // A model that becomes Ready (or fails) after the Deployment naming it was reconciled must
    // reach the serving config right away, not at the next requeue.
    let known = deployments.store();
    let model_versions = watcher(scoped::<ModelVersion>(client, namespace), config.clone());
    let data_pipelines = watcher(scoped::<DataPipeline>(client, namespace), config.clone());
    let apps_deployments = watcher(scoped::<AppsDeployment>(client, namespace), children.clone());
    let env = Arc::new(deployment::Env { ctx, cache });
    deployments
        .with_config(
            controller::Config::default().concurrency(
                std::env::var("FLYWHEEL_EXPERIMENT_CONCURRENCY")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(DEPLOYMENT_CONCURRENCY),
            ),
        )
        .watches_stream(stored(model_versions, models_writer, lean, kind, "ModelVersion"), move |mv: ModelVersion| {
            let (ns, name) = (mv.namespace(), mv.name_any());
            known
                .state()
                .into_iter()
                .filter(|d| d.namespace() == ns && deployment::references(d, &name))
                .map(|d| ObjectRef::from_obj(&*d))
                .collect::<Vec<_>>()
        })
        // A pipeline's promotion request is applied by the Deployment it names, at once.
        .watches_stream(stored(data_pipelines, pipelines_writer, lean, kind, "DataPipeline"), |p: DataPipeline| {
            let deployment = ObjectRef::new(&p.spec.deployment);
            deployment::promotion::requested(&p).then(|| match p.namespace() {
                Some(ns) => deployment.within(&ns),
                None => deployment,
            })
        })
        // Only the ready replicas and the metadata of the apps/v1 Deployments are read.
        .owns_stream(stored(apps_deployments, apps_writer, lean_apps, kind, "apps/v1 Deployment"))
        .owns_stream(stored(
            watcher(scoped::<PartialObjectMeta<Service>>(client, namespace), children.clone()),
            services_writer,
            lean,
            kind,
            "Service",
        ))
        .owns_stream(stored(
            watcher(scoped::<PartialObjectMeta<ConfigMap>>(client, namespace), children),
            config_maps_writer,
            lean,
            kind,
            "ConfigMap",
        ))
        .reconcile_all_on(every(RESYNC))
        .graceful_shutdown_on(shutdown)
        .run(
            deployment::reconcile,
            |d, error, env: Arc<deployment::Env>| error_policy(kind)(d, error, env.ctx.clone()),
            env,
        )
}

/// An apps/v1 Deployment as the Deployment controller keeps it: metadata and status.
fn lean_apps(apps: &mut AppsDeployment) {
    lean(apps);
    apps.spec = None;
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    fn filtered(result: Result<u32, watcher::Error>) -> Option<u32> {
        futures::executor::block_on(log_watch_error("Test", "self")(result)).map(|r| r.expect("only objects pass"))
    }

    fn settled_of(events: Vec<watcher::Event<u32>>, deletes: bool) -> Vec<u32> {
        let stream = settled(futures::stream::iter(events.into_iter().map(Ok)), deletes);
        futures::executor::block_on(stream.map(|r| r.expect("no errors")).collect())
    }

    #[test]
    fn listed_objects_trigger_once_the_list_is_complete() {
        use watcher::Event::*;
        let events =
            vec![Init, InitApply(1), InitApply(2), Apply(9), InitDone, Apply(3), Delete(4), Init, InitApply(5)];
        assert_eq!(settled_of(events.clone(), false), [9, 1, 2, 3]);
        assert_eq!(settled_of(events, true), [9, 1, 2, 3, 4], "an unfinished list triggers nothing");
    }

    #[test]
    fn objects_pass_and_watch_errors_stay_out_of_the_trigger_stream() {
        assert_eq!(filtered(Ok(7)), Some(7));
        let gone = Status { code: 410, reason: "Expired".into(), ..Default::default() };
        assert_eq!(filtered(Err(watcher::Error::WatchError(Box::new(gone)))), None);
        let forbidden = Status { code: 403, reason: "Forbidden".into(), ..Default::default() };
        assert_eq!(filtered(Err(watcher::Error::WatchError(Box::new(forbidden)))), None);
        assert_eq!(filtered(Err(watcher::Error::NoResourceVersion)), None);
    }
}
