//! Review 16 of CRL fetching (aop-origin `crl_url`): the holes an adversarial review
//! proved, kept as regression tests against the real binary. Each asserts the safe
//! outcome (the edge stays revoked; no request leaves for an address the configuration
//! did not name; a staged file waits for its reload). The fetch's own behaviour and its
//! spoofed answers are in tests/crl_fetch.rs; these are the review's reproducers.
//!
//! Run: cargo test --test crl_review -- --test-threads=1

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aop_e2e::guard::{Guard, client_config, round_trip};
use aop_e2e::pki::World;
use aop_e2e::upstream::Echo;
use aop_e2e::wait_until_async;
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

#[derive(Clone)]
enum Answer {
    Body(Vec<u8>),
    Redirect(String),
}

/// A tiny HTTP server on `bind`: answers `answer`, records each request line.
struct Server {
    addr: SocketAddr,
    answer: Arc<Mutex<Answer>>,
    hits: Arc<AtomicUsize>,
    lines: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start(bind: &str, answer: Answer) -> Self {
        let listener = tokio::net::TcpListener::bind(bind).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let answer = Arc::new(Mutex::new(answer));
        let hits = Arc::new(AtomicUsize::new(0));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (a, h, l) = (answer.clone(), hits.clone(), lines.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut tcp, _)) = listener.accept().await else {
                    return;
                };
                let (a, h, l) = (a.clone(), h.clone(), l.clone());
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
                        if tcp.read(&mut byte).await.unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    l.lock().unwrap().push(
                        String::from_utf8_lossy(&head)
                            .lines()
                            .next()
                            .unwrap_or("")
                            .to_owned(),
                    );
                    let answer = a.lock().unwrap().clone();
                    let reply = match answer {
                        Answer::Body(b) => {
                            let mut r = format!(
                                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                                b.len()
                            )
                            .into_bytes();
                            r.extend_from_slice(&b);
                            r
                        }
                        Answer::Redirect(to) => format!(
                            "HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        )
                        .into_bytes(),
                    };
                    let _ = tcp.write_all(&reply).await;
                    let _ = tcp.shutdown().await;
                    // Counted once answered: a hit means that fetch's body is out.
                    h.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        Self {
            addr,
            answer,
            hits,
            lines,
            task,
        }
    }
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
    fn set(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }
    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
    /// Wait until `n` more requests were answered than now (each fetch of a URL ends
    /// before the next starts: one in flight a URL).
    async fn wait_more(&self, n: usize) {
        let target = self.hits() + n;
        wait_until_async("more CRL fetches", Duration::from_secs(20), || {
            (self.hits() >= target).then_some(())
        })
        .await;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn crl(
    ca: &aop_e2e::pki::TestCa,
    leaves: &[&aop_e2e::pki::Leaf],
    at: OffsetDateTime,
    name: &str,
) -> Vec<u8> {
    std::fs::read(ca.crl_at(leaves, at, 7, name)).unwrap()
}

/// A site for a.example: `trust`, `extra` (crl_url etc.).
fn site(upstream: SocketAddr, extra: &str) -> String {
    format!(
        "[[site]]\nhostnames = [\"a.example\"]\ncert = \"origin-ca/origin/cert.pem\"\n\
         key = \"origin-ca/origin/key.pem\"\ntrust = [\"edge-ca/ca.pem\"]\n\
         upstream = \"http://{upstream}\"\ncrl_cache_dir = \"crl-cache\"\n\
         crl_refresh_secs = 1\ncrl_fetch_timeout_secs = 2\n{extra}\n"
    )
}

/// A new handshake as the edge and one request: (status or 0, the verdict).
async fn handshake(g: &Guard, w: &World) -> (u16, String) {
    let tls = client_config(&w.origin_ca.pem(), Some(&w.edge));
    let tcp = tokio::net::TcpStream::connect(g.addr()).await.unwrap();
    let peer = format!("peer={}", tcp.local_addr().unwrap());
    let name = rustls::pki_types::ServerName::try_from("a.example".to_owned()).unwrap();
    let status = match tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
    {
        Ok(mut s) => round_trip(&mut s, b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n")
            .await
            .map_or(0, |r| r.status),
        Err(_) => 0,
    };
    loop {
        let line = g.wait_log(&peer);
        if line.contains("client certificate verdict") {
            let v = line
                .split_whitespace()
                .find_map(|f| f.strip_prefix("verdict="))
                .unwrap_or("")
                .to_owned();
            return (status, v);
        }
    }
}

/// F1: a fetched CRL whose apply failed (a policy file unreadable for a moment, e.g. an
/// operator's in-place edit) is held but never applied: the retry finds it "unchanged".
/// The edge stays admitted after the file is back, while the CRL server keeps serving
/// the revoking CRL and the metrics report the revoking CRL as in force.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f1_a_failed_apply_loses_the_revocation_for_good() {
    let w = World::new(&["a.example"]);
    let echo = Echo::start().await;
    let clean = crl(
        &w.edge_ca,
        &[],
        now() - time::Duration::minutes(5),
        "clean.pem",
    );
    let server = Server::start("127.0.0.1:0", Answer::Body(clean)).await;
    let url = server.url("/edge.crl");
    let g = Guard::spawn_binary(
        w.path(),
        &site(echo.addr, &format!("crl_url = [\"{url}\"]")),
    );
    g.wait_log("CRL updated");
    assert_eq!(handshake(&g, &w).await, (200, "SUCCESS".into()));

    // The trust file is being rewritten (garbage for a moment) as the CA revokes the edge.
    let trust = w.path().join("edge-ca/ca.pem");
    let good = std::fs::read(&trust).unwrap();
    std::fs::write(&trust, b"being rewritten\n").unwrap();
    server.set(Answer::Body(crl(
        &w.edge_ca,
        &[&w.edge],
        now(),
        "revoking.pem",
    )));
    let apply = "aop_crl_fetch_failures_total{site=\"a.example\",url=\"".to_owned()
        + &url
        + "\",cause=\"apply\"}";
    wait_until_async("apply failure", Duration::from_secs(20), || {
        (g.metric(&apply) >= 1).then_some(())
    })
    .await;
    std::fs::write(&trust, &good).unwrap();
    // Two more whole fetches of the revoking CRL with every file good again.
    server.wait_more(2).await;
    let applies = g.metric(&apply);
    server.wait_more(1).await;
    eprintln!(
        "apply failures {applies}; CRL updated lines: {:?}",
        g.lines_with("CRL updated")
    );
    let (status, verdict) = handshake(&g, &w).await;
    assert_eq!(
        (status, verdict.as_str()),
        (0, "FAILED:revoked"),
        "the revoking CRL is served and held, every file is good, yet the edge is admitted"
    );
}

/// F2: the right CA's CRL of another scope (IDP onlyContainsCACerts: an ARL), newer,
/// would replace the held CRL that revoked the edge (held per issuer); webpki would then
/// find no CRL authoritative for the leaf and, with UnknownStatusPolicy::Allow, admit
/// it: an attacker on the HTTP path un-revoking the edge with a genuine CA file. A
/// fetched CRL with an issuingDistributionPoint is refused `scoped`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f2_a_newer_crl_of_another_scope_unrevokes_the_edge() {
    let w = World::new(&["a.example"]);
    let echo = Echo::start().await;
    let revoking = crl(
        &w.edge_ca,
        &[&w.edge],
        now() - time::Duration::minutes(5),
        "rev.pem",
    );
    let server = Server::start("127.0.0.1:0", Answer::Body(revoking)).await;
    let url = server.url("/edge.crl");
    let g = Guard::spawn_binary(
        w.path(),
        &site(echo.addr, &format!("crl_url = [\"{url}\"]")),
    );
    g.wait_log("CRL updated");
    assert_eq!(handshake(&g, &w).await, (0, "FAILED:revoked".into()));

    // The CA's authority revocation list (CA certificates only), published later.
    let ca_pem = std::fs::read_to_string(w.edge_ca.pem()).unwrap();
    let key_pem = std::fs::read_to_string(w.edge_ca.dir.join("ca.key")).unwrap();
    let issuer =
        rcgen::Issuer::from_ca_cert_pem(&ca_pem, rcgen::KeyPair::from_pem(&key_pem).unwrap())
            .unwrap();
    let t = now().replace_nanosecond(0).unwrap();
    let arl = rcgen::CertificateRevocationListParams {
        this_update: t,
        next_update: t + time::Duration::days(7),
        crl_number: rcgen::SerialNumber::from_slice(&(t.unix_timestamp() + 10).to_be_bytes()[4..]),
        issuing_distribution_point: Some(rcgen::CrlIssuingDistributionPoint {
            distribution_point: rcgen::CrlDistributionPoint {
                uris: vec!["http://pki.example/arl.crl".into()],
            },
            scope: Some(rcgen::CrlScope::CaCertsOnly),
        }),
        revoked_certs: Vec::new(),
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    }
    .signed_by(&issuer)
    .unwrap();
    server.set(Answer::Body(arl.der().to_vec()));
    let scoped = "aop_crl_fetch_failures_total{site=\"a.example\",url=\"".to_owned()
        + &url
        + "\",cause=\"scoped\"}";
    wait_until_async("the ARL refused", Duration::from_secs(20), || {
        (g.metric(&scoped) >= 1).then_some(())
    })
    .await;
    let refused = g.wait_log("cause=scoped");
    assert!(refused.contains("issuingDistributionPoint"), "{refused}");
    let (status, verdict) = handshake(&g, &w).await;
    assert_eq!(
        (status, verdict.as_str()),
        (0, "FAILED:revoked"),
        "an ARL replaced the CRL that revoked the edge"
    );
}

/// F3: several CRLs of one issuer (a local `crl` file beside `crl_url`, or two
/// crl_url mirrors) are all handed to webpki, which uses the first authoritative one:
/// an older, still valid CRL (a lagging mirror, a replay on mirror 1's path, or an old
/// local file) shadows the newer fetched CRL that revokes the edge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f3_an_older_crl_of_the_same_issuer_shadows_the_fetched_one() {
    let w = World::new(&["a.example"]);
    let echo = Echo::start().await;
    let old = crl(&w.edge_ca, &[], now() - time::Duration::hours(1), "old.pem");
    let revoking = crl(&w.edge_ca, &[&w.edge], now(), "revoking.pem");
    let mirror1 = Server::start("127.0.0.1:0", Answer::Body(old)).await;
    let mirror2 = Server::start("127.0.0.1:0", Answer::Body(revoking)).await;
    let (u1, u2) = (mirror1.url("/edge.crl"), mirror2.url("/edge.crl"));
    // (a) two mirrors.
    let g = Guard::spawn_binary(
        w.path(),
        &site(echo.addr, &format!("crl_url = [\"{u1}\", \"{u2}\"]")),
    );
    mirror1.wait_more(1).await;
    mirror2.wait_more(2).await;
    let a = handshake(&g, &w).await;
    drop(g);
    // (b) an old local crl file and the URL serving the revoking CRL.
    std::fs::remove_dir_all(w.path().join("crl-cache")).unwrap();
    let g = Guard::spawn_binary(
        w.path(),
        &site(
            echo.addr,
            &format!("crl = [\"edge-ca/old.pem\"]\ncrl_url = [\"{u2}\"]"),
        ),
    );
    g.wait_log("CRL updated");
    mirror2.wait_more(1).await;
    let b = handshake(&g, &w).await;
    eprintln!("two mirrors: {a:?}; local crl + crl_url: {b:?}");
    assert_eq!(a, (0, "FAILED:revoked".into()), "two mirrors");
    assert_eq!(b, (0, "FAILED:revoked".into()), "local crl + crl_url");
}

