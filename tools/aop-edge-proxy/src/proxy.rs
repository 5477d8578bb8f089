//! The proxy: accept plain HTTP, forward through `aop_edge::EdgeClient` (HTTP/2 to an
//! origin that offers it), and tunnel WebSockets over an HTTP/1.1 connection.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use aop_edge::{
    EdgeClient, Failure, IdentitySpec, IdentityStore, Resolve, StoreSpec, Target, Timeouts,
};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONNECTION, HOST, HeaderName, HeaderValue, UPGRADE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::TokioIo;

use tokio::sync::watch;

use crate::body::VisitorBody;
use crate::cli::Args;
use crate::metrics::{IdentityLabels, Metrics};
use crate::signals::{Asked, Changes, Drain, FILE, SIGNAL, Signals};
use crate::tunnel::{self, Tunnels};

type Body = BoxBody<Bytes, hyper::Error>;

struct Proxy {
    client: EdgeClient<VisitorBody>,
    origin: Target,
    authority: String,
    tunnels: Arc<Tunnels>,
    tunnel_idle: std::time::Duration,
    body_idle: std::time::Duration,
    /// Visitor connections and tunnels open: what a drain waits for.
    drain: Drain,
    metrics: Arc<Metrics>,
}

pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    init_logging(&args.log_format);
    let mut signals = Signals::install().context("cannot install the signal handlers")?;
    let origin: Target = args.origin.parse().context("--origin")?;
    let spec = store_spec(&args);
    // Before the files are loaded: a change made while they load is seen.
    let mut changes = Changes::start(spec_files(&spec), !args.no_reload_on_change);
    let store = load(&spec, &origin.host)?;
    let metrics = Arc::new(Metrics::new());
    metrics.set_identities(&store);
    let authority = if origin.port == 443 {
        origin.host.clone()
    } else {
        format!("{}:{}", origin.host, origin.port)
    };
    let proxy = Arc::new(Proxy {
        client: EdgeClient::new(store, Resolve::new(args.resolve.iter().cloned()), {
            let mut timeouts = Timeouts::default();
            timeouts.response_header = std::time::Duration::from_secs(args.response_header_timeout);
            timeouts
        }),
        origin,
        authority,
        tunnels: Arc::default(),
        tunnel_idle: std::time::Duration::from_secs(args.tunnel_idle_timeout),
        body_idle: std::time::Duration::from_secs(args.request_body_timeout),
        drain: Drain::default(),
        metrics: metrics.clone(),
    });
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let scrape = match args.metrics_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (--metrics-listen)"))?,
        ),
        None => None,
    };
    tracing::info!(target: "aop::edge", addr = %listener.local_addr()?, origin = %proxy.origin.url, "edge proxy listening");
    if let Some(scrape) = scrape {
        tracing::info!(target: "aop::edge", metrics = %scrape.local_addr()?, "metrics listening");
        tokio::spawn(crate::metrics::serve(scrape, metrics));
    }
    let (stop, stopped) = watch::channel(false);
    let accepting = tokio::spawn(accept_loop(listener, proxy.clone(), stopped));
    changes.announce();
    let signal = loop {
        let source = tokio::select! {
            asked = signals.next() => match asked {
                Asked::Reload => SIGNAL,
                Asked::Stop(signal) => break signal,
            },
            changed = changes.next() => {
                let changed: Vec<String> = changed.iter().map(|p| p.display().to_string()).collect();
                tracing::info!(target: "aop::edge", files = changed.join(", ").as_str(), "a file in use changed: reloading");
                FILE
            }
        };
        reload(&proxy, &spec, source).await;
        if source == SIGNAL {
            changes.retarget();
        }
    };
    let grace = std::time::Duration::from_secs(args.drain_grace);
    tracing::info!(target: "aop::edge", signal, open = proxy.drain.open(), grace_secs = args.drain_grace, "draining");
    let _ = stop.send(true);
    // The listener is closed once its task has ended: new connections are refused.
    let _ = accepting.await;
    let drained = tokio::time::timeout(grace, proxy.drain.idle())
        .await
        .is_ok();
    tracing::info!(target: "aop::edge", drained, unfinished = proxy.drain.open(), "stopped");
    Ok(())
}

