//! Ctrl-C in the middle of the demo stops everything it started: the cluster's processes
//! (control plane, kubelet, Pods) and the S3 server.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

/// Direct children of `pid` (from /proc).
fn children(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else { continue };
        // The fields after the parenthesised command name: state, ppid, ...
        let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
        if after.split_whitespace().nth(1).and_then(|p| p.parse::<u32>().ok()) == Some(pid) {
            found.push(child);
        }
    }
    found
}

#[test]
fn ctrl_c_mid_loop_leaves_nothing_running() {
    let bin = common::bin_dir().join("flywheel-demo");
    let mut demo = Command::new(&bin)
        .arg("--exit")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e} (cargo build --bins -p flywheel-demo)", bin.display()));
    let mut lines = BufReader::new(demo.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    let mut cluster_id = None;
    // Wait until the inference Pod serves: cluster, S3, operator and server processes all run.
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(rest) = line.split("done in ").nth(1).and_then(|r| r.split(": cluster ").nth(1)) {
            cluster_id = rest.split(',').next().map(str::to_string);
        }
        seen.push(line.clone());
        if line.contains("(7/12)") {
            break;
        }
    }
    let cluster_id = cluster_id.unwrap_or_else(|| panic!("no cluster id in the demo's output:\n{}", seen.join("\n")));
    assert!(seen.last().is_some_and(|l| l.contains("(7/12)")), "the demo stopped early:\n{}", seen.join("\n"));
    let running = flywheel_cluster::find_leftovers(Some(&cluster_id));
    assert!(running.len() >= 5, "expected the cluster's processes to run: {running:?}");
    let started = children(demo.id());
    assert!(!started.is_empty(), "the S3 server runs as the demo's child");
    let drain = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>());

    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(demo.id() as i32, libc::SIGINT);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = demo.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the demo did not stop within 60 s of Ctrl-C");
        std::thread::sleep(Duration::from_millis(100));
    };
    let rest = drain.join().unwrap();
    assert!(status.success(), "exit {status}:\n{}\n{}", seen.join("\n"), rest.join("\n"));
    assert!(rest.iter().any(|l| l.contains("interrupted")), "{}", rest.join("\n"));
    let left = flywheel_cluster::find_leftovers(Some(&cluster_id));
    assert!(left.is_empty(), "processes outlived the demo: {left:?}");
    for pid in started {
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "child {pid} of the demo outlived it");
    }
}
