//! `certtool probe` against origins that are open, shut, or ambiguous (issue 11, finding 2):
//! the negative test must never say "held" while the back door is open.
//!
//! Every row of the decision table (README, "The edge side, and the negative test") runs
//! against a real origin in both directions, `--expect reject` and `--expect accept`, and
//! asserts the exit code and the exact line printed. The origins: nginx (verify on, off and
//! optional; refusing and other statuses), aop-verify's example origin (require and
//! optional), `openssl s_server -www`, and small rustls servers in this process for what no
//! real server does on request (hang up after the handshake, or during it).

use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::path::Path;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::shapes::{OUTCOMES, Probe};
use aop_e2e::nginx::Nginx;
use aop_e2e::pki::{self, Leaf};
use aop_e2e::{Running, certtool, code, have_peer, stderr, stdout};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The origin's CA and certificate (for example.com), the edge's CA and certificate
/// ([`pki::World`]), and an intruder's certificate from a CA nobody trusts.
struct World {
    base: pki::World,
    intruder: Leaf,
}

impl std::ops::Deref for World {
    type Target = pki::World;

    fn deref(&self) -> &pki::World {
        &self.base
    }
}

fn world() -> World {
    let base = pki::World::new(&["example.com"]);
    let intruder = pki::ca(base.path(), "intruder-ca").client("intruder");
    World { base, intruder }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Who the probe is: no certificate, the edge's, or an intruder's.
#[derive(Clone, Copy, Debug)]
enum Client {
    Nobody,
    Edge,
    Intruder,
}

impl World {
    /// `certtool probe https://example.com:PORT/PATH --expect EXPECT [--json]` as `who`:
    /// the exit code and stdout.
    fn probe(&self, port: u16, path: &str, who: Client, expect: &str, json: bool) -> (i32, String) {
        self.probe_within(port, path, who, expect, json, "5")
    }

    /// [`World::probe`] with `--timeout SECONDS`.
    fn probe_within(
        &self,
        port: u16,
        path: &str,
        who: Client,
        expect: &str,
        json: bool,
        seconds: &str,
    ) -> (i32, String) {
        let url = format!("https://example.com:{port}{path}");
        let resolve = format!("example.com:{port}:127.0.0.1");
        let ca = self.origin_ca.pem();
        let mut args = vec![
            "probe",
            &url,
            "--resolve",
            &resolve,
            "--cacert",
            s(&ca),
            "--expect",
            expect,
            "--timeout",
            seconds,
        ];
        let leaf = match who {
            Client::Nobody => None,
            Client::Edge => Some(&self.edge),
            Client::Intruder => Some(&self.intruder),
        };
        if let Some(l) = leaf {
            args.extend(["--cert", s(&l.cert), "--key", s(&l.key)]);
        }
        if json {
            args.push("--json");
        }
        let o = certtool(&args);
        assert!(stderr(&o).is_empty(), "{args:?}: {}", stderr(&o));
        (code(&o), stdout(&o))
    }

    /// Probe in both directions and assert each exit code and `expect …` line exactly.
    #[track_caller]
    fn row(&self, port: u16, path: &str, who: Client, reject: (i32, &str), accept: (i32, &str)) {
        for (expect, (want_code, want_line)) in [("reject", reject), ("accept", accept)] {
            let (c, out) = self.probe(port, path, who, expect, false);
            let line = out
                .lines()
                .find(|l| l.starts_with("  expect "))
                .unwrap_or_else(|| panic!("no expect line in {out}"));
            assert_eq!(
                line,
                format!("  expect {expect}: {want_line}"),
                "{path} as {who:?}, --expect {expect}:\n{out}"
            );
            assert_eq!(c, want_code, "{path} as {who:?}, --expect {expect}:\n{out}");
        }
    }

    /// The JSON result of one probe, checked against docs/json.md's schema first.
    fn json(&self, port: u16, path: &str, who: Client, expect: &str) -> serde_json::Value {
        let (c, out) = self.probe(port, path, who, expect, true);
        let typed: Probe = serde_json::from_str(&out).unwrap();
        assert_eq!(typed.expect, expect);
        assert!(typed.server_verified);
        assert_eq!(typed.presented.is_some(), !matches!(who, Client::Nobody));
        let r = &typed.results[0];
        assert!(OUTCOMES.contains(&r.outcome.as_str()), "{out}");
        assert!(
            ["held", "open", "failed", "inconclusive"].contains(&r.conclusion.as_str()),
            "{out}"
        );
        assert_eq!(r.held, r.conclusion == "held", "{out}");
        assert_eq!((typed.held, c), (r.held, i32::from(!r.held)), "{out}");
        assert!(!r.summary.is_empty() && r.sni == "example.com" && r.url.ends_with(path));
        // No connection, no TLS; a handshake that completed knows whether it was asked.
        if r.address.is_none() {
            assert!(
                r.tls_version.is_none() && r.certificate_requested.is_none(),
                "{out}"
            );
        }
        if r.tls_version.is_some() {
            assert!(r.certificate_requested.is_some(), "{out}");
        }
        let j: serde_json::Value = serde_json::from_str(&out).unwrap();
        j["results"][0].clone()
    }

    fn nginx(&self, name: &str, server: &str) -> Nginx {
        Nginx::start_with(
            &self.dir.path().join(name),
            &self.server.cert,
            &self.server.key,
            server,
        )
    }
}

const NOTHING: &str = " — this proves nothing either way";

// ---- nginx ----

#[test]
fn nginx_optional_with_a_none_verdict_is_open() {
    if !have_peer("nginx", "nginx_optional_with_a_none_verdict_is_open") {
        return;
    }
    let w = world();
    let nginx = w.nginx(
        "optional",
        &format!(
            r#"ssl_verify_client optional;
        ssl_client_certificate {};
        add_header X-Client-Verify $ssl_client_verify always;
        location / {{ return 200 "welcome\n"; }}"#,
            s(&w.edge_ca.pem())
        ),
    );
    // The attack: no certificate, and the origin serves content with X-Client-Verify: NONE.
    w.row(
        nginx.port,
        "/",
        Client::Nobody,
        (1, "OPEN: the origin answered HTTP 200 (X-Client-Verify: NONE) to a client with no certificate; it asked for one but did not require it — its back door is OPEN"),
        (0, "held: the origin answered HTTP 200 (X-Client-Verify: NONE) to a client with no certificate"),
    );
    // `optional` still refuses a certificate that fails (with its 400 page).
    let bad = "the origin answered HTTP 400 with nginx's 'The SSL certificate error' page";
    w.row(
        nginx.port,
        "/",
        Client::Intruder,
        (0, &format!("held: {bad}")),
        (1, &format!("FAILED: {bad}")),
    );
    w.row(
        nginx.port,
        "/",
        Client::Edge,
        (1, "OPEN: the origin answered HTTP 200 (X-Client-Verify: SUCCESS) to this client certificate — its back door is OPEN"),
        (0, "held: the origin answered HTTP 200 (X-Client-Verify: SUCCESS) to this client certificate"),
    );
    let j = w.json(nginx.port, "/", Client::Nobody, "reject");
    assert_eq!(j["outcome"], "accepted");
    assert_eq!(j["conclusion"], "open");
    assert_eq!(j["http_status"], 200);
    assert_eq!(j["verdict"], "NONE");
    assert_eq!(j["certificate_requested"], true);
    assert_eq!(j["certificate_sent"], false);
    assert_eq!(j["held"], false);
    drop(nginx);

    // `optional_no_ca` serves an intruder's certificate and says it failed: open, and
    // not accepted either.
    let nginx = w.nginx(
        "optional-no-ca",
        &format!(
            r#"ssl_verify_client optional_no_ca;
        ssl_client_certificate {};
        add_header X-Client-Verify $ssl_client_verify always;
        location / {{ return 200 "welcome\n"; }}"#,
            s(&w.edge_ca.pem())
        ),
    );
    let j = w.json(nginx.port, "/", Client::Intruder, "accept");
    let verdict = j["verdict"].as_str().unwrap().to_owned();
    assert!(verdict.starts_with("FAILED:"), "{j}");
    w.row(
        nginx.port,
        "/",
        Client::Intruder,
        (1, &format!("OPEN: the origin answered HTTP 200 (X-Client-Verify: {verdict}) to this client certificate — its back door is OPEN")),
        (1, &format!("FAILED: the origin answered HTTP 200 but its X-Client-Verify header says {verdict}: it did not accept this client certificate")),
    );
}

#[test]
fn nginx_verify_off_with_a_refusal_page_as_content_is_open() {
    if !have_peer(
        "nginx",
        "nginx_verify_off_with_a_refusal_page_as_content_is_open",
    ) {
        return;
    }
    let w = world();
    let nginx = w.nginx(
        "off",
        r#"ssl_verify_client off;
        location / { return 200 "<center>No required SSL certificate was sent</center>\n"; }"#,
    );
    w.row(
        nginx.port,
        "/",
        Client::Nobody,
        (1, "OPEN: the origin answered HTTP 200 to a client with no certificate; it did not ask for one — its back door is OPEN"),
        (0, "held: the origin answered HTTP 200 to a client with no certificate"),
    );
}

#[test]
fn nginx_verify_on_refuses_with_its_400_pages() {
    if !have_peer("nginx", "nginx_verify_on_refuses_with_its_400_pages") {
        return;
    }
    let w = world();
    let nginx = w.nginx(
        "on",
        &format!(
            r#"ssl_verify_client on;
        ssl_client_certificate {};
        location / {{ return 200 "welcome\n"; }}"#,
            s(&w.edge_ca.pem())
        ),
    );
    // nginx completes the handshake and answers 400 with its page: the refusal.
    let no_cert =
        "the origin answered HTTP 400 with nginx's 'No required SSL certificate was sent' page";
    w.row(
        nginx.port,
        "/",
        Client::Nobody,
        (0, &format!("held: {no_cert}")),
        (1, &format!("FAILED: {no_cert}")),
    );
    let bad_cert = "the origin answered HTTP 400 with nginx's 'The SSL certificate error' page";
    w.row(
        nginx.port,
        "/",
        Client::Intruder,
        (0, &format!("held: {bad_cert}")),
        (1, &format!("FAILED: {bad_cert}")),
    );
    w.row(
        nginx.port,
        "/",
        Client::Edge,
        (
            1,
            "OPEN: the origin answered HTTP 200 to this client certificate — its back door is OPEN",
        ),
        (
            0,
            "held: the origin answered HTTP 200 to this client certificate",
        ),
    );
    // What nginx really sent, as the probe reports it.
    let j = w.json(nginx.port, "/", Client::Nobody, "reject");
    assert_eq!(j["outcome"], "refused_http");
    assert_eq!(j["http_status"], 400);
    assert_eq!(j["nginx_page"], "No required SSL certificate was sent");
    assert_eq!(j["certificate_requested"], true);
    assert_eq!(j["conclusion"], "held");
    assert_eq!(j["summary"], no_cert);
}

#[test]
fn nginx_statuses_refuse_serve_or_prove_nothing() {
    if !have_peer("nginx", "nginx_statuses_refuse_serve_or_prove_nothing") {
        return;
    }
    let w = world();
    let nginx = w.nginx(
        "statuses",
        r#"ssl_verify_client off;
        location = /495 { return 495; }
        location = /496 { return 496; }
        location = /495-status { return 495 "bad certificate\n"; }
        location = /496-status { return 496 "no certificate\n"; }
        location = /401 { return 401; }
        location = /403 { return 403; }
        location = /421 { return 421; }
        location = /400 { return 400; }
        location = /404 { return 404; }
        location = /500 { return 500; }
        location = /302 { return 302 /elsewhere; }
        location = /204 { return 204; }"#,
    );
    let p = nginx.port;
    let refused = |path: &str, why: &str| {
        w.row(
            p,
            path,
            Client::Nobody,
            (0, &format!("held: the origin answered HTTP {why}")),
            (1, &format!("FAILED: the origin answered HTTP {why}")),
        );
    };
    // `return 495;` and `return 496;` reach the wire as nginx's 400 pages.
    refused("/495", "400 with nginx's 'The SSL certificate error' page");
    refused(
        "/496",
        "400 with nginx's 'No required SSL certificate was sent' page",
    );
    // With a body, nginx sends the status itself.
    refused("/495-status", "495 SSL Certificate Error");
    refused("/496-status", "496 SSL Certificate Required");
    refused("/401", "401 Unauthorized");
    refused("/403", "403 Forbidden");
    refused("/421", "421 Misdirected Request");
    let status = w.json(p, "/495-status", Client::Nobody, "reject");
    assert_eq!(
        (
            &status["outcome"],
            &status["http_status"],
            &status["nginx_page"]
        ),
        (
            &"refused_http".into(),
            &495.into(),
            &serde_json::Value::Null
        )
    );

    // Content served (2xx, 3xx): open, and accepted.
    for (path, status) in [("/302", 302), ("/204", 204)] {
        w.row(
            p,
            path,
            Client::Nobody,
            (1, &format!("OPEN: the origin answered HTTP {status} to a client with no certificate; it did not ask for one — its back door is OPEN")),
            (0, &format!("held: the origin answered HTTP {status} to a client with no certificate")),
        );
    }
    // Any other status proves nothing, nginx's plain 400 page included.
    for status in [400, 404, 500] {
        let line = format!(
            "inconclusive: the origin answered HTTP {status}, which neither serves content nor refuses a certificate{NOTHING}"
        );
        w.row(
            p,
            &format!("/{status}"),
            Client::Nobody,
            (1, &line),
            (1, &line),
        );
    }
}

// ---- aop-verify's example origin, openssl s_server ----

/// aop-verify's example origin (`--mode require|optional`), trusting the edge CA.
fn example_origin(w: &World, mode: &str) -> (Running, u16) {
    let (origin, port, _log) =
        aop_e2e::example_origin(&w.server, &w.edge_ca.pem(), &["--mode", mode]);
    (origin, port)
}

#[test]
fn aop_verify_require_refuses_with_an_alert_and_optional_is_open() {
    let w = world();
    let (_origin, port) = example_origin(&w, "require");
    let alert = "the origin aborted the TLS handshake with alert certificate_required";
    w.row(
        port,
        "/",
        Client::Nobody,
        (0, &format!("held: {alert}")),
        (1, &format!("FAILED: {alert}")),
    );
    let j = w.json(port, "/", Client::Intruder, "reject");
    let alert = format!(
        "the origin aborted the TLS handshake with alert {}",
        j["alert"].as_str().unwrap()
    );
    assert_eq!(j["outcome"], "refused_tls");
    w.row(
        port,
        "/",
        Client::Intruder,
        (0, &format!("held: {alert}")),
        (1, &format!("FAILED: {alert}")),
    );
    w.row(
        port,
        "/",
        Client::Edge,
        (1, "OPEN: the origin answered HTTP 200 (X-Client-Verify: SUCCESS) to this client certificate — its back door is OPEN"),
        (0, "held: the origin answered HTTP 200 (X-Client-Verify: SUCCESS) to this client certificate"),
    );

    // `--mode optional`: the example's handler serves everyone and says the verdict.
    let (_origin, port) = example_origin(&w, "optional");
    w.row(
        port,
        "/",
        Client::Nobody,
        (1, "OPEN: the origin answered HTTP 200 (X-Client-Verify: NONE) to a client with no certificate; it asked for one but did not require it — its back door is OPEN"),
        (0, "held: the origin answered HTTP 200 (X-Client-Verify: NONE) to a client with no certificate"),
    );
    let j = w.json(port, "/", Client::Intruder, "accept");
    let verdict = j["verdict"].as_str().unwrap().to_owned();
    assert!(verdict.starts_with("FAILED:"), "{j}");
    w.row(
        port,
        "/",
        Client::Intruder,
        (1, &format!("OPEN: the origin answered HTTP 200 (X-Client-Verify: {verdict}) to this client certificate — its back door is OPEN")),
        (1, &format!("FAILED: the origin answered HTTP 200 but its X-Client-Verify header says {verdict}: it did not accept this client certificate")),
    );
}

#[test]
fn openssl_s_server_without_verify_is_open() {
    if !have_peer("openssl", "openssl_s_server_without_verify_is_open") {
        return;
    }
    let w = world();
    let (server, port) =
        aop_e2e::openssl_s_server(&["-cert", s(&w.server.cert), "-key", s(&w.server.key), "-www"]);
    w.row(
        port,
        "/",
        Client::Nobody,
        (1, "OPEN: the origin answered HTTP 200 to a client with no certificate; it did not ask for one — its back door is OPEN"),
        (0, "held: the origin answered HTTP 200 to a client with no certificate"),
    );
    // Holding a certificate changes nothing when the origin never asks for it.
    w.row(
        port,
        "/",
        Client::Edge,
        (1, "OPEN: the origin answered HTTP 200 to a client with no certificate; it did not ask for one — its back door is OPEN"),
        (0, "held: the origin answered HTTP 200 to a client with no certificate"),
    );
    drop(server);
}

// ---- hang-ups and alerts: small rustls origins in this process ----

/// What the in-process origin does to each connection.
#[derive(Clone, Copy)]
enum Hangup {
    /// Complete the handshake, read the request, send close_notify and close.
    AfterHandshake,
    /// Complete the handshake, then close the socket without a TLS close_notify.
    AfterHandshakeAbruptly,
    /// Answer the ClientHello, read the client's next flight, and close: TLS 1.2, so the
    /// client is still waiting for the origin's Finished.
    InHandshake,
    /// TLS 1.2: answer the ClientHello but for its last record (ServerHelloDone), and
    /// close: the client has the CertificateRequest but cannot answer it yet.
    CutFlight,
    /// Complete the handshake and say nothing, until the client goes away.
    Silent,
    /// Complete the handshake, send a 400 head, then body bytes for as long as the client
    /// reads them.
    Endless,
}

/// A rustls origin on a free port (a thread serving connections until the test ends):
/// it asks for a client certificate from the edge CA (optionally) if `ask`.
fn rustls_origin(w: &World, ask: bool, hangup: Hangup) -> u16 {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = match hangup {
        Hangup::InHandshake | Hangup::CutFlight => &[&rustls::version::TLS12],
        _ => &[&rustls::version::TLS13],
    };
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .unwrap();
    let builder = if ask {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(w.edge_ca.pem()).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .unwrap();
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let chain = CertificateDer::pem_file_iter(&w.server.cert)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(&w.server.key).unwrap();
    let config = Arc::new(builder.with_single_cert(chain, key).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for tcp in listener.incoming() {
            let Ok(mut tcp) = tcp else { continue };
            let config = config.clone();
            std::thread::spawn(move || {
                let _ = tcp.set_read_timeout(Some(Duration::from_secs(10)));
                let mut conn = rustls::ServerConnection::new(config).unwrap();
                match hangup {
                    Hangup::InHandshake | Hangup::CutFlight => {
                        // Read until the ClientHello has an answer, and take the answer.
                        while !conn.wants_write() {
                            if conn.read_tls(&mut tcp).unwrap_or(0) == 0 {
                                return;
                            }
                            if conn.process_new_packets().is_err() {
                                return;
                            }
                        }
                        let mut answer = Vec::new();
                        while conn.wants_write() {
                            conn.write_tls(&mut answer).unwrap();
                        }
                        if let Hangup::CutFlight = hangup {
                            // ServerHelloDone (0e 00 00 00) ends the last record, in the
                            // clear before ChangeCipherSpec: drop it, and its record if it
                            // was alone there.
                            assert!(answer.ends_with(&[0x0e, 0, 0, 0]));
                            let mut at = 0;
                            while at + 5 + record_len(&answer[at..]) < answer.len() {
                                at += 5 + record_len(&answer[at..]);
                            }
                            let cut = if record_len(&answer[at..]) == 4 {
                                at
                            } else {
                                let len = u16::try_from(record_len(&answer[at..]) - 4).unwrap();
                                answer[at + 3..at + 5].copy_from_slice(&len.to_be_bytes());
                                answer.len() - 4
                            };
                            let _ = tcp.write_all(&answer[..cut]);
                        } else {
                            // Send it, and hang up when the client's certificate flight
                            // arrives.
                            let _ = tcp.write_all(&answer);
                            let mut flight = [0u8; 4096];
                            let _ = tcp.read(&mut flight);
                        }
                    }
                    _ => {
                        while conn.is_handshaking() {
                            if conn.complete_io(&mut tcp).is_err() {
                                return;
                            }
                        }
                        if let Hangup::Silent = hangup {
                            let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
                            let mut sink = [0u8; 4096];
                            while tls.read(&mut sink).is_ok_and(|n| n > 0) {}
                        }
                        if let Hangup::Endless = hangup {
                            let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
                            let mut ok = tls.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").is_ok();
                            while ok {
                                ok = tls.write_all(&[b'x'; 4096]).is_ok();
                            }
                        }
                        if let Hangup::AfterHandshake = hangup {
                            let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
                            let mut request = [0u8; 4096];
                            let _ = tls.read(&mut request);
                            conn.send_close_notify();
                            let _ = conn.write_tls(&mut tcp);
                            let _ = tcp.flush();
                        }
                    }
                }
                // Dropping the socket closes it; unread data makes that a reset.
            });
        }
    });
    port
}

/// The length of the TLS record starting `bytes`.
fn record_len(bytes: &[u8]) -> usize {
    usize::from(u16::from_be_bytes([bytes[3], bytes[4]]))
}

#[test]
fn a_close_after_the_handshake_proves_nothing() {
    let w = world();
    let closed = format!(
        "inconclusive: the origin completed the TLS handshake and closed the connection without answering{NOTHING}"
    );
    for (ask, hangup) in [
        (false, Hangup::AfterHandshake),
        (true, Hangup::AfterHandshake),
        (true, Hangup::AfterHandshakeAbruptly),
    ] {
        let port = rustls_origin(&w, ask, hangup);
        w.row(port, "/", Client::Nobody, (1, &closed), (1, &closed));
    }
    // Even after asking for a certificate and being sent one: TLS 1.3 gives no way to tell
    // this from an origin that let the client in and hung up.
    let port = rustls_origin(&w, true, Hangup::AfterHandshake);
    w.row(port, "/", Client::Edge, (1, &closed), (1, &closed));
    let j = w.json(port, "/", Client::Edge, "reject");
    assert_eq!(
        (
            &j["outcome"],
            &j["certificate_requested"],
            &j["certificate_sent"]
        ),
        (&"closed".into(), &true.into(), &true.into())
    );
}

#[test]
fn the_reply_is_read_for_a_bounded_time_and_size() {
    let w = world();
    // Silence after the handshake: the probe waits --timeout, then says it proves nothing.
    let port = rustls_origin(&w, true, Hangup::Silent);
    aop_e2e::bin("certtool"); // built before the clock starts
    let start = Instant::now();
    let line = format!(
        "inconclusive: the origin completed the TLS handshake but sent nothing in 1s{NOTHING}"
    );
    for expect in ["reject", "accept"] {
        let (c, out) = w.probe_within(port, "/", Client::Nobody, expect, false, "1");
        assert_eq!(c, 1, "{out}");
        assert!(
            out.contains(&format!("  expect {expect}: {line}\n")),
            "{out}"
        );
    }
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "{:?}",
        start.elapsed()
    );
    // A body without end: the probe stops at its 16 KiB cap and decides from that.
    let port = rustls_origin(&w, true, Hangup::Endless);
    let start = Instant::now();
    let line = format!(
        "inconclusive: the origin answered HTTP 400, which neither serves content nor refuses a certificate{NOTHING}"
    );
    w.row(port, "/", Client::Nobody, (1, &line), (1, &line));
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn a_close_during_the_handshake_refuses_only_after_a_certificate_request() {
    let w = world();
    // TLS 1.2: the origin asked for a certificate, got the client's answer, and hung up
    // before its Finished. No client got through this handshake.
    let port = rustls_origin(&w, true, Hangup::InHandshake);
    let why = "the origin asked for a client certificate, then closed the connection before finishing the TLS handshake";
    w.row(
        port,
        "/",
        Client::Nobody,
        (0, &format!("held: {why}")),
        (1, &format!("FAILED: {why}")),
    );
    // Without a request, a hang-up in the handshake says nothing about certificates.
    let port = rustls_origin(&w, false, Hangup::InHandshake);
    let line = format!(
        "inconclusive: the origin closed the connection during the TLS handshake, before asking for a client certificate{NOTHING}"
    );
    w.row(port, "/", Client::Nobody, (1, &line), (1, &line));
    // Nor does one after the request but before the client could answer it.
    let port = rustls_origin(&w, true, Hangup::CutFlight);
    let line = format!(
        "inconclusive: the origin closed the connection during the TLS handshake, after asking for a client certificate but before the probe had sent its answer{NOTHING}"
    );
    w.row(port, "/", Client::Edge, (1, &line), (1, &line));
    let j = w.json(port, "/", Client::Edge, "reject");
    assert_eq!(
        (
            &j["outcome"],
            &j["certificate_requested"],
            &j["certificate_sent"]
        ),
        (&"closed_in_handshake".into(), &true.into(), &true.into())
    );
}

#[test]
fn an_alert_before_any_certificate_request_proves_nothing() {
    if !have_peer(
        "openssl",
        "an_alert_before_any_certificate_request_proves_nothing",
    ) {
        return;
    }
    // An origin that only speaks TLS 1.1 refuses the probe's ClientHello before it could
    // ask for a certificate: a protocol refusal, not a certificate one.
    let w = world();
    let ca = w.edge_ca.pem();
    let (server, port) = aop_e2e::openssl_s_server(&[
        "-cert",
        s(&w.server.cert),
        "-key",
        s(&w.server.key),
        "-tls1_1",
        "-cipher",
        "ALL:@SECLEVEL=0",
        "-www",
        "-Verify",
        "1",
        "-CAfile",
        s(&ca),
    ]);
    let j = w.json(port, "/", Client::Nobody, "reject");
    assert_eq!(j["outcome"], "alert_before_certificate", "{j}");
    assert_eq!(j["certificate_requested"], false, "{j}");
    let line = format!(
        "inconclusive: the origin aborted the TLS handshake with alert {} before asking for a client certificate{NOTHING}",
        j["alert"].as_str().unwrap()
    );
    w.row(port, "/", Client::Nobody, (1, &line), (1, &line));
    drop(server);
}

#[test]
fn an_unreachable_origin_proves_nothing() {
    let w = world();
    // A port held bound and never listening: every connection is refused.
    let (_held, port) = aop_e2e::refused_port();
    let (c, out) = w.probe(port, "/", Client::Nobody, "reject", false);
    assert_eq!(c, 1, "{out}");
    let line = out.lines().find(|l| l.starts_with("  expect ")).unwrap();
    assert!(
        line.starts_with("  expect reject: inconclusive: the origin is unreachable: ")
            && line.ends_with(NOTHING),
        "{out}"
    );
    let (c, out) = w.probe(port, "/", Client::Edge, "accept", false);
    assert_eq!(c, 1, "{out}");
    assert!(
        out.contains("  expect accept: inconclusive: the origin is unreachable: "),
        "{out}"
    );
}
