//! Planning, done once at load: constant folding, inference fusions (BatchNorm folded into the
//! preceding Conv, activations fused into Conv) and liveness (values freed after last use).

use crate::error::LoadError;
use crate::graph::{Graph, Node};
use crate::kernels::Activation;
use crate::ops::{self, Op, elementwise::Unary};
use candle_core::Tensor;
use std::collections::HashSet;

pub struct Plan {
    pub graph: Graph,
    /// For each node, the value ids that are dead after it runs.
    pub free_after: Vec<Vec<usize>>,
}

pub struct PlanOptions {
    /// Apply inference-only fusions (off for training).
    pub fuse: bool,
    /// Values that must not be folded into constants (trainable parameters).
    pub keep_live: HashSet<usize>,
}

pub fn build(mut g: Graph, opts: &PlanOptions) -> Result<Plan, LoadError> {
    fold_constants(&mut g, &opts.keep_live)?;
    check_spatial_rank(&g)?;
    if opts.fuse {
        fold_batch_norm(&mut g)?;
        fuse_activations(&mut g);
    }
    let free_after = liveness(&g);
    Ok(Plan { graph: g, free_after })
}

fn fold_constants(g: &mut Graph, keep_live: &HashSet<usize>) -> Result<(), LoadError> {
    let mut kept = Vec::with_capacity(g.nodes.len());
    for n in std::mem::take(&mut g.nodes) {
        let foldable = n.inputs.iter().flatten().all(|i| g.consts.contains_key(i) && !keep_live.contains(i));
        if !foldable {
            kept.push(n);
            continue;
        }
        let ins: Vec<Option<&Tensor>> = n.inputs.iter().map(|i| i.map(|i| &g.consts[&i])).collect();
        let outs = ops::run_guarded(&n.op, &ins, n.outputs.len()).map_err(|e| LoadError::Node {
            node: n.name.clone(),
            op: n.op_type.clone(),
            reason: e.to_string(),
        })?;
        for (id, t) in n.outputs.iter().zip(outs) {
            g.consts.insert(*id, t);
        }
    }
    g.nodes = kept;
    Ok(())
}

fn consumers(g: &Graph, id: usize) -> Vec<usize> {
    g.nodes.iter().enumerate().filter(|(_, n)| n.inputs.contains(&Some(id))).map(|(i, _)| i).collect()
}

fn is_output(g: &Graph, id: usize) -> bool {
    g.outputs.iter().any(|(o, _)| *o == id)
}

fn fold_batch_norm(g: &mut Graph) -> Result<(), LoadError> {
    let mut remove = HashSet::new();
    for ci in 0..g.nodes.len() {
        if !matches!(g.nodes[ci].op, Op::Conv(_)) {
            continue;
        }
        let out = g.nodes[ci].outputs[0];
        let users = consumers(g, out);
        if users.len() != 1 || is_output(g, out) {
            continue;
        }
        let bi = users[0];
        let Op::BatchNorm { eps } = g.nodes[bi].op else { continue };
        let bn_ins = g.nodes[bi].inputs.clone();
        if bn_ins[0] != Some(out) || bn_ins.len() < 5 {
            continue;
        }
        let params: Option<Vec<&Tensor>> = bn_ins[1..5].iter().map(|i| i.and_then(|i| g.consts.get(&i))).collect();
        let w_id = g.nodes[ci].inputs.get(1).copied().flatten();
        let (Some(params), Some(w_id)) = (params, w_id) else { continue };
        let Some(w) = g.consts.get(&w_id) else { continue };
        let b_id = g.nodes[ci].inputs.get(2).copied().flatten();
        if b_id.is_some_and(|b| !g.consts.contains_key(&b)) {
            continue;
        }
        let fold = || -> candle_core::Result<(Tensor, Tensor)> {
            let (a, shift) = ops::nn::bn_affine(params[0], params[1], params[2], params[3], eps)?;
            let m = w.dims()[0];
            let mut shape = vec![1usize; w.rank()];
            shape[0] = m;
            let nw = w.broadcast_mul(&a.reshape(shape.as_slice())?)?;
            let nb = match b_id {
                Some(b) => (g.consts[&b].mul(&a)? + &shift)?,
                None => shift,
            };
            Ok((nw, nb))
        };
        let (nw, nb) = fold().map_err(|e| LoadError::Node {
            node: g.nodes[bi].name.clone(),
            op: "BatchNormalization".into(),
            reason: e.to_string(),
        })?;
        // Fresh value ids for the folded weights (the originals may be shared by other nodes).
        let wid = g.value_names.len();
        g.value_names.push(format!("{}::folded_w", g.nodes[ci].name));
        let bid = g.value_names.len();
        g.value_names.push(format!("{}::folded_b", g.nodes[ci].name));
        g.consts.insert(wid, nw);
        g.consts.insert(bid, nb);
        let bn_out = g.nodes[bi].outputs[0];
        let conv = &mut g.nodes[ci];
        conv.inputs = vec![conv.inputs[0], Some(wid), Some(bid)];
        conv.outputs = vec![bn_out];
        remove.insert(bi);
    }
    let mut i = 0;
    g.nodes.retain(|_| {
        i += 1;
        !remove.contains(&(i - 1))
    });
    Ok(())
}

