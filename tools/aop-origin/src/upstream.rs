//! The guard's upstream clients: HTTP/1.1 (one client for every such site, pooled by
//! upstream address) or cleartext HTTP/2 with prior knowledge (`upstream_protocol =
//! "h2c"`: a client per site, made when the configuration is loaded), and the
//! descriptor permits every upstream connection holds.
//!
//! A client connection is one descriptor, but on HTTP/2 it can carry up to 100 requests
//! at once, each of which an HTTP/1.1 upstream serves on a connection of its own. So the
//! guard does not count two descriptors per client connection: every upstream connection
//! holds one of a fixed number of [`Permits`] — what the open-files limit leaves after
//! the client connections — from its connect to its close (pooled and idle included). A
//! request that needs a new connection when none is left waits [`PERMIT_WAIT`] for one,
//! then is answered 503: the guard never runs out of descriptors, whatever its clients
//! multiplex.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::Uri;
use hyper::header::{HOST, HeaderMap, HeaderValue};
use hyper::http::request::Parts;
use hyper::http::uri::Authority;
use hyper_util::client::legacy::connect::dns::{GaiAddrs, GaiResolver, Name};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::{Upstream, UpstreamProtocol};
use crate::guard::{ClientBody, Exec};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How long a request waits for an upstream connection permit before it is answered 503.
pub(crate) const PERMIT_WAIT: Duration = Duration::from_secs(1);

/// How long an unused pooled upstream connection (and its permit) is kept.
const POOL_IDLE: Duration = Duration::from_secs(30);

/// How many unused connections to one upstream the pool keeps (each holds a permit):
/// after a burst, the rest close at once and give their permits back, rather than
/// holding them for [`POOL_IDLE`] against other sites (which the per-upstream share
/// bounds anyway). As many as one HTTP/2 client connection's streams, so that one busy
/// edge connection's requests find their upstream connections kept.
const POOL_MAX_IDLE: usize = 100;

/// The upstream connections the guard may hold at once: one permit each, for its life.
/// One upstream address may hold at most three quarters of them ([`Permits::share`]), so
/// one site's tunnels or long requests cannot take every permit and leave the other
/// sites 503.
#[derive(Clone, Debug)]
pub(crate) struct Permits {
    all: Arc<Semaphore>,
    /// The most one upstream address may hold.
    share: usize,
    /// Each upstream address's share, by authority.
    each: Arc<std::sync::Mutex<std::collections::HashMap<String, Arc<Semaphore>>>>,
}

impl Permits {
    /// `n` permits (capped at what a semaphore holds: "unlimited").
    pub(crate) fn new(n: usize) -> Self {
        let n = n.min(Semaphore::MAX_PERMITS);
        Self {
            all: Arc::new(Semaphore::new(n)),
            share: (n - n / 4).max(1),
            each: Arc::default(),
        }
    }

    /// The share of the upstream at `authority`.
    fn share(&self, authority: &str) -> Arc<Semaphore> {
        let mut each = self
            .each
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(s) = each.get(authority) {
            return s.clone();
        }
        // Upstreams a reload removed, holding nothing any more.
        each.retain(|_, s| Arc::strong_count(s) > 1 || s.available_permits() < self.share);
        each.entry(authority.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(self.share)))
            .clone()
    }

    /// What the open-files limit `files` leaves for upstream connections once
    /// `reserve` descriptors and one per client connection (`connections`) are set
    /// aside; `None` (no limit) is unlimited.
    pub(crate) fn within(files: Option<u64>, reserve: u64, connections: usize) -> Self {
        let n = files.map_or(usize::MAX, |f| {
            usize::try_from(f.saturating_sub(reserve))
                .unwrap_or(usize::MAX)
                .saturating_sub(connections)
                .max(1)
        });
        Self::new(n)
    }
}

/// The upstream clients of a guard: the HTTP/1.1 one every `http1` site shares, and what
/// an `h2c` site's own client is made of.
pub(crate) struct Upstreams {
    exec: Exec,
    permits: Permits,
    http1: Client<Dial, ClientBody>,
}

impl Upstreams {
    /// The clients; their connection tasks run on `exec`.
    pub(crate) fn new(exec: Exec, permits: Permits) -> Self {
        let http1 = Client::builder(exec.clone())
            .pool_idle_timeout(POOL_IDLE)
            .pool_max_idle_per_host(POOL_MAX_IDLE)
            .pool_timer(TokioTimer::new())
            .build(Dial::new(None, &permits));
        Self {
            exec,
            permits,
            http1,
        }
    }

