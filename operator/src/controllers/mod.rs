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
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};

use crate::Error;
use crate::context::Context;

/// Transient errors retry with a short backoff; errors only the user can fix wait longer
/// (the reconcile has already written a condition and an Event for them).
fn error_policy<K>(kind: &'static str) -> impl Fn(Arc<K>, &Error, Arc<Context>) -> Action {
    move |_obj, error, ctx| {
        ctx.metrics.error(kind, error);
        tracing::warn!(kind, %error, "reconcile failed");
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
    watcher(api, config).default_backoff().reflect(writer).applied_objects().filter_map(log_watch_error(kind, "self"))
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
    let deployments = controller(scoped::<FlywheelDeployment>(&client, &namespace), &config, deployment::KIND);
    // A model that becomes Ready (or fails) after the Deployment naming it was reconciled must
    // reach the serving config right away, not at the next requeue.
    let known = deployments.store();
    let kind = deployment::KIND;
    let deployments = deployments
        .watches_stream(
            touched(scoped::<ModelVersion>(&client, &namespace), config.clone(), kind, "ModelVersion"),
            move |mv: ModelVersion| {
                let (ns, name) = (mv.namespace(), mv.name_any());
                known
                    .state()
                    .into_iter()
                    .filter(|d| d.namespace() == ns && deployment::references(d, &name))
                    .map(|d| ObjectRef::from_obj(&*d))
                    .collect::<Vec<_>>()
            },
        )
        // A pipeline's promotion request is applied by the Deployment it names, at once.
        .watches_stream(
            touched(scoped::<DataPipeline>(&client, &namespace), config.clone(), kind, "DataPipeline"),
            |p: DataPipeline| {
                let deployment = ObjectRef::new(&p.spec.deployment);
                deployment::promotion::requested(&p).then(|| match p.namespace() {
                    Some(ns) => deployment.within(&ns),
                    None => deployment,
                })
            },
        )
        .owns_stream(touched(scoped::<AppsDeployment>(&client, &namespace), config.clone(), kind, "apps/v1 Deployment"))
        .owns_stream(touched(scoped::<Service>(&client, &namespace), config.clone(), kind, "Service"))
        .owns_stream(touched(scoped::<ConfigMap>(&client, &namespace), config.clone(), kind, "ConfigMap"))
        .reconcile_all_on(every(RESYNC))
        .graceful_shutdown_on(shutdown.clone())
        .run(deployment::reconcile, error_policy(deployment::KIND), ctx.clone());
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

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    fn filtered(result: Result<u32, watcher::Error>) -> Option<u32> {
        futures::executor::block_on(log_watch_error("Test", "self")(result)).map(|r| r.expect("only objects pass"))
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
