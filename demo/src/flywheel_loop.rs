//! The loop's steps, each waiting for the transition it causes and returning what it saw: the
//! demo prints it, the e2e tests assert on it. Users are played by production images sent to
//! the inference Pod, reviewers by corrections carrying the images' ground truth.

use std::collections::HashMap;

use anyhow::{Context, bail};
use flywheel_api::{DataPipeline, DatasetVersion, FlywheelDeployment, ModelVersion};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use kube::api::ListParams;
use serde_json::Value;

use crate::assets::Sample;
use crate::platform::Platform;
use crate::serving::{Prediction, ServingClient};

/// Names in examples/quickstart.
pub const DEPLOYMENT: &str = "shapes";
pub const PIPELINE: &str = "shapes";
pub const CHAMPION: &str = "shapes-detector-v1";
pub const SHADOW: &str = "shapes-detector-v2";
pub const FEEDBACK: &str = "shapes-feedback";
pub const TRAIN: &str = "shapes-train";

/// Generous bounds for a shared 2-core machine; a step that exceeds one fails with a dump.
pub const MODEL_TIMEOUT: u64 = 120;
pub const TRAINING_TIMEOUT: u64 = 300;

pub struct FlywheelLoop {
    pub platform: Platform,
    samples: Vec<Sample>,
    next_sample: usize,
    /// Prediction id → index of the sample sent.
    sent: HashMap<String, usize>,
    serving: Option<ServingClient>,
}

pub fn condition_true(conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition], type_: &str) -> bool {
    conditions.iter().any(|c| c.type_ == type_ && c.status == "True")
}

impl FlywheelLoop {
    pub fn new(platform: Platform, samples: Vec<Sample>) -> Self {
        Self { platform, samples, next_sample: 0, sent: HashMap::new(), serving: None }
    }

    pub fn serving(&self) -> anyhow::Result<&ServingClient> {
        self.serving.as_ref().context("the inference Pod is not known yet: call wait_serving first")
    }

    /// Waits until the ModelVersion is Ready (artifact verified) and returns it.
    pub async fn wait_model_ready(&self, name: &str, timeout: u64) -> anyhow::Result<ModelVersion> {
        let ready = |m: Option<&ModelVersion>| {
            m.and_then(|m| m.status.as_ref()).is_some_and(|s| condition_true(&s.conditions, "Ready"))
        };
        Ok(self.platform.wait_for::<ModelVersion>(name, ready, timeout).await?.expect("condition held"))
    }

    /// Waits until the Deployment serves `champion` from a ready Pod; connects to that Pod and
    /// to the pipeline's review service.
    pub async fn wait_serving(&mut self, champion: &str) -> anyhow::Result<FlywheelDeployment> {
        let serving = |d: Option<&FlywheelDeployment>| {
            d.and_then(|d| d.status.as_ref())
                .is_some_and(|s| s.champion.as_deref() == Some(champion) && s.ready_replicas.unwrap_or(0) >= 1)
        };
        let d = self
            .platform
            .wait_for::<FlywheelDeployment>(DEPLOYMENT, serving, MODEL_TIMEOUT)
            .await?
            .expect("condition held");
        let address = self.platform.inference_address(DEPLOYMENT, MODEL_TIMEOUT).await?;
        let secret = self.platform.api::<Secret>().get(&format!("{DEPLOYMENT}-review-token")).await?;
        let token = secret.data.as_ref().and_then(|d| d.get("token")).context("review-token Secret has no token")?;
        let token = String::from_utf8(token.0.clone())?;
        // Reviewers use the pipeline's review service (the inference Pods redirect there).
        let review = self.platform.review_address(PIPELINE, MODEL_TIMEOUT).await?;
        self.serving = Some(ServingClient::new(address, token).with_review_service(review));
        // The Pod is Ready once a champion is loaded; wait until it is this champion.
        let client = self.serving()?.clone();
        flywheel_e2e::wait::eventually(&format!("the inference Pod serving {champion}"), MODEL_TIMEOUT, || {
            let client = client.clone();
            async move {
                let st = client.status().await.map_err(|e| e.to_string())?;
                (st["champion"]["version"] == champion).then_some(()).ok_or_else(|| format!("/status: {st}"))
            }
        })
        .await?;
        Ok(d)
    }

