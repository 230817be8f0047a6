//! Frozen dataset versions. A feedback dataset grows with every review; a training run must
//! read a fixed set of samples, so that re-running it reads the same data and the model's
//! provenance names data that cannot change. [`freeze`] lists the samples of a dataset that no
//! earlier manifest holds and writes a manifest of their objects with their SHA-256 digests,
//! once (create-only); [`Location::frozen`] is the dataset as the manifest saw it: listings
//! hold only its objects, reads check each object's digest, writes are refused.
//!
//! Manifests live in the dataset itself, under [`MANIFESTS_DIR`], which no dataset reader
//! takes for a sample (they are not images, nor under `images/`, `labels/` or `annotations/`).

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use flywheel_types::dataset::coco::ANNOTATIONS_FILE;
use flywheel_types::dataset::{DatasetFormat, is_image};
use serde::{Deserialize, Serialize};

use crate::{Location, StorageError, sha256_hex};

/// Where a dataset's manifests live, relative to its root.
pub const MANIFESTS_DIR: &str = ".flywheel/manifests";

/// The manifest of the frozen version `name`, relative to the dataset's root.
pub fn manifest_path(name: &str) -> String {
    format!("{MANIFESTS_DIR}/{name}.json")
}

/// The samples a frozen version holds, each with its objects.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// The frozen DatasetVersion.
    pub name: String,
    /// The DatasetVersion it was frozen from.
    pub source: String,
    pub created: DateTime<Utc>,
    pub samples: Vec<FrozenSample>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FrozenSample {
    /// The sample's id (the prediction id of a reviewed sample).
    pub id: String,
    pub objects: Vec<FrozenObject>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FrozenObject {
    /// Relative to the dataset's root.
    pub path: String,
    pub sha256: String,
    pub size: u64,
    /// When the object was last modified before it was frozen (readers order samples by it).
    pub modified: DateTime<Utc>,
}

/// One object of a frozen view: its digest, size and modification time.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Entry {
    pub sha256: String,
    pub size: u64,
    pub modified: DateTime<Utc>,
}

/// The objects of a frozen view by path (relative to the view's location).
pub(crate) type Entries = BTreeMap<String, Entry>;

impl Manifest {
    pub fn object_count(&self) -> usize {
        self.samples.iter().map(|s| s.objects.len()).sum()
    }

    pub(crate) fn entries(&self) -> Entries {
        let objects = self.samples.iter().flat_map(|s| &s.objects);
        objects
            .map(|o| (o.path.clone(), Entry { sha256: o.sha256.clone(), size: o.size, modified: o.modified }))
            .collect()
    }
}

/// The sample id of a COCO dataset's `annotations.json` index with the images no per-sample
/// document claims: frozen as one sample, by the first version that finds the index.
pub const INDEX_SAMPLE: &str = ANNOTATIONS_FILE;

/// Pure: the complete samples of a listing (path, modified) that `frozen` does not hold, by
/// id, each with its objects. A sample is its image plus, for COCO, its per-sample document
/// (`annotations/<id>.json`) and, for YOLO, its label file; a sample missing a part (a write
/// in progress) is left for the next version. A COCO index (`annotations.json`) is one sample,
/// [`INDEX_SAMPLE`], with every image no per-sample document claims. Objects under
/// [`MANIFESTS_DIR`] and other files at the root are never frozen.
pub fn new_samples(
    format: DatasetFormat,
    listing: &[(String, DateTime<Utc>)],
    frozen: &HashSet<String>,
) -> BTreeMap<String, Vec<(String, DateTime<Utc>)>> {
    let mut by_id: BTreeMap<String, Vec<(String, DateTime<Utc>)>> = BTreeMap::new();
    let mut index = None;
    for (path, modified) in listing {
        if format == DatasetFormat::Coco && path == ANNOTATIONS_FILE {
            index = Some((path.clone(), *modified));
        }
        if path.starts_with(".flywheel/") || !path.contains('/') {
            continue;
        }
        let file = path.rsplit('/').next().unwrap_or(path);
        let id = file.rsplit_once('.').map_or(file, |(stem, _)| stem);
        if !frozen.contains(id) {
            by_id.entry(id.to_string()).or_default().push((path.clone(), *modified));
        }
    }
    let complete = |objects: &[(String, DateTime<Utc>)]| {
        let image = objects.iter().any(|(p, _)| is_image(p));
        let has = |dir: &str, ext: &str| objects.iter().any(|(p, _)| p.starts_with(dir) && p.ends_with(ext));
        match format {
            DatasetFormat::Coco => image && has("annotations/", ".json"),
            DatasetFormat::Yolo => image && has("labels/", ".txt"),
            DatasetFormat::Imagefolder => image,
        }
    };
    let (mut samples, unclaimed): (BTreeMap<_, _>, BTreeMap<_, _>) =
        by_id.into_iter().partition(|(_, objects)| complete(objects));
    if let Some(index) = index.filter(|_| !frozen.contains(INDEX_SAMPLE)) {
        let images = unclaimed.into_values().flatten().filter(|(p, _)| is_image(p));
        samples.insert(INDEX_SAMPLE.to_string(), std::iter::once(index).chain(images).collect());
    }
    samples
}

