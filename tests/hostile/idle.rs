//! Lockout by idle and slow connections: after the handshake, a connection that sends
//! nothing, or trickles a header a byte at a time, is closed by the header-read and
//! keep-alive timers; and a crowd of connections that never authenticate — plain TCP
//! that never sends a ClientHello, certificate-less TLS held idle on an `optional` site —
//! cannot take the slots the edge needs: the budget closes the oldest of them and the
//! edge is served. Scaled down here (lowered limits, hundreds of connections);
//! `scripts/flood.py` runs the same attack at full size.

use std::time::Duration;

use aop_e2e::guard::{Certs, Guard, client_config, closed_within, connect, round_trip};
use aop_e2e::metric;
use aop_e2e::upstream::{Echo, header};
use tokio::io::AsyncWriteExt as _;

fn sites(upstream: std::net::SocketAddr) -> String {
    let site = |host: &str, mode: &str| {
        format!(
            "\n[[site]]\nhostnames = [\"{host}\"]\ncert = \"origin-ca/origin/cert.pem\"\nkey = \"origin-ca/origin/key.pem\"\n\
             trust = [\"edge-ca/ca.pem\"]\nmode = \"{mode}\"\nupstream = \"http://{upstream}\"\n"
        )
    };
    format!(
        "{}{}",
        site("a.test", "require"),
        site("opt.test", "optional")
    )
}

