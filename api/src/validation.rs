//! What the CRD schemas cannot say (on Kubernetes 1.20 there are no CEL rules), checked by the
//! operator at the start of each reconcile, before anything is read from storage or created.
//! Each function returns the first problem as a message that begins with the field it is
//! about (`spec.shadow.modelVersion ...`); the operator puts it into an `InvalidSpec`
//! condition and a Warning Event, and waits for the spec to change.
//!
//! The checks repeat a few rules the schema also states (object names, unique lists), so an
//! object stored under an older CRD is refused the same way.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::ResourceRequirements;

use crate::common::{CredentialsRef, is_dns_label, is_object_name, parse_quantity};
use crate::data_pipeline::{DataPipelineSpec, parse_cooldown};
use crate::dataset_version::{DatasetFormat, DatasetVersionSpec};
use crate::deployment::DeploymentSpec;
use crate::model_version::{ChannelOrder, Decoder, ModelVersionSpec};

/// The first problem of a spec, naming its field.
pub type Checked = Result<(), String>;

/// The suffix the Deployment controller appends for its Service and apps/v1 Deployment.
pub const INFERENCE_SUFFIX: &str = "-inference";

/// A ModelVersion's spec: the model contract (`flywheel_types::model::check_contract`), then
/// labels, output names, decoder-only fields and the names it refers to.
pub fn model_version(spec: &ModelVersionSpec) -> Checked {
    flywheel_types::model::check_contract(spec.task, &spec.labels, &spec.input, &spec.output)
        .map_err(|message| format!("spec.{message}"))?;
    labels("spec.labels", &spec.labels)?;
    let input = &spec.input;
    if input.channel_order == ChannelOrder::Bgr && input.channels != 3 {
        return Err(format!("spec.input.channelOrder bgr swaps colour channels; the input has {}", input.channels));
    }
    let output = &spec.output;
    unique("spec.output.strides", output.strides.iter().map(u32::to_string))?;
    let outputs = [
        ("boxesOutput", output.boxes_output.as_deref()),
        ("scoresOutput", output.scores_output.as_deref()),
        ("labelsOutput", output.labels_output.as_deref()),
    ];
    for (i, (field, output_name)) in outputs.iter().enumerate() {
        if let Some((other, _)) = outputs[..i].iter().find(|(_, n)| output_name.is_some() && n == output_name) {
            return Err(format!("spec.output.{field} names the same output as spec.output.{other}"));
        }
    }
    if output.decoder == Decoder::Logits {
        for (set, field) in [
            (output.box_format.is_some(), "boxFormat"),
            (output.normalized_boxes, "normalizedBoxes"),
            (output.class_agnostic_nms, "classAgnosticNms"),
            (output.max_detections.is_some(), "maxDetections"),
        ] {
            if set {
                return Err(format!(
                    "spec.output.{field} applies to the yolo and boxesScores decoders only, not logits"
                ));
            }
        }
    }
    credentials("spec.artifact.credentials", spec.artifact.credentials.as_ref())?;
    if let Some(p) = &spec.provenance {
        name("spec.provenance.parent", p.parent.as_deref())?;
        name("spec.provenance.pipeline", p.pipeline.as_deref())?;
        name("spec.provenance.job", p.job.as_deref())?;
        names("spec.provenance.datasetVersions", &p.dataset_versions)?;
    }
    Ok(())
}

/// A DatasetVersion's spec: labels, the layout for the task, the parent and the Secret named.
pub fn dataset_version(own_name: &str, spec: &DatasetVersionSpec) -> Checked {
    labels("spec.labels", &spec.labels)?;
    spec.format.check_holds(spec.task).map_err(|e| format!("spec.format: {e}"))?;
    if spec.format == DatasetFormat::Imagefolder
        && let Some(l) = spec.labels.iter().find(|l| l.contains('/') || *l == "." || *l == "..")
    {
        return Err(format!("spec.labels holds {l:?}, which cannot be a directory name of an imagefolder dataset"));
    }
    name("spec.parent", spec.parent.as_deref())?;
    if spec.parent.as_deref() == Some(own_name) {
        return Err(format!("spec.parent names this DatasetVersion ({own_name}) itself"));
    }
    if let Some(m) = &spec.manifest
        && (m.starts_with('/') || m.contains("://") || m.split('/').any(|part| part == ".."))
    {
        return Err(format!("spec.manifest ({m:?}) must be a path below spec.uri"));
    }
    credentials("spec.credentials", spec.credentials.as_ref())
}

