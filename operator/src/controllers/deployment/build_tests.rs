//! Builder tests from YAML fixtures.

use std::collections::BTreeSet;

use flywheel_api::serving::{Decoder, ServingConfig, Task};
use flywheel_api::{DatasetVersion, FlywheelDeployment, ModelVersion};
use kube::Resource;

use super::build::*;

fn object<T: serde::de::DeserializeOwned>(yaml: &str) -> T {
    serde_yaml::from_str(yaml).unwrap()
}

fn deployment(extra: &str) -> FlywheelDeployment {
    object(&format!(
        "apiVersion: flywheel.dev/v1alpha1\nkind: Deployment\nmetadata: {{name: shapes, namespace: ns, uid: u-1}}\nspec:\n  champion: {{modelVersion: m-v1}}\n{extra}"
    ))
}

fn model(name: &str, digest: Option<&str>, decoder: &str) -> ModelVersion {
    let status = digest.map(|d| format!("status: {{phase: Ready, digest: {d}}}")).unwrap_or_default();
    object(&format!(
        "apiVersion: flywheel.dev/v1alpha1\nkind: ModelVersion\nmetadata: {{name: {name}, namespace: ns}}
spec:
  model: shapes
  version: v1
  task: detection
  labels: [circle, square]
  artifact: {{uri: 's3://b/{name}.onnx', credentials: {{secretName: store}}}}
  input: {{width: 64, height: 32, resize: letterbox}}
  output: {{decoder: {decoder}}}
{status}"
    ))
}

fn feedback() -> DatasetVersion {
    object(
        "apiVersion: flywheel.dev/v1alpha1\nkind: DatasetVersion\nmetadata: {name: fb, namespace: ns}\nspec: {uri: 's3://b/fb/', format: coco, task: detection, labels: [circle], feedback: true}",
    )
}

fn config(d: &FlywheelDeployment, champion: &ModelVersion, shadow: Option<&ModelVersion>) -> ServingConfig {
    let fb = feedback();
    let inputs = Inputs {
        champion,
        shadow,
        shadow_sample_rate: 0.25,
        feedback: Some(&fb),
        review_service: None,
        reference_statistics_uri: Some("s3://b/ref.json".into()),
        server_image: "img",
    };
    serving_config(d, &inputs).unwrap()
}

#[test]
fn serving_config_carries_models_threshold_and_loop_uris() {
    let d = deployment("  confidenceThreshold: 0.4\n  predictionLog: {uri: 's3://b/log/', sampleRate: 0.5}\n");
    let champion = model("m-v1", Some("aa"), "yolo");
    let shadow = model("m-v2", Some("bb"), "logits");
    let c = config(&d, &champion, Some(&shadow));
    assert_eq!(c.deployment, "shapes");
    assert_eq!(c.confidence_threshold, 0.4);
    assert_eq!(c.shadow_sample_rate, 0.25);
    assert_eq!(c.champion.sha256, "aa");
    assert_eq!(c.champion.version, "m-v1");
    assert_eq!(c.champion.task, Task::Detection);
    assert_eq!((c.champion.input.width, c.champion.input.height), (64, 32));
    assert_eq!(c.champion.output.decoder, Decoder::Yolo);
    assert_eq!(c.shadow.as_ref().unwrap().output.decoder, Decoder::Logits);
    assert_eq!(c.prediction_log.as_ref().unwrap().sample_rate, 0.5);
    assert_eq!(c.feedback_dataset.as_ref().unwrap().uri, "s3://b/fb/");
    assert_eq!(c.reference_statistics_uri.as_deref(), Some("s3://b/ref.json"));
}

#[test]
fn an_unverified_champion_is_refused() {
    let d = deployment("");
    let inputs = Inputs {
        champion: &model("m-v1", None, "yolo"),
        shadow: None,
        shadow_sample_rate: 1.0,
        feedback: None,
        review_service: None,
        reference_statistics_uri: None,
        server_image: "img",
    };
    let err = serving_config(&d, &inputs).unwrap_err().to_string();
    assert!(err.contains("m-v1") && err.contains("digest"), "{err}");
}

