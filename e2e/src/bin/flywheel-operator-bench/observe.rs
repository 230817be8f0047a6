//! Watching a round: convergence, the operator's reconcile count and peak RSS, the table.

use super::*;

/// From the operator's /metrics (plain HTTP/1.0 GET): `reconciles_total{kind="Deployment"}`, and
/// the server-side applies of children (`child_applies_total`, all kinds; 0 for an operator
/// without that metric).
pub(super) async fn deployment_reconciles(port: u16) -> anyhow::Result<(f64, f64)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream =
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await.context("connecting to the operator's /metrics")?;
    stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").await?;
    let mut body = String::new();
    stream.read_to_string(&mut body).await?;
    let value = |l: &str| l.rsplit(' ').next()?.parse::<f64>().ok();
    let reconciles = body
        .lines()
        .filter(|l| l.contains("reconciles_total{") && l.contains("kind=\"Deployment\""))
        .find_map(value)
        .context("no Deployment reconciles_total in the operator's /metrics")?;
    let applies = body.lines().filter(|l| l.contains("child_applies_total{")).filter_map(value).fold(0.0, |a, b| a + b);
    Ok((reconciles, applies))
}

/// Watches the Deployments of `ns` until every one has ChampionReady=True and all four
/// children; returns the time from `start` to the watch event that completed them (the
/// operator applies the children before it writes the status, so a ready status means they
/// were already there). A watch, not repeated lists: lists of N Deployments every few hundred
/// milliseconds would load the API server the operator is measured against.
pub(super) async fn wait_converged(
    client: &Client,
    ns: &str,
    count: usize,
    start: Instant,
    timeout: Duration,
    operator: &mut ManagedChild,
    log: &Path,
) -> anyhow::Result<Duration> {
    use kube::runtime::{WatchStreamExt, watcher};
    let parents: Api<FlywheelDeployment> = Api::namespaced(client.clone(), ns);
    let mut events = std::pin::pin!(watcher(parents, watcher::Config::default()).default_backoff());
    let mut ready = BTreeSet::new();
    let mut last_report = Instant::now();
    let mut tick = tokio::time::interval(POLL);
    loop {
        tokio::select! {
            event = events.next() => {
                let Some(event) = event else { bail!("the watch of the Deployments ended") };
                let objects = match event {
                    Ok(watcher::Event::Apply(d) | watcher::Event::InitApply(d)) => vec![d],
                    Ok(watcher::Event::Delete(d)) => {
                        ready.remove(&d.name_any());
                        Vec::new()
                    }
                    Ok(watcher::Event::Init | watcher::Event::InitDone) => Vec::new(),
                    Err(e) => {
                        tracing::warn!(error = %e, "watch of the Deployments failed; retrying");
                        Vec::new()
                    }
                };
                for d in objects {
                    let champion_ready = d
                        .status
                        .as_ref()
                        .and_then(|s| condition::find(&s.conditions, CHAMPION_READY))
                        .is_some_and(|c| c.status == condition::TRUE);
                    if champion_ready {
                        ready.insert(d.name_any());
                    } else {
                        ready.remove(&d.name_any());
                    }
                }
                let seen = start.elapsed();
                if ready.len() >= count && all_children(client, ns, &ready).await? {
                    return Ok(seen);
                }
            }
            _ = tick.tick() => {
                check_alive(operator, log)?;
                let seen = start.elapsed();
                if ready.len() >= count && all_children(client, ns, &ready).await? {
                    return Ok(seen);
                }
                if last_report.elapsed() > Duration::from_secs(10) {
                    eprintln!("  {:.0}s: {} of {count} ChampionReady", seen.as_secs_f64(), ready.len());
                    last_report = Instant::now();
                }
                if seen > timeout {
                    let untouched = parents_without_status(client, ns).await?;
                    bail!(
                        "only {} of {count} Deployments ChampionReady after {timeout:?}; {} never got a status (e.g. {:?}); operator log:\n{}",
                        ready.len(),
                        untouched.len(),
                        &untouched[..untouched.len().min(5)],
                        log_tail(log, 30)
                    );
                }
            }
        }
    }
}

