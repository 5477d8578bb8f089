//! HTTP/2 on aop-verify's hyper glue, over real TLS on loopback: an origin built on the
//! glue (aop_e2e::origin::TestOrigin) with curl, a rustls + hyper HTTP/2 client and an
//! `h2` client (to see GOAWAY and PING frame by frame) as the edge. What belongs here:
//! the protocol ALPN chooses, the `:authority` / Host rules, the re-check after a reload,
//! the timers as they apply to HTTP/2 streams, and tunnels (HTTP/1.1 Upgrade, HTTP/2
//! extended CONNECT) through a scratch origin with its own handler. (That the guard still speaks HTTP/1.1
//! to an HTTP/2 client is in tests/origin.rs, with curl through the guard.)

#![allow(clippy::unwrap_used)] // a test: panics are failures

use std::future::{Future, IntoFuture as _};
use std::net::SocketAddr;
use std::process::Output;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aop_e2e::origin::TestOrigin;
use aop_e2e::pki::{self, Leaf};
use aop_e2e::{curl, have_peer, run};
use aop_verify::{Limits, PolicySpec, RuleSpec, TrustSpec};
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Bytes;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

/// The certificates (the origin's for both sites) and two rules, `a` for a.example and
/// `b` for b.example, both trusting the edge's CA.
fn world() -> pki::World {
    pki::World::new(&["a.example", "b.example"])
}

fn rule(w: &pki::World, name: &str, host: &str, trust: &Leaf) -> RuleSpec {
    RuleSpec::new(
        name,
        [host],
        &w.server.cert,
        &w.server.key,
        TrustSpec::new([trust.cert.clone()]),
    )
}

fn policy(w: &pki::World) -> PolicySpec {
    let ca = w.edge_ca.as_leaf();
    PolicySpec::new(vec![
        rule(w, "a", "a.example", &ca),
        rule(w, "b", "b.example", &ca),
    ])
}

fn limits() -> Limits {
    Limits::default().with_log_verdicts(false)
}

