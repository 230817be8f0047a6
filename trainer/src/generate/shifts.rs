//! The pixel shifts of the generated drift domains, as pure functions: each maps an image and a
//! severity in 0..=1 (and, when it is random, a seed) to a new image. Severity 0 returns the
//! image unchanged; 1 is the full strength documented in docs/trainer.md.

use image::{Rgb, RgbImage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// `dark`: brightness and contrast multiplied by `1 - DARK * severity`.
pub const DARK: f32 = 0.6;
/// `warm` / `cool`: red raised and blue lowered (or the reverse) by this many levels at severity 1.
pub const CAST: f32 = 40.0;
/// `blur`: Gaussian sigma in pixels per 64 pixels of image side at severity 1.
pub const BLUR_SIGMA: f32 = 1.5;
/// `noise`: standard deviation of the per-channel Gaussian noise, in levels, at severity 1.
pub const NOISE_SIGMA: f32 = 25.0;
/// `texture`: amplitude, in levels, of the pattern added to the background at severity 1.
pub const TEXTURE_AMPLITUDE: f32 = 60.0;

fn map(img: &RgbImage, f: impl Fn(u32, u32, [f32; 3]) -> [f32; 3]) -> RgbImage {
    RgbImage::from_fn(img.width(), img.height(), |x, y| {
        Rgb(f(x, y, img.get_pixel(x, y).0.map(f32::from)).map(|v| v.round().clamp(0.0, 255.0) as u8))
    })
}

/// Lower light: every channel scaled towards black.
pub fn darken(img: &RgbImage, severity: f32) -> RgbImage {
    let k = 1.0 - DARK * severity;
    map(img, |_, _, p| p.map(|v| v * k))
}

/// A colour cast: `warmth` > 0 adds red and removes blue (warm light), < 0 the reverse (cool).
pub fn colour_cast(img: &RgbImage, warmth: f32) -> RgbImage {
    let d = CAST * warmth;
    map(img, |_, _, [r, g, b]| [r + d, g, b - d])
}

/// Out of focus: a separable Gaussian blur (edges clamped).
pub fn blur(img: &RgbImage, severity: f32) -> RgbImage {
    let sigma = BLUR_SIGMA * severity * img.width().min(img.height()) as f32 / 64.0;
    let radius = (3.0 * sigma).ceil() as i64;
    if radius == 0 {
        return img.clone();
    }
    let weights: Vec<f32> = (-radius..=radius).map(|d| (-((d * d) as f32) / (2.0 * sigma * sigma)).exp()).collect();
    let total: f32 = weights.iter().sum();
    let (w, h) = (img.width() as i64, img.height() as i64);
    let pass = |src: &[[f32; 3]], horizontal: bool| -> Vec<[f32; 3]> {
        (0..w * h)
            .map(|i| {
                let (x, y) = (i % w, i / w);
                let mut acc = [0f32; 3];
                for (k, weight) in weights.iter().enumerate() {
                    let d = k as i64 - radius;
                    let j = if horizontal { y * w + (x + d).clamp(0, w - 1) } else { (y + d).clamp(0, h - 1) * w + x };
                    for c in 0..3 {
                        acc[c] += weight * src[j as usize][c];
                    }
                }
                acc.map(|v| v / total)
            })
            .collect()
    };
    let pixels: Vec<[f32; 3]> = img.pixels().map(|p| p.0.map(f32::from)).collect();
    let out = pass(&pass(&pixels, true), false);
    map(img, |x, y, _| out[(y as i64 * w + x as i64) as usize])
}

/// Sensor noise: independent Gaussian noise on every channel of every pixel.
pub fn noise(img: &RgbImage, severity: f32, seed: u64) -> RgbImage {
    let sigma = NOISE_SIGMA * severity;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut values = Vec::with_capacity(img.len());
    for _ in 0..img.len() {
        // Box-Muller.
        let (u, v): (f32, f32) = (rng.random::<f32>().max(f32::MIN_POSITIVE), rng.random());
        values.push((-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos());
    }
    let w = img.width() as usize;
    map(img, |x, y, p| {
        let i = 3 * (y as usize * w + x as usize);
        [p[0] + sigma * values[i], p[1] + sigma * values[i + 1], p[2] + sigma * values[i + 2]]
    })
}

/// A textured background: two crossed sinusoidal gratings (random period of 1/2 to 1/7 of the
/// image, orientation and phase) with a random per-channel tint, added to the image. Zero-mean,
/// so it raises contrast and leaves brightness about where it was.
pub fn texture(img: &RgbImage, severity: f32, seed: u64) -> RgbImage {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let side = img.width().min(img.height()).max(1) as f32;
    let gratings: [[f32; 3]; 2] = std::array::from_fn(|_| {
        let frequency = std::f32::consts::TAU * rng.random_range(2.0..7.0) / side;
        let angle = rng.random_range(0.0..std::f32::consts::PI);
        [frequency * angle.cos(), frequency * angle.sin(), rng.random_range(0.0..std::f32::consts::TAU)]
    });
    let tint: [f32; 3] = std::array::from_fn(|_| rng.random_range(0.6..1.4));
    let amplitude = TEXTURE_AMPLITUDE * severity;
    map(img, |x, y, p| {
        let (x, y) = (x as f32, y as f32);
        let pattern = gratings.iter().map(|[fx, fy, phase]| (fx * x + fy * y + phase).sin()).sum::<f32>() / 2.0;
        [0, 1, 2].map(|c| p[c] + amplitude * tint[c] * pattern)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> RgbImage {
        RgbImage::from_fn(16, 12, |x, y| Rgb([(x * 15) as u8, (y * 20) as u8, ((x + y) * 7) as u8]))
    }

    #[test]
    fn severity_zero_changes_nothing() {
        let img = sample();
        assert_eq!(darken(&img, 0.0), img);
        assert_eq!(colour_cast(&img, 0.0), img);
        assert_eq!(blur(&img, 0.0), img);
        assert_eq!(noise(&img, 0.0, 3), img);
        assert_eq!(texture(&img, 0.0, 3), img);
    }

    #[test]
    fn the_random_shifts_are_functions_of_their_seed() {
        let img = sample();
        assert_eq!(noise(&img, 1.0, 5), noise(&img, 1.0, 5));
        assert_ne!(noise(&img, 1.0, 5), noise(&img, 1.0, 6));
        assert_eq!(texture(&img, 1.0, 5), texture(&img, 1.0, 5));
        assert_ne!(texture(&img, 1.0, 5), texture(&img, 1.0, 6));
    }

    #[test]
    fn darken_scales_and_the_cast_moves_red_against_blue() {
        let img = RgbImage::from_pixel(2, 2, Rgb([100, 100, 100]));
        assert_eq!(darken(&img, 1.0).get_pixel(0, 0).0, [40, 40, 40]);
        assert_eq!(colour_cast(&img, 1.0).get_pixel(0, 0).0, [140, 100, 60]);
        assert_eq!(colour_cast(&img, -0.5).get_pixel(0, 0).0, [80, 100, 120]);
    }

    #[test]
    fn blur_keeps_a_flat_image_and_spreads_an_edge() {
        let flat = RgbImage::from_pixel(8, 8, Rgb([90, 30, 200]));
        assert_eq!(blur(&flat, 1.0), flat);
        let edge = RgbImage::from_fn(64, 64, |x, _| if x < 32 { Rgb([0, 0, 0]) } else { Rgb([255, 255, 255]) });
        let out = blur(&edge, 1.0);
        let row: Vec<u8> = (0..64).map(|x| out.get_pixel(x, 1)[0]).collect();
        assert!(row[31] > 0 && row[32] < 255, "{row:?}");
        assert!(row.windows(2).all(|w| w[0] <= w[1]), "{row:?}");
        assert_eq!((row[0], row[63]), (0, 255));
    }
}
