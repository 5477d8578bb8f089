//! WebSockets through the guard: the HTTP/1.1 `Upgrade: websocket` (RFC 6455), and
//! HTTP/2's extended CONNECT with `:protocol = websocket` (RFC 8441) turned into an
//! HTTP/1.1 upgrade to the upstream.
//!
//! The upgrade request goes the way of every request (verdict headers set, spoofed ones
//! and hop-by-hop headers stripped, Host checked by aop-verify), with `Connection:
//! upgrade` and `Upgrade: websocket` put back for the upstream. Nothing but `websocket`
//! is ever upgraded (an `h2c` upgrade is stripped as any hop-by-hop header: smuggling).
//! Only once the upstream has switched to WebSocket (`101`, `Upgrade: websocket`) is the
//! client told so, and bytes are copied both ways ([`aop_http::tunnel`]) until either
//! side closes, nothing moves for `tunnel_idle_timeout_secs`, or a shutdown's grace ends.
//!
//! A tunnel keeps its client connection's place: the connection's budget slot, and its
//! count in the shutdown drain. On HTTP/1.1 hyper's connection ends at the `101`, so the
//! connection's task awaits its tunnels ([`Held::finish`]) before it gives up its slot;
//! on HTTP/2 the tunnel holds [`InFlight`] so the connection's idle timer does not close
//! it under the tunnel.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use aop_pki::CertificateDer;
use aop_verify::hyper::{Busy, InFlight};
use aop_verify::{PolicyHandle, Verdict};
use base64::Engine as _;
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue, UPGRADE};
use hyper::upgrade::OnUpgrade;
use hyper::{Method, Request, Response, StatusCode, Version};
use hyper_util::rt::TokioIo;
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinHandle};
use tracing::instrument::WithSubscriber as _;

use crate::guard::Body;
use crate::metrics::SiteMetrics;

/// RFC 6455 §1.3: appended to the key before hashing.
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

const SEC_WEBSOCKET_KEY: HeaderName = HeaderName::from_static("sec-websocket-key");
const SEC_WEBSOCKET_ACCEPT: HeaderName = HeaderName::from_static("sec-websocket-accept");
const SEC_WEBSOCKET_VERSION: HeaderName = HeaderName::from_static("sec-websocket-version");

/// The guard's tunnels: their idle timeout, the signal that ends them all when a
/// shutdown's grace is over, and the one that has each re-checked after a reload.
pub(crate) struct Tunnels {
    /// `tunnel_idle_timeout_secs`, in seconds; a reload sets it for tunnels opened after.
    idle: std::sync::atomic::AtomicU64,
    stop: watch::Sender<bool>,
    /// The policy in force, to re-check a tunnel's connection by after a reload.
    policy: PolicyHandle,
    /// Changed by each reload.
    reloaded: watch::Sender<()>,
}

impl Tunnels {
    pub(crate) fn new(idle: Duration, policy: PolicyHandle) -> Self {
        Self {
            idle: std::sync::atomic::AtomicU64::new(idle.as_secs()),
            stop: watch::Sender::new(false),
            policy,
            reloaded: watch::Sender::new(()),
        }
    }

    /// A reload happened: every tunnel re-checks its connection's certificate against the
    /// new policy (as the glue does before a kept-alive connection's next request, which a
    /// tunnel never makes) and closes (`closed="revoked"`) if it no longer passes.
    /// Tunnels opened from now on get `idle` (`tunnel_idle_timeout_secs`); open ones keep
    /// theirs.
    pub(crate) fn reloaded(&self, idle: Duration) {
        self.idle
            .store(idle.as_secs(), std::sync::atomic::Ordering::Relaxed);
        self.reloaded.send_replace(());
    }

    /// Close every tunnel (each logged `closed="stopped"`): the shutdown's grace is over.
    pub(crate) fn stop(&self) {
        self.stop.send_replace(true);
    }
}

/// One client connection's tunnels (HTTP/1.1: at most one; HTTP/2: one per extended
/// CONNECT stream). Their tasks are aborted when the connection's task lets go of them
/// ([`Held::guard`]): a connection the budget closes takes its tunnels with it.
#[derive(Default)]
pub(crate) struct Held(Mutex<Tasks>);