/// A Flywheel Deployment's spec and name: the models it names, autoscaling bounds, resources.
pub fn deployment(own_name: &str, spec: &DeploymentSpec) -> Checked {
    let max = 63 - INFERENCE_SUFFIX.len();
    if !is_dns_label(&format!("{own_name}{INFERENCE_SUFFIX}")) {
        return Err(format!(
            "metadata.name {own_name:?} cannot name the Service {own_name}{INFERENCE_SUFFIX}: start with a lowercase \
             letter, use lowercase letters, digits and '-' only, at most {max} characters"
        ));
    }
    let champion = &spec.champion.model_version;
    name("spec.champion.modelVersion", Some(champion))?;
    if let Some(shadow) = &spec.shadow {
        name("spec.shadow.modelVersion", Some(&shadow.model_version))?;
        if shadow.model_version == *champion {
            return Err(format!(
                "spec.shadow.modelVersion is the champion ({champion}): a model cannot shadow itself; remove \
                 spec.shadow or name another ModelVersion"
            ));
        }
    }
    if let Some(a) = &spec.autoscaling {
        if a.min_replicas > a.max_replicas {
            return Err(format!(
                "spec.autoscaling.minReplicas ({}) is above spec.autoscaling.maxReplicas ({})",
                a.min_replicas, a.max_replicas
            ));
        }
        let cpu_request =
            spec.resources.as_ref().and_then(|r| r.requests.as_ref()).is_some_and(|r| r.contains_key("cpu"));
        if !cpu_request {
            return Err("spec.autoscaling scales on CPU utilisation, a percentage of spec.resources.requests.cpu, \
                        which is not set"
                .into());
        }
    }
    resources("spec.resources", spec.resources.as_ref())
}

/// A DataPipeline's spec: the names it refers to, datasets that must differ, features that
/// need the feedback loop, the cooldown and the training Job's resources.
pub fn data_pipeline(spec: &DataPipelineSpec) -> Checked {
    name("spec.deployment", Some(&spec.deployment))?;
    let training = spec.training_data.as_ref().map(|t| t.dataset_version.as_str());
    name("spec.trainingData.datasetVersion", training)?;
    let feedback = spec.feedback_loop.as_ref().filter(|f| f.enabled).map(|f| f.dataset_version.as_str());
    name("spec.feedbackLoop.datasetVersion", spec.feedback_loop.as_ref().map(|f| f.dataset_version.as_str()))?;
    if let (Some(t), Some(f)) = (training, feedback)
        && t == f
    {
        return Err(format!(
            "spec.feedbackLoop.datasetVersion is the training data ({t}): reviewed samples go to a feedback \
             DatasetVersion of their own"
        ));
    }
    if let Some(ct) = spec.continuous_training.as_ref() {
        name("spec.continuousTraining.baseModelVersion", ct.base_model_version.as_deref())?;
        names("spec.continuousTraining.datasets.train", &ct.datasets.train)?;
        name("spec.continuousTraining.datasets.eval", ct.datasets.eval.as_deref())?;
        if let Some(eval) = &ct.datasets.eval
            && ct.datasets.train.contains(eval)
        {
            return Err(format!(
                "spec.continuousTraining.datasets.eval ({eval}) is also in datasets.train: a model evaluated on its \
                 training data looks better than it is"
            ));
        }
        parse_cooldown(&ct.trigger.cooldown).map_err(|e| format!("spec.continuousTraining.trigger.cooldown: {e}"))?;
        if ct.enabled && feedback.is_none() {
            return Err(
                "spec.continuousTraining: its trigger counts reviewed samples in the feedback dataset; enable \
                        spec.feedbackLoop or set continuousTraining.enabled: false"
                    .into(),
            );
        }
        resources("spec.continuousTraining.resources", ct.resources.as_ref())?;
        if let Some(t) = &ct.trainer {
            trainer("spec.continuousTraining.trainer", t)?;
        }
    }
    if spec.continuous_deployment.promotion_gate.as_ref().is_some_and(|g| g.enabled) && feedback.is_none() {
        return Err("spec.continuousDeployment.promotionGate compares the models on reviewed samples; enable \
                    spec.feedbackLoop or disable the gate"
            .into());
    }
    Ok(())
}

