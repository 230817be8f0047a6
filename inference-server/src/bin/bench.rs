//! Benchmark: raw runtime throughput vs server throughput (OIP binary requests over loopback
//! HTTP) at concurrency 1, 4 and 16, and champion latency p50/p99 with and without a shadow.
//! Every figure is the median of several runs. Not part of the test suite.
//!
//! Usage: flywheel-inference-bench --model cnn64.onnx [--seconds 2] [--runs 3]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use flywheel_inference_server::backend::{ModelBackend, TensorF32};
use flywheel_inference_server::fetch::sha256_hex;
use flywheel_inference_server::runtime_backend::RuntimeBackend;
use flywheel_inference_server::serving::*;

#[derive(Parser)]
struct Args {
    /// A single-input [N,3,64,64] ONNX model (the tests' generator writes cnn64.onnx).
    #[arg(long)]
    model: PathBuf,
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// Raw runs per second with `c` threads calling the model directly (batch 1).
fn raw_throughput(backend: &Arc<RuntimeBackend>, c: usize, secs: f64) -> f64 {
    let input = TensorF32::new(vec![1, 3, 64, 64], vec![0.5; 3 * 64 * 64]).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let handles: Vec<_> = (0..c)
        .map(|_| {
            let (b, stop, count, input) = (backend.clone(), stop.clone(), count.clone(), input.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    b.run(&input).unwrap();
                    count.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    handles.into_iter().for_each(|h| h.join().unwrap());
    count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

fn binary_request() -> (Vec<u8>, usize) {
    let header = serde_json::json!({
        "inputs": [{"name": "images", "shape": [1, 3, 64, 64], "datatype": "FP32", "parameters": {"binary_data_size": 3 * 64 * 64 * 4}}],
        "parameters": {"binary_data_output": true}
    })
    .to_string();
    let mut body = header.clone().into_bytes();
    for _ in 0..3 * 64 * 64 {
        body.extend_from_slice(&0.5f32.to_le_bytes());
    }
    (body, header.len())
}

/// Requests per second and per-request latencies (s) with `c` concurrent clients.
async fn server_load(url: &str, c: usize, secs: f64) -> (f64, Vec<f64>) {
    let client = reqwest::Client::new();
    let (body, hlen) = binary_request();
    let body = bytes::Bytes::from(body);
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let tasks: Vec<_> = (0..c)
        .map(|_| {
            let (client, url, body) = (client.clone(), url.to_string(), body.clone());
            tokio::spawn(async move {
                let mut lat = Vec::new();
                while Instant::now() < deadline {
                    let t = Instant::now();
                    let r = client
                        .post(&url)
                        .header("Inference-Header-Content-Length", hlen)
                        .body(body.clone())
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 200);
                    r.bytes().await.unwrap();
                    lat.push(t.elapsed().as_secs_f64());
                }
                lat
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    (all.len() as f64 / start.elapsed().as_secs_f64(), all)
}

fn served(model: &std::path::Path, name: &str) -> ServedModel {
    let bytes = std::fs::read(model).unwrap();
    ServedModel {
        name: name.into(),
        version: "bench".into(),
        uri: format!("file://{}", std::path::absolute(model).unwrap().display()),
        sha256: sha256_hex(&bytes),
        task: Task::Classification,
        labels: vec![],
        input: InputSpec {
            channels: 3,
            layout: Layout::Nchw,
            mean: vec![],
            std: vec![],
            resize: ResizeMode::Stretch,
            ..InputSpec::new(64, 64)
        },
        output: OutputSpec { decoder: Decoder::Logits, top_k: Some(1), ..Default::default() },
    }
}

async fn start_server(dir: &std::path::Path, model: &std::path::Path, shadow: bool) -> String {
    let cfg = ServingConfig {
        deployment: "bench".into(),
        champion: served(model, "cnn"),
        shadow: shadow.then(|| served(model, "cnn-shadow")),
        confidence_threshold: 0.0,
        shadow_sample_rate: 1.0,
        prediction_log: None,
        feedback_dataset: None,
        review_service: None,
        reference_statistics_uri: None,
        batching: BatchingConfig::default(),
        auth: AuthConfig::default(),
    };
    let path = dir.join(if shadow { "shadow.yaml" } else { "plain.yaml" });
    std::fs::write(&path, serde_yaml::to_string(&cfg).unwrap()).unwrap();
    let running = flywheel_inference_server::server::start(
        flywheel_inference_server::server::Options {
            config: path,
            listen: "127.0.0.1:0".parse().unwrap(),
            cache_dir: dir.join("cache"),
            poll: Duration::from_millis(100),
            token_file: None,
            retry: Duration::from_secs(10),
        },
        flywheel_inference_server::runtime_backend::factory(),
    )
    .await
    .unwrap();
    let base = format!("http://{}", running.addr);
    let client = reqwest::Client::new();
    let t0 = Instant::now();
    while !client.get(format!("{base}/v2/health/ready")).send().await.is_ok_and(|r| r.status() == 200) {
        assert!(t0.elapsed() < Duration::from_secs(60), "server did not become ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    format!("{base}/v2/models/cnn/infer")
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let backend =
        Arc::new(RuntimeBackend::from_bytes(&std::fs::read(&args.model).expect("model file")).expect("model loads"));
    let dir = tempfile::tempdir().unwrap();
    let plain = start_server(dir.path(), &args.model, false).await;
    let with_shadow = start_server(dir.path(), &args.model, true).await;
    // Warm-up.
    raw_throughput(&backend, 1, 0.3);
    server_load(&plain, 4, 0.3).await;

    println!(
        "model: {} (batch 1, 3x64x64); {} s per run, median of {} runs",
        args.model.display(),
        args.seconds,
        args.runs
    );
    println!(
        "{:>11} {:>14} {:>14} {:>8} {:>22}",
        "concurrency", "raw runs/s", "server req/s", "ratio", "overhead ms/request"
    );
    for c in [1usize, 4, 16] {
        let raw = median((0..args.runs).map(|_| raw_throughput(&backend, c.min(2), args.seconds)).collect());
        let mut srv_runs = Vec::new();
        for _ in 0..args.runs {
            srv_runs.push(server_load(&plain, c, args.seconds).await.0);
        }
        let srv = median(srv_runs);
        // Per-request server cost on the same CPUs: time per request served minus time per raw run.
        let overhead_ms = (1.0 / srv - 1.0 / raw) * 1e3;
        println!("{c:>11} {raw:>14.0} {srv:>14.0} {:>8.2} {overhead_ms:>22.3}", srv / raw);
    }
    println!("\nchampion latency at concurrency 4 (client-side, ms):");
    println!("{:>14} {:>8} {:>8}", "", "p50", "p99");
    for (label, url) in [("no shadow", &plain), ("with shadow", &with_shadow)] {
        let (mut p50s, mut p99s) = (Vec::new(), Vec::new());
        for _ in 0..args.runs {
            let (_, mut lat) = server_load(url, 4, args.seconds).await;
            p50s.push(percentile(&mut lat, 0.5) * 1e3);
            p99s.push(percentile(&mut lat, 0.99) * 1e3);
        }
        println!("{label:>14} {:>8.3} {:>8.3}", median(p50s), median(p99s));
    }
}
