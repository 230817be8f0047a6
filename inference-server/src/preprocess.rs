//! Image decoding and the transform into a model's input tensor. The transform itself (resize,
//! normalise, layout), the box mapping back to original pixels and the drift statistics live in
//! `flywheel-vision`, shared with the trainer so it trains and profiles on identical inputs.

use bytes::Bytes;
pub use flywheel_vision::{ImageStats, InverseTransform};
use image::{ImageFormat, RgbImage};

use crate::error::ServerError;
use crate::serving::InputSpec;

/// Largest width or height accepted, to bound memory per request.
pub const MAX_IMAGE_SIDE: u32 = 8192;
/// Most pixels one request may decode (about 200 MB as RGB): a batch of small files that each
/// declare a huge image is refused before anything is decoded.
pub const MAX_REQUEST_PIXELS: u64 = 64 * 1024 * 1024;
/// Most pixels being decoded at once over the whole server; beyond it requests get 429.
pub const MAX_PIXELS_IN_FLIGHT: u64 = 3 * MAX_REQUEST_PIXELS;

/// A decoded request image, kept with its original encoding for the prediction log.
pub struct DecodedImage {
    pub rgb: RgbImage,
    pub format: ImageFormat,
}

/// One request image: the original bytes (for the prediction log) and the decoded pixels.
pub struct ImageInput {
    pub bytes: Bytes,
    pub decoded: DecodedImage,
}

/// PNG or JPEG, from the bytes' signature; anything else is a 415 with the reason.
fn served_format(bytes: &[u8]) -> Result<ImageFormat, ServerError> {
    let format = image::guess_format(bytes)
        .map_err(|_| ServerError::UnsupportedMediaType("body is not a PNG or JPEG image".into()))?;
    if !matches!(format, ImageFormat::Png | ImageFormat::Jpeg) {
        return Err(ServerError::UnsupportedMediaType(format!(
            "{format:?} images are not supported; send PNG or JPEG"
        )));
    }
    Ok(format)
}

/// The pixel count PNG or JPEG bytes declare, read from the header only.
pub fn image_pixels(bytes: &[u8]) -> Result<u64, ServerError> {
    let format = served_format(bytes)?;
    let (w, h) = image::ImageReader::with_format(std::io::Cursor::new(bytes), format)
        .into_dimensions()
        .map_err(|e| ServerError::bad_request(format!("cannot read the {format:?} header: {e}")))?;
    if w > MAX_IMAGE_SIDE || h > MAX_IMAGE_SIDE {
        return Err(ServerError::PayloadTooLarge(format!(
            "a {w}x{h} image is larger than {MAX_IMAGE_SIDE} pixels on a side"
        )));
    }
    Ok(w as u64 * h as u64)
}

/// Decodes PNG or JPEG bytes; anything else is a 4xx with the reason.
pub fn decode_image(bytes: &[u8]) -> Result<DecodedImage, ServerError> {
    let format = served_format(bytes)?;
    let mut reader = image::ImageReader::with_format(std::io::Cursor::new(bytes), format);
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(512 * 1024 * 1024);
    reader.limits(limits);
    let img = reader.decode().map_err(|e| ServerError::bad_request(format!("cannot decode {format:?} image: {e}")))?;
    if img.width() == 0 || img.height() == 0 {
        return Err(ServerError::bad_request("image has no pixels"));
    }
    Ok(DecodedImage { rgb: img.to_rgb8(), format })
}

/// Resizes and normalises one image into `spec`'s layout (batch of one).
pub fn to_tensor(img: &RgbImage, spec: &InputSpec) -> Result<(Vec<f32>, InverseTransform), ServerError> {
    flywheel_vision::check_input(spec).map_err(|e| ServerError::Internal(e.to_string()))?;
    let (values, placement) = flywheel_vision::to_input(img, spec);
    Ok((values, placement.inverse()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serving::{Layout, ResizeMode};

    fn spec(resize: ResizeMode, channels: u32) -> InputSpec {
        InputSpec { channels, layout: Layout::Nhwc, mean: vec![0.5], std: vec![0.5], resize, ..InputSpec::new(64, 64) }
    }

    #[test]
    fn serving_spec_reaches_the_shared_transform() {
        let img = RgbImage::from_pixel(128, 64, image::Rgb([255, 0, 0]));
        let (t, inv) = to_tensor(&img, &spec(ResizeMode::Letterbox, 3)).unwrap();
        assert_eq!(t.len(), 3 * 64 * 64);
        assert_eq!(inv.pad_y, 16.0);
        // NHWC: pixel (0, 16) is red, so its three values are 1, -1, -1.
        let px = &t[16 * 64 * 3..16 * 64 * 3 + 3];
        assert!((px[0] - 1.0).abs() < 1e-5 && (px[1] + 1.0).abs() < 1e-5 && (px[2] + 1.0).abs() < 1e-5);
        let e = to_tensor(&img, &spec(ResizeMode::Stretch, 2)).err().unwrap();
        assert_eq!(e.status(), axum::http::StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn non_images_are_rejected_with_reason() {
        let e = decode_image(b"hello").err().unwrap();
        assert_eq!(e.status(), axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let e = decode_image(b"\x89PNG\r\n\x1a\n garbage").err().unwrap();
        assert_eq!(e.status(), axum::http::StatusCode::BAD_REQUEST);
    }
}
