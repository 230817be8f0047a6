//! Inference fast paths for element-wise ops on contiguous f32 tensors that do not track
//! gradients: one pass over the data, split across threads, instead of candle's chains of
//! generic kernels (HardSigmoid alone is affine + clamp = three passes there).

use super::elementwise::{Binary, Unary};
use crate::kernels::Activation;
use candle_core::{CpuStorage, DType, Result, Storage, Tensor};
use rayon::prelude::*;

const CHUNK: usize = 1 << 15;

/// Borrow the f32 data of a contiguous CPU tensor (None when it is not one).
pub fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Option<R> {
    if t.dtype() != DType::F32 {
        return None;
    }
    let (s, l) = t.storage_and_layout();
    match (&*s, l.contiguous_offsets()) {
        // An empty view (e.g. the rows a NonMaxSuppression kept when it kept none) may start
        // past the end of an empty buffer.
        (Storage::Cpu(CpuStorage::F32(_)), Some((a, b))) if a == b => Some(f(&[])),
        (Storage::Cpu(CpuStorage::F32(v)), Some((a, b))) => Some(f(&v[a..b])),
        _ => None,
    }
}

/// f32 data of any tensor, borrowed when possible, copied otherwise.
pub fn f32_data<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let mut f = Some(f);
    if let Some(r) = with_f32(t, |v| (f.take().expect("once"))(v)) {
        return Ok(r);
    }
    let v = t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
    Ok((f.take().expect("once"))(&v))
}

fn activation(u: Unary) -> Option<Activation> {
    Some(match u {
        Unary::Relu => Activation::Relu,
        Unary::Sigmoid => Activation::Sigmoid,
        Unary::LeakyRelu(a) => Activation::LeakyRelu(a),
        Unary::HardSigmoid(a, b) => Activation::HardSigmoid(a, b),
        Unary::HardSwish => Activation::HardSwish,
        _ => return None,
    })
}

pub fn map_activation(x: &Tensor, act: Activation) -> Option<Result<Tensor>> {
    if x.track_op() {
        return None;
    }
    with_f32(x, |v| {
        let mut out = v.to_vec();
        out.par_chunks_mut(CHUNK).for_each(|c| act.apply_slice(c));
        Tensor::from_vec(out, x.shape(), x.device())
    })
}

pub fn unary(u: Unary, x: &Tensor) -> Option<Result<Tensor>> {
    map_activation(x, activation(u)?)
}

/// How the smaller operand repeats over the larger: every element of `small` covers `inner`
/// consecutive elements of the output, cycling with period small.len().
fn repeat_pattern(big: &[usize], small: &[usize]) -> Option<usize> {
    if small.len() > big.len() {
        return None;
    }
    let mut padded = vec![1usize; big.len() - small.len()];
    padded.extend_from_slice(small);
    // small = [1.., big[i..j], 1..]
    let first = padded.iter().position(|&d| d != 1).unwrap_or(big.len());
    let last = padded.iter().rposition(|&d| d != 1).map_or(first, |p| p + 1);
    if (first..last).any(|i| padded[i] != big[i]) {
        return None;
    }
    Some(big[last..].iter().product())
}

pub fn binary(op: Binary, a: &Tensor, b: &Tensor) -> Option<Result<Tensor>> {
    // One monomorphised loop per op so the element function is inlined and vectorised.
    match op {
        Binary::Add => binary_with(a, b, |x, y| x + y),
        Binary::Sub => binary_with(a, b, |x, y| x - y),
        Binary::Mul => binary_with(a, b, |x, y| x * y),
        Binary::Div => binary_with(a, b, |x, y| x / y),
        _ => None,
    }
}

/// max(a + b, 0) of two f32 tensors of one shape (a residual sum and its Relu).
pub fn add_relu(a: &Tensor, b: &Tensor) -> Option<Result<Tensor>> {
    if a.dims() != b.dims() {
        return None;
    }
    binary_with(a, b, |x, y| (x + y).max(0.0))
}

