//! The guard: accept with aop-verify, forward to the site's upstream with the verdict
//! attached, count, log, reload on SIGHUP, drain on SIGTERM.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aop_verify::{Acceptor, Limits, PolicyHandle, Verdict};
use arc_swap::ArcSwap;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::config::{ConfigError, Loaded, Upstream};
use crate::metrics::Metrics;

pub(crate) type Body = BoxBody<Bytes, hyper::Error>;

/// The headers the guard sets for the upstream. Any copy a client sent is removed first:
/// a client must never be able to claim a verdict.
pub(crate) const VERDICT_HEADERS: [&str; 7] = [
    "x-client-verify",
    "x-client-cert-fingerprint",
    "x-client-cert-subject",
    "x-client-cert-issuer",
    "x-client-cert-serial",
    "x-client-cert-not-after",
    "x-forwarded-client-cert",
];

/// How long the upstream may take to start answering a request (then 504).
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(60);

/// Site name → upstream, as loaded with the policy.
#[derive(Debug)]
struct Sites(HashMap<String, SiteEntry>);

/// One site, resolved at load: its upstream authority and its counters.
#[derive(Debug)]
struct SiteEntry {
    upstream: Option<hyper::http::uri::Authority>,
    metrics: Arc<crate::metrics::SiteMetrics>,
}

impl Sites {
    fn new(upstreams: &[(String, Upstream)], metrics: &Metrics) -> Self {
        Self(
            upstreams
                .iter()
                .map(|(name, up)| {
                    let entry = SiteEntry {
                        upstream: up.authority.parse().ok(),
                        metrics: metrics.site(name),
                    };
                    (name.clone(), entry)
                })
                .collect(),
        )
    }
}

/// Shared state of a running guard.
struct Shared {
    headers: HeaderCache,
    policy: PolicyHandle,
    acceptor: Acceptor,
    sites: ArcSwap<Sites>,
    client: Client<HttpConnector, Incoming>,
    metrics: Metrics,
    active: AtomicUsize,
    config_path: std::path::PathBuf,
    listen: Vec<SocketAddr>,
}

/// A running guard (for `--config`, the demo and tests).
pub(crate) struct Running {
    /// Where the TLS listeners are (ports resolved).
    pub(crate) addrs: Vec<SocketAddr>,
    /// Where /metrics is, if configured.
    pub(crate) metrics_addr: Option<SocketAddr>,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
}

impl Running {
    /// Re-read the config file and swap in its policy and upstreams. On error the running
    /// configuration stays, and the error (naming the file) is returned and logged.
    pub(crate) fn reload(&self) -> Result<(), ConfigError> {
        reload(&self.shared)
    }

