//! Profiler: where a model's time goes in this runtime and in onnxruntime, per op type and per
//! node, on the same input with the same thread count.
//!
//! cargo build --release -p flywheel-runtime --bin flywheel-runtime-profile
//! RAYON_NUM_THREADS=2 target/release/flywheel-runtime-profile --model m.onnx [--batch 8] [--size 320]
//! RAYON_NUM_THREADS=2 target/release/flywheel-runtime-profile --real yolov8n_320,resnet50
//!
//! Our side: [`Model::run_profiled`] (wall time of every planned node). onnxruntime's side:
//! `python/ort_profile.py` (`enable_profiling`, `intra_op_num_threads` = RAYON_NUM_THREADS).
//! Node times are medians over the timed runs. onnxruntime fuses and renames nodes differently:
//! its nodes are attributed to ours by name (`<output>_nchwc` for its NCHWc convolutions,
//! `<Mul>/QuickGeluFusion/` for SiLU), walking up the original graph from a node we fused away
//! (e.g. a Sigmoid·Mul or a BatchNormalization) to the planned node that computes it, e.g. the
//! Conv. What it runs that has no counterpart here (layout reorders) is listed as "(ort) <op>".

use anyhow::{Context, Result, bail};
use candle_core::{DType, Device, Tensor};
use clap::Parser;
use flywheel_runtime::Model;
use prost::Message;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

#[path = "common/real.rs"]
mod real;
use real::{median, python, real_models, script};

#[derive(Parser)]
struct Args {
    /// An ONNX model with one float input [N, C, H, W].
    #[arg(long)]
    model: Option<PathBuf>,
    /// Real models by name from `python/gen_real_models.py` (comma-separated; "all" for every one).
    #[arg(long, value_delimiter = ',')]
    real: Vec<String>,
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Spatial size for inputs whose H/W are dynamic (default: the declared or listed size).
    #[arg(long)]
    size: Option<usize>,
    #[arg(long, default_value_t = 10)]
    iters: usize,
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// How many of the slowest nodes (by our time) to list.
    #[arg(long, default_value_t = 12)]
    top: usize,
}

struct OrtProfile {
    run_ms: f64,
    nodes: Vec<(String, String, f64)>,
    outputs: Vec<Vec<f64>>,
}

/// A tiny reader for ort_profile.py's JSON line (flat objects and number arrays only).
fn parse_ort(json: &str) -> Result<OrtProfile> {
    let field = |s: &str, key: &str| -> Option<String> {
        let i = s.find(&format!("\"{key}\": "))? + key.len() + 4;
        let rest = &s[i..];
        if let Some(r) = rest.strip_prefix('"') {
            Some(r[..r.find('"')?].to_string())
        } else {
            Some(rest[..rest.find([',', '}']).unwrap_or(rest.len())].trim().to_string())
        }
    };
    let run_ms: f64 = field(json, "run_ms").context("run_ms")?.parse()?;
    let nodes_part = &json[json.find("\"nodes\": [").context("nodes")?..json.find("\"outputs\"").context("outputs")?];
    let mut nodes = Vec::new();
    for obj in nodes_part.split('{').skip(1) {
        let name = field(obj, "name").context("node name")?;
        let op = field(obj, "op").context("node op")?;
        let ms: f64 = field(obj, "ms").context("node ms")?.parse()?;
        nodes.push((name, op, ms));
    }
    let outs_part = &json[json.find("\"outputs\"").context("outputs")?..];
    let mut outputs = Vec::new();
    for arr in outs_part.split('[').skip(1) {
        let body = &arr[..arr.find(']').unwrap_or(arr.len())];
        outputs.push(
            body.split(',').filter(|v| !v.trim().is_empty()).map(|v| v.trim().parse().unwrap_or(f64::NAN)).collect(),
        );
    }
    Ok(OrtProfile { run_ms, nodes, outputs })
}

