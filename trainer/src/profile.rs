//! `profile`: the reference statistics the inference server compares live traffic with.
//!
//! Features (names as documented on `ReferenceStatistics`): `brightness`, `contrast`,
//! `meanRed`, `meanGreen`, `meanBlue` for every image, `boxArea` (fraction of the image) for
//! every ground-truth box of a detection dataset and, when a model is given, `confidence` of the
//! shapes the model returns above the serving threshold (top-1 for classification). Up to
//! `MAX_VALUES` values per feature are stored as they are; more are reduced to that many evenly
//! spaced quantiles. `contrast` and the three colour means also get a mean and covariance for
//! the Mahalanobis outlier score (`brightness` is left out of it: it is a fixed linear
//! combination of the colour means, which would make the covariance singular).

use flywheel_api::common::Task;
use flywheel_api::model_version::InputSpec;
use flywheel_api::serving::{FeatureDistribution, MultivariateReference, ReferenceStatistics};
use flywheel_api::training::{NamedDataset, NamedModel, ProfileRequest, REFERENCE_STATISTICS_FILE};
use flywheel_storage::Location;
use flywheel_vision::ImageStats;

use crate::dataset::{self, Sample};
use crate::error::{Result, TrainerError};

pub const MAX_VALUES: usize = 1001;
/// The serving default: shapes under it are not returned, so their confidence is not seen live.
const CONFIDENCE_THRESHOLD: f32 = 0.25;

pub async fn run(req: &ProfileRequest, model: Option<&NamedModel>) -> Result<ReferenceStatistics> {
    let out = Location::open(req.output_uri.as_str())?;
    let stats = profile_dataset(&req.dataset, model).await?;
    out.put_json(REFERENCE_STATISTICS_FILE, &stats).await?;
    tracing::info!(uri = %out.child_uri(REFERENCE_STATISTICS_FILE), samples = stats.sample_count, "reference statistics written");
    Ok(stats)
}

/// What profiling keeps of one image: its statistics (computed on the full-resolution pixels,
/// as the inference server computes them live), its boxes' areas and, when a model is given,
/// its model input. The decoded image itself is dropped once these are computed.
pub struct ProfiledImage {
    pub stats: [f64; 5],
    /// Box areas as fractions of the image (detection).
    pub box_areas: Vec<f64>,
    pub input: Option<Vec<f32>>,
}

impl ProfiledImage {
    pub fn new(sample: &Sample, input: Option<&InputSpec>) -> Self {
        ProfiledImage {
            stats: ImageStats::compute(&sample.image).values(),
            box_areas: sample
                .boxes
                .iter()
                .map(|b| ((b.rect[2] - b.rect[0]) * (b.rect[3] - b.rect[1])) as f64)
                .collect(),
            input: input.map(|spec| flywheel_vision::to_input(&sample.image, spec).0),
        }
    }
}

pub async fn profile_dataset(ds: &NamedDataset, model: Option<&NamedModel>) -> Result<ReferenceStatistics> {
    let refs = dataset::read_dataset(ds, &ds.spec.labels).await?;
    let input = model.map(|m| m.spec.input.clone());
    let images = dataset::load_images(&refs, move |s| Ok(ProfiledImage::new(&s, input.as_ref()))).await?;
    if images.is_empty() {
        return Err(TrainerError::dataset(ds.spec.uri.as_str(), "no images to profile"));
    }
    let confidences = match model {
        Some(m) => Some(confidences(m, &images).await?),
        None => None,
    };
    Ok(statistics(ds.spec.task, &images, confidences))
}

pub fn statistics(task: Task, images: &[ProfiledImage], confidences: Option<Vec<f64>>) -> ReferenceStatistics {
    let per_image: Vec<[f64; 5]> = images.iter().map(|s| s.stats).collect();
    let mut features: Vec<FeatureDistribution> = ImageStats::NAMES
        .iter()
        .enumerate()
        .map(|(k, name)| distribution(name, per_image.iter().map(|v| v[k]).collect()))
        .collect();
    if task == Task::Detection {
        let areas = images.iter().flat_map(|s| s.box_areas.iter().copied()).collect();
        features.push(distribution("boxArea", areas));
    }
    if let Some(c) = confidences {
        features.push(distribution("confidence", c));
    }
    // Indices 1..5 of ImageStats::NAMES: contrast, meanRed, meanGreen, meanBlue.
    let multivariate: Vec<[f64; 4]> = per_image.iter().map(|v| [v[1], v[2], v[3], v[4]]).collect();
    let (mean, covariance) = mean_and_covariance(&multivariate);
    ReferenceStatistics {
        version: 1,
        sample_count: images.len() as u64,
        features,
        image_statistics: Some(MultivariateReference {
            features: ImageStats::NAMES[1..].iter().map(|s| s.to_string()).collect(),
            mean,
            covariance,
        }),
    }
}