/// A rustls client configuration that trusts the origin's CA, presents the edge's
/// certificate and offers `alpn`.
fn client_config(w: &pki::World, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in aop_pki::load_certificates(&w.origin_ca.pem()).unwrap() {
        roots.add(c).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(aop_pki::default_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            aop_pki::load_certificates(&w.edge.cert).unwrap(),
            aop_pki::load_private_key(&w.edge.key).unwrap(),
        )
        .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// [`client_config`] as a connector.
fn tls(w: &pki::World, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    tokio_rustls::TlsConnector::from(client_config(w, alpn))
}

/// A TLS connection to `addr` with SNI `sni` that negotiated `h2`.
async fn h2_tls(
    w: &pki::World,
    addr: SocketAddr,
    sni: &str,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from(sni.to_owned()).unwrap();
    let tls = tls(w, &[b"h2", b"http/1.1"])
        .connect(name, tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    tls
}

/// A hyper HTTP/2 client connection, and the task that drives it (it ends when the
/// connection does).
async fn hyper_h2(
    w: &pki::World,
    addr: SocketAddr,
    sni: &str,
) -> (
    hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
    tokio::task::JoinHandle<Result<(), hyper::Error>>,
) {
    let io = hyper_util::rt::TokioIo::new(h2_tls(w, addr, sni).await);
    let (send, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
            .await
            .unwrap();
    (send, tokio::spawn(conn))
}

/// `GET https://AUTHORITY/` on an HTTP/2 connection, with a Host header if given: the
/// status, the body and the `x-client-verify` header.
async fn get(
    send: &mut hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
    authority: &str,
    host: Option<&str>,
) -> Result<(u16, String, String), hyper::Error> {
    let mut req = hyper::Request::get(format!("https://{authority}/"));
    if let Some(h) = host {
        req = req.header("host", h);
    }
    send.ready().await?;
    let resp = send.send_request(req.body(Empty::new()).unwrap()).await?;
    assert_eq!(resp.version(), hyper::Version::HTTP_2);
    let status = resp.status().as_u16();
    let verdict = resp
        .headers()
        .get("x-client-verify")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned(), verdict))
}

fn curl_out(out: &Output) -> String {
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// curl with the edge's certificate gets HTTP/2 and SUCCESS; `--http1.1` still gets
/// HTTP/1.1; an `:authority` of another rule is 421 on HTTP/2 as on HTTP/1.1.
#[tokio::test]
async fn curl_gets_http2_with_the_verdict_and_http1_still_works() {
    if !have_peer(
        "curl",
        "curl_gets_http2_with_the_verdict_and_http1_still_works",
    ) {
        return;
    }
    let w = world();
    let origin = TestOrigin::start(&policy(&w), limits()).await;
    let port = origin.addr.port();
    let roots = w.origin_ca.pem();
    let edge = w.edge.clone();
    let out = tokio::task::spawn_blocking(move || {
        let curl = |host: &str, extra: &[&str]| {
            let mut c = curl(host, port, &roots, Some(&edge));
            c.args(["-w", "\n%{http_version} %{http_code}"]).args(extra);
            curl_out(&run(&mut c))
        };
        [
            curl("a.example", &["--http2"]),
            curl("a.example", &["--http1.1"]),
            // curl sends a Host header given on HTTP/2 as `:authority`.
            curl("a.example", &["--http2", "-H", "Host: b.example"]),
            curl("a.example", &["--http1.1", "-H", "Host: b.example"]),
        ]
    })
    .await
    .unwrap();
    assert_eq!(out[0], "verdict SUCCESS\n\n2 200");
    assert_eq!(out[1], "verdict SUCCESS\n\n1.1 200");
    assert_eq!(out[2], "\n2 421");
    assert_eq!(out[3], "\n1.1 421");
    // Without a certificate, refused in the handshake whatever curl asks for.
    let roots = w.origin_ca.pem();
    let refused = tokio::task::spawn_blocking(move || {
        let mut c = curl("a.example", port, &roots, None);
        run(c.args(["--http2", "-w", "%{http_code}"]))
    })
    .await
    .unwrap();
    assert!(!refused.status.success());
    assert_eq!(String::from_utf8_lossy(&refused.stdout), "000");
}

/// On one HTTP/2 connection: `:authority` alone, or with an equal Host, is served; a Host
/// that differs from `:authority` is 400 and another rule's `:authority` is 421, each
/// ending only its own stream.
#[tokio::test]
async fn authority_and_host_on_http2() {
    let w = world();
    let origin = TestOrigin::start(&policy(&w), limits()).await;
    let a = format!("a.example:{}", origin.addr.port());
    let b = format!("b.example:{}", origin.addr.port());
    let (mut send, conn) = hyper_h2(&w, origin.addr, "a.example").await;
    let ok = (200, "verdict SUCCESS\n".to_owned(), "SUCCESS".to_owned());
    assert_eq!(get(&mut send, &a, None).await.unwrap(), ok);
    assert_eq!(get(&mut send, &a, Some(&a)).await.unwrap(), ok);
    assert_eq!(
        get(
            &mut send,
            &a,
            Some(
                "A.EXAMPLE.:443"
                    .replace("443", &origin.addr.port().to_string())
                    .as_str()
            )
        )
        .await
        .unwrap(),
        ok,
        "the same authority, written otherwise"
    );
    let refused = |status| (status, String::new(), String::new());
    assert_eq!(
        get(&mut send, &a, Some("b.example")).await.unwrap(),
        refused(400)
    );
    assert_eq!(get(&mut send, &a, Some(&b)).await.unwrap(), refused(400));
    assert_eq!(
        get(&mut send, &a, Some("a.example")).await.unwrap(),
        refused(400),
        "a port differs"
    );
    let mut two = hyper::Request::get(format!("https://{a}/"))
        .header("host", &a)
        .header("host", &a)
        .body(Empty::new())
        .unwrap();
    *two.version_mut() = hyper::Version::HTTP_2;
    send.ready().await.unwrap();
    let resp = send.send_request(two).await.unwrap();
    assert_eq!(resp.status(), 400, "two Host headers");
    assert_eq!(get(&mut send, &b, None).await.unwrap(), refused(421));
    assert_eq!(get(&mut send, &b, Some(&b)).await.unwrap(), refused(421));
    assert_eq!(
        get(&mut send, &a, Some("a.example:80x")).await.unwrap(),
        refused(400),
        "a Host that does not parse"
    );
    assert_eq!(
        get(&mut send, "a.example:0", None).await.unwrap(),
        refused(400),
        "port 0 names no service"
    );
    assert_eq!(
        get(&mut send, &a, Some("a.example:0")).await.unwrap(),
        refused(400)
    );
    assert_eq!(
        get(&mut send, &a, None).await.unwrap(),
        ok,
        "the connection still serves"
    );
    assert!(!conn.is_finished());
}

/// `certtool probe`'s engine writes HTTP/1.1 by hand, so it asks for `http/1.1` alone
/// even when its identity's configuration offers `h2` first, and an origin that prefers
/// HTTP/2 answers it.
#[tokio::test]
async fn the_probe_asks_for_http1_whatever_its_identity_offers() {
    let w = world();
    let origin = TestOrigin::start(&policy(&w), limits()).await;
    let config = client_config(&w, &[b"h2", b"http/1.1"]);
    let target: aop_edge::Target = format!("https://a.example:{}/", origin.addr.port())
        .parse()
        .unwrap();
    let resolve = aop_edge::Resolve::new([origin.resolve("a.example").parse().unwrap()]);
    let result = aop_edge::probe(&target, &resolve, config, aop_edge::Timeouts::default()).await;
    assert_eq!(
        result.observed,
        aop_edge::Observed::Accepted {
            status: 200,
            verdict: Some("SUCCESS".into())
        }
    );
}

/// After a reload that drops the edge's CA, the next request on a kept-alive HTTP/2
/// connection is 421 and the connection is sent GOAWAY (require mode).
#[tokio::test]
async fn a_kept_alive_http2_connection_is_rechecked_after_a_reload() {
    let w = world();
    let origin = TestOrigin::start(&policy(&w), limits()).await;
    let a = format!("a.example:{}", origin.addr.port());
    let (mut send, conn) = hyper_h2(&w, origin.addr, "a.example").await;
    assert_eq!(get(&mut send, &a, None).await.unwrap().0, 200);
    let next_ca = pki::ca(w.path(), "next-ca").as_leaf();
    origin
        .policy
        .reload(&PolicySpec::new(vec![rule(&w, "a", "a.example", &next_ca)]))
        .unwrap();
    assert_eq!(
        get(&mut send, &a, None).await.unwrap(),
        (421, String::new(), String::new())
    );
    let ended = tokio::time::timeout(Duration::from_secs(5), conn)
        .await
        .expect("the server ends the connection after the 421")
        .unwrap();
    assert!(ended.is_ok(), "a graceful end (GOAWAY): {ended:?}");
    assert!(
        get(&mut send, &a, None).await.is_err(),
        "no request after GOAWAY"
    );
}

/// In `optional` mode the kept-alive HTTP/2 connection carries the new verdict after the
/// reload: its next stream reaches the application with `FAILED:unknown_ca` (which this
/// origin answers 403), and the connection stays open.
#[tokio::test]
async fn an_optional_http2_connection_carries_the_new_verdict_after_a_reload() {
    let w = world();
    let optional = |trust: &Leaf| {
        let mut r = rule(&w, "a", "a.example", trust);
        r.mode = aop_verify::Mode::Optional;
        PolicySpec::new(vec![r])
    };
    let origin = TestOrigin::start(&optional(&w.edge_ca.as_leaf()), limits()).await;
    let a = format!("a.example:{}", origin.addr.port());
    let (mut send, conn) = hyper_h2(&w, origin.addr, "a.example").await;
    assert_eq!(get(&mut send, &a, None).await.unwrap().2, "SUCCESS");
    let next_ca = pki::ca(w.path(), "next-ca").as_leaf();
    origin.policy.reload(&optional(&next_ca)).unwrap();
    assert_eq!(
        get(&mut send, &a, None).await.unwrap(),
        (
            403,
            "verdict FAILED:unknown_ca\n".to_owned(),
            "FAILED:unknown_ca".to_owned()
        )
    );
    assert_eq!(get(&mut send, &a, None).await.unwrap().0, 403);
    assert!(!conn.is_finished(), "no GOAWAY in optional mode");
}

/// An `h2` client connection: the request sender, the PING handle, the connection task.
async fn raw_h2(
    w: &pki::World,
    addr: SocketAddr,
) -> (
    h2::client::SendRequest<Bytes>,
    h2::PingPong,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let tls = h2_tls(w, addr, "a.example").await;
    let (send, mut conn) = h2::client::handshake(tls).await.unwrap();
    let ping = conn.ping_pong().unwrap();
    (send, ping, tokio::spawn(conn))
}

/// One `GET` on an `h2` connection; its status.
async fn raw_get(send: &mut h2::client::SendRequest<Bytes>, authority: &str) -> u16 {
    let req = hyper::Request::get(format!("https://{authority}/"))
        .body(())
        .unwrap();
    let mut ready = send.clone().ready().await.unwrap();
    let (resp, _) = ready.send_request(req, true).unwrap();
    let resp = resp.await.unwrap();
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        body.flow_control().release_capacity(chunk.len()).unwrap();
    }
    status
}

/// Wait (10 s at most) for a task (a client connection's, a server's) to end, without
/// error.
async fn ends_cleanly<E: std::fmt::Debug>(
    conn: tokio::task::JoinHandle<Result<(), E>>,
    what: &str,
) {
    let ended = tokio::time::timeout(Duration::from_secs(10), conn)
        .await
        .expect(what)
        .unwrap();
    assert!(ended.is_ok(), "{what}: {ended:?}");
}

/// The error a request on a connection the server sent GOAWAY gets: a GOAWAY from the
/// server, NO_ERROR (a graceful shutdown).
async fn assert_goaway(send: h2::client::SendRequest<Bytes>) {
    let err = match send.ready().await {
        Ok(mut s) => {
            let req = hyper::Request::get("https://a.example/").body(()).unwrap();
            match s.send_request(req, true) {
                Ok((resp, _)) => resp.await.unwrap_err(),
                Err(e) => e,
            }
        }
        Err(e) => e,
    };
    assert!(
        err.is_go_away() && err.is_remote() && err.reason() == Some(h2::Reason::NO_ERROR),
        "{err:?}"
    );
}

const IDLE: Duration = Duration::from_millis(800);

/// An idle HTTP/2 connection is sent GOAWAY (NO_ERROR) and closed after the keep-alive
/// timeout, counted from the end of its last stream.
#[tokio::test]
async fn an_idle_http2_connection_gets_goaway() {
    let w = world();
    let origin = TestOrigin::start(&policy(&w), limits().with_keepalive_timeout(IDLE)).await;
    let a = format!("a.example:{}", origin.addr.port());
    let (mut send, _ping, conn) = raw_h2(&w, origin.addr).await;
    // Busy for longer than the timeout, one stream after another.
    let start = Instant::now();
    while start.elapsed() < IDLE * 2 {
        assert_eq!(raw_get(&mut send, &a).await, 200);
        tokio::time::sleep(IDLE / 4).await;
    }
    assert_eq!(
        send.current_max_send_streams(),
        100,
        "the server's SETTINGS_MAX_CONCURRENT_STREAMS (Http2Limits' default)"
    );
    let idle = Instant::now();
    let ended = tokio::time::timeout(IDLE + Duration::from_secs(5), conn)
        .await
        .expect("closed after the keep-alive timeout")
        .unwrap();
    let after = idle.elapsed();
    assert!(ended.is_ok(), "{ended:?}");
    assert!(after >= IDLE - Duration::from_millis(300), "{after:?}");
    assert_goaway(send).await;
}

/// A client that sends PINGs (answered) but no request is still closed by the idle
/// timer: frames between requests do not keep a connection open.
#[tokio::test]
async fn pings_do_not_keep_an_http2_connection_open() {
    let w = world();
    let origin = TestOrigin::start(&policy(&w), limits().with_keepalive_timeout(IDLE)).await;
    let (send, mut ping, mut conn) = raw_h2(&w, origin.addr).await;
    let start = Instant::now();
    let mut pongs = 0;
    let ended = loop {
        tokio::select! {
            ended = &mut conn => break ended.unwrap(),
            pong = ping.ping(h2::Ping::opaque()) => {
                if pong.is_ok() {
                    pongs += 1;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        assert!(
            start.elapsed() < IDLE + Duration::from_secs(5),
            "still open after {:?} and {pongs} pongs",
            start.elapsed()
        );
    };
    assert!(ended.is_ok(), "{ended:?}");
    assert!(pongs >= 4, "the server answered the pings: {pongs}");
    assert!(start.elapsed() >= IDLE - Duration::from_millis(300));
    assert_goaway(send).await;
}

/// An origin on the glue with a test's own handler (and observer), on 127.0.0.1: what
/// the glue does with a service [`TestOrigin`] does not have (tunnels, streaming bodies).
struct Scratch {
    addr: SocketAddr,
    /// Connections whose handshake passed.
    accepted: Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type BoxBody = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

async fn scratch<F, Fut>(
    spec: &PolicySpec,
    limits: Limits,
    observer: Arc<dyn aop_verify::hyper::Observer>,
    handler: F,
) -> Scratch
where
    F: Fn(hyper::Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = hyper::Response<BoxBody>> + Send + 'static,
{
    let policy = aop_verify::PolicyHandle::load(spec).unwrap();
    let acceptor = aop_verify::Acceptor::new(policy, limits);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let count = accepted.clone();
    let task = tokio::spawn(async move {
        loop {
            let (tcp, peer) = listener.accept().await.unwrap();
            let (acceptor, handler, observer, count) = (
                acceptor.clone(),
                handler.clone(),
                observer.clone(),
                count.clone(),
            );
            tokio::spawn(async move {
                let Ok(conn) = acceptor.accept(tcp, peer).await else {
                    return;
                };
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let service = hyper::service::service_fn(move |req| {
                    let fut = handler(req);
                    async move { Ok::<_, std::convert::Infallible>(fut.await) }
                });
                let _ = aop_verify::hyper::serve_connection_until(
                    conn,
                    service,
                    std::future::pending(),
                    observer,
                )
                .await;
            });
        }
    });
    Scratch {
        addr,
        accepted,
        task,
    }
}

/// Echo what arrives on an upgraded connection until the client closes it.
async fn echo(upgraded: hyper::upgrade::Upgraded) {
    let io = hyper_util::rt::TokioIo::new(upgraded);
    let (mut r, mut w) = tokio::io::split(io);
    let _ = tokio::io::copy(&mut r, &mut w).await;
}

/// A tunnel's handler: `CONNECT` with `:protocol` (HTTP/2) or an `Upgrade` (HTTP/1.1)
/// is answered 200 / 101 and echoed; on a path other than `/nohold` the tunnel holds
/// its connection ([`aop_verify::hyper::InFlight`]) until it ends; on `/stopping` it
/// also ends when the connection is ending ([`aop_verify::hyper::InFlight::stopping`]).
async fn tunnel(mut req: hyper::Request<hyper::body::Incoming>) -> hyper::Response<BoxBody> {
    let hold = req.uri().path() != "/nohold";
    let in_flight = req
        .extensions()
        .get::<aop_verify::hyper::InFlight>()
        .expect("set by the glue")
        .clone();
    let busy = hold.then(|| in_flight.hold());
    let stopping = in_flight.stopping();
    let stops = req.uri().path() == "/stopping";
    let h2 = req.version() == hyper::Version::HTTP_2;
    let protocol = req
        .extensions()
        .get::<hyper::ext::Protocol>()
        .map(|p| p.as_str().to_owned());
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let _busy = busy;
        if let Ok(up) = upgrade.await {
            if stops {
                tokio::select! {
                    () = echo(up) => {}
                    () = stopping => {}
                }
            } else {
                echo(up).await;
            }
        }
    });
    if h2 {
        assert_eq!(req.method(), hyper::Method::CONNECT);
        assert_eq!(protocol.as_deref(), Some("echo"));
        hyper::Response::new(BoxBody::default())
    } else {
        assert_eq!(req.headers()["upgrade"], "echo");
        hyper::Response::builder()
            .status(101)
            .header("connection", "upgrade")
            .header("upgrade", "echo")
            .body(BoxBody::default())
            .unwrap()
    }
}

/// Write `msg` to a tunnel and read its echo.
async fn round_trip<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    io: &mut T,
    msg: &[u8],
) -> std::io::Result<Vec<u8>> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    io.write_all(msg).await?;
    io.flush().await?;
    let mut back = vec![0; msg.len()];
    io.read_exact(&mut back).await?;
    Ok(back)
}

/// An HTTP/2 extended CONNECT (RFC 8441, `Http2Limits::connect_protocol` on) becomes a
/// tunnel; the tunnel that holds its connection's `InFlight` outlives the keep-alive
/// timeout (its stream's response ended at the 200), one that does not is closed with
/// the connection by the idle GOAWAY; once the held tunnel ends, the connection idles
/// out.
#[tokio::test]
async fn an_http2_tunnel_that_holds_its_connection_outlives_the_keepalive_timeout() {
    let w = world();
    let mut limits = limits().with_keepalive_timeout(IDLE);
    limits.http2.connect_protocol = true;
    let origin = scratch(&policy(&w), limits, Arc::new(()), tunnel).await;
    let a = format!("a.example:{}", origin.addr.port());
    let connect = |send: &mut hyper::client::conn::http2::SendRequest<Empty<Bytes>>, path: &str| {
        let mut req = hyper::Request::builder()
            .method(hyper::Method::CONNECT)
            .uri(format!("https://{a}{path}"))
            .body(Empty::new())
            .unwrap();
        req.extensions_mut()
            .insert(hyper::ext::Protocol::from_static("echo"));
        let sent = send.send_request(req);
        async move {
            let resp = sent.await.unwrap();
            assert_eq!(resp.status(), 200);
            hyper_util::rt::TokioIo::new(hyper::upgrade::on(resp).await.unwrap())
        }
    };
    for (path, held) in [("/", true), ("/nohold", false)] {
        let (mut send, conn) = hyper_h2(&w, origin.addr, "a.example").await;
        send.ready().await.unwrap();
        let mut io = connect(&mut send, path).await;
        assert_eq!(round_trip(&mut io, b"hello").await.unwrap(), b"hello");
        // Past the keep-alive timeout and its GOAWAY grace.
        tokio::time::sleep(IDLE * 2 + Duration::from_secs(1)).await;
        let later = round_trip(&mut io, b"still there").await;
        if held {
            assert_eq!(later.unwrap(), b"still there");
            assert!(!conn.is_finished());
            drop(io);
            let ended = tokio::time::timeout(IDLE + Duration::from_secs(5), conn)
                .await
                .expect("the connection idles out once the tunnel ends")
                .unwrap();
            assert!(ended.is_ok(), "{ended:?}");
        } else {
            assert!(
                later.is_err(),
                "the unheld tunnel ended with its connection"
            );
            assert!(conn.is_finished());
        }
    }
}

/// An HTTP/1.1 `Upgrade` answered 101 by the service: the connection's IO is the
/// service's, and echoes.
#[tokio::test]
async fn an_http1_upgrade_is_the_services() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let w = world();
    let origin = scratch(&policy(&w), limits(), Arc::new(()), tunnel).await;
    let tcp = TcpStream::connect(origin.addr).await.unwrap();
    let name = ServerName::try_from("a.example").unwrap();
    let mut io = tls(&w, &[b"http/1.1"]).connect(name, tcp).await.unwrap();
    let head = format!(
        "GET /echo HTTP/1.1\r\nHost: a.example:{}\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n",
        origin.addr.port()
    );
    io.write_all(head.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    while !got.ends_with(b"\r\n\r\n") {
        let mut b = [0; 1];
        io.read_exact(&mut b).await.unwrap();
        got.push(b[0]);
    }
    let got = String::from_utf8(got).unwrap();
    assert!(
        got.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{got}"
    );
    assert!(got.contains("upgrade: echo\r\n"), "{got}");
    for msg in [&b"one"[..], b"two", &[0xff; 40_000]] {
        assert_eq!(round_trip(&mut io, msg).await.unwrap(), msg);
    }
}

/// An HTTP/1.1 Upgrade with `path` on a new connection to `addr`: the tunnel, once
/// `101` has arrived.
async fn h1_tunnel(
    w: &pki::World,
    addr: SocketAddr,
    path: &str,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("a.example").unwrap();
    let mut io = tls(w, &[b"http/1.1"]).connect(name, tcp).await.unwrap();
    let head = format!(
        "GET {path} HTTP/1.1\r\nHost: a.example:{}\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n",
        addr.port()
    );
    io.write_all(head.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    while !got.ends_with(b"\r\n\r\n") {
        let mut b = [0; 1];
        io.read_exact(&mut b).await.unwrap();
        got.push(b[0]);
    }
    assert!(got.starts_with(b"HTTP/1.1 101 "), "{got:?}");
    io
}

/// `aop_verify::serve`'s graceful shutdown and tunnels: tunnels that pass
/// `InFlight::stopping` as their stop signal (an HTTP/1.1 Upgrade, an HTTP/2 extended
/// CONNECT) end when the signal comes; a tunnel that holds its connection and ignores
/// it still echoes after the signal, and the server waits for it — until the
/// keep-alive timeout after the signal, when it resolves.
#[tokio::test]
async fn a_graceful_shutdown_stops_tunnels_and_waits_for_holds_bounded() {
    let w = world();
    let mut limits = limits().with_keepalive_timeout(IDLE * 2);
    limits.http2.connect_protocol = true;
    let acceptor =
        aop_verify::Acceptor::new(aop_verify::PolicyHandle::load(&policy(&w)).unwrap(), limits);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service =
        tower::service_fn(|req| async { Ok::<_, std::convert::Infallible>(tunnel(req).await) });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        aop_verify::serve(listener, acceptor, service)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .into_future(),
    );
    let mut h1_stops = h1_tunnel(&w, addr, "/stopping").await;
    let mut h1_stubborn = h1_tunnel(&w, addr, "/").await;
    let (mut send, h2_conn) = hyper_h2(&w, addr, "a.example").await;
    send.ready().await.unwrap();
    let mut req = hyper::Request::builder()
        .method(hyper::Method::CONNECT)
        .uri(format!("https://a.example:{}/stopping", addr.port()))
        .body(Empty::new())
        .unwrap();
    req.extensions_mut()
        .insert(hyper::ext::Protocol::from_static("echo"));
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut h2_stops = hyper_util::rt::TokioIo::new(hyper::upgrade::on(resp).await.unwrap());
    for io in [&mut h1_stops, &mut h1_stubborn] {
        assert_eq!(round_trip(io, b"before").await.unwrap(), b"before");
    }
    assert_eq!(
        round_trip(&mut h2_stops, b"before").await.unwrap(),
        b"before"
    );
    let signal = Instant::now();
    stop.send(()).unwrap();
    // The tunnels that stop: closed (an error, or the end of the stream).
    let closed = |r: std::io::Result<Vec<u8>>| r.is_err();
    assert!(
        closed(round_trip(&mut h1_stops, b"after").await),
        "the HTTP/1.1 tunnel stopped"
    );
    assert!(
        closed(round_trip(&mut h2_stops, b"after").await),
        "the HTTP/2 tunnel stopped"
    );
    // The one that does not still echoes, and the server waits.
    assert_eq!(
        round_trip(&mut h1_stubborn, b"after").await.unwrap(),
        b"after"
    );
    assert!(
        !server.is_finished(),
        "the server waits for the held tunnel"
    );
    ends_cleanly(
        server,
        "the server resolves after the keep-alive timeout at most",
    )
    .await;
    assert!(signal.elapsed() >= IDLE, "{:?}", signal.elapsed());
    let h2_ended = tokio::time::timeout(Duration::from_secs(5), h2_conn)
        .await
        .expect("the HTTP/2 connection ended")
        .unwrap();
    assert!(h2_ended.is_ok(), "{h2_ended:?}");
}

/// Port 0 in a Host is 400 on HTTP/1.1 too, and closes the connection.
#[tokio::test]
async fn port_zero_is_a_bad_request_on_http1() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let w = world();
    let origin = TestOrigin::start(&policy(&w), limits()).await;
    for host in ["a.example:0", "a.example:00000"] {
        let tcp = TcpStream::connect(origin.addr).await.unwrap();
        let name = ServerName::try_from("a.example").unwrap();
        let mut io = tls(&w, &[b"http/1.1"]).connect(name, tcp).await.unwrap();
        io.write_all(format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut got = String::new();
        io.read_to_string(&mut got).await.unwrap();
        assert!(got.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{got}");
        assert!(got.contains("connection: close\r\n"), "{got}");
    }
}

/// What the glue told a test's observer.
#[derive(Default)]
struct Seen {
    stalled: std::sync::atomic::AtomicU64,
    goaway: std::sync::Mutex<Vec<aop_verify::hyper::GoAway>>,
}

impl Seen {
    fn goaways(&self) -> Vec<aop_verify::hyper::GoAway> {
        self.goaway.lock().unwrap().clone()
    }
}

impl aop_verify::hyper::Observer for Seen {
    fn stream_stalled(&self) {
        self.stalled
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    fn goaway(&self, why: aop_verify::hyper::GoAway) {
        self.goaway.lock().unwrap().push(why);
    }
}

/// A response body: `chunks` data frames of `chunk`, each after `pause` (none: at once),
/// then the end; sets `dropped` when dropped.
struct Paced {
    chunk: Bytes,
    chunks: usize,
    pause: Option<Duration>,
    sleep: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    dropped: Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for Paced {
    fn drop(&mut self) {
        self.dropped
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl hyper::body::Body for Paced {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        if self.chunks == 0 {
            return std::task::Poll::Ready(None);
        }
        if let Some(pause) = self.pause {
            let sleep = self
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(pause)));
            std::task::ready!(sleep.as_mut().poll(cx));
            self.sleep = None;
        }
        self.chunks -= 1;
        std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(self.chunk.clone()))))
    }
}

/// An `h2` client connection whose streams may receive only `window` bytes before it
/// sends WINDOW_UPDATE (which it does only as a test releases what it read).
async fn raw_h2_window(
    w: &pki::World,
    addr: SocketAddr,
    window: u32,
) -> (
    h2::client::SendRequest<Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let tls = h2_tls(w, addr, "a.example").await;
    let (send, conn) = h2::client::Builder::new()
        .initial_window_size(window)
        .handshake(tls)
        .await
        .unwrap();
    (send, tokio::spawn(conn))
}

/// Send `GET https://AUTHORITY/PATH` on an `h2` connection: the response's head.
async fn raw_send(
    send: &mut h2::client::SendRequest<Bytes>,
    authority: &str,
    path: &str,
) -> hyper::Response<h2::RecvStream> {
    let req = hyper::Request::get(format!("https://{authority}{path}"))
        .body(())
        .unwrap();
    let mut ready = send.clone().ready().await.unwrap();
    let (resp, _) = ready.send_request(req, true).unwrap();
    resp.await.unwrap()
}

/// Read a body to its end, releasing flow-control credit as it goes.
async fn read_all(mut body: h2::RecvStream) -> Result<Vec<u8>, h2::Error> {
    let mut all = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        body.flow_control().release_capacity(chunk.len()).unwrap();
        all.extend_from_slice(&chunk);
    }
    Ok(all)
}

/// A client that withholds flow-control credit from one stream (its window: 5 bytes,
/// never updated) has that stream reset (RST_STREAM CANCEL) `send_timeout` after the
/// response stalled, and the response body is dropped; a response whose body is slow to
/// come (polled, nothing yet, for three times `send_timeout`) is not; other streams on
/// the same connection complete, before and after the reset.
#[tokio::test]
async fn a_stream_stalled_by_withheld_credit_is_reset_after_the_send_timeout() {
    use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
    const SEND: Duration = Duration::from_secs(1);
    let w = world();
    let stalled_dropped = Arc::new(AtomicBool::new(false));
    let slow_dropped = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Seen::default());
    let (d1, d2) = (stalled_dropped.clone(), slow_dropped.clone());
    let handler = move |req: hyper::Request<hyper::body::Incoming>| {
        let (d1, d2) = (d1.clone(), d2.clone());
        async move {
            let body = match req.uri().path() {
                // Far more than the window: stalls on its first chunk.
                "/big" => Paced {
                    chunk: Bytes::from(vec![b'x'; 16 * 1024]),
                    chunks: 1000,
                    pause: None,
                    sleep: None,
                    dropped: d1,
                },
                // Within the window, but slow: 2 bytes every 3 send timeouts.
                "/slow" => Paced {
                    chunk: Bytes::from_static(b"ab"),
                    chunks: 2,
                    pause: Some(SEND * 3 / 2),
                    sleep: None,
                    dropped: d2,
                },
                _ => Paced {
                    chunk: Bytes::from_static(b"ok"),
                    chunks: 1,
                    pause: None,
                    sleep: None,
                    dropped: Arc::default(),
                },
            };
            hyper::Response::new(body.boxed())
        }
    };
    let origin = scratch(
        &policy(&w),
        limits().with_send_timeout(SEND),
        seen.clone(),
        handler,
    )
    .await;
    let a = format!("a.example:{}", origin.addr.port());
    let (mut send, conn) = raw_h2_window(&w, origin.addr, 5).await;
    let big = raw_send(&mut send, &a, "/big").await;
    assert_eq!(big.status(), 200);
    let slow = raw_send(&mut send, &a, "/slow").await;
    let slow = tokio::spawn(read_all(slow.into_body()));
    assert_eq!(
        read_all(raw_send(&mut send, &a, "/").await.into_body())
            .await
            .unwrap(),
        b"ok"
    );
    // The big stream's body is never read: its window stays shut.
    let mut big = big.into_body();
    let first = big.data().await.unwrap().unwrap();
    assert_eq!(first.len(), 5, "the window's worth");
    let err = tokio::time::timeout(SEND * 10, big.data())
        .await
        .expect("the stalled stream is reset")
        .unwrap()
        .unwrap_err();
    assert_eq!(err.reason(), Some(h2::Reason::CANCEL), "{err:?}");
    assert!(err.is_remote() && err.is_reset(), "{err:?}");
    aop_e2e::wait_until_async("the stalled body dropped", SEND * 5, || {
        stalled_dropped.load(SeqCst).then_some(())
    })
    .await;
    assert_eq!(seen.stalled.load(SeqCst), 1);
    assert_eq!(
        slow.await.unwrap().unwrap(),
        b"abab",
        "the slow body is whole"
    );
    assert!(slow_dropped.load(SeqCst));
    assert_eq!(
        seen.stalled.load(SeqCst),
        1,
        "the slow body was not stalled"
    );
    assert_eq!(
        read_all(raw_send(&mut send, &a, "/").await.into_body())
            .await
            .unwrap(),
        b"ok",
        "the connection still serves"
    );
    assert!(!conn.is_finished());
}

