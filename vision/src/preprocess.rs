//! Image → model input: resize by `stretch`, `letterbox` (grey 114 padding) or `centerCrop`,
//! triangle filter, channels in RGB or BGR order, x = (p * pixelScale - mean) / std per channel
//! (pixelScale 1/255 by default; grey = luma 0.299 R + 0.587 G + 0.114 B), NCHW or NHWC.
//!
//! The spec is the shared [`flywheel_types::InputSpec`], the one the ModelVersion CRD and the
//! serving config both carry. Channel counts other than 1 or 3 are clamped into 1..=3 (see
//! [`check_input`]); per-channel mean and standard deviation take a single value as applying to
//! every channel, and an empty list as mean 0 / std 1.

use flywheel_types::{ChannelOrder, InputSpec, Layout, ResizeMode};
use image::RgbImage;
use image::imageops::FilterType;

use crate::boxes::{BoxTransform, InverseTransform};

/// A model input this module cannot produce.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unsupported model input {width}x{height}x{channels}")]
pub struct UnsupportedInput {
    pub width: u32,
    pub height: u32,
    pub channels: u32,
}

/// Rejects empty inputs and channel counts other than 1 or 3.
pub fn check_input(spec: &InputSpec) -> Result<(), UnsupportedInput> {
    let (width, height, channels) = (spec.width, spec.height, spec.channels);
    if width == 0 || height == 0 || !(channels == 1 || channels == 3) {
        return Err(UnsupportedInput { width, height, channels });
    }
    Ok(())
}

fn effective_channels(spec: &InputSpec) -> usize {
    spec.channels.clamp(1, 3) as usize
}

/// Where the original image landed in the input canvas.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    /// Original image size.
    pub width: u32,
    pub height: u32,
    /// Size of the resized image inside the canvas.
    pub resized_width: u32,
    pub resized_height: u32,
    /// Offset of the resized image in the canvas: letterbox padding, 0 for stretch, negative
    /// for a centre crop (the part cut off on the left and top).
    pub pad_x: i32,
    pub pad_y: i32,
}

impl Placement {
    /// Input pixels → original pixels (the server maps predicted boxes back with it).
    pub fn inverse(&self) -> InverseTransform {
        InverseTransform {
            scale_x: self.resized_width as f32 / self.width as f32,
            scale_y: self.resized_height as f32 / self.height as f32,
            pad_x: self.pad_x as f32,
            pad_y: self.pad_y as f32,
            width: self.width,
            height: self.height,
        }
    }

    /// Normalised (0..1) original boxes → input pixels (the trainer maps labels with it).
    pub fn box_transform(&self) -> BoxTransform {
        BoxTransform {
            scale_x: self.resized_width as f32,
            scale_y: self.resized_height as f32,
            pad_x: self.pad_x as f32,
            pad_y: self.pad_y as f32,
        }
    }
}

