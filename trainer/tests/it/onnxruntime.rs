//! A trained model is a valid ONNX file that onnxruntime runs with the same outputs as the
//! Flywheel runtime.

use crate::common::*;
use candle_core::{Device, Tensor};
use flywheel_api::common::Task;
use flywheel_api::dataset_version::DatasetFormat;

fn compare(model_path: &std::path::Path, dir: &std::path::Path) {
    let model = flywheel_runtime::Model::from_bytes(&std::fs::read(model_path).unwrap()).unwrap();
    let shape = [4usize, 3, 64, 64];
    let n: usize = shape.iter().product();
    // Deterministic pseudo-random pixels in 0..1.
    let values: Vec<f32> = (0..n).map(|i| ((i as u64 * 2654435761) % 1000) as f32 / 1000.0).collect();
    let input_file = dir.join("input.bin");
    std::fs::write(&input_file, values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
    let x = Tensor::from_vec(values, &shape, &Device::Cpu).unwrap();
    let ours = model.run(&[("images", x)]).unwrap().remove(0).1;
    let output_file = dir.join("output.bin");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/compare_onnxruntime.py");
    let run = std::process::Command::new(venv_bin("python"))
        .args([
            script,
            model_path.to_str().unwrap(),
            input_file.to_str().unwrap(),
            "4,3,64,64",
            output_file.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(run.status.success(), "onnxruntime failed: {}", String::from_utf8_lossy(&run.stderr));
    let ort_shape: Vec<usize> =
        String::from_utf8_lossy(&run.stdout).trim().split(',').map(|d| d.parse().unwrap()).collect();
    assert_eq!(ort_shape, ours.dims());
    let theirs: Vec<f32> = std::fs::read(&output_file)
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let ours: Vec<f32> = ours.flatten_all().unwrap().to_vec1().unwrap();
    let worst = ours.iter().zip(&theirs).map(|(a, b)| (a - b).abs() / (1.0 + b.abs())).fold(0f32, f32::max);
    assert!(worst < 1e-4, "runtime and onnxruntime differ by {worst}");
}

#[tokio::test]
async fn trained_models_run_in_onnxruntime_with_the_runtimes_outputs() {
    let dir = tempfile::tempdir().unwrap();
    for (task, format) in [(Task::Classification, DatasetFormat::Imagefolder), (Task::Detection, DatasetFormat::Coco)] {
        let ds = dataset(dir.path(), task.as_str(), task, format, 30, 41).await;
        let out = dir.path().join(format!("run-{}", task.as_str()));
        let mut req = request(model(dir.path(), task, 2), vec![ds], &out, 1, 0.01);
        req.hyperparameters.train_layers = flywheel_api::data_pipeline::TrainLayers::All;
        req.max_regression = 1.0;
        flywheel_trainer::train::run(&req).await.unwrap();
        compare(&out.join("model.onnx"), dir.path());
    }
}
