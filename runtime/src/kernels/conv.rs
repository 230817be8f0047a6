//! Convolution and transposed convolution: im2col + gemm per (image, group), a direct kernel for
//! depthwise convolution, bias and a fused activation applied while the output is hot in cache.

use super::{Activation, Elem, Window, sgemm, threads};
use rayon::prelude::*;

pub fn out_size(input: usize, k: usize, s: usize, d: usize, pb: usize, pe: usize) -> usize {
    let span = (k - 1) * d + 1;
    if input + pb + pe < span { 0 } else { (input + pb + pe - span) / s + 1 }
}

/// Arguments of [`conv2d`]: f32 for inference, f64 for the exact integer convolutions
/// (ConvInteger, QLinearConv: integer-valued operands whose sums f64 holds exactly).
pub struct ConvArgs<'a, T: Elem = f32> {
    pub x: &'a [T],
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    /// [m, c/groups, kh, kw]
    pub weight: &'a [T],
    pub m: usize,
    pub bias: Option<&'a [T]>,
    pub groups: usize,
    pub win: Window,
    pub act: Activation,
    /// Where the direct kernel keeps the weights packed across runs (constant weights only).
    pub packed: Option<&'a Packed>,
}

/// Packed weights of a convolution, computed on its first run (see `direct`).
pub type Packed = std::sync::OnceLock<Vec<Vec<f32>>>;

/// Returns (output [n, m, oh, ow], oh, ow).
pub fn conv2d<T: Elem>(a: &ConvArgs<T>) -> (Vec<T>, usize, usize) {
    let wn = &a.win;
    let oh = out_size(a.h, wn.kh, wn.sh, wn.dh, wn.pt, wn.pb);
    let ow = out_size(a.w, wn.kw, wn.sw, wn.dw, wn.pl, wn.pr);
    let mut out = vec![T::default(); a.n * a.m * oh * ow];
    if out.is_empty() {
        return (out, oh, ow);
    }
    if a.groups == a.c && a.m == a.c && a.groups > 1 {
        if !T::depthwise_fast(a, oh, ow, &mut out) {
            depthwise(a, oh, ow, &mut out);
        }
    } else if !T::direct_fast(a, oh, ow, &mut out) {
        grouped(a, oh, ow, &mut out);
    }
    (out, oh, ow)
}

pub(super) fn depthwise<T: Elem>(a: &ConvArgs<T>, oh: usize, ow: usize, out: &mut [T]) {
    let wn = a.win;
    let (h, w) = (a.h, a.w);
    let ksz = wn.kh * wn.kw;
    out.par_chunks_mut(oh * ow).enumerate().for_each(|(nc, o)| {
        let ch = nc % a.c;
        let x = &a.x[nc * h * w..(nc + 1) * h * w];
        let k = &a.weight[ch * ksz..(ch + 1) * ksz];
        let b = a.bias.map_or(T::default(), |b| b[ch]);
        for oy in 0..oh {
            let iy0 = (oy * wn.sh) as isize - wn.pt as isize;
            let orow = &mut o[oy * ow..(oy + 1) * ow];
            orow.fill(b);
            for ky in 0..wn.kh {
                let iy = iy0 + (ky * wn.dh) as isize;
                if iy < 0 || iy >= h as isize {
                    continue;
                }
                let xrow = &x[iy as usize * w..(iy as usize + 1) * w];
                for kx in 0..wn.kw {
                    let kv = k[ky * wn.kw + kx];
                    let off = (kx * wn.dw) as isize - wn.pl as isize;
                    // Output columns whose input column ox*sw+off lies inside [0, w).
                    let lo = if off >= 0 { 0 } else { ((-off) as usize).div_ceil(wn.sw) };
                    let hi_excl =
                        if (w as isize) - off <= 0 { 0 } else { ((w as isize - off) as usize).div_ceil(wn.sw) };
                    let hi = hi_excl.min(ow);
                    if lo >= hi {
                        continue;
                    }
                    if wn.sw == 1 {
                        let start = (lo as isize + off) as usize;
                        let xs = &xrow[start..start + (hi - lo)];
                        for (ov, xv) in orow[lo..hi].iter_mut().zip(xs) {
                            *ov += kv * *xv;
                        }
                    } else {
                        for ox in lo..hi {
                            orow[ox] += kv * xrow[(ox as isize * wn.sw as isize + off) as usize];
                        }
                    }
                }
            }
            T::activate(a.act, orow);
        }
    });
}

