//! hyper glue (cargo feature `hyper`): a connector for hyper-util's pooled client, and a
//! client whose connection pools are keyed on the client identity.
//!
//! The connector offers what the identity's configuration offers by ALPN (by default
//! `h2`, then `http/1.1`, [`StoreSpec::alpn`](crate::StoreSpec::alpn)) and tells hyper-util
//! what the origin chose: where it chose `h2`, all of an identity's requests to that
//! origin share one multiplexed connection; otherwise they use a pool of HTTP/1.1
//! connections. The client is never `http2_only`, so an origin that offers only
//! `http/1.1` (or no ALPN) is spoken to in HTTP/1.1.
//!
//! hyper-util's pool is keyed on scheme and authority only. A connection made with one
//! client certificate must never carry a request that needs another (after a reload, or
//! when two names share an address), so [`EdgeClient`] keeps one pooled client per
//! identity, as Pingora keys its pool on the client certificate. When a reload retires
//! an identity, its pool is dropped: idle connections close at once, and connections
//! still carrying a request close when it completes.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use hyper::body::{Body, Incoming};
use hyper::{Request, Response, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection, capture_connection};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::ClientConfig;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::connect::{Resolve, Timeouts, address, connect_tls};
use crate::identity::{Identity, IdentityStore};
use crate::{Error, Result};

/// Which identity a response's connection presented (in the response's extensions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PresentedIdentity(pub u64);

/// The identity a response's connection presented, whole (its flavour, name and
/// certificate), in the response's extensions beside [`PresentedIdentity`]: what to log
/// for the request, even if a reload has retired that identity since it was sent.
#[derive(Clone, Debug)]
pub struct Presented(pub Arc<Identity>);

/// How often an HTTP/2 connection with requests in flight is PINGed, and how long the
/// origin has to answer before the connection is closed (and its requests fail): a
/// connection that died silently under a long response is found within 50 s. Idle
/// pooled connections are not PINGed; the pool drops them after its idle timeout.
const H2_KEEP_ALIVE: (Duration, Duration) = (Duration::from_secs(30), Duration::from_secs(20));

/// HTTP/2 flow control on the edge's connections: each stream may hold 256 KiB of
/// response the edge has not yet passed on, and the connection as much as 256 such
/// streams (64 MiB). A visitor that does not read its download stops its own stream
/// once 256 KiB are buffered, and never the connection: with hyper's defaults (2 MiB a
/// stream, 5 MiB the connection) three such visitors stalled every request of the
/// identity to that origin. 256 streams covers aop's origin (100 concurrent streams by
/// default) and nginx (128). Memory is bounded by the streams actually open (at most the
/// origin's `SETTINGS_MAX_CONCURRENT_STREAMS`) × 256 KiB, and by 64 MiB, per identity and
/// origin; it is only ever reached by responses visitors are not reading.
const H2_STREAM_WINDOW: u32 = 256 * 1024;
/// See [`H2_STREAM_WINDOW`].
const H2_CONNECTION_WINDOW: u32 = 256 * H2_STREAM_WINDOW;

/// One pool's connections to one origin (`host:port` as the URI says it): how many are
/// open, and the gate that lets the first request of a cold start connect alone.
#[derive(Debug, Default)]
struct Origin {
    live: AtomicUsize,
    first: tokio::sync::Mutex<()>,
    /// First requests that have got their connection, or failed.
    attempts: AtomicU64,
    /// The last TLS error a connection to it failed with, and when.
    tls: Mutex<Option<(Instant, rustls::Error)>>,
}

impl Origin {
    /// Keep the TLS error inside `e`, if any: HTTP/2 passes only the text of a
    /// connection's I/O error on to its requests, so [`crate::classify`] could not tell
    /// an origin's refusal (a TLS alert after the handshake, as TLS 1.3 sends it) apart.
    fn record(&self, e: &std::io::Error) {
        if let Some(tls) = e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
            *self
                .tls
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) =
                Some((Instant::now(), tls.clone()));
        }
    }

    /// The last TLS error recorded at or after `since`.
    fn tls_error_since(&self, since: Instant) -> Option<rustls::Error> {
        let tls = self
            .tls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        tls.as_ref()
            .filter(|(at, _)| *at >= since)
            .map(|(_, e)| e.clone())
    }
}

/// A request that failed on a connection whose TLS failed: the request's error, with
/// the TLS error as its source.
#[derive(Debug)]
struct TlsFailed {
    request: hyper_util::client::legacy::Error,
    tls: rustls::Error,
}

impl std::fmt::Display for TlsFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.request, self.tls)
    }
}

impl std::error::Error for TlsFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.tls)
    }
}

/// A pool's origins, by lowercase URI authority.
type Origins = Arc<Mutex<HashMap<String, Arc<Origin>>>>;

