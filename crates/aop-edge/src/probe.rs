//! The negative test: connect straight to an origin's address, as `curl --resolve` does,
//! and say in words whether it let us in, and what proves it.
//!
//! Content served means open. The probe decides from what the origin did, never from what
//! it says about itself:
//!
//! | The origin…                                                                                          | `--expect reject` | `--expect accept` |
//! |------------------------------------------------------------------------------------------------------|-------------------|-------------------|
//! | answered 2xx/3xx with no `X-Client-Verify`, or `SUCCESS`                                             | OPEN (1)          | held (0)          |
//! | answered 2xx/3xx with `X-Client-Verify: NONE`, and the probe sent no certificate                     | OPEN (1)          | held (0)          |
//! | answered 2xx/3xx with any other verdict (`FAILED:…`, `NONE` to a certificate)                        | OPEN (1)          | FAILED (1)        |
//! | aborted the handshake with an alert, once it had asked for a certificate and had the client's reply  | held (0)          | FAILED (1)        |
//! | closed before its Finished, once it had asked for a certificate and had the client's reply (TLS 1.2) | held (0)          | FAILED (1)        |
//! | answered 400 with nginx's certificate page, or 401, 403, 421, 495, 496                               | held (0)          | FAILED (1)        |
//! | answered any other status (404, 500, nginx's plain 400, a lone 1xx)                                  | inconclusive (1)  | inconclusive (1)  |
//! | sent an alert, or closed in the handshake, before that (`protocol_version`, …)                       | inconclusive (1)  | inconclusive (1)  |
//! | completed the handshake and closed without a reply, or sent nothing in `--timeout`                   | inconclusive (1)  | inconclusive (1)  |
//! | was unreachable, sent something not HTTP/1.x, or its own certificate did not verify                  | inconclusive (1)  | inconclusive (1)  |
//!
//! A verdict header that is not `SUCCESS` on a 2xx/3xx fails `accept`: the origin served
//! the request but did not accept the certificate. `NONE` is what it should say when the
//! probe sent none (it had none, or the origin did not ask), so that holds.
//!
//! Only `held` exits 0. A close after the handshake is inconclusive because in TLS 1.3 the
//! client's handshake is over before the origin has judged its certificate: a close then
//! cannot be told from an origin that let us in and hung up. Every refusing TLS stack the
//! tests meet (rustls, OpenSSL, aop-verify) sends an alert. In TLS 1.2 the origin's
//! Finished comes after the client's certificate flight, so a close before it, once the
//! origin has asked for a certificate and the probe has sent its answer, is a refused
//! handshake. Both are known exactly: the probe watches its own certificate resolver (which
//! rustls calls only on a CertificateRequest) and counts the bytes it writes after that.
//! An alert, too, refuses the certificate only once the origin has it; one before (a
//! protocol version, a cipher, a name it will not serve) proves nothing about
//! certificates. Resumption is off, so every probe is a full handshake.
//!
//! The reply is read for at most the handshake timeout and at most [`REPLY_CAP`] bytes, and
//! classified by [`classify_reply`], a pure function.

use std::net::SocketAddr;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::ClientConfig;
use rustls::client::ResolvesClientCert;
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::TcpStream;

use crate::connect::{Failure, Resolve, Timeouts, address, classify, connect_tls_over};
use crate::{Error, Result};

/// The most of an origin's reply the probe reads and classifies (16 KiB: a status line,
/// headers and the start of a body, where nginx's refusal page is).
pub const REPLY_CAP: usize = 16 * 1024;

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