/// Whether every child of `ready` exists (a warning names the missing ones otherwise).
async fn all_children(client: &Client, ns: &str, ready: &BTreeSet<String>) -> anyhow::Result<bool> {
    let missing = missing_children(client, ns, ready).await?;
    if !missing.is_empty() {
        tracing::warn!(?missing, "ChampionReady=True but children missing");
    }
    Ok(missing.is_empty())
}

/// Deployments of `ns` without any status yet.
async fn parents_without_status(client: &Client, ns: &str) -> anyhow::Result<Vec<String>> {
    let list = Api::<FlywheelDeployment>::namespaced(client.clone(), ns).list(&ListParams::default()).await?;
    Ok(list.items.iter().filter(|d| d.status.is_none()).map(|d| d.name_any()).collect())
}

/// Children (kind/name) of `parents` not found in `ns`.
pub(super) async fn missing_children(
    client: &Client,
    ns: &str,
    parents: &BTreeSet<String>,
) -> anyhow::Result<Vec<String>> {
    async fn names<K>(client: &Client, ns: &str) -> anyhow::Result<BTreeSet<String>>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope> + Clone + DeserializeOwned + std::fmt::Debug,
    {
        let api: Api<K> = Api::namespaced(client.clone(), ns);
        let list = api.list_metadata(&ListParams::default().labels(CHILD_SELECTOR)).await?;
        Ok(list.items.iter().map(|m| m.name_any()).collect())
    }
    let config_maps = names::<ConfigMap>(client, ns).await?;
    let apps = names::<AppsDeployment>(client, ns).await?;
    let services = names::<Service>(client, ns).await?;
    let secrets = names::<Secret>(client, ns).await?;
    let mut missing = Vec::new();
    for parent in parents {
        let wanted = [
            ("ConfigMap", format!("{parent}-serving"), &config_maps),
            ("Deployment.apps", format!("{parent}-inference"), &apps),
            ("Service", format!("{parent}-inference"), &services),
            ("Secret", format!("{parent}-review-token"), &secrets),
        ];
        missing.extend(wanted.iter().filter(|(_, n, set)| !set.contains(n)).map(|(kind, n, _)| format!("{kind}/{n}")));
    }
    Ok(missing)
}

/// The peak resident set size (VmHWM) of a live process, in KiB.
pub(super) fn peak_rss_kib(pid: i32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no VmHWM in {path}"))
}

pub(super) fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

pub(super) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 { values[n / 2] } else { (values[n / 2 - 1] + values[n / 2]) / 2.0 }
}

pub(super) fn print_table(args: &Args, rounds: &[Round]) {
    let api = median(rounds.iter().map(|r| r.api_server_alone.as_secs_f64()).collect());
    let op = median(rounds.iter().map(|r| r.operator_converge.as_secs_f64()).collect());
    let peak = median(rounds.iter().map(|r| mib(r.operator_peak_rss_kib)).collect());
    let idle = median(rounds.iter().map(|r| mib(r.operator_idle_rss_kib)).collect());
    let what = if rounds.len() > 1 { format!("medians of {} rounds", rounds.len()) } else { "1 round".to_string() };
    println!("flywheel-operator-bench ({what}, concurrency {})", args.concurrency);
    let per_deployment = median(rounds.iter().map(|r| r.operator_reconciles / args.count as f64).collect());
    println!(
        "{:>6}  {:>20}  {:>21}  {:>6}  {:>21}  {:>21}  {:>19}",
        "N",
        "API server alone (s)",
        "operator converge (s)",
        "ratio",
        "operator peak RSS MiB",
        "operator idle RSS MiB",
        "reconciles/Deployment"
    );
    println!(
        "{:>6}  {:>20.2}  {:>21.2}  {:>6.2}  {:>21.1}  {:>21.1}  {:>19.1}",
        args.count,
        api,
        op,
        op / api,
        peak,
        idle,
        per_deployment
    );
}
