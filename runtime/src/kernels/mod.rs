#![allow(clippy::too_many_arguments)]
//! Direct CPU kernels (f32, NCHW, contiguous) for the ops where candle's generic path is slow or
//! too restrictive: convolution (grouped, depthwise, asymmetric pads, unequal strides),
//! transposed convolution and pooling. They run on rayon across batch items and channels.

pub mod conv;
#[cfg(target_arch = "x86_64")]
mod direct;
pub mod nd;
pub mod pool;
#[cfg(target_arch = "x86_64")]
mod window;

/// 2-D window geometry shared by convolution and pooling (1-D ops use h = 1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    pub dh: usize,
    pub dw: usize,
    /// Padding: top, left, bottom, right.
    pub pt: usize,
    pub pl: usize,
    pub pb: usize,
    pub pr: usize,
}

/// An activation applied in place after a kernel (fused at plan time).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    None,
    Relu,
    LeakyRelu(f32),
    Clip(f32, f32),
    Sigmoid,
    HardSigmoid(f32, f32),
    HardSwish,
    /// x * sigmoid(x)
    Silu,
    /// x * hard_sigmoid(x; alpha, beta) (HardSwish as exported before opset 14)
    MulHardSigmoid(f32, f32),
}

impl Activation {
    #[inline]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Activation::None => x,
            Activation::Relu => x.max(0.0),
            Activation::LeakyRelu(a) => {
                if x >= 0.0 {
                    x
                } else {
                    x * a
                }
            }
            Activation::Clip(lo, hi) => x.max(lo).min(hi),
            Activation::Sigmoid => sigmoid(x),
            Activation::HardSigmoid(a, b) => (a * x + b).clamp(0.0, 1.0),
            Activation::HardSwish => x * (x / 6.0 + 0.5).clamp(0.0, 1.0),
            Activation::Silu => x * sigmoid(x),
            Activation::MulHardSigmoid(a, b) => x * (a * x + b).clamp(0.0, 1.0),
        }
    }
    pub fn apply_slice(self, xs: &mut [f32]) {
        match self {
            Activation::None => {}
            Activation::Sigmoid => sigmoid_slice(xs, false),
            Activation::Silu => sigmoid_slice(xs, true),
            _ => {
                for x in xs {
                    *x = self.apply(*x);
                }
            }
        }
    }
}

/// The logistic function as onnxruntime computes it on CPUs (MLAS, after Eigen): x clamped to
/// [-18, 18], an odd degree-9 over an even degree-10 polynomial in x, both evaluated by fused
/// multiply-adds (onnxruntime's kernel on x86-64 CPUs with FMA3, and on ARM64), p / q + 0.5,
/// negatives raised to 0; NaN stays NaN. Absolute error below 2e-7 (three units in the last
/// place above 0.5; it can exceed 1 by one unit near x = 17.84, as onnxruntime's does).
///
/// Bit-identical results matter in quantized models: a sigmoid one unit away moves an
/// activation lying on a rounding boundary by a whole quantum, and such flips compound through
/// the following layers (a YOLOv8n quantized by onnxruntime.quantization moved its boxes by 7
/// pixels with an exactly rounded sigmoid).
#[inline(always)]
#[allow(clippy::excessive_precision)] // Eigen's coefficients as published, rounded to f32 here
pub fn sigmoid(x: f32) -> f32 {
    const ALPHA: [f32; 5] =
        [4.37031012579801e-11, 1.15627324459942e-07, 6.08574864600143e-05, 8.51377133304701e-03, 2.48287947061529e-01];
    const BETA: [f32; 6] = [
        6.10247389755681e-13,
        5.76102136993427e-09,
        6.29106785017040e-06,
        1.70198817374094e-03,
        1.16817656904453e-01,
        9.93151921023180e-01,
    ];
    // clamp, not min/max: a NaN input passes through.
    let v = x.clamp(-18.0, 18.0);
    let v2 = v * v;
    let p = ALPHA[1..].iter().fold(ALPHA[0], |p, &a| p.mul_add(v2, a));
    let q = BETA[1..].iter().fold(BETA[0], |q, &b| q.mul_add(v2, b));
    let y = v * p / q + 0.5;
    if y < 0.0 { 0.0 } else { y }
}