/// Unicode's invisible formatting characters (general category Cf and the like): bidi
/// embeddings, overrides and isolates, zero-width characters, the soft hyphen, the BOM.
fn is_format(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{061C}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
    )
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
        // Shown in tables and logs: nothing that can reorder or hide text on a terminal.
        if url.chars().any(|c| c.is_control() || is_format(c)) {
            return Err(bad(
                "a control or formatting character (bidi override, zero width, ...)",
            ));
        }
        if url.contains('#') {
            return Err(bad("a #fragment is never sent to the origin; remove it"));
        }
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
        if port == 0 {
            return Err(bad("port 0"));
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
    /// The origin served content (HTTP 2xx or 3xx): it let us in, whatever it says.
    Accepted {
        /// The HTTP status.
        status: u16,
        /// The verdict the origin exposed (`X-Client-Verify`; several joined by `, `).
        verdict: Option<String>,
    },
    /// The origin answered a refusing status: nginx's 400 certificate page, 401, 403,
    /// 421, 495 or 496.
    RefusedHttp {
        /// The HTTP status.
        status: u16,
        /// nginx's message, when the body is nginx's certificate page ("No required SSL
        /// certificate was sent", "The SSL certificate error").
        nginx_page: Option<&'static str>,
    },
    /// The origin answered a status that neither serves content nor refuses (404, 500,
    /// a 400 that is not nginx's certificate page, a 1xx and nothing more): inconclusive.
    Answered {
        /// The HTTP status.
        status: u16,
    },
    /// The origin's reply is not HTTP/1.x: inconclusive.
    NotHttp {
        /// Its first bytes, printable (`\xNN` for anything else).
        start: String,
    },
    /// The origin refused with a TLS alert after asking for a client certificate and
    /// being sent the probe's answer.
    RefusedTls {
        /// The alert's TLS name (`certificate_required`, `unknown_ca`, `handshake_failure`, …).
        alert: String,
    },
    /// The origin sent a TLS alert before it had the probe's certificate (or its lack of
    /// one) — mostly before asking for any: a protocol version, cipher or name it will not
    /// serve. Says nothing about certificates.
    AlertBeforeCertificate {
        /// The alert's TLS name.
        alert: String,
    },
    /// The connection closed (or was reset) while our TLS handshake was still going on.
    ClosedInHandshake {
        /// Whether the origin had asked for a client certificate and the probe had sent
        /// its answer (its certificate flight, up to its Finished): if so, the origin
        /// refused the handshake after seeing it. Only TLS 1.2 can get here, TLS 1.3's
        /// client handshake being over once that flight is sent.
        after_our_certificate: bool,
    },
    /// The handshake completed and the origin closed the connection without a reply:
    /// inconclusive.
    Closed,
    /// The handshake completed and nothing came back in time: inconclusive.
    NoReply {
        /// How long the probe waited.
        after: Duration,
    },
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
    /// This host, not the origin, failed: it ran out of file descriptors (EMFILE,
    /// ENFILE) opening the probe's socket. Says nothing about the origin.
    LocalError {
        /// What happened.
        detail: String,
    },
}

impl Observed {
    /// Whether this proves the origin refused the client (`--expect reject` holds).
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            Self::RefusedHttp { .. }
                | Self::RefusedTls { .. }
                | Self::ClosedInHandshake {
                    after_our_certificate: true
                }
        )
    }

    /// Whether this proves the origin accepts the certificate presented (what `rotate
    /// activate` requires of every origin): the handshake completed, the status is 2xx,
    /// and the origin did not say the certificate failed (no `X-Client-Verify`, or
    /// `SUCCESS`). A 3xx does not: nginx with `ssl_verify_client optional_no_ca` can
    /// redirect every client without a valid certificate to a login page. Nor does any
    /// other status (a 404 could be such a server's answer to the unverified too).
    pub fn is_accepted(&self) -> bool {
        matches!(self, Self::Accepted { status: 200..=299, verdict } if verdict.as_deref().is_none_or(|v| v == "SUCCESS"))
    }

    /// A short machine word: `accepted`, `refused_http`, `answered`, `not_http`,
    /// `refused_tls`, `alert_before_certificate`, `closed_in_handshake`, `closed`, `no_reply`,
    /// `server_untrusted`, `unreachable`, `error`, `local_error`.
    pub fn word(&self) -> &'static str {
        match self {
            Self::Accepted { .. } => "accepted",
            Self::RefusedHttp { .. } => "refused_http",
            Self::Answered { .. } => "answered",
            Self::NotHttp { .. } => "not_http",
            Self::RefusedTls { .. } => "refused_tls",
            Self::AlertBeforeCertificate { .. } => "alert_before_certificate",
            Self::ClosedInHandshake { .. } => "closed_in_handshake",
            Self::Closed => "closed",
            Self::NoReply { .. } => "no_reply",
            Self::ServerUntrusted { .. } => "server_untrusted",
            Self::Unreachable { .. } => "unreachable",
            Self::Error { .. } => "error",
            Self::LocalError { .. } => "local_error",
        }
    }
}

/// What the probe expects of the origin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expectation {
    /// The origin serves this client (2xx/3xx after a completed handshake).
    Accept,
    /// The origin refuses this client (a refused handshake or a refusing status).
    Reject,
}

/// Whether an expectation held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conclusion {
    /// It held: the probe saw proof.
    Held,
    /// `reject` did not hold: the origin served content — its back door is open.
    Open,
    /// `accept` did not hold: the origin refused the client, or said its certificate failed.
    Failed,
    /// Nothing seen proves either way (another status, a close, a timeout, unreachable).
    Inconclusive,
}

impl Conclusion {
    /// `held`, `open`, `failed`, `inconclusive`.
    pub fn word(self) -> &'static str {
        match self {
            Self::Held => "held",
            Self::Open => "open",
            Self::Failed => "failed",
            Self::Inconclusive => "inconclusive",
        }
    }

    /// As printed for people: `held`, `OPEN`, `FAILED`, `inconclusive`.
    pub fn mark(self) -> &'static str {
        match self {
            Self::Held => "held",
            Self::Open => "OPEN",
            Self::Failed => "FAILED",
            Self::Inconclusive => "inconclusive",
        }
    }
}

