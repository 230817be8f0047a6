//! Clients of a running inference pod: predictions from a generated COCO dataset (whose
//! annotations are the ground truth reviewers submit) and reviews through the review API.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use flywheel_types::dataset::coco::{ANNOTATIONS_FILE, CocoDocument};
use serde_json::{Value, json};

/// One image of a generated COCO dataset with its ground-truth shapes, in the review API's
/// shape format.
#[derive(Clone, Debug)]
pub struct Sample {
    pub path: PathBuf,
    pub shapes: Vec<Value>,
}

/// Reads `<dir>/annotations.json` and its images.
pub fn coco_samples(dir: &Path) -> Vec<Sample> {
    let coco = CocoDocument::parse(&std::fs::read(dir.join(ANNOTATIONS_FILE)).unwrap()).unwrap();
    let class_id = |label: &str| coco.categories.iter().find(|c| c.name == label).map(|c| c.id - 1).unwrap();
    let mut boxes = coco.boxes_by_image().unwrap();
    let mut samples = Vec::new();
    for image in &coco.images {
        let shapes = boxes
            .remove(&image.id)
            .unwrap_or_default()
            .into_iter()
            .map(|(label, b)| json!({"label": label, "classId": class_id(label), "confidence": 1.0, "box": b}))
            .collect();
        samples.push(Sample { path: dir.join(image.path()), shapes });
    }
    samples
}

/// A client of one inference pod (or of the review service: the same review API).
#[derive(Clone)]
pub struct Server {
    pub base: String,
    pub http: reqwest::Client,
}

impl Server {
    pub fn new(addr: std::net::SocketAddr) -> Self {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
        Self { base: format!("http://{addr}"), http }
    }

    /// POST /v1/predict with one PNG; returns the prediction id.
    pub async fn predict(&self, png: &Path) -> Result<String, String> {
        let body = std::fs::read(png).map_err(|e| format!("{}: {e}", png.display()))?;
        let r = self
            .http
            .post(format!("{}/v1/predict", self.base))
            .header("content-type", "image/png")
            .body(body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = r.status();
        let v: Value = r.json().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("{status}: {v}"));
        }
        v["predictions"][0]["id"].as_str().map(String::from).ok_or(format!("no prediction id in {v}"))
    }

    /// A request that is not an image: answered 415 (an error series for the dashboard).
    pub async fn bad_request(&self) -> u16 {
        let r = self
            .http
            .post(format!("{}/v1/predict", self.base))
            .header("content-type", "text/plain")
            .body("not an image")
            .send()
            .await;
        r.map(|r| r.status().as_u16()).unwrap_or(0)
    }

    pub async fn status(&self) -> Option<Value> {
        self.http.get(format!("{}/status", self.base)).send().await.ok()?.json().await.ok()
    }

    /// Ids of the predictions waiting for review.
    pub async fn to_review(&self, token: &str) -> Result<Vec<String>, String> {
        let r = self
            .http
            .get(format!("{}/v1/review/items?status=toReview&limit=200", self.base))
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let v: Value = r.json().await.map_err(|e| e.to_string())?;
        Ok(v["items"]
            .as_array()
            .ok_or(format!("no items in {v}"))?
            .iter()
            .filter_map(|i| i["id"].as_str().map(String::from))
            .collect())
    }

    /// Corrects a prediction with the ground truth.
    pub async fn review(&self, token: &str, id: &str, shapes: &[Value]) -> Result<(), String> {
        let r = self
            .http
            .post(format!("{}/v1/review/items/{id}", self.base))
            .bearer_auth(token)
            .json(&json!({"decision": "correct", "shapes": shapes}))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if r.status().is_success() {
            Ok(())
        } else {
            Err(format!("review {id}: {} {}", r.status(), r.text().await.unwrap_or_default()))
        }
    }
}

/// Polls `check` every 250 ms until it returns Some, or panics after `secs` with `what`.
pub async fn wait_until<T, F, Fut>(what: &str, secs: u64, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {secs}s waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
