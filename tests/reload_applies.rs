//! What SIGHUP really applies (issue 15 item 2), through the real aop-origin binary: a
//! changed timeout or limit takes effect for new connections while open ones keep
//! theirs; a changed `listen` is logged "restart required for: listen" (and
//! `aop_restart_required`) while the old listener keeps serving; a reload whose check
//! fails (every anchor expired) keeps the running configuration.

#![allow(clippy::unwrap_used)] // test helpers: a panic is a test failure with a backtrace

use std::time::Duration;

use aop_e2e::guard::{Certs, Guard, client_config, closed_within, connect, round_trip};
use aop_e2e::upstream::Echo;
use aop_e2e::workspace_root;

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n";

/// The site, after `top` (top-level keys: they come before any table).
fn config(top: &str, upstream: std::net::SocketAddr, trust: &str) -> String {
    format!(
        "{top}\n[[site]]\nhostnames = [\"a.example\"]\ncert = \"origin-ca/origin/cert.pem\"\n\
         key = \"origin-ca/origin/key.pem\"\ntrust = [{trust}]\nupstream = \"http://{upstream}\"\n"
    )
}

/// Rewrite the guard's config file — `listen`, `metrics_listen` as the guard has it (so
/// only what the test changes differs), then `rest` — and send SIGHUP.
fn reload_with(guard: &Guard, listen: &str, rest: &str) {
    std::fs::write(
        &guard.config,
        format!("listen = {listen}\nmetrics_listen = \"127.0.0.1:0\"\n{rest}"),
    )
    .unwrap();
    guard.reload();
}

/// The edge's request on a new connection gets 200.
async fn edge_is_served(c: &Certs, guard: &Guard) {
    let tls = client_config(&c.origin_ca.pem(), Some(&c.edge));
    let mut edge = connect(guard.addr(), "a.example", true, &tls)
        .await
        .unwrap();
    assert_eq!(round_trip(&mut edge, GET).await.unwrap().status, 200);
}

/// A changed `keepalive_timeout_secs` reaches the connections made after the reload: a
/// silent one is closed by the new 1 s timer, while one opened before keeps its 300 s
/// and is served after that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_timeout_applies_to_new_connections_and_old_ones_keep_theirs() {
    let c = Certs::new(&["a.example"]);
    let echo = Echo::start().await;
    let trust = "\"edge-ca/ca.pem\"";
    let guard = Guard::spawn_binary(
        c.dir.path(),
        &config("keepalive_timeout_secs = 300", echo.addr, trust),
    );
    let tls = client_config(&c.origin_ca.pem(), Some(&c.edge));
    let mut before = connect(guard.addr(), "a.example", true, &tls)
        .await
        .unwrap();

    reload_with(
        &guard,
        "\"127.0.0.1:0\"",
        &config("keepalive_timeout_secs = 1", echo.addr, trust),
    );
    let line = guard.wait_log("configuration reloaded");
    assert!(
        line.contains(
            "applied=\"sites, certificates, trust, crl, upstreams, keepalive_timeout_secs\""
        ),
        "{line}"
    );
    assert!(guard.lines_with("restart required").is_empty());

    let mut after = connect(guard.addr(), "a.example", true, &tls)
        .await
        .unwrap();
    assert!(closed_within(&mut after, Duration::from_secs(20)).await);
    guard.wait_log("keepalive_timeout");
    // The connection from before the reload is still open, with its 300 s: served.
    let r = round_trip(&mut before, GET)
        .await
        .expect("the old connection was closed");
    assert_eq!(r.status, 200, "{}", r.text);
}

/// A lowered `max_handshakes_per_peer` applies to the connections that arrive after the
/// reload: a second silent connection from the same address closes the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lowered_per_peer_limit_applies_after_the_reload() {
    let c = Certs::new(&["a.example"]);
    let echo = Echo::start().await;
    let trust = "\"edge-ca/ca.pem\"";
    let guard = Guard::spawn_binary(c.dir.path(), &config("", echo.addr, trust));
    reload_with(
        &guard,
        "\"127.0.0.1:0\"",
        &config("max_handshakes_per_peer = 1", echo.addr, trust),
    );
    let line = guard.wait_log("configuration reloaded");
    assert!(line.contains("max_handshakes_per_peer"), "{line}");
    let mut first = tokio::net::TcpStream::connect(guard.addr()).await.unwrap();
    let _second = tokio::net::TcpStream::connect(guard.addr()).await.unwrap();
    assert!(closed_within(&mut first, Duration::from_secs(20)).await);
    guard.wait_log("max_handshakes_per_peer reached");
    // The edge is still served.
    edge_is_served(&c, &guard).await;
}

