//! `pvc://<claim>/<path>` URIs resolve below FLYWHEEL_PVC_ROOT (where a Job mounts its claims).

use std::process::Command;

use crate::common::BIN;
use flywheel_api::common::StorageUri;
use flywheel_api::dataset_version::DatasetVersionSpec;
use flywheel_api::serving::ReferenceStatistics;
use flywheel_api::training::{NamedDataset, ProfileRequest};

#[test]
fn generate_and_profile_through_pvc_uris() {
    let root = tempfile::tempdir().unwrap();
    let run = |args: &[&str], request: Option<String>| {
        let mut cmd = Command::new(BIN);
        cmd.args(args).env("FLYWHEEL_PVC_ROOT", root.path());
        if let Some(r) = request {
            cmd.env("FLYWHEEL_REQUEST", r);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    };
    let stdout = run(
        &[
            "generate",
            "dataset",
            "--task",
            "classification",
            "--format",
            "imagefolder",
            "--count",
            "9",
            "--out",
            "pvc://datasets/shapes/v1",
        ],
        None,
    );
    let spec: DatasetVersionSpec = serde_json::from_slice(&stdout).unwrap();
    assert_eq!(spec.uri.as_str(), "pvc://datasets/shapes/v1");
    assert!(root.path().join("datasets/shapes/v1/circle/000000.png").is_file());
    let req = ProfileRequest {
        dataset: NamedDataset { name: "shapes".into(), spec },
        output_uri: StorageUri("pvc://datasets/shapes/v1-profile".into()),
    };
    run(&["profile"], Some(serde_json::to_string(&req).unwrap()));
    let stats: ReferenceStatistics = serde_json::from_slice(
        &std::fs::read(root.path().join("datasets/shapes/v1-profile/reference-statistics.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(stats.sample_count, 9);
}
