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
