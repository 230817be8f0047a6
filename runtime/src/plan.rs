//! Planning, done once at load: constant folding, inference fusions (BatchNorm folded into the
//! preceding Conv, activations fused into Conv) and liveness (values freed after last use).

use crate::error::LoadError;
use crate::graph::{Graph, Node};
use crate::kernels::Activation;
use crate::ops::{self, Op, elementwise::Unary};
use candle_core::Tensor;
use std::collections::HashSet;

mod affine;
mod packing;
mod residual;

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
    if opts.fuse {
        // Before folding: the quantized weights are still there, not yet dequantized.
        fuse_qdq_conv(&mut g);
    }
    fold_constants(&mut g, &opts.keep_live)?;
    check_spatial_rank(&g)?;
    if opts.fuse {
        fold_batch_norm(&mut g)?;
        fold_channel_affine(&mut g);
        affine::fuse_batch_norm_chains(&mut g);
        fuse_activations(&mut g);
        residual::fuse_sum_relu(&mut g);
        packing::keep_packed_weights(&mut g);
    }
    let free_after = liveness(&g);
    Ok(Plan { graph: g, free_after })
}

/// QDQ convolutions as onnxruntime's default session runs them: DequantizeLinear of a uint8
/// activation (int8: see below) and of a constant int8/uint8 weight (per tensor or per output
/// channel), optionally of a constant int32 bias whose scale is x_scale * w_scale, into a Conv
/// whose only consumer is a QuantizeLinear of the activation type become one QLinearConv: an
/// exact integer convolution requantized once.
///
/// The unfused graph convolves the dequantized values in float and quantizes the sum: the same
/// real number up to float rounding, but float rounding decides on which side of a rounding
/// boundary a value within a hair of it falls. One activation in tens of thousands lands a
/// quantum away from onnxruntime's, and in a deep network such flips multiply layer after layer
/// (a YOLOv8n quantized by onnxruntime.quantization moved its boxes by up to 22 pixels).
/// On x86-64 onnxruntime fuses int8 activations only where it first turns them into uint8
/// (`int8_pair_becomes_uint8`), and the other units keep the float path here too.
fn fuse_qdq_conv(g: &mut Graph) {
    // Decided on the graph as loaded (as onnxruntime decides after its int8 -> uint8 pass), then applied.
    let units: Vec<(usize, usize, Vec<usize>, Node)> =
        (0..g.nodes.len()).filter_map(|ci| qdq_conv(g, ci).map(|(qi, dqs, n)| (ci, qi, dqs, n))).collect();
    let mut fused = HashSet::new();
    let mut dequantizers = HashSet::new();
    for (ci, qi, dqs, n) in units {
        g.nodes[ci] = n;
        fused.insert(qi);
        dequantizers.extend(dqs);
    }
    // The DequantizeLinear nodes go when nothing else reads them.
    let used: HashSet<usize> = g
        .nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| !fused.contains(i))
        .flat_map(|(_, n)| n.inputs.iter().flatten().copied())
        .collect();
    for d in dequantizers {
        if !used.contains(&g.nodes[d].outputs[0]) && !is_output(g, g.nodes[d].outputs[0]) {
            fused.insert(d);
        }
    }
    let mut i = 0;
    g.nodes.retain(|_| {
        i += 1;
        !fused.contains(&(i - 1))
    });
}

