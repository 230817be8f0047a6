//! Deterministic train/eval split: samples are ordered by a hash of their path inside their
//! dataset and the first `fraction` go to eval, so the same data always splits the same way
//! (whatever the listing order, wherever the dataset is stored) and adding samples moves few
//! existing ones.

use super::SampleRef;

pub const DEFAULT_EVAL_FRACTION: f64 = 0.2;

pub fn split_train_eval(samples: Vec<SampleRef>, fraction: f64) -> (Vec<SampleRef>, Vec<SampleRef>) {
    let mut keyed: Vec<(u64, SampleRef)> = samples.into_iter().map(|s| (fnv1a(s.path.as_bytes()), s)).collect();
    keyed.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.uri().cmp(&b.1.uri())));
    let n = keyed.len();
    let n_eval = if n < 2 { 0 } else { ((n as f64 * fraction).round() as usize).clamp(1, n - 1) };
    let mut eval = Vec::with_capacity(n_eval);
    let mut train = Vec::with_capacity(n - n_eval);
    for (i, (_, s)) in keyed.into_iter().enumerate() {
        if i < n_eval { eval.push(s) } else { train.push(s) }
    }
    // Back in URI order, so batches do not depend on the hash.
    train.sort_by_key(|s| s.uri());
    eval.sort_by_key(|s| s.uri());
    (train, eval)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, b| (h ^ *b as u64).wrapping_mul(0x100000001b3))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flywheel_storage::Location;

    fn refs(n: usize) -> Vec<SampleRef> {
        let loc = Location::open("file:///data").unwrap();
        (0..n)
            .map(|i| SampleRef {
                location: loc.clone(),
                path: format!("img{i}.png"),
                annotation_file: String::new(),
                label: Some(0),
                boxes: vec![],
            })
            .collect()
    }

    #[test]
    fn split_is_deterministic_and_order_independent() {
        let (t1, e1) = split_train_eval(refs(50), 0.2);
        let mut shuffled = refs(50);
        shuffled.reverse();
        let (t2, e2) = split_train_eval(shuffled, 0.2);
        assert_eq!(e1.len(), 10);
        assert_eq!(t1.len(), 40);
        let uris = |v: &[SampleRef]| v.iter().map(|s| s.uri()).collect::<Vec<_>>();
        assert_eq!(uris(&e1), uris(&e2));
        assert_eq!(uris(&t1), uris(&t2));
    }

    #[test]
    fn tiny_sets_keep_one_eval_sample() {
        let (t, e) = split_train_eval(refs(2), 0.2);
        assert_eq!((t.len(), e.len()), (1, 1));
    }
}
