//! Builder tests from YAML fixtures.

use flywheel_api::training::{REQUEST_ENV, TrainRequest, TrainResult};
use flywheel_api::{DataPipeline, DatasetVersion, ModelVersion};
use k8s_openapi::api::batch::v1::Job;

use super::build::*;
use super::decide::RunState;

fn object<T: serde::de::DeserializeOwned>(yaml: &str) -> T {
    serde_yaml::from_str(yaml).unwrap()
}

fn pipeline() -> DataPipeline {
    object(
        "apiVersion: flywheel.dev/v1alpha1\nkind: DataPipeline\nmetadata: {name: shapes, namespace: ns, uid: p-1}
spec:
  deployment: shapes
  trainingData: {datasetVersion: train}
  feedbackLoop: {datasetVersion: fb}
  continuousTraining: {trigger: {reviewedSamples: 5}, hyperparameters: {epochs: 2}}",
    )
}

fn dataset(name: &str, uri: &str) -> DatasetVersion {
    object(&format!(
        "apiVersion: flywheel.dev/v1alpha1\nkind: DatasetVersion\nmetadata: {{name: {name}, namespace: ns, generation: 2}}\nspec: {{uri: '{uri}', format: coco, task: detection, labels: [a], credentials: {{secretName: store}}}}"
    ))
}

fn base() -> ModelVersion {
    object(
        "apiVersion: flywheel.dev/v1alpha1\nkind: ModelVersion\nmetadata: {name: m-v1, namespace: ns}
spec: {model: shapes, version: v1, task: detection, labels: [a], artifact: {uri: 's3://b/m.onnx', sha256: 'aa'}, input: {width: 8, height: 8}, output: {decoder: yolo}}",
    )
}

fn settings() -> JobSettings {
    JobSettings {
        image: "flywheel/trainer:1".into(),
        credential_secrets: ["store".to_string()].into(),
        resources: None,
    }
}

fn request_of(job: &Job) -> serde_json::Value {
    let env = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0].env.clone().unwrap();
    serde_json::from_str(env.iter().find(|e| e.name == REQUEST_ENV).unwrap().value.as_deref().unwrap()).unwrap()
}

#[test]
fn job_names_are_deterministic_and_bounded() {
    let p = pipeline();
    assert_eq!(training_job_name(&p, 3), "shapes-train-3");
    assert_eq!(model_version_name(&p, 3), "shapes-r3");
    assert_eq!(profile_job_name(&p, &dataset("train", "s3://b/t/")), "shapes-profile-train-g2");
    let mut long = pipeline();
    long.metadata.name = Some("x".repeat(80));
    let name = training_job_name(&long, 1);
    assert!(name.len() <= 63);
    assert_eq!(name, training_job_name(&long, 1));
    assert_ne!(name, training_job_name(&long, 2));
}

#[test]
fn training_job_carries_the_request_run_and_trigger_count() {
    let p = pipeline();
    let request = train_request(
        &p,
        &base(),
        vec![named(&dataset("train", "s3://b/t/"))],
        None,
        output_uri("s3://out", &p, "runs/1"),
    );
    let job = training_job(&p, 1, 7, &request, &settings()).unwrap();
    assert_eq!(job.metadata.name.as_deref(), Some("shapes-train-1"));
    let run = run_from_job(&job).unwrap();
    assert_eq!(
        (run.number, run.reviewed_at_trigger, run.base_model.as_str(), run.state),
        (1, 7, "m-v1", RunState::Running)
    );
    let parsed: TrainRequest = serde_json::from_value(request_of(&job)).unwrap();
    assert_eq!(parsed.output_uri.as_str(), "s3://out/ns/shapes/runs/1/");
    assert_eq!(parsed.hyperparameters.epochs, 2);
    assert_eq!(parsed.base_model.name, "m-v1");
    let spec = job.spec.unwrap();
    assert_eq!(spec.template.spec.as_ref().unwrap().restart_policy.as_deref(), Some("Never"));
    assert_eq!(job.metadata.owner_references.unwrap()[0].name, "shapes");
    let env = spec.template.spec.unwrap().containers[0].env.clone().unwrap();
    assert!(env.iter().any(|e| e.name == "AWS_ACCESS_KEY_ID"
        && e.value_from.as_ref().unwrap().secret_key_ref.as_ref().unwrap().name == "store"));
}