fn profile(a: &Args, name: &str, path: &PathBuf, chw: Option<&[usize]>) -> Result<()> {
    let threads = rayon::current_num_threads();
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let model = Model::from_bytes(&bytes)?;
    let proto = candle_onnx::onnx::ModelProto::decode(bytes.as_slice())?;
    let graph = proto.graph.context("no graph")?;
    let input = model.inputs().into_iter().next().context("no input")?;
    // [C, H, W]: listed, else declared (dynamic H/W take --size, default 224).
    let declared: Vec<Option<usize>> = input
        .shape
        .as_ref()
        .map(|s| {
            s.iter()
                .skip(1)
                .map(|d| match d {
                    flywheel_runtime::Dim::Fixed(n) => Some(*n),
                    flywheel_runtime::Dim::Dynamic(_) => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let mut dims = vec![a.batch];
    for (i, d) in declared.iter().enumerate() {
        let listed = chw.and_then(|c| c.get(i).copied());
        dims.push(match (d, a.size, listed) {
            (Some(n), _, _) => *n,
            (None, Some(s), _) if i > 0 => s,
            (None, _, Some(l)) => l,
            (None, _, None) => a.size.unwrap_or(224),
        });
    }
    let x = Tensor::randn(0f32, 1f32, dims.as_slice(), &Device::Cpu)?.to_dtype(DType::F32)?;

    // Ours.
    let mut runs = Vec::new();
    let mut per_node: Vec<Vec<f64>> = Vec::new();
    let mut planned: Vec<(String, String)> = Vec::new();
    let mut ours_out = Vec::new();
    for i in 0..a.warmup + a.iters {
        let s = Instant::now();
        let (outs, times) = model.run_profiled(&[(input.name.as_str(), x.clone())])?;
        let ms = s.elapsed().as_secs_f64() * 1e3;
        if i < a.warmup {
            continue;
        }
        runs.push(ms);
        if per_node.is_empty() {
            per_node = vec![Vec::new(); times.len()];
            planned = times.iter().map(|t| (t.name.clone(), t.op_type.clone())).collect();
        }
        for (k, t) in times.iter().enumerate() {
            per_node[k].push(t.ms);
        }
        ours_out = outs;
    }
    let ours_ms = median(runs);
    let ours_nodes: Vec<f64> = per_node.into_iter().map(median).collect();

    // onnxruntime, on the same input.
    let tmp = std::env::temp_dir().join(format!("flywheel-profile-{}.f32", std::process::id()));
    let flat: Vec<f32> = x.flatten_all()?.to_vec1()?;
    std::fs::write(&tmp, flat.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>())?;
    let out = Command::new(python())
        .arg(script("ort_profile.py"))
        .arg(path)
        .args(["--batch", &a.batch.to_string(), "--threads", &threads.to_string()])
        .args(["--iters", &a.iters.to_string(), "--warmup", &a.warmup.to_string()])
        .args(["--size", &format!("{},{}", dims[dims.len() - 2], dims[dims.len() - 1])])
        .args(["--input".as_ref(), tmp.as_os_str()])
        .output()
        .context("running ort_profile.py")?;
    let _ = std::fs::remove_file(&tmp);
    if !out.status.success() {
        bail!("ort_profile.py: {}", String::from_utf8_lossy(&out.stderr));
    }
    let ort = parse_ort(&String::from_utf8_lossy(&out.stdout))?;

    // Largest difference between the outputs, relative to the largest |value| of each.
    let mut worst = 0f64;
    for ((_, t), o) in ours_out.iter().zip(&ort.outputs) {
        let v: Vec<f32> = t.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
        let scale = o.iter().fold(0f64, |m, x| m.max(x.abs())).max(1e-12);
        let d = v.iter().zip(o).fold(0f64, |m, (a, b)| m.max((*a as f64 - b).abs()));
        worst = worst.max(d / scale);
    }

    // Attribute onnxruntime's nodes to ours.
    let producer: HashMap<&str, &candle_onnx::onnx::NodeProto> =
        graph.node.iter().flat_map(|n| n.output.iter().map(move |o| (o.as_str(), n))).collect();
    let by_name: HashMap<&str, &candle_onnx::onnx::NodeProto> =
        graph.node.iter().map(|n| (n.name.as_str(), n)).collect();
    let index: HashMap<&str, usize> = planned.iter().enumerate().map(|(i, (n, _))| (n.as_str(), i)).collect();
    let attribute = |ort_name: &str| -> Option<usize> {
        let mut node = by_name.get(ort_name).copied();
        if node.is_none()
            && let Some(v) = ort_name.strip_suffix("_nchwc")
        {
            node = producer.get(v).copied();
        }
        if node.is_none()
            && let Some(i) = ort_name.find("/QuickGeluFusion")
        {
            node = by_name.get(&ort_name[..i]).copied();
        }
        let mut node = node?;
        for _ in 0..4 {
            if let Some(&i) = index.get(node.name.as_str()) {
                return Some(i);
            }
            node = producer.get(node.input.first()?.as_str()).copied()?;
        }
        None
    };
    let mut ort_per_planned = vec![0f64; planned.len()];
    let mut ort_only: HashMap<String, (usize, f64)> = HashMap::new();
    for (n, op, ms) in &ort.nodes {
        match attribute(n) {
            Some(i) => ort_per_planned[i] += ms,
            None => {
                let e = ort_only.entry(format!("(ort) {op}")).or_default();
                e.0 += 1;
                e.1 += ms;
            }
        }
    }
    let ours_sum: f64 = ours_nodes.iter().sum();
    let ort_sum: f64 = ort.nodes.iter().map(|n| n.2).sum();
    println!(
        "\n### {name}, batch {} ({}), {threads} threads, median of {} runs\n",
        a.batch,
        dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("x"),
        a.iters
    );
    println!(
        "ours {ours_ms:.2} ms (nodes {ours_sum:.2}), onnxruntime {:.2} ms (nodes {ort_sum:.2}), ort/ours {:.2}; \
         outputs differ by {worst:.1e} of their range",
        ort.run_ms,
        ort.run_ms / ours_ms
    );
    println!("\n| op type (ours) | nodes | ours ms | ort ms | ours/ort | share of ours |");
    println!("|---|---:|---:|---:|---:|---:|");
    let mut per_op: HashMap<String, (usize, f64, f64)> = HashMap::new();
    for (i, (_, op)) in planned.iter().enumerate() {
        let e = per_op.entry(op.clone()).or_default();
        e.0 += 1;
        e.1 += ours_nodes[i];
        e.2 += ort_per_planned[i];
    }
    for (op, (n, ms)) in ort_only {
        let e = per_op.entry(op).or_default();
        e.0 += n;
        e.2 += ms;
    }
    let mut rows: Vec<_> = per_op.into_iter().collect();
    rows.sort_by(|a, b| (b.1.1 + b.1.2 * 1e-3).total_cmp(&(a.1.1 + a.1.2 * 1e-3)));
    let ratio = |o: f64, r: f64| if r > 0.0 { format!("{:.1}", o / r) } else { "-".into() };
    for (op, (n, o, r)) in &rows {
        println!("| {op} | {n} | {o:.2} | {r:.2} | {} | {:.1}% |", ratio(*o, *r), 100.0 * o / ours_sum.max(1e-12));
    }
    println!("\n| slowest nodes (ours) | op | ours ms | ort ms | ours/ort |");
    println!("|---|---|---:|---:|---:|");
    let mut order: Vec<usize> = (0..planned.len()).collect();
    order.sort_by(|&i, &j| ours_nodes[j].total_cmp(&ours_nodes[i]));
    for &i in order.iter().take(a.top) {
        let (n, op) = &planned[i];
        println!(
            "| {n} | {op} | {:.2} | {:.2} | {} |",
            ours_nodes[i],
            ort_per_planned[i],
            ratio(ours_nodes[i], ort_per_planned[i])
        );
    }
    Ok(())
}

fn main() -> Result<()> {
    let a = Args::parse();
    if let Some(path) = &a.model {
        let name = path.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
        profile(&a, &name, path, None)?;
    }
    if !a.real.is_empty() {
        let all = a.real.iter().any(|r| r == "all");
        for (name, path, chw) in real_models()? {
            if all || a.real.contains(&name) {
                profile(&a, &name, &path, Some(&chw))?;
            }
        }
    }
    if a.model.is_none() && a.real.is_empty() {
        bail!("give --model PATH or --real NAME[,NAME...] (or --real all)");
    }
    Ok(())
}
