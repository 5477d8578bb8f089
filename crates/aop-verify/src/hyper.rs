//! hyper 1 glue (cargo feature `hyper`): serve a service over an accepted connection,
//! with the connection's verdict in every request's extensions.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper::header::HOST;
use hyper::server::conn::{http1, http2};
use hyper::service::{HttpService, Service};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use rustls_pki_types::CertificateDer;

use crate::acceptor::authority_in_rule;
use crate::authority;
use crate::{Accepted, Mode, Policy, PolicyHandle, Verdict};

/// Serve HTTP/1.1 or HTTP/2 on an accepted connection, as ALPN chose: HTTP/2 when it
/// negotiated `h2`, HTTP/1.1 otherwise (no ALPN included: over TLS, HTTP/2 is only by
/// ALPN, RFC 9113 §3.3; a preface on an HTTP/1.1 connection is not sniffed). Every
/// request carries the connection's verdict as an `Arc<Verdict>` extension.
///
/// On HTTP/2 each stream is a request, checked like an HTTP/1.1 request, and its service
/// future runs in a task of its own (`tokio::spawn`, under the caller's `tracing`
/// subscriber): hence the `Send + 'static` bounds. The connection's HTTP/2 settings are
/// [`Limits::http2`](crate::Limits::http2).
///
/// Upgrades are served: on HTTP/1.1, once the service answers an `Upgrade` request
/// `101 Switching Protocols`, this future completes and the connection's IO belongs to
/// whoever called `hyper::upgrade::on` on the request (hence `IO: Send + 'static`); on
/// HTTP/2, extended CONNECT (RFC 8441) when
/// [`Http2Limits::connect_protocol`](crate::Http2Limits::connect_protocol) is on. A
/// tunnel on HTTP/2 holds its connection with [`InFlight`].
///
/// Every name a request could be routed by — its `Host` header, the authority of an
/// absolute-form request target or HTTP/2's `:authority`, and each host named by
/// `X-Forwarded-Host`, `X-Host`, `X-Original-Host` or `Forwarded: host=` — is parsed
/// strictly (see [`crate::authority`]). An HTTP/1.1 request without exactly one Host (an
/// HTTP/1.0 one with no name at all), or a name that does not parse: `400 Bad Request`
/// and the connection closes (on HTTP/2, the stream ends). A name that belongs to
/// another rule than the connection's SNI
/// did, or to no rule: `421 Misdirected Request`, without calling the service, on every
/// rule, the default included — a client accepted under one zone's trust, or under the
/// shared default rule, must not reach a hostname whose rule trusts someone else.
/// An HTTP/2 request needs `:authority` or one `Host`; with both, they must name the
/// same authority (RFC 9113 §8.3.1), else `400` — which ends that stream, not the
/// connection.
///
/// After a policy reload, a kept-alive connection's certificate is checked against the
/// new policy before its next request (on HTTP/2: its next stream). In `require` mode,
/// if it no longer passes (a retired CA, a revoked certificate, a removed rule) the
/// request is answered 421 with `Connection: close` (HTTP/2: 421 and a GOAWAY), so the
/// client reconnects and meets the new policy in a fresh handshake. In `optional` mode
/// the connection carries the new verdict from then on.
///
/// The connection is closed if a request's head does not arrive whole within
/// [`Limits::header_read_timeout`](crate::Limits::header_read_timeout) of its first byte,
/// if no request starts within
/// [`Limits::keepalive_timeout`](crate::Limits::keepalive_timeout) of the connection
/// becoming idle (the first request included), or if the client takes none of the
/// response for [`Limits::send_timeout`](crate::Limits::send_timeout). A request in
/// progress is otherwise never cut by these timers (a slow upload is the service's to
/// bound). On HTTP/2 there is no header-read phase (frames such as PING and
/// WINDOW_UPDATE arrive between requests; a header block is bounded by
/// [`Http2Limits::max_header_list_size`](crate::Http2Limits::max_header_list_size)), and
/// the keep-alive timer counts from the end of the last open stream, whatever frames
/// arrive meanwhile: when it expires the connection is shut down gracefully (GOAWAY),
/// and closed a second later if the client has not closed it. The send timer also runs
/// per HTTP/2 stream: a response that has waited `send_timeout` for the client's
/// flow-control credit (its body gave a data frame the client's window has no room
/// for, and is not polled meanwhile) is reset (RST_STREAM CANCEL), its service future
/// and body dropped, and [`Observer::stream_stalled`] told; the connection and its other
/// streams go on. A body that is slow to produce data (polled, nothing yet) is not
/// stalled: bounding an upstream is the service's.
///
/// A connection serves at most
/// [`Limits::max_requests_per_connection`](crate::Limits::max_requests_per_connection)
/// requests: the last response on HTTP/1.1 says `Connection: close`; on HTTP/2 the
/// connection is sent GOAWAY once the last stream is accepted and its streams in flight
/// finish. Streams the client opens after an idle, request-cap or shutdown GOAWAY (sent
/// before it saw it) are still served, up to
/// [`Http2Limits::max_concurrent_streams`](crate::Http2Limits::max_concurrent_streams)
/// of them; later ones are answered 421 without reaching the service. An HTTP/2
/// connection on which the streams that ended before their response did (the client
/// reset them, or the send timer did) are more than
/// [`Http2Limits::max_abandoned_streams`](crate::Http2Limits::max_abandoned_streams)
/// and more than the streams whose response completed is sent GOAWAY (a reset storm):
/// its streams in flight may finish; streams opened after it are answered 421; it is
/// closed [`Limits::keepalive_timeout`](crate::Limits::keepalive_timeout) after the
/// GOAWAY at the latest (as after a failed re-check, or the caller's shutdown). A
/// refused stream and a tunnel (a 2xx answer to CONNECT) never count as abandoned.
/// Each GOAWAY is logged once and reported to [`Observer::goaway`].
///
/// A plain `CONNECT` (HTTP/1.1, or HTTP/2 without `:protocol`) is answered
/// `405 Method Not Allowed` without reaching the service unless
/// [`Limits::plain_connect`](crate::Limits::plain_connect) is on (h2 itself refuses a
/// `:protocol` unless [`Http2Limits::connect_protocol`](crate::Http2Limits::connect_protocol)
/// is on).
///
/// ```no_run
/// # use std::sync::Arc;
/// # use aop_verify::Verdict;
/// # fn handler(req: hyper::Request<hyper::body::Incoming>) {
/// let verdict = req.extensions().get::<Arc<Verdict>>().expect("set by aop-verify");
/// if !verdict.is_success() { /* optional mode: decide here */ }
/// # }
/// ```
pub fn serve_connection<S, B, IO>(
    accepted: Accepted<IO>,
    service: S,
) -> impl Future<Output = Result<(), hyper::Error>>
where
    S: Service<Request<Incoming>, Response = Response<B>>,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    B: Body + Default + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    serve_connection_until(accepted, service, std::future::pending(), Arc::new(()))
}

