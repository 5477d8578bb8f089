//! The smallest real origin server on aop-verify: mTLS with a per-connection verdict,
//! HTTP/2 or HTTP/1.1 (as ALPN chooses) via hyper, and every response body naming the
//! verdict.
//!
//! ```text
//! cargo run -p aop-verify --features hyper --example origin -- \
//!     --listen 127.0.0.1:8443 --cert origin/cert.pem --key origin/key.pem --trust ca/ca.pem
//! curl --resolve example.com:8443:127.0.0.1 --cacert ca/ca.pem \
//!      --cert edge/cert.pem --key edge/key.pem https://example.com:8443/
//! ```
//!
//! Verdict lines (target `aop::verdict`) go to stderr. SIGTERM or ctrl-c stops it
//! gracefully: no new connections, the requests in progress finish.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use aop_verify::{Acceptor, Limits, Mode, PolicyHandle, PolicySpec, RuleSpec, TrustSpec, Verdict};
use clap::Parser;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};

/// A minimal origin that only talks to its edge.
#[derive(Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long)]
    listen: SocketAddr,
    /// The origin's certificate chain (PEM).
    #[arg(long)]
    cert: PathBuf,
    /// The origin's private key.
    #[arg(long)]
    key: PathBuf,
    /// Trust anchors for edge certificates; repeat to overlap during a rotation.
    #[arg(long, required = true)]
    trust: Vec<PathBuf>,
    /// `require` (refuse anything but SUCCESS) or `optional` (let the handler decide).
    #[arg(long, default_value = "require")]
    mode: Mode,
    /// Offer HTTP/2 (ALPN `h2` first) as well as HTTP/1.1; without it, only `http/1.1`
    /// (an origin that speaks HTTP/1.1 alone, for the tests of edges against one).
    #[arg(long)]
    http2: bool,
}

async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let verdict = req
        .extensions()
        .get::<Arc<Verdict>>()
        .map(|v| v.to_string())
        .unwrap_or_default();
    let mut resp = Response::new(Full::new(Bytes::from(format!(
        "hello from the origin; verdict {verdict}\n"
    ))));
    // Expose the verdict so `certtool probe` can report it.
    if let Ok(v) = hyper::header::HeaderValue::from_str(&verdict) {
        resp.headers_mut().insert("x-client-verify", v);
    }
    Ok(resp)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();

    // One default rule: every SNI (and none) is served with the same trust.
    let mut trust = TrustSpec::new(args.trust);
    trust.max_depth = aop_verify::DEFAULT_MAX_DEPTH;
    let mut rule = RuleSpec::new("default", Vec::<String>::new(), args.cert, args.key, trust);
    rule.mode = args.mode;
    let mut spec = PolicySpec::new(Vec::new());
    if !args.http2 {
        spec.alpn = vec![b"http/1.1".to_vec()];
    }
    spec.default = Some(rule);
    let policy = PolicyHandle::load(&spec)?;

    let acceptor = Acceptor::new(policy, Limits::default());
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    tracing::info!(addr = %listener.local_addr()?, "origin listening");
    // Refused connections are logged by the acceptor; SIGTERM or ctrl-c lets the requests
    // in progress finish.
    aop_verify::serve(listener, acceptor, tower::service_fn(handle))
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