/// The QLinearConv replacing the Conv at `ci` when it is a QDQ node unit (see `fuse_qdq_conv`),
/// with the QuantizeLinear node it absorbs and the DequantizeLinear nodes it reads.
fn qdq_conv(g: &Graph, ci: usize) -> Option<(usize, Vec<usize>, Node)> {
    use candle_core::DType;
    use ops::narrow::Held;
    use ops::quant::{Kind, Quant};
    let Op::Conv(conv) = &g.nodes[ci].op else { return None };
    let (conv, ins, out) = (conv.clone(), g.nodes[ci].inputs.clone(), g.nodes[ci].outputs[0]);
    if conv.act != Activation::None || is_output(g, out) {
        return None;
    }
    let konst = |id: Option<usize>| id.and_then(|i| g.consts.get(&i));
    // A DequantizeLinear to f32 producing `id`: (node, its inputs, axis).
    let dequantizer = |id: Option<usize>| {
        let id = id?;
        let ni = g.nodes.iter().position(|n| n.outputs.contains(&id))?;
        match &g.nodes[ni].op {
            Op::Quant(Quant {
                kind: Kind::Dequantize { axis, block: 0, output_dtype: None | Some(DType::F32) },
                ..
            }) => {
                let mut ins = g.nodes[ni].inputs.clone();
                ins.resize(3, None);
                Some((ni, ins, *axis))
            }
            _ => None,
        }
    };
    // Weights uint8 or int8 (held); activations uint8, see `int8_pair_becomes_uint8` for int8.
    let uint8 = |id: Option<usize>| {
        id.is_some_and(|id| !g.held.contains_key(&id) && konst(Some(id)).is_some_and(|t| t.dtype() == DType::U8))
    };
    let eight_bit = |id: Option<usize>| uint8(id) || id.is_some_and(|id| g.held.get(&id) == Some(&Held::I8));
    let scalar_f32 = |id: Option<usize>| konst(id).is_some_and(|t| t.dtype() == DType::F32 && t.elem_count() == 1);
    let f32s = |t: &Tensor| t.flatten_all().and_then(|t| t.to_vec1::<f32>()).ok();

    // Conv output -> QuantizeLinear only, saturating, scalar f32 scale, uint8 zero point.
    let users = consumers(g, out);
    let [qi] = users.as_slice() else { return None };
    let qi = *qi;
    let Op::Quant(Quant {
        kind: Kind::Quantize { block: 0, saturate: true, precision: None, output_dtype, .. }, ..
    }) = &g.nodes[qi].op
    else {
        return None;
    };
    let mut q = g.nodes[qi].inputs.clone();
    q.resize(3, None);
    let y_type_ok = *output_dtype == 0 || *output_dtype == crate::proto::onnx_type::UINT8;
    let y_uint8 = (uint8(q[2]) && y_type_ok)
        || matches!(consumers(g, g.nodes[qi].outputs[0]).as_slice(), [dy] if int8_pair_becomes_uint8(g, qi, *dy));
    if q[0] != Some(out) || !scalar_f32(q[1]) || konst(q[2])?.elem_count() != 1 || !y_uint8 {
        return None;
    }
    // Activation: DequantizeLinear with a scalar f32 scale and a uint8 scalar zero point.
    let (dxi, dx, _) = dequantizer(ins.first().copied().flatten())?;
    let x_uint8 = uint8(dx[2])
        || dx[0]
            .and_then(|x| g.nodes.iter().position(|n| n.outputs.contains(&x)))
            .is_some_and(|qx| int8_pair_becomes_uint8(g, qx, dxi));
    if !scalar_f32(dx[1]) || konst(dx[2])?.elem_count() != 1 || !x_uint8 {
        return None;
    }
    // Weight: constant 8-bit, 1-D or 2-D kernel, per tensor or per output channel (axis 0).
    let (dwi, dw, w_axis) = dequantizer(ins.get(1).copied().flatten())?;
    let (w, ws) = (konst(dw[0])?, konst(dw[1])?);
    let m = w.dims()[0];
    let per_channel = |t: &Tensor| t.elem_count() == 1 || (t.rank() == 1 && t.elem_count() == m);
    if !(3..=4).contains(&w.rank())
        || !eight_bit(dw[0])
        || ws.dtype() != DType::F32
        || !per_channel(ws)
        || (ws.elem_count() > 1 && w_axis != 0 && w_axis != -(w.rank() as i64))
        || dw[2].is_some_and(|z| konst(Some(z)).is_none_or(|t| !per_channel(t)))
    {
        return None;
    }
    // Bias: none, or int32 with zero point 0 and scale x_scale * w_scale (in f32, as
    // onnxruntime.quantization writes it), so that adding it to the integer sum is exact.
    let mut dqs = vec![dxi, dwi];
    let bias = match ins.get(2).copied().flatten() {
        None => None,
        Some(b) => {
            let (dbi, db, _) = dequantizer(Some(b))?;
            let (bq, bs) = (konst(db[0])?, konst(db[1])?);
            let xs = f32s(konst(dx[1])?)?[0];
            let (ws, bs) = (f32s(ws)?, f32s(bs)?);
            let at = |v: &[f32], i: usize| v[i.min(v.len() - 1)];
            let scale_ok = bs.len() == 1 || bs.len() == m;
            let scale_ok = scale_ok && (0..m).all(|i| (xs * at(&ws, i)).to_bits() == at(&bs, i).to_bits());
            let zero = match db[2] {
                None => true,
                Some(z) => konst(Some(z)).is_some_and(|t| ops::floats(t).is_ok_and(|v| v.iter().all(|&z| z == 0.0))),
            };
            if bq.dtype() != DType::I32 || g.held.contains_key(&db[0]?) || bq.elem_count() != m || !zero || !scale_ok {
                return None;
            }
            dqs.push(dbi);
            db[0]
        }
    };
    let inputs = vec![dx[0], dx[1], dx[2], dw[0], dw[1], dw[2], q[1], q[2], bias];
    let held = inputs.iter().map(|i| i.and_then(|i| g.held.get(&i).copied())).collect();
    let n = Node {
        name: g.nodes[ci].name.clone(),
        op_type: "QLinearConv".into(),
        op: Op::Quant(Quant { kind: Kind::QLinearConv { geom: conv.geom, groups: conv.groups }, held }),
        inputs,
        outputs: g.nodes[qi].outputs.clone(),
    };
    Some((qi, dqs, n))
}

