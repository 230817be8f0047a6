//! Pure builders: a Flywheel Deployment and the ModelVersions it serves → the serving
//! config, ConfigMap, apps/v1 Deployment, Service and HorizontalPodAutoscaler.

use std::collections::{BTreeMap, BTreeSet};

use flywheel_api::serving::{self, FeedbackDatasetConfig, PredictionLogConfig, ServedModel, ServingConfig};
use flywheel_api::{DatasetVersion, FlywheelDeployment, ModelVersion};
use k8s_openapi::api::apps::v1::Deployment as AppsDeployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::{Error, Result};

pub const HTTP_PORT: i32 = 8080;
pub const CONFIG_DIR: &str = "/etc/flywheel/serving";
pub const TOKEN_DIR: &str = "/etc/flywheel/review-token";
pub const MODEL_CACHE_DIR: &str = "/var/cache/flywheel/models";
/// Storage credential keys passed from a credentials Secret to the pods, each optional.
pub const CREDENTIAL_KEYS: &[&str] = &[
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ENDPOINT",
    "AWS_REGION",
    "AWS_ALLOW_HTTP",
    "GOOGLE_SERVICE_ACCOUNT_KEY",
    "AZURE_STORAGE_ACCOUNT_NAME",
    "AZURE_STORAGE_ACCOUNT_KEY",
];

/// The storage-credential variables a container takes from `secret` (each key optional).
pub fn credential_env(secret: &str) -> Vec<serde_json::Value> {
    CREDENTIAL_KEYS
        .iter()
        .map(|key| json!({"name": key, "valueFrom": {"secretKeyRef": {"name": secret, "key": key, "optional": true}}}))
        .collect()
}

/// Names of a Deployment's children.
pub fn server_name(d: &FlywheelDeployment) -> String {
    format!("{}-inference", d.name_any())
}
pub fn config_map_name(d: &FlywheelDeployment) -> String {
    format!("{}-serving", d.name_any())
}
pub fn token_secret_name(d: &FlywheelDeployment) -> String {
    format!("{}-review-token", d.name_any())
}

/// Everything the builders read besides the Deployment itself.
pub struct Inputs<'a> {
    pub champion: &'a ModelVersion,
    pub shadow: Option<&'a ModelVersion>,
    pub shadow_sample_rate: f64,
    pub feedback: Option<&'a DatasetVersion>,
    /// URL of the pipeline's review service: the pods then keep no reviews and write no samples.
    pub review_service: Option<String>,
    pub reference_statistics_uri: Option<String>,
    pub server_image: &'a str,
}

pub fn labels(d: &FlywheelDeployment) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "flywheel-inference-server".into()),
        ("app.kubernetes.io/instance".into(), d.name_any()),
        ("app.kubernetes.io/managed-by".into(), "flywheel-operator".into()),
        ("flywheel.dev/deployment".into(), d.name_any()),
    ])
}

fn served_model(mv: &ModelVersion) -> Result<ServedModel> {
    let sha256 = mv
        .status
        .as_ref()
        .and_then(|s| s.digest.clone())
        .ok_or_else(|| Error::InvalidSpec(format!("ModelVersion {} has no verified digest yet", mv.name_any())))?;
    Ok(crate::controllers::model_verification::served(mv, &sha256))
}

/// The serving config the pods load.
pub fn serving_config(d: &FlywheelDeployment, inputs: &Inputs) -> Result<ServingConfig> {
    let feedback = inputs.feedback.filter(|_| inputs.review_service.is_none()).map(|ds| FeedbackDatasetConfig {
        uri: ds.spec.uri.to_string(),
        format: Some(ds.spec.format),
        labels: ds.spec.labels.clone(),
    });
    // Through serde so the server's own defaults fill the fields the CRD does not expose.
    let prediction_log = d
        .spec
        .prediction_log
        .as_ref()
        .map(|log| {
            serde_json::from_value::<PredictionLogConfig>(json!({
                "uri": log.uri, "sampleRate": log.sample_rate, "retentionDays": log.retention_days,
            }))
        })
        .transpose()
        .map_err(|e| Error::Serialization(e.to_string()))?;
    Ok(ServingConfig {
        deployment: d.name_any(),
        champion: served_model(inputs.champion)?,
        shadow: inputs.shadow.map(served_model).transpose()?,
        confidence_threshold: d.spec.confidence_threshold as f32,
        shadow_sample_rate: inputs.shadow_sample_rate,
        prediction_log,
        feedback_dataset: feedback,
        review_service: inputs.review_service.clone().map(|url| serving::ReviewServiceConfig { url }),
        reference_statistics_uri: inputs.reference_statistics_uri.clone(),
        batching: Default::default(),
        // The pod passes the mounted token's path (FLYWHEEL_REVIEW_TOKEN_FILE).
        auth: serving::AuthConfig::default(),
    })
}

fn owner(d: &FlywheelDeployment) -> serde_json::Value {
    serde_json::to_value(d.controller_owner_ref(&()).expect("a stored Deployment has a uid")).unwrap()
}

fn metadata(d: &FlywheelDeployment, name: String) -> serde_json::Value {
    json!({
        "name": name,
        "namespace": d.namespace(),
        "labels": labels(d),
        "ownerReferences": [owner(d)],
    })
}

pub fn config_map(d: &FlywheelDeployment, config: &ServingConfig) -> Result<ConfigMap> {
    let yaml = serde_yaml::to_string(config).map_err(|e| Error::Serialization(e.to_string()))?;
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(d, config_map_name(d)),
        "data": { serving::SERVING_CONFIG_FILE: yaml },
    }))
    .map_err(|e| Error::Serialization(e.to_string()))
}

