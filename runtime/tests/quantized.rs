//! Quantized (int8) and recurrent whole models against onnxruntime. runtime/python/gen_quant_models.py
//! writes them into the cache: SqueezeNet and ShuffleNet (the graphs shipped in the onnx wheel),
//! a small exporter-layout CNN and CRNN-style LSTM/GRU recognisers, quantized by
//! `onnxruntime.quantization` in QDQ and QOperator (uint8 and int8 activations) and dynamic
//! formats, plus single recurrent nodes with sequence_lens, initial states, peepholes and clip
//! and single quantization nodes compared exactly.

mod common;

use flywheel_runtime::{Model, Tensor, proto_types::ModelProto};
use prost::Message;
use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};

const FLOAT_MODELS: &[&str] =
    &["squeezenet", "shufflenet", "cnn", "crnn_lstm", "crnn_gru", "lstm_edges", "gru_edges", "rnn_edges"];

const QUANTIZED_MODELS: &[&str] = &[
    "squeezenet.qdq_u8s8",
    "squeezenet.qdq_s8s8",
    "squeezenet.qop",
    "squeezenet.qop_s8s8",
    "squeezenet.dynamic",
    "shufflenet.qop",
    "cnn.qdq_u8s8",
    "cnn.qdq_s8s8",
    "cnn.qop",
    "cnn.dynamic",
    "crnn_lstm.dynamic",
];

/// How far this runtime's int8 output may be from onnxruntime's, as a fraction of the model's
/// own quantization error (max |onnxruntime int8 - onnxruntime float| on the same input).
///
/// Two correct int8 implementations differ only where a value lands on a rounding boundary
/// within float rounding error (or exactly on a tie, which the float arithmetic before the
/// rounding then decides): one quantum flips in one element of an intermediate tensor. Such a
/// flip is one rounding among the millions that make up the quantization error, so its effect
/// on the output is a small fraction of that error. Measured: below 3e-6 (float rounding after
/// the last quantized layer) on ten of the eleven models and one output quantum (3% of the
/// quantization error) on squeezenet.qdq_u8s8. A wrong zero point moves every element of a
/// tensor by a whole quantum in the same direction, an error of the order of the quantization
/// error itself: `a_wrong_zero_point_is_caught` shifts one zero point by one in every model and
/// gets at least 25% of it, so the bound sits between the two.
const TOLERANCE: f64 = 0.1;

/// The generated set (once per test process: the tests run as threads of one process).
fn root() -> PathBuf {
    static ROOT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    ROOT.get_or_init(|| common::generate("gen_quant_models.py", &[])).clone()
}

struct Case {
    dir: PathBuf,
    bytes: Vec<u8>,
    input: String,
    classes_axis: Option<usize>,
}

impl Case {
    fn load(root: &Path, name: &str) -> Case {
        let dir = root.join(name);
        let bytes = std::fs::read(dir.join("model.onnx")).unwrap_or_else(|e| panic!("{name}: {e}"));
        let meta = std::fs::read_to_string(dir.join("meta.txt")).unwrap();
        let field = |k: &str| meta.lines().find_map(|l| l.strip_prefix(k).map(|v| v.trim().to_string()));
        Case {
            dir,
            bytes,
            input: field("input ").expect("input name"),
            classes_axis: field("classes_axis ").map(|v| v.parse().unwrap()),
        }
    }

    fn tensor(&self, file: &str) -> Tensor {
        common::read_tensor(&self.dir.join(file))
    }

    fn run(&self, bytes: &[u8]) -> Vec<Tensor> {
        let name = self.dir.file_name().unwrap().to_string_lossy().to_string();
        let model = Model::from_bytes(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        let outs =
            model.run(&[(self.input.as_str(), self.tensor("input_0.pb"))]).unwrap_or_else(|e| panic!("{name}: {e}"));
        outs.into_iter().map(|(_, t)| t).collect()
    }
}

fn values(t: &Tensor) -> Vec<f64> {
    t.flatten_all().unwrap().to_dtype(candle_core::DType::F64).unwrap().to_vec1().unwrap()
}

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).fold(0f64, |m, (x, y)| m.max((x - y).abs()))
}