#[derive(Default)]
struct Tasks {
    /// Every tunnel task not known to be finished, to abort.
    aborts: Vec<AbortHandle>,
    /// The tasks not awaited yet.
    joins: Vec<JoinHandle<()>>,
}

impl Held {
    fn add(&self, task: JoinHandle<()>) {
        let mut tasks = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        tasks.aborts.retain(|t| !t.is_finished());
        tasks.aborts.push(task.abort_handle());
        tasks.joins.push(task);
    }

    /// Completes when every tunnel of the connection has ended.
    pub(crate) async fn finish(&self) {
        loop {
            let joins =
                std::mem::take(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner).joins);
            if joins.is_empty() {
                return;
            }
            for t in joins {
                let _ = t.await;
            }
        }
    }

    /// Aborts the connection's tunnels when dropped (the connection's task ending early).
    pub(crate) fn guard(self: &Arc<Self>) -> AbortTunnels {
        AbortTunnels(self.clone())
    }
}

/// See [`Held::guard`].
pub(crate) struct AbortTunnels(Arc<Held>);

impl Drop for AbortTunnels {
    fn drop(&mut self) {
        let tasks = self.0.0.lock().unwrap_or_else(PoisonError::into_inner);
        for t in &tasks.aborts {
            t.abort();
        }
    }
}

/// A request the guard forwards as a WebSocket upgrade.
pub(crate) struct Upgrade {
    /// The client's side of the tunnel, once the guard has answered.
    client: OnUpgrade,
    /// HTTP/2 extended CONNECT: the `Sec-WebSocket-Key` the guard sent the upstream
    /// (the client sent none). `None`: HTTP/1.1, the client's own key went through.
    key: Option<String>,
    /// Keeps an HTTP/2 connection from going idle under the tunnel.
    busy: Option<Busy>,
}

/// What [`Upgrade::of`] makes of a request.
pub(crate) enum Asked {
    /// Not a tunnel: served as any request (an `Upgrade` of another kind is stripped).
    No,
    /// A WebSocket to forward.
    WebSocket(Upgrade),
    /// An extended CONNECT the guard does not serve: answer this.
    Refused(Response<Body>),
}