/// An expectation's outcome, and the one sentence that says what proved it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Judgement {
    /// Held, open, failed or inconclusive.
    pub conclusion: Conclusion,
    /// What the probe saw that decides it ("the origin aborted the TLS handshake with
    /// alert certificate_required").
    pub reason: String,
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
    /// Whether the origin sent a CertificateRequest (`None`: no TCP connection).
    pub certificate_requested: Option<bool>,
    /// Whether the probe offered a certificate in answer to it.
    pub certificate_sent: bool,
}

impl ProbeResult {
    /// Whether `expect` held, and why.
    pub fn judge(&self, expect: Expectation) -> Judgement {
        use Conclusion::{Failed, Held, Inconclusive, Open};
        let nothing = " — this proves nothing either way";
        let client = if self.certificate_sent {
            "this client certificate"
        } else {
            "a client with no certificate"
        };
        let refused = |reason: String| Judgement {
            conclusion: match expect {
                Expectation::Reject => Held,
                Expectation::Accept => Failed,
            },
            reason,
        };
        let before = if self.certificate_requested == Some(true) {
            "after asking for a client certificate but before the probe had sent its answer"
        } else {
            "before asking for a client certificate"
        };
        let inconclusive = |reason: String| Judgement {
            conclusion: Inconclusive,
            reason: format!("{reason}{nothing}"),
        };
        match &self.observed {
            Observed::Accepted { status, verdict } => {
                let shown = verdict
                    .as_ref()
                    .map(|v| format!(" (X-Client-Verify: {v})"))
                    .unwrap_or_default();
                let asked = match self.certificate_requested {
                    Some(false) => "; it did not ask for one",
                    Some(true) if !self.certificate_sent => "; it asked for one but did not require it",
                    _ => "",
                };
                match expect {
                    Expectation::Reject => Judgement {
                        conclusion: Open,
                        reason: format!(
                            "the origin answered HTTP {status}{shown} to {client}{asked} — its back door is OPEN"
                        ),
                    },
                    // NONE is what an origin says when no certificate came: it agrees
                    // with a probe that sent none.
                    Expectation::Accept => match verdict.as_deref() {
                        None | Some("SUCCESS") => Judgement {
                            conclusion: Held,
                            reason: format!("the origin answered HTTP {status}{shown} to {client}"),
                        },
                        Some("NONE") if !self.certificate_sent => Judgement {
                            conclusion: Held,
                            reason: format!("the origin answered HTTP {status}{shown} to {client}"),
                        },
                        Some(v) => Judgement {
                            conclusion: Failed,
                            reason: format!(
                                "the origin answered HTTP {status} but its X-Client-Verify header says {v}: it did not accept {client}"
                            ),
                        },
                    },
                }
            }
            Observed::RefusedHttp {
                status,
                nginx_page: Some(page),
            } => refused(format!(
                "the origin answered HTTP {status} with nginx's '{page}' page"
            )),
            Observed::RefusedHttp { status, .. } => refused(format!(
                "the origin answered HTTP {status} {}",
                reason_phrase(*status)
            )),
            Observed::RefusedTls { alert } => refused(format!(
                "the origin aborted the TLS handshake with alert {alert}"
            )),
            Observed::ClosedInHandshake {
                after_our_certificate: true,
            } => refused(
                "the origin asked for a client certificate, then closed the connection before finishing the TLS handshake".into(),
            ),
            Observed::ClosedInHandshake {
                after_our_certificate: false,
            } => inconclusive(format!(
                "the origin closed the connection during the TLS handshake, {before}"
            )),
            Observed::AlertBeforeCertificate { alert } => inconclusive(format!(
                "the origin aborted the TLS handshake with alert {alert} {before}"
            )),
            Observed::Answered { status } => inconclusive(format!(
                "the origin answered HTTP {status}, which neither serves content nor refuses a certificate"
            )),
            Observed::NotHttp { start } => {
                inconclusive(format!("the origin's reply is not HTTP/1.x: \"{start}\""))
            }
            Observed::Closed => inconclusive(
                "the origin completed the TLS handshake and closed the connection without answering".into(),
            ),
            Observed::NoReply { after } => inconclusive(format!(
                "the origin completed the TLS handshake but sent nothing in {}s",
                after.as_secs_f32()
            )),
            Observed::ServerUntrusted { detail } => inconclusive(format!(
                "the origin's own certificate did not verify ({detail}); give the right --cacert"
            )),
            Observed::Unreachable { detail } => {
                inconclusive(format!("the origin is unreachable: {detail}"))
            }
            Observed::Error { detail } => inconclusive(detail.clone()),
            Observed::LocalError { detail } => {
                inconclusive(format!("this host could not probe: {detail}"))
            }
        }
    }
}

