//! Reads and decodes the images of a sample list, keeping the list's order, and reduces each
//! image right away to what the caller needs (the model input, statistics), so the decoded
//! full-resolution pixels of at most [`CONCURRENT_DECODES`] images, and of at most
//! [`DECODE_PIXEL_BUDGET`] pixels, are in memory at any time in the whole process (a batch
//! prefetched while another loads shares the same bound).
//!
//! An image whose header declares more than [`MAX_IMAGE_PIXELS`] pixels is refused before it is
//! decoded.

use std::io::Cursor;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use image::{ImageReader, Limits, RgbImage};
use tokio::sync::Semaphore;

use super::{Sample, SampleRef};
use crate::error::{Result, TrainerError};

/// Concurrent reads (object stores answer slowly per request but in parallel). Only the
/// encoded bytes of these are held.
const CONCURRENT_READS: usize = 16;
/// Images decoded (and held at full resolution) at once.
pub const CONCURRENT_DECODES: usize = 2;
/// Pixels decoded at once (16 Mi: one 4096x4096 image, whose decoder holds about twice its
/// 48 MiB of RGB at its peak). Two such images decoding together would double the peak.
pub const DECODE_PIXEL_BUDGET: u64 = 16 * 1024 * 1024;
/// Pixels per decode permit.
const PIXELS_PER_PERMIT: u64 = 64 * 1024;
const PIXEL_PERMITS: u32 = (DECODE_PIXEL_BUDGET / PIXELS_PER_PERMIT) as u32;
/// The process-wide decode permits: images, and pixels.
static DECODES: Semaphore = Semaphore::const_new(CONCURRENT_DECODES);
static PIXELS: Semaphore = Semaphore::const_new(PIXEL_PERMITS as usize);
/// Most pixels an image may declare: 64 Mi (8192x8192), the inference server's limit for one
/// request (`MAX_REQUEST_PIXELS`), about 192 MiB as 8-bit RGB.
pub const MAX_IMAGE_PIXELS: u64 = 64 * 1024 * 1024;
/// Most bytes a decoder may allocate: a 64 Mi pixel image with four 16-bit channels.
const MAX_DECODE_ALLOC: u64 = MAX_IMAGE_PIXELS * 8;

/// Reads, decodes and checks every sample (boxes normalised to 0..1 and inside the image), and
/// returns `reduce` of each, in `refs`' order. `reduce` runs on a blocking thread and gets the
/// full-resolution sample, which is dropped as soon as it returns.
pub async fn load_images<T, F>(refs: &[SampleRef], reduce: F) -> Result<Vec<T>>
where
    T: Send + 'static,
    F: Fn(Sample) -> Result<T> + Send + Sync + 'static,
{
    let reduce = Arc::new(reduce);
    futures::stream::iter(refs.iter().cloned().map(|r| load_one(r, reduce.clone())))
        .buffered(CONCURRENT_READS)
        .try_collect()
        .await
}

async fn load_one<T, F>(r: SampleRef, reduce: Arc<F>) -> Result<T>
where
    T: Send + 'static,
    F: Fn(Sample) -> Result<T> + Send + Sync + 'static,
{
    let uri = r.uri();
    let bytes = match r.location.get_opt(&r.path).await? {
        Some(b) => b,
        None => {
            return Err(TrainerError::dataset(&uri, format!("image is missing (listed in {})", r.annotation_file)));
        }
    };
    // The header's size (a cheap read) weighs the decode; a larger image than the budget takes
    // all of it. An unreadable header is reported by `decode`.
    let pixels = ImageReader::new(Cursor::new(&bytes[..]))
        .with_guessed_format()
        .ok()
        .and_then(|r| r.into_dimensions().ok())
        .map_or(0, |(w, h)| u64::from(w) * u64::from(h));
    let weight = pixels.div_ceil(PIXELS_PER_PERMIT).clamp(1, u64::from(PIXEL_PERMITS)) as u32;
    let failed = |e: tokio::sync::AcquireError| TrainerError::Training(e.to_string());
    let permit = DECODES.acquire().await.map_err(failed)?;
    let pixel_permit = PIXELS.acquire_many(weight).await.map_err(failed)?;
    tokio::task::spawn_blocking(move || {
        let image = decode(&bytes, &uri)?;
        drop(bytes);
        let sample = checked_sample(r, uri, image)?;
        let reduced = reduce(sample);
        drop((permit, pixel_permit));
        reduced
    })
    .await
    .map_err(|e| TrainerError::Training(e.to_string()))?
}

