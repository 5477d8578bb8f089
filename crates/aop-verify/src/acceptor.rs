//! Accepting connections: a byte stream in (TCP, a Unix socket, a PROXY-protocol
//! wrapper, a test duplex), a TLS stream and its verdict out — or a refusal that carries
//! the verdict. Every connection's verdict is logged exactly once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::HandshakeKind;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_rustls::LazyConfigAcceptor;
use tokio_rustls::server::TlsStream;

use crate::policy::{Mode, Policy};
use crate::reload::PolicyHandle;
use crate::trust::unix_time;
use crate::verdict::{NoneCause, Outcome, Reason, Verdict};
use crate::verifier::run_handshake;

/// Limits that keep a flood of slow or garbage handshakes from starving the origin.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Limits {
    /// The whole handshake (waiting for a slot included) must finish within this.
    /// Default 10 s.
    pub handshake_timeout: Duration,
    /// At most this many handshakes in progress at once; others wait (within their
    /// timeout) for a slot. Established connections do not count. Default 1024.
    pub max_handshakes: usize,
    /// Log each verdict as a `tracing` event (target `aop::verdict`). Default true.
    pub log_verdicts: bool,
    /// After the handshake, a request's head (request line and headers) must arrive
    /// whole within this, from its first byte: a client that trickles a header a byte at
    /// a time is closed. Enforced by the hyper glue, on HTTP/1.1 (an HTTP/2 header block
    /// is bounded by [`Http2Limits::max_header_list_size`]). Default 10 s.
    pub header_read_timeout: Duration,
    /// A connection with no request in progress is closed after this long without the
    /// first byte of a new one (the first request included). Enforced by the hyper glue;
    /// on HTTP/2, with no stream open for this long (PINGs and other frames do not count),
    /// the connection is sent GOAWAY. Default 60 s.
    pub keepalive_timeout: Duration,
    /// A connection whose client has not taken any of the response for this long (its
    /// writes blocked) is closed: a client that stops reading holds nothing for ever.
    /// On HTTP/2, also per stream: a response that waits this long for the client's
    /// flow-control credit (WINDOW_UPDATE) is reset, while the connection goes on — a
    /// client that reads the socket but withholds credit would otherwise hold the
    /// stream, its service future and its upstream for ever. Enforced by the hyper
    /// glue. Default 60 s (nginx's `send_timeout`).
    pub send_timeout: Duration,
    /// A connection serves at most this many requests (HTTP/2: streams), then is told
    /// to end: on HTTP/1.1 the last response says `Connection: close`; on HTTP/2 the
    /// connection is sent GOAWAY once the last stream is accepted and the streams in
    /// flight finish. Streams the client opens after it — those it sent before it saw
    /// the GOAWAY — are still served, up to [`Http2Limits::max_concurrent_streams`] of
    /// them; more are answered 421 without reaching the service. A client reconnects (a fresh handshake, under the policy then in force);
    /// what one connection can make the service start, and how long one handshake's
    /// verdict is reused, stay bounded. Enforced by the hyper glue (0 acts as 1).
    /// Default 1000 (nginx's `keepalive_requests`, which applies to HTTP/2 streams too).
    pub max_requests_per_connection: u64,
    /// The HTTP/2 settings of the hyper glue's connections (ALPN `h2`).
    pub http2: Http2Limits,
    /// Pass a plain `CONNECT` request (HTTP/1.1, or HTTP/2 without `:protocol`: a
    /// tunnel to any host and port) to the service. Default false: the hyper glue answers
    /// it `405 Method Not Allowed` (and closes an HTTP/1.1 connection), since hyper
    /// turns any 2xx answer to a CONNECT into a tunnel, and an origin is not a forward
    /// proxy. Extended CONNECT (HTTP/2 with `:protocol`, RFC 8441) is governed by
    /// [`Http2Limits::connect_protocol`] instead. A tunnel holds its connection and
    /// stops with it (`aop_verify::hyper::InFlight`, feature `hyper`).
    pub plain_connect: bool,
}