/// The reason phrase of a refusing status.
fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        421 => "Misdirected Request",
        495 => "SSL Certificate Error",
        496 => "SSL Certificate Required",
        _ => "",
    }
}

/// Probe one target with `config` (its client certificate, if any, and its roots).
///
/// The probe runs on a copy of `config` (its crypto provider included) with resumption
/// off and a resolver that notes whether the origin asked for a certificate.
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
        certificate_requested: None,
        certificate_sent: false,
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
    let written = Arc::new(AtomicU64::new(0));
    let watch = Arc::new(Watch {
        inner: config.client_auth_cert_resolver.clone(),
        written: written.clone(),
        written_at_request: AtomicU64::new(u64::MAX),
        requested: AtomicBool::new(false),
        sent: AtomicBool::new(false),
    });
    let mut config = (*config).clone();
    config.client_auth_cert_resolver = watch.clone();
    config.resumption = rustls::client::Resumption::disabled();
    // The probe writes its request as HTTP/1.1 by hand: it must never negotiate h2,
    // whatever the identity's configuration offers.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connected = connect_tls_over(Arc::new(config), &target.host, addr, timeouts, |tcp| {
        Counted { tcp, written }
    })
    .await;
    let requested = watch.requested.load(Ordering::Relaxed);
    result.certificate_sent = watch.sent.load(Ordering::Relaxed);
    let mut tls = match connected {
        Ok(t) => t,
        // Out of descriptors (EMFILE 24, ENFILE 23 on Linux and the BSDs): our failure.
        Err(e @ Error::Connect { .. }) if matches!(&e, Error::Connect { error, .. } if matches!(error.raw_os_error(), Some(23 | 24))) =>
        {
            result.observed = Observed::LocalError {
                detail: e.to_string(),
            };
            return result;
        }
        Err(e @ (Error::Connect { .. } | Error::Timeout { .. })) => {
            result.observed = Observed::Unreachable {
                detail: e.to_string(),
            };
            return result;
        }
        Err(e) => {
            result.certificate_requested = Some(requested);
            result.observed = handshake_failed(&e, watch.answered());
            return result;
        }
    };
    result.tls_version = tls
        .get_ref()
        .1
        .protocol_version()
        .map(aop_pki::tls_version_name);
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: certtool-probe\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        target.path,
        host_header(target)
    );
    // In TLS 1.3 the client finishes its handshake before the server has judged its
    // certificate: a refusal arrives as an alert on the first read. A failed write (the
    // origin already gone) is not the end: the alert may be waiting to be read.
    let limit = timeouts.handshake;
    let mut buf = Vec::with_capacity(4096);
    let io = async {
        let _ = tls.write_all(request.as_bytes()).await;
        let _ = tls.flush().await;
        let mut chunk = [0u8; 4096];
        let mut state = Progress::AwaitHead;
        loop {
            let room = (REPLY_CAP - buf.len()).min(chunk.len());
            if room == 0 {
                return Ok::<_, std::io::Error>(());
            }
            let n = tls.read(&mut chunk[..room]).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
            // Until the head is in, only a newline can complete it: a reply trickling in
            // a byte at a time costs linear work, not quadratic.
            if state == Progress::AwaitHead && !chunk[..n].contains(&b'\n') {
                continue;
            }
            state = progress(&buf);
            if state == Progress::Decided {
                return Ok(());
            }
        }
    };
    let read = tokio::time::timeout(limit, io).await;
    result.certificate_requested = Some(requested);
    result.observed = match read {
        Err(_) if buf.is_empty() => Observed::NoReply { after: limit },
        Ok(Err(e)) if buf.is_empty() => match classify(&e) {
            Failure::Refused { alert } if watch.answered() => Observed::RefusedTls { alert },
            Failure::Refused { alert } => Observed::AlertBeforeCertificate { alert },
            Failure::Other { .. } if is_close(&e) => Observed::Closed,
            f => failure_to_observed(f),
        },
        _ => classify_reply(&buf),
    };
    result
}

/// The client certificate resolver, watched: rustls calls `resolve` only when the origin
/// sends a CertificateRequest, and writes its answer after that.
#[derive(Debug)]
struct Watch {
    inner: Arc<dyn ResolvesClientCert>,
    /// Bytes the probe has written to the socket so far (see [`Counted`]).
    written: Arc<AtomicU64>,
    /// `written` when the CertificateRequest came (`u64::MAX` until then).
    written_at_request: AtomicU64,
    requested: AtomicBool,
    sent: AtomicBool,
}

