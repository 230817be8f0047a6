//! examples/: every quickstart object deserialises into the Rust types without losing a
//! field, passes the generated openAPIV3Schema and the operator's checks
//! (`flywheel_api::validation`), and every file in examples/invalid/ is rejected where it says:
//! by that schema (`# Rejected at: /spec/...`, the API server refuses it) or, for what the
//! schema cannot say, by the operator's checks (`# Refused by the operator at: spec....`).

use std::path::{Path, PathBuf};

use flywheel_api::{DataPipeline, DatasetVersion, FlywheelDeployment, ModelVersion, validation};
use serde::de::DeserializeOwned;
use serde_json::Value;

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no YAML files in {}", dir.display());
    files
}

/// All documents of a multi-document YAML file, as JSON values.
fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| {
            let value: serde_yaml::Value =
                serde::Deserialize::deserialize(doc).unwrap_or_else(|e| panic!("{}: not YAML: {e}", path.display()));
            serde_json::to_value(value).unwrap()
        })
        .filter(|v| !v.is_null())
        .collect()
}

fn schema_for(kind: &str) -> Value {
    let file = match kind {
        "ModelVersion" => "modelversions.yaml",
        "DatasetVersion" => "datasetversions.yaml",
        "Deployment" => "deployments.yaml",
        "DataPipeline" => "datapipelines.yaml",
        other => panic!("not a Flywheel kind: {other}"),
    };
    let (_, crd) = flywheel_api::crds().into_iter().find(|(name, _)| *name == file).unwrap();
    let schema = crd.spec.versions[0].schema.as_ref().unwrap().open_api_v3_schema.as_ref().unwrap();
    let mut schema = serde_json::to_value(schema).unwrap();
    as_json_schema(&mut schema);
    schema
}

/// The Kubernetes (OpenAPI v3.0) spelling of what JSON Schema 2020-12 says otherwise:
/// `exclusiveMinimum: true` beside `minimum: x` is `exclusiveMinimum: x`, and a list with
/// `x-kubernetes-list-type: set` (which the API server checks for duplicates) has unique items.
fn as_json_schema(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (flag, bound) in [("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")] {
                if let Some(Value::Bool(exclusive)) = map.get(flag).cloned() {
                    map.remove(flag);
                    if exclusive && let Some(b) = map.remove(bound) {
                        map.insert(flag.into(), b);
                    }
                }
            }
            if map.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("set") {
                map.insert("uniqueItems".into(), Value::Bool(true));
            }
            map.values_mut().for_each(as_json_schema);
        }
        Value::Array(items) => items.iter_mut().for_each(as_json_schema),
        _ => {}
    }
}

/// The operator's checks of what the schema cannot say, as the reconcile runs them.
fn operator_check(doc: &Value) -> Result<(), String> {
    let name = doc["metadata"]["name"].as_str().unwrap_or_default();
    let spec = doc["spec"].clone();
    let parse = |e: serde_json::Error| format!("does not deserialise: {e}");
    match doc["kind"].as_str().unwrap() {
        "ModelVersion" => validation::model_version(&serde_json::from_value(spec).map_err(parse)?),
        "DatasetVersion" => validation::dataset_version(name, &serde_json::from_value(spec).map_err(parse)?),
        "Deployment" => validation::deployment(name, &serde_json::from_value(spec).map_err(parse)?),
        "DataPipeline" => validation::data_pipeline(&serde_json::from_value(spec).map_err(parse)?),
        other => panic!("not a Flywheel kind: {other}"),
    }
}

/// Schema violations as (instance path, message).
fn schema_errors(doc: &Value) -> Vec<(String, String)> {
    let kind = doc["kind"].as_str().unwrap();
    let validator = jsonschema::validator_for(&schema_for(kind)).expect("the generated schema compiles");
    validator.iter_errors(doc).map(|e| (e.instance_path().to_string(), e.to_string())).collect()
}

fn is_flywheel(doc: &Value) -> bool {
    doc["apiVersion"].as_str().is_some_and(|v| v.starts_with("flywheel.dev/"))
}

/// Every key present in `original` is present (with an equal scalar) in `round_trip`:
/// a misspelt field would be silently dropped by serde and fail here.
fn assert_no_field_lost(original: &Value, round_trip: &Value, path: &str) {
    match (original, round_trip) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in a {
                let other = b.get(key).unwrap_or_else(|| panic!("field {path}.{key} is not in the Rust type"));
                assert_no_field_lost(value, other, &format!("{path}.{key}"));
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            assert_eq!(a.len(), b.len(), "{path}");
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                assert_no_field_lost(x, y, &format!("{path}[{i}]"));
            }
        }
        // Equal as the f32 the spec holds (0.485 comes back as 0.48500001430511475).
        (Value::Number(a), Value::Number(b)) => {
            let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
            assert!((a - b).abs() <= 1e-6 * a.abs().max(1.0), "{path}: {a} came back as {b}");
        }
        (a, b) => assert_eq!(a, b, "{path}"),
    }
}

