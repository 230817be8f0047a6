//! Low-precision element types candle has no dtype for: the float8 variants (E4M3FN, E4M3FNUZ,
//! E5M2, E5M2FNUZ), float4 E2M1 and float8 E8M0 (values held exactly in F32), and the packed
//! 4-bit / 2-bit integers (held in I16 when signed, U8 when unsigned). This module decodes them
//! from TensorProtos and implements Cast *to* them with ONNX's rounding rules (round to nearest
//! even, `saturate`), matching the ONNX reference implementation (ml_dtypes).

use super::narrow::Held;
use candle_core::{DType, Device, Result, Shape, Tensor, bail};

/// A small float format: mantissa bits, exponent of the smallest normal, largest finite value,
/// whether it has infinities, and whether it has a negative zero (the FNUZ variants do not).
struct Format {
    mant: i32,
    emin: i32,
    max: f64,
    inf: bool,
    neg_zero: bool,
    /// No NaN encoding at all (E2M1): NaN becomes a zero, out-of-range values saturate.
    no_nan: bool,
}

fn format(t: Held) -> Option<Format> {
    let f = |mant, emin, max, inf, neg_zero, no_nan| Some(Format { mant, emin, max, inf, neg_zero, no_nan });
    match t {
        Held::F8E4M3FN => f(3, -6, 448.0, false, true, false),
        Held::F8E4M3FNUZ => f(3, -7, 240.0, false, false, false),
        Held::F8E5M2 => f(2, -14, 57344.0, true, true, false),
        Held::F8E5M2FNUZ => f(2, -15, 57344.0, false, false, false),
        Held::F4E2M1 => f(1, 0, 6.0, false, true, true),
        _ => None,
    }
}

/// Round `x` to the format (round to nearest, ties to even). With `saturate` (and always for
/// E2M1, which has neither NaN nor infinity) out-of-range values and infinities become ±max;
/// otherwise infinity where the format has it, else NaN.
fn quantize(x: f64, f: &Format, saturate: bool) -> f64 {
    let neg = x.is_sign_negative();
    let signed = |v: f64| if neg { -v } else { v };
    if x.is_nan() {
        // ml_dtypes maps NaN to a zero of the opposite sign for formats without NaN.
        return if f.no_nan { if neg { 0.0 } else { -0.0 } } else { f64::NAN };
    }
    let overflow = || {
        if saturate || f.no_nan {
            signed(f.max)
        } else if f.inf {
            signed(f64::INFINITY)
        } else {
            f64::NAN
        }
    };
    let a = x.abs();
    if a.is_infinite() || (saturate && a > f.max) {
        return overflow();
    }
    if a == 0.0 {
        return if neg && f.neg_zero { -0.0 } else { 0.0 };
    }
    // Exponent of a (f64 subnormals are far below every format's range: they round to zero).
    let e = (((a.to_bits() >> 52) & 0x7ff) as i32 - 1023).max(f.emin);
    let quantum = 2f64.powi(e - f.mant);
    let r = (a / quantum).round_ties_even() * quantum;
    if r > f.max {
        return overflow();
    }
    if r == 0.0 {
        return if neg && f.neg_zero { -0.0 } else { 0.0 };
    }
    signed(r)
}

/// Rounding of a Cast to float8 E8M0 (the `round_mode` attribute).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum E8m0Round {
    Up,
    Down,
    Nearest,
}

/// float32 -> E8M0 code with saturation, as the ONNX reference (`to_float8e8m0`) computes it on
/// the float32 bits (the sign is ignored: negative inputs are unspecified); ±Inf saturate to
/// the largest value as the spec's table requires.
fn e8m0_code(x: f32, round: E8m0Round) -> u8 {
    let bits = x.to_bits();
    let exp = (bits >> 23) & 0xff;
    if exp == 0xff {
        return if x.is_nan() { 0xff } else { 0xfe };
    }
    let up = match round {
        Round::Down => false,
        Round::Up => bits & 0x7f_ffff != 0,
        Round::Nearest => {
            let (g, r, s) = (bits & 0x40_0000 != 0, bits & 0x20_0000 != 0, bits & 0x1f_ffff != 0);
            g && (r || s || exp > 0)
        }
    };
    (if up && exp < 0xfe { exp + 1 } else { exp }) as u8
}
use E8m0Round as Round;

