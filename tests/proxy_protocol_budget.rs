//! A `proxy_protocol` listener against the connection budget and the handshake timeout
//! (review 15's findings, kept as regression tests): only the balancers in `from` may
//! name a client, a header alone leaves a connection as silent as a bare TCP connection,
//! and the header, the first byte and the handshake share one timeout from accept.
//! Blocking clients bound to loopback addresses of their own (127.0.0.x), so the guard
//! sees each as a different peer.

#![allow(clippy::unwrap_used)] // a test: panics are failures

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aop_e2e::guard::{Certs, Guard, client_config};
use aop_e2e::upstream::Echo;
use rustls::pki_types::ServerName;

const HOST: &str = "pp.example";

fn site(echo: &Echo, extra: &str) -> String {
    format!(
        "{extra}\n[[site]]\nhostnames = [\"{HOST}\"]\ncert = \"origin-ca/origin/cert.pem\"\nkey = \"origin-ca/origin/key.pem\"\ntrust = [\"edge-ca/ca.pem\"]\nupstream = \"http://{}\"\n",
        echo.addr
    )
}

/// A `proxy_protocol` listener whose balancers are `from` (TOML strings).
fn proxied(from: &str) -> String {
    format!("[{{ addr = \"127.0.0.1:0\", proxy_protocol = true, from = [{from}] }}]")
}

/// One test's world: a guard on `listen` (a plain loopback port if `None`) with `extra`
/// top-level settings in front of an echo upstream, and the edge's client config.
struct Setup {
    rt: tokio::runtime::Runtime,
    certs: Certs,
    g: Guard,
    config: Arc<rustls::ClientConfig>,
    _echo: Echo,
}

fn setup(listen: Option<&str>, extra: &str) -> Setup {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let certs = Certs::new(&[HOST]);
    let echo = rt.block_on(Echo::start());
    let rest = site(&echo, extra);
    let g = match listen {
        Some(listen) => Guard::start_listening(certs.dir.path(), listen, &rest),
        None => Guard::start(certs.dir.path(), &rest),
    };
    let config = client_config(&certs.origin_ca.pem(), Some(&certs.edge));
    Setup {
        rt,
        certs,
        g,
        config,
        _echo: echo,
    }
}

/// A blocking TCP connection to 127.0.0.1:`port` from the loopback address `src`.
fn connect_from(rt: &tokio::runtime::Runtime, src: [u8; 4], port: u16) -> TcpStream {
    let tcp = rt.block_on(async {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind(SocketAddr::from((src, 0))).unwrap();
        let s = sock
            .connect(SocketAddr::from(([127, 0, 0, 1], port)))
            .await
            .unwrap();
        s.into_std().unwrap()
    });
    tcp.set_nonblocking(false).unwrap();
    tcp.set_nodelay(true).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    tcp
}

fn v1(client: &str, port: u16) -> Vec<u8> {
    format!("PROXY TCP4 {client} 127.0.0.1 {port} 443\r\n").into_bytes()
}

/// A handshake begun: the header, the ClientHello, and the guard's first flight read
/// (so the guard has read the header and named the connection's peer).
struct Half {
    tcp: TcpStream,
    tls: rustls::ClientConnection,
}

/// Send `header` and a ClientHello on `tcp`, read the guard's first flight; `None` if
/// the guard closed the connection instead.
fn begin(mut tcp: TcpStream, header: &[u8], config: Arc<rustls::ClientConfig>) -> Option<Half> {
    tcp.write_all(header).ok()?;
    let mut tls =
        rustls::ClientConnection::new(config, ServerName::try_from(HOST).unwrap().to_owned())
            .unwrap();
    tls.write_tls(&mut tcp).ok()?;
    match tls.read_tls(&mut tcp) {
        Ok(n) if n > 0 => {}
        _ => return None,
    }
    tls.process_new_packets().ok()?;
    Some(Half { tcp, tls })
}