    /// The client for a site whose upstream is `upstream`: the shared HTTP/1.1 client, or
    /// (`h2c`) a new one whose connections all go to `upstream`'s address, whatever the
    /// request's URI names. Made when the configuration is loaded, so a reload that moves
    /// the upstream leaves no pooled connection to the old address for new connections.
    pub(crate) fn for_site(&self, upstream: &Upstream) -> SiteClient {
        match upstream.protocol {
            UpstreamProtocol::Http1 => SiteClient {
                client: self.http1.clone(),
                h2c: false,
            },
            UpstreamProtocol::H2c => {
                let to = Uri::try_from(format!("http://{}/", upstream.authority)).ok();
                let client = Client::builder(self.exec.clone())
                    .http2_only(true)
                    .timer(TokioTimer::new())
                    .pool_timer(TokioTimer::new())
                    .pool_idle_timeout(POOL_IDLE)
                    .pool_max_idle_per_host(POOL_MAX_IDLE)
                    // The same windows and send buffer as the guard's HTTP/2 server side:
                    // what one slow client stream can make the guard buffer.
                    .http2_initial_stream_window_size(256 * 1024)
                    .http2_initial_connection_window_size(8 * 1024 * 1024)
                    .http2_max_send_buf_size(64 * 1024)
                    .http2_keep_alive_interval(Duration::from_secs(30))
                    .http2_keep_alive_timeout(Duration::from_secs(20))
                    .build(Dial::new(to, &self.permits));
                SiteClient { client, h2c: true }
            }
        }
    }
}

/// One site's upstream client.
#[derive(Clone, Debug)]
pub(crate) struct SiteClient {
    client: Client<Dial, ClientBody>,
    h2c: bool,
}

impl SiteClient {
    /// Make a request the guard has already cleaned (hop-by-hop headers stripped, verdict
    /// headers set, `Host` = the name the client asked for, URI `http://UPSTREAM/path`)
    /// fit this upstream's protocol. HTTP/1.1: version 1.1 (an HTTP/2 request from the
    /// edge becomes an HTTP/1.1 one; 1.0 stays). h2c: version 2, `Host` moved into the
    /// URI's authority (it becomes `:authority`; HTTP/2 must not carry both differing,
    /// RFC 9113 §8.3.1), and `te: trailers` if the client sent exactly that (gRPC
    /// servers read it as "this proxy passes trailers"; `te` is hop-by-hop, so it was
    /// stripped with the rest).
    pub(crate) fn prepare(&self, parts: &mut Parts, te_trailers: bool) {
        if !self.h2c {
            if parts.version == hyper::Version::HTTP_2 {
                parts.version = hyper::Version::HTTP_11;
            }
            return;
        }
        parts.version = hyper::Version::HTTP_2;
        let named = parts
            .headers
            .remove(HOST)
            .and_then(|h| Authority::try_from(h.as_bytes()).ok());
        if let Some(authority) = named {
            let mut uri = std::mem::take(&mut parts.uri).into_parts();
            uri.authority = Some(authority);
            if let Ok(u) = Uri::from_parts(uri) {
                parts.uri = u;
            }
        }
        if te_trailers {
            parts
                .headers
                .insert(hyper::header::TE, HeaderValue::from_static("trailers"));
        }
    }

    /// Send `req` (after [`SiteClient::prepare`]).
    pub(crate) fn request(&self, req: hyper::Request<ClientBody>) -> ResponseFuture {
        self.client.request(req)
    }
}

/// Strip a response's hop-by-hop headers ([`aop_http::strip_hop_by_hop`]) but keep
/// `Trailer` (unless its `Connection` names it): RFC 9110 §6.6.2 makes it end to end,
/// and hyper's HTTP/1.1 server writes only the trailer fields it declares (to a client
/// that sent `TE: trailers`).
pub(crate) fn strip_response_hop_by_hop(headers: &mut HeaderMap) {
    let named = aop_http::connection_options(headers).any(|h| h == hyper::header::TRAILER);
    let trailer: Vec<HeaderValue> = if named {
        Vec::new()
    } else {
        headers
            .get_all(hyper::header::TRAILER)
            .iter()
            .cloned()
            .collect()
    };
    aop_http::strip_hop_by_hop(headers);
    for v in trailer {
        headers.append(hyper::header::TRAILER, v);
    }
}

/// Whether the client asked for trailers, exactly: one `te` header, `trailers`.
pub(crate) fn te_trailers(headers: &HeaderMap) -> bool {
    let mut te = headers.get_all(hyper::header::TE).iter();
    matches!((te.next(), te.next()), (Some(v), None)
        if v.to_str().is_ok_and(|v| v.trim().eq_ignore_ascii_case("trailers")))
}