#[test]
fn profile_job_mounts_pvc_datasets() {
    let p = pipeline();
    let ds = dataset("train", "pvc://data/shapes/");
    let job = profile_job(&p, &ds, "pvc://data/out/", &settings()).unwrap();
    assert_eq!(request_of(&job)["outputUri"], "pvc://data/out/");
    let pod = job.spec.unwrap().template.spec.unwrap();
    assert_eq!(pod.volumes.unwrap()[0].persistent_volume_claim.as_ref().unwrap().claim_name, "data");
    assert_eq!(pod.containers[0].args.clone().unwrap(), vec!["profile"]);
}

#[test]
fn job_status_becomes_run_state() {
    let mut job: Job = object(
        "metadata: {name: shapes-train-2, labels: {flywheel.dev/run: '2'}, annotations: {flywheel.dev/reviewed-at-trigger: '10'}}",
    );
    assert_eq!(run_from_job(&job).unwrap().state, RunState::Running);
    job.status = Some(object("succeeded: 1"));
    assert_eq!(run_from_job(&job).unwrap().state, RunState::Succeeded);
    job.status =
        Some(object("conditions: [{type: Failed, status: 'True', reason: BackoffLimitExceeded, message: too many}]"));
    assert!(matches!(run_from_job(&job).unwrap().state, RunState::Failed(m) if m.contains("BackoffLimitExceeded")));
    let unrelated: Job = object("metadata: {name: other}");
    assert!(run_from_job(&unrelated).is_none());
}

#[test]
fn trained_model_keeps_the_contract_and_records_provenance() {
    let p = pipeline();
    let job =
        training_job(&p, 4, 20, &train_request(&p, &base(), vec![], None, "s3://o/".into()), &settings()).unwrap();
    let run = run_from_job(&job).unwrap();
    let result: TrainResult = object(
        "{modelUri: 's3://o/model.onnx', sha256: bb, sizeBytes: 10, baseMetrics: {mAP50: 0.4}, metrics: {mAP50: 0.5}, trainSamples: 30, evalSamples: 8}",
    );
    let mv = trained_model_version(&p, &run, &base(), vec!["train".into(), "fb".into()], &result, Some("store".into()));
    assert_eq!(mv.metadata.name.as_deref(), Some("shapes-r4"));
    assert_eq!(mv.spec.version, "v1-r4");
    assert_eq!(mv.spec.artifact.uri.as_str(), "s3://o/model.onnx");
    assert_eq!(mv.spec.artifact.sha256.as_deref(), Some("bb"));
    assert_eq!(mv.spec.input, base().spec.input);
    assert_eq!(mv.spec.metrics["mAP50"], 0.5);
    let provenance = mv.spec.provenance.unwrap();
    assert_eq!(provenance.parent.as_deref(), Some("m-v1"));
    assert_eq!(provenance.job.as_deref(), Some("shapes-train-4"));
    assert_eq!(provenance.dataset_versions, vec!["train", "fb"]);
    assert_eq!(provenance.hyperparameters["epochs"], "2");
}

fn refs(training: Option<DatasetVersion>, feedback: Option<DatasetVersion>) -> super::read::Refs {
    let deployment = object(
        "apiVersion: flywheel.dev/v1alpha1\nkind: Deployment\nmetadata: {name: shapes}\nspec: {champion: {modelVersion: m-v1}}",
    );
    super::read::Refs { deployment, training, feedback, output_base: Some("s3://b/out".into()) }
}

fn feedback_dataset(secret: &str) -> DatasetVersion {
    object(&format!(
        "apiVersion: flywheel.dev/v1alpha1\nkind: DatasetVersion\nmetadata: {{name: fb, namespace: ns}}\nspec: {{uri: 's3://b/fb/', format: coco, task: detection, labels: [a], feedback: true, credentials: {{secretName: {secret}}}}}"
    ))
}

