//! Writes generated samples in the three layouts the trainer reads: COCO (`images/` +
//! `annotations.json`), YOLO (`images/` + `labels/*.txt` + `classes.txt`) and ImageFolder
//! (`<label>/<id>.png`). Annotation files are written after the images, so a stopped run never
//! leaves annotations pointing at missing images.

use flywheel_api::common::{StorageUri, Task};
use flywheel_api::dataset_version::{DatasetFormat, DatasetVersionSpec};
use flywheel_storage::Location;
use futures::{StreamExt, TryStreamExt};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::json;

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
fn generate(opts: &DatasetOptions) -> Vec<Generated> {
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let classes = opts.labels.len();
    (0..opts.count)
        .map(|i| {
            let id = format!("{:06}", i);
            match opts.task {
                Task::Classification => {
                    let class = i % classes;
                    Generated {
                        id,
                        png: png(&images::classification_image(&mut rng, opts.size, class)),
                        class,
                        boxes: vec![],
                    }
                }
                Task::Detection => {
                    let (img, boxes) = images::detection_image(&mut rng, opts.size, classes, opts.max_objects);
                    Generated { id, png: png(&img), class: 0, boxes }
                }
            }
        })
        .collect()
}

/// Writes a generated dataset under `location` and returns the DatasetVersion spec describing it.
pub async fn write_dataset(location: &Location, opts: &DatasetOptions) -> Result<DatasetVersionSpec> {
    let layout_ok = matches!(
        (opts.task, opts.format),
        (Task::Classification, DatasetFormat::Imagefolder)
            | (Task::Detection, DatasetFormat::Coco | DatasetFormat::Yolo)
    );
    if !layout_ok {
        return Err(TrainerError::Request(format!(
            "a generated {} dataset cannot be written as {}: use imagefolder for classification, coco or yolo for detection",
            opts.task.as_str(),
            format!("{:?}", opts.format).to_lowercase()
        )));
    }
    if opts.labels.is_empty() || opts.count == 0 {
        return Err(TrainerError::Request("a generated dataset needs at least one label and one image".into()));
    }
    let samples = tokio::task::spawn_blocking({
        let opts = opts.clone();
        move || generate(&opts)
    })
    .await
    .map_err(|e| TrainerError::Training(e.to_string()))?;
    let image_path = |s: &Generated| match opts.format {
        DatasetFormat::Imagefolder => format!("{}/{}.png", opts.labels[s.class], s.id),
        _ => format!("images/{}.png", s.id),
    };
    futures::stream::iter(samples.iter().map(|s| {
        let path = image_path(s);
        async move { location.put(&path, s.png.clone()).await }
    }))
    .buffer_unordered(16)
    .try_collect::<Vec<()>>()
    .await?;
    let size = opts.size as f32;
    match opts.format {
        DatasetFormat::Coco => {
            let images: Vec<_> = samples
                .iter()
                .enumerate()
                .map(|(i, s)| json!({"id": i + 1, "file_name": format!("{}.png", s.id), "width": opts.size, "height": opts.size}))
                .collect();
            let mut annotations = Vec::new();
            for (i, s) in samples.iter().enumerate() {
                for (class, r) in &s.boxes {
                    let (w, h) = (r[2] - r[0], r[3] - r[1]);
                    annotations.push(json!({
                        "id": annotations.len() + 1, "image_id": i + 1, "category_id": class + 1,
                        "bbox": [r[0], r[1], w, h], "area": w * h, "iscrowd": 0
                    }));
                }
            }
            let categories: Vec<_> = opts
                .labels
                .iter()
                .enumerate()
                .map(|(i, l)| json!({"id": i + 1, "name": l, "supercategory": "shape"}))
                .collect();
            let doc = json!({
                "info": {"description": "Flywheel synthetic shapes", "seed": opts.seed},
                "images": images, "annotations": annotations, "categories": categories
            });
            location.put_json("annotations.json", &doc).await?;
        }
        DatasetFormat::Yolo => {
            let writes = samples.iter().map(|s| {
                let text: String = s
                    .boxes
                    .iter()
                    .map(|(c, r)| {
                        let (cx, cy, w, h) = (
                            (r[0] + r[2]) / 2.0 / size,
                            (r[1] + r[3]) / 2.0 / size,
                            (r[2] - r[0]) / size,
                            (r[3] - r[1]) / size,
                        );
                        format!("{c} {cx:.6} {cy:.6} {w:.6} {h:.6}\n")
                    })
                    .collect();
                let path = format!("labels/{}.txt", s.id);
                async move { location.put(&path, text.into_bytes()).await }
            });
            futures::stream::iter(writes).buffer_unordered(16).try_collect::<Vec<()>>().await?;
            location.put("classes.txt", opts.labels.join("\n").into_bytes()).await?;
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
        credentials: None,
    })
}