/// Freezes the samples of the dataset at `root` that no manifest there holds yet into the
/// manifest of version `name` (frozen from DatasetVersion `source`). A manifest already
/// written for `name` (by an earlier attempt) is returned as it is: a version never changes.
pub async fn freeze(
    root: &Location,
    name: &str,
    source: &str,
    format: DatasetFormat,
) -> Result<Manifest, StorageError> {
    let path = manifest_path(name);
    if let Some(existing) = read(root, &path).await? {
        return Ok(existing);
    }
    let mut frozen = HashSet::new();
    for (other, bytes) in root.get_all(MANIFESTS_DIR).await? {
        let manifest: Manifest = parse(root, &other, &bytes)?;
        frozen.extend(manifest.samples.into_iter().map(|s| s.id));
    }
    let listing = root.list("").await?;
    let mut samples = Vec::new();
    for (id, objects) in new_samples(format, &listing, &frozen) {
        let mut frozen_objects = Vec::with_capacity(objects.len());
        for (path, modified) in objects {
            let (sha256, size) = root.sha256(&path).await?;
            frozen_objects.push(FrozenObject { path, sha256, size, modified });
        }
        samples.push(FrozenSample { id, objects: frozen_objects });
    }
    let manifest = Manifest { name: name.into(), source: source.into(), created: Utc::now(), samples };
    let mut bytes = serde_json::to_vec_pretty(&manifest)
        .map_err(|source| StorageError::Json { uri: root.child_uri(&path), source })?;
    bytes.push(b'\n');
    if root.put_if_absent(&path, bytes).await? {
        return Ok(manifest);
    }
    // Another writer froze `name` first: theirs is the version.
    read(root, &path).await?.ok_or(StorageError::NotFound { uri: root.child_uri(&path) })
}

async fn read(root: &Location, path: &str) -> Result<Option<Manifest>, StorageError> {
    match root.get_opt(path).await? {
        Some(bytes) => parse(root, path, &bytes).map(Some),
        None => Ok(None),
    }
}

fn parse(root: &Location, path: &str, bytes: &[u8]) -> Result<Manifest, StorageError> {
    serde_json::from_slice(bytes)
        .map_err(|e| StorageError::Frozen { uri: root.child_uri(path), reason: format!("not a manifest: {e}") })
}

/// Checks bytes read from a frozen object against its manifest entry.
pub(crate) fn verify(uri: String, entry: &Entry, bytes: &[u8]) -> Result<(), StorageError> {
    let sha256 = sha256_hex(bytes);
    if sha256 == entry.sha256 {
        return Ok(());
    }
    Err(StorageError::Frozen {
        uri,
        reason: format!(
            "changed since it was frozen: sha256 {sha256} ({} bytes), the manifest says {} ({} bytes)",
            bytes.len(),
            entry.sha256,
            entry.size
        ),
    })
}