fn binary_with(a: &Tensor, b: &Tensor, f: impl Fn(f32, f32) -> f32 + Sync) -> Option<Result<Tensor>> {
    if a.track_op() || b.track_op() {
        return None;
    }
    let (big_is_a, big, small) = if a.elem_count() >= b.elem_count() { (true, a, b) } else { (false, b, a) };
    let inner = repeat_pattern(big.dims(), small.dims())?;
    let out_shape = big.shape().clone();
    with_f32(big, |bv| {
        with_f32(small, |sv| {
            let mut out = vec![0f32; bv.len()];
            let slen = sv.len().max(1);
            out.par_chunks_mut(CHUNK).enumerate().for_each(|(ci, o)| {
                let base = ci * CHUNK;
                if sv.len() == bv.len() {
                    let (xs, ys) = if big_is_a { (&bv[base..], &sv[base..]) } else { (&sv[base..], &bv[base..]) };
                    for ((ov, x), y) in o.iter_mut().zip(xs).zip(ys) {
                        *ov = f(*x, *y);
                    }
                    return;
                }
                // Runs of `inner` outputs share one element of the small operand.
                let mut i = base;
                let end = base + o.len();
                while i < end {
                    let run_end = ((i / inner) + 1) * inner;
                    let stop = run_end.min(end);
                    let s = sv[(i / inner) % slen];
                    let dst = &mut o[i - base..stop - base];
                    let src = &bv[i..stop];
                    if big_is_a {
                        for (ov, x) in dst.iter_mut().zip(src) {
                            *ov = f(*x, s);
                        }
                    } else {
                        for (ov, x) in dst.iter_mut().zip(src) {
                            *ov = f(s, *x);
                        }
                    }
                    i = stop;
                }
            });
            Tensor::from_vec(out, out_shape.clone(), big.device())
        })
    })
    .flatten()
}

/// Inference BatchNormalization (or any per-channel affine map) of a contiguous f32 tensor
/// [N, C, ...]: y = x * a[c] + b[c] in one pass (rounded like candle's separate multiply and
/// add), planes split across threads.
pub fn channel_affine(x: &Tensor, a: &Tensor, b: &Tensor) -> Option<Result<Tensor>> {
    channel_affine_act(x, a, b, Activation::None)
}

/// `channel_affine` with an activation applied to each plane while it is in cache.
pub fn channel_affine_act(x: &Tensor, a: &Tensor, b: &Tensor, act: Activation) -> Option<Result<Tensor>> {
    if x.track_op() || a.track_op() || b.track_op() || x.rank() < 2 {
        return None;
    }
    let c = x.dims()[1];
    let plane: usize = x.dims()[2..].iter().product();
    if a.elem_count() != c || b.elem_count() != c || plane == 0 {
        return None;
    }
    let a = a.to_dtype(DType::F32).ok()?.flatten_all().ok()?.to_vec1::<f32>().ok()?;
    let b = b.to_dtype(DType::F32).ok()?.flatten_all().ok()?.to_vec1::<f32>().ok()?;
    with_f32(x, |v| {
        let mut out = vec![0f32; v.len()];
        let planes = (CHUNK / plane).max(1);
        out.par_chunks_mut(planes * plane).zip(v.par_chunks(planes * plane)).enumerate().for_each(|(ci, (o, x))| {
            for (pi, (o, x)) in o.chunks_mut(plane).zip(x.chunks(plane)).enumerate() {
                let ch = (ci * planes + pi) % c;
                let (a, b) = (a[ch], b[ch]);
                for (o, &x) in o.iter_mut().zip(x) {
                    *o = x * a + b;
                }
                act.apply_slice(o);
            }
        });
        Tensor::from_vec(out, x.shape(), x.device())
    })
}

/// Sum of several f32 tensors, left to right like onnxruntime, each step one fused pass.
pub fn sum(xs: &[&Tensor]) -> Option<Result<Tensor>> {
    let (first, rest) = xs.split_first()?;
    if rest.is_empty() || xs.iter().any(|x| x.track_op() || x.dtype() != DType::F32) {
        return None;
    }
    let mut acc = (*first).clone();
    for x in rest {
        acc = match binary(Binary::Add, &acc, x)? {
            Ok(t) => t,
            Err(e) => return Some(Err(e)),
        };
    }
    Some(Ok(acc))
}

