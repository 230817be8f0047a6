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

/// The label a Secret must carry, with the value [`CREDENTIALS_LABEL_VALUE`], before the
/// operator reads it or injects it into a pod: naming a Secret in a spec is not enough, so a
/// user who may create ModelVersions cannot hand Flywheel's pods any Secret of the namespace.
pub const CREDENTIALS_LABEL: &str = "flywheel.dev/credentials";
/// The value of [`CREDENTIALS_LABEL`] that allows a Secret's use.
pub const CREDENTIALS_LABEL_VALUE: &str = "true";

/// Whether a Secret's labels allow Flywheel to use it (see [`CREDENTIALS_LABEL`]).
pub fn credentials_allowed(labels: Option<&std::collections::BTreeMap<String, String>>) -> bool {
    labels.and_then(|l| l.get(CREDENTIALS_LABEL)).is_some_and(|v| v == CREDENTIALS_LABEL_VALUE)
}

/// A Secret in the same namespace holding storage credentials. The keys follow the
/// object store's environment names (e.g. `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_ENDPOINT`, `AWS_REGION`); they reach pods through `secretKeyRef`, never a spec
/// or a ConfigMap. The Secret must be labelled `flywheel.dev/credentials: "true"`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsRef {
    /// Name of the Secret; it must be labelled `flywheel.dev/credentials: "true"`.
    #[schemars(length(min = 1, max = 253), regex(pattern = OBJECT_NAME_PATTERN))]
    pub secret_name: String,
}

/// A reference to another object in the same namespace, by name. Fields of this type carry
/// [`OBJECT_NAME_PATTERN`] in the schema.
pub type ObjectName = String;

/// The names of Kubernetes objects (a DNS-1123 subdomain): lowercase letters, digits, `-` and
/// `.`, starting and ending with a letter or digit, at most 253 characters.
pub const OBJECT_NAME_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// Whether `name` is a valid object name ([`OBJECT_NAME_PATTERN`], at most 253 characters).
pub fn is_object_name(name: &str) -> bool {
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|part| {
            let bytes = part.as_bytes();
            !bytes.is_empty()
                && alnum(bytes[0])
                && alnum(bytes[bytes.len() - 1])
                && bytes.iter().all(|&c| alnum(c) || c == b'-')
        })
}

/// Whether `name` is a DNS-1035 label (the names of Services): a lowercase letter first, then
/// lowercase letters, digits and `-`, ending with a letter or digit, at most 63 characters.
pub fn is_dns_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_lowercase()
        && (bytes[bytes.len() - 1].is_ascii_lowercase() || bytes[bytes.len() - 1].is_ascii_digit())
        && bytes.iter().all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
}

/// A Kubernetes resource quantity (`500m`, `2`, `1.5Gi`, `1e3`), as the API server's own
/// schemas for quantities say it.
pub const QUANTITY_PATTERN: &str = r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$";

/// The value of a quantity ([`QUANTITY_PATTERN`]) as a number, to compare requests with
/// limits; None when it is not a quantity.
pub fn parse_quantity(text: &str) -> Option<f64> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-')).unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let number: f64 = number.parse().ok().filter(|n: &f64| n.is_finite())?;
    let binary = |power: i32| Some(number * 1024f64.powi(power));
    let decimal = |power: i32| Some(number * 10f64.powi(power));
    match suffix {
        "" => Some(number),
        "n" => decimal(-9),
        "u" => decimal(-6),
        "m" => decimal(-3),
        "k" => decimal(3),
        "M" => decimal(6),
        "G" => decimal(9),
        "T" => decimal(12),
        "P" => decimal(15),
        "E" => decimal(18),
        "Ki" => binary(1),
        "Mi" => binary(2),
        "Gi" => binary(3),
        "Ti" => binary(4),
        "Pi" => binary(5),
        "Ei" => binary(6),
        exponent => {
            let power: i32 = exponent.strip_prefix(['e', 'E'])?.parse().ok()?;
            Some(number * 10f64.powi(power))
        }
    }
}

/// Compact schema for a `resources` field (container `ResourceRequirements`): requests and
/// limits as quantity maps, without the upstream type's long generated descriptions. That
/// requests do not exceed limits is checked by the operator (`validation`).
pub fn resources_schema(_: &mut SchemaGenerator) -> Schema {
    let quantities = serde_json::json!({
        "type": "object",
        "additionalProperties": {"x-kubernetes-int-or-string": true, "pattern": QUANTITY_PATTERN},
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