#[test]
fn config_map_holds_the_config_and_an_owner_reference() {
    let d = deployment("");
    let c = config(&d, &model("m-v1", Some("aa"), "yolo"), None);
    let cm = config_map(&d, &c).unwrap();
    assert_eq!(cm.metadata.name.as_deref(), Some("shapes-serving"));
    let owner = &cm.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!((owner.kind.as_str(), owner.name.as_str(), owner.controller), ("Deployment", "shapes", Some(true)));
    let text = &cm.data.as_ref().unwrap()["serving.yaml"];
    let parsed: ServingConfig = serde_yaml::from_str(text).unwrap();
    assert_eq!(parsed, c);
}

#[test]
fn pod_template_does_not_depend_on_threshold_or_shadow() {
    let champion = model("m-v1", Some("aa"), "yolo");
    let shadow = model("m-v2", Some("bb"), "yolo");
    let secrets = BTreeSet::from(["store".to_string()]);
    let a = deployment("  confidenceThreshold: 0.3\n");
    let b = deployment("  confidenceThreshold: 0.9\n  shadow: {modelVersion: m-v2}\n");
    let ta = apps_deployment(&a, &config(&a, &champion, None), &secrets, "img").unwrap();
    let tb = apps_deployment(&b, &config(&b, &champion, Some(&shadow)), &secrets, "img").unwrap();
    assert_eq!(ta.spec.as_ref().unwrap().template, tb.spec.as_ref().unwrap().template, "a hot swap, not a rollout");
}

#[test]
fn pods_get_credentials_by_secret_key_ref_probes_and_mounts() {
    let d = deployment("  replicas: 3\n  resources: {requests: {cpu: 250m}}\n");
    let c = config(&d, &model("m-v1", Some("aa"), "yolo"), None);
    let apps = apps_deployment(&d, &c, &BTreeSet::from(["store".to_string()]), "flywheel/inference-server:1").unwrap();
    let spec = apps.spec.unwrap();
    assert_eq!(spec.replicas, Some(3));
    let pod = spec.template.spec.unwrap();
    let container = &pod.containers[0];
    assert_eq!(container.image.as_deref(), Some("flywheel/inference-server:1"));
    let env = container.env.clone().unwrap();
    let key = env.iter().find(|e| e.name == "AWS_SECRET_ACCESS_KEY").unwrap();
    let selector = key.value_from.as_ref().unwrap().secret_key_ref.as_ref().unwrap();
    assert_eq!(selector.name, "store");
    assert!(
        env.iter().all(|e| e.value.as_deref().is_none_or(|v| !v.contains("secret"))),
        "no credential values in the spec"
    );
    assert!(env.iter().any(|e| e.name == "FLYWHEEL_LISTEN" && e.value.as_deref() == Some("$(POD_IP):8080")));
    assert_eq!(
        container.readiness_probe.as_ref().unwrap().http_get.as_ref().unwrap().path.as_deref(),
        Some("/v2/health/ready")
    );
    let mounts: Vec<_> = container.volume_mounts.iter().flatten().map(|m| m.mount_path.as_str()).collect();
    assert!(mounts.contains(&CONFIG_DIR) && mounts.contains(&MODEL_CACHE_DIR) && mounts.contains(&TOKEN_DIR));
    assert_eq!(container.resources.as_ref().unwrap().requests.as_ref().unwrap()["cpu"].0, "250m");
    assert_eq!(container.security_context.as_ref().unwrap().read_only_root_filesystem, Some(true));
    assert_eq!(apps.metadata.owner_references.unwrap()[0].uid, d.meta().uid.clone().unwrap());
}

#[test]
fn pvc_uris_are_mounted_under_the_pvc_root() {
    let d = deployment("");
    let mut champion = model("m-v1", Some("aa"), "yolo");
    champion.spec.artifact.uri = flywheel_api::StorageUri("pvc://models/shapes/v1.onnx".into());
    let c = config(&d, &champion, None);
    let apps = apps_deployment(&d, &c, &BTreeSet::new(), "img").unwrap();
    let pod = apps.spec.unwrap().template.spec.unwrap();
    assert!(
        pod.volumes
            .unwrap()
            .iter()
            .any(|v| v.persistent_volume_claim.as_ref().is_some_and(|p| p.claim_name == "models"))
    );
    assert!(pod.containers[0].volume_mounts.iter().flatten().any(|m| m.mount_path == "/var/lib/flywheel/pvc/models"));
}