/// How long [`counting`]'s `/slow` takes.
const SLOW: Duration = Duration::from_secs(2);

/// A handler that counts its calls and answers `/endless` with a body that never ends
/// (its first chunk at once), `/slow` with `slow` four times over [`SLOW`], `/onebig`
/// with 1 MiB of `x` in one chunk, anything else with `ok`.
fn counting(
    calls: Arc<std::sync::atomic::AtomicU64>,
) -> impl Fn(hyper::Request<hyper::body::Incoming>) -> std::future::Ready<hyper::Response<BoxBody>>
+ Clone
+ Send
+ Sync
+ 'static {
    move |req| {
        calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let (chunk, chunks, pause) = match req.uri().path() {
            "/endless" => (Bytes::from(vec![b'x'; 1024]), usize::MAX, None),
            // Two seconds in four pieces.
            "/slow" => (Bytes::from_static(b"slow"), 4, Some(SLOW / 4)),
            // 1 MiB in one chunk (as `http_body_util::Full` gives it).
            "/onebig" => (Bytes::from(vec![b'x'; 1 << 20]), 1, None),
            _ => (Bytes::from_static(b"ok"), 1, None),
        };
        if req.uri().path() == "/gated" {
            return std::future::ready(hyper::Response::new(Gated::default().boxed()));
        }
        std::future::ready(hyper::Response::new(
            Paced {
                chunk,
                chunks,
                pause,
                sleep: None,
                dropped: Arc::default(),
            }
            .boxed(),
        ))
    }
}

