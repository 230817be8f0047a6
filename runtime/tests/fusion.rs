//! Load-time fusions against the unfused graph: the inference plan folds a per-channel Mul / Add
//! by a constant after a Conv into the Conv (and then fuses the Relu), and a BatchNorm with the
//! Mul / Add / Relu after it into one pass; the training plan keeps every node, so it is the
//! oracle.

use flywheel_runtime::proto_types::{
    GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
    tensor_shape_proto, type_proto,
};
use flywheel_runtime::{Device, Model, Tensor, TrainableModel};
use prost::Message;

fn tensor(name: &str, dims: &[i64], seed: u32) -> TensorProto {
    let n: i64 = dims.iter().product();
    let mut s = seed;
    let float_data = (0..n)
        .map(|_| {
            s = s.wrapping_mul(1_103_515_245).wrapping_add(12345);
            ((s >> 8) % 2000) as f32 / 1000.0 - 1.0
        })
        .collect();
    TensorProto { name: name.into(), dims: dims.to_vec(), data_type: 1, float_data, ..Default::default() }
}

fn info(name: &str, dims: &[i64]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|&d| tensor_shape_proto::Dimension {
            value: Some(tensor_shape_proto::dimension::Value::DimValue(d)),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: 1,
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn node(op: &str, ins: &[&str], out: &str) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        name: out.into(),
        input: ins.iter().map(|s| s.to_string()).collect(),
        output: vec![out.into()],
        ..Default::default()
    }
}

/// Conv -> Mul(scale) -> Add(shift) -> Relu, the scale and shift in the given shapes.
fn model(scale: &[i64], shift: &[i64], bias: bool) -> Vec<u8> {
    let mut conv = node("Conv", if bias { &["x", "w", "b"] } else { &["x", "w"] }, "c");
    conv.attribute.push(flywheel_runtime::proto_types::AttributeProto {
        name: "pads".into(),
        r#type: 7,
        ints: vec![1, 1, 1, 1],
        ..Default::default()
    });
    let mut init = vec![tensor("w", &[4, 3, 3, 3], 1), tensor("s", scale, 2), tensor("t", shift, 3)];
    if bias {
        init.push(tensor("b", &[4], 4));
    }
    let graph = GraphProto {
        node: vec![conv, node("Mul", &["s", "c"], "m"), node("Add", &["m", "t"], "a"), node("Relu", &["a"], "y")],
        initializer: init,
        input: vec![info("x", &[2, 3, 6, 6])],
        output: vec![info("y", &[2, 4, 6, 6])],
        name: "g".into(),
        ..Default::default()
    };
    ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: 17 }],
        graph: Some(graph),
        ..Default::default()
    }
    .encode_to_vec()
}

#[test]
fn a_per_channel_mul_and_add_after_a_conv_fold_into_it() {
    let x = Tensor::randn(0f32, 1.0, (2, 3, 6, 6), &Device::Cpu).unwrap();
    for (scale, shift, bias, folded) in [
        (&[1, 4, 1, 1][..], &[4, 1, 1][..], true, true),
        (&[4, 1, 1], &[1], false, true),
        (&[1], &[1, 4, 1, 1], true, true),
        // Not per channel: broadcast along the width, left as written.
        (&[1, 1, 1, 6], &[4, 1, 1], true, false),
    ] {
        let bytes = model(scale, shift, bias);
        let fused = Model::from_bytes(&bytes).unwrap();
        assert_eq!(fused.node_count(), if folded { 1 } else { 4 }, "{scale:?} {shift:?}");
        let y = &fused.run(&[("x", x.clone())]).unwrap()[0].1;
        let oracle = TrainableModel::from_bytes(&bytes).unwrap();
        let want = &oracle.forward(&[("x", x.clone())]).unwrap()[0].1;
        let diff = (y - want).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap();
        let diff = diff.to_scalar::<f32>().unwrap();
        assert!(diff < 1e-5, "{scale:?} {shift:?} bias {bias}: {diff}");
    }
}

