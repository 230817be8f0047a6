//! Conditions for [`crate::wait_for`]: `Fn(Option<&K>) -> bool` (None = object absent).

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;

/// The object exists.
pub fn exists<K>() -> impl Fn(Option<&K>) -> bool {
    |o| o.is_some()
}

/// The object is gone.
pub fn deleted<K>() -> impl Fn(Option<&K>) -> bool {
    |o| o.is_none()
}

pub fn pod_phase(phase: &'static str) -> impl Fn(Option<&Pod>) -> bool {
    move |p| p.and_then(|p| p.status.as_ref()?.phase.as_deref()) == Some(phase)
}

pub fn pod_ready() -> impl Fn(Option<&Pod>) -> bool {
    |p| {
        p.and_then(|p| p.status.as_ref()?.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    }
}

/// A Job condition (`Complete`, `Failed`) is True.
pub fn job_condition(type_: &'static str) -> impl Fn(Option<&Job>) -> bool {
    move |j| {
        j.and_then(|j| j.status.as_ref()?.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == type_ && c.status == "True"))
    }
}

/// The Deployment has `replicas` available, updated replicas and an observed generation.
pub fn deployment_available(replicas: i32) -> impl Fn(Option<&Deployment>) -> bool {
    move |d| {
        d.is_some_and(|d| {
            let s = d.status.clone().unwrap_or_default();
            s.available_replicas == Some(replicas)
                && s.updated_replicas == Some(replicas)
                && s.observed_generation >= d.metadata.generation
        })
    }
}

/// A status condition of a custom resource (`status.conditions[type=...].status == "True"`),
/// for the dynamic API.
pub fn status_condition(type_: &'static str) -> impl Fn(Option<&kube::api::DynamicObject>) -> bool {
    move |o| {
        o.and_then(|o| o.data.get("status")?.get("conditions")?.as_array().cloned()).is_some_and(|cs| {
            cs.iter().any(|c| {
                c.get("type").and_then(|t| t.as_str()) == Some(type_)
                    && c.get("status").and_then(|s| s.as_str()) == Some("True")
            })
        })
    }
}
