//! The shifts matter to a model: the generated classifier fine-tuned on the source domain
//! classifies source images well and loses accuracy on shifted ones; fine-tuning it on the
//! shifted domain (what the retraining loop does with reviewed samples) brings it back.

use std::collections::BTreeMap;
use std::path::Path;

use flywheel_api::common::Task;
use flywheel_api::dataset_version::DatasetFormat;
use flywheel_api::model_version::ModelVersionSpec;
use flywheel_api::training::{NamedDataset, NamedModel};
use flywheel_storage::Location;
use flywheel_trainer::generate::{DatasetOptions, Domain, SHIFT_NAMES, write_dataset};

use crate::common::{file_uri, model, request};

async fn dataset(dir: &Path, name: &str, domain: &str, count: usize, seed: u64) -> NamedDataset {
    let mut opts = DatasetOptions::new(Task::Classification, DatasetFormat::Imagefolder, count);
    opts.seed = seed;
    opts.domain = Domain::parse(domain, 1.0).unwrap();
    let spec = write_dataset(&Location::open(&file_uri(&dir.join(name))).unwrap(), &opts).await.unwrap();
    NamedDataset { name: name.into(), spec }
}

/// Top-1 accuracy of `spec`'s model on an ImageFolder dataset, through the runtime and the
/// server's pre-processing.
fn accuracy(spec: &ModelVersionSpec, root: &Path) -> f64 {
    let path = spec.artifact.uri.as_str().strip_prefix("file://").unwrap();
    let m = flywheel_runtime::Model::from_bytes(&std::fs::read(path).unwrap()).unwrap();
    let input = m.inputs()[0].name.clone();
    let (mut right, mut total) = (0, 0);
    for (class, label) in spec.labels.iter().enumerate() {
        for entry in std::fs::read_dir(root.join(label)).unwrap() {
            let img = image::open(entry.unwrap().path()).unwrap().to_rgb8();
            let (values, _) = flywheel_vision::to_input(&img, &spec.input);
            let x = candle_core::Tensor::from_slice(
                &values,
                flywheel_vision::batch_shape(&spec.input, 1),
                &candle_core::Device::Cpu,
            )
            .unwrap();
            let logits: Vec<f32> =
                m.run(&[(input.as_str(), x)]).unwrap()[0].1.flatten_all().unwrap().to_vec1().unwrap();
            let best = (0..logits.len()).max_by(|&a, &b| logits[a].total_cmp(&logits[b])).unwrap();
            right += (best == class) as usize;
            total += 1;
        }
    }
    right as f64 / total as f64
}

/// Fine-tunes `base` on `train` for `epochs` and returns the new model's spec.
async fn fine_tune(dir: &Path, base: NamedModel, train: NamedDataset, run: &str, epochs: u32) -> NamedModel {
    let result =
        flywheel_trainer::train::run(&request(base.clone(), vec![train], &dir.join(run), epochs, 0.05)).await.unwrap();
    let mut spec = base.spec;
    spec.artifact.uri = result.model_uri;
    spec.artifact.sha256 = Some(result.sha256);
    NamedModel { name: run.into(), spec }
}

#[tokio::test]
async fn a_source_model_loses_accuracy_on_a_shifted_domain_and_fine_tuning_brings_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let source_train = dataset(dir.path(), "source-train", "source", 90, 41).await;
    let good = fine_tune(dir.path(), model(dir.path(), Task::Classification, 1), source_train, "good", 3).await;

    let mut acc = BTreeMap::new();
    for domain in std::iter::once(&"source").chain(SHIFT_NAMES) {
        let test = dataset(dir.path(), &format!("test-{domain}"), domain, 60, 42).await;
        acc.insert(*domain, accuracy(&good.spec, &dir.path().join(&test.name)));
    }
    eprintln!("source classifier accuracy per domain: {acc:?}");
    assert!(acc["source"] >= 0.8, "{acc:?}");
    // The classes differ by hue first: a warm cast and a recoloured class (red circles drawn in
    // the squares' green) cost the most.
    assert!(acc["warm"] <= acc["source"] - 0.3, "{acc:?}");
    assert!(acc["recolor"] <= acc["source"] - 0.2, "{acc:?}");

    // Reviewed samples of the new domain, as the retraining loop would train on.
    let warm_train = dataset(dir.path(), "warm-train", "warm", 90, 43).await;
    let back = fine_tune(dir.path(), good, warm_train, "back", 5).await;
    let recovered = accuracy(&back.spec, &dir.path().join("test-warm"));
    eprintln!("warm accuracy {} -> {recovered}", acc["warm"]);
    assert!(recovered >= acc["warm"] + 0.3, "fine-tuned on warm images: {recovered} (was {acc:?})");
}
