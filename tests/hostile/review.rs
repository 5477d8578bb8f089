//! A second look at the issue-11 hardening, as an attacker: Host and header spellings,
//! request framing and pipelining the first tests did not try, each against the real
//! aop-origin with an upstream that records the exact bytes it receives, so a test
//! asserts what reached the upstream, not only the status the client saw.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aop_e2e::guard::{Guard, client_config, connect, exchange, round_trip};
use aop_e2e::pki;
use aop_e2e::tempdir;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// A plain-HTTP upstream that keeps every byte it receives (all connections, in order)
/// and answers each request head with `200`, body `ok`, then keeps reading.
struct Capture {
    addr: std::net::SocketAddr,
    seen: Arc<Mutex<Vec<u8>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Capture {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let all = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let all = all.clone();
                tokio::spawn(async move {
                    let mut mine = Vec::new();
                    let mut buf = [0u8; 4096];
                    let mut answered = 0;
                    loop {
                        let n = match tcp.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        mine.extend_from_slice(&buf[..n]);
                        all.lock().unwrap().extend_from_slice(&buf[..n]);
                        let heads = mine.windows(4).filter(|w| w == b"\r\n\r\n").count();
                        while answered < heads {
                            answered += 1;
                            let _ = tcp
                                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                                .await;
                        }
                    }
                });
            }
        });
        Self { addr, seen, task }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.seen.lock().unwrap()).into_owned()
    }

    /// Wait (up to 5 s) until what the upstream received contains `needle`.
    async fn wait_for(&self, needle: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.text().contains(needle) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }
}

struct Setup {
    _dir: aop_e2e::TempDir,
    guard: Guard,
    up: Capture,
    roots: std::path::PathBuf,
    edge: pki::Leaf,
    /// A client of the shared default site (other-ca).
    other: pki::Leaf,
}

impl Setup {
    /// `n` connections as `identity` for `host` (SNI sent only for a.test; c.test is the
    /// default site's), each with one request answered 200, kept open.
    async fn hold(
        &self,
        identity: &pki::Leaf,
        host: &str,
        n: usize,
        path: &str,
    ) -> Vec<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        let config = client_config(&self.roots, Some(identity));
        let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
        let mut held = Vec::new();
        for _ in 0..n {
            let mut tls = connect(self.guard.addr(), host, host == "a.test", &config)
                .await
                .unwrap();
            let r = round_trip(&mut tls, request.as_bytes()).await.unwrap();
            assert_eq!(r.status, 200);
            held.push(tls);
        }
        held
    }

    /// `GET PATH` for a.test on a new connection as `identity` must get 200; else the
    /// test fails with `failure` and the guard's refusal line.
    async fn must_serve(&self, identity: &pki::Leaf, path: &str, failure: &str) {
        let config = client_config(&self.roots, Some(identity));
        let request = format!("GET {path} HTTP/1.1\r\nHost: a.test\r\n\r\n");
        let served = match connect(self.guard.addr(), "a.test", true, &config).await {
            Ok(mut tls) => round_trip(&mut tls, request.as_bytes())
                .await
                .map(|r| r.status),
            Err(_) => None,
        };
        if served != Some(200) {
            let why = self
                .guard
                .wait_log("connection refused: max_connections reached");
            panic!("{failure}: {why}");
        }
    }
}

