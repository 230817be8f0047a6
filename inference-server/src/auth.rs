//! Bearer-token authentication. The token comes from a file (a mounted Secret key) and is
//! re-read at most every few seconds so a rotated Secret takes effect without a restart.
//! Tokens are compared in constant time and never logged.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use subtle::ConstantTimeEq;

use crate::error::ServerError;

const REFRESH: Duration = Duration::from_secs(2);

#[derive(Clone, Default)]
pub struct TokenSource {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    path: Option<PathBuf>,
    cache: Mutex<Option<(Instant, Option<String>)>>,
}

impl TokenSource {
    pub fn from_file(path: Option<PathBuf>) -> Self {
        Self { inner: Arc::new(Inner { path, cache: Mutex::new(None) }) }
    }

    fn token(&self) -> Option<String> {
        let path = self.inner.path.as_ref()?;
        let mut cache = self.inner.cache.lock().expect("token cache poisoned");
        if let Some((at, tok)) = cache.as_ref()
            && at.elapsed() < REFRESH
        {
            return tok.clone();
        }
        let tok = std::fs::read_to_string(path).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
        if tok.is_none() {
            tracing::warn!(path = %path.display(), "token file is missing or empty; authenticated endpoints refuse all requests");
        }
        *cache = Some((Instant::now(), tok.clone()));
        tok
    }

    /// Checks `Authorization: Bearer <token>`.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), ServerError> {
        let Some(expected) = self.token() else {
            return Err(ServerError::Unauthorized(
                "this endpoint needs a bearer token but the server has none configured (auth.tokenFile)".into(),
            ));
        };
        let given = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .ok_or_else(|| ServerError::Unauthorized("missing bearer token".into()))?;
        if given.as_bytes().ct_eq(expected.as_bytes()).into() {
            Ok(())
        } else {
            Err(ServerError::Unauthorized("invalid bearer token".into()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_only_the_configured_token() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("token");
        std::fs::write(&p, "s3cret\n").unwrap();
        let src = TokenSource::from_file(Some(p));
        let mut h = HeaderMap::new();
        assert!(src.check(&h).is_err());
        h.insert("authorization", "Bearer wrong".parse().unwrap());
        assert!(src.check(&h).is_err());
        h.insert("authorization", "Bearer s3cret".parse().unwrap());
        assert!(src.check(&h).is_ok());
        assert!(TokenSource::from_file(None).check(&h).is_err());
    }
}
