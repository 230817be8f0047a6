//! Which weights `trainLayers: head` trains, read from the graph: walking back from the
//! outputs, the first parameterised layers met on every path are the heads (for a YOLOv8
//! export, the box and class convolutions of each scale), past fixed decoding convolutions
//! such as YOLOv8's DFL (a 1x1 convolution whose constant weight is 0, 1, ..., K-1, turning a
//! softmax over K bins into a distance). A depth above 1 also trains the layers feeding the
//! heads, found the same way from the heads' inputs.

use std::collections::{HashMap, HashSet};

use flywheel_runtime::proto_types::{GraphProto, ModelProto, NodeProto, TensorProto};
use prost::Message;

use crate::error::{Result, TrainerError};

const FLOAT: i32 = 1;

/// The initializers of the layers `depth` levels back from the outputs, in graph order.
pub fn head_params(bytes: &[u8], depth: u32) -> Result<Vec<String>> {
    let proto =
        ModelProto::decode(bytes).map_err(|e| TrainerError::Model { uri: "model".into(), reason: e.to_string() })?;
    let g = proto.graph.unwrap_or_default();
    let graph = Graph::new(&g);
    let mut targets: Vec<&str> = g.output.iter().map(|o| o.name.as_str()).collect();
    let mut chosen: HashSet<usize> = HashSet::new();
    for _ in 0..depth.max(1) {
        let level = graph.first_layers(&targets, &chosen);
        if level.is_empty() {
            break;
        }
        targets = level.iter().filter_map(|&n| g.node[n].input.first().map(String::as_str)).collect();
        chosen.extend(level);
    }
    let mut names: Vec<String> = Vec::new();
    for (i, n) in g.node.iter().enumerate() {
        if !chosen.contains(&i) {
            continue;
        }
        let mut picked: Vec<&String> = n.input.iter().filter(|x| graph.inits.contains_key(x.as_str())).collect();
        // A separate bias (MatMul + Add) or a BatchNormalization after the layer belongs to it.
        for out in &n.output {
            for &c in graph.consumers.get(out.as_str()).map(Vec::as_slice).unwrap_or_default() {
                let c = &g.node[c];
                match c.op_type.as_str() {
                    "Add" if n.op_type == "MatMul" => {
                        picked.extend(c.input.iter().filter(|x| graph.inits.contains_key(x.as_str())))
                    }
                    "BatchNormalization" => picked.extend(c.input.iter().skip(1).take(2)),
                    _ => {}
                }
            }
        }
        for p in picked {
            if graph.inits.get(p.as_str()).is_some_and(|t| t.data_type == FLOAT) && !names.contains(p) {
                names.push(p.clone());
            }
        }
    }
    Ok(names)
}

struct Graph<'a> {
    g: &'a GraphProto,
    inits: HashMap<&'a str, &'a TensorProto>,
    producer: HashMap<&'a str, usize>,
    consumers: HashMap<&'a str, Vec<usize>>,
}

impl<'a> Graph<'a> {
    fn new(g: &'a GraphProto) -> Self {
        let inits = g.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
        let mut producer = HashMap::new();
        let mut consumers: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, n) in g.node.iter().enumerate() {
            for o in &n.output {
                producer.insert(o.as_str(), i);
            }
            for x in &n.input {
                consumers.entry(x.as_str()).or_default().push(i);
            }
        }
        Self { g, inits, producer, consumers }
    }

    fn weight(&self, n: &NodeProto) -> Option<&'a TensorProto> {
        let candidates: &[usize] = if n.op_type == "MatMul" { &[1, 0] } else { &[1] };
        candidates
            .iter()
            .filter_map(|&i| n.input.get(i))
            .find_map(|x| self.inits.get(x.as_str()).copied())
            .filter(|t| t.data_type == FLOAT && t.dims.len() >= 2)
    }

    /// A layer with weights (Conv, ConvTranspose, Gemm, MatMul with a constant operand).
    fn is_layer(&self, n: &NodeProto) -> bool {
        matches!(n.op_type.as_str(), "Conv" | "ConvTranspose" | "Gemm" | "MatMul") && self.weight(n).is_some()
    }

    /// A fixed decoding convolution: one output channel, 1x1, weight 0, 1, ..., K-1, no bias
    /// (or a zero bias).
    fn is_fixed_decode(&self, n: &NodeProto) -> bool {
        if n.op_type != "Conv" {
            return false;
        }
        let Some(w) = self.weight(n) else { return false };
        let (dims, values) = (&w.dims, float_values(w));
        let Some(values) = values else { return false };
        let arange = dims.len() == 4
            && dims[0] == 1
            && dims[2] == 1
            && dims[3] == 1
            && dims[1] > 1
            && values.iter().enumerate().all(|(i, v)| *v == i as f32);
        let zero_bias = match n.input.get(2).filter(|b| !b.is_empty()) {
            None => true,
            Some(b) => {
                self.inits.get(b.as_str()).and_then(|t| float_values(t)).is_some_and(|v| v.iter().all(|x| *x == 0.0))
            }
        };
        arange && zero_bias
    }

    /// The layers (node indices, not in `skip`) first met walking back from `targets`.
    fn first_layers(&self, targets: &[&'a str], skip: &HashSet<usize>) -> Vec<usize> {
        let mut found = Vec::new();
        let mut seen: HashSet<&str> = HashSet::new();
        let mut stack: Vec<&str> = targets.to_vec();
        while let Some(t) = stack.pop() {
            if !seen.insert(t) {
                continue;
            }
            let Some(&i) = self.producer.get(t) else { continue };
            let n = &self.g.node[i];
            if self.is_layer(n) && !self.is_fixed_decode(n) && !skip.contains(&i) {
                if !found.contains(&i) {
                    found.push(i);
                }
                continue;
            }
            // Shapes carry no gradient: what only feeds a Shape is not upstream of the values.
            if matches!(n.op_type.as_str(), "Shape" | "Size") {
                continue;
            }
            stack.extend(n.input.iter().filter(|x| !x.is_empty()).map(String::as_str));
        }
        found.sort_unstable();
        found
    }
}