/// One identity's pooled client, and what its connector knows of each origin.
type Pool<B> = (Client<EdgeConnector, B>, Origins);

fn origin(origins: &Origins, uri: &Uri) -> Arc<Origin> {
    let key = uri
        .authority()
        .map(|a| a.as_str().to_ascii_lowercase())
        .unwrap_or_default();
    origins
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .entry(key)
        .or_default()
        .clone()
}

/// Counts a connection in [`Origin::live`] while it is open.
#[derive(Debug)]
struct Live(Arc<Origin>);

impl Live {
    fn new(origin: Arc<Origin>) -> Self {
        origin.live.fetch_add(1, Ordering::SeqCst);
        Self(origin)
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A hyper-util connector that presents one identity.
#[derive(Clone, Debug)]
pub struct EdgeConnector {
    identity: Arc<Identity>,
    config: Arc<ClientConfig>,
    resolve: Arc<Resolve>,
    timeouts: Timeouts,
    origins: Origins,
}

impl EdgeConnector {
    /// Connect presenting `identity`, with `resolve` overrides and `timeouts`, offering
    /// the identity's ALPN protocols.
    pub fn new(identity: Arc<Identity>, resolve: Arc<Resolve>, timeouts: Timeouts) -> Self {
        Self {
            config: identity.client_config().clone(),
            identity,
            resolve,
            timeouts,
            origins: Origins::default(),
        }
    }

    /// The same, offering `http/1.1` alone: for requests that need HTTP/1.1, such as an
    /// `Upgrade: websocket` (HTTP/2 has no Upgrade).
    pub fn http1_only(mut self) -> Self {
        let mut config = (*self.config).clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        self.config = Arc::new(config);
        self
    }
}

/// A TLS connection to an origin, as hyper sees it.
#[derive(Debug)]
pub struct EdgeStream {
    io: TokioIo<TlsStream<TcpStream>>,
    identity: Arc<Identity>,
    h2: bool,
    live: Live,
}

impl Connection for EdgeStream {
    fn connected(&self) -> Connected {
        let connected = Connected::new()
            .extra(PresentedIdentity(self.identity.id()))
            .extra(Presented(self.identity.clone()));
        // hyper-util then speaks HTTP/2 on it, and shares it between requests.
        if self.h2 {
            connected.negotiated_h2()
        } else {
            connected
        }
    }
}

impl hyper::rt::Read for EdgeStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if let Poll::Ready(Err(e)) = &polled {
            self.live.0.record(e);
        }
        polled
    }
}

impl EdgeStream {
    /// Keep the TLS error a failed write carries, as reads do.
    fn write_failed<T>(&self, polled: &Poll<std::io::Result<T>>) {
        if let Poll::Ready(Err(e)) = polled {
            self.live.0.record(e);
        }
    }
}

impl hyper::rt::Write for EdgeStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        self.write_failed(&polled);
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_flush(cx);
        self.write_failed(&polled);
        polled
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl tower_service::Service<Uri> for EdgeConnector {
    type Response = EdgeStream;
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<EdgeStream>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            if uri.scheme_str() != Some("https") {
                return Err(Error::Syntax {
                    input: uri.to_string(),
                    reason: "origin pulls need https://",
                });
            }
            let host = uri
                .host()
                .unwrap_or_default()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri.port_u16().unwrap_or(443);
            let addr = address(&host, port, &this.resolve).await?;
            let tls = connect_tls(this.config.clone(), &host, addr, this.timeouts).await?;
            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
            Ok(EdgeStream {
                io: TokioIo::new(tls),
                identity: this.identity.clone(),
                h2,
                live: Live::new(origin(&this.origins, &uri)),
            })
        })
    }
}

fn host_of<B>(req: &Request<B>) -> String {
    req.uri().host().unwrap_or_default().to_owned()
}

/// Whether the origin refused a request without processing it: an HTTP/2 stream reset
/// with `REFUSED_STREAM`, or failed by a graceful (`NO_ERROR`) `GOAWAY` from the origin,
/// which fails only the streams above its last-stream-id (those below it are served).
fn unprocessed(e: &Error) -> bool {
    let Error::Request { error, .. } = e else {
        return false;
    };
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error.as_ref());
    while let Some(e) = source {
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            return h2.reason() == Some(h2::Reason::REFUSED_STREAM)
                || (h2.is_go_away()
                    && h2.is_remote()
                    && h2.reason() == Some(h2::Reason::NO_ERROR));
        }
        source = e.source();
    }
    false
}

