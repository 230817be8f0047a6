//! Unit tests of the serving config's reading of the shared model contract.

use crate::serving::{ServedModel, ServingConfig};
use crate::{InputSpec, Layout, ResizeMode, Task};

const MODEL: &str = "name: m\nversion: v1\nuri: file:///m.onnx\nsha256: ab\ntask: detection\noutput: {type: yolo}\n";

#[test]
fn serving_files_with_capital_layouts_still_read() {
    let model: ServedModel =
        serde_yaml::from_str(&format!("{MODEL}input: {{width: 64, height: 32, layout: NHWC, resize: letterbox}}"))
            .unwrap();
    assert_eq!(model.task, Task::Detection);
    assert_eq!(model.input.layout, Layout::Nhwc);
    assert_eq!(model.input.resize, ResizeMode::Letterbox);
    assert_eq!((model.input.width, model.input.height, model.input.channels), (64, 32, 3));
}

#[test]
fn an_input_spec_writes_the_model_version_spelling() {
    let input = InputSpec {
        channels: 1,
        layout: Layout::Nhwc,
        mean: vec![0.5],
        std: vec![0.25],
        resize: ResizeMode::Stretch,
        ..InputSpec::new(8, 8)
    };
    let text = serde_json::to_value(&input).unwrap();
    assert_eq!(text["layout"], "nhwc");
    assert_eq!(text["resize"], "stretch");
    assert_eq!(serde_json::from_value::<InputSpec>(text).unwrap(), input);
}

#[test]
fn unknown_serving_fields_are_refused() {
    let champion: String = MODEL.lines().map(|line| format!("  {line}\n")).collect();
    let text = format!("deployment: d\nchampion:\n{champion}  input: {{width: 1, height: 1}}\n  extra: 1\n");
    let e = ServingConfig::from_yaml(&text).unwrap_err();
    assert!(e.to_string().contains("extra"), "{e}");
}
