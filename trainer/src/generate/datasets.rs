//! Writes generated samples in the three layouts the trainer reads (`flywheel_types::dataset`):
//! COCO (`images/` + `annotations.json`), YOLO (`images/` + `labels/*.txt` + `classes.txt`) and
//! ImageFolder (`<label>/<id>.png`). Annotation files are written after the images, so a stopped
//! run never leaves annotations pointing at missing images. A `domain` other than the source
//! shifts what is drawn (`domains.rs`); the COCO `info` then names it.

use flywheel_api::common::{StorageUri, Task};
use flywheel_api::dataset_version::{DatasetFormat, DatasetVersionSpec};
use flywheel_storage::Location;
use flywheel_types::dataset::coco::{ANNOTATIONS_FILE, CocoDocument};
use flywheel_types::dataset::{self, LabelledImage, yolo};
use futures::{StreamExt, TryStreamExt};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use super::domains::{Domain, Plan};
use super::images;
use crate::error::{Result, TrainerError};

#[derive(Clone, Debug)]
pub struct DatasetOptions {
    pub task: Task,
    pub format: DatasetFormat,
    pub count: usize,
    pub size: u32,
    pub labels: Vec<String>,
    pub seed: u64,
    /// Most shapes per detection image.
    pub max_objects: usize,
    /// The source domain (the default) or shifted target domains of the same classes.
    pub domain: Domain,
}

impl DatasetOptions {
    pub fn new(task: Task, format: DatasetFormat, count: usize) -> Self {
        Self {
            task,
            format,
            count,
            size: 64,
            labels: images::DEFAULT_LABELS.iter().map(|s| s.to_string()).collect(),
            seed: 1,
            max_objects: 3,
            domain: Domain::default(),
        }
    }
}

struct Generated {
    id: String,
    png: Vec<u8>,
    class: usize,
    boxes: Vec<(usize, [f32; 4])>,
}

fn png(img: &image::RgbImage) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).expect("PNG encoding of an in-memory image");
    out.into_inner()
}

/// Generates the samples (deterministic for a seed) without writing them.
fn generate(opts: &DatasetOptions, plan: &Plan) -> Vec<Generated> {
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let classes = opts.labels.len();
    (0..opts.count)
        .map(|i| {
            let id = format!("{:06}", i);
            let style = plan.style(i);
            match opts.task {
                Task::Classification => {
                    let class = i % classes;
                    let img = images::classification_image(&mut rng, opts.size, class, &style);
                    Generated { id, png: png(&plan.finish(img, i)), class, boxes: vec![] }
                }
                Task::Detection => {
                    let (img, boxes) = images::detection_image(&mut rng, opts.size, classes, opts.max_objects, &style);
                    Generated { id, png: png(&plan.finish(img, i)), class: 0, boxes }
                }
            }
        })
        .collect()
}

/// Writes a generated dataset under `location` and returns the DatasetVersion spec describing it.
pub async fn write_dataset(location: &Location, opts: &DatasetOptions) -> Result<DatasetVersionSpec> {
    opts.format.check_holds(opts.task).map_err(|e| TrainerError::Request(format!("generated dataset: {e}")))?;
    if opts.labels.is_empty() || opts.count == 0 {
        return Err(TrainerError::Request("a generated dataset needs at least one label and one image".into()));
    }
    let plan = opts.domain.plan(&opts.labels, opts.seed).map_err(|e| TrainerError::Request(format!("domain: {e}")))?;
    let samples = tokio::task::spawn_blocking({
        let opts = opts.clone();
        move || generate(&opts, &plan)
    })
    .await
    .map_err(|e| TrainerError::Training(e.to_string()))?;
    fn labelled<'a>(s: &'a Generated, opts: &'a DatasetOptions) -> LabelledImage<'a> {
        LabelledImage {
            id: &s.id,
            ext: "png",
            width: opts.size,
            height: opts.size,
            label: (opts.task == Task::Classification).then(|| opts.labels[s.class].as_str()),
            boxes: s.boxes.iter().map(|(c, r)| (opts.labels[*c].as_str(), *r)).collect(),
        }
    }
    futures::stream::iter(samples.iter().map(|s| {
        let path = dataset::image_path(opts.format, &labelled(s, opts));
        async move { location.put(&path, s.png.clone()).await }
    }))
    .buffer_unordered(16)
    .try_collect::<Vec<()>>()
    .await?;
    match opts.format {
        DatasetFormat::Coco => {
            let mut doc = CocoDocument::new(&opts.labels, "Flywheel synthetic shapes");
            let mut info = json!({"description": "Flywheel synthetic shapes", "seed": opts.seed});
            if !opts.domain.is_source() {
                info["domain"] = json!(opts.domain.to_string());
                info["severity"] = json!(opts.domain.severity());
            }
            doc.extra.insert("info".into(), info);
            for s in &samples {
                doc.upsert(&labelled(s, opts));
            }
            location.put(ANNOTATIONS_FILE, doc.to_bytes()).await?;
        }
        DatasetFormat::Yolo => {
            let files = samples
                .iter()
                .map(|s| {
                    let sample = labelled(s, opts);
                    let text = yolo::label_file(&sample, &opts.labels).map_err(|e| TrainerError::Request(e.0))?;
                    Ok((yolo::label_path(&dataset::image_path(opts.format, &sample)), text))
                })
                .collect::<Result<Vec<_>>>()?;
            let writes =
                files.into_iter().map(|(path, text)| async move { location.put(&path, text.into_bytes()).await });
            futures::stream::iter(writes).buffer_unordered(16).try_collect::<Vec<()>>().await?;
            location.put(yolo::CLASSES_FILE, yolo::classes_file(&opts.labels).into_bytes()).await?;
        }
        DatasetFormat::Imagefolder => {}
    }
    Ok(DatasetVersionSpec {
        uri: StorageUri(location.uri().to_string()),
        format: opts.format,
        task: opts.task,
        labels: opts.labels.clone(),
        parent: None,
        feedback: false,
        manifest: None,
        credentials: None,
    })
}
