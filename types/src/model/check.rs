//! What the schema cannot say about a model contract, checked before anything is created: the
//! operator fails a ModelVersion with the message, and every message names the field.

use super::{Decoder, InputSpec, OutputSpec, ResizeMode, Task};

/// The first problem with a ModelVersion's task, labels, input and output, naming the field.
pub fn check_contract(task: Task, labels: &[String], input: &InputSpec, output: &OutputSpec) -> Result<(), String> {
    check_input(input)?;
    check_output(task, labels, input, output)
}

fn check_input(input: &InputSpec) -> Result<(), String> {
    if !(input.channels == 1 || input.channels == 3) {
        return Err(format!("input.channels is {}; use 3 (RGB or BGR) or 1 (grey)", input.channels));
    }
    for (field, values) in [("mean", &input.mean), ("std", &input.std)] {
        if !(values.len() <= 1 || values.len() == input.channels as usize) {
            return Err(format!(
                "input.{field} has {} values; give one per channel ({}) or a single value for all",
                values.len(),
                input.channels
            ));
        }
        if let Some(v) = values.iter().find(|v| !v.is_finite()) {
            return Err(format!("input.{field} holds {v}, which is not a number"));
        }
    }
    if let Some(s) = input.std.iter().find(|s| **s <= 0.0) {
        return Err(format!("input.std holds {s}; every standard deviation must be above 0"));
    }
    if let Some(p) = input.pixel_scale.filter(|p| !(p.is_finite() && *p > 0.0)) {
        return Err(format!("input.pixelScale is {p}; it must be above 0 (1/255 turns pixels into 0..1)"));
    }
    if input.crop_fraction.is_some() && input.resize != ResizeMode::CenterCrop {
        return Err("input.cropFraction applies to resize: centerCrop only".into());
    }
    Ok(())
}

fn check_output(task: Task, labels: &[String], input: &InputSpec, output: &OutputSpec) -> Result<(), String> {
    let decoder = match output.decoder {
        Decoder::Logits => "logits",
        Decoder::Yolo => "yolo",
        Decoder::BoxesScores => "boxesScores",
    };
    match (task, output.decoder) {
        (Task::Classification, Decoder::Logits) | (Task::Detection, Decoder::Yolo | Decoder::BoxesScores) => {}
        _ => {
            return Err(format!(
                "output.decoder {decoder} does not fit task {}: use logits for classification, yolo or \
                 boxesScores for detection",
                task.as_str()
            ));
        }
    }
    let only = |set: bool, field: &str, decoders: &str| {
        if set { Err(format!("output.{field} applies to the {decoders} decoder only, not {decoder}")) } else { Ok(()) }
    };
    let boxes = output.decoder != Decoder::Logits;
    only(output.class_scores.is_some() && boxes, "classScores", "logits")?;
    only(output.top_k.is_some() && boxes, "topK", "logits")?;
    only(output.objectness.is_some() && output.decoder != Decoder::Yolo, "objectness", "yolo")?;
    only(!output.strides.is_empty() && output.decoder != Decoder::Yolo, "strides", "yolo")?;
    only(output.output.is_some() && output.decoder == Decoder::BoxesScores, "output", "logits and yolo")?;
    for (set, field) in [
        (output.boxes_output.is_some(), "boxesOutput"),
        (output.scores_output.is_some(), "scoresOutput"),
        (output.labels_output.is_some(), "labelsOutput"),
    ] {
        only(set && output.decoder != Decoder::BoxesScores, field, "boxesScores")?;
    }
    for &s in &output.strides {
        if s == 0 || !input.width.is_multiple_of(s) || !input.height.is_multiple_of(s) {
            return Err(format!(
                "output.strides holds {s}, which does not divide the {}x{} input",
                input.width, input.height
            ));
        }
    }
    if output.max_detections == Some(0) {
        return Err("output.maxDetections must be at least 1".into());
    }
    if labels.is_empty() {
        return Err("labels is empty: list the class names in the order of the model's outputs".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> Vec<String> {
        vec!["a".into(), "b".into()]
    }

    fn check(task: Task, input: &str, output: &str) -> Result<(), String> {
        let input: InputSpec = serde_yaml::from_str(input).unwrap();
        let output: OutputSpec = serde_yaml::from_str(output).unwrap();
        check_contract(task, &labels(), &input, &output)
    }

    #[test]
    fn the_examples_of_every_exporter_pass() {
        assert!(check(Task::Detection, "{width: 640, height: 640, resize: letterbox}", "{decoder: yolo}").is_ok());
        assert!(check(Task::Detection, "{width: 640, height: 640}", "{decoder: yolo, strides: [8, 16, 32]}").is_ok());
        let ssd = "{decoder: boxesScores, boxesOutput: b, scoresOutput: s, normalizedBoxes: true}";
        assert!(check(Task::Detection, "{width: 300, height: 300}", ssd).is_ok());
        let tv = "{width: 224, height: 224, resize: centerCrop, cropFraction: 0.875, \
                  mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]}";
        assert!(check(Task::Classification, tv, "{decoder: logits, topK: 5}").is_ok());
    }

    #[test]
    fn careless_specs_are_refused_with_the_field_named() {
        let err = |task, input, output| check(task, input, output).unwrap_err();
        let e = err(Task::Classification, "{width: 8, height: 8, std: [0.5, 0, 0.5]}", "{}");
        assert!(e.contains("input.std holds 0"), "{e}");
        let e = err(Task::Classification, "{width: 8, height: 8, mean: [0.5, 0.5]}", "{}");
        assert!(e.contains("input.mean has 2 values"), "{e}");
        let e = err(Task::Classification, "{width: 8, height: 8, pixelScale: 0}", "{}");
        assert!(e.contains("input.pixelScale"), "{e}");
        let e = err(Task::Classification, "{width: 8, height: 8, cropFraction: 0.5}", "{}");
        assert!(e.contains("centerCrop"), "{e}");
        let e = err(Task::Detection, "{width: 8, height: 8}", "{decoder: logits}");
        assert!(e.contains("does not fit task detection"), "{e}");
        let e = err(Task::Detection, "{width: 100, height: 100}", "{decoder: yolo, strides: [8, 16, 32]}");
        assert!(e.contains("output.strides holds 8"), "{e}");
        let e = err(Task::Detection, "{width: 64, height: 64}", "{decoder: yolo, boxesOutput: boxes}");
        assert!(e.contains("output.boxesOutput applies to the boxesScores decoder only"), "{e}");
        let e = err(Task::Classification, "{width: 8, height: 8}", "{decoder: logits, objectness: true}");
        assert!(e.contains("output.objectness"), "{e}");
    }
}