/// PersistentVolumeClaims named by pvc:// URIs, mounted where the storage layer expects them.
fn serving_claims(config: &ServingConfig) -> BTreeSet<String> {
    let mut uris = vec![config.champion.uri.clone()];
    uris.extend(config.shadow.iter().map(|s| s.uri.clone()));
    uris.extend(config.prediction_log.iter().map(|p| p.uri.clone()));
    uris.extend(config.feedback_dataset.iter().map(|f| f.uri.clone()));
    uris.extend(config.reference_statistics_uri.clone());
    pvc_claims(&uris)
}

/// The PersistentVolumeClaims pvc:// URIs name.
pub fn pvc_claims(uris: &[String]) -> BTreeSet<String> {
    uris.iter()
        .filter_map(|u| u.strip_prefix("pvc://"))
        .filter_map(|rest| rest.split('/').next())
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect()
}

/// The volume and mount of a claim a pvc:// URI names, where the storage layer looks for it.
pub fn pvc_volume(claim: &str) -> (serde_json::Value, serde_json::Value) {
    let volume = format!("pvc-{claim}");
    (
        json!({"name": volume, "persistentVolumeClaim": {"claimName": claim}}),
        json!({"name": volume, "mountPath": format!("{}/{claim}", flywheel_storage::DEFAULT_PVC_ROOT)}),
    )
}

/// The hardened security context of every container the operator runs.
pub fn security_context() -> serde_json::Value {
    json!({
        "runAsNonRoot": true,
        "runAsUser": 65532,
        "readOnlyRootFilesystem": true,
        "allowPrivilegeEscalation": false,
        "capabilities": {"drop": ["ALL"]},
    })
}

pub fn apps_deployment(
    d: &FlywheelDeployment,
    config: &ServingConfig,
    credential_secrets: &BTreeSet<String>,
    image: &str,
) -> Result<AppsDeployment> {
    let mut env = vec![
        json!({"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}),
        json!({"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}),
        json!({"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}),
        json!({"name": "FLYWHEEL_LISTEN", "value": format!("$(POD_IP):{HTTP_PORT}")}),
        json!({"name": "FLYWHEEL_SERVING_CONFIG", "value": format!("{CONFIG_DIR}/{}", serving::SERVING_CONFIG_FILE)}),
        json!({"name": "FLYWHEEL_MODEL_CACHE", "value": MODEL_CACHE_DIR}),
        json!({"name": "FLYWHEEL_REVIEW_TOKEN_FILE", "value": format!("{TOKEN_DIR}/token")}),
        json!({"name": "RAYON_NUM_THREADS", "value": "2"}),
    ];
    env.extend(credential_secrets.iter().flat_map(|s| credential_env(s)));
    let mut volumes = vec![
        json!({"name": "serving-config", "configMap": {"name": config_map_name(d)}}),
        json!({"name": "review-token", "secret": {"secretName": token_secret_name(d)}}),
        json!({"name": "model-cache", "emptyDir": {}}),
    ];
    let mut mounts = vec![
        json!({"name": "serving-config", "mountPath": CONFIG_DIR, "readOnly": true}),
        json!({"name": "review-token", "mountPath": TOKEN_DIR, "readOnly": true}),
        json!({"name": "model-cache", "mountPath": MODEL_CACHE_DIR}),
    ];
    for claim in serving_claims(config) {
        let (volume, mount) = pvc_volume(&claim);
        volumes.push(volume);
        mounts.push(mount);
    }
    let probe =
        |path: &str| json!({"httpGet": {"path": path, "port": "http"}, "periodSeconds": 5, "failureThreshold": 3});
    let replicas = if d.spec.autoscaling.is_some() { None } else { Some(d.spec.replicas) };
    let mut spec = json!({
        "selector": {"matchLabels": {"flywheel.dev/deployment": d.name_any()}},
        "template": {
            "metadata": {"labels": labels(d)},
            "spec": {
                "containers": [{
                    "name": "inference-server",
                    "image": image,
                    "ports": [{"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"}],
                    "env": env,
                    "volumeMounts": mounts,
                    "readinessProbe": probe("/v2/health/ready"),
                    "livenessProbe": probe("/v2/health/live"),
                    "resources": d.spec.resources.clone().unwrap_or_default(),
                    "securityContext": security_context(),
                }],
                "volumes": volumes,
            },
        },
    });
    if let Some(r) = replicas {
        spec["replicas"] = json!(r);
    }
    serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(d, server_name(d)),
        "spec": spec,
    }))
    .map_err(|e| Error::Serialization(e.to_string()))
}

pub fn service(d: &FlywheelDeployment) -> Result<Service> {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(d, server_name(d)),
        "spec": {
            "selector": {"flywheel.dev/deployment": d.name_any()},
            "ports": [
                {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"},
                {"name": "metrics", "port": HTTP_PORT, "targetPort": "http", "protocol": "TCP"},
            ],
        },
    }))
    .map_err(|e| Error::Serialization(e.to_string()))
}

pub fn autoscaler(d: &FlywheelDeployment) -> Result<Option<HorizontalPodAutoscaler>> {
    let Some(a) = &d.spec.autoscaling else { return Ok(None) };
    serde_json::from_value(json!({
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata(d, server_name(d)),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": server_name(d)},
            "minReplicas": a.min_replicas,
            "maxReplicas": a.max_replicas,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": a.target_cpu_utilization_percentage}}}],
        },
    }))
    .map(Some)
    .map_err(|e| Error::Serialization(e.to_string()))
}

/// In-cluster URL of the inference Service.
pub fn endpoint(d: &FlywheelDeployment) -> String {
    format!("http://{}.{}.svc:80", server_name(d), d.namespace().unwrap_or_default())
}
