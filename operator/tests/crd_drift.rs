//! The committed CRD YAML must be exactly what the Rust types generate.

use flywheel_operator::crdgen;

#[test]
fn committed_crds_match_the_types() {
    let root = crdgen::repo_root();
    let dirs = crdgen::crd_dirs(&root);
    assert!(!dirs.is_empty());
    for dir in dirs {
        for (name, expected) in crdgen::rendered() {
            let path = dir.join(name);
            let committed = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                committed == expected,
                "{} is out of date with the Rust types in api/. Regenerate it with:\n\n    cargo run -p flywheel-operator --bin crdgen\n",
                path.display()
            );
        }
    }
}
