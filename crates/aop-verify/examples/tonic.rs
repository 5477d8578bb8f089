//! A gRPC origin on tonic that reads the verdict: the standard health service
//! (`grpc.health.v1.Health`, tonic-health's generated trait, so no protoc or build.rs)
//! answers `Check` with SERVING only for a client whose verdict is SUCCESS, and returns
//! the verdict in the `x-client-verify` response metadata. Served by `aop_verify::serve`
//! over HTTP/2 (gRPC clients offer ALPN `h2`).
//!
//! ```text
//! cargo run -p aop-verify --example tonic -- --listen 127.0.0.1:8443 \
//!     --cert origin/cert.pem --key origin/key.pem --trust ca/ca.pem --host grpc.example.com
//! ```
//!
//! In `require` mode a client without the edge's certificate never reaches the service
//! (refused in the handshake: UNAVAILABLE); in `optional` mode it gets NOT_SERVING and
//! its verdict (`NONE`, `FAILED:unknown_ca`, …). Each call is logged (target `health`)
//! and each verdict (target `aop::verdict`) on stderr. SIGTERM or ctrl-c stops it
//! gracefully.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use aop_verify::{Acceptor, Limits, Mode, PolicyHandle, PolicySpec, RuleSpec, TrustSpec, Verdict};
use clap::Parser;
use tonic::codegen::tokio_stream::Stream;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

/// A gRPC origin that only talks to its edge.
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
    /// A hostname served, each under a rule of its own. Repeat for several.
    #[arg(long, required = true)]
    host: Vec<String>,
    /// `require` (refuse anything but SUCCESS) or `optional` (the service decides).
    #[arg(long, default_value = "require")]
    mode: Mode,
}

/// The health service, judging each caller by its connection's verdict.
struct VerdictHealth;

#[tonic::async_trait]
impl Health for VerdictHealth {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        // aop_verify::serve put it in the HTTP request's extensions; tonic keeps them.
        let verdict = request
            .extensions()
            .get::<Arc<Verdict>>()
            .ok_or_else(|| Status::internal("no verdict: not served by aop_verify"))?;
        tracing::info!(target: "health", verdict = %verdict, "check");
        let status = if verdict.is_success() {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        let mut response = Response::new(HealthCheckResponse {
            status: status.into(),
        });
        let value = MetadataValue::try_from(verdict.to_string())
            .map_err(|_| Status::internal("verdict is not metadata"))?;
        response.metadata_mut().insert("x-client-verify", value);
        Ok(response)
    }

    type WatchStream =
        Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send + 'static>>;

    async fn watch(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("use Check"))
    }
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

    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    tracing::info!(addr = %listener.local_addr()?, "origin listening");
    let service = HealthServer::new(VerdictHealth);
    aop_verify::serve(listener, Acceptor::new(policy, Limits::default()), service)
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