/// Opened by a test when `/gated` bodies may end (one permit a body). Only
/// `a_slow_response_in_flight_outlives_a_reset_storm` asks for `/gated`.
static GATE: std::sync::LazyLock<tokio::sync::Semaphore> =
    std::sync::LazyLock::new(|| tokio::sync::Semaphore::new(0));

/// `counting`'s `/gated` body: `gated`, once [`GATE`] gives it a permit. A response
/// that stays in flight for as long as a test needs, whatever the machine's speed.
#[derive(Default)]
struct Gated {
    wait: Option<std::pin::Pin<Box<dyn Future<Output = ()> + Send + Sync>>>,
    sent: bool,
}

impl hyper::body::Body for Gated {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        if self.sent {
            return std::task::Poll::Ready(None);
        }
        let wait = self.wait.get_or_insert_with(|| {
            Box::pin(async {
                GATE.acquire().await.expect("never closed").forget();
            })
        });
        std::task::ready!(wait.as_mut().poll(cx));
        self.sent = true;
        std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(Bytes::from_static(
            b"gated",
        )))))
    }
}

/// A scratch origin with [`counting`]'s handler: the origin, its call count and what
/// its observer saw.
async fn counted(
    w: &pki::World,
    limits: Limits,
) -> (Scratch, Arc<std::sync::atomic::AtomicU64>, Arc<Seen>) {
    let calls = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let seen = Arc::new(Seen::default());
    let origin = scratch(&policy(w), limits, seen.clone(), counting(calls.clone())).await;
    (origin, calls, seen)
}