/// What the glue refuses or closes on a connection, reported as it happens (for the
/// caller's metrics). Every method does nothing unless overridden; `()` observes nothing.
/// Each event is also logged (target `aop::verdict`) by the glue itself.
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
///
/// /// Counts the requests answered 421, across connections.
/// #[derive(Default)]
/// struct Misdirected(AtomicU64);
///
/// impl aop_verify::hyper::Observer for Misdirected {
///     fn misdirected(&self) {
///         self.0.fetch_add(1, Ordering::Relaxed);
///     }
/// }
/// // Shared by every connection: serve_connection_until(accepted, service, shutdown,
/// // counter.clone()) with `let counter = Arc::new(Misdirected::default());`
/// ```
pub trait Observer: Send + Sync {
    /// A request was answered 421: a Host outside the connection's rule, or a
    /// certificate the reloaded policy refuses.
    fn misdirected(&self) {}
    /// A request was answered 400: no Host, several, or one that does not parse.
    fn bad_request(&self) {}
    /// The connection was closed because a request head did not arrive in time.
    fn header_timeout(&self) {}
    /// The connection was closed because no request started in time (on HTTP/2: it
    /// was sent GOAWAY).
    fn keepalive_timeout(&self) {}
    /// The connection was closed because the client stopped taking the response.
    fn send_timeout(&self) {}
    /// An HTTP/2 stream was reset (RST_STREAM CANCEL) because its response waited
    /// [`Limits::send_timeout`](crate::Limits::send_timeout) for the client's
    /// flow-control credit (a WINDOW_UPDATE); the connection and its other streams go
    /// on. Not logged by the glue (one event per stream).
    fn stream_stalled(&self) {}
    /// The connection was told to end, gracefully (see [`GoAway`]); once for each
    /// reason.
    fn goaway(&self, why: GoAway) {
        let _ = why;
    }
    /// A request was answered by the glue itself, without reaching the service:
    /// `status` for `reason` — `host_outside_rule` (a name that belongs to another rule:
    /// 421), `certificate_rejected` (the reloaded policy refuses the connection's
    /// certificate: 421), `after_goaway` (an HTTP/2 stream opened after a GOAWAY: 421),
    /// `bad_host` (400), `connect` (405). Told after the more specific method above, so
    /// a caller may log every request the service never saw.
    fn refused(&self, req: &Request<Incoming>, status: StatusCode, reason: &'static str) {
        let _ = (req, status, reason);
    }
}

impl Observer for () {}

/// As [`serve_connection`], and when `shutdown` completes, finish the request in
/// progress (if any; on HTTP/2, send GOAWAY and finish the open streams, for
/// [`Limits::keepalive_timeout`](crate::Limits::keepalive_timeout) at most), then close
/// the connection gracefully instead of waiting for the next request; tunnels hear of it
/// through [`InFlight::stopping`]. `observer` hears of every 421, 400 and timeout.
///
/// The future returned is a few pointers: the connection (hyper's state, the TLS stream,
/// the service) is one heap allocation of its own size, and `shutdown` and the timer
/// others. An `async fn` here would keep its arguments beside the connection they were
/// moved into, and a task that awaited it would carry both for the connection's whole
/// life.
pub fn serve_connection_until<S, B, F, IO>(
    accepted: Accepted<IO>,
    service: S,
    shutdown: F,
    observer: Arc<dyn Observer>,
) -> impl Future<Output = Result<(), hyper::Error>>
where
    S: Service<Request<Incoming>, Response = Response<B>>,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    B: Body + Default + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    F: Future<Output = ()>,
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Accepted {
        stream,
        verdict,
        policy,
        handle,
        limits,
    } = accepted;
    let chain: Option<Arc<[CertificateDer<'static>]>> = stream
        .get_ref()
        .1
        .peer_certificates()
        .map(|c| c.iter().map(|d| d.clone().into_owned()).collect());
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    let activity = Arc::new(Activity::new(h2, &limits));
    let verdict = Arc::new(verdict);
    let service = WithVerdict {
        inner: service,
        state: std::sync::Mutex::new((policy, Some(verdict.clone()))),
        handle,
        chain,
        observer: observer.clone(),
        activity: activity.clone(),
    };
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: activity.clone(),
    });
    let mut conn = if h2 {
        Conn::H2(Box::pin(
            limits
                .http2
                .builder(Spawn(Arc::new(Streams {
                    send_timeout: limits.send_timeout,
                    observer: observer.clone(),
                })))
                .serve_connection(io, service),
        ))
    } else {
        Conn::H1(Box::pin(
            http1::Builder::new()
                .serve_connection(io, service)
                .with_upgrades(),
        ))
    };
    let mut shutdown = Some(Box::pin(shutdown));
    let mut timer = Box::pin(tokio::time::sleep(limits.keepalive_timeout));
    // A graceful shutdown has begun (the caller's signal, a GOAWAY after a failed
    // re-check, or the idle timer on HTTP/2).
    let mut closing = false;
    // On HTTP/2, once the idle timer has sent GOAWAY: close if still idle by then.
    let mut grace: Option<tokio::time::Instant> = None;
    // On HTTP/2, once a failed re-check sent GOAWAY: the connection ends by then whatever
    // streams it keeps open (hyper's final GOAWAY waits for the client's PING ack, which
    // a client can withhold while it opens stream after stream).
    let mut hard_stop: Option<tokio::time::Instant> = None;
    // HTTP/1.1: the connection was upgraded while a tunnel holds it (InFlight::hold): the
    // future lasts until the holds end, or keepalive_timeout after the shutdown signal.
    let mut upgraded = false;
    std::future::poll_fn(move |cx| {
        loop {
            if let Some(s) = shutdown.as_mut()
                && s.as_mut().poll(cx).is_ready()
            {
                shutdown = None;
                activity.stopping();
                if h2 {
                    // As after a reload: hyper's final GOAWAY waits for streams (a tunnel
                    // among them) that a client can keep open.
                    let stop = tokio::time::Instant::now() + limits.keepalive_timeout;
                    hard_stop = Some(hard_stop.map_or(stop, |s| s.min(stop)));
                }
                if !std::mem::replace(&mut closing, true) {
                    conn.graceful_shutdown();
                }
            }
            if upgraded {
                if shutdown.is_none() && hard_stop.is_none() {
                    hard_stop = Some(tokio::time::Instant::now() + limits.keepalive_timeout);
                }
                activity.register(cx, true);
                if activity.in_flight.load(Ordering::Relaxed) == 0 {
                    return Poll::Ready(Ok(()));
                }
                let Some(stop) = hard_stop else {
                    return Poll::Pending;
                };
                if timer.deadline() != stop {
                    timer.as_mut().reset(stop);
                }
                return timer.as_mut().poll(cx).map(Ok);
            }
            if let Poll::Ready(r) = conn.poll(cx) {
                if h2 || r.is_err() || activity.in_flight.load(Ordering::Relaxed) == 0 {
                    return Poll::Ready(r);
                }
                upgraded = true;
                continue;
            }
            let decided = activity.goaway.swap(0, Ordering::Relaxed);
            if decided != 0 {
                for why in GoAway::ALL.into_iter().filter(|w| decided & w.bit() != 0) {
                    told_to_end(why, &verdict, &*observer);
                    let now = tokio::time::Instant::now();
                    let stop = match why {
                        // Streams in flight finish, and those the client sent before it
                        // saw the GOAWAY; the idle timer closes the connection.
                        GoAway::MaxRequests | GoAway::Idle => None,
                        // Streams in flight finish (other clients' responses, on an
                        // edge's connection), within the keep-alive timeout; later ones
                        // are refused.
                        GoAway::Reload | GoAway::ResetStorm => Some(now + limits.keepalive_timeout),
                    };
                    if let Some(stop) = stop {
                        hard_stop = Some(hard_stop.map_or(stop, |s| s.min(stop)));
                    }
                }
                if !std::mem::replace(&mut closing, true) {
                    conn.graceful_shutdown();
                }
                continue;
            }
            let next = match (activity.deadline(&limits, grace), hard_stop) {
                (Some((at, why)), Some(stop)) if at <= stop => Some((at, why)),
                (_, Some(stop)) => Some((stop, Timeout::Grace)),
                (next, None) => next,
            };
            let Some((at, why)) = next else {
                if h2 {
                    activity.register(cx, true);
                }
                return Poll::Pending;
            };
            if tokio::time::Instant::now() >= at {
                match why {
                    Timeout::KeepAlive if h2 => {
                        closed_for(why, &verdict, &*observer);
                        observer.goaway(GoAway::Idle);
                        activity.stopping();
                        grace = Some(tokio::time::Instant::now() + GOAWAY_GRACE);
                        if !std::mem::replace(&mut closing, true) {
                            conn.graceful_shutdown();
                        }
                        continue;
                    }
                    Timeout::Grace => return Poll::Ready(Ok(())),
                    _ => {
                        closed_for(why, &verdict, &*observer);
                        return Poll::Ready(Ok(()));
                    }
                }
            }
            if timer.deadline() != at {
                timer.as_mut().reset(at);
            }
            if timer.as_mut().poll(cx).is_pending() {
                if h2 {
                    activity.register(cx, false);
                }
                return Poll::Pending;
            }
        }
    })
}

