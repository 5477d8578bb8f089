//! CRLs fetched over HTTP (issue 16 item 3), through the real aop-origin binary and a
//! CRL server in this process whose answer each test changes mid-run: a CRL that
//! revokes the edge refuses its new handshakes (`FAILED:revoked`) and its kept-alive
//! connection's next request (421); what an attacker on the CRL's path can serve — a
//! CRL of another CA, of a CA of the same name, an older CRL, garbage, a huge body, no
//! answer, a redirect away from http — changes nothing and is counted; a guard started
//! while the server is down begins with its cached CRL; a CRL past its nextUpdate is
//! `crl_stale`'s to decide.

#![allow(clippy::unwrap_used)] // test helpers: a panic is a test failure with a backtrace

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aop_e2e::guard::{Guard, client_config, connect, round_trip};
use aop_e2e::pki::World;
use aop_e2e::upstream::Echo;
use aop_e2e::wait_until_async;
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// What the CRL server answers, for every request from now on.
#[derive(Clone)]
enum Answer {
    /// 200 with these bytes.
    Body(Vec<u8>),
    /// 200 with no Content-Length and this many bytes, until the client stops reading.
    Endless(usize),
    /// Nothing: the request is read and the connection held open.
    Silent,
    /// 302 to this Location.
    Redirect(String),
}

/// A CRL server on loopback, answering `answer` at `/edge.crl`.
struct CrlServer {
    addr: SocketAddr,
    answer: Arc<Mutex<Answer>>,
    /// Requests read.
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl CrlServer {
    async fn start(answer: Answer) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let answer = Arc::new(Mutex::new(answer));
        let hits = Arc::new(AtomicUsize::new(0));
        let (a, h) = (answer.clone(), hits.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut tcp, _)) = listener.accept().await else {
                    return;
                };
                let (a, h) = (a.clone(), h.clone());
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
                        if tcp.read(&mut byte).await.unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    h.fetch_add(1, Ordering::SeqCst);
                    let answer = a.lock().unwrap().clone();
                    match answer {
                        Answer::Body(b) => {
                            let head = format!(
                                "HTTP/1.1 200 OK\r\nContent-Type: application/pkix-crl\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                                b.len()
                            );
                            let _ = tcp.write_all(head.as_bytes()).await;
                            let _ = tcp.write_all(&b).await;
                        }
                        Answer::Endless(n) => {
                            let _ = tcp
                                .write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
                                .await;
                            let chunk = vec![b'A'; 64 * 1024];
                            let mut sent = 0;
                            while sent < n {
                                if tcp.write_all(&chunk).await.is_err() {
                                    return;
                                }
                                sent += chunk.len();
                            }
                        }
                        Answer::Silent => {
                            // Held until the guard gives up and closes.
                            let _ = tcp.read(&mut byte).await;
                        }
                        Answer::Redirect(to) => {
                            let head = format!(
                                "HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            );
                            let _ = tcp.write_all(head.as_bytes()).await;
                        }
                    }
                    let _ = tcp.shutdown().await;
                });
            }
        });
        Self {
            addr,
            answer,
            hits,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/edge.crl", self.addr)
    }

    fn set(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }
}

impl Drop for CrlServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n";

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// A site for `host` fetching `url` (refresh 1 s, fetch timeout 2 s), then `extra`.
fn site(host: &str, url: &str, upstream: SocketAddr, extra: &str) -> String {
    format!(
        "[[site]]\nhostnames = [\"{host}\"]\ncert = \"origin-ca/origin/cert.pem\"\n\
         key = \"origin-ca/origin/key.pem\"\ntrust = [\"edge-ca/ca.pem\"]\n\
         upstream = \"http://{upstream}\"\ncrl_url = [\"{url}\"]\ncrl_cache_dir = \"crl-cache\"\n\
         crl_refresh_secs = 1\ncrl_fetch_timeout_secs = 2\n{extra}\n"
    )
}

/// A CRL of `ca` revoking `leaves`, issued at `at` for `days`, as bytes.
fn crl(
    ca: &aop_e2e::pki::TestCa,
    leaves: &[&aop_e2e::pki::Leaf],
    at: OffsetDateTime,
    days: u32,
    name: &str,
) -> Vec<u8> {
    std::fs::read(ca.crl_at(leaves, at, days, name)).unwrap()
}

/// The series of (site, url) of metric `name`.
fn series(name: &str, site: &str, url: &str, more: &str) -> String {
    format!("{name}{{site=\"{site}\",url=\"{url}\"{more}}}")
}

