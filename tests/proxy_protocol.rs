//! The PROXY protocol on a `proxy_protocol = true` listener: HAProxy (a real sender, v1
//! and v2) in front of the guard, its own connections opened from another loopback
//! address than the client's, so the guard's TCP peer and the header's address differ;
//! then raw connections that attack the header (none, garbage, a bad address, a huge v2
//! length, two headers, one byte at a time then a stall) and a header sent to a listener
//! that does not take one. What the upstream saw comes back from an echo upstream; what
//! the guard decided, from its JSON log.

#![allow(clippy::unwrap_used)] // a test: panics are failures

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use aop_e2e::guard::{Certs, Guard, Reply, client_config, closed_within, exchange};
use aop_e2e::haproxy::Haproxy;
use aop_e2e::upstream::{Echo, header_values};
use rustls::pki_types::ServerName;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

const HOST: &str = "pp.example";

/// A guard logging JSON with a PROXY protocol listener (`ports[0]`, its balancers: this
/// test's direct connections from 127.0.0.1 and HAProxy's from 127.0.0.3) and a plain
/// one (`ports[1]`), in front of `echo`.
fn guard(certs: &Certs, echo: &Echo, extra: &str) -> Guard {
    let site = format!(
        "log_format = \"json\"\n{extra}\n[[site]]\nhostnames = [\"{HOST}\"]\ncert = \"origin-ca/origin/cert.pem\"\nkey = \"origin-ca/origin/key.pem\"\ntrust = [\"edge-ca/ca.pem\"]\nupstream = \"http://{}\"\n",
        echo.addr
    );
    Guard::start_listening(
        certs.dir.path(),
        "[{ addr = \"127.0.0.1:0\", proxy_protocol = true, from = [\"127.0.0.1\", \"127.0.0.3/32\"] }, \"127.0.0.1:0\"]",
        &site,
    )
}

/// The `fields` of the next JSON log line of `target` containing `needle`.
fn logged(g: &Guard, target: &str, needle: &str) -> serde_json::Value {
    loop {
        let line = g.wait_log(needle);
        let event: serde_json::Value = serde_json::from_str(&line).unwrap();
        if event["target"] == target {
            return event["fields"].clone();
        }
    }
}

/// A field of a logged event, as text.
fn field(event: &serde_json::Value, name: &str) -> String {
    match &event[name] {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Every x-forwarded-for field the upstream saw (its echoed `body`).
fn seen_xff(body: &str) -> Vec<String> {
    header_values(body, "x-forwarded-for")
}

/// Connect to `addr`, write each of `pieces` as its own segment (a pause between them),
/// then speak TLS as the edge and GET /. Returns the answer (status 0 if TLS or the
/// request failed) and the connection's own address (the guard's TCP peer).
async fn after(addr: SocketAddr, certs: &Certs, pieces: &[&[u8]]) -> (Reply, SocketAddr) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let local = tcp.local_addr().unwrap();
    for (i, piece) in pieces.iter().enumerate() {
        if i > 0 {
            // Input shaping, not a wait: the next piece goes in a segment of its own.
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        let _ = tcp.write_all(piece).await;
        let _ = tcp.flush().await;
    }
    let config = client_config(&certs.origin_ca.pem(), Some(&certs.edge));
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from(HOST).unwrap(), tcp)
        .await;
    let reply = match tls {
        Ok(mut tls) => {
            let request = format!("GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n");
            exchange(&mut tls, request.as_bytes()).await
        }
        Err(e) => Reply {
            status: 0,
            text: e.to_string(),
        },
    };
    (reply, local)
}

/// A v2 header: `command` (0x20 LOCAL, 0x21 PROXY), `family` (0x11 TCP/IPv4, 0x21
/// TCP/IPv6), `addresses` (source, destination, source port, destination port), and
/// `length` if it is to lie about their size.
fn v2(command: u8, family: u8, addresses: &[u8], length: Option<u16>) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[command, family]);
    let len = length.unwrap_or(u16::try_from(addresses.len()).unwrap());
    h.extend_from_slice(&len.to_be_bytes());
    h.extend_from_slice(addresses);
    h
}

