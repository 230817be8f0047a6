//! The replay mix: every training batch holds at least a given share of feedback (reviewed)
//! samples, the rest replays the old training data. An epoch has as many batches as one pass
//! over all the samples would; both parts are reshuffled reproducibly (per epoch) and drawn
//! in turn, the smaller part again as often as needed.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

/// One training sample: an index into the old data or into the feedback.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Pick {
    Old(usize),
    Feedback(usize),
}

/// Feedback samples per batch of `batch`: at least `fraction` of it (at least one when there
/// is feedback and `fraction` is above 0), at least the feedback's natural share of the data,
/// all of it without old data, none without feedback.
pub fn feedback_per_batch(old: usize, feedback: usize, batch: usize, fraction: f64) -> usize {
    if feedback == 0 {
        return 0;
    }
    if old == 0 {
        return batch;
    }
    let natural = feedback as f64 / (old + feedback) as f64;
    let share = fraction.max(natural);
    let k = (batch as f64 * share).round() as usize;
    let k = if fraction > 0.0 { k.max(1) } else { k };
    k.min(batch)
}

/// Cycles through `n` indices, reshuffled at every pass.
struct Cycle {
    order: Vec<usize>,
    next: usize,
    rng: ChaCha8Rng,
}

impl Cycle {
    fn new(n: usize, rng: ChaCha8Rng) -> Self {
        Self { order: (0..n).collect(), next: n, rng }
    }
    fn take(&mut self) -> usize {
        if self.next >= self.order.len() {
            self.order.shuffle(&mut self.rng);
            self.next = 0;
        }
        self.next += 1;
        self.order[self.next - 1]
    }
}

/// The batches of one epoch (`seed` should differ per epoch).
pub fn epoch_batches(old: usize, feedback: usize, batch: usize, fraction: f64, seed: u64) -> Vec<Vec<Pick>> {
    let total = old + feedback;
    if total == 0 || batch == 0 {
        return Vec::new();
    }
    let per_batch = feedback_per_batch(old, feedback, batch, fraction);
    let mut old_cycle = Cycle::new(old, ChaCha8Rng::seed_from_u64(seed));
    let mut fb_cycle = Cycle::new(feedback, ChaCha8Rng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15));
    let mut batches = Vec::new();
    let mut remaining = total;
    while remaining > 0 {
        let size = remaining.min(batch);
        remaining -= size;
        let k = if size == batch { per_batch } else { (size * per_batch).div_ceil(batch).min(size) };
        let k = if old == 0 { size } else { k };
        let mut b: Vec<Pick> = (0..k).map(|_| Pick::Feedback(fb_cycle.take())).collect();
        b.extend((k..size).map(|_| Pick::Old(old_cycle.take())));
        batches.push(b);
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_feedback_share_is_at_least_the_fraction() {
        assert_eq!(feedback_per_batch(1000, 20, 8, 0.5), 4);
        assert_eq!(feedback_per_batch(1000, 20, 8, 0.0), 0);
        assert_eq!(feedback_per_batch(1000, 20, 8, 0.01), 1);
        // More feedback than the fraction: its natural share.
        assert_eq!(feedback_per_batch(100, 300, 8, 0.5), 6);
        assert_eq!(feedback_per_batch(0, 30, 8, 0.5), 8);
        assert_eq!(feedback_per_batch(30, 0, 8, 0.5), 0);
        assert_eq!(feedback_per_batch(30, 10, 8, 1.0), 8);
    }

    #[test]
    fn an_epoch_is_one_pass_of_batches_with_feedback_oversampled() {
        let batches = epoch_batches(100, 10, 8, 0.5, 1);
        assert_eq!(batches.iter().map(Vec::len).sum::<usize>(), 110);
        assert_eq!(batches.len(), 14);
        let fb: Vec<usize> = batches
            .iter()
            .flatten()
            .filter_map(|p| match p {
                Pick::Feedback(i) => Some(*i),
                _ => None,
            })
            .collect();
        assert!(fb.len() >= 54, "{}", fb.len());
        // Every feedback sample comes round before any comes again.
        let mut first: Vec<usize> = fb[..10].to_vec();
        first.sort();
        assert_eq!(first, (0..10).collect::<Vec<_>>());
        // Old samples: each at most once per epoch here (fewer old slots than old samples).
        let mut old: Vec<usize> = batches
            .iter()
            .flatten()
            .filter_map(|p| match p {
                Pick::Old(i) => Some(*i),
                _ => None,
            })
            .collect();
        let n = old.len();
        old.sort();
        old.dedup();
        assert_eq!(old.len(), n);
        assert!(old.iter().all(|&i| i < 100));
    }

    #[test]
    fn epochs_are_reproducible_per_seed_and_differ_between_seeds() {
        assert_eq!(epoch_batches(50, 5, 4, 0.5, 7), epoch_batches(50, 5, 4, 0.5, 7));
        assert_ne!(epoch_batches(50, 5, 4, 0.5, 7), epoch_batches(50, 5, 4, 0.5, 8));
    }

    #[test]
    fn without_feedback_an_epoch_is_a_plain_shuffle() {
        let batches = epoch_batches(20, 0, 8, 0.5, 3);
        let mut all: Vec<Pick> = batches.into_iter().flatten().collect();
        all.sort();
        assert_eq!(all, (0..20).map(Pick::Old).collect::<Vec<_>>());
        let only_fb = epoch_batches(0, 5, 2, 0.5, 3);
        assert!(only_fb.iter().flatten().all(|p| matches!(p, Pick::Feedback(_))));
        assert!(epoch_batches(0, 0, 8, 0.5, 1).is_empty());
    }
}