/// Wait until the guard's failures of `cause` for (site, url) reach `n`.
async fn failures_reach(g: &Guard, site: &str, url: &str, cause: &str, n: u64) {
    let s = series(
        "aop_crl_fetch_failures_total",
        site,
        url,
        &format!(",cause=\"{cause}\""),
    );
    wait_until_async(&s, Duration::from_secs(20), || {
        (g.metric(&s) >= n).then_some(())
    })
    .await;
}

/// A new handshake for `host` as the edge, and one request: the status (0 if the
/// guard refused the certificate), and the guard's verdict line for this connection
/// (found by the client's port).
async fn handshake(g: &Guard, w: &World, host: &str) -> (u16, String) {
    let tls = client_config(&w.origin_ca.pem(), Some(&w.edge));
    let tcp = tokio::net::TcpStream::connect(g.addr()).await.unwrap();
    let peer = format!("peer={}", tcp.local_addr().unwrap());
    let name = rustls::pki_types::ServerName::try_from(host.to_owned()).unwrap();
    let status = match tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
    {
        Ok(mut s) => {
            let get = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
            round_trip(&mut s, get.as_bytes())
                .await
                .map_or(0, |r| r.status)
        }
        Err(_) => 0,
    };
    loop {
        let line = g.wait_log(&peer);
        if line.contains("client certificate verdict") {
            return (status, line);
        }
    }
}

/// The verdict line's `verdict=` field.
fn verdict_of(line: &str) -> &str {
    line.split_whitespace()
        .find_map(|f| f.strip_prefix("verdict="))
        .unwrap_or("")
}

