//! Shared helpers for the inference-server integration tests: generated ONNX models, serving
//! configs, an in-process server on a loopback port, images, and condition waits.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use flywheel_inference_server::fetch::sha256_hex;
use flywheel_inference_server::serving::*;

pub fn python() -> PathBuf {
    flywheel_test_support::venv_bin("python")
}

#[allow(unused_imports)] // each test binary uses some of them
pub use flywheel_test_support::models::{generated, png_tensor};

/// Directory with the generated test models (generated once per generator version).
pub fn models_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| generated(&["gen_models.py"], "server-test-models", "cnn64.onnx"))
}

/// A prediction log under `dir` that keeps every prediction and flushes within 20 ms.
pub fn test_log(dir: &Path) -> PredictionLogConfig {
    PredictionLogConfig {
        uri: format!("file://{}/log", dir.display()),
        sample_rate: 1.0,
        retention_days: 30,
        flush_records: 8,
        flush_interval_ms: 20,
    }
}

pub fn model_file(name: &str) -> (String, String) {
    let path = models_dir().join(name);
    let sha = sha256_hex(&std::fs::read(&path).expect("model file"));
    (format!("file://{}", path.display()), sha)
}

pub fn input64(resize: ResizeMode) -> InputSpec {
    InputSpec { layout: Layout::Nchw, mean: vec![], std: vec![], resize, ..InputSpec::new(64, 64) }
}

pub fn classifier(name: &str, file: &str, version: &str) -> ServedModel {
    let (uri, sha256) = model_file(file);
    ServedModel {
        name: name.into(),
        version: version.into(),
        uri,
        sha256,
        task: Task::Classification,
        labels: vec!["red".into(), "green".into(), "blue".into()],
        input: input64(ResizeMode::Stretch),
        output: OutputSpec { decoder: Decoder::Logits, top_k: Some(3), ..Default::default() },
    }
}

pub fn detector(name: &str, version: &str) -> ServedModel {
    let (uri, sha256) = model_file("square_detector.onnx");
    ServedModel {
        name: name.into(),
        version: version.into(),
        uri,
        sha256,
        task: Task::Detection,
        labels: vec!["red".into(), "blue".into()],
        input: input64(ResizeMode::Letterbox),
        output: OutputSpec { decoder: Decoder::Yolo, nms_iou_threshold: 0.45, ..Default::default() },
    }
}

pub fn config(champion: ServedModel) -> ServingConfig {
    ServingConfig {
        deployment: "test-deployment".into(),
        champion,
        shadow: None,
        confidence_threshold: 0.25,
        shadow_sample_rate: 1.0,
        prediction_log: None,
        feedback_dataset: None,
        review_service: None,
        reference_statistics_uri: None,
        batching: BatchingConfig::default(),
        auth: AuthConfig::default(),
    }
}

/// Writes the config atomically (as a ConfigMap update would appear).
pub fn write_config(path: &Path, cfg: &ServingConfig) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_yaml::to_string(cfg).unwrap()).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

pub struct TestServer {
    pub base: String,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub running: flywheel_inference_server::server::Running,
    pub client: reqwest::Client,
}

impl TestServer {
    pub async fn start(cfg: &ServingConfig) -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, cfg).await
    }

    pub async fn start_in(dir: tempfile::TempDir, cfg: &ServingConfig) -> Self {
        let config_path = dir.path().join("serving.yaml");
        write_config(&config_path, cfg);
        let running = flywheel_inference_server::server::start(
            flywheel_inference_server::server::Options {
                config: config_path.clone(),
                listen: "127.0.0.1:0".parse().unwrap(),
                cache_dir: dir.path().join("cache"),
                poll: Duration::from_millis(50),
                token_file: None,
                retry: Duration::from_millis(200),
            },
            flywheel_inference_server::runtime_backend::factory(),
        )
        .await
        .expect("server starts");
        let base = format!("http://{}", running.addr);
        let client = reqwest::Client::new();
        let s = Self { base, dir, config_path, running, client };
        let url = format!("{}/v2/health/ready", s.base);
        let c = s.client.clone();
        wait_until("server ready", || {
            let (c, url) = (c.clone(), url.clone());
            async move { c.get(&url).send().await.is_ok_and(|r| r.status() == 200) }
        })
        .await;
        s
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        let r = self.client.get(self.url(path)).send().await.unwrap();
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        r.json().await.unwrap()
    }

    pub async fn metrics(&self) -> String {
        self.client.get(self.url("/metrics")).send().await.unwrap().text().await.unwrap()
    }
}

/// Polls `cond` until it holds, failing after 60 s.
pub async fn wait_until<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !cond().await {
        assert!(start.elapsed() < Duration::from_secs(60), "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A PNG of `w`x`h` filled with `bg`, with an optional square (x, y, size, colour).
pub fn png(w: u32, h: u32, bg: [u8; 3], square: Option<(u32, u32, u32, [u8; 3])>) -> Vec<u8> {
    let mut img = image::RgbImage::from_pixel(w, h, image::Rgb(bg));
    if let Some((x0, y0, s, c)) = square {
        for y in y0..(y0 + s).min(h) {
            for x in x0..(x0 + s).min(w) {
                img.put_pixel(x, y, image::Rgb(c));
            }
        }
    }
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png).unwrap();
    out
}

pub fn jpeg(w: u32, h: u32, bg: [u8; 3]) -> Vec<u8> {
    let img = image::RgbImage::from_pixel(w, h, image::Rgb(bg));
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Jpeg).unwrap();
    out
}

/// The value of a metric sample line `name{labels} value` whose line contains every needle.
pub fn metric_value(text: &str, name: &str, needles: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(name) && (l[name.len()..].starts_with('{') || l[name.len()..].starts_with(' ')))
        .find(|l| needles.iter().all(|n| l.contains(n)))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Starts the real `flywheel-inference-server` binary on a free loopback port with `config`
/// (its model cache under `dir`) and `args`; returns the child and its address once it printed
/// the listening line. Its stdout is drained so the server never blocks on a full pipe.
pub fn spawn_server_binary(config: &Path, dir: &Path, args: &[&str]) -> (std::process::Child, String) {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_flywheel-inference-server"))
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .arg("--config")
        .arg(config)
        .arg("--cache-dir")
        .arg(dir.join("cache"))
        .env("RAYON_NUM_THREADS", "1")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("listening on ") {
                let _ = addr_tx.send(addr.trim().to_string());
            }
        }
    });
    let addr = addr_rx.recv_timeout(Duration::from_secs(60)).expect("the server prints its listening line");
    (child, addr)
}