/// How long an idle HTTP/2 connection the glue sent GOAWAY is given to close before it
/// is dropped.
const GOAWAY_GRACE: Duration = Duration::from_secs(1);

/// hyper's connection for the protocol ALPN chose.
enum Conn<T, S: HttpService<Incoming>> {
    H1(Pin<Box<http1::UpgradeableConnection<T, S>>>),
    H2(Pin<Box<http2::Connection<T, S, Spawn>>>),
}

impl<T, S, B> Conn<T, S>
where
    S: HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    Spawn: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), hyper::Error>> {
        match self {
            Self::H1(c) => c.as_mut().poll(cx),
            Self::H2(c) => c.as_mut().poll(cx),
        }
    }

    /// HTTP/1.1: finish the request in progress, then close; HTTP/2: GOAWAY, finish the
    /// open streams, then close.
    fn graceful_shutdown(&mut self) {
        match self {
            Self::H1(c) => c.as_mut().graceful_shutdown(),
            Self::H2(c) => c.as_mut().graceful_shutdown(),
        }
    }
}

/// The executor of HTTP/2 streams: each stream's task in a tokio task of its own, under
/// the `tracing` subscriber of the connection that spawns it, and watched for a stalled
/// response ([`Watchdog`]).
#[derive(Clone)]
struct Spawn(Arc<Streams>);

/// What a connection's stream tasks share.
struct Streams {
    /// How long a response may wait for the client's flow-control credit.
    send_timeout: Duration,
    observer: Arc<dyn Observer>,
}

impl<F> hyper::rt::Executor<F> for Spawn
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, task: F) {
        let dispatch = tracing::dispatcher::get_default(Clone::clone);
        let stall = Arc::new(Stall::new());
        let task = Watchdog {
            task: STALL.scope(stall.clone(), task),
            stall,
            sleep: None,
            streams: self.0.clone(),
        };
        tokio::spawn(tracing::instrument::WithSubscriber::with_subscriber(
            task, dispatch,
        ));
    }
}

tokio::task_local! {
    /// The stall cell of the HTTP/2 stream task being polled, for [`Tracked`] to mark.
    static STALL: Arc<Stall>;
}

/// Whether an HTTP/2 stream's response is stalled: its body gave hyper a data frame
/// and has not been polled since. hyper's `PipeToSendStream` takes one frame, waits for
/// the client's flow-control credit to send it, and only then polls the body again: a
/// client that withholds WINDOW_UPDATE leaves it waiting for ever, with the body never
/// polled (so no timer inside it runs) and the stream open. A body that is polled and
/// has nothing yet (an upstream slow to produce it) is not stalled: bounding that is
/// the service's.
struct Stall {
    epoch: tokio::time::Instant,
    /// Since when (ms since `epoch`, plus 1), or 0: not stalled.
    since: AtomicU64,
}

impl Stall {
    fn new() -> Self {
        Self {
            epoch: tokio::time::Instant::now(),
            since: AtomicU64::new(0),
        }
    }

    /// The body was polled: `data` if it gave a data frame (from now on it waits for
    /// the client), else it is no longer stalled.
    fn polled(&self, data: bool) {
        let since = if data {
            u64::try_from(self.epoch.elapsed().as_millis())
                .unwrap_or(u64::MAX - 1)
                .saturating_add(1)
        } else {
            0
        };
        self.since.store(since, Ordering::Relaxed);
    }

    fn since(&self) -> Option<tokio::time::Instant> {
        match self.since.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(self.epoch + Duration::from_millis(ms - 1)),
        }
    }
}

pin_project_lite::pin_project! {
    /// An HTTP/2 stream's task, dropped (and so the stream reset, RST_STREAM CANCEL)
    /// once its response has been stalled for [`Limits::send_timeout`](crate::Limits::send_timeout).
    /// The sleep is made only for a stream that stalls.
    struct Watchdog<F> {
        #[pin]
        task: tokio::task::futures::TaskLocalFuture<Arc<Stall>, F>,
        stall: Arc<Stall>,
        sleep: Option<Pin<Box<tokio::time::Sleep>>>,
        streams: Arc<Streams>,
    }
}

impl<F: Future<Output = ()>> Future for Watchdog<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        if this.task.poll(cx).is_ready() {
            return Poll::Ready(());
        }
        let Some(since) = this.stall.since() else {
            return Poll::Pending;
        };
        let at = since + this.streams.send_timeout;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        if sleep.deadline() != at {
            sleep.as_mut().reset(at);
        }
        if sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        // Ready: tokio drops the stream's task, and h2 resets the stream.
        this.streams.observer.stream_stalled();
        Poll::Ready(())
    }
}

impl crate::Http2Limits {
    /// hyper's HTTP/2 server builder with these settings.
    fn builder(&self, spawn: Spawn) -> http2::Builder<Spawn> {
        let mut b = http2::Builder::new(spawn);
        b.timer(hyper_util::rt::TokioTimer::new())
            .max_concurrent_streams(self.max_concurrent_streams)
            .max_header_list_size(self.max_header_list_size)
            .initial_stream_window_size(self.initial_stream_window_size)
            .initial_connection_window_size(self.initial_connection_window_size)
            .max_send_buf_size(self.max_send_buf_size)
            .max_pending_accept_reset_streams(self.max_pending_accept_reset_streams)
            .max_local_error_reset_streams(self.max_local_error_reset_streams)
            .keep_alive_interval(self.keep_alive_interval)
            .keep_alive_timeout(self.keep_alive_timeout);
        if self.connect_protocol {
            b.enable_connect_protocol();
        }
        b
    }
}

/// Log (and report) a connection the glue closed for a timeout.
fn closed_for(why: Timeout, verdict: &Verdict, observer: &dyn Observer) {
    match why {
        Timeout::Header => observer.header_timeout(),
        Timeout::KeepAlive => observer.keepalive_timeout(),
        Timeout::Send => observer.send_timeout(),
        Timeout::Grace => {}
    }
    let peer = verdict.peer.map(|p| p.to_string()).unwrap_or_default();
    tracing::info!(target: "aop::verdict", verdict = %verdict.outcome, closed = why.as_str(),
        %peer, sni = verdict.sni.as_deref().unwrap_or(""), rule = verdict.rule.as_deref().unwrap_or(""),
        "connection closed: {}", why.describe());
}

