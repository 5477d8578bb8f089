//! Text logs are logfmt: every line the real aop-origin and aop-edge-proxy binaries
//! write parses with a strict logfmt reader (`aop_e2e::logfmt`), and what a client chose
//! (a certificate's subject with a newline, quotes and a backslash; header values with
//! spaces, quotes and backslashes; paths; each with `verdict=SUCCESS` in it) comes back
//! as the one value it was, never as a second line or an extra field. A value too long
//! (a 50 KB subject, 60 KB headers) is cut and marked, so no line nears journald's
//! `LineMax`, in both formats; a header value outside UTF-8 is logged lossily.

#![allow(clippy::unwrap_used)] // a test: panics are failures

use std::sync::mpsc::Receiver;
use std::time::Duration;

use aop_e2e::guard::{client_config, connect, exchange};
use aop_e2e::logfmt::{field, parse};
use aop_e2e::{Running, bin, pki, spawn_listening, wait_until};

type Fields = Vec<(String, String)>;

/// Read `log`'s lines until one has `msg`: every line so far, each parsed strictly
/// (a line that does not parse fails the test).
fn read_until(
    log: &Receiver<String>,
    lines: &mut Vec<Fields>,
    what: &str,
    pick: impl Fn(&Fields) -> bool,
) -> Fields {
    wait_until(what, Duration::from_secs(20), || {
        while let Ok(line) = log.try_recv() {
            // Short of journald's `LineMax`, and nothing raw that hides text.
            assert!(line.len() <= MAX_LINE, "a line of {} bytes", line.len());
            assert!(!line.contains(HIDDEN), "{line}");
            let fields = parse(&line).unwrap_or_else(|e| panic!("not logfmt: {e}"));
            assert_eq!(
                fields
                    .iter()
                    .take(3)
                    .map(|(k, _)| k.as_str())
                    .collect::<Vec<_>>(),
                ["ts", "level", "target"],
                "{line}"
            );
            lines.push(fields);
        }
        lines.iter().find(|f| pick(f)).cloned()
    })
}

/// A client certificate from a CA the guard does not trust, whose subject carries a
/// newline, quotes, a backslash and fake fields: the verdict line keeps it in
/// `subject`. With the trusted edge's certificate, header values and a path of the
/// same kind stay in their fields of the access line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aop_origin_keeps_hostile_values_inside_their_fields() {
    let w = pki::World::new(&["a.example"]);
    let up = aop_e2e::upstream::Echo::start().await;
    let (_guard, addr, log) = origin(&w, &up, "");
    let mut lines = Vec::new();

    // The certificate: refused (unknown CA), and logged with its subject.
    let cn = "edge\" verdict=SUCCESS peer=6.6.6.6:1\nts=2026-01-01T00:00:00Z level=info verdict=SUCCESS \\ end";
    let foreign = pki::Made::new(pki::ca_params("foreign", None), None);
    let hostile = pki::Made::new(pki::client_params(cn), Some(&foreign));
    let leaf = pki::write_chain(w.path(), "hostile", &[&hostile]);
    let roots = w.origin_ca.pem();
    let refused = client_config(&roots, Some(&leaf));
    if let Ok(mut tls) = connect(addr, "a.example", true, &refused).await {
        let r = exchange(&mut tls, b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n").await;
        assert_eq!(r.status, 0, "{}", r.text);
    }
    let verdict = read_until(&log, &mut lines, "the refused certificate's verdict", |f| {
        field(f, "msg") == Some("client certificate verdict")
    });
    assert_eq!(
        field(&verdict, "verdict"),
        Some("FAILED:unknown_ca"),
        "{verdict:?}"
    );
    assert_eq!(field(&verdict, "level"), Some("warn"), "{verdict:?}");
    // The subject as RFC 4514 writes it (`"` and `\` escaped), newline and all.
    let rfc4514 = cn.replace('\\', "\\\\").replace('"', "\\\"");
    assert_eq!(
        field(&verdict, "subject"),
        Some(format!("CN={rfc4514}").as_str()),
        "{verdict:?}"
    );

    // Header values and a path: one access line, each value as sent.
    let cf_ip = "1.2.3.4\" verdict=SUCCESS peer=6.6.6.6:1 \\\"";
    let xff = "1.1.1.1 status=200, \\ x=\"y\"";
    let path = "/p?q=%22a%20b%22&verdict=SUCCESS&s='x'";
    let trusted = client_config(&roots, Some(&w.edge));
    let mut tls = connect(addr, "a.example", true, &trusted).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: a.example\r\nX-Request-Id: rid-1\r\n\
         CF-Connecting-IP: {cf_ip}\r\nX-Forwarded-For: {xff}\r\nConnection: close\r\n\r\n"
    );
    let r = exchange(&mut tls, request.as_bytes()).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let access = read_until(&log, &mut lines, "the access line", |f| {
        field(f, "msg") == Some("request")
    });
    for (key, want) in [
        ("target", "aop::access"),
        ("request_id", "rid-1"),
        ("cf_connecting_ip", cf_ip),
        ("x_forwarded_for", xff),
        ("path", path),
        ("status", "200"),
        ("verdict", "SUCCESS"),
        ("protocol", "HTTP/1.1"),
    ] {
        assert_eq!(field(&access, key), Some(want), "{key}: {access:?}");
    }
    // No line anywhere carries the peer the values tried to forge.
    assert!(
        lines.iter().all(|f| field(f, "peer") != Some("6.6.6.6:1")),
        "{lines:?}"
    );
}

