//! Augmentation of a training image before it is pre-processed: horizontal flip, scale jitter
//! (zoom in by cropping, zoom out by padding with grey) and colour jitter (brightness, contrast,
//! saturation). Boxes are fractions of the image and are changed with it, so the model input's
//! letterbox (or stretch) is computed on the augmented image and its boxes stay consistent.

use image::{Rgb, RgbImage, imageops};
use rand::Rng;

use super::options::AugmentOptions;
use crate::dataset::GtBox;

/// Grey of the padding (Ultralytics' letterbox colour).
const PAD: u8 = 114;
/// A box keeping less than this share of its area inside a crop is dropped.
const MIN_VISIBLE: f32 = 0.4;

/// What one draw decided, so it can be tested and logged.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Draw {
    pub flip: bool,
    /// Zoom factor (above 1: zoom in) and where the window sits, as a share (0..1) of the
    /// free room along each axis.
    pub zoom: f32,
    pub at: (f32, f32),
    pub brightness: f32,
    pub contrast: f32,
    pub saturation: f32,
}

impl Draw {
    pub fn random<R: Rng>(o: &AugmentOptions, rng: &mut R) -> Self {
        let mut jitter =
            |amount: f64| if amount > 0.0 { rng.random_range(1.0 - amount..=1.0 + amount) as f32 } else { 1.0 };
        let (brightness, contrast, saturation) = (jitter(o.color), jitter(o.color), jitter(o.color));
        let zoom =
            if o.scale > 0.0 { rng.random_range(-1.0..=1.0f64) * (1.0 + o.scale).ln() } else { 0.0 }.exp() as f32;
        Self {
            flip: o.flip > 0.0 && rng.random_bool(o.flip.min(1.0)),
            zoom,
            at: (rng.random::<f32>(), rng.random::<f32>()),
            brightness,
            contrast,
            saturation,
        }
    }
}

/// Applies `d` to the image and its boxes (fractions of the image).
pub fn apply(image: RgbImage, boxes: Vec<GtBox>, d: &Draw) -> (RgbImage, Vec<GtBox>) {
    let (mut image, mut boxes) = if d.flip { flip(image, boxes) } else { (image, boxes) };
    if d.zoom != 1.0 {
        (image, boxes) = zoom(&image, boxes, d.zoom, d.at);
    }
    color(&mut image, d.brightness, d.contrast, d.saturation);
    (image, boxes)
}

pub fn flip(image: RgbImage, boxes: Vec<GtBox>) -> (RgbImage, Vec<GtBox>) {
    let boxes = boxes
        .into_iter()
        .map(|b| GtBox { rect: [1.0 - b.rect[2], b.rect[1], 1.0 - b.rect[0], b.rect[3]], ..b })
        .collect();
    (imageops::flip_horizontal(&image), boxes)
}

/// The image seen through a window `1 / factor` its size: a crop when zooming in (factor above
/// 1), the image on a larger grey canvas when zooming out. `at` places the window (or the image
/// on the canvas) within the free room.
pub fn zoom(image: &RgbImage, boxes: Vec<GtBox>, factor: f32, at: (f32, f32)) -> (RgbImage, Vec<GtBox>) {
    let (w, h) = (image.width() as f32, image.height() as f32);
    let (ww, wh) = (((w / factor).round() as u32).max(1), ((h / factor).round() as u32).max(1));
    // Window origin in image pixels (negative when the window is larger).
    let ox = ((w - ww as f32) * at.0.clamp(0.0, 1.0)).round();
    let oy = ((h - wh as f32) * at.1.clamp(0.0, 1.0)).round();
    let out = if factor > 1.0 {
        imageops::crop_imm(image, ox as u32, oy as u32, ww.min(image.width()), wh.min(image.height())).to_image()
    } else {
        let mut canvas = RgbImage::from_pixel(ww.max(image.width()), wh.max(image.height()), Rgb([PAD; 3]));
        imageops::replace(&mut canvas, image, (-ox) as i64, (-oy) as i64);
        canvas
    };
    let (cw, ch) = (out.width() as f32, out.height() as f32);
    let boxes = boxes
        .into_iter()
        .filter_map(|b| {
            let px = [b.rect[0] * w - ox, b.rect[1] * h - oy, b.rect[2] * w - ox, b.rect[3] * h - oy];
            let area = (px[2] - px[0]).max(0.0) * (px[3] - px[1]).max(0.0);
            let c = [px[0].clamp(0.0, cw), px[1].clamp(0.0, ch), px[2].clamp(0.0, cw), px[3].clamp(0.0, ch)];
            let visible = (c[2] - c[0]) * (c[3] - c[1]);
            let keep = c[2] - c[0] >= 1.0 && c[3] - c[1] >= 1.0 && visible >= MIN_VISIBLE * area;
            keep.then(|| GtBox { rect: [c[0] / cw, c[1] / ch, c[2] / cw, c[3] / ch], ..b })
        })
        .collect();
    (out, boxes)
}

