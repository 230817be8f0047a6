//! Reads and decodes the images of a sample list, a few at a time, keeping the list's order.

use futures::{StreamExt, TryStreamExt};

use super::{Sample, SampleRef};
use crate::error::{Result, TrainerError};

/// Concurrent reads (object stores answer slowly per request but in parallel).
const CONCURRENT_READS: usize = 16;

pub async fn load_images(refs: &[SampleRef]) -> Result<Vec<Sample>> {
    futures::stream::iter(refs.iter().cloned().map(load_one)).buffered(CONCURRENT_READS).try_collect().await
}

async fn load_one(r: SampleRef) -> Result<Sample> {
    let uri = r.uri();
    let bytes = match r.location.get_opt(&r.path).await? {
        Some(b) => b,
        None => {
            return Err(TrainerError::dataset(&uri, format!("image is missing (listed in {})", r.annotation_file)));
        }
    };
    let image = tokio::task::spawn_blocking(move || image::load_from_memory(&bytes).map(|i| i.to_rgb8()))
        .await
        .map_err(|e| TrainerError::Training(e.to_string()))?
        .map_err(|e| TrainerError::dataset(&uri, format!("cannot decode image: {e}")))?;
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