/// TCP/IPv6 addresses for [`v2`]: from `[source]:port` to [2001:db8::1]:443.
fn ipv6(source: &str, port: u16) -> Vec<u8> {
    let ip: std::net::Ipv6Addr = source.parse().unwrap();
    let mut a = ip.octets().to_vec();
    a.extend_from_slice(
        &"2001:db8::1"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    a.extend_from_slice(&port.to_be_bytes());
    a.extend_from_slice(&443u16.to_be_bytes());
    a
}

/// curl as the edge's client through HAProxy, from 127.0.0.2; HAProxy connects to the
/// guard from 127.0.0.3 with a v1 (`send-proxy`) or v2 (`send-proxy-v2`) header. The
/// guard answers as if 127.0.0.2 were its peer: in X-Forwarded-For, in the verdict and
/// access lines, with HAProxy's address as `via`. Were the header ignored, the upstream
/// would see 127.0.0.3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_v1_and_v2_give_the_client_address() {
    let test = "haproxy_v1_and_v2_give_the_client_address";
    if !aop_e2e::have_peer("haproxy", test) || !aop_e2e::have_peer("curl", test) {
        return;
    }
    let certs = Certs::new(&[HOST]);
    let echo = Echo::start().await;
    let g = guard(&certs, &echo, "");
    let proxied = SocketAddr::from(([127, 0, 0, 1], g.ports[0]));
    for (n, options) in ["send-proxy", "send-proxy-v2"].into_iter().enumerate() {
        let dir = certs.dir.path().join(format!("haproxy-{n}"));
        let lb = Haproxy::start(&dir, proxied, "127.0.0.3", options);
        let curl = {
            let mut c = aop_e2e::curl(HOST, lb.port, &certs.origin_ca.pem(), Some(&certs.edge));
            c.args(["--interface", "127.0.0.2"]);
            c
        };
        let out = tokio::task::spawn_blocking(move || {
            let mut curl = curl;
            aop_e2e::run(&mut curl)
        })
        .await
        .unwrap();
        let body = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{options}: {body}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(seen_xff(&body), ["127.0.0.2"], "{options}: {body}");
        let verdict = logged(&g, "aop::verdict", "\"peer\":\"127.0.0.2:");
        assert_eq!(
            field(&verdict, "verdict"),
            "SUCCESS",
            "{options}: {verdict}"
        );
        assert!(
            field(&verdict, "via").starts_with("127.0.0.3:"),
            "{options}: {verdict}"
        );
        let access = logged(&g, "aop::access", "\"peer\":\"127.0.0.2:");
        assert_eq!(field(&access, "status"), "200", "{options}: {access}");
        assert!(
            field(&access, "via").starts_with("127.0.0.3:"),
            "{options}: {access}"
        );
    }
}

