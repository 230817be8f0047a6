//! The loop converges across an API server restart: reviews reach the trigger, the API server
//! goes away and comes back while the operator is acting on them, and the run still happens
//! exactly once and its model is placed. Runs on a cluster of its own (the shared one must not
//! lose its API server under other tests).

use flywheel_demo::flywheel_loop::CHAMPION;
use flywheel_demo::{FlywheelLoop, Platform, quickstart};
use flywheel_e2e::{TestCluster, TestNamespace, start_cluster};

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loop_converges_across_an_api_server_restart() {
    let mut cluster = start_cluster("restart").await;
    let handle = TestCluster::from_cluster(&cluster);
    let ns = TestNamespace::new(&handle, "restart").await.unwrap();
    let platform = Platform::new(handle.clone(), &ns.name, common::bin_dir()).await.unwrap();
    platform.install_operator().await.unwrap();
    let samples = common::assets(&platform, 30);
    let mut fw = FlywheelLoop::new(platform, samples);
    quickstart::apply(&fw.platform, |file, yaml| {
        if file != "05-data-pipeline.yaml" {
            return yaml;
        }
        yaml.replace("reviewedSamples: 20", "reviewedSamples: 5")
    })
    .await
    .unwrap();
    fw.wait_serving(CHAMPION).await.unwrap();
    fw.send_traffic(10).await.unwrap();
    assert_eq!(fw.review(5, 60, |_| true).await.unwrap().len(), 5);

    // The trigger is reached: restart the API server while the operator counts and launches.
    let down = cluster.restart_apiserver().await.unwrap();
    eprintln!("API server down for {:.1}s", down.as_secs_f64());

    let p = fw.wait_run_finished(1).await.unwrap();
    let run = p.status.unwrap().run_history.into_iter().find(|r| r.number == 1).unwrap();
    assert_eq!((run.outcome.as_str(), run.model_version.as_deref()), ("Succeeded", Some("shapes-r1")), "{run:?}");
    fw.wait_model_ready("shapes-r1", 120).await.unwrap();

    // A second restart after the run: placement still converges.
    cluster.restart_apiserver().await.unwrap();
    fw.wait_shadow("shapes-r1").await.unwrap();
    assert_eq!(fw.training_jobs().await.unwrap().len(), 1, "one trigger, one Job");
    drop(fw);
    drop(ns);
    cluster.stop().await;
}
