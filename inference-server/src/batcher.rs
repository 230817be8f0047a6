//! Dynamic batching: requests queue for a model's dedicated thread, which gathers up to
//! `max_batch` items (or waits at most `max_wait` after the first), runs them as one batch and
//! hands every caller its slice of the outputs. Running the model on its own OS thread keeps
//! tokio's workers free for I/O while the CPU-bound kernel runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::backend::{BackendError, ModelBackend, TensorF32};
use crate::error::ServerError;

struct Job {
    input: TensorF32,
    reply: oneshot::Sender<Result<Vec<TensorF32>, String>>,
}

/// Counts requests in flight in the HTTP layer (the batcher's hint that more may join).
pub struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    pub fn enter(counter: &Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(counter.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Handle to a running batching thread; dropping every handle stops the thread.
#[derive(Clone)]
pub struct Batcher {
    tx: mpsc::SyncSender<Job>,
}

impl Batcher {
    pub fn spawn(
        name: &str,
        backend: Arc<dyn ModelBackend>,
        max_batch: usize,
        max_wait: Duration,
        queue: usize,
        demand: Arc<AtomicUsize>,
    ) -> Self {
        let (tx, rx) = mpsc::sync_channel::<Job>(queue.max(1));
        let max_batch = max_batch.clamp(1, backend.max_batch());
        std::thread::Builder::new()
            .name(format!("batcher-{name}"))
            .spawn(move || run_loop(backend, rx, max_batch, max_wait, demand))
            .expect("spawning the batching thread");
        Self { tx }
    }

    /// Queues one request (itself possibly a batch) and waits for its outputs.
    pub async fn infer(&self, input: TensorF32) -> Result<Vec<TensorF32>, ServerError> {
        let (reply, rx) = oneshot::channel();
        self.tx.try_send(Job { input, reply }).map_err(|e| match e {
            mpsc::TrySendError::Full(_) => ServerError::Overloaded,
            mpsc::TrySendError::Disconnected(_) => ServerError::NotReady("model unloaded".into()),
        })?;
        rx.await.map_err(|_| ServerError::Internal("batching thread stopped".into()))?.map_err(ServerError::Backend)
    }
}

fn run_loop(
    backend: Arc<dyn ModelBackend>,
    rx: mpsc::Receiver<Job>,
    max_batch: usize,
    max_wait: Duration,
    demand: Arc<AtomicUsize>,
) {
    let mut pending: Option<Job> = None;
    loop {
        let first = match pending.take() {
            Some(j) => j,
            None => match rx.recv() {
                Ok(j) => j,
                Err(_) => return,
            },
        };
        let mut items = first.input.shape.first().copied().unwrap_or(1);
        let mut jobs = vec![first];
        let deadline = Instant::now() + max_wait;
        while items < max_batch {
            let job = match rx.try_recv() {
                Ok(j) => j,
                Err(mpsc::TryRecvError::Disconnected) => break,
                Err(mpsc::TryRecvError::Empty) => {
                    // Wait for company only when more requests are in flight than gathered:
                    // a lone request must not pay the batching delay.
                    if demand.load(Ordering::Relaxed) <= jobs.len() {
                        break;
                    }
                    let now = Instant::now();
                    if now >= deadline {
                        break;
                    }
                    match rx.recv_timeout(deadline - now) {
                        Ok(j) => j,
                        Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                    }
                }
            };
            let n = job.input.shape.first().copied().unwrap_or(1);
            if items + n > max_batch || job.input.shape[1..] != jobs[0].input.shape[1..] {
                pending = Some(job);
                break;
            }
            items += n;
            jobs.push(job);
        }
        execute(backend.as_ref(), jobs);
    }
}

fn execute(backend: &dyn ModelBackend, jobs: Vec<Job>) {
    if jobs.len() == 1 {
        let job = jobs.into_iter().next().expect("one job");
        let out = backend.run(&job.input).map_err(|e| e.to_string());
        let _ = job.reply.send(out);
        return;
    }
    let sizes: Vec<usize> = jobs.iter().map(|j| j.input.shape[0]).collect();
    let total: usize = sizes.iter().sum();
    let mut shape = jobs[0].input.shape.clone();
    shape[0] = total;
    let mut data = Vec::with_capacity(total * jobs[0].input.item_len());
    for j in &jobs {
        data.extend_from_slice(&j.input.data);
    }
    let batch = TensorF32 { shape, data };
    match backend.run(&batch).and_then(|outs| split(outs, &sizes)) {
        Ok(per_job) => {
            for (job, outs) in jobs.into_iter().zip(per_job) {
                let _ = job.reply.send(Ok(outs));
            }
        }
        Err(e) => {
            let msg = e.to_string();
            for job in jobs {
                let _ = job.reply.send(Err(msg.clone()));
            }
        }
    }
}

/// Splits every output along its leading dimension into the callers' shares.
fn split(outs: Vec<TensorF32>, sizes: &[usize]) -> Result<Vec<Vec<TensorF32>>, BackendError> {
    let total: usize = sizes.iter().sum();
    let mut per_job: Vec<Vec<TensorF32>> = sizes.iter().map(|_| Vec::new()).collect();
    for out in outs {
        if out.shape.first() != Some(&total) {
            return Err(BackendError::Shape(format!(
                "output shape {:?} does not keep the batch size {total}",
                out.shape
            )));
        }
        let item = out.item_len();
        let mut offset = 0;
        for (k, &n) in sizes.iter().enumerate() {
            let mut shape = out.shape.clone();
            shape[0] = n;
            let data = out.data[offset * item..(offset + n) * item].to_vec();
            per_job[k].push(TensorF32 { shape, data });
            offset += n;
        }
    }
    Ok(per_job)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_keeps_each_callers_rows() {
        let out = TensorF32::new(vec![3, 2], vec![0., 1., 2., 3., 4., 5.]).unwrap();
        let parts = split(vec![out], &[1, 2]).unwrap();
        assert_eq!(parts[0][0].data, vec![0., 1.]);
        assert_eq!(parts[1][0].shape, vec![2, 2]);
        assert_eq!(parts[1][0].data, vec![2., 3., 4., 5.]);
    }

    #[test]
    fn split_rejects_outputs_without_batch_dimension() {
        let out = TensorF32::new(vec![2], vec![0., 1.]).unwrap();
        assert!(split(vec![out], &[1, 2]).is_err());
    }
}