/// The edge's certificate, revoked by a CRL served over HTTP mid-run: new handshakes
/// are `FAILED:revoked`, the kept-alive connection's next request 421; then every attack
/// on the CRL's path is refused, counted, and leaves the revocation in force.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crl_served_over_http_revokes_the_edge_and_spoofed_answers_change_nothing() {
    let w = World::new(&["a.example"]);
    let echo = Echo::start().await;
    let issued0 = now() - time::Duration::minutes(5);
    let clean = crl(&w.edge_ca, &[], issued0, 7, "clean.pem");
    let server = CrlServer::start(Answer::Body(clean.clone())).await;
    let url = server.url();
    let g = Guard::spawn_binary(w.path(), &site("a.example", &url, echo.addr, ""));
    let updated = g.wait_log("CRL updated");
    assert!(updated.contains("revoked=0"), "{updated}");

    // Served, on a connection kept alive.
    let tls = client_config(&w.origin_ca.pem(), Some(&w.edge));
    let mut kept = connect(g.addr(), "a.example", true, &tls).await.unwrap();
    assert_eq!(round_trip(&mut kept, GET).await.unwrap().status, 200);
    let next = series(
        "aop_crl_next_update_timestamp_seconds",
        "a.example",
        &url,
        ",issuer=\"CN=edge-ca\"",
    );
    let expected_next =
        (issued0.replace_nanosecond(0).unwrap() + time::Duration::days(7)).unix_timestamp();
    assert_eq!(g.metric(&next), u64::try_from(expected_next).unwrap());
    // Every cause is a series from the start, at 0.
    let text = g.metrics_text();
    for cause in ["connect", "timeout", "too_large", "replay", "bad_signature"] {
        let s = series(
            "aop_crl_fetch_failures_total",
            "a.example",
            &url,
            &format!(",cause=\"{cause}\""),
        );
        assert_eq!(aop_e2e::metric(&text, &s), Some(0), "{s}");
    }
    let success = series(
        "aop_crl_last_success_timestamp_seconds",
        "a.example",
        &url,
        "",
    );
    assert!(g.metric(&success) >= u64::try_from(issued0.unix_timestamp()).unwrap());
    let this = series(
        "aop_crl_this_update_timestamp_seconds",
        "a.example",
        &url,
        ",issuer=\"CN=edge-ca\"",
    );
    let this_clean = g.metric(&this);
    assert!(this_clean > 0 && this_clean <= u64::try_from(issued0.unix_timestamp()).unwrap());

    // The CA revokes the edge; the server serves the new CRL.
    let revoking = crl(&w.edge_ca, &[&w.edge], now(), 7, "revoking.pem");
    server.set(Answer::Body(revoking.clone()));
    let updated = g.wait_log("CRL updated");
    assert!(updated.contains("revoked=1"), "{updated}");
    let this_revoking = g.metric(&this);
    assert!(this_revoking > this_clean);
    let (status, line) = handshake(&g, &w, "a.example").await;
    assert_eq!((status, verdict_of(&line)), (0, "FAILED:revoked"), "{line}");
    assert!(line.contains("reason=revoked"), "{line}");
    // The connection kept alive from before: its next request is refused and closed.
    let reply = round_trip(&mut kept, GET).await.unwrap();
    assert_eq!(reply.status, 421, "{}", reply.text);
    assert!(
        reply
            .text
            .to_ascii_lowercase()
            .contains("connection: close"),
        "{}",
        reply.text
    );
    g.wait_log("certificate_rejected");
    assert_eq!(
        g.metric("aop_handshakes_total{site=\"a.example\",verdict=\"FAILED\",reason=\"revoked\"}"),
        1
    );

    // A SIGHUP rebuilds the policy from the file: the fetched CRL stays in it.
    g.reload();
    g.wait_log("configuration reloaded");
    let (status, line) = handshake(&g, &w, "a.example").await;
    assert_eq!((status, verdict_of(&line)), (0, "FAILED:revoked"), "{line}");

    // Attacks: each refused, counted by cause, and the edge stays revoked.
    let other = aop_e2e::pki::ca(w.path(), "other-ca");
    let twin_dir = w.path().join("twin");
    std::fs::create_dir_all(&twin_dir).unwrap();
    let twin = aop_e2e::pki::ca(&twin_dir, "edge-ca");
    let attacks: Vec<(&str, Answer)> = vec![
        // Another CA's CRL (it names no trust anchor).
        (
            "unknown_issuer",
            Answer::Body(crl(&other, &[], now(), 7, "other.pem")),
        ),
        // A CRL of a CA of the same name, newer, revoking nothing: not the anchor's key.
        (
            "bad_signature",
            Answer::Body(crl(&twin, &[], now(), 7, "twin.pem")),
        ),
        // The older clean CRL again: a replay that would un-revoke the edge.
        ("replay", Answer::Body(clean.clone())),
        (
            "malformed",
            Answer::Body(b"-----BEGIN X509 CRL-----\ngarbage\n-----END X509 CRL-----\n".to_vec()),
        ),
        (
            "malformed",
            Answer::Body((0..=255u8).cycle().take(4096).collect()),
        ),
        // 11 MiB with no Content-Length: cut off at 10 MiB.
        ("too_large", Answer::Endless(11 << 20)),
        (
            "redirect",
            Answer::Redirect("https://127.0.0.1:1/edge.crl".into()),
        ),
        ("redirect", Answer::Redirect("file:///etc/passwd".into())),
    ];
    let mut counted = std::collections::HashMap::<&str, u64>::new();
    for (cause, answer) in attacks {
        server.set(answer);
        let n = counted.entry(cause).or_default();
        *n += 1;
        failures_reach(&g, "a.example", &url, cause, *n).await;
        let (status, line) = handshake(&g, &w, "a.example").await;
        assert_eq!(
            (status, verdict_of(&line)),
            (0, "FAILED:revoked"),
            "{cause}: {line}"
        );
    }
    assert!(g.lines_with("CRL fetch refused; the CRLs held stay").len() >= 8);

    // A server that never answers: the fetch times out (2 s), and the guard serves
    // meanwhile (a verdict while a fetch hangs).
    server.set(Answer::Silent);
    let before = server.hits.load(Ordering::SeqCst);
    wait_until_async("a silent fetch", Duration::from_secs(10), || {
        (server.hits.load(Ordering::SeqCst) > before).then_some(())
    })
    .await;
    let (status, line) = handshake(&g, &w, "a.example").await;
    assert_eq!((status, verdict_of(&line)), (0, "FAILED:revoked"), "{line}");
    failures_reach(&g, "a.example", &url, "timeout", 1).await;
    // At most one fetch of the URL at a time: while one hangs, no other starts.
    assert!(server.hits.load(Ordering::SeqCst) <= before + 2);
    // Nothing the attacks served replaced the revoking CRL, in memory or in the cache.
    assert_eq!(g.metric(&this), this_revoking);
    let cached: Vec<_> = std::fs::read_dir(w.path().join("crl-cache"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(cached.len(), 1, "{cached:?}");
    assert_eq!(
        aop_pki::load_crls(&cached[0]).unwrap(),
        aop_pki::parse_crls(&revoking, &cached[0]).unwrap()
    );
}

/// A guard started while the CRL server is down begins with the CRL its cache holds
/// (the edge stays revoked), and counts the failed connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_crl_is_used_when_the_server_is_down_at_start() {
    let w = World::new(&["a.example"]);
    let echo = Echo::start().await;
    let revoking = crl(&w.edge_ca, &[&w.edge], now(), 7, "revoking.pem");
    let server = CrlServer::start(Answer::Body(revoking)).await;
    let url = server.url();
    let config = site("a.example", &url, echo.addr, "");
    {
        let g = Guard::spawn_binary(w.path(), &config);
        g.wait_log("CRL updated");
        let (_, line) = handshake(&g, &w, "a.example").await;
        assert_eq!(verdict_of(&line), "FAILED:revoked", "{line}");
    }
    drop(server);
    let g = Guard::spawn_binary(w.path(), &config);
    // The cached CRL is in force before any fetch has succeeded.
    let this = series(
        "aop_crl_this_update_timestamp_seconds",
        "a.example",
        &url,
        ",issuer=\"CN=edge-ca\"",
    );
    assert!(g.metric(&this) > 0);
    failures_reach(&g, "a.example", &url, "connect", 1).await;
    let (status, line) = handshake(&g, &w, "a.example").await;
    assert_eq!((status, verdict_of(&line)), (0, "FAILED:revoked"), "{line}");
    assert_eq!(
        g.metric(&series(
            "aop_crl_last_success_timestamp_seconds",
            "a.example",
            &url,
            ""
        )),
        0
    );
}

