//! Helpers shared by the e2e test binaries.
#![allow(dead_code)] // each test binary uses some of these

use k8s_openapi::api::core::v1::Pod;

/// GET http://ip:port/path, body as text (plain TCP: no extra client dependency needed).
pub async fn http_get(ip: &str, port: u16, path: &str) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect((ip, port)).await.map_err(|e| format!("connect {ip}:{port}: {e}"))?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {ip}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").ok_or("malformed response")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("{path}: {}", head.lines().next().unwrap_or_default()));
    }
    Ok(body.to_string())
}

pub fn pod_ip(pod: &Pod) -> String {
    pod.status.as_ref().and_then(|s| s.pod_ip.clone()).unwrap_or_default()
}
