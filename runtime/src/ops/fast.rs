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
}
