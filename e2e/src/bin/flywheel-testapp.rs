//! A tiny program for e2e Pods. Like every Flywheel binary it binds the Pod's address from
//! POD_IP (127.0.0.1 when unset).
//!
//!   serve [--port 8080] [--file PATH] [--unhealthy-after SECS]   HTTP: /healthz /readyz /ip /file /env/{NAME}
//!   exit --code N [--message TEXT]                                 print and exit with N
//!   cat PATH                                                       print a (mounted) file
//!   write PATH TEXT                                                write TEXT to PATH (atomically)
//!   kube-check --verb list|get|create --resource pods|secrets|configmaps [--name N]
//!                                                                  call the API server with KUBECONFIG;
//!                                                                  exit 0 allowed, 3 Forbidden, 1 other error

use std::path::PathBuf;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use clap::{Parser, Subcommand};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    Serve {
        #[arg(long, default_value_t = 8080)]
        port: u16,
        #[arg(long)]
        file: Option<PathBuf>,
        /// /healthz starts failing this many seconds after start (to exercise liveness probes).
        #[arg(long)]
        unhealthy_after: Option<u64>,
    },
    Exit {
        #[arg(long)]
        code: i32,
        #[arg(long)]
        message: Option<String>,
    },
    Cat {
        path: PathBuf,
    },
    Write {
        path: PathBuf,
        text: String,
    },
    KubeCheck {
        #[arg(long)]
        verb: String,
        #[arg(long)]
        resource: String,
        #[arg(long, default_value = "e2e-probe")]
        name: String,
    },
}

#[derive(Clone)]
struct AppState {
    file: Option<PathBuf>,
    unhealthy_at: Option<Instant>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    match Cli::parse().mode {
        Mode::Serve { port, file, unhealthy_after } => serve(port, file, unhealthy_after).await,
        Mode::Exit { code, message } => {
            if let Some(m) = message {
                println!("{m}");
            }
            std::process::exit(code);
        }
        Mode::Cat { path } => match std::fs::read_to_string(&path) {
            Ok(text) => print!("{text}"),
            Err(e) => {
                eprintln!("cannot read {}: {e}", path.display());
                std::process::exit(1);
            }
        },
        Mode::Write { path, text } => {
            let tmp = path.with_extension("tmp");
            if let Err(e) = std::fs::write(&tmp, &text).and_then(|_| std::fs::rename(&tmp, &path)) {
                eprintln!("cannot write {}: {e}", path.display());
                std::process::exit(1);
            }
            println!("wrote {}", path.display());
        }
        Mode::KubeCheck { verb, resource, name } => std::process::exit(kube_check(&verb, &resource, &name).await),
    }
}

async fn serve(port: u16, file: Option<PathBuf>, unhealthy_after: Option<u64>) {
    let ip = std::env::var("POD_IP").unwrap_or_else(|_| "127.0.0.1".into());
    let state = AppState { file, unhealthy_at: unhealthy_after.map(|s| Instant::now() + Duration::from_secs(s)) };
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(|| async { "ok" }))
        .route("/ip", get(|| async { std::env::var("POD_IP").unwrap_or_default() }))
        .route("/file", get(read_file))
        .route("/env/{name}", get(|Path(name): Path<String>| async move { std::env::var(name).unwrap_or_default() }))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind((ip.as_str(), port)).await.unwrap_or_else(|e| {
        eprintln!("cannot bind {ip}:{port}: {e}");
        std::process::exit(2);
    });
    println!("serving on {ip}:{port}");
    let shutdown = async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        term.recv().await;
        println!("SIGTERM received, shutting down");
    };
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await.expect("server");
}

async fn healthz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    match state.unhealthy_at {
        Some(t) if Instant::now() >= t => (StatusCode::INTERNAL_SERVER_ERROR, "unhealthy"),
        _ => (StatusCode::OK, "ok"),
    }
}

async fn read_file(State(state): State<AppState>) -> (StatusCode, String) {
    let Some(path) = state.file else {
        return (StatusCode::NOT_FOUND, "no --file given".into());
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => (StatusCode::OK, text),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{}: {e}", path.display())),
    }
}

async fn kube_check(verb: &str, resource: &str, name: &str) -> i32 {
    let client = match Client::try_default().await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("no client from KUBECONFIG: {e}");
            return 1;
        }
    };
    let ns = client.default_namespace().to_string();
    let result: Result<(), kube::Error> = match (verb, resource) {
        ("list", "pods") => Api::<Pod>::namespaced(client, &ns).list(&ListParams::default()).await.map(|_| ()),
        ("list", "secrets") => Api::<Secret>::namespaced(client, &ns).list(&ListParams::default()).await.map(|_| ()),
        ("list", "configmaps") => {
            Api::<ConfigMap>::namespaced(client, &ns).list(&ListParams::default()).await.map(|_| ())
        }
        ("get", "secrets") => Api::<Secret>::namespaced(client, &ns).get(name).await.map(|_| ()),
        ("create", "configmaps") => {
            let cm = ConfigMap {
                metadata: kube::api::ObjectMeta { name: Some(name.into()), ..Default::default() },
                ..Default::default()
            };
            Api::<ConfigMap>::namespaced(client, &ns).create(&PostParams::default(), &cm).await.map(|_| ())
        }
        _ => {
            eprintln!("unsupported check {verb} {resource}");
            return 1;
        }
    };
    match result {
        Ok(()) => {
            println!("allowed: {verb} {resource} in {ns}");
            0
        }
        Err(kube::Error::Api(status)) if status.code == 403 => {
            println!("Forbidden: {verb} {resource} in {ns}: {}", status.message);
            3
        }
        Err(e) => {
            println!("error: {verb} {resource} in {ns}: {e}");
            1
        }
    }
}
