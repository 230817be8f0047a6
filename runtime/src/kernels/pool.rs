//! Max and average pooling with arbitrary padding, strides, dilations and ceil_mode, following
//! onnxruntime's conventions (windows clipped to the padded input; `count_include_pad` counts
//! padded positions inside the padded extent only).

use super::Window;
use rayon::prelude::*;

/// Output size of a pooling window (ceil_mode drops a last window that would start in the end padding).
pub fn pool_out_size(input: usize, k: usize, s: usize, d: usize, pb: usize, pe: usize, ceil: bool) -> usize {
    let span = (k - 1) * d + 1;
    let padded = input + pb + pe;
    if padded < span {
        return 0;
    }
    let num = padded - span;
    let mut out = if ceil { num.div_ceil(s) + 1 } else { num / s + 1 };
    if ceil && (out - 1) * s >= input + pb {
        out -= 1;
    }
    out
}

#[derive(Clone, Copy, PartialEq, Debug)]
pub enum PoolKind {
    Max,
    Avg { count_include_pad: bool },
}

/// Range of kernel taps [lo, hi) whose position start + k*d lies in [0, limit), and the count
/// of taps inside [.., padded_limit) (the padded extent, for count_include_pad).
fn taps(start: isize, k: usize, d: usize, limit: usize, padded_limit: usize) -> (usize, usize, usize) {
    let range_below = |lim: usize| -> usize {
        let room = lim as isize - start;
        if room <= 0 { 0 } else { (room as usize).div_ceil(d).min(k) }
    };
    let lo = if start >= 0 { 0 } else { ((-start) as usize).div_ceil(d).min(k) };
    let hi = range_below(limit).max(lo);
    (lo, hi, range_below(padded_limit))
}

/// x: [nc, h, w] contiguous; returns [nc, oh, ow].
pub fn pool2d(x: &[f32], nc: usize, h: usize, w: usize, wn: &Window, oh: usize, ow: usize, kind: PoolKind) -> Vec<f32> {
    match kind {
        PoolKind::Max => pool2d_impl::<true>(x, nc, h, w, wn, oh, ow, false),
        PoolKind::Avg { count_include_pad } => pool2d_impl::<false>(x, nc, h, w, wn, oh, ow, count_include_pad),
    }
}

/// Monomorphised per pooling kind so the inner loop carries no per-element branch on the kind.
fn pool2d_impl<const MAX: bool>(x: &[f32], nc: usize, h: usize, w: usize, wn: &Window, oh: usize, ow: usize, include_pad: bool) -> Vec<f32> {
    let mut out = vec![0f32; nc * oh * ow];
    if out.is_empty() {
        return out;
    }
    let ys: Vec<(usize, usize, usize)> = (0..oh).map(|oy| taps((oy * wn.sh) as isize - wn.pt as isize, wn.kh, wn.dh, h, h + wn.pb)).collect();
    let xs: Vec<(usize, usize, usize)> = (0..ow).map(|ox| taps((ox * wn.sw) as isize - wn.pl as isize, wn.kw, wn.dw, w, w + wn.pr)).collect();
    out.par_chunks_mut(oh * ow).enumerate().for_each(|(ch, o)| {
        let xc = &x[ch * h * w..(ch + 1) * h * w];
        for (oy, &(ylo, yhi, ypad)) in ys.iter().enumerate() {
            let y0 = (oy * wn.sh) as isize - wn.pt as isize;
            let orow = &mut o[oy * ow..(oy + 1) * ow];
            for (ox, (ov, &(xlo, xhi, xpad))) in orow.iter_mut().zip(&xs).enumerate() {
                let x0 = (ox * wn.sw) as isize - wn.pl as isize;
                let mut acc = if MAX { f32::NEG_INFINITY } else { 0.0 };
                let mut nan = false;
                for ky in ylo..yhi {
                    let base = (y0 + (ky * wn.dh) as isize) as usize * w;
                    for kx in xlo..xhi {
                        let v = xc[base + (x0 + (kx * wn.dw) as isize) as usize];
                        if MAX {
                            nan |= v.is_nan();
                            acc = acc.max(v);
                        } else {
                            acc += v;
                        }
                    }
                }
                *ov = if MAX {
                    if nan { f32::NAN } else { acc }
                } else {
                    let div = if include_pad { ypad * xpad } else { (yhi - ylo) * (xhi - xlo) };
                    if div == 0 { 0.0 } else { acc / div as f32 }
                };
            }
        }
    });
    out
}
