//! Helpers for the integration tests of the inference server and the trainer: where the test
//! virtualenv lives, a real S3 server (SeaweedFS) and a real PostgreSQL to run against, and the generated test models
//! with their onnxruntime expectations.

pub mod models;
pub mod postgres;
pub mod seaweed;
pub mod tools;

use std::path::PathBuf;

/// Root of the cache for heavy test artefacts (`$FLYWHEEL_CACHE`, else `~/.cache/flywheel`).
pub fn cache_root() -> PathBuf {
    std::env::var_os("FLYWHEEL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").expect("HOME")).join(".cache/flywheel"))
}

/// A program of the test virtualenv (python, weed, ...); panics with the fix if it is missing.
pub fn venv_bin(name: &str) -> PathBuf {
    let p = cache_root().join("venv/bin").join(name);
    assert!(
        p.exists(),
        "{} is missing: run scripts/install-deps.sh (it creates the venv from scripts/requirements-test.txt)",
        p.display()
    );
    p
}
