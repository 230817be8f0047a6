//! What the review service's integration tests share: the labels, the API token and
//! prediction records as an inference replica logs them.
#![allow(dead_code)] // each test binary uses some of these

use chrono::Utc;
use flywheel_types::Task;
use flywheel_types::prediction::{ModelOutput, PredictionRecord, Shape, image_path};

pub const TOKEN: &str = "review-token";

pub fn labels() -> Vec<String> {
    vec!["cat".into(), "dog".into()]
}

pub fn cat_box(confidence: f32) -> Vec<Shape> {
    vec![Shape { label: "cat".into(), class_id: 0, confidence, bbox: Some([4.0, 4.0, 30.0, 30.0]) }]
}

pub fn record(replica: usize, n: usize) -> PredictionRecord {
    let id = format!("r{replica}-{n:03}");
    let time = Utc::now();
    PredictionRecord {
        image: Some(image_path(&id, time, "png")),
        id,
        time,
        deployment: "shapes".into(),
        task: Task::Detection,
        width: 64,
        height: 64,
        champion: ModelOutput {
            model: "m".into(),
            version: "v1".into(),
            shapes: cat_box(0.1 + (n % 9) as f32 / 10.0),
            latency_ms: 1.0,
        },
        shadow: None,
    }
}
