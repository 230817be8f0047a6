//! Pod volumes as host directories: ConfigMap and Secret (atomic writer, refreshed while the Pod
//! runs), emptyDir, persistentVolumeClaim (a directory per claim, shared by the Pods using it),
//! hostPath, and projected ConfigMap/Secret sources.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{ConfigMap, KeyToPath, PersistentVolumeClaim, Pod, Secret, Volume};
use kube::{Api, Client};

use super::atomic_dir::{self, Payload};

/// A volume that could not be set up; the Pod stays in ContainerCreating with this message.
pub type MountError = String;

/// Makes every volume of `pod` exist under `pod_dir/volumes/`, refreshing ConfigMap and Secret
/// contents. Returns volume name → host directory (or file, for a hostPath file).
pub async fn sync(
    client: &Client,
    pod: &Pod,
    pod_dir: &Path,
    claims_root: &Path,
) -> Result<BTreeMap<String, PathBuf>, MountError> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut out = BTreeMap::new();
    for volume in pod.spec.as_ref().and_then(|s| s.volumes.as_ref()).into_iter().flatten() {
        let dir = pod_dir.join("volumes").join(&volume.name);
        let path = sync_one(client, ns, volume, &dir, claims_root).await?;
        out.insert(volume.name.clone(), path);
    }
    Ok(out)
}

async fn sync_one(
    client: &Client,
    ns: &str,
    volume: &Volume,
    dir: &Path,
    claims_root: &Path,
) -> Result<PathBuf, MountError> {
    let io_err = |e: std::io::Error| format!("volume {:?}: {e}", volume.name);
    if volume.empty_dir.is_some() {
        std::fs::create_dir_all(dir).map_err(io_err)?;
        return Ok(dir.to_path_buf());
    }
    if let Some(host) = &volume.host_path {
        let path = PathBuf::from(&host.path);
        if host.type_.as_deref() == Some("DirectoryOrCreate") {
            std::fs::create_dir_all(&path).map_err(io_err)?;
        }
        return Ok(path);
    }
    if let Some(pvc) = &volume.persistent_volume_claim {
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
        if claims.get_opt(&pvc.claim_name).await.map_err(|e| e.to_string())?.is_none() {
            return Err(format!("persistentvolumeclaim {:?} not found", pvc.claim_name));
        }
        let path = claims_root.join(ns).join(&pvc.claim_name);
        std::fs::create_dir_all(&path).map_err(io_err)?;
        return Ok(path);
    }
    let mut payload = Payload::new();
    if let Some(src) = &volume.config_map {
        let mode = src.default_mode.unwrap_or(0o644) as u32;
        add_config_map(client, ns, &src.name, src.optional, src.items.as_deref(), mode, &mut payload).await?;
    } else if let Some(src) = &volume.secret {
        let name = src.secret_name.clone().unwrap_or_default();
        let mode = src.default_mode.unwrap_or(0o644) as u32;
        add_secret(client, ns, &name, src.optional, src.items.as_deref(), mode, &mut payload).await?;
    } else if let Some(projected) = &volume.projected {
        let mode = projected.default_mode.unwrap_or(0o644) as u32;
        for source in projected.sources.iter().flatten() {
            if let Some(cm) = &source.config_map {
                add_config_map(client, ns, &cm.name, cm.optional, cm.items.as_deref(), mode, &mut payload).await?;
            } else if let Some(s) = &source.secret {
                add_secret(client, ns, &s.name, s.optional, s.items.as_deref(), mode, &mut payload).await?;
            } else {
                return Err(format!(
                    "volume {:?}: only configMap and secret projections are supported by the process kubelet",
                    volume.name
                ));
            }
        }
    } else {
        return Err(format!(
            "volume {:?}: unsupported type (the process kubelet supports configMap, secret, emptyDir, \
             persistentVolumeClaim, hostPath and projected configMap/secret)",
            volume.name
        ));
    }
    atomic_dir::write(dir, &payload).map_err(io_err)?;
    Ok(dir.to_path_buf())
}

