//! Dynamic batching: requests queue for a model's dedicated thread, which gathers up to
//! `max_batch` items (or waits at most `max_wait` after the first), runs them as one batch and
//! hands every caller its slice of the outputs. Running the model on its own OS thread keeps
//! tokio's workers free for I/O while the CPU-bound kernel runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::backend::{BackendError, ModelBackend, TensorF32, split_rows};
use crate::error::ServerError;

/// Why a queued request got no outputs.
#[derive(Clone, Debug, thiserror::Error)]
pub enum BatchError {
    #[error("the model's queue is full")]
    Overloaded,
    #[error("the model was unloaded")]
    Stopped,
    #[error(transparent)]
    Backend(#[from] BackendError),
}

impl From<BatchError> for ServerError {
    fn from(e: BatchError) -> Self {
        match e {
            BatchError::Overloaded => ServerError::Overloaded,
            BatchError::Stopped => ServerError::NotReady(e.to_string()),
            BatchError::Backend(e) => e.into(),
        }
    }
}

struct Job {
    input: TensorF32,
    reply: oneshot::Sender<Result<Vec<TensorF32>, BatchError>>,
}

impl Job {
    /// The caller went away (its request future was dropped, e.g. the client disconnected):
    /// nobody would read the outputs, so the job is not run.
    fn abandoned(&self) -> bool {
        self.reply.is_closed()
    }
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

    /// Queues one request (itself possibly a batch) and waits for its outputs. Dropping the
    /// returned future before the batch starts takes the request out of it.
    pub async fn infer(&self, input: TensorF32) -> Result<Vec<TensorF32>, BatchError> {
        let (reply, rx) = oneshot::channel();
        self.tx.try_send(Job { input, reply }).map_err(|e| match e {
            mpsc::TrySendError::Full(_) => BatchError::Overloaded,
            mpsc::TrySendError::Disconnected(_) => BatchError::Stopped,
        })?;
        rx.await.map_err(|_| BatchError::Stopped)?
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
        if first.abandoned() {
            continue;
        }
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
            if job.abandoned() {
                continue;
            }
            let n = job.input.shape.first().copied().unwrap_or(1);
            if items + n > max_batch || job.input.shape[1..] != jobs[0].input.shape[1..] {
                pending = Some(job);
                break;
            }
            items += n;
            jobs.push(job);
        }
        // Callers may have gone while the batch was gathered.
        jobs.retain(|j| !j.abandoned());
        if !jobs.is_empty() {
            execute(backend.as_ref(), jobs);
        }
    }
}

fn execute(backend: &dyn ModelBackend, jobs: Vec<Job>) {
    if jobs.len() == 1 {
        let job = jobs.into_iter().next().expect("one job");
        let _ = job.reply.send(backend.run(&job.input).map_err(BatchError::from));
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
    match backend.run(&batch).and_then(|outs| split_rows(&outs, &sizes)) {
        Ok(per_job) => {
            for (job, outs) in jobs.into_iter().zip(per_job) {
                let _ = job.reply.send(Ok(outs));
            }
        }
        Err(e) => {
            for job in jobs {
                let _ = job.reply.send(Err(e.clone().into()));
            }
        }
    }
}

#[cfg(test)]
mod tests;
