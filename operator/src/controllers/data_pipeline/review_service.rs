//! The review service of a DataPipeline's feedback loop (`<pipeline>-review`): the one owner of
//! the loop's reviews for every inference replica. It ingests the Deployment's prediction log,
//! serves the review API and page (the inference pods redirect theirs to it), writes reviewed
//! samples into the feedback dataset, and computes the quality figures the promotion gate reads.
//!
//! Children (owned by the pipeline, server-side applied): a PersistentVolumeClaim for its SQLite
//! database unless `feedbackLoop.database` names a PostgreSQL Secret, an apps/v1 Deployment of
//! one replica (`Recreate`: SQLite takes one writer) and a Service. Building them is pure;
//! [`read`] asks the running pod for its `/status`.

use std::collections::BTreeMap;
use std::time::Duration;

use flywheel_api::data_pipeline::{ReviewQuality, ReviewServiceStatus};
use flywheel_api::{DataPipeline, DatasetVersion, FlywheelDeployment, Task};
use k8s_openapi::api::apps::v1::Deployment as AppsDeployment;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Service};
use kube::api::ListParams;
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use flywheel_api::ModelVersion;
use flywheel_api::data_pipeline::conditions;

use super::read::Refs;
use crate::context::{Context, FIELD_MANAGER};
use crate::controllers::deployment::apply::apply;
use crate::controllers::deployment::build::{
    credential_env, pvc_claims, pvc_volume, security_context, token_secret_name,
};
use crate::controllers::recorder::StatusRecorder;
use crate::controllers::trust::{self, SecretUse};
use crate::{Error, Result};

pub const PORT: i32 = 8090;
/// The Service's second port to the same `/metrics`, named as the inference Service's.
pub const METRICS_PORT: i32 = 9090;
pub const DATA_DIR: &str = "/var/lib/flywheel/review";
pub const TOKEN_DIR: &str = "/etc/flywheel/review-token";
/// Label of the review service's pods: the pipeline's name.
pub const LABEL: &str = "flywheel.dev/review-service";
/// Label of the review service's pods: the Deployment whose reviews it owns (monitoring gives
/// its series that `deployment`). Not `flywheel.dev/deployment`, which selects inference pods.
pub const LABEL_REVIEW_FOR: &str = "flywheel.dev/review-for";
/// The SQLite volume's default size.
pub const CLAIM_SIZE: &str = "1Gi";

pub fn name(p: &DataPipeline) -> String {
    format!("{}-review", p.name_any())
}

pub fn claim_name(p: &DataPipeline) -> String {
    format!("{}-review-db", p.name_any())
}

/// The in-cluster URL of the review API and page; the inference pods redirect there.
pub fn url(p: &DataPipeline) -> String {
    format!("http://{}.{}.svc:{PORT}", name(p), p.namespace().unwrap_or_default())
}

/// Whether the pipeline runs a review service for `d`: its feedback loop is on and `d` logs
/// predictions (there is nothing to review otherwise).
pub fn wanted(p: &DataPipeline, d: &FlywheelDeployment) -> bool {
    p.spec.feedback_loop.as_ref().is_some_and(|f| f.enabled) && d.spec.prediction_log.is_some()
}

pub fn labels(p: &DataPipeline) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "flywheel-review-service".into()),
        ("app.kubernetes.io/instance".into(), p.name_any()),
        ("app.kubernetes.io/managed-by".into(), "flywheel-operator".into()),
        (LABEL.into(), p.name_any()),
    ])
}

/// Everything the builders read besides the pipeline.
pub struct Inputs<'a> {
    pub deployment: &'a FlywheelDeployment,
    pub feedback: &'a DatasetVersion,
    pub task: Task,
    /// The feedback dataset's labels, or the champion's when it lists none.
    pub labels: Vec<String>,
    /// The Secret of the storage credentials (the log's and the feedback dataset's).
    pub credentials: Option<String>,
    /// The Secret holding the review API's bearer token (the Deployment's).
    pub token_secret: String,
    pub image: &'a str,
}

/// What the pipeline's review service is made of.
#[derive(Debug)]
pub struct Children {
    pub claim: Option<PersistentVolumeClaim>,
    pub apps: AppsDeployment,
    pub service: Service,
}

fn metadata(p: &DataPipeline, name: String) -> serde_json::Value {
    let owner = p.controller_owner_ref(&()).expect("a stored DataPipeline has a uid");
    json!({"name": name, "namespace": p.namespace(), "labels": labels(p), "ownerReferences": [owner]})
}

