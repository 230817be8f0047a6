//! Direct AVX-512 convolution (no im2col): the input of each (image, group) is copied once into
//! a zero-padded buffer split into stride phases, so that for every kernel tap the inputs of
//! consecutive outputs are consecutive floats. Outputs are computed over a "flat" index
//! j = oy * pwq + ox that runs across rows of the padded width `pwq` (the columns past `ow` are
//! computed and dropped), so small planes (7x7, 14x14) still fill whole vectors.
//!
//! The micro-kernel holds 8 output channels x 48 flat positions (24 zmm accumulators) and, per
//! (input channel, tap), loads 3 input vectors and broadcasts 8 weights from a panel packed as
//! [channel tile][k][8], so the FMAs, not the loads, bound it. An im2col copy, as large as the
//! product's input for a 3x3 kernel, and the gemm crate's per-call packing both disappear.

use super::{Activation, conv::ConvArgs};
use rayon::prelude::*;
use std::arch::x86_64::*;

const MR: usize = 8;
const NV: usize = 3;
const NT: usize = 16 * NV;

pub fn available() -> bool {
    std::is_x86_feature_detected!("avx512f")
}

/// Geometry of the phase-split padded input of one (image, group).
struct Geo {
    sh: usize,
    sw: usize,
    /// Rows and columns of one phase plane.
    prow: usize,
    pwq: usize,
    /// Floats per input channel (all phases) and the slack read past the last one.
    chan: usize,
    /// Offsets of the taps (ky-major) inside a channel.
    taps: Vec<usize>,
    /// The input is read in place (1x1, stride 1, no padding).
    in_place: bool,
}

impl Geo {
    fn new(a: &ConvArgs<f32>, oh: usize, ow: usize) -> Self {
        let wn = a.win;
        let (qy, qx) = ((wn.kh - 1) * wn.dh / wn.sh, (wn.kw - 1) * wn.dw / wn.sw);
        let (prow, pwq) = (oh + qy, ow + qx);
        let plane = prow * pwq;
        let mut taps = Vec::with_capacity(wn.kh * wn.kw);
        for ky in 0..wn.kh {
            for kx in 0..wn.kw {
                let (y, x) = (ky * wn.dh, kx * wn.dw);
                taps.push(((y % wn.sh) * wn.sw + x % wn.sw) * plane + (y / wn.sh) * pwq + x / wn.sw);
            }
        }
        let in_place = wn.kh == 1
            && wn.kw == 1
            && wn.sh == 1
            && wn.sw == 1
            && wn.pt + wn.pl + wn.pb + wn.pr == 0
            && (prow, pwq) == (a.h, a.w);
        Geo { sh: wn.sh, sw: wn.sw, prow, pwq, chan: wn.sh * wn.sw * plane, taps, in_place }
    }

    /// Copy channels x [cg, h, w] into `buf` (zero outside the input), plus NT floats of slack.
    fn fill(&self, a: &ConvArgs<f32>, x: &[f32], cg: usize, buf: &mut Vec<f32>) {
        let wn = a.win;
        let (h, w) = (a.h, a.w);
        buf.clear();
        buf.resize(cg * self.chan + NT + self.pwq, 0.0);
        let plane = self.prow * self.pwq;
        for ci in 0..cg {
            let xc = &x[ci * h * w..(ci + 1) * h * w];
            for py in 0..self.sh {
                for px in 0..self.sw {
                    let base = ci * self.chan + (py * self.sw + px) * plane;
                    // Columns j read input column j*sw + px - pl: inside for j in [lo, hi).
                    let lo = wn.pl.saturating_sub(px).div_ceil(self.sw).min(self.pwq);
                    let hi = if w + wn.pl <= px { 0 } else { (w + wn.pl - px).div_ceil(self.sw) }.clamp(lo, self.pwq);
                    if lo == hi {
                        continue;
                    }
                    for r in 0..self.prow {
                        let iy = (r * self.sh + py) as isize - wn.pt as isize;
                        if iy < 0 || iy >= h as isize {
                            continue;
                        }
                        let xrow = &xc[iy as usize * w..(iy as usize + 1) * w];
                        let first = lo * self.sw + px - wn.pl;
                        let dst = &mut buf[base + r * self.pwq + lo..base + r * self.pwq + hi];
                        super::copy_strided_f32(dst, &xrow[first..], self.sw);
                    }
                }
            }
        }
    }
}