    /// Stop accepting, let requests in flight finish (up to `grace`), then return.
    pub(crate) async fn drain(self, grace: Duration) {
        let _ = self.shutdown.send(true);
        let deadline = Instant::now() + grace;
        while self.shared.active.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn reload(shared: &Shared) -> Result<(), ConfigError> {
    let result = Loaded::read(&shared.config_path).and_then(|loaded| {
        if loaded.config.listen != shared.listen {
            tracing::warn!(target: "aop::origin", "`listen` changed; listeners change only on restart");
        }
        let policy = loaded.load_policy()?;
        shared.policy.replace(policy);
        shared.sites.store(Arc::new(Sites::new(&loaded.upstreams, &shared.metrics)));
        Ok(())
    });
    shared.metrics.reload(result.is_ok());
    match &result {
        Ok(()) => {
            tracing::info!(target: "aop::origin", config = %shared.config_path.display(), "configuration reloaded");
        }
        Err(e) => {
            tracing::error!(target: "aop::origin", error = %e, "reload refused; the running configuration stays");
        }
    }
    result
}

/// Bind the listeners and start serving `loaded`.
pub(crate) async fn start(loaded: Loaded) -> anyhow::Result<Running> {
    let policy = PolicyHandle::new(loaded.load_policy()?);
    let cfg = &loaded.config;
    let limits = Limits::default()
        .with_handshake_timeout(Duration::from_secs(cfg.handshake_timeout_secs.max(1)))
        .with_max_handshakes(cfg.max_handshakes);
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    let client = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(http);
    let metrics = Metrics::default();
    let shared = Arc::new(Shared {
        headers: HeaderCache::default(),
        acceptor: Acceptor::new(policy.clone(), limits),
        policy,
        sites: ArcSwap::from_pointee(Sites::new(&loaded.upstreams, &metrics)),
        client,
        metrics,
        active: AtomicUsize::new(0),
        config_path: loaded.path.clone(),
        listen: cfg.listen.clone(),
    });
    let (shutdown, shutdown_rx) = watch::channel(false);
    let connections = Arc::new(Semaphore::new(
        cfg.max_connections.clamp(1, Semaphore::MAX_PERMITS),
    ));
    let mut addrs = Vec::new();
    for addr in &cfg.listen {
        let listener = TcpListener::bind(addr).await.map_err(|e| {
            anyhow::anyhow!("{}: cannot listen on {addr}: {e}", loaded.path.display())
        })?;
        let local = listener.local_addr()?;
        tracing::info!(target: "aop::origin", addr = %local, "listening");
        addrs.push(local);
        tokio::spawn(accept_loop(
            listener,
            shared.clone(),
            connections.clone(),
            shutdown_rx.clone(),
        ));
    }
    let metrics_addr = match cfg.metrics_listen {
        Some(addr) => {
            let listener = TcpListener::bind(addr).await.map_err(|e| {
                anyhow::anyhow!(
                    "{}: cannot listen on metrics_listen {addr}: {e}",
                    loaded.path.display()
                )
            })?;
            let local = listener.local_addr()?;
            tracing::info!(target: "aop::origin", metrics = %local, "metrics listening");
            tokio::spawn(metrics_loop(listener, shared.clone(), shutdown_rx.clone()));
            Some(local)
        }
        None => None,
    };
    Ok(Running {
        addrs,
        metrics_addr,
        shared,
        shutdown,
    })
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    connections: Arc<Semaphore>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(target: "aop::origin", error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::warn!(target: "aop::origin", %peer, "connection limit reached; closing");
            continue;
        };
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        shared.active.fetch_add(1, Ordering::AcqRel);
        tokio::spawn(async move {
            let _permit = permit;
            // The handshake future is large and boxed: a task keeps the size of its
            // largest state for its whole life; boxed, it is freed when the handshake
            // ends, and the task carries only what serving needs (see `serve`).
            let serve = serve(
                &shared,
                Box::pin(shared.acceptor.accept(tcp)).await,
                peer,
                shutdown,
            );
            if let Some(serve) = serve {
                let _ = serve.await;
            }
            shared.active.fetch_sub(1, Ordering::AcqRel);
        });
    }
}

/// Count the handshake's verdict against its site and, if the connection was accepted,
/// return the future that serves it. Not `async`: the `Accepted` moved into the
/// connection must not also stay in the task.
fn serve(
    shared: &Arc<Shared>,
    handshake: Result<aop_verify::Accepted, aop_verify::Refused>,
    peer: SocketAddr,
    mut shutdown: watch::Receiver<bool>,
) -> Option<impl Future<Output = Result<(), hyper::Error>> + use<>> {
    let sites = shared.sites.load();
    let verdict = match &handshake {
        Ok(conn) => &conn.verdict,
        Err(refused) => &refused.verdict,
    };
    let site: Arc<str> = verdict.rule.clone().unwrap_or_else(|| Arc::from(""));
    let entry = sites.0.get(site.as_ref());
    let metrics = entry.map_or_else(|| shared.metrics.site(&site), |e| e.metrics.clone());
    metrics.handshake(verdict);
    let conn = handshake.ok()?;
    let misdirected = metrics.misdirected.clone();
    let ctx = Arc::new(ConnCtx {
        upstream: entry.and_then(|e| e.upstream.clone()),
        verdict: Arc::new(std::sync::OnceLock::new()),
        metrics,
        site,
        peer,
    });
    let service = {
        let shared = shared.clone();
        service_fn(move |req| {
            let (shared, ctx) = (shared.clone(), ctx.clone());
            async move { Ok::<_, Infallible>(forward(&shared, &ctx, req).await) }
        })
    };
    let stop = async move {
        let _ = shutdown.wait_for(|s| *s).await;
    };
    Some(aop_verify::hyper::serve_connection_until(
        conn,
        service,
        stop,
        Some(misdirected),
    ))
}

/// What every request on one connection shares, computed once at accept.
struct ConnCtx {
    site: Arc<str>,
    upstream: Option<hyper::http::uri::Authority>,
    peer: SocketAddr,
    /// The verdict headers for the upstream (X-Client-*, XFCC), made on the first request
    /// (a connection that sends none costs nothing) and shared by every connection with
    /// the same verdict.
    verdict: Arc<std::sync::OnceLock<Headers>>,
    metrics: Arc<crate::metrics::SiteMetrics>,
}

/// A header value from text a certificate chose: control characters dropped.
fn value(s: &str) -> Option<HeaderValue> {
    let clean: String = s.chars().filter(|c| !c.is_control()).collect();
    HeaderValue::from_bytes(clean.as_bytes()).ok()
}

/// The headers that carry `verdict` to the upstream.
pub(crate) fn verdict_headers(verdict: &Verdict) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = Vec::with_capacity(VERDICT_HEADERS.len());
    let mut set = |name: &'static str, v: Option<HeaderValue>| {
        if let Some(v) = v {
            out.push((HeaderName::from_static(name), v));
        }
    };
    set("x-client-verify", value(&verdict.to_string()));
    if let Some(c) = &verdict.client {
        set("x-client-cert-fingerprint", value(&c.sha256.to_string()));
        set("x-client-cert-subject", value(&c.subject));
        set("x-client-cert-issuer", value(&c.issuer));
        set("x-client-cert-serial", value(&c.serial));
        set(
            "x-client-cert-not-after",
            value(&aop_pki::rfc3339(c.not_after)),
        );
        if verdict.is_success() {
            // Envoy's x-forwarded-client-cert: Hash, Subject, URI, DNS. Values are quoted
            // (with \ and " escaped), so a `;`, `,` or `=` in a name cannot add a field.
            let q = |v: &str| format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""));
            let mut xfcc = format!("Hash={};Subject={}", c.sha256, q(&c.subject));
            for u in &c.san.uri {
                xfcc.push_str(&format!(";URI={}", q(u)));
            }
            for d in &c.san.dns {
                xfcc.push_str(&format!(";DNS={}", q(d)));
            }
            set("x-forwarded-client-cert", value(&xfcc));
        }
    }
    out
}

