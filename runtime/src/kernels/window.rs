//! AVX-512 kernels for windows sliding over one channel plane: depthwise convolution, max and
//! average pooling. Chosen at run time (`is_x86_feature_detected!`); the portable kernels in
//! `conv.rs` and `pool.rs` serve other CPUs and stay the reference the tests compare with.
//!
//! The plane is first copied into a padded buffer split into `sw` column phases (phase p holds
//! the padded columns p, p + sw, p + 2sw, ...), so every tap of a strided window reads 16
//! consecutive outputs' inputs with one contiguous load and no bounds tests. Each call then
//! keeps four output vectors in flight, since the taps of one vector form a dependency chain
//! (a 3x3 depthwise convolution at 14x14 is one vector per row: latency, not throughput, bound).

use super::{
    Activation, Window,
    conv::ConvArgs,
    pool::{PoolKind, taps},
};
use rayon::prelude::*;
use std::arch::x86_64::*;

pub fn available() -> bool {
    std::is_x86_feature_detected!("avx512f")
}

/// Geometry of the padded, phase-split plane.
struct Geo {
    /// Padded rows the windows read.
    ph: usize,
    /// Columns per phase.
    pwq: usize,
}

impl Geo {
    fn new(wn: &Window, oh: usize, ow: usize) -> Self {
        Geo { ph: (oh - 1) * wn.sh + (wn.kh - 1) * wn.dh + 1, pwq: ow + (wn.kw - 1) * wn.dw / wn.sw }
    }
    fn len(&self, sw: usize) -> usize {
        sw * self.ph * self.pwq
    }
    /// Offset of every tap (ky-major, as the portable kernels sum them) from the window's origin.
    fn taps(&self, wn: &Window) -> Vec<usize> {
        let mut t = Vec::with_capacity(wn.kh * wn.kw);
        for ky in 0..wn.kh {
            for kx in 0..wn.kw {
                let c = kx * wn.dw;
                t.push(ky * wn.dh * self.pwq + (c % wn.sw) * self.ph * self.pwq + c / wn.sw);
            }
        }
        t
    }
    /// Copy plane `x` [h, w] into `buf`, `pad` outside the input.
    #[inline(always)]
    fn fill(&self, x: &[f32], h: usize, w: usize, wn: &Window, pad: f32, buf: &mut [f32]) {
        let sw = wn.sw;
        for p in 0..sw {
            // Columns j of phase p read input column j*sw + p - pl: inside for j in [lo, hi).
            let lo = wn.pl.saturating_sub(p).div_ceil(sw).min(self.pwq);
            let hi = if w + wn.pl <= p { 0 } else { (w + wn.pl - p).div_ceil(sw) }.clamp(lo, self.pwq);
            for r in 0..self.ph {
                let dst = &mut buf[(p * self.ph + r) * self.pwq..][..self.pwq];
                let iy = r as isize - wn.pt as isize;
                if iy < 0 || iy >= h as isize {
                    dst.fill(pad);
                    continue;
                }
                let xrow = &x[iy as usize * w..(iy as usize + 1) * w];
                dst[..lo].fill(pad);
                dst[hi..].fill(pad);
                if lo == hi {
                    continue;
                }
                let first = lo * sw + p - wn.pl;
                if sw == 1 {
                    dst[lo..hi].copy_from_slice(&xrow[first..first + (hi - lo)]);
                } else {
                    super::copy_strided_f32(&mut dst[lo..hi], &xrow[first..], sw);
                }
            }
        }
    }
}

thread_local! {
    static PLANE: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// What is done to an output vector before it is stored.
#[derive(Clone, Copy)]
enum Finish<'a> {
    Act(Activation),
    /// Average: divide by ydiv[oy] * xdiv[ox] (0 where the window holds no counted position).
    Div {
        ydiv: &'a [f32],
        xdiv: &'a [f32],
    },
}

const FMA: u8 = 0;
const MAX: u8 = 1;
const SUM: u8 = 2;

