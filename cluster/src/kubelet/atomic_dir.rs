//! The kubelet's "atomic writer" for ConfigMap and Secret volumes: files live in a timestamped
//! directory, `..data` is a symlink to it, and each top-level entry is a symlink through
//! `..data`. An update writes a new directory and renames a fresh symlink over `..data`, so a
//! reader sees either the old or the new set of files, never a mix.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;

/// Relative file path → (contents, mode).
pub type Payload = BTreeMap<String, (Vec<u8>, u32)>;

const DATA_LINK: &str = "..data";

/// Makes `dir` hold exactly `payload`; returns whether anything changed.
pub fn write(dir: &Path, payload: &Payload) -> io::Result<bool> {
    std::fs::create_dir_all(dir)?;
    if current_matches(dir, payload) {
        return Ok(false);
    }
    let stamp = format!(
        "..{}",
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
    );
    let new_dir = dir.join(&stamp);
    std::fs::create_dir(&new_dir)?;
    for (rel, (data, mode)) in payload {
        let path = new_dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, data)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(*mode))?;
    }
    let old_target = std::fs::read_link(dir.join(DATA_LINK)).ok();
    let tmp_link = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp_link);
    symlink(&stamp, &tmp_link)?;
    std::fs::rename(&tmp_link, dir.join(DATA_LINK))?;

    let top_level: std::collections::BTreeSet<String> =
        payload.keys().map(|rel| rel.split('/').next().unwrap_or(rel).to_string()).collect();
    for name in &top_level {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            symlink(format!("{DATA_LINK}/{name}"), &link)?;
        }
    }
    for entry in std::fs::read_dir(dir)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("..") && !top_level.contains(&name) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    if let Some(old) = old_target {
        let _ = std::fs::remove_dir_all(dir.join(old));
    }
    Ok(true)
}

fn current_matches(dir: &Path, payload: &Payload) -> bool {
    let data = dir.join(DATA_LINK);
    if std::fs::read_link(&data).is_err() {
        return false;
    }
    let mut count = 0;
    let mut stack = vec![data.clone()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            return false;
        };
        for e in entries.flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                count += 1;
            }
        }
    }
    count == payload.len()
        && payload.iter().all(|(rel, (bytes, mode))| {
            let p = data.join(rel);
            std::fs::read(&p).is_ok_and(|b| b == *bytes)
                && std::fs::metadata(&p).is_ok_and(|m| m.permissions().mode() & 0o777 == *mode)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swaps_contents_atomically_and_prunes_removed_keys() {
        let dir = std::env::temp_dir().join(format!("fw-atomic-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut payload = Payload::new();
        payload.insert("a.txt".into(), (b"one".to_vec(), 0o644));
        payload.insert("b.txt".into(), (b"bee".to_vec(), 0o600));
        assert!(write(&dir, &payload).unwrap());
        assert!(!write(&dir, &payload).unwrap(), "unchanged payload must not rewrite");
        assert_eq!(std::fs::read(dir.join("a.txt")).unwrap(), b"one");

        payload.insert("a.txt".into(), (b"two".to_vec(), 0o644));
        payload.remove("b.txt");
        assert!(write(&dir, &payload).unwrap());
        assert_eq!(std::fs::read(dir.join("a.txt")).unwrap(), b"two");
        assert!(std::fs::symlink_metadata(dir.join("b.txt")).is_err());
        let stamped: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .filter(|e| {
                e.file_name().to_string_lossy().starts_with("..") && e.path().is_dir() && !e.path().is_symlink()
            })
            .collect();
        assert_eq!(stamped.len(), 1, "old data directory must be removed");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