fn e8m0_value(code: u8) -> f32 {
    if code == 0xff { f32::NAN } else { 2f64.powi(code as i32 - 127) as f32 }
}

/// Decode one float8 / float4 code (E8M0 excluded) into its value.
fn decode_float(t: Held, code: u8) -> f32 {
    let (ebits, mant, bias, nan_fnuz) = match t {
        Held::F8E4M3FN => (4, 3, 7, false),
        Held::F8E4M3FNUZ => (4, 3, 8, true),
        Held::F8E5M2 => (5, 2, 15, false),
        Held::F8E5M2FNUZ => (5, 2, 16, true),
        _ => (2, 1, 1, false), // F4E2M1
    };
    let width = 1 + ebits + mant;
    let sign = (code >> (width - 1)) & 1 == 1;
    let e = ((code >> mant) & ((1 << ebits) - 1)) as i32;
    let m = (code & ((1 << mant) - 1)) as i32;
    if nan_fnuz && code == 0x80 {
        return f32::NAN;
    }
    match t {
        Held::F8E4M3FN if e == 15 && m == 7 => return f32::NAN,
        Held::F8E5M2 if e == 31 => {
            return if m == 0 { if sign { f32::NEG_INFINITY } else { f32::INFINITY } } else { f32::NAN };
        }
        _ => {}
    }
    let v = if e == 0 {
        m as f64 * 2f64.powi(1 - bias - mant)
    } else {
        (1.0 + m as f64 / (1 << mant) as f64) * 2f64.powi(e - bias)
    };
    (if sign { -v } else { v }) as f32
}

/// Decode the raw bytes (or int32_data, one byte per entry) of a TensorProto of a low-precision type.
pub fn decode(
    t: Held,
    raw: &[u8],
    int32_data: &[i32],
    n: usize,
    shape: &[usize],
) -> std::result::Result<Tensor, String> {
    let dev = &Device::Cpu;
    let bits = match t {
        Held::I4 | Held::U4 | Held::F4E2M1 => 4,
        Held::I2 | Held::U2 => 2,
        _ => 8,
    };
    // Without raw_data, int32_data holds one byte per entry: one 8-bit value, or the packed
    // 4-bit / 2-bit values of that byte (what onnx.helper.make_tensor writes).
    let bytes: Vec<u8> = if raw.is_empty() { int32_data.iter().map(|&v| v as u8).collect() } else { raw.to_vec() };
    let raw = bytes.as_slice();
    let codes: Vec<u8> = if bits == 8 {
        raw.to_vec()
    } else {
        let per = 8 / bits;
        if raw.len() != n.div_ceil(per) {
            return Err(format!("holds {} bytes but its shape {shape:?} needs {}", raw.len(), n.div_ceil(per)));
        }
        (0..n).map(|i| (raw[i / per] >> ((i % per) * bits)) & ((1u8 << bits) - 1)).collect()
    };
    if codes.len() != n {
        return Err(format!("holds {} values but its shape {shape:?} needs {n}", codes.len()));
    }
    let r = match t {
        Held::I4 => {
            Tensor::from_vec(codes.iter().map(|&c| ((c << 4) as i8 >> 4) as i16).collect::<Vec<_>>(), shape, dev)
        }
        Held::I2 => {
            Tensor::from_vec(codes.iter().map(|&c| ((c << 6) as i8 >> 6) as i16).collect::<Vec<_>>(), shape, dev)
        }
        Held::U4 | Held::U2 => Tensor::from_vec(codes, shape, dev),
        Held::F8E8M0 => Tensor::from_vec(codes.iter().map(|&c| e8m0_value(c)).collect::<Vec<_>>(), shape, dev),
        _ => Tensor::from_vec(codes.iter().map(|&c| decode_float(t, c)).collect::<Vec<_>>(), shape, dev),
    };
    r.map_err(|e| e.to_string())
}