/// A changed `listen` is not applied: the reload says so (log and gauge), names it in
/// its success line, and the old listener keeps serving; changing it back clears it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_listen_needs_a_restart_and_the_old_listener_serves() {
    let c = Certs::new(&["a.example"]);
    let echo = Echo::start().await;
    let trust = "\"edge-ca/ca.pem\"";
    let guard = Guard::spawn_binary(c.dir.path(), &config("", echo.addr, trust));
    let series = |setting: &str| format!("aop_restart_required{{setting=\"{setting}\"}}");
    for setting in ["listen", "metrics_listen", "log_format", "max_connections"] {
        let text = guard.metrics_text();
        assert_eq!(aop_e2e::metric(&text, &series(setting)), Some(0), "{text}");
    }
    reload_with(
        &guard,
        "[\"127.0.0.1:0\", \"127.0.0.1:0\"]",
        &config("max_connections = 7", echo.addr, trust),
    );
    let warn = guard.wait_log("restart required for");
    assert!(
        warn.contains("restart required for: listen, max_connections"),
        "{warn}"
    );
    assert!(warn.contains(&guard.config.display().to_string()), "{warn}");
    let line = guard.wait_log("configuration reloaded");
    assert!(
        line.contains("restart_required=\"listen, max_connections\""),
        "{line}"
    );
    assert!(
        line.contains("applied=\"sites, certificates, trust, crl, upstreams\""),
        "{line}"
    );
    assert_eq!(guard.metric(&series("listen")), 1);
    assert_eq!(guard.metric(&series("max_connections")), 1);
    assert_eq!(guard.metric(&series("metrics_listen")), 0);
    edge_is_served(&c, &guard).await;

    // Back as it runs: nothing to restart for.
    reload_with(&guard, "\"127.0.0.1:0\"", &config("", echo.addr, trust));
    let line = guard.wait_log("configuration reloaded");
    assert!(!line.contains("listen"), "{line}");
    assert!(guard.lines_with("restart required for").len() == 1);
    assert_eq!(guard.metric(&series("listen")), 0);
    assert_eq!(guard.metric(&series("max_connections")), 0);
}

/// A reload to a trust list whose every anchor has expired is refused with its line:
/// the old policy stays and the edge is still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_to_only_expired_anchors_keeps_the_old_policy() {
    let c = Certs::new(&["a.example"]);
    let d = c.dir.path();
    std::fs::copy(
        workspace_root().join("testdata/cloudflare/origin_pull_ca_2015.pem"),
        d.join("cf2015.pem"),
    )
    .unwrap();
    let echo = Echo::start().await;
    let guard = Guard::spawn_binary(d, &config("", echo.addr, "\"edge-ca/ca.pem\""));
    // The expired anchor beside the current one: a warning, and the reload goes on.
    reload_with(
        &guard,
        "\"127.0.0.1:0\"",
        &config("", echo.addr, "\"edge-ca/ca.pem\", \"cf2015.pem\""),
    );
    let warning = guard.wait_log("configuration check");
    assert!(
        warning.contains(&format!(
            "{}:8: key `trust`: {}: anchor ",
            guard.config.display(),
            d.join("cf2015.pem").display()
        )),
        "{warning}"
    );
    guard.wait_log("configuration reloaded");
    // Only the expired one: refused.
    reload_with(
        &guard,
        "\"127.0.0.1:0\"",
        &config("", echo.addr, "\"cf2015.pem\""),
    );
    let line = guard.wait_log("reload refused");
    assert!(
        line.contains(&format!(
            "{}:8: key `trust`: every trust anchor of site \\\"a.example\\\" has expired",
            guard.config.display()
        )) || line.contains(&format!(
            "{}:8: key `trust`: every trust anchor of site \"a.example\" has expired",
            guard.config.display()
        )),
        "{line}"
    );
    // Only the first reload was applied.
    assert_eq!(guard.lines_with("configuration reloaded").len(), 1);
    assert_eq!(
        guard.metric("aop_config_reloads_total{result=\"failure\",source=\"signal\"}"),
        1
    );
    edge_is_served(&c, &guard).await;
}