/// One site `a.test` (mode `mode`) trusting edge-ca, and a default site `shared`
/// trusting other-ca, both in front of a [`Capture`] upstream.
async fn setup(mode: &str, extra: &str) -> Setup {
    let dir = tempdir().unwrap();
    let d = dir.path();
    let origin_ca = pki::ca(d, "origin-ca");
    origin_ca.origin("origin", &["a.test", "c.test"]);
    let edge = pki::ca(d, "edge-ca").client("edge");
    let other = pki::ca(d, "other-ca").client("other");
    let up = Capture::start().await;
    let config = format!(
        "{extra}\n[[site]]\nname = \"a\"\nhostnames = [\"a.test\"]\ncert = \"origin-ca/origin/cert.pem\"\n\
         key = \"origin-ca/origin/key.pem\"\ntrust = [\"edge-ca/ca.pem\"]\nmode = \"{mode}\"\n\
         upstream = \"http://{}\"\n\
         \n[[site]]\nname = \"shared\"\ndefault = true\ncert = \"origin-ca/origin/cert.pem\"\n\
         key = \"origin-ca/origin/key.pem\"\ntrust = [\"other-ca/ca.pem\"]\nupstream = \"http://{}\"\n",
        up.addr, up.addr
    );
    let guard = Guard::start(d, &config);
    Setup {
        roots: origin_ca.pem(),
        _dir: dir,
        guard,
        up,
        edge,
        other,
    }
}

/// Header spellings and framing a lenient proxy would pass on differently from how it
/// read them: each is refused, or reaches the upstream normalised (one Host, the body
/// re-framed as chunked without the client's Content-Length, no trailers). The client is
/// the shared default site's, so a name that slipped through would reach a tenant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_spellings_and_framing_are_refused_or_normalised_before_the_upstream() {
    let s = setup("require", "").await;
    let config = client_config(&s.roots, Some(&s.other));
    let long = format!("{}.test", vec!["a".repeat(63); 4].join("."));
    let chunked = "5\r\nhello\r\n0\r\n\r\n";
    let cases: Vec<(String, u16)> = vec![
        // Whitespace around the value is not part of it (RFC 9110 §5.5).
        ("Host:\tc.test \t\r\nContent-Length: 0\r\n".into(), 200),
        // Two Hosts spelt in different cases, a folded Host, a space before the colon,
        // a NUL, an over-long name, a bare IPv6 literal, another tenant's name as an
        // IPv6 zone: 400 (or 421 for the other tenant), never forwarded.
        ("HOST: c.test\r\nhost: c.test\r\n".into(), 400),
        ("Host: c.test\r\n a.test\r\n".into(), 400),
        ("Host : c.test\r\n".into(), 400),
        ("Host: a.test\0\r\n".into(), 400),
        (format!("Host: {long}\r\n"), 400),
        ("Host: ::1\r\n".into(), 400),
        ("Host: [::1%25a.test]\r\n".into(), 400),
        ("Host: A.TEST.:443\r\n".into(), 421),
        // Framing: two lengths, a list of lengths, a folded or quoted or unknown coding,
        // chunked twice.
        (
            "Host: c.test\r\nContent-Length: 5\r\nContent-Length: 6\r\n".into(),
            400,
        ),
        ("Host: c.test\r\nContent-Length: 5, 5\r\n".into(), 400),
        (
            "Host: c.test\r\nTransfer-Encoding: chunked\r\n identity\r\n".into(),
            400,
        ),
        (
            "Host: c.test\r\nTransfer-Encoding: \"chunked\"\r\n".into(),
            400,
        ),
        (
            "Host: c.test\r\nTransfer-Encoding: xchunked\r\n".into(),
            400,
        ),
        (
            "Host: c.test\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n".into(),
            501,
        ),
        // CL.TE both ways: the chunked framing wins and the length is not forwarded.
        (
            "Host: c.test\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n".into(),
            200,
        ),
        (
            "Host: c.test\r\nTransfer-Encoding: CHUNKED \r\nContent-Length: 50\r\n".into(),
            200,
        ),
    ];
    let mut forwarded = Vec::new();
    for (n, (head, want)) in cases.iter().enumerate() {
        let body = if head.contains("Content-Length: 0") {
            ""
        } else {
            chunked
        };
        let req = format!("POST /r{n} HTTP/1.1\r\n{head}Connection: close\r\n\r\n{body}");
        let mut tls = connect(s.guard.addr(), "c.test", false, &config)
            .await
            .unwrap();
        let r = exchange(&mut tls, req.as_bytes()).await;
        assert_eq!(r.status, *want, "case {n} {head:.80?}: {:.300}", r.text);
        if *want == 200 {
            forwarded.push(format!("POST /r{n} HTTP/1.1\r\n"));
        }
    }
    // HTTP/1.0 without a Host: 400 as for 1.1.
    let mut tls = connect(s.guard.addr(), "c.test", false, &config)
        .await
        .unwrap();
    let r = exchange(&mut tls, b"GET /h10 HTTP/1.0\r\n\r\n").await;
    assert!(r.text.starts_with("HTTP/1.0 400 "), "{}", r.text);
    // A trailer naming a verdict header is not forwarded (hyper drops request trailers).
    let mut tls = connect(s.guard.addr(), "c.test", false, &config)
        .await
        .unwrap();
    let r = exchange(
        &mut tls,
        b"POST /trailer HTTP/1.1\r\nHost: c.test\r\nTransfer-Encoding: chunked\r\nTrailer: X-Client-Verify\r\n\
          Connection: close\r\n\r\n2\r\nhi\r\n0\r\nX-Client-Verify: SUCCESS\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(s.up.wait_for("POST /trailer").await);
    assert!(
        s.up.wait_for("2\r\nhi\r\n0\r\n\r\n").await,
        "{}",
        s.up.text()
    );

    let seen = s.up.text();
    let requests: Vec<&str> = seen
        .split("\r\n\r\n")
        .filter(|part| part.contains(" HTTP/1.1\r\n"))
        .collect();
    for want in &forwarded {
        assert!(
            seen.contains(want.as_str()),
            "{want:?} not forwarded:\n{seen}"
        );
    }
    assert_eq!(requests.len(), forwarded.len() + 1, "{seen}");
    for req in &requests {
        let lower = req.to_ascii_lowercase();
        assert_eq!(lower.matches("\r\nhost: ").count(), 1, "{req}");
        assert!(!lower.contains("content-length: 3"), "{req}");
        assert!(!lower.contains("content-length: 50"), "{req}");
        assert!(!lower.contains("\r\ntrailer:"), "{req}");
        assert!(!lower.contains("a.test"), "{req}");
    }
    assert_eq!(
        seen.matches("x-client-verify: SUCCESS").count(),
        requests.len()
    );
    // The body went through once per forwarded chunked request, re-framed.
    assert_eq!(
        seen.matches("5\r\nhello\r\n0\r\n\r\n").count(),
        forwarded.len() - 1,
        "{seen}"
    );
}