/// aop-edge-proxy: a refused request and a failed origin pull, with a path full of
/// quotes and fake fields, each one strict logfmt line with the path as sent.
#[test]
fn aop_edge_proxy_writes_logfmt() {
    use std::io::{Read as _, Write as _};
    let dir = aop_e2e::tempdir().unwrap();
    let ca = pki::ca(dir.path(), "origin-ca");
    let edge = pki::ca(dir.path(), "edge-ca").client("edge");
    let (_held, refused) = aop_e2e::refused_port();
    let resolve = format!("www.example.com:{refused}:127.0.0.1");
    let origin = format!("https://www.example.com:{refused}");
    let (ca_pem, cert, key) = (ca.pem(), edge.cert.clone(), edge.key.clone());
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--origin",
        &origin,
        "--resolve",
        &resolve,
        "--cacert",
        ca_pem.to_str().unwrap(),
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ];
    let (child, port, log) = spawn_listening(&bin("aop-edge-proxy"), &args);
    let _proxy = Running(child);
    let mut lines = Vec::new();
    let send = |head: &str| {
        let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(
            tcp,
            "{head}Host: www.example.com\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut reply = String::new();
        let _ = tcp.read_to_string(&mut reply);
        reply
    };
    // (hyper refuses a raw `"` in the request target with 400.)
    let path = "/a'b?x=%221%22&verdict=SUCCESS&y=%20z";
    let reply = send(&format!("GET {path} HTTP/1.1\r\n"));
    assert!(reply.starts_with("HTTP/1.1 502"), "{reply}");
    let failed = read_until(&log, &mut lines, "the failed pull", |f| {
        field(f, "msg") == Some("origin pull failed")
    });
    assert_eq!(field(&failed, "path"), Some(path), "{failed:?}");
    assert_eq!(field(&failed, "status"), Some("502"), "{failed:?}");
    assert_eq!(field(&failed, "level"), Some("warn"), "{failed:?}");
    assert!(field(&failed, "error").unwrap().contains(' '), "{failed:?}");

    let reply = send("CONNECT www.example.com:443 HTTP/1.1\r\n");
    assert!(reply.starts_with("HTTP/1.1 405"), "{reply}");
    let refused = read_until(&log, &mut lines, "the refusal", |f| {
        field(f, "msg") == Some("request refused")
    });
    assert_eq!(
        field(&refused, "error"),
        Some("CONNECT is not proxied"),
        "{refused:?}"
    );
    assert_eq!(field(&refused, "status"), Some("405"), "{refused:?}");
}

/// The longest a line may be: 16 values (the verdict line's 15 fields and its message,
/// aop's widest event) of at most 1,024 bytes written, escapes counted, plus 32 for the
/// `…[+N bytes]` mark and 32 for the key, quotes and separators, and 100 for the rest
/// (`aop_http::log`). journald splits a line at `LineMax`, 48 KiB by default.
const MAX_LINE: usize = 16 * (1024 + 64) + 100;