/// Brightness (a gain), contrast (around the image's mean luminance) and saturation (around
/// each pixel's luminance).
pub fn color(image: &mut RgbImage, brightness: f32, contrast: f32, saturation: f32) {
    if brightness == 1.0 && contrast == 1.0 && saturation == 1.0 {
        return;
    }
    let luma = |p: &Rgb<u8>| 0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32;
    let n = (image.width() as f64 * image.height() as f64).max(1.0);
    let mean = (image.pixels().map(|p| luma(p) as f64).sum::<f64>() / n) as f32 * brightness;
    for p in image.pixels_mut() {
        let v = [p[0] as f32 * brightness, p[1] as f32 * brightness, p[2] as f32 * brightness];
        let y = 0.299 * v[0] + 0.587 * v[1] + 0.114 * v[2];
        for c in 0..3 {
            let s = y + (v[c] - y) * saturation;
            p[c] = (mean + (s - mean) * contrast).round().clamp(0.0, 255.0) as u8;
        }
    }
}

/// The image shrunk (keeping its aspect ratio) so that it is at most `max_w` x `max_h`, so
/// augmenting a large photo costs what augmenting a small one does; boxes are fractions and do
/// not change.
pub fn shrink(image: RgbImage, max_w: u32, max_h: u32) -> RgbImage {
    let (w, h) = image.dimensions();
    if w <= max_w && h <= max_h {
        return image;
    }
    let s = (max_w as f64 / w as f64).min(max_h as f64 / h as f64);
    let (nw, nh) = (((w as f64 * s).round() as u32).max(1), ((h as f64 * s).round() as u32).max(1));
    imageops::resize(&image, nw, nh, imageops::FilterType::Triangle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn gt(rect: [f32; 4]) -> GtBox {
        GtBox { class: 1, rect, normalised: true }
    }

    /// A 40x20 grey image with a white 8x4 block at (4, 2).
    fn block() -> RgbImage {
        let mut img = RgbImage::from_pixel(40, 20, Rgb([50, 50, 50]));
        for y in 2..6 {
            for x in 4..12 {
                img.put_pixel(x, y, Rgb([255, 255, 255]));
            }
        }
        img
    }

    fn white_bounds(img: &RgbImage) -> [f32; 4] {
        let (mut x0, mut y0, mut x1, mut y1) = (u32::MAX, u32::MAX, 0, 0);
        for (x, y, p) in img.enumerate_pixels() {
            if p[0] > 200 {
                (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x + 1), y1.max(y + 1));
            }
        }
        [
            x0 as f32 / img.width() as f32,
            y0 as f32 / img.height() as f32,
            x1 as f32 / img.width() as f32,
            y1 as f32 / img.height() as f32,
        ]
    }

    fn assert_close(a: [f32; 4], b: [f32; 4]) {
        assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 0.02), "{a:?} vs {b:?}");
    }

    #[test]
    fn a_flip_mirrors_pixels_and_boxes_together() {
        let (img, boxes) = flip(block(), vec![gt([0.1, 0.1, 0.3, 0.3])]);
        assert_close(boxes[0].rect, [0.7, 0.1, 0.9, 0.3]);
        assert_close(white_bounds(&img), boxes[0].rect);
    }

    #[test]
    fn zooming_in_crops_and_the_box_follows_the_pixels() {
        let b = gt([0.1, 0.1, 0.3, 0.3]);
        let (img, boxes) = zoom(&block(), vec![b.clone()], 2.0, (0.0, 0.0));
        assert_eq!(img.dimensions(), (20, 10));
        assert_close(boxes[0].rect, [0.2, 0.2, 0.6, 0.6]);
        assert_close(white_bounds(&img), boxes[0].rect);
        // Cropped away: the box is dropped.
        let (_, boxes) = zoom(&block(), vec![b], 2.0, (1.0, 1.0));
        assert!(boxes.is_empty());
    }

    #[test]
    fn zooming_out_pads_with_grey_and_the_box_follows_the_pixels() {
        let (img, boxes) = zoom(&block(), vec![gt([0.1, 0.1, 0.3, 0.3])], 0.5, (0.5, 0.5));
        assert_eq!(img.dimensions(), (80, 40));
        assert_eq!(img.get_pixel(0, 0), &Rgb([PAD; 3]));
        assert_close(boxes[0].rect, [0.3, 0.3, 0.4, 0.4]);
        assert_close(white_bounds(&img), boxes[0].rect);
    }

    #[test]
    fn a_partly_cropped_box_is_clipped_or_dropped_by_its_visible_share() {
        // Window: x 0..20 of the 40 wide image.
        let half = gt([0.4, 0.0, 0.6, 0.5]); // half inside
        let sliver = gt([0.45, 0.0, 0.9, 0.5]); // 5 of 18 px inside
        let (_, boxes) = zoom(&block(), vec![half, sliver], 2.0, (0.0, 0.0));
        assert_eq!(boxes.len(), 1);
        assert_close(boxes[0].rect, [0.8, 0.0, 1.0, 1.0]);
    }

    #[test]
    fn colour_jitter_keeps_identity_and_moves_brightness() {
        let mut img = block();
        color(&mut img, 1.0, 1.0, 1.0);
        assert_eq!(img, block());
        color(&mut img, 0.5, 1.0, 1.0);
        assert_eq!(img.get_pixel(0, 0), &Rgb([25, 25, 25]));
        let mut red = RgbImage::from_pixel(2, 2, Rgb([200, 0, 0]));
        color(&mut red, 1.0, 1.0, 0.0);
        let p = red.get_pixel(0, 0);
        assert!(p[0] == p[1] && p[1] == p[2], "{p:?}");
    }

    #[test]
    fn draws_stay_in_their_ranges_and_are_reproducible() {
        let o = AugmentOptions::default();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let draws: Vec<Draw> = (0..200).map(|_| Draw::random(&o, &mut rng)).collect();
        assert!(draws.iter().all(|d| (0.8..=1.25).contains(&d.zoom)));
        assert!(draws.iter().all(|d| (0.85..=1.15).contains(&d.brightness)));
        let flips = draws.iter().filter(|d| d.flip).count();
        assert!((70..130).contains(&flips), "{flips}");
        let mut again = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        assert_eq!(Draw::random(&o, &mut again), draws[0]);
        let none = AugmentOptions { flip: 0.0, scale: 0.0, color: 0.0 };
        let d = Draw::random(&none, &mut rng);
        assert!(!d.flip && d.zoom == 1.0 && d.brightness == 1.0);
    }

    #[test]
    fn large_images_are_shrunk_keeping_their_aspect() {
        let img = shrink(RgbImage::new(400, 100), 128, 128);
        assert_eq!(img.dimensions(), (128, 32));
        assert_eq!(shrink(RgbImage::new(40, 10), 128, 128).dimensions(), (40, 10));
    }
}
