//! String tensors: graphs with string inputs, initializers and constants run through
//! `Model::run_values`; any op that cannot take strings is rejected at load naming the node.

use flywheel_runtime::proto_types::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, TypeProto, ValueInfoProto,
    type_proto,
};
use flywheel_runtime::{LoadError, Model, StringTensor, Tensor, Value};

const STRING: i32 = 8;
const BOOL: i32 = 9;
const FLOAT: i32 = 1;
const INT64: i32 = 7;

fn info(name: &str, elem_type: i32) -> ValueInfoProto {
    let tt = type_proto::Tensor { elem_type, shape: None };
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto { value: Some(type_proto::Value::TensorType(tt)), ..Default::default() }),
        ..Default::default()
    }
}

fn node(op: &str, name: &str, ins: &[&str], outs: &[&str]) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        name: name.into(),
        input: ins.iter().map(|s| s.to_string()).collect(),
        output: outs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn model(
    nodes: Vec<NodeProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
    inits: Vec<TensorProto>,
) -> ModelProto {
    ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: 13 }],
        graph: Some(GraphProto {
            node: nodes,
            input: inputs,
            output: outputs,
            initializer: inits,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn strings(dims: &[usize], v: &[&str]) -> StringTensor {
    StringTensor::new(dims.to_vec(), v.iter().map(|s| s.as_bytes().to_vec()).collect()).unwrap()
}

fn string_init(name: &str, dims: &[i64], v: &[&str]) -> TensorProto {
    TensorProto {
        name: name.into(),
        data_type: STRING,
        dims: dims.to_vec(),
        string_data: v.iter().map(|s| s.as_bytes().to_vec()).collect(),
        ..Default::default()
    }
}

#[test]
fn equal_identity_and_reshape_on_strings() {
    // x: string [2, 2] -> Identity -> Reshape [4] -> Equal with the constant ["a","b","c","d"]
    // (value_strings), and x == "b" (a scalar string initializer, broadcast).
    let shape = TensorProto {
        name: "shape".into(),
        data_type: INT64,
        dims: vec![1],
        int64_data: vec![4],
        ..Default::default()
    };
    let abcd = AttributeProto {
        name: "value_strings".into(),
        r#type: 8,
        strings: ["a", "b", "c", "d"].iter().map(|s| s.as_bytes().to_vec()).collect(),
        ..Default::default()
    };
    let mut konst = node("Constant", "abcd", &[], &["abcd"]);
    konst.attribute.push(abcd);
    let g = model(
        vec![
            node("Identity", "id", &["x"], &["x1"]),
            node("Reshape", "flat", &["x1", "shape"], &["flat"]),
            konst,
            node("Equal", "eq_flat", &["flat", "abcd"], &["same"]),
            node("Equal", "eq_b", &["x", "b"], &["is_b"]),
        ],
        vec![info("x", STRING)],
        vec![info("same", BOOL), info("is_b", BOOL), info("flat", STRING)],
        vec![shape, string_init("b", &[], &["b"])],
    );
    let m = Model::from_proto(&g).unwrap();
    assert!(m.inputs()[0].is_string);
    assert!(m.outputs()[2].is_string && !m.outputs()[0].is_string);
    let x = strings(&[2, 2], &["a", "x", "c", "b"]);
    let out = m.run_values(&[("x", Value::Strings(x))]).unwrap();
    let Value::Tensor(same) = &out[0].1 else { panic!("Equal must give a tensor") };
    assert_eq!(same.to_vec1::<u8>().unwrap(), vec![1, 0, 1, 0]);
    let Value::Tensor(is_b) = &out[1].1 else { panic!("Equal must give a tensor") };
    assert_eq!(is_b.to_vec2::<u8>().unwrap(), vec![vec![0, 0], vec![0, 1]]);
    let Value::Strings(flat) = &out[2].1 else { panic!("Reshape of strings must give strings") };
    assert_eq!(flat, &strings(&[4], &["a", "x", "c", "b"]));

    // A numeric value where the model expects strings is a clear input error.
    let t = Tensor::zeros((2, 2), flywheel_runtime::DType::F32, &flywheel_runtime::Device::Cpu).unwrap();
    let err = m.run_values(&[("x", Value::Tensor(t))]).unwrap_err().to_string();
    assert!(err.contains("expects a string tensor"), "{err}");
}

fn load_err(g: &ModelProto) -> String {
    match Model::from_proto(g) {
        Err(e @ LoadError::Node { .. }) => e.to_string(),
        Err(e) => panic!("expected a node error, got {e}"),
        Ok(_) => panic!("a string value reached an op that cannot take strings, yet the model loaded"),
    }
}

#[test]
fn other_ops_on_strings_are_rejected_at_load() {
    // A numeric op fed a string input.
    let g = model(vec![node("Relu", "act", &["x"], &["y"])], vec![info("x", STRING)], vec![info("y", FLOAT)], vec![]);
    let e = load_err(&g);
    assert!(e.contains("'act'") && e.contains("string"), "{e}");
    // A string initializer fed into Cast, downstream of a string Identity.
    let mut g = model(
        vec![node("Identity", "copy", &["s"], &["s1"]), node("Cast", "to_float", &["s1"], &["y"])],
        vec![],
        vec![info("y", FLOAT)],
        vec![string_init("s", &[2], &["1", "2"])],
    );
    g.graph.as_mut().unwrap().node[1].attribute.push(AttributeProto {
        name: "to".into(),
        r#type: 2,
        i: FLOAT as i64,
        ..Default::default()
    });
    let e = load_err(&g);
    assert!(e.contains("'to_float'") && e.contains("'s1'"), "{e}");
    // Equal of a string with a number.
    let g = model(
        vec![node("Equal", "mixed", &["x", "n"], &["y"])],
        vec![info("x", STRING), info("n", FLOAT)],
        vec![info("y", BOOL)],
        vec![],
    );
    let e = load_err(&g);
    assert!(e.contains("'mixed'") && e.contains("non-string"), "{e}");
}
