//! Finds processes started by a cluster (any, or one id) that are still alive, by scanning
//! /proc/*/environ for the marker variable every cluster process carries.

use crate::process::MARKER_ENV;

/// A live process carrying the cluster marker.
#[derive(Debug, Clone)]
pub struct Leftover {
    pub pid: u32,
    pub cluster_id: String,
    pub command: String,
}

/// Live processes whose environment carries the marker (for `cluster_id`, or any id when `None`).
/// Zombies and this process itself are skipped.
pub fn find_leftovers(cluster_id: Option<&str>) -> Vec<Leftover> {
    let me = std::process::id();
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    let prefix = format!("{MARKER_ENV}=");
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        let Some(id) = environ
            .split(|b| *b == 0)
            .filter_map(|var| std::str::from_utf8(var).ok())
            .find_map(|var| var.strip_prefix(&prefix))
        else {
            continue;
        };
        if cluster_id.is_some_and(|want| want != id) {
            continue;
        }
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // Field 3 of /proc/PID/stat is the state; Z is a zombie waiting to be reaped.
        if stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')) {
            continue;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let command = String::from_utf8_lossy(&cmdline).replace('\0', " ").trim().to_string();
        found.push(Leftover { pid, cluster_id: id.to_string(), command });
    }
    found
}
