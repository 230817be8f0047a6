//! Windowed ops of any spatial rank on the N-D kernels: 3-D pooling, MaxPool with its Indices
//! output (any rank) and 3-D ConvTranspose. Same attribute normalisation as the 2-D paths in
//! `nn.rs` (auto_pad, explicit pads, ceil_mode, output_shape / output_padding).

use super::nn::{AutoPad, ConvTranspose, Geometry, Pool};
use crate::kernels::nd::{self, NdWindow};
use crate::kernels::pool::{PoolKind, pool_out_size};
use candle_core::{DType, Result, Tensor, bail};

fn f64_vec(t: &Tensor) -> Result<Vec<f64>> {
    t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()
}

/// Resolve strides, dilations and begin/end pads for spatial sizes `input` and `kernel`.
fn resolve(g: &Geometry, input: &[usize], kernel: &[usize]) -> Result<NdWindow> {
    let r = input.len();
    if kernel.len() != r {
        bail!("kernel has {} dims for a {r}-D input", kernel.len());
    }
    let per_dim = |v: &Option<Vec<usize>>, name: &str| -> Result<Vec<usize>> {
        match v {
            None => Ok(vec![1; r]),
            Some(v) if v.len() == r => Ok(v.clone()),
            Some(v) => bail!("{name} has {} values for a {r}-D input", v.len()),
        }
    };
    let strides = per_dim(&g.strides, "strides")?;
    let dilations = per_dim(&g.dilations, "dilations")?;
    let (begin, end) = match g.auto_pad {
        AutoPad::NotSet => match &g.pads {
            None => (vec![0; r], vec![0; r]),
            Some(p) if p.len() == 2 * r => (p[..r].to_vec(), p[r..].to_vec()),
            Some(p) => bail!("pads has {} values for a {r}-D input", p.len()),
        },
        AutoPad::Valid => (vec![0; r], vec![0; r]),
        AutoPad::SameUpper | AutoPad::SameLower => {
            let (mut b, mut e) = (vec![0; r], vec![0; r]);
            for d in 0..r {
                let out = input[d].div_ceil(strides[d]);
                let total = ((out.saturating_sub(1)) * strides[d] + (kernel[d] - 1) * dilations[d] + 1)
                    .saturating_sub(input[d]);
                let small = total / 2;
                (b[d], e[d]) =
                    if g.auto_pad == AutoPad::SameUpper { (small, total - small) } else { (total - small, small) };
            }
            (b, e)
        }
    };
    Ok(NdWindow { kernel: kernel.to_vec(), strides, dilations, begin, end })
}

/// MaxPool / AveragePool of any spatial rank; a second output (int64 indices) when requested.
pub fn pool(p: &Pool, x: &Tensor) -> Result<Vec<Tensor>> {
    if x.track_op() {
        bail!("training through 3-D pooling or MaxPool's Indices output is not supported");
    }
    let dims = x.dims();
    if dims.len() < 3 {
        bail!("pooling needs an input of rank 3 or more, got shape {dims:?}");
    }
    let (n, c, input) = (dims[0], dims[1], &dims[2..]);
    let kernel = p.geom.kernel.as_ref().expect("checked at load");
    let win = resolve(&p.geom, input, kernel)?;
    let out: Vec<usize> = (0..input.len())
        .map(|d| match p.geom.auto_pad {
            AutoPad::SameUpper | AutoPad::SameLower => input[d].div_ceil(win.strides[d]),
            _ => pool_out_size(
                input[d],
                win.kernel[d],
                win.strides[d],
                win.dilations[d],
                win.begin[d],
                win.end[d],
                p.ceil,
            ),
        })
        .collect();
    let indices = if p.kind == PoolKind::Max { p.indices } else { None };
    let (vals, idx) = nd::pool_nd(&f64_vec(x)?, n * c, input, &win, &out, p.kind, indices);
    let mut shape = vec![n, c];
    shape.extend(&out);
    let y = Tensor::from_vec(vals, shape.as_slice(), x.device())?.to_dtype(x.dtype())?;
    let mut outs = vec![y];
    if indices.is_some() {
        outs.push(Tensor::from_vec(idx, shape.as_slice(), x.device())?);
    }
    Ok(outs)
}

/// ConvTranspose of any spatial rank (used for 3-D, and for 1-D / 2-D outputs larger than the full
/// transposed output; other 1-D and 2-D cases take the fast path in `nn.rs`).
pub fn conv_transpose(c: &ConvTranspose, x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let dims = x.dims();
    let (n, ch, input) = (dims[0], dims[1], &dims[2..]);
    let r = input.len();
    let wd = w.dims();
    if wd.len() != r + 2 || wd[0] != ch || ch % c.groups != 0 {
        bail!("weight shape {wd:?} does not match input {dims:?} with group {}", c.groups);
    }
    let m = wd[1] * c.groups;
    let kernel = c.geom.kernel.clone().unwrap_or_else(|| wd[2..].to_vec());
    if kernel != wd[2..] {
        bail!("kernel_shape {kernel:?} does not match the weight shape {wd:?}");
    }
    let win = resolve(&Geometry { auto_pad: AutoPad::NotSet, ..c.geom.clone() }, input, &kernel)?;
    let op = match &c.output_padding {
        None => vec![0; r],
        Some(v) if v.len() == r => v.clone(),
        Some(v) => bail!("output_padding has {} values for a {r}-D input", v.len()),
    };
    let full: Vec<usize> =
        (0..r).map(|d| win.strides[d] * (input[d] - 1) + op[d] + (kernel[d] - 1) * win.dilations[d] + 1).collect();
    let same = matches!(c.geom.auto_pad, AutoPad::SameUpper | AutoPad::SameLower);
    let target: Option<Vec<usize>> = match &c.output_shape {
        Some(os) if os.len() == r => Some(os.clone()),
        Some(os) => bail!("output_shape has {} values for a {r}-D input", os.len()),
        None if same => Some((0..r).map(|d| input[d] * win.strides[d]).collect()),
        None => None,
    };
    // Padding cropped from the start of the full output; negative when the requested output is
    // larger (it then extends the output), distributed like the ONNX reference (floor division).
    let mut begin: Vec<isize> = win.begin.iter().map(|&p| p as isize).collect();
    let out: Vec<usize> = match target {
        Some(t) => {
            for d in 0..r {
                let total = full[d] as isize - t[d] as isize;
                let half = total.div_euclid(2);
                begin[d] = if c.geom.auto_pad == AutoPad::SameUpper { half } else { total - half };
            }
            t
        }
        None => (0..r).map(|d| full[d].saturating_sub(win.begin[d] + win.end[d])).collect(),
    };
    let (xv, wv) = (f64_vec(x)?, f64_vec(w)?);
    let bv = b.map(f64_vec).transpose()?;
    let args = nd::ConvTransposeNd {
        x: &xv,
        n,
        c: ch,
        input,
        weight: &wv,
        m,
        bias: bv.as_deref(),
        groups: c.groups,
        win: &win,
        begin: &begin,
        out: &out,
    };
    let y = nd::conv_transpose_nd(&args);
    let mut shape = vec![n, m];
    shape.extend(&out);
    Tensor::from_vec(y, shape.as_slice(), x.device())?.to_dtype(x.dtype())
}
