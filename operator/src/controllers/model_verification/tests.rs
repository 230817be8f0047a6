use flywheel_api::ModelVersionSpec;
use flywheel_types::verification::TensorSignature;
use k8s_openapi::api::core::v1::{ContainerState, ContainerStateTerminated, ContainerStatus, PodStatus};

use super::*;

fn model_version(name: &str) -> ModelVersion {
    let spec: ModelVersionSpec = serde_yaml::from_str(
        "model: shapes\nversion: v1\ntask: detection\nlabels: [a, b]\nartifact: {uri: 'pvc://models/shapes/v1.onnx', credentials: {secretName: store}}\ninput: {width: 64, height: 64}",
    )
    .unwrap();
    let mut mv = ModelVersion::new(name, spec);
    mv.metadata.namespace = Some("ns".into());
    mv.metadata.uid = Some("u-1".into());
    mv.metadata.generation = Some(2);
    mv
}

fn digest() -> String {
    "e2ac0808285324d326fced1555974645930187b0b2ee653e8681916f6286e8de".into()
}

fn pod(exit_code: i32, message: &str) -> Pod {
    Pod {
        status: Some(PodStatus {
            container_statuses: Some(vec![ContainerStatus {
                state: Some(ContainerState {
                    terminated: Some(ContainerStateTerminated {
                        exit_code,
                        message: Some(message.into()),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn at(s: i64) -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::from_second(s).unwrap()
}

#[test]
fn the_job_runs_the_server_verify_command_with_the_model_credentials_and_claim() {
    let mv = model_version("shapes-v1");
    let model = served(&mv, &digest());
    let job = job(&mv, &model, "flywheel/inference-server:1").unwrap();
    let v = serde_json::to_value(&job).unwrap();
    assert_eq!(v["metadata"]["name"], job_name(&mv, &model));
    assert_eq!(v["metadata"]["ownerReferences"][0]["name"], "shapes-v1");
    let pod = &v["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!((c["image"].as_str(), c["args"][0].as_str()), (Some("flywheel/inference-server:1"), Some("verify")));
    let env = |name: &str| c["env"].as_array().unwrap().iter().find(|e| e["name"] == name).cloned();
    let described: ServedModel =
        serde_json::from_str(env("FLYWHEEL_VERIFY_MODEL").unwrap()["value"].as_str().unwrap()).unwrap();
    assert_eq!(described, model);
    assert_eq!(env("FLYWHEEL_VERIFY_REPORT").unwrap()["value"], "/dev/termination-log");
    assert_eq!(env("AWS_ACCESS_KEY_ID").unwrap()["valueFrom"]["secretKeyRef"]["name"], "store");
    assert_eq!(pod["volumes"][1]["persistentVolumeClaim"]["claimName"], "models");
    assert_eq!(v["spec"]["backoffLimit"], 0);
}

#[test]
fn job_names_follow_digest_and_contract_and_fit_63_characters() {
    let mv = model_version(&"m".repeat(63));
    let model = served(&mv, &digest());
    let name = job_name(&mv, &model);
    assert!(name.len() <= 63 && name.contains("-verify-e2ac0808-"), "{name}");
    let mut relabelled = model.clone();
    relabelled.labels.push("c".into());
    assert_ne!(job_name(&mv, &relabelled), name);
}

#[test]
fn the_report_is_read_from_the_termination_message_for_this_digest_and_contract_only() {
    let mv = model_version("m");
    let model = served(&mv, &digest());
    let report = Report {
        digest: digest(),
        contract: contract_hash(&model),
        passed: true,
        inputs: vec![TensorSignature { name: "images".into(), datatype: "FP32".into(), shape: vec![-1, 3, 64, 64] }],
        parameters: 12,
        ..Default::default()
    };
    let json = serde_json::to_string(&report).unwrap();
    assert_eq!(report_of(&pod(0, &json), &model).unwrap(), report);
    assert!(report_of(&pod(1, "panicked at ..."), &model).unwrap_err().contains("exited with code 1: panicked"));
    assert!(report_of(&pod(0, "not json"), &model).unwrap_err().contains("unreadable"));
    let other = Report { digest: "00".into(), ..report };
    assert!(
        report_of(&pod(0, &serde_json::to_string(&other).unwrap()), &model).unwrap_err().contains("another digest")
    );
}

#[test]
fn only_a_passed_verification_makes_the_model_ready() {
    let mv = model_version("m");
    let model = served(&mv, &digest());
    let mut status = ModelVersionStatus::default();
    record(&mut status, Some(2), &Outcome::Running { job: "j".into() }, at(1));
    assert_eq!(status.phase, Some(ModelPhase::Pending));
    assert!(!condition::is_true(&status.conditions, conditions::READY));

    let failed = Report {
        digest: digest(),
        contract: contract_hash(&model),
        passed: false,
        message: Some("output.boxesOutput names output \"boxes\", but the model's outputs are [\"output0\"]".into()),
        ..Default::default()
    };
    record(&mut status, Some(2), &Outcome::Done(failed.clone()), at(2));
    assert_eq!(status.phase, Some(ModelPhase::Failed));
    let ready = condition::find(&status.conditions, conditions::READY).unwrap();
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "VerificationFailed"));
    assert!(ready.message.contains("boxesOutput"));
    assert_eq!(cached(&status, &model), Some(&failed));

    let passed = Report { passed: true, message: None, probe_latency_ms: Some(1.5), ..failed };
    assert!(record(&mut status, Some(2), &Outcome::Done(passed.clone()), at(3)));
    assert_eq!(status.phase, Some(ModelPhase::Ready));
    assert!(condition::is_true(&status.conditions, conditions::VERIFIED));
    assert!(condition::is_true(&status.conditions, conditions::READY));
    // Another contract needs another verification.
    let mut resized = model.clone();
    resized.input.width = 32;
    assert_eq!(cached(&status, &resized), None);
}