impl Watch {
    /// Whether the origin asked for a certificate and the probe has since written its
    /// answer (Certificate, CertificateVerify, Finished) to the socket.
    fn answered(&self) -> bool {
        self.written.load(Ordering::Relaxed) > self.written_at_request.load(Ordering::Relaxed)
    }
}

impl ResolvesClientCert for Watch {
    fn resolve(
        &self,
        root_hint_subjects: &[&[u8]],
        sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.requested.store(true, Ordering::Relaxed);
        self.written_at_request
            .store(self.written.load(Ordering::Relaxed), Ordering::Relaxed);
        let key = self.inner.resolve(root_hint_subjects, sigschemes);
        self.sent.store(key.is_some(), Ordering::Relaxed);
        key
    }

    fn only_raw_public_keys(&self) -> bool {
        self.inner.only_raw_public_keys()
    }

    fn has_certs(&self) -> bool {
        self.inner.has_certs()
    }
}

/// A connection that ended without an alert: EOF, reset, broken pipe.
fn is_close(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::UnexpectedEof
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::BrokenPipe
    )
}

/// A handshake that failed on our side of the connection.
///
/// `answered`: the origin asked for a certificate and the probe wrote its answer.
fn handshake_failed(e: &Error, answered: bool) -> Observed {
    if let Error::Handshake { error, .. } = e
        && crate::connect::rustls_error(error).is_none()
        && is_close(error)
    {
        return Observed::ClosedInHandshake {
            after_our_certificate: answered,
        };
    }
    match classify(e) {
        Failure::Refused { alert } if answered => Observed::RefusedTls { alert },
        Failure::Refused { alert } => Observed::AlertBeforeCertificate { alert },
        f => failure_to_observed(f),
    }
}

/// A TCP stream that counts the bytes written to it, so a failure can be placed before or
/// after the probe's certificate flight.
struct Counted {
    tcp: TcpStream,
    written: Arc<AtomicU64>,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.tcp).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &polled {
            self.written.fetch_add(*n as u64, Ordering::Relaxed);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
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

fn failure_to_observed(f: Failure) -> Observed {
    match f {
        Failure::Refused { alert } => Observed::RefusedTls { alert },
        Failure::ServerUntrusted { detail } => Observed::ServerUntrusted { detail },
        Failure::Other { detail } => Observed::Error { detail },
    }
}

/// The messages of nginx's certificate pages (its 400 for `ssl_verify_client on`, and
/// what `return 495;` / `return 496;` become).
const NGINX_PAGES: [&str; 2] = [
    "No required SSL certificate was sent",
    "The SSL certificate error",
];

/// The statuses that refuse a client whatever their body says.
const REFUSING: [u16; 5] = [401, 403, 421, 495, 496];

/// Classify what an origin sent after the handshake (at most [`REPLY_CAP`] bytes of it;
/// anything beyond is ignored). Pure, never panics, linear in the input.
///
/// Empty: [`Observed::Closed`]. Not `HTTP/1.x NNN`: [`Observed::NotHttp`]. Interim 1xx
/// responses are skipped. Then 2xx/3xx is [`Observed::Accepted`] whatever the headers or
/// body say; 401, 403, 421, 495, 496, and a 400 whose body is nginx's certificate page (its
/// message in the first KiB), are [`Observed::RefusedHttp`]; any other status is
/// [`Observed::Answered`].
pub fn classify_reply(reply: &[u8]) -> Observed {
    let reply = &reply[..reply.len().min(REPLY_CAP)];
    match parse(reply) {
        Parsed::Empty => Observed::Closed,
        Parsed::NotHttp | Parsed::Partial => Observed::NotHttp {
            start: printable(reply, 40),
        },
        Parsed::Interim(status) => Observed::Answered { status },
        Parsed::Final(r) => {
            let body = r.body.unwrap_or_default();
            match r.status {
                200..=399 => Observed::Accepted {
                    status: r.status,
                    verdict: verdict(r.head),
                },
                400 => match nginx_page(body) {
                    Some(page) => Observed::RefusedHttp {
                        status: 400,
                        nginx_page: Some(page),
                    },
                    None => Observed::Answered { status: 400 },
                },
                s if REFUSING.contains(&s) => Observed::RefusedHttp {
                    status: s,
                    nginx_page: nginx_page(body),
                },
                status => Observed::Answered { status },
            }
        }
    }
}

/// How far a reply has come.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Progress {
    /// Enough to classify it: the probe stops reading.
    Decided,
    /// The head of a final response is not complete: only a newline can change that.
    AwaitHead,
    /// A 400's head is in; its body may still turn out to be nginx's page.
    AwaitBody,
}