/// The files of every identity and root, as the flags name them.
fn store_spec(args: &Args) -> StoreSpec {
    let mut spec = StoreSpec::new(args.cacert.iter().cloned());
    if let (Some(cert), Some(key)) = (&args.cert, &args.key) {
        spec.shared = Some(IdentitySpec::new(cert, key));
    }
    spec.zones = args
        .zone_certs
        .iter()
        .map(|z| (z.name.clone(), IdentitySpec::new(&z.cert, &z.key)))
        .collect();
    spec.hostnames = args
        .hostname_certs
        .iter()
        .map(|h| (h.name.clone(), IdentitySpec::new(&h.cert, &h.key)))
        .collect();
    spec
}

/// Every file `spec` names: the roots, then each identity's certificate and key.
fn spec_files(spec: &StoreSpec) -> Vec<std::path::PathBuf> {
    let mut files = spec.roots.clone();
    let identities = spec
        .shared
        .iter()
        .chain(spec.zones.iter().map(|(_, i)| i))
        .chain(spec.hostnames.iter().map(|(_, i)| i));
    for identity in identities {
        files.push(identity.cert.clone());
        files.push(identity.key.clone());
    }
    files.sort();
    files.dedup();
    files
}

/// Read every file of `spec`, and check an identity applies to the origin `host`.
fn load(spec: &StoreSpec, host: &str) -> anyhow::Result<IdentityStore> {
    let store = IdentityStore::load(spec)?;
    if store.select(host).is_none() {
        anyhow::bail!(
            "no client certificate applies to {host}: give --cert/--key, or a --zone-cert or --hostname-cert for it",
        );
    }
    Ok(store)
}

/// SIGHUP, or a file changed (`source`): read every certificate, key and root again, and
/// swap the whole set in only if all of it loads (else the running set stays, and the
/// error, naming the file, is logged and counted). New requests present the new
/// identities over new connections: the old identities' pools are dropped, their
/// requests in flight finish.
async fn reload(proxy: &Proxy, spec: &StoreSpec, source: &'static str) {
    let (spec, host) = (spec.clone(), proxy.origin.host.clone());
    let loaded = tokio::task::spawn_blocking(move || load(&spec, &host))
        .await
        .unwrap_or_else(|e| Err(anyhow::anyhow!("the reload task failed: {e}")));
    match loaded {
        Ok(store) => {
            let old = proxy.metrics.set_identities(&store);
            let changed = changes(&old, &store);
            proxy.client.reload(store);
            // Logged before it is counted: whoever sees the count can find the line.
            tracing::info!(target: "aop::edge", changed = %changed, source, "identities reloaded");
            proxy.metrics.reloaded(true, source);
        }
        Err(e) => {
            tracing::error!(target: "aop::edge", error = %format!("{e:#}"), source, "reload refused; the running identities stay");
            proxy.metrics.reloaded(false, source);
        }
    }
}

/// What a reload changed, one `FLAVOUR:NAME:OLD->NEW` (SHA-256 fingerprints, `-` for an
/// identity that was not there) per identity whose certificate differs, `;`-separated;
/// `none` if every certificate is the same.
fn changes(old: &[IdentityLabels], new: &IdentityStore) -> String {
    let mut out: Vec<String> = new
        .identities()
        .filter_map(|i| {
            let (flavour, name) = (i.flavour().to_string(), i.label());
            let sha256 = i.certificate().sha256.to_string();
            let before = old
                .iter()
                .find(|o| o.flavour == flavour && o.name == name)
                .map_or("-", |o| o.sha256.as_str());
            (before != sha256).then(|| format!("{flavour}:{name}:{before}->{sha256}"))
        })
        .collect();
    out.sort();
    if out.is_empty() {
        "none".to_owned()
    } else {
        out.join(";")
    }
}

/// Accept visitors until told to stop; then return, closing the listener. Each
/// connection finishes the request it is serving once told to stop, then closes.
async fn accept_loop(
    listener: tokio::net::TcpListener,
    proxy: Arc<Proxy>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors, say: back off instead of spinning.
                    tracing::warn!(target: "aop::edge", error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let held = proxy.drain.hold();
        let proxy = proxy.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let _held = held;
            let service = service_fn(move |req| {
                let proxy = proxy.clone();
                async move {
                    let resp = proxy.forward(req, peer).await;
                    proxy.metrics.answered(resp.status());
                    Ok::<_, Infallible>(resp)
                }
            });
            // A client must send a whole request head within 10 s of the connection going
            // idle (the first request included), or it is closed: no slow or silent
            // client holds a connection and its task for ever.
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(tcp), service)
                .with_upgrades();
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = stop.wait_for(|s| *s) => {}
            }
            // Draining: an idle kept-alive connection closes now, one serving a request
            // once its response is written.
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        });
    }
}

