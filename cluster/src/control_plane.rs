//! etcd + kube-apiserver + kube-controller-manager on loopback, each on free ports.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::process::Command;

use crate::certs::ClusterPki;
use crate::error::ClusterError;
use crate::kubeconfig;
use crate::paths::ControlPlaneBinaries;
use crate::process::{ManagedChild, log_tail};

/// The service range; its first address backs the `kubernetes` Service. Nothing routes to it
/// (there is no kube-proxy): Pods reach the API server through their kubeconfig.
// A /20 holds 4,093 Services: room for the operator benchmark's 1,000 Deployments.
pub const SERVICE_CIDR: &str = "10.96.0.0/20";
pub const SERVICE_IP: &str = "10.96.0.1";
const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// The running control plane. Dropping it kills the processes.
pub struct ControlPlane {
    pub server: String,
    pub admin_kubeconfig: PathBuf,
    pub admin_token: String,
    pub ca_pem: String,
    // Field order = drop order: controller-manager, API server, then etcd.
    pub controller_manager: ManagedChild,
    pub apiserver: ManagedChild,
    pub etcd: ManagedChild,
    pub log_dir: PathBuf,
}

fn free_port() -> Result<u16, ClusterError> {
    let l =
        std::net::TcpListener::bind(("127.0.0.1", 0)).map_err(ClusterError::io("127.0.0.1:0"))?;
    Ok(l.local_addr()
        .map_err(ClusterError::io("127.0.0.1:0"))?
        .port())
}

pub fn random_token() -> String {
    let mut buf = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut buf);
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

fn write(path: &Path, text: &str) -> Result<(), ClusterError> {
    kubeconfig::write_atomic(path, text)
}