/// 1001 requests one after another on one HTTP/2 connection: the first 1000
/// (`max_requests_per_connection`) are served whole, then the connection ends by
/// GOAWAY (NO_ERROR); the 1001st never reaches the service.
#[tokio::test]
async fn an_http2_connection_ends_by_goaway_after_max_requests() {
    use std::sync::atomic::Ordering::SeqCst;
    let w = world();
    let (origin, calls, seen) = counted(&w, limits()).await;
    let a = format!("a.example:{}", origin.addr.port());
    let (mut send, _, conn) = raw_h2(&w, origin.addr).await;
    for i in 0..1000 {
        let resp = raw_send(&mut send, &a, "/").await;
        assert_eq!(resp.status(), 200, "request {i}");
        assert_eq!(
            read_all(resp.into_body()).await.unwrap(),
            b"ok",
            "request {i}"
        );
    }
    // The 1001st: refused by the client's h2 (GOAWAY seen) or, sent before it arrived,
    // answered 421 by the glue.
    let last = match send.clone().ready().await {
        Ok(mut ready) => {
            let req = hyper::Request::get(format!("https://{a}/"))
                .body(())
                .unwrap();
            match ready.send_request(req, true) {
                Ok((resp, _)) => resp.await.map(|r| r.status().as_u16()),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    };
    match last {
        Ok(status) => assert_eq!(status, 421),
        Err(e) => assert!(
            e.is_go_away() && e.reason() == Some(h2::Reason::NO_ERROR),
            "{e:?}"
        ),
    }
    ends_cleanly(conn, "the connection ends after its GOAWAY").await;
    assert_eq!(calls.load(SeqCst), 1000);
    assert_eq!(seen.goaways(), [aop_verify::hyper::GoAway::MaxRequests]);
}

/// On HTTP/1.1 the last request's response (`max_requests_per_connection` = 3) says
/// `Connection: close` and the connection closes: of 4 pipelined requests, 3 answers.
#[tokio::test]
async fn an_http1_connection_closes_after_max_requests() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let w = world();
    let (origin, calls, seen) = counted(&w, limits().with_max_requests_per_connection(3)).await;
    let tcp = TcpStream::connect(origin.addr).await.unwrap();
    let name = ServerName::try_from("a.example").unwrap();
    let mut io = tls(&w, &[b"http/1.1"]).connect(name, tcp).await.unwrap();
    let req = format!(
        "GET / HTTP/1.1\r\nHost: a.example:{}\r\n\r\n",
        origin.addr.port()
    );
    io.write_all(req.repeat(4).as_bytes()).await.unwrap();
    let mut got = String::new();
    io.read_to_string(&mut got).await.unwrap();
    assert_eq!(got.matches("HTTP/1.1 200 OK\r\n").count(), 3, "{got}");
    assert_eq!(got.matches("connection: close\r\n").count(), 1, "{got}");
    let last = got.rsplit("HTTP/1.1 200 OK\r\n").next().unwrap();
    assert!(
        last.contains("connection: close\r\n") && last.ends_with("\r\n\r\n2\r\nok\r\n0\r\n\r\n"),
        "the last response whole: {got}"
    );
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 3);
    assert_eq!(seen.goaways(), [aop_verify::hyper::GoAway::MaxRequests]);
}

