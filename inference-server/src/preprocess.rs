//! Image decoding and the transform into a model's input tensor (resize, normalise, layout),
//! plus the inverse mapping of boxes back to original pixels.

use crate::serving::{InputSpec, ResizeMode, TensorLayout};
use image::imageops::FilterType;
use image::{ImageFormat, RgbImage};

use crate::error::ServerError;

/// Largest width or height accepted, to bound memory per request.
pub const MAX_IMAGE_SIDE: u32 = 8192;

/// A decoded request image, kept with its original encoding for the prediction log.
pub struct DecodedImage {
    pub rgb: RgbImage,
    pub format: ImageFormat,
}

/// Decodes PNG or JPEG bytes; anything else is a 4xx with the reason.
pub fn decode_image(bytes: &[u8]) -> Result<DecodedImage, ServerError> {
    let format = image::guess_format(bytes)
        .map_err(|_| ServerError::UnsupportedMediaType("body is not a PNG or JPEG image".into()))?;
    if !matches!(format, ImageFormat::Png | ImageFormat::Jpeg) {
        return Err(ServerError::UnsupportedMediaType(format!(
            "{format:?} images are not supported; send PNG or JPEG"
        )));
    }
    let mut reader = image::ImageReader::with_format(std::io::Cursor::new(bytes), format);
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(512 * 1024 * 1024);
    reader.limits(limits);
    let img = reader
        .decode()
        .map_err(|e| ServerError::bad_request(format!("cannot decode {format:?} image: {e}")))?;
    if img.width() == 0 || img.height() == 0 {
        return Err(ServerError::bad_request("image has no pixels"));
    }
    Ok(DecodedImage { rgb: img.to_rgb8(), format })
}

/// How input-tensor coordinates map back to the original image.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct InverseTransform {
    pub scale_x: f32,
    pub scale_y: f32,
    pub pad_x: f32,
    pub pad_y: f32,
    pub width: u32,
    pub height: u32,
}

impl InverseTransform {
    /// Maps a box [x1, y1, x2, y2] in input pixels to original pixels, clipped to the image.
    pub fn to_original(&self, b: [f32; 4]) -> [f32; 4] {
        let w = self.width as f32;
        let h = self.height as f32;
        [
            ((b[0] - self.pad_x) / self.scale_x).clamp(0.0, w),
            ((b[1] - self.pad_y) / self.scale_y).clamp(0.0, h),
            ((b[2] - self.pad_x) / self.scale_x).clamp(0.0, w),
            ((b[3] - self.pad_y) / self.scale_y).clamp(0.0, h),
        ]
    }
}

/// Resizes and normalises one image into `spec`'s layout (batch of one).
pub fn to_tensor(img: &RgbImage, spec: &InputSpec) -> Result<(Vec<f32>, InverseTransform), ServerError> {
    let (w, h) = (spec.width, spec.height);
    if w == 0 || h == 0 || !(spec.channels == 1 || spec.channels == 3) {
        return Err(ServerError::Internal(format!(
            "unsupported model input {}x{}x{}",
            w, h, spec.channels
        )));
    }
    let (canvas, inv) = match spec.resize {
        ResizeMode::Stretch => {
            let resized = if img.dimensions() == (w, h) {
                img.clone()
            } else {
                image::imageops::resize(img, w, h, FilterType::Triangle)
            };
            let inv = InverseTransform {
                scale_x: w as f32 / img.width() as f32,
                scale_y: h as f32 / img.height() as f32,
                pad_x: 0.0,
                pad_y: 0.0,
                width: img.width(),
                height: img.height(),
            };
            (resized, inv)
        }
        ResizeMode::Letterbox => {
            let s = (w as f32 / img.width() as f32).min(h as f32 / img.height() as f32);
            let nw = ((img.width() as f32 * s).round() as u32).clamp(1, w);
            let nh = ((img.height() as f32 * s).round() as u32).clamp(1, h);
            let resized = image::imageops::resize(img, nw, nh, FilterType::Triangle);
            let mut canvas = RgbImage::from_pixel(w, h, image::Rgb([114, 114, 114]));
            let (px, py) = ((w - nw) / 2, (h - nh) / 2);
            image::imageops::replace(&mut canvas, &resized, px as i64, py as i64);
            let inv = InverseTransform {
                scale_x: nw as f32 / img.width() as f32,
                scale_y: nh as f32 / img.height() as f32,
                pad_x: px as f32,
                pad_y: py as f32,
                width: img.width(),
                height: img.height(),
            };
            (canvas, inv)
        }
    };
    Ok((normalise(&canvas, spec), inv))
}

