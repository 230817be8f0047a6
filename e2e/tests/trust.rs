//! The operator's trust model and spec checks on the real API server (docs/security.md): only
//! Secrets labelled `flywheel.dev/credentials: "true"` are read or injected, a pod gets the
//! credentials of one Secret, `file://` URIs are read only with the opt-in, and every object
//! of examples/invalid/ that the schema cannot refuse is stored and then refused by the
//! operator with an `InvalidSpec` condition and Event naming the field.

use std::path::Path;

use flywheel_api::{DatasetVersion, FlywheelDeployment, ModelVersion};
use flywheel_e2e::{TestNamespace, install_crds, shared_cluster, workspace_root};
use flywheel_operator::context::Settings;
use k8s_openapi::api::apps::v1::Deployment as AppsDeployment;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams};

/// The operator's controllers in this process, watching one namespace.
fn start_operator(client: kube::Client, ns: &str, allow_local_files: bool) -> tokio::task::JoinHandle<()> {
    let settings = Settings {
        allow_local_files,
        // The artifacts are placeholder bytes: trust is checked before any verification.
        verify_models: false,
        ..flywheel_e2e::test_settings(ns)
    };
    flywheel_e2e::start_operator(client, settings)
}

async fn setup(prefix: &str) -> (TestNamespace, kube::Client) {
    static CRDS: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    let cluster = shared_cluster();
    let client = cluster.client().await;
    CRDS.get_or_init(|| async {
        install_crds(&client, &workspace_root().join("crds")).await.expect("CRDs install");
    })
    .await;
    (TestNamespace::new(cluster, prefix).await.unwrap(), client)
}

fn model_yaml(name: &str, uri: &str, secret: &str) -> String {
    format!(
        "apiVersion: flywheel.dev/v1alpha1\nkind: ModelVersion\nmetadata: {{name: {name}}}
spec:
  model: shapes
  version: {name}
  task: detection
  labels: [circle, square, triangle]
  artifact: {{uri: '{uri}', credentials: {{secretName: {secret}}}}}
  input: {{width: 64, height: 64, resize: letterbox}}
  output: {{decoder: yolo}}
"
    )
}

fn secret_yaml(name: &str, labelled: bool) -> String {
    let labels = if labelled { "\n  labels: {flywheel.dev/credentials: \"true\"}" } else { "" };
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}{labels}\nstringData: {{AWS_ACCESS_KEY_ID: k, AWS_SECRET_ACCESS_KEY: s}}\n"
    )
}

/// The `Ready` condition of a Flywheel object, read through the dynamic API.
async fn ready_of(ns: &TestNamespace, kind: &str, name: &str) -> Option<Condition> {
    let plural = format!("{}s", kind.to_ascii_lowercase());
    let resource = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("flywheel.dev", "v1alpha1", kind), &plural);
    let api: kube::Api<DynamicObject> = kube::Api::namespaced_with(ns.client.clone(), &ns.name, &resource);
    let obj = api.get_opt(name).await.ok()??;
    let conditions: Vec<Condition> = serde_json::from_value(obj.data["status"]["conditions"].clone()).ok()?;
    flywheel_api::condition::find(&conditions, "Ready").cloned()
}

/// Waits until the object's `Ready` is False for `reason`, and returns that condition.
async fn refused(ns: &TestNamespace, kind: &str, name: &str, reason: &str, secs: u64) -> Condition {
    let what = format!("{kind} {name} Ready=False for {reason}");
    let found = flywheel_e2e::wait::eventually(&what, secs, || async {
        match ready_of(ns, kind, name).await {
            Some(c) if c.status == "False" && c.reason == reason => Ok(c),
            other => Err(format!("Ready is {other:?}")),
        }
    })
    .await;
    match found {
        Ok(c) => c,
        Err(e) => panic!("{}", e.with_dump(ns.dump().await)),
    }
}

