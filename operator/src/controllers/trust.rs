//! What the operator will do on behalf of a user's object (pure; see docs/security.md):
//!
//! - read or inject only Secrets labelled `flywheel.dev/credentials: "true"`
//!   ([`flywheel_api::CREDENTIALS_LABEL`]): naming a Secret in a spec is not enough;
//! - give a pod the storage credentials of one Secret: the variables (`AWS_*`, ...) have one
//!   name each, so two Secrets would override each other;
//! - resolve `file://` URIs of user objects on its own file system only when started with
//!   `--allow-local-files` (off by default); `pvc://` is the in-cluster way.

use flywheel_api::StorageUri;
use k8s_openapi::api::core::v1::Secret;

use crate::Error;

/// Condition reason (and Event reason) of a Secret the operator may not use.
pub const CREDENTIALS_NOT_ALLOWED: &str = "CredentialsNotAllowed";
/// Condition reason of two Secrets one pod would need.
pub const CONFLICTING_CREDENTIALS: &str = "ConflictingCredentials";
/// Condition reason of a `file://` URI the operator will not read.
pub const LOCAL_FILES_NOT_ALLOWED: &str = "LocalFilesNotAllowed";

/// Why a Secret named at `name` may not be used: it does not exist, or lacks the label.
pub fn secret_refusal(name: &str, secret: Option<&Secret>) -> Option<Error> {
    match secret {
        None => Some(Error::MissingReference { kind: "Secret", name: name.to_string() }),
        Some(s) if !flywheel_api::common::credentials_allowed(s.metadata.labels.as_ref()) => {
            Some(Error::SecretNotAllowed { name: name.to_string() })
        }
        Some(_) => None,
    }
}

/// Err when `uri` (the value of `field`) is on the operator's own file system and local files
/// are not allowed.
pub fn local_file(field: &str, uri: &StorageUri, allowed: bool) -> Result<(), String> {
    // No scheme: the storage layer would read it as a local path (the schema requires one).
    let local = matches!(uri.scheme(), Some("file") | None);
    if !local || allowed {
        return Ok(());
    }
    Err(format!(
        "{field} is a file:// URI, which the operator does not read from its own file system unless it runs \
         with --allow-local-files (FLYWHEEL_ALLOW_LOCAL_FILES=true); in a cluster use pvc://<claim>/<path> or an \
         object store"
    ))
}

/// One Secret a pod would take its storage credentials from, and who names it.
#[derive(Clone, Debug, PartialEq)]
pub struct SecretUse {
    pub secret: String,
    /// E.g. `champion ModelVersion "m-v1" (spec.artifact.credentials)`.
    pub by: String,
}

impl SecretUse {
    pub fn new(secret: &str, kind: &str, role: &str, name: &str, field: &str) -> Self {
        let role = if role.is_empty() { String::new() } else { format!("{role} ") };
        Self { secret: secret.to_string(), by: format!("{role}{kind} {name:?} ({field})") }
    }
}

/// The one Secret a pod's storage credentials come from (None: the pod's identity), or why
/// there cannot be one: two different Secrets, named by both of their users.
pub fn one_secret(uses: &[SecretUse]) -> Result<Option<String>, String> {
    let Some(first) = uses.first() else { return Ok(None) };
    match uses.iter().find(|u| u.secret != first.secret) {
        None => Ok(Some(first.secret.clone())),
        Some(other) => Err(format!(
            "{} names Secret {:?} and {} names Secret {:?}: a pod takes its storage credentials (AWS_*, \
             GOOGLE_SERVICE_ACCOUNT_KEY, AZURE_STORAGE_* variables) from one Secret, so one would silently \
             override the other; name the same Secret in both, holding credentials that reach both stores",
            first.by, first.secret, other.by, other.secret
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn secret(labels: &[(&str, &str)]) -> Secret {
        let mut s = Secret::default();
        s.metadata.labels =
            Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>());
        s
    }

    #[test]
    fn only_secrets_labelled_for_flywheel_are_used() {
        assert!(secret_refusal("s", Some(&secret(&[("flywheel.dev/credentials", "true")]))).is_none());
        let unlabelled = secret_refusal("s", Some(&secret(&[]))).unwrap();
        assert!(matches!(unlabelled, Error::SecretNotAllowed { .. }));
        let message = unlabelled.to_string();
        assert!(message.contains("not labelled flywheel.dev/credentials=true"), "{message}");
        assert!(message.contains("kubectl label secret s flywheel.dev/credentials=true"), "{message}");
        assert!(unlabelled.is_user_error());
        let other_value = secret_refusal("s", Some(&secret(&[("flywheel.dev/credentials", "yes")])));
        assert!(matches!(other_value, Some(Error::SecretNotAllowed { .. })));
        assert!(matches!(secret_refusal("s", None), Some(Error::MissingReference { kind: "Secret", .. })));
    }

    #[test]
    fn local_files_need_the_opt_in_and_claims_do_not() {
        let uri = |u: &str| StorageUri(u.to_string());
        let refused = local_file("spec.artifact.uri", &uri("file:///etc/passwd"), false).unwrap_err();
        assert!(refused.starts_with("spec.artifact.uri is a file:// URI"), "{refused}");
        assert!(refused.contains("--allow-local-files") && refused.contains("pvc://"), "{refused}");
        assert!(local_file("spec.uri", &uri("/etc"), false).is_err(), "a bare path is a local path");
        assert!(local_file("spec.uri", &uri("file:///data/x"), true).is_ok());
        for remote in ["pvc://models/m.onnx", "s3://b/k", "https://h/m.onnx", "gs://b/k", "az://c/k"] {
            assert!(local_file("spec.uri", &uri(remote), false).is_ok(), "{remote}");
        }
    }

    #[test]
    fn a_pod_gets_the_credentials_of_one_secret() {
        let champion = SecretUse::new("a", "ModelVersion", "champion", "m-v1", "spec.artifact.credentials");
        let shadow = SecretUse::new("a", "ModelVersion", "shadow", "m-v2", "spec.artifact.credentials");
        let feedback = SecretUse::new("b", "DatasetVersion", "feedback", "fb", "spec.credentials");
        assert_eq!(one_secret(&[]), Ok(None));
        assert_eq!(one_secret(&[champion.clone(), shadow.clone()]), Ok(Some("a".into())));
        let clash = one_secret(&[champion, shadow, feedback]).unwrap_err();
        assert!(
            clash.starts_with(
                "champion ModelVersion \"m-v1\" (spec.artifact.credentials) names Secret \"a\" and feedback \
                 DatasetVersion \"fb\" (spec.credentials) names Secret \"b\""
            ),
            "{clash}"
        );
    }
}