/// `sigmoid` over a slice in place, or with `times_x` SiLU (x * sigmoid(x), the product rounded
/// like onnxruntime's separate Mul). Compiled for fused multiply-add instructions when the CPU
/// has them: `mul_add` is exact either way, a slower library call without them.
pub fn sigmoid_slice(xs: &mut [f32], times_x: bool) {
    #[inline(always)]
    fn each(xs: &mut [f32], times_x: bool) {
        if times_x {
            xs.iter_mut().for_each(|x| *x *= sigmoid(*x));
        } else {
            xs.iter_mut().for_each(|x| *x = sigmoid(*x));
        }
    }
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2,fma")]
        fn fast(xs: &mut [f32], times_x: bool) {
            each(xs, times_x)
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has the features `fast` is compiled for.
            return unsafe { fast(xs, times_x) };
        }
    }
    each(xs, times_x)
}

/// Element type of the convolution kernel: f32 (inference), or f64 for the integer convolutions,
/// whose integer operands and sums f64 represents exactly (|sum| < 2^53).
pub trait Elem:
    Copy
    + Default
    + Send
    + Sync
    + 'static
    + std::ops::Add<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::AddAssign
{
    const ONE: Self;
    /// Apply a fused activation in place (only f32 kernels are given one).
    fn activate(act: Activation, xs: &mut [Self]);
    /// Run `f` with this thread's unfold buffer: kept across calls, since re-allocating it would
    /// page-fault on every run.
    fn with_col<R>(f: impl FnOnce(&mut Vec<Self>) -> R) -> R;
    /// dst[j] = src[j * stride] (im2col and padded planes of strided windows).
    fn copy_strided(dst: &mut [Self], src: &[Self], stride: usize) {
        for (d, s) in dst.iter_mut().zip(src.iter().step_by(stride)) {
            *d = *s;
        }
    }
    /// A faster dense/grouped convolution for this type and CPU, if there is one (false: none ran).
    fn direct_fast(_a: &conv::ConvArgs<Self>, _oh: usize, _ow: usize, _out: &mut [Self]) -> bool {
        false
    }
    /// A faster depthwise kernel for this type and CPU, if there is one (false: none ran).
    fn depthwise_fast(_a: &conv::ConvArgs<Self>, _oh: usize, _ow: usize, _out: &mut [Self]) -> bool {
        false
    }
}

impl Elem for f32 {
    const ONE: Self = 1.0;
    fn activate(act: Activation, xs: &mut [Self]) {
        act.apply_slice(xs)
    }
    fn with_col<R>(f: impl FnOnce(&mut Vec<Self>) -> R) -> R {
        thread_local! {
            static COL: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        COL.with(|c| f(&mut c.borrow_mut()))
    }
    fn copy_strided(dst: &mut [Self], src: &[Self], stride: usize) {
        copy_strided_f32(dst, src, stride)
    }
    fn direct_fast(a: &conv::ConvArgs<Self>, oh: usize, ow: usize, out: &mut [Self]) -> bool {
        #[cfg(target_arch = "x86_64")]
        return use_direct() && direct::suits(a, oh, ow) && direct::conv(a, oh, ow, out);
        #[cfg(not(target_arch = "x86_64"))]
        false
    }
    fn depthwise_fast(a: &conv::ConvArgs<Self>, oh: usize, ow: usize, out: &mut [Self]) -> bool {
        #[cfg(target_arch = "x86_64")]
        return window::depthwise(a, oh, ow, out);
        #[cfg(not(target_arch = "x86_64"))]
        false
    }
}

impl Elem for f64 {
    const ONE: Self = 1.0;
    fn activate(act: Activation, _xs: &mut [Self]) {
        assert_eq!(act, Activation::None, "activations are only fused into f32 convolutions");
    }
    fn with_col<R>(f: impl FnOnce(&mut Vec<Self>) -> R) -> R {
        f(&mut Vec::new())
    }
}

/// dst[j] = src[j * stride]. Stride 2 (every strided convolution and pooling layer of the real
/// models) deinterleaves 32 floats per step with one AVX-512 permute, where the scalar loop
/// costs as much as the convolution's multiply on a 7x7 stride-2 stem.
pub fn copy_strided_f32(dst: &mut [f32], src: &[f32], stride: usize) {
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if stride == 2 && std::is_x86_feature_detected!("avx512f") {
        #[target_feature(enable = "avx512f")]
        fn every_other(dst: &mut [f32], src: &[f32]) -> usize {
            use std::arch::x86_64::*;
            let idx = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
            let mut j = 0;
            while j + 16 <= dst.len() && 2 * j + 32 <= src.len() {
                // SAFETY: src[2j..2j+32] and dst[j..j+16] are in bounds (loop condition).
                unsafe {
                    let a = _mm512_loadu_ps(src.as_ptr().add(2 * j));
                    let b = _mm512_loadu_ps(src.as_ptr().add(2 * j + 16));
                    _mm512_storeu_ps(dst.as_mut_ptr().add(j), _mm512_permutex2var_ps(a, idx, b));
                }
                j += 16;
            }
            j
        }
        // SAFETY: the CPU has AVX-512F.
        done = unsafe { every_other(dst, src) };
    }
    for (d, s) in dst[done..].iter_mut().zip(src[(done * stride).min(src.len())..].iter().step_by(stride)) {
        *d = *s;
    }
}

/// The direct convolution kernel unless FLYWHEEL_RUNTIME_DIRECT=0 (to compare with im2col + gemm).
fn use_direct() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("FLYWHEEL_RUNTIME_DIRECT").map_or(true, |v| v != "0"))
}