/// Finish the handshake, GET /: the status (0 if the connection failed) and the text.
fn finish(mut h: Half) -> (u16, String) {
    let mut s = rustls::Stream::new(&mut h.tls, &mut h.tcp);
    let req = format!("GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n");
    if let Err(e) = s.write_all(req.as_bytes()) {
        return (0, e.to_string());
    }
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => {
                if buf.is_empty() {
                    return (0, e.to_string());
                }
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    (
        text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0),
        text,
    )
}

/// Read until the guard closes `tcp` (EOF or reset); how long that took from `since`.
fn closed_after(tcp: &mut TcpStream, since: Instant) -> Duration {
    let mut b = [0u8; 64];
    loop {
        match tcp.read(&mut b) {
            Ok(0) | Err(_) => return since.elapsed(),
            Ok(_) => {}
        }
    }
}

/// With max_handshakes = 2: a handshake under way (from `sources[0]`, after
/// `headers[0]`), a bare connection (`headers[1]` only), a third handshake. The bare one
/// is closed (logged with `bare_peer`); both handshakes are served.
fn silent_one_gives_way(
    rt: &tokio::runtime::Runtime,
    g: &Guard,
    config: &Arc<rustls::ClientConfig>,
    port: u16,
    sources: [[u8; 4]; 3],
    headers: &[Vec<u8>; 3],
    bare_peer: &str,
) {
    let real = begin(
        connect_from(rt, sources[0], port),
        &headers[0],
        config.clone(),
    )
    .expect("the real handshake begins");
    // A client that connected and said nothing (through a balancer: its header only).
    let mut bare = connect_from(rt, sources[1], port);
    bare.write_all(&headers[1]).unwrap();
    // In before the next connection (through HAProxy the next could reach the guard first).
    aop_e2e::wait_until(
        "the bare connection admitted",
        Duration::from_secs(10),
        || (g.metric("aop_connections{state=\"handshaking\"}") >= 2).then_some(()),
    );
    // The next connection needs a slot.
    let next = begin(
        connect_from(rt, sources[2], port),
        &headers[2],
        config.clone(),
    );
    let line = g.wait_log("closed=max_handshakes ");
    assert!(line.contains(&format!("peer={bare_peer}")), "{line}");
    let (status, text) = finish(real);
    assert_eq!(status, 200, "the real handshake: {text}");
    assert_eq!(finish(next.expect("the next handshake begins")).0, 200);
    closed_after(&mut bare, Instant::now());
}

/// Anyone who reaches the port could otherwise name the victim's address and close its
/// handshake under way (max_handshakes_per_peer). From outside `from` (127.0.0.1 here,
/// the balancer 127.0.0.3) the connection is refused before a byte is read: a verdict
/// NONE proxy_header naming the peer, counted; the victim's request is served.
#[test]
fn a_header_from_outside_from_cannot_close_a_victims_handshake() {
    let Setup {
        rt,
        g,
        config,
        certs: _certs,
        _echo,
    } = setup(
        Some(&proxied("\"127.0.0.3/32\"")),
        "max_handshakes_per_peer = 1",
    );
    // The victim, through the balancer (127.0.0.3), mid-handshake.
    let victim = begin(
        connect_from(&rt, [127, 0, 0, 3], g.ports[0]),
        &v1("198.51.100.7", 40001),
        config.clone(),
    )
    .expect("the victim's handshake begins");
    // The attacker, straight to the port, naming the victim; no certificate needed.
    let attacker = begin(
        connect_from(&rt, [127, 0, 0, 1], g.ports[0]),
        &v1("198.51.100.7", 40002),
        config.clone(),
    );
    assert!(attacker.is_none(), "the attacker's connection was served");
    let line = g.wait_log("may not send a PROXY protocol header");
    assert!(
        line.contains(
            "127.0.0.1 may not send a PROXY protocol header (not in this listener's from)"
        ) && line.contains("verdict=NONE")
            && line.contains("reason=proxy_header")
            && line.contains("peer=127.0.0.1:"),
        "{line}"
    );
    let (status, text) = finish(victim);
    assert_eq!(status, 200, "victim: {text}\n{:#?}", g.lines_with("closed"));
    assert!(
        g.lines_with("closed=").is_empty(),
        "{:#?}",
        g.lines_with("closed=")
    );
    assert_eq!(
        aop_e2e::metric_total(
            &g.metrics_text(),
            "aop_handshakes_total",
            "reason=\"proxy_header\""
        ),
        1
    );
}

