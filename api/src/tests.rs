//! Unit tests for defaults, enums and ranges of the API types.

use crate::common::{URI_PATTERN, URI_SCHEMES};
use crate::data_pipeline::{ContinuousDeployment, Hyperparameters, Optimizer, Policy, TrainLayers};
use crate::deployment::DeploymentSpec;
use crate::model_version::{Decoder, Layout, ModelVersionSpec, ResizeMode};
use crate::{DataPipelineSpec, StorageUri, Task};

fn yaml<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, serde_yaml::Error> {
    serde_yaml::from_str(text)
}

#[test]
fn deployment_defaults() {
    let spec: DeploymentSpec = yaml("champion: {modelVersion: m1}").unwrap();
    assert_eq!(spec.confidence_threshold, 0.5);
    assert_eq!(spec.replicas, 1);
    assert!(spec.shadow.is_none());
    let spec: DeploymentSpec = yaml("champion: {modelVersion: m1}\nshadow: {modelVersion: m2}").unwrap();
    assert_eq!(spec.shadow.unwrap().sample_rate, 1.0);
}

#[test]
fn model_version_defaults() {
    let spec: ModelVersionSpec = yaml(
        "model: m\nversion: v1\ntask: detection\nlabels: [a]\nartifact: {uri: 's3://b/k'}\ninput: {width: 32, height: 16}",
    )
    .unwrap();
    assert_eq!(spec.input.channels, 3);
    assert_eq!(spec.input.layout, Layout::Nchw);
    assert_eq!(spec.input.resize, ResizeMode::Stretch);
    assert_eq!(spec.input.mean, vec![0.0; 3]);
    assert_eq!(spec.input.std, vec![1.0; 3]);
    assert_eq!(spec.output.decoder, Decoder::Logits);
    assert_eq!(spec.output.nms_iou_threshold, 0.45);
    assert_eq!(spec.task, Task::Detection);
}

#[test]
fn data_pipeline_defaults() {
    let spec: DataPipelineSpec = yaml("deployment: d\ncontinuousTraining: {trigger: {reviewedSamples: 3}}").unwrap();
    let training = spec.continuous_training.unwrap();
    assert!(training.enabled);
    assert_eq!(training.trigger.cooldown, "0s");
    assert_eq!(training.hyperparameters, Hyperparameters::default());
    assert_eq!(training.hyperparameters.optimizer, Optimizer::Adamw);
    assert_eq!(training.hyperparameters.train_layers, TrainLayers::Head);
    assert_eq!(spec.continuous_deployment, ContinuousDeployment::default());
    assert_eq!(spec.continuous_deployment.policy, Policy::Shadow);
}

#[test]
fn enums_reject_unknown_values() {
    assert_eq!(yaml::<Policy>("manual").unwrap(), Policy::Manual);
    assert_eq!(yaml::<Task>("classification").unwrap(), Task::Classification);
    assert!(yaml::<Policy>("automatic").is_err());
    assert!(yaml::<Task>("segmentation").is_err());
    assert!(yaml::<Decoder>("boxesScores").is_ok());
}

#[test]
fn hyperparameters_map_for_provenance() {
    let map = Hyperparameters::default().to_map();
    assert_eq!(map["epochs"], "5");
    assert_eq!(map["optimizer"], "adamw");
    assert_eq!(map["trainLayers"], "head");
}

#[test]
fn uri_pattern_and_schemes_agree() {
    for scheme in URI_SCHEMES {
        assert!(
            URI_PATTERN.contains(&format!("|{scheme}|"))
                || URI_PATTERN.contains(&format!("({scheme}|"))
                || URI_PATTERN.contains(&format!("|{scheme})")),
            "{scheme} missing from the pattern"
        );
        assert_eq!(StorageUri(format!("{scheme}://x/y")).scheme(), Some(*scheme));
    }
    assert_eq!(StorageUri("ftp://x".into()).scheme(), None);
    assert_eq!(StorageUri("s3://".into()).scheme(), None);
    assert_eq!(StorageUri("/plain/path".into()).scheme(), None);
}

#[test]
fn ranges_are_in_the_schema() {
    let crd = serde_json::to_value(crate::crds().remove(2).1).unwrap();
    let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
    assert_eq!(spec["confidenceThreshold"]["minimum"], 0.0);
    assert_eq!(spec["confidenceThreshold"]["maximum"], 1.0);
    assert_eq!(spec["shadow"]["properties"]["sampleRate"]["maximum"], 1.0);
    assert!(crd["spec"]["versions"][0]["subresources"]["status"].is_object());
}

#[test]
fn no_enum_lists_null() {
    for (name, crd) in crate::crds() {
        let text = serde_json::to_string(&crd).unwrap();
        assert!(!text.contains(r#""enum":[null"#) && !text.contains(",null]"), "{name} has null in an enum");
    }
}

#[test]
fn references_sets_and_exclusive_minimums_are_in_the_schema() {
    let spec_of = |file: &str| {
        let (_, crd) = crate::crds().into_iter().find(|(name, _)| *name == file).unwrap();
        serde_json::to_value(crd).unwrap()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
            ["properties"]
            .clone()
    };
    let name_pattern = serde_json::json!(crate::common::OBJECT_NAME_PATTERN);
    let mv = spec_of("modelversions.yaml");
    assert_eq!(mv["labels"]["x-kubernetes-list-type"], "set");
    assert_eq!(mv["artifact"]["properties"]["credentials"]["properties"]["secretName"]["pattern"], name_pattern);
    let std = &mv["input"]["properties"]["std"]["items"];
    assert_eq!((std["minimum"].as_f64(), &std["exclusiveMinimum"]), (Some(0.0), &serde_json::json!(true)));
    assert_eq!(mv["input"]["properties"]["channels"]["enum"], serde_json::json!([1, 3]));
    let d = spec_of("deployments.yaml");
    assert_eq!(d["champion"]["properties"]["modelVersion"]["pattern"], name_pattern);
    assert_eq!(d["shadow"]["properties"]["modelVersion"]["pattern"], name_pattern);
    let cpu = &d["resources"]["properties"]["requests"]["additionalProperties"];
    assert_eq!(cpu["pattern"], serde_json::json!(crate::common::QUANTITY_PATTERN));
    let p = spec_of("datapipelines.yaml");
    let train = &p["continuousTraining"]["properties"]["datasets"]["properties"]["train"];
    assert_eq!(
        (&train["x-kubernetes-list-type"], &train["items"]["pattern"]),
        (&serde_json::json!("set"), &name_pattern)
    );
    assert_eq!(spec_of("datasetversions.yaml")["labels"]["x-kubernetes-list-type"], "set");
}