/// The settings of an HTTP/2 connection served by the hyper glue: what one client
/// connection may hold at once. The defaults bound a connection to 100 streams and, in
/// the worst case, about 1 MiB of request data buffered (the connection window) and
/// 6.4 MiB of response data (100 × 64 KiB) — against hyper's defaults of 200 streams and
/// 80 MiB.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Http2Limits {
    /// Streams open at once (SETTINGS_MAX_CONCURRENT_STREAMS); more are refused.
    /// Default 100 (nginx: 128, hyper: 200).
    pub max_concurrent_streams: u32,
    /// The largest header list accepted (SETTINGS_MAX_HEADER_LIST_SIZE, as HTTP/2
    /// counts it); a larger one is answered 431, a far larger one ends the connection.
    /// Default 16 KiB (hyper's).
    pub max_header_list_size: u32,
    /// How much request body a stream may send before the server reads it (its flow
    /// control window). Default 256 KiB (hyper: 1 MiB).
    pub initial_stream_window_size: u32,
    /// The same for the whole connection. Default 1 MiB (hyper's).
    pub initial_connection_window_size: u32,
    /// Response data buffered per stream while the client's window is closed. Default
    /// 64 KiB (hyper: 400 KiB).
    pub max_send_buf_size: usize,
    /// Streams the client opened and reset before they were served, held at once, before
    /// the connection is ended (the "rapid reset" attack, CVE-2023-44487). Default 20
    /// (h2's).
    pub max_pending_accept_reset_streams: usize,
    /// Streams the server itself reset for the client's errors before the connection is
    /// ended (RUSTSEC-2024-0003). Default 1024 (hyper's).
    pub max_local_error_reset_streams: usize,
    /// Send a PING this often to see that the client is alive; `None` sends none.
    /// Default 30 s. (It does not keep an idle connection open: see
    /// [`Limits::keepalive_timeout`].)
    pub keep_alive_interval: Option<Duration>,
    /// Close the connection if a PING is not answered within this. Default 20 s.
    pub keep_alive_timeout: Duration,
    /// Streams that may end before their response does — reset by the client
    /// (RST_STREAM) after the service was called, or reset by the glue because the
    /// client withheld flow-control credit — before a connection on which they are also
    /// more than the streams whose response completed is sent GOAWAY (a reset storm:
    /// each such stream costs a service call, an upstream request, for no response).
    /// Its streams in flight may finish, within [`Limits::keepalive_timeout`]; streams
    /// opened after it are answered 421. A tunnel (a 2xx answer to a CONNECT) and a
    /// stream the glue refused never count. An edge that carries many visitors' requests
    /// on one connection sees some cancelled, in proportion, and keeps it; what one
    /// connection can make the service start stays bounded by
    /// [`Limits::max_requests_per_connection`]. h2's own
    /// [`Http2Limits::max_pending_accept_reset_streams`] only sees streams reset before
    /// they are accepted. Default 100.
    pub max_abandoned_streams: usize,
    /// Accept extended CONNECT (RFC 8441: SETTINGS_ENABLE_CONNECT_PROTOCOL), the way a
    /// WebSocket is carried over HTTP/2: a `CONNECT` request with a `:protocol`
    /// (`hyper::ext::Protocol` in its extensions) whose `200` turns the stream into a
    /// tunnel (`hyper::upgrade::on`). Default false: a server that does not tunnel
    /// should not say it does, and a tunnel must hold its connection
    /// (`aop_verify::hyper::InFlight`, feature `hyper`) and bound its own idle time.
    pub connect_protocol: bool,
}

impl Default for Http2Limits {
    fn default() -> Self {
        Self {
            max_concurrent_streams: 100,
            max_header_list_size: 16 * 1024,
            initial_stream_window_size: 256 * 1024,
            initial_connection_window_size: 1024 * 1024,
            max_send_buf_size: 64 * 1024,
            max_pending_accept_reset_streams: 20,
            max_local_error_reset_streams: 1024,
            keep_alive_interval: Some(Duration::from_secs(30)),
            keep_alive_timeout: Duration::from_secs(20),
            max_abandoned_streams: 100,
            connect_protocol: false,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            max_handshakes: 1024,
            log_verdicts: true,
            header_read_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(60),
            max_requests_per_connection: 1000,
            http2: Http2Limits::default(),
            plain_connect: false,
        }
    }
}

impl Limits {
    /// Set [`Limits::handshake_timeout`].
    pub fn with_handshake_timeout(mut self, t: Duration) -> Self {
        self.handshake_timeout = t;
        self
    }

