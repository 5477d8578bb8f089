//! The negative test: connect straight to an origin's address, as `curl --resolve` does,
//! and say in words whether it let us in.
//!
//! An origin refuses a client in one of three ways, and the probe recognises all three:
//! a TLS alert (rustls, Envoy, aop-verify: `certificate_required`, `unknown_ca`, …); an
//! HTTP error after the handshake (nginx with `ssl_verify_client on` answers 400 "No
//! required SSL certificate was sent" or "The SSL certificate error"; 495/496); or a
//! verdict header that is not `SUCCESS` (`X-Client-Verify`, from origins in `optional`
//! mode). Anything else that answers HTTP let us in.

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::connect::{Failure, Resolve, Timeouts, address, classify, connect_tls};
use crate::{Error, Result};

/// An `https://HOST[:PORT][/PATH]` URL to probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The URL as given.
    pub url: String,
    /// Hostname: the SNI, and the name the origin's certificate must carry.
    pub host: String,
    /// Port (443 unless given).
    pub port: u16,
    /// Path and query (`/` unless given).
    pub path: String,
}

impl FromStr for Target {
    type Err = Error;

    fn from_str(url: &str) -> Result<Self> {
        let bad = |reason| Error::Syntax {
            input: url.to_owned(),
            reason,
        };
        let rest = url
            .strip_prefix("https://")
            .ok_or_else(|| bad("only https:// URLs can be probed"))?;
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let path = if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_owned()
        };
        if authority.contains('@') {
            return Err(bad("user info is not supported"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| bad("unclosed [ in the host"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| bad("the port is not a number"))?,
                None if after.is_empty() => 443,
                None => return Err(bad("junk after the host")),
            };
            (h.to_owned(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (
                    h.to_owned(),
                    p.parse().map_err(|_| bad("the port is not a number"))?,
                ),
                None => (authority.to_owned(), 443),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        Ok(Self {
            url: url.to_owned(),
            host: host.to_ascii_lowercase(),
            port,
            path,
        })
    }
}

/// What the probe saw.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Observed {
    /// The origin answered HTTP: it let us in.
    Accepted {
        /// The HTTP status.
        status: u16,
        /// The verdict the origin exposed (`X-Client-Verify`), if it did.
        verdict: Option<String>,
    },
    /// The TLS handshake completed but the origin refused at the HTTP layer.
    RefusedHttp {
        /// The HTTP status.
        status: u16,
        /// How we know (nginx's message, the verdict header).
        why: String,
    },
    /// The origin refused with a TLS alert.
    RefusedTls {
        /// The alert's TLS name (`certificate_required`, `unknown_ca`, `handshake_failure`, …).
        alert: String,
    },
    /// The origin closed the connection without answering: inconclusive.
    Closed,
    /// We refused the origin: its certificate did not verify against our roots.
    ServerUntrusted {
        /// What was wrong.
        detail: String,
    },
    /// The origin could not be reached (DNS, TCP, timeout).
    Unreachable {
        /// What happened.
        detail: String,
    },
    /// Any other failure.
    Error {
        /// What happened.
        detail: String,
    },
}

impl Observed {
    /// Whether this shows the origin refusing the client.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            Self::RefusedHttp { .. } | Self::RefusedTls { .. } | Self::Closed
        )
    }

    /// Whether this shows the origin letting the client in.
    pub fn is_accepted(&self) -> bool {
        matches!(self, Self::Accepted { .. })
    }

    /// A short machine word: `accepted`, `refused_http`, `refused_tls`, `closed`,
    /// `server_untrusted`, `unreachable`, `error`.
    pub fn word(&self) -> &'static str {
        match self {
            Self::Accepted { .. } => "accepted",
            Self::RefusedHttp { .. } => "refused_http",
            Self::RefusedTls { .. } => "refused_tls",
            Self::Closed => "closed",
            Self::ServerUntrusted { .. } => "server_untrusted",
            Self::Unreachable { .. } => "unreachable",
            Self::Error { .. } => "error",
        }
    }
}

/// The result of probing one target.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ProbeResult {
    /// What was probed.
    pub target: Target,
    /// The address connected to, if it resolved.
    pub addr: Option<SocketAddr>,
    /// What happened.
    pub observed: Observed,
    /// `TLSv1.3` / `TLSv1.2`, if the handshake completed on our side.
    pub tls_version: Option<&'static str>,
}