/// Whether the bytes so far decide the reply, so the probe can stop reading: the head of
/// a final response is complete, and unless it is a 400 (whose body must be searched for
/// nginx's page) that is enough; a 400's body is complete or has the page.
fn progress(reply: &[u8]) -> Progress {
    let r = match parse(reply) {
        Parsed::NotHttp => return Progress::Decided,
        Parsed::Empty | Parsed::Partial | Parsed::Interim(_) => return Progress::AwaitHead,
        Parsed::Final(r) => r,
    };
    let Some(body) = r.body else {
        return Progress::AwaitHead;
    };
    let complete = r.status != 400
        || nginx_page(body).is_some()
        || header_values(r.head, "content-length")
            .next()
            .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse::<usize>().ok())
            .is_some_and(|n| body.len() >= n)
        || (header_values(r.head, "transfer-encoding").any(|v| v.eq_ignore_ascii_case(b"chunked"))
            && body.ends_with(b"0\r\n\r\n"));
    if complete {
        Progress::Decided
    } else {
        Progress::AwaitBody
    }
}

enum Parsed<'a> {
    Empty,
    NotHttp,
    /// The start of a status line, cut short.
    Partial,
    /// Only interim (1xx) responses, the last of them this status.
    Interim(u16),
    Final(Response<'a>),
}

struct Response<'a> {
    status: u16,
    /// The header lines (after the status line, before the blank line).
    head: &'a [u8],
    /// What follows the blank line; `None` if the head is not complete yet.
    body: Option<&'a [u8]>,
}

fn parse(reply: &[u8]) -> Parsed<'_> {
    if reply.is_empty() {
        return Parsed::Empty;
    }
    let mut rest = reply;
    let mut interim = None;
    loop {
        let Some(status) = status_of(rest) else {
            return match (status_prefix(rest), interim) {
                (true, Some(s)) => Parsed::Interim(s),
                (true, None) => Parsed::Partial,
                (false, _) => Parsed::NotHttp,
            };
        };
        let (head, body) = split_head(rest);
        if (100..200).contains(&status) && status != 101 {
            // An interim response: the final one follows (each pass consumes a head).
            match body {
                Some(b) if !b.is_empty() => {
                    rest = b;
                    interim = Some(status);
                    continue;
                }
                _ => return Parsed::Interim(status),
            }
        }
        return Parsed::Final(Response { status, head, body });
    }
}

/// `HTTP/1.x NNN` followed by a space or the end of the line: the status, 100–599.
fn status_of(line: &[u8]) -> Option<u16> {
    let rest = line.strip_prefix(b"HTTP/1.")?;
    let (&minor, rest) = rest.split_first()?;
    let rest = rest.strip_prefix(b" ")?;
    if !minor.is_ascii_digit() || rest.len() < 3 || !rest[..3].iter().all(u8::is_ascii_digit) {
        return None;
    }
    if !matches!(rest.get(3), None | Some(b' ' | b'\r' | b'\n')) {
        return None;
    }
    let status = rest[..3]
        .iter()
        .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    (100..=599).contains(&status).then_some(status)
}

/// Whether `bytes` could still grow into a status line (`HTTP/1.x NNN`).
fn status_prefix(bytes: &[u8]) -> bool {
    const SHAPE: &[u8; 12] = b"HTTP/1.d ddd";
    bytes.len() < 12
        && bytes.iter().zip(SHAPE).all(|(&b, &want)| match want {
            b'd' => b.is_ascii_digit(),
            _ => b == want,
        })
}

/// Split a response at its blank line: (header lines, body). Without a blank line yet,
/// the head is everything after the status line and the body `None`. Accepts bare LF.
fn split_head(response: &[u8]) -> (&[u8], Option<&[u8]>) {
    let start = response
        .iter()
        .position(|&b| b == b'\n')
        .map_or(response.len(), |i| i + 1);
    let mut line = start;
    while line < response.len() {
        let end = response[line..]
            .iter()
            .position(|&b| b == b'\n')
            .map(|i| line + i);
        let Some(end) = end else { break };
        let content = &response[line..end];
        if content.is_empty() || content == b"\r" {
            return (&response[start..line], Some(&response[end + 1..]));
        }
        line = end + 1;
    }
    (&response[start..], None)
}

/// The values of header `name` (ASCII case-insensitive) in `head`.
fn header_values<'a>(head: &'a [u8], name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
    head.split(|&b| b == b'\n').filter_map(move |line| {
        let colon = line.iter().position(|&b| b == b':')?;
        line[..colon]
            .eq_ignore_ascii_case(name.as_bytes())
            .then(|| line[colon + 1..].trim_ascii())
    })
}