/// A guard whose site starts on the `old` upstream and a reload moves to `new`.
struct Moving {
    c: Certs,
    old: Echo,
    new: Echo,
    guard: Guard,
}

impl Moving {
    async fn start() -> Self {
        let c = Certs::new(&["a.example"]);
        let (old, new) = (Echo::start().await, Echo::start().await);
        let guard = Guard::start(c.dir.path(), &config("", old.addr, TRUST));
        Self { c, old, new, guard }
    }

    /// The edge's client configuration.
    fn tls(&self) -> std::sync::Arc<rustls::ClientConfig> {
        client_config(&self.c.origin_ca.pem(), Some(&self.c.edge))
    }

    /// Move the site to `new` (SIGHUP), and wait for the reload's line.
    fn reload(&self) {
        reload_with(
            &self.guard,
            "\"127.0.0.1:0\"",
            &config("", self.new.addr, TRUST),
        );
        let line = self.guard.wait_log("configuration reloaded");
        assert!(line.contains("upstreams"), "{line}");
    }

    /// Requests (old upstream, new upstream) got.
    fn got(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::SeqCst;
        (
            self.old.requests.load(SeqCst),
            self.new.requests.load(SeqCst),
        )
    }
}

const TRUST: &str = "\"edge-ca/ca.pem\"";

/// A reload that moves the site to another upstream reaches the edge's kept-alive
/// connection at its next request (an edge's pool, nginx's `keepalive`, a CDN's, never
/// idles long enough to close): the route is looked up per request, not kept from the
/// accept. A new connection goes there too; nothing more reaches the old upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reloaded_upstream_reaches_the_next_request_on_a_kept_alive_connection() {
    let m = Moving::start().await;
    let tls = m.tls();
    let mut kept = connect(m.guard.addr(), "a.example", true, &tls)
        .await
        .unwrap();
    assert_eq!(round_trip(&mut kept, GET).await.unwrap().status, 200);
    assert_eq!(m.got(), (1, 0));

    m.reload();
    let mut fresh = connect(m.guard.addr(), "a.example", true, &tls)
        .await
        .unwrap();
    assert_eq!(round_trip(&mut fresh, GET).await.unwrap().status, 200);
    assert_eq!(m.got(), (1, 1));
    // The same connection as before the reload: its next request takes the new route.
    assert_eq!(round_trip(&mut kept, GET).await.unwrap().status, 200);
    assert_eq!(m.got(), (1, 2), "(old upstream, new upstream) requests");
}

/// The same over HTTP/2: one h2 connection (aop-edge-proxy's pool shares one per
/// identity and origin), a request before the reload and one after, on the same
/// connection; the second reaches the new upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reloaded_upstream_reaches_the_next_stream_on_a_kept_http2_connection() {
    use http_body_util::Empty;
    use hyper::body::Bytes;
    let m = Moving::start().await;
    let mut tls = (*m.tls()).clone();
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(m.guard.addr())
        .await
        .unwrap();
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls))
        .connect(
            rustls::pki_types::ServerName::try_from("a.example").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    let (closed, mut ended) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let _ = conn.await;
        let _ = closed.send(());
    });
    let get = || {
        hyper::Request::get("https://a.example/")
            .body(Empty::<Bytes>::new())
            .unwrap()
    };
    assert_eq!(send.send_request(get()).await.unwrap().status(), 200);
    assert_eq!(m.got(), (1, 0));

    m.reload();
    assert_eq!(send.send_request(get()).await.unwrap().status(), 200);
    assert_eq!(m.got(), (1, 1), "(old upstream, new upstream) requests");
    // Both on the one connection: it never closed in between.
    assert!(ended.try_recv().is_err(), "the HTTP/2 connection closed");
}
