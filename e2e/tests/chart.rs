//! The Helm chart (charts/flywheel) and the Dockerfiles (docker/), checked with real tools:
//! `helm lint --strict` and `helm template` with helm 3 and helm 4, values.schema.json rejecting
//! bad values, the rendered manifests validated by kubernetes-validate, checkov on the
//! Dockerfiles, and one `helm install` on the local cluster that runs the operator under its own
//! service account, reconciles the quickstart against a real S3 server, and uninstalls cleanly.

mod common;

use std::path::{Path, PathBuf};

use flywheel_api::{FlywheelDeployment, ModelVersion};
use flywheel_e2e::{TestNamespace, conditions, shared_cluster, workspace_root};
use flywheel_test_support::seaweed::Seaweed;
use flywheel_test_support::tools::{self, HELM_MAJORS, Ran};
use k8s_openapi::api::apps::v1::Deployment as AppsDeployment;
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{ListParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::Value;

fn chart_dir() -> PathBuf {
    workspace_root().join("charts/flywheel")
}

/// Every optional feature switched on (ServiceMonitor, PodMonitor, PrometheusRule, watchNamespace...).
fn all_options() -> PathBuf {
    chart_dir().join("ci/all-options-values.yaml")
}

fn app_version() -> String {
    let chart: Value = serde_yaml::from_str(&std::fs::read_to_string(chart_dir().join("Chart.yaml")).unwrap()).unwrap();
    chart["appVersion"].as_str().expect("Chart.yaml has an appVersion").to_string()
}

/// `helm <args>` with helm `major`, its state kept in a temporary directory.
fn helm(major: u8, args: &[&str]) -> Ran {
    let home = tempfile::tempdir().unwrap();
    tools::run(tools::helm_command(major, home.path()).args(args))
}

/// `helm template` of the chart as release "fw" in namespace "flywheel-system", CRDs included.
fn render(major: u8, values: Option<&Path>, set: &[&str]) -> (String, Vec<Value>) {
    let chart = chart_dir();
    let mut args = vec!["template", "fw", chart.to_str().unwrap(), "--namespace", "flywheel-system", "--include-crds"];
    let values_arg = values.map(|v| v.to_str().unwrap().to_string());
    if let Some(v) = &values_arg {
        args.extend(["-f", v.as_str()]);
    }
    for s in set {
        args.extend(["--set", s]);
    }
    let out = helm(major, &args).expect_success().stdout;
    let docs = serde_yaml::Deserializer::from_str(&out)
        .map(|d| serde_json::to_value(<serde_yaml::Value as serde::Deserialize>::deserialize(d).unwrap()).unwrap())
        .filter(|v| !v.is_null())
        .collect();
    (out, docs)
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found = of_kind(docs, kind);
    assert_eq!(found.len(), 1, "expected one {kind}, got {}", found.len());
    found[0]
}

#[test]
fn lint_strict_passes_with_helm_3_and_4() {
    let chart = chart_dir();
    let values = all_options();
    for major in HELM_MAJORS {
        let plain = helm(major, &["lint", "--strict", chart.to_str().unwrap()]).expect_success();
        assert!(plain.stdout.contains("1 chart(s) linted, 0 chart(s) failed"), "helm {major}: {}", plain.stdout);
        let all = helm(major, &["lint", "--strict", chart.to_str().unwrap(), "-f", values.to_str().unwrap()])
            .expect_success();
        assert!(all.stdout.contains("0 chart(s) failed"), "helm {major}: {}", all.stdout);
    }
}

#[test]
fn values_schema_rejects_bad_values() {
    // (--set, the key the error must name)
    let bad = [
        ("replicaCount=0", "replicaCount"),
        ("inferenceMonitor.kind=Probe", "kind"),
        ("watchNamespace=Not_A_Namespace", "watchNamespace"),
        ("image.pullPolicy=Sometimes", "pullPolicy"),
        ("imagePullPolicy=Always", "imagePullPolicy"),
        ("defaultOutputUri=s3://bucket/no-trailing-slash", "defaultOutputUri"),
        ("port=80", "port"),
    ];
    let chart = chart_dir();
    for major in HELM_MAJORS {
        for (set, key) in bad {
            let ran = helm(major, &["template", "fw", chart.to_str().unwrap(), "--set", set]).expect_failure();
            assert!(
                ran.stderr.contains("schema") && ran.stderr.contains(key),
                "helm {major} --set {set}: the error must come from values.schema.json and name {key}: {}",
                ran.stderr
            );
        }
    }
}

/// kubernetes-validate (PyPI) checks every rendered object against the Kubernetes OpenAPI
/// schemas, strictly (unknown fields fail). Its oldest schema set is 1.25; the local cluster's
/// 1.20 API server checks the same objects in the install test. It has no schemas for the
/// Prometheus Operator's kinds (monitoring.coreos.com): those are the only warnings allowed, and
/// their shape is checked in `rendered_objects_have_what_the_operator_and_monitoring_need`.
#[test]
fn rendered_manifests_validate_against_the_kubernetes_schemas() {
    let validate = flywheel_test_support::venv_bin("kubernetes-validate");
    let dir = tempfile::tempdir().unwrap();
    let values = all_options();
    for major in HELM_MAJORS {
        for (name, values, set) in [
            ("defaults", None, vec![]),
            ("all-options", Some(values.as_path()), vec![]),
            ("service-monitor", Some(values.as_path()), vec!["inferenceMonitor.kind=ServiceMonitor"]),
        ] {
            let (text, docs) = render(major, values, &set);
            let file = dir.path().join(format!("helm{major}-{name}.yaml"));
            std::fs::write(&file, &text).unwrap();
            for version in ["1.25.0", "1.37.0"] {
                let ran =
                    tools::run(std::process::Command::new(&validate).args(["--strict", "-k", version]).arg(&file))
                        .expect_success();
                let output = format!("{}{}", ran.stdout, ran.stderr);
                for line in output.lines().filter(|l| l.starts_with("WARN") || l.starts_with("ERROR")) {
                    assert!(line.contains("monitoring.coreos.com"), "helm {major} {name} on {version}: {line}");
                }
                let core = docs
                    .iter()
                    .filter(|d| !d["apiVersion"].as_str().unwrap_or_default().starts_with("monitoring.coreos.com/"))
                    .count();
                let passed = output.lines().filter(|l| l.contains(" passed for resource ")).count();
                assert_eq!(passed, core, "helm {major} {name} on {version}: every object must be validated:\n{output}");
            }
        }
    }
}

fn rules(role: &Value) -> Value {
    role["rules"].clone()
}

fn container(docs: &[Value]) -> Value {
    one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0].clone()
}