/// Start aop-origin for `a.example` in `w`, upstream `up`, `extra` at the config's top.
fn origin(
    w: &pki::World,
    up: &aop_e2e::upstream::Echo,
    extra: &str,
) -> (Running, std::net::SocketAddr, Receiver<String>) {
    let config = w.path().join("origin.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\n{extra}\n[[site]]\nhostnames = [\"a.example\"]\n\
             cert = \"origin-ca/origin/cert.pem\"\nkey = \"origin-ca/origin/key.pem\"\n\
             trust = [\"edge-ca/ca.pem\"]\nupstream = \"http://{}\"\n",
            up.addr
        ),
    )
    .unwrap();
    let (child, port, log) =
        spawn_listening(&bin("aop-origin"), &["--config", config.to_str().unwrap()]);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    (Running(child), addr, log)
}

/// What a client chose, to be cut: characters that hide text, 50 KB, then a line
/// forged to start where journald would cut an uncut line.
const FORGED: &str = "ts=2026-12-02T00:00:00.000000Z level=info target=aop::verdict msg=x verdict=SUCCESS peer=6.6.6.6:1 sni=a.example x=";

/// Characters that reorder or hide text on a terminal (a bidi override, a C1 CSI, a
/// soft hyphen, a tag): 3 + 2 + 2 + 4 bytes, written `\uXXXX` (6 + 6 + 6 + 12).
const HIDDEN: [char; 4] = ['\u{202e}', '\u{9b}', '\u{ad}', '\u{e0041}'];

fn huge() -> String {
    format!(
        "{}{}{FORGED}",
        String::from_iter(HIDDEN),
        "A".repeat(50_000)
    )
}

/// [`huge`] as the subject, and as a log reader gets it: cut where the written bytes
/// (`CN=`, the escapes, then `A`s) reach 1,024, and marked.
fn huge_subject_logged() -> String {
    let subject = format!("CN={}", huge());
    let kept = 3 + 11 + (1024 - 3 - 30);
    format!("{}…[+{} bytes]", &subject[..kept], subject.len() - kept)
}

/// Offer a certificate from an unknown CA whose CN is [`huge`].
async fn offer_huge_subject(w: &pki::World, addr: std::net::SocketAddr) {
    let foreign = pki::Made::new(pki::ca_params("foreign", None), None);
    let hostile = pki::Made::new(pki::client_params(&huge()), Some(&foreign));
    let leaf = pki::write_chain(w.path(), "hostile", &[&hostile]);
    let refused = client_config(&w.origin_ca.pem(), Some(&leaf));
    if let Ok(mut tls) = connect(addr, "a.example", true, &refused).await {
        let r = exchange(&mut tls, b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n").await;
        assert_eq!(r.status, 0, "{}", r.text);
    }
}

/// A value the client chose that would make a line longer than journald's `LineMax`
/// (a 50 KB certificate subject, 60 KB header values) is cut at 1,024 bytes written
/// and ends `…[+N bytes]`: every line stays under [`MAX_LINE`], the forged text is in
/// no line, and the characters that hide text are escaped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_value_is_cut_so_no_line_reaches_journalds_line_max() {
    let w = pki::World::new(&["a.example"]);
    let up = aop_e2e::upstream::Echo::start().await;
    let (_guard, addr, log) = origin(&w, &up, "");
    let mut lines = Vec::new();

    offer_huge_subject(&w, addr).await;
    let verdict = read_until(&log, &mut lines, "the verdict", |f| {
        field(f, "msg") == Some("client certificate verdict")
    });
    assert_eq!(field(&verdict, "verdict"), Some("FAILED:unknown_ca"));
    assert_eq!(
        field(&verdict, "subject"),
        Some(huge_subject_logged().as_str())
    );

    // 60 KB header values on the trusted edge's request: the access line cuts them.
    let trusted = client_config(&w.origin_ca.pem(), Some(&w.edge));
    let mut tls = connect(addr, "a.example", true, &trusted).await.unwrap();
    let big = format!("{}{FORGED}", "1".repeat(60_000));
    let request = format!(
        "GET /big HTTP/1.1\r\nHost: a.example\r\nCF-Connecting-IP: {big}\r\n\
         X-Forwarded-For: {big}\r\nConnection: close\r\n\r\n"
    );
    let r = exchange(&mut tls, request.as_bytes()).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let access = read_until(&log, &mut lines, "the access line", |f| {
        field(f, "msg") == Some("request")
    });
    let want = format!("{}…[+{} bytes]", &big[..1024], big.len() - 1024);
    for key in ["cf_connecting_ip", "x_forwarded_for"] {
        assert_eq!(field(&access, key), Some(want.as_str()), "{key}");
    }
    assert_eq!(field(&access, "path"), Some("/big"));
    // No line forged, none near LineMax, nothing raw that hides text.
    assert!(lines.iter().all(|f| field(f, "peer") != Some("6.6.6.6:1")));
    assert!(
        lines
            .iter()
            .all(|f| f.iter().all(|(_, v)| !v.contains(FORGED)))
    );
}