/// Gemm on f32 matrices: the transposes are read through strides (no copy of a transposed
/// weight on every run), C broadcast into the destination first, alpha applied in the product.
pub fn gemm(
    a: &Tensor,
    b: &Tensor,
    c: Option<&Tensor>,
    (trans_a, trans_b): (bool, bool),
    alpha: f32,
    beta: f32,
) -> Option<Result<Tensor>> {
    if a.track_op() || b.track_op() || c.is_some_and(|c| c.track_op() || c.dtype() != DType::F32) {
        return None;
    }
    let (&[ar, ac], &[br, bc]) = (a.dims(), b.dims()) else {
        return None;
    };
    let (m, k) = if trans_a { (ac, ar) } else { (ar, ac) };
    let (k2, n) = if trans_b { (bc, br) } else { (br, bc) };
    if k != k2 || m == 0 || n == 0 || k == 0 {
        return None;
    }
    let mut dst = match c {
        Some(c) => {
            let filled = c
                .broadcast_as((m, n))
                .and_then(|c| c.contiguous())
                .and_then(|c| c.flatten_all())
                .and_then(|c| c.to_vec1::<f32>());
            match filled {
                Ok(mut v) => {
                    if beta != 1.0 {
                        v.iter_mut().for_each(|x| *x *= beta);
                    }
                    v
                }
                Err(_) => return None,
            }
        }
        None => vec![0f32; m * n],
    };
    let read_dst = c.is_some();
    with_f32(a, |av| {
        with_f32(b, |bv| {
            let (lhs_cs, lhs_rs) = if trans_a { (m as isize, 1) } else { (1, k as isize) };
            let (rhs_cs, rhs_rs) = if trans_b { (k as isize, 1) } else { (1, n as isize) };
            let par = if crate::kernels::threads() > 1 && m * n * k > 64 * 64 * 64 {
                gemm::Parallelism::Rayon(crate::kernels::threads())
            } else {
                gemm::Parallelism::None
            };
            // SAFETY: av holds m*k and bv k*n elements (2-D contiguous tensors of the checked
            // shapes), read through strides describing exactly those layouts; dst holds m*n.
            unsafe {
                gemm::gemm(
                    m,
                    n,
                    k,
                    dst.as_mut_ptr(),
                    1,
                    n as isize,
                    read_dst,
                    av.as_ptr(),
                    lhs_cs,
                    lhs_rs,
                    bv.as_ptr(),
                    rhs_cs,
                    rhs_rs,
                    1.0,
                    alpha,
                    false,
                    false,
                    false,
                    par,
                );
            }
        })
    })?;
    Some(Tensor::from_vec(dst, (m, n), a.device()))
}

/// e^x in f32 with fused multiply-adds, branch-free so a loop of it vectorises: x = n ln2 + r
/// with |r| <= ln2/2 (ln2 split in two parts, Cody-Waite), e^r by a degree-6 polynomial (the
/// Taylor coefficients, relative error below 2e-7 on that interval), times 2^n applied as two
/// powers of two built in the exponent bits (so 2^128 near the top of the range and the
/// subnormal results near the bottom stay representable). Above ln(f32::MAX) the result is
/// +inf, below -104 (where e^x rounds to 0) 0; NaN stays NaN.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const HI: f32 = 88.722_84;
    const LO: f32 = -104.0;
    let v = x.clamp(LO, HI);
    let n = (v * LOG2E).round();
    let r = n.mul_add(-LN2_LO, n.mul_add(-LN2_HI, v));
    let p = (1.0 / 720.0f32)
        .mul_add(r, 1.0 / 120.0)
        .mul_add(r, 1.0 / 24.0)
        .mul_add(r, 1.0 / 6.0)
        .mul_add(r, 0.5)
        .mul_add(r, 1.0)
        .mul_add(r, 1.0);
    let n = n as i32;
    let n1 = n >> 1;
    let pow2 = |e: i32| f32::from_bits(((e + 127) as u32) << 23);
    let y = p * pow2(n1) * pow2(n - n1);
    if x < LO {
        0.0
    } else if x > HI {
        f32::INFINITY
    } else {
        y
    }
}