/// One image as the model's input values (batch of one, `spec`'s layout) and where it was placed.
/// The spec must have a non-zero size (see [`check_input`]).
pub fn to_input(img: &RgbImage, spec: &InputSpec) -> (Vec<f32>, Placement) {
    let (w, h) = (spec.width, spec.height);
    let (canvas, placement) = match spec.resize {
        ResizeMode::Stretch => {
            let resized = if img.dimensions() == (w, h) { img.clone() } else { resize(img, w, h) };
            let placement = Placement {
                width: img.width(),
                height: img.height(),
                resized_width: w,
                resized_height: h,
                pad_x: 0,
                pad_y: 0,
            };
            (resized, placement)
        }
        ResizeMode::Letterbox => {
            let s = (w as f32 / img.width() as f32).min(h as f32 / img.height() as f32);
            let nw = ((img.width() as f32 * s).round() as u32).clamp(1, w);
            let nh = ((img.height() as f32 * s).round() as u32).clamp(1, h);
            let resized = resize(img, nw, nh);
            let mut canvas = RgbImage::from_pixel(w, h, image::Rgb([114, 114, 114]));
            let (px, py) = ((w - nw) / 2, (h - nh) / 2);
            image::imageops::replace(&mut canvas, &resized, px as i64, py as i64);
            let placement = Placement {
                width: img.width(),
                height: img.height(),
                resized_width: nw,
                resized_height: nh,
                pad_x: px as i32,
                pad_y: py as i32,
            };
            (canvas, placement)
        }
        ResizeMode::CenterCrop => {
            // Cover (w, h) / cropFraction keeping the aspect ratio, then cut out the centre.
            let f = spec.crop_fraction().clamp(0.1, 1.0);
            let s = (w as f32 / f / img.width() as f32).max(h as f32 / f / img.height() as f32);
            let nw = ((img.width() as f32 * s).round() as u32).max(w);
            let nh = ((img.height() as f32 * s).round() as u32).max(h);
            let resized = resize(img, nw, nh);
            let (ox, oy) = (((nw - w) as f32 / 2.0).round() as u32, ((nh - h) as f32 / 2.0).round() as u32);
            let canvas = image::imageops::crop_imm(&resized, ox, oy, w, h).to_image();
            let placement = Placement {
                width: img.width(),
                height: img.height(),
                resized_width: nw,
                resized_height: nh,
                pad_x: -(ox as i32),
                pad_y: -(oy as i32),
            };
            (canvas, placement)
        }
    };
    (normalise(&canvas, spec), placement)
}

/// A triangle-filtered (bilinear) resize. A large reduction first averages pixel blocks down to
/// twice the target (a box filter), as PIL's `reducing_gap` does: the triangle filter's cost
/// grows with the reduction factor (an 8192² image took 8 s to reach 64²), the block average's
/// does not, and the two agree within a grey level or so on natural images.
pub fn resize(img: &RgbImage, width: u32, height: u32) -> RgbImage {
    if img.width() >= 4 * width && img.height() >= 4 * height {
        let reduced = image::imageops::thumbnail(img, 2 * width, 2 * height);
        return image::imageops::resize(&reduced, width, height, FilterType::Triangle);
    }
    image::imageops::resize(img, width, height, FilterType::Triangle)
}

