//! Build: the children a Deployment should have, from what was read (pure).

use std::collections::BTreeSet;

use flywheel_api::FlywheelDeployment;
use k8s_openapi::api::apps::v1::Deployment as AppsDeployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::ResourceExt;

use super::build;
use super::read::Observed;
use super::validate::Verdict;
use crate::Result;

/// The objects to apply, and the models they serve.
#[derive(Debug)]
pub struct Children {
    pub config_map: ConfigMap,
    pub apps: AppsDeployment,
    pub service: Service,
    pub autoscaler: Option<HorizontalPodAutoscaler>,
    pub champion: String,
    pub shadow: Option<String>,
    pub endpoint: String,
}

/// The children serving the observed models; None when the champion cannot serve or the
/// pods' credentials cannot be given (the running children are then left as they are, so the
/// previous model keeps serving).
pub fn children(
    d: &FlywheelDeployment,
    observed: &Observed,
    verdict: &Verdict,
    server_image: &str,
) -> Result<Option<Children>> {
    let Some(champion) = observed.champion.as_ref().filter(|_| verdict.blocked().is_none()) else { return Ok(None) };
    let shadow = verdict.serving_shadow(observed);
    let inputs = build::Inputs {
        champion,
        shadow,
        shadow_sample_rate: d.spec.shadow.as_ref().map_or(1.0, |s| s.sample_rate),
        feedback: observed.feedback.as_ref(),
        review_service: observed
            .pipeline
            .as_ref()
            .filter(|p| crate::controllers::data_pipeline::review_service::wanted(p, d))
            .map(crate::controllers::data_pipeline::review_service::url),
        reference_statistics_uri: observed
            .pipeline
            .as_ref()
            .and_then(|p| p.status.as_ref())
            .and_then(|s| s.reference_statistics_uri.clone()),
        server_image,
    };
    let config = build::serving_config(d, &inputs)?;
    // One Secret at most (validate::validate refuses two), checked for its label by the reconcile.
    let secrets: BTreeSet<String> = verdict.secret.iter().cloned().collect();
    Ok(Some(Children {
        config_map: build::config_map(d, &config)?,
        apps: build::apps_deployment(d, &config, &secrets, server_image)?,
        service: build::service(d)?,
        autoscaler: build::autoscaler(d)?,
        champion: observed.champion_name.clone(),
        shadow: shadow.map(|s| s.name_any()),
        endpoint: build::endpoint(d),
    }))
}