/// Whether a request is gRPC (`content-type: application/grpc`, `application/grpc+proto`,
/// …): its body is a stream of messages that may pause for long.
pub(crate) fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            let v = v.trim_start().to_ascii_lowercase();
            v == "application/grpc"
                || v.starts_with("application/grpc+")
                || v.starts_with("application/grpc;")
        })
}

/// Whether an upstream request failed for want of a connection permit.
pub(crate) fn exhausted(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(e) = next {
        if e.is::<Exhausted>() {
            return true;
        }
        next = e.source();
    }
    false
}

/// Why the upstream gave no answer, as the guard names it: the `upstream_error` field of
/// its log line and the end of the 502 body the edge gets (a timeout is a 504). The edge learns the class only; the upstream's address and
/// the system's own message (the innermost error of the chain) go to the log alone: they
/// are the operator's configuration, nothing a client of the site needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Nothing listens at the upstream's address (`ECONNREFUSED`).
    Refused,
    /// No answer in time: `upstream_timeout_secs` after the whole request, or the
    /// system's connect timeout.
    Timeout,
    /// The upstream reset the connection (`ECONNRESET`, `ECONNABORTED`, `EPIPE`).
    Reset,
    /// The upstream's host name did not resolve.
    Dns,
    /// The upstream closed the connection before a whole response head.
    Closed,
    /// The upstream's answer is not HTTP the guard can read.
    Invalid,
    /// Anything else (the log has the message).
    Other,
}

impl Failure {
    /// The class of the first (outermost) error an upstream request failed with, and
    /// the message of the innermost error in its source chain (the root cause).
    pub(crate) fn of(e: &(dyn std::error::Error + 'static)) -> (Self, String) {
        let mut class = Self::Other;
        let mut innermost = e;
        let mut next = Some(e);
        while let Some(e) = next {
            // The deepest error that names a class wins: hyper_util's "client error
            // (Connect)" wraps "tcp connect error", which wraps the io::Error that says why.
            if let Some(c) = Self::one(e) {
                class = c;
            }
            innermost = e;
            next = e.source();
        }
        (class, innermost.to_string())
    }

    /// The class one error of the chain names, if any.
    fn one(e: &(dyn std::error::Error + 'static)) -> Option<Self> {
        use std::io::ErrorKind;
        if e.is::<DnsFailed>() {
            return Some(Self::Dns);
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                ErrorKind::ConnectionRefused => Some(Self::Refused),
                ErrorKind::ConnectionReset
                | ErrorKind::ConnectionAborted
                | ErrorKind::BrokenPipe => Some(Self::Reset),
                ErrorKind::TimedOut => Some(Self::Timeout),
                ErrorKind::UnexpectedEof => Some(Self::Closed),
                _ => None,
            };
        }
        let h = e.downcast_ref::<hyper::Error>()?;
        if h.is_incomplete_message() || h.is_canceled() {
            Some(Self::Closed)
        } else if h.is_parse() || h.is_parse_status() || h.is_parse_too_large() {
            Some(Self::Invalid)
        } else if h.is_timeout() {
            Some(Self::Timeout)
        } else {
            None
        }
    }

    /// Its name in logs and metrics.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Refused => "refused",
            Self::Timeout => "timeout",
            Self::Reset => "reset",
            Self::Dns => "dns",
            Self::Closed => "closed",
            Self::Invalid => "invalid",
            Self::Other => "other",
        }
    }

    /// The answer the edge gets: 504 for a timeout, else 502, saying the class.
    pub(crate) fn status_and_body(self) -> (hyper::StatusCode, &'static str) {
        use hyper::StatusCode;
        match self {
            Self::Timeout => (StatusCode::GATEWAY_TIMEOUT, "upstream timed out\n"),
            Self::Refused => (
                StatusCode::BAD_GATEWAY,
                "upstream unavailable: connection refused\n",
            ),
            Self::Reset => (
                StatusCode::BAD_GATEWAY,
                "upstream unavailable: connection reset\n",
            ),
            Self::Dns => (
                StatusCode::BAD_GATEWAY,
                "upstream unavailable: name not resolved\n",
            ),
            Self::Closed => (
                StatusCode::BAD_GATEWAY,
                "upstream unavailable: closed without answering\n",
            ),
            Self::Invalid => (
                StatusCode::BAD_GATEWAY,
                "upstream unavailable: invalid response\n",
            ),
            Self::Other => (StatusCode::BAD_GATEWAY, "upstream unavailable\n"),
        }
    }
}

/// The upstream's host name did not resolve: the resolver's error, marked so that
/// [`Failure::of`] can tell it from a connect error (hyper_util's says only "dns error").
#[derive(Debug)]
struct DnsFailed(std::io::Error);