/// A client that opens stream after stream and resets each once its response has
/// begun (RST_STREAM CANCEL) is sent GOAWAY and closed after `max_abandoned_streams`
/// (100) such streams: the service was called at most that many times plus the streams
/// in flight; a well-behaved connection beside it is served throughout.
#[tokio::test]
async fn a_reset_storm_ends_the_connection_and_no_other() {
    use std::sync::atomic::Ordering::SeqCst;
    let w = world();
    let (origin, calls, seen) = counted(&w, limits()).await;
    let a = format!("a.example:{}", origin.addr.port());
    let (mut good, good_conn) = hyper_h2(&w, origin.addr, "a.example").await;
    assert_eq!(get(&mut good, &a, None).await.unwrap().0, 200);
    let (send, _, storm_conn) = raw_h2(&w, origin.addr).await;
    let mut sent = 0;
    let err = loop {
        assert!(
            sent < 1000,
            "the connection is still open after {sent} resets"
        );
        let mut ready = match send.clone().ready().await {
            Ok(r) => r,
            Err(e) => break e,
        };
        let req = hyper::Request::get(format!("https://{a}/endless"))
            .body(())
            .unwrap();
        let (resp, mut stream) = match ready.send_request(req, false) {
            Ok(r) => r,
            Err(e) => break e,
        };
        sent += 1;
        match resp.await {
            Ok(resp) => {
                stream.send_reset(h2::Reason::CANCEL);
                drop(resp);
            }
            Err(e) => break e,
        }
    };
    assert!(err.is_go_away() || err.is_io(), "{err:?}");
    let ended = tokio::time::timeout(Duration::from_secs(10), storm_conn)
        .await
        .expect("the storm's connection is closed")
        .unwrap();
    let limits = limits();
    let bound =
        limits.http2.max_abandoned_streams as u64 + u64::from(limits.http2.max_concurrent_streams);
    let served = calls.load(SeqCst) - 1; // the good connection's GET
    assert!(
        (101..=bound).contains(&served),
        "{served} service calls for {sent} streams ({ended:?})"
    );
    assert_eq!(seen.goaways(), [aop_verify::hyper::GoAway::ResetStorm]);
    assert_eq!(
        get(&mut good, &a, None).await.unwrap().0,
        200,
        "the other connection"
    );
    assert!(!good_conn.is_finished());
}

