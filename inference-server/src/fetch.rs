//! Model artifact fetch: object store → sha256 check → local cache keyed by digest.
//! A cached file is re-verified on use, so a corrupted cache entry is fetched again.

use std::path::{Path, PathBuf};

use flywheel_storage::Location;
pub use flywheel_storage::sha256_hex;

fn valid_digest(d: &str) -> bool {
    d.len() == 64 && d.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Returns the artifact's bytes, verified against `sha256`.
pub async fn fetch_verified(uri: &str, sha256: &str, cache_dir: &Path) -> Result<Vec<u8>, String> {
    let want = sha256.to_ascii_lowercase();
    if !valid_digest(&want) {
        return Err(format!("sha256 {sha256:?} is not a 64-digit hex digest"));
    }
    let cached: PathBuf = cache_dir.join("sha256").join(&want);
    if let Ok(bytes) = tokio::fs::read(&cached).await {
        if sha256_hex(&bytes) == want {
            return Ok(bytes);
        }
        tracing::warn!(path = %cached.display(), "cached model is corrupt; fetching again");
    }
    let loc = Location::open(uri).map_err(|e| e.to_string())?;
    let bytes = loc.get("").await.map_err(|e| format!("fetching {uri}: {e}"))?;
    let got = sha256_hex(&bytes);
    if got != want {
        return Err(format!("sha256 mismatch for {uri}: expected {want}, got {got}"));
    }
    // Write then rename so a crash never leaves a partial file under the digest's name.
    if let Some(dir) = cached.parent() {
        tokio::fs::create_dir_all(dir).await.map_err(|e| format!("creating cache dir: {e}"))?;
    }
    let tmp = cached.with_extension(format!("tmp-{}", uuid::Uuid::new_v4()));
    let write = async {
        tokio::fs::write(&tmp, &bytes).await?;
        tokio::fs::rename(&tmp, &cached).await
    };
    if let Err(e) = write.await {
        // The cache is an optimisation: serve anyway.
        tracing::warn!(error = %e, "could not cache model");
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    Ok(bytes.to_vec())
}
