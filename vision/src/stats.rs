//! Image statistics monitored for drift. The server computes them on live traffic and the trainer
//! on datasets (the reference profile), so both must come from this one implementation.

use image::RgbImage;

/// Statistics as defined in `ReferenceStatistics`' docs: over the decoded image (sampled on a
/// grid of at most ~4096 pixels), values in 0..1, luma = 0.299 R + 0.587 G + 0.114 B.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ImageStats {
    pub brightness: f64,
    pub contrast: f64,
    pub mean_red: f64,
    pub mean_green: f64,
    pub mean_blue: f64,
}

impl ImageStats {
    /// Feature names, in the order of [`ImageStats::values`].
    pub const NAMES: [&'static str; 5] = ["brightness", "contrast", "meanRed", "meanGreen", "meanBlue"];

    pub fn compute(img: &RgbImage) -> Self {
        let (w, h) = img.dimensions();
        let step = (((w as u64 * h as u64) as f64 / 4096.0).sqrt().floor() as u32).max(1);
        let (mut n, mut r, mut g, mut b, mut l, mut l2) = (0f64, 0f64, 0f64, 0f64, 0f64, 0f64);
        for y in (0..h).step_by(step as usize) {
            for x in (0..w).step_by(step as usize) {
                let p = img.get_pixel(x, y);
                let (pr, pg, pb) = (p[0] as f64 / 255.0, p[1] as f64 / 255.0, p[2] as f64 / 255.0);
                let luma = 0.299 * pr + 0.587 * pg + 0.114 * pb;
                n += 1.0;
                r += pr;
                g += pg;
                b += pb;
                l += luma;
                l2 += luma * luma;
            }
        }
        let mean_l = l / n;
        Self {
            brightness: mean_l,
            contrast: (l2 / n - mean_l * mean_l).max(0.0).sqrt(),
            mean_red: r / n,
            mean_green: g / n,
            mean_blue: b / n,
        }
    }

    pub fn values(&self) -> [f64; 5] {
        [self.brightness, self.contrast, self.mean_red, self.mean_green, self.mean_blue]
    }

    pub fn named(&self) -> [(&'static str, f64); 5] {
        let v = self.values();
        std::array::from_fn(|i| (Self::NAMES[i], v[i]))
    }
}

/// Two-sample Kolmogorov-Smirnov statistic sup |F_a - F_b| of two ascending samples: the drift
/// monitor's per-feature figure (0 when either sample is empty).
pub fn ks_statistic(a: &[f64], b: &[f64]) -> f64 {
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    let (mut i, mut j, mut d) = (0usize, 0usize, 0f64);
    let (na, nb) = (a.len() as f64, b.len() as f64);
    while i < a.len() && j < b.len() {
        let x = a[i].min(b[j]);
        while i < a.len() && a[i] <= x {
            i += 1;
        }
        while j < b.len() && b[j] <= x {
            j += 1;
        }
        d = d.max((i as f64 / na - j as f64 / nb).abs());
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ks_of_identical_and_disjoint_samples() {
        let a: Vec<f64> = (0..100).map(|i| i as f64).collect();
        assert_eq!(ks_statistic(&a, &a), 0.0);
        let b: Vec<f64> = (200..300).map(|i| i as f64).collect();
        assert_eq!(ks_statistic(&a, &b), 1.0);
        let half: Vec<f64> = (50..150).map(|i| i as f64).collect();
        assert!((ks_statistic(&a, &half) - 0.5).abs() < 1e-9);
    }

    #[test]
    fn stats_of_a_flat_image() {
        let s = ImageStats::compute(&RgbImage::from_pixel(10, 10, image::Rgb([255, 255, 255])));
        assert!((s.brightness - 1.0).abs() < 1e-9 && s.contrast < 1e-6);
    }

    #[test]
    fn stats_of_a_half_black_half_red_image() {
        let mut img = RgbImage::from_pixel(10, 10, image::Rgb([0, 0, 0]));
        for x in 0..5 {
            for y in 0..10 {
                img.put_pixel(x, y, image::Rgb([255, 0, 0]));
            }
        }
        let s = ImageStats::compute(&img);
        assert!((s.mean_red - 0.5).abs() < 1e-9 && s.mean_green == 0.0 && s.mean_blue == 0.0);
        assert!((s.brightness - 0.299 / 2.0).abs() < 1e-9);
        assert!((s.contrast - 0.299 / 2.0).abs() < 1e-9);
        assert_eq!(s.named()[2], ("meanRed", s.mean_red));
    }
}