/// The rapid-reset pattern (CVE-2023-44487): bursts of 50 streams, each reset as soon as
/// it is sent. The connection ends (the glue's GOAWAY, or — as it happens here, after
/// about 200 streams, none of which reached the service — h2's own limit on streams
/// reset before they were accepted) with the service called at most
/// `max_abandoned_streams` plus `max_concurrent_streams` times.
#[tokio::test]
async fn rapid_resets_end_the_connection_with_bounded_service_calls() {
    use std::sync::atomic::Ordering::SeqCst;
    let w = world();
    let (origin, calls, seen) = counted(&w, limits()).await;
    let a = format!("a.example:{}", origin.addr.port());
    let (send, _, mut conn) = raw_h2(&w, origin.addr).await;
    let mut sent = 0;
    let ended = 'storm: loop {
        assert!(sent < 100_000, "still open after {sent} streams");
        for _ in 0..50 {
            let Ok(mut ready) = send.clone().ready().await else {
                break 'storm (&mut conn).await.unwrap();
            };
            let req = hyper::Request::get(format!("https://{a}/endless"))
                .body(())
                .unwrap();
            let Ok((_, mut stream)) = ready.send_request(req, false) else {
                break 'storm (&mut conn).await.unwrap();
            };
            stream.send_reset(h2::Reason::CANCEL);
            sent += 1;
        }
        tokio::task::yield_now().await;
        if conn.is_finished() {
            break (&mut conn).await.unwrap();
        }
    };
    let limits = limits();
    let bound =
        limits.http2.max_abandoned_streams as u64 + u64::from(limits.http2.max_concurrent_streams);
    let served = calls.load(SeqCst);
    assert!(
        served <= bound,
        "{served} service calls for {sent} streams ({ended:?}, {:?})",
        seen.goaways()
    );
}

/// A GET of `path` on an `h2` connection that is reset (RST_STREAM CANCEL) once its
/// response has begun: its status; `Err` if the connection refused it.
async fn reset_after_head(
    send: &h2::client::SendRequest<Bytes>,
    authority: &str,
    path: &str,
) -> Result<u16, h2::Error> {
    let req = hyper::Request::get(format!("https://{authority}{path}"))
        .body(())
        .unwrap();
    let mut ready = send.clone().ready().await?;
    let (resp, mut stream) = ready.send_request(req, false)?;
    let resp = resp.await?;
    stream.send_reset(h2::Reason::CANCEL);
    Ok(resp.status().as_u16())
}

/// An edge's connection carries many visitors' requests, and some visitors cancel: of
/// 1000 streams (`max_requests_per_connection`), 20 at a time, one in seven (143, more
/// than `max_abandoned_streams`) is reset once its response has begun, interleaved with
/// completed ones. No reset-storm GOAWAY: every completed response is whole, and the
/// connection ends by the request cap only.
#[tokio::test]
async fn cancelled_streams_among_completed_ones_are_no_reset_storm() {
    use std::sync::atomic::Ordering::SeqCst;
    let w = world();
    let (origin, calls, seen) = counted(&w, limits()).await;
    let a = format!("a.example:{}", origin.addr.port());
    let (send, _, conn) = raw_h2(&w, origin.addr).await;
    let (mut whole, mut reset) = (0, 0);
    for batch in 0..50 {
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..20 {
            let (send, a) = (send.clone(), a.clone());
            let cancel = (batch * 20 + i) % 7 == 3;
            tasks.spawn(async move {
                if cancel {
                    let status = reset_after_head(&send, &a, "/endless").await.unwrap();
                    assert_eq!(status, 200);
                    return false;
                }
                let mut send = send;
                let resp = raw_send(&mut send, &a, "/").await;
                assert_eq!(resp.status(), 200);
                assert_eq!(read_all(resp.into_body()).await.unwrap(), b"ok");
                true
            });
        }
        while let Some(done) = tasks.join_next().await {
            if done.unwrap() {
                whole += 1;
            } else {
                reset += 1;
            }
        }
    }
    assert_eq!((whole, reset), (857, 143));
    assert_eq!(calls.load(SeqCst), 1000);
    ends_cleanly(conn, "the connection ends after the request cap's GOAWAY").await;
    assert_eq!(seen.goaways(), [aop_verify::hyper::GoAway::MaxRequests]);
}

/// During a reset storm, a response already in flight on the same connection (its body
/// held until after the storm's GOAWAY, longer than the second the glue once gave)
/// completes whole: the storm's GOAWAY stops new streams, not those in flight.
#[tokio::test]
async fn a_slow_response_in_flight_outlives_a_reset_storm() {
    let w = world();
    let (origin, _calls, seen) = counted(&w, limits()).await;
    let a = format!("a.example:{}", origin.addr.port());
    let (mut send, _, conn) = raw_h2(&w, origin.addr).await;
    // In flight until the test opens the gate, after the storm's GOAWAY.
    let slow = raw_send(&mut send, &a, "/gated").await;
    assert_eq!(slow.status(), 200);
    let slow = tokio::spawn(read_all(slow.into_body()));
    // Until the GOAWAY (a stream sent after it would wait for the connection's end).
    let mut resets = 0;
    while seen.goaways().is_empty() {
        // 421: opened after the GOAWAY was decided.
        let status = reset_after_head(&send, &a, "/endless").await.unwrap();
        assert!(status == 200 || status == 421, "{status}");
        resets += 1;
        assert!(resets < 1000, "no GOAWAY after {resets} resets");
    }
    assert_eq!(seen.goaways(), [aop_verify::hyper::GoAway::ResetStorm]);
    assert!(
        !slow.is_finished(),
        "the gated body ended before its gate opened"
    );
    // Held past the second a storm's connection was once given (the scenario, not a
    // wait for a condition), then let go.
    tokio::time::sleep(SLOW).await;
    assert!(
        !slow.is_finished(),
        "the gated body ended before its gate opened"
    );
    GATE.add_permits(1);
    assert_eq!(slow.await.unwrap().unwrap(), b"gated");
    ends_cleanly(conn, "the storm's connection ends once its streams have").await;
}

/// A client that keeps 64 streams in flight across the request cap (1000): a stream it
/// sent before it saw the GOAWAY is served (200, whole), never answered 421; what it
/// sent after is refused by its own h2 (a GOAWAY error, NO_ERROR) — the retryable error
/// a client expects — and never reaches the service.
#[tokio::test]
async fn streams_sent_before_the_request_caps_goaway_are_served() {
    use std::sync::atomic::Ordering::SeqCst;
    let w = world();
    let (origin, calls, seen) = counted(&w, limits()).await;
    let a = format!("a.example:{}", origin.addr.port());
    let (send, _, conn) = raw_h2(&w, origin.addr).await;
    let mut tasks = tokio::task::JoinSet::new();
    let (mut ok, mut refused, mut sent) = (0u64, 0u64, 0u64);
    let outcome = |send: h2::client::SendRequest<Bytes>, a: String| async move {
        let req = hyper::Request::get(format!("https://{a}/"))
            .body(())
            .unwrap();
        let mut ready = send.ready().await?;
        let (resp, _) = ready.send_request(req, true)?;
        let resp = resp.await?;
        let status = resp.status().as_u16();
        assert_eq!(status, 200, "a stream sent before the GOAWAY was seen");
        assert_eq!(read_all(resp.into_body()).await?, b"ok");
        Ok::<u16, h2::Error>(status)
    };
    loop {
        while tasks.len() < 64 && sent < 1200 {
            tasks.spawn(outcome(send.clone(), a.clone()));
            sent += 1;
        }
        let Some(done) = tasks.join_next().await else {
            break;
        };
        match done.unwrap() {
            Ok(_) => ok += 1,
            Err(e) => {
                assert!(
                    e.is_go_away() && e.reason() == Some(h2::Reason::NO_ERROR),
                    "{e:?}"
                );
                refused += 1;
            }
        }
    }
    assert_eq!(ok + refused, 1200);
    assert!(ok >= 1000, "{ok} served, {refused} refused");
    assert_eq!(
        calls.load(SeqCst),
        ok,
        "every stream that reached the service"
    );
    ends_cleanly(conn, "the connection ends after its GOAWAY").await;
    assert_eq!(seen.goaways(), [aop_verify::hyper::GoAway::MaxRequests]);
}

