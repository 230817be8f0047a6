//! Frozen feedback versions: training run N trains on `<feedback>-r<N>` (the reviewed samples
//! since run N-1, by manifest) and every earlier version, which never change.

use super::*;
use flywheel_storage::manifest::{Manifest, manifest_path};
use flywheel_storage::{FeedbackWriter, Location, Sample};
use flywheel_types::dataset::DatasetFormat;
use flywheel_types::prediction::Shape;

fn manifest_ids(bytes: &[u8]) -> Vec<String> {
    let manifest: Manifest = serde_json::from_slice(bytes).unwrap();
    manifest.samples.into_iter().map(|s| s.id).collect()
}

async fn frozen_paths(feedback: &Location, name: &str) -> Vec<String> {
    let view = feedback.frozen(&manifest_path(name)).await.unwrap();
    view.list("").await.unwrap().into_iter().map(|(p, _)| p).collect()
}

fn counted(n: u64) -> impl Fn(Option<&DatasetVersion>) -> bool {
    move |d| d.and_then(|d| d.status.as_ref()).and_then(|s| s.sample_count) == Some(n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_trains_on_the_next_frozen_version_and_the_first_stays_as_it_was() {
    let (ns, client) = setup("op-frozen").await;
    let dir = tempfile::tempdir().unwrap();
    let operator = start_operator(client, &ns.name, dir.path());
    trained_once(&ns, dir.path(), "manual", 4).await;
    let feedback = Location::open(&format!("file://{}/feedback", dir.path().display())).unwrap();
    let r1_manifest = feedback.get(&manifest_path("fb-r1")).await.unwrap();
    assert_eq!(manifest_ids(&r1_manifest), ["annotations.json"], "the generated feedback is one COCO index");
    let r1_paths = frozen_paths(&feedback, "fb-r1").await;
    assert_eq!(r1_paths.len(), 5, "the index and its 4 images: {r1_paths:?}");
    let r1 = ns.wait_for::<DatasetVersion>("fb-r1", counted(4), 60).await.unwrap().unwrap();

    // Four more reviews land, as the review service writes them: one document and one image each.
    let labels = ["circle", "square", "triangle"].map(String::from).to_vec();
    let writer = FeedbackWriter::new(feedback.clone(), DatasetFormat::Coco, labels);
    let image = feedback.get(&r1_paths[1]).await.unwrap();
    let shapes = [Shape { label: "circle".into(), class_id: 0, confidence: 1.0, bbox: Some([4.0, 4.0, 24.0, 24.0]) }];
    for i in 0..4 {
        let id = format!("review-{i}");
        let sample = Sample { id: &id, ext: "png", image: image.clone(), width: 64, height: 64, shapes: &shapes };
        writer.write(&sample).await.unwrap();
    }

    // Run 2 trains on the training data, run 1's version and its own, which holds the new four.
    let produced = |p: Option<&DataPipeline>| {
        p.and_then(|p| p.status.as_ref()).and_then(|s| s.last_model_version.as_deref()) == Some("loop-r2")
    };
    ns.wait_for::<DataPipeline>("loop", produced, 240).await.unwrap();
    let request = job_request(&ns, "loop-train-2").await;
    let names: Vec<&str> = request.train.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["train", "fb-r1", "fb-r2"]);
    let r2_manifest = feedback.get(&manifest_path("fb-r2")).await.unwrap();
    assert_eq!(manifest_ids(&r2_manifest), ["review-0", "review-1", "review-2", "review-3"]);
    ns.wait_for::<DatasetVersion>("fb-r2", counted(4), 60).await.unwrap();
    let mv = ns.api::<ModelVersion>().get("loop-r2").await.unwrap();
    assert_eq!(mv.spec.provenance.unwrap().dataset_versions, ["train", "fb-r1", "fb-r2"]);

    // Run 1's version is as it was: its manifest, its spec, what it reads, its count.
    assert_eq!(feedback.get(&manifest_path("fb-r1")).await.unwrap(), r1_manifest);
    assert_eq!(frozen_paths(&feedback, "fb-r1").await, r1_paths);
    let now = ns.api::<DatasetVersion>().get("fb-r1").await.unwrap();
    assert_eq!((now.spec, now.status.unwrap().sample_count), (r1.spec, Some(4)));
    let fb = ns.wait_for::<DatasetVersion>("fb", counted(8), 60).await.unwrap().unwrap();
    assert_eq!(fb.status.unwrap().reviewed_count, Some(8), "the feedback dataset itself keeps growing");

    // An object changed under run 1's manifest (the index, rewritten with the same content but
    // other bytes) makes the version fail, naming the object; the feedback dataset reads on.
    let changed = "annotations.json";
    let index = dir.path().join("feedback").join(changed);
    let mut bytes = std::fs::read(&index).unwrap();
    bytes.extend_from_slice(b"\n");
    std::fs::write(&index, bytes).unwrap();
    let touch = serde_json::json!({"metadata": {"annotations": {"e2e/recount": "1"}}});
    ns.api::<DatasetVersion>().patch("fb-r1", &PatchParams::default(), &Patch::Merge(&touch)).await.unwrap();
    let invalid = |d: Option<&DatasetVersion>| {
        d.and_then(|d| d.status.as_ref())
            .and_then(|s| condition::find(&s.conditions, "Ready"))
            .is_some_and(|c| c.reason == "InvalidDataset" && c.message.contains("changed since it was frozen"))
    };
    let failed = ns.wait_for::<DatasetVersion>("fb-r1", invalid, 60).await.unwrap().unwrap();
    let message = condition::find(&failed.status.unwrap().conditions, "Ready").unwrap().message.clone();
    assert!(message.contains(changed), "{message}");

    // A frozen version whose spec changes is refused.
    let change = serde_json::json!({"spec": {"labels": ["circle"]}});
    ns.api::<DatasetVersion>().patch("fb-r1", &PatchParams::default(), &Patch::Merge(&change)).await.unwrap();
    let refused = |d: Option<&DatasetVersion>| {
        d.and_then(|d| d.status.as_ref())
            .and_then(|s| condition::find(&s.conditions, "Ready"))
            .is_some_and(|c| c.status == "False" && c.reason == "FrozenVersionChanged")
    };
    ns.wait_for::<DatasetVersion>("fb-r1", refused, 60).await.unwrap();
    operator.abort();
}