impl Location {
    /// The dataset at this location frozen by its manifest at `manifest` (relative to it).
    pub async fn frozen(&self, manifest: &str) -> Result<Location, StorageError> {
        let bytes = self.get(manifest).await?;
        let manifest = parse(self, manifest, &bytes)?;
        Ok(self.with_entries(manifest.entries()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(s, 0).unwrap()
    }

    fn listing(paths: &[&str]) -> Vec<(String, DateTime<Utc>)> {
        paths.iter().map(|p| (p.to_string(), t(1))).collect()
    }

    fn ids(samples: &BTreeMap<String, Vec<(String, DateTime<Utc>)>>) -> Vec<&str> {
        samples.keys().map(String::as_str).collect()
    }

    #[test]
    fn complete_samples_not_frozen_before_are_the_new_ones() {
        let coco = listing(&[
            "annotations.json",
            "annotations/a.json",
            "images/a.png",
            "images/b.png", // its document is not written yet
            "annotations/c.json",
            "images/c.jpg",
            ".flywheel/manifests/ds-r1.json",
        ]);
        let all = new_samples(DatasetFormat::Coco, &coco, &HashSet::new());
        assert_eq!(ids(&all), ["a", "annotations.json", "c"]);
        let index: Vec<&str> = all[INDEX_SAMPLE].iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(index, ["annotations.json", "images/b.png"], "the index with the images no document claims");
        let frozen = HashSet::from(["a".to_string(), INDEX_SAMPLE.to_string()]);
        let new = new_samples(DatasetFormat::Coco, &coco, &frozen);
        assert_eq!(ids(&new), ["c"]);
        assert_eq!(new["c"].len(), 2, "the document and the image");

        let yolo = listing(&["images/a.png", "labels/a.txt", "images/b.png"]);
        assert_eq!(ids(&new_samples(DatasetFormat::Yolo, &yolo, &HashSet::new())), ["a"]);
        let folder = listing(&["cat/a.png", "dog/b.jpg", "notes.txt", "cat/readme.md"]);
        assert_eq!(ids(&new_samples(DatasetFormat::Imagefolder, &folder, &HashSet::new())), ["a", "b"]);
    }

    #[tokio::test]
    async fn a_frozen_view_keeps_the_samples_it_froze_and_refuses_changed_ones() {
        let dir = tempfile::tempdir().unwrap();
        let root = Location::open(&format!("file://{}", dir.path().display())).unwrap();
        root.put("images/a.png", &b"png-a"[..]).await.unwrap();
        root.put("labels/a.txt", &b"0 0.5 0.5 0.1 0.1\n"[..]).await.unwrap();
        let r1 = freeze(&root, "fb-r1", "fb", DatasetFormat::Yolo).await.unwrap();
        assert_eq!(r1.samples.len(), 1);
        root.put("images/b.png", &b"png-b"[..]).await.unwrap();
        root.put("labels/b.txt", &b""[..]).await.unwrap();
        let r2 = freeze(&root, "fb-r2", "fb", DatasetFormat::Yolo).await.unwrap();
        assert_eq!(r2.samples.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), ["b"]);
        // Freezing r1 again returns r1 as it was, byte for byte.
        let before = root.get(&manifest_path("fb-r1")).await.unwrap();
        assert_eq!(freeze(&root, "fb-r1", "fb", DatasetFormat::Yolo).await.unwrap(), r1);
        assert_eq!(root.get(&manifest_path("fb-r1")).await.unwrap(), before);

        let view = root.frozen(&manifest_path("fb-r1")).await.unwrap();
        let paths: Vec<String> = view.list("").await.unwrap().into_iter().map(|(p, _)| p).collect();
        assert_eq!(paths, ["images/a.png", "labels/a.txt"]);
        assert_eq!(view.list("images").await.unwrap().len(), 1);
        assert_eq!(&view.get("images/a.png").await.unwrap()[..], b"png-a");
        assert!(matches!(view.get("images/b.png").await, Err(StorageError::NotFound { .. })));
        assert!(matches!(view.put("images/c.png", &b"x"[..]).await, Err(StorageError::Frozen { .. })));
        assert_eq!(view.join("").list("").await.unwrap().len(), 2, "joining nothing keeps the view");
        let joined = view.join("images");
        assert_eq!(joined.list("").await.unwrap().len(), 1);
        assert_eq!(&joined.get("a.png").await.unwrap()[..], b"png-a");

        // An object changed under the manifest is refused, naming it.
        root.put("images/a.png", &b"other"[..]).await.unwrap();
        let err = view.get("images/a.png").await.unwrap_err().to_string();
        assert!(err.contains("images/a.png") && err.contains("changed since it was frozen"), "{err}");
    }
}
