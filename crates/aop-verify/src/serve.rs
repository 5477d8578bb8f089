//! [`serve`]: an accept loop that serves any tower service (axum's `Router`, a tonic
//! server, a hyper `service_fn` wrapped for tower) over aop's acceptor and hyper glue, in
//! the spirit of `axum::serve` (cargo feature `hyper`).

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper::{Request, Response};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::Acceptor;
use crate::hyper::{Observer, serve_connection_until};

/// An error any service or body may return (what hyper accepts).
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How long the accept loop waits after a failed `accept` (out of descriptors: `EMFILE`,
/// `ENFILE`; out of memory) before it tries again: long enough not to spin, short enough
/// to take the next connection soon after a descriptor is freed.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Serve `service` on every connection `listener` accepts: each TCP connection gets a
/// task of its own, which runs the TLS handshake through `acceptor` (its
/// [`Limits::max_handshakes`](crate::Limits::max_handshakes) bounds the handshakes in
/// progress; a refused handshake is logged by the acceptor and closed) and then serves
/// the connection with [`crate::hyper::serve_connection_until`]: HTTP/2 or HTTP/1.1 as
/// ALPN chose, the verdict in every request's extensions as an `Arc<Verdict>`, the Host
/// and `:authority` rules (400, 421), the re-check after a reload, the connection timers
/// and the HTTP/2 limits of the acceptor's [`Limits`](crate::Limits).
///
/// `service` is any tower service — axum's `Router`, a tonic generated server, a tower
/// stack with its own layers — cloned for each request (as hyper-util's
/// `TowerToHyperService` does); what it returns is the response as is. Await the
/// returned [`Serve`] to run it; it runs until its
/// [graceful shutdown](Serve::with_graceful_shutdown) signal, or for ever.
///
/// A failed `accept` (no descriptor left: `EMFILE`) does not end the loop: it is logged
/// (target `aop::serve`) and retried after a short pause. Connections are not otherwise
/// counted or capped here (aop-origin's guard has a connection budget; a server on
/// `serve` relies on the open-files limit and the acceptor's handshake limit).
///
/// ```no_run
/// use std::convert::Infallible;
/// use std::sync::Arc;
/// use aop_verify::{Acceptor, Limits, PolicyHandle, PolicySpec, Verdict};
///
/// # async fn run(spec: PolicySpec) -> Result<(), Box<dyn std::error::Error>> {
/// let acceptor = Acceptor::new(PolicyHandle::load(&spec)?, Limits::default());
/// // Any tower service: a function here (`tower::service_fn`); axum's Router or a tonic
/// // server go as they are.
/// let service = tower::service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
///     let verdict = req.extensions().get::<Arc<Verdict>>().expect("set by aop-verify");
///     let body = http_body_util::Full::new(hyper::body::Bytes::from(verdict.to_string()));
///     Ok::<_, Infallible>(hyper::Response::new(body))
/// });
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8443").await?;
/// aop_verify::serve(listener, acceptor, service)
///     .with_graceful_shutdown(async {
///         let _ = tokio::signal::ctrl_c().await;
///     })
///     .await?;
/// # Ok(())
/// # }
/// ```
pub fn serve<S, B>(listener: TcpListener, acceptor: Acceptor, service: S) -> Serve<S>
where
    S: tower_service::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError> + 'static,
    B: Body + Default + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    Serve {
        listener,
        acceptor,
        service,
        observer: Arc::new(()),
        signal: Box::pin(std::future::pending()),
    }
}

/// The server [`serve`] returns: set it up with the `with_` methods, then `.await` it.
#[must_use = "a Serve does nothing until it is awaited"]
pub struct Serve<S> {
    listener: TcpListener,
    acceptor: Acceptor,
    service: S,
    observer: Arc<dyn Observer>,
    signal: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl<S> std::fmt::Debug for Serve<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Serve")
            .field("listener", &self.listener)
            .field("acceptor", &self.acceptor)
            .finish_non_exhaustive()
    }
}

