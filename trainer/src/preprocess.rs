//! Image → model input, exactly as the inference server does it (resize by `stretch` or
//! `letterbox` with grey 114 padding, triangle filter, x = (p/255 - mean) / std, NCHW or NHWC),
//! so the trainer optimises the model for the inputs it will see in production.

use flywheel_api::model_version::{InputSpec, Layout, ResizeMode};
use image::RgbImage;
use image::imageops::FilterType;

/// Maps normalised (0..1) boxes of the original image to input pixels.
#[derive(Clone, Copy, Debug)]
pub struct BoxTransform {
    pub scale_x: f32,
    pub scale_y: f32,
    pub pad_x: f32,
    pub pad_y: f32,
}

impl BoxTransform {
    pub fn to_input(&self, r: [f32; 4]) -> [f32; 4] {
        [
            r[0] * self.scale_x + self.pad_x,
            r[1] * self.scale_y + self.pad_y,
            r[2] * self.scale_x + self.pad_x,
            r[3] * self.scale_y + self.pad_y,
        ]
    }
}

/// One image as the model's input values (batch of one, `spec`'s layout) and the box transform.
pub fn to_input(img: &RgbImage, spec: &InputSpec) -> (Vec<f32>, BoxTransform) {
    let (w, h) = (spec.width, spec.height);
    let (canvas, t) = match spec.resize {
        ResizeMode::Stretch => {
            let resized = if img.dimensions() == (w, h) {
                img.clone()
            } else {
                image::imageops::resize(img, w, h, FilterType::Triangle)
            };
            (
                resized,
                BoxTransform {
                    scale_x: w as f32,
                    scale_y: h as f32,
                    pad_x: 0.0,
                    pad_y: 0.0,
                },
            )
        }
        ResizeMode::Letterbox => {
            let s = (w as f32 / img.width() as f32).min(h as f32 / img.height() as f32);
            let nw = ((img.width() as f32 * s).round() as u32).clamp(1, w);
            let nh = ((img.height() as f32 * s).round() as u32).clamp(1, h);
            let resized = image::imageops::resize(img, nw, nh, FilterType::Triangle);
            let mut canvas = RgbImage::from_pixel(w, h, image::Rgb([114, 114, 114]));
            let (px, py) = ((w - nw) / 2, (h - nh) / 2);
            image::imageops::replace(&mut canvas, &resized, px as i64, py as i64);
            (
                canvas,
                BoxTransform {
                    scale_x: nw as f32,
                    scale_y: nh as f32,
                    pad_x: px as f32,
                    pad_y: py as f32,
                },
            )
        }
    };
    (normalise(&canvas, spec), t)
}

fn normalise(img: &RgbImage, spec: &InputSpec) -> Vec<f32> {
    let c = spec.channels.clamp(1, 3) as usize;
    let mean = |k: usize| {
        spec.mean
            .get(k)
            .or(spec.mean.first())
            .copied()
            .unwrap_or(0.0)
    };
    let std = |k: usize| spec.std.get(k).or(spec.std.first()).copied().unwrap_or(1.0);
    let scale: Vec<f32> = (0..c).map(|k| 1.0 / (255.0 * std(k))).collect();
    let shift: Vec<f32> = (0..c).map(|k| mean(k) / std(k)).collect();
    let plane = (img.width() * img.height()) as usize;
    let mut out = vec![0f32; plane * c];
    for (i, p) in img.pixels().enumerate() {
        let vals: [f32; 3] = if c == 1 {
            [
                0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32,
                0.0,
                0.0,
            ]
        } else {
            [p[0] as f32, p[1] as f32, p[2] as f32]
        };
        for k in 0..c {
            let v = vals[k] * scale[k] - shift[k];
            match spec.layout {
                Layout::Nchw => out[k * plane + i] = v,
                Layout::Nhwc => out[i * c + k] = v,
            }
        }
    }
    out
}

/// Input tensor shape of a batch.
pub fn batch_shape(spec: &InputSpec, n: usize) -> Vec<usize> {
    let (c, h, w) = (
        spec.channels.clamp(1, 3) as usize,
        spec.height as usize,
        spec.width as usize,
    );
    match spec.layout {
        Layout::Nchw => vec![n, c, h, w],
        Layout::Nhwc => vec![n, h, w, c],
    }
}

/// Image statistics compared with live traffic, computed the way the inference server does:
/// over a grid of at most ~4096 pixels, values in 0..1, luma = 0.299 R + 0.587 G + 0.114 B.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ImageStats {
    pub brightness: f64,
    pub contrast: f64,
    pub mean_red: f64,
    pub mean_green: f64,
    pub mean_blue: f64,
}

impl ImageStats {
    pub const NAMES: [&'static str; 5] =
        ["brightness", "contrast", "meanRed", "meanGreen", "meanBlue"];

    pub fn compute(img: &RgbImage) -> Self {
        let (w, h) = img.dimensions();
        let step = (((w as u64 * h as u64) as f64 / 4096.0).sqrt().floor() as u32).max(1);
        let (mut n, mut r, mut g, mut b, mut l, mut l2) = (0f64, 0f64, 0f64, 0f64, 0f64, 0f64);
        for y in (0..h).step_by(step as usize) {
            for x in (0..w).step_by(step as usize) {
                let p = img.get_pixel(x, y);
                let (pr, pg, pb) = (
                    p[0] as f64 / 255.0,
                    p[1] as f64 / 255.0,
                    p[2] as f64 / 255.0,
                );
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
        [
            self.brightness,
            self.contrast,
            self.mean_red,
            self.mean_green,
            self.mean_blue,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(resize: ResizeMode) -> InputSpec {
        InputSpec {
            width: 8,
            height: 8,
            channels: 3,
            layout: Layout::Nchw,
            mean: vec![0.5],
            std: vec![0.5],
            resize,
        }
    }

    #[test]
    fn letterbox_maps_boxes_into_the_padded_canvas() {
        let img = RgbImage::from_pixel(16, 8, image::Rgb([255, 0, 0]));
        let (data, t) = to_input(&img, &spec(ResizeMode::Letterbox));
        assert_eq!(data.len(), 3 * 64);
        assert_eq!(t.to_input([0.0, 0.0, 1.0, 1.0]), [0.0, 2.0, 8.0, 6.0]);
        // Red channel inside the image is (1 - 0.5) / 0.5 = 1, padding is grey.
        assert!((data[3 * 8 + 4] - 1.0).abs() < 1e-5);
        assert!((data[4] - (114.0 / 255.0 - 0.5) / 0.5).abs() < 1e-5);
    }

    #[test]
    fn stats_of_a_flat_image() {
        let s = ImageStats::compute(&RgbImage::from_pixel(10, 10, image::Rgb([255, 255, 255])));
        assert!((s.brightness - 1.0).abs() < 1e-9 && s.contrast < 1e-6);
    }
}
