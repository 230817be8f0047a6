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
pub(super) fn taps(start: isize, k: usize, d: usize, limit: usize, padded_limit: usize) -> (usize, usize, usize) {
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
    #[cfg(target_arch = "x86_64")]
    if let Some(out) = super::window::pool(x, nc, h, w, wn, oh, ow, kind) {
        return out;
    }
    match kind {
        PoolKind::Max => max_pool2d_separable(x, nc, h, w, wn, oh, ow),
        PoolKind::Avg { count_include_pad } => pool2d_impl::<false>(x, nc, h, w, wn, oh, ow, count_include_pad),
    }
}

/// Monomorphised per pooling kind so the inner loop carries no per-element branch on the kind.
pub(super) fn pool2d_impl<const MAX: bool>(
    x: &[f32],
    nc: usize,
    h: usize,
    w: usize,
    wn: &Window,
    oh: usize,
    ow: usize,
    include_pad: bool,
) -> Vec<f32> {
    let mut out = vec![0f32; nc * oh * ow];
    if out.is_empty() {
        return out;
    }
    let ys: Vec<(usize, usize, usize)> =
        (0..oh).map(|oy| taps((oy * wn.sh) as isize - wn.pt as isize, wn.kh, wn.dh, h, h + wn.pb)).collect();
    let xs: Vec<(usize, usize, usize)> =
        (0..ow).map(|ox| taps((ox * wn.sw) as isize - wn.pl as isize, wn.kw, wn.dw, w, w + wn.pr)).collect();
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

/// Max that propagates NaN (onnxruntime's MaxPool does) and compiles to a branch-free select, so
/// the row loops below vectorise.
#[inline(always)]
fn max_nan(acc: f32, v: f32) -> f32 {
    if v > acc || v.is_nan() { v } else { acc }
}

/// Max pooling as a row pass then a column pass: max over a kh x kw window equals the max over kh
/// row maxima, so a 5x5 window (SPPF) costs 5 + 5 instead of 25 taps per output, and each tap is
/// a max of two contiguous rows (vectorised) instead of a scalar dependency chain.
fn max_pool2d_separable(x: &[f32], nc: usize, h: usize, w: usize, wn: &Window, oh: usize, ow: usize) -> Vec<f32> {
    let mut out = vec![0f32; nc * oh * ow];
    if out.is_empty() {
        return out;
    }
    let ys: Vec<(usize, usize, usize)> =
        (0..oh).map(|oy| taps((oy * wn.sh) as isize - wn.pt as isize, wn.kh, wn.dh, h, h + wn.pb)).collect();
    // For each column tap kx: the output columns [lo, hi) whose input column ox*sw - pl + kx*dw is inside [0, w).
    let col_taps: Vec<(isize, usize, usize)> = (0..wn.kw)
        .map(|kx| {
            let off = (kx * wn.dw) as isize - wn.pl as isize;
            let lo = if off >= 0 { 0 } else { ((-off) as usize).div_ceil(wn.sw) };
            let room = w as isize - off;
            let hi = if room <= 0 { 0 } else { (room as usize).div_ceil(wn.sw).min(ow) };
            (off, lo.min(hi), hi)
        })
        .collect();
    out.par_chunks_mut(oh * ow).enumerate().for_each(|(ch, o)| {
        let xc = &x[ch * h * w..(ch + 1) * h * w];
        // rows[y * ow + ox]: max over the column taps of input row y for output column ox.
        let mut rows = vec![f32::NEG_INFINITY; h * ow];
        // Strided windows: the row maximum at every input position j = ox*sw first (contiguous,
        // vectorised; the positions between the kept ones are computed and dropped), then every
        // sw-th one kept, instead of a strided gather per tap.
        let full = (ow - 1) * wn.sw + 1;
        let mut dense = if wn.sw == 1 { Vec::new() } else { vec![f32::NEG_INFINITY; full] };
        for (xrow, r) in xc.chunks_exact(w).zip(rows.chunks_exact_mut(ow)) {
            if wn.sw != 1 {
                dense.fill(f32::NEG_INFINITY);
            }
            for &(off, lo, hi) in &col_taps {
                if lo >= hi {
                    continue;
                }
                if wn.sw == 1 {
                    let src = &xrow[(lo as isize + off) as usize..(hi as isize + off) as usize];
                    for (a, &v) in r[lo..hi].iter_mut().zip(src) {
                        *a = max_nan(*a, v);
                    }
                } else {
                    // Positions lo*sw ..= (hi-1)*sw: their multiples of sw are exactly the output
                    // columns [lo, hi) this tap reaches, and j + off stays inside the row.
                    let (j0, j1) = (lo * wn.sw, (hi - 1) * wn.sw + 1);
                    let src = &xrow[(j0 as isize + off) as usize..(j1 as isize + off) as usize];
                    for (a, &v) in dense[j0..j1].iter_mut().zip(src) {
                        *a = max_nan(*a, v);
                    }
                }
            }
            if wn.sw != 1 {
                for (a, &v) in r.iter_mut().zip(dense.iter().step_by(wn.sw)) {
                    *a = v;
                }
            }
        }
        for (oy, &(ylo, yhi, _)) in ys.iter().enumerate() {
            let y0 = (oy * wn.sh) as isize - wn.pt as isize;
            let orow = &mut o[oy * ow..(oy + 1) * ow];
            orow.fill(f32::NEG_INFINITY);
            for ky in ylo..yhi {
                let y = (y0 + (ky * wn.dh) as isize) as usize;
                for (a, &v) in orow.iter_mut().zip(&rows[y * ow..(y + 1) * ow]) {
                    *a = max_nan(*a, v);
                }
            }
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The separable max pool must equal the direct window loop (incl. NaN, padding, strides,
    /// dilations, ceil_mode windows that end in the padding).
    #[test]
    fn separable_max_pool_matches_direct() {
        let mut seed = 12345u64;
        let mut rnd = move || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) as u32
        };
        for case in 0..400 {
            let (h, w) = (1 + rnd() as usize % 9, 1 + rnd() as usize % 9);
            let (kh, kw) = (1 + rnd() as usize % 5, 1 + rnd() as usize % 5);
            let (sh, sw, dh, dw) =
                (1 + rnd() as usize % 3, 1 + rnd() as usize % 3, 1 + rnd() as usize % 2, 1 + rnd() as usize % 2);
            let p = |k: usize, r: u32| (r as usize) % k;
            let wn = Window {
                kh,
                kw,
                sh,
                sw,
                dh,
                dw,
                pt: p(kh, rnd()),
                pl: p(kw, rnd()),
                pb: p(kh, rnd()),
                pr: p(kw, rnd()),
            };
            let ceil = case % 2 == 0;
            let oh = pool_out_size(h, kh, sh, dh, wn.pt, wn.pb, ceil);
            let ow = pool_out_size(w, kw, sw, dw, wn.pl, wn.pr, ceil);
            let nc = 2;
            let x: Vec<f32> = (0..nc * h * w)
                .map(|_| {
                    let r = rnd();
                    if r % 37 == 0 { f32::NAN } else { (r % 1000) as f32 / 100.0 - 5.0 }
                })
                .collect();
            let direct = pool2d_impl::<true>(&x, nc, h, w, &wn, oh, ow, false);
            let sep = max_pool2d_separable(&x, nc, h, w, &wn, oh, ow);
            assert_eq!(direct.len(), sep.len());
            for (i, (a, b)) in direct.iter().zip(&sep).enumerate() {
                assert!(
                    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                    "case {case} {wn:?} ceil={ceil} at {i}: {a} vs {b}"
                );
            }
        }
    }
}
