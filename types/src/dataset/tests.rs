use super::coco::CocoDocument;
use super::*;

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn coco_counts_images_and_annotations_by_name() {
    let json = br#"{"images":[{"id":1,"file_name":"a.png"},{"id":2,"file_name":"b.png"}],
        "annotations":[{"image_id":1,"category_id":1},{"image_id":1,"category_id":2},{"image_id":2,"category_id":1}],
        "categories":[{"id":1,"name":"circle"},{"id":2,"name":"square"}]}"#;
    let counts = CocoDocument::parse(json).unwrap().counts().unwrap();
    assert_eq!(counts.samples, 2);
    assert_eq!(counts.labels["circle"], 2);
    assert_eq!(counts.labels["square"], 1);
    let unknown = CocoDocument::parse(br#"{"annotations":[{"image_id":1,"category_id":9}]}"#).unwrap();
    assert!(unknown.counts().unwrap_err().0.contains("category_id 9"));
    assert!(CocoDocument::parse(b"not json").is_err());
}

#[test]
fn coco_boxes_are_checked_and_turned_into_corners() {
    let json = br#"{"images":[{"id":1,"file_name":"a.png"}],
        "annotations":[{"image_id":1,"category_id":1,"bbox":[1,2,10,20]},{"image_id":1,"category_id":1,"bbox":[0,0,5,5],"iscrowd":1}],
        "categories":[{"id":1,"name":"circle"}]}"#;
    let doc = CocoDocument::parse(json).unwrap();
    let boxes = doc.boxes_by_image().unwrap();
    assert_eq!(boxes[&1], vec![("circle", [1.0, 2.0, 11.0, 22.0])]);
    assert_eq!(doc.images[0].path(), "images/a.png");

    let bad = br#"{"images":[{"id":1,"file_name":"a.png"}],"annotations":[{"image_id":1,"category_id":1,"bbox":[1,2,-10,20]}],
        "categories":[{"id":1,"name":"circle"}]}"#;
    let err = CocoDocument::parse(bad).unwrap().boxes_by_image().unwrap_err().0;
    assert!(err.contains("annotation #0") && err.contains("invalid bbox"), "{err}");
    let orphan = br#"{"images":[],"annotations":[{"image_id":4,"category_id":1,"bbox":[1,2,3,4]}],
        "categories":[{"id":1,"name":"circle"}]}"#;
    let err = CocoDocument::parse(orphan).unwrap().boxes_by_image().unwrap_err().0;
    assert!(err.contains("image_id 4"), "{err}");
}

#[test]
fn coco_upsert_replaces_a_previous_write_of_the_same_id_and_keeps_unknown_fields() {
    let json = br#"{"info":{"year":2026},"images":[{"id":7,"file_name":"old.png","license":3}],"annotations":[],
        "categories":[{"id":1,"name":"cat"}]}"#;
    let mut doc = CocoDocument::parse(json).unwrap();
    let s = LabelledImage {
        id: "p1",
        ext: "png",
        width: 50,
        height: 40,
        label: None,
        boxes: vec![("cat", [1., 2., 11., 22.]), ("dog", [0., 0., 4., 4.])],
    };
    doc.upsert(&s);
    doc.upsert(&s);
    assert_eq!(doc.images.len(), 2);
    assert_eq!(doc.annotations.len(), 2);
    assert_eq!(doc.annotations[0].bbox, vec![1.0, 2.0, 10.0, 20.0]);
    assert_eq!(doc.annotations[0].category_id, 1);
    assert_eq!(doc.categories[1].name, "dog");
    let round: serde_json::Value = serde_json::from_slice(&doc.to_bytes()).unwrap();
    assert_eq!(round["info"]["year"], 2026);
    assert_eq!(round["images"][0]["license"], 3);
    assert_eq!(round["images"][1]["file_name"], "images/p1.png");
}

