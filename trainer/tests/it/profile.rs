//! `profile` on generated datasets: the reference statistics the inference server reads.

use crate::common::*;
use flywheel_api::common::{StorageUri, Task};
use flywheel_api::dataset_version::DatasetFormat;
use flywheel_api::serving::ReferenceStatistics;
use flywheel_api::training::{ProfileRequest, REFERENCE_STATISTICS_FILE};

#[tokio::test]
async fn profile_of_a_generated_detection_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let ds = dataset(dir.path(), "shapes", Task::Detection, DatasetFormat::Coco, 40, 3).await;
    let out = dir.path().join("reference");
    let req = ProfileRequest { dataset: ds, output_uri: StorageUri(file_uri(&out)) };
    let run = std::process::Command::new(BIN)
        .arg("profile")
        .env("FLYWHEEL_REQUEST", serde_json::to_string(&req).unwrap())
        .output()
        .unwrap();
    assert!(run.status.success(), "profile failed: {}", String::from_utf8_lossy(&run.stderr));

    let stats: ReferenceStatistics =
        serde_json::from_slice(&std::fs::read(out.join(REFERENCE_STATISTICS_FILE)).unwrap()).unwrap();
    assert_eq!(stats.version, 1);
    assert_eq!(stats.sample_count, 40);
    let names: Vec<&str> = stats.features.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["brightness", "contrast", "meanRed", "meanGreen", "meanBlue", "boxArea"]);
    let coco: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("shapes/annotations.json")).unwrap()).unwrap();
    let annotations = coco["annotations"].as_array().unwrap();
    for f in &stats.features {
        let expected = if f.name == "boxArea" { annotations.len() } else { 40 };
        assert_eq!(f.sorted_values.len(), expected, "{}", f.name);
        assert!(f.sorted_values.windows(2).all(|w| w[0] <= w[1]), "{} is not sorted", f.name);
        assert!(f.sorted_values.iter().all(|v| (0.0..=1.0).contains(v)), "{} outside 0..1", f.name);
    }
    // Box areas are fractions of the 64x64 image: recompute them from the COCO file.
    let mut areas: Vec<f64> = annotations.iter().map(|a| a["area"].as_f64().unwrap() / (64.0 * 64.0)).collect();
    areas.sort_by(f64::total_cmp);
    let got = &stats.features[5].sorted_values;
    assert!(areas.iter().zip(got).all(|(a, b)| (a - b).abs() < 1e-4), "{areas:?} vs {got:?}");

    let m = stats.image_statistics.expect("image statistics");
    assert_eq!(m.features, ["contrast", "meanRed", "meanGreen", "meanBlue"]);
    let contrast = &stats.features[1].sorted_values;
    let mean_contrast = contrast.iter().sum::<f64>() / contrast.len() as f64;
    assert!((m.mean[0] - mean_contrast).abs() < 1e-9);
    // Invertible, as the server's Mahalanobis score needs: a positive determinant.
    assert!(determinant(&m.covariance) > 0.0, "{:?}", m.covariance);
    for i in 0..4 {
        assert!(m.covariance[i][i] > 0.0, "variance of {} is {}", m.features[i], m.covariance[i][i]);
        for j in 0..4 {
            assert!((m.covariance[i][j] - m.covariance[j][i]).abs() < 1e-12);
        }
    }
}

#[tokio::test]
async fn profile_with_a_model_adds_its_confidence() {
    let dir = tempfile::tempdir().unwrap();
    let ds = dataset(dir.path(), "shapes", Task::Classification, DatasetFormat::Imagefolder, 30, 4).await;
    let model = model(dir.path(), Task::Classification, 1);
    let req = ProfileRequest { dataset: ds, output_uri: StorageUri(file_uri(&dir.path().join("ref"))) };
    let stats = flywheel_trainer::profile::run(&req, Some(&model)).await.unwrap();
    let conf = stats.features.iter().find(|f| f.name == "confidence").expect("confidence feature");
    assert_eq!(conf.sorted_values.len(), 30);
    // Top-1 softmax probability over three classes.
    assert!(conf.sorted_values.iter().all(|v| (1.0 / 3.0 - 1e-6..=1.0).contains(v)));
    assert!(stats.features.iter().all(|f| f.name != "boxArea"));
}

/// Determinant by Gaussian elimination with partial pivoting.
fn determinant(m: &[Vec<f64>]) -> f64 {
    let mut a = m.to_vec();
    let n = a.len();
    let mut det = 1.0;
    for c in 0..n {
        let p = (c..n).max_by(|&x, &y| a[x][c].abs().total_cmp(&a[y][c].abs())).unwrap();
        if p != c {
            a.swap(p, c);
            det = -det;
        }
        det *= a[c][c];
        for r in c + 1..n {
            let f = a[r][c] / a[c][c];
            #[allow(clippy::needless_range_loop)] // row r and row c of one matrix
            for k in c..n {
                a[r][k] -= f * a[c][k];
            }
        }
    }
    det
}