/// Decodes PNG or JPEG bytes to 8-bit RGB after checking the pixel count the header declares.
pub fn decode(bytes: &[u8], uri: &str) -> Result<RgbImage> {
    let reader = || {
        ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| TrainerError::dataset(uri, format!("cannot decode image: {e}")))
    };
    let (w, h) =
        reader()?.into_dimensions().map_err(|e| TrainerError::dataset(uri, format!("cannot decode image: {e}")))?;
    check_pixels(w, h).map_err(|reason| TrainerError::dataset(uri, reason))?;
    let mut limits = Limits::default();
    // The decoder may not produce more than the header declared.
    limits.max_image_width = Some(w);
    limits.max_image_height = Some(h);
    limits.max_alloc = Some(MAX_DECODE_ALLOC);
    let mut reader = reader()?;
    reader.limits(limits);
    let image = reader.decode().map_err(|e| TrainerError::dataset(uri, format!("cannot decode image: {e}")))?;
    // No copy when the image already is 8-bit RGB.
    Ok(image.into_rgb8())
}

/// Refuses an empty image or one of more than [`MAX_IMAGE_PIXELS`] pixels.
pub fn check_pixels(width: u32, height: u32) -> std::result::Result<(), String> {
    let pixels = width as u64 * height as u64;
    if pixels == 0 {
        return Err(format!("the image is {width}x{height}: it has no pixels"));
    }
    if pixels > MAX_IMAGE_PIXELS {
        return Err(format!(
            "the image header declares {width}x{height} = {pixels} pixels, more than the limit of \
             {MAX_IMAGE_PIXELS} (64 Mi) pixels per image; downscale it"
        ));
    }
    Ok(())
}

/// The sample with its pixels; COCO pixel boxes normalised, every box checked against the image.
fn checked_sample(r: SampleRef, uri: String, image: RgbImage) -> Result<Sample> {
    let (w, h) = (image.width() as f32, image.height() as f32);
    let mut boxes = r.boxes;
    for b in &mut boxes {
        if !b.normalised {
            b.rect = [b.rect[0] / w, b.rect[1] / h, b.rect[2] / w, b.rect[3] / h];
            b.normalised = true;
        }
        // The same tolerance on every edge: a box past the left or top is as wrong as one past
        // the right or bottom, and neither is clamped silently.
        if b.rect[0] < -0.001 || b.rect[1] < -0.001 || b.rect[2] > 1.001 || b.rect[3] > 1.001 {
            return Err(TrainerError::dataset(
                &r.annotation_file,
                format!("a box of {uri} extends beyond the {}x{} image", image.width(), image.height()),
            ));
        }
        for v in &mut b.rect {
            *v = v.clamp(0.0, 1.0);
        }
    }
    Ok(Sample { uri, image, label: r.label, boxes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pixel_limit_is_the_servers() {
        assert!(check_pixels(8192, 8192).is_ok());
        assert!(check_pixels(1, 64 * 1024 * 1024).is_ok());
        let e = check_pixels(8192, 8193).unwrap_err();
        assert!(e.contains("8192x8193") && e.contains("67117056 pixels") && e.contains("67108864"), "{e}");
        assert!(check_pixels(u32::MAX, u32::MAX).is_err());
        assert!(check_pixels(0, 10).unwrap_err().contains("no pixels"));
    }
}