/// Variables every training Job gets from the operator (the request, and the storage
/// credentials from the labelled Secret); a trainer's `env` may not set them.
pub const OPERATOR_ENV_PREFIXES: &[&str] = &["FLYWHEEL_REQUEST", "AWS_", "GOOGLE_", "AZURE_"];

/// A trainer of one's own: an image, arguments that are not empty strings, environment variable
/// names that are valid, unique and not the operator's, and resources.
fn trainer(field: &str, t: &crate::data_pipeline::Trainer) -> Checked {
    let image = t.image.trim();
    if image.is_empty() {
        return Err(format!("{field}.image is required: the container image of your trainer"));
    }
    if image != t.image || image.contains(char::is_whitespace) {
        return Err(format!(
            "{field}.image {:?} holds whitespace: name an image, e.g. registry/team/trainer:1",
            t.image
        ));
    }
    if let Some(i) = t.command.iter().position(String::is_empty) {
        return Err(format!("{field}.command[{i}] is empty"));
    }
    for (i, e) in t.env.iter().enumerate() {
        let valid = e.name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && e.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(format!(
                "{field}.env[{i}].name {:?} is not a variable name: letters, digits and '_', not starting with a digit",
                e.name
            ));
        }
        if let Some(prefix) = OPERATOR_ENV_PREFIXES.iter().find(|p| e.name.starts_with(**p)) {
            return Err(format!(
                "{field}.env[{i}].name {} is set by the operator ({prefix}...: the request, or storage credentials \
                 from the labelled Secret)",
                e.name
            ));
        }
    }
    unique(&format!("{field}.env"), t.env.iter().map(|e| e.name.clone()))?;
    resources(&format!("{field}.resources"), t.resources.as_ref())
}

/// Class names: none empty, none twice.
fn labels(field: &str, labels: &[String]) -> Checked {
    if let Some(i) = labels.iter().position(|l| l.trim().is_empty()) {
        return Err(format!("{field}[{i}] is empty: every class needs a name"));
    }
    unique(field, labels.iter().cloned())
}

fn unique(field: &str, items: impl IntoIterator<Item = String>) -> Checked {
    let mut seen = BTreeSet::new();
    for item in items {
        if !seen.insert(item.clone()) {
            return Err(format!("{field} holds {item:?} twice"));
        }
    }
    Ok(())
}

fn name(field: &str, value: Option<&str>) -> Checked {
    match value {
        Some(v) if !is_object_name(v) => Err(format!(
            "{field} {v:?} is not an object name: lowercase letters, digits, '-' and '.', starting and ending with \
             a letter or digit, at most 253 characters"
        )),
        _ => Ok(()),
    }
}

fn names(field: &str, values: &[String]) -> Checked {
    for (i, v) in values.iter().enumerate() {
        name(&format!("{field}[{i}]"), Some(v))?;
    }
    unique(field, values.iter().cloned())
}

fn credentials(field: &str, credentials: Option<&CredentialsRef>) -> Checked {
    name(&format!("{field}.secretName"), credentials.map(|c| c.secret_name.as_str()))
}

/// Quantities that parse, are not negative, and requests that do not exceed their limits
/// (the API server would refuse the Pod template the operator builds from them).
fn resources(field: &str, resources: Option<&ResourceRequirements>) -> Checked {
    let Some(r) = resources else { return Ok(()) };
    let parsed = |kind: &str,
                  map: Option<
        &std::collections::BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    >| {
        map.into_iter()
            .flatten()
            .map(|(resource, q)| match parse_quantity(&q.0) {
                Some(v) if v >= 0.0 => Ok((resource.clone(), (q.0.clone(), v))),
                _ => Err(format!("{field}.{kind}.{resource} {:?} is not a quantity (e.g. 500m, 2, 512Mi, 1Gi)", q.0)),
            })
            .collect::<Result<std::collections::BTreeMap<_, _>, String>>()
    };
    let requests = parsed("requests", r.requests.as_ref())?;
    let limits = parsed("limits", r.limits.as_ref())?;
    for (resource, (text, value)) in &requests {
        if let Some((limit_text, limit)) = limits.get(resource)
            && value > limit
        {
            return Err(format!(
                "{field}.requests.{resource} ({text}) is above {field}.limits.{resource} ({limit_text})"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
