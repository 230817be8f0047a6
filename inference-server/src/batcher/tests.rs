use std::sync::Mutex;
use std::sync::mpsc as std_mpsc;

use super::*;
use crate::backend::TensorInfo;

/// Echoes its input after the test releases it, recording the batch sizes it ran.
struct Gate {
    info: TensorInfo,
    release: Mutex<std_mpsc::Receiver<()>>,
    ran: Mutex<Vec<Vec<f32>>>,
}

impl ModelBackend for Gate {
    fn input(&self) -> &TensorInfo {
        &self.info
    }
    fn outputs(&self) -> &[TensorInfo] {
        std::slice::from_ref(&self.info)
    }
    fn run(&self, input: &TensorF32) -> Result<Vec<TensorF32>, BackendError> {
        self.release.lock().unwrap().recv().expect("released");
        self.ran.lock().unwrap().push(input.data.clone());
        if input.data.contains(&-1.0) {
            return Err(BackendError::Input("-1 is not an input this model takes".into()));
        }
        Ok(vec![input.clone()])
    }
}

fn gate() -> (Arc<Gate>, std_mpsc::Sender<()>) {
    let (tx, rx) = std_mpsc::channel();
    let info = TensorInfo { name: "x".into(), datatype: "FP32", shape: vec![None, Some(1)] };
    (Arc::new(Gate { info, release: Mutex::new(rx), ran: Mutex::new(Vec::new()) }), tx)
}

fn one(v: f32) -> TensorF32 {
    TensorF32::new(vec![1, 1], vec![v]).unwrap()
}

/// Waits until the batching thread has taken `n` runs' worth of work off the gate.
async fn until_ran(g: &Gate, n: usize) {
    for _ in 0..500 {
        if g.ran.lock().unwrap().len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("the backend ran {:?}, expected {n} runs", g.ran.lock().unwrap());
}

#[tokio::test]
async fn a_request_whose_caller_went_away_is_not_run() {
    let (g, release) = gate();
    let demand = Arc::new(AtomicUsize::new(0));
    let b = Batcher::spawn("t", g.clone(), 8, Duration::ZERO, 16, demand);
    // 1.0 occupies the model thread (it waits for a release).
    let first = tokio::spawn({
        let b = b.clone();
        async move { b.infer(one(1.0)).await }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    // 2.0 is queued, then its caller gives up before the model is free.
    let abandoned = tokio::spawn({
        let b = b.clone();
        async move { b.infer(one(2.0)).await }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    abandoned.abort();
    let _ = abandoned.await;
    // Enough releases for every run, so a wrongly run 2.0 fails the assertion, not the clock.
    for _ in 0..3 {
        release.send(()).unwrap();
    }
    assert_eq!(first.await.unwrap().unwrap()[0].data, vec![1.0]);
    let third = tokio::spawn({
        let b = b.clone();
        async move { b.infer(one(3.0)).await }
    });
    assert_eq!(third.await.unwrap().unwrap()[0].data, vec![3.0]);
    assert_eq!(*g.ran.lock().unwrap(), vec![vec![1.0], vec![3.0]], "2.0 must not run");
}

#[tokio::test]
async fn queued_requests_are_merged_and_each_gets_its_rows() {
    let (g, release) = gate();
    // Demand says many callers are in flight, so the thread waits for company.
    let demand = Arc::new(AtomicUsize::new(100));
    let b = Batcher::spawn("t", g.clone(), 8, Duration::from_millis(200), 16, demand);
    let calls: Vec<_> = (0..4)
        .map(|k| {
            let b = b.clone();
            tokio::spawn(async move { b.infer(one(k as f32)).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    release.send(()).unwrap();
    // The first request may have been taken alone before the others arrived.
    release.send(()).unwrap();
    for (k, c) in calls.into_iter().enumerate() {
        assert_eq!(c.await.unwrap().unwrap()[0].data, vec![k as f32]);
    }
    until_ran(&g, 1).await;
    let batches: Vec<usize> = g.ran.lock().unwrap().iter().map(Vec::len).collect();
    assert!(batches.iter().any(|&n| n >= 3), "no batch formed: {batches:?}");
}

#[tokio::test]
async fn a_backend_error_keeps_its_kind_up_to_the_status_code() {
    let (g, release) = gate();
    let b = Batcher::spawn("t", g.clone(), 1, Duration::ZERO, 4, Arc::new(AtomicUsize::new(0)));
    release.send(()).unwrap();
    let err = b.infer(one(-1.0)).await.unwrap_err();
    assert!(matches!(err, BatchError::Backend(BackendError::Input(_))), "{err:?}");
    let status = ServerError::from(err).status();
    assert_eq!(status, axum::http::StatusCode::BAD_REQUEST);
}
