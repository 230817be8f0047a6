//! Shared by the benchmark and the profiler: the project venv's Python, the scripts next to the
//! crate and the real exported models of `python/gen_real_models.py`.

use anyhow::{Context, Result};
use std::path::PathBuf;
use std::process::Command;

pub fn cache() -> PathBuf {
    std::env::var_os("FLYWHEEL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/flywheel"))
}

pub fn python() -> PathBuf {
    std::env::var_os("FLYWHEEL_PYTHON").map(PathBuf::from).unwrap_or_else(|| cache().join("venv/bin/python"))
}

pub fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python").join(name)
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The real benchmark models: (name, path, [C, H, W]).
pub fn real_models() -> Result<Vec<(String, PathBuf, Vec<usize>)>> {
    let out = Command::new(python()).arg(script("gen_real_models.py")).output().context("gen_real_models.py")?;
    anyhow::ensure!(out.status.success(), "gen_real_models.py: {}", String::from_utf8_lossy(&out.stderr));
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim().lines().last().unwrap_or_default());
    let list = std::fs::read_to_string(dir.join("models.json"))?;
    // {"name": [c, h, w], ...} in file order.
    let mut models = Vec::new();
    for entry in list.trim().trim_start_matches('{').trim_end_matches('}').split("],") {
        let (name, dims) = entry.split_once(':').context("models.json")?;
        let name = name.trim().trim_matches('"').to_string();
        let dims: Vec<usize> = dims
            .trim()
            .trim_matches(|c| c == '[' || c == ']')
            .split(',')
            .map(|d| d.trim().parse())
            .collect::<Result<_, _>>()?;
        models.push((name.clone(), dir.join(format!("{name}.onnx")), dims));
    }
    Ok(models)
}