fn normalise(img: &RgbImage, spec: &InputSpec) -> Vec<f32> {
    let c = spec.channels as usize;
    let mean = |k: usize| spec.mean.get(k).or(spec.mean.first()).copied().unwrap_or(0.0);
    let std = |k: usize| spec.std.get(k).or(spec.std.first()).copied().unwrap_or(1.0);
    let scale: Vec<f32> = (0..c).map(|k| 1.0 / (255.0 * std(k))).collect();
    let shift: Vec<f32> = (0..c).map(|k| mean(k) / std(k)).collect();
    let plane = (img.width() * img.height()) as usize;
    let mut out = vec![0f32; plane * c];
    for (i, p) in img.pixels().enumerate() {
        let vals: [f32; 3] = if c == 1 {
            let l = 0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32;
            [l, 0.0, 0.0]
        } else {
            [p[0] as f32, p[1] as f32, p[2] as f32]
        };
        for k in 0..c {
            let v = vals[k] * scale[k] - shift[k];
            match spec.layout {
                TensorLayout::Nchw => out[k * plane + i] = v,
                TensorLayout::Nhwc => out[i * c + k] = v,
            }
        }
    }
    out
}

/// Image statistics monitored for drift, as defined in `ReferenceStatistics`' docs: over the
/// decoded image (sampled on a grid of at most ~4096 pixels), values in 0..1,
/// luma = 0.299 R + 0.587 G + 0.114 B.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ImageStats {
    pub brightness: f64,
    pub contrast: f64,
    pub mean_red: f64,
    pub mean_green: f64,
    pub mean_blue: f64,
}

impl ImageStats {
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

    pub fn named(&self) -> [(&'static str, f64); 5] {
        [
            ("brightness", self.brightness),
            ("contrast", self.contrast),
            ("meanRed", self.mean_red),
            ("meanGreen", self.mean_green),
            ("meanBlue", self.mean_blue),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(resize: ResizeMode) -> InputSpec {
        InputSpec {
            width: 64,
            height: 64,
            channels: 3,
            layout: TensorLayout::Nchw,
            mean: vec![0.5],
            std: vec![0.5],
            resize,
        }
    }

    #[test]
    fn letterbox_maps_boxes_back_to_original_pixels() {
        let img = RgbImage::from_pixel(128, 64, image::Rgb([255, 0, 0]));
        let (t, inv) = to_tensor(&img, &spec(ResizeMode::Letterbox)).unwrap();
        assert_eq!(t.len(), 3 * 64 * 64);
        assert_eq!(inv.pad_y, 16.0);
        // Content row 16 is red (1.0 after normalisation), padding row 0 is grey.
        assert!((t[16 * 64] - 1.0).abs() < 1e-5);
        assert!((t[0] - (114.0 / 255.0 - 0.5) / 0.5).abs() < 1e-5);
        let b = inv.to_original([0.0, 16.0, 64.0, 48.0]);
        assert_eq!(b, [0.0, 0.0, 128.0, 64.0]);
    }

    #[test]
    fn stretch_scales_axes_independently() {
        let img = RgbImage::from_pixel(32, 16, image::Rgb([0, 0, 255]));
        let (t, inv) = to_tensor(&img, &spec(ResizeMode::Stretch)).unwrap();
        assert!((t[2 * 64 * 64] - 1.0).abs() < 1e-5);
        assert_eq!(inv.to_original([32.0, 32.0, 64.0, 64.0]), [16.0, 8.0, 32.0, 16.0]);
    }

    #[test]
    fn non_images_are_rejected_with_reason() {
        let e = decode_image(b"hello").err().unwrap();
        assert_eq!(e.status(), axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let e = decode_image(b"\x89PNG\r\n\x1a\n garbage").err().unwrap();
        assert_eq!(e.status(), axum::http::StatusCode::BAD_REQUEST);
    }

    #[test]
    fn stats_of_a_flat_image() {
        let s = ImageStats::compute(&RgbImage::from_pixel(10, 10, image::Rgb([255, 255, 255])));
        assert!((s.brightness - 1.0).abs() < 1e-9 && s.contrast < 1e-6);
    }
}
