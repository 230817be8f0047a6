//! One controller per kind, sharing a [`Context`].

pub mod data_pipeline;
pub mod dataset_count;
pub mod dataset_version;
pub mod deployment;
pub mod model_version;
pub mod status;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use flywheel_api::{DataPipeline, DatasetVersion, FlywheelDeployment, ModelVersion};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment as AppsDeployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};

use crate::context::Context;
use crate::Error;

/// Transient errors retry with a short backoff; errors only the user can fix wait longer
/// (the reconcile has already written a condition and an Event for them).
fn error_policy<K>(kind: &'static str) -> impl Fn(Arc<K>, &Error, Arc<Context>) -> Action {
    move |_obj, error, ctx| {
        ctx.metrics.error(kind, error);
        tracing::warn!(kind, %error, "reconcile failed");
        if error.is_user_error() { Action::requeue(Duration::from_secs(60)) } else { Action::requeue(Duration::from_secs(5)) }
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

/// Runs every controller until `shutdown` resolves.
pub async fn run(ctx: Arc<Context>, shutdown: impl Future<Output = ()> + Send + 'static) {
    let client = ctx.client.clone();
    let config = watcher::Config::default();
    let namespace = ctx.settings.namespace.clone();

    let shutdown = futures::future::FutureExt::shared(Box::pin(shutdown));

    let model_versions = Controller::new(scoped::<ModelVersion>(&client, &namespace), config.clone())
        .reconcile_all_on(every(RESYNC))
        .graceful_shutdown_on(shutdown.clone())
        .run(model_version::reconcile, error_policy(model_version::KIND), ctx.clone());
    let dataset_versions = Controller::new(scoped::<DatasetVersion>(&client, &namespace), config.clone())
        .reconcile_all_on(every(RESYNC))
        .graceful_shutdown_on(shutdown.clone())
        .run(dataset_version::reconcile, error_policy(dataset_version::KIND), ctx.clone());
    let deployments = Controller::new(scoped::<FlywheelDeployment>(&client, &namespace), config.clone());
    // A model that becomes Ready (or fails) after the Deployment naming it was reconciled must
    // reach the serving config right away, not at the next requeue.
    let known = deployments.store();
    let deployments = deployments
        .watches(scoped::<ModelVersion>(&client, &namespace), config.clone(), move |mv: ModelVersion| {
            let (ns, name) = (mv.namespace(), mv.name_any());
            known
                .state()
                .into_iter()
                .filter(|d| d.namespace() == ns && deployment::references(d, &name))
                .map(|d| ObjectRef::from_obj(&*d))
                .collect::<Vec<_>>()
        })
        .owns(scoped::<AppsDeployment>(&client, &namespace), config.clone())
        .owns(scoped::<Service>(&client, &namespace), config.clone())
        .owns(scoped::<ConfigMap>(&client, &namespace), config.clone())
        .reconcile_all_on(every(RESYNC))
        .graceful_shutdown_on(shutdown.clone())
        .run(deployment::reconcile, error_policy(deployment::KIND), ctx.clone());
    let pipelines = Controller::new(scoped::<DataPipeline>(&client, &namespace), config.clone())
        .owns(scoped::<Job>(&client, &namespace), config.clone())
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
