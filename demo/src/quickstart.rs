//! examples/quickstart, applied as a user would, with the object store's endpoint pointed at
//! the S3 server the platform started (the files name the demo's default, 127.0.0.1:8333).

use anyhow::Context;

use crate::platform::Platform;

/// The endpoint the quickstart's Secret names.
pub const QUICKSTART_ENDPOINT: &str = "http://127.0.0.1:8333";

/// The quickstart's files in order, as (file name, YAML).
pub fn files() -> anyhow::Result<Vec<(String, String)>> {
    let dir = flywheel_e2e::workspace_root().join("examples/quickstart");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|p| Ok((p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read_to_string(&p)?)))
        .collect()
}

/// Applies every quickstart file; `edit(file, yaml)` may change one first (fault tests).
pub async fn apply(platform: &Platform, edit: impl Fn(&str, String) -> String) -> anyhow::Result<Vec<String>> {
    let endpoint = platform.s3.endpoint();
    let mut applied = Vec::new();
    for (name, yaml) in files()? {
        let yaml = edit(&name, yaml.replace(QUICKSTART_ENDPOINT, &endpoint));
        let objects = flywheel_e2e::apply_yaml(&platform.client, Some(&platform.namespace), &yaml)
            .await
            .with_context(|| format!("applying examples/quickstart/{name}"))?;
        applied.extend(objects.iter().map(|o| {
            let kind = o.types.as_ref().map(|t| t.kind.clone()).unwrap_or_default();
            format!("{kind}/{}", o.metadata.name.clone().unwrap_or_default())
        }));
    }
    Ok(applied)
}