/// A balancer sends its header as soon as its client connects, so a header alone is a
/// bare TCP connection: at max_handshakes the new connection closes it, not the real
/// handshake under way, which is served.
#[test]
fn header_only_connections_do_not_push_out_a_real_handshake() {
    let Setup {
        rt,
        g,
        config,
        certs: _certs,
        _echo,
    } = setup(Some(&proxied("\"127.0.0.3\"")), "max_handshakes = 2");
    let headers =
        [40001, 40002, 40003].map(|port| v1(&format!("198.51.100.{}", port - 40000), port));
    silent_one_gives_way(
        &rt,
        &g,
        &config,
        g.ports[0],
        [[127, 0, 0, 3]; 3],
        &headers,
        "198.51.100.2:40002",
    );
}

/// The same through a real sender: HAProxy (`send-proxy`) connects to the guard and
/// writes the header the moment a client connects to it. A bare TCP connection to HAProxy
/// is the one closed at max_handshakes; the edge's handshake under way is served.
#[test]
fn haproxy_bare_connect_does_not_push_out_the_edges_handshake() {
    let test = "haproxy_bare_connect_does_not_push_out_the_edges_handshake";
    if !aop_e2e::have_peer("haproxy", test) {
        return;
    }
    let Setup {
        rt,
        g,
        config,
        certs,
        _echo,
    } = setup(Some(&proxied("\"127.0.0.3\"")), "max_handshakes = 2");
    let lb = aop_e2e::haproxy::Haproxy::start(
        &certs.dir.path().join("haproxy"),
        SocketAddr::from(([127, 0, 0, 1], g.ports[0])),
        "127.0.0.3",
        "send-proxy",
    );
    let direct = [127, 0, 0, 2];
    let sources = [direct, [127, 0, 0, 4], [127, 0, 0, 5]];
    silent_one_gives_way(
        &rt,
        &g,
        &config,
        lb.port,
        sources,
        &[vec![], vec![], vec![]],
        "127.0.0.4:",
    );
}

/// Control for the two above: on a plain listener the bare connection is silent and is
/// the one closed; the real handshake is served.
#[test]
fn plain_listener_closes_the_silent_one() {
    let Setup {
        rt,
        g,
        config,
        certs: _certs,
        _echo,
    } = setup(None, "max_handshakes = 2");
    let sources = [[127, 0, 0, 3], [127, 0, 0, 4], [127, 0, 0, 5]];
    silent_one_gives_way(
        &rt,
        &g,
        &config,
        g.port,
        sources,
        &[vec![], vec![], vec![]],
        "127.0.0.4:",
    );
}

/// A header, then nothing: closed at the handshake timeout with a verdict naming the
/// header's client and saying no ClientHello came.
#[test]
fn a_header_then_silence_is_closed_at_the_handshake_timeout() {
    let Setup {
        rt,
        g,
        config: _,
        certs: _certs,
        _echo,
    } = setup(
        Some(&proxied("\"127.0.0.3\"")),
        "handshake_timeout_secs = 1",
    );
    let mut tcp = connect_from(&rt, [127, 0, 0, 3], g.ports[0]);
    tcp.write_all(&v1("198.51.100.9", 40009)).unwrap();
    closed_after(&mut tcp, Instant::now());
    let line = g.wait_log("no ClientHello within 1s");
    assert!(
        line.contains("reason=handshake_timeout") && line.contains("peer=198.51.100.9:40009"),
        "{line}"
    );
}

