//! Datasets in COCO, YOLO and ImageFolder layouts (defined in `flywheel_types::dataset`), read
//! from any storage location, merged onto the model's label list and split deterministically
//! into train and eval parts.

mod coco;
mod imagefolder;
mod load;
mod split;
mod yolo;

pub use load::{CONCURRENT_DECODES, MAX_IMAGE_PIXELS, check_pixels, decode, load_images};
pub use split::{DEFAULT_EVAL_FRACTION, split_train_eval};

use flywheel_api::dataset_version::{DatasetFormat, DatasetVersionSpec};
use flywheel_api::training::NamedDataset;
use flywheel_storage::Location;

use crate::error::{Result, TrainerError};

/// A ground-truth box: class index into the model's labels and [x1, y1, x2, y2].
#[derive(Clone, Debug, PartialEq)]
pub struct GtBox {
    pub class: usize,
    /// Pixels when read from COCO, fractions of the image when read from YOLO; always
    /// fractions (0..1) once the image is loaded.
    pub rect: [f32; 4],
    pub normalised: bool,
}

/// One annotated image before its pixels are read.
#[derive(Clone, Debug)]
pub struct SampleRef {
    pub location: Location,
    /// Path of the image relative to `location`.
    pub path: String,
    /// The annotation file the sample came from (for error messages).
    pub annotation_file: String,
    /// Class index (classification).
    pub label: Option<usize>,
    /// Boxes (detection).
    pub boxes: Vec<GtBox>,
}

impl SampleRef {
    pub fn uri(&self) -> String {
        self.location.child_uri(&self.path)
    }
}

/// A sample with its decoded full-resolution pixels; boxes are normalised to 0..1. Only exists
/// while [`load_images`] reduces it to what the caller keeps.
#[derive(Clone, Debug)]
pub struct Sample {
    pub uri: String,
    pub image: image::RgbImage,
    pub label: Option<usize>,
    pub boxes: Vec<GtBox>,
}

/// Lists the samples of one dataset with class indices into `labels` (the model's labels).
pub async fn read_dataset(ds: &NamedDataset, labels: &[String]) -> Result<Vec<SampleRef>> {
    let spec: &DatasetVersionSpec = &ds.spec;
    let location = Location::open(spec.uri.as_str())?;
    // A frozen version: only the samples its manifest lists, each checked against its digest.
    let location = match &spec.manifest {
        Some(manifest) => location.frozen(manifest).await?,
        None => location,
    };
    let map = LabelMap::new(&ds.name, &spec.labels, labels)?;
    let samples = match spec.format {
        DatasetFormat::Coco => coco::read(&location, &map).await?,
        DatasetFormat::Yolo => yolo::read(&location, &map).await?,
        DatasetFormat::Imagefolder => imagefolder::read(&location, &map).await?,
    };
    tracing::info!(dataset = %ds.name, uri = %spec.uri, format = ?spec.format, samples = samples.len(), "read dataset");
    Ok(samples)
}

/// Lists and merges several datasets.
pub async fn read_datasets(sets: &[NamedDataset], labels: &[String]) -> Result<Vec<SampleRef>> {
    let mut all = Vec::new();
    for ds in sets {
        all.extend(read_dataset(ds, labels).await?);
    }
    Ok(all)
}

/// Maps a dataset's class names onto the model's class indices.
pub struct LabelMap {
    dataset: String,
    dataset_labels: Vec<String>,
    target: Vec<String>,
}

impl LabelMap {
    pub fn new(dataset: &str, dataset_labels: &[String], target: &[String]) -> Result<Self> {
        if target.is_empty() {
            return Err(TrainerError::Request("the model has no labels".into()));
        }
        Ok(Self { dataset: dataset.to_string(), dataset_labels: dataset_labels.to_vec(), target: target.to_vec() })
    }

    /// Target index of a class name; `None` when the model does not know it.
    pub fn by_name(&self, name: &str) -> Option<usize> {
        self.target.iter().position(|l| l == name)
    }

    /// Target index of the dataset's `i`-th label (YOLO class ids).
    pub fn by_dataset_index(&self, i: usize) -> std::result::Result<usize, String> {
        let name = self.dataset_labels.get(i).ok_or_else(|| {
            format!(
                "class id {i} is out of range: DatasetVersion {} lists {} labels",
                self.dataset,
                self.dataset_labels.len()
            )
        })?;
        self.by_name(name).ok_or_else(|| self.unknown(name))
    }

    pub fn unknown(&self, name: &str) -> String {
        format!("label {name:?} (dataset {}) is not one of the model's labels {:?}", self.dataset, self.target)
    }
}
