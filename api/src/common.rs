//! Types shared by several custom resources.

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

pub use flywheel_types::Task;

/// The URI schemes Flywheel's storage layer understands.
pub const URI_SCHEMES: &[&str] = &["s3", "gs", "az", "http", "https", "file", "pvc"];

/// The pattern the API server enforces on every storage URI. Kept in sync with
/// [`URI_SCHEMES`] by a unit test.
pub const URI_PATTERN: &str = r"^(s3|gs|az|http|https|file|pvc)://[^\s]+$";

/// A location in object storage: `s3://bucket/key`, `gs://`, `az://`, `http(s)://`,
/// `file:///path` or `pvc://claim-name/path`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StorageUri(pub String);

impl StorageUri {
    /// The scheme before `://`, if the URI has a known one.
    pub fn scheme(&self) -> Option<&str> {
        let (scheme, rest) = self.0.split_once("://")?;
        (URI_SCHEMES.contains(&scheme) && !rest.is_empty()).then_some(scheme)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for StorageUri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl JsonSchema for StorageUri {
    fn schema_name() -> Cow<'static, str> {
        "StorageUri".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": URI_PATTERN,
            "description": "Storage URI: s3://, gs://, az://, http(s)://, file:// or pvc://<claim>/<path>."
        })
    }

    fn inline_schema() -> bool {
        true
    }
}

/// A Secret in the same namespace holding storage credentials. The keys follow the
/// object store's environment names (e.g. `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_ENDPOINT`, `AWS_REGION`); they reach pods through `secretKeyRef`, never a spec
/// or a ConfigMap.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsRef {
    /// Name of the Secret.
    #[schemars(length(min = 1))]
    pub secret_name: String,
}

/// A reference to another Flywheel object in the same namespace, by name.
pub type ObjectName = String;

/// Compact schema for a `resources` field (container `ResourceRequirements`): requests and
/// limits as quantity maps, without the upstream type's long generated descriptions.
pub fn resources_schema(_: &mut SchemaGenerator) -> Schema {
    let quantities = serde_json::json!({
        "type": "object",
        "additionalProperties": {"x-kubernetes-int-or-string": true},
    });
    json_schema!({
        "type": "object",
        "nullable": true,
        "description": "Compute resources, e.g. {requests: {cpu: 500m, memory: 512Mi}, limits: {memory: 1Gi}}.",
        "properties": {
            "requests": quantities,
            "limits": quantities,
        },
    })
}