/// Pipelining: the Host check is made on every request of a connection, not once per
/// connection. Tenant A's edge sends a request for its own host and, in the same write,
/// one for the shared site's: the first is served, the second is 421, and only the first
/// reaches the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pipelined_request_meets_the_host_check() {
    let s = setup("require", "").await;
    let config = client_config(&s.roots, Some(&s.edge));
    let mut tls = connect(s.guard.addr(), "a.test", true, &config)
        .await
        .unwrap();
    let r = exchange(
        &mut tls,
        b"GET /mine HTTP/1.1\r\nHost: a.test\r\n\r\n\
          GET /theirs HTTP/1.1\r\nHost: c.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    let statuses: Vec<&str> = r
        .text
        .match_indices("HTTP/1.1 ")
        .map(|(i, _)| &r.text[i + 9..i + 12])
        .collect();
    assert_eq!(statuses, ["200", "421"], "{}", r.text);
    assert!(s.up.wait_for("GET /mine").await);
    // The upstream has answered /mine; /theirs, had it been forwarded, would be there
    // by now too (it was written in the same segment).
    let r = round_trip(
        &mut s.edge_connection().await,
        b"GET /probe HTTP/1.1\r\nHost: a.test\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    assert!(s.up.wait_for("GET /probe").await);
    assert!(!s.up.text().contains("/theirs"), "{}", s.up.text());
}

impl Setup {
    /// A fresh connection as tenant A's edge.
    async fn edge_connection(&self) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        let config = client_config(&self.roots, Some(&self.edge));
        connect(self.guard.addr(), "a.test", true, &config)
            .await
            .unwrap()
    }
}