/// The values of a float initializer (raw little-endian bytes or `float_data`).
fn float_values(t: &TensorProto) -> Option<Vec<f32>> {
    if t.data_type != FLOAT {
        return None;
    }
    if !t.raw_data.is_empty() {
        return Some(t.raw_data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect());
    }
    Some(t.float_data.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::{self, GraphBuilder};

    #[test]
    fn the_generated_models_heads_are_their_last_layers() {
        let det = generate::detector(3, 64, 1).unwrap();
        let names = head_params(&det, 1).unwrap();
        assert_eq!(names.len(), 2, "{names:?}");
        let all = crate::model::weight_names(&det).unwrap();
        assert_eq!(names, all[all.len() - 2..].to_vec());
        let deeper = head_params(&det, 2).unwrap();
        assert_eq!(deeper, all[all.len() - 4..].to_vec());
        let cls = generate::classifier(3, 64, 1).unwrap();
        let all = crate::model::weight_names(&cls).unwrap();
        assert_eq!(head_params(&cls, 1).unwrap(), all[all.len() - 2..].to_vec());
        assert_eq!(head_params(&cls, 100).unwrap(), all);
    }

    /// A YOLOv8-shaped tail: a box conv (4 x 4 bins) through softmax and a DFL conv, a class
    /// conv through a sigmoid, both from a shared stem conv; a shape path from the stem.
    fn dfl_graph(dfl_weight: Vec<f32>) -> Vec<u8> {
        use crate::generate::onnx_builder::{Attr, Dim};
        let mut g = GraphBuilder::new("dfl");
        g.input("x", &[Dim::Named("N"), Dim::Fixed(3), Dim::Fixed(8), Dim::Fixed(8)]);
        g.output("out", &[Dim::Named("N"), Dim::Fixed(6), Dim::Fixed(64)]);
        let w = |g: &mut GraphBuilder, n: &str, o: i64, i: i64| {
            g.initializer(n, &[o, i, 1, 1], vec![0.1; (o * i) as usize])
        };
        let (sw, bw, cw) = (w(&mut g, "stem.w", 4, 3), w(&mut g, "box.w", 16, 4), w(&mut g, "cls.w", 2, 4));
        let dw = g.initializer("dfl.w", &[1, 4, 1, 1], dfl_weight);
        let stem = g.node("Conv", &["x", &sw], &[], vec![]);
        let _shape = g.node("Shape", &[&stem], &[], vec![]);
        let bx = g.node("Conv", &[&stem, &bw], &[], vec![]);
        let shape = g.constant("s", crate::generate::onnx_builder::int64_tensor("s", &[4], vec![0, 4, 4, 64]));
        let r = g.node("Reshape", &[&bx, &shape], &[], vec![]);
        let sm = g.node("Softmax", &[&r], &[], vec![("axis", Attr::Int(1))]);
        let d = g.node("Conv", &[&sm, &dw], &[], vec![]);
        let cls = g.node("Conv", &[&stem, &cw], &[], vec![]);
        let sig = g.node("Sigmoid", &[&cls], &[], vec![]);
        let s2 = g.constant("s2", crate::generate::onnx_builder::int64_tensor("s2", &[3], vec![0, 4, 64]));
        let s3 = g.constant("s3", crate::generate::onnx_builder::int64_tensor("s3", &[3], vec![0, 2, 64]));
        let d = g.node("Reshape", &[&d, &s2], &[], vec![]);
        let sig = g.node("Reshape", &[&sig, &s3], &[], vec![]);
        g.node("Concat", &[&d, &sig], &["out"], vec![("axis", Attr::Int(1))]);
        g.finish("dfl test")
    }

    #[test]
    fn a_dfl_convolution_is_skipped_for_the_box_and_class_heads() {
        let names = head_params(&dfl_graph(vec![0.0, 1.0, 2.0, 3.0]), 1).unwrap();
        assert_eq!(names, ["box.w", "cls.w"]);
        assert_eq!(head_params(&dfl_graph(vec![0.0, 1.0, 2.0, 3.0]), 2).unwrap(), ["stem.w", "box.w", "cls.w"]);
        // Learnt weights are a layer like any other.
        assert_eq!(head_params(&dfl_graph(vec![0.5, 1.0, 2.0, 3.0]), 1).unwrap(), ["dfl.w", "cls.w"]);
    }
}