#[test]
fn service_exposes_inference_and_metrics() {
    let svc = service(&deployment("")).unwrap();
    let ports: Vec<_> = svc.spec.unwrap().ports.unwrap().into_iter().map(|p| (p.name.unwrap(), p.port)).collect();
    assert_eq!(ports, vec![("http".to_string(), 80), ("metrics".to_string(), 8080)]);
    assert_eq!(endpoint(&deployment("")), "http://shapes-inference.ns.svc:80");
}

#[test]
fn autoscaling_makes_an_hpa_and_leaves_replicas_to_it() {
    let d = deployment("  autoscaling: {maxReplicas: 5}\n");
    let hpa = autoscaler(&d).unwrap().unwrap().spec.unwrap();
    assert_eq!((hpa.min_replicas, hpa.max_replicas), (Some(1), 5));
    assert_eq!(hpa.scale_target_ref.name, "shapes-inference");
    let c = config(&d, &model("m-v1", Some("aa"), "yolo"), None);
    assert_eq!(apps_deployment(&d, &c, &BTreeSet::new(), "img").unwrap().spec.unwrap().replicas, None);
    assert!(autoscaler(&deployment("")).unwrap().is_none());
}

#[test]
fn every_decoder_reaches_the_server_with_the_model_versions_output_spec() {
    let d = deployment("");
    let champion = model("m-v1", Some("aa"), "boxesScores");
    let inputs = Inputs {
        champion: &champion,
        shadow: None,
        shadow_sample_rate: 1.0,
        feedback: None,
        review_service: None,
        reference_statistics_uri: None,
        server_image: "img",
    };
    let config = serving_config(&d, &inputs).unwrap();
    assert_eq!(config.champion.output, champion.spec.output);
}

#[test]
fn unservable_models_name_the_reason() {
    assert_eq!(super::unservable("m", None).unwrap().0, "ModelVersionNotFound");
    assert_eq!(super::unservable("m", Some(&model("m", None, "yolo"))).unwrap().0, "ModelVersionNotReady");
    assert!(super::unservable("m", Some(&model("m", Some("aa"), "yolo"))).is_none());
}

#[test]
fn a_deployment_references_its_spec_models_and_the_models_it_serves() {
    use super::references;
    let d = deployment(
        "  shadow: {modelVersion: m-v2}\nstatus:\n  champion: p-r1\n  promotionHistory:\n  - {time: '2026-01-01T00:00:00Z', role: champion, modelVersion: p-r1, reason: PromotionGate}\n",
    );
    for name in ["m-v1", "m-v2", "p-r1"] {
        assert!(references(&d, name), "{name}");
    }
    assert!(!references(&d, "m-v9"));
}

fn observed(
    champion: ModelVersion,
    shadow: Option<ModelVersion>,
    feedback: Option<DatasetVersion>,
) -> super::read::Observed {
    super::read::Observed {
        champion_name: champion.metadata.name.clone().unwrap(),
        shadow_name: shadow.as_ref().and_then(|s| s.metadata.name.clone()),
        champion: Some(champion),
        shadow,
        pipeline: None,
        feedback,
    }
}

fn with_secret<T: serde::Serialize + serde::de::DeserializeOwned>(obj: T, pointer: &str, secret: &str) -> T {
    let mut value = serde_json::to_value(obj).unwrap();
    let (parent, field) = pointer.rsplit_once('/').unwrap();
    value.pointer_mut(parent).unwrap()[field] = serde_json::json!({"secretName": secret});
    serde_json::from_value(value).unwrap()
}

#[test]
fn two_credentials_secrets_are_refused_naming_both_and_change_no_child() {
    use super::validate::validate;
    let champion = model("m-v1", Some("aa"), "yolo");
    let shadow = with_secret(model("m-v2", Some("bb"), "yolo"), "/spec/artifact/credentials", "shadow-store");
    let d = deployment("  shadow: {modelVersion: m-v2}\n");
    let o = observed(champion.clone(), Some(shadow), None);
    let verdict = validate(&o);
    let (reason, message) = verdict.credentials.clone().expect("refused");
    assert_eq!(reason, "ConflictingCredentials");
    assert!(
        message.starts_with(
            "champion ModelVersion \"m-v1\" (spec.artifact.credentials) names Secret \"store\" and shadow \
             ModelVersion \"m-v2\" (spec.artifact.credentials) names Secret \"shadow-store\""
        ),
        "{message}"
    );
    assert!(super::desired::children(&d, &o, &verdict, "img").unwrap().is_none(), "the running children stay");

    let fb = with_secret(feedback(), "/spec/credentials", "feedback-store");
    let verdict = validate(&observed(champion.clone(), None, Some(fb)));
    let message = verdict.credentials.unwrap().1;
    assert!(message.contains("feedback DatasetVersion \"fb\" (spec.credentials) names Secret \"feedback-store\""));
}