/// Unfold output rows [oy0, oy1) of the input into a [c*kh*kw, (oy1-oy0)*ow] matrix. Each row
/// is one (channel, ky, kx) tap; the valid output-column range is computed once per tap so the
/// inner loop has no bounds tests.
fn im2col<T: Elem>(
    x: &[T],
    c: usize,
    h: usize,
    w: usize,
    wn: &Window,
    oy0: usize,
    oy1: usize,
    ow: usize,
    col: &mut [T],
) {
    let (kh, kw) = (wn.kh, wn.kw);
    let n = (oy1 - oy0) * ow;
    for (row, dst) in col[..c * kh * kw * n].chunks_mut(n).enumerate() {
        let ci = row / (kh * kw);
        let ky = (row / kw) % kh;
        let kx = row % kw;
        let xc = &x[ci * h * w..(ci + 1) * h * w];
        let off = (kx * wn.dw) as isize - wn.pl as isize;
        let lo = if off >= 0 { 0 } else { ((-off) as usize).div_ceil(wn.sw) }.min(ow);
        let hi = if (w as isize) <= off { 0 } else { ((w as isize - off) as usize).div_ceil(wn.sw) }.min(ow).max(lo);
        for oy in oy0..oy1 {
            let iy = (oy * wn.sh + ky * wn.dh) as isize - wn.pt as isize;
            let d = &mut dst[(oy - oy0) * ow..(oy - oy0 + 1) * ow];
            if iy < 0 || iy >= h as isize {
                d.fill(T::default());
                continue;
            }
            let xrow = &xc[iy as usize * w..(iy as usize + 1) * w];
            d[..lo].fill(T::default());
            d[hi..].fill(T::default());
            if lo == hi {
                // The tap never reaches the input for this row (pads wider than the kernel).
                continue;
            }
            let first = (lo as isize * wn.sw as isize + off) as usize;
            if wn.sw == 1 {
                d[lo..hi].copy_from_slice(&xrow[first..first + (hi - lo)]);
            } else {
                T::copy_strided(&mut d[lo..hi], &xrow[first..], wn.sw);
            }
        }
    }
}

/// A raw output pointer shared by tasks that write disjoint regions.
#[derive(Clone, Copy)]
struct OutPtr<T>(*mut T);
// SAFETY: every task writes a disjoint set of output elements (see `grouped`).
unsafe impl<T> Send for OutPtr<T> {}
unsafe impl<T> Sync for OutPtr<T> {}