/// Why the glue told a client to end its connection: an HTTP/2 GOAWAY (NO_ERROR, a
/// graceful end: streams the client opened before it finish), or, for
/// [`GoAway::MaxRequests`] on HTTP/1.1, `Connection: close` on the last response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum GoAway {
    /// No stream was open for [`Limits::keepalive_timeout`](crate::Limits::keepalive_timeout)
    /// (also reported as [`Observer::keepalive_timeout`]).
    Idle,
    /// The connection carried
    /// [`Limits::max_requests_per_connection`](crate::Limits::max_requests_per_connection)
    /// requests.
    MaxRequests,
    /// More than [`Http2Limits::max_abandoned_streams`](crate::Http2Limits::max_abandoned_streams)
    /// streams ended before their response did (reset by the client, or stalled), and
    /// more than completed: streams in flight may finish, within
    /// [`Limits::keepalive_timeout`](crate::Limits::keepalive_timeout).
    ResetStorm,
    /// After a policy reload, the connection's certificate no longer passes its rule
    /// (its stream was answered 421).
    Reload,
}

impl GoAway {
    /// The word logged (`goaway=`) and used in metrics: `idle`, `max_requests`,
    /// `reset_storm`, `reload`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::MaxRequests => "max_requests",
            Self::ResetStorm => "reset_storm",
            Self::Reload => "reload",
        }
    }

    const ALL: [Self; 4] = [
        Self::Idle,
        Self::MaxRequests,
        Self::ResetStorm,
        Self::Reload,
    ];

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

impl std::fmt::Display for GoAway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Log (and report) a connection told to end.
fn told_to_end(why: GoAway, verdict: &Verdict, observer: &dyn Observer) {
    observer.goaway(why);
    if why == GoAway::Idle {
        return; // logged as the keep-alive timeout
    }
    let peer = verdict.peer.map(|p| p.to_string()).unwrap_or_default();
    tracing::info!(target: "aop::verdict", verdict = %verdict.outcome, goaway = why.as_str(),
        %peer, sni = verdict.sni.as_deref().unwrap_or(""), rule = verdict.rule.as_deref().unwrap_or(""),
        "connection told to end (HTTP/2 GOAWAY, or HTTP/1.1 Connection: close)");
}

/// Which post-handshake timer closed a connection.
#[derive(Clone, Copy, Debug)]
enum Timeout {
    Header,
    KeepAlive,
    Send,
    /// An idle HTTP/2 connection was sent GOAWAY and has not closed within
    /// [`GOAWAY_GRACE`] (already logged as `KeepAlive`).
    Grace,
}

impl Timeout {
    fn as_str(self) -> &'static str {
        match self {
            Self::Header => "header_read_timeout",
            Self::KeepAlive => "keepalive_timeout",
            Self::Send => "send_timeout",
            Self::Grace => "goaway_grace",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Self::Header => "the request head did not arrive whole in time",
            Self::KeepAlive => "no request started in time",
            Self::Send => "the client stopped taking the response",
            Self::Grace => "the client did not close after GOAWAY",
        }
    }
}

/// Where a connection is between requests, for its timers. Touched by the connection's
/// own task, and on HTTP/2 also by its streams' tasks (a response body ends there).
struct Activity {
    start: tokio::time::Instant,
    /// HTTP/2: no header-read phase; bytes between requests do not start one.
    h2: bool,
    /// HTTP/2: why the connection is to be sent GOAWAY, decided in a stream's call or
    /// task and not yet acted on by the connection's loop (a set of [`GoAway`] bits).
    goaway: AtomicU8,
    /// A GOAWAY was decided (on HTTP/2), or the caller's shutdown began: the connection
    /// is ending ([`InFlight::stopping`] completes).
    ending: AtomicBool,
    /// HTTP/2: the GOAWAY decided was for a fault (a reset storm, a failed re-check):
    /// streams the client still opens are refused (421) at once.
    refusing: AtomicBool,
    /// The [`GoAway`] bits ever decided: each is decided (and reported) once.
    decided: AtomicU8,
    /// HTTP/2: streams opened after [`Activity::ending`] was set. The first
    /// `max_concurrent_streams` of them (those the client sent before it saw the GOAWAY)
    /// are served; the rest are refused (421).
    late: AtomicU64,
    /// [`crate::Http2Limits::max_concurrent_streams`].
    max_late: u64,
    /// Woken when [`Activity::ending`] is set.
    stop: tokio::sync::Notify,
    /// Requests (HTTP/2: streams) handed to [`WithVerdict`] so far.
    requests: AtomicU64,
    /// [`crate::Limits::max_requests_per_connection`].
    max_requests: u64,
    /// [`crate::Limits::plain_connect`].
    plain_connect: bool,
    /// HTTP/2: streams that ended before their response did (the client reset them, or
    /// stopped taking the response).
    abandoned: AtomicUsize,
    /// HTTP/2: streams whose response ended (refusals included).
    completed: AtomicUsize,
    /// [`crate::Http2Limits::max_abandoned_streams`].
    max_abandoned: usize,
    /// HTTP/2: the connection's task, woken when its last open stream ends in a stream
    /// task (so that its idle timer starts), or when a stream decides on GOAWAY.
    waker: std::sync::Mutex<Option<std::task::Waker>>,
    phase: AtomicU8,
    /// When the phase began, in ms since `start`.
    since_ms: AtomicU64,
    /// Requests handed to the service whose response body has not finished.
    in_flight: AtomicUsize,
    /// Since when writes to the client have been blocked (ms since `start`), or
    /// [`FLOWING`].
    write_blocked_ms: AtomicU64,
}

/// [`Activity::write_blocked_ms`] when writes are not blocked.
const FLOWING: u64 = u64::MAX;

/// No request in progress; waiting for the first byte of the next.
const IDLE: u8 = 0;
/// Bytes of a request head have arrived; waiting for the rest of it.
const HEAD: u8 = 1;
/// A request is with the service, or its response is being written.
const BUSY: u8 = 2;

