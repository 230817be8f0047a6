//! Inference fusion of a BatchNormalization that no Conv precedes (DenseNet's pre-activation
//! BatchNorm, Caffe2's BatchNorm + Mul + Add exports) with the per-channel Mul / Add by constants
//! and the activation that follow it: one per-channel multiply-add pass with the activation
//! applied while the plane is in cache, instead of four passes over the tensor.

use super::{activation_of, consumers, is_output};
use crate::graph::Graph;
use crate::kernels::Activation;
use crate::ops::{self, Op, elementwise::Binary};
use candle_core::Tensor;
use std::collections::HashSet;

/// The rank the activation must have for a constant to act along its channel axis (dim 1):
/// `Some(r)` for a [.., C, 1, .., 1] constant (C at dim 1 of a rank-r input), `None` for a
/// single value. Anything else (another axis, a rank-raising shape) is not per-channel.
fn channel_rank(k: &Tensor, c: usize) -> Option<Option<usize>> {
    let d = k.dims();
    if k.elem_count() == 1 {
        return if d.len() <= 1 { Some(None) } else { None };
    }
    let pos = d.iter().position(|&v| v != 1)?;
    if d[pos] != c || d[pos + 1..].iter().any(|&v| v != 1) {
        return None;
    }
    // C lies at dim 1 of the input, its trailing dims follow it, and the constant must not
    // have more dims than the input ([1, 1, 1, C] is per-channel only for a rank-2 input, and
    // would raise its rank).
    let rank = d.len() - pos - 1 + 2;
    if d.len() > rank { None } else { Some(Some(rank)) }
}

pub(super) fn fuse_batch_norm_chains(g: &mut Graph) {
    let mut remove = HashSet::new();
    for bi in 0..g.nodes.len() {
        let Op::BatchNorm { eps } = g.nodes[bi].op else { continue };
        let ins = g.nodes[bi].inputs.clone();
        if ins.len() < 5 {
            continue;
        }
        let params: Option<Vec<&Tensor>> = ins[1..5].iter().map(|i| i.and_then(|i| g.consts.get(&i))).collect();
        let Some(params) = params else { continue };
        let Ok((mut a, mut b)) = ops::nn::bn_affine(params[0], params[1], params[2], params[3], eps) else {
            continue;
        };
        if a.rank() != 1 || b.rank() != 1 || a.dtype() != candle_core::DType::F32 {
            continue;
        }
        let c = a.dims()[0];
        let mut rank: Option<usize> = None;
        let mut act = Activation::None;
        let mut out = g.nodes[bi].outputs[0];
        let mut gone = Vec::new();
        loop {
            let users = consumers(g, out);
            if users.len() != 1 || is_output(g, out) || act != Activation::None {
                break;
            }
            let ui = users[0];
            if let Some(f) = activation_of(g, &g.nodes[ui]) {
                act = f;
            } else {
                let is_mul = match g.nodes[ui].op {
                    Op::Binary(Binary::Mul) => true,
                    Op::Binary(Binary::Add) => false,
                    _ => break,
                };
                let other = match g.nodes[ui].inputs.as_slice() {
                    [Some(x), Some(y)] if *x == out && *y != out => *y,
                    [Some(x), Some(y)] if *y == out && *x != out => *x,
                    _ => break,
                };
                let Some(k) = g.consts.get(&other) else { break };
                let Some(need) = channel_rank(k, c) else { break };
                if k.dtype() != a.dtype() || (need.is_some() && rank.is_some() && need != rank) {
                    break;
                }
                let Ok(kv) = k.flatten_all().and_then(|k| k.broadcast_as(c)).and_then(|k| k.contiguous()) else {
                    break;
                };
                let folded = if is_mul {
                    a.mul(&kv).and_then(|na| Ok((na, b.mul(&kv)?)))
                } else {
                    b.add(&kv).map(|nb| (a.clone(), nb))
                };
                let Ok((na, nb)) = folded else { break };
                (a, b) = (na, nb);
                rank = rank.or(need);
            }
            gone.push(ui);
            out = g.nodes[ui].outputs[0];
        }
        let ids: Vec<usize> = [a, b]
            .into_iter()
            .enumerate()
            .map(|(i, t)| {
                let id = g.value_names.len();
                g.value_names.push(format!("{}::affine_{}", g.nodes[bi].name, ["scale", "shift"][i]));
                g.consts.insert(id, t);
                id
            })
            .collect();
        let node = &mut g.nodes[bi];
        node.op = Op::ChannelAffine { act, rank };
        node.inputs = vec![ins[0], Some(ids[0]), Some(ids[1])];
        node.outputs = vec![out];
        remove.extend(gone);
    }
    let mut i = 0;
    g.nodes.retain(|_| {
        i += 1;
        !remove.contains(&(i - 1))
    });
}