    /// Waits until the profiling Job's reference statistics reach the pipeline's status and
    /// the inference Pod (drift monitoring on); returns the pipeline.
    pub async fn wait_profiled(&self) -> anyhow::Result<DataPipeline> {
        let profiled = |p: Option<&DataPipeline>| {
            p.and_then(|p| p.status.as_ref()).is_some_and(|s| s.unsupervised_metrics_available)
        };
        let p =
            self.platform.wait_for::<DataPipeline>(PIPELINE, profiled, MODEL_TIMEOUT).await?.expect("condition held");
        let client = self.serving()?.clone();
        flywheel_e2e::wait::eventually("drift monitoring on in the inference Pod", MODEL_TIMEOUT, || {
            let client = client.clone();
            async move {
                let st = client.status().await.map_err(|e| e.to_string())?;
                (st["driftMonitoring"] == true).then_some(()).ok_or_else(|| format!("/status: {st}"))
            }
        })
        .await?;
        Ok(p)
    }

    /// Sends `n` production images (cycling through the samples); returns the predictions.
    pub async fn send_traffic(&mut self, n: usize) -> anyhow::Result<Vec<Prediction>> {
        let client = self.serving()?.clone();
        let mut predictions = Vec::with_capacity(n);
        for _ in 0..n {
            let index = self.next_sample % self.samples.len();
            self.next_sample += 1;
            let p = client.predict(&self.samples[index].png).await?;
            self.sent.insert(p.id.clone(), index);
            predictions.push(p);
        }
        Ok(predictions)
    }