impl Activity {
    fn new(h2: bool, limits: &crate::Limits) -> Self {
        Self {
            start: tokio::time::Instant::now(),
            h2,
            goaway: AtomicU8::new(0),
            ending: AtomicBool::new(false),
            refusing: AtomicBool::new(false),
            decided: AtomicU8::new(0),
            late: AtomicU64::new(0),
            max_late: u64::from(limits.http2.max_concurrent_streams),
            stop: tokio::sync::Notify::new(),
            requests: AtomicU64::new(0),
            max_requests: limits.max_requests_per_connection,
            plain_connect: limits.plain_connect,
            abandoned: AtomicUsize::new(0),
            completed: AtomicUsize::new(0),
            max_abandoned: limits.http2.max_abandoned_streams,
            waker: std::sync::Mutex::new(None),
            phase: AtomicU8::new(IDLE),
            since_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            write_blocked_ms: AtomicU64::new(FLOWING),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(FLOWING - 1)
    }

    fn enter(&self, phase: u8) {
        self.since_ms.store(self.now_ms(), Ordering::Relaxed);
        self.phase.store(phase, Ordering::Relaxed);
    }

    /// Note whether a write (or flush) to the client went through or is blocked.
    fn wrote<T>(&self, r: &Poll<T>) {
        let blocked = self.write_blocked_ms.load(Ordering::Relaxed);
        match (r.is_pending(), blocked == FLOWING) {
            (true, true) => self
                .write_blocked_ms
                .store(self.now_ms(), Ordering::Relaxed),
            (false, false) => self.write_blocked_ms.store(FLOWING, Ordering::Relaxed),
            _ => {}
        }
    }

    fn bytes_read(&self) {
        if !self.h2 && self.phase.load(Ordering::Relaxed) == IDLE {
            self.enter(HEAD);
        }
    }

    /// HTTP/2: wake the connection's task when its last open stream ends, or a stream
    /// decides on GOAWAY. `idle`: the loop waits for the last stream's end.
    fn register(&self, cx: &Context<'_>, idle: bool) {
        let mut w = self
            .waker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match &*w {
            Some(old) if old.will_wake(cx.waker()) => {}
            _ => *w = Some(cx.waker().clone()),
        }
        drop(w);
        // The last stream may have ended, or a GOAWAY been decided, between the loop's
        // checks and now.
        if (idle && self.in_flight.load(Ordering::Relaxed) == 0)
            || self.goaway.load(Ordering::Relaxed) != 0
        {
            cx.waker().wake_by_ref();
        }
    }

    /// Wake the connection's task, if it waits.
    fn wake(&self) {
        if let Some(w) = self
            .waker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        {
            w.wake();
        }
    }

    /// A request (`stream`: an HTTP/2 one, whose end before its response's counts as
    /// abandoned), or a hold, begins.
    fn begin(self: &Arc<Self>, stream: bool) -> Busy {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.phase.store(BUSY, Ordering::Relaxed);
        Busy {
            activity: self.clone(),
            open: stream,
            stream,
        }
    }

    /// HTTP/2: decide on GOAWAY for `why` (once for each reason); the connection's loop
    /// sends it.
    fn end(&self, why: GoAway) {
        if matches!(why, GoAway::ResetStorm | GoAway::Reload) {
            self.refusing.store(true, Ordering::Relaxed);
        }
        if self.decided.fetch_or(why.bit(), Ordering::Relaxed) & why.bit() != 0 {
            return;
        }
        self.stopping();
        self.goaway.fetch_or(why.bit(), Ordering::Relaxed);
        self.wake();
    }

    /// The connection is ending (a GOAWAY, or the caller's shutdown): tell the
    /// [`InFlight::stopping`] futures.
    fn stopping(&self) {
        if !self.ending.swap(true, Ordering::Relaxed) {
            self.stop.notify_waiters();
        }
    }

    /// HTTP/2: a stream ended before its response did. A reset storm, which ends the
    /// connection, is more than `max_abandoned_streams` such streams that are also more
    /// than the streams completed on it: a connection that carries many clients' requests
    /// (an edge's) sees some of them cancelled, in proportion; a storm is mostly resets.
    /// What one connection can make the service start stays bounded by
    /// `max_requests_per_connection`.
    fn abandon(&self) {
        let abandoned = self.abandoned.fetch_add(1, Ordering::Relaxed) + 1;
        if abandoned > self.max_abandoned && abandoned > self.completed.load(Ordering::Relaxed) {
            self.end(GoAway::ResetStorm);
        }
    }

    /// HTTP/2: whether a stream opened now is refused (421): after a fault's GOAWAY, or
    /// past the streams the client may have sent before it saw a GOAWAY.
    fn refuse_late(&self) -> bool {
        if !self.ending.load(Ordering::Relaxed) {
            return false;
        }
        self.refusing.load(Ordering::Relaxed)
            || self.late.fetch_add(1, Ordering::Relaxed) >= self.max_late
    }

    /// The next timer to run, if any. `grace`: when an idle HTTP/2 connection sent
    /// GOAWAY by the idle timer is to be dropped.
    fn deadline(
        &self,
        limits: &crate::Limits,
        grace: Option<tokio::time::Instant>,
    ) -> Option<(tokio::time::Instant, Timeout)> {
        let blocked = self.write_blocked_ms.load(Ordering::Relaxed);
        if blocked != FLOWING {
            let since = Duration::from_millis(blocked);
            return Some((self.start + since + limits.send_timeout, Timeout::Send));
        }
        // On HTTP/2 a stream's end (another task) and the next stream's start can
        // interleave: the count is the truth.
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let since = self.start + Duration::from_millis(self.since_ms.load(Ordering::Relaxed));
        let (limit, why) = match self.phase.load(Ordering::Relaxed) {
            // The grace counts from the last stream's end too: one that ended just at
            // the deadline has its last frames still to flush.
            IDLE => match grace {
                Some(at) => return Some((at.max(since + GOAWAY_GRACE), Timeout::Grace)),
                None => (limits.keepalive_timeout, Timeout::KeepAlive),
            },
            HEAD => (limits.header_read_timeout, Timeout::Header),
            _ => return None,
        };
        Some((since + limit, why))
    }
}

/// A request in progress, or a tunnel that [`InFlight::hold`]s its connection: while
/// one lives, the connection is busy and its keep-alive timer does not run. The glue's
/// own are dropped when the response body ends (or is dropped).
#[must_use = "the connection is busy only while this lives"]
pub struct Busy {
    activity: Arc<Activity>,
    /// An HTTP/2 request whose response has not ended: dropped so, it was abandoned.
    open: bool,
    /// An HTTP/2 request (not a hold): dropped not `open`, it completed.
    stream: bool,
}

impl std::fmt::Debug for Busy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Busy").finish_non_exhaustive()
    }
}

/// A handle on the connection a request came in on, in every request's extensions (as
/// the verdict is), for a service that keeps using the connection after its response:
/// a tunnel.
///
/// On HTTP/2 a tunnel (an extended CONNECT, RFC 8441, with
/// [`Http2Limits::connect_protocol`](crate::Http2Limits::connect_protocol) on) is a
/// stream whose response body ends right after the `200`, while the bytes it carries go
/// on over `hyper::upgrade::on(request)`. To the glue the connection then looks idle, and
/// [`Limits::keepalive_timeout`](crate::Limits::keepalive_timeout) after the response it
/// would send GOAWAY and close the tunnel with the connection. The task that runs the
/// tunnel holds [`InFlight::hold`]'s [`Busy`] for as long as the tunnel lives, so the
/// connection counts as busy: the tunnel's own idle timeout is then the tunnel's bound,
/// and must exist.
///
/// On HTTP/1.1, once a `101 Switching Protocols` is written the upgraded IO belongs to
/// whoever called `hyper::upgrade::on` and no timer of the glue applies to it; the
/// connection's future (and so [`crate::serve`]'s graceful shutdown) lasts while a hold
/// lives, until [`Limits::keepalive_timeout`](crate::Limits::keepalive_timeout) after
/// the shutdown signal at most. A tunnel ends itself when [`InFlight::stopping`]
/// completes.
///
/// ```no_run
/// # use aop_verify::hyper::InFlight;
/// # fn handler(mut req: hyper::Request<hyper::body::Incoming>) {
/// let busy = req.extensions().get::<InFlight>().expect("set by aop-verify").hold();
/// let upgrade = hyper::upgrade::on(&mut req);
/// tokio::spawn(async move {
///     let _busy = busy; // until the tunnel ends
///     if let Ok(io) = upgrade.await { /* copy bytes, with an idle timeout */ }
/// });
/// // … answer 200 (HTTP/2 CONNECT) or 101 (HTTP/1.1 Upgrade) with an empty body
/// # }
/// ```
#[derive(Clone)]
pub struct InFlight(Arc<Activity>);

