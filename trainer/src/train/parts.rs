//! The four parts of a run's data: old training data and feedback (reviewed samples, from the
//! DatasetVersions with `feedback: true`) to train on, and two eval sets: the newest feedback
//! samples, held out (they judge the run when there are any, being what the model now meets in
//! production), and the old data's eval set (the request's `eval` dataset, or a hash split of
//! the old training data), on which forgetting shows.

use std::collections::HashMap;

use flywheel_api::training::TrainRequest;

use super::options::TrainOptions;
use crate::dataset::{self, SampleRef, split_train_eval};
use crate::error::{Result, TrainerError};

#[derive(Debug, Default)]
pub struct Parts {
    pub old: Vec<SampleRef>,
    pub feedback: Vec<SampleRef>,
    pub eval_old: Vec<SampleRef>,
    pub eval_feedback: Vec<SampleRef>,
}

impl Parts {
    pub fn train_len(&self) -> usize {
        self.old.len() + self.feedback.len()
    }
    pub fn eval_len(&self) -> usize {
        self.eval_old.len() + self.eval_feedback.len()
    }
}

/// Fewest held-out feedback samples that judge a run: a slice of one or two reviews is noise
/// (one box more or less swings mAP by tens of points), so smaller feedback all trains and the
/// old data's eval set judges.
pub const MIN_FEEDBACK_EVAL: usize = 5;

/// Holds out the newest `fraction` of `items` (ordered by key, then path): at least one when
/// there are two or more and `fraction` is above 0, never all of them, and none when that
/// would be fewer than `min_eval`. Returns (train, eval).
pub fn newest_split<K: Ord>(
    mut items: Vec<(K, SampleRef)>,
    fraction: f64,
    min_eval: usize,
) -> (Vec<SampleRef>, Vec<SampleRef>) {
    items.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.path.cmp(&b.1.path)));
    let n = items.len();
    let n_eval = if n < 2 || fraction <= 0.0 { 0 } else { ((n as f64 * fraction).round() as usize).clamp(1, n - 1) };
    let n_eval = if n_eval < min_eval { 0 } else { n_eval };
    let mut train: Vec<SampleRef> = items.into_iter().map(|(_, s)| s).collect();
    let eval = train.split_off(n - n_eval);
    (train, eval)
}

/// Lists every dataset of the request and splits it into [`Parts`]. A feedback sample's age is
/// its image's last-modified time in storage (the review service writes each sample once).
pub async fn read(req: &TrainRequest, opts: &TrainOptions) -> Result<Parts> {
    let labels = &req.base_model.spec.labels;
    let (mut old, mut feedback) = (Vec::new(), Vec::new());
    for ds in &req.train {
        let refs = dataset::read_dataset(ds, labels).await?;
        if !ds.spec.feedback {
            old.extend(refs);
            continue;
        }
        let Some(first) = refs.first() else { continue };
        let times: HashMap<_, _> = first.location.list("").await?.into_iter().collect();
        feedback.extend(refs.into_iter().map(|r| (times.get(&r.path).copied(), r)));
    }
    let (old, eval_old) = match &req.eval {
        Some(e) => (old, dataset::read_dataset(e, labels).await?),
        None if old.is_empty() => (old, Vec::new()),
        None => split_train_eval(old, opts.eval_fraction),
    };
    let (feedback, eval_feedback) = newest_split(feedback, opts.feedback_eval_fraction, MIN_FEEDBACK_EVAL);
    let parts = Parts { old, feedback, eval_old, eval_feedback };
    if parts.train_len() == 0 || parts.eval_len() == 0 {
        return Err(TrainerError::Request(format!(
            "need training and eval samples, got {} and {}",
            parts.train_len(),
            parts.eval_len()
        )));
    }
    tracing::info!(
        old = parts.old.len(),
        feedback = parts.feedback.len(),
        eval_old = parts.eval_old.len(),
        eval_feedback = parts.eval_feedback.len(),
        "samples"
    );
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flywheel_storage::Location;

    fn sample(path: &str) -> SampleRef {
        SampleRef {
            location: Location::open("file:///data").unwrap(),
            path: path.into(),
            annotation_file: String::new(),
            label: Some(0),
            boxes: vec![],
        }
    }

    fn paths(v: &[SampleRef]) -> Vec<&str> {
        v.iter().map(|s| s.path.as_str()).collect()
    }

    #[test]
    fn the_newest_samples_are_held_out() {
        let items = vec![(3, sample("c")), (1, sample("a")), (5, sample("e")), (2, sample("b")), (4, sample("d"))];
        let (train, eval) = newest_split(items, 0.4, 1);
        assert_eq!(paths(&train), ["a", "b", "c"]);
        assert_eq!(paths(&eval), ["d", "e"]);
    }

    #[test]
    fn ties_go_by_path_and_unknown_times_count_as_oldest() {
        let items = vec![(Some(1), sample("b")), (Some(1), sample("a")), (None, sample("z"))];
        let (train, eval) = newest_split(items, 0.2, 1);
        assert_eq!(paths(&train), ["z", "a"]);
        assert_eq!(paths(&eval), ["b"]);
    }

    #[test]
    fn small_feedback_keeps_at_least_one_sample_to_train_on() {
        assert_eq!(newest_split(vec![(1, sample("a"))], 0.5, 1).1.len(), 0);
        let (t, e) = newest_split(vec![(1, sample("a")), (2, sample("b"))], 0.9, 1);
        assert_eq!((t.len(), e.len()), (1, 1));
        let (t, e) = newest_split((0..10).map(|i| (i, sample(&format!("s{i}")))).collect(), 0.0, 1);
        assert_eq!((t.len(), e.len()), (10, 0));
    }

    #[test]
    fn too_few_to_judge_are_not_held_out() {
        let items = |n: usize| (0..n).map(|i| (i, sample(&format!("s{i:02}")))).collect::<Vec<_>>();
        assert_eq!(newest_split(items(4), 0.5, MIN_FEEDBACK_EVAL).1.len(), 0, "2 would judge: too few");
        let (t, e) = newest_split(items(20), 0.25, MIN_FEEDBACK_EVAL);
        assert_eq!((t.len(), paths(&e)), (15, vec!["s15", "s16", "s17", "s18", "s19"]));
    }
}