fn object<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<T> {
    serde_json::from_value(v).map_err(|e| Error::Serialization(e.to_string()))
}

/// Pure: the children for `inputs`.
pub fn children(p: &DataPipeline, inputs: &Inputs) -> Result<Children> {
    let log = inputs.deployment.spec.prediction_log.as_ref().ok_or_else(|| {
        Error::InvalidSpec(format!("Deployment {:?} has no spec.predictionLog to review", inputs.deployment.name_any()))
    })?;
    let feedback = &inputs.feedback.spec;
    let database = p.spec.feedback_loop.as_ref().and_then(|f| f.database.as_ref());
    let mut env = vec![
        json!({"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}),
        json!({"name": "RUST_LOG", "value": "info"}),
    ];
    let mut volumes = vec![json!({"name": "review-token", "secret": {"secretName": inputs.token_secret}})];
    let mut mounts = vec![json!({"name": "review-token", "mountPath": TOKEN_DIR, "readOnly": true})];
    let claim = match database {
        Some(db) => {
            env.push(json!({"name": "FLYWHEEL_REVIEW_DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": db.secret_name, "key": db.key}}}));
            None
        }
        None => {
            volumes.push(json!({"name": "database", "persistentVolumeClaim": {"claimName": claim_name(p)}}));
            mounts.push(json!({"name": "database", "mountPath": DATA_DIR}));
            Some(object::<PersistentVolumeClaim>(json!({
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": metadata(p, claim_name(p)),
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": CLAIM_SIZE}}},
            }))?)
        }
    };
    env.extend(inputs.credentials.iter().flat_map(|s| credential_env(s)));
    for claim in pvc_claims(&[log.uri.to_string(), feedback.uri.to_string()]) {
        let (volume, mount) = pvc_volume(&claim);
        volumes.push(volume);
        mounts.push(mount);
    }
    let task = serde_json::to_value(inputs.task).map_err(|e| Error::Serialization(e.to_string()))?;
    let format = serde_json::to_value(feedback.format).map_err(|e| Error::Serialization(e.to_string()))?;
    let mut args = vec![
        format!("--listen=$(POD_IP):{PORT}"),
        format!("--log-uri={}", log.uri),
        format!("--feedback-uri={}", feedback.uri),
        format!("--feedback-format={}", format.as_str().unwrap_or_default()),
        format!("--task={}", task.as_str().unwrap_or_default()),
        format!("--labels={}", inputs.labels.join(",")),
        format!("--token-file={TOKEN_DIR}/token"),
        "--poll-seconds=2".to_string(),
    ];
    if claim.is_some() {
        args.push(format!("--sqlite-file={DATA_DIR}/reviews.db"));
    }
    let mut pod_labels = labels(p);
    pod_labels.insert(LABEL_REVIEW_FOR.into(), inputs.deployment.name_any());
    let probe =
        |path: &str| json!({"httpGet": {"path": path, "port": "http"}, "periodSeconds": 5, "failureThreshold": 3});
    let apps = object::<AppsDeployment>(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(p, name(p)),
        "spec": {
            "replicas": 1,
            // SQLite takes one writer: the old pod is gone before the new one opens the file.
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": {LABEL: p.name_any()}},
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": {
                    "containers": [{
                        "name": "review-service",
                        "image": inputs.image,
                        "args": args,
                        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
                        "env": env,
                        "volumeMounts": mounts,
                        "readinessProbe": probe("/healthz"),
                        "livenessProbe": probe("/healthz"),
                        "securityContext": security_context(),
                    }],
                    "volumes": volumes,
                },
            },
        },
    }))?;
    let service = object::<Service>(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(p, name(p)),
        "spec": {
            "selector": {LABEL: p.name_any()},
            // `metrics` as on the inference Service, for a ServiceMonitor.
            "ports": [
                {"name": "http", "port": PORT, "targetPort": "http", "protocol": "TCP"},
                {"name": "metrics", "port": METRICS_PORT, "targetPort": "http", "protocol": "TCP"},
            ],
        },
    }))?;
    Ok(Children { claim, apps, service })
}

/// What the running service said.
#[derive(Debug, PartialEq)]
pub enum Reading {
    /// No running pod with an address yet.
    Starting,
    /// The pod answered with an error (503: its database is out of reach).
    Failing(String),
    Answered(serde_json::Value),
}