impl std::fmt::Display for DnsFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the upstream's name did not resolve")
    }
}

impl std::error::Error for DnsFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// The system resolver (getaddrinfo, on a blocking thread), its errors marked
/// [`DnsFailed`].
#[derive(Clone, Debug)]
struct Resolver(GaiResolver);

impl tower_service::Service<Name> for Resolver {
    type Response = GaiAddrs;
    type Error = DnsFailed;
    type Future = Pin<Box<dyn Future<Output = Result<GaiAddrs, DnsFailed>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), DnsFailed>> {
        self.0.poll_ready(cx).map_err(DnsFailed)
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let resolving = self.0.call(name);
        Box::pin(async move { resolving.await.map_err(DnsFailed) })
    }
}

/// No upstream connection permit came free within [`PERMIT_WAIT`].
#[derive(Debug)]
struct Exhausted;

impl std::fmt::Display for Exhausted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "no upstream connection permit within {PERMIT_WAIT:?} (the open-files limit, or this upstream's share of it)"
        )
    }
}

impl std::error::Error for Exhausted {}

/// The upstream connector: a permit, then a TCP connection (to `to` if set, else to the
/// URI's authority).
#[derive(Clone, Debug)]
pub(crate) struct Dial {
    http: HttpConnector<Resolver>,
    to: Option<Uri>,
    permits: Permits,
}

impl Dial {
    fn new(to: Option<Uri>, permits: &Permits) -> Self {
        let mut http = HttpConnector::new_with_resolver(Resolver(GaiResolver::new()));
        http.set_nodelay(true);
        Self {
            http,
            to,
            permits: permits.clone(),
        }
    }
}

impl tower_service::Service<Uri> for Dial {
    type Response = Permitted;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Permitted, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let mut http = self.http.clone();
        let to = self.to.clone().unwrap_or(uri);
        let all = self.permits.all.clone();
        let share = self
            .permits
            .share(to.authority().map_or("", |a| a.as_str()));
        Box::pin(async move {
            let both = async {
                let share = share.acquire_owned().await?;
                Ok::<_, tokio::sync::AcquireError>((share, all.acquire_owned().await?))
            };
            let Ok(Ok(permits)) = tokio::time::timeout(PERMIT_WAIT, both).await else {
                return Err(Box::new(Exhausted) as BoxError);
            };
            let io = http.call(to).await?;
            Ok(Permitted {
                io,
                _permits: permits,
            })
        })
    }
}

pin_project_lite::pin_project! {
    /// An upstream connection and the permit it holds until it closes.
    pub(crate) struct Permitted {
        #[pin]
        io: TokioIo<TcpStream>,
        // The upstream's share's, and the guard's.
        _permits: (OwnedSemaphorePermit, OwnedSemaphorePermit),
    }
}

impl Connection for Permitted {
    fn connected(&self) -> Connected {
        self.io.connected()
    }
}

impl hyper::rt::Read for Permitted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.project().io.poll_read(cx, buf)
    }
}

impl hyper::rt::Write for Permitted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.project().io.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.project().io.poll_write_vectored(cx, bufs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_and_te() {
        let h = |pairs: &[(&'static str, &'static str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.append(*k, HeaderValue::from_static(v));
            }
            m
        };
        assert!(is_grpc(&h(&[("content-type", "application/grpc")])));
        assert!(is_grpc(&h(&[("content-type", "application/grpc+proto")])));
        assert!(is_grpc(&h(&[("content-type", "Application/GRPC")])));
        assert!(!is_grpc(&h(&[("content-type", "application/grpcx")])));
        assert!(!is_grpc(&h(&[("content-type", "application/json")])));
        assert!(!is_grpc(&h(&[])));
        assert!(te_trailers(&h(&[("te", "trailers")])));
        assert!(te_trailers(&h(&[("te", " Trailers ")])));
        assert!(!te_trailers(&h(&[("te", "trailers, deflate")])));
        assert!(!te_trailers(&h(&[("te", "trailers"), ("te", "trailers")])));
        assert!(!te_trailers(&h(&[])));
    }

    #[test]
    fn permits_are_what_the_limit_leaves() {
        let left = |files, conns| Permits::within(files, 256, conns).all.available_permits();
        assert_eq!(left(Some(400), 72), 72);
        assert_eq!(left(Some(1_000_000), 10_000), 1_000_000 - 256 - 10_000);
        assert_eq!(left(Some(100), 10), 1);
        assert_eq!(left(None, 10), Semaphore::MAX_PERMITS);
        // One upstream's share: three quarters, at least one.
        let share = |n| Permits::new(n).share("u:1").available_permits();
        assert_eq!((share(22), share(1), share(4)), (17, 1, 3));
    }
}