    /// Set [`Limits::max_handshakes`].
    pub fn with_max_handshakes(mut self, n: usize) -> Self {
        self.max_handshakes = n;
        self
    }

    /// Set [`Limits::header_read_timeout`].
    pub fn with_header_read_timeout(mut self, t: Duration) -> Self {
        self.header_read_timeout = t;
        self
    }

    /// Set [`Limits::keepalive_timeout`].
    pub fn with_keepalive_timeout(mut self, t: Duration) -> Self {
        self.keepalive_timeout = t;
        self
    }

    /// Set [`Limits::send_timeout`].
    pub fn with_send_timeout(mut self, t: Duration) -> Self {
        self.send_timeout = t;
        self
    }

    /// Set [`Limits::max_requests_per_connection`].
    pub fn with_max_requests_per_connection(mut self, n: u64) -> Self {
        self.max_requests_per_connection = n;
        self
    }

    /// Set [`Limits::http2`].
    pub fn with_http2(mut self, http2: Http2Limits) -> Self {
        self.http2 = http2;
        self
    }

    /// Set [`Limits::log_verdicts`].
    pub fn with_log_verdicts(mut self, on: bool) -> Self {
        self.log_verdicts = on;
        self
    }

    /// Set [`Limits::plain_connect`].
    pub fn with_plain_connect(mut self, on: bool) -> Self {
        self.plain_connect = on;
        self
    }
}

/// A connection whose handshake completed. In `require` mode its verdict is `SUCCESS`;
/// in `optional` mode it may be anything, for the application to decide. `IO` is the
/// stream it was accepted on (a `TcpStream` unless the caller gave another).
#[derive(Debug)]
pub struct Accepted<IO = TcpStream> {
    /// The TLS stream, ready for the application protocol.
    pub(crate) stream: TlsStream<IO>,
    /// The verdict (already logged).
    pub(crate) verdict: Verdict,
    /// The policy the connection was accepted under (to check that each request's Host
    /// belongs to the same rule as the SNI).
    pub(crate) policy: Arc<Policy>,
    /// The live policy: after a reload, the hyper glue re-checks a keep-alive
    /// connection's certificate against the new policy before its next request.
    #[cfg(feature = "hyper")]
    pub(crate) handle: PolicyHandle,
    /// The acceptor's limits (the hyper glue enforces the post-handshake timeouts).
    #[cfg(feature = "hyper")]
    pub(crate) limits: Limits,
}

impl<IO> Accepted<IO> {
    /// The connection's verdict (already logged).
    pub fn verdict(&self) -> &Verdict {
        &self.verdict
    }

    /// The TLS stream (its rustls connection: `stream().get_ref().1`).
    pub fn stream(&self) -> &TlsStream<IO> {
        &self.stream
    }

    /// The TLS stream, to read and write the application protocol.
    pub fn stream_mut(&mut self) -> &mut TlsStream<IO> {
        &mut self.stream
    }

    /// The protocol ALPN chose (`h2`, `http/1.1`), or `None` if the client offered none
    /// the rule offers (HTTP/1.1, then: RFC 9113 §3.3 allows HTTP/2 over TLS only by
    /// ALPN).
    pub fn alpn(&self) -> Option<&[u8]> {
        self.stream.get_ref().1.alpn_protocol()
    }

    /// The TLS stream and the verdict, for an application that serves the connection
    /// itself (the hyper glue's Host and reload checks are then the application's).
    /// Speak the protocol [`Accepted::alpn`] names: by default a policy offers `h2`
    /// first ([`crate::PolicySpec::alpn`]), so a client that can speak HTTP/2 will.
    pub fn into_parts(self) -> (TlsStream<IO>, Verdict) {
        (self.stream, self.verdict)
    }

    /// Whether a request for `host` (its Host header or URI authority, port allowed)
    /// belongs to the rule this connection was accepted under. A client that got in
    /// under one rule's SNI (or under the default rule with no SNI) must not reach a
    /// hostname whose rule trusts someone else: answer such requests 421.
    pub fn host_matches_rule(&self, host: &str) -> bool {
        host_in_rule(&self.policy, self.verdict.rule.as_deref(), host)
    }
}

