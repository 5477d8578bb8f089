//! Command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use aop_edge::ResolveEntry;
use clap::Parser;

/// Plain HTTP in, mutual TLS out: forward every request to the origin, presenting the
/// edge's client certificate (per-hostname > per-zone > shared).
#[derive(Debug, Parser)]
#[command(
    name = "aop-edge-proxy",
    version,
    long_about = "\
Plain HTTP in, mutual TLS out: the smallest edge for authenticated origin pulls. Every \
request is forwarded to --origin, presenting the client certificate for the origin's \
hostname (a --hostname-cert for it, else a --zone-cert for its zone, else --cert/--key) \
and verifying the origin's certificate against --cacert. X-Forwarded-For, CF-Connecting-IP \
and X-Request-Id are set. The origin is spoken to over HTTP/2 when it offers h2 by ALPN (one \
connection per client certificate), else HTTP/1.1. A WebSocket (GET with Connection: upgrade \
and Upgrade: websocket; no other Upgrade is ever forwarded) goes to the origin over an \
HTTP/1.1 connection and, after the origin's 101, is tunnelled until either side closes or \
--tunnel-idle-timeout passes without a byte. When the origin refuses the handshake the \
proxy answers 502 with the reason in the body and the log.

SIGHUP re-reads every certificate, key and --cacert file: all of them or none (a broken \
file keeps the running set, logged and counted in aop_edge_reloads_total{result=\"error\"}); \
new requests present the new certificates over new connections. A change of any of those \
files does the same by itself (their directories are watched; 300 ms after the last \
change; source=\"file\" in the line and the count) unless --no-reload-on-change. SIGTERM or SIGINT stops \
accepting, lets requests in flight finish (up to --drain-grace) and exits 0.

Example:
  aop-edge-proxy --listen 127.0.0.1:8080 --origin https://example.com:8443 \\
      --resolve example.com:8443:127.0.0.1 --cacert origin-ca.pem \\
      --cert edge/cert.pem --key edge/key.pem
  curl http://127.0.0.1:8080/

Exit codes: 2 when it cannot start (bad flags, unreadable certificate, address in use)."
)]
pub(crate) struct Args {
    /// Address to listen on for plain HTTP.
    #[arg(long)]
    pub(crate) listen: SocketAddr,
    /// The origin, `https://HOST[:PORT]`.
    #[arg(long)]
    pub(crate) origin: String,
    /// Connect to ADDR for HOST:PORT instead of resolving HOST (like curl --resolve).
    #[arg(long, value_name = "HOST:PORT:ADDR")]
    pub(crate) resolve: Vec<ResolveEntry>,
    /// Roots the origin's certificate must chain to (e.g. an Origin CA root). Repeatable.
    #[arg(long, required = true, value_name = "FILE")]
    pub(crate) cacert: Vec<PathBuf>,
    /// The shared client certificate (with its chain).
    #[arg(long, value_name = "FILE", requires = "key")]
    pub(crate) cert: Option<PathBuf>,
    /// Its private key.
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub(crate) key: Option<PathBuf>,
    /// A per-zone certificate: ZONE=CERT,KEY (covers ZONE and every name below it).
    #[arg(long = "zone-cert", value_name = "ZONE=CERT,KEY")]
    pub(crate) zone_certs: Vec<NamedIdentity>,
    /// A per-hostname certificate: HOST=CERT,KEY.
    #[arg(long = "hostname-cert", value_name = "HOST=CERT,KEY")]
    pub(crate) hostname_certs: Vec<NamedIdentity>,
    /// Close a WebSocket tunnel after this many seconds without a byte either way.
    #[arg(long, value_name = "SECS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) tunnel_idle_timeout: u64,
    /// Answer 504 to a request the origin sends no response head to within this many
    /// seconds (connecting included).
    #[arg(long, value_name = "SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) response_header_timeout: u64,
    /// Answer 408 (and reset the request to the origin) when a visitor sends no part of
    /// its request body for this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) request_body_timeout: u64,
    /// On SIGTERM or SIGINT, stop accepting and give the requests (and WebSocket
    /// tunnels) in flight this many seconds to finish before exiting (as aop-origin's 30).
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub(crate) drain_grace: u64,
    /// Serve `/metrics` (Prometheus) and `/healthz` on ADDR. Off by default.
    #[arg(long, value_name = "ADDR")]
    pub(crate) metrics_listen: Option<SocketAddr>,
    /// Do not reload when a certificate, key or --cacert file changes (SIGHUP still
    /// reloads). By default the directory of each is watched, and a change reloads
    /// once the files have been quiet for 300 ms.
    #[arg(long)]
    pub(crate) no_reload_on_change: bool,
    /// Log format.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    pub(crate) log_format: String,
    #[command(flatten)]
    _generate: crate::generate::Flag,
}

/// `NAME=CERT,KEY`.
#[derive(Clone, Debug)]
pub(crate) struct NamedIdentity {
    pub(crate) name: String,
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
}

impl std::str::FromStr for NamedIdentity {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (name, files) = s.split_once('=').ok_or("expected NAME=CERT,KEY")?;
        let (cert, key) = files.split_once(',').ok_or("expected NAME=CERT,KEY")?;
        if name.is_empty() || cert.is_empty() || key.is_empty() {
            return Err("expected NAME=CERT,KEY".into());
        }
        Ok(Self {
            name: name.to_owned(),
            cert: cert.into(),
            key: key.into(),
        })
    }
}