/// Threads the kernels may use (rayon's pool size, which honours RAYON_NUM_THREADS).
pub fn threads() -> usize {
    rayon::current_num_threads().max(1)
}

/// Row-major single-precision matrix product dst[m,n] = lhs[m,k] * rhs[k,n] (+ dst if accumulate).
pub fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    lhs: &[f32],
    rhs: &[f32],
    dst: &mut [f32],
    accumulate: bool,
    parallel: bool,
) {
    debug_assert!(lhs.len() >= m * k && rhs.len() >= k * n && dst.len() >= m * n);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst[..m * n].fill(0.0);
        }
        return;
    }
    let par = if parallel && threads() > 1 && m * n * k > 64 * 64 * 64 {
        gemm::Parallelism::Rayon(threads())
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the slices hold at least m*k, k*n and m*n elements (checked above) and the strides
    // describe contiguous row-major matrices of those sizes.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.as_ptr(),
            1,
            k as isize,
            rhs.as_ptr(),
            1,
            n as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// onnxruntime 1.32's Sigmoid on x86-64 (AVX2/FMA3), as bit patterns: inputs where it
    /// differs from the exactly rounded logistic, the one above 1, the clamps and 0.
    const ONNXRUNTIME: &[(u32, u32)] = &[
        (0x3fb0f069, 0x3f4ca340),
        (0xc0a6cddb, 0x3bb187c0),
        (0x3fe48b35, 0x3f5b3b5c),
        (0xc00975c4, 0x3dd616d8),
        (0xc03c8841, 0x3d4c8838),
        (0xbf26d1de, 0x3eaf6be8),
        (0x418ec083, 0x3f800001),
        (0x00000000, 0x3f000000),
        (0xc2c80000, 0x00000000),
        (0x42c80000, 0x3f800000),
        (0x3f800000, 0x3f3b26a8),
    ];

    #[test]
    fn strided_copy_matches_scalar() {
        let src: Vec<f32> = (0..200).map(|i| i as f32).collect();
        for stride in 1..4 {
            for len in [0, 1, 15, 16, 17, 31, 32, 33, 50, 66] {
                let have = (src.len() - 1) / stride + 1;
                let n = len.min(have);
                for start in [0, 1, 3] {
                    let s = &src[start..(start + (n.max(1) - 1) * stride + 1).min(src.len())];
                    let n = n.min((s.len() - 1) / stride + 1);
                    let mut dst = vec![-1f32; n];
                    copy_strided_f32(&mut dst, s, stride);
                    let want: Vec<f32> = (0..n).map(|j| s[j * stride]).collect();
                    assert_eq!(dst, want, "stride {stride} len {n} start {start}");
                }
            }
        }
    }

    #[test]
    fn sigmoid_is_onnxruntimes_bit_for_bit() {
        let xs: Vec<f32> = ONNXRUNTIME.iter().map(|&(x, _)| f32::from_bits(x)).collect();
        let mut slice = xs.clone();
        sigmoid_slice(&mut slice, false);
        for ((&(x, want), &got), &x_f) in ONNXRUNTIME.iter().zip(&slice).zip(&xs) {
            assert_eq!(
                got.to_bits(),
                want,
                "sigmoid({x_f}) (0x{x:08x}): {got} vs onnxruntime {}",
                f32::from_bits(want)
            );
            assert_eq!(sigmoid(x_f).to_bits(), want, "scalar sigmoid({x_f})");
        }
        assert!(sigmoid(f32::NAN).is_nan());
        // SiLU rounds the product of x and the sigmoid, like Sigmoid followed by Mul.
        let mut silu = xs.clone();
        sigmoid_slice(&mut silu, true);
        for ((&x, &s), &y) in xs.iter().zip(&slice).zip(&silu) {
            assert_eq!(y.to_bits(), (x * s).to_bits());
        }
    }
}