/// Probe one target with `config` (its client certificate, if any, and its roots).
pub async fn probe(
    target: &Target,
    resolve: &Resolve,
    config: Arc<ClientConfig>,
    timeouts: Timeouts,
) -> ProbeResult {
    let mut result = ProbeResult {
        target: target.clone(),
        addr: None,
        observed: Observed::Closed,
        tls_version: None,
    };
    let addr = match address(&target.host, target.port, resolve).await {
        Ok(a) => a,
        Err(e) => {
            result.observed = Observed::Unreachable {
                detail: e.to_string(),
            };
            return result;
        }
    };
    result.addr = Some(addr);
    let mut tls = match connect_tls(config, &target.host, addr, timeouts).await {
        Ok(t) => t,
        Err(e @ (Error::Connect { .. } | Error::Timeout { .. })) => {
            result.observed = Observed::Unreachable {
                detail: e.to_string(),
            };
            return result;
        }
        Err(e) => {
            result.observed = from_failure(&e);
            return result;
        }
    };
    result.tls_version = tls.get_ref().1.protocol_version().map(|v| match v {
        rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3",
        rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2",
        _ => "other",
    });
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: certtool-probe\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        target.path,
        host_header(target)
    );
    // In TLS 1.3 the client finishes its handshake before the server has judged its
    // certificate: a refusal arrives as an alert on the first read.
    let mut buf = Vec::with_capacity(4096);
    let io = async {
        tls.write_all(request.as_bytes()).await?;
        let mut chunk = [0u8; 4096];
        loop {
            let n = tls.read(&mut chunk).await?;
            if n == 0 || buf.len() > 64 * 1024 {
                return Ok::<_, std::io::Error>(());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    let read = tokio::time::timeout(timeouts.handshake.max(Duration::from_secs(5)), io).await;
    result.observed = match read {
        Err(_) if buf.is_empty() => Observed::Error {
            detail: "no response before the timeout".into(),
        },
        Ok(Err(e)) if buf.is_empty() => match classify(&e) {
            Failure::Other { .. }
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::UnexpectedEof
                        | std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::BrokenPipe
                ) =>
            {
                Observed::Closed
            }
            f => failure_to_observed(f),
        },
        _ if buf.is_empty() => Observed::Closed,
        _ => interpret_http(&buf),
    };
    result
}

fn host_header(t: &Target) -> String {
    let host = if t.host.contains(':') {
        format!("[{}]", t.host)
    } else {
        t.host.clone()
    };
    if t.port == 443 {
        host
    } else {
        format!("{host}:{}", t.port)
    }
}

fn from_failure(e: &Error) -> Observed {
    failure_to_observed(classify(e))
}

fn failure_to_observed(f: Failure) -> Observed {
    match f {
        Failure::Refused { alert } => Observed::RefusedTls { alert },
        Failure::ServerUntrusted { detail } => Observed::ServerUntrusted { detail },
        Failure::Other { detail } => Observed::Error { detail },
    }
}

/// Read an HTTP/1.x response (head and what arrived of the body) and decide.
fn interpret_http(bytes: &[u8]) -> Observed {
    let text = String::from_utf8_lossy(bytes);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse::<u16>().ok());
    let Some(status) = status else {
        return Observed::Error {
            detail: format!(
                "not an HTTP response: {:?}",
                head.chars().take(60).collect::<String>()
            ),
        };
    };
    let verdict = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("x-client-verify"))
        .map(|(_, v)| v.trim().to_owned());
    const NGINX: [&str; 2] = [
        "No required SSL certificate was sent",
        "The SSL certificate error",
    ];
    if let Some(msg) = NGINX.iter().find(|m| body.contains(*m)) {
        return Observed::RefusedHttp {
            status,
            why: format!("the origin answered {status} \"{msg}\" (nginx ssl_verify_client)"),
        };
    }
    if status == 495 || status == 496 {
        return Observed::RefusedHttp {
            status,
            why: format!("the origin answered {status} (client certificate error)"),
        };
    }
    match verdict {
        Some(v) if v != "SUCCESS" => Observed::RefusedHttp {
            status,
            why: format!("the origin's verdict header says {v}"),
        },
        verdict => Observed::Accepted { status, verdict },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let t: Target = "https://Example.com:8443/a?b".parse().unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("example.com", 8443, "/a?b")
        );
        let t: Target = "https://example.com".parse().unwrap();
        assert_eq!((t.port, t.path.as_str()), (443, "/"));
        let t: Target = "https://[::1]:9/".parse().unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 9));
        for bad in [
            "http://example.com/",
            "https://",
            "https://a:b/",
            "example.com",
        ] {
            assert!(bad.parse::<Target>().is_err(), "{bad}");
        }
    }

    #[test]
    fn http_answers() {
        let nginx = b"HTTP/1.1 400 Bad Request\r\nServer: nginx\r\n\r\n<html><center>No required SSL certificate was sent</center></html>";
        assert!(interpret_http(nginx).is_refusal());
        let ok = b"HTTP/1.1 200 OK\r\nX-Client-Verify: SUCCESS\r\n\r\nhi";
        assert_eq!(
            interpret_http(ok),
            Observed::Accepted {
                status: 200,
                verdict: Some("SUCCESS".into())
            }
        );
        let optional = b"HTTP/1.1 403 Forbidden\r\nx-client-verify: NONE\r\n\r\n";
        assert!(interpret_http(optional).is_refusal());
        let open = b"HTTP/1.1 200 OK\r\n\r\nwelcome";
        assert!(interpret_http(open).is_accepted());
        assert!(matches!(interpret_http(b"garbage"), Observed::Error { .. }));
    }
}
