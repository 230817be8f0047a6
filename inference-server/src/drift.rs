//! Unsupervised monitoring against the training reference: a two-sample Kolmogorov-Smirnov
//! statistic per feature over a sliding window of live values, and the Mahalanobis distance of
//! each input's image statistics from the reference mean.

use std::collections::{HashMap, VecDeque};

use crate::serving::ReferenceStatistics;
pub use flywheel_vision::stats::ks_statistic;

/// Live values kept per feature.
pub const WINDOW: usize = 512;
/// Below this many live values the statistic is not reported (too noisy).
pub const MIN_SAMPLES: usize = 30;

/// Inverse of a symmetric positive (semi-)definite matrix by Gauss-Jordan elimination, with a
/// small ridge so a degenerate reference (e.g. constant feature) still gives finite distances.
pub fn invert(m: &[Vec<f64>]) -> Option<Vec<Vec<f64>>> {
    let n = m.len();
    if n == 0 || m.iter().any(|r| r.len() != n) {
        return None;
    }
    let trace: f64 = (0..n).map(|i| m[i][i].abs()).sum::<f64>() / n as f64;
    let ridge = (trace * 1e-6).max(1e-12);
    let mut a: Vec<Vec<f64>> = (0..n)
        .map(|i| {
            let mut row = m[i].clone();
            row[i] += ridge;
            row.extend((0..n).map(|j| if i == j { 1.0 } else { 0.0 }));
            row
        })
        .collect();
    for col in 0..n {
        let piv = (col..n).max_by(|&x, &y| a[x][col].abs().total_cmp(&a[y][col].abs()))?;
        if a[piv][col].abs() < 1e-300 {
            return None;
        }
        a.swap(col, piv);
        let p = a[col][col];
        a[col].iter_mut().for_each(|v| *v /= p);
        for r in 0..n {
            if r != col {
                let f = a[r][col];
                if f != 0.0 {
                    let pivot_row = a[col].clone();
                    a[r].iter_mut().zip(pivot_row).for_each(|(v, pv)| *v -= f * pv);
                }
            }
        }
    }
    Some(a.into_iter().map(|r| r[n..].to_vec()).collect())
}

struct Mahalanobis {
    features: Vec<String>,
    mean: Vec<f64>,
    inverse: Vec<Vec<f64>>,
}

/// Reference plus sliding windows; lives behind a mutex in the server state.
pub struct DriftMonitor {
    reference: HashMap<String, Vec<f64>>,
    mahalanobis: Option<Mahalanobis>,
    windows: HashMap<String, VecDeque<f64>>,
    outliers: VecDeque<f64>,
}

impl DriftMonitor {
    pub fn new(reference: &ReferenceStatistics) -> Result<Self, String> {
        if reference.version != 1 {
            return Err(format!("unsupported reference statistics version {}", reference.version));
        }
        let mut map = HashMap::new();
        for f in &reference.features {
            if f.sorted_values.is_empty() {
                continue;
            }
            let mut v = f.sorted_values.clone();
            v.sort_by(f64::total_cmp);
            map.insert(f.name.clone(), v);
        }
        let mahalanobis = match &reference.image_statistics {
            Some(m) => {
                let n = m.features.len();
                if m.mean.len() != n || m.covariance.len() != n {
                    return Err("image statistics: mean/covariance do not match the feature list".into());
                }
                let inverse = invert(&m.covariance)
                    .ok_or_else(|| "image statistics: covariance is not invertible".to_string())?;
                Some(Mahalanobis { features: m.features.clone(), mean: m.mean.clone(), inverse })
            }
            None => None,
        };
        Ok(Self { reference: map, mahalanobis, windows: HashMap::new(), outliers: VecDeque::new() })
    }

    /// Records one live value of a monitored feature.
    pub fn observe(&mut self, feature: &str, value: f64) {
        if !value.is_finite() || !self.reference.contains_key(feature) {
            return;
        }
        let w = self.windows.entry(feature.to_string()).or_default();
        if w.len() == WINDOW {
            w.pop_front();
        }
        w.push_back(value);
    }

    /// Distance of one input's features (name → value) from the reference; also windowed.
    pub fn observe_outlier(&mut self, values: &[(&str, f64)]) -> Option<f64> {
        let m = self.mahalanobis.as_ref()?;
        let x: Option<Vec<f64>> =
            m.features.iter().map(|f| values.iter().find(|(n, _)| n == f).map(|(_, v)| *v)).collect();
        let diff: Vec<f64> = x?.iter().zip(&m.mean).map(|(a, b)| a - b).collect();
        let mut q = 0.0;
        for (i, di) in diff.iter().enumerate() {
            for (j, dj) in diff.iter().enumerate() {
                q += di * m.inverse[i][j] * dj;
            }
        }
        let d = q.max(0.0).sqrt();
        if self.outliers.len() == WINDOW {
            self.outliers.pop_front();
        }
        self.outliers.push_back(d);
        Some(d)
    }

    /// KS statistic per feature with enough live values.
    pub fn ks(&self) -> Vec<(String, f64)> {
        let mut out = Vec::new();
        for (name, w) in &self.windows {
            if w.len() < MIN_SAMPLES {
                continue;
            }
            let mut live: Vec<f64> = w.iter().copied().collect();
            live.sort_by(f64::total_cmp);
            out.push((name.clone(), ks_statistic(&self.reference[name], &live)));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Mean Mahalanobis distance over the window.
    pub fn mean_outlier_score(&self) -> Option<f64> {
        if self.outliers.is_empty() {
            return None;
        }
        Some(self.outliers.iter().sum::<f64>() / self.outliers.len() as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serving::{FeatureDistribution, MultivariateReference};

    #[test]
    fn inverse_of_diagonal() {
        let inv = invert(&[vec![4.0, 0.0], vec![0.0, 0.25]]).unwrap();
        assert!((inv[0][0] - 0.25).abs() < 1e-6 && (inv[1][1] - 4.0).abs() < 1e-4);
    }

    #[test]
    fn monitor_reports_shift_and_distance() {
        let reference = ReferenceStatistics {
            version: 1,
            sample_count: 100,
            features: vec![FeatureDistribution {
                name: "brightness".into(),
                sorted_values: (0..100).map(|i| i as f64 / 100.0).collect(),
            }],
            image_statistics: Some(MultivariateReference {
                features: vec!["brightness".into()],
                mean: vec![0.5],
                covariance: vec![vec![0.01]],
            }),
        };
        let mut m = DriftMonitor::new(&reference).unwrap();
        for _ in 0..40 {
            m.observe("brightness", 2.0);
            m.observe("unknown", 1.0);
        }
        assert_eq!(m.ks(), vec![("brightness".to_string(), 1.0)]);
        let d = m.observe_outlier(&[("brightness", 0.8)]).unwrap();
        assert!((d - 3.0).abs() < 1e-3, "{d}");
    }
}