/// One plane: out[oy, ox] = combine over taps t of buf[origin(oy, ox) + taps[t]] (times k[t]).
#[target_feature(enable = "avx512f")]
fn plane<const OP: u8>(
    buf: &[f32],
    geo: &Geo,
    sh: usize,
    taps: &[usize],
    k: &[f32],
    init: f32,
    oh: usize,
    ow: usize,
    fin: Finish,
    out: &mut [f32],
) {
    let cpr = ow.div_ceil(16);
    let total = oh * cpr;
    let (bp, op) = (buf.as_ptr(), out.as_mut_ptr());
    let mut j = 0;
    while j < total {
        let mut base = [0usize; 4];
        let mut dst = [0usize; 4];
        let mut mask = [0u16; 4];
        for i in 0..4 {
            if j + i < total {
                let (oy, ox) = ((j + i) / cpr, (j + i) % cpr * 16);
                base[i] = oy * sh * geo.pwq + ox;
                dst[i] = oy * ow + ox;
                let n = (ow - ox).min(16);
                mask[i] = if n == 16 { 0xffff } else { (1u16 << n) - 1 };
            }
        }
        let mut acc = [_mm512_set1_ps(init); 4];
        for (&t, &kv) in taps.iter().zip(k.iter().chain(std::iter::repeat(&0.0))) {
            let kv = _mm512_set1_ps(kv);
            for i in 0..4 {
                // SAFETY: unmasked lanes read inside the padded plane (origin + tap < geo's
                // extent); masked lanes do not fault.
                let v = unsafe { _mm512_maskz_loadu_ps(mask[i], bp.add(base[i] + t)) };
                acc[i] = match OP {
                    FMA => _mm512_fmadd_ps(kv, v, acc[i]),
                    // NaN propagates as in onnxruntime: v replaces acc when greater or NaN.
                    MAX => {
                        let m = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(v, acc[i]) | _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
                        _mm512_mask_blend_ps(m, acc[i], v)
                    }
                    _ => _mm512_add_ps(acc[i], v),
                };
            }
        }
        for i in 0..4 {
            if mask[i] == 0 {
                continue;
            }
            let mut v = acc[i];
            let mut tail_act = None;
            match fin {
                Finish::Act(Activation::None) => {}
                Finish::Act(Activation::Relu) => v = _mm512_max_ps(v, _mm512_setzero_ps()),
                Finish::Act(a) => tail_act = Some(a),
                Finish::Div { ydiv, xdiv } => {
                    let (oy, ox) = (dst[i] / ow, dst[i] % ow);
                    // SAFETY: xdiv holds ow rounded up to 16 entries.
                    let d = _mm512_mul_ps(_mm512_set1_ps(ydiv[oy]), unsafe { _mm512_loadu_ps(xdiv.as_ptr().add(ox)) });
                    let nz = _mm512_cmp_ps_mask::<_CMP_NEQ_OQ>(d, _mm512_setzero_ps());
                    v = _mm512_maskz_div_ps(nz, v, d);
                }
            }
            // SAFETY: the unmasked lanes are output positions of this plane.
            unsafe { _mm512_mask_storeu_ps(op.add(dst[i]), mask[i], v) };
            if let Some(a) = tail_act {
                a.apply_slice(&mut out[dst[i]..dst[i] + mask[i].count_ones() as usize]);
            }
        }
        j += 4;
    }
}

/// Planes per rayon task: enough work (~32k taps) that scheduling does not dominate.
fn min_planes(oh: usize, ow: usize, taps: usize) -> usize {
    (32 * 1024 / (oh * ow * taps).max(1)).max(1)
}

/// Depthwise convolution (groups == c == m) into `out` [n, c, oh, ow]; false without AVX-512.
pub fn depthwise(a: &ConvArgs<f32>, oh: usize, ow: usize, out: &mut [f32]) -> bool {
    if !available() {
        return false;
    }
    let wn = a.win;
    let geo = Geo::new(&wn, oh, ow);
    let taps = geo.taps(&wn);
    let ksz = wn.kh * wn.kw;
    let (h, w) = (a.h, a.w);
    out.par_chunks_mut(oh * ow).enumerate().with_min_len(min_planes(oh, ow, ksz)).for_each(|(nc, o)| {
        let ch = nc % a.c;
        let x = &a.x[nc * h * w..(nc + 1) * h * w];
        let bias = a.bias.map_or(0.0, |b| b[ch]);
        PLANE.with(|b| {
            let buf = &mut b.borrow_mut();
            buf.resize(geo.len(wn.sw), 0.0);
            geo.fill(x, h, w, &wn, 0.0, buf);
            let k = &a.weight[ch * ksz..(ch + 1) * ksz];
            // SAFETY: the CPU has AVX-512F (checked above).
            unsafe { plane::<FMA>(buf, &geo, wn.sh, &taps, k, bias, oh, ow, Finish::Act(a.act), o) }
        });
    });
    true
}