#[test]
fn a_job_gets_the_credentials_of_one_secret_or_is_refused_naming_both() {
    use super::read::job_secret_uses;
    use crate::controllers::trust::one_secret;
    let train = dataset("train", "s3://b/t/");
    let same = refs(Some(train.clone()), Some(feedback_dataset("store")));
    let mut base_model = base();
    assert_eq!(one_secret(&job_secret_uses(&same, &[&train], Some(&base_model))), Ok(Some("store".into())));

    let other = refs(Some(train.clone()), Some(feedback_dataset("feedback-store")));
    let clash = one_secret(&job_secret_uses(&other, &[&train], None)).unwrap_err();
    assert!(
        clash.starts_with(
            "feedback DatasetVersion \"fb\" (spec.credentials) names Secret \"feedback-store\" and DatasetVersion \
             \"train\" (spec.credentials) names Secret \"store\""
        ),
        "{clash}"
    );
    base_model.spec.artifact.credentials = Some(flywheel_api::CredentialsRef { secret_name: "models".into() });
    let clash = one_secret(&job_secret_uses(&same, &[&train], Some(&base_model))).unwrap_err();
    assert!(
        clash.contains("base ModelVersion \"m-v1\" (spec.artifact.credentials) names Secret \"models\""),
        "{clash}"
    );
}

#[test]
fn a_pipeline_is_checked_before_anything_is_read_and_against_what_it_names() {
    use super::validate::{references, spec};
    let p = pipeline();
    assert_eq!(spec(&p, false), Ok(()));
    let mut local = pipeline();
    local.spec.output_uri = Some(flywheel_api::StorageUri("file:///home/operator".into()));
    let (reason, message) = spec(&local, false).unwrap_err();
    assert_eq!(reason, "LocalFilesNotAllowed");
    assert!(message.starts_with("spec.outputUri is a file:// URI"), "{message}");
    assert_eq!(spec(&local, true), Ok(()));
    let mut same = pipeline();
    same.spec.feedback_loop.as_mut().unwrap().dataset_version = "train".into();
    let (reason, message) = spec(&same, false).unwrap_err();
    assert_eq!(reason, "InvalidSpec");
    assert!(message.starts_with("spec.feedbackLoop.datasetVersion"), "{message}");

    let train = dataset("train", "s3://b/t/");
    assert_eq!(references(&refs(Some(train.clone()), Some(feedback_dataset("store")))), Ok(()));
    let not_feedback = references(&refs(Some(train.clone()), Some(dataset("fb", "s3://b/fb/")))).unwrap_err();
    assert!(not_feedback.starts_with("spec.feedbackLoop.datasetVersion names DatasetVersion \"fb\""), "{not_feedback}");
    assert!(not_feedback.contains("spec.feedback: true"), "{not_feedback}");
    let mut classes = feedback_dataset("store");
    classes.spec.task = flywheel_api::Task::Classification;
    let mismatch = references(&refs(Some(train), Some(classes))).unwrap_err();
    assert!(mismatch.contains("holds classification data") && mismatch.contains("holds detection"), "{mismatch}");
}

