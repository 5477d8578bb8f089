//! Request framing the client breaks (bad chunked encoding, a transfer coding the guard
//! would silently drop, a body that stalls) is the client's error — 400, 501, 408 — and
//! is never blamed on the upstream; and a kept-alive connection on an `optional` site
//! carries the verdict of the policy in force after a reload, not the one it was
//! accepted under.

use std::time::Duration;

use aop_e2e::guard::{Certs, Guard, client_config, connect, round_trip};
use aop_e2e::upstream::{Echo, header};
use aop_e2e::{metric, pki};
use tokio::io::AsyncWriteExt as _;

const POLICY: &str = "header_read_timeout_secs = 2\nrequest_body_timeout_secs = 1\n";

fn site(upstream: std::net::SocketAddr, trust: &str, mode: &str) -> String {
    format!(
        "\n[[site]]\nhostnames = [\"a.test\"]\ncert = \"origin-ca/origin/cert.pem\"\nkey = \"origin-ca/origin/key.pem\"\n\
         trust = [\"{trust}\"]\nmode = \"{mode}\"\nupstream = \"http://{upstream}\"\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_request_bodies_are_the_clients_fault_not_the_upstreams() {
    let (certs, _echo, guard) = super::guarded(&["a.test"], |up| {
        format!("{POLICY}{}", site(up, "edge-ca/ca.pem", "require"))
    })
    .await;
    let config = client_config(&certs.origin_ca.pem(), Some(&certs.edge));
    let fresh = || connect(guard.addr(), "a.test", true, &config);

    // The control: a well-formed chunked body reaches the upstream whole.
    let mut tls = fresh().await.unwrap();
    let r = round_trip(
        &mut tls,
        b"POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(header(r.body(), "x-echo-body-bytes").as_deref(), Some("5"));

    // Malformed chunk sizes: 400, counted as the client's error.
    for body in [
        "zz\r\nhello\r\n0\r\n\r\n",
        "5\r\nhelloXX0\r\n\r\n",
        "ffffffffffffffffff\r\n",
    ] {
        let mut tls = fresh().await.unwrap();
        let req =
            format!("POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n{body}");
        let r = round_trip(&mut tls, req.as_bytes()).await;
        let status = r.as_ref().map_or(0, |r| r.status);
        assert_eq!(status, 400, "body {body:?}: {r:?}");
    }
    // A transfer coding before chunked would be dropped on the way: refused.
    let mut tls = fresh().await.unwrap();
    let r = round_trip(
        &mut tls,
        b"POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 501, "{}", r.text);
    // A body that stops arriving: 408 once request_body_timeout_secs passes.
    let mut tls = fresh().await.unwrap();
    let r = round_trip(
        &mut tls,
        b"POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 100\r\n\r\nonly ten b",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 408, "{}", r.text);

    let m = guard.metrics_text();
    for (series, want) in [
        ("aop_upstream_errors_total{site=\"a.test\"}", 0),
        ("aop_client_errors_total{site=\"a.test\"}", 5),
        ("aop_requests_total{site=\"a.test\",status=\"400\"}", 3),
    ] {
        assert_eq!(metric(&m, series), Some(want), "{series}:\n{m}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_optional_sites_kept_alive_connection_carries_the_reloaded_verdict() {
    let Certs {
        dir,
        origin_ca,
        edge,
    } = Certs::new(&["a.test"]);
    let d = dir.path();
    pki::ca(d, "other-ca");
    let echo = Echo::start().await;
    let guard = Guard::start(d, &site(echo.addr, "edge-ca/ca.pem", "optional"));
    let config = client_config(&origin_ca.pem(), Some(&edge));
    let mut tls = connect(guard.addr(), "a.test", true, &config)
        .await
        .unwrap();
    let req = b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n";
    let r = round_trip(&mut tls, req).await.unwrap();
    assert_eq!(
        header(r.body(), "x-client-verify").as_deref(),
        Some("SUCCESS")
    );
    assert!(header(r.body(), "x-forwarded-client-cert").is_some());

    // The edge's CA is removed from the site's trust.
    std::fs::write(&guard.config, {
        let text = std::fs::read_to_string(&guard.config).unwrap();
        text.replace("edge-ca/ca.pem", "other-ca/ca.pem")
    })
    .unwrap();
    guard.signal("-HUP");
    guard.wait_log("configuration reloaded");

    let r = round_trip(&mut tls, req)
        .await
        .expect("optional mode keeps the connection");
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        header(r.body(), "x-client-verify").as_deref(),
        Some("FAILED:unknown_ca"),
        "{}",
        r.text
    );
    assert_eq!(
        header(r.body(), "x-forwarded-client-cert"),
        None,
        "{}",
        r.text
    );
    // And it stays so on the next request.
    let r = round_trip(&mut tls, req).await.unwrap();
    assert_eq!(
        header(r.body(), "x-client-verify").as_deref(),
        Some("FAILED:unknown_ca")
    );
    guard.wait_log("has a new verdict under the reloaded policy");
    // A new connection meets the same policy in its handshake.
    let mut fresh = connect(guard.addr(), "a.test", true, &config)
        .await
        .unwrap();
    let r = round_trip(&mut fresh, req).await.unwrap();
    assert_eq!(
        header(r.body(), "x-client-verify").as_deref(),
        Some("FAILED:unknown_ca")
    );
    let _ = Duration::ZERO;
}

/// `openssl s_time` resets every connection right after its Finished. The certificate
/// passed, so the verdict logged is SUCCESS, never `FAILED:other`; where the reset beat
/// the end of the handshake, the line says `completed=false` and the metric counts it.
#[test]
fn an_edge_that_resets_after_its_finished_is_never_logged_as_failed() {
    if !aop_e2e::have_peer("openssl", "hostile::framing::s_time") {
        return;
    }
    let Certs { dir, edge, .. } = Certs::new(&["a.test"]);
    let d = dir.path();
    let guard = Guard::start(
        d,
        "\n[[site]]\nname = \"shared\"\ndefault = true\ncert = \"origin-ca/origin/cert.pem\"\n\
         key = \"origin-ca/origin/key.pem\"\ntrust = [\"edge-ca/ca.pem\"]\nupstream = \"http://127.0.0.1:9\"\n",
    );
    let o = aop_e2e::run(std::process::Command::new("openssl").args([
        "s_time",
        "-connect",
        &format!("127.0.0.1:{}", guard.port),
        "-cert",
        edge.cert.to_str().unwrap(),
        "-key",
        edge.key.to_str().unwrap(),
        "-new",
        "-time",
        "1",
    ]));
    assert_eq!(aop_e2e::code(&o), 0, "{}", aop_e2e::stderr(&o));
    // Wait until the log has caught up with the counters (the log is written in
    // batches), then compare line by line.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let (verdicts, m) = loop {
        let m = guard.metrics_text();
        let counted = aop_e2e::metric_total(&m, "aop_handshakes_total", "");
        let verdicts = guard.lines_with("client certificate verdict");
        if verdicts.len() as u64 == counted || std::time::Instant::now() > deadline {
            break (verdicts, m);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!verdicts.is_empty(), "s_time made no connection");
    for line in &verdicts {
        assert!(line.contains("verdict=SUCCESS"), "{line}");
        assert!(!line.contains("FAILED"), "{line}");
    }
    let incomplete = verdicts
        .iter()
        .filter(|l| l.contains("completed=false"))
        .count();
    assert_eq!(
        metric(&m, "aop_handshakes_incomplete_total{site=\"shared\"}"),
        Some(incomplete as u64),
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "aop_handshakes_total{site=\"shared\",verdict=\"SUCCESS\",reason=\"\"}"
        ),
        Some(verdicts.len() as u64),
        "{m}"
    );
    eprintln!(
        "s_time: {} connections, {incomplete} reset before the handshake completed",
        verdicts.len()
    );
}

/// The upstream's answer is timed from when it has the whole request: a slow upload that
/// keeps moving is not cut as an upstream timeout (it was: 504, counted against the
/// upstream), while an upstream that does not answer a complete request in time is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upload_is_not_an_upstream_timeout() {
    let (certs, _echo, guard) = super::guarded(&["a.test"], |up| {
        format!(
            "upstream_timeout_secs = 1\nrequest_body_timeout_secs = 2\n{}",
            site(up, "edge-ca/ca.pem", "require")
        )
    })
    .await;
    let config = client_config(&certs.origin_ca.pem(), Some(&certs.edge));
    // A 30-byte body sent 5 bytes every 400 ms: 2.4 s, longer than the upstream timeout.
    let mut tls = connect(guard.addr(), "a.test", true, &config)
        .await
        .unwrap();
    tls.write_all(b"POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 30\r\n\r\n")
        .await
        .unwrap();
    for _ in 0..5 {
        tls.write_all(b"abcde").await.unwrap();
        tls.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let r = round_trip(&mut tls, b"abcde").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(header(r.body(), "x-echo-body-bytes").as_deref(), Some("30"));
    // An upstream that takes 3 s over a complete request: 504.
    let r = round_trip(
        &mut tls,
        b"GET /?sleep_ms=3000 HTTP/1.1\r\nHost: a.test\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 504, "{}", r.text);
    let m = guard.metrics_text();
    assert_eq!(
        metric(&m, "aop_upstream_errors_total{site=\"a.test\"}"),
        Some(1),
        "{m}"
    );
}

/// The guard offers no upgrade (it strips `Upgrade`), so an upstream that answers 101
/// anyway would leave a tunnel nothing bounds or checks: 502, counted against the
/// upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_switches_protocols_unasked_gets_502() {
    use tokio::io::AsyncReadExt as _;
    let Certs {
        dir,
        origin_ca,
        edge,
    } = Certs::new(&["a.test"]);
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = upstream.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = upstream.accept().await {
            let mut buf = [0u8; 4096];
            let _ = tcp.read(&mut buf).await;
            let _ = tcp
                .write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: tunnel\r\nConnection: upgrade\r\n\r\nraw bytes")
                .await;
        }
    });
    let guard = Guard::start(dir.path(), &site(addr, "edge-ca/ca.pem", "require"));
    let config = client_config(&origin_ca.pem(), Some(&edge));
    let mut tls = connect(guard.addr(), "a.test", true, &config)
        .await
        .unwrap();
    let r = round_trip(&mut tls, b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(r.status, 502, "{}", r.text);
    assert!(!r.text.contains("raw bytes"), "{}", r.text);
    let m = guard.metrics_text();
    assert_eq!(
        metric(&m, "aop_upstream_errors_total{site=\"a.test\"}"),
        Some(1),
        "{m}"
    );
}