impl InFlight {
    /// Keep the connection busy until the returned value is dropped.
    pub fn hold(&self) -> Busy {
        self.0.begin(false)
    }

    /// Completes when the connection is ending: the caller's shutdown signal (of
    /// [`serve_connection_until`], or [`crate::serve`]'s graceful shutdown), or any
    /// GOAWAY of the glue's on HTTP/2. A tunnel passes it as its stop signal
    /// (`aop_http::tunnel`'s `stop`) and closes, so that a graceful shutdown does not
    /// wait on it. On HTTP/2 the connection is closed anyway
    /// [`Limits::keepalive_timeout`](crate::Limits::keepalive_timeout) after a
    /// shutdown or a fault's GOAWAY, whatever its tunnels do.
    pub fn stopping(&self) -> impl Future<Output = ()> + Send + 'static {
        let activity = self.0.clone();
        async move {
            loop {
                let notified = activity.stop.notified();
                let mut notified = std::pin::pin!(notified);
                notified.as_mut().enable();
                if activity.ending.load(Ordering::Relaxed) {
                    return;
                }
                notified.await;
            }
        }
    }
}

impl std::fmt::Debug for InFlight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InFlight").finish_non_exhaustive()
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let activity = &self.activity;
        if self.open {
            activity.abandon();
        } else if self.stream {
            activity.completed.fetch_add(1, Ordering::Relaxed);
        }
        if activity.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            activity.enter(IDLE);
            // HTTP/2: the idle timer starts; HTTP/1.1: an upgraded connection's last
            // tunnel has ended.
            activity.wake();
        }
    }
}

/// The TLS stream, noting when request bytes arrive.
struct Watched<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.bytes_read();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.activity.wrote(&r);
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.activity.wrote(&r);
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.activity.wrote(&r);
        r
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The largest data frame a response body hands hyper at once (HTTP/2's default frame
/// size): a larger chunk is handed over in pieces.
const PIECE: usize = 16 * 1024;

pin_project_lite::pin_project! {
    /// A response body that marks the end of its request for the connection's timers,
    /// and hands its data over in [`PIECE`]s. On HTTP/2 hyper polls a body again only
    /// once the client's flow-control window has room: in pieces, the body's end (and
    /// the connection's idle timer) comes when at most a piece is left to send, and each
    /// piece the client takes restarts the stream's send timer — handed a 1 MiB chunk
    /// whole, h2 would hold it for as long as a slow reader takes, with the connection
    /// looking idle and the stream stalled.
    struct Tracked<B> {
        #[pin]
        inner: B,
        busy: Option<Busy>,
        // What is left of the chunk being handed over.
        rest: hyper::body::Bytes,
    }
}

impl<B: Body> Body for Tracked<B> {
    type Data = hyper::body::Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        use hyper::body::{Buf as _, Frame};
        let mut this = self.project();
        let bytes = |mut d: B::Data| d.copy_to_bytes(d.remaining());
        let r = if this.rest.is_empty() {
            match this.inner.as_mut().poll_frame(cx) {
                Poll::Ready(Some(Ok(f))) => Poll::Ready(Some(Ok(match f.into_data() {
                    Ok(d) => {
                        let mut all = bytes(d);
                        if all.len() > PIECE {
                            *this.rest = all.split_off(PIECE);
                        }
                        Frame::data(all)
                    }
                    Err(f) => f.map_data(bytes),
                }))),
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            }
        } else {
            let n = this.rest.len().min(PIECE);
            Poll::Ready(Some(Ok(Frame::data(this.rest.split_to(n)))))
        };
        match &r {
            Poll::Ready(None | Some(Err(_))) => {
                ended(this.busy);
                this.busy.take();
            }
            // The last frame: hyper sends it and polls no more.
            Poll::Ready(Some(Ok(f)))
                if !f.is_data() || (this.rest.is_empty() && this.inner.is_end_stream()) =>
            {
                ended(this.busy);
            }
            _ => {}
        }
        // On HTTP/2 (in a stream's task): tell its watchdog.
        let _ = STALL.try_with(|stall| {
            stall.polled(matches!(&r, Poll::Ready(Some(Ok(f))) if f.is_data()));
        });
        r
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        let inner = self.inner.size_hint();
        let rest = self.rest.len() as u64;
        let mut hint = hyper::body::SizeHint::new();
        hint.set_lower(inner.lower().saturating_add(rest));
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper.saturating_add(rest));
        }
        hint
    }
}

/// The response has ended (or failed on the server's side): its stream was not
/// abandoned.
fn ended(busy: &mut Option<Busy>) {
    if let Some(b) = busy {
        b.open = false;
    }
}

/// Checks the Host against the connection's rule, inserts the verdict into each
/// request, then calls the inner service.
struct WithVerdict<S> {
    inner: S,
    /// The policy this connection's certificate was last checked against, and the
    /// verdict that check gave; `None` once a check has ended the connection (final: an
    /// HTTP/2 client that keeps opening streams after that gets 421 without the chain
    /// being checked again for each).
    state: std::sync::Mutex<(Arc<Policy>, Option<Arc<Verdict>>)>,
    /// The policy in force.
    handle: PolicyHandle,
    /// The client's chain, to re-check it after a reload.
    chain: Option<Arc<[CertificateDer<'static>]>>,
    observer: Arc<dyn Observer>,
    activity: Arc<Activity>,
}

impl<S> WithVerdict<S> {
    /// The policy to judge this request by and the connection's verdict under it: the
    /// policy in force, once the connection's certificate has been re-checked against it
    /// after a reload; `None` if the connection must end (its rule is gone, or, in
    /// `require` mode, its certificate no longer passes).
    fn current(&self) -> Option<(Arc<Policy>, Arc<Verdict>)> {
        let current = self.handle.current();
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(verdict) = state.1.clone() else {
            return None; // ended by an earlier check
        };
        if Arc::ptr_eq(&state.0, &current) {
            return Some((current, verdict));
        }
        let was = verdict;
        let Some((rule, verdict)) = current.rejudge(&was, self.chain.as_deref()) else {
            state.1 = None;
            return None;
        };
        if verdict.outcome != was.outcome {
            tracing::warn!(target: "aop::verdict", rule = rule.name().as_ref(), verdict = %verdict.outcome,
                was = %was.outcome, mode = ?rule.mode(),
                "a kept-alive connection's certificate has a new verdict under the reloaded policy");
        }
        // Judged by the rule's mode now, not the one it was accepted under: a reload that
        // makes an `optional` rule `require` ends its NONE and FAILED connections too.
        if rule.mode() == Mode::Require && !verdict.is_success() {
            tracing::warn!(target: "aop::verdict", rule = rule.name().as_ref(), verdict = %verdict.outcome,
                "a kept-alive connection does not pass its rule after the reload: 421 and close");
            state.1 = None;
            return None;
        }
        *state = (current.clone(), Some(verdict.clone()));
        Some((current, verdict))
    }