/// Verdict headers by (certificate, verdict): an edge fleet presents a few certificates
/// over and over, so connections share one copy. Bounded; starts over when full.
type Headers = Arc<Vec<(HeaderName, HeaderValue)>>;

#[derive(Default)]
struct HeaderCache(
    std::sync::Mutex<HashMap<(Option<aop_pki::Sha256Fingerprint>, String), Headers>>,
);

impl HeaderCache {
    fn get(&self, verdict: &Verdict) -> Headers {
        let key = (
            verdict.client.as_ref().map(|c| c.sha256),
            verdict.to_string(),
        );
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(h) = map.get(&key) {
            return h.clone();
        }
        if map.len() >= 1024 {
            map.clear();
        }
        map.entry(key)
            .or_insert_with(|| Arc::new(verdict_headers(verdict)))
            .clone()
    }
}

/// Remove every verdict header a client sent, then set the real ones.
fn apply_verdict_headers(headers: &mut HeaderMap, verdict_headers: &[(HeaderName, HeaderValue)]) {
    for h in VERDICT_HEADERS {
        headers.remove(h);
    }
    // `X_Client_Verify` reaches a CGI/WSGI application as HTTP_X_CLIENT_VERIFY, the same
    // variable as the real header: drop every spelling with underscores too.
    let spoofs: Vec<HeaderName> = headers
        .keys()
        .filter(|k| {
            k.as_str().contains('_')
                && VERDICT_HEADERS.contains(&k.as_str().replace('_', "-").as_str())
        })
        .cloned()
        .collect();
    for k in spoofs {
        headers.remove(k);
    }
    for (name, value) in verdict_headers {
        headers.insert(name.clone(), value.clone());
    }
}

fn text(status: StatusCode, body: &str) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from(body.to_owned()))
            .map_err(|n| match n {})
            .boxed(),
    );
    *r.status_mut() = status;
    r
}