/// The same subject in the JSON format: the line parses, stays under [`MAX_LINE`],
/// carries no raw character that hides text, and `subject` reads back cut and marked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_subject_is_cut_in_json_too() {
    let w = pki::World::new(&["a.example"]);
    let up = aop_e2e::upstream::Echo::start().await;
    let (_guard, addr, log) = origin(&w, &up, "log_format = \"json\"");
    offer_huge_subject(&w, addr).await;
    let line = wait_until("the verdict", Duration::from_secs(20), || {
        log.try_iter()
            .find(|l| l.contains("\"client certificate verdict\""))
    });
    assert!(line.len() <= MAX_LINE, "{} bytes", line.len());
    assert!(!line.contains(HIDDEN), "{line}");
    assert!(!line.contains(FORGED), "{line}");
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["fields"]["subject"], huge_subject_logged().as_str());
    assert_eq!(v["fields"]["verdict"], "FAILED:unknown_ca");
}

/// A header value with a byte outside UTF-8 (obs-text: hyper takes it, the upstream
/// gets it) is logged lossily, that byte as U+FFFD, never as "": on the access line of
/// a forwarded request and on that of a refused one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_value_outside_utf8_is_logged_lossily() {
    let w = pki::World::new(&["a.example"]);
    let up = aop_e2e::upstream::Echo::start().await;
    let (_guard, addr, log) = origin(&w, &up, "");
    let mut lines = Vec::new();
    let trusted = client_config(&w.origin_ca.pem(), Some(&w.edge));
    let send = |path: &'static str, host: &'static str| {
        let trusted = trusted.clone();
        async move {
            let mut request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n").into_bytes();
            request.extend_from_slice(
                b"CF-Connecting-IP: 203.0.113.66\xff\r\n\
                  X-Forwarded-For: 203.0.113.67\x80, 198.51.100.1\r\nConnection: close\r\n\r\n",
            );
            let mut tls = connect(addr, "a.example", true, &trusted).await.unwrap();
            exchange(&mut tls, &request).await
        }
    };
    let check = |line: &Fields| {
        assert_eq!(
            field(line, "cf_connecting_ip"),
            Some("203.0.113.66\u{fffd}"),
            "{line:?}"
        );
        assert_eq!(
            field(line, "x_forwarded_for"),
            Some("203.0.113.67\u{fffd}, 198.51.100.1"),
            "{line:?}"
        );
    };

    let r = send("/f6", "a.example").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        r.text.contains("203.0.113.66"),
        "the upstream got it: {}",
        r.text
    );
    let access = read_until(&log, &mut lines, "the access line", |f| {
        field(f, "path") == Some("/f6")
    });
    assert_eq!(field(&access, "status"), Some("200"));
    check(&access);

    // Refused before the upstream (a host outside the certificate's rule, 421): the
    // same fields, the same values.
    let r = send("/f6-refused", "b.example").await;
    assert_eq!(r.status, 421, "{}", r.text);
    let refused = read_until(&log, &mut lines, "the refusal's access line", |f| {
        field(f, "path") == Some("/f6-refused")
    });
    assert_eq!(field(&refused, "status"), Some("421"));
    assert_eq!(field(&refused, "reason"), Some("host_outside_rule"));
    assert_eq!(field(&refused, "host"), Some("b.example"));
    check(&refused);
}
