//! The shifts are visible to the drift monitor: the reference statistics `profile` computes (the
//! features and implementation the inference server compares live traffic with) of a shifted
//! dataset differ from the source's by a two-sample KS statistic above the alert threshold of
//! the shipped rules (`charts/flywheel/files/alerts.yaml`: `flywheel_drift_ks > 0.3`), while two
//! source datasets with different seeds stay below the 0.1% significance bound. `recolor` is the
//! exception by design: one class changing colour moves whole-image colour means only a little
//! (significant, under the alert); it is the drift a model sees (`model.rs`).

use std::path::Path;

use flywheel_api::common::Task;
use flywheel_api::dataset_version::DatasetFormat;
use flywheel_api::serving::ReferenceStatistics;
use flywheel_api::training::NamedDataset;
use flywheel_storage::Location;
use flywheel_trainer::generate::{DatasetOptions, Domain, SHIFT_NAMES, write_dataset};
use flywheel_vision::stats::ks_statistic;

use crate::common::file_uri;

/// The alert threshold of the shipped Prometheus rules.
const ALERT_KS: f64 = 0.3;
const COUNT: usize = 200;
/// Two samples of 200 from one distribution exceed a KS statistic of 1.95 * sqrt(2 / 200) =
/// 0.195 with probability 0.1%.
const SIGNIFICANT_KS: f64 = 0.2;

async fn profile(dir: &Path, name: &str, domain: &str, seed: u64) -> ReferenceStatistics {
    let mut opts = DatasetOptions::new(Task::Detection, DatasetFormat::Coco, COUNT);
    opts.seed = seed;
    opts.domain = Domain::parse(domain, 1.0).unwrap();
    let spec = write_dataset(&Location::open(&file_uri(&dir.join(name))).unwrap(), &opts).await.unwrap();
    flywheel_trainer::profile::profile_dataset(&NamedDataset { name: name.into(), spec }, None).await.unwrap()
}

/// KS per monitored feature, largest first.
fn drift(reference: &ReferenceStatistics, live: &ReferenceStatistics) -> Vec<(String, f64)> {
    let mut out: Vec<(String, f64)> = reference
        .features
        .iter()
        .map(|f| {
            let other = live.features.iter().find(|g| g.name == f.name).unwrap();
            (f.name.clone(), ks_statistic(&f.sorted_values, &other.sorted_values))
        })
        .collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1));
    out
}

#[tokio::test]
async fn every_shift_drifts_past_the_alert_threshold_and_a_new_source_sample_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let reference = profile(dir.path(), "reference", "source", 1).await;
    assert_eq!(reference.features.len(), 6, "brightness, contrast, meanRed/Green/Blue, boxArea");
    let same = drift(&reference, &profile(dir.path(), "source-2", "source", 2).await);
    assert!(same[0].1 < SIGNIFICANT_KS, "two source samples drift apart: {same:?}");
    for shift in SHIFT_NAMES {
        let shifted = drift(&reference, &profile(dir.path(), shift, shift, 2).await);
        let (feature, ks) = &shifted[0];
        if *shift == "recolor" {
            // Red circles turn green: meanRed, below the alert but beyond chance.
            assert_eq!(feature, "meanRed", "{shifted:?}");
            assert!(*ks > SIGNIFICANT_KS, "recolor is invisible to the drift monitor: {shifted:?}");
        } else {
            assert!(*ks > ALERT_KS, "{shift} is invisible to the drift monitor: {shifted:?}");
        }
    }
}
