//! Connecting to an origin: TCP to an address that may differ from the hostname (like
//! `curl --resolve`), while SNI and the server-certificate check use the hostname.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::{Error, Result};

/// One `--resolve HOST:PORT:ADDR`: connect to ADDR whenever HOST:PORT is asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolveEntry {
    /// The hostname (lowercase).
    pub host: String,
    /// The port.
    pub port: u16,
    /// Where to connect instead of resolving the name.
    pub addr: IpAddr,
}

impl FromStr for ResolveEntry {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = |reason| Error::Syntax {
            input: s.to_owned(),
            reason,
        };
        let mut parts = s.splitn(3, ':');
        let (Some(host), Some(port), Some(addr)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("expected HOST:PORT:ADDR"));
        };
        let port = port.parse().map_err(|_| bad("the port is not a number"))?;
        let addr = addr.trim_start_matches('[').trim_end_matches(']');
        let addr = addr.parse().map_err(|_| bad("ADDR is not an IP address"))?;
        if host.is_empty() {
            return Err(bad("empty HOST"));
        }
        Ok(Self {
            host: host.to_ascii_lowercase(),
            port,
            addr,
        })
    }
}

/// A set of `--resolve` entries.
#[derive(Clone, Debug, Default)]
pub struct Resolve(HashMap<(String, u16), IpAddr>);

impl Resolve {
    /// From entries; a later entry for the same HOST:PORT wins.
    pub fn new(entries: impl IntoIterator<Item = ResolveEntry>) -> Self {
        Self(
            entries
                .into_iter()
                .map(|e| ((e.host, e.port), e.addr))
                .collect(),
        )
    }

    /// The override for `host:port`, if any.
    pub fn get(&self, host: &str, port: u16) -> Option<SocketAddr> {
        self.0
            .get(&(host.to_ascii_lowercase(), port))
            .map(|ip| SocketAddr::new(*ip, port))
    }
}

/// Connect and handshake limits.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct Timeouts {
    /// TCP connect. Default 10 s.
    pub connect: Duration,
    /// TLS handshake. Default 10 s.
    pub handshake: Duration,
    /// From sending a request (connecting included) to its response head (status and
    /// headers): a request that gets no response head in time fails with
    /// [`Error::NoResponse`](crate::Error::NoResponse) (over HTTP/2 its stream is
    /// reset). Default 60 s, nginx's `proxy_read_timeout`: an origin that sits on a
    /// request holds one of its connection's streams, and enough of them would hold
    /// every stream of the identity's one HTTP/2 connection.
    pub response_header: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(10),
            handshake: Duration::from_secs(10),
            response_header: Duration::from_secs(60),
        }
    }
}

/// Where to connect for `host:port`: the `--resolve` override, else DNS (the first
/// address).
pub async fn address(host: &str, port: u16, resolve: &Resolve) -> Result<SocketAddr> {
    if let Some(a) = resolve.get(host, port) {
        return Ok(a);
    }
    if let Ok(ip) = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        return Ok(SocketAddr::new(ip, port));
    }
    tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| Error::Resolve {
            host: host.to_owned(),
            detail: e.to_string(),
        })?
        .next()
        .ok_or_else(|| Error::Resolve {
            host: host.to_owned(),
            detail: "no addresses".into(),
        })
}

/// TCP to `addr`, then TLS with SNI `host` under `config` (which decides the client
/// certificate and the roots the origin's certificate must chain to).
pub async fn connect_tls(
    config: Arc<ClientConfig>,
    host: &str,
    addr: SocketAddr,
    timeouts: Timeouts,
) -> Result<TlsStream<TcpStream>> {
    connect_tls_over(config, host, addr, timeouts, |tcp| tcp).await
}

/// [`connect_tls`] over `wrap(tcp)` (the probe counts the bytes it writes): the same
/// limits and errors.
pub(crate) async fn connect_tls_over<IO>(
    config: Arc<ClientConfig>,
    host: &str,
    addr: SocketAddr,
    timeouts: Timeouts,
    wrap: impl FnOnce(TcpStream) -> IO,
) -> Result<TlsStream<IO>>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let connect = TcpStream::connect(addr);
    let tcp = within("TCP connect", addr, timeouts.connect, connect)
        .await?
        .map_err(|error| Error::Connect { addr, error })?;
    let _ = tcp.set_nodelay(true);
    let name = ServerName::try_from(host.to_owned()).map_err(|_| Error::Syntax {
        input: host.to_owned(),
        reason: "not a valid server name",
    })?;
    let connector = tokio_rustls::TlsConnector::from(config);
    let handshake = connector.connect(name, wrap(tcp));
    within("TLS handshake", addr, timeouts.handshake, handshake)
        .await?
        .map_err(|error| Error::Handshake {
            host: host.to_owned(),
            addr,
            error,
        })
}

