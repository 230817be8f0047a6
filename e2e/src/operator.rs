//! The operator's controllers inside a test process, watching one namespace: quicker to start
//! than the binary, and aborting the handle "kills" the operator mid-work.

use flywheel_operator::context::{Context, Settings};
use flywheel_operator::metrics::Metrics;

/// Settings for tests: the workspace's images, one namespace, local files allowed (test models
/// and datasets are files in temporary directories), models verified as in production.
pub fn test_settings(namespace: &str) -> Settings {
    Settings {
        server_image: "flywheel/inference-server".into(),
        trainer_image: "flywheel/trainer".into(),
        review_service_image: "flywheel/review-service".into(),
        default_output_uri: None,
        namespace: Some(namespace.to_string()),
        allow_local_files: true,
        verify_models: true,
    }
}

/// Runs every controller with `settings` until the handle is aborted. The operator's warnings
/// (failed reconciles, watch errors) go to the test's captured output, so a failing test shows
/// why the operator did not act; `FLYWHEEL_E2E_LOG` (an `EnvFilter`) shows more.
pub fn start_operator(client: kube::Client, settings: Settings) -> tokio::task::JoinHandle<()> {
    init_logging();
    tokio::spawn(flywheel_operator::controllers::run(
        Context::new(client, Metrics::default(), settings),
        std::future::pending(),
    ))
}

/// Installs a subscriber writing through the test harness's capture, once per test binary.
fn init_logging() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_env("FLYWHEEL_E2E_LOG")
            .unwrap_or_else(|_| "flywheel_operator=warn".into());
        // Another subscriber set by the test itself wins.
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
    });
}