async fn forward(shared: &Shared, ctx: &ConnCtx, mut req: Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    let verdict = req
        .extensions()
        .get::<Arc<Verdict>>()
        .cloned()
        .expect("aop-verify sets the verdict");
    let id = match req.headers().get("x-request-id") {
        Some(v) if !v.is_empty() && v.len() <= 128 => v.clone(),
        _ => value(&aop_edge::http::request_id()).unwrap_or_else(|| HeaderValue::from_static("-")),
    };
    let method = req.method().clone();
    let target = req.uri().path_and_query().cloned();
    let cf_ip = req.headers().get("cf-connecting-ip").cloned();
    let xff = req.headers().get("x-forwarded-for").cloned();

    let resp = match &ctx.upstream {
        None => text(StatusCode::BAD_GATEWAY, "no upstream for this site\n"),
        Some(authority) => {
            let headers = req.headers_mut();
            for h in aop_edge::http::HOP_BY_HOP {
                headers.remove(h);
            }
            let verdict_headers = ctx.verdict.get_or_init(|| shared.headers.get(&verdict));
            apply_verdict_headers(headers, verdict_headers);
            headers.insert(HeaderName::from_static("x-request-id"), id.clone());
            let mut parts = hyper::http::uri::Parts::default();
            parts.scheme = Some(hyper::http::uri::Scheme::HTTP);
            parts.authority = Some(authority.clone());
            parts.path_and_query = Some(
                target
                    .clone()
                    .unwrap_or_else(|| hyper::http::uri::PathAndQuery::from_static("/")),
            );
            match hyper::Uri::from_parts(parts) {
                Ok(uri) => *req.uri_mut() = uri,
                Err(_) => return text(StatusCode::BAD_REQUEST, "bad request target\n"),
            }
            let answer = tokio::time::timeout(UPSTREAM_TIMEOUT, shared.client.request(req)).await;
            let Ok(answer) = answer else {
                ctx.metrics.upstream_error();
                tracing::warn!(target: "aop::origin", site = %ctx.site, upstream = %authority, "upstream timed out");
                return text(StatusCode::GATEWAY_TIMEOUT, "upstream timed out\n");
            };
            match answer {
                Ok(r) => {
                    let (mut parts, body) = r.into_parts();
                    for h in aop_edge::http::HOP_BY_HOP {
                        parts.headers.remove(h);
                    }
                    Response::from_parts(parts, body.boxed())
                }
                Err(e) => {
                    ctx.metrics.upstream_error();
                    tracing::warn!(target: "aop::origin", request_id = ?id, site = %ctx.site, upstream = %authority, error = %e, "upstream error");
                    text(StatusCode::BAD_GATEWAY, "upstream unavailable\n")
                }
            }
        }
    };
    let status = resp.status().as_u16();
    ctx.metrics.request(status);
    let shown = |v: &Option<HeaderValue>| {
        v.as_ref()
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    tracing::info!(
        target: "aop::access",
        request_id = %id.to_str().unwrap_or("-"),
        site = %ctx.site,
        peer = %ctx.peer,
        cf_connecting_ip = %shown(&cf_ip),
        x_forwarded_for = %shown(&xff),
        %method,
        path = %target.as_ref().map_or("/", |t| t.as_str()),
        status,
        verdict = %verdict,
        ms = started.elapsed().as_millis() as u64,
        "request"
    );
    let mut resp = resp;
    resp.headers_mut()
        .insert(HeaderName::from_static("x-request-id"), id);
    resp
}

async fn metrics_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let tcp = tokio::select! {
            r = listener.accept() => match r { Ok((t, _)) => t, Err(_) => continue },
            _ = shutdown.changed() => return,
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let shared = shared.clone();
                async move {
                    let resp = match req.uri().path() {
                        "/metrics" => {
                            let body = shared
                                .metrics
                                .render(&shared.policy.current(), time::OffsetDateTime::now_utc());
                            let mut r = text(StatusCode::OK, &body);
                            r.headers_mut().insert(
                                hyper::header::CONTENT_TYPE,
                                HeaderValue::from_static(
                                    "text/plain; version=0.0.4; charset=utf-8",
                                ),
                            );
                            r
                        }
                        "/healthz" => text(StatusCode::OK, "ok\n"),
                        _ => text(StatusCode::NOT_FOUND, "not found\n"),
                    };
                    Ok::<_, Infallible>(resp)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

/// Run from a config file until SIGTERM/SIGINT; SIGHUP reloads.
pub(crate) async fn run(loaded: Loaded) -> anyhow::Result<()> {
    let running = start(loaded).await?;
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = hup.recv() => { let _ = running.reload(); }
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    tracing::info!(target: "aop::origin", "draining");
    running.drain(Duration::from_secs(30)).await;
    tracing::info!(target: "aop::origin", "stopped");
    Ok(())
}
