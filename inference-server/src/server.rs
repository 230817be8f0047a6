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
}

/// A running server; dropping it does not stop it (the tasks live on the runtime).
pub struct Running {
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
}

pub async fn start(opts: Options, factory: BackendFactory) -> std::io::Result<Running> {
    let state = AppState::new(opts.cache_dir, factory);
    tokio::spawn(crate::reload::watch(state.clone(), opts.config, opts.token_file, opts.poll, Duration::from_secs(10)));
    let listener = tokio::net::TcpListener::bind(opts.listen).await?;
    let addr = listener.local_addr()?;
    let app = crate::http::router(state.clone());
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    });
    tracing::info!(%addr, "listening");
    Ok(Running { addr, state })
}