#[test]
fn one_shared_secret_reaches_the_pods_once() {
    use super::validate::validate;
    let champion = model("m-v1", Some("aa"), "yolo");
    let shadow = model("m-v2", Some("bb"), "yolo");
    let fb = with_secret(feedback(), "/spec/credentials", "store");
    let d = deployment("  shadow: {modelVersion: m-v2}\n");
    let o = observed(champion, Some(shadow), Some(fb));
    let verdict = validate(&o);
    assert_eq!((verdict.credentials.as_ref(), verdict.secret.as_deref()), (None, Some("store")));
    let children = super::desired::children(&d, &o, &verdict, "img").unwrap().unwrap();
    let env = &children.apps.spec.unwrap().template.spec.unwrap().containers[0].env.clone().unwrap();
    let from_store = env
        .iter()
        .filter(|e| e.value_from.as_ref().and_then(|v| v.secret_key_ref.as_ref()).is_some_and(|r| r.name == "store"))
        .count();
    assert_eq!(from_store, CREDENTIAL_KEYS.len(), "each variable once");

    // A shadow that cannot serve is left out, and so is its Secret.
    let unready = with_secret(model("m-v2", None, "yolo"), "/spec/artifact/credentials", "other");
    let verdict = validate(&observed(model("m-v1", Some("aa"), "yolo"), Some(unready), None));
    assert!(verdict.shadow.is_some());
    assert_eq!((verdict.credentials, verdict.secret.as_deref()), (None, Some("store")));
}

#[test]
fn a_refused_secret_blocks_the_children_and_is_announced() {
    use super::read::Pods;
    use super::report::{record, requeue};
    use super::validate::validate;
    let o = observed(model("m-v1", Some("aa"), "yolo"), None, None);
    let mut verdict = validate(&o);
    verdict.credentials = Some(("CredentialsNotAllowed".into(), "Secret \"store\" is not labelled".into()));
    assert!(super::desired::children(&deployment(""), &o, &verdict, "img").unwrap().is_none());
    let mut status = flywheel_api::DeploymentStatus::default();
    let at = k8s_openapi::jiff::Timestamp::from_second(1).unwrap();
    let pods = || Pods { ready: 0, statuses: vec![] };
    let notices = record(&mut status, Some(1), &o, &verdict, None, &pods(), at);
    assert!(notices.iter().any(|n| n.warning && n.reason == "CredentialsNotAllowed"), "{notices:?}");
    let ready = flywheel_api::condition::find(&status.conditions, "Ready").unwrap();
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "CredentialsNotAllowed"));
    assert!(
        record(&mut status, Some(1), &o, &verdict, None, &pods(), at)
            .iter()
            .all(|n| n.reason != "CredentialsNotAllowed")
    );
    assert_eq!(requeue(&verdict, 0), std::time::Duration::from_secs(30));
}

#[test]
fn an_invalid_spec_is_announced_once_naming_the_field() {
    let d = deployment("  shadow: {modelVersion: m-v1}\n");
    let message = flywheel_api::validation::deployment("shapes", &d.spec).unwrap_err();
    let mut status = flywheel_api::DeploymentStatus::default();
    let at = k8s_openapi::jiff::Timestamp::from_second(1).unwrap();
    let notices = super::report::invalid_spec(&mut status, Some(2), message.clone(), at);
    assert_eq!(notices.len(), 1);
    assert_eq!((notices[0].warning, notices[0].reason.as_str(), notices[0].action), (true, "InvalidSpec", "Validate"));
    assert!(notices[0].message.starts_with("spec.shadow.modelVersion"), "{}", notices[0].message);
    assert_eq!(status.observed_generation, Some(2));
    assert!(super::report::invalid_spec(&mut status, Some(2), message, at).is_empty());
}