fn activation_of(g: &Graph, n: &Node) -> Option<Activation> {
    match &n.op {
        Op::Unary(Unary::Relu) => Some(Activation::Relu),
        Op::Unary(Unary::LeakyRelu(a)) => Some(Activation::LeakyRelu(*a)),
        Op::Unary(Unary::Sigmoid) => Some(Activation::Sigmoid),
        Op::Unary(Unary::HardSigmoid(a, b)) => Some(Activation::HardSigmoid(*a, *b)),
        Op::Unary(Unary::HardSwish) => Some(Activation::HardSwish),
        Op::Clip(c) => {
            let (lo, hi) = match c.attr {
                Some(v) => v,
                None => {
                    let get = |i: usize, d: f32| -> Option<f32> {
                        match n.inputs.get(i).copied().flatten() {
                            None => Some(d),
                            Some(id) => g.consts.get(&id).and_then(|t| ops::floats(t).ok()).map(|v| v[0] as f32),
                        }
                    };
                    (get(1, f32::MIN)?, get(2, f32::MAX)?)
                }
            };
            Some(Activation::Clip(lo, hi))
        }
        _ => None,
    }
}

fn fuse_activations(g: &mut Graph) {
    let mut remove = HashSet::new();
    for ci in 0..g.nodes.len() {
        if !matches!(&g.nodes[ci].op, Op::Conv(c) if c.act == Activation::None) {
            continue;
        }
        let out = g.nodes[ci].outputs[0];
        if is_output(g, out) {
            continue;
        }
        let users = consumers(g, out);
        let mut fused: Option<(Activation, Vec<usize>, usize)> = None;
        if users.len() == 1 {
            if let Some(act) = activation_of(g, &g.nodes[users[0]]) {
                fused = Some((act, vec![users[0]], g.nodes[users[0]].outputs[0]));
            }
        } else if users.len() == 2 {
            // SiLU / HardSwish as exported: Mul(x, Sigmoid(x)) and Mul(x, HardSigmoid(x)).
            let gate = |op: &Op| match op {
                Op::Unary(Unary::Sigmoid) => Some(Activation::Silu),
                Op::Unary(Unary::HardSigmoid(a, b)) => Some(Activation::MulHardSigmoid(*a, *b)),
                _ => None,
            };
            let (s, m) =
                if gate(&g.nodes[users[0]].op).is_some() { (users[0], users[1]) } else { (users[1], users[0]) };
            let sig_out = g.nodes[s].outputs[0];
            let is_mul = matches!(g.nodes[m].op, Op::Binary(ops::elementwise::Binary::Mul));
            let mul_ins: HashSet<Option<usize>> = g.nodes[m].inputs.iter().copied().collect();
            if let Some(act) = gate(&g.nodes[s].op)
                && is_mul
                && mul_ins == HashSet::from([Some(out), Some(sig_out)])
                && consumers(g, sig_out).len() == 1
                && !is_output(g, sig_out)
            {
                fused = Some((act, vec![s, m], g.nodes[m].outputs[0]));
            }
        }
        if let Some((act, gone, new_out)) = fused {
            if let Op::Conv(c) = &mut g.nodes[ci].op {
                c.act = act;
            }
            g.nodes[ci].outputs = vec![new_out];
            remove.extend(gone);
        }
    }
    let mut i = 0;
    g.nodes.retain(|_| {
        i += 1;
        !remove.contains(&(i - 1))
    });
}

fn liveness(g: &Graph) -> Vec<Vec<usize>> {
    let mut last = vec![None; g.value_names.len()];
    for (ni, n) in g.nodes.iter().enumerate() {
        for i in n.inputs.iter().flatten() {
            last[*i] = Some(ni);
        }
        for o in &n.outputs {
            if last[*o].is_none() {
                last[*o] = Some(ni); // unused outputs die right away
            }
        }
    }
    let mut free = vec![Vec::new(); g.nodes.len()];
    for (id, l) in last.iter().enumerate() {
        if let Some(ni) = l
            && !is_output(g, id)
            && !g.consts.contains_key(&id)
        {
            free[*ni].push(id);
        }
    }
    free
}

/// Convolutions are implemented for 1-D and 2-D windows (transposed ones for 3-D too): reject
/// other ranks at load, not at run.
fn check_spatial_rank(g: &Graph) -> Result<(), LoadError> {
    for n in &g.nodes {
        let (max_rank, w_input) = match &n.op {
            Op::Conv(_) => (4, 1),
            Op::ConvTranspose(_) => (5, 1),
            Op::Quant(q) => match q.kind {
                ops::quant::Kind::ConvInteger { .. } => (4, 1),
                ops::quant::Kind::QLinearConv { .. } => (4, 3),
                _ => continue,
            },
            _ => continue,
        };
        let Some(w) = n.inputs.get(w_input).copied().flatten() else { continue };
        // The weight's rank: from the constant, or from a graph input's declared shape.
        let rank = g.consts.get(&w).map(|t| t.rank()).or_else(|| {
            g.inputs.iter().find(|(id, _)| *id == w).and_then(|(_, info)| info.shape.as_ref().map(|s| s.len()))
        });
        if let Some(rank) = rank
            && !(3..=max_rank).contains(&rank)
        {
            let dims = if max_rank == 4 { "1-D and 2-D" } else { "1-D, 2-D and 3-D" };
            return Err(LoadError::Node {
                node: n.name.clone(),
                op: n.op_type.clone(),
                reason: format!("{}-D convolution is not supported ({dims} only)", rank.saturating_sub(2)),
            });
        }
    }
    Ok(())
}
