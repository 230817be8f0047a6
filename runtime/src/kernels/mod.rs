#![allow(clippy::too_many_arguments)]
//! Direct CPU kernels (f32, NCHW, contiguous) for the ops where candle's generic path is slow or
//! too restrictive: convolution (grouped, depthwise, asymmetric pads, unequal strides),
//! transposed convolution and pooling. They run on rayon across batch items and channels.

pub mod conv;
pub mod nd;
pub mod pool;

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
            Activation::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Activation::HardSigmoid(a, b) => (a * x + b).clamp(0.0, 1.0),
            Activation::HardSwish => x * (x / 6.0 + 0.5).clamp(0.0, 1.0),
            Activation::Silu => x / (1.0 + (-x).exp()),
            Activation::MulHardSigmoid(a, b) => x * (a * x + b).clamp(0.0, 1.0),
        }
    }
    pub fn apply_slice(self, xs: &mut [f32]) {
        if self != Activation::None {
            for x in xs {
                *x = self.apply(*x);
            }
        }
    }
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
