//! The Helm chart installs the CRDs from charts/flywheel/crds/: that copy must exist and hold
//! exactly the generated CRDs (crd_drift.rs checks their content only when the chart exists,
//! and neither it nor Helm notices a stale extra file, which Helm would install too).

use std::collections::BTreeSet;

use flywheel_operator::crdgen;

#[test]
fn the_chart_ships_exactly_the_generated_crds() {
    let root = crdgen::repo_root();
    let chart_crds = root.join("charts/flywheel/crds");
    let dirs = crdgen::crd_dirs(&root);
    assert!(dirs.contains(&chart_crds), "crdgen must write the chart's copy at {}", chart_crds.display());
    let expected: BTreeSet<String> = crdgen::rendered().into_iter().map(|(name, _)| name.to_string()).collect();
    for dir in dirs {
        let present: BTreeSet<String> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| {
                panic!("{}: {e}; regenerate with `cargo run -p flywheel-operator --bin crdgen`", dir.display())
            })
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| !name.starts_with('.'))
            .collect();
        assert_eq!(
            present,
            expected,
            "{} must hold exactly the generated CRDs (remove stale files, then run `cargo run -p flywheel-operator --bin crdgen`)",
            dir.display()
        );
        for (name, yaml) in crdgen::rendered() {
            let committed = std::fs::read_to_string(dir.join(name)).unwrap();
            assert!(
                committed == yaml,
                "{}/{name} is out of date: run `cargo run -p flywheel-operator --bin crdgen`",
                dir.display()
            );
        }
    }
}