/// Per row (every index but `axis`), the class with the largest value and its margin over the
/// second largest.
fn top1(t: &Tensor, axis: usize) -> Vec<(usize, f64)> {
    let last = t.rank() - 1;
    let t = t.transpose(axis, last).unwrap().contiguous().unwrap();
    let classes = t.dims()[last];
    values(&t)
        .chunks(classes)
        .map(|row| {
            let mut idx: Vec<usize> = (0..classes).collect();
            idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
            (idx[0], if classes > 1 { row[idx[0]] - row[idx[1]] } else { f64::INFINITY })
        })
        .collect()
}

struct Verdict {
    max_diff: f64,
    quant_err: f64,
    /// Rows whose onnxruntime top-1 leads by more than the tolerance, and how many agree.
    clear_rows: usize,
    agree: usize,
}

impl Verdict {
    fn of(case: &Case, got: &Tensor) -> Verdict {
        let want = case.tensor("output_0.pb");
        let float = case.tensor("float_output_0.pb");
        assert_eq!(got.dims(), want.dims());
        let (g, w) = (values(got), values(&want));
        let quant_err = max_abs_diff(&values(&float), &w);
        assert!(quant_err > 0.0, "{}: the int8 model equals the float one", case.dir.display());
        let tol = TOLERANCE * quant_err;
        let (mut clear_rows, mut agree) = (0, 0);
        if let Some(axis) = case.classes_axis {
            for ((wc, margin), (gc, _)) in top1(&want, axis).into_iter().zip(top1(got, axis)) {
                if margin > tol {
                    clear_rows += 1;
                    agree += (wc == gc) as usize;
                }
            }
        }
        Verdict { max_diff: max_abs_diff(&g, &w), quant_err, clear_rows, agree }
    }

    fn ok(&self) -> bool {
        self.max_diff <= TOLERANCE * self.quant_err && self.agree == self.clear_rows
    }
}

#[test]
fn float_and_recurrent_models_match_onnxruntime() {
    let root = root();
    let mut failures = Vec::new();
    for name in FLOAT_MODELS {
        let case = Case::load(&root, name);
        for (i, got) in case.run(&case.bytes).iter().enumerate() {
            let err = common::rel_err(got, &case.tensor(&format!("output_{i}.pb")));
            println!("{name}/output {i}: relative error {err:.2e}");
            if err > 1e-4 {
                failures.push(format!("{name}/output {i}: {err:.2e}"));
            }
        }
    }
    assert!(failures.is_empty(), "models differing from onnxruntime by more than 1e-4: {failures:?}");
}

#[test]
fn quantized_models_match_onnxruntime() {
    let root = root();
    let mut failures = Vec::new();
    for name in QUANTIZED_MODELS {
        let case = Case::load(&root, name);
        let v = Verdict::of(&case, &case.run(&case.bytes)[0]);
        println!(
            "{name}: max |ours - onnxruntime| {:.2e} = {:.3} of the quantization error {:.5}; top-1 agrees on {}/{} clear rows",
            v.max_diff,
            v.max_diff / v.quant_err,
            v.quant_err,
            v.agree,
            v.clear_rows
        );
        assert!(v.clear_rows > 0 || case.classes_axis.is_none(), "{name}: no row with a clear top-1");
        if !v.ok() {
            failures.push(name);
        }
    }
    assert!(failures.is_empty(), "quantized models differing from onnxruntime: {failures:?}");
}

/// Give the first node consuming an activation zero point (DequantizeLinear of a computed
/// tensor, QLinearConv / QLinearMatMul input zero point) or, in dynamic models, the first
/// ConvInteger / MatMulInteger weight zero point, a private copy of it shifted by one: what a
/// runtime misreading one zero point by one would compute.
fn shift_one_zero_point(bytes: &[u8]) -> (Vec<u8>, String) {
    let mut m = ModelProto::decode(bytes).unwrap();
    let g = m.graph.as_mut().unwrap();
    let inits: HashSet<String> = g.initializer.iter().map(|t| t.name.clone()).collect();
    let (ni, slot) = g
        .node
        .iter()
        .enumerate()
        .find_map(|(ni, n)| {
            let slot = match n.op_type.as_str() {
                "QLinearConv" | "QLinearMatMul" => 2,
                "ConvInteger" | "MatMulInteger" => 3,
                "DequantizeLinear" if !inits.contains(&n.input[0]) => 2,
                _ => return None,
            };
            n.input.get(slot).filter(|i| inits.contains(*i)).map(|_| (ni, slot))
        })
        .expect("a zero point to shift");
    let name = g.node[ni].input[slot].clone();
    let mut copy = g.initializer.iter().find(|t| t.name == name).unwrap().clone();
    copy.name = format!("{name}_shifted");
    if copy.raw_data.is_empty() {
        copy.int32_data[0] += 1;
    } else {
        copy.raw_data[0] = copy.raw_data[0].wrapping_add(1);
    }
    let what = format!("{} of {}", name, g.node[ni].op_type);
    g.node[ni].input[slot] = copy.name.clone();
    g.initializer.push(copy);
    (m.encode_to_vec(), what)
}