/// `n` requests from the edge, each on a new connection; every one must be answered.
async fn edge_requests(
    guard: &Guard,
    config: &std::sync::Arc<rustls::ClientConfig>,
    n: usize,
) -> Vec<aop_e2e::guard::Reply> {
    let mut replies = Vec::new();
    for i in 0..n {
        let mut tls = connect(guard.addr(), "a.test", true, config)
            .await
            .unwrap_or_else(|e| panic!("edge connection {i} refused: {e}"));
        let request = b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n";
        let r = round_trip(&mut tls, request)
            .await
            .unwrap_or_else(|| panic!("edge request {i} got no answer"));
        replies.push(r);
    }
    replies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_trickling_connections_are_closed_by_the_timers() {
    let (certs, _echo, guard) = super::guarded(&["a.test", "opt.test"], |up| {
        format!(
            "header_read_timeout_secs = 1\nkeepalive_timeout_secs = 2\nsend_timeout_secs = 1\n{}",
            sites(up)
        )
    })
    .await;
    let config = client_config(&certs.origin_ca.pem(), Some(&certs.edge));

    // Silent after the handshake: closed by the keep-alive timer.
    let mut silent = connect(guard.addr(), "a.test", true, &config)
        .await
        .unwrap();
    assert!(closed_within(&mut silent, Duration::from_secs(20)).await);
    guard.wait_log("closed=keepalive_timeout");

    // Idle after a request: the same.
    let mut after = connect(guard.addr(), "a.test", true, &config)
        .await
        .unwrap();
    let r = round_trip(&mut after, b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert!(closed_within(&mut after, Duration::from_secs(20)).await);

    // A header trickled a byte every 200 ms: closed by the header-read timer although
    // bytes keep coming (the whole head would take 8 s).
    let mut slow = connect(guard.addr(), "a.test", true, &config)
        .await
        .unwrap();
    let head = b"GET / HTTP/1.1\r\nHost: a.test\r\nX-Slow: aaaaaaa\r\n\r\n";
    let mut closed = false;
    for b in head {
        if slow.write_all(&[*b]).await.is_err() || slow.flush().await.is_err() {
            closed = true;
            break;
        }
        if closed_within(&mut slow, Duration::from_millis(200)).await {
            closed = true;
            break;
        }
    }
    assert!(closed, "a trickled header was served to the end");
    guard.wait_log("closed=header_read_timeout");

    // A request in progress is not cut by these timers (the upstream takes 3 s, longer
    // than both).
    let mut busy = connect(guard.addr(), "a.test", true, &config)
        .await
        .unwrap();
    let r = round_trip(
        &mut busy,
        b"GET /?sleep_ms=3000 HTTP/1.1\r\nHost: a.test\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text);

    // A client that asks for a large response and never reads it: closed once its
    // writes have been blocked for send_timeout_secs.
    let mut stalled = connect(guard.addr(), "a.test", true, &config)
        .await
        .unwrap();
    stalled
        .write_all(b"GET /?pad=64000000 HTTP/1.1\r\nHost: a.test\r\n\r\n")
        .await
        .unwrap();
    guard.wait_log("closed=send_timeout");
    drop(stalled);

    let m = guard.metrics_text();
    for (limit, want) in [
        ("send_timeout", 1),
        ("keepalive_timeout", 2),
        ("header_read_timeout", 1),
    ] {
        let series = format!("aop_connections_closed_total{{site=\"a.test\",limit=\"{limit}\"}}");
        assert_eq!(metric(&m, &series), Some(want), "{series}:\n{m}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crowd_that_never_authenticates_cannot_lock_the_edge_out() {
    // Limits lowered so a few hundred connections fill them.
    let (certs, _echo, guard) = super::guarded(&["a.test", "opt.test"], |up| {
        format!(
            "max_connections = 60\nmax_handshakes = 30\nmax_handshakes_per_peer = 20\n\
             max_unauthenticated_per_peer = 10\nhandshake_timeout_secs = 60\nkeepalive_timeout_secs = 60\n{}",
            sites(up)
        )
    })
    .await;
    let anonymous = client_config(&certs.origin_ca.pem(), None);
    let with_cert = client_config(&certs.origin_ca.pem(), Some(&certs.edge));

    // 40 certificate-less TLS connections to the optional site, held idle.
    let mut held_tls = Vec::new();
    for _ in 0..40 {
        let mut tls = connect(guard.addr(), "opt.test", true, &anonymous)
            .await
            .unwrap();
        let r = round_trip(&mut tls, b"GET / HTTP/1.1\r\nHost: opt.test\r\n\r\n").await;
        if let Some(r) = r {
            assert_eq!(header(r.body(), "x-client-verify").as_deref(), Some("NONE"));
        }
        held_tls.push(tls);
    }
    // 200 plain TCP connections that never send a ClientHello.
    let mut held_tcp = Vec::new();
    for _ in 0..200 {
        held_tcp.push(tokio::net::TcpStream::connect(guard.addr()).await.unwrap());
    }
    // The edge: 20 requests, each on a new connection, every one served.
    for (i, r) in edge_requests(&guard, &with_cert, 20)
        .await
        .iter()
        .enumerate()
    {
        assert_eq!(r.status, 200, "edge request {i}: {}", r.text);
        assert_eq!(
            header(r.body(), "x-client-verify").as_deref(),
            Some("SUCCESS")
        );
    }
    // The crowd was thinned: at most the per-peer caps of it are still open.
    let mut tcp_open = 0;
    for tcp in &mut held_tcp {
        if !closed_within(tcp, Duration::from_millis(20)).await {
            tcp_open += 1;
        }
    }
    let mut tls_open = 0;
    for tls in &mut held_tls {
        if !closed_within(tls, Duration::from_millis(20)).await {
            tls_open += 1;
        }
    }
    assert!(
        tcp_open <= 20,
        "{tcp_open} silent TCP connections still open"
    );
    assert!(
        tls_open <= 10,
        "{tls_open} idle certificate-less connections still open"
    );
    let m = guard.metrics_text();
    for series in [
        "aop_connections_closed_total{site=\"\",limit=\"max_handshakes_per_peer\"}",
        "aop_connections_closed_total{site=\"opt.test\",limit=\"max_unauthenticated_per_peer\"}",
    ] {
        assert!(metric(&m, series).is_some_and(|n| n >= 1), "{series}:\n{m}");
    }
    assert!(
        !guard
            .lines_with("closed=max_handshakes_per_peer")
            .is_empty()
    );
}

/// Out of file descriptors, `accept` fails for everyone, the edge included, and no
/// budget can make room. The guard raises its soft open-files limit to the hard one and
/// lowers `max_connections` to what fits (two descriptors a connection), so the budget
/// binds first: 500 silent connections against a 200/400 limit, and the edge is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_budget_binds_before_the_open_files_limit_does() {
    let Certs {
        dir,
        origin_ca,
        edge,
    } = Certs::new(&["a.test", "opt.test"]);
    let d = dir.path();
    let echo = Echo::start().await;
    let guard = Guard::start_with_open_files(
        d,
        &format!(
            "max_handshakes = 1000\nmax_handshakes_per_peer = 1000\n{}",
            sites(echo.addr)
        ),
        Some((200, 400)),
    );
    let warning = guard.wait_log("does not fit the open-files limit");
    assert!(warning.contains("open_files_limit=400"), "{warning}");
    assert!(warning.contains("lowered_to=72"), "{warning}");
    let mut held = Vec::new();
    for _ in 0..500 {
        held.push(tokio::net::TcpStream::connect(guard.addr()).await.unwrap());
    }
    let config = client_config(&origin_ca.pem(), Some(&edge));
    for (i, r) in edge_requests(&guard, &config, 5).await.iter().enumerate() {
        assert_eq!(r.status, 200, "edge request {i}: {}", r.text);
    }
    assert!(
        guard.lines_with("accept failed").is_empty(),
        "the guard ran out of descriptors"
    );
    let m = guard.metrics_text();
    assert!(
        metric(
            &m,
            "aop_connections_closed_total{site=\"\",limit=\"max_connections\"}"
        )
        .is_some_and(|n| n >= 1),
        "{m}"
    );
}

/// The same crowd spread over many source addresses, each under its per-peer cap: the
/// global caps bind instead. `max_handshakes` closes the oldest silent connection for
/// each new one, `max_connections` the oldest silent or unauthenticated one, and the
/// edge is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crowd_from_many_addresses_meets_the_global_caps() {
    let (certs, _echo, guard) = super::guarded(&["a.test", "opt.test"], |up| {
        format!(
            "max_connections = 50\nmax_handshakes = 20\nmax_handshakes_per_peer = 10\n\
             max_unauthenticated_per_peer = 10\nhandshake_timeout_secs = 60\n{}",
            sites(up)
        )
    })
    .await;
    let from = |i: usize| std::net::SocketAddr::from(([127, 0, 1, 1 + (i % 20) as u8], 0));
    // 100 silent TCP connections, 5 per address.
    let mut held_tcp = Vec::new();
    for i in 0..100 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(from(i)).unwrap();
        held_tcp.push(socket.connect(guard.addr()).await.unwrap());
    }
    // Then 60 certificate-less TLS connections held on the optional site, 3 per address.
    let anonymous = client_config(&certs.origin_ca.pem(), None);
    let mut held_tls = Vec::new();
    for i in 0..60 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(from(i)).unwrap();
        let tcp = socket.connect(guard.addr()).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("opt.test").unwrap();
        if let Ok(tls) = tokio_rustls::TlsConnector::from(anonymous.clone())
            .connect(name, tcp)
            .await
        {
            held_tls.push(tls);
        }
    }
    let config = client_config(&certs.origin_ca.pem(), Some(&certs.edge));
    for (i, r) in edge_requests(&guard, &config, 10).await.iter().enumerate() {
        assert_eq!(r.status, 200, "edge request {i}: {}", r.text);
    }
    let m = guard.metrics_text();
    let closed = |limit: &str| {
        let label = format!("limit=\"{limit}\"");
        aop_e2e::metric_total(&m, "aop_connections_closed_total", &label)
    };
    assert!(
        metric(
            &m,
            "aop_connections_closed_total{site=\"\",limit=\"max_handshakes\"}"
        )
        .is_some_and(|n| n >= 1),
        "{m}"
    );
    assert!(closed("max_connections") >= 1, "{m}");
    assert_eq!(closed("max_handshakes_per_peer"), 0, "{m}");
    let mut open = 0;
    for tcp in &mut held_tcp {
        if !closed_within(tcp, Duration::from_millis(20)).await {
            open += 1;
        }
    }
    assert!(
        open <= 20,
        "{open} silent connections still open, over max_handshakes"
    );
    drop(held_tls);
}

/// The metrics port serves a scraper, not the world: 16 connections at once; a 17th is
/// closed at accept (the silent ones are closed in turn after 10 s without a request).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_port_holds_a_bounded_number_of_connections() {
    let Certs { dir, .. } = Certs::new(&["a.test", "opt.test"]);
    let echo = Echo::start().await;
    let guard = Guard::start(dir.path(), &sites(echo.addr));
    let metrics = std::net::SocketAddr::from(([127, 0, 0, 1], guard.metrics));
    let mut held = Vec::new();
    for _ in 0..16 {
        held.push(tokio::net::TcpStream::connect(metrics).await.unwrap());
    }
    let mut extra = tokio::net::TcpStream::connect(metrics).await.unwrap();
    assert!(
        closed_within(&mut extra, Duration::from_secs(10)).await,
        "a 17th metrics connection was kept"
    );
    drop(held);
    // Once they are gone, the scraper is served again.
    aop_e2e::wait_until_async("metrics served again", Duration::from_secs(10), || {
        std::panic::catch_unwind(|| guard.metrics_text())
            .is_ok_and(|m| m.contains("aop_handshakes_total"))
            .then_some(())
    })
    .await;
}
