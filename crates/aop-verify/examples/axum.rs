//! An origin on axum: a `Router` whose handlers read the connection's verdict, served by
//! `aop_verify::serve` (mTLS with a per-connection verdict, one rule per hostname, the
//! Host / `:authority` check, HTTP/2 or HTTP/1.1 as ALPN chooses).
//!
//! ```text
//! cargo run -p aop-verify --example axum -- --listen 127.0.0.1:8443 \
//!     --cert origin/cert.pem --key origin/key.pem --trust ca/ca.pem --host shop.example.com
//! curl --resolve shop.example.com:8443:127.0.0.1 --cacert origin-ca.pem \
//!      --cert edge/cert.pem --key edge/key.pem https://shop.example.com:8443/
//! ```
//!
//! `GET /` answers `verdict SUCCESS`; `POST /upload` reads the whole body and answers
//! with its length. Verdict lines (target `aop::verdict`) go to stderr. SIGTERM or ctrl-c
//! stops it gracefully: no new connections, the requests in progress finish.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use aop_verify::{Acceptor, Limits, Mode, PolicyHandle, PolicySpec, RuleSpec, TrustSpec, Verdict};
use axum::body::Body;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Extension, Router};
use clap::Parser;

/// An axum origin that only talks to its edge.
#[derive(Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long)]
    listen: SocketAddr,
    /// The origin's certificate chain (PEM), valid for every `--host`.
    #[arg(long)]
    cert: PathBuf,
    /// The origin's private key.
    #[arg(long)]
    key: PathBuf,
    /// Trust anchors for edge certificates; repeat to overlap during a rotation.
    #[arg(long, required = true)]
    trust: Vec<PathBuf>,
    /// A hostname served, each under a rule of its own (a request on a connection made
    /// for one of them cannot name another: 421). Repeat for several.
    #[arg(long, required = true)]
    host: Vec<String>,
    /// `require` (refuse anything but SUCCESS) or `optional` (let the handlers decide).
    #[arg(long, default_value = "require")]
    mode: Mode,
}

/// `GET /`: the verdict of the connection the request came on.
async fn verdict(Extension(verdict): Extension<Arc<Verdict>>) -> String {
    format!("verdict {verdict}\n")
}

/// `POST /upload`: read the body (up to 1 MiB), answer with the verdict and its length.
async fn upload(
    Extension(verdict): Extension<Arc<Verdict>>,
    body: Body,
) -> Result<String, StatusCode> {
    tracing::info!(verdict = %verdict, "upload started");
    let body = axum::body::to_bytes(body, 1 << 20)
        .await
        .map_err(|_| StatusCode::PAYLOAD_TOO_LARGE)?;
    Ok(format!("verdict {verdict}; {} bytes\n", body.len()))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();

    let rules = args
        .host
        .iter()
        .map(|host| {
            let trust = TrustSpec::new(args.trust.clone());
            let mut rule = RuleSpec::new(host, [host], &args.cert, &args.key, trust);
            rule.mode = args.mode;
            rule
        })
        .collect();
    let policy = PolicyHandle::load(&PolicySpec::new(rules))?;

    let app = Router::new()
        .route("/", get(verdict))
        .route("/upload", post(upload));

    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    tracing::info!(addr = %listener.local_addr()?, "origin listening");
    aop_verify::serve(listener, Acceptor::new(policy, Limits::default()), app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    Ok(())
}

/// SIGTERM (how a service manager stops a server on Unix) or ctrl-c.
async fn shutdown_signal() {
    #[cfg(unix)]
    let term = async {
        let kind = tokio::signal::unix::SignalKind::terminate();
        let mut term = tokio::signal::unix::signal(kind).expect("install the SIGTERM handler");
        term.recv().await;
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
