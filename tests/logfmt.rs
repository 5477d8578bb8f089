//! Text logs are logfmt: every line the real aop-origin and aop-edge-proxy binaries
//! write parses with a strict logfmt reader (`aop_e2e::logfmt`), and what a client chose
//! (a certificate's subject with a newline, quotes and a backslash; header values with
//! spaces, quotes and backslashes; paths; each with `verdict=SUCCESS` in it) comes back
//! as the one value it was, never as a second line or an extra field.

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
    let config = w.path().join("origin.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\n[[site]]\nhostnames = [\"a.example\"]\n\
             cert = \"origin-ca/origin/cert.pem\"\nkey = \"origin-ca/origin/key.pem\"\n\
             trust = [\"edge-ca/ca.pem\"]\nupstream = \"http://{}\"\n",
            up.addr
        ),
    )
    .unwrap();
    let (child, port, log) =
        spawn_listening(&bin("aop-origin"), &["--config", config.to_str().unwrap()]);
    let _guard = Running(child);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
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