/// Pooling over [nc, h, w] planes into [nc, oh, ow]; None without AVX-512. Windows are clipped
/// to the input like the portable kernel: outside taps are -inf for max (never selected) and 0
/// for the average (adding 0 is exact), whose divisor counts as onnxruntime does.
pub fn pool(
    x: &[f32],
    nc: usize,
    h: usize,
    w: usize,
    wn: &Window,
    oh: usize,
    ow: usize,
    kind: PoolKind,
) -> Option<Vec<f32>> {
    if !available() {
        return None;
    }
    let mut out = vec![0f32; nc * oh * ow];
    if out.is_empty() {
        return Some(out);
    }
    let geo = Geo::new(wn, oh, ow);
    let offsets = geo.taps(wn);
    // Divisor factors per output row and column (the count is a product of the two).
    let div = |o: usize, s: usize, k: usize, d: usize, pb: usize, n: usize, pe: usize, include: bool| {
        let (lo, hi, padded) = taps((o * s) as isize - pb as isize, k, d, n, n + pe);
        if include { padded as f32 } else { (hi - lo) as f32 }
    };
    let (ydiv, mut xdiv) = match kind {
        PoolKind::Max => (Vec::new(), Vec::new()),
        PoolKind::Avg { count_include_pad: inc } => (
            (0..oh).map(|oy| div(oy, wn.sh, wn.kh, wn.dh, wn.pt, h, wn.pb, inc)).collect::<Vec<_>>(),
            (0..ow).map(|ox| div(ox, wn.sw, wn.kw, wn.dw, wn.pl, w, wn.pr, inc)).collect::<Vec<_>>(),
        ),
    };
    xdiv.resize(ow.next_multiple_of(16), 1.0);
    let pad = if kind == PoolKind::Max { f32::NEG_INFINITY } else { 0.0 };
    out.par_chunks_mut(oh * ow).enumerate().with_min_len(min_planes(oh, ow, offsets.len())).for_each(|(ch, o)| {
        let xc = &x[ch * h * w..(ch + 1) * h * w];
        PLANE.with(|b| {
            let buf = &mut b.borrow_mut();
            buf.resize(geo.len(wn.sw), 0.0);
            geo.fill(xc, h, w, wn, pad, buf);
            // SAFETY: the CPU has AVX-512F (checked above).
            unsafe {
                match kind {
                    PoolKind::Max => {
                        plane::<MAX>(buf, &geo, wn.sh, &offsets, &[], pad, oh, ow, Finish::Act(Activation::None), o)
                    }
                    PoolKind::Avg { .. } => {
                        let fin = Finish::Div { ydiv: &ydiv, xdiv: &xdiv };
                        plane::<SUM>(buf, &geo, wn.sh, &offsets, &[], 0.0, oh, ow, fin, o)
                    }
                }
            }
        });
    });
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::{conv, pool::pool_out_size};

    fn rng(mut seed: u64) -> impl FnMut() -> u32 {
        move || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) as u32
        }
    }

    fn window(rnd: &mut impl FnMut() -> u32, kmax: usize) -> Window {
        let (kh, kw) = (1 + rnd() as usize % kmax, 1 + rnd() as usize % kmax);
        let p = |k: usize, r: u32| (r as usize) % k;
        Window {
            kh,
            kw,
            sh: 1 + rnd() as usize % 3,
            sw: 1 + rnd() as usize % 3,
            dh: 1 + rnd() as usize % 2,
            dw: 1 + rnd() as usize % 2,
            pt: p(kh, rnd()),
            pl: p(kw, rnd()),
            pb: p(kh, rnd()),
            pr: p(kw, rnd()),
        }
    }

    /// Both pooling kinds against the portable direct loop: NaN, padding, strides, dilations,
    /// ceil_mode windows ending in the padding, widths across the 16-lane and 4-vector edges.
    #[test]
    fn pooling_matches_portable() {
        if !available() {
            return;
        }
        let mut rnd = rng(99);
        for case in 0..600 {
            let (h, w) = (1 + rnd() as usize % 20, 1 + rnd() as usize % 70);
            let wn = window(&mut rnd, 5);
            let ceil = case % 2 == 0;
            let oh = pool_out_size(h, wn.kh, wn.sh, wn.dh, wn.pt, wn.pb, ceil);
            let ow = pool_out_size(w, wn.kw, wn.sw, wn.dw, wn.pl, wn.pr, ceil);
            let nc = 1 + case % 3;
            let x: Vec<f32> = (0..nc * h * w)
                .map(|_| {
                    let r = rnd();
                    if r.is_multiple_of(53) { f32::NAN } else { (r % 1000) as f32 / 100.0 - 5.0 }
                })
                .collect();
            let kinds =
                [PoolKind::Max, PoolKind::Avg { count_include_pad: false }, PoolKind::Avg { count_include_pad: true }];
            for kind in kinds {
                let want = match kind {
                    PoolKind::Max => crate::kernels::pool::pool2d_impl::<true>(&x, nc, h, w, &wn, oh, ow, false),
                    PoolKind::Avg { count_include_pad } => {
                        crate::kernels::pool::pool2d_impl::<false>(&x, nc, h, w, &wn, oh, ow, count_include_pad)
                    }
                };
                let got = pool(&x, nc, h, w, &wn, oh, ow, kind).unwrap();
                assert_eq!(want.len(), got.len());
                for (i, (a, b)) in want.iter().zip(&got).enumerate() {
                    assert!(
                        a.to_bits() == b.to_bits()
                            || (a.is_nan() && b.is_nan())
                            || (a - b).abs() <= 1e-6 * a.abs().max(1.0),
                        "case {case} {kind:?} {wn:?} ceil={ceil} {h}x{w} at {i}: {a} vs {b}"
                    );
                }
            }
        }
    }

    /// Depthwise convolution against the portable kernel, channel counts that are not multiples
    /// of 16, every fused activation kind the kernel finishes in or out of registers.
    #[test]
    fn depthwise_matches_portable() {
        if !available() {
            return;
        }
        let mut rnd = rng(7);
        let acts = [Activation::None, Activation::Relu, Activation::Clip(0.0, 6.0), Activation::HardSwish];
        for case in 0..300 {
            let (n, c) = (1 + case % 2, 1 + rnd() as usize % 19);
            let (h, w) = (1 + rnd() as usize % 24, 1 + rnd() as usize % 60);
            let win = window(&mut rnd, 5);
            let oh = conv::out_size(h, win.kh, win.sh, win.dh, win.pt, win.pb);
            let ow = conv::out_size(w, win.kw, win.sw, win.dw, win.pl, win.pr);
            if oh == 0 || ow == 0 {
                continue;
            }
            let mut data = |len: usize| (0..len).map(|_| (rnd() % 2000) as f32 / 1000.0 - 1.0).collect::<Vec<_>>();
            let (x, weight, bias) = (data(n * c * h * w), data(c * win.kh * win.kw), data(c));
            let args = ConvArgs {
                x: &x,
                n,
                c,
                h,
                w,
                weight: &weight,
                m: c,
                bias: if case % 3 == 0 { None } else { Some(&bias) },
                groups: c,
                win,
                act: acts[case % acts.len()],
                packed: None,
            };
            let mut want = vec![0f32; n * c * oh * ow];
            conv::depthwise(&args, oh, ow, &mut want);
            let mut got = vec![f32::NAN; n * c * oh * ow];
            assert!(depthwise(&args, oh, ow, &mut got));
            for (i, (a, b)) in want.iter().zip(&got).enumerate() {
                assert!((a - b).abs() <= 1e-5, "case {case} {win:?} {h}x{w} c={c} at {i}: {a} vs {b}");
            }
        }
    }
}