/// `X-Client-Verify`, printable; several joined by `, ` (which is never `SUCCESS`).
fn verdict(head: &[u8]) -> Option<String> {
    let values: Vec<String> = header_values(head, "x-client-verify")
        .take(4)
        .map(|v| printable(v, 80))
        .collect();
    (!values.is_empty()).then(|| values.join(", "))
}

/// Which of nginx's certificate pages `body` is, if any. nginx's pages are about 240
/// bytes, their message in the first 100: only the first KiB is searched.
fn nginx_page(body: &[u8]) -> Option<&'static str> {
    let start = &body[..body.len().min(1024)];
    NGINX_PAGES
        .into_iter()
        .find(|page| start.windows(page.len()).any(|w| w == page.as_bytes()))
}

/// At most `max` bytes as text a terminal cannot be tricked by: printable ASCII as is,
/// everything else `\xNN`; `…` if cut.
fn printable(bytes: &[u8], max: usize) -> String {
    let mut out = String::with_capacity(max.min(bytes.len()) + 3);
    for &b in bytes.iter().take(max) {
        if b == b' ' || b.is_ascii_graphic() && b != b'\\' && b != b'"' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    if bytes.len() > max {
        out.push('…');
    }
    out
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
        // Port 0, a fragment (never sent), characters that hide or reorder text.
        for (bad, why) in [
            ("https://example.com:0/", "port 0"),
            ("https://[::1]:0/", "port 0"),
            ("https://example.com/#top", "a #fragment is never sent"),
            ("https://example.com#top", "a #fragment is never sent"),
            (
                "https://example.com/\u{202E}gnp.exe",
                "a control or formatting",
            ),
            ("https://exa\u{200B}mple.com/", "a control or formatting"),
            ("https://example.com/\u{2066}x", "a control or formatting"),
            ("https://example.com/\u{7}", "a control or formatting"),
        ] {
            let e = bad.parse::<Target>().unwrap_err().to_string();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    #[test]
    fn replies() {
        let accepted = |status, verdict: Option<&str>| Observed::Accepted {
            status,
            verdict: verdict.map(Into::into),
        };
        // Replies whose whole classification is known.
        let exact: [(&[u8], Observed); 7] = [
            (
                b"HTTP/1.1 400 Bad Request\r\nServer: nginx\r\n\r\n<html><center>No required SSL certificate was sent</center></html>",
                Observed::RefusedHttp {
                    status: 400,
                    nginx_page: Some("No required SSL certificate was sent"),
                },
            ),
            (
                b"HTTP/1.1 200 OK\r\nX-Client-Verify: SUCCESS\r\n\r\nhi",
                accepted(200, Some("SUCCESS")),
            ),
            // Interim responses are skipped; a 1xx alone is inconclusive.
            (
                b"HTTP/1.1 100 Continue\r\n\r\n",
                Observed::Answered { status: 100 },
            ),
            (b"", Observed::Closed),
            (
                b"\x1b[2Jgarbage",
                Observed::NotHttp {
                    start: "\\x1b[2Jgarbage".into(),
                },
            ),
            // Two verdict headers are never SUCCESS; escapes in a verdict are neutralised.
            (
                b"HTTP/1.1 200 OK\r\nX-Client-Verify: SUCCESS\r\nX-Client-Verify: NONE\r\n\r\n",
                accepted(200, Some("SUCCESS, NONE")),
            ),
            (
                b"HTTP/1.1 200 OK\r\nX-Client-Verify: \x1b]0;x\x07\r\n\r\n",
                accepted(200, Some("\\x1b]0;x\\x07")),
            ),
        ];
        for (reply, want) in exact {
            assert_eq!(classify_reply(reply), want, "{reply:?}");
        }
        // Content served is open, whatever the headers or the body say.
        let optional = b"HTTP/1.1 200 OK\r\nx-client-verify: NONE\r\n\r\n";
        assert_eq!(classify_reply(optional).word(), "accepted");
        assert!(!classify_reply(optional).is_accepted());
        let page = b"HTTP/1.1 200 OK\r\n\r\nNo required SSL certificate was sent";
        assert_eq!(classify_reply(page).word(), "accepted");
        assert!(!classify_reply(page).is_refusal());
        // A redirect serves nothing: optional_no_ca + `return 302 /login` for the
        // unverified must not prove acceptance.
        let moved = b"HTTP/1.0 302 Found\nLocation: /login\n\n";
        assert_eq!(classify_reply(moved).word(), "accepted");
        assert!(!classify_reply(moved).is_accepted());
        for s in [301, 303, 307, 308, 399] {
            let r = format!("HTTP/1.1 {s} x\r\nLocation: /login\r\n\r\n");
            assert!(!classify_reply(r.as_bytes()).is_accepted(), "{s}");
        }
        for s in [200, 204, 299] {
            let r = format!("HTTP/1.1 {s} x\r\n\r\n");
            assert!(classify_reply(r.as_bytes()).is_accepted(), "{s}");
            let r = format!("HTTP/1.1 {s} x\r\nX-Client-Verify: SUCCESS\r\n\r\n");
            assert!(classify_reply(r.as_bytes()).is_accepted(), "{s}");
            let r = format!("HTTP/1.1 {s} x\r\nX-Client-Verify: FAILED:x\r\n\r\n");
            assert!(!classify_reply(r.as_bytes()).is_accepted(), "{s}");
        }
        // Refusals and inconclusive answers prove nothing either; nor does silence.
        for r in [
            &b"HTTP/1.1 403 Forbidden\r\n\r\n"[..],
            b"HTTP/1.1 401 x\r\n\r\n",
            b"HTTP/1.1 404 Not Found\r\n\r\n",
            b"HTTP/1.1 500 x\r\n\r\n",
            b"HTTP/1.1 103 Early Hints\r\n\r\n",
            b"",
        ] {
            assert!(!classify_reply(r).is_accepted(), "{r:?}");
        }
        // Refusing statuses, with or without a body; a plain 400 proves nothing.
        for s in [401, 403, 421, 495, 496] {
            let r = format!("HTTP/1.1 {s} \r\n\r\n");
            assert!(classify_reply(r.as_bytes()).is_refusal(), "{s}");
        }
        let early = b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 403 Forbidden\r\n\r\n";
        assert!(classify_reply(early).is_refusal());
        for (reply, word) in [
            (&b"HTTP/1.1 400 Bad Request\r\n\r\nbad host"[..], "answered"),
            (b"HTTP/1.1 404 Not Found\r\n\r\n", "answered"),
            (b"HTTP/1.1 500 x\r\n\r\n", "answered"),
            (b"HTTP/1.1 2000 OK\r\n\r\n", "not_http"),
            (b"HTTP/1.1 099 x\r\n", "not_http"),
            (b"HTTP/2 200\r\n", "not_http"),
            (b"HTTP/1.1 20", "not_http"),
        ] {
            assert_eq!(classify_reply(reply).word(), word, "{reply:?}");
        }
    }

    #[test]
    fn a_reply_is_decided_once_its_head_is_in() {
        let decided = |r: &[u8]| progress(r) == Progress::Decided;
        assert!(!decided(b"HTTP/1.1 200 OK\r\nX-Client-Verify: NO"));
        assert!(decided(b"HTTP/1.1 200 OK\r\nX-Client-Verify: NONE\r\n\r\n"));
        assert!(!decided(
            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 100\r\n\r\n<html>"
        ));
        assert!(decided(
            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 6\r\n\r\n<html>"
        ));
        assert!(decided(
            b"HTTP/1.1 400 Bad Request\r\n\r\nThe SSL certificate error"
        ));
        let chunked = b"HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nbad\r\n";
        assert!(!decided(chunked));
        assert!(decided(&[&chunked[..], b"0\r\n\r\n"].concat()));
        assert!(!decided(b"HTTP/1.1 100 Continue\r\n\r\n"));
        assert!(decided(b"SSH-2.0"));
        // A status line split across reads is not a verdict yet.
        for cut in ["H", "HTTP/1.", "HTTP/1.1 4", "HTTP/1.1 100 x\r\n\r\nHTTP/"] {
            assert!(!decided(cut.as_bytes()), "{cut}");
        }
    }

    #[test]
    fn any_bytes_classify_without_panic_in_bounded_time() {
        // A cheap stand-in for the fuzzer: prefixes and mutations of real replies, and
        // the worst shapes for the parser (many interim responses, a huge input).
        let seeds: [&[u8]; 4] = [
            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 5\r\n\r\nThe SSL certificate error",
            b"HTTP/1.1 103 x\r\n\r\nHTTP/1.1 200 OK\r\nX-Client-Verify: NONE\r\n\r\n",
            b"HTTP/1.0 496 \n\n",
            b"\r\n\r\n\n\n:::",
        ];
        for seed in seeds {
            for cut in 0..=seed.len() {
                let _ = classify_reply(&seed[..cut]);
                let _ = progress(&seed[..cut]);
                let mut m = seed.to_vec();
                if cut < m.len() {
                    m[cut] ^= 0xff;
                }
                let _ = classify_reply(&m);
            }
        }
        let many = b"HTTP/1.1 100 x\r\n\r\n".repeat(10_000);
        assert_eq!(classify_reply(&many), Observed::Answered { status: 100 });
        let huge = vec![b'\n'; 10 << 20];
        let t = std::time::Instant::now();
        let _ = classify_reply(&huge);
        assert!(t.elapsed() < Duration::from_secs(1));
    }
}