/// F4: whoever answers the plain-HTTP CRL URL (or sits on its path) must not send the
/// guard anywhere else over http (another host, loopback, any port: cloud metadata, an
/// admin port): a redirect off the URL's host and port is refused and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f4_a_redirect_sends_the_guard_to_an_address_the_config_never_named() {
    let w = World::new(&["a.example"]);
    let echo = Echo::start().await;
    let internal = Server::start("127.0.0.2:0", Answer::Body(b"secret".to_vec())).await;
    let crl_server = Server::start(
        "127.0.0.1:0",
        Answer::Redirect(internal.url("/latest/meta-data/iam/security-credentials/")),
    )
    .await;
    let url = crl_server.url("/edge.crl");
    let g = Guard::spawn_binary(
        w.path(),
        &site(
            echo.addr,
            &format!("crl_url = [\"{url}\"]\ncrl_stale = \"allow\""),
        ),
    );
    crl_server.wait_more(1).await;
    // Give the redirected request its chance (bounded: one refresh later).
    crl_server.wait_more(1).await;
    let seen = internal.lines.lock().unwrap().clone();
    eprintln!("internal service saw: {seen:?}");
    assert!(seen.is_empty(), "the guard was sent to {seen:?}");
    let redirect = "aop_crl_fetch_failures_total{site=\"a.example\",url=\"".to_owned()
        + &url
        + "\",cause=\"redirect\"}";
    wait_until_async("the redirect refused", Duration::from_secs(20), || {
        (g.metric(&redirect) >= 2).then_some(())
    })
    .await;
    let refused = g.wait_log("cause=redirect");
    assert!(
        refused.contains("only redirects to the same host and port are followed"),
        "{refused}"
    );
}