/// The reload re-check compares only verdicts: a connection whose verdict does not
/// change is kept whatever the new policy says of it. A certificate-less (NONE)
/// connection accepted while `a.test` was `optional` keeps being forwarded after a
/// reload makes the site `require` — to an upstream that now relies on the guard to let
/// only SUCCESS through. (The same holds for a FAILED one.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_to_require_reload_ends_a_certificate_less_connection() {
    let s = setup("optional", "").await;
    let anonymous = client_config(&s.roots, None);
    let mut tls = connect(s.guard.addr(), "a.test", true, &anonymous)
        .await
        .unwrap();
    let r = round_trip(&mut tls, b"GET /before HTTP/1.1\r\nHost: a.test\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(s.up.wait_for("x-client-verify: NONE").await);

    std::fs::write(&s.guard.config, {
        let text = std::fs::read_to_string(&s.guard.config).unwrap();
        text.replace("mode = \"optional\"", "mode = \"require\"")
    })
    .unwrap();
    s.guard.signal("-HUP");
    s.guard.wait_log("configuration reloaded");

    // The kept-alive connection must meet the new policy: 421 and close, as for a
    // certificate that no longer passes.
    let r = round_trip(&mut tls, b"GET /after HTTP/1.1\r\nHost: a.test\r\n\r\n").await;
    let status = r.as_ref().map_or(0, |r| r.status);
    let seen = s.up.text();
    assert!(
        !seen.contains("GET /after"),
        "a NONE connection reached the upstream of a `require` site after the reload \
         (status {status}):\n{seen}"
    );
    assert_eq!(status, 421, "{r:?}");
}

/// An HTTP/1.1 request must carry a Host (RFC 9112 §3.2: else 400). With an
/// absolute-form target and no Host, the guard checks the target's authority, then
/// forwards the path alone — and the upstream's client adds `Host: <upstream address>`.
/// An upstream that routes by Host then serves its default vhost, whoever owns it: here
/// tenant A's, to a client of the shared site that named the shared site's host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absolute_form_request_without_host_is_refused_not_sent_to_the_default_vhost() {
    if !aop_e2e::have_peer("nginx", "hostile::review::absolute_form") {
        return;
    }
    let dir = tempdir().unwrap();
    let d = dir.path();
    let origin_ca = pki::ca(d, "origin-ca");
    origin_ca.origin("origin", &["a.test", "c.test"]);
    pki::ca(d, "ca-a").client("edge-a");
    let edge_c = pki::ca(d, "ca-c").client("edge-c");
    // nginx's first server block is its default: tenant A's.
    let upstream = aop_e2e::guard::vhosts(
        &d.join("nginx"),
        &[("a.test", "tenant A"), ("c.test", "tenant C")],
    );
    let site = |head: &str, trust: &str| {
        format!(
            "\n[[site]]\n{head}\ncert = \"origin-ca/origin/cert.pem\"\nkey = \"origin-ca/origin/key.pem\"\n\
             trust = [\"{trust}/ca.pem\"]\nupstream = \"http://127.0.0.1:{}\"\n",
            upstream.port
        )
    };
    let guard = Guard::start(
        d,
        &format!(
            "{}{}",
            site("name = \"tenant-a\"\nhostnames = [\"a.test\"]", "ca-a"),
            site("name = \"shared\"\ndefault = true", "ca-c")
        ),
    );
    let config = client_config(&origin_ca.pem(), Some(&edge_c));
    // The control: with a Host, the shared client gets the shared tenant.
    let mut tls = connect(guard.addr(), "c.test", false, &config)
        .await
        .unwrap();
    let r = exchange(
        &mut tls,
        b"GET http://c.test/ HTTP/1.1\r\nHost: c.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!((r.status, r.body()), (200, "tenant C\n"), "{}", r.text);
    // HTTP/1.1 without Host: 400 (RFC 9112 §3.2), absolute-form or not.
    let mut tls = connect(guard.addr(), "c.test", false, &config)
        .await
        .unwrap();
    let req = "GET http://c.test/ HTTP/1.1\r\nConnection: close\r\n\r\n";
    let r = exchange(&mut tls, req.as_bytes()).await;
    assert!(!r.text.contains("tenant"), "{req:?}:\n{}", r.text);
    assert_eq!(r.status, 400, "{req:?}: {}", r.text);
    // HTTP/1.0 may name its host in the target alone: the upstream gets that name (the
    // one checked) as Host, so the right tenant answers.
    let mut tls = connect(guard.addr(), "c.test", false, &config)
        .await
        .unwrap();
    let req = "GET http://c.test/ HTTP/1.0\r\n\r\n";
    let r = exchange(&mut tls, req.as_bytes()).await;
    assert!(r.text.starts_with("HTTP/1.0 200"), "{req:?}: {}", r.text);
    assert_eq!(r.body(), "tenant C\n", "{req:?}: {}", r.text);
}