/// Softmax / LogSoftmax of a contiguous f32 tensor viewed as [outer, n, inner], normalised over
/// n, in one pass per column block (max, exp and sum, divide) instead of candle's chain of
/// transposes and generic kernels. Columns are processed a block of contiguous inner elements
/// at a time, so the loops vectorise along the inner dimension; blocks run in parallel.
pub fn softmax(x: &Tensor, outer: usize, n: usize, inner: usize, log: bool) -> Option<Result<Tensor>> {
    if x.track_op() || outer * n * inner != x.elem_count() || n == 0 {
        return None;
    }
    with_f32(x, |v| {
        let mut out = vec![0f32; v.len()];
        if inner == 1 {
            // Rows along the last axis: contiguous, split across threads.
            let rows = (4096 / n).max(1) * n;
            out.par_chunks_mut(rows).zip(v.par_chunks(rows)).for_each(|(o, x)| {
                for (o, x) in o.chunks_mut(n).zip(x.chunks(n)) {
                    softmax_rows(x, o, log)
                }
            });
        } else {
            let blk = inner.min(BLOCK);
            let blocks = inner.div_ceil(blk);
            let ptr = OutPtr(out.as_mut_ptr());
            let ptr = &ptr;
            (0..outer * blocks).into_par_iter().for_each(|task| {
                let (o, b) = (task / blocks, task % blocks);
                let j0 = b * blk;
                let w = blk.min(inner - j0);
                let base = o * n * inner + j0;
                let src: Vec<&[f32]> = (0..n).map(|k| &v[base + k * inner..base + k * inner + w]).collect();
                // SAFETY: each task writes only the elements [base + k*inner, +w) for k < n of
                // its own (outer, column block), disjoint from every other task's; `out`
                // outlives the parallel loop.
                let mut dst: Vec<&mut [f32]> =
                    (0..n).map(|k| unsafe { std::slice::from_raw_parts_mut(ptr.0.add(base + k * inner), w) }).collect();
                softmax_columns(&src, &mut dst, log);
            });
        }
        Tensor::from_vec(out, x.shape(), x.device())
    })
}

const BLOCK: usize = 256;

struct OutPtr(*mut f32);
// SAFETY: used only to hand disjoint output ranges to parallel tasks.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

/// Runs `f` compiled for AVX2 + FMA when the CPU has them (the exp's `mul_add`s become single
/// instructions and the loops vectorise), portable otherwise.
#[inline(always)]
fn with_fma<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2,fma")]
        fn fast<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has the features `fast` is compiled for.
            return unsafe { fast(f) };
        }
    }
    f()
}

/// Max that lets a NaN through (the row's outputs are then NaN, as candle's chain gives).
#[inline(always)]
fn nan_max(m: f32, x: f32) -> f32 {
    if x > m || x.is_nan() { x } else { m }
}

/// Softmax over one contiguous row `x` into `o`.
fn softmax_rows(x: &[f32], o: &mut [f32], log: bool) {
    #[inline(always)]
    fn each(x: &[f32], o: &mut [f32], log: bool) {
        let m = x.iter().fold(f32::NEG_INFINITY, |m, &v| nan_max(m, v));
        let mut s = 0f32;
        for (o, &x) in o.iter_mut().zip(x) {
            let e = exp_f32(x - m);
            *o = e;
            s += e;
        }
        if log {
            let ls = s.ln();
            for (o, &x) in o.iter_mut().zip(x) {
                *o = (x - m) - ls;
            }
        } else {
            for o in o.iter_mut() {
                *o /= s;
            }
        }
    }
    with_fma(|| each(x, o, log))
}