/// Whether a held value is a value of the type (for inputs passed in by a caller).
pub fn representable(t: Held, v: f64) -> bool {
    match t {
        Held::F8E8M0 => v.is_nan() || (v > 0.0 && v.log2().fract() == 0.0 && (-127.0..=127.0).contains(&v.log2())),
        _ => match format(t) {
            Some(f) if v.is_nan() => !f.no_nan,
            Some(f) => {
                let q = quantize(v, &f, false);
                q == v && (q != 0.0 || f.neg_zero || v.is_sign_positive())
            }
            None => false,
        },
    }
}

/// Cast to a held type. `from` is the held type of the input (None for a regular candle value).
pub fn cast_to(x: &Tensor, from: Option<Held>, to: Held, saturate: bool, round: E8m0Round) -> Result<Tensor> {
    if x.track_op() {
        bail!("training through a Cast to {} is not supported", to.name());
    }
    let shape: Shape = x.shape().clone();
    let dev = x.device();
    let int_source = match from {
        Some(h) => h.is_int(),
        None => !x.dtype().is_float(),
    };
    if to.is_int() {
        let v: Vec<i128> = if int_source {
            match from {
                Some(h) => h.read(x)?,
                None => {
                    x.flatten_all()?.to_dtype(DType::I64)?.to_vec1::<i64>()?.into_iter().map(|v| v as i128).collect()
                }
            }
        } else {
            // Float to integer truncates toward zero; out-of-range values wrap (undefined in ONNX).
            super::floats(x)?.into_iter().map(|f| if f.is_nan() { 0 } else { f.trunc() as i128 }).collect()
        };
        return to.write(v.into_iter().map(|v| to.wrap(v)).collect(), &shape, dev);
    }
    let vals: Vec<f64> = if int_source {
        match from {
            Some(h) => h.read(x)?.into_iter().map(|v| v as f64).collect(),
            None => x.flatten_all()?.to_dtype(DType::I64)?.to_vec1::<i64>()?.into_iter().map(|v| v as f64).collect(),
        }
    } else {
        super::floats(x)?
    };
    let out: Vec<f32> = if to == Held::F8E8M0 {
        if !saturate {
            bail!("non-saturating casts to float8e8m0 are not supported");
        }
        // The reference converts to float32 first.
        vals.into_iter().map(|v| e8m0_value(e8m0_code(v as f32, round))).collect()
    } else {
        let f = format(to).ok_or_else(|| candle_core::Error::Msg(format!("cannot cast to {}", to.name())))?;
        // Like onnxruntime and the reference (ml_dtypes), other types are rounded to float32 first.
        vals.into_iter().map(|v| quantize(v as f32 as f64, &f, saturate) as f32).collect()
    };
    Tensor::from_vec(out, shape, dev)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float8_rounding_follows_the_onnx_tables() {
        let e4 = format(Held::F8E4M3FN).unwrap();
        assert_eq!(quantize(464.0, &e4, false), 448.0); // tie to even
        assert!(quantize(470.0, &e4, false).is_nan()); // overflow without saturation
        assert_eq!(quantize(f64::INFINITY, &e4, true), 448.0);
        assert_eq!(quantize(1e-7, &e4, true), 0.0);
        let e5 = format(Held::F8E5M2).unwrap();
        assert_eq!(quantize(1e6, &e5, false), f64::INFINITY);
        assert_eq!(quantize(6.5, &e5, true), 6.0);
        let uz = format(Held::F8E5M2FNUZ).unwrap();
        assert!(quantize(-1e-9, &uz, true).is_sign_positive()); // no negative zero
        for code in 0..=255u8 {
            let v = decode_float(Held::F8E4M3FN, code) as f64;
            assert!(v.is_nan() || quantize(v, &e4, false) == v, "code {code}");
        }
    }

    #[test]
    fn e8m0_rounds_up_by_default() {
        assert_eq!(e8m0_value(e8m0_code(1.1, E8m0Round::Up)), 2.0);
        assert_eq!(e8m0_value(e8m0_code(1.1, E8m0Round::Down)), 1.0);
        assert_eq!(e8m0_code(0.0, E8m0Round::Up), 0);
    }
}
