//! etcd + kube-apiserver + kube-controller-manager on loopback, each on free ports.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kube::Client;
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
/// SIGTERM-to-SIGKILL time when restarting the API server. Short requests finish well within
/// it; open watches do not end by themselves (a 1.20 API server waits up to 60 s for them), so
/// with any watching client the grace runs out and only adds to the downtime.
const RESTART_GRACE: Duration = Duration::from_secs(2);

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
    /// How the API server was started, so a restart runs exactly the same command line.
    apiserver_command: CommandLine,
    cluster_id: String,
    ready_timeout: Duration,
}

/// A program and its arguments, kept to start the same process again.
#[derive(Debug, Clone)]
struct CommandLine {
    program: PathBuf,
    args: Vec<String>,
}

impl CommandLine {
    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args);
        cmd
    }
}

/// `N` distinct free loopback ports. Every listener is held until all are chosen: a port
/// released at once can be handed out again by the next bind, and two components given the same
/// port fail with "address already in use".
fn free_ports<const N: usize>() -> Result<[u16; N], ClusterError> {
    let listeners = (0..N)
        .map(|_| std::net::TcpListener::bind(("127.0.0.1", 0)).map_err(ClusterError::io("127.0.0.1:0")))
        .collect::<Result<Vec<_>, _>>()?;
    let mut ports = [0u16; N];
    for (port, l) in ports.iter_mut().zip(&listeners) {
        *port = l.local_addr().map_err(ClusterError::io("127.0.0.1:0"))?.port();
    }
    Ok(ports)
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
        write(&tokens, &format!("{admin_token},admin,admin,\"system:masters\"\n"))?;

        let [etcd_client, etcd_peer, api_port] = free_ports::<3>()?;
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
        let mut etcd = ManagedChild::spawn("etcd", etcd_cmd, cluster_id, &log_dir.join("etcd.log"))?;

        let server = format!("https://127.0.0.1:{api_port}");
        let apiserver_command = CommandLine {
            program: bins.kube_apiserver.clone(),
            args: vec![
                format!("--etcd-servers={etcd_url}"),
                "--bind-address=127.0.0.1".into(),
                "--advertise-address=127.0.0.1".into(),
                format!("--secure-port={api_port}"),
                format!("--tls-cert-file={}", cert.display()),
                format!("--tls-private-key-file={}", key.display()),
                format!("--client-ca-file={}", ca.display()),
                format!("--token-auth-file={}", tokens.display()),
                "--authorization-mode=RBAC".into(),
                format!("--service-account-key-file={}", sa_pub.display()),
                format!("--service-account-signing-key-file={}", sa_key.display()),
                format!("--service-account-issuer={ISSUER}"),
                format!("--api-audiences={ISSUER}"),
                format!("--service-cluster-ip-range={SERVICE_CIDR}"),
                "--allow-privileged=true".into(),
                "--profiling=false".into(),
                format!("--cert-dir={}", pki_dir.display()),
                "--v=0".into(),
            ],
        };
        let mut apiserver = ManagedChild::spawn(
            "kube-apiserver",
            apiserver_command.command(),
            cluster_id,
            &log_dir.join("kube-apiserver.log"),
        )?;

        let admin_kubeconfig = dir.join("admin.kubeconfig");
        write(&admin_kubeconfig, &kubeconfig::render(&server, &pki.ca_cert_pem, "admin", &admin_token, None))?;

        let mut cp_cmd = Command::new(&bins.kube_controller_manager);
        cp_cmd
            .arg(format!("--kubeconfig={}", admin_kubeconfig.display()))
            .arg("--leader-elect=false")
            // No node IPAM, no node lifecycle (the process kubelet does not heartbeat), no TTL.
            .arg("--controllers=*,-nodeipam,-nodelifecycle,-ttl")
            .arg(format!("--service-account-private-key-file={}", sa_key.display()))
            .arg(format!("--root-ca-file={}", ca.display()))
            .arg("--bind-address=127.0.0.1")
            .arg("--secure-port=0")
            .arg("--port=0")
            .arg("--v=0");

        let client = kubeconfig::client_from_file(&admin_kubeconfig).await?;
        wait_for_readyz(&client, [&mut etcd, &mut apiserver], &log_dir, Instant::now(), timeout).await?;
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
            apiserver_command,
            cluster_id: cluster_id.to_string(),
            ready_timeout: timeout,
        })
    }

    /// Stops the API server (SIGTERM, SIGKILL after [`RESTART_GRACE`]), starts it again with
    /// the same command line (port, certificates, etcd, flags) and waits until /readyz answers
    /// ok, within the start timeout. etcd and the controller-manager keep running; clients
    /// reconnect on their own. Returns how long the API was down.
    pub async fn restart_apiserver(&mut self) -> Result<Duration, ClusterError> {
        let down_since = Instant::now();
        self.apiserver.terminate(RESTART_GRACE).await;
        let replacement = ManagedChild::spawn(
            "kube-apiserver",
            self.apiserver_command.command(),
            &self.cluster_id,
            &self.log_dir.join("kube-apiserver.log"),
        )?;
        // The old value's group is already dead; dropping it signals nothing.
        self.apiserver = replacement;
        // A fresh client: the old one's pooled connections point at the dead process.
        let client = kubeconfig::client_from_file(&self.admin_kubeconfig).await?;
        wait_for_readyz(
            &client,
            [&mut self.etcd, &mut self.apiserver],
            &self.log_dir,
            Instant::now(),
            self.ready_timeout,
        )
        .await?;
        Ok(down_since.elapsed())
    }

    /// Stops controller-manager, API server and etcd in that order, each with a short grace period.
    pub async fn stop(&mut self) {
        for child in [&mut self.controller_manager, &mut self.apiserver, &mut self.etcd] {
            child.terminate(Duration::from_secs(5)).await;
        }
    }
}

/// Polls the API server's /readyz until it answers `ok`, failing early if one of `children`
/// exits (with the tail of its log, `<log_dir>/<name>.log`) or once `timeout` has passed since `since`.
async fn wait_for_readyz<const N: usize>(
    client: &Client,
    children: [&mut ManagedChild; N],
    log_dir: &Path,
    since: Instant,
    timeout: Duration,
) -> Result<(), ClusterError> {
    let mut children = children;
    loop {
        for child in children.iter_mut() {
            if let Some(status) = child.try_wait() {
                return Err(ClusterError::EarlyExit {
                    what: child.name.clone(),
                    status: status.to_string(),
                    log_tail: log_tail(&log_dir.join(format!("{}.log", child.name)), 30),
                });
            }
        }
        let req = http::Request::get("/readyz").body(Vec::new()).expect("static request");
        if let Ok(body) = client.request_text(req).await
            && body.trim() == "ok"
        {
            return Ok(());
        }
        if since.elapsed() > timeout {
            return Err(ClusterError::Timeout { what: "kube-apiserver /readyz".into(), secs: timeout.as_secs() });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