fn distribution(name: &str, mut values: Vec<f64>) -> FeatureDistribution {
    values.retain(|v| v.is_finite());
    values.sort_by(f64::total_cmp);
    FeatureDistribution { name: name.to_string(), sorted_values: quantiles(&values, MAX_VALUES) }
}

/// `n` evenly spaced quantiles (linear interpolation) of an ascending sample, or the sample
/// itself when it is not larger than `n`.
pub fn quantiles(sorted: &[f64], n: usize) -> Vec<f64> {
    if sorted.len() <= n || n < 2 {
        return sorted.to_vec();
    }
    (0..n)
        .map(|i| {
            let pos = i as f64 * (sorted.len() - 1) as f64 / (n - 1) as f64;
            let (lo, frac) = (pos.floor() as usize, pos.fract());
            let hi = (lo + 1).min(sorted.len() - 1);
            sorted[lo] + (sorted[hi] - sorted[lo]) * frac
        })
        .collect()
}

/// Mean and sample covariance (n - 1) of row vectors.
pub fn mean_and_covariance<const K: usize>(rows: &[[f64; K]]) -> (Vec<f64>, Vec<Vec<f64>>) {
    let n = rows.len() as f64;
    let mean: Vec<f64> = (0..K).map(|k| rows.iter().map(|r| r[k]).sum::<f64>() / n).collect();
    let denom = (n - 1.0).max(1.0);
    let cov = (0..K)
        .map(|i| {
            (0..K).map(|j| rows.iter().map(|r| (r[i] - mean[i]) * (r[j] - mean[j])).sum::<f64>() / denom).collect()
        })
        .collect();
    (mean, cov)
}

/// Confidences of the shapes the model would return for each sample.
async fn confidences(model: &NamedModel, images: &[ProfiledImage]) -> Result<Vec<f64>> {
    let bytes = crate::model::fetch_model(model).await?;
    let uri = model.spec.artifact.uri.to_string();
    let m = flywheel_runtime::Model::from_bytes(&bytes)
        .map_err(|e| TrainerError::Model { uri: uri.clone(), reason: e.to_string() })?;
    let input = m
        .inputs()
        .first()
        .map(|i| i.name.clone())
        .ok_or_else(|| TrainerError::Model { uri: uri.clone(), reason: "no input".into() })?;
    let spec = &model.spec;
    let mut out = Vec::new();
    for image in images {
        let values =
            image.input.as_deref().ok_or_else(|| TrainerError::Training("no model input was prepared".into()))?;
        let x = candle_core::Tensor::from_slice(
            values,
            flywheel_vision::batch_shape(&spec.input, 1),
            &candle_core::Device::Cpu,
        )?;
        let y = m
            .run(&[(input.as_str(), x)])
            .map_err(|e| TrainerError::Model { uri: uri.clone(), reason: e.to_string() })?;
        let y = &y[0].1;
        match spec.task {
            Task::Classification => {
                let row: Vec<f32> = y.flatten_all()?.to_vec1()?;
                let probs =
                    if row.iter().all(|v| (0.0..=1.0).contains(v)) && (row.iter().sum::<f32>() - 1.0).abs() < 1e-3 {
                        row
                    } else {
                        flywheel_vision::decode::softmax(&row)
                    };
                out.push(probs.iter().copied().fold(0.0, f32::max) as f64);
            }
            Task::Detection => {
                let fmt = crate::train::yolo::detect(y.dims(), spec.labels.len())?;
                let dets = crate::train::objective::detections(
                    &fmt,
                    y,
                    CONFIDENCE_THRESHOLD,
                    spec.output.nms_iou_threshold as f32,
                )?;
                out.extend(dets.iter().flatten().map(|d| d.score as f64));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_keep_the_ends_and_interpolate() {
        let v: Vec<f64> = (0..=100).map(|i| i as f64).collect();
        assert_eq!(quantiles(&v, 5), vec![0.0, 25.0, 50.0, 75.0, 100.0]);
        assert_eq!(quantiles(&v[..3], 5), vec![0.0, 1.0, 2.0]);
    }

    #[test]
    fn covariance_of_correlated_rows() {
        let (m, c) = mean_and_covariance(&[[1.0, 2.0], [3.0, 6.0]]);
        assert_eq!(m, vec![2.0, 4.0]);
        assert_eq!(c, vec![vec![2.0, 4.0], vec![4.0, 8.0]]);
    }
}
