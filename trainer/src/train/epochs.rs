//! Epoch-level work on streamed data: evaluation on the two eval sets, and one training epoch
//! of replay-mixed, augmented batches under the learning-rate schedule.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::Instant;

use super::mix::{self, Pick};
use super::objective::Prepared;
use super::options::TrainOptions;
use super::parts::Parts;
use super::report::EpochRecord;
use super::schedule::LrSchedule;
use super::session::Session;
use super::stream::{Loader, Prefetch};
use crate::dataset::SampleRef;
use crate::error::Result;

/// Eval batches are larger: no gradients are kept.
pub const EVAL_BATCH: usize = 32;
/// Seed of the shuffles and augmentation draws, so a run is reproducible.
const SEED: u64 = 0x5eed;

/// The metric on each eval set, and which one judges the run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Evaluation {
    pub feedback: Option<f64>,
    pub old: Option<f64>,
}

impl Evaluation {
    /// The newest feedback's value when there is feedback to judge on, else the old data's.
    pub fn judged(&self) -> f64 {
        self.feedback.or(self.old).unwrap_or(f64::NAN)
    }

    pub fn judged_on(&self) -> &'static str {
        if self.feedback.is_some() { "feedback" } else { "old" }
    }

    /// `{metric: judged, metric_feedback: .., metric_old: ..}` (the parts that exist).
    pub fn to_map(&self, metric: &str) -> BTreeMap<String, f64> {
        let mut m = BTreeMap::from([(metric.to_string(), self.judged())]);
        if let Some(v) = self.feedback {
            m.insert(format!("{metric}_feedback"), v);
        }
        if let Some(v) = self.old {
            m.insert(format!("{metric}_old"), v);
        }
        m
    }
}

/// The metric on one eval set, streamed in batches; `None` for an empty set.
pub async fn evaluate_set(session: &Session, loader: &Loader, refs: &[SampleRef]) -> Result<Option<f64>> {
    if refs.is_empty() {
        return Ok(None);
    }
    let batches = refs.chunks(EVAL_BATCH).map(|c| (c.to_vec(), 0)).collect();
    let mut batches = Prefetch::new(loader.plain(), batches);
    let mut outputs = Vec::new();
    let mut targets = Prepared { inputs: Vec::new(), labels: Vec::new(), boxes: Vec::new() };
    while let Some(batch) = batches.next().await {
        let batch = batch?;
        outputs.push(session.outputs(&batch)?);
        targets.labels.extend(batch.labels);
        targets.boxes.extend(batch.boxes);
    }
    Ok(Some(session.objective.metric(&outputs, &targets)?))
}

pub async fn evaluate(session: &Session, loader: &Loader, parts: &Parts) -> Result<Evaluation> {
    Ok(Evaluation {
        feedback: evaluate_set(session, loader, &parts.eval_feedback).await?,
        old: evaluate_set(session, loader, &parts.eval_old).await?,
    })
}

/// Steps per epoch (the same every epoch).
pub fn steps_per_epoch(parts: &Parts, batch: usize) -> usize {
    parts.train_len().div_ceil(batch.max(1))
}

pub struct EpochPlan<'a> {
    pub epoch: u32,
    pub batch: usize,
    pub options: &'a TrainOptions,
    pub schedule: &'a LrSchedule,
}

/// One epoch of training, then an evaluation of both eval sets.
pub async fn train_epoch(
    session: &mut Session,
    loader: &Loader,
    parts: &Parts,
    plan: &EpochPlan<'_>,
    metric: &str,
) -> Result<(EpochRecord, Evaluation)> {
    let start = Instant::now();
    let seed = SEED.wrapping_add(plan.epoch as u64);
    let picks =
        mix::epoch_batches(parts.old.len(), parts.feedback.len(), plan.batch, plan.options.feedback_fraction, seed);
    let first_step = (plan.epoch as usize - 1) * picks.len();
    let images: usize = picks.iter().map(Vec::len).sum();
    let batches: Vec<(Vec<SampleRef>, u64)> = picks
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let refs = b
                .iter()
                .map(|p| match *p {
                    Pick::Old(i) => parts.old[i].clone(),
                    Pick::Feedback(i) => parts.feedback[i].clone(),
                })
                .collect();
            (refs, seed.wrapping_mul(0x100000001b3).wrapping_add(i as u64))
        })
        .collect();
    let bar = progress_bar(images, plan.epoch);
    let mut stream = Prefetch::new(loader.clone(), batches);
    let (mut total, mut steps, mut lr) = (0f64, 0usize, plan.schedule.at(first_step));
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        lr = plan.schedule.at(first_step + steps);
        session.set_learning_rate(lr);
        let idx: Vec<usize> = (0..batch.len()).collect();
        let loss = session.step(&idx, &batch)?;
        total += loss;
        steps += 1;
        if let Some(b) = &bar {
            b.inc(batch.len() as u64);
            b.set_message(format!("loss {loss:.4} lr {lr:.2e}"));
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let train_seconds = start.elapsed().as_secs_f64();
    let eval = evaluate(session, &loader.plain(), parts).await?;
    let record = EpochRecord {
        epoch: plan.epoch,
        loss: total / steps.max(1) as f64,
        metrics: eval.to_map(metric),
        seconds: start.elapsed().as_secs_f64(),
        images_per_second: images as f64 / train_seconds.max(1e-9),
        learning_rate: lr,
    };
    Ok((record, eval))
}

/// A progress bar on interactive terminals only; Jobs log one line per epoch instead.
fn progress_bar(len: usize, epoch: u32) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(len as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} images {per_sec} {msg}")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_prefix(epoch.to_string());
    Some(bar)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_feedback_slice_judges_when_there_is_one() {
        let both = Evaluation { feedback: Some(0.4), old: Some(0.9) };
        assert_eq!((both.judged(), both.judged_on()), (0.4, "feedback"));
        let m = both.to_map("mAP50");
        assert_eq!(m["mAP50"], 0.4);
        assert_eq!(m["mAP50_feedback"], 0.4);
        assert_eq!(m["mAP50_old"], 0.9);
        let old = Evaluation { feedback: None, old: Some(0.9) };
        assert_eq!((old.judged(), old.judged_on()), (0.9, "old"));
        assert_eq!(old.to_map("accuracy").keys().collect::<Vec<_>>(), ["accuracy", "accuracy_old"]);
    }
}
