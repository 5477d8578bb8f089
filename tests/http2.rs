//! HTTP/2 on aop-verify's hyper glue, over real TLS on loopback: an origin built on the
//! glue (aop_e2e::origin::TestOrigin) with curl, a rustls + hyper HTTP/2 client and an
//! `h2` client (to see GOAWAY and PING frame by frame) as the edge. What belongs here:
//! the protocol ALPN chooses, the `:authority` / Host rules, the re-check after a reload
//! and the timers as they apply to HTTP/2 streams. (That the guard still speaks HTTP/1.1
//! to an HTTP/2 client is in tests/origin.rs, with curl through the guard.)

#![allow(clippy::unwrap_used)] // a test: panics are failures

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
    .with_http2()
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
        .reload(&PolicySpec::new(vec![rule(&w, "a", "a.example", &next_ca)]).with_http2())
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
        PolicySpec::new(vec![r]).with_http2()
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