impl<S> Serve<S> {
    /// When `signal` completes: stop accepting (the listener is closed), drop the
    /// handshakes in progress, tell every connection to finish — HTTP/1.1: the request in
    /// progress, then close; HTTP/2: GOAWAY, then the open streams — and resolve once
    /// every connection has ended, tunnels that hold their connection
    /// ([`InFlight::hold`](crate::hyper::InFlight::hold)) included, HTTP/1.1 upgrades
    /// among them. A tunnel ends itself on
    /// [`InFlight::stopping`](crate::hyper::InFlight::stopping), which completes with
    /// the signal. The connections' own timers still bound how long that takes (a client
    /// that stops reading is closed after
    /// [`Limits::send_timeout`](crate::Limits::send_timeout)), and an HTTP/2 connection,
    /// or an upgraded HTTP/1.1 connection's holds, are given up
    /// [`Limits::keepalive_timeout`](crate::Limits::keepalive_timeout) after the signal
    /// at most; a caller that wants a shorter deadline wraps the future in
    /// `tokio::time::timeout`.
    pub fn with_graceful_shutdown<F>(mut self, signal: F) -> Self
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.signal = Box::pin(signal);
        self
    }

    /// Report every 421, 400 and timeout on every connection to `observer` (for metrics).
    pub fn with_observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observer = observer;
        self
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

impl<S, B> IntoFuture for Serve<S>
where
    S: tower_service::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError> + 'static,
    B: Body + Default + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Output = std::io::Result<()>;
    type IntoFuture = ServeFuture;

    fn into_future(self) -> ServeFuture {
        let Self {
            listener,
            acceptor,
            service,
            observer,
            mut signal,
        } = self;
        ServeFuture(Box::pin(async move {
            // Dropping `stop` tells every connection to finish; every connection holds an
            // `open` receiver, so `open.closed()` completes when the last one has ended.
            let (stop, stop_rx) = watch::channel(());
            let (open, open_rx) = watch::channel(());
            loop {
                let (tcp, peer) = tokio::select! {
                    r = listener.accept() => match r {
                        Ok(c) => c,
                        Err(e) => {
                            tracing::warn!(target: "aop::serve", error = %e,
                                "accept failed; retrying shortly");
                            tokio::select! {
                                () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                                () = &mut signal => break,
                            }
                        }
                    },
                    () = &mut signal => break,
                };
                // Small writes (HTTP/2 frames, gRPC messages) go out at once.
                let _ = tcp.set_nodelay(true);
                let (acceptor, observer) = (acceptor.clone(), observer.clone());
                let service = TowerToHyperService::new(service.clone());
                let (mut stop, open) = (stop_rx.clone(), open_rx.clone());
                let connection = async move {
                    let _open = open; // held until the connection ends
                    let accepted = tokio::select! {
                        // A refusal is already logged by the acceptor (and the alert sent).
                        r = acceptor.accept(tcp, peer) => match r {
                            Ok(accepted) => accepted,
                            Err(_refused) => return,
                        },
                        // No request has been made on it yet: nothing to finish.
                        _ = stop.changed() => return,
                    };
                    let until = async move {
                        let _ = stop.changed().await;
                    };
                    if let Err(e) = serve_connection_until(accepted, service, until, observer).await
                    {
                        tracing::debug!(target: "aop::serve", %peer, error = %e,
                            "connection ended with an error");
                    }
                };
                // Under the caller's `tracing` subscriber, as the glue's HTTP/2 streams are.
                let dispatch = tracing::dispatcher::get_default(Clone::clone);
                tokio::spawn(tracing::instrument::WithSubscriber::with_subscriber(
                    connection, dispatch,
                ));
            }
            drop(listener);
            tracing::info!(target: "aop::serve", connections = open.receiver_count() - 1,
                "shutting down: no new connections; finishing the requests in progress");
            drop(stop);
            drop(open_rx);
            open.closed().await;
            tracing::info!(target: "aop::serve", "every connection has ended");
            Ok(())
        }))
    }
}

/// The future of an awaited [`Serve`]: `Ok(())` once a graceful shutdown has finished.
/// (Nothing makes it fail today — accept errors are logged and retried — but the
/// `io::Result` leaves room, as `axum::serve`'s does.)
#[must_use = "futures do nothing unless polled"]
pub struct ServeFuture(Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>>);

impl std::fmt::Debug for ServeFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeFuture").finish_non_exhaustive()
    }
}

impl Future for ServeFuture {
    type Output = std::io::Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.as_mut().poll(cx)
    }
}