#[test]
fn per_sample_documents_merge_over_the_index_by_image_path() {
    use super::coco::{assemble, sample_path};
    let index = br#"{"images":[{"id":1,"file_name":"images/a.png"},{"id":2,"file_name":"images/b.png"}],
        "annotations":[{"id":1,"image_id":1,"category_id":1,"bbox":[0,0,2,2]},{"id":2,"image_id":2,"category_id":2,"bbox":[1,1,2,2]}],
        "categories":[{"id":1,"name":"cat"},{"id":2,"name":"dog"}]}"#;
    let sample = |id: &str, label: &str| {
        let s =
            LabelledImage { id, ext: "png", width: 8, height: 8, label: None, boxes: vec![(label, [1., 1., 5., 5.])] };
        let mut doc = CocoDocument::new(&strings(&[label]), "one sample");
        doc.upsert(&s);
        (sample_path(id), doc.to_bytes())
    };
    // A new sample, and a sample that rewrites b.png with another class.
    let samples = vec![sample("c", "fox"), sample("b", "cat"), ("annotations/README.txt".to_string(), b"x".to_vec())];
    let doc = assemble(Some(index), &samples).unwrap();
    let counts = doc.counts().unwrap();
    assert_eq!(counts.samples, 3);
    assert_eq!(counts.labels, [("cat".to_string(), 2), ("fox".to_string(), 1)].into_iter().collect());
    let boxes = doc.boxes_by_image().unwrap();
    let b = doc.images.iter().find(|i| i.path() == "images/b.png").unwrap();
    assert_eq!(boxes[&b.id], vec![("cat", [1.0, 1.0, 5.0, 5.0])]);
    // Without an index the samples alone make the dataset; an unreadable sample is named.
    assert_eq!(assemble(None, &samples).unwrap().counts().unwrap().samples, 2);
    let bad = vec![("annotations/x.json".to_string(), b"{".to_vec())];
    assert!(assemble(Some(index), &bad).unwrap_err().0.starts_with("annotations/x.json"));
}

#[test]
fn yolo_counts_boxes_by_class_index() {
    let listing = strings(&["images/a.png", "images/b.jpg", "labels/a.txt", "notes.md"]);
    let names = strings(&["circle", "square"]);
    let counts =
        yolo::counts(&listing, [("labels/a.txt", "0 .5 .5 .1 .1\n1 .2 .2 .1 .1\n\n0 .1 .1 .1 .1\n")], &names).unwrap();
    assert_eq!(counts.samples, 2);
    assert_eq!(counts.labels["circle"], 2);
    assert_eq!(counts.labels["square"], 1);
    let err = yolo::counts(&listing, [("labels/a.txt", "7 .5 .5 .1 .1")], &names).unwrap_err().0;
    assert!(err.contains("labels/a.txt:1") && err.contains("class 7"), "{err}");
}

#[test]
fn yolo_lines_are_parsed_strictly_and_written_back() {
    let err = yolo::parse("0 0.5 0.5 0.2 0.2\n1 0.5 oops 0.2 0.2\n").unwrap_err().0;
    assert!(err.contains("line 2") && err.contains("oops"), "{err}");
    assert!(yolo::parse("0 0.5 0.5 1.5 0.2").is_err());
    assert_eq!(yolo::pair_key("images/a/b.png"), "a/b");
    assert_eq!(yolo::label_path("images/a/b.png"), "labels/a/b.txt");
    let s = LabelledImage {
        id: "x",
        ext: "png",
        width: 100,
        height: 50,
        label: None,
        boxes: vec![("square", [10., 10., 30., 20.])],
    };
    let text = yolo::label_file(&s, &strings(&["circle", "square"])).unwrap();
    assert_eq!(text, "1 0.200000 0.300000 0.200000 0.200000\n");
    let back = yolo::parse(&text).unwrap();
    assert_eq!(back[0].class, 1);
    assert!((back[0].rect[0] - 0.1).abs() < 1e-6 && (back[0].rect[3] - 0.4).abs() < 1e-6);
    assert!(yolo::label_file(&s, &strings(&["circle"])).is_err());
}

#[test]
fn imagefolder_counts_one_label_per_directory() {
    let listing = strings(&["circle/1.png", "circle/2.PNG", "square/1.jpg", "README"]);
    let counts = imagefolder::counts(&listing);
    assert_eq!(counts.samples, 3);
    assert_eq!(counts.labels["circle"], 2);
    assert_eq!(counts.labels["square"], 1);
    let s = LabelledImage { id: "p", ext: "jpg", width: 1, height: 1, label: Some("big cat"), boxes: vec![] };
    assert_eq!(image_path(DatasetFormat::Imagefolder, &s), "big_cat/p.jpg");
}

#[test]
fn layouts_hold_the_tasks_they_can() {
    assert!(DatasetFormat::Coco.holds(Task::Detection) && DatasetFormat::Yolo.holds(Task::Detection));
    assert!(DatasetFormat::Imagefolder.holds(Task::Classification));
    let err = DatasetFormat::Coco.check_holds(Task::Classification).unwrap_err().0;
    assert!(err.contains("imagefolder for classification"), "{err}");
    assert_eq!(DatasetFormat::default_for(Task::Detection), DatasetFormat::Coco);
}