impl Upgrade {
    /// Whether `req` asks for a WebSocket the guard forwards. `enabled`: the site's
    /// `websocket`. HTTP/1.1: `GET` without a body, with exactly `Upgrade: websocket` and
    /// `Connection` naming `upgrade`. HTTP/2: `CONNECT` with `:protocol = websocket`;
    /// another `:protocol`, or WebSockets off for the site, is refused 501 (a CONNECT
    /// without `:protocol` is not this module's: 405, as on HTTP/1.1).
    pub(crate) fn of(req: &mut Request<Incoming>, enabled: bool, site: &str) -> Asked {
        let busy = |req: &Request<Incoming>| req.extensions().get::<InFlight>().map(InFlight::hold);
        if req.method() == Method::CONNECT {
            let Some(protocol) = req.extensions().get::<hyper::ext::Protocol>() else {
                return Asked::No;
            };
            if !enabled || !protocol.as_str().eq_ignore_ascii_case("websocket") {
                let what = if enabled {
                    "only the websocket protocol is tunnelled"
                } else {
                    "WebSockets are off for this site"
                };
                tracing::info!(target: "aop::origin", site, protocol = protocol.as_str(), "extended CONNECT refused: {what}");
                return Asked::Refused(crate::guard::text(
                    StatusCode::NOT_IMPLEMENTED,
                    &format!("{what}\n"),
                ));
            }
            let mut key = [0u8; 16];
            if aws_lc_rs::rand::fill(&mut key).is_err() {
                return Asked::Refused(crate::guard::text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "no randomness for a WebSocket key\n",
                ));
            }
            let busy = busy(req);
            return Asked::WebSocket(Self {
                client: hyper::upgrade::on(req),
                key: Some(base64::engine::general_purpose::STANDARD.encode(key)),
                busy,
            });
        }
        if req.version() != Version::HTTP_11
            || req.method() != Method::GET
            || !aop_http::is_websocket_upgrade(req.headers())
        {
            return Asked::No;
        }
        if !enabled {
            tracing::info!(target: "aop::origin", site, "WebSocket upgrade not forwarded (websocket = false): sent on as a plain request");
            return Asked::No;
        }
        if !hyper::body::Body::is_end_stream(req.body()) {
            // An upgrade with a body: what follows the head would be both body and
            // tunnel. Sent on as a plain request.
            return Asked::No;
        }
        let busy = busy(req);
        Asked::WebSocket(Self {
            client: hyper::upgrade::on(req),
            key: None,
            busy,
        })
    }

    /// Make the upstream request an HTTP/1.1 WebSocket upgrade, once the guard's header
    /// work is done (hop-by-hop headers stripped, verdict headers set).
    pub(crate) fn prepare(&self, parts: &mut hyper::http::request::Parts) {
        parts.method = Method::GET;
        parts.version = Version::HTTP_11;
        aop_http::set_websocket_upgrade(&mut parts.headers);
        if let Some(key) = &self.key {
            // RFC 8441 §5: no key, no accept over HTTP/2; the upstream needs both.
            if let Ok(v) = HeaderValue::from_str(key) {
                parts.headers.insert(SEC_WEBSOCKET_KEY, v);
            }
            parts.headers.remove(SEC_WEBSOCKET_ACCEPT);
            parts
                .headers
                .entry(SEC_WEBSOCKET_VERSION)
                .or_insert(HeaderValue::from_static("13"));
        }
    }

    /// The upstream's answer to the upgrade. A `101` to WebSocket (with the right
    /// `Sec-WebSocket-Accept` for the guard's own key): answer the client `101`
    /// (HTTP/1.1) or `200` (HTTP/2) and start the tunnel. Another `101`, or a `2xx` to
    /// an extended CONNECT (which would open a tunnel to nothing): 502. Anything else
    /// is passed on (the upstream refused the upgrade).
    pub(crate) fn answer(self, resp: Response<Incoming>, t: &Tunnel<'_>) -> Response<Body> {
        let status = resp.status();
        let switched = status == StatusCode::SWITCHING_PROTOCOLS
            && aop_http::is_websocket_upgrade(resp.headers())
            && self.key.as_deref().is_none_or(|key| {
                resp.headers()
                    .get(SEC_WEBSOCKET_ACCEPT)
                    .is_some_and(|a| a.as_bytes() == accept(key).as_bytes())
            });
        if !switched {
            if status == StatusCode::SWITCHING_PROTOCOLS
                || (self.key.is_some() && status.is_success())
            {
                t.metrics.upstream_error();
                tracing::warn!(target: "aop::origin", site = %t.site, request_id = t.id.to_str().unwrap_or("-"), %status,
                    upgrade = ?resp.headers().get(UPGRADE), "upstream answered the WebSocket upgrade with no WebSocket");
                return crate::guard::text(
                    StatusCode::BAD_GATEWAY,
                    "upstream did not switch to WebSocket\n",
                );
            }
            tracing::info!(target: "aop::origin", site = %t.site, request_id = t.id.to_str().unwrap_or("-"), %status, "upstream refused the WebSocket upgrade");
            let (mut parts, body) = resp.into_parts();
            aop_http::strip_hop_by_hop(&mut parts.headers);
            return Response::from_parts(parts, body.boxed());
        }
        let mut resp = resp;
        let upstream = hyper::upgrade::on(&mut resp);
        let (mut parts, _) = resp.into_parts();
        aop_http::strip_hop_by_hop(&mut parts.headers);
        if self.key.is_some() {
            parts.status = StatusCode::OK;
            parts.headers.remove(SEC_WEBSOCKET_ACCEPT);
        } else {
            aop_http::set_websocket_upgrade(&mut parts.headers);
        }
        parts.extensions = Default::default();
        let via = if self.key.is_some() { "h2" } else { "http/1.1" };
        let task = run(self.client, upstream, self.busy, via, t);
        let dispatch = tracing::dispatcher::get_default(Clone::clone);
        t.held.add(tokio::spawn(task.with_subscriber(dispatch)));
        Response::from_parts(parts, Empty::new().map_err(|n| match n {}).boxed())
    }
}

