//! Max/average pooling and global pooling: the direct kernel for inference, candle ops when the
//! input tracks gradients.

use candle_core::{Result, Tensor, bail};

use super::{AutoPad, Pool, as_2d};
use crate::kernels::{
    self, Window,
    pool::{PoolKind, pool_out_size},
};
use crate::ops::fast::{self, f32_data};

pub fn pool(p: &Pool, x: &Tensor) -> Result<Tensor> {
    let (n, c, h, w, spatial) = as_2d(x)?;
    if p.indices.is_some() {
        bail!("the Indices output needs the N-D pooling path");
    }
    let k = p.geom.kernel.as_ref().expect("checked at load");
    if k.len() != spatial {
        bail!("kernel_shape has {} dims for a {spatial}-D input", k.len());
    }
    let (kh, kw) = if spatial == 1 { (1, k[0]) } else { (k[0], k[1]) };
    let win = p.geom.window(spatial, h, w, kh, kw)?;
    let (oh, ow) = (
        pool_out_size(h, kh, win.sh, win.dh, win.pt, win.pb, p.ceil),
        pool_out_size(w, kw, win.sw, win.dw, win.pl, win.pr, p.ceil),
    );
    let (oh, ow) = match p.geom.auto_pad {
        AutoPad::SameUpper | AutoPad::SameLower => (h.div_ceil(win.sh), w.div_ceil(win.sw)),
        _ => (oh, ow),
    };
    if x.track_op() {
        let y = pool_differentiable(&if spatial == 1 { x.unsqueeze(2)? } else { x.clone() }, &win, oh, ow, p.kind)?;
        return if spatial == 1 { y.squeeze(2) } else { Ok(y) };
    }
    let out = f32_data(x, |xv| kernels::pool::pool2d(xv, n * c, h, w, &win, oh, ow, p.kind))?;
    let y = if spatial == 1 {
        Tensor::from_vec(out, (n, c, ow), x.device())?
    } else {
        Tensor::from_vec(out, (n, c, oh, ow), x.device())?
    };
    y.to_dtype(x.dtype())
}

/// Pooling from strided slices of the padded input, so candle can differentiate it.
fn pool_differentiable(x: &Tensor, win: &Window, oh: usize, ow: usize, kind: PoolKind) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    // Pad enough for every window position (ceil_mode windows may reach past the given pads).
    let need_h = ((oh.max(1) - 1) * win.sh + (win.kh - 1) * win.dh + 1).max(h + win.pt);
    let need_w = ((ow.max(1) - 1) * win.sw + (win.kw - 1) * win.dw + 1).max(w + win.pl);
    let (eb, er) = (need_h - h - win.pt, need_w - w - win.pl);
    let fill = match kind {
        PoolKind::Max => f64::NEG_INFINITY,
        PoolKind::Avg { .. } => 0.0,
    };
    let padded = pad_value(x, win.pt, eb, win.pl, er, fill)?;
    let rows = |start: usize, s: usize, n: usize| -> Result<Tensor> {
        Tensor::from_vec((0..n).map(|i| (start + i * s) as u32).collect::<Vec<_>>(), n, x.device())
    };
    let mut acc: Option<Tensor> = None;
    for ky in 0..win.kh {
        let sel_h = padded.index_select(&rows(ky * win.dh, win.sh, oh)?, 2)?;
        for kx in 0..win.kw {
            let t = sel_h.index_select(&rows(kx * win.dw, win.sw, ow)?, 3)?;
            acc = Some(match (acc, kind) {
                (None, _) => t,
                (Some(a), PoolKind::Max) => a.maximum(&t)?,
                (Some(a), PoolKind::Avg { .. }) => (a + t)?,
            });
        }
    }
    let acc = acc.ok_or_else(|| candle_core::Error::Msg("empty kernel".into()))?;
    match kind {
        PoolKind::Max => Ok(acc),
        PoolKind::Avg { count_include_pad } => {
            let counts = count_windows(h, w, win, oh, ow, count_include_pad);
            let counts = Tensor::from_vec(counts, (1, 1, oh, ow), x.device())?.to_dtype(x.dtype())?;
            acc.broadcast_div(&counts)
        }
    }
}

fn count_windows(h: usize, w: usize, win: &Window, oh: usize, ow: usize, include_pad: bool) -> Vec<f32> {
    let mut out = vec![0f32; oh * ow];
    for oy in 0..oh {
        for ox in 0..ow {
            let mut n = 0;
            for ky in 0..win.kh {
                let iy = (oy * win.sh + ky * win.dh) as isize - win.pt as isize;
                for kx in 0..win.kw {
                    let ix = (ox * win.sw + kx * win.dw) as isize - win.pl as isize;
                    let inside = iy >= 0 && iy < h as isize && ix >= 0 && ix < w as isize;
                    let in_pad = iy < (h + win.pb) as isize && ix < (w + win.pr) as isize;
                    if if include_pad { in_pad } else { inside } {
                        n += 1;
                    }
                }
            }
            out[oy * ow + ox] = n.max(1) as f32;
        }
    }
    out
}

fn pad_value(x: &Tensor, t: usize, b: usize, l: usize, r: usize, v: f64) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let mk = |hh: usize, ww: usize| -> Result<Tensor> { Tensor::zeros((n, c, hh, ww), x.dtype(), x.device())? + v };
    let mut y = x.clone();
    if l + r > 0 {
        y = Tensor::cat(&[&mk(h, l)?, &y, &mk(h, r)?], 3)?;
    }
    if t + b > 0 {
        y = Tensor::cat(&[&mk(t, w + l + r)?, &y, &mk(b, w + l + r)?], 2)?;
    }
    Ok(y)
}

pub fn global_pool(x: &Tensor, max: bool) -> Result<Tensor> {
    if !max && x.rank() >= 3 && !x.track_op() {
        // One pass per (image, channel) plane instead of a reduction per spatial axis.
        let plane: usize = x.dims()[2..].iter().product();
        let fast = fast::with_f32(x, |v| -> Vec<f32> {
            if plane == 0 {
                return vec![f32::NAN; x.dims()[0] * x.dims()[1]];
            }
            use rayon::prelude::*;
            v.par_chunks(plane).map(|p| p.iter().sum::<f32>() / plane as f32).collect()
        });
        if let Some(means) = fast {
            let mut shape = x.dims().to_vec();
            shape[2..].iter_mut().for_each(|d| *d = 1);
            return Tensor::from_vec(means, shape, x.device());
        }
    }
    let mut y = x.clone();
    for d in 2..x.rank() {
        y = if max { y.max_keepdim(d)? } else { y.mean_keepdim(d)? };
    }
    Ok(y)
}