fn init_logging(format: &str) {
    // The same lines as aop-origin's: logfmt text or JSON, never colour (escape codes in
    // a file or a pipe are noise to every tool that reads the log).
    let builder = tracing_subscriber::fmt().with_writer(std::io::stderr);
    if format == "json" {
        builder.event_format(aop_http::log::Json).init();
    } else {
        builder.event_format(aop_http::log::Logfmt).init();
    }
}

impl Proxy {
    async fn forward(&self, mut req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let id = aop_http::request_id();
        // This proxy serves one origin, and only requests for a path on it: never a
        // tunnel to another host (CONNECT), nor `*`, nor a URL on another authority.
        if req.method() == Method::CONNECT {
            return self.refuse(
                &id,
                peer,
                StatusCode::METHOD_NOT_ALLOWED,
                "CONNECT is not proxied",
            );
        }
        if !self.serves(req.uri()) {
            return self.refuse(
                &id,
                peer,
                StatusCode::BAD_REQUEST,
                "the request target is not a path on this origin",
            );
        }
        // A WebSocket goes to the origin over HTTP/1.1 (HTTP/2 has no Upgrade), and the
        // visitor's connection is taken over once the origin has switched.
        let visitor_upgrade =
            tunnel::is_websocket_upgrade(&req).then(|| hyper::upgrade::on(&mut req));
        let method = req.method().clone();
        let path = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "/".into());
        let uri: Uri = match format!("https://{}{}", self.authority, path).parse() {
            Ok(u) => u,
            Err(_) => return self.error(&id, StatusCode::BAD_REQUEST, "bad request target"),
        };
        *req.uri_mut() = uri;
        let headers = req.headers_mut();
        aop_http::strip_hop_by_hop(headers);
        let client_ip = peer.ip().to_string();
        let xff = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            Some(prev) => format!("{prev}, {client_ip}"),
            None => client_ip.clone(),
        };
        set(headers, "x-forwarded-for", &xff);
        set(headers, "cf-connecting-ip", &client_ip);
        set(headers, "x-forwarded-proto", "http");
        set(headers, "x-request-id", &id);
        // The URI's authority says it: hyper-util writes it as Host on HTTP/1.1 and as
        // `:authority` on HTTP/2, where a Host field as well is one too many for nginx.
        headers.remove(HOST);
        if visitor_upgrade.is_some() {
            // Removed as hop-by-hop above; only ever `websocket` (never `h2c`).
            headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
            headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
        }
        let (req, body_idle) = {
            let (parts, body) = req.into_parts();
            let (body, idle) = VisitorBody::new(body, self.body_idle);
            (Request::from_parts(parts, body), idle)
        };
        let sent = match visitor_upgrade {
            Some(_) => self.client.request_http1(req).await,
            None => self.client.request(req).await,
        };
        match sent {
            Ok(mut resp) => {
                // What the response's connection presented: a reload between choosing
                // and sending changes what `identity_for` says, not what was sent.
                let (flavour, presented) =
                    named(resp.extensions().get::<aop_edge::Presented>().map(|p| &p.0));
                let status = resp.status();
                let version = resp.version();
                if status == StatusCode::SWITCHING_PROTOCOLS {
                    // Only a WebSocket the visitor asked for, and nothing else.
                    let Some(visitor) =
                        visitor_upgrade.filter(|_| aop_http::is_websocket_upgrade(resp.headers()))
                    else {
                        let why = "the origin switched to a protocol the visitor did not ask for";
                        tracing::warn!(target: "aop::edge", request_id = %id, client = %client_ip, %method, %path,
                            status = 502, origin_status = 101, identity = %flavour, presented = %presented, error = why, "origin pull failed");
                        return self.error(&id, StatusCode::BAD_GATEWAY, why);
                    };
                    let origin = hyper::upgrade::on(&mut resp);
                    tracing::info!(target: "aop::edge", request_id = %id, client = %client_ip, %method, %path,
                        status = 101, ?version, identity = %flavour, presented = %presented, upgrade = "websocket", "forwarded");
                    // A drain waits for the tunnel too (up to its grace).
                    let held = self.drain.hold();
                    let tunnel = tunnel::run(
                        self.tunnels.clone(),
                        visitor,
                        origin,
                        self.tunnel_idle,
                        id.clone(),
                    );
                    tokio::spawn(async move {
                        tunnel.await;
                        drop(held);
                    });
                    let (mut parts, _) = resp.into_parts();
                    aop_http::strip_hop_by_hop(&mut parts.headers);
                    parts
                        .headers
                        .insert(CONNECTION, HeaderValue::from_static("upgrade"));
                    parts
                        .headers
                        .insert(UPGRADE, HeaderValue::from_static("websocket"));
                    set(&mut parts.headers, "x-request-id", &id);
                    parts.version = Version::HTTP_11;
                    return Response::from_parts(parts, empty());
                }
                let upgrade = if visitor_upgrade.is_some() {
                    "refused"
                } else {
                    "-"
                };
                tracing::info!(target: "aop::edge", request_id = %id, client = %client_ip, %method, %path,
                    status = status.as_u16(), ?version, identity = %flavour, presented = %presented, upgrade, "forwarded");
                let (mut parts, body) = resp.into_parts();
                aop_http::strip_hop_by_hop(&mut parts.headers);
                set(&mut parts.headers, "x-request-id", &id);
                // The visitor speaks HTTP/1.1, whatever the origin spoke.
                parts.version = Version::HTTP_11;
                Response::from_parts(parts, body.boxed())
            }
            Err(e) => {
                let status = if body_idle.load(std::sync::atomic::Ordering::SeqCst) {
                    StatusCode::REQUEST_TIMEOUT
                } else if matches!(e, aop_edge::Error::NoResponse { .. }) {
                    StatusCode::GATEWAY_TIMEOUT
                } else {
                    StatusCode::BAD_GATEWAY
                };
                let why = match aop_edge::classify(&e) {
                    _ if status == StatusCode::REQUEST_TIMEOUT => {
                        format!("the visitor sent no request body for {:?}", self.body_idle)
                    }
                    Failure::Refused { alert } => {
                        format!("the origin refused the TLS handshake (alert {alert})")
                    }
                    Failure::ServerUntrusted { detail } => {
                        format!("the origin's certificate is not trusted: {detail}")
                    }
                    _ => format!("{e}"),
                };
                // No response says what was presented: the identity the request took (or
                // would have), as the store has it now.
                let (flavour, presented) =
                    named(self.client.identity_for(&self.origin.host).as_ref());
                tracing::warn!(target: "aop::edge", request_id = %id, client = %client_ip, %method, %path,
                    status = status.as_u16(), identity = %flavour, presented = %presented, error = %why, "origin pull failed");
                self.error(&id, status, &why)
            }
        }
    }

    /// Whether `uri` is a request target this proxy forwards: origin-form (`/path`), or
    /// absolute-form naming the origin itself.
    fn serves(&self, uri: &Uri) -> bool {
        let path = uri.path().starts_with('/');
        match uri.authority() {
            None => path && uri.scheme().is_none(),
            Some(a) => {
                path && matches!(uri.scheme_str(), Some("http" | "https"))
                    && (a.as_str().eq_ignore_ascii_case(&self.authority)
                        || (a.port().is_none() && a.host().eq_ignore_ascii_case(&self.origin.host)))
            }
        }
    }

    /// Answer a request that is not forwarded, and log it.
    fn refuse(&self, id: &str, peer: SocketAddr, status: StatusCode, why: &str) -> Response<Body> {
        tracing::warn!(target: "aop::edge", request_id = %id, client = %peer.ip(), status = status.as_u16(), error = why, "request refused");
        self.error(id, status, why)
    }

    fn error(&self, id: &str, status: StatusCode, why: &str) -> Response<Body> {
        let body = Full::new(Bytes::from(format!(
            "{} {}: {why}\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        )))
        .map_err(|never| match never {})
        .boxed();
        let mut resp = Response::new(body);
        *resp.status_mut() = status;
        set(resp.headers_mut(), "x-request-id", id);
        resp
    }
}

/// An identity as the log names it: (flavour, SHA-256 of its certificate); empty if none.
fn named(identity: Option<&Arc<aop_edge::Identity>>) -> (String, String) {
    identity
        .map(|i| (i.flavour().to_string(), i.certificate().sha256.to_string()))
        .unwrap_or_default()
}

fn empty() -> Body {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed()
}

fn set(headers: &mut hyper::HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(HeaderName::from_static(name), v);
    }
}