/// The guard is the upstream's trusted proxy, and applications behind a proxy commonly
/// route or build URLs by `X-Forwarded-Host` / `Forwarded: host=` (Django's
/// USE_X_FORWARDED_HOST, Rails, Express's `trust proxy`, Spring's ForwardedHeaderFilter).
/// A client of the shared site names tenant A there, past every Host check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_host_headers_from_the_client_do_not_reach_the_upstream() {
    let s = setup("require", "").await;
    let config = client_config(&s.roots, Some(&s.other));
    let mut tls = connect(s.guard.addr(), "c.test", false, &config)
        .await
        .unwrap();
    // Each forwarding header naming another tenant: 421, and nothing reaches the
    // upstream.
    for header in [
        "X-Forwarded-Host: a.test",
        "X-Forwarded-Host: c.test, a.test",
        "Forwarded: for=1.2.3.4;host=a.test;proto=https",
        "Forwarded: for=1.2.3.4, host=\"a.test:443\"",
        "X-Host: a.test",
        "X-Original-Host: a.test",
    ] {
        let mut tls = connect(s.guard.addr(), "c.test", false, &config)
            .await
            .unwrap();
        let req =
            format!("GET /xfh HTTP/1.1\r\nHost: c.test\r\n{header}\r\nConnection: close\r\n\r\n");
        let r = exchange(&mut tls, req.as_bytes()).await;
        assert_eq!(r.status, 421, "{header}: {}", r.text);
    }
    // Naming the connection's own site passes; X-Forwarded-Server is dropped.
    let r = exchange(
        &mut tls,
        b"GET /xfh HTTP/1.1\r\nHost: c.test\r\nX-Forwarded-Host: c.test\r\n\
          Forwarded: for=1.2.3.4;host=c.test;proto=https\r\nX-Forwarded-Server: a.test\r\n\
          Connection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(s.up.wait_for("GET /xfh").await);
    let seen = s.up.text();
    assert!(
        !seen.contains("a.test"),
        "another tenant's name reached the upstream in a forwarding header:\n{seen}"
    );
}