/// What a tunnel needs of its connection and guard.
pub(crate) struct Tunnel<'a> {
    pub(crate) tunnels: &'a Tunnels,
    pub(crate) held: &'a Held,
    pub(crate) metrics: &'a Arc<SiteMetrics>,
    pub(crate) site: &'a Arc<str>,
    pub(crate) peer: SocketAddr,
    pub(crate) id: &'a HeaderValue,
    /// The connection's verdict for the upgrade request, and its certificate chain: what
    /// a reload re-checks.
    pub(crate) verdict: &'a Arc<Verdict>,
    pub(crate) chain: Option<&'a Arc<[CertificateDer<'static>]>>,
}

/// The tunnel's task: wait for both sides to be handed over, then copy.
fn run(
    client: OnUpgrade,
    upstream: OnUpgrade,
    busy: Option<Busy>,
    via: &'static str,
    t: &Tunnel<'_>,
) -> impl Future<Output = ()> + Send + 'static {
    let (metrics, site, peer) = (t.metrics.clone(), t.site.clone(), t.peer);
    let id = t.id.to_str().unwrap_or("-").to_owned();
    let idle = Duration::from_secs(t.tunnels.idle.load(std::sync::atomic::Ordering::Relaxed));
    let mut stop = t.tunnels.stop.subscribe();
    let mut reloaded = t.tunnels.reloaded.subscribe();
    // Checked once at the start too: a reload between the upgrade request's check and
    // this subscription would otherwise go unseen.
    reloaded.mark_changed();
    let (policy, mut verdict, chain) = (
        t.tunnels.policy.clone(),
        t.verdict.clone(),
        t.chain.cloned(),
    );
    // Set when a reload's re-check, not a shutdown, stopped the tunnel.
    let revoked = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let revoke = revoked.clone();
    let (log_site, log_id) = (site.clone(), id.clone());
    async move {
        let _busy = busy;
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(both) => both,
            Err(e) => {
                tracing::info!(target: "aop::access", request_id = id.as_str(), %site, %peer, error = %e,
                    "tunnel not opened: a side closed during the upgrade");
                return;
            }
        };
        let open = metrics.tunnel_opened();
        let started = Instant::now();
        let stop = async move {
            let stopped = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            tokio::pin!(stopped);
            loop {
                tokio::select! {
                    () = &mut stopped => return,
                    changed = reloaded.changed() => {
                        if changed.is_err() {
                            std::future::pending::<()>().await;
                        }
                        match policy.current().recheck(&verdict, chain.as_deref()) {
                            Some(v) => verdict = v,
                            None => {
                                tracing::warn!(target: "aop::verdict", request_id = log_id.as_str(),
                                    site = %log_site, %peer, was = %verdict.outcome,
                                    "a tunnel's connection does not pass its rule after the reload: closed");
                                revoke.store(true, std::sync::atomic::Ordering::Release);
                                return;
                            }
                        }
                    }
                }
            }
        };
        let done = aop_http::tunnel::tunnel(
            TokioIo::new(client),
            TokioIo::new(upstream),
            idle,
            stop,
            metrics.tunnel_traffic(),
        )
        .await;
        let closed = match done.end {
            aop_http::tunnel::TunnelEnd::Stopped
                if revoked.load(std::sync::atomic::Ordering::Acquire) =>
            {
                "revoked"
            }
            _ => done.end.as_str(),
        };
        open.end(closed);
        let error = match &done.end {
            aop_http::tunnel::TunnelEnd::Failed(e) => e.to_string(),
            _ => String::new(),
        };
        tracing::info!(target: "aop::access", request_id = id.as_str(), %site, %peer, via,
            closed, to_upstream = done.to_upstream, to_client = done.to_client,
            secs = started.elapsed().as_secs(), error = error.as_str(), "tunnel closed");
    }
}

/// RFC 6455 §4.2.2: `Sec-WebSocket-Accept` for `key`, base64(SHA-1(key ‖ GUID)).
fn accept(key: &str) -> String {
    let mut input = key.as_bytes().to_vec();
    input.extend_from_slice(ACCEPT_GUID);
    let hash = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, &input);
    base64::engine::general_purpose::STANDARD.encode(hash.as_ref())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_accept_of_rfc_6455s_example() {
        // RFC 6455 §1.3.
        assert_eq!(
            super::accept("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