    /// 400 or 421 for a request whose names do not all parse strictly, or do not all
    /// belong to the connection's rule; `None` if it may pass.
    fn refuse_names(
        &self,
        req: &Request<Incoming>,
        policy: &Policy,
        verdict: &Verdict,
    ) -> Option<StatusCode> {
        let bad = || {
            self.observer.bad_request();
            Some(StatusCode::BAD_REQUEST)
        };
        let mut hosts = req.headers().get_all(HOST).iter();
        let host = hosts.next();
        if hosts.next().is_some() {
            return bad();
        }
        // HTTP/2's `:authority`, or an HTTP/1.x absolute-form target's authority.
        let absolute = req.uri().authority();
        if req.version() == hyper::Version::HTTP_2 {
            // RFC 9113 §8.3.1: `:authority` or `Host` names the target; a `Host` that
            // differs from `:authority` makes the request malformed.
            if host.is_none() && absolute.is_none() {
                return bad();
            }
            if let (Some(h), Some(a)) = (host, absolute) {
                let parse = |b: &[u8]| {
                    std::str::from_utf8(b)
                        .ok()
                        .and_then(|n| authority::parse(n).ok())
                };
                if let (Some(h), Some(a)) = (parse(h.as_bytes()), parse(a.as_str().as_bytes()))
                    && h != a
                {
                    tracing::warn!(target: "aop::verdict", host = %h, authority = %a,
                        rule = verdict.rule.as_deref().unwrap_or(""),
                        "an HTTP/2 request whose Host differs from its :authority: 400");
                    return bad();
                }
            }
        } else if host.is_none() && (req.version() >= hyper::Version::HTTP_11 || absolute.is_none())
        {
            // HTTP/1.1 requires exactly one Host, absolute-form or not (RFC 9112 §3.2);
            // an HTTP/1.0 request must name its host one way or the other.
            return bad();
        }
        // Each name, in turn: 400 if it does not parse, 421 if it is another rule's.
        let judge = |name: &[u8]| -> Option<StatusCode> {
            let Some(authority) = std::str::from_utf8(name)
                .ok()
                .and_then(|n| authority::parse(n).ok())
            else {
                return bad();
            };
            if authority_in_rule(policy, verdict.rule.as_deref(), &authority) {
                return None;
            }
            tracing::warn!(target: "aop::verdict", host = %authority, rule = verdict.rule.as_deref().unwrap_or(""),
                sni = verdict.sni.as_deref().unwrap_or(""), "request for a host outside the connection's rule: 421");
            self.observer.misdirected();
            Some(StatusCode::MISDIRECTED_REQUEST)
        };
        let direct = host
            .map(hyper::header::HeaderValue::as_bytes)
            .into_iter()
            .chain(absolute.map(|a| a.as_str().as_bytes()));
        // What an application behind a proxy may route by instead of Host: each element
        // of these lists is held to the same rule.
        let forwarded = FORWARDED_HOST_HEADERS
            .iter()
            .flat_map(|name| req.headers().get_all(*name))
            .flat_map(|v| v.as_bytes().split(|b| *b == b','))
            .map(<[u8]>::trim_ascii);
        let forwarded_host = req
            .headers()
            .get_all(hyper::header::FORWARDED)
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b',' || *b == b';'))
            .filter_map(|pair| {
                let eq = pair.iter().position(|b| *b == b'=')?;
                pair[..eq]
                    .trim_ascii()
                    .eq_ignore_ascii_case(b"host")
                    .then(|| {
                        let v = pair[eq + 1..].trim_ascii();
                        v.strip_prefix(b"\"")
                            .and_then(|v| v.strip_suffix(b"\""))
                            .unwrap_or(v)
                    })
            });
        direct
            .chain(forwarded)
            .chain(forwarded_host)
            .find_map(judge)
    }
}

/// Headers that name the request's host for applications behind a proxy (besides
/// `Forwarded: host=`): checked like Host.
const FORWARDED_HOST_HEADERS: [&str; 3] = ["x-forwarded-host", "x-host", "x-original-host"];

impl<S, B> Service<Request<Incoming>> for WithVerdict<S>
where
    S: Service<Request<Incoming>, Response = Response<B>>,
    B: Body + Default,
{
    type Response = Response<Tracked<B>>;
    type Error = S::Error;
    type Future = Answer<S::Future, B, S::Error>;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        // HTTP/2 has no `Connection` header: a stream's refusal ends only that stream.
        let h1 = req.version() != hyper::Version::HTTP_2;
        let activity = &self.activity;
        let busy = activity.begin(!h1);
        let refuse = |status: StatusCode, close: bool, busy: Busy| {
            let mut resp = Response::new(B::default());
            *resp.status_mut() = status;
            if close && h1 {
                resp.headers_mut().insert(
                    hyper::header::CONNECTION,
                    hyper::header::HeaderValue::from_static("close"),
                );
            }
            // A refusal is a complete answer, never an abandoned stream.
            let mut busy = Some(busy);
            ended(&mut busy);
            Answer::Refused {
                response: Some(resp),
                busy,
            }
        };
        if !h1 && activity.refuse_late() {
            // HTTP/2: a stream opened after a fault's GOAWAY, or more than a client could
            // have sent before it saw a GOAWAY: retry on another connection.
            self.observer
                .refused(&req, StatusCode::MISDIRECTED_REQUEST, "after_goaway");
            return refuse(StatusCode::MISDIRECTED_REQUEST, true, busy);
        }
        let connect = req.method() == hyper::Method::CONNECT;
        let last = activity.requests.fetch_add(1, Ordering::Relaxed) + 1 >= activity.max_requests;
        if last && !h1 {
            activity.end(GoAway::MaxRequests);
        }
        let Some((policy, verdict)) = self.current() else {
            self.observer.misdirected();
            // HTTP/2: 421 on this stream, and GOAWAY for the connection.
            if !h1 {
                activity.end(GoAway::Reload);
            }
            self.observer.refused(
                &req,
                StatusCode::MISDIRECTED_REQUEST,
                "certificate_rejected",
            );
            return refuse(StatusCode::MISDIRECTED_REQUEST, true, busy);
        };
        if let Some(status) = self.refuse_names(&req, &policy, &verdict) {
            let reason = if status == StatusCode::BAD_REQUEST {
                "bad_host"
            } else {
                "host_outside_rule"
            };
            self.observer.refused(&req, status, reason);
            return refuse(status, last || status == StatusCode::BAD_REQUEST, busy);
        }
        // A plain CONNECT (no `:protocol`) asks for a tunnel to anywhere: only for an
        // application that opted in (after the names: another rule's host is 421 first).
        if req.method() == hyper::Method::CONNECT
            && !activity.plain_connect
            && req.extensions().get::<hyper::ext::Protocol>().is_none()
        {
            self.observer
                .refused(&req, StatusCode::METHOD_NOT_ALLOWED, "connect");
            return refuse(StatusCode::METHOD_NOT_ALLOWED, true, busy);
        }
        if last && h1 {
            told_to_end(GoAway::MaxRequests, &verdict, &*self.observer);
        }
        req.extensions_mut().insert(verdict);
        req.extensions_mut().insert(InFlight(activity.clone()));
        Answer::Inner {
            future: Box::pin(self.inner.call(req)),
            busy: Some(busy),
            close: last && h1,
            connect,
        }
    }
}

/// The service's future, or an immediate refusal (400 or 421).
enum Answer<F, B, E> {
    /// The inner service is handling the request.
    Inner {
        /// The service's future.
        future: Pin<Box<F>>,
        busy: Option<Busy>,
        /// HTTP/1.1: the connection's last request; its response says
        /// `Connection: close`.
        close: bool,
        /// A CONNECT: a 2xx answer is a tunnel, its response complete.
        connect: bool,
    },
    /// The request was refused before reaching the service.
    Refused {
        /// The response.
        response: Option<Response<B>>,
        busy: Option<Busy>,
    },
    _Error(std::marker::PhantomData<fn() -> E>),
}

// Nothing in `Answer` is structurally pinned: the inner future is boxed, and the
// response is moved out, never pinned.
impl<F, B, E> Unpin for Answer<F, B, E> {}