/// A pooled HTTP/2 and HTTP/1.1 client for origin pulls: for each request it picks the
/// identity for the request's host (per-hostname > per-zone > shared) and uses that
/// identity's own connection pool. Over HTTP/2 an identity's requests to one origin
/// share one connection; no connection ever carries requests of two identities.
///
/// Every request must have its response head within [`Timeouts::response_header`]
/// ([`Error::NoResponse`] otherwise). A request with no body that the origin refused
/// without processing it is sent once more: the body type is `Default` (an empty body)
/// for that.
///
/// A cold start (requests to an origin this pool has no open connection to) sends its
/// first request alone and the others once that one has its connection: left to
/// itself, hyper-util would open one TLS connection per request before the first said
/// `h2`, keep one and close the rest unused (hyper#1485) — 20 handshakes, and 20
/// verdicts at the origin, for one connection. Over HTTP/1.1 the others then open their
/// own connections, one handshake later.
pub struct EdgeClient<B> {
    store: ArcSwap<IdentityStore>,
    /// Keyed on the identity, and on whether the pool speaks HTTP/1.1 only.
    clients: Mutex<HashMap<(u64, bool), Pool<B>>>,
    resolve: Arc<Resolve>,
    timeouts: Timeouts,
}

impl<B> std::fmt::Debug for EdgeClient<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeClient").finish_non_exhaustive()
    }
}

