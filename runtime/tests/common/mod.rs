//! Shared test helpers: the Python venv (onnx, onnxruntime) and the generated data in the cache.
#![allow(dead_code)]

use flywheel_runtime::{Tensor, proto_types::TensorProto};
use prost::Message;
use std::path::{Path, PathBuf};
use std::process::Command;

pub fn cache_dir() -> PathBuf {
    std::env::var_os("FLYWHEEL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").expect("HOME")).join(".cache/flywheel"))
}

pub fn python() -> PathBuf {
    std::env::var_os("FLYWHEEL_PYTHON").map(PathBuf::from).unwrap_or_else(|| cache_dir().join("venv/bin/python"))
}

pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("python").join(name)
}

/// Run a generator script (idempotent: it reuses its cache directory) and return the directory it printed.
pub fn generate(script_name: &str, args: &[&str]) -> PathBuf {
    let out = Command::new(python()).arg(script(script_name)).args(args).output().unwrap_or_else(|e| {
        panic!("cannot run {} (install scripts/requirements-test.txt into the venv): {e}", python().display())
    });
    assert!(out.status.success(), "{script_name} failed: {}", String::from_utf8_lossy(&out.stderr));
    PathBuf::from(String::from_utf8_lossy(&out.stdout).lines().last().expect("directory").trim())
}

pub fn read_tensor(p: &Path) -> Tensor {
    let proto = TensorProto::decode(std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).as_slice())
        .expect("TensorProto");
    flywheel_runtime::tensor_from_proto(&proto).expect("tensor")
}

/// max |a - b| / max |b| (relative to the reference tensor's scale).
pub fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    let a: Vec<f32> = a.flatten_all().unwrap().to_dtype(candle_core::DType::F32).unwrap().to_vec1().unwrap();
    let b: Vec<f32> = b.flatten_all().unwrap().to_dtype(candle_core::DType::F32).unwrap().to_vec1().unwrap();
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
    let diff = a.iter().zip(&b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    (diff / scale) as f64
}