/// Whether onnxruntime on x86-64 runs the int8 QuantizeLinear `qi` -> DequantizeLinear `dqi`
/// pair as uint8 (zero point + 128, the same values), which lets the units around it fuse: it
/// does when the QuantizeLinear feeds that DequantizeLinear only, the DequantizeLinear one node
/// (onnxruntime first gives each consumer its own copy) and both have the same constant scalar
/// zero point. Otherwise int8 activations stay unfused there (it fuses them on ARM).
fn int8_pair_becomes_uint8(g: &Graph, qi: usize, dqi: usize) -> bool {
    use ops::narrow::Held;
    use ops::quant::{Kind, Quant};
    let (q, dq) = (&g.nodes[qi], &g.nodes[dqi]);
    let is_q = matches!(&q.op, Op::Quant(Quant { kind: Kind::Quantize { output_dtype: 0, .. }, .. }));
    let is_dq = matches!(&dq.op, Op::Quant(Quant { kind: Kind::Dequantize { .. }, .. }));
    let zero_point = |n: &Node| {
        let z = n.inputs.get(2).copied().flatten().filter(|z| g.held.get(z) == Some(&Held::I8))?;
        let t = g.consts.get(&z).filter(|t| t.elem_count() == 1)?;
        Held::I8.read(t).ok().map(|v| v[0])
    };
    let (q_out, dq_out) = (q.outputs[0], dq.outputs[0]);
    is_q && is_dq
        && zero_point(q).is_some()
        && zero_point(q) == zero_point(dq)
        && !is_output(g, q_out)
        && consumers(g, q_out) == [dqi]
        && consumers(g, dq_out).len() + is_output(g, dq_out) as usize <= 1
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

/// A per-output-channel Mul or Add by a constant right after a Conv (BatchNorm as Caffe2 and
/// some converters export it: Conv, Mul by the scale, Add of the shift) folded into the Conv's
/// weights and bias, as onnxruntime's ConvMulFusion / ConvAddFusion do, so the activation that
/// follows can be fused too and the output is written once.
fn fold_channel_affine(g: &mut Graph) {
    let mut remove = HashSet::new();
    for ci in 0..g.nodes.len() {
        if !matches!(&g.nodes[ci].op, Op::Conv(c) if c.act == Activation::None) {
            continue;
        }
        loop {
            let out = g.nodes[ci].outputs[0];
            let users = consumers(g, out);
            if users.len() != 1 || is_output(g, out) {
                break;
            }
            let ui = users[0];
            let is_mul = match g.nodes[ui].op {
                Op::Binary(ops::elementwise::Binary::Mul) => true,
                Op::Binary(ops::elementwise::Binary::Add) => false,
                _ => break,
            };
            let ins = &g.nodes[ui].inputs;
            let other = match ins.as_slice() {
                [Some(a), Some(b)] if *a == out && *b != out => *b,
                [Some(a), Some(b)] if *b == out && *a != out => *a,
                _ => break,
            };
            let Some(w_id) = g.nodes[ci].inputs.get(1).copied().flatten() else { break };
            let b_id = g.nodes[ci].inputs.get(2).copied().flatten();
            let (Some(w), Some(k)) = (g.consts.get(&w_id), g.consts.get(&other)) else { break };
            if b_id.is_some_and(|b| !g.consts.contains_key(&b)) {
                break;
            }
            let m = w.dims()[0];
            // The constant must broadcast along the channel axis only: [M, 1, 1], [1, M, 1, 1],
            // or a single value, and never add dimensions to the output.
            let per_channel = {
                let d = k.dims();
                let mut padded = vec![1usize; w.rank().saturating_sub(d.len())];
                padded.extend_from_slice(d);
                d.len() <= w.rank()
                    && w.dtype() == k.dtype()
                    && (k.elem_count() == 1
                        || (padded.len() > 1
                            && padded[1] == m
                            && padded.iter().enumerate().all(|(i, &v)| i == 1 || v == 1)))
            };
            if !per_channel {
                break;
            }
            let fold = || -> candle_core::Result<(Tensor, Option<Tensor>)> {
                let kv = k.flatten_all()?.broadcast_as(m)?.contiguous()?;
                let mut shape = vec![1usize; w.rank()];
                shape[0] = m;
                let bias = b_id.map(|b| g.consts[&b].clone());
                Ok(if is_mul {
                    (w.broadcast_mul(&kv.reshape(shape.as_slice())?)?, bias.map(|b| b.mul(&kv)).transpose()?)
                } else {
                    (
                        w.clone(),
                        Some(match bias {
                            Some(b) => b.add(&kv)?,
                            None => kv,
                        }),
                    )
                })
            };
            let Ok((nw, nb)) = fold() else { break };
            let wid = g.value_names.len();
            g.value_names.push(format!("{}::folded_w", g.nodes[ci].name));
            g.consts.insert(wid, nw);
            let bid = nb.map(|nb| {
                let bid = g.value_names.len();
                g.value_names.push(format!("{}::folded_b", g.nodes[ci].name));
                g.consts.insert(bid, nb);
                bid
            });
            let new_out = g.nodes[ui].outputs[0];
            let conv = &mut g.nodes[ci];
            conv.inputs = vec![conv.inputs[0], Some(wid), bid];
            conv.outputs = vec![new_out];
            remove.insert(ui);
        }
    }
    let mut i = 0;
    g.nodes.retain(|_| {
        i += 1;
        !remove.contains(&(i - 1))
    });
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