#[test]
fn a_wrong_zero_point_is_caught() {
    let root = root();
    let mut missed = Vec::new();
    for name in QUANTIZED_MODELS {
        let case = Case::load(&root, name);
        let (bytes, what) = shift_one_zero_point(&case.bytes);
        let v = Verdict::of(&case, &case.run(&bytes)[0]);
        println!(
            "{name}: {what} + 1 -> max |ours - onnxruntime| = {:.3} of the quantization error, top-1 {}/{}",
            v.max_diff / v.quant_err,
            v.agree,
            v.clear_rows
        );
        if v.ok() {
            missed.push(format!("{name} ({what})"));
        }
    }
    assert!(missed.is_empty(), "a zero point off by one passes the comparison: {missed:?}");
}

/// Single quantization nodes with the options the ONNX node tests leave out (per-column and int8
/// weights, grouped / strided / dilated / padded QLinearConv with a bias, int8 per-axis and
/// blocked QuantizeLinear, ...) equal onnxruntime's outputs exactly, each in its own
/// `onnx-node-test` process (`--rtol 0 --atol 0`).
#[test]
fn quantization_ops_match_onnxruntime_exactly() {
    let ops = root().join("ops");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&ops).unwrap().flatten().map(|e| e.path()).collect();
    dirs.sort();
    assert!(dirs.len() >= 11, "expected the generated op cases in {}", ops.display());
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_onnx-node-test"));
    let mut failures = Vec::new();
    for dir in &dirs {
        let out = std::process::Command::new(&bin)
            .arg(dir)
            .args(["--rtol", "0", "--atol", "0"])
            .env("RAYON_NUM_THREADS", "1")
            .env("RUST_BACKTRACE", "0")
            .output()
            .expect("run onnx-node-test");
        if !out.status.success() {
            let name = dir.file_name().unwrap().to_string_lossy().to_string();
            failures.push(format!("{name}: {}", String::from_utf8_lossy(&out.stdout).trim()));
        }
    }
    assert!(failures.is_empty(), "quantization ops differing from onnxruntime: {failures:#?}");
}

/// The generated set exercises every quantization op and recurrent layer it is meant to.
#[test]
fn the_set_covers_the_quantization_and_recurrent_ops() {
    let root = root();
    let mut ops = BTreeSet::new();
    for name in FLOAT_MODELS.iter().chain(QUANTIZED_MODELS) {
        let m = ModelProto::decode(Case::load(&root, name).bytes.as_slice()).unwrap();
        ops.extend(m.graph.unwrap().node.into_iter().map(|n| n.op_type));
    }
    assert!(ops.contains("BatchNormalization") && ops.contains("Concat"), "{ops:?}");
    for op in [
        "QuantizeLinear",
        "DequantizeLinear",
        "DynamicQuantizeLinear",
        "QLinearConv",
        "QLinearMatMul",
        "ConvInteger",
        "MatMulInteger",
        "LSTM",
        "GRU",
        "RNN",
    ] {
        assert!(ops.contains(op), "no generated model uses {op}: {ops:?}");
    }
}