/// Weights [m, k] packed as [ceil(m/8)][k][8] (zero rows past m).
fn pack(w: &[f32], m: usize, k: usize) -> Vec<f32> {
    let tiles = m.div_ceil(MR);
    let mut p = vec![0f32; tiles * k * MR];
    for (t, dst) in p.chunks_mut(k * MR).enumerate() {
        for r in 0..MR.min(m - t * MR) {
            let src = &w[(t * MR + r) * k..(t * MR + r + 1) * k];
            for (kk, &v) in src.iter().enumerate() {
                dst[kk * MR + r] = v;
            }
        }
    }
    p
}

#[derive(Clone, Copy)]
struct Ptr(*mut f32);
// SAFETY: tasks write disjoint output tiles.
unsafe impl Send for Ptr {}
unsafe impl Sync for Ptr {}

impl Ptr {
    /// Through a method, so closures capture the Send + Sync wrapper, not the raw pointer.
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// One tile: `rows` (<= 8) output channels x `n` (<= 48) flat positions starting at `x`
/// (the group's input at flat position j0); writes dst[r * ld + i].
#[target_feature(enable = "avx512f")]
unsafe fn tile(
    x: *const f32,
    chan: usize,
    cg: usize,
    taps: &[usize],
    wp: *const f32,
    bias: &[f32; MR],
    rows: usize,
    n: usize,
    relu: bool,
    dst: *mut f32,
    ld: usize,
) {
    let mut acc = [[_mm512_setzero_ps(); NV]; MR];
    for (r, a) in acc.iter_mut().enumerate() {
        *a = [_mm512_set1_ps(bias[r]); NV];
    }
    let mask = |v: usize| -> u16 {
        let left = n.saturating_sub(v * 16).min(16);
        if left == 16 { 0xffff } else { (1u16 << left) - 1 }
    };
    let m = [mask(0), mask(1), mask(2)];
    let mut wp = wp;
    for ci in 0..cg {
        // SAFETY (all reads): the padded buffer holds the whole tile for every tap plus slack;
        // masked lanes are not read. The in-place input has no taps past the first (1x1).
        let xc = unsafe { x.add(ci * chan) };
        for &t in taps {
            let p = unsafe { xc.add(t) };
            let v = unsafe {
                [
                    _mm512_maskz_loadu_ps(m[0], p),
                    _mm512_maskz_loadu_ps(m[1], p.add(16)),
                    _mm512_maskz_loadu_ps(m[2], p.add(32)),
                ]
            };
            for (r, a) in acc.iter_mut().enumerate() {
                let wv = _mm512_set1_ps(unsafe { *wp.add(r) });
                for (av, &xv) in a.iter_mut().zip(&v) {
                    *av = _mm512_fmadd_ps(wv, xv, *av);
                }
            }
            wp = unsafe { wp.add(MR) };
        }
    }
    for (r, a) in acc.iter().enumerate().take(rows) {
        for (v, &av) in a.iter().enumerate() {
            let out = if relu { _mm512_max_ps(av, _mm512_setzero_ps()) } else { av };
            // SAFETY: row r < rows and the unmasked lanes lie inside this tile of dst.
            unsafe { _mm512_mask_storeu_ps(dst.add(r * ld + v * 16), m[v], out) };
        }
    }
}

thread_local! {
    static PADDED: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Where this kernel beats im2col + gemm (`timing::direct_vs_im2col`, minimum of 15 runs on
/// the real models' shapes, 2026-12-02): spatial kernels at stride 1 on planes above 16x16
/// (0.67x the time at 160x160, 0.75-0.89x at 56-80, even at 28x28: the im2col copy there is as
/// large as the product's input) and the 7x7 stride-2 stems on 3 channels (0.88x). 1x1
/// convolutions are a plain gemm already, which the gemm crate's packed panels mostly run
/// faster (1.2x); so are 14x14 and 7x7 planes (1.06x, 1.4x: the flat tiles there are a third
/// padding), and 3x3 stride 2 breaks even.
pub fn suits(a: &ConvArgs<f32>, oh: usize, ow: usize) -> bool {
    let w = a.win;
    let stem = a.c / a.groups <= 4 && w.kh * w.kw >= 25;
    stem || (w.kh * w.kw > 1 && w.sh == 1 && w.sw == 1 && oh * ow > 256)
}

/// Convolution into `out` [n, m, oh, ow]; false when the CPU lacks AVX-512 (nothing written).
pub fn conv(a: &ConvArgs<f32>, oh: usize, ow: usize, out: &mut [f32]) -> bool {
    if !available() {
        return false;
    }
    let wn = a.win;
    let (cg, mg) = (a.c / a.groups, a.m / a.groups);
    let k = cg * wn.kh * wn.kw;
    let geo = Geo::new(a, oh, ow);
    let nflat = oh * geo.pwq;
    let compact = geo.pwq != ow;
    let pack_all =
        || -> Vec<Vec<f32>> { (0..a.groups).map(|g| pack(&a.weight[g * mg * k..(g + 1) * mg * k], mg, k)).collect() };
    let local;
    let packed = match a.packed {
        Some(cache) => cache.get_or_init(pack_all),
        None => {
            local = pack_all();
            &local
        }
    };
    let relu = a.act == Activation::Relu;
    let tail_act = !matches!(a.act, Activation::None | Activation::Relu);
    // Flat results [n, m, oh, pwq] when columns are dropped, else the output itself.
    let mut flat = if compact { vec![0f32; a.n * a.m * nflat] } else { Vec::new() };
    let dst_all = Ptr(if compact { flat.as_mut_ptr() } else { out.as_mut_ptr() });
    let mtiles = mg.div_ceil(MR);
    let ntiles = nflat.div_ceil(NT);
    // Tasks within each (image, group): blocks of N tiles x blocks of channel tiles, about 8
    // per thread.
    let per = (ntiles * mtiles).div_ceil(8 * super::threads()).max(1);
    let nb = per.min(ntiles).max(1);
    let mb = (per / nb).clamp(1, mtiles);
    let (nblocks, mblocks) = (ntiles.div_ceil(nb), mtiles.div_ceil(mb));
    let jobs = a.n * a.groups;
    let hw = a.h * a.w;
    // The (image, group) jobs run one after the other, each one's tasks in parallel on its
    // padded input.
    (0..jobs).for_each(|job| {
        let (img, g) = (job / a.groups, job % a.groups);
        let x = &a.x[(img * a.c + g * cg) * hw..(img * a.c + (g + 1) * cg) * hw];
        let run = |xp: &[f32]| {
            let wp = &packed[g];
            (0..nblocks * mblocks).into_par_iter().for_each(|t| {
                let (nbk, mbk) = (t / mblocks, t % mblocks);
                for nt in nbk * nb..((nbk + 1) * nb).min(ntiles) {
                    let j0 = nt * NT;
                    let n = (nflat - j0).min(NT);
                    for mt in mbk * mb..((mbk + 1) * mb).min(mtiles) {
                        let rows = (mg - mt * MR).min(MR);
                        let mut bias = [0f32; MR];
                        if let Some(b) = a.bias {
                            bias[..rows].copy_from_slice(&b[g * mg + mt * MR..g * mg + mt * MR + rows]);
                        }
                        let ch0 = img * a.m + g * mg + mt * MR;
                        // SAFETY: AVX-512F is present; the tile's rows and columns are this
                        // task's own, inside dst (rows < mg, j0 + n <= nflat).
                        unsafe {
                            let dst = dst_all.get().add(ch0 * nflat + j0);
                            tile(
                                xp.as_ptr().add(j0),
                                geo.chan,
                                cg,
                                &geo.taps,
                                wp.as_ptr().add(mt * k * MR),
                                &bias,
                                rows,
                                n,
                                relu,
                                dst,
                                nflat,
                            );
                            if tail_act && !compact {
                                for r in 0..rows {
                                    a.act.apply_slice(std::slice::from_raw_parts_mut(dst.add(r * nflat), n));
                                }
                            }
                        }
                    }
                }
            });
        };
        if geo.in_place {
            run(x);
        } else {
            PADDED.with(|b| {
                let mut buf = b.borrow_mut();
                geo.fill(a, x, cg, &mut buf);
                run(&buf);
            });
        }
    });
    if compact {
        out.par_chunks_mut(oh * ow).zip(flat.par_chunks(nflat)).for_each(|(o, f)| {
            for (orow, frow) in o.chunks_mut(ow).zip(f.chunks(geo.pwq)) {
                orow.copy_from_slice(&frow[..ow]);
                if tail_act {
                    a.act.apply_slice(orow);
                }
            }
        });
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::{Window, conv};

    /// Against the im2col + gemm path on odd shapes: channel counts off the 8-row tile, planes
    /// off the 48-column tile, padding, strides, dilations, groups, every activation kind.
    #[test]
    fn direct_matches_im2col() {
        if !available() {
            return;
        }
        let mut seed = 5u64;
        let mut rnd = move || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) as usize
        };
        let acts = [Activation::None, Activation::Relu, Activation::Silu, Activation::Clip(-0.5, 0.5)];
        for case in 0..250 {
            let groups = [1, 1, 1, 2, 3][case % 5];
            let (cg, mg) = (1 + rnd() % 13, 1 + rnd() % 19);
            let (n, h, w) = (1 + case % 2, 1 + rnd() % 23, 1 + rnd() % 31);
            let (kh, kw) = (1 + rnd() % 4, 1 + rnd() % 4);
            let win = Window {
                kh,
                kw,
                sh: 1 + rnd() % 3,
                sw: 1 + rnd() % 3,
                dh: 1 + rnd() % 2,
                dw: 1 + rnd() % 2,
                pt: rnd() % 3,
                pl: rnd() % 3,
                pb: rnd() % 3,
                pr: rnd() % 3,
            };
            let (c, m) = (cg * groups, mg * groups);
            let oh = conv::out_size(h, kh, win.sh, win.dh, win.pt, win.pb);
            let ow = conv::out_size(w, kw, win.sw, win.dw, win.pl, win.pr);
            if oh == 0 || ow == 0 {
                continue;
            }
            let mut data = |len: usize| (0..len).map(|_| (rnd() % 2000) as f32 / 1000.0 - 1.0).collect::<Vec<_>>();
            let (x, weight, bias) = (data(n * c * h * w), data(m * cg * kh * kw), data(m));
            let args = ConvArgs {
                x: &x,
                n,
                c,
                h,
                w,
                weight: &weight,
                m,
                bias: if case % 3 == 0 { None } else { Some(&bias) },
                groups,
                win,
                act: acts[case % acts.len()],
                packed: None,
            };
            let mut want = vec![0f32; n * m * oh * ow];
            conv::grouped(&args, oh, ow, &mut want);
            let mut got = vec![f32::NAN; n * m * oh * ow];
            assert!(conv(&args, oh, ow, &mut got));
            for (i, (a, b)) in want.iter().zip(&got).enumerate() {
                assert!((a - b).abs() <= 1e-4, "case {case} {win:?} {h}x{w} c={c} m={m} g={groups} at {i}: {a} vs {b}");
            }
        }
    }
}

#[cfg(test)]
mod timing {
    use super::*;
    use crate::kernels::{Window, conv};

    /// Minimum-of-N times of the direct kernel and im2col + gemm on the real models' shapes
    /// (`cargo test --release -p flywheel-runtime --lib direct_vs_im2col -- --ignored --nocapture`);
    /// the minimum, since the shared machine's load only ever adds time.
    #[test]
    #[ignore]
    fn direct_vs_im2col() {
        // (c, m, h, k, stride, pad)
        let shapes = [
            (3, 64, 224, 7, 2, 3),
            (3, 16, 320, 3, 2, 1),
            (64, 64, 56, 3, 1, 1),
            (128, 128, 28, 3, 1, 1),
            (256, 256, 14, 3, 1, 1),
            (512, 512, 7, 3, 1, 1),
            (128, 32, 56, 3, 1, 1),
            (32, 32, 80, 3, 1, 1),
            (16, 16, 160, 3, 1, 1),
            (64, 64, 80, 3, 2, 1),
            (256, 64, 56, 1, 1, 0),
            (1024, 256, 14, 1, 1, 0),
            (64, 256, 56, 1, 1, 0),
        ];
        for (c, m, h, k, s, p) in shapes {
            let win = Window { kh: k, kw: k, sh: s, sw: s, dh: 1, dw: 1, pt: p, pl: p, pb: p, pr: p };
            let x: Vec<f32> = (0..c * h * h).map(|i| (i % 17) as f32 * 0.1).collect();
            let w: Vec<f32> = (0..m * c * k * k).map(|i| (i % 13) as f32 * 0.01).collect();
            let cache = conv::Packed::new();
            let args = ConvArgs {
                x: &x,
                n: 1,
                c,
                h,
                w: h,
                weight: &w,
                m,
                bias: None,
                groups: 1,
                win,
                act: Activation::Relu,
                packed: Some(&cache),
            };
            let oh = conv::out_size(h, k, s, 1, p, p);
            let mut out = vec![0f32; m * oh * oh];
            let mut time = |f: &mut dyn FnMut(&mut [f32])| {
                let mut best = f64::MAX;
                for _ in 0..15 {
                    let t = std::time::Instant::now();
                    f(&mut out);
                    best = best.min(t.elapsed().as_secs_f64() * 1e3);
                }
                best
            };
            let d = time(&mut |o| {
                conv(&args, oh, oh, o);
            });
            let g = time(&mut |o| conv::grouped(&args, oh, oh, o));
            let gflop = 2.0 * (m * c * k * k * oh * oh) as f64 / 1e9;
            println!(
                "c{c:>4} m{m:>4} {h:>3}x{h:<3} k{k} s{s}: direct {d:6.3} ms ({:5.0} GFLOP/s)  im2col+gemm {g:6.3} ms ({:5.0} GFLOP/s)  {:.2}",
                gflop / d * 1e3,
                gflop / g * 1e3,
                d / g
            );
        }
    }
}