/// F5: a fetched CRL's apply rebuilds the whole policy from the files on disk now
/// (certificates, keys, trust, local CRLs): a trust file an operator staged for a later
/// reload goes in force with a CRL refresh. Not fixed (that needs a policy rebuilt from
/// the one in force with only its CRLs replaced); no longer silent: the `CRL updated`
/// line says `applied="crl, trust (SITE)"`, and a warning says files changed on disk
/// went in force with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f5_a_crl_refresh_says_what_else_it_put_in_force() {
    let w = World::new(&["a.example"]);
    let echo = Echo::start().await;
    let clean = crl(
        &w.edge_ca,
        &[],
        now() - time::Duration::minutes(5),
        "clean.pem",
    );
    let server = Server::start("127.0.0.1:0", Answer::Body(clean)).await;
    let url = server.url("/edge.crl");
    let g = Guard::spawn_binary(
        w.path(),
        &site(echo.addr, &format!("crl_url = [\"{url}\"]")),
    );
    let first = g.wait_log("CRL updated");
    assert!(
        first.split_whitespace().any(|f| f == "applied=crl"),
        "{first}"
    );
    assert_eq!(handshake(&g, &w).await, (200, "SUCCESS".into()));
    // Staged on disk for the next reload: the edge CA replaced by another.
    let other = aop_e2e::pki::ca(w.path(), "other-ca");
    let trust = w.path().join("edge-ca/ca.pem");
    std::fs::copy(other.pem(), &trust).unwrap();
    // The CA publishes its next (clean) CRL.
    let next = std::fs::read(w.edge_ca.crl_at(&[], now(), 7, "next.pem")).unwrap();
    server.set(Answer::Body(next));
    let updated = g.wait_log("CRL updated");
    assert!(
        updated.contains("applied=\"crl, trust (a.example)\""),
        "{updated}"
    );
    let warned = g.wait_log("went in force with it");
    assert!(warned.contains("trust (a.example)"), "{warned}");
    assert!(g.lines_with("configuration reloaded").is_empty());
}