impl<B> EdgeClient<B>
where
    B: Body + Default + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// A client presenting the identities of `store`.
    pub fn new(store: IdentityStore, resolve: Resolve, timeouts: Timeouts) -> Self {
        Self {
            store: ArcSwap::from_pointee(store),
            clients: Mutex::new(HashMap::new()),
            resolve: Arc::new(resolve),
            timeouts,
        }
    }

    /// The identity a request to `host` would present.
    pub fn identity_for(&self, host: &str) -> Option<Arc<Identity>> {
        self.store.load().select(host).cloned()
    }

    /// Send `req` (its URI must be absolute `https://…`) presenting the right identity,
    /// over HTTP/2 where the origin chose it by ALPN, else HTTP/1.1. The response's
    /// [`PresentedIdentity`] and [`Presented`] extensions say which identity its
    /// connection presented.
    /// Leave `Host` out: the URI's authority is sent as `Host` over HTTP/1.1 and as
    /// `:authority` over HTTP/2 (nginx answers 400 to an HTTP/2 request with both).
    pub async fn request(&self, req: Request<B>) -> Result<Response<Incoming>> {
        self.send(req, false).await
    }

    /// [`request`](Self::request), over a connection that speaks HTTP/1.1 (ALPN
    /// `http/1.1` alone; a pool of its own per identity): for a request that needs
    /// HTTP/1.1, such as `Upgrade: websocket`. After a `101` response,
    /// `hyper::upgrade::on(response)` gives the connection.
    pub async fn request_http1(&self, req: Request<B>) -> Result<Response<Incoming>> {
        self.send(req, true).await
    }

    /// [`send_once`](Self::send_once) within [`Timeouts::response_header`], and once more
    /// if the origin refused it unprocessed and it has no body (so it can be sent again
    /// as it was): an HTTP/2 stream reset with `REFUSED_STREAM`, or one above the
    /// last-stream-id of the origin's graceful `GOAWAY` (an origin closing a connection
    /// after so many requests), which RFC 9113 §8.7 says were not processed. hyper-util
    /// retries only requests it never wrote.
    async fn send(&self, req: Request<B>, http1_only: bool) -> Result<Response<Incoming>> {
        let after = self.timeouts.response_header;
        let within = |req| async move {
            let host = host_of(&req);
            tokio::time::timeout(after, self.send_once(req, http1_only))
                .await
                .unwrap_or(Err(Error::NoResponse { host, after }))
        };
        let again = req.body().is_end_stream().then(|| {
            let mut copy = Request::new(B::default());
            *copy.method_mut() = req.method().clone();
            *copy.uri_mut() = req.uri().clone();
            *copy.version_mut() = req.version();
            *copy.headers_mut() = req.headers().clone();
            copy
        });
        match (within(req).await, again) {
            (Err(e), Some(again)) if unprocessed(&e) => {
                tracing::debug!(target: "aop::edge", error = %e, "the origin did not process the request: sending it again");
                within(again).await
            }
            (sent, _) => sent,
        }
    }

    /// The pool of the identity `host` takes now, made if need be. The identity is chosen
    /// under the pools' lock, which [`reload`](Self::reload) holds across its swap and
    /// clear: a pool is never made for an identity a reload has already retired.
    fn pool(&self, host: &str, http1_only: bool) -> Result<Pool<B>> {
        let mut clients = self
            .clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let identity = self.identity_for(host).ok_or_else(|| Error::NoIdentity {
            host: host.to_owned(),
        })?;
        Ok(clients
            .entry((identity.id(), http1_only))
            .or_insert_with(|| {
                let connector =
                    EdgeConnector::new(identity.clone(), self.resolve.clone(), self.timeouts);
                let connector = if http1_only {
                    connector.http1_only()
                } else {
                    connector
                };
                let origins = connector.origins.clone();
                let (interval, timeout) = H2_KEEP_ALIVE;
                let client = Client::builder(TokioExecutor::new())
                    .timer(TokioTimer::new())
                    .pool_timer(TokioTimer::new())
                    .http2_keep_alive_interval(interval)
                    .http2_keep_alive_timeout(timeout)
                    .http2_keep_alive_while_idle(false)
                    .http2_adaptive_window(false)
                    .http2_initial_stream_window_size(H2_STREAM_WINDOW)
                    .http2_initial_connection_window_size(H2_CONNECTION_WINDOW)
                    .build(connector);
                (client, origins)
            })
            .clone())
    }

    async fn send_once(&self, mut req: Request<B>, http1_only: bool) -> Result<Response<Incoming>> {
        let host = host_of(&req);
        let (client, origins) = self.pool(&host, http1_only)?;
        let origin = origin(&origins, req.uri());
        let started = Instant::now();
        let failed = |e: hyper_util::client::legacy::Error| {
            let error: Box<dyn std::error::Error + Send + Sync> =
                match origin.tls_error_since(started) {
                    Some(tls) if crate::rustls_error(&e).is_none() => {
                        Box::new(TlsFailed { request: e, tls })
                    }
                    _ => Box::new(e),
                };
            Error::Request {
                host: host.clone(),
                error,
            }
        };
        if origin.live.load(Ordering::SeqCst) == 0 {
            let attempts = origin.attempts.load(Ordering::SeqCst);
            let first = origin.first.lock().await;
            // Still cold, and no first request has finished while this one waited
            // (if one failed, the others go at once, each on its own).
            if origin.live.load(Ordering::SeqCst) == 0
                && origin.attempts.load(Ordering::SeqCst) == attempts
            {
                let mut connection = capture_connection(&mut req);
                let mut response = client.request(req);
                let done = tokio::select! {
                    r = &mut response => Some(r),
                    _ = connection.wait_for_connection_metadata() => None,
                };
                origin.attempts.fetch_add(1, Ordering::SeqCst);
                drop(first);
                return match done {
                    Some(r) => r,
                    None => response.await,
                }
                .map_err(failed);
            }
        }
        client.request(req).await.map_err(failed)
    }

    /// Present the identities of `store` from the next request on. Pools of identities
    /// that are gone are dropped; requests in flight on them complete.
    pub fn reload(&self, store: IdentityStore) {
        // One step under the pools' lock: a request choosing its identity (under the
        // same lock) sees either the old store and its pool is cleared here, or the new
        // one.
        let mut clients = self
            .clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.store.store(Arc::new(store));
        clients.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::IdentitySpec;
    use crate::identity::StoreSpec;

    /// A store whose shared identity is a new certificate from a new CA (files in `dir`).
    fn store(dir: &std::path::Path, name: &str) -> IdentityStore {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![format!("{name}.edge.test")])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let file = |ext: &str, text: String| {
            let path = dir.join(format!("{name}.{ext}"));
            std::fs::write(&path, text).unwrap();
            path
        };
        let mut spec = StoreSpec::new([file("ca.pem", ca_cert.pem())]);
        spec.shared = Some(IdentitySpec::new(
            file("pem", cert.pem()),
            file("key", key.serialize_pem()),
        ));
        IdentityStore::load(&spec).unwrap()
    }

    fn pools(client: &EdgeClient<String>) -> Vec<(u64, bool)> {
        let mut keys: Vec<_> = client.clients.lock().unwrap().keys().copied().collect();
        keys.sort_unstable();
        keys
    }

    /// A reload leaves no pool behind, and a request after it makes its pool for the new
    /// identity only: the identity is chosen under the lock the reload holds across its
    /// swap and clear, so a request that read the old store cannot re-create the old
    /// identity's pool after the clear (it either chose before the reload, and its pool
    /// went with the clear, or chooses after it).
    #[tokio::test]
    async fn a_reload_leaves_only_pools_of_the_identities_it_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let (old, new) = (store(dir.path(), "old"), store(dir.path(), "new"));
        let client: EdgeClient<String> =
            EdgeClient::new(old, Resolve::default(), Timeouts::default());
        let old_id = client.identity_for("origin.test").unwrap().id();
        let _ = client.pool("origin.test", false).unwrap();
        let _ = client.pool("origin.test", true).unwrap();
        assert_eq!(pools(&client), [(old_id, false), (old_id, true)]);

        client.reload(new);
        assert_eq!(pools(&client), []);
        let new_id = client.identity_for("origin.test").unwrap().id();
        assert_ne!(new_id, old_id);
        let _ = client.pool("origin.test", false).unwrap();
        assert_eq!(pools(&client), [(new_id, false)]);
    }
}