fn round_trip<T: DeserializeOwned + serde::Serialize>(doc: &Value, path: &Path) {
    let typed: T =
        serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{}: does not deserialise: {e}", path.display()));
    let back = serde_json::to_value(&typed).unwrap();
    assert_no_field_lost(doc, &back, &path.display().to_string());
}

#[test]
fn quickstart_objects_deserialise_and_pass_the_schema() {
    let mut kinds = Vec::new();
    for path in yaml_files(&examples_dir().join("quickstart")) {
        for doc in documents(&path).into_iter().filter(is_flywheel) {
            let kind = doc["kind"].as_str().unwrap().to_string();
            match kind.as_str() {
                "ModelVersion" => round_trip::<ModelVersion>(&doc, &path),
                "DatasetVersion" => round_trip::<DatasetVersion>(&doc, &path),
                "Deployment" => round_trip::<FlywheelDeployment>(&doc, &path),
                "DataPipeline" => round_trip::<DataPipeline>(&doc, &path),
                other => panic!("{}: unknown kind {other}", path.display()),
            }
            let errors = schema_errors(&doc);
            assert!(errors.is_empty(), "{}: rejected by the schema: {errors:?}", path.display());
            assert_eq!(operator_check(&doc), Ok(()), "{}: refused by the operator", path.display());
            kinds.push(kind);
        }
    }
    for kind in ["ModelVersion", "DatasetVersion", "Deployment", "DataPipeline"] {
        assert!(kinds.iter().any(|k| k == kind), "the quickstart has no {kind}");
    }
}

#[test]
fn per_exporter_model_examples_deserialise_and_pass_the_schema() {
    for path in yaml_files(&examples_dir().join("models")) {
        for doc in documents(&path) {
            assert_eq!(doc["kind"], "ModelVersion", "{}", path.display());
            round_trip::<ModelVersion>(&doc, &path);
            let errors = schema_errors(&doc);
            assert!(errors.is_empty(), "{}: rejected by the schema: {errors:?}", path.display());
            assert_eq!(operator_check(&doc), Ok(()), "{}: refused by the operator", path.display());
        }
    }
}

#[test]
fn the_bring_your_own_trainer_pipeline_deserialises_and_passes_the_schema() {
    for path in yaml_files(&examples_dir().join("byo-trainer")) {
        for doc in documents(&path) {
            assert_eq!(doc["kind"], "DataPipeline", "{}", path.display());
            round_trip::<DataPipeline>(&doc, &path);
            let errors = schema_errors(&doc);
            assert!(errors.is_empty(), "{}: rejected by the schema: {errors:?}", path.display());
            assert_eq!(operator_check(&doc), Ok(()), "{}: refused by the operator", path.display());
            assert!(doc["spec"]["continuousTraining"]["trainer"]["image"].is_string(), "{}", path.display());
        }
    }
}

#[test]
fn every_invalid_example_is_rejected_where_it_says() {
    let (mut by_schema, mut by_operator) = (0, 0);
    for path in yaml_files(&examples_dir().join("invalid")) {
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# Invalid:"), "{}: must start with a comment saying what is wrong", path.display());
        let docs = documents(&path);
        assert_eq!(docs.len(), 1, "{}: one object per file", path.display());
        let errors = schema_errors(&docs[0]);
        let header = |prefix: &str| text.lines().find_map(|l| l.strip_prefix(prefix).map(str::to_string));
        match (header("# Rejected at: "), header("# Refused by the operator at: ")) {
            (Some(expected_path), None) => {
                assert!(!errors.is_empty(), "{}: the schema accepts it", path.display());
                assert!(
                    errors.iter().all(|(p, _)| *p == expected_path),
                    "{}: rejected for another reason than the one it states ({expected_path}): {errors:?}",
                    path.display()
                );
                by_schema += 1;
            }
            (None, Some(field)) => {
                // The API server stores it: only the operator can refuse it, naming the field.
                assert!(
                    errors.is_empty(),
                    "{}: the schema rejects it, say so with '# Rejected at:': {errors:?}",
                    path.display()
                );
                let message =
                    operator_check(&docs[0]).expect_err(&format!("{}: the operator accepts it", path.display()));
                assert!(
                    message.starts_with(&field),
                    "{}: refused for another reason than the one it states ({field}): {message}",
                    path.display()
                );
                by_operator += 1;
            }
            _ => panic!(
                "{}: needs one '# Rejected at: /spec/...' (the schema) or '# Refused by the operator at: spec....' line",
                path.display()
            ),
        }
    }
    assert!(by_schema > 0 && by_operator > 0, "{by_schema} schema and {by_operator} operator cases");
}