impl ControlPlane {
    /// Starts the three processes in `dir` (etcd data goes to `etcd_dir`, ideally on tmpfs) and
    /// waits until the API server answers /readyz.
    pub async fn start(
        bins: &ControlPlaneBinaries,
        dir: &Path,
        etcd_dir: &Path,
        cluster_id: &str,
        timeout: Duration,
    ) -> Result<Self, ClusterError> {
        let pki_dir = dir.join("pki");
        let log_dir = dir.join("logs");
        for d in [&pki_dir, &log_dir, etcd_dir] {
            std::fs::create_dir_all(d).map_err(ClusterError::io(d))?;
        }
        let pki = ClusterPki::generate(SERVICE_IP)?;
        let ca = pki_dir.join("ca.crt");
        let cert = pki_dir.join("apiserver.crt");
        let key = pki_dir.join("apiserver.key");
        let sa_key = pki_dir.join("service-account.key");
        write(&ca, &pki.ca_cert_pem)?;
        write(&cert, &pki.serving_cert_pem)?;
        write(&key, &pki.serving_key_pem)?;
        write(&sa_key, &pki.service_account_key_pem)?;
        let sa_pub = pki_dir.join("service-account.pub");
        write(&sa_pub, &pki.service_account_pub_pem)?;
        let admin_token = random_token();
        let tokens = pki_dir.join("tokens.csv");
        write(
            &tokens,
            &format!("{admin_token},admin,admin,\"system:masters\"\n"),
        )?;

        let (etcd_client, etcd_peer, api_port) = (free_port()?, free_port()?, free_port()?);
        let etcd_url = format!("http://127.0.0.1:{etcd_client}");
        let peer_url = format!("http://127.0.0.1:{etcd_peer}");
        let mut etcd_cmd = Command::new(&bins.etcd);
        etcd_cmd
            .arg("--name=default")
            .arg(format!("--data-dir={}", etcd_dir.display()))
            .arg(format!("--listen-client-urls={etcd_url}"))
            .arg(format!("--advertise-client-urls={etcd_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=default={peer_url}"))
            .arg("--log-level=warn");
        let mut etcd =
            ManagedChild::spawn("etcd", etcd_cmd, cluster_id, &log_dir.join("etcd.log"))?;

        let server = format!("https://127.0.0.1:{api_port}");
        let mut api_cmd = Command::new(&bins.kube_apiserver);
        api_cmd
            .arg(format!("--etcd-servers={etcd_url}"))
            .arg("--bind-address=127.0.0.1")
            .arg("--advertise-address=127.0.0.1")
            .arg(format!("--secure-port={api_port}"))
            .arg(format!("--tls-cert-file={}", cert.display()))
            .arg(format!("--tls-private-key-file={}", key.display()))
            .arg(format!("--client-ca-file={}", ca.display()))
            .arg(format!("--token-auth-file={}", tokens.display()))
            .arg("--authorization-mode=RBAC")
            .arg(format!("--service-account-key-file={}", sa_pub.display()))
            .arg(format!(
                "--service-account-signing-key-file={}",
                sa_key.display()
            ))
            .arg(format!("--service-account-issuer={ISSUER}"))
            .arg(format!("--api-audiences={ISSUER}"))
            .arg(format!("--service-cluster-ip-range={SERVICE_CIDR}"))
            .arg("--allow-privileged=true")
            .arg("--profiling=false")
            .arg(format!("--cert-dir={}", pki_dir.display()))
            .arg("--v=0");
        let mut apiserver = ManagedChild::spawn(
            "kube-apiserver",
            api_cmd,
            cluster_id,
            &log_dir.join("kube-apiserver.log"),
        )?;

        let admin_kubeconfig = dir.join("admin.kubeconfig");
        write(
            &admin_kubeconfig,
            &kubeconfig::render(&server, &pki.ca_cert_pem, "admin", &admin_token, None),
        )?;

        let mut cp_cmd = Command::new(&bins.kube_controller_manager);
        cp_cmd
            .arg(format!("--kubeconfig={}", admin_kubeconfig.display()))
            .arg("--leader-elect=false")
            // No node IPAM, no node lifecycle (the process kubelet does not heartbeat), no TTL.
            .arg("--controllers=*,-nodeipam,-nodelifecycle,-ttl")
            .arg(format!(
                "--service-account-private-key-file={}",
                sa_key.display()
            ))
            .arg(format!("--root-ca-file={}", ca.display()))
            .arg("--bind-address=127.0.0.1")
            .arg("--secure-port=0")
            .arg("--port=0")
            .arg("--v=0");

        let started = Instant::now();
        let client = kubeconfig::client_from_file(&admin_kubeconfig).await?;
        loop {
            for (child, log) in [
                (&mut etcd, "etcd.log"),
                (&mut apiserver, "kube-apiserver.log"),
            ] {
                if let Some(status) = child.try_wait() {
                    return Err(ClusterError::EarlyExit {
                        what: child.name.clone(),
                        status: status.to_string(),
                        log_tail: log_tail(&log_dir.join(log), 30),
                    });
                }
            }
            let req = http::Request::get("/readyz")
                .body(Vec::new())
                .expect("static request");
            if let Ok(body) = client.request_text(req).await
                && body.trim() == "ok"
            {
                break;
            }
            if started.elapsed() > timeout {
                return Err(ClusterError::Timeout {
                    what: "kube-apiserver /readyz".into(),
                    secs: timeout.as_secs(),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let controller_manager = ManagedChild::spawn(
            "kube-controller-manager",
            cp_cmd,
            cluster_id,
            &log_dir.join("kube-controller-manager.log"),
        )?;
        Ok(Self {
            server,
            admin_kubeconfig,
            admin_token,
            ca_pem: pki.ca_cert_pem,
            controller_manager,
            apiserver,
            etcd,
            log_dir,
        })
    }

    /// Stops controller-manager, API server and etcd in that order, each with a short grace period.
    pub async fn stop(&mut self) {
        for child in [
            &mut self.controller_manager,
            &mut self.apiserver,
            &mut self.etcd,
        ] {
            child.terminate(Duration::from_secs(5)).await;
        }
    }
}