/// One QDQ convolution (QuantizeLinear -> DequantizeLinear, DequantizeLinear of an int8 weight,
/// Conv, QuantizeLinear -> DequantizeLinear) whose exact output, 81.49999 quanta, is below a
/// rounding boundary while the float convolution of the dequantized values rounds above it
/// (81.5 -> 82). onnxruntime's default session runs uint8 units as the integer QLinearConv (81);
/// on x86-64 it fuses int8 ones only when it can turn them into uint8, not when the output's
/// QuantizeLinear feeds two DequantizeLinear nodes (82). Also behind another fused convolution
/// (an identity 1x1 one). Measured with onnxruntime 1.32; this runtime does the same.
#[test]
fn a_qdq_convolution_runs_as_onnxruntime_runs_it() {
    use flywheel_runtime::proto_types::{
        GraphProto, NodeProto, OperatorSetIdProto, TensorProto, TypeProto, ValueInfoProto, type_proto,
    };
    let (xs, ws, ys) = (f32::from_bits(0x3a94a8fc), f32::from_bits(0x3d302e33), f32::from_bits(0x3b0938e4));
    let float =
        |name: &str, v: f32| TensorProto { name: name.into(), data_type: 1, float_data: vec![v], ..Default::default() };
    let ints = |name: &str, data_type: i32, dims: &[i64], v: &[i32]| TensorProto {
        name: name.into(),
        data_type,
        dims: dims.to_vec(),
        int32_data: v.to_vec(),
        ..Default::default()
    };
    let node = |op: &str, ins: &[&str], out: &str| NodeProto {
        op_type: op.into(),
        input: ins.iter().map(|s| s.to_string()).collect(),
        output: vec![out.into()],
        ..Default::default()
    };
    let info = |name: &str| ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor { elem_type: 1, shape: None })),
            ..Default::default()
        }),
        ..Default::default()
    };
    // Activations uint8 (ONNX type 2, zero point 0) or int8 (3, zero point -128), read back by
    // one or two DequantizeLinear nodes, after an identity convolution or not; the result in
    // output quanta.
    let run = |activation_type: i32, readers: usize, behind_identity: bool| -> f32 {
        let zp = if activation_type == 2 { 0 } else { -128 };
        let mut nodes =
            vec![node("QuantizeLinear", &["x", "xs", "xz"], "xq"), node("DequantizeLinear", &["xq", "xs", "xz"], "xd")];
        if behind_identity {
            nodes.extend([
                node("DequantizeLinear", &["iq", "one", "wz"], "id"),
                node("Conv", &["xd", "id"], "i"),
                node("QuantizeLinear", &["i", "xs", "xz"], "iyq"),
                node("DequantizeLinear", &["iyq", "xs", "xz"], "ixd"),
            ]);
        }
        nodes.extend([
            node("DequantizeLinear", &["wq", "ws", "wz"], "wd"),
            node("Conv", &[if behind_identity { "ixd" } else { "xd" }, "wd"], "y"),
            node("QuantizeLinear", &["y", "ys", "yz"], "yq"),
        ]);
        let outs: Vec<String> = (0..readers).map(|i| format!("out{i}")).collect();
        nodes.extend(outs.iter().map(|o| node("DequantizeLinear", &["yq", "ys", "yz"], o)));
        let m = ModelProto {
            ir_version: 8,
            opset_import: vec![OperatorSetIdProto { domain: String::new(), version: 13 }],
            graph: Some(GraphProto {
                node: nodes,
                input: vec![info("x")],
                output: outs.iter().map(|o| info(o)).collect(),
                initializer: vec![
                    float("xs", xs),
                    ints("xz", activation_type, &[], &[zp]),
                    ints("wq", 3, &[1, 2, 1, 1], &[55, -29]),
                    ints("iq", 3, &[2, 2, 1, 1], &[1, 0, 0, 1]),
                    float("one", 1.0),
                    float("ws", ws),
                    ints("wz", 3, &[], &[0]),
                    float("ys", ys),
                    ints("yz", activation_type, &[], &[zp]),
                ],
                ..Default::default()
            }),
            ..Default::default()
        };
        let model = Model::from_proto(&m).unwrap();
        // Quantized: 139 and 143 quanta above the zero point, times the weights 55 and -29.
        let x = Tensor::from_vec(vec![139f32 * xs, 143f32 * xs], (1, 2, 1, 1), &candle_core::Device::Cpu).unwrap();
        let out = model.run(&[("x", x)]).unwrap();
        values(&out[0].1)[0] as f32 / ys
    };
    for behind_identity in [false, true] {
        let case = if behind_identity { " behind an identity convolution" } else { "" };
        assert_eq!(run(2, 1, behind_identity), 81.0, "uint8{case}: the integer convolution");
        assert_eq!(run(2, 2, behind_identity), 81.0, "uint8 read twice{case}: the integer convolution");
        assert_eq!(run(3, 1, behind_identity), 81.0, "int8 turned into uint8{case}: the integer convolution");
        assert_eq!(run(3, 2, behind_identity), 82.0, "int8 read twice{case}: the float convolution (x86-64)");
    }
}
