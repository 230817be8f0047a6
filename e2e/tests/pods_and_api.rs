//! End-to-end tests of what Pods see: ConfigMap/Secret/fieldRef environment, mounted
//! ConfigMaps that follow updates, init containers and claims, service-account RBAC; and the
//! API server's validation of Flywheel's CRDs against examples/ and examples/invalid/ (the
//! files the operator refuses instead are stored).

mod common;

use common::{http_get, pod_ip};
use flywheel_e2e::wait::eventually;
use flywheel_e2e::{TestNamespace, conditions, shared_cluster};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Patch, PatchParams};

#[tokio::test]
async fn mounted_configmap_updates_reach_the_file_and_env_is_resolved() {
    let ns = TestNamespace::new(shared_cluster(), "config").await.unwrap();
    ns.apply_yaml(
        r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: greeting}
data: {text: hello, mode: fast}
---
apiVersion: v1
kind: Secret
metadata: {name: creds}
stringData: {password: s3cret}
---
apiVersion: v1
kind: Pod
metadata: {name: reader}
spec:
  containers:
  - name: app
    image: flywheel/testapp
    args: [serve, --port, "8080", --file, /etc/greeting/text]
    env:
    - {name: MODE, valueFrom: {configMapKeyRef: {name: greeting, key: mode}}}
    - {name: PASSWORD, valueFrom: {secretKeyRef: {name: creds, key: password}}}
    - {name: MY_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    - {name: MY_NAMESPACE, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
    - {name: COMBINED, value: "$(MODE)-$(MY_NAME)"}
    readinessProbe: {httpGet: {path: /readyz, port: 8080}, periodSeconds: 1}
    volumeMounts: [{name: greeting, mountPath: /etc/greeting}]
  volumes:
  - {name: greeting, configMap: {name: greeting}}
"#,
    )
    .await
    .unwrap();
    let pod = ns.wait_for::<Pod>("reader", conditions::pod_ready(), 90).await.unwrap().unwrap();
    let ip = pod_ip(&pod);
    assert_eq!(http_get(&ip, 8080, "/file").await.unwrap(), "hello");
    assert_eq!(http_get(&ip, 8080, "/env/MODE").await.unwrap(), "fast");
    assert_eq!(http_get(&ip, 8080, "/env/PASSWORD").await.unwrap(), "s3cret");
    assert_eq!(http_get(&ip, 8080, "/env/MY_NAME").await.unwrap(), "reader");
    assert_eq!(http_get(&ip, 8080, "/env/MY_NAMESPACE").await.unwrap(), ns.name);
    assert_eq!(http_get(&ip, 8080, "/env/COMBINED").await.unwrap(), "fast-reader");
    assert_eq!(http_get(&ip, 8080, "/env/POD_IP").await.unwrap(), ip);

    let patch = serde_json::json!({"data": {"text": "bonjour"}});
    ns.api::<ConfigMap>().patch("greeting", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    eventually("the mounted file to show the new ConfigMap value", 60, || async {
        match http_get(&ip, 8080, "/file").await? {
            text if text == "bonjour" => Ok(()),
            other => Err(format!("file still reads {other:?}")),
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn init_containers_and_claims_share_files_with_the_app() {
    let ns = TestNamespace::new(shared_cluster(), "volumes").await.unwrap();
    ns.apply_yaml(
        r#"
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
---
apiVersion: v1
kind: Pod
metadata: {name: writer}
spec:
  initContainers:
  - name: init
    image: flywheel/testapp
    args: [write, /claim/note, persisted]
    volumeMounts: [{name: data, mountPath: /claim}]
  containers:
  - name: app
    image: flywheel/testapp
    args: [serve, --port, "8080", --file=/claim/note]
    readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
    volumeMounts: [{name: data, mountPath: /claim}, {name: scratch, mountPath: /tmp/scratch}]
  volumes:
  - {name: data, persistentVolumeClaim: {claimName: data}}
  - {name: scratch, emptyDir: {}}
"#,
    )
    .await
    .unwrap();
    let pod = ns.wait_for::<Pod>("writer", conditions::pod_ready(), 90).await.unwrap().unwrap();
    let status = pod.status.clone().unwrap();
    let init = status.init_container_statuses.unwrap()[0].state.clone().unwrap().terminated.unwrap();
    assert_eq!((init.exit_code, init.reason.as_deref()), (0, Some("Completed")));
    assert!(ns.container_log("writer", "init").unwrap().contains("wrote"));
    assert_eq!(http_get(&pod_ip(&pod), 8080, "/file").await.unwrap(), "persisted");
}

#[tokio::test]
async fn pods_get_exactly_the_rbac_of_their_service_account() {
    let ns = TestNamespace::new(shared_cluster(), "rbac").await.unwrap();
    ns.apply_yaml(
        r#"
apiVersion: v1
kind: ServiceAccount
metadata: {name: pod-reader}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: pod-reader}
rules:
- {apiGroups: [""], resources: [pods], verbs: [get, list]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: pod-reader}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: pod-reader}
subjects:
- {kind: ServiceAccount, name: pod-reader}
---
apiVersion: v1
kind: Pod
metadata: {name: allowed}
spec:
  serviceAccountName: pod-reader
  restartPolicy: Never
  containers:
  - {name: check, image: flywheel/testapp, args: [kube-check, --verb, list, --resource, pods]}
---
apiVersion: v1
kind: Pod
metadata: {name: forbidden}
spec:
  serviceAccountName: pod-reader
  restartPolicy: Never
  containers:
  - {name: check, image: flywheel/testapp, args: [kube-check, --verb, list, --resource, secrets]}
"#,
    )
    .await
    .unwrap();
    ns.wait_for::<Pod>("allowed", conditions::pod_phase("Succeeded"), 90).await.unwrap();
    let log = ns.container_log("allowed", "check").unwrap();
    assert!(log.contains("allowed: list pods"), "{log}");

    let pod = ns.wait_for::<Pod>("forbidden", conditions::pod_phase("Failed"), 90).await.unwrap().unwrap();
    let terminated = pod.status.unwrap().container_statuses.unwrap()[0].state.clone().unwrap().terminated.unwrap();
    assert_eq!(terminated.exit_code, 3, "exit code 3 = the API server answered 403");
    let log = ns.container_log("forbidden", "check").unwrap();
    assert!(log.contains("Forbidden") && log.contains("system:serviceaccount:"), "{log}");
}

fn yaml_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    files
}

/// Creates a Flywheel object (POST, not server-side apply); the API server's answer on refusal.
async fn create(ns: &TestNamespace, yaml: &str) -> Result<(), kube::core::Status> {
    use kube::api::{ApiResource, DynamicObject, GroupVersionKind, PostParams};
    let obj: DynamicObject = serde_yaml::from_str(yaml).unwrap();
    let kind = obj.types.as_ref().unwrap().kind.clone();
    let gvk = GroupVersionKind::gvk("flywheel.dev", "v1alpha1", &kind);
    let resource = ApiResource::from_gvk_with_plural(&gvk, &format!("{}s", kind.to_ascii_lowercase()));
    let api: kube::Api<DynamicObject> = kube::Api::namespaced_with(ns.client.clone(), &ns.name, &resource);
    match api.create(&PostParams::default(), &obj).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) => Err(*status),
        Err(e) => panic!("creating {kind}: {e}"),
    }
}

#[tokio::test]
async fn crds_accept_the_examples_and_reject_every_invalid_example() {
    let cluster = shared_cluster();
    let client = cluster.client().await;
    let root = flywheel_e2e::workspace_root();
    let crds = flywheel_e2e::install_crds(&client, &root.join("crds")).await.unwrap();
    assert!(!crds.is_empty(), "crds/ holds no CustomResourceDefinition");
    let ns = TestNamespace::new(cluster, "examples").await.unwrap();

    let invalid = yaml_files(&root.join("examples/invalid"));
    assert!(!invalid.is_empty(), "examples/invalid/ holds no YAML file");
    for file in &invalid {
        let text = std::fs::read_to_string(file).unwrap();
        if text.lines().any(|l| l.starts_with("# Refused by the operator at: ")) {
            // What the schema cannot say: stored, then refused by the operator (api/tests/examples.rs).
            ns.apply_yaml(&text).await.unwrap_or_else(|e| panic!("{}: the API server refused it: {e}", file.display()));
            continue;
        }
        let err = ns.apply_yaml(&text).await.expect_err(&format!("{} was accepted by the API server", file.display()));
        let status = err.api_status().unwrap_or_else(|| panic!("{}: not an API rejection: {err}", file.display()));
        if status.code == 500 && status.message.contains("duplicate entries") {
            // A 1.20 API server refuses a set with duplicates already while it builds the
            // server-side-apply patch (as a 500); a plain create meets the schema's own check.
            let status = create(&ns, &text).await.expect_err(&format!("{} was created", file.display()));
            assert_eq!(status.code, 422, "{}: unexpected status {status:?}", file.display());
            assert!(status.message.contains("Duplicate value"), "{}: {status:?}", file.display());
            continue;
        }
        assert!(matches!(status.code, 400 | 422), "{}: unexpected status {status:?}", file.display());
    }

    let valid = yaml_files(&root.join("examples/quickstart"));
    assert!(!valid.is_empty(), "examples/quickstart/ holds no YAML file");
    for file in &valid {
        let text = std::fs::read_to_string(file).unwrap();
        ns.apply_yaml(&text).await.unwrap_or_else(|e| panic!("{} was rejected: {e}", file.display()));
    }
}
