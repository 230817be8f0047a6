//! Inference fusion of a residual sum and the Relu after it (ResNet's and ShuffleNet's blocks:
//! Sum or Add of two activations, then Relu): one pass writes the rectified sum, instead of a
//! sum written to memory and read back by the Relu.

use super::{activation_of, consumers, is_output};
use crate::graph::Graph;
use crate::kernels::Activation;
use crate::ops::{
    Op,
    elementwise::{Binary, Variadic},
};
use std::collections::HashSet;

pub(super) fn fuse_sum_relu(g: &mut Graph) {
    let mut remove = HashSet::new();
    for si in 0..g.nodes.len() {
        let is_sum = matches!(g.nodes[si].op, Op::Binary(Binary::Add) | Op::Variadic(Variadic::Sum));
        let ins = &g.nodes[si].inputs;
        // Two activations (a constant operand is a bias, folded elsewhere or not worth it).
        if !is_sum || ins.len() != 2 || ins.iter().any(|i| i.is_none_or(|i| g.consts.contains_key(&i))) {
            continue;
        }
        let out = g.nodes[si].outputs[0];
        let users = consumers(g, out);
        if users.len() != 1 || is_output(g, out) || activation_of(g, &g.nodes[users[0]]) != Some(Activation::Relu) {
            continue;
        }
        let ri = users[0];
        let relu = Box::new(g.nodes[ri].op.clone());
        let first = Box::new(g.nodes[si].op.clone());
        g.nodes[si].op = Op::AddRelu { first, relu };
        g.nodes[si].outputs = vec![g.nodes[ri].outputs[0]];
        remove.insert(ri);
    }
    let mut i = 0;
    g.nodes.retain(|_| {
        i += 1;
        !remove.contains(&(i - 1))
    });
}