/// `work`'s output, or [`Error::Timeout`] for `stage` with `addr` once `limit` has passed.
async fn within<T>(
    stage: &'static str,
    addr: SocketAddr,
    limit: Duration,
    work: impl Future<Output = T>,
) -> Result<T> {
    tokio::time::timeout(limit, work)
        .await
        .map_err(|_| Error::Timeout {
            stage,
            addr,
            after: limit,
        })
}

/// What a TLS failure means for an origin pull.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Failure {
    /// The origin sent a TLS alert: it refused us (the alert's TLS name, e.g. `unknown_ca`).
    Refused {
        /// The alert, as the TLS RFCs name it.
        alert: String,
    },
    /// We refused the origin: its certificate did not verify against our roots.
    ServerUntrusted {
        /// What was wrong with it.
        detail: String,
    },
    /// Some other TLS or I/O failure.
    Other {
        /// What happened.
        detail: String,
    },
}

/// Find the rustls error in an error's source chain (through `io::Error` wrappers).
pub fn rustls_error<'a>(e: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        // Our own errors keep their cause in a field, not as `source()` (so that
        // `{:#}` does not print it twice): look inside.
        match err.downcast_ref::<Error>() {
            Some(Error::Handshake { error, .. }) => {
                cur = Some(error);
                continue;
            }
            Some(Error::Request { error, .. }) => {
                cur = Some(error.as_ref());
                continue;
            }
            _ => {}
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(r) = inner.downcast_ref::<rustls::Error>()
        {
            return Some(r);
        }
        cur = err.source();
    }
    None
}

/// Classify a failure anywhere in an error's source chain.
pub fn classify(e: &(dyn StdError + 'static)) -> Failure {
    match rustls_error(e) {
        Some(rustls::Error::AlertReceived(a)) => Failure::Refused {
            alert: alert_name(*a),
        },
        Some(rustls::Error::InvalidCertificate(c)) => Failure::ServerUntrusted {
            detail: format!("the origin's certificate: {c}"),
        },
        Some(other) => Failure::Other {
            detail: other.to_string(),
        },
        None => Failure::Other {
            detail: e.to_string(),
        },
    }
}

/// The TLS name of an alert (`unknown_ca`, `certificate_required`, …).
pub fn alert_name(a: rustls::AlertDescription) -> String {
    // rustls' Debug names are CamelCase versions of the RFC names (UnknownCA, …).
    let debug = format!("{a:?}");
    match debug.as_str() {
        "UnknownCA" => return "unknown_ca".into(),
        "UnrecognisedName" => return "unrecognized_name".into(),
        _ => {}
    }
    let mut out = String::with_capacity(debug.len() + 4);
    for c in debug.chars() {
        if c.is_ascii_uppercase() && !out.is_empty() {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_entries() {
        let e: ResolveEntry = "Example.com:8443:127.0.0.1".parse().unwrap();
        assert_eq!((e.host.as_str(), e.port), ("example.com", 8443));
        let e: ResolveEntry = "example.com:443:[::1]".parse().unwrap();
        assert_eq!(e.addr, "::1".parse::<IpAddr>().unwrap());
        for bad in [
            "example.com",
            "example.com:x:1.2.3.4",
            "example.com:443:nope",
            ":443:1.2.3.4",
        ] {
            assert!(bad.parse::<ResolveEntry>().is_err(), "{bad}");
        }
        let r = Resolve::new(["a.test:1:10.0.0.1".parse().unwrap()]);
        assert_eq!(r.get("A.TEST", 1), Some("10.0.0.1:1".parse().unwrap()));
        assert_eq!(r.get("a.test", 2), None);
    }

    #[test]
    fn alert_names() {
        use rustls::AlertDescription as A;
        assert_eq!(alert_name(A::UnknownCA), "unknown_ca");
        assert_eq!(alert_name(A::CertificateRequired), "certificate_required");
        assert_eq!(alert_name(A::HandshakeFailure), "handshake_failure");
        assert_eq!(alert_name(A::AccessDenied), "access_denied");
    }
}