impl<F, B: Body, E> Future for Answer<F, B, E>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<Tracked<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let track = |resp: Response<B>, busy: &mut Option<Busy>| {
            let mut busy = busy.take();
            // hyper sends an empty body with the head, and never polls it.
            if resp.body().is_end_stream() {
                ended(&mut busy);
            }
            resp.map(|inner| Tracked {
                inner,
                busy,
                rest: hyper::body::Bytes::new(),
            })
        };
        match self.get_mut() {
            Self::Inner {
                future,
                busy,
                close,
                connect,
            } => match future.as_mut().poll(cx) {
                Poll::Ready(Ok(mut resp)) => {
                    if *connect && resp.status().is_success() {
                        ended(busy);
                    }
                    if *close {
                        resp.headers_mut().insert(
                            hyper::header::CONNECTION,
                            hyper::header::HeaderValue::from_static("close"),
                        );
                    }
                    Poll::Ready(Ok(track(resp, busy)))
                }
                Poll::Ready(Err(e)) => {
                    // The service failed, not the client: hyper resets the stream.
                    ended(busy);
                    Poll::Ready(Err(e))
                }
                Poll::Pending => Poll::Pending,
            },
            Self::Refused { response, busy } => Poll::Ready(Ok(track(
                response.take().expect("polled after completion"),
                busy,
            ))),
            Self::_Error(_) => unreachable!("never constructed"),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a test: panics are failures

    use super::*;

    /// The idle GOAWAY's grace counts from the last stream's end when that is later: a
    /// stream that ended just at the deadline keeps a second to flush its last frames.
    #[tokio::test]
    async fn the_goaway_grace_restarts_from_the_last_streams_end() {
        let limits = crate::Limits::default();
        let activity = Arc::new(Activity::new(true, &limits));
        let grace = Some(activity.start);
        let (at, why) = activity.deadline(&limits, grace).unwrap();
        assert!(matches!(why, Timeout::Grace));
        assert_eq!(at, activity.start + GOAWAY_GRACE, "no stream since");
        let mut busy = Some(activity.begin(true));
        assert!(
            activity.deadline(&limits, grace).is_none(),
            "a stream is open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        ended(&mut busy);
        drop(busy);
        let end = tokio::time::Instant::now();
        let (at, _) = activity.deadline(&limits, grace).unwrap();
        assert!(at >= activity.start + Duration::from_millis(20) + GOAWAY_GRACE);
        assert!(at <= end + GOAWAY_GRACE);
        assert_eq!(activity.abandoned.load(Ordering::Relaxed), 0, "it ended");
    }

    /// An HTTP/2 stream dropped before its response ended counts as abandoned; a hold
    /// and an HTTP/1.1 request never do; one more than the limit decides a reset-storm
    /// GOAWAY, once.
    #[test]
    fn abandoned_streams_decide_a_goaway_past_the_limit() {
        let mut limits = crate::Limits::default();
        limits.http2.max_abandoned_streams = 2;
        let activity = Arc::new(Activity::new(true, &limits));
        drop(activity.begin(false));
        drop(InFlight(activity.clone()).hold());
        assert_eq!(activity.abandoned.load(Ordering::Relaxed), 0);
        for _ in 0..2 {
            drop(activity.begin(true));
        }
        assert_eq!(activity.goaway.load(Ordering::Relaxed), 0, "at the limit");
        drop(activity.begin(true));
        assert_eq!(
            activity.goaway.swap(0, Ordering::Relaxed),
            GoAway::ResetStorm.bit()
        );
        assert!(activity.ending.load(Ordering::Relaxed));
        drop(activity.begin(true));
        assert_eq!(activity.goaway.load(Ordering::Relaxed), 0, "decided once");
    }

    /// Streams whose response completed raise the bar: abandoned streams decide a
    /// reset-storm GOAWAY only once they are past the limit and past the completed ones.
    #[test]
    fn completed_streams_keep_cancelled_ones_from_being_a_storm() {
        let mut limits = crate::Limits::default();
        limits.http2.max_abandoned_streams = 2;
        let activity = Arc::new(Activity::new(true, &limits));
        for _ in 0..4 {
            let mut busy = Some(activity.begin(true));
            ended(&mut busy);
        }
        for _ in 0..4 {
            drop(activity.begin(true));
        }
        assert_eq!(
            activity.goaway.load(Ordering::Relaxed),
            0,
            "4 of 8 abandoned"
        );
        drop(activity.begin(true));
        assert_eq!(
            activity.goaway.swap(0, Ordering::Relaxed),
            GoAway::ResetStorm.bit(),
            "5 abandoned, 4 completed"
        );
        assert!(
            activity.refuse_late(),
            "a storm's GOAWAY refuses new streams"
        );
    }

    /// After a request-cap GOAWAY, `max_concurrent_streams` more streams are served (the
    /// client sent them before it saw it), then refused.
    #[test]
    fn streams_after_a_request_cap_goaway_are_served_up_to_the_concurrency() {
        let mut limits = crate::Limits::default();
        limits.http2.max_concurrent_streams = 3;
        let activity = Activity::new(true, &limits);
        assert!(!activity.refuse_late());
        activity.end(GoAway::MaxRequests);
        activity.end(GoAway::MaxRequests);
        assert_eq!(
            activity.goaway.load(Ordering::Relaxed),
            GoAway::MaxRequests.bit(),
            "decided once"
        );
        assert_eq!(
            (0..5).map(|_| activity.refuse_late()).collect::<Vec<_>>(),
            [false, false, false, true, true]
        );
    }

    /// A chunk larger than a piece is handed over in pieces; the body ends (and its
    /// request with it) with the last piece, and its size stays exact.
    #[tokio::test]
    async fn a_big_chunk_is_handed_over_in_pieces() {
        use http_body_util::BodyExt as _;
        let limits = crate::Limits::default();
        let activity = Arc::new(Activity::new(true, &limits));
        let chunk = hyper::body::Bytes::from(vec![7; 2 * PIECE + 5]);
        let mut body = Tracked {
            inner: http_body_util::Full::new(chunk),
            busy: Some(activity.begin(true)),
            rest: hyper::body::Bytes::new(),
        };
        assert_eq!(body.size_hint().exact(), Some(2 * PIECE as u64 + 5));
        let mut sizes = Vec::new();
        while let Some(frame) = body.frame().await {
            assert_eq!(
                body.busy.as_ref().unwrap().open,
                !body.is_end_stream(),
                "the request ends with the last piece"
            );
            sizes.push(frame.unwrap().into_data().unwrap().len());
            assert_eq!(
                body.size_hint().exact(),
                Some((2 * PIECE + 5 - sizes.iter().sum::<usize>()) as u64)
            );
        }
        assert_eq!(sizes, [PIECE, PIECE, 5]);
        drop(body);
        assert_eq!(activity.abandoned.load(Ordering::Relaxed), 0);
        assert_eq!(activity.completed.load(Ordering::Relaxed), 1);
    }

    /// A body that gave a data frame is stalled from then until it is polled again.
    #[test]
    fn a_stall_lasts_from_a_data_frame_to_the_next_poll() {
        let stall = Stall::new();
        assert_eq!(stall.since(), None);
        stall.polled(true);
        let since = stall.since().unwrap();
        assert!(since >= stall.epoch && since <= tokio::time::Instant::now());
        stall.polled(false);
        assert_eq!(stall.since(), None, "polled, nothing yet: not stalled");
    }
}
