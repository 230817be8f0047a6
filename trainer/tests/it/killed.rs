//! A training run killed half-way leaves no model, metrics or result behind; only a complete
//! progress file.

use std::time::{Duration, Instant};

use crate::common::*;
use flywheel_api::common::Task;
use flywheel_api::dataset_version::DatasetFormat;
use flywheel_trainer::train::report::Progress;

#[tokio::test]
async fn a_killed_run_leaves_no_partial_output() {
    let dir = tempfile::tempdir().unwrap();
    let ds = dataset(dir.path(), "coco", Task::Detection, DatasetFormat::Coco, 60, 31).await;
    let out = dir.path().join("run");
    let req = request(model(dir.path(), Task::Detection, 1), vec![ds], &out, 500, 0.01);
    let mut child = std::process::Command::new(BIN)
        .arg("train")
        .env("FLYWHEEL_REQUEST", serde_json::to_string(&req).unwrap())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once at least one epoch is recorded (it is then in the middle of training).
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        assert!(child.try_wait().unwrap().is_none(), "training ended early");
        let epochs = std::fs::read(out.join("progress.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<Progress>(&b).ok())
            .map_or(0, |p| p.history.len());
        if epochs >= 1 {
            break;
        }
        assert!(Instant::now() < deadline, "no epoch finished in time");
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    for name in ["model.onnx", "metrics.json", "result.json"] {
        assert!(!out.join(name).exists(), "{name} was written by a killed run");
    }
    let progress: Progress =
        serde_json::from_slice(&std::fs::read(out.join("progress.json")).unwrap()).expect("complete progress file");
    assert_eq!(progress.state, "training");
    assert!(!progress.history.is_empty());
}