/// Grouped/dense convolution: for each (image, group, strip of output rows) unfold the strip
/// (sized to stay in cache) and multiply by the group's weights into the output columns of
/// that strip. Tasks write disjoint columns, so they run in parallel across both cores even
/// for a single image.
pub(super) fn grouped<T: Elem>(a: &ConvArgs<T>, oh: usize, ow: usize, out: &mut [T]) {
    let wn = a.win;
    let cg = a.c / a.groups;
    let mg = a.m / a.groups;
    let kdim = cg * wn.kh * wn.kw;
    let pointwise = wn.kh == 1 && wn.kw == 1 && wn.sh == 1 && wn.sw == 1 && wn.pt + wn.pl + wn.pb + wn.pr == 0;
    let hw = a.h * a.w;
    let ohw = oh * ow;
    // ~1 MiB of unfolded input per strip.
    let strip_rows = if pointwise { oh } else { ((256 * 1024) / (kdim * ow).max(1)).clamp(1, oh) };
    let strips = oh.div_ceil(strip_rows);
    let tasks = a.n * a.groups * strips;
    let out_ptr = OutPtr(out.as_mut_ptr());
    let run = |task: usize, col: &mut Vec<T>| {
        let ptr = out_ptr;
        let (job, strip) = (task / strips, task % strips);
        let (img, g) = (job / a.groups, job % a.groups);
        let (oy0, oy1) = (strip * strip_rows, ((strip + 1) * strip_rows).min(oh));
        let n = (oy1 - oy0) * ow;
        let x = &a.x[(img * a.c + g * cg) * hw..(img * a.c + (g + 1) * cg) * hw];
        let wgt = &a.weight[g * mg * kdim..(g + 1) * mg * kdim];
        let rhs: &[T] = if pointwise {
            x
        } else {
            col.resize(kdim * n, T::default());
            im2col(x, cg, a.h, a.w, &wn, oy0, oy1, ow, col);
            col
        };
        // Output block: rows g*mg.. of image img, columns [oy0*ow, oy1*ow), row stride ohw.
        let base = (img * a.m + g * mg) * ohw + oy0 * ow;
        // SAFETY: (img, g, strip) tasks cover disjoint output blocks; the block lies inside `out`.
        unsafe {
            let dst = ptr.0.add(base);
            for mi in 0..mg {
                let row = std::slice::from_raw_parts_mut(dst.add(mi * ohw), n);
                row.fill(a.bias.map_or(T::default(), |b| b[g * mg + mi]));
            }
            gemm::gemm(
                mg,
                n,
                kdim,
                dst,
                1,
                ohw as isize,
                true,
                wgt.as_ptr(),
                1,
                kdim as isize,
                rhs.as_ptr(),
                1,
                if pointwise { hw as isize } else { n as isize },
                T::ONE,
                T::ONE,
                false,
                false,
                false,
                if tasks < threads() { gemm::Parallelism::Rayon(threads()) } else { gemm::Parallelism::None },
            );
            if a.act != Activation::None {
                for mi in 0..mg {
                    T::activate(a.act, std::slice::from_raw_parts_mut(dst.add(mi * ohw), n));
                }
            }
        }
    };
    let with_col = |t: usize| T::with_col(|c| run(t, c));
    if tasks == 1 {
        with_col(0);
    } else {
        (0..tasks).into_par_iter().for_each(with_col);
    }
}

pub struct ConvTransposeArgs<'a> {
    pub x: &'a [f32],
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    /// [c, m/groups, kh, kw]
    pub weight: &'a [f32],
    pub m: usize,
    pub bias: Option<&'a [f32]>,
    pub groups: usize,
    pub win: Window,
    pub oh: usize,
    pub ow: usize,
}