/// `handshake_timeout` counts from accept, whatever came before the TLS handshake (the
/// header, the first byte): a last piece sent just before the deadline, then a stall,
/// is closed at the deadline, not a fresh timeout later. The bound (1.4x) is one a
/// correct guard meets by seconds and the old one (about 1.8x) misses by as much.
fn stalled_is_closed_at_the_handshake_timeout(listen: Option<&str>, first: &[u8], rest: &[u8]) {
    let Setup {
        rt,
        g,
        config: _,
        certs: _certs,
        _echo,
    } = setup(listen, "handshake_timeout_secs = 5");
    let mut tcp = connect_from(&rt, [127, 0, 0, 3], g.ports[0]);
    let t0 = Instant::now();
    tcp.write_all(first).unwrap();
    // Input shaping: the rest just before the deadline.
    std::thread::sleep(Duration::from_secs(4));
    tcp.write_all(rest).unwrap();
    // The start of a ClientHello that never ends.
    tcp.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00]).unwrap();
    let held = closed_after(&mut tcp, t0);
    assert!(
        held < Duration::from_secs(7),
        "held {held:?} with handshake_timeout_secs = 5"
    );
    let line = g.wait_log("reason=handshake_timeout");
    assert!(line.contains("no complete handshake within 5s"), "{line}");
}

#[test]
fn header_then_stalled_hello_is_closed_at_the_handshake_timeout() {
    let header = v1("198.51.100.9", 40009);
    stalled_is_closed_at_the_handshake_timeout(
        Some(&proxied("\"127.0.0.3\"")),
        &header[..1],
        &header[1..],
    );
}

#[test]
fn first_byte_then_stall_is_closed_at_the_handshake_timeout() {
    stalled_is_closed_at_the_handshake_timeout(None, b"", b"");
}

/// The header and the whole ClientHello in one segment: only the header is taken, the
/// handshake and request succeed with the header's address as the peer.
#[test]
fn header_and_hello_in_one_segment() {
    let Setup {
        rt,
        g,
        config,
        certs: _certs,
        _echo,
    } = setup(Some(&proxied("\"127.0.0.3\"")), "");
    let mut tcp = connect_from(&rt, [127, 0, 0, 3], g.ports[0]);
    let mut tls =
        rustls::ClientConnection::new(config, ServerName::try_from(HOST).unwrap().to_owned())
            .unwrap();
    let mut first = v1("198.51.100.44", 40044);
    tls.write_tls(&mut first).unwrap();
    tcp.write_all(&first).unwrap();
    let (status, text) = finish(Half { tcp, tls });
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("198.51.100.44"), "{text}");
    g.wait_log("peer=198.51.100.44:40044");
}

/// A balancer naming a fresh address per connection escapes the per-peer cap, but
/// `max_handshakes` still binds: the third closes the oldest, which names its client.
#[test]
fn max_handshakes_binds_whatever_the_headers_name() {
    let Setup {
        rt,
        g,
        config,
        certs: _certs,
        _echo,
    } = setup(
        Some(&proxied("\"127.0.0.0/24\"")),
        "max_handshakes = 2\nmax_handshakes_per_peer = 1",
    );
    let halves: Vec<Option<Half>> = (1..=3u16)
        .map(|i| {
            begin(
                connect_from(&rt, [127, 0, 0, 1], g.ports[0]),
                &v1(&format!("198.51.100.{i}"), 40000 + i),
                config.clone(),
            )
        })
        .collect();
    let line = g.wait_log("closed=max_handshakes ");
    assert!(line.contains("peer=198.51.100.1:40001"), "{line}");
    let mut it = halves.into_iter();
    assert_eq!(finish(it.next().unwrap().unwrap()).0, 0);
    assert_eq!(finish(it.next().unwrap().unwrap()).0, 200);
    assert_eq!(finish(it.next().unwrap().unwrap()).0, 200);
}