/// BatchNormalization -> Mul(scale) -> Add(shift) -> Relu on an input of the given dims.
fn bn_model(x: &[i64], scale: &[i64], shift: &[i64]) -> Vec<u8> {
    let c = x[1];
    let mut var = tensor("v", &[c], 5);
    var.float_data.iter_mut().for_each(|v| *v = v.abs() + 0.1);
    let init = vec![
        tensor("g", &[c], 1),
        tensor("be", &[c], 2),
        tensor("mu", &[c], 3),
        var,
        tensor("s", scale, 6),
        tensor("t", shift, 7),
    ];
    let graph = GraphProto {
        node: vec![
            node("BatchNormalization", &["x", "g", "be", "mu", "v"], "n"),
            node("Mul", &["n", "s"], "m"),
            node("Add", &["t", "m"], "a"),
            node("Relu", &["a"], "y"),
        ],
        initializer: init,
        input: vec![info("x", x)],
        output: vec![info("y", x)],
        name: "g".into(),
        ..Default::default()
    };
    ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: 17 }],
        graph: Some(graph),
        ..Default::default()
    }
    .encode_to_vec()
}

#[test]
fn a_batch_norm_with_mul_add_and_relu_after_it_runs_as_one_pass() {
    for (x, scale, shift, nodes) in [
        (&[2, 4, 5, 6][..], &[4, 1, 1][..], &[1, 4, 1, 1][..], 1),
        (&[2, 4, 5, 6], &[1], &[4, 1, 1], 1),
        (&[2, 4, 7], &[4, 1], &[4, 1], 1),
        (&[3, 4], &[4], &[1, 4], 1),
        // Along the width, not the channels: the Mul stays (and the Add and Relu after it).
        (&[2, 4, 5, 4], &[1, 1, 1, 4], &[4, 1, 1], 4),
    ] {
        let bytes = bn_model(x, scale, shift);
        let dims: Vec<usize> = x.iter().map(|&d| d as usize).collect();
        let xv = Tensor::randn(0f32, 1.0, dims.as_slice(), &Device::Cpu).unwrap();
        let fused = Model::from_bytes(&bytes).unwrap();
        assert_eq!(fused.node_count(), nodes, "{x:?} {scale:?} {shift:?}");
        let y = &fused.run(&[("x", xv.clone())]).unwrap()[0].1;
        let oracle = TrainableModel::from_bytes(&bytes).unwrap();
        let want = &oracle.forward(&[("x", xv.clone())]).unwrap()[0].1;
        let diff = (y - want).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap();
        let diff = diff.to_scalar::<f32>().unwrap();
        assert!(diff < 1e-5, "{x:?} {scale:?} {shift:?}: {diff}");
    }
}

/// op(a, b) -> Relu, with a and b graph inputs of the given dims.
fn sum_relu_model(op: &str, a: &[i64], b: &[i64], out: &[i64]) -> Vec<u8> {
    let graph = GraphProto {
        node: vec![node(op, &["a", "b"], "s"), node("Relu", &["s"], "y")],
        input: vec![info("a", a), info("b", b)],
        output: vec![info("y", out)],
        name: "g".into(),
        ..Default::default()
    };
    ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: 17 }],
        graph: Some(graph),
        ..Default::default()
    }
    .encode_to_vec()
}

#[test]
fn a_residual_sum_and_its_relu_run_as_one_node() {
    // Same shapes (the one-pass kernel) and a broadcast (the two ops as written).
    for (op, a, b) in [
        ("Add", &[2, 3, 4, 5][..], &[2, 3, 4, 5][..]),
        ("Sum", &[2, 3, 4, 5], &[2, 3, 4, 5]),
        ("Add", &[2, 3, 4, 5], &[1, 3, 1, 1]),
    ] {
        let bytes = sum_relu_model(op, a, b, &[2, 3, 4, 5]);
        let t = |d: &[i64]| {
            let dims: Vec<usize> = d.iter().map(|&v| v as usize).collect();
            Tensor::randn(0f32, 1.0, dims.as_slice(), &Device::Cpu).unwrap()
        };
        let (x, y) = (t(a), t(b));
        let fused = Model::from_bytes(&bytes).unwrap();
        assert_eq!(fused.node_count(), 1, "{op} {a:?} {b:?}");
        let got = &fused.run(&[("a", x.clone()), ("b", y.clone())]).unwrap()[0].1;
        let want = x.broadcast_add(&y).unwrap().relu().unwrap();
        let diff =
            (got - want).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
        assert_eq!(diff, 0.0, "{op} {a:?} {b:?}");
    }
}
