//! A client of one inference pod (the plain image endpoint, /status and /metrics, as users
//! call them) and of the pipeline's review service (the review API, as reviewers call it).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PredictedShape {
    pub label: String,
    pub confidence: f32,
    #[serde(rename = "box")]
    pub bbox: Option<[f32; 4]>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Prediction {
    pub id: String,
    pub shapes: Vec<PredictedShape>,
}

#[derive(Clone)]
pub struct ServingClient {
    pub address: SocketAddr,
    /// The review service's address (the inference pods redirect review requests there).
    pub review_address: Option<SocketAddr>,
    token: String,
    http: reqwest::Client,
}

impl ServingClient {
    pub fn new(address: SocketAddr, review_token: String) -> Self {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("HTTP client");
        Self { address, review_address: None, token: review_token, http }
    }

    /// The same client, reviewing through the review service at `address`.
    pub fn with_review_service(mut self, address: SocketAddr) -> Self {
        self.review_address = Some(address);
        self
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    fn review_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.review_address.unwrap_or(self.address))
    }

    async fn check(r: reqwest::Response, what: &str) -> anyhow::Result<reqwest::Response> {
        if r.status().is_success() {
            return Ok(r);
        }
        let status = r.status();
        bail!("{what}: HTTP {status}: {}", r.text().await.unwrap_or_default())
    }

    /// POST /v1/predict with one PNG.
    pub async fn predict(&self, png: &[u8]) -> anyhow::Result<Prediction> {
        let r = self
            .http
            .post(self.url("/v1/predict"))
            .header("content-type", "image/png")
            .body(png.to_vec())
            .send()
            .await?;
        let body: Value = Self::check(r, "predict").await?.json().await?;
        let first = body["predictions"].get(0).cloned().context("predict answered no prediction")?;
        Ok(serde_json::from_value(first)?)
    }

    /// Review items (`status` = toReview | reviewed | all), the review API's order.
    pub async fn review_items(&self, status: &str) -> anyhow::Result<Vec<Value>> {
        let r = self
            .http
            .get(self.review_url("/v1/review/items"))
            .query(&[("status", status), ("limit", "1000")])
            .bearer_auth(&self.token)
            .send()
            .await?;
        let body: Value = Self::check(r, "list review items").await?.json().await?;
        Ok(body["items"].as_array().cloned().unwrap_or_default())
    }

    /// Submits a reviewer's correction: the true shapes of the image.
    pub async fn correct(&self, id: &str, truth: &[(String, [f32; 4])]) -> anyhow::Result<()> {
        let shapes: Vec<Value> =
            truth.iter().map(|(label, b)| json!({"label": label, "classId": 0, "confidence": 1.0, "box": b})).collect();
        let r = self
            .http
            .post(self.review_url(&format!("/v1/review/items/{id}")))
            .bearer_auth(&self.token)
            .json(&json!({"decision": "correct", "shapes": shapes}))
            .send()
            .await?;
        Self::check(r, &format!("review of {id}")).await?;
        Ok(())
    }

    pub async fn status(&self) -> anyhow::Result<Value> {
        let r = self.http.get(self.url("/status")).send().await?;
        Ok(Self::check(r, "/status").await?.json().await?)
    }

    /// The review service's /status: totals and quality figures per (champion, shadow) pair.
    pub async fn review_status(&self) -> anyhow::Result<Value> {
        let r = self.http.get(self.review_url("/status")).send().await?;
        Ok(Self::check(r, "review service /status").await?.json().await?)
    }

    pub async fn metrics(&self) -> anyhow::Result<String> {
        let r = self.http.get(self.url("/metrics")).send().await?;
        Ok(Self::check(r, "/metrics").await?.text().await?)
    }
}

/// Whether the Prometheus text has a sample of `name` (any labels).
pub fn has_metric(text: &str, name: &str) -> bool {
    text.lines()
        .any(|l| !l.starts_with('#') && (l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} "))))
}
