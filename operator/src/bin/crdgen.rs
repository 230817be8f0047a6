//! `cargo run -p flywheel-operator --bin crdgen`: regenerates crds/ (and the chart's CRDs).
//! With `--stdout`, prints all CRDs as one multi-document YAML stream instead.

fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--stdout") {
        for (_, yaml) in flywheel_operator::crdgen::rendered() {
            print!("{yaml}");
        }
        return Ok(());
    }
    let root = flywheel_operator::crdgen::repo_root();
    for dir in flywheel_operator::crdgen::crd_dirs(&root) {
        for path in flywheel_operator::crdgen::write_all(&dir)? {
            println!("wrote {}", path.strip_prefix(&root).unwrap_or(&path).display());
        }
    }
    Ok(())
}
