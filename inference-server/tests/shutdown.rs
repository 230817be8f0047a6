//! SIGTERM, as the kubelet sends it on every rolling update and scale-down: requests in flight
//! are answered and every answered prediction reaches the prediction log before the process
//! exits, although the log would otherwise hold its batch for a minute.

mod common;

use std::time::{Duration, Instant};

use base64::Engine;
use common::*;
use flywheel_inference_server::serving::*;

fn logged_records(dir: &std::path::Path) -> usize {
    let mut n = 0;
    for day in std::fs::read_dir(dir.join("records")).into_iter().flatten() {
        for file in std::fs::read_dir(day.unwrap().path()).unwrap() {
            n += std::fs::read_to_string(file.unwrap().path()).unwrap().lines().count();
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_requests_in_flight_and_writes_every_logged_prediction() {
    let dir = tempfile::tempdir().unwrap();
    let log_dir = dir.path().join("log");
    let mut cfg = config(classifier("colour", "colour_classifier.onnx", "v1"));
    cfg.shadow = Some(classifier("colour-shadow", "colour_classifier_confused.onnx", "s1"));
    cfg.prediction_log = Some(PredictionLogConfig {
        uri: format!("file://{}", log_dir.display()),
        sample_rate: 1.0,
        retention_days: 30,
        flush_records: 100_000,
        flush_interval_ms: 60_000,
    });
    let config_path = dir.path().join("serving.yaml");
    write_config(&config_path, &cfg);
    let (mut child, addr) = spawn_server_binary(&config_path, dir.path(), &["--poll-ms", "50"]);
    let base = format!("http://{addr}");
    // A fresh connection per request: a refused connection then means "not accepted".
    let client = || reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    wait_until("ready", || {
        let url = format!("{base}/v2/health/ready");
        async move { client().get(url).send().await.is_ok_and(|r| r.status() == 200) }
    })
    .await;

    // Answered before the signal: held in the log's queue (its batch waits a minute).
    let png = png(64, 64, [250, 10, 10], None);
    for _ in 0..20 {
        let r = client().post(format!("{base}/v1/predict")).body(png.clone()).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!(logged_records(&log_dir), 0, "the log must still be holding its batch");

    // In flight when the signal arrives: batches of 16 images.
    let batch = serde_json::json!({"images": vec![base64::engine::general_purpose::STANDARD.encode(&png); 16]});
    let calls: Vec<_> = (0..4)
        .map(|_| {
            let (url, body) = (format!("{base}/v1/predict"), batch.clone());
            tokio::spawn(async move { client().post(url).json(&body).send().await.map(|r| r.status()) })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(30)).await;
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };

    let mut answered = 0;
    for call in calls {
        match call.await.unwrap() {
            Ok(status) => {
                assert_eq!(status, 200, "a request in flight got an error answer");
                answered += 1;
            }
            // Not accepted before the listener closed: never answered, never logged.
            Err(e) => assert!(e.status().is_none(), "{e}"),
        }
    }
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "the server did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    eprintln!("answered after the signal: {answered}");
    assert!(status.success(), "{status}");
    assert_eq!(logged_records(&log_dir), 20 + 16 * answered, "{answered} batches answered after the signal");
}
