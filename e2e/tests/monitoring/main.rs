//! Monitoring: the alert rules and the Grafana dashboard shipped in charts/flywheel/files,
//! checked with promtool, and every dashboard query answered by a real Prometheus that
//! scrapes a real inference pod and operator on the local cluster.
//!
//! `cargo test -p flywheel-e2e --test monitoring` (needs promtool and prometheus from Debian's
//! `prometheus` package, and the workspace binaries: see docs/monitoring.md).

mod files;
mod live;
mod traffic;
