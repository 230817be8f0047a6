//! Image → executable mapping. The process kubelet has no container runtime: an image names a
//! binary of this workspace (`flywheel/<name>` → `flywheel-<name>` in the bin dir) or one listed
//! explicitly; anything else cannot be "pulled".

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Images the kubelet can run, and where their binaries are.
#[derive(Debug, Clone, Default)]
pub struct ImageMap {
    /// Directory holding the workspace binaries (e.g. target/debug).
    pub bin_dir: Option<PathBuf>,
    /// Explicit image (without tag) → executable entries; they win over the naming rule.
    pub overrides: BTreeMap<String, PathBuf>,
}

/// The executable an image resolves to.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedImage {
    pub binary: PathBuf,
    /// Names a container `command[0]` may use for this binary (file name, image short name).
    pub entrypoint_names: Vec<String>,
}

impl ImageMap {
    /// Reads FLYWHEEL_BIN_DIR and FLYWHEEL_IMAGE_MAP (`image=/path/bin,image2=/path2`).
    pub fn from_env(default_bin_dir: Option<PathBuf>) -> Self {
        let bin_dir =
            std::env::var_os("FLYWHEEL_BIN_DIR").filter(|d| !d.is_empty()).map(PathBuf::from).or(default_bin_dir);
        let mut overrides = BTreeMap::new();
        if let Ok(map) = std::env::var("FLYWHEEL_IMAGE_MAP") {
            for entry in map.split(',').filter(|e| !e.trim().is_empty()) {
                if let Some((image, path)) = entry.split_once('=') {
                    overrides.insert(image_repository(image.trim()).to_string(), PathBuf::from(path.trim()));
                }
            }
        }
        Self { bin_dir, overrides }
    }

    /// Resolves an image reference or returns the message for an ErrImagePull status.
    pub fn resolve(&self, image: &str) -> Result<ResolvedImage, String> {
        let repo = image_repository(image);
        let short = repo.rsplit('/').next().unwrap_or(repo).to_string();
        if let Some(binary) = self.overrides.get(repo) {
            return existing(binary, image)
                .map(|binary| ResolvedImage { entrypoint_names: names(&binary, &short), binary });
        }
        // Accept a registry prefix: ghcr.io/org/flywheel/operator → flywheel/operator.
        let mut segments = repo.rsplit('/');
        let (last, parent) = (segments.next().unwrap_or(""), segments.next().unwrap_or(""));
        if parent == "flywheel" && !last.is_empty() {
            let Some(dir) = &self.bin_dir else {
                return Err(format!(
                    "image {image:?} maps to binary flywheel-{last}, but no bin dir is configured (set FLYWHEEL_BIN_DIR)"
                ));
            };
            let binary = dir.join(format!("flywheel-{last}"));
            return existing(&binary, image)
                .map(|binary| ResolvedImage { entrypoint_names: names(&binary, &short), binary });
        }
        Err(format!(
            "image {image:?} cannot be pulled: the local process kubelet runs only flywheel/<name> images \
             (binary flywheel-<name> in the bin dir) and images listed in FLYWHEEL_IMAGE_MAP"
        ))
    }
}

fn names(binary: &Path, short: &str) -> Vec<String> {
    let mut names = vec![short.to_string()];
    if let Some(file) = binary.file_name().and_then(|f| f.to_str()) {
        names.push(file.to_string());
    }
    names
}

fn existing(binary: &Path, image: &str) -> Result<PathBuf, String> {
    if binary.is_file() {
        Ok(binary.to_path_buf())
    } else {
        Err(format!(
            "image {image:?} maps to {} which does not exist (build it with `cargo build --workspace --bins`)",
            binary.display()
        ))
    }
}

/// `registry/org/name:tag@sha256:...` → `registry/org/name`.
pub fn image_repository(image: &str) -> &str {
    let no_digest = image.split('@').next().unwrap_or(image);
    match no_digest.rfind(':') {
        Some(colon) if !no_digest[colon..].contains('/') => &no_digest[..colon],
        _ => no_digest,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_tags_and_digests() {
        assert_eq!(image_repository("flywheel/testapp:latest"), "flywheel/testapp");
        assert_eq!(
            image_repository("localhost:5000/flywheel/operator:v1@sha256:abc"),
            "localhost:5000/flywheel/operator"
        );
        assert_eq!(image_repository("localhost:5000/flywheel/operator"), "localhost:5000/flywheel/operator");
    }

    #[test]
    fn maps_flywheel_images_to_workspace_binaries() {
        let dir = std::env::temp_dir().join(format!("fw-images-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("flywheel-testapp"), b"").unwrap();
        let map = ImageMap { bin_dir: Some(dir.clone()), overrides: BTreeMap::new() };
        let resolved = map.resolve("ghcr.io/acme/flywheel/testapp:1.0").unwrap();
        assert_eq!(resolved.binary, dir.join("flywheel-testapp"));
        assert!(resolved.entrypoint_names.contains(&"testapp".to_string()));
        let missing = map.resolve("flywheel/operator").unwrap_err();
        assert!(missing.contains("does not exist"), "{missing}");
        let unknown = map.resolve("nginx:1.25").unwrap_err();
        assert!(unknown.contains("cannot be pulled"), "{unknown}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
