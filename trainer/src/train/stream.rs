//! Training and eval data streamed from storage one batch at a time: a batch's images are read,
//! decoded, augmented (training only) and pre-processed when it is needed, while the previous
//! batch trains; nothing of the dataset but its sample list stays in memory between batches.

use std::collections::HashMap;
use std::sync::Arc;

use flywheel_api::common::Task;
use flywheel_api::model_version::{InputSpec, ModelVersionSpec};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tokio::task::JoinHandle;

use super::augment::{self, Draw};
use super::objective::Prepared;
use super::options::AugmentOptions;
use crate::dataset::{self, SampleRef};
use crate::error::{Result, TrainerError};

/// Augmentation works on images at most this many times the model's input size.
const AUGMENT_MAX_SCALE: u32 = 2;

/// How a batch's images become model inputs.
#[derive(Clone)]
pub struct Loader {
    input: InputSpec,
    classification: bool,
    augment: Option<AugmentOptions>,
}

impl Loader {
    pub fn new(spec: &ModelVersionSpec, augment: Option<AugmentOptions>) -> Self {
        Self { input: spec.input.clone(), classification: spec.task == Task::Classification, augment }
    }

    /// The same loader without augmentation (for evaluation).
    pub fn plain(&self) -> Self {
        Self { augment: None, ..self.clone() }
    }

    /// Reads and pre-processes `refs` (in order). `seed` draws the augmentation: per sample,
    /// from the seed and the image's path in its dataset.
    pub async fn load(&self, refs: Vec<SampleRef>, seed: u64) -> Result<Prepared> {
        if self.classification
            && let Some(r) = refs.iter().find(|r| r.label.is_none())
        {
            return Err(TrainerError::dataset(r.uri(), "a classification sample needs a label"));
        }
        let input = self.input.clone();
        let augment = self.augment.clone();
        // Draws depend on the sample's path inside its dataset, not on where it is stored.
        let seeds: HashMap<String, u64> = refs.iter().map(|r| (r.uri(), seed ^ fnv1a(r.path.as_bytes()))).collect();
        let rows = dataset::load_images(&refs, move |s| {
            let (image, boxes) = match &augment {
                Some(o) => {
                    let mut rng = ChaCha8Rng::seed_from_u64(seeds.get(&s.uri).copied().unwrap_or(seed));
                    let d = Draw::random(o, &mut rng);
                    let m = AUGMENT_MAX_SCALE;
                    let image = augment::shrink(s.image, input.width * m, input.height * m);
                    augment::apply(image, s.boxes, &d)
                }
                None => (s.image, s.boxes),
            };
            let (values, placement) = flywheel_vision::to_input(&image, &input);
            let t = placement.box_transform();
            let boxes: Vec<(usize, [f32; 4])> = boxes.iter().map(|b| (b.class, t.to_input(b.rect))).collect();
            Ok((values, s.label.unwrap_or(0), boxes))
        })
        .await?;
        let mut p = Prepared { inputs: Vec::with_capacity(rows.len()), labels: Vec::new(), boxes: Vec::new() };
        for (values, label, boxes) in rows {
            p.inputs.push(values);
            p.labels.push(label);
            p.boxes.push(boxes);
        }
        Ok(p)
    }
}

/// Batches loaded one ahead: the next batch is read while the caller works on the current one.
pub struct Prefetch {
    loader: Arc<Loader>,
    batches: std::vec::IntoIter<(Vec<SampleRef>, u64)>,
    next: Option<JoinHandle<Result<Prepared>>>,
}

impl Prefetch {
    /// `batches`: the sample lists with their augmentation seeds.
    pub fn new(loader: Loader, batches: Vec<(Vec<SampleRef>, u64)>) -> Self {
        let mut p = Self { loader: Arc::new(loader), batches: batches.into_iter(), next: None };
        p.start_next();
        p
    }

    fn start_next(&mut self) {
        self.next = self.batches.next().map(|(refs, seed)| {
            let loader = self.loader.clone();
            tokio::spawn(async move { loader.load(refs, seed).await })
        });
    }

    /// The next batch; the one after it starts loading once this one is in (one batch's
    /// images are decoded at a time, so the memory bound of `load_images` holds).
    pub async fn next(&mut self) -> Option<Result<Prepared>> {
        let handle = self.next.take()?;
        let batch = handle.await.map_err(|e| TrainerError::Training(format!("loading a batch: {e}"))).and_then(|r| r);
        if batch.is_ok() {
            self.start_next();
        }
        Some(batch)
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        if let Some(h) = self.next.take() {
            h.abort();
        }
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, b| (h ^ *b as u64).wrapping_mul(0x100000001b3))
}
