//! Property test: malformed images, JSON, headers and paths on every endpoint never crash the
//! server and always get a clear 4xx with a JSON `{"error": "..."}` body.

mod common;

use std::sync::OnceLock;

use common::*;
use flywheel_inference_server::serving::*;
use proptest::prelude::*;

const TOKEN: &str = "fuzz-token";

struct Fixture {
    rt: tokio::runtime::Runtime,
    server: TestServer,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let server = rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("token"), TOKEN).unwrap();
            let mut cfg = config(detector("squares", "d1"));
            cfg.prediction_log = Some(PredictionLogConfig {
                uri: format!("file://{}/log", dir.path().display()),
                sample_rate: 1.0,
                retention_days: 1,
                flush_records: 4,
                flush_interval_ms: 10,
            });
            cfg.feedback_dataset = Some(FeedbackDatasetConfig {
                uri: format!("file://{}/fb", dir.path().display()),
                format: None,
                labels: vec![],
            });
            cfg.auth.token_file = Some(dir.path().join("token").display().to_string());
            TestServer::start_in(dir, &cfg).await
        });
        Fixture { rt, server }
    })
}

/// Sends a request and checks the answer is a 4xx with a JSON error message.
fn expect_client_error(req: reqwest::RequestBuilder) {
    let f = fixture();
    f.rt.block_on(async {
        let r = req.send().await.expect("server answers");
        let status = r.status();
        let body = r.bytes().await.unwrap();
        assert!(
            status.is_client_error(),
            "status {status} for a malformed request: {}",
            String::from_utf8_lossy(&body)
        );
        let v: serde_json::Value = serde_json::from_slice(&body)
            .unwrap_or_else(|_| panic!("non-JSON error body: {}", String::from_utf8_lossy(&body)));
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "no error message: {v}");
    });
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(serde_json::Value::from),
        "[a-z_]{0,12}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("inputs".to_string()),
                    Just("name".to_string()),
                    Just("shape".to_string()),
                    Just("datatype".to_string()),
                    Just("data".to_string()),
                    Just("parameters".to_string()),
                    Just("binary_data_size".to_string()),
                    Just("outputs".to_string()),
                    Just("images".to_string()),
                    Just("decision".to_string()),
                    Just("shapes".to_string()),
                    "[a-z]{1,6}"
                ],
                inner,
                0..5
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A valid inference request with one field replaced by something invalid.
fn broken_infer() -> impl Strategy<Value = serde_json::Value> {
    let shape = prop_oneof![
        Just(serde_json::json!([1, 3, 64, 63])),
        Just(serde_json::json!([0, 3, 64, 64])),
        Just(serde_json::json!([-1, 3, 64, 64])),
        Just(serde_json::json!([1, 3, 64])),
        Just(serde_json::json!([100000000000i64, 3, 64, 64])),
        Just(serde_json::json!([2, 3, 64, 64])),
    ];
    let datatype = prop_oneof![Just("FP32"), Just("BYTES"), Just("FP8"), Just("")];
    let name = prop_oneof![Just("images"), Just("other")];
    (shape, datatype, name, 0usize..20).prop_map(|(shape, dt, name, n)| {
        serde_json::json!({"inputs": [{"name": name, "shape": shape, "datatype": dt, "data": vec![0.5; n]}]})
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn predict_rejects_non_images(body in prop::collection::vec(any::<u8>(), 1..2048), png_prefix in any::<bool>()) {
        let f = fixture();
        let mut bytes = if png_prefix { b"\x89PNG\r\n\x1a\n".to_vec() } else { vec![] };
        bytes.extend(body);
        expect_client_error(f.server.client.post(f.server.url("/v1/predict")).body(bytes));
    }

    #[test]
    fn predict_rejects_truncated_and_corrupted_images(cut in 1usize..400, flip in 0usize..400, jpeg_not_png in any::<bool>()) {
        let f = fixture();
        let mut img = if jpeg_not_png { jpeg(40, 30, [10, 200, 10]) } else { png(40, 30, [10, 200, 10], None) };
        let cut = cut.min(img.len() - 1);
        img.truncate(img.len() - cut);
        // Keep the signature so the format is recognised and the decoder must reject the rest.
        if flip > 8 && flip < img.len() { img[flip] ^= 0xff; }
        let f2 = fixture();
        let r = f.rt.block_on(f2.server.client.post(f2.server.url("/v1/predict")).body(img).send()).unwrap();
        // A corrupted body may still decode (JPEG is tolerant); it must never be a 5xx.
        prop_assert!(r.status() == 200 || r.status().is_client_error(), "status {}", r.status());
    }

    #[test]
    fn predict_json_batches_are_validated(v in json_value()) {
        let f = fixture();
        expect_client_error(f.server.client.post(f.server.url("/v1/predict")).header("content-type", "application/json").body(v.to_string()));
    }

    #[test]
    fn infer_rejects_arbitrary_json(v in json_value(), header_len in proptest::option::of(0usize..64)) {
        let f = fixture();
        let mut req = f.server.client.post(f.server.url("/v2/models/squares/infer")).body(v.to_string());
        if let Some(n) = header_len { req = req.header("Inference-Header-Content-Length", n.to_string()); }
        expect_client_error(req);
    }

    #[test]
    fn infer_rejects_broken_requests(v in broken_infer(), binary_tail in prop::collection::vec(any::<u8>(), 0..16)) {
        let f = fixture();
        let text = v.to_string();
        let mut body = text.clone().into_bytes();
        body.extend(binary_tail.iter());
        let req = f.server.client.post(f.server.url("/v2/models/squares/infer"));
        let req = if binary_tail.is_empty() { req.body(body) } else { req.header("Inference-Header-Content-Length", text.len().to_string()).body(body) };
        expect_client_error(req);
    }

    #[test]
    fn infer_rejects_garbage_headers(len in "[a-zA-Z :;=?@_~-]{1,8}|[0-9]{12,20}|-[0-9]{1,4}") {
        let f = fixture();
        expect_client_error(f.server.client.post(f.server.url("/v2/models/squares/infer")).header("Inference-Header-Content-Length", len).body("{}"));
    }

    #[test]
    fn unknown_paths_and_models_are_404(seg in "[a-zA-Z0-9._~-]{1,20}") {
        let f = fixture();
        expect_client_error(f.server.client.get(f.server.url(&format!("/v2/models/x{seg}"))));
        expect_client_error(f.server.client.post(f.server.url(&format!("/v2/models/x{seg}/infer"))).body("{}"));
        expect_client_error(f.server.client.get(f.server.url(&format!("/v2/models/squares/versions/x{seg}/ready"))));
        expect_client_error(f.server.client.get(f.server.url(&format!("/nope/{seg}"))));
    }

    #[test]
    fn review_rejects_bad_queries_and_bodies(q in "[a-zA-Z]{1,10}=[^&#]{0,10}", v in json_value(), id in "[a-zA-Z0-9-]{1,36}") {
        let f = fixture();
        let s = &f.server;
        // Without a token: 401, whatever the request.
        expect_client_error(s.client.get(s.url(&format!("/v1/review/items?{q}"))));
        expect_client_error(s.client.post(s.url(&format!("/v1/review/items/{id}"))).json(&v));
        // With a token: unknown query keys, bodies and ids are 4xx.
        expect_client_error(s.client.get(s.url(&format!("/v1/review/items?zz{q}"))).bearer_auth(TOKEN));
        expect_client_error(s.client.post(s.url(&format!("/v1/review/items/{id}"))).bearer_auth(TOKEN).json(&v));
        expect_client_error(s.client.get(s.url(&format!("/v1/review/items/{id}/image"))).bearer_auth(TOKEN));
    }
}

#[test]
fn server_survives_the_fuzzing() {
    // Runs in the same binary; whichever order tests run in, the server answers correctly.
    let f = fixture();
    let r =
        f.rt.block_on(
            f.server
                .client
                .post(f.server.url("/v1/predict"))
                .body(png(64, 64, [0, 0, 0], Some((8, 8, 8, [255, 0, 0]))))
                .send(),
        )
        .unwrap();
    assert_eq!(r.status(), 200);
    // Bodies over the limit: 413 with a JSON reason.
    let big = vec![0u8; flywheel_inference_server::http::MAX_BODY + 1];
    expect_client_error(f.server.client.post(f.server.url("/v1/predict")).body(big.clone()));
    let r = f.rt.block_on(f.server.client.post(f.server.url("/v2/models/squares/infer")).body(big).send()).unwrap();
    assert_eq!(r.status(), 413);
}

#[test]
fn an_overflowing_shape_is_a_client_error() {
    // (2^52 + 1) x 3 x 64 x 64 wraps to 12,288 values in 64 bits; the model input is 3 x 64 x 64.
    let f = fixture();
    let body = serde_json::json!({"inputs": [{"name": "images", "datatype": "FP32",
        "shape": [(1u64 << 52) + 1, 3, 64, 64], "data": vec![0.0f32; 12_288]}]});
    expect_client_error(f.server.client.post(f.server.url("/v2/models/squares/infer")).json(&body));
    let r = f.rt.block_on(f.server.client.get(f.server.url("/v2/health/live")).send()).unwrap();
    assert_eq!(r.status(), 200, "the server still answers");
}