/// Headers written by hand: v1 cut into three segments, v2 over IPv6, v2 LOCAL (a
/// balancer's health check: the socket's address stands).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_split_v6_and_local_are_served() {
    let certs = Certs::new(&[HOST]);
    let echo = Echo::start().await;
    let g = guard(&certs, &echo, "");
    let proxied = SocketAddr::from(([127, 0, 0, 1], g.ports[0]));

    let (r, local) = after(
        proxied,
        &certs,
        &[
            b"PROX",
            b"Y TCP4 203.0.113.5 198.51.100.1 ",
            b"40001 443\r\n",
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(seen_xff(r.body()), ["203.0.113.5"]);
    let v = logged(&g, "aop::verdict", "\"peer\":\"203.0.113.5:40001\"");
    assert_eq!(field(&v, "via"), local.to_string());

    let (r, local) = after(
        proxied,
        &certs,
        &[&v2(0x21, 0x21, &ipv6("2001:db8::5", 40002), None)],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(seen_xff(r.body()), ["2001:db8::5"]);
    let v = logged(&g, "aop::verdict", "\"peer\":\"[2001:db8::5]:40002\"");
    assert_eq!(field(&v, "via"), local.to_string());

    let (r, local) = after(
        proxied,
        &certs,
        &[&v2(0x20, 0x21, &ipv6("2001:db8::6", 40003), None)],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(seen_xff(r.body()), ["127.0.0.1"]);
    let v = logged(&g, "aop::verdict", &format!("\"peer\":\"{local}\""));
    assert_eq!(field(&v, "via"), local.to_string());
    assert!(
        g.lines_with("2001:db8::6").is_empty(),
        "LOCAL's addresses are ignored"
    );
}

/// No header, garbage, a v1 header with a bad address, a v2 header claiming 65535 bytes:
/// each refused before TLS with a verdict line (NONE, reason `proxy_header`, the socket's
/// address) and counted; the huge one at once, not at the handshake timeout (an hour
/// here). Two headers: the second is no ClientHello (handshake_error). Nothing reaches the
/// upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_without_a_valid_header_are_refused_with_a_verdict() {
    let certs = Certs::new(&[HOST]);
    let echo = Echo::start().await;
    let g = guard(&certs, &echo, "handshake_timeout_secs = 3600");
    let proxied = SocketAddr::from(([127, 0, 0, 1], g.ports[0]));
    let huge = v2(
        0x21,
        0x11,
        &[192, 0, 2, 1, 192, 0, 2, 2, 0, 80, 1, 187],
        Some(65535),
    );
    let cases: [(&str, &[&[u8]], &str); 4] = [
        ("no header", &[], "not a PROXY protocol header"),
        (
            "garbage",
            &[b"GET / HTTP/1.1\r\nHost: pp.example\r\n\r\n"],
            "not a PROXY protocol header",
        ),
        (
            "bad address",
            &[b"PROXY TCP4 203.0.113.300 198.51.100.1 40004 443\r\n"],
            "not a valid PROXY protocol v1 header",
        ),
        (
            "huge v2",
            &[&huge],
            "a PROXY protocol v2 header of 65551 bytes: more than the 2064 accepted",
        ),
    ];
    for (what, pieces, said) in cases {
        let (r, local) = after(proxied, &certs, pieces).await;
        assert_eq!(r.status, 0, "{what}: {}", r.text);
        let v = logged(&g, "aop::verdict", &format!("\"peer\":\"{local}\""));
        assert_eq!(
            (field(&v, "verdict"), field(&v, "reason")),
            ("NONE".into(), "proxy_header".into()),
            "{what}: {v}"
        );
        assert!(field(&v, "detail").contains(said), "{what}: {v}");
        assert_eq!(field(&v, "via"), "", "{what}: {v}");
    }
    assert_eq!(
        aop_e2e::metric_total(
            &g.metrics_text(),
            "aop_handshakes_total",
            "reason=\"proxy_header\""
        ),
        4
    );

    let (r, local) = after(
        proxied,
        &certs,
        &[b"PROXY TCP4 203.0.113.7 198.51.100.1 40007 443\r\nPROXY TCP4 203.0.113.8 198.51.100.1 40008 443\r\n"],
    )
    .await;
    assert_eq!(r.status, 0, "two headers: {}", r.text);
    let v = logged(&g, "aop::verdict", "\"peer\":\"203.0.113.7:40007\"");
    assert_eq!(field(&v, "reason"), "handshake_error", "{v}");
    assert_eq!(field(&v, "via"), local.to_string(), "{v}");
    assert_eq!(echo.requests.load(Ordering::Relaxed), 0);
}

/// A header sent one byte at a time, then nothing: closed at the handshake timeout,
/// with a verdict line that says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_that_stalls_is_closed_at_the_handshake_timeout() {
    let certs = Certs::new(&[HOST]);
    let echo = Echo::start().await;
    let g = guard(&certs, &echo, "handshake_timeout_secs = 2");
    let mut tcp = TcpStream::connect(("127.0.0.1", g.ports[0])).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let local = tcp.local_addr().unwrap();
    for b in b"PROXY TCP4 203.0.113.9" {
        tcp.write_all(&[*b]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(closed_within(&mut tcp, Duration::from_secs(20)).await);
    let v = logged(&g, "aop::verdict", &format!("\"peer\":\"{local}\""));
    assert_eq!(
        (field(&v, "verdict"), field(&v, "reason")),
        ("NONE".into(), "handshake_timeout".into()),
        "{v}"
    );
    assert!(
        field(&v, "detail").contains("no complete PROXY protocol header within 2s"),
        "{v}"
    );
}

/// On a listener without `proxy_protocol` a header is never read: the bytes are no
/// ClientHello, the handshake fails with the socket's address as the peer, and the
/// address the header claims appears nowhere. The same listener serves the edge as ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_on_a_plain_listener_is_a_failed_handshake_and_spoofs_nothing() {
    let certs = Certs::new(&[HOST]);
    let echo = Echo::start().await;
    let g = guard(&certs, &echo, "");
    let plain = SocketAddr::from(([127, 0, 0, 1], g.ports[1]));
    let (r, local) = after(
        plain,
        &certs,
        &[b"PROXY TCP4 203.0.113.66 198.51.100.1 40066 443\r\n"],
    )
    .await;
    assert_eq!(r.status, 0, "{}", r.text);
    let v = logged(&g, "aop::verdict", &format!("\"peer\":\"{local}\""));
    assert_eq!(field(&v, "reason"), "handshake_error", "{v}");
    assert_eq!(field(&v, "via"), "", "{v}");
    assert_eq!(echo.requests.load(Ordering::Relaxed), 0);

    let (r, _) = after(plain, &certs, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(seen_xff(r.body()), ["127.0.0.1"]);
    assert!(g.lines_with("203.0.113.66").is_empty());
}
