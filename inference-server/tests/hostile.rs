//! Hostile traffic against the real server binary: 10,000 malformed requests across every
//! endpoint and body kind (random bytes, corrupted and truncated images, decode bombs, broken
//! and overflowing tensors, bad reviews, bad paths, methods and headers), sent by four clients at
//! once while a kubelet-like prober checks liveness on fresh connections. The server must never
//! crash or answer 5xx to a client's mistake, every error must be `{"error": ...}`, liveness must
//! answer within 100 ms throughout, and the peak RSS must stay within the documented budget
//! (docs/server.md).

mod common;

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use common::*;
use serde_json::{Value, json};

const TOKEN: &str = "hostile-token";
const REQUESTS: usize = 10_000;
const CLIENTS: usize = 4;
/// Liveness answers within this, as a kubelet probe with a short timeout needs.
const LIVENESS: Duration = Duration::from_millis(100);
/// Peak resident memory of the server (docs/server.md): the decode budget admits 192 Mi
/// pixels in flight, about 600 MiB decoded, plus the models and buffers.
const RSS_BUDGET_MIB: u64 = 1024;

/// SplitMix64: a deterministic stream, so a failure replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// Up to `max` random bytes.
    fn bytes(&mut self, max: u64) -> Vec<u8> {
        let n = self.below(max + 1);
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Images the generator mutates, made once.
struct Corpus {
    png: Vec<u8>,
    jpeg: Vec<u8>,
    /// A few hundred KB that decode to 8192 x 8192 (64 Mi pixels, the most one request may hold).
    bomb: Vec<u8>,
    /// A valid PNG header that declares 100,000 x 100,000 pixels.
    declared_huge: Vec<u8>,
}

fn corpus() -> Corpus {
    let png = png(64, 64, [0, 0, 0], Some((8, 8, 16, [255, 0, 0])));
    let mut declared_huge = png.clone();
    // IHDR width and height follow the 8-byte signature, the chunk length and "IHDR".
    declared_huge[16..20].copy_from_slice(&100_000u32.to_be_bytes());
    declared_huge[20..24].copy_from_slice(&100_000u32.to_be_bytes());
    let crc = crc32(&declared_huge[12..29]);
    declared_huge[29..33].copy_from_slice(&crc.to_be_bytes());
    Corpus { png, jpeg: jpeg(40, 30, [10, 200, 10]), bomb: common::png(8192, 8192, [0, 0, 0], None), declared_huge }
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// One malformed request: method, path, headers, body.
struct Req {
    method: &'static str,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

fn req(method: &'static str, path: impl Into<String>, body: impl Into<Vec<u8>>) -> Req {
    Req { method, path: path.into(), headers: vec![], body: body.into() }
}

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

fn mutated(rng: &mut Rng, image: &[u8]) -> Vec<u8> {
    let mut img = image.to_vec();
    let cut = rng.below(img.len() as u64 / 2) as usize;
    img.truncate(img.len() - cut);
    for _ in 0..rng.below(4) {
        let at = 8 + rng.below(img.len() as u64 - 8) as usize;
        img[at] ^= rng.next() as u8 | 1;
    }
    img
}

fn shape(rng: &mut Rng) -> Value {
    match rng.below(8) {
        0 => json!([(1u64 << 52) + 1, 3, 64, 64]),
        1 => json!([u64::MAX, u64::MAX]),
        2 => json!([0, 3, 64, 64]),
        3 => json!([-1, 3, 64, 64]),
        4 => json!([1, 3, 64]),
        5 => json!([100_000, 3, 64, 64]),
        6 => json!([1, 3, 64, 63]),
        _ => json!("1x3x64x64"),
    }
}

/// The request number `n` of the campaign.
fn request(rng: &mut Rng, c: &Corpus, n: usize) -> Req {
    let model = ["squares", "nope", "%FF", "squares/versions/x"][rng.below(4) as usize];
    match n % 16 {
        0 => req("POST", "/v1/predict", rng.bytes(4096)),
        1 => {
            let image = if rng.below(2) == 0 { &c.png } else { &c.jpeg };
            req("POST", "/v1/predict", mutated(rng, image))
        }
        2 => {
            let images = match rng.below(5) {
                0 => json!([b64(&c.bomb), b64(&c.bomb)]),
                1 => json!([b64(&c.declared_huge)]),
                2 => json!(["not base64!", 7, null]),
                3 => json!([b64(&mutated(rng, &c.png))]),
                _ => json!([]),
            };
            let mut r = req("POST", "/v1/predict", json!({"images": images}).to_string());
            r.headers.push(("content-type", "application/json".into()));
            r
        }
        // Now and then a real bomb alone: it may decode (200), or wait for the decode budget (429).
        3 if n % 320 == 3 => req("POST", "/v1/predict", c.bomb.clone()),
        3 => req("POST", "/v1/predict", c.declared_huge.clone()),
        4 | 5 => {
            let datatype = ["FP32", "BYTES", "FP8", "INT64", ""][rng.below(5) as usize];
            let data = vec![0.5f32; rng.below(64) as usize];
            let body = json!({"inputs": [{"name": "images", "shape": shape(rng), "datatype": datatype, "data": data}]});
            req("POST", format!("/v2/models/{model}/infer"), body.to_string())
        }
        6 => {
            // Binary tensor extension with a header length that lies.
            let text = json!({"inputs": [{"name": "images", "shape": shape(rng), "datatype": "FP32",
                "parameters": {"binary_data_size": rng.below(1 << 20)}}]})
            .to_string();
            let mut body = text.clone().into_bytes();
            body.extend(rng.bytes(256));
            let len = match rng.below(4) {
                0 => (text.len() + 1000).to_string(),
                1 => "-3".into(),
                2 => "18446744073709551616".into(),
                _ => rng.below(text.len() as u64).to_string(),
            };
            let mut r = req("POST", format!("/v2/models/{model}/infer"), body);
            r.headers.push(("inference-header-content-length", len));
            r
        }
        7 => req("POST", format!("/v2/models/{model}/infer"), rng.bytes(512)),
        8 => {
            let id = format!("{:x}", rng.next());
            let body = match rng.below(4) {
                0 => json!({"decision": "maybe"}),
                1 => json!({"decision": "correct", "shapes": vec![json!({"label": "red", "classId": 0,
                    "confidence": 1.0, "box": [0, 0, 1, 1]}); 1001]}),
                2 => json!({"decision": "accept", "extra": true}),
                _ => json!([1, 2, 3]),
            };
            let mut r = req("POST", format!("/v1/review/items/{id}"), body.to_string());
            r.headers.push(("content-type", "application/json".into()));
            if rng.below(2) == 0 {
                r.headers.push(("authorization", format!("Bearer {TOKEN}")));
            }
            r
        }
        9 => {
            let q = ["status=bogus", "limit=0", "limit=100000", "zz=1", "maxConfidence=abc", "offset=-1"];
            let mut r = req("GET", format!("/v1/review/items?{}", q[rng.below(6) as usize]), vec![]);
            r.headers.push(("authorization", format!("Bearer {TOKEN}")));
            r
        }
        10 => req("GET", format!("/v1/review/items/{:x}/image", rng.next()), vec![]),
        11 => req("GET", "/v1/review/items", vec![]),
        12 => {
            let paths = ["/v2/health/live", "/metrics", "/v1/predict", "/status", "/v2/models/squares/infer"];
            let method = ["PUT", "DELETE", "PATCH"][rng.below(3) as usize];
            req(method, paths[rng.below(5) as usize], vec![])
        }
        13 => req("GET", format!("/v2/models/{model}/versions/{:x}/ready", rng.next()), vec![]),
        14 => req(
            "GET",
            format!("/{}", ["nope", "v3", "v2/models", "%FF%FE", "v1/predict/x"][rng.below(5) as usize]),
            vec![],
        ),
        _ => {
            let mut r = req("POST", "/v1/predict", json!({"images": "x"}).to_string());
            r.headers
                .push(("content-type", ["application/json", "image/png", "text/plain"][rng.below(3) as usize].into()));
            r
        }
    }
}

/// One liveness probe on a new connection, as the kubelet makes it.
fn probe(addr: &str) -> Duration {
    let t0 = Instant::now();
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /v2/health/live HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("liveness answer");
    assert!(answer.starts_with("HTTP/1.1 200"), "liveness: {answer}");
    t0.elapsed()
}

fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    kib / 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_malformed_requests_never_crash_stall_or_bloat_the_server() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), TOKEN).unwrap();
    let mut cfg = config(detector("squares", "d1"));
    cfg.prediction_log = Some(test_log(dir.path()));
    cfg.auth.token_file = Some(dir.path().join("token").display().to_string());
    let config_path = dir.path().join("serving.yaml");
    write_config(&config_path, &cfg);
    let (mut child, addr) = spawn_server_binary(&config_path, dir.path(), &[]);
    let base = format!("http://{addr}");
    let client = reqwest::Client::new();
    wait_until("the model is loaded", || async {
        client.get(format!("{base}/v2/health/ready")).send().await.is_ok_and(|r| r.status() == 200)
    })
    .await;
    let baseline = peak_rss_mib(child.id());

    // The prober: its own thread and connections, every 20 ms until the campaign ends.
    let done = Arc::new(AtomicBool::new(false));
    let prober = {
        let (done, addr) = (done.clone(), addr.clone());
        std::thread::spawn(move || {
            let mut times = Vec::new();
            while !done.load(Ordering::Relaxed) {
                times.push(probe(&addr));
                std::thread::sleep(Duration::from_millis(20));
            }
            times
        })
    };

    let corpus = Arc::new(corpus());
    let started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|k| {
            let (client, base, corpus) = (client.clone(), base.clone(), corpus.clone());
            tokio::spawn(async move {
                let mut rng = Rng(0xf1e5_0000 + k as u64);
                let mut codes = std::collections::BTreeMap::<u16, usize>::new();
                let mut time_by_kind = [Duration::ZERO; 16];
                for n in (k..REQUESTS).step_by(CLIENTS) {
                    let r = request(&mut rng, &corpus, n);
                    let mut b = client.request(r.method.parse().unwrap(), format!("{base}{}", r.path)).body(r.body);
                    for (name, value) in &r.headers {
                        b = b.header(*name, value);
                    }
                    let t0 = Instant::now();
                    let resp = b.send().await.unwrap_or_else(|e| panic!("request {n} ({}): no answer: {e}", r.path));
                    let code = resp.status().as_u16();
                    let body = resp.bytes().await.unwrap();
                    assert!(
                        code < 500,
                        "request {n} ({} {}): {code} {}",
                        r.method,
                        r.path,
                        String::from_utf8_lossy(&body)
                    );
                    if code >= 400 {
                        let v: Value = serde_json::from_slice(&body).unwrap_or_else(|_| {
                            panic!(
                                "request {n} ({}): {code} without a JSON body: {}",
                                r.path,
                                String::from_utf8_lossy(&body)
                            )
                        });
                        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "request {n}: {v}");
                    }
                    *codes.entry(code).or_default() += 1;
                    time_by_kind[n % 16] += t0.elapsed();
                }
                (codes, time_by_kind)
            })
        })
        .collect();
    let mut codes = std::collections::BTreeMap::<u16, usize>::new();
    let mut time_by_kind = [Duration::ZERO; 16];
    for c in clients {
        let (c, t) = c.await.unwrap();
        for (code, n) in c {
            *codes.entry(code).or_default() += n;
        }
        for (all, t) in time_by_kind.iter_mut().zip(t) {
            *all += t;
        }
    }
    eprintln!("time by request kind: {:?}", time_by_kind.map(|t| t.as_millis()));
    let elapsed = started.elapsed();
    done.store(true, Ordering::Relaxed);
    let mut probes = prober.join().unwrap();
    probes.sort();
    let peak = peak_rss_mib(child.id());
    assert!(child.try_wait().unwrap().is_none(), "the server is still running");
    child.kill().unwrap();
    child.wait().unwrap();

    let sent: usize = codes.values().sum();
    let client_errors: usize = codes.iter().filter(|(c, _)| (400..500).contains(*c)).map(|(_, n)| n).sum();
    eprintln!(
        "{sent} requests in {elapsed:.1?} ({codes:?}); {} liveness probes, median {:?}, slowest {:?}; \
         peak RSS {peak} MiB (after start {baseline} MiB)",
        probes.len(),
        probes[probes.len() / 2],
        probes.last().unwrap()
    );
    assert_eq!(sent, REQUESTS);
    // Nearly all are refused; a corrupted JPEG or a bomb of exactly the limit may still decode.
    assert!(client_errors * 10 >= sent * 9, "{codes:?}");
    assert!(probes.len() >= 10, "{} probes", probes.len());
    assert!(*probes.last().unwrap() < LIVENESS, "liveness took {:?}", probes.last().unwrap());
    assert!(peak < RSS_BUDGET_MIB, "peak RSS {peak} MiB over the {RSS_BUDGET_MIB} MiB budget");
}
