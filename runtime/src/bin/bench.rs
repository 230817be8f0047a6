//! Benchmark: median latency and throughput of flywheel-runtime vs candle-onnx's simple_eval vs
//! onnxruntime (Python, same thread count) on the generated models at batch 1 and 8, then of
//! flywheel-runtime vs onnxruntime on real exported models (`python/gen_real_models.py`) at
//! batch 1 and 8, the two alternating run by run (a persistent `ort_bench.py --serve` peer) so
//! both see the same machine load, with the geometric mean of the ratios.
//!
//! cargo run --release -p flywheel-runtime --bin flywheel-runtime-bench -- --size 224
//! (RAYON_NUM_THREADS sets the thread count used by all three; default: all cores)
//! `--models none` skips the generated models, `--real none` the real ones.

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use clap::Parser;
use flywheel_runtime::Model;
use prost::Message;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::Command;
use std::process::Stdio;
use std::time::Instant;

#[path = "common/real.rs"]
mod real;
use real::{median, python, real_models, script};

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
    /// Real models to run (names from gen_real_models.py, "all" or "none").
    #[arg(long, value_delimiter = ',', default_value = "all")]
    real: Vec<String>,
    /// Runs per real model and batch (each side; the two alternate).
    #[arg(long, default_value_t = 9)]
    real_iters: usize,
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
    for name in a.models.iter().filter(|m| m.as_str() != "none") {
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
    if !a.real.iter().any(|r| r == "none") {
        real_bench(&a, threads)?;
    }
    Ok(())
}

/// onnxruntime in a persistent Python process, driven line by line (see ort_bench.py --serve).
struct OrtPeer {
    child: std::process::Child,
    out: BufReader<std::process::ChildStdout>,
}

impl OrtPeer {
    fn start(threads: usize) -> Result<OrtPeer> {
        let mut child = Command::new(python())
            .arg(script("ort_bench.py"))
            .args(["--serve", "--threads", &threads.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting ort_bench.py --serve")?;
        let out = BufReader::new(child.stdout.take().context("peer stdout")?);
        Ok(OrtPeer { child, out })
    }

    fn ask(&mut self, line: &str) -> Result<String> {
        let stdin = self.child.stdin.as_mut().context("peer stdin")?;
        writeln!(stdin, "{line}")?;
        stdin.flush()?;
        let mut answer = String::new();
        self.out.read_line(&mut answer)?;
        anyhow::ensure!(!answer.is_empty(), "ort_bench.py --serve exited on '{line}'");
        Ok(answer.trim().to_string())
    }

    fn run(&mut self, n: usize) -> Result<Vec<f64>> {
        self.ask(&format!("run {n}"))?.split_whitespace().map(|v| Ok(v.parse()?)).collect()
    }
}

impl Drop for OrtPeer {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// Real models, batch 1 and 8: one run of ours, one of onnxruntime, and again, `real_iters`
/// times (after a warm-up of each), medians compared.
fn real_bench(a: &Args, threads: usize) -> Result<()> {
    let all = a.real.iter().any(|r| r == "all");
    let models: Vec<_> = real_models()?.into_iter().filter(|(n, _, _)| all || a.real.contains(n)).collect();
    let mut peer = if a.no_ort { None } else { Some(OrtPeer::start(threads)?) };
    println!(
        "\nreal models: {threads} threads, ours and onnxruntime alternating run by run, median of {} runs each",
        a.real_iters
    );
    println!(
        "{:<16} {:>5} {:>10} {:>10} {:>12} {:>12} {:>10}",
        "model", "batch", "input", "ours ms", "ort ms", "ours img/s", "ort/ours"
    );
    let mut ratios: HashMap<usize, Vec<f64>> = HashMap::new();
    for (name, path, chw) in &models {
        let model = Model::from_bytes(&std::fs::read(path)?)?;
        let input = model.inputs().into_iter().next().context("no input")?;
        for batch in [1usize, 8] {
            let shape = [batch, chw[0], chw[1], chw[2]];
            let x = Tensor::randn(0f32, 1f32, &shape[..], &Device::Cpu)?;
            let feed = [(input.name.as_str(), x)];
            if let Some(p) = peer.as_mut() {
                let load = format!("load {} {batch} {} {} {}", path.display(), chw[0], chw[1], chw[2]);
                anyhow::ensure!(p.ask(&load)? == "ok", "ort_bench.py could not load {name}");
                p.run(a.warmup.max(1))?;
            }
            for _ in 0..a.warmup.max(1) {
                model.run(&feed)?;
            }
            let (mut ours, mut ort) = (Vec::new(), Vec::new());
            for _ in 0..a.real_iters {
                let s = Instant::now();
                model.run(&feed)?;
                ours.push(s.elapsed().as_secs_f64() * 1e3);
                if let Some(p) = peer.as_mut() {
                    ort.extend(p.run(1)?);
                }
            }
            let ours = median(ours);
            let ort = (!ort.is_empty()).then(|| median(ort));
            if let Some(o) = ort {
                ratios.entry(batch).or_default().push(o / ours);
            }
            println!(
                "{:<16} {:>5} {:>10} {:>10.2} {:>12} {:>12.1} {:>10}",
                name,
                batch,
                format!("{}x{}", chw[1], chw[2]),
                ours,
                ort.map_or("n/a".into(), |o| format!("{o:.2}")),
                batch as f64 * 1e3 / ours,
                ort.map_or("n/a".into(), |o| format!("{:.2}", o / ours)),
            );
        }
    }
    for batch in [1usize, 8] {
        if let Some(r) = ratios.get(&batch) {
            let geo = (r.iter().map(|v| v.ln()).sum::<f64>() / r.len() as f64).exp();
            let min = r.iter().copied().fold(f64::INFINITY, f64::min);
            println!("geometric mean of ort/ours at batch {batch}: {geo:.2} over {} models (lowest {min:.2})", r.len());
        }
    }
    Ok(())
}