/// A certificate is public: an edge's goes over the wire in clear under TLS 1.2, and a
/// CDN's origin-pull certificate is often published. A client that has it but not its
/// key sends it, then hangs up before its CertificateVerify — so it never proves
/// possession. The verifier ran on the Certificate message, the signature check never
/// ran, and the connection is logged and counted as `SUCCESS` (completed=false): anyone
/// can write the edge's identity into the origin's verdict log and SUCCESS metrics.
/// "The certificate passed" must mean "and the client proved it holds the key".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_sent_without_proof_of_its_key_is_never_logged_success() {
    let s = setup("require", "").await;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in aop_pki::load_certificates(&s.roots).unwrap() {
        roots.add(c).unwrap();
    }
    // The edge's public chain, with some other key (it is never used: the flight is cut
    // before the CertificateVerify leaves).
    let chain = aop_pki::load_certificates(&s.edge.cert).unwrap();
    let key = provider
        .key_provider
        .load_private_key(aop_pki::load_private_key(&s.other.key).unwrap())
        .unwrap();
    let stolen = Arc::new(rustls::sign::CertifiedKey::new(chain, key));
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_cert_resolver(Arc::new(aop_e2e::origin::WrongKey(stolen)));
    for _ in 0..3 {
        let tcp = tokio::net::TcpStream::connect(s.guard.addr())
            .await
            .unwrap();
        let cut = Hooked {
            inner: tcp,
            hook: cut_after_certificate(),
        };
        let _ = tokio::time::timeout(
            Duration::from_millis(300),
            tokio_rustls::TlsConnector::from(Arc::new(config.clone())).connect(
                rustls::pki_types::ServerName::try_from("a.test").unwrap(),
                cut,
            ),
        )
        .await;
    }
    // Each of the three: NONE, with the certificate's fields (the verifier did check it)
    // and why it proves nothing.
    let lines = aop_e2e::wait_until("three verdict lines", Duration::from_secs(10), || {
        let lines = s.guard.lines_with("client certificate verdict");
        (lines.len() >= 3).then_some(lines)
    });
    assert_eq!(lines.len(), 3, "{lines:#?}");
    for line in &lines {
        for want in [
            "verdict=NONE reason=handshake_error",
            "subject=\"CN=edge\"",
            "the client never proved it holds its key (no CertificateVerify)",
        ] {
            assert!(line.contains(want), "{want} in {line}");
        }
    }
    let metrics = s.guard.metrics_text();
    assert_eq!(
        aop_e2e::metric_total(&metrics, "aop_handshakes_total", "verdict=\"SUCCESS\""),
        0,
        "{metrics}"
    );
    assert_eq!(
        aop_e2e::metric(
            &metrics,
            "aop_handshakes_total{site=\"a\",verdict=\"NONE\",reason=\"handshake_error\"}"
        ),
        Some(3),
        "{metrics}"
    );
}

/// The access log writes client-supplied header values (X-Request-Id, CF-Connecting-IP,
/// X-Forwarded-For) unquoted into a `key=value` line. A certificate-less client of an
/// optional site writes `verdict=SUCCESS` and a peer of its choosing ahead of the real
/// fields: a reader or parser that takes the first `verdict=` sees SUCCESS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_header_values_cannot_forge_fields_of_the_access_log() {
    let s = setup("optional", "").await;
    let anonymous = client_config(&s.roots, None);
    let mut tls = connect(s.guard.addr(), "a.test", true, &anonymous)
        .await
        .unwrap();
    let r = exchange(
        &mut tls,
        b"GET /forged HTTP/1.1\r\nHost: a.test\r\n\
          X-Request-Id: x verdict=SUCCESS peer=10.9.9.9:443 site=a\r\n\
          CF-Connecting-IP: 1.2.3.4 verdict=SUCCESS\r\nX-Forwarded-For: 1.1.1.1 status=200\r\n\
          Connection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let line = s.guard.wait_log("path=/forged");
    // Split the line into fields as a logfmt reader does: on spaces outside quotes.
    let (mut fields, mut field, mut quoted, mut escaped) =
        (Vec::new(), String::new(), false, false);
    for c in line.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ' ' if !quoted => {
                fields.push(std::mem::take(&mut field));
                continue;
            }
            _ => {}
        }
        field.push(c);
    }
    fields.push(field);
    let keys: Vec<&String> = fields
        .iter()
        .filter(|f| f.starts_with("verdict=") || f.starts_with("peer="))
        .collect();
    assert_eq!(
        keys.len(),
        2,
        "client header values added fields to the access log line: {line}"
    );
    assert!(fields.contains(&"verdict=NONE".to_owned()), "{line}");
    assert!(
        fields.contains(&"cf_connecting_ip=\"1.2.3.4 verdict=SUCCESS\"".to_owned()),
        "{line}"
    );
    // And the forged request id was replaced, not echoed.
    assert!(!line.contains("10.9.9.9"), "{line}");
}

