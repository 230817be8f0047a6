//! Exhaustive checks of the casts to and from the element types held in another dtype (float8,
//! float4, float8e8m0, int4, int2): every float16 value, random float32 bit patterns and every
//! rounding midpoint, compared exactly (rtol = atol = 0) with the ONNX reference. The ONNX node
//! tests cast only 15 values per type. Each check runs in its own `onnx-node-test` process.

mod common;

use std::path::PathBuf;
use std::process::Command;

#[test]
fn casts_match_the_onnx_reference_exactly() {
    let root = common::generate("gen_cast_checks.py", &[]);
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_onnx-node-test"));
    let mut dirs: Vec<PathBuf> =
        std::fs::read_dir(&root).unwrap().flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect();
    dirs.sort();
    assert!(dirs.len() > 70, "expected the generated cast checks in {}", root.display());
    let mut failures = Vec::new();
    for dir in &dirs {
        let out = Command::new(&bin)
            .arg(dir)
            .args(["--rtol", "0", "--atol", "0"])
            .env("RAYON_NUM_THREADS", "1")
            .env("RUST_BACKTRACE", "0")
            .output()
            .expect("run onnx-node-test");
        if !out.status.success() {
            failures.push(format!(
                "{}: {}",
                dir.file_name().unwrap().to_string_lossy(),
                String::from_utf8_lossy(&out.stdout).trim()
            ));
        }
    }
    assert!(failures.is_empty(), "casts differing from the ONNX reference: {failures:#?}");
}
