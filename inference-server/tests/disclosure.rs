//! Credentials in a model URI (`user:password@`, a presigned query string) never appear in
//! `/status`, which answers without a token and is often scraped; and plain http:// model URIs
//! load (object_store refuses http unless asked).

mod common;

use common::*;
use serde_json::Value;

/// Serves `bytes` at every path of a loopback HTTP server, whatever the query.
async fn http_store(bytes: Vec<u8>) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(move || {
        let bytes = bytes.clone();
        async move { bytes }
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

async fn status(s: &TestServer) -> String {
    s.client.get(s.url("/status")).send().await.unwrap().text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_uris_are_shown_without_their_credentials() {
    let mut model = classifier("colour", "colour_classifier.onnx", "v1");
    let bytes = std::fs::read(models_dir().join("colour_classifier.onnx")).unwrap();
    let addr = http_store(bytes).await;
    model.uri = format!("http://alice:s3cret@{addr}/models/colour.onnx?X-Amz-Signature=topsecret");
    let s = TestServer::start(&config(model.clone())).await;
    let st = status(&s).await;
    let shown: Value = serde_json::from_str(&st).unwrap();
    assert_eq!(shown["champion"]["uri"], format!("http://***@{addr}/models/colour.onnx?***"));
    assert!(!st.contains("s3cret") && !st.contains("topsecret"), "{st}");

    // A model that fails verification: the error names the redacted URI only.
    let mut broken = model;
    broken.version = "v2".into();
    broken.sha256 = "0".repeat(64);
    broken.uri = format!("http://bob:hunter2@{addr}/m.onnx?X-Amz-Signature=alsosecret");
    write_config(&s.config_path, &config(broken));
    wait_until("the load failure is reported", || async {
        let st: Value = serde_json::from_str(&status(&s).await).unwrap();
        st["reload"]["errors"].as_array().is_some_and(|e| !e.is_empty())
    })
    .await;
    let st = status(&s).await;
    assert!(st.contains(&format!("http://***@{addr}/m.onnx?***")), "{st}");
    assert!(!st.contains("hunter2") && !st.contains("alsosecret"), "{st}");
}