/// For a TLS 1.2 client: deliver its Certificate message and nothing after it. The record
/// carrying Certificate, ClientKeyExchange and CertificateVerify is cut to the
/// Certificate, and every later write is swallowed.
fn cut_after_certificate() -> WriteHook {
    let mut cut = false;
    Box::new(move |inner: &mut tokio::net::TcpStream, cx, buf: &[u8]| {
        if cut {
            return std::task::Poll::Ready(Ok(buf.len()));
        }
        // A handshake record whose first message is a Certificate (type 11).
        if buf.len() > 9 && buf[0] == 0x16 && buf[5] == 0x0b {
            let msg =
                4 + (usize::from(buf[6]) << 16 | usize::from(buf[7]) << 8 | usize::from(buf[8]));
            let mut record = vec![0x16, buf[1], buf[2], (msg >> 8) as u8, msg as u8];
            record.extend_from_slice(&buf[5..5 + msg]);
            let n = inner.try_write(&record).unwrap();
            assert_eq!(n, record.len());
            cut = true;
            return std::task::Poll::Ready(Ok(buf.len()));
        }
        tokio::io::AsyncWrite::poll_write(std::pin::Pin::new(inner), cx, buf)
    })
}

/// What a [`Hooked`] stream does with each write, given the TCP stream under it.
type WriteHook = Box<
    dyn FnMut(
            &mut tokio::net::TcpStream,
            &mut std::task::Context<'_>,
            &[u8],
        ) -> std::task::Poll<std::io::Result<usize>>
        + Send,
>;

/// A client's TCP stream whose writes go through a [`WriteHook`] (reads pass straight
/// on): how the attacks here cut or delay what the client sends.
struct Hooked {
    inner: tokio::net::TcpStream,
    hook: WriteHook,
}