/// GETs `/status` from the service's running pod (short timeout: a slow pod is read next time).
pub async fn read(client: &kube::Client, p: &DataPipeline) -> Reading {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &p.namespace().unwrap_or_default());
    let selector = format!("{LABEL}={}", p.name_any());
    let Ok(list) = pods.list(&ListParams::default().labels(&selector)).await else { return Reading::Starting };
    let Some(ip) = list
        .items
        .iter()
        .filter_map(|pod| pod.status.as_ref())
        .filter(|s| s.phase.as_deref() == Some("Running"))
        .find_map(|s| s.pod_ip.clone())
    else {
        return Reading::Starting;
    };
    // The service answers 503 within 3 s when its database is out of reach.
    let http = reqwest::Client::builder().timeout(Duration::from_secs(6)).build().expect("HTTP client");
    let url = format!("http://{ip}:{PORT}/status");
    match http.get(&url).send().await {
        Ok(r) if r.status().is_success() => match r.json().await {
            Ok(v) => Reading::Answered(v),
            Err(e) => Reading::Failing(format!("unreadable /status: {e}")),
        },
        Ok(r) => {
            let code = r.status();
            let body: serde_json::Value = r.json().await.unwrap_or_default();
            Reading::Failing(format!("{code}: {}", body["error"].as_str().unwrap_or("no reason given")))
        }
        Err(e) if e.is_connect() => Reading::Starting,
        Err(e) if e.is_timeout() => Reading::Failing("nothing within 6 s".into()),
        Err(e) => Reading::Failing(e.to_string()),
    }
}

/// Pure: the status from what the service answered: totals, and the quality figures of the
/// pair the Deployment serves now (champion and shadow ModelVersions, as records name them).
pub fn status(
    p: &DataPipeline,
    answer: &serde_json::Value,
    champion: Option<&str>,
    shadow: Option<&str>,
) -> ReviewServiceStatus {
    let totals = &answer["totals"];
    let quality = champion.and_then(|champion| {
        answer["quality"].as_array()?.iter().find(|q| {
            q["championModel"]["version"].as_str() == Some(champion) && q["shadowModel"]["version"].as_str() == shadow
        })
    });
    ReviewServiceStatus {
        url: url(p),
        database: database_kind(p).into(),
        predictions: totals["predictions"].as_u64(),
        reviewed: totals["reviewed"].as_u64(),
        written: totals["written"].as_u64(),
        quality: quality.map(|q| ReviewQuality {
            metric: q["metric"].as_str().unwrap_or_default().to_string(),
            champion_model_version: champion.unwrap_or_default().to_string(),
            shadow_model_version: shadow.map(str::to_string),
            reviewed_samples: q["reviewedSamples"].as_u64().unwrap_or(0),
            champion: q["champion"].as_f64(),
            shadow: q["shadow"].as_f64(),
        }),
    }
}

pub fn database_kind(p: &DataPipeline) -> &'static str {
    match p.spec.feedback_loop.as_ref().and_then(|f| f.database.as_ref()) {
        Some(_) => "postgresql",
        None => "sqlite",
    }
}