/// See [`Accepted::host_matches_rule`]: a host that does not parse strictly (see
/// [`crate::authority`]) belongs to no rule.
pub(crate) fn host_in_rule(policy: &Policy, rule: Option<&str>, host: &str) -> bool {
    crate::authority::parse(host).is_ok_and(|a| authority_in_rule(policy, rule, &a))
}

/// Whether a parsed authority's host selects the rule named `rule`.
pub(crate) fn authority_in_rule(
    policy: &Policy,
    rule: Option<&str>,
    authority: &crate::authority::Authority,
) -> bool {
    let name = authority.host.match_name();
    let selected = policy.select(Some(&name)).ok().map(|r| r.name().as_ref());
    selected.is_some() && selected == rule
}

/// A connection that was refused: the handshake failed, timed out, or the policy said no.
#[derive(Debug)]
pub struct Refused {
    /// The verdict (already logged).
    pub verdict: Verdict,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "connection refused: {}", self.verdict)?;
        if let Some(d) = &self.verdict.detail {
            write!(f, " ({d})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Refused {}

/// The origin's acceptor: chooses the rule from the ClientHello's SNI, runs the
/// handshake under that rule's `ServerConfig`, and produces the verdict.
///
/// Cheap to clone; clones share the policy handle and the handshake limit.
#[derive(Clone, Debug)]
pub struct Acceptor {
    policy: PolicyHandle,
    limits: Limits,
    permits: Arc<Semaphore>,
}

impl Acceptor {
    /// An acceptor serving `policy` (reload it through the handle) with `limits`.
    pub fn new(policy: PolicyHandle, limits: Limits) -> Self {
        let permits = Arc::new(Semaphore::new(
            limits.max_handshakes.clamp(1, Semaphore::MAX_PERMITS),
        ));
        Self {
            policy,
            limits,
            permits,
        }
    }

    /// The policy handle (for reloads).
    pub fn policy(&self) -> &PolicyHandle {
        &self.policy
    }

    /// Run the TLS handshake on `io` and decide. The policy in force when the
    /// connection arrived is used for the whole handshake, even if a reload swaps in a
    /// new one meanwhile. `peer` is the client's address as the caller knows it (a TCP
    /// stream's `peer_addr`, the address a PROXY-protocol header gave, or `None`); it goes
    /// into the verdict.
    pub async fn accept<IO>(
        &self,
        io: IO,
        peer: impl Into<Option<SocketAddr>>,
    ) -> Result<Accepted<IO>, Refused>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        self.accept_via(io, peer.into(), None, tokio::time::Instant::now())
            .await
    }

    /// As [`Acceptor::accept`], for a connection a proxy opened for `peer` (the address a
    /// PROXY protocol header gave): `via` is the proxy's own address, the verdict's `via`.
    /// `accepted` is when the connection was accepted: [`Limits::handshake_timeout`]
    /// counts from then, so time the caller spent before the handshake (waiting for the
    /// first byte, reading a PROXY protocol header) is not given again.
    pub async fn accept_via<IO>(
        &self,
        io: IO,
        peer: Option<SocketAddr>,
        via: Option<SocketAddr>,
        accepted: tokio::time::Instant,
    ) -> Result<Accepted<IO>, Refused>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let policy = self.policy.current();
        let deadline = accepted + self.limits.handshake_timeout;
        let result = match tokio::time::timeout_at(deadline, self.handshake(io, &policy)).await {
            Ok(r) => r,
            Err(_) => {
                let mut v = Verdict::new(Outcome::None(NoneCause::HandshakeTimeout));
                v.detail = Some(format!(
                    "no complete handshake within {:?}",
                    self.limits.handshake_timeout
                ));
                Err(v)
            }
        };
        let (mut verdict, stream) = match result {
            Ok((v, s)) => (v, Some(s)),
            Err(v) => (v, None),
        };
        verdict.peer = peer;
        verdict.via = via;
        if self.limits.log_verdicts {
            verdict.log();
        }
        match stream {
            Some(stream) => Ok(Accepted {
                stream,
                verdict,
                policy,
                #[cfg(feature = "hyper")]
                handle: self.policy.clone(),
                #[cfg(feature = "hyper")]
                limits: self.limits.clone(),
            }),
            None => Err(Refused { verdict }),
        }
    }

    async fn handshake<IO: AsyncRead + AsyncWrite + Unpin>(
        &self,
        io: IO,
        policy: &Policy,
    ) -> Result<(Verdict, TlsStream<IO>), Verdict> {
        let _permit = self.permits.acquire().await.map_err(|_| {
            let mut v = Verdict::new(Outcome::None(NoneCause::HandshakeError));
            v.detail = Some("acceptor closed".into());
            v
        })?;
        let start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io)
            .await
            .map_err(|e| {
                let mut v = Verdict::new(Outcome::None(NoneCause::HandshakeError));
                v.detail = Some(format!("not a TLS ClientHello: {e}"));
                v
            })?;
        let sni = start.client_hello().server_name().map(str::to_owned);
        let rule = match policy.select(sni.as_deref()) {
            Ok(rule) => rule,
            Err(cause) => {
                let mut v = Verdict::new(Outcome::None(cause));
                v.detail = Some(match &sni {
                    Some(s) => format!("no rule serves SNI {s:?}"),
                    None => "no SNI and no default rule".to_owned(),
                });
                v.sni = sni;
                return Err(v);
            }
        };
        // What the rule's verifier learns (the certificate's check, the proof of its key)
        // comes back with the handshake's result: see `crate::verifier`.
        let (result, learnt) = run_handshake(
            start
                .into_stream(rule.server_config().clone())
                .into_fallible(),
        )
        .await;
        let base = |outcome| {
            let mut v = Verdict::new(outcome);
            v.rule = Some(rule.name().clone());
            v.sni = sni.clone();
            v
        };
        match result {
            Ok(stream) => {
                let (_, conn) = stream.get_ref();
                let resumed = conn.handshake_kind() == Some(HandshakeKind::Resumed);
                // The verifier's check of the chain presented in this handshake; or, where
                // the verifier did not run — a resumed session carries the stored chain
                // without re-verifying it — a check of the chain the connection holds
                // against the policy in force now (expiry, revocation, reload).
                let checked = learnt.checked.or_else(|| {
                    let (ee, rest) = conn.peer_certificates()?.split_first()?;
                    Some(rule.verifier().check(
                        ee,
                        rest,
                        unix_time(time::OffsetDateTime::now_utc()),
                    ))
                });
                let mut v = match checked {
                    Some(c) => {
                        let mut v = base(c.outcome);
                        v.detail = c.detail;
                        v.client = c.client;
                        v
                    }
                    None => base(Outcome::None(NoneCause::NoCertificate)),
                };
                v.resumed = resumed;
                v.completed = true;
                v.tls_version = conn.protocol_version().map(aop_pki::tls_version_name);
                if rule.mode() == Mode::Require && !v.is_success() {
                    // Only a resumed session can get here: the verifier refuses the rest.
                    // The handshake is over, so no alert can be sent; close properly.
                    let mut stream = stream;
                    let _ = tokio::time::timeout(
                        Duration::from_secs(1),
                        tokio::io::AsyncWriteExt::shutdown(&mut stream),
                    )
                    .await;
                    return Err(v);
                }
                Ok((v, stream))
            }
            Err((e, io)) => {
                linger(io).await;
                Err(refusal(
                    base,
                    learnt.checked,
                    Proof {
                        failed: learnt.signature_failed,
                        verified: learnt.signature_verified,
                    },
                    &e,
                ))
            }
        }
    }
}

