//! nginx as the edge in front of the origin guard, with a keepalive pool toward it
//! (docs/nginx-edge.md). nginx pools upstream connections per `upstream {}` block and
//! reuses a pooled connection whatever `proxy_ssl_name` the next request would have sent:
//! with one `upstream` block per SNI, alternating requests for two sites all reach the
//! right site over two kept connections; with one shared block and `proxy_ssl_name
//! $host`, the second host's request arrives on the first host's connection and the
//! guard answers 421 (RFC 9110 §15.5.20), as the page warns.

#![allow(clippy::unwrap_used)] // a test: panics are failures

use std::io::{Read as _, Write as _};
use std::sync::atomic::Ordering;

use aop_e2e::guard::{Certs, Guard};
use aop_e2e::nginx::Nginx;
use aop_e2e::upstream::{Echo, header};

/// The `proxy_ssl_*` lines every location toward the guard has (the edge's client
/// certificate, the origin verified), then `proxy_ssl_name NAME`.
fn toward_guard(certs: &Certs, name: &str) -> String {
    format!(
        "proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header Host $host;
            proxy_ssl_certificate {cert};
            proxy_ssl_certificate_key {key};
            proxy_ssl_trusted_certificate {ca};
            proxy_ssl_verify on;
            proxy_ssl_server_name on;
            proxy_ssl_name {name};",
        cert = certs.edge.cert.display(),
        key = certs.edge.key.display(),
        ca = certs.origin_ca.pem().display(),
    )
}

/// One plain HTTP/1.1 request to nginx for `host`: the status and the body.
fn get(nginx: &Nginx, host: &str) -> (u16, String) {
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", nginx.port)).unwrap();
    write!(
        tcp,
        "GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    tcp.read_to_string(&mut out).unwrap();
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status: {out}"));
    let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
    (status, body)
}

/// A guard with sites `a.example` and `b.example` (each with an echo upstream of its
/// own) behind nginx.
struct Edge {
    g: Guard,
    a: Echo,
    b: Echo,
    nginx: Nginx,
    _certs: Certs,
}

/// Start the guard and nginx with, for each of `pools` (`server_name`s, the `upstream`
/// block's name, `proxy_ssl_name`), an `upstream` block with a keepalive pool toward
/// the guard and a `server` block proxying to it. `None`: no nginx (skip allowed).
async fn edge(test: &str, pools: &[(&str, &str, &str)]) -> Option<Edge> {
    if !aop_e2e::have_peer("nginx", test) {
        return None;
    }
    let certs = Certs::new(&["a.example", "b.example"]);
    let (a, b) = (Echo::start().await, Echo::start().await);
    let site = |host: &str, echo: &Echo| {
        format!(
            "\n[[site]]\nhostnames = [\"{host}\"]\ncert = \"origin-ca/origin/cert.pem\"\nkey = \"origin-ca/origin/key.pem\"\ntrust = [\"edge-ca/ca.pem\"]\nupstream = \"http://{}\"\n",
            echo.addr
        )
    };
    let g = Guard::start(
        certs.dir.path(),
        &(site("a.example", &a) + &site("b.example", &b)),
    );
    let dir = certs.dir.path().join("nginx");
    let nginx = tokio::task::block_in_place(|| {
        Nginx::start_http(&dir, |port| {
            let mut http = String::new();
            for (names, pool, ssl_name) in pools {
                http += &format!(
                    "
    upstream {pool} {{
        server 127.0.0.1:{guard};
        keepalive 8;
    }}
    server {{
        listen 127.0.0.1:{port};
        server_name {names};
        location / {{
            proxy_pass https://{pool};
            {toward}
        }}
    }}",
                    guard = g.port,
                    toward = toward_guard(&certs, ssl_name),
                );
            }
            http
        })
    });
    Some(Edge {
        g,
        a,
        b,
        nginx,
        _certs: certs,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_upstream_block_per_sni_keeps_a_connection_per_site() {
    let pools = [
        ("a.example", "aop_a", "a.example"),
        ("b.example", "aop_b", "b.example"),
    ];
    let Some(Edge { g, a, b, nginx, .. }) = edge("one_upstream_block_per_sni", &pools).await else {
        return;
    };
    for round in 0..3 {
        for host in ["a.example", "b.example"] {
            let (status, body) = tokio::task::block_in_place(|| get(&nginx, host));
            assert_eq!(status, 200, "round {round}, {host}: {body}");
            assert_eq!(header(&body, "host").as_deref(), Some(host), "{body}");
            assert_eq!(
                header(&body, "x-client-verify").as_deref(),
                Some("SUCCESS"),
                "{body}"
            );
        }
    }
    // Each site's requests reached its own upstream.
    assert_eq!(a.requests.load(Ordering::Relaxed), 3);
    assert_eq!(b.requests.load(Ordering::Relaxed), 3);
    // Six requests, two connections (one per pool): two handshakes, two verdicts.
    for _ in 0..6 {
        g.wait_log("aop::access");
    }
    assert_eq!(g.lines_with("client certificate verdict").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shared_upstream_block_with_proxy_ssl_name_host_gets_421() {
    let pools = [("a.example b.example", "aop", "$host")];
    let Some(Edge { g, a, b, nginx, .. }) = edge("one_shared_upstream_block", &pools).await else {
        return;
    };
    let (status, body) = tokio::task::block_in_place(|| get(&nginx, "a.example"));
    assert_eq!(status, 200, "{body}");
    // The pooled connection's SNI is a.example: b.example's request is misdirected.
    let (status, body) = tokio::task::block_in_place(|| get(&nginx, "b.example"));
    assert_eq!(status, 421, "{body}");
    assert_eq!(a.requests.load(Ordering::Relaxed), 1);
    assert_eq!(b.requests.load(Ordering::Relaxed), 0);
    assert_eq!(g.lines_with("client certificate verdict").len(), 1);
}
