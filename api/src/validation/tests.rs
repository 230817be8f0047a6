//! Every rule with the field its message names, and the quickstart passing all of them.

use super::*;
use crate::common::{is_dns_label, is_object_name, parse_quantity};

fn yaml<T: serde::de::DeserializeOwned>(text: &str) -> T {
    serde_yaml::from_str(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

const MODEL: &str = "model: m\nversion: v1\ntask: detection\nlabels: [circle, square]\nartifact: {uri: 's3://b/m.onnx'}\ninput: {width: 64, height: 64}\noutput: {decoder: yolo}\n";

fn model(extra: &str) -> Checked {
    let mut spec: serde_yaml::Value = yaml(MODEL);
    let extra: serde_yaml::Mapping = yaml(extra);
    for (k, v) in extra {
        spec[k.as_str().unwrap()] = v;
    }
    model_version(&serde_yaml::from_value(spec).unwrap())
}

fn refused(result: Checked, field: &str, words: &str) {
    let message = result.expect_err("refused");
    assert!(message.starts_with(field), "{message:?} does not begin with {field}");
    assert!(message.contains(words), "{message:?} does not say {words:?}");
}

#[test]
fn names_quantities_and_labels_parse_as_kubernetes_reads_them() {
    for ok in ["m", "shapes-v1", "a.b-c", "0x"] {
        assert!(is_object_name(ok), "{ok}");
    }
    for bad in ["", "Shapes", "-a", "a-", "a..b", "a_b", "a b", &"x".repeat(254)] {
        assert!(!is_object_name(bad), "{bad}");
    }
    assert!(is_dns_label("shapes-inference") && !is_dns_label("1shapes") && !is_dns_label("a.b"));
    assert!(!is_dns_label(&"x".repeat(64)));
    assert_eq!(parse_quantity("500m"), Some(0.5));
    assert_eq!(parse_quantity("2"), Some(2.0));
    assert_eq!(parse_quantity("1Gi"), Some(1073741824.0));
    assert_eq!(parse_quantity("1e3"), Some(1000.0));
    assert_eq!(parse_quantity("1.5k"), Some(1500.0));
    assert_eq!(parse_quantity("lots"), None);
    assert_eq!(parse_quantity("1Xi"), None);
}

#[test]
fn model_versions() {
    assert_eq!(model("{}"), Ok(()));
    refused(model("{input: {width: 64, height: 64, std: [0.5, 0, 0.5]}}"), "spec.input.std", "above 0");
    refused(model("{input: {width: 64, height: 64, mean: [0.5, 0.5]}}"), "spec.input.mean", "2 values");
    refused(model("{labels: [circle, circle]}"), "spec.labels", "\"circle\" twice");
    refused(model("{labels: [circle, '']}"), "spec.labels[1]", "empty");
    refused(
        model("{input: {width: 64, height: 64, channels: 1, mean: [0], std: [1], channelOrder: bgr}}"),
        "spec.input.channelOrder",
        "has 1",
    );
    refused(model("{output: {decoder: yolo, strides: [8, 8]}}"), "spec.output.strides", "\"8\" twice");
    refused(
        model("{output: {decoder: boxesScores, boxesOutput: out, scoresOutput: out}}"),
        "spec.output.scoresOutput",
        "spec.output.boxesOutput",
    );
    refused(
        model("{task: classification, output: {decoder: logits, normalizedBoxes: true}}"),
        "spec.output.normalizedBoxes",
        "not logits",
    );
    refused(
        model("{artifact: {uri: 's3://b/m', credentials: {secretName: My_Secret}}}"),
        "spec.artifact.credentials.secretName",
        "not an object name",
    );
    refused(model("{provenance: {datasetVersions: [a, a]}}"), "spec.provenance.datasetVersions", "twice");
}

#[test]
fn dataset_versions() {
    let ds = |text: &str| dataset_version("fb", &yaml(text));
    assert_eq!(ds("{uri: 's3://b/d/', format: coco, task: detection, labels: [a, b], parent: train}"), Ok(()));
    refused(ds("{uri: 's3://b/d/', format: imagefolder, task: detection, labels: [a]}"), "spec.format", "imagefolder");
    refused(ds("{uri: 's3://b/d/', format: coco, task: detection, labels: [a, a]}"), "spec.labels", "twice");
    refused(
        ds("{uri: 's3://b/d/', format: imagefolder, task: classification, labels: [a/b]}"),
        "spec.labels",
        "directory name",
    );
    refused(ds("{uri: 's3://b/d/', format: coco, task: detection, labels: [a], parent: fb}"), "spec.parent", "itself");
    refused(
        ds("{uri: 's3://b/d/', format: coco, task: detection, labels: [a], parent: Train}"),
        "spec.parent",
        "object name",
    );
}

#[test]
fn deployments() {
    let d = |name: &str, text: &str| deployment(name, &yaml(text));
    assert_eq!(d("shapes", "{champion: {modelVersion: m1}, shadow: {modelVersion: m2}}"), Ok(()));
    refused(
        d("shapes", "{champion: {modelVersion: m1}, shadow: {modelVersion: m1}}"),
        "spec.shadow.modelVersion",
        "itself",
    );
    refused(d("1shapes", "{champion: {modelVersion: m1}}"), "metadata.name", "Service 1shapes-inference");
    refused(d(&"s".repeat(54), "{champion: {modelVersion: m1}}"), "metadata.name", "at most 53");
    refused(d("shapes", "{champion: {modelVersion: M1}}"), "spec.champion.modelVersion", "object name");
    let scaled = "{champion: {modelVersion: m1}, autoscaling: {minReplicas: 5, maxReplicas: 2}, resources: {requests: {cpu: 1}}}";
    refused(d("shapes", scaled), "spec.autoscaling.minReplicas", "(5) is above");
    refused(
        d("shapes", "{champion: {modelVersion: m1}, autoscaling: {maxReplicas: 2}}"),
        "spec.autoscaling",
        "spec.resources.requests.cpu",
    );
    assert_eq!(
        d(
            "shapes",
            "{champion: {modelVersion: m1}, autoscaling: {maxReplicas: 2}, resources: {requests: {cpu: 250m}}}"
        ),
        Ok(())
    );
    refused(
        d("shapes", "{champion: {modelVersion: m1}, resources: {requests: {memory: 2Gi}, limits: {memory: 1Gi}}}"),
        "spec.resources.requests.memory",
        "(2Gi) is above spec.resources.limits.memory (1Gi)",
    );
    refused(
        d("shapes", "{champion: {modelVersion: m1}, resources: {requests: {cpu: lots}}}"),
        "spec.resources.requests.cpu",
        "not a quantity",
    );
}

#[test]
fn data_pipelines() {
    let p = |text: &str| data_pipeline(&yaml(text));
    let full = "{deployment: d, trainingData: {datasetVersion: t}, feedbackLoop: {datasetVersion: f}, \
                continuousTraining: {trigger: {reviewedSamples: 3, cooldown: 1h30m}, datasets: {train: [t, f], eval: e}}, \
                continuousDeployment: {promotionGate: {minReviewedSamples: 5}}}";
    assert_eq!(p(full), Ok(()));
    assert_eq!(p("{deployment: d, trainingData: {datasetVersion: t}}"), Ok(()));
    refused(
        p("{deployment: d, trainingData: {datasetVersion: t}, feedbackLoop: {datasetVersion: t}}"),
        "spec.feedbackLoop.datasetVersion",
        "training data (t)",
    );
    refused(
        p(
            "{deployment: d, feedbackLoop: {datasetVersion: f}, continuousTraining: {trigger: {reviewedSamples: 3}, datasets: {train: [f], eval: f}}}",
        ),
        "spec.continuousTraining.datasets.eval",
        "also in datasets.train",
    );
    refused(
        p("{deployment: d, continuousTraining: {trigger: {reviewedSamples: 3}}}"),
        "spec.continuousTraining",
        "enable spec.feedbackLoop",
    );
    assert_eq!(p("{deployment: d, continuousTraining: {enabled: false, trigger: {reviewedSamples: 3}}}"), Ok(()));
    refused(
        p(
            "{deployment: d, feedbackLoop: {enabled: false, datasetVersion: f}, continuousDeployment: {promotionGate: {}}}",
        ),
        "spec.continuousDeployment.promotionGate",
        "enable spec.feedbackLoop",
    );
    refused(
        p(
            "{deployment: d, feedbackLoop: {datasetVersion: f}, continuousTraining: {trigger: {reviewedSamples: 3, cooldown: 99999999999999999999h}}}",
        ),
        "spec.continuousTraining.trigger.cooldown",
        "too long",
    );
    refused(
        p(
            "{deployment: d, feedbackLoop: {datasetVersion: f}, continuousTraining: {trigger: {reviewedSamples: 3}, datasets: {train: [a, a]}}}",
        ),
        "spec.continuousTraining.datasets.train",
        "twice",
    );
    refused(p("{deployment: D}"), "spec.deployment", "object name");
}

#[test]
fn a_trainer_of_ones_own_needs_an_image_and_leaves_the_operators_variables_alone() {
    let p = |trainer: &str| {
        data_pipeline(&yaml(&format!(
            "{{deployment: d, feedbackLoop: {{datasetVersion: f}}, continuousTraining: {{trigger: {{reviewedSamples: 3}}, \
             trainer: {trainer}}}}}"
        )))
    };
    let full = "{image: 'registry.example.com/team/trainer:1.4', command: [python, /app/train.py], \
                args: [--epochs-scale, '2'], resources: {limits: {nvidia.com/gpu: 1, memory: 8Gi}, requests: {cpu: '2'}}, \
                env: [{name: EPOCH_SCALE, value: '2'}, {name: RAYON_NUM_THREADS, value: '4'}]}";
    assert_eq!(p(full), Ok(()));
    assert_eq!(p("{image: example/byo-trainer}"), Ok(()));
    // The schema requires `image`; a spec without one does not even parse.
    let missing: Result<crate::data_pipeline::DataPipelineSpec, _> = serde_yaml::from_str(
        "{deployment: d, continuousTraining: {trigger: {reviewedSamples: 3}, trainer: {command: [train]}}}",
    );
    assert!(missing.unwrap_err().to_string().contains("image"));
    refused(p("{image: ''}"), "spec.continuousTraining.trainer.image", "required");
    refused(p("{image: '  '}"), "spec.continuousTraining.trainer.image", "required");
    refused(p("{image: 'a b'}"), "spec.continuousTraining.trainer.image", "whitespace");
    refused(p("{image: t, command: ['']}"), "spec.continuousTraining.trainer.command[0]", "empty");
    refused(
        p("{image: t, env: [{name: FLYWHEEL_REQUEST, value: '{}'}]}"),
        "spec.continuousTraining.trainer.env[0].name",
        "set by the operator",
    );
    refused(
        p("{image: t, env: [{name: A, value: x}, {name: AWS_SECRET_ACCESS_KEY, value: x}]}"),
        "spec.continuousTraining.trainer.env[1].name",
        "storage credentials",
    );
    refused(
        p("{image: t, env: [{name: 1A, value: x}]}"),
        "spec.continuousTraining.trainer.env[0].name",
        "variable name",
    );
    refused(
        p("{image: t, env: [{name: A, value: x}, {name: A, value: y}]}"),
        "spec.continuousTraining.trainer.env",
        "twice",
    );
    refused(
        p("{image: t, resources: {requests: {nvidia.com/gpu: 2}, limits: {nvidia.com/gpu: 1}}}"),
        "spec.continuousTraining.trainer.resources.requests.nvidia.com/gpu",
        "above",
    );
}

#[test]
fn the_quickstart_passes_every_rule() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/quickstart");
    let mut checked = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = <serde_yaml::Value as serde::Deserialize>::deserialize(doc).unwrap();
            let name = value["metadata"]["name"].as_str().unwrap_or_default().to_string();
            let spec = value["spec"].clone();
            let result = match value["kind"].as_str() {
                Some("ModelVersion") => model_version(&serde_yaml::from_value(spec).unwrap()),
                Some("DatasetVersion") => dataset_version(&name, &serde_yaml::from_value(spec).unwrap()),
                Some("Deployment") => deployment(&name, &serde_yaml::from_value(spec).unwrap()),
                Some("DataPipeline") => data_pipeline(&serde_yaml::from_value(spec).unwrap()),
                _ => continue,
            };
            assert_eq!(result, Ok(()), "{name}");
            checked += 1;
        }
    }
    assert!(checked >= 6, "{checked}");
}