fn env(c: &Value, name: &str) -> Option<String> {
    c["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .and_then(|e| e["value"].as_str().map(str::to_string))
}

#[test]
fn rendered_objects_have_what_the_operator_and_monitoring_need() {
    let version = app_version();
    for major in HELM_MAJORS {
        // Defaults: cluster-wide RBAC, safe pod settings, no Prometheus Operator objects.
        let (_, docs) = render(major, None, &[]);
        assert_eq!(of_kind(&docs, "CustomResourceDefinition").len(), 4, "the chart ships the four CRDs");
        let cluster_role = one(&docs, "ClusterRole");
        assert!(
            of_kind(&docs, "ServiceMonitor").is_empty()
                && of_kind(&docs, "PrometheusRule").is_empty()
                && of_kind(&docs, "PodMonitor").is_empty()
        );
        let leader = one(&docs, "Role");
        assert_eq!(leader["metadata"]["namespace"], "flywheel-system");
        assert_eq!(
            leader["rules"][1]["resourceNames"],
            serde_json::json!(["flywheel-operator"]),
            "only the operator's Lease can be changed"
        );
        let sa = one(&docs, "ServiceAccount")["metadata"]["name"].clone();
        let pod_spec = one(&docs, "Deployment")["spec"]["template"]["spec"].clone();
        assert_eq!(pod_spec["serviceAccountName"], sa);
        assert_eq!(pod_spec["securityContext"]["runAsNonRoot"], true);
        assert_eq!(pod_spec["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
        let c = container(&docs);
        assert_eq!(c["image"], format!("flywheel/operator:{version}"));
        assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
        assert_eq!(c["securityContext"]["capabilities"]["drop"], serde_json::json!(["ALL"]));
        assert!(c["resources"]["limits"]["memory"].is_string() && c["resources"]["requests"]["cpu"].is_string());
        assert_eq!(env(&c, "FLYWHEEL_SERVER_IMAGE"), Some(format!("flywheel/inference-server:{version}")));
        assert_eq!(env(&c, "FLYWHEEL_TRAINER_IMAGE"), Some(format!("flywheel/trainer:{version}")));
        assert_eq!(env(&c, "FLYWHEEL_REVIEW_SERVICE_IMAGE"), Some(format!("flywheel/review-service:{version}")));
        assert!(c["args"].as_array().unwrap().contains(&Value::from("--listen=$(POD_IP):8081")));
        for field in ["metadata.name", "metadata.namespace", "status.podIP"] {
            assert!(
                c["env"].as_array().unwrap().iter().any(|e| e["valueFrom"]["fieldRef"]["fieldPath"] == field),
                "{field}"
            );
        }
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
        assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");

        // Every option: namespaced RBAC with exactly the cluster-wide rules, the monitors and rules.
        let (_, docs) = render(major, Some(&all_options()), &[]);
        assert!(
            of_kind(&docs, "ClusterRole").is_empty() && of_kind(&docs, "ClusterRoleBinding").is_empty(),
            "watchNamespace must not grant cluster-wide rights"
        );
        let roles = of_kind(&docs, "Role");
        let watched =
            roles.iter().find(|r| r["metadata"]["namespace"] == "vision").expect("a Role in the watched namespace");
        assert_eq!(rules(watched), rules(cluster_role), "the namespaced Role grants what the ClusterRole grants");
        let binding = of_kind(&docs, "RoleBinding")
            .into_iter()
            .find(|b| b["metadata"]["namespace"] == "vision")
            .expect("RoleBinding in vision");
        assert_eq!(binding["subjects"][0]["namespace"], "flywheel-system");
        let c = container(&docs);
        assert_eq!(env(&c, "FLYWHEEL_WATCH_NAMESPACE").as_deref(), Some("vision"));
        assert_eq!(env(&c, "FLYWHEEL_DEFAULT_OUTPUT_URI").as_deref(), Some("s3://flywheel-models/runs/"));
        assert_eq!(c["image"], "registry.example.com/flywheel-mirror/flywheel/operator:0.1.0-rc1");
        assert!(c["args"].as_array().unwrap().contains(&Value::from("--log-json")));

        let operator_monitor = one(&docs, "ServiceMonitor");
        assert_eq!(operator_monitor["spec"]["endpoints"][0]["port"], "metrics");
        assert_eq!(
            operator_monitor["spec"]["endpoints"][0]["honorLabels"], true,
            "the operator's own namespace label wins"
        );
        let service = one(&docs, "Service");
        assert_eq!(service["spec"]["ports"][0]["name"], "metrics");
        for (k, v) in operator_monitor["spec"]["selector"]["matchLabels"].as_object().unwrap() {
            assert_eq!(&service["metadata"]["labels"][k], v, "the ServiceMonitor selects the metrics Service");
        }

        let pod_monitor = one(&docs, "PodMonitor");
        assert_eq!(pod_monitor["spec"]["namespaceSelector"]["matchNames"], serde_json::json!(["vision"]));
        assert_inference_relabelings(&pod_monitor["spec"]["podMetricsEndpoints"][0], "http");
        let (_, docs_sm) = render(major, Some(&all_options()), &["inferenceMonitor.kind=ServiceMonitor"]);
        let inference_sm = of_kind(&docs_sm, "ServiceMonitor")
            .into_iter()
            .find(|m| m["metadata"]["name"] == "fw-flywheel-inference")
            .expect("inference ServiceMonitor");
        assert_inference_relabelings(&inference_sm["spec"]["endpoints"][0], "metrics");

        let alerts: Value =
            serde_yaml::from_str(&std::fs::read_to_string(chart_dir().join("files/alerts.yaml")).unwrap()).unwrap();
        assert_eq!(
            one(&docs, "PrometheusRule")["spec"]["groups"],
            alerts["groups"],
            "the PrometheusRule carries files/alerts.yaml unchanged"
        );

        let dashboards: Vec<PathBuf> = std::fs::read_dir(chart_dir().join("files/dashboards"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        assert!(!dashboards.is_empty());
        let maps = of_kind(&docs, "ConfigMap");
        for path in &dashboards {
            let file = path.file_name().unwrap().to_str().unwrap();
            let map = maps
                .iter()
                .find(|m| m["data"].get(file).is_some())
                .unwrap_or_else(|| panic!("no ConfigMap for dashboard {file}"));
            assert_eq!(map["metadata"]["labels"]["grafana_dashboard"], "1");
            assert_eq!(map["metadata"]["namespace"], "monitoring");
            let rendered: Value =
                serde_json::from_str(map["data"][file].as_str().unwrap()).expect("the dashboard stays valid JSON");
            let original: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
            assert_eq!(rendered, original, "{file}");
        }
    }
}

/// The dashboard and alerts group inference (and review-service) series by namespace, pod and
/// deployment.
fn assert_inference_relabelings(endpoint: &Value, port: &str) {
    assert_eq!(endpoint["port"], port);
    assert_eq!(endpoint["path"], "/metrics");
    let relabel: Vec<(String, String)> = endpoint["relabelings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["sourceLabels"][0].as_str().unwrap_or_default().to_string(),
                r["targetLabel"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    for (source, target) in [
        ("__meta_kubernetes_namespace", "namespace"),
        ("__meta_kubernetes_pod_name", "pod"),
        ("__meta_kubernetes_pod_label_flywheel_dev_deployment", "deployment"),
        ("__meta_kubernetes_pod_label_flywheel_dev_review_for", "deployment"),
    ] {
        assert!(relabel.contains(&(source.to_string(), target.to_string())), "{target} from {source}: {relabel:?}");
    }
    // Only inference and review-service pods are kept (not the operator's Jobs).
    let keep = endpoint["relabelings"].as_array().unwrap().iter().find(|r| r["action"] == "keep").expect("a keep rule");
    assert_eq!(keep["regex"], "(.+;.*|;.+)");
}

/// checkov lints docker/ offline (`--skip-download`) and fails on any finding; a Dockerfile that
/// runs as root from an unpinned image must fail, so the check is known to bite.
#[test]
fn dockerfiles_pass_the_linter() {
    let checkov = flywheel_test_support::venv_bin("checkov");
    let lint = |dir: &Path| {
        tools::run(
            std::process::Command::new(&checkov)
                .args(["--framework", "dockerfile", "--skip-download", "--compact", "-d"])
                .arg(dir),
        )
    };
    let docker = workspace_root().join("docker");
    let ran = lint(&docker).expect_success();
    assert!(ran.stdout.contains("Failed checks: 0"), "{}", ran.stdout);
    for image in ["operator", "inference-server", "trainer"] {
        let text = std::fs::read_to_string(docker.join(format!("{image}.Dockerfile"))).unwrap();
        assert!(text.contains("USER nonroot") && text.contains(&format!("-p flywheel-{image}")), "{image}.Dockerfile");
    }

    let bad = tempfile::tempdir().unwrap();
    std::fs::write(
        bad.path().join("Dockerfile"),
        "FROM debian:latest\nRUN apt-get update && apt-get install -y curl\nCMD [\"curl\"]\n",
    )
    .unwrap();
    let ran = lint(bad.path()).expect_failure();
    assert!(ran.stdout.contains("CKV_DOCKER_3"), "a root user must be reported: {}", ran.stdout);
}

/// checkov's Kubernetes checks on the rendered chart (defaults and every option), CRDs included.
/// The checks skipped here are deliberate choices, each with its reason.
#[test]
fn rendered_chart_passes_checkov_kubernetes_checks() {
    const SKIPPED: [(&str, &str); 5] = [
        ("CKV_K8S_11", "no CPU limit: throttling a controller only delays reconciles; memory is limited"),
        ("CKV_K8S_15", "IfNotPresent: images are tagged with the immutable release version"),
        ("CKV_K8S_38", "the operator is a Kubernetes client: it needs its service-account token"),
        ("CKV_K8S_43", "tags by default; pin a digest with image.tag: <version>@sha256:<digest>"),
        (
            "CKV2_K8S_6",
            "the operator reaches the API server, object stores and inference Pods, which differ per cluster; a NetworkPolicy belongs to the cluster's own policy",
        ),
    ];
    let checkov = flywheel_test_support::venv_bin("checkov");
    // checkov's Kubernetes runner skips hidden directories such as tempfile's default ".tmpXXXX".
    let dir = tempfile::Builder::new().prefix("chart-checkov-").tempdir().unwrap();
    let (defaults, _) = render(4, None, &[]);
    let (all, _) = render(4, Some(&all_options()), &[]);
    std::fs::write(dir.path().join("defaults.yaml"), defaults).unwrap();
    std::fs::write(dir.path().join("all-options.yaml"), all).unwrap();
    let skip = SKIPPED.iter().map(|(id, _)| *id).collect::<Vec<_>>().join(",");
    let ran = tools::run(
        std::process::Command::new(&checkov)
            .args(["--framework", "kubernetes", "--skip-download", "--compact", "--skip-check", &skip, "-d"])
            .arg(dir.path()),
    )
    .expect_success();
    assert!(ran.stdout.contains("Failed checks: 0") && !ran.stdout.contains("Passed checks: 0,"), "{}", ran.stdout);
}

/// One access check for the operator's service account; `resource` may name a subresource
/// ("deployments/status").
async fn can(
    client: &kube::Client,
    user: &str,
    ns: &str,
    verb: &str,
    group: &str,
    resource: &str,
    name: Option<&str>,
) -> bool {
    let (resource, sub) = match resource.split_once('/') {
        Some((r, s)) => (r, Some(s)),
        None => (resource, None),
    };
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.into()),
            groups: Some(vec!["system:serviceaccounts".into(), format!("system:serviceaccounts:{ns}")]),
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(ns.into()),
                verb: Some(verb.into()),
                group: Some(group.into()),
                resource: Some(resource.into()),
                subresource: sub.map(str::to_string),
                name: name.map(str::to_string),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let api: Api<SubjectAccessReview> = Api::all(client.clone());
    let done = api.create(&PostParams::default(), &review).await.expect("SubjectAccessReview");
    done.status.is_some_and(|s| s.allowed)
}

/// Runs `flywheel-trainer generate ...` against the S3 server (the test's seed data).
fn generate(seaweed: &Seaweed, args: &[&str]) {
    let bin = flywheel_e2e::cluster::default_bin_dir().expect("bin dir").join("flywheel-trainer");
    let mut cmd = std::process::Command::new(&bin);
    cmd.arg("generate").args(args).envs(seaweed.env());
    tools::run(&mut cmd).expect_success();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_install_runs_the_operator_and_reconciles_the_quickstart() {
    // Seed data first: the quickstart's models and datasets in a real S3 bucket.
    let seaweed = Seaweed::start();
    seaweed.create_bucket("flywheel-demo");
    generate(
        &seaweed,
        &["model", "--task", "detection", "--out", "s3://flywheel-demo/models/shapes-detector/v1/model.onnx"],
    );
    generate(
        &seaweed,
        &[
            "model",
            "--task",
            "detection",
            "--seed",
            "2",
            "--out",
            "s3://flywheel-demo/models/shapes-detector/v2/model.onnx",
        ],
    );
    generate(
        &seaweed,
        &[
            "dataset",
            "--task",
            "detection",
            "--format",
            "coco",
            "--count",
            "8",
            "--out",
            "s3://flywheel-demo/datasets/shapes-train/",
        ],
    );
    generate(
        &seaweed,
        &[
            "dataset",
            "--task",
            "detection",
            "--format",
            "coco",
            "--count",
            "2",
            "--seed",
            "7",
            "--out",
            "s3://flywheel-demo/datasets/shapes-feedback/",
        ],
    );

    let cluster = shared_cluster();
    let ns = TestNamespace::new(cluster, "chart").await.unwrap();
    let client = ns.client.clone();
    let chart = chart_dir();
    let kubeconfig = cluster.kubeconfig.to_str().unwrap().to_string();
    let helm_home = tempfile::tempdir().unwrap();
    // helm 4 installs by server-side apply, which the 1.20 API server checks field by field.
    let helm_ns = |args: &[&str]| {
        let mut cmd = tools::helm_command(4, helm_home.path());
        cmd.args(args).args(["--namespace", &ns.name, "--kubeconfig", &kubeconfig]);
        tools::run(&mut cmd)
    };
    let watch = format!("watchNamespace={}", ns.name);
    // Watch errors (e.g. a forbidden list) are logged at debug level by the controllers.
    let install = helm_ns(&[
        "install",
        "flywheel",
        chart.to_str().unwrap(),
        "--set",
        &watch,
        "--set",
        "defaultOutputUri=s3://flywheel-demo/runs/",
        "--set",
        "logging.level=info\\,flywheel_operator=debug\\,kube=warn",
    ])
    .expect_success();
    let notes = install.stdout;
    assert!(
        notes.contains("kubectl get modelversions") && notes.contains("flywheel-metrics"),
        "NOTES.txt tells what to do next: {notes}"
    );

    // The operator runs under its own service account and becomes Ready once it leads.
    ns.wait_for::<AppsDeployment>("flywheel", conditions::deployment_available(1), 120).await.unwrap();
    let pods = ns
        .api::<Pod>()
        .list(&ListParams::default().labels("app.kubernetes.io/instance=flywheel,app.kubernetes.io/component=operator"))
        .await
        .unwrap();
    assert_eq!(pods.items.len(), 1);
    let pod = pods.items[0].clone();
    let pod_name = pod.name_any();
    assert_eq!(pod.spec.as_ref().unwrap().service_account_name.as_deref(), Some("flywheel"));
    ns.wait_for::<Pod>(&pod_name, conditions::pod_ready(), 60).await.unwrap();
    let lease = ns
        .wait_for::<Lease>(
            "flywheel-operator",
            |l| l.and_then(|l| l.spec.as_ref()).is_some_and(|s| s.holder_identity.is_some()),
            60,
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        lease.spec.unwrap().holder_identity.as_deref(),
        Some(pod_name.as_str()),
        "the operator Pod holds the Lease"
    );

    // The quickstart, with the Secret pointing at this test's S3 server.
    let quickstart = workspace_root().join("examples/quickstart");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&quickstart).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    for file in files.iter().filter(|f| f.extension().is_some_and(|e| e == "yaml")) {
        let mut text = std::fs::read_to_string(file).unwrap();
        if file.file_name().unwrap() == "00-storage-secret.yaml" {
            assert!(
                text.contains("http://127.0.0.1:8333"),
                "the quickstart Secret's endpoint changed: update this test"
            );
            text = text.replace("http://127.0.0.1:8333", &seaweed.endpoint());
        }
        ns.apply_yaml(&text).await.unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    }
    let ready = |m: Option<&ModelVersion>| {
        m.and_then(|m| m.status.as_ref())
            .is_some_and(|s| flywheel_api::condition::find(&s.conditions, "Ready").is_some_and(|c| c.status == "True"))
    };
    for model in ["shapes-detector-v1", "shapes-detector-v2"] {
        ns.wait_for::<ModelVersion>(model, ready, 90).await.unwrap();
    }
    ns.wait_for::<AppsDeployment>("shapes-inference", conditions::exists(), 60).await.unwrap();
    ns.wait_for::<Service>("shapes-inference", conditions::exists(), 30).await.unwrap();
    // The shadow joins the serving config once its ModelVersion is Ready too.
    let with_shadow = |c: Option<&ConfigMap>| {
        c.and_then(|c| c.data.as_ref()).is_some_and(|d| d["serving.yaml"].contains("shapes-detector-v2"))
    };
    // (The Deployment controller re-checks models on its requeue, at most 60 s later.)
    ns.wait_for::<ConfigMap>("shapes-serving", with_shadow, 120).await.unwrap();
    ns.wait_for::<Secret>("shapes-review-token", conditions::exists(), 30).await.unwrap();
    let serves_v1 = |d: Option<&FlywheelDeployment>| {
        d.and_then(|d| d.status.as_ref()).and_then(|s| s.champion.as_deref()) == Some("shapes-detector-v1")
    };
    ns.wait_for::<FlywheelDeployment>("shapes", serves_v1, 30).await.unwrap();
    // The DataPipeline profiles the training data with a Job (creating Jobs is allowed too).
    ns.wait_for::<Job>("shapes-profile-shapes-train-g1", conditions::exists(), 60).await.unwrap();

    // No permission was missing: no Kubernetes API errors in /metrics, no "forbidden" in the log.
    // Scraped the way Prometheus finds it: through the chart's metrics Service.
    let address = ns.service_address("flywheel-metrics", "metrics", 30).await.unwrap();
    assert_eq!(address.ip().to_string(), common::pod_ip(&ns.api::<Pod>().get(&pod_name).await.unwrap()));
    let metrics = common::http_get(&address.ip().to_string(), address.port(), "/metrics").await.unwrap();
    assert!(metrics.contains("flywheel_operator_reconciles_total"), "{metrics}");
    let kube_errors: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("flywheel_operator_reconcile_errors_total") && l.contains("error=\"kube\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    let log = ns.container_log(&pod_name, "operator").expect("operator log");
    assert!(log.contains("leading"), "{log}");
    assert!(!log.to_lowercase().contains("forbidden"), "{log}");
    // Status writes are guarded by resourceVersion, so a reconcile of a just-changed object may
    // fail with 409 Conflict and retry: that is the only Kubernetes API error allowed. Every one
    // the metrics counted (read before the log) is in the log.
    let api_failures: Vec<&str> =
        log.lines().filter(|l| l.contains("reconcile failed") && l.contains("Kubernetes API error")).collect();
    let unexpected: Vec<&&str> = api_failures.iter().filter(|l| !l.contains("code: 409")).collect();
    assert!(unexpected.is_empty(), "Kubernetes API errors other than conflicts: {unexpected:#?}");
    assert!(
        kube_errors <= api_failures.len() as f64,
        "/metrics counts {kube_errors} API errors, the log shows {}:\n{log}",
        api_failures.len()
    );

    // Least privilege, asked of the API server for the service account itself.
    let user = format!("system:serviceaccount:{}:flywheel", ns.name);
    let n = ns.name.as_str();
    for (verb, group, resource) in [
        ("list", "", "pods"),
        ("patch", "autoscaling", "horizontalpodautoscalers"),
        ("create", "autoscaling", "horizontalpodautoscalers"),
        ("patch", "flywheel.dev", "deployments/status"),
        ("create", "events.k8s.io", "events"),
    ] {
        assert!(can(&client, &user, n, verb, group, resource, None).await, "{verb} {group}/{resource} must be allowed");
    }
    for (namespace, verb, group, resource, name) in [
        (n, "list", "", "secrets", None),
        (n, "watch", "", "secrets", None),
        (n, "delete", "", "pods", None),
        (n, "delete", "apps", "deployments", None),
        (n, "update", "flywheel.dev", "deployments", None),
        (n, "patch", "flywheel.dev", "deployments", None),
        (n, "delete", "batch", "jobs", None),
        (n, "update", "coordination.k8s.io", "leases", Some("someone-else")),
        ("default", "get", "", "secrets", None),
        ("default", "list", "flywheel.dev", "modelversions", None),
        ("kube-system", "update", "coordination.k8s.io", "leases", Some("flywheel-operator")),
    ] {
        assert!(
            !can(&client, &user, namespace, verb, group, resource, name).await,
            "{verb} {group}/{resource} in {namespace} must be denied"
        );
    }

    // Uninstall: nothing of the release is left (the CRDs stay, as Helm keeps CRDs; the Lease
    // and the quickstart's objects are not part of the release).
    helm_ns(&["uninstall", "flywheel", "--wait", "--timeout", "120s"]).expect_success();
    ns.wait_for::<Pod>(&pod_name, conditions::deleted(), 90).await.unwrap();
    let release = ListParams::default().labels("app.kubernetes.io/instance=flywheel");
    assert!(ns.api::<AppsDeployment>().list(&release).await.unwrap().items.is_empty());
    assert!(ns.api::<Service>().list(&release).await.unwrap().items.is_empty());
    assert!(ns.api::<ServiceAccount>().list(&release).await.unwrap().items.is_empty());
    assert!(ns.api::<Role>().list(&release).await.unwrap().items.is_empty());
    assert!(ns.api::<RoleBinding>().list(&release).await.unwrap().items.is_empty());
    assert!(ns.api::<ConfigMap>().list(&release).await.unwrap().items.is_empty());
    assert!(Api::<ClusterRole>::all(client.clone()).list(&release).await.unwrap().items.is_empty());
    assert!(Api::<ClusterRoleBinding>::all(client.clone()).list(&release).await.unwrap().items.is_empty());
    let helm_records =
        ns.api::<Secret>().list(&ListParams::default().labels("owner=helm,name=flywheel")).await.unwrap();
    assert!(helm_records.items.is_empty(), "helm's release record is gone");
    assert!(ns.api::<AppsDeployment>().get_opt("shapes-inference").await.unwrap().is_some(), "the user's objects stay");
}

/// examples/gitops: every path an Argo CD Application or a Flux Kustomization/HelmRelease names
/// exists in this repository, and the values they pass to the chart pass values.schema.json.
#[test]
fn gitops_examples_point_at_real_paths_and_valid_values() {
    let root = workspace_root();
    let mut files = Vec::new();
    let mut dirs = vec![root.join("examples/gitops")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml") {
                files.push(path);
            }
        }
    }
    let (mut applications, mut kustomizations, mut releases) = (0, 0, 0);
    let values_dir = tempfile::tempdir().unwrap();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let doc =
                serde_json::to_value(<serde_yaml::Value as serde::Deserialize>::deserialize(doc).unwrap()).unwrap();
            let (path, values) = match doc["kind"].as_str().unwrap_or_default() {
                "Application" => {
                    applications += 1;
                    (doc["spec"]["source"]["path"].clone(), doc["spec"]["source"]["helm"]["valuesObject"].clone())
                }
                "Kustomization" => {
                    kustomizations += 1;
                    (doc["spec"]["path"].clone(), Value::Null)
                }
                "HelmRelease" => {
                    releases += 1;
                    (doc["spec"]["chart"]["spec"]["chart"].clone(), doc["spec"]["values"].clone())
                }
                _ => continue,
            };
            let path = path.as_str().unwrap_or_else(|| panic!("{}: no path", file.display()));
            let dir = root.join(path.trim_start_matches("./"));
            assert!(dir.is_dir(), "{}: {path} does not exist in the repository", file.display());
            if !values.is_null() {
                assert_eq!(dir, chart_dir(), "{}: Helm values for a chart other than charts/flywheel", file.display());
                let values_file = values_dir.path().join("values.yaml");
                std::fs::write(&values_file, serde_yaml::to_string(&values).unwrap()).unwrap();
                for major in HELM_MAJORS {
                    render(major, Some(&values_file), &[]);
                }
            }
        }
    }
    assert!(
        applications >= 3 && kustomizations >= 2 && releases >= 1,
        "Argo CD Applications and Flux objects expected"
    );
}
