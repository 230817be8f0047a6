//! Benchmark: median latency and throughput of flywheel-runtime vs candle-onnx's simple_eval vs
//! onnxruntime (Python, same thread count) on the generated models at batch 1 and 8.
//!
//! cargo run --release -p flywheel-runtime --bin flywheel-runtime-bench -- --size 224
//! (RAYON_NUM_THREADS sets the thread count used by all three; default: all cores)

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use clap::Parser;
use flywheel_runtime::Model;
use prost::Message;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

#[derive(Parser)]
struct Args {
    /// Input image size of the generated models.
    #[arg(long, default_value_t = 224)]
    size: usize,
    #[arg(long, default_value_t = 15)]
    iters: usize,
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Models to run (default: all generated ones).
    #[arg(long, value_delimiter = ',', default_value = "classifier,detector,mobilenet,encoder_decoder,plain_cnn")]
    models: Vec<String>,
    /// Skip candle-onnx's simple_eval (slow on large inputs).
    #[arg(long)]
    no_candle_onnx: bool,
    /// Skip onnxruntime (e.g. to profile this runtime alone).
    #[arg(long)]
    no_ort: bool,
}

fn cache() -> PathBuf {
    std::env::var_os("FLYWHEEL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/flywheel"))
}

fn python() -> PathBuf {
    std::env::var_os("FLYWHEEL_PYTHON").map(PathBuf::from).unwrap_or_else(|| cache().join("venv/bin/python"))
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python").join(name)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn time(warmup: usize, iters: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    for _ in 0..warmup {
        f()?;
    }
    let mut t = Vec::with_capacity(iters);
    for _ in 0..iters {
        let s = Instant::now();
        f()?;
        t.push(s.elapsed().as_secs_f64() * 1e3);
    }
    Ok(median(t))
}

fn main() -> Result<()> {
    let a = Args::parse();
    let threads = rayon::current_num_threads();
    let out = Command::new(python())
        .arg(script("gen_models.py"))
        .args(["--size", &a.size.to_string(), "--batch", "1"])
        .output()
        .context("running gen_models.py")?;
    anyhow::ensure!(out.status.success(), "gen_models.py: {}", String::from_utf8_lossy(&out.stderr));
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim().lines().last().unwrap_or_default());
    println!(
        "threads: {threads} (RAYON_NUM_THREADS; onnxruntime intra_op_num_threads), input {0}x{0}, median of {1} runs",
        a.size, a.iters
    );
    println!(
        "{:<16} {:>5} {:>12} {:>14} {:>12} {:>10} {:>12} {:>12}",
        "model", "batch", "ours ms", "candle-onnx ms", "ort ms", "ours img/s", "ort/ours", "candle/ours"
    );
    for name in &a.models {
        let path = dir.join(name).join("model.onnx");
        let bytes = std::fs::read(&path)?;
        let model = Model::from_bytes(&bytes)?;
        let proto = candle_onnx::onnx::ModelProto::decode(bytes.as_slice())?;
        for batch in [1usize, 8] {
            let x = Tensor::randn(0f32, 1f32, (batch, 3, a.size, a.size), &Device::Cpu)?.to_dtype(DType::F32)?;
            let ours = time(a.warmup, a.iters, || {
                model.run(&[("images", x.clone())])?;
                Ok(())
            })?;
            let candle = if a.no_candle_onnx {
                None
            } else {
                let mut inputs = HashMap::new();
                inputs.insert("images".to_string(), x.clone());
                match candle_onnx::simple_eval(&proto, inputs.clone()) {
                    Ok(_) => Some(time(1, a.iters.min(5), || {
                        candle_onnx::simple_eval(&proto, inputs.clone())?;
                        Ok(())
                    })?),
                    Err(_) => None,
                }
            };
            let ort = if a.no_ort {
                None
            } else {
                Some(
                    Command::new(python())
                        .arg(script("ort_bench.py"))
                        .arg(&path)
                        .args([
                            "--batch",
                            &batch.to_string(),
                            "--threads",
                            &threads.to_string(),
                            "--iters",
                            &a.iters.to_string(),
                            "--warmup",
                            &a.warmup.to_string(),
                        ])
                        .output()?,
                )
            };
            let ort_ms: Option<f64> = ort.and_then(|ort| {
                String::from_utf8_lossy(&ort.stdout)
                    .split("\"median_ms\": ")
                    .nth(1)
                    .and_then(|s| s.split([',', '}']).next())
                    .and_then(|s| s.trim().parse().ok())
            });
            let fmt = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.2}"));
            println!(
                "{:<16} {:>5} {:>12.2} {:>14} {:>12} {:>10.1} {:>12} {:>12}",
                name,
                batch,
                ours,
                fmt(candle),
                fmt(ort_ms),
                batch as f64 * 1e3 / ours,
                fmt(ort_ms.map(|o| o / ours)),
                fmt(candle.map(|c| c / ours)),
            );
        }
    }
    println!("ratios > 1 mean this runtime is faster; candle-onnx n/a = it cannot run the model");
    Ok(())
}