    /// Corrects `n` predictions waiting for review that `pick` selects, with their ground
    /// truth; returns the reviewed items as the review API listed them. Predictions reach the
    /// review list when the server's log writer flushes (about a second) and the review service
    /// ingests the log (every 2 s), so this polls until `n` are done or `timeout` seconds pass
    /// (then it returns fewer).
    pub async fn review(&self, n: usize, timeout: u64, pick: impl Fn(&Value) -> bool) -> anyhow::Result<Vec<Value>> {
        let client = self.serving()?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(timeout);
        let mut done = Vec::new();
        while done.len() < n {
            for item in client.review_items("toReview").await? {
                if done.len() == n {
                    break;
                }
                let Some(id) = item["id"].as_str() else { continue };
                let Some(&index) = self.sent.get(id) else { continue };
                if !pick(&item) {
                    continue;
                }
                client.correct(id, &self.samples[index].truth).await?;
                done.push(item);
            }
            if done.len() < n {
                if std::time::Instant::now() >= deadline {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
        }
        Ok(done)
    }

    /// Waits until the feedback DatasetVersion counts at least `reviewed` reviewed samples.
    pub async fn wait_feedback_count(&self, reviewed: u64) -> anyhow::Result<DatasetVersion> {
        let counted = |d: Option<&DatasetVersion>| {
            d.and_then(|d| d.status.as_ref()).and_then(|s| s.reviewed_count).unwrap_or(0) >= reviewed
        };
        Ok(self.platform.wait_for::<DatasetVersion>(FEEDBACK, counted, MODEL_TIMEOUT).await?.expect("condition held"))
    }

    /// The pipeline's training Jobs.
    pub async fn training_jobs(&self) -> anyhow::Result<Vec<Job>> {
        let selector = format!("flywheel.dev/pipeline={PIPELINE},flywheel.dev/job-kind=trainer");
        Ok(self.platform.api::<Job>().list(&ListParams::default().labels(&selector)).await?.items)
    }

    /// Waits for training run `number` to finish, printing its progress (epoch, loss, metric,
    /// ETA) as the operator reports it, and returns the pipeline (with the run in its history).
    pub async fn wait_run_finished(&self, number: u32) -> anyhow::Result<DataPipeline> {
        let shown = std::sync::Mutex::new(None);
        let finished = |p: Option<&DataPipeline>| {
            let status = p.and_then(|p| p.status.as_ref());
            let progress = status.and_then(|s| s.current_run.as_ref()).filter(|r| r.number == number);
            if let Some(progress) = progress.and_then(|r| r.progress.as_ref()) {
                let mut shown = shown.lock().expect("progress lock");
                if shown.as_ref() != Some(progress) {
                    println!("  run {number}: {}", describe(progress));
                    *shown = Some(progress.clone());
                }
            }
            status.is_some_and(|s| s.run_history.iter().any(|r| r.number == number && r.outcome != "Running"))
        };
        Ok(self.platform.wait_for::<DataPipeline>(PIPELINE, finished, TRAINING_TIMEOUT).await?.expect("condition held"))
    }

    /// Waits until the Deployment's status serves `shadow` as shadow (and the Pod loaded it).
    pub async fn wait_shadow(&self, shadow: &str) -> anyhow::Result<FlywheelDeployment> {
        let placed = |d: Option<&FlywheelDeployment>| {
            d.and_then(|d| d.status.as_ref()).is_some_and(|s| s.shadow.as_deref() == Some(shadow))
        };
        let d = self
            .platform
            .wait_for::<FlywheelDeployment>(DEPLOYMENT, placed, MODEL_TIMEOUT)
            .await?
            .expect("condition held");
        self.wait_pod_serves("shadow", shadow).await?;
        Ok(d)
    }

    /// Waits until the Deployment's champion is `champion` (and the Pod loaded it).
    pub async fn wait_champion(&self, champion: &str, timeout: u64) -> anyhow::Result<FlywheelDeployment> {
        let placed = |d: Option<&FlywheelDeployment>| {
            d.and_then(|d| d.status.as_ref()).is_some_and(|s| s.champion.as_deref() == Some(champion))
        };
        let d =
            self.platform.wait_for::<FlywheelDeployment>(DEPLOYMENT, placed, timeout).await?.expect("condition held");
        self.wait_pod_serves("champion", champion).await?;
        Ok(d)
    }

    async fn wait_pod_serves(&self, role: &'static str, version: &str) -> anyhow::Result<()> {
        let client = self.serving()?.clone();
        flywheel_e2e::wait::eventually(
            &format!("the inference Pod serving {version} as {role}"),
            MODEL_TIMEOUT,
            || {
                let client = client.clone();
                async move {
                    let st = client.status().await.map_err(|e| e.to_string())?;
                    (st[role]["version"] == version).then_some(()).ok_or_else(|| format!("/status: {st}"))
                }
            },
        )
        .await?;
        Ok(())
    }

    /// Reviews samples the shadow `shadow` also predicted until `n` are reviewed, sending
    /// more traffic as needed (the shadow sees a sample of it). Returns the reviews made.
    pub async fn review_shadow_samples(&mut self, shadow: &str, n: usize) -> anyhow::Result<usize> {
        let mut reviewed = 0;
        for _round in 0..50 {
            if reviewed >= n {
                return Ok(reviewed);
            }
            self.send_traffic(20).await?;
            reviewed += self.review(n - reviewed, 3, |i| i["shadow"]["version"] == shadow).await?.len();
        }
        bail!("sent 1,000 images and reviewed only {reviewed} that shadow {shadow} predicted: is shadow sampling on?")
    }
}

/// One line of a run's progress: `epoch 3/6 loss 0.532 mAP50 0.401 (base 0.120) 212 img/s, 41 s left`.
fn describe(p: &flywheel_api::training::progress::RunProgress) -> String {
    let mut line = format!("epoch {}/{}", p.epoch, p.epochs);
    if let Some(loss) = p.loss {
        line += &format!(" loss {loss:.3}");
    }
    if let Some(value) = p.value {
        line += &format!(" {} {value:.3}", p.metric);
    }
    if let Some(base) = p.base_value {
        line += &format!(" (base {base:.3})");
    }
    if let Some(speed) = p.images_per_second {
        line += &format!(" {speed:.0} img/s");
    }
    if let Some(eta) = p.eta_seconds.filter(|e| *e > 0.0) {
        line += &format!(", {eta:.0} s left");
    }
    line
}

#[cfg(test)]
mod progress_tests {
    use flywheel_api::training::progress::RunProgress;

    #[test]
    fn a_progress_line_says_what_is_known() {
        let mut p = RunProgress { epoch: 0, epochs: 6, metric: "mAP50".into(), ..Default::default() };
        assert_eq!(super::describe(&p), "epoch 0/6");
        (p.epoch, p.loss, p.value, p.base_value) = (3, Some(0.5321), Some(0.4012), Some(0.12));
        (p.images_per_second, p.eta_seconds) = (Some(212.4), Some(41.0));
        assert_eq!(super::describe(&p), "epoch 3/6 loss 0.532 mAP50 0.401 (base 0.120) 212 img/s, 41 s left");
    }
}
