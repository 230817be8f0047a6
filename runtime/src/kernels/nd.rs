//! Kernels for any spatial rank, for the cases the 2-D fast kernels do not cover: 3-D pooling
//! windows, MaxPool's Indices output and 3-D transposed convolution. They follow the same window
//! conventions as the 2-D kernels (see `pool.rs`), compute in f64 and run one (image, channel)
//! plane per rayon task. These shapes are rare in vision models, so clarity beats speed here.

use super::pool::PoolKind;
use rayon::prelude::*;

/// Per-dimension window geometry: kernel, strides, dilations, begin and end padding.
#[derive(Debug, Clone, PartialEq)]
pub struct NdWindow {
    pub kernel: Vec<usize>,
    pub strides: Vec<usize>,
    pub dilations: Vec<usize>,
    pub begin: Vec<usize>,
    pub end: Vec<usize>,
}

/// Row-major element strides of a shape.
fn row_major(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        s[d] = s[d + 1] * shape[d + 1];
    }
    s
}

/// Column-major element strides (MaxPool's storage_order=1 indices).
fn col_major(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for d in 1..shape.len() {
        s[d] = s[d - 1] * shape[d - 1];
    }
    s
}

/// Call `f` with every multi-index of `shape` in row-major order.
fn for_each_index(shape: &[usize], mut f: impl FnMut(&[usize])) {
    if shape.contains(&0) {
        return;
    }
    let mut idx = vec![0; shape.len()];
    loop {
        f(&idx);
        let mut d = shape.len();
        loop {
            if d == 0 {
                return;
            }
            d -= 1;
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
}

/// Kernel taps [lo, hi) of one dimension whose input position start + k*d lies in [0, limit),
/// and how many taps lie inside the padded extent [.., padded_limit) (for count_include_pad).
fn taps(start: isize, k: usize, d: usize, limit: usize, padded_limit: usize) -> (usize, usize, usize) {
    let below = |lim: usize| -> usize {
        let room = lim as isize - start;
        if room <= 0 { 0 } else { (room as usize).div_ceil(d).min(k) }
    };
    let lo = if start >= 0 { 0 } else { ((-start) as usize).div_ceil(d).min(k) };
    (lo, below(limit).max(lo), below(padded_limit))
}

/// Pooling over `nc` planes of spatial shape `input` into `out`. Returns the values and, for
/// MaxPool with `indices = Some(col_major)`, the flat input index of each maximum (ONNX
/// semantics: offset of the plane plus the position in row- or column-major order).
pub fn pool_nd(
    x: &[f64],
    nc: usize,
    input: &[usize],
    win: &NdWindow,
    out: &[usize],
    kind: PoolKind,
    indices: Option<bool>,
) -> (Vec<f64>, Vec<i64>) {
    let plane: usize = input.iter().product();
    let oplane: usize = out.iter().product();
    let xs = row_major(input);
    let is = if indices == Some(true) { col_major(input) } else { xs.clone() };
    let r = input.len();
    let per_plane: Vec<(Vec<f64>, Vec<i64>)> = (0..nc)
        .into_par_iter()
        .map(|ch| {
            let xc = &x[ch * plane..(ch + 1) * plane];
            let mut vals = Vec::with_capacity(oplane);
            let mut idxs = Vec::with_capacity(if indices.is_some() { oplane } else { 0 });
            for_each_index(out, |o| {
                let mut start = vec![0isize; r];
                let mut lo = vec![0usize; r];
                let mut span = vec![0usize; r];
                let mut padded = 1usize;
                for d in 0..r {
                    start[d] = (o[d] * win.strides[d]) as isize - win.begin[d] as isize;
                    let (l, h, p) = taps(start[d], win.kernel[d], win.dilations[d], input[d], input[d] + win.end[d]);
                    lo[d] = l;
                    span[d] = h - l;
                    padded *= p;
                }
                let mut best = f64::NEG_INFINITY;
                let mut best_at: i64 = -1;
                let mut nan = false;
                let mut sum = 0.0;
                let mut pos = vec![0usize; r];
                for_each_index(&span, |t| {
                    for d in 0..r {
                        pos[d] = (start[d] + ((lo[d] + t[d]) * win.dilations[d]) as isize) as usize;
                    }
                    let v = xc[pos.iter().zip(&xs).map(|(p, s)| p * s).sum::<usize>()];
                    match kind {
                        PoolKind::Max => {
                            nan |= v.is_nan();
                            if best_at < 0 || v > best {
                                best = v;
                                best_at = pos.iter().zip(&is).map(|(p, s)| p * s).sum::<usize>() as i64;
                            }
                        }
                        PoolKind::Avg { .. } => sum += v,
                    }
                });
                let count: usize = span.iter().product();
                vals.push(match kind {
                    PoolKind::Max if nan => f64::NAN,
                    PoolKind::Max => best,
                    PoolKind::Avg { count_include_pad } => {
                        let div = if count_include_pad { padded } else { count };
                        if div == 0 { 0.0 } else { sum / div as f64 }
                    }
                });
                if indices.is_some() {
                    idxs.push(if best_at < 0 { -1 } else { (ch * plane) as i64 + best_at });
                }
            });
            (vals, idxs)
        })
        .collect();
    let mut vals = Vec::with_capacity(nc * oplane);
    let mut idxs = Vec::new();
    for (v, i) in per_plane {
        vals.extend(v);
        idxs.extend(i);
    }
    (vals, idxs)
}

/// Shapes of a transposed convolution: x [n, c, input...], weight [c, m/groups, kernel...].
pub struct ConvTransposeNd<'a> {
    pub x: &'a [f64],
    pub n: usize,
    pub c: usize,
    pub input: &'a [usize],
    pub weight: &'a [f64],
    pub m: usize,
    pub bias: Option<&'a [f64]>,
    pub groups: usize,
    /// kernel, strides and dilations (`win.begin` / `win.end` are not used).
    pub win: &'a NdWindow,
    /// Padding cropped from the start of the full output (negative: the output starts earlier).
    pub begin: &'a [isize],
    pub out: &'a [usize],
}

/// Transposed convolution by scattering every input value through the kernel; returns [n, m, out...].
pub fn conv_transpose_nd(a: &ConvTransposeNd) -> Vec<f64> {
    let r = a.input.len();
    let plane: usize = a.input.iter().product();
    let oplane: usize = a.out.iter().product();
    let kplane: usize = a.win.kernel.iter().product();
    let (cg, mg) = (a.c / a.groups, a.m / a.groups);
    let xs = row_major(a.input);
    let os = row_major(a.out);
    let mut y = vec![0f64; a.n * a.m * oplane];
    y.par_chunks_mut(oplane.max(1)).enumerate().for_each(|(job, o)| {
        let (img, oc) = (job / a.m, job % a.m);
        let (g, mo) = (oc / mg, oc % mg);
        if let Some(b) = a.bias {
            o.fill(b[oc]);
        }
        for ci in g * cg..(g + 1) * cg {
            let xc = &a.x[(img * a.c + ci) * plane..][..plane];
            let wk = &a.weight[(ci * mg + mo) * kplane..][..kplane];
            let mut ki = 0;
            for_each_index(&a.win.kernel, |k| {
                let wv = wk[ki];
                ki += 1;
                for_each_index(a.input, |i| {
                    let mut at = 0usize;
                    for d in 0..r {
                        let p = (i[d] * a.win.strides[d] + k[d] * a.win.dilations[d]) as isize - a.begin[d];
                        if p < 0 || p >= a.out[d] as isize {
                            return;
                        }
                        at += p as usize * os[d];
                    }
                    let xi: usize = i.iter().zip(&xs).map(|(p, s)| p * s).sum();
                    o[at] += xc[xi] * wv;
                });
            });
        }
    });
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_pool_indices_row_and_column_major() {
        // One 2x3 plane, 2x2 window, stride 1: maxima at (1,1) and (1,2).
        let x = [1.0, 2.0, 3.0, 4.0, 6.0, 5.0];
        let win = NdWindow {
            kernel: vec![2, 2],
            strides: vec![1, 1],
            dilations: vec![1, 1],
            begin: vec![0, 0],
            end: vec![0, 0],
        };
        let (v, i) = pool_nd(&x, 1, &[2, 3], &win, &[1, 2], PoolKind::Max, Some(false));
        assert_eq!(v, vec![6.0, 6.0]);
        assert_eq!(i, vec![4, 4]);
        let (_, i) = pool_nd(&x, 1, &[2, 3], &win, &[1, 2], PoolKind::Max, Some(true));
        assert_eq!(i, vec![3, 3]); // (1,1) column-major = 1 + 1*2
    }

    #[test]
    fn conv_transpose_1d_matches_hand_computation() {
        // x = [1, 2], w = [1, 10], stride 2 -> [1, 10, 2, 20]
        let win = NdWindow { kernel: vec![2], strides: vec![2], dilations: vec![1], begin: vec![0], end: vec![0] };
        let a = ConvTransposeNd {
            x: &[1.0, 2.0],
            n: 1,
            c: 1,
            input: &[2],
            weight: &[1.0, 10.0],
            m: 1,
            bias: None,
            groups: 1,
            win: &win,
            begin: &[0],
            out: &[4],
        };
        assert_eq!(conv_transpose_nd(&a), vec![1.0, 10.0, 2.0, 20.0]);
    }
}