/// A 1 MiB response body in one chunk, read slowly (a 32 KiB window, credit given
/// back 40 ms after each frame: about 2.5 s, past the keep-alive timeout and its
/// GOAWAY grace) arrives whole: the connection is not idle while h2 still has it to
/// send. A client that stops giving credit after 100 KiB of the same body has that
/// stream reset by the send timer and the connection closed by the idle GOAWAY.
#[tokio::test]
async fn a_big_chunk_read_slowly_arrives_whole_and_a_stopped_reader_is_closed() {
    use std::sync::atomic::Ordering::SeqCst;
    let w = world();
    let (origin, _calls, seen) = counted(
        &w,
        limits()
            .with_keepalive_timeout(IDLE)
            .with_send_timeout(IDLE),
    )
    .await;
    let a = format!("a.example:{}", origin.addr.port());
    let (mut send, conn) = raw_h2_window(&w, origin.addr, 32 * 1024).await;
    let start = Instant::now();
    let mut body = raw_send(&mut send, &a, "/onebig").await.into_body();
    let mut got = 0;
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        assert!(chunk.iter().all(|b| *b == b'x'));
        got += chunk.len();
        tokio::time::sleep(Duration::from_millis(40)).await;
        body.flow_control().release_capacity(chunk.len()).unwrap();
    }
    assert_eq!(got, 1 << 20);
    assert!(
        start.elapsed() > IDLE + Duration::from_secs(1),
        "read slowly"
    );
    assert!(seen.goaways().is_empty(), "{:?}", seen.goaways());
    // Stop giving credit after 100 KiB: the stream is reset, the connection idles out.
    let mut body = raw_send(&mut send, &a, "/onebig").await.into_body();
    let mut got = 0;
    let err = loop {
        match body.data().await.unwrap() {
            Ok(chunk) => {
                got += chunk.len();
                if got < 100 * 1024 {
                    body.flow_control().release_capacity(chunk.len()).unwrap();
                }
            }
            Err(e) => break e,
        }
    };
    assert_eq!(err.reason(), Some(h2::Reason::CANCEL), "{err:?}");
    ends_cleanly(
        conn,
        "closed after the stream's reset and the keep-alive timeout",
    )
    .await;
    assert_eq!(seen.stalled.load(SeqCst), 1);
    assert_eq!(seen.goaways(), [aop_verify::hyper::GoAway::Idle]);
}

/// A plain CONNECT (no `:protocol`) is answered 405 without reaching the service, on
/// HTTP/2 (extended CONNECT on or off) and on HTTP/1.1 (and the connection closes);
/// with `Limits::plain_connect` on, it reaches the service.
#[tokio::test]
async fn a_plain_connect_is_405_unless_the_application_opts_in() {
    use std::sync::atomic::Ordering::SeqCst;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let w = world();
    let plain = |send: h2::client::SendRequest<Bytes>, authority: String| async move {
        let req = hyper::Request::builder()
            .method(hyper::Method::CONNECT)
            .uri(authority)
            .body(())
            .unwrap();
        let mut ready = send.ready().await.unwrap();
        let (resp, _) = ready.send_request(req, false).unwrap();
        resp.await.unwrap().status().as_u16()
    };
    for (connect_protocol, opt_in) in [(false, false), (true, false), (false, true)] {
        let mut limits = limits().with_plain_connect(opt_in);
        limits.http2.connect_protocol = connect_protocol;
        let (origin, calls, _) = counted(&w, limits).await;
        let a = format!("a.example:{}", origin.addr.port());
        let (send, _, _conn) = raw_h2(&w, origin.addr).await;
        let status = plain(send, a.clone()).await;
        if opt_in {
            assert_eq!((status, calls.load(SeqCst)), (200, 1));
            continue;
        }
        assert_eq!(status, 405, "HTTP/2, connect_protocol {connect_protocol}");
        let tcp = TcpStream::connect(origin.addr).await.unwrap();
        let name = ServerName::try_from("a.example").unwrap();
        let mut io = tls(&w, &[b"http/1.1"]).connect(name, tcp).await.unwrap();
        io.write_all(format!("CONNECT {a} HTTP/1.1\r\nHost: {a}\r\n\r\n").as_bytes())
            .await
            .unwrap();
        // Closed after the answer (hyper does without close_notify after a CONNECT).
        let mut got = Vec::new();
        let _ = io.read_to_end(&mut got).await;
        let got = String::from_utf8(got).unwrap();
        assert!(
            got.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
            "{got}"
        );
        assert!(got.contains("connection: close\r\n"), "{got}");
        assert_eq!(calls.load(SeqCst), 0);
    }
}

/// The process's resident set size, in KiB.
fn vm_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A measurement, not a check (`cargo test --test http2 -- --ignored --nocapture
/// rss`): the resident memory 1000 idle connections add, HTTP/1.1 then HTTP/2, each
/// a completed handshake on the glue with the client's TLS stream in this process too
/// (the same for both); an HTTP/2 client sends its preface and SETTINGS and reads the
/// server's, then both wait. `AOP_RSS_H2_FIRST=1` measures HTTP/2 first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run with --ignored --nocapture"]
async fn rss_of_idle_connections() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    const N: u64 = 1000;
    let w = world();
    let origin = scratch(
        &policy(&w),
        limits(),
        Arc::new(()),
        counting(Arc::default()),
    )
    .await;
    let mut report = Vec::new();
    let mut kinds = [(&b"http/1.1"[..], "HTTP/1.1"), (b"h2", "HTTP/2")];
    if std::env::var_os("AOP_RSS_H2_FIRST").is_some() {
        kinds.reverse();
    }
    // Every connection is held to the end, so that one kind's freed memory does not
    // serve the other's.
    let mut hold = Vec::new();
    for (alpn, label) in kinds {
        let connector = tls(&w, &[alpn]);
        let open = || async {
            let tcp = TcpStream::connect(origin.addr).await.unwrap();
            let name = ServerName::try_from("a.example").unwrap();
            let mut io = connector.connect(name, tcp).await.unwrap();
            if alpn == b"h2" {
                io.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
                    .await
                    .unwrap();
                let mut head = [0; 9];
                io.read_exact(&mut head).await.unwrap();
                assert_eq!(head[3], 4, "the server's SETTINGS");
            }
            io
        };
        // Warm up (allocator arenas, session caches), then measure.
        let warm: Vec<_> = open_many(&open, 50).await;
        drop(warm);
        let before = vm_rss_kib();
        let accepted = origin.accepted.load(std::sync::atomic::Ordering::SeqCst);
        let held = open_many(&open, N).await;
        aop_e2e::wait_until_async("all accepted", Duration::from_secs(60), || {
            (origin.accepted.load(std::sync::atomic::Ordering::SeqCst) >= accepted + N)
                .then_some(())
        })
        .await;
        let after = vm_rss_kib();
        report.push(format!(
            "{label}: {N} idle connections add {} KiB: {:.1} KiB each",
            after - before,
            (after - before) as f64 / N as f64
        ));
        hold.push(held);
    }
    eprintln!("{}", report.join("\n"));
}

/// `n` results of `open`, one after another.
async fn open_many<F, Fut, T>(open: &F, n: u64) -> Vec<T>
where
    F: Fn() -> Fut,
    Fut: Future<Output = T>,
{
    let mut all = Vec::new();
    for _ in 0..n {
        all.push(open().await);
    }
    all
}