impl tokio::io::AsyncRead for Hooked {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Hooked {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        (this.hook)(&mut this.inner, cx, buf)
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The budget closed the *oldest* handshake when `max_handshakes` were in progress: an
/// attacker who opens fresh TCP connections (no ClientHello) faster than
/// `max_handshakes / (the edge's handshake time)`, from more addresses than
/// `max_handshakes / max_handshakes_per_peer`, had every handshake closed before it
/// ended — the edge's included. Now silent connections go first, and the edge's
/// handshake, whose ClientHello is in, survives. Scaled down: 8 handshakes, 2 per
/// address, 32 attacking loopback addresses, about 1,000 connections a second; the
/// edge's later flights are delayed 20 ms (a 40 ms round trip).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_churn_of_fresh_connections_from_many_addresses_does_not_lock_the_edge_out() {
    let s = setup(
        "require",
        "max_handshakes = 8\nmax_handshakes_per_peer = 2\nhandshake_timeout_secs = 10\n",
    )
    .await;
    let addr = s.guard.addr();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let opened = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let attacker = {
        let (stop, opened) = (stop.clone(), opened.clone());
        tokio::spawn(async move {
            let mut held = std::collections::VecDeque::new();
            let mut i = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let ip = std::net::Ipv4Addr::new(127, 0, 1, 1 + (i % 32) as u8);
                i += 1;
                let sock = tokio::net::TcpSocket::new_v4().unwrap();
                if sock.bind((ip, 0).into()).is_err() {
                    continue;
                }
                if let Ok(c) = sock.connect(addr).await {
                    opened.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    held.push_back(c);
                    if held.len() > 64 {
                        held.pop_front();
                    }
                }
                // About 1,000 connections a second.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    // Let the churn start.
    aop_e2e::wait_until_async("100 attacking connections", Duration::from_secs(20), || {
        (opened.load(std::sync::atomic::Ordering::Relaxed) >= 100).then_some(())
    })
    .await;
    let config = client_config(&s.roots, Some(&s.edge));
    let mut served = 0;
    for _ in 0..5 {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let slow = Hooked {
            inner: tcp,
            hook: delayed(Duration::from_millis(20)),
        };
        let r = async {
            let mut tls = tokio_rustls::TlsConnector::from(config.clone())
                .connect(
                    rustls::pki_types::ServerName::try_from("a.test").unwrap(),
                    slow,
                )
                .await
                .ok()?;
            round_trip(&mut tls, b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n").await
        }
        .await;
        if r.is_some_and(|r| r.status == 200) {
            served += 1;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    attacker.await.unwrap();
    let evicted = s
        .guard
        .lines_with("closed=max_handshakes")
        .into_iter()
        .filter(|l| l.contains("peer=127.0.0.1:"))
        .count();
    eprintln!(
        "attacker opened {} connections; edge served {served}/5; edge handshakes closed by the budget: {evicted}",
        opened.load(std::sync::atomic::Ordering::Relaxed)
    );
    assert_eq!(
        served, 5,
        "the edge was locked out by a churn of fresh connections"
    );
}

/// Writes that reach the peer `delay` late (each write after the first is held
/// back that long before it is passed on): the client half of a link with a round trip
/// of at least twice `delay`. The first write (the ClientHello) is not delayed: on a real
/// link it leaves with the TCP handshake's last ACK and reaches the origin with it, so
/// the origin sees the connection and its first bytes together.
fn delayed(delay: Duration) -> WriteHook {
    let mut first = true;
    let mut sleep: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
    Box::new(move |inner: &mut tokio::net::TcpStream, cx, buf: &[u8]| {
        if first {
            let r = tokio::io::AsyncWrite::poll_write(std::pin::Pin::new(inner), cx, buf);
            first = r.is_pending();
            return r;
        }
        let held = sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep(delay)));
        if held.as_mut().poll(cx).is_pending() {
            return std::task::Poll::Pending;
        }
        let r = tokio::io::AsyncWrite::poll_write(std::pin::Pin::new(inner), cx, buf);
        if r.is_ready() {
            sleep = None;
        }
        r
    })
}

/// "Authenticated" in the budget means a certificate some site accepts — any site, the
/// shared default included — and authenticated connections have no per-peer cap and are
/// never closed to make room. One client of the shared site (another tenant, or anyone
/// its looser CA issued to) holds every slot open with requests inside the keep-alive
/// time, and tenant A's edge is refused at accept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_sites_clients_cannot_take_every_slot_from_the_edge() {
    let s = setup(
        "require",
        "max_connections = 6\nkeepalive_timeout_secs = 30\n",
    )
    .await;
    let held = s.hold(&s.other, "c.test", 6, "/hold").await;
    s.must_serve(
        &s.edge,
        "/edge",
        "tenant A's edge was locked out by the shared site's client",
    )
    .await;
    drop(held);
}

/// The budget's class is fixed at the handshake. After a reload turns an `optional`
/// site's SUCCESS connections into FAILED ones (their CA removed), they still count as
/// authenticated: never closed to make room, so the certificate the new policy trusts is
/// refused at accept while they hold the slots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_a_reload_demotes_give_way_to_the_new_trust() {
    let s = setup(
        "optional",
        "max_connections = 3\nkeepalive_timeout_secs = 30\n",
    )
    .await;
    let mut held = s.hold(&s.edge, "a.test", 3, "/old").await;
    std::fs::write(&s.guard.config, {
        let text = std::fs::read_to_string(&s.guard.config).unwrap();
        text.replacen(
            "trust = [\"edge-ca/ca.pem\"]",
            "trust = [\"other-ca/ca.pem\"]",
            1,
        )
    })
    .unwrap();
    s.guard.signal("-HUP");
    s.guard.wait_log("configuration reloaded");
    for tls in &mut held {
        let r = round_trip(tls, b"GET /demoted HTTP/1.1\r\nHost: a.test\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(r.status, 200);
    }
    assert!(s.up.wait_for("x-client-verify: FAILED:unknown_ca").await);
    s.must_serve(
        &s.other,
        "/new",
        "the newly trusted certificate was refused while demoted connections held every slot",
    )
    .await;
}