fn place(
    entries: BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    mode: u32,
    what: &str,
    payload: &mut Payload,
) -> Result<(), MountError> {
    match items {
        None => {
            for (k, v) in entries {
                payload.insert(k, (v, mode));
            }
        }
        Some(items) => {
            for item in items {
                let Some(v) = entries.get(&item.key) else {
                    return Err(format!("{what}: key {:?} not found", item.key));
                };
                let item_mode = item.mode.map(|m| m as u32).unwrap_or(mode);
                payload.insert(item.path.clone(), (v.clone(), item_mode));
            }
        }
    }
    Ok(())
}

async fn add_config_map(
    client: &Client,
    ns: &str,
    name: &str,
    optional: Option<bool>,
    items: Option<&[KeyToPath]>,
    mode: u32,
    payload: &mut Payload,
) -> Result<(), MountError> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let Some(cm) = api.get_opt(name).await.map_err(|e| e.to_string())? else {
        return if optional == Some(true) { Ok(()) } else { Err(format!("configmap {name:?} not found")) };
    };
    let mut entries: BTreeMap<String, Vec<u8>> =
        cm.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())).collect();
    entries.extend(cm.binary_data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)));
    place(entries, items, mode, &format!("configmap {name:?}"), payload)
}

async fn add_secret(
    client: &Client,
    ns: &str,
    name: &str,
    optional: Option<bool>,
    items: Option<&[KeyToPath]>,
    mode: u32,
    payload: &mut Payload,
) -> Result<(), MountError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let Some(secret) = api.get_opt(name).await.map_err(|e| e.to_string())? else {
        return if optional == Some(true) { Ok(()) } else { Err(format!("secret {name:?} not found")) };
    };
    let entries = secret.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect();
    place(entries, items, mode, &format!("secret {name:?}"), payload)
}

/// Builds the container's view of its mounts: `rootfs/<mountPath>` is a symlink to the volume's
/// host directory (or its subPath). Returns mountPath → path under rootfs, longest first, used to
/// rewrite absolute paths in args and env (processes cannot see mount namespaces).
pub fn link_mounts(
    rootfs: &Path,
    container: &k8s_openapi::api::core::v1::Container,
    volumes: &BTreeMap<String, PathBuf>,
) -> Result<Vec<(String, PathBuf)>, MountError> {
    let mut mounts = Vec::new();
    for m in container.volume_mounts.iter().flatten() {
        let Some(host) = volumes.get(&m.name) else {
            return Err(format!("volumeMount {:?} refers to no volume of the Pod", m.name));
        };
        let target = match m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            Some(sub) => {
                let p = host.join(sub);
                if !p.exists() {
                    std::fs::create_dir_all(&p).map_err(|e| format!("subPath {sub:?}: {e}"))?;
                }
                p
            }
            None => host.clone(),
        };
        let mount_path = m.mount_path.trim_end_matches('/').to_string();
        let link = rootfs.join(mount_path.trim_start_matches('/'));
        if let Some(parent) = link.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("mount {mount_path:?}: {e}"))?;
        }
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&target, &link).map_err(|e| format!("mount {mount_path:?}: {e}"))?;
        mounts.push((mount_path, link));
    }
    mounts.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
    Ok(mounts)
}

/// Rewrites a mount path at the start of `value` or right after `=` (e.g. `--config=/etc/app/x`).
pub fn rewrite_paths(value: &str, mounts: &[(String, PathBuf)]) -> String {
    for (mount, host) in mounts {
        for (start, _) in value.match_indices(mount.as_str()) {
            if start != 0 && !value[..start].ends_with('=') {
                continue;
            }
            let end = start + mount.len();
            if end == value.len() || value[end..].starts_with('/') {
                return format!("{}{}{}", &value[..start], host.display(), &value[end..]);
            }
        }
    }
    value.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_mount_paths_in_arguments() {
        let mounts = vec![("/etc/app".to_string(), PathBuf::from("/tmp/pod/rootfs/etc/app"))];
        assert_eq!(rewrite_paths("/etc/app/config.yaml", &mounts), "/tmp/pod/rootfs/etc/app/config.yaml");
        assert_eq!(rewrite_paths("--config=/etc/app/c", &mounts), "--config=/tmp/pod/rootfs/etc/app/c");
        assert_eq!(rewrite_paths("/etc/application", &mounts), "/etc/application");
        assert_eq!(rewrite_paths("x/etc/app", &mounts), "x/etc/app");
    }
}
