//! ONNX backend node-test conformance. Every generated node test runs in its own process (the
//! `onnx-node-test` binary) with a timeout, so a panic or hang fails that test only. Writes the
//! pass table to `$CARGO_TARGET_TMPDIR/conformance.md` (and to docs/runtime-conformance.md when
//! FLYWHEEL_UPDATE_DOCS=1).

mod common;

use prost::Message;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The documented vision op list: each of their node tests must pass or be rejected at load
/// (listed in docs/runtime-conformance.md). A run error, crash or wrong answer fails the test.
const VISION_OPS: &[&str] = &[
    "Conv",
    "ConvTranspose",
    "BatchNormalization",
    "Relu",
    "LeakyRelu",
    "Sigmoid",
    "HardSigmoid",
    "HardSwish",
    "Gelu",
    "Softmax",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "Gemm",
    "MatMul",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Concat",
    "Reshape",
    "Flatten",
    "Transpose",
    "Squeeze",
    "Unsqueeze",
    "Resize",
    "Pad",
    "Clip",
    "Split",
    "Slice",
    "Shape",
    "Gather",
    "ReduceMean",
    "ReduceSum",
    "Constant",
    "Identity",
    "Cast",
    "Sqrt",
    "Exp",
    "Pow",
    "Where",
    "Equal",
];

/// Vision-op tests whose unsupported case could only be detected at run time (a clear error, not
/// a wrong answer). Currently none: every unsupported vision case is rejected at load.
const RUN_TIME_REJECTIONS: &[&str] = &[];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    Pass,
    Wrong,
    Rejected,
    Error,
    Crash,
}

fn run_one(bin: &Path, dir: &Path) -> (Outcome, String) {
    let mut child = Command::new(bin)
        .arg(dir)
        .env("RAYON_NUM_THREADS", "1")
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match child.try_wait().expect("wait") {
            Some(status) => {
                let mut out = String::new();
                use std::io::Read;
                child.stdout.take().map(|mut s| s.read_to_string(&mut out));
                let o = match status.code() {
                    Some(0) => Outcome::Pass,
                    Some(1) => Outcome::Wrong,
                    Some(2) => Outcome::Rejected,
                    Some(3) => Outcome::Error,
                    _ => Outcome::Crash,
                };
                return (o, out.trim().to_string());
            }
            None if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return (Outcome::Crash, "timeout".into());
            }
            None => std::thread::sleep(Duration::from_millis(2)),
        }
    }
}

fn op_of(dir: &Path) -> String {
    let bytes = std::fs::read(dir.join("model.onnx")).unwrap_or_default();
    let Ok(m) = flywheel_runtime::proto_types::ModelProto::decode(bytes.as_slice()) else { return "?".into() };
    let nodes = m.graph.map(|g| g.node).unwrap_or_default();
    match nodes.as_slice() {
        [n] => n.op_type.clone(),
        _ => "(expanded/multi-node)".into(),
    }
}

#[test]
fn onnx_backend_node_tests() {
    let root = common::generate("gen_node_tests.py", &[]);
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_onnx-node-test"));
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir() && !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    dirs.sort();
    let results: Mutex<Vec<(String, String, Outcome, String)>> = Mutex::new(Vec::new());
    let next = Mutex::new(0usize);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                loop {
                    let i = {
                        let mut n = next.lock().unwrap();
                        *n += 1;
                        *n - 1
                    };
                    let Some(d) = dirs.get(i) else { break };
                    let (o, msg) = run_one(&bin, d);
                    let name = d.file_name().unwrap().to_string_lossy().to_string();
                    results.lock().unwrap().push((name, op_of(d), o, msg));
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort();
    let mut per_op: BTreeMap<String, [usize; 5]> = BTreeMap::new();
    for (_, op, o, _) in &results {
        per_op.entry(op.clone()).or_default()[*o as usize] += 1;
    }
    let count = |o: Outcome| results.iter().filter(|r| r.2 == o).count();
    let vision: Vec<_> = results.iter().filter(|r| VISION_OPS.contains(&r.1.as_str())).collect();
    let vision_pass = vision.iter().filter(|r| r.2 == Outcome::Pass).count();
    let mut md = String::new();
    md.push_str(&format!(
        "Generated by `cargo test -p flywheel-runtime --test conformance` from the ONNX backend node tests of onnx {} ({} tests).\n\n",
        root.file_name().unwrap().to_string_lossy(), results.len()
    ));
    md.push_str(&format!(
        "Overall: {} pass ({:.1}%), {} wrong, {} rejected at load, {} run errors, {} crashes/timeouts.\n\nVision op list: {}/{} node tests pass ({:.1}%).\n\n",
        count(Outcome::Pass), 100.0 * count(Outcome::Pass) as f64 / results.len() as f64, count(Outcome::Wrong), count(Outcome::Rejected),
        count(Outcome::Error), count(Outcome::Crash), vision_pass, vision.len(), 100.0 * vision_pass as f64 / vision.len().max(1) as f64
    ));
    md.push_str("| op | pass | wrong | rejected | error | crash |\n|---|---|---|---|---|---|\n");
    for (op, c) in &per_op {
        if c[0] + c[1] + c[3] + c[4] == 0 {
            continue; // op not implemented: all rejected at load
        }
        md.push_str(&format!(
            "| {op}{} | {} | {} | {} | {} | {} |\n",
            if VISION_OPS.contains(&op.as_str()) { " (vision)" } else { "" },
            c[0],
            c[1],
            c[2],
            c[3],
            c[4]
        ));
    }
    md.push_str("\nNot passing (tests of implemented ops):\n\n");
    for (name, op, o, msg) in &results {
        if *o != Outcome::Pass && per_op[op][0] + per_op[op][1] + per_op[op][3] + per_op[op][4] > 0 {
            let msg: String = msg.chars().take(160).collect();
            md.push_str(&format!("- {name} ({op}): {o:?} {msg}\n"));
        }
    }
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("conformance.md");
    std::fs::write(&out, &md).unwrap();
    if std::env::var("FLYWHEEL_UPDATE_DOCS").as_deref() == Ok("1") {
        let doc = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/runtime-conformance.md");
        let tmp = doc.with_extension("md.tmp");
        std::fs::write(&tmp, format!("# ONNX node-test conformance\n\n{md}")).unwrap();
        std::fs::rename(&tmp, &doc).unwrap();
    }
    println!("{md}");
    let wrong: Vec<_> = results.iter().filter(|r| r.2 == Outcome::Wrong).map(|r| format!("{} {}", r.0, r.3)).collect();
    assert!(wrong.is_empty(), "silently wrong answers: {wrong:#?}");
    let failing_vision: Vec<_> = vision
        .iter()
        .filter(|r| !matches!(r.2, Outcome::Pass | Outcome::Rejected) && !RUN_TIME_REJECTIONS.contains(&r.0.as_str()))
        .map(|r| format!("{} {:?} {}", r.0, r.2, r.3))
        .collect();
    assert!(failing_vision.is_empty(), "vision-op node tests failing at run time: {failing_vision:#?}");
}