/// A CRL past its nextUpdate: `crl_stale = "deny"` (the default) refuses the edge
/// `revocation_unknown`, `"allow"` serves it and warns at each refresh; a `deny` site
/// with no CRL at all yet (server down, nothing cached) refuses too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_crl_is_denied_or_allowed_per_site() {
    let w = World::new(&["deny.example", "allow.example", "down.example"]);
    let echo = Echo::start().await;
    let stale = crl(
        &w.edge_ca,
        &[],
        now() - time::Duration::days(10),
        1,
        "stale.pem",
    );
    let server = CrlServer::start(Answer::Body(stale)).await;
    let down = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let down_url = format!("http://{}/edge.crl", down.local_addr().unwrap());
    drop(down);
    let url = server.url();
    let config = [
        site("deny.example", &url, echo.addr, ""),
        site("allow.example", &url, echo.addr, "crl_stale = \"allow\""),
        site("down.example", &down_url, echo.addr, "crl_stale = \"deny\""),
    ]
    .concat();
    let g = Guard::spawn_binary(w.path(), &config);
    // Both sites took the stale CRL; allow warns about it.
    failures_reach(&g, "down.example", &down_url, "connect", 1).await;
    let s = |site: &str| series("aop_crl_last_success_timestamp_seconds", site, &url, "");
    wait_until_async("both sites fetched", Duration::from_secs(20), || {
        (g.metric(&s("deny.example")) > 0 && g.metric(&s("allow.example")) > 0).then_some(())
    })
    .await;
    let warn = g.wait_log("crl_stale = \\\"allow\\\"");
    assert!(warn.contains("site=allow.example"), "{warn}");

    let (status, line) = handshake(&g, &w, "deny.example").await;
    assert_eq!(
        (status, verdict_of(&line)),
        (0, "FAILED:revocation_unknown"),
        "{line}"
    );
    assert!(line.contains("a loaded CRL has expired"), "{line}");
    let (status, line) = handshake(&g, &w, "allow.example").await;
    assert_eq!((status, verdict_of(&line)), (200, "SUCCESS"), "{line}");
    let (status, line) = handshake(&g, &w, "down.example").await;
    assert_eq!(
        (status, verdict_of(&line)),
        (0, "FAILED:revocation_unknown"),
        "{line}"
    );
    assert!(line.contains("no CRL yet from"), "{line}");
}

/// A new CRL whose rebuild fails (a file the configuration names broke since the last
/// load) is counted `apply` and the running policy stays; once the file is good again,
/// the next fetch puts the same CRL in force.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crl_that_cannot_be_applied_yet_is_applied_once_it_can() {
    let w = World::new(&["a.example"]);
    let echo = Echo::start().await;
    let server = CrlServer::start(Answer::Body(crl(&w.edge_ca, &[], now(), 7, "clean.pem"))).await;
    let url = server.url();
    let g = Guard::spawn_binary(w.path(), &site("a.example", &url, echo.addr, ""));
    g.wait_log("CRL updated");
    let cert = w.path().join("origin-ca/origin/cert.pem");
    let good = std::fs::read(&cert).unwrap();
    std::fs::write(&cert, b"not a certificate").unwrap();
    let revoking = crl(
        &w.edge_ca,
        &[&w.edge],
        now() + time::Duration::seconds(1),
        7,
        "revoking.pem",
    );
    server.set(Answer::Body(revoking));
    failures_reach(&g, "a.example", &url, "apply", 1).await;
    let (status, line) = handshake(&g, &w, "a.example").await;
    assert_eq!((status, verdict_of(&line)), (200, "SUCCESS"), "{line}");
    std::fs::write(&cert, good).unwrap();
    let updated = g.wait_log("CRL updated");
    assert!(updated.contains("revoked=1"), "{updated}");
    let (status, line) = handshake(&g, &w, "a.example").await;
    assert_eq!((status, verdict_of(&line)), (0, "FAILED:revoked"), "{line}");
}
