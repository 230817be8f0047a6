//! The review service's children and status, from YAML fixtures.

use flywheel_api::{DataPipeline, DatasetVersion, FlywheelDeployment, Task};
use serde_json::json;

use super::review_service::*;

fn object<T: serde::de::DeserializeOwned>(yaml: &str) -> T {
    serde_yaml::from_str(yaml).unwrap()
}

fn pipeline(database: &str) -> DataPipeline {
    object(&format!(
        "apiVersion: flywheel.dev/v1alpha1\nkind: DataPipeline\nmetadata: {{name: loop, namespace: ns, uid: p-1}}
spec:
  deployment: shapes
  feedbackLoop: {{datasetVersion: fb{database}}}"
    ))
}

fn deployment(log: bool) -> FlywheelDeployment {
    let log = if log { ", predictionLog: {uri: 's3://b/log/'}" } else { "" };
    object(&format!(
        "apiVersion: flywheel.dev/v1alpha1\nkind: Deployment\nmetadata: {{name: shapes, namespace: ns, uid: d-1}}\nspec: {{champion: {{modelVersion: m-v1}}, replicas: 3{log}}}"
    ))
}

fn feedback() -> DatasetVersion {
    object(
        "apiVersion: flywheel.dev/v1alpha1\nkind: DatasetVersion\nmetadata: {name: fb, namespace: ns}\nspec: {uri: 'pvc://data/fb/', format: yolo, task: detection, labels: [cat, dog], feedback: true}",
    )
}

fn build(p: &DataPipeline) -> (serde_json::Value, Option<serde_json::Value>, serde_json::Value) {
    let (d, fb) = (deployment(true), feedback());
    let inputs = Inputs {
        deployment: &d,
        feedback: &fb,
        task: Task::Detection,
        labels: vec!["cat".into(), "dog".into()],
        credentials: Some("store".into()),
        token_secret: "shapes-review-token".into(),
        image: "flywheel/review-service:1",
    };
    let c = children(p, &inputs).unwrap();
    (
        serde_json::to_value(&c.apps).unwrap(),
        c.claim.map(|c| serde_json::to_value(c).unwrap()),
        serde_json::to_value(&c.service).unwrap(),
    )
}

#[test]
fn sqlite_on_a_claim_one_replica_recreated_owned_by_the_pipeline() {
    let p = pipeline("");
    let (apps, claim, service) = build(&p);
    assert_eq!(apps["metadata"]["name"], "loop-review");
    assert_eq!(apps["metadata"]["ownerReferences"][0]["uid"], "p-1");
    assert_eq!(
        (apps["spec"]["replicas"].clone(), apps["spec"]["strategy"]["type"].clone()),
        (json!(1), json!("Recreate"))
    );
    let pod = &apps["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(c["image"], "flywheel/review-service:1");
    let args: Vec<&str> = c["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    for want in [
        "--listen=$(POD_IP):8090",
        "--log-uri=s3://b/log/",
        "--feedback-uri=pvc://data/fb/",
        "--feedback-format=yolo",
        "--task=detection",
        "--labels=cat,dog",
        "--token-file=/etc/flywheel/review-token/token",
    ] {
        assert!(args.contains(&want), "{want} not in {args:?}");
    }
    assert!(args.contains(&"--sqlite-file=/var/lib/flywheel/review/reviews.db"), "{args:?}");
    let env = c["env"].as_array().unwrap();
    assert!(env.iter().all(|e| e["name"] != "FLYWHEEL_REVIEW_DATABASE_URL"));
    assert!(env.iter().any(|e| e["name"] == "AWS_ACCESS_KEY_ID" && e["valueFrom"]["secretKeyRef"]["name"] == "store"));
    let claim = claim.expect("a claim for SQLite");
    assert_eq!(claim["metadata"]["name"], "loop-review-db");
    let claims: Vec<&str> = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["persistentVolumeClaim"]["claimName"].as_str())
        .collect();
    assert_eq!(claims, ["loop-review-db", "data"], "the database and the pvc:// feedback dataset");
    assert_eq!(pod["volumes"][0]["secret"]["secretName"], "shapes-review-token");
    assert_eq!(service["spec"]["selector"], json!({"flywheel.dev/review-service": "loop"}));
    let pod_labels = &apps["spec"]["template"]["metadata"]["labels"];
    assert_eq!(pod_labels["flywheel.dev/review-for"], "shapes");
    assert!(pod_labels.get("flywheel.dev/deployment").is_none(), "never selected as an inference pod");
    assert_eq!(url(&p), "http://loop-review.ns.svc:8090");
}

#[test]
fn postgresql_from_a_secret_needs_no_claim() {
    let (apps, claim, _) = build(&pipeline(", database: {secretName: pg}"));
    assert!(claim.is_none());
    let env = apps["spec"]["template"]["spec"]["containers"][0]["env"].as_array().unwrap().clone();
    let db = env.iter().find(|e| e["name"] == "FLYWHEEL_REVIEW_DATABASE_URL").unwrap();
    assert_eq!(db["valueFrom"]["secretKeyRef"], json!({"name": "pg", "key": "url"}));
    let args = apps["spec"]["template"]["spec"]["containers"][0]["args"].as_array().unwrap().clone();
    assert!(args.iter().all(|a| !a.as_str().unwrap().starts_with("--sqlite-file")));
    assert_eq!(database_kind(&pipeline(", database: {secretName: pg}")), "postgresql");
}

#[test]
fn wanted_only_with_a_feedback_loop_and_a_prediction_log() {
    assert!(wanted(&pipeline(""), &deployment(true)));
    assert!(!wanted(&pipeline(""), &deployment(false)));
    assert!(!wanted(&pipeline(", enabled: false"), &deployment(true)));
}

#[test]
fn status_takes_the_figures_of_the_served_pair() {
    let p = pipeline("");
    let answer = json!({
        "totals": {"predictions": 90, "reviewed": 40, "written": 38},
        "quality": [
            {"championModel": {"model": "m", "version": "m-v1"}, "shadowModel": null, "metric": "mAP50", "reviewedSamples": 10, "champion": 0.4, "shadow": null},
            {"championModel": {"model": "m", "version": "m-v1"}, "shadowModel": {"model": "m", "version": "loop-r1"}, "metric": "mAP50", "reviewedSamples": 30, "champion": 0.5, "shadow": 0.7},
        ],
    });
    let s = status(&p, &answer, Some("m-v1"), Some("loop-r1"));
    assert_eq!((s.predictions, s.reviewed, s.written), (Some(90), Some(40), Some(38)));
    let q = s.quality.unwrap();
    assert_eq!((q.reviewed_samples, q.champion, q.shadow), (30, Some(0.5), Some(0.7)));
    assert_eq!(q.shadow_model_version.as_deref(), Some("loop-r1"));
    let alone = status(&p, &answer, Some("m-v1"), None).quality.unwrap();
    assert_eq!((alone.reviewed_samples, alone.champion), (10, Some(0.4)));
    assert!(status(&p, &answer, Some("m-v2"), None).quality.is_none());
    assert!(status(&p, &answer, None, None).quality.is_none());
}