/// Deploys the review service when the pipeline wants one, then reads it: the status to record
/// (None without a service) and `ReviewServiceReady`. What only the user can fix (no prediction
/// log, credentials) is a condition; API errors propagate and back off.
pub async fn reconcile(
    ctx: &Context,
    p: &DataPipeline,
    refs: &Refs,
    rec: &mut StatusRecorder<'_>,
) -> Result<Option<ReviewServiceStatus>> {
    let Some(feedback) = refs.feedback.as_ref() else {
        stop(ctx, p, "the feedback loop is disabled").await?;
        return Ok(None);
    };
    let d = &refs.deployment;
    if !wanted(p, d) {
        let message =
            format!("Deployment {:?} has no spec.predictionLog: there are no predictions to review", d.name_any());
        stop(ctx, p, &message).await?;
        rec.fail(conditions::REVIEW_SERVICE_READY, "NoPredictionLog", message).announce_reason();
        return Ok(None);
    }
    let children = match inputs(ctx, p, refs, feedback).await {
        Ok(inputs) => children(p, &inputs)?,
        Err(e) if e.is_user_error() => {
            rec.fail(conditions::REVIEW_SERVICE_READY, e.reason(), e.to_string()).announce_reason();
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let ns = p.namespace().unwrap_or_default();
    if let Some(claim) = &children.claim {
        apply(&ctx.client, &ns, claim).await?;
    }
    apply(&ctx.client, &ns, &children.apps).await?;
    apply(&ctx.client, &ns, &children.service).await?;
    let served = d.status.as_ref();
    let (champion, shadow) = (served.and_then(|s| s.champion.as_deref()), served.and_then(|s| s.shadow.as_deref()));
    let c = conditions::REVIEW_SERVICE_READY;
    let status = match read(&ctx.client, p).await {
        Reading::Answered(answer) => {
            rec.ok(c, "Serving", format!("reviews at {}/review", url(p))).announce();
            status(p, &answer, champion, shadow)
        }
        // A pod starting is no fault: no Event.
        Reading::Starting => {
            rec.unknown(c, "Starting", "the review service has no running pod yet").changed();
            empty(p)
        }
        Reading::Failing(why) => {
            rec.fail(c, "Unavailable", format!("the review service answers {why}")).announce_reason();
            empty(p)
        }
    };
    Ok(Some(status))
}

/// Scales a review service that is no longer wanted to 0 replicas (an Event says why). Its
/// database claim and Service stay, so turning the loop on again resumes with every review.
async fn stop(ctx: &Context, p: &DataPipeline, why: &str) -> Result<()> {
    let api: Api<AppsDeployment> = Api::namespaced(ctx.client.clone(), &p.namespace().unwrap_or_default());
    let Some(running) = api.get_opt(&name(p)).await? else { return Ok(()) };
    if running.spec.as_ref().and_then(|s| s.replicas) == Some(0) {
        return Ok(());
    }
    // A merge patch of the one field: an apply of a partial object by the field manager that
    // applied the whole Deployment would drop the rest of it.
    let patch = json!({"spec": {"replicas": 0}});
    let params = kube::api::PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
    api.patch(&name(p), &params, &kube::api::Patch::Merge(&patch)).await?;
    ctx.event(p, false, "ReviewServiceStopped", "Reconcile", format!("{} scaled to 0: {why}", name(p))).await;
    Ok(())
}

fn empty(p: &DataPipeline) -> ReviewServiceStatus {
    ReviewServiceStatus { url: url(p), database: database_kind(p).into(), ..Default::default() }
}

/// Reads what the builders need: the champion (labels when the feedback dataset lists none,
/// credentials for the log its pods write), and checks every Secret the pod would read.
async fn inputs<'a>(
    ctx: &'a Context,
    p: &DataPipeline,
    refs: &'a Refs,
    feedback: &'a DatasetVersion,
) -> Result<Inputs<'a>> {
    let ns = p.namespace().unwrap_or_default();
    let d = &refs.deployment;
    let models: Api<ModelVersion> = Api::namespaced(ctx.client.clone(), &ns);
    let champion_name = &d.spec.champion.model_version;
    let champion = models.get_opt(champion_name).await?;
    let mut uses: Vec<SecretUse> = feedback
        .spec
        .credentials
        .iter()
        .map(|c| SecretUse::new(&c.secret_name, "DatasetVersion", "feedback", &feedback.name_any(), "spec.credentials"))
        .collect();
    uses.extend(champion.as_ref().and_then(|mv| {
        mv.spec.artifact.credentials.as_ref().map(|c| {
            SecretUse::new(&c.secret_name, "ModelVersion", "champion", &mv.name_any(), "spec.artifact.credentials")
        })
    }));
    let credentials = trust::one_secret(&uses).map_err(Error::ConflictingCredentials)?;
    for secret in credentials
        .iter()
        .chain(p.spec.feedback_loop.as_ref().and_then(|f| f.database.as_ref()).map(|db| &db.secret_name))
    {
        ctx.credentials_secret(&ns, secret).await?;
    }
    let labels = match (&feedback.spec.labels, &champion) {
        (labels, _) if !labels.is_empty() => labels.clone(),
        (_, Some(mv)) => mv.spec.labels.clone(),
        (_, None) => {
            return Err(Error::InvalidSpec(format!(
                "feedback DatasetVersion {:?} lists no labels and the champion ModelVersion {champion_name:?} does not exist",
                feedback.name_any()
            )));
        }
    };
    Ok(Inputs {
        deployment: d,
        feedback,
        task: feedback.spec.task,
        labels,
        credentials,
        token_secret: token_secret_name(d),
        image: &ctx.settings.review_service_image,
    })
}