/// Transposed convolution by gemm (W^T x) followed by col2im scatter-add. Output [n, m, oh, ow].
pub fn conv_transpose2d(a: &ConvTransposeArgs) -> Vec<f32> {
    let wn = a.win;
    let (oh, ow) = (a.oh, a.ow);
    let cg = a.c / a.groups;
    let mg = a.m / a.groups;
    let kk = wn.kh * wn.kw;
    let hw = a.h * a.w;
    let mut out = vec![0f32; a.n * a.m * oh * ow];
    if out.is_empty() {
        return out;
    }
    out.par_chunks_mut(mg * oh * ow).enumerate().for_each(|(job, o)| {
        let (img, g) = (job / a.groups, job % a.groups);
        let x = &a.x[(img * a.c + g * cg) * hw..(img * a.c + (g + 1) * cg) * hw];
        // Weight of this group as [cg, mg*kk]; transpose to [mg*kk, cg].
        let wg = &a.weight[g * cg * mg * kk..(g + 1) * cg * mg * kk];
        let mut wt = vec![0f32; mg * kk * cg];
        for ci in 0..cg {
            for r in 0..mg * kk {
                wt[r * cg + ci] = wg[ci * mg * kk + r];
            }
        }
        let mut col = vec![0f32; mg * kk * hw];
        sgemm(mg * kk, hw, cg, &wt, x, &mut col, false, false);
        for mo in 0..mg {
            let ob = &mut o[mo * oh * ow..(mo + 1) * oh * ow];
            if let Some(b) = a.bias {
                ob.fill(b[g * mg + mo]);
            }
            for ky in 0..wn.kh {
                for kx in 0..wn.kw {
                    let crow = &col[((mo * wn.kh + ky) * wn.kw + kx) * hw..][..hw];
                    for iy in 0..a.h {
                        let oy = (iy * wn.sh + ky * wn.dh) as isize - wn.pt as isize;
                        if oy < 0 || oy >= oh as isize {
                            continue;
                        }
                        for ix in 0..a.w {
                            let ox = (ix * wn.sw + kx * wn.dw) as isize - wn.pl as isize;
                            if ox >= 0 && ox < ow as isize {
                                ob[oy as usize * ow + ox as usize] += crow[iy * a.w + ix];
                            }
                        }
                    }
                }
            }
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &ConvArgs) -> (Vec<f32>, usize, usize) {
        let wn = a.win;
        let oh = out_size(a.h, wn.kh, wn.sh, wn.dh, wn.pt, wn.pb);
        let ow = out_size(a.w, wn.kw, wn.sw, wn.dw, wn.pl, wn.pr);
        let (cg, mg) = (a.c / a.groups, a.m / a.groups);
        let mut out = vec![0f32; a.n * a.m * oh * ow];
        for n in 0..a.n {
            for m in 0..a.m {
                let g = m / mg;
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut acc = a.bias.map_or(0.0, |b| b[m]);
                        for ci in 0..cg {
                            for ky in 0..wn.kh {
                                for kx in 0..wn.kw {
                                    let iy = (oy * wn.sh + ky * wn.dh) as isize - wn.pt as isize;
                                    let ix = (ox * wn.sw + kx * wn.dw) as isize - wn.pl as isize;
                                    if iy >= 0 && ix >= 0 && (iy as usize) < a.h && (ix as usize) < a.w {
                                        let xv = a.x[((n * a.c + g * cg + ci) * a.h + iy as usize) * a.w + ix as usize];
                                        let wv = a.weight[((m * cg + ci) * wn.kh + ky) * wn.kw + kx];
                                        acc += xv * wv;
                                    }
                                }
                            }
                        }
                        out[((n * a.m + m) * oh + oy) * ow + ox] = a.act.apply(acc);
                    }
                }
            }
        }
        (out, oh, ow)
    }

    fn data(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            })
            .collect()
    }

    /// Large enough inputs that the grouped path splits the output into several strips, with
    /// asymmetric pads, unequal strides, dilation and groups; plus the depthwise kernel.
    #[test]
    fn kernels_match_naive_convolution() {
        let cases = [
            (2, 8, 96, 80, 12, 2, 3, 3, 1, 2, 1, 1, (1, 0, 2, 1)),
            (1, 16, 130, 120, 16, 1, 3, 3, 1, 1, 1, 1, (1, 1, 1, 1)),
            (1, 6, 40, 50, 6, 6, 3, 5, 2, 1, 2, 1, (0, 2, 1, 2)),
            (3, 4, 33, 31, 8, 1, 1, 1, 1, 1, 1, 1, (0, 0, 0, 0)),
        ];
        for (i, &(n, c, h, w, m, groups, kh, kw, sh, sw, dh, dw, (pt, pl, pb, pr))) in cases.iter().enumerate() {
            let x = data(n * c * h * w, 1 + i as u32);
            let weight = data(m * (c / groups) * kh * kw, 7 + i as u32);
            let bias = data(m, 3);
            let args = ConvArgs {
                x: &x,
                n,
                c,
                h,
                w,
                weight: &weight,
                m,
                bias: Some(&bias),
                groups,
                win: Window { kh, kw, sh, sw, dh, dw, pt, pl, pb, pr },
                act: Activation::LeakyRelu(0.1),
                packed: None,
            };
            let (got, oh, ow) = conv2d(&args);
            let (want, eh, ew) = naive(&args);
            assert_eq!((oh, ow), (eh, ew));
            let err = got.iter().zip(&want).fold(0f32, |e, (a, b)| e.max((a - b).abs()));
            assert!(err < 1e-4, "case {i}: max abs error {err}");
        }
    }
}
