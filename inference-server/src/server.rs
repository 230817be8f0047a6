//! Starting the server: state, config watcher, HTTP listener.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::models::BackendFactory;
use crate::state::AppState;

pub struct Options {
    pub config: PathBuf,
    pub listen: SocketAddr,
    pub cache_dir: PathBuf,
    pub poll: Duration,
    /// Overrides the config's `auth.tokenFile`: a path set by the pod (mounted Secret), so the
    /// ConfigMap need not know where the kubelet put the Secret.
    pub token_file: Option<PathBuf>,
    /// How often a config whose apply failed (in part) is applied again.
    pub retry: Duration,
}

/// A running server; dropping it does not stop it (the tasks live on the runtime).
pub struct Running {
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
    stop: tokio::sync::oneshot::Sender<()>,
    http: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Shuts down as Kubernetes expects within its grace period: stop accepting connections,
    /// let the requests in flight finish, let the shadow finish its queue (it completes their
    /// log records) and write every record queued for the log. Returns whether all of it
    /// finished within `grace`.
    pub async fn shutdown(self, grace: Duration) -> bool {
        let _ = self.stop.send(());
        let state = self.state;
        let http = self.http;
        let drained = tokio::time::timeout(grace, async move {
            let _ = http.await;
            let Some(serving) = state.serving.load_full() else { return };
            if let Some(queue) = &serving.shadow_tx {
                while queue.pending() > 0 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            if let Some(log) = &serving.log {
                log.flush().await;
            }
        })
        .await;
        drained.is_ok()
    }
}

pub async fn start(opts: Options, factory: BackendFactory) -> std::io::Result<Running> {
    let state = AppState::new(opts.cache_dir, factory);
    tokio::spawn(crate::reload::watch(state.clone(), opts.config, opts.token_file, opts.poll, opts.retry));
    let listener = tokio::net::TcpListener::bind(opts.listen).await?;
    let addr = listener.local_addr()?;
    let app = crate::http::router(state.clone());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let http = tokio::spawn(async move {
        let graceful = async move {
            let _ = stopped.await;
        };
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(graceful).await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    });
    tracing::info!(%addr, "listening");
    Ok(Running { addr, state, stop, http })
}
