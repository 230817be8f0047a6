//! Recurrent layers: LSTM, GRU and RNN with ONNX semantics (forward, reverse and bidirectional;
//! optional bias, `sequence_lens`, initial states, LSTM peepholes, GRU `linear_before_reset`,
//! `clip`, `layout` 0 and 1; Sigmoid / Tanh / Relu activations).
//!
//! The input projection of every time step runs as one matrix product; each step then multiplies
//! the hidden state of the whole batch by the recurrence weights and applies the gates in f32.
//! With `sequence_lens`, a sequence shorter than the input stops early: its outputs past its
//! length are zero and its final state is the state after its last step (onnxruntime's
//! semantics; a zero length gives zero states); the reverse direction starts at its last step.

use super::{Op, opt, req};
use crate::error::LoadError;
use crate::kernels::sgemm;
use crate::proto::Attrs;
use candle_core::{DType, Device, Result, Tensor, bail};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cell {
    Lstm,
    Gru { linear_before_reset: bool },
    Rnn,
}

impl Cell {
    fn gates(self) -> usize {
        match self {
            Cell::Lstm => 4,
            Cell::Gru { .. } => 3,
            Cell::Rnn => 1,
        }
    }
    /// Activations per direction (f, g, h for LSTM; f, g for GRU; f for RNN).
    fn activations(self) -> usize {
        match self {
            Cell::Lstm => 3,
            Cell::Gru { .. } => 2,
            Cell::Rnn => 1,
        }
    }
    fn default_activations(self) -> &'static [Act] {
        match self {
            Cell::Lstm => &[Act::Sigmoid, Act::Tanh, Act::Tanh],
            Cell::Gru { .. } => &[Act::Sigmoid, Act::Tanh],
            Cell::Rnn => &[Act::Tanh],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Act {
    Sigmoid,
    Tanh,
    Relu,
}

impl Act {
    #[inline]
    fn apply(self, x: f32) -> f32 {
        match self {
            Act::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Act::Tanh => x.tanh(),
            Act::Relu => x.max(0.0),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Direction {
    Forward,
    Reverse,
    Bidirectional,
}

#[derive(Debug, Clone)]
pub struct Rnn {
    pub cell: Cell,
    pub direction: Direction,
    pub hidden: Option<usize>,
    /// layout = 1: X is [batch, seq, input], Y [batch, seq, dirs, hidden], states [batch, dirs, hidden].
    pub batch_first: bool,
    /// Pre-activations are clipped to [-clip, clip].
    pub clip: Option<f32>,
    /// `cell.activations()` per direction, forward first.
    pub acts: Vec<Act>,
}

pub fn parse(a: &Attrs, _opset: i64) -> std::result::Result<Option<Op>, LoadError> {
    let cell = match a.node.op_type.as_str() {
        "LSTM" => {
            a.only(&[
                "activation_alpha",
                "activation_beta",
                "activations",
                "clip",
                "direction",
                "hidden_size",
                "input_forget",
                "layout",
            ])?;
            if a.int_or("input_forget", 0) != 0 {
                return Err(a.err("attribute 'input_forget' = 1 (coupled input and forget gates) is not supported"));
            }
            Cell::Lstm
        }
        "GRU" => {
            a.only(&[
                "activation_alpha",
                "activation_beta",
                "activations",
                "clip",
                "direction",
                "hidden_size",
                "layout",
                "linear_before_reset",
            ])?;
            Cell::Gru { linear_before_reset: a.int_or("linear_before_reset", 0) != 0 }
        }
        "RNN" => {
            a.only(&[
                "activation_alpha",
                "activation_beta",
                "activations",
                "clip",
                "direction",
                "hidden_size",
                "layout",
            ])?;
            Cell::Rnn
        }
        _ => return Ok(None),
    };
    let direction = match a.string_or("direction", "forward").as_str() {
        "forward" => Direction::Forward,
        "reverse" => Direction::Reverse,
        "bidirectional" => Direction::Bidirectional,
        d => return Err(a.err(format!("attribute 'direction' = '{d}' is not forward, reverse or bidirectional"))),
    };
    let dirs = if direction == Direction::Bidirectional { 2 } else { 1 };
    for name in ["activation_alpha", "activation_beta"] {
        if a.floats(name).is_some_and(|v| !v.is_empty()) {
            return Err(a.err(format!(
                "attribute '{name}' is not supported (only the parameter-free activations Sigmoid, Tanh and Relu are)"
            )));
        }
    }
    let acts = match a.node.attribute.iter().find(|x| x.name == "activations") {
        None => cell.default_activations().repeat(dirs),
        Some(attr) => {
            let names: Vec<String> = attr.strings.iter().map(|s| String::from_utf8_lossy(s).into_owned()).collect();
            if names.len() != cell.activations() * dirs {
                return Err(a.err(format!(
                    "attribute 'activations' lists {} functions, {} expected ({} per direction)",
                    names.len(),
                    cell.activations() * dirs,
                    cell.activations()
                )));
            }
            names
                .iter()
                .map(|n| match n.to_ascii_lowercase().as_str() {
                    "sigmoid" => Ok(Act::Sigmoid),
                    "tanh" => Ok(Act::Tanh),
                    "relu" => Ok(Act::Relu),
                    _ => Err(
                        a.err(format!("attribute 'activations': '{n}' is not supported (Sigmoid, Tanh and Relu are)"))
                    ),
                })
                .collect::<std::result::Result<Vec<_>, _>>()?
        }
    };
    let hidden = match a.int("hidden_size") {
        None => None,
        Some(h) if h > 0 => Some(h as usize),
        Some(h) => return Err(a.err(format!("attribute 'hidden_size' = {h} must be positive"))),
    };
    let clip = match a.node.attribute.iter().find(|x| x.name == "clip") {
        None => None,
        Some(c) if c.f > 0.0 => Some(c.f),
        Some(c) => return Err(a.err(format!("attribute 'clip' = {} must be positive", c.f))),
    };
    let batch_first = match a.int_or("layout", 0) {
        0 => false,
        1 => true,
        l => return Err(a.err(format!("attribute 'layout' = {l} is not 0 or 1"))),
    };
    Ok(Some(Op::Rnn(Rnn { cell, direction, hidden, batch_first, clip, acts })))
}

fn f32s(t: &Tensor) -> Result<Vec<f32>> {
    t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()
}

/// Row-major transpose of a [rows, cols] matrix.
fn transpose(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0f32; m.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = m[r * cols + c];
        }
    }
    t
}

/// A state input ([dirs, batch, hidden], or [batch, dirs, hidden] batch-first) as [dirs, batch, hidden].
fn state(
    t: Option<&Tensor>,
    dirs: usize,
    batch: usize,
    hidden: usize,
    batch_first: bool,
    what: &str,
) -> Result<Vec<f32>> {
    let Some(t) = t else { return Ok(vec![0f32; dirs * batch * hidden]) };
    let want = if batch_first { [batch, dirs, hidden] } else { [dirs, batch, hidden] };
    if t.dims() != want {
        bail!("{what} has shape {:?}, expected {want:?}", t.dims());
    }
    let t = if batch_first { t.transpose(0, 1)?.contiguous()? } else { t.clone() };
    f32s(&t)
}

pub fn run(r: &Rnn, ins: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    if ins.iter().flatten().any(|t| t.track_op()) {
        bail!("training through recurrent layers is not supported");
    }
    let x = req(ins, 0)?;
    let (w, rw) = (req(ins, 1)?, req(ins, 2)?);
    let out_dtype = x.dtype();
    if !out_dtype.is_float() {
        bail!("input X must be a float tensor, got {out_dtype:?}");
    }
    let &[d0, d1, input] = x.dims() else { bail!("input X must have rank 3, got shape {:?}", x.dims()) };
    let (seq, batch) = if r.batch_first { (d1, d0) } else { (d0, d1) };
    let dirs = if r.direction == Direction::Bidirectional { 2 } else { 1 };
    let g = r.cell.gates();
    let &[_, _, hidden] = rw.dims() else { bail!("R must have rank 3, got shape {:?}", rw.dims()) };
    if r.hidden.is_some_and(|h| h != hidden) {
        bail!("hidden_size {} does not match R of shape {:?}", r.hidden.unwrap_or(0), rw.dims());
    }
    if w.dims() != [dirs, g * hidden, input] {
        bail!("W has shape {:?}, expected {:?}", w.dims(), [dirs, g * hidden, input]);
    }
    if rw.dims() != [dirs, g * hidden, hidden] {
        bail!("R has shape {:?}, expected {:?}", rw.dims(), [dirs, g * hidden, hidden]);
    }
    let gh = g * hidden;
    let bias = match opt(ins, 3) {
        Some(b) if b.dims() != [dirs, 2 * gh] => bail!("B has shape {:?}, expected {:?}", b.dims(), [dirs, 2 * gh]),
        Some(b) => f32s(b)?,
        None => vec![0f32; dirs * 2 * gh],
    };
    let lens: Vec<usize> = match opt(ins, 4) {
        Some(l) => {
            let v = super::ints(l)?;
            if v.len() != batch || v.iter().any(|&n| n < 0 || n as usize > seq) {
                bail!("sequence_lens {v:?} must hold {batch} lengths in [0, {seq}]");
            }
            v.into_iter().map(|n| n as usize).collect()
        }
        None => vec![seq; batch],
    };
    let h0 = state(opt(ins, 5), dirs, batch, hidden, r.batch_first, "initial_h")?;
    let c0 = match r.cell {
        Cell::Lstm => state(opt(ins, 6), dirs, batch, hidden, r.batch_first, "initial_c")?,
        _ => Vec::new(),
    };
    let peep = match (r.cell, opt(ins, 7)) {
        (Cell::Lstm, Some(p)) if p.dims() != [dirs, 3 * hidden] => {
            bail!("P has shape {:?}, expected {:?}", p.dims(), [dirs, 3 * hidden])
        }
        (Cell::Lstm, Some(p)) => f32s(p)?,
        _ => vec![0f32; dirs * 3 * hidden],
    };
    // X as [seq, batch, input].
    let xs = if r.batch_first { f32s(&x.transpose(0, 1)?.contiguous()?)? } else { f32s(x)? };
    let (wv, rv) = (f32s(w)?, f32s(rw)?);
    let mut y = vec![0f32; seq * dirs * batch * hidden];
    let mut y_h = vec![0f32; dirs * batch * hidden];
    let mut y_c = vec![0f32; dirs * batch * hidden];
    let na = r.cell.activations();
    for d in 0..dirs {
        let reverse = r.direction == Direction::Reverse || d == 1;
        let acts = &r.acts[d * na..(d + 1) * na];
        let clip = |v: f32| r.clip.map_or(v, |c| v.clamp(-c, c));
        let wt = transpose(&wv[d * gh * input..(d + 1) * gh * input], gh, input);
        let rt = transpose(&rv[d * gh * hidden..(d + 1) * gh * hidden], gh, hidden);
        let (wb, rb) = (&bias[d * 2 * gh..d * 2 * gh + gh], &bias[d * 2 * gh + gh..(d + 1) * 2 * gh]);
        let p = &peep[d * 3 * hidden..(d + 1) * 3 * hidden];
        // Input projections of every step at once: [seq * batch, gates * hidden].
        let mut xw = vec![0f32; seq * batch * gh];
        sgemm(seq * batch, gh, input, &xs, &wt, &mut xw, false, true);
        // GRU's candidate gate (default mode) multiplies (r . H) by its recurrence weights alone.
        let rh_t = match r.cell {
            Cell::Gru { linear_before_reset: false } => {
                transpose(&rv[d * gh * hidden + 2 * hidden * hidden..(d + 1) * gh * hidden], hidden, hidden)
            }
            _ => Vec::new(),
        };
        let mut h = h0[d * batch * hidden..(d + 1) * batch * hidden].to_vec();
        let mut c =
            if r.cell == Cell::Lstm { c0[d * batch * hidden..(d + 1) * batch * hidden].to_vec() } else { vec![] };
        let mut hr = vec![0f32; batch * gh];
        let mut rh = vec![0f32; batch * hidden];
        let mut rh_r = vec![0f32; batch * hidden];
        for k in 0..seq {
            let active: Vec<usize> = (0..batch).filter(|&b| k < lens[b]).collect();
            if active.is_empty() {
                break;
            }
            let t_of = |b: usize| if reverse { lens[b] - 1 - k } else { k };
            sgemm(batch, gh, hidden, &h, &rt, &mut hr, false, false);
            let pre = |b: usize, gate: usize, j: usize| -> f32 {
                let o = gate * hidden + j;
                xw[(t_of(b) * batch + b) * gh + o] + wb[o] + hr[b * gh + o] + rb[o]
            };
            match r.cell {
                Cell::Lstm => {
                    let (f, gf, hf) = (acts[0], acts[1], acts[2]);
                    for &b in &active {
                        for j in 0..hidden {
                            let cp = c[b * hidden + j];
                            let i = f.apply(clip(pre(b, 0, j) + p[j] * cp));
                            let fg = f.apply(clip(pre(b, 2, j) + p[2 * hidden + j] * cp));
                            let cc = gf.apply(clip(pre(b, 3, j)));
                            let cn = fg * cp + i * cc;
                            let o = f.apply(clip(pre(b, 1, j) + p[hidden + j] * cn));
                            c[b * hidden + j] = cn;
                            h[b * hidden + j] = o * hf.apply(cn);
                        }
                    }
                }
                Cell::Rnn => {
                    for &b in &active {
                        for j in 0..hidden {
                            h[b * hidden + j] = acts[0].apply(clip(pre(b, 0, j)));
                        }
                    }
                }
                Cell::Gru { linear_before_reset } => {
                    let (f, gf) = (acts[0], acts[1]);
                    let mut z = vec![0f32; batch * hidden];
                    for &b in &active {
                        for j in 0..hidden {
                            z[b * hidden + j] = f.apply(clip(pre(b, 0, j)));
                            let rg = f.apply(clip(pre(b, 1, j)));
                            rh_r[b * hidden + j] = rg;
                            rh[b * hidden + j] = rg * h[b * hidden + j];
                        }
                    }
                    let mut cand = vec![0f32; batch * hidden];
                    if !linear_before_reset {
                        sgemm(batch, hidden, hidden, &rh, &rh_t, &mut cand, false, false);
                    }
                    for &b in &active {
                        for j in 0..hidden {
                            let o = 2 * hidden + j;
                            let xpart = xw[(t_of(b) * batch + b) * gh + o] + wb[o];
                            let hpart = if linear_before_reset {
                                rh_r[b * hidden + j] * (hr[b * gh + o] + rb[o])
                            } else {
                                cand[b * hidden + j] + rb[o]
                            };
                            let hh = gf.apply(clip(xpart + hpart));
                            let zz = z[b * hidden + j];
                            h[b * hidden + j] = (1.0 - zz) * hh + zz * h[b * hidden + j];
                        }
                    }
                }
            }
            for &b in &active {
                let dst = ((t_of(b) * dirs + d) * batch + b) * hidden;
                y[dst..dst + hidden].copy_from_slice(&h[b * hidden..(b + 1) * hidden]);
            }
        }
        for b in 0..batch {
            if lens[b] == 0 {
                continue; // zero final states, as onnxruntime gives
            }
            let dst = (d * batch + b) * hidden;
            y_h[dst..dst + hidden].copy_from_slice(&h[b * hidden..(b + 1) * hidden]);
            if r.cell == Cell::Lstm {
                y_c[dst..dst + hidden].copy_from_slice(&c[b * hidden..(b + 1) * hidden]);
            }
        }
    }
    let dev = &Device::Cpu;
    let mut y = Tensor::from_vec(y, (seq, dirs, batch, hidden), dev)?;
    let mut y_h = Tensor::from_vec(y_h, (dirs, batch, hidden), dev)?;
    let mut y_c = Tensor::from_vec(y_c, (dirs, batch, hidden), dev)?;
    if r.batch_first {
        y = y.permute((2, 0, 1, 3))?.contiguous()?;
        y_h = y_h.transpose(0, 1)?.contiguous()?;
        y_c = y_c.transpose(0, 1)?.contiguous()?;
    }
    let mut outs = vec![y.to_dtype(out_dtype)?, y_h.to_dtype(out_dtype)?];
    if r.cell == Cell::Lstm {
        outs.push(y_c.to_dtype(out_dtype)?);
    }
    Ok(outs)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One LSTM step of one unit, written out by hand: every gate and the peepholes matter.
    #[test]
    fn lstm_step_matches_the_equations() {
        let dev = &Device::Cpu;
        let sig = |v: f32| 1.0 / (1.0 + (-v).exp());
        // Gates i, o, f, c with input weights 1, 2, 3, 4 and recurrence weights 0.5 each.
        let x = Tensor::new(&[[[0.7f32]]], dev).unwrap();
        let w = Tensor::new(&[[[1f32], [2.0], [3.0], [4.0]]], dev).unwrap();
        let r = Tensor::new(&[[[0.5f32], [0.5], [0.5], [0.5]]], dev).unwrap();
        let h0 = Tensor::new(&[[[0.2f32]]], dev).unwrap();
        let c0 = Tensor::new(&[[[-0.3f32]]], dev).unwrap();
        let p = Tensor::new(&[[0.1f32, 0.2, 0.3]], dev).unwrap(); // i, o, f
        let op = Rnn {
            cell: Cell::Lstm,
            direction: Direction::Forward,
            hidden: Some(1),
            batch_first: false,
            clip: None,
            acts: Cell::Lstm.default_activations().to_vec(),
        };
        let outs = run(&op, &[Some(&x), Some(&w), Some(&r), None, None, Some(&h0), Some(&c0), Some(&p)]).unwrap();
        let (xv, hv, cv) = (0.7f32, 0.2f32, -0.3f32);
        let i = sig(xv + 0.5 * hv + 0.1 * cv);
        let f = sig(3.0 * xv + 0.5 * hv + 0.3 * cv);
        let cc = (4.0 * xv + 0.5 * hv).tanh();
        let c = f * cv + i * cc;
        let o = sig(2.0 * xv + 0.5 * hv + 0.2 * c);
        let h = o * c.tanh();
        let got_h = outs[1].flatten_all().unwrap().to_vec1::<f32>().unwrap()[0];
        let got_c = outs[2].flatten_all().unwrap().to_vec1::<f32>().unwrap()[0];
        assert!((got_h - h).abs() < 1e-6 && (got_c - c).abs() < 1e-6, "h {got_h} vs {h}, c {got_c} vs {c}");
    }
}