/// The Warning Events of `reason` on the object named `name`.
/// The Warning Events of `reason` on object `name`, once there is at least one (the operator
/// publishes them after the status write that a caller has just seen), or none after 30 s.
async fn warnings(ns: &TestNamespace, name: &str, reason: &str) -> Vec<Event> {
    let api = ns.api::<Event>();
    flywheel_e2e::wait::eventually(&format!("a {reason} Warning on {name}"), 30, || {
        let api = api.clone();
        async move {
            let list = api.list(&ListParams::default()).await.map_err(|e| e.to_string())?;
            let found: Vec<Event> = list
                .items
                .into_iter()
                .filter(|e| e.reason.as_deref() == Some(reason) && e.type_.as_deref() == Some("Warning"))
                .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
                .collect();
            if found.is_empty() { Err("none yet".to_string()) } else { Ok(found) }
        }
    })
    .await
    .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unlabelled_secret_fails_the_model_until_it_is_labelled() {
    let (ns, client) = setup("trust-secret").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("m.onnx"), b"model").unwrap();
    let operator = start_operator(client, &ns.name, true);
    ns.apply_yaml(&secret_yaml("storage", false)).await.unwrap();
    let uri = format!("file://{}/m.onnx", dir.path().display());
    ns.apply_yaml(&model_yaml("m-v1", &uri, "storage")).await.unwrap();

    let ready = refused(&ns, "ModelVersion", "m-v1", "CredentialsNotAllowed", 60).await;
    assert!(ready.message.contains("not labelled flywheel.dev/credentials=true"), "{}", ready.message);
    let mv = ns.api::<ModelVersion>().get("m-v1").await.unwrap();
    let status = mv.status.unwrap();
    assert_eq!(status.phase, Some(flywheel_api::model_version::ModelPhase::Failed));
    assert_eq!((status.digest, status.size_bytes), (None, None), "nothing was read");
    let events = warnings(&ns, "m-v1", "CredentialsNotAllowed").await;
    assert!(!events.is_empty(), "a Warning Event names the label");

    // Labelling the Secret (not the ModelVersion) is enough: the operator looks again.
    let label = serde_json::json!({"metadata": {"labels": {"flywheel.dev/credentials": "true"}}});
    ns.api::<Secret>().patch("storage", &PatchParams::default(), &Patch::Merge(&label)).await.unwrap();
    let verified = |m: Option<&ModelVersion>| {
        m.and_then(|m| m.status.as_ref())
            .is_some_and(|s| flywheel_api::condition::is_true(&s.conditions, "Ready") && s.digest.is_some())
    };
    ns.wait_for::<ModelVersion>("m-v1", verified, 90).await.unwrap();
    operator.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_files_are_not_read_without_the_opt_in() {
    let (ns, client) = setup("trust-local").await;
    let operator = start_operator(client, &ns.name, false);
    // A file every machine has: its digest and size must not reach the status.
    ns.apply_yaml(
        &model_yaml("etc-passwd", "file:///etc/passwd", "unused").replace(", credentials: {secretName: unused}", ""),
    )
    .await
    .unwrap();
    ns.apply_yaml(
        "apiVersion: flywheel.dev/v1alpha1\nkind: DatasetVersion\nmetadata: {name: etc}\nspec: {uri: 'file:///etc/', format: imagefolder, task: classification, labels: [a]}\n",
    )
    .await
    .unwrap();
    let ready = refused(&ns, "ModelVersion", "etc-passwd", "LocalFilesNotAllowed", 60).await;
    assert!(ready.message.contains("--allow-local-files") && ready.message.contains("pvc://"), "{}", ready.message);
    let status = ns.api::<ModelVersion>().get("etc-passwd").await.unwrap().status.unwrap();
    assert_eq!((status.digest, status.size_bytes), (None, None));
    assert!(!warnings(&ns, "etc-passwd", "LocalFilesNotAllowed").await.is_empty());
    refused(&ns, "DatasetVersion", "etc", "LocalFilesNotAllowed", 60).await;
    let ds = ns.api::<DatasetVersion>().get("etc").await.unwrap().status.unwrap();
    assert_eq!(ds.sample_count, None, "nothing was counted");
    operator.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_secrets_for_one_deployment_are_refused_naming_both() {
    let (ns, client) = setup("trust-two").await;
    let dir = tempfile::tempdir().unwrap();
    for m in ["v1", "v2"] {
        std::fs::write(dir.path().join(format!("{m}.onnx")), format!("model {m}")).unwrap();
    }
    let operator = start_operator(client, &ns.name, true);
    ns.apply_yaml(&format!("{}---\n{}", secret_yaml("store-a", true), secret_yaml("store-b", true))).await.unwrap();
    let uri = |m: &str| format!("file://{}/{m}.onnx", dir.path().display());
    ns.apply_yaml(&format!(
        "{}---\n{}",
        model_yaml("m-v1", &uri("v1"), "store-a"),
        model_yaml("m-v2", &uri("v2"), "store-b")
    ))
    .await
    .unwrap();
    let verified = |m: Option<&ModelVersion>| m.and_then(|m| m.status.as_ref()).is_some_and(|s| s.digest.is_some());
    for m in ["m-v1", "m-v2"] {
        ns.wait_for::<ModelVersion>(m, verified, 60).await.unwrap();
    }
    ns.apply_yaml("apiVersion: flywheel.dev/v1alpha1\nkind: Deployment\nmetadata: {name: shapes}\nspec: {champion: {modelVersion: m-v1}, shadow: {modelVersion: m-v2}, replicas: 0}\n")
        .await
        .unwrap();
    let ready = refused(&ns, "Deployment", "shapes", "ConflictingCredentials", 60).await;
    for part in ["champion ModelVersion \"m-v1\"", "\"store-a\"", "shadow ModelVersion \"m-v2\"", "\"store-b\""] {
        assert!(ready.message.contains(part), "{part} missing from {}", ready.message);
    }
    assert!(!warnings(&ns, "shapes", "ConflictingCredentials").await.is_empty());
    assert!(
        ns.api::<AppsDeployment>().get_opt("shapes-inference").await.unwrap().is_none(),
        "no pod gets half of its credentials"
    );

    // One Secret for both models: served.
    ns.apply_yaml(&model_yaml("m-v2", &uri("v2"), "store-a")).await.unwrap();
    ns.wait_for::<AppsDeployment>("shapes-inference", flywheel_e2e::conditions::exists(), 90).await.unwrap();
    let env = ns
        .api::<AppsDeployment>()
        .get("shapes-inference")
        .await
        .unwrap()
        .spec
        .unwrap()
        .template
        .spec
        .unwrap()
        .containers[0]
        .env
        .clone()
        .unwrap();
    let secrets: std::collections::BTreeSet<String> =
        env.iter().filter_map(|e| e.value_from.as_ref()?.secret_key_ref.as_ref().map(|r| r.name.clone())).collect();
    assert_eq!(secrets, ["store-a".to_string()].into());
    let d = ns.api::<FlywheelDeployment>().get("shapes").await.unwrap();
    assert_eq!(d.status.unwrap().shadow.as_deref(), Some("m-v2"));
    operator.abort();
}

/// Every example the schema cannot refuse: stored by the API server, then refused by the
/// operator, naming the field its header states.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_refuses_what_the_schema_cannot_naming_the_field() {
    let (ns, client) = setup("trust-invalid").await;
    let operator = start_operator(client, &ns.name, false);
    let dir = workspace_root().join("examples/invalid");
    let mut cases = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let Some(field) = text.lines().find_map(|l| l.strip_prefix("# Refused by the operator at: ")) else {
            continue;
        };
        let applied = ns.apply_yaml(&text).await.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let obj = &applied[0];
        let kind = obj.types.as_ref().unwrap().kind.clone();
        cases.push((file_name(&path), kind, obj.metadata.name.clone().unwrap(), field.to_string()));
    }
    assert!(cases.len() >= 8, "{cases:?}");
    for (file, kind, name, field) in &cases {
        let ready = refused(&ns, kind, name, "InvalidSpec", 60).await;
        assert!(ready.message.starts_with(field.as_str()), "{file}: {}", ready.message);
        let events = warnings(&ns, name, "InvalidSpec").await;
        assert!(
            events.iter().any(|e| e.note.as_deref().is_some_and(|n| n.starts_with(field.as_str()))),
            "{file}: no InvalidSpec Event naming {field}: {events:?}"
        );
    }
    // Nothing was created for them.
    let children = ns.api::<AppsDeployment>().list(&ListParams::default()).await.unwrap();
    assert!(children.items.is_empty(), "{:?}", children.items.iter().map(|d| &d.metadata.name).collect::<Vec<_>>());
    operator.abort();
}

fn file_name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}