#[test]
fn a_trainer_of_ones_own_replaces_image_command_args_resources_and_adds_env_but_keeps_the_contract() {
    let mut p: DataPipeline = object(
        "apiVersion: flywheel.dev/v1alpha1\nkind: DataPipeline\nmetadata: {name: shapes, namespace: ns, uid: p-1}
spec:
  deployment: shapes
  feedbackLoop: {datasetVersion: fb}
  continuousTraining:
    trigger: {reviewedSamples: 5}
    resources: {requests: {cpu: '1'}}
    trainer:
      image: registry.example.com/team/trainer:1.4
      command: [python, /app/train.py]
      args: [--scale, '2']
      resources: {requests: {cpu: '2'}, limits: {nvidia.com/gpu: 1, memory: 8Gi}}
      env: [{name: EPOCH_SCALE, value: '2'}, {name: RAYON_NUM_THREADS, value: '8'}, {name: AWS_REGION, value: x}]",
    );
    let ds = dataset("fb", "pvc://data/fb/");
    let request = train_request(&p, &base(), vec![named(&ds)], None, "pvc://data/out/runs/1/".into());
    let job = training_job(&p, 1, 5, &request, &settings()).unwrap();
    // The request is the built-in trainer's, unchanged.
    let parsed: TrainRequest = serde_json::from_value(request_of(&job)).unwrap();
    assert_eq!(parsed, request);
    let run = run_from_job(&job).unwrap();
    assert_eq!((run.number, run.reviewed_at_trigger, run.base_model.as_str()), (1, 5, "m-v1"));
    let pod = job.spec.clone().unwrap().template.spec.unwrap();
    let c = &pod.containers[0];
    assert_eq!(c.name, "trainer");
    assert_eq!(c.image.as_deref(), Some("registry.example.com/team/trainer:1.4"));
    assert_eq!(c.command.clone().unwrap(), vec!["python", "/app/train.py"]);
    assert_eq!(c.args.clone().unwrap(), vec!["--scale", "2"]);
    let resources = c.resources.clone().unwrap();
    assert_eq!(resources.limits.unwrap()["nvidia.com/gpu"].0, "1");
    assert_eq!(resources.requests.unwrap()["cpu"].0, "2");
    let env = c.env.clone().unwrap();
    let values = |name: &str| env.iter().filter(|e| e.name == name).collect::<Vec<_>>();
    assert_eq!(values("EPOCH_SCALE")[0].value.as_deref(), Some("2"));
    let rayon = values("RAYON_NUM_THREADS");
    assert_eq!((rayon.len(), rayon[0].value.as_deref()), (1, Some("8")), "the trainer's own value, once");
    // Credentials still come from the Secret only: the trainer's AWS_REGION is not added.
    let region = values("AWS_REGION");
    assert_eq!(region.len(), 1);
    assert_eq!(region[0].value_from.as_ref().unwrap().secret_key_ref.as_ref().unwrap().name, "store");
    assert_eq!(values(REQUEST_ENV).len(), 1);
    // The PVC the request names is mounted, as for the built-in trainer.
    assert_eq!(pod.volumes.unwrap()[0].persistent_volume_claim.as_ref().unwrap().claim_name, "data");
    assert_eq!(c.volume_mounts.clone().unwrap()[0].mount_path, "/var/lib/flywheel/pvc/data");
    assert_eq!(c.security_context.as_ref().unwrap().run_as_non_root, Some(true));

    // Without a command the image's entrypoint runs, with the trainer's args only; without
    // resources of its own, continuousTraining.resources apply.
    let trainer = p.spec.continuous_training.as_mut().unwrap().trainer.as_mut().unwrap();
    trainer.command.clear();
    trainer.args.clear();
    trainer.resources = None;
    let settings =
        JobSettings { resources: p.spec.continuous_training.as_ref().unwrap().resources.clone(), ..settings() };
    let job = training_job(&p, 2, 10, &request, &settings).unwrap();
    let c = job.spec.unwrap().template.spec.unwrap().containers.remove(0);
    assert_eq!((c.command, c.args.unwrap_or_default()), (None, Vec::<String>::new()));
    assert_eq!(c.resources.unwrap().requests.unwrap()["cpu"].0, "1");

    // Profiling Jobs always run the built-in trainer.
    let profile = profile_job(&p, &ds, "pvc://data/out/", &settings).unwrap();
    let c = profile.spec.unwrap().template.spec.unwrap().containers.remove(0);
    assert_eq!((c.image.as_deref(), c.args.unwrap()), (Some("flywheel/trainer:1"), vec!["profile".to_string()]));
}

#[test]
fn the_built_in_trainer_runs_train_with_its_own_image() {
    let p = pipeline();
    let job = training_job(&p, 1, 5, &train_request(&p, &base(), vec![], None, "s3://o/".into()), &settings()).unwrap();
    let c = job.spec.unwrap().template.spec.unwrap().containers.remove(0);
    assert_eq!(
        (c.image.as_deref(), c.command, c.args.unwrap()),
        (Some("flywheel/trainer:1"), None, vec!["train".to_string()])
    );
    let env = c.env.unwrap();
    assert!(env.iter().any(|e| e.name == "RAYON_NUM_THREADS" && e.value.as_deref() == Some("2")));
}