/// How long a refused client is read from after its alert, at most.
const LINGER: Duration = Duration::from_secs(1);

/// How much a refused client may have sent after its handshake that is read and dropped.
const LINGER_BYTES: usize = 64 * 1024;

/// After a refused handshake (its alert written): close our side, then read and drop
/// what the client sent meanwhile, until it closes, for at most [`LINGER`] and
/// [`LINGER_BYTES`]. In TLS 1.3 a client's handshake ends before the origin has judged
/// its certificate, and its first request (an HTTP/2 preface at once) follows its
/// Finished: closing with those bytes unread makes the kernel reset the connection, and
/// the reset can reach the client before it has read the alert, which then never names
/// the refusal (nginx's lingering close has the same reason).
async fn linger<IO: AsyncRead + AsyncWrite + Unpin>(mut io: IO) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let _ = tokio::time::timeout(LINGER, async {
        let _ = io.shutdown().await;
        let mut buf = [0u8; 4096];
        let mut left = LINGER_BYTES;
        while left > 0 {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
}

/// Whether the client proved it holds its certificate's key (its CertificateVerify).
#[derive(Clone, Copy, Debug)]
struct Proof {
    failed: bool,
    verified: bool,
}

/// The verdict of a handshake rustls aborted.
fn refusal(
    base: impl Fn(Outcome) -> Verdict,
    checked: Option<crate::trust::Checked>,
    proof: Proof,
    e: &std::io::Error,
) -> Verdict {
    let rustls_error = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    let (outcome, detail, client) = match checked {
        Some(c) if proof.failed && c.outcome.is_success() => (
            Outcome::Failed(Reason::BadSignature),
            Some(
                "the client could not prove it holds the certificate's key (CertificateVerify)"
                    .into(),
            ),
            c.client,
        ),
        Some(c) if !c.outcome.is_success() => (c.outcome, c.detail, c.client),
        // A certificate was presented and passed, and the client proved it holds the key,
        // but the handshake did not finish (the client reset the connection after its
        // Finished, say). The certificate's verdict stays its own; `completed = false`
        // says the handshake did not complete.
        Some(c) if proof.verified => (
            c.outcome,
            Some(format!(
                "the certificate passed, but the handshake did not complete: {e}"
            )),
            c.client,
        ),
        // A certificate is public: one that passes, sent by a client that never proved it
        // holds the key (it hung up before its CertificateVerify), verifies nothing.
        Some(c) => (
            Outcome::None(NoneCause::HandshakeError),
            Some(format!(
                "a certificate that passes was sent, but the client never proved it holds its key (no CertificateVerify): {e}"
            )),
            c.client,
        ),
        None => match rustls_error {
            Some(rustls::Error::NoCertificatesPresented) => (
                Outcome::None(NoneCause::NoCertificate),
                Some("the client presented no certificate".into()),
                None,
            ),
            _ => (
                Outcome::None(NoneCause::HandshakeError),
                Some(e.to_string()),
                None,
            ),
        },
    };
    let mut v = base(outcome);
    v.detail = detail;
    v.client = client;
    v
}

#[cfg(test)]
mod tests {
    use super::{NoneCause, Outcome, Proof, Reason, Verdict, refusal};
    use crate::trust::Checked;

    fn reset() -> std::io::Error {
        std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "Connection reset by peer",
        )
    }

    #[test]
    fn a_passed_certificate_stays_success_when_the_handshake_then_fails() {
        let passed = Checked {
            outcome: Outcome::Success,
            detail: None,
            client: None,
        };
        let proved = Proof {
            failed: false,
            verified: true,
        };
        let v = refusal(Verdict::new, Some(passed.clone()), proved, &reset());
        assert_eq!(v.outcome, Outcome::Success);
        assert!(!v.completed);
        assert!(
            v.detail
                .as_deref()
                .unwrap_or("")
                .contains("did not complete"),
            "{:?}",
            v.detail
        );
        // Without the proof of the key, a passing certificate proves nothing.
        let unproved = Proof {
            failed: false,
            verified: false,
        };
        let v = refusal(Verdict::new, Some(passed), unproved, &reset());
        assert_eq!(v.outcome, Outcome::None(NoneCause::HandshakeError));
        assert!(!v.completed);
    }

    #[test]
    fn a_failed_certificate_or_a_failed_proof_of_key_stays_failed() {
        let failed = Checked {
            outcome: Outcome::Failed(Reason::UnknownCa),
            detail: None,
            client: None,
        };
        let none = Proof {
            failed: false,
            verified: false,
        };
        let v = refusal(Verdict::new, Some(failed), none, &reset());
        assert_eq!(v.outcome, Outcome::Failed(Reason::UnknownCa));
        let passed = Checked {
            outcome: Outcome::Success,
            detail: None,
            client: None,
        };
        let bad = Proof {
            failed: true,
            verified: false,
        };
        let v = refusal(Verdict::new, Some(passed), bad, &reset());
        assert_eq!(v.outcome, Outcome::Failed(Reason::BadSignature));
    }
}
