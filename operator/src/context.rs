//! State shared by every controller.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client, Resource, ResourceExt};

use crate::Result;
use crate::metrics::Metrics;

/// The one field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "flywheel-operator";

/// Images and defaults the operator puts into the objects it creates.
#[derive(Clone, Debug)]
pub struct Settings {
    pub server_image: String,
    pub trainer_image: String,
    /// Image of each DataPipeline's review service.
    pub review_service_image: String,
    /// Where DataPipelines without `outputUri` write profiles and trained models.
    pub default_output_uri: Option<String>,
    /// Watch only this namespace (all namespaces when None).
    pub namespace: Option<String>,
    /// Resolve `file://` URIs of ModelVersions, DatasetVersions and DataPipelines on the
    /// operator's own file system (`--allow-local-files`); off by default (docs/security.md).
    pub allow_local_files: bool,
    /// Run a verification Job for each new ModelVersion digest and contract, and make the
    /// ModelVersion Ready only when it passed (on by default).
    pub verify_models: bool,
}

impl Default for Settings {
    fn default() -> Self {
        let version = env!("CARGO_PKG_VERSION");
        Self {
            server_image: format!("flywheel/inference-server:{version}"),
            trainer_image: format!("flywheel/trainer:{version}"),
            review_service_image: format!("flywheel/review-service:{version}"),
            default_output_uri: None,
            namespace: None,
            allow_local_files: false,
            verify_models: true,
        }
    }
}

pub struct Context {
    pub client: Client,
    pub metrics: Metrics,
    pub recorder: Recorder,
    pub settings: Settings,
}

impl Context {
    pub fn new(client: Client, metrics: Metrics, settings: Settings) -> Arc<Self> {
        let reporter = Reporter { controller: FIELD_MANAGER.into(), instance: std::env::var("POD_NAME").ok() };
        let recorder = Recorder::new(client.clone(), reporter);
        Arc::new(Self { client, metrics, recorder, settings })
    }

    /// Publishes an Event on an object; failures are logged, never fatal.
    pub async fn event<K>(&self, obj: &K, warning: bool, reason: &str, action: &str, note: String)
    where
        K: Resource<DynamicType = ()>,
    {
        let event = Event {
            type_: if warning { EventType::Warning } else { EventType::Normal },
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &obj.object_ref(&())).await {
            tracing::warn!(error = %e, object = %obj.name_any(), "could not publish event");
        }
    }

    /// A credentials Secret a spec names, when Flywheel may use it: it exists and is labelled
    /// `flywheel.dev/credentials: "true"` (otherwise `MissingReference` / `SecretNotAllowed`).
    pub async fn credentials_secret(&self, namespace: &str, name: &str) -> Result<Secret> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let secret = api.get_opt(name).await?;
        match crate::controllers::trust::secret_refusal(name, secret.as_ref()) {
            Some(refusal) => Err(refusal),
            None => Ok(secret.expect("a Secret that is not refused exists")),
        }
    }

    /// Key/value pairs of a credentials Secret, for the storage layer.
    pub async fn secret_options(&self, namespace: &str, secret: Option<&str>) -> Result<Vec<(String, String)>> {
        let Some(name) = secret else { return Ok(Vec::new()) };
        let secret = self.credentials_secret(namespace, name).await?;
        // stringData is write-only: the API server returns everything in data.
        Ok(secret
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
            .collect())
    }
}
