//! Without `--domain` the generator writes exactly what it wrote before domains existed: the
//! tests, the e2e suite and the demo keep their data for the same seed.

use flywheel_trainer::model::sha256_hex;

use super::{files, generate};

/// SHA-256 over each file's path and content, where a PNG's content is its decoded RGB pixels
/// (so the pin is on the data, not on the PNG encoder's choices).
fn content_hash(root: &std::path::Path) -> String {
    let mut all = Vec::new();
    for (path, bytes) in files(root) {
        all.extend_from_slice(path.as_bytes());
        all.push(0);
        if path.ends_with(".png") {
            all.extend_from_slice(image::load_from_memory(&bytes).unwrap().to_rgb8().as_raw());
        } else {
            all.extend_from_slice(&bytes);
        }
        all.push(0);
    }
    sha256_hex(&all)
}

/// Pinned from the generator as it was before `--domain` was added.
const PINNED: [(&str, &str, &str); 3] = [
    ("detection", "coco", "c459c1f3747f1c822ea5e5ce2f26ed24554942a4291990cba8bb4c1fa838f10b"),
    ("detection", "yolo", "147c8ca5f919fb25966d3eb5f0e8397eaba9d71e92d1ed56440bb11b69a20c23"),
    ("classification", "imagefolder", "acd220d6b673e224774fbf326892cb2b22e1ddd29061346dc6d9632fe8dea4e1"),
];

#[test]
fn the_default_domain_writes_the_data_it_always_wrote() {
    let dir = tempfile::tempdir().unwrap();
    for (task, format, expected) in PINNED {
        let args = ["--task", task, "--format", format, "--count", "24", "--seed", "7"];
        let out = generate(dir.path(), &format!("{task}-{format}"), &args);
        assert_eq!(content_hash(&out), expected, "{task} {format}");
    }
}