fn normalise(img: &RgbImage, spec: &InputSpec) -> Vec<f32> {
    let c = effective_channels(spec);
    let mean = |k: usize| spec.mean.get(k).or(spec.mean.first()).copied().unwrap_or(0.0);
    let std = |k: usize| spec.std.get(k).or(spec.std.first()).copied().unwrap_or(1.0);
    let pixel_scale = spec.pixel_scale();
    let scale: Vec<f32> = (0..c).map(|k| pixel_scale / std(k)).collect();
    let shift: Vec<f32> = (0..c).map(|k| mean(k) / std(k)).collect();
    let plane = (img.width() * img.height()) as usize;
    let mut out = vec![0f32; plane * c];
    for (i, p) in img.pixels().enumerate() {
        let vals: [f32; 3] = if c == 1 {
            let l = 0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32;
            [l, 0.0, 0.0]
        } else if spec.channel_order == ChannelOrder::Bgr {
            [p[2] as f32, p[1] as f32, p[0] as f32]
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

/// Input tensor shape of a batch of `n` images.
pub fn batch_shape(spec: &InputSpec, n: usize) -> Vec<usize> {
    let (c, h, w) = (effective_channels(spec), spec.height as usize, spec.width as usize);
    match spec.layout {
        Layout::Nchw => vec![n, c, h, w],
        Layout::Nhwc => vec![n, h, w, c],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_reduction_agrees_with_the_direct_triangle_filter() {
        // A smooth scene with edges: gradients and a few solid discs, 2048² down to 64².
        let img = RgbImage::from_fn(2048, 2048, |x, y| {
            let disc = |cx: i64, cy: i64, r: i64| (x as i64 - cx).pow(2) + (y as i64 - cy).pow(2) < r * r;
            if disc(600, 700, 300) {
                image::Rgb([230, 40, 40])
            } else if disc(1500, 1300, 450) {
                image::Rgb([30, 60, 220])
            } else {
                image::Rgb([(x / 8) as u8, (y / 8) as u8, ((x + y) / 16) as u8])
            }
        });
        let direct = image::imageops::resize(&img, 64, 64, FilterType::Triangle);
        let fast = resize(&img, 64, 64);
        let diffs: Vec<i32> =
            direct.as_raw().iter().zip(fast.as_raw()).map(|(a, b)| (*a as i32 - *b as i32).abs()).collect();
        let mean = diffs.iter().sum::<i32>() as f64 / diffs.len() as f64;
        let max = *diffs.iter().max().unwrap();
        assert!(mean < 1.0 && max <= 24, "mean {mean}, max {max}");
        // Small reductions take the direct filter unchanged.
        let small = RgbImage::from_fn(100, 100, |x, y| image::Rgb([x as u8, y as u8, 0]));
        assert_eq!(resize(&small, 64, 64), image::imageops::resize(&small, 64, 64, FilterType::Triangle));
    }

    fn spec(side: u32, resize: ResizeMode) -> InputSpec {
        InputSpec {
            channels: 3,
            layout: Layout::Nchw,
            mean: vec![0.5],
            std: vec![0.5],
            resize,
            ..InputSpec::new(side, side)
        }
    }

    #[test]
    fn letterbox_maps_boxes_back_to_original_pixels() {
        let img = RgbImage::from_pixel(128, 64, image::Rgb([255, 0, 0]));
        let (t, placement) = to_input(&img, &spec(64, ResizeMode::Letterbox));
        let inv = placement.inverse();
        assert_eq!(t.len(), 3 * 64 * 64);
        assert_eq!(inv.pad_y, 16.0);
        // Content row 16 is red (1.0 after normalisation), padding row 0 is grey.
        assert!((t[16 * 64] - 1.0).abs() < 1e-5);
        assert!((t[0] - (114.0 / 255.0 - 0.5) / 0.5).abs() < 1e-5);
        let b = inv.to_original([0.0, 16.0, 64.0, 48.0]);
        assert_eq!(b, [0.0, 0.0, 128.0, 64.0]);
    }

    #[test]
    fn letterbox_maps_normalised_boxes_into_the_padded_canvas() {
        let img = RgbImage::from_pixel(16, 8, image::Rgb([255, 0, 0]));
        let (data, placement) = to_input(&img, &spec(8, ResizeMode::Letterbox));
        assert_eq!(data.len(), 3 * 64);
        assert_eq!(placement.box_transform().to_input([0.0, 0.0, 1.0, 1.0]), [0.0, 2.0, 8.0, 6.0]);
        // Red channel inside the image is (1 - 0.5) / 0.5 = 1, padding is grey.
        assert!((data[3 * 8 + 4] - 1.0).abs() < 1e-5);
        assert!((data[4] - (114.0 / 255.0 - 0.5) / 0.5).abs() < 1e-5);
    }

    #[test]
    fn nhwc_letterbox_places_labels_and_pixels() {
        let nhwc = InputSpec { width: 8, height: 8, layout: Layout::Nhwc, ..spec(8, ResizeMode::Letterbox) };
        let img = RgbImage::from_pixel(16, 8, image::Rgb([255, 0, 0]));
        let (data, placement) = to_input(&img, &nhwc);
        let t = placement.box_transform();
        assert_eq!(t.to_input([0.0, 0.0, 1.0, 1.0]), [0.0, 2.0, 8.0, 6.0]);
        assert_eq!(batch_shape(&nhwc, 4), vec![4, 8, 8, 3]);
        // NHWC, row 0 is padding (grey), row 2 is red: (1 - 0.5) / 0.5 = 1 in the red channel.
        assert!((data[0] - (114.0 / 255.0 - 0.5) / 0.5).abs() < 1e-5);
        assert!((data[2 * 8 * 3] - 1.0).abs() < 1e-5);
    }

    #[test]
    fn stretch_scales_axes_independently() {
        let img = RgbImage::from_pixel(32, 16, image::Rgb([0, 0, 255]));
        let (t, placement) = to_input(&img, &spec(64, ResizeMode::Stretch));
        assert!((t[2 * 64 * 64] - 1.0).abs() < 1e-5);
        assert_eq!(placement.inverse().to_original([32.0, 32.0, 64.0, 64.0]), [16.0, 8.0, 32.0, 16.0]);
        assert_eq!(placement.box_transform().to_input([0.5, 0.5, 1.0, 1.0]), [32.0, 32.0, 64.0, 64.0]);
    }

    #[test]
    fn grey_nhwc_uses_luma_and_one_channel() {
        let img = RgbImage::from_pixel(4, 4, image::Rgb([255, 255, 255]));
        let grey =
            InputSpec { channels: 1, layout: Layout::Nhwc, mean: vec![], std: vec![], ..spec(4, ResizeMode::Stretch) };
        let (t, _) = to_input(&img, &grey);
        assert_eq!(t.len(), 16);
        assert!(t.iter().all(|v| (v - 1.0).abs() < 1e-5));
        assert_eq!(batch_shape(&grey, 2), vec![2, 4, 4, 1]);
        assert_eq!(batch_shape(&spec(8, ResizeMode::Stretch), 2), vec![2, 3, 8, 8]);
    }

    #[test]
    fn unsupported_inputs_are_named() {
        assert!(check_input(&spec(8, ResizeMode::Stretch)).is_ok());
        let e = check_input(&InputSpec { channels: 2, ..spec(8, ResizeMode::Stretch) }).unwrap_err();
        assert_eq!(e.to_string(), "unsupported model input 8x8x2");
        assert!(check_input(&InputSpec { width: 0, ..spec(8, ResizeMode::Stretch) }).is_err());
    }

    #[test]
    fn bgr_order_and_raw_pixel_scale() {
        let img = RgbImage::from_pixel(2, 2, image::Rgb([200, 100, 50]));
        let raw = InputSpec {
            channel_order: ChannelOrder::Bgr,
            pixel_scale: Some(1.0),
            mean: vec![10.0, 20.0, 30.0],
            std: vec![2.0, 2.0, 2.0],
            ..spec(2, ResizeMode::Stretch)
        };
        let (t, _) = to_input(&img, &raw);
        // Channel 0 is blue: (50 - 10) / 2; channel 2 is red: (200 - 30) / 2.
        assert_eq!((t[0], t[4], t[8]), (20.0, 40.0, 85.0));
    }

    #[test]
    fn center_crop_resizes_the_shorter_side_and_cuts_out_the_middle() {
        // 64x32 → cover 16/0.5 = 32: 64x32 stays, crop the centre 16x16 at (24, 8).
        let mut img = RgbImage::from_pixel(64, 32, image::Rgb([0, 0, 0]));
        for y in 8..24 {
            for x in 24..40 {
                img.put_pixel(x, y, image::Rgb([255, 255, 255]));
            }
        }
        let crop =
            InputSpec { crop_fraction: Some(0.5), mean: vec![], std: vec![], ..spec(16, ResizeMode::CenterCrop) };
        let (t, placement) = to_input(&img, &crop);
        assert_eq!(t.len(), 3 * 16 * 16);
        assert!(t.iter().all(|v| (v - 1.0).abs() < 1e-5), "the crop is the white centre");
        assert_eq!((placement.pad_x, placement.pad_y), (-24, -8));
        // A box over the whole input is the crop's window in the original image.
        assert_eq!(placement.inverse().to_original([0.0, 0.0, 16.0, 16.0]), [24.0, 8.0, 40.0, 24.0]);
        // torchvision's default: 224 of a shorter side of 256.
        let tv = InputSpec { mean: vec![], std: vec![], ..spec(224, ResizeMode::CenterCrop) };
        let (_, p) = to_input(&RgbImage::new(512, 300), &tv);
        assert_eq!((p.resized_width, p.resized_height), (437, 256));
    }
}
