//! X-Forwarded-For through the origin guard: it appends its TCP peer's address (the
//! edge's) as nginx's `$proxy_add_x_forwarded_for` does, on the HTTP/1.1 and the h2c
//! upstream paths and on a WebSocket upgrade, whatever the client sent in the field
//! (several fields, many values, a huge one, no certificate at all); CF-Connecting-IP
//! passes as sent. What the upstream saw is read back from an echo upstream.

#![allow(clippy::unwrap_used)] // a test: panics are failures

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use aop_e2e::guard::{Certs, Guard, Reply, client_config, connect, exchange};
use aop_e2e::pki::Leaf;
use aop_e2e::upstream::{Echo, header, header_values};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};

/// An h2c upstream answering every request with its header fields, one `name: value`
/// line each (the format of [`Echo`]).
async fn h2c_echo() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    let mut body = String::new();
                    for (name, value) in req.headers() {
                        let _ = writeln!(
                            body,
                            "{name}: {}",
                            String::from_utf8_lossy(value.as_bytes())
                        );
                    }
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    (addr, task)
}

fn site(host: &str, upstream: SocketAddr, extra: &str) -> String {
    format!(
        "\n[[site]]\nhostnames = [\"{host}\"]\ncert = \"origin-ca/origin/cert.pem\"\nkey = \"origin-ca/origin/key.pem\"\ntrust = [\"edge-ca/ca.pem\"]\nupstream = \"http://{upstream}\"\n{extra}"
    )
}

/// Send `fields` (header lines, each ending in CRLF) to `host` over HTTP/1.1 as
/// `identity`, and read the answer whole.
async fn send(
    g: &Guard,
    certs: &Certs,
    identity: Option<&Leaf>,
    host: &str,
    fields: &str,
) -> Reply {
    let config = client_config(&certs.origin_ca.pem(), identity);
    let mut tls = connect(g.addr(), host, true, &config).await.unwrap();
    let request = format!("GET /xff HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{fields}\r\n");
    exchange(&mut tls, request.as_bytes()).await
}