/// Softmax down the columns of a block: `src[k]` / `dst[k]` are row k's `w` contiguous elements.
fn softmax_columns(src: &[&[f32]], dst: &mut [&mut [f32]], log: bool) {
    #[inline(always)]
    fn each(src: &[&[f32]], dst: &mut [&mut [f32]], log: bool) {
        let w = src[0].len();
        let mut m = [f32::NEG_INFINITY; BLOCK];
        let mut s = [0f32; BLOCK];
        let (m, s) = (&mut m[..w], &mut s[..w]);
        for row in src {
            for (m, &x) in m.iter_mut().zip(row.iter()) {
                *m = nan_max(*m, x);
            }
        }
        for (row, out) in src.iter().zip(dst.iter_mut()) {
            for ((o, &x), (s, &m)) in out.iter_mut().zip(row.iter()).zip(s.iter_mut().zip(m.iter())) {
                let e = exp_f32(x - m);
                *o = e;
                *s += e;
            }
        }
        if log {
            for s in s.iter_mut() {
                *s = s.ln();
            }
            for (row, out) in src.iter().zip(dst.iter_mut()) {
                for ((o, &x), (&s, &m)) in out.iter_mut().zip(row.iter()).zip(s.iter().zip(m.iter())) {
                    *o = (x - m) - s;
                }
            }
        } else {
            for out in dst.iter_mut() {
                for (o, &s) in out.iter_mut().zip(s.iter()) {
                    *o /= s;
                }
            }
        }
    }
    with_fma(|| each(src, dst, log))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn an_empty_view_past_the_end_of_an_empty_buffer_is_an_empty_slice() {
        // [1, 0, 4] boxes (none kept), then columns 2..4 (a Slice on the last axis).
        let kept = Tensor::zeros((1, 0, 4), DType::F32, &Device::Cpu).unwrap().narrow(2, 2, 2).unwrap();
        assert_eq!(with_f32(&kept, |v| v.len()), Some(0));
        let relu = unary(Unary::Relu, &kept).unwrap().unwrap();
        assert_eq!(relu.dims(), &[1, 0, 2]);
    }

    #[test]
    fn exp_is_within_two_ulp_of_the_exact_value_and_saturates() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.5 {
            let exact = (x as f64).exp();
            let got = exp_f32(x) as f64;
            worst = worst.max(((got - exact) / exact).abs());
            x += 0.0137;
        }
        assert!(worst < 2.5e-7, "relative error {worst:e}");
        assert_eq!(exp_f32(0.0), 1.0);
        assert_eq!(exp_f32(-1000.0), 0.0);
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_f32(1000.0), f32::INFINITY);
        assert!(exp_f32(f32::NAN).is_nan());
    }

    #[test]
    fn softmax_down_a_middle_axis_matches_candles_chain() {
        // A fixed pseudo-random input (an LCG, values in -9..9) so the comparison is repeatable.
        let mut state = 0x2545_f491_u32;
        let values: Vec<f32> = (0..2 * 5 * 3 * 300)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (state >> 8) as f32 / (1u32 << 24) as f32 * 18.0 - 9.0
            })
            .collect();
        let x = Tensor::from_vec(values, (2, 5, 3, 300), &Device::Cpu).unwrap();
        for (axis, log) in [(1usize, false), (1, true), (3, false), (3, true)] {
            let d = x.dims();
            let (outer, n, inner) = (d[..axis].iter().product(), d[axis], d[axis + 1..].iter().product::<usize>());
            let fast = softmax(&x, outer, n, inner, log).unwrap().unwrap();
            let t = x.transpose(axis, 3).unwrap().contiguous().unwrap();
            let m = t.max_keepdim(3).unwrap();
            let sh = t.broadcast_sub(&m).unwrap();
            let s = sh.exp().unwrap().sum_keepdim(3).unwrap();
            let want = if log {
                sh.broadcast_sub(&s.log().unwrap()).unwrap()
            } else {
                sh.exp().unwrap().broadcast_div(&s).unwrap()
            };
            let want = want.transpose(axis, 3).unwrap();
            // Relative to the value's size (log-softmax values reach -20, where an ulp is 2e-6).
            let scale = (want.abs().unwrap() + 1.0).unwrap();
            let diff = (fast - want).unwrap().abs().unwrap().div(&scale).unwrap();
            let diff = diff.flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
            assert!(diff < 1e-6, "axis {axis} log {log}: {diff:e}");
        }
    }
}