/// Every x-forwarded-for field the upstream saw (its echoed `body`).
fn seen_xff(body: &str) -> Vec<String> {
    header_values(body, "x-forwarded-for")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_address_is_appended_to_x_forwarded_for_on_every_upstream_path() {
    let certs = Certs::new(&["h1.example", "h2c.example", "opt.example"]);
    let echo = Echo::start().await;
    let (h2c, _h2c_task) = h2c_echo().await;
    let sites = site("h1.example", echo.addr, "")
        + &site("h2c.example", h2c, "upstream_protocol = \"h2c\"\n")
        + &site("opt.example", echo.addr, "mode = \"optional\"\n");
    let g = Guard::start(certs.dir.path(), &sites);
    let edge = Some(&certs.edge);

    for host in ["h1.example", "h2c.example"] {
        // None sent: the peer's address alone.
        let r = send(&g, &certs, edge, host, "CF-Connecting-IP: 198.51.100.7\r\n").await;
        assert_eq!(r.status, 200, "{host}: {}", r.text);
        assert_eq!(seen_xff(r.body()), ["127.0.0.1"], "{host}: {}", r.text);
        assert_eq!(
            header(r.body(), "cf-connecting-ip").as_deref(),
            Some("198.51.100.7"),
            "{host}"
        );
        // One field: appended to.
        let r = send(&g, &certs, edge, host, "X-Forwarded-For: 203.0.113.1\r\n").await;
        assert_eq!(
            seen_xff(r.body()),
            ["203.0.113.1, 127.0.0.1"],
            "{host}: {}",
            r.text
        );
        // Several fields (any spelling): joined in order, then the peer, one field out.
        let r = send(
            &g,
            &certs,
            edge,
            host,
            "X-Forwarded-For: 203.0.113.1, 10.0.0.1\r\nx-forwarded-for: 2001:db8::1\r\nX-FORWARDED-FOR: 127.0.0.1\r\n",
        )
        .await;
        assert_eq!(
            seen_xff(r.body()),
            ["203.0.113.1, 10.0.0.1, 2001:db8::1, 127.0.0.1, 127.0.0.1"],
            "{host}: {}",
            r.text
        );
        // Many values (a client pretending to be the end of a long chain): all passed on,
        // within the request-head limits, and the peer is still the last one.
        let many: Vec<String> = (0..1000)
            .map(|i| format!("10.{}.{}.1", i / 256, i % 256))
            .collect();
        let r = send(
            &g,
            &certs,
            edge,
            host,
            &format!("X-Forwarded-For: {}\r\n", many.join(", ")),
        )
        .await;
        assert_eq!(r.status, 200, "{host}");
        let xff = seen_xff(r.body());
        assert_eq!(xff.len(), 1, "{host}");
        let values: Vec<&str> = xff[0].split(", ").collect();
        assert_eq!(values.len(), 1001, "{host}");
        assert_eq!(values.last(), Some(&"127.0.0.1"), "{host}");
        assert_eq!(
            values[..1000],
            many.iter().map(String::as_str).collect::<Vec<_>>()[..]
        );
    }

    // A head beyond the guard's limits never reaches an upstream: no way to push the
    // peer's address out of a field the upstream still reads.
    let before = echo.requests.load(Ordering::Relaxed);
    let huge = "9".repeat(1 << 20);
    let r = send(
        &g,
        &certs,
        edge,
        "h1.example",
        &format!("X-Forwarded-For: {huge}\r\n"),
    )
    .await;
    assert_eq!(r.status, 431, "{}", r.text.get(..200).unwrap_or(&r.text));
    assert_eq!(echo.requests.load(Ordering::Relaxed), before);

    // Optional site, no certificate: the field is still appended to, never trusted more.
    let r = send(
        &g,
        &certs,
        None,
        "opt.example",
        "X-Forwarded-For: 192.0.2.66\r\n",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(header(r.body(), "x-client-verify").as_deref(), Some("NONE"));
    assert_eq!(seen_xff(r.body()), ["192.0.2.66, 127.0.0.1"], "{}", r.text);
    // A Connection header naming the field makes it hop-by-hop: gone, the peer alone.
    let r = send(
        &g,
        &certs,
        edge,
        "h1.example",
        "Connection: x-forwarded-for\r\nX-Forwarded-For: 192.0.2.66\r\n",
    )
    .await;
    assert_eq!(seen_xff(r.body()), ["127.0.0.1"], "{}", r.text);

    // The WebSocket path (prepare for the upgrade): the echo upstream refuses the
    // upgrade with a 200 that shows what it got.
    let r = send(
        &g,
        &certs,
        edge,
        "h1.example",
        "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nX-Forwarded-For: 198.51.100.9\r\nX-Forwarded-For: 198.51.100.10\r\n",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        header(r.body(), "upgrade").as_deref(),
        Some("websocket"),
        "{}",
        r.text
    );
    assert_eq!(
        seen_xff(r.body()),
        ["198.51.100.9, 198.51.100.10, 127.0.0.1"],
        "{}",
        r.text
    );

    // The access log keeps what the client sent, not what the guard added.
    let line = g.wait_log("x_forwarded_for=192.0.2.66");
    assert!(line.contains("verdict=NONE"), "{line}");
    assert!(!line.contains("192.0.2.66, 127.0.0.1"), "{line}");
}

/// The same over HTTP/2 from the edge (curl `--http2`, two fields): to an HTTP/1.1 and to
/// an h2c upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_http2_from_the_edge_too() {
    if !aop_e2e::have_peer("curl", "over_http2_from_the_edge_too") {
        return;
    }
    let certs = Certs::new(&["h1.example", "h2c.example"]);
    let echo = Echo::start().await;
    let (h2c, _h2c_task) = h2c_echo().await;
    let sites = site("h1.example", echo.addr, "")
        + &site("h2c.example", h2c, "upstream_protocol = \"h2c\"\n");
    let g = Guard::start(certs.dir.path(), &sites);
    for host in ["h1.example", "h2c.example"] {
        let mut c = aop_e2e::curl(host, g.port, &certs.origin_ca.pem(), Some(&certs.edge));
        c.args(["--http2", "-w", "version=%{http_version}\n"])
            .args(["-H", "X-Forwarded-For: 203.0.113.1"])
            .args(["-H", "X-Forwarded-For: 203.0.113.2, 10.0.0.1"]);
        let o = tokio::task::block_in_place(|| aop_e2e::run(&mut c));
        let out = aop_e2e::stdout(&o);
        assert_eq!(aop_e2e::code(&o), 0, "{host}: {out}{}", aop_e2e::stderr(&o));
        assert!(out.ends_with("version=2\n"), "{host}: {out}");
        assert_eq!(
            seen_xff(&out),
            ["203.0.113.1, 203.0.113.2, 10.0.0.1, 127.0.0.1"],
            "{host}: {out}"
        );
    }
}
