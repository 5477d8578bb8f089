//! What the origin guard makes of its upstream: each way an upstream fails (nothing
//! listening, a reset, a close without an answer, no answer in time, a name that does
//! not resolve, an answer that is not HTTP) gets its own 502 (504 for the timeout) whose
//! body names the class and never the upstream's address, a log line with the class
//! (`upstream_error`) and the root cause (`cause`), and a count; and an HTTP/1.0 upstream
//! (Python's `http.server`) is answered to the edge in the edge's own version, its
//! connection kept alive.

#![allow(clippy::unwrap_used)] // a test: panics are failures

use std::net::SocketAddr;

use aop_e2e::guard::{Certs, Guard, client_config, connect, exchange};
use aop_e2e::{code, run, stderr, stdout};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

fn site(host: &str, upstream: &str) -> String {
    format!(
        "\n[[site]]\nhostnames = [\"{host}\"]\ncert = \"origin-ca/origin/cert.pem\"\nkey = \"origin-ca/origin/key.pem\"\ntrust = [\"edge-ca/ca.pem\"]\nupstream = \"http://{upstream}\"\n"
    )
}

/// What a misbehaving upstream does once it has read a request's head.
#[derive(Clone, Copy)]
enum Then {
    /// Reset the connection (`SO_LINGER` 0, then close: an RST, no FIN).
    Reset,
    /// Close it (a FIN) without a word.
    Close,
    /// Keep it open and never answer.
    Hang,
    /// Answer something that is not HTTP.
    Garbage,
}

/// An upstream that reads each request's head, then does `then`.
async fn misbehaving(then: Then) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut tcp, _)) = listener.accept().await {
            read_head(&mut tcp).await;
            match then {
                Then::Reset => {
                    tcp.set_zero_linger().unwrap();
                    drop(tcp);
                }
                Then::Close => drop(tcp),
                Then::Hang => held.push(tcp),
                Then::Garbage => {
                    let _ = tcp.write_all(b"SSH-2.0-OpenSSH_9.2\r\n\r\n").await;
                    held.push(tcp);
                }
            }
        }
    });
    (addr, task)
}

/// Read up to the end of a request head (or the connection's end).
async fn read_head(tcp: &mut TcpStream) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match tcp.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
}

/// Each failure: the exact status and body the edge gets, the log line's
/// `upstream_error` and (a part of) its `cause`, and the count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_upstream_failure_is_named_in_the_answer_the_log_and_the_count() {
    let hosts = [
        "refused.example",
        "reset.example",
        "closed.example",
        "slow.example",
        "dns.example",
        "garbage.example",
        "h2c-refused.example",
    ];
    let certs = Certs::new(&hosts);
    let (_held, refused) = aop_e2e::refused_port();
    let (reset, _t1) = misbehaving(Then::Reset).await;
    let (closed, _t2) = misbehaving(Then::Close).await;
    let (slow, _t3) = misbehaving(Then::Hang).await;
    let (garbage, _t4) = misbehaving(Then::Garbage).await;
    let refused = format!("127.0.0.1:{refused}");
    // `.invalid` never resolves (RFC 6761 §6.4).
    let dns = "nonexistent.invalid:80".to_owned();
    let upstreams = [
        refused.clone(),
        reset.to_string(),
        closed.to_string(),
        slow.to_string(),
        dns,
        garbage.to_string(),
        refused,
    ];
    let mut config = "log_format = \"json\"\nupstream_timeout_secs = 1\n".to_owned();
    // The name lookup gets a guard of its own with a long timeout: where no nameserver
    // answers (an offline machine), the lookup fails only after the resolver's own
    // timeouts, and must still be `dns`, not a 504 from the 1 s the hang case needs.
    let mut dns_config = "log_format = \"json\"\nupstream_timeout_secs = 120\n".to_owned();
    for (host, upstream) in hosts.iter().zip(&upstreams) {
        let config = if *host == "dns.example" {
            &mut dns_config
        } else {
            &mut config
        };
        *config += &site(host, upstream);
        if host.starts_with("h2c-") {
            *config += "upstream_protocol = \"h2c\"\n";
        }
    }
    let main_guard = Guard::start(certs.dir.path(), &config);
    let dns_guard = Guard::start(certs.dir.path(), &dns_config);
    let tls = client_config(&certs.origin_ca.pem(), Some(&certs.edge));

    let expected = [
        (
            502,
            "upstream unavailable: connection refused\n",
            "refused",
            &["Connection refused"][..],
        ),
        (
            502,
            "upstream unavailable: connection reset\n",
            "reset",
            // The RST met on the read (reset), or on the write (a broken pipe).
            &["Connection reset by peer", "Broken pipe"][..],
        ),
        (
            502,
            "upstream unavailable: closed without answering\n",
            "closed",
            &["connection closed before message completed"][..],
        ),
        (
            504,
            "upstream timed out\n",
            "timeout",
            &["no answer within 1s"][..],
        ),
        (
            502,
            "upstream unavailable: name not resolved\n",
            "dns",
            &["failed to lookup address information"][..],
        ),
        (
            502,
            "upstream unavailable: invalid response\n",
            "invalid",
            &["invalid HTTP version parsed"][..],
        ),
        // The h2c client's connect fails the same way. (Its later failures depend on
        // where hyper's HTTP/2 handshake was when the upstream went: an RST may come
        // back as "connection was not ready", closed.)
        (
            502,
            "upstream unavailable: connection refused\n",
            "refused",
            &["Connection refused"][..],
        ),
    ];
    for ((host, upstream), (status, body, class, causes)) in
        hosts.iter().zip(&upstreams).zip(expected)
    {
        let g = if *host == "dns.example" {
            &dns_guard
        } else {
            &main_guard
        };
        let mut stream = connect(g.addr(), host, true, &tls).await.unwrap();
        let request = format!("GET /x HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let r = exchange(&mut stream, request.as_bytes()).await;
        assert_eq!((r.status, r.body()), (status, body), "{host}: {}", r.text);
        // The class only: the upstream's address is the operator's, for the log.
        assert!(!r.text.contains(upstream.as_str()), "{host}: {}", r.text);
        let line = g.wait_log("\"upstream_error\"");
        let line: serde_json::Value = serde_json::from_str(&line).unwrap();
        let fields = &line["fields"];
        assert_eq!(line["level"], "WARN", "{host}: {line}");
        assert_eq!(fields["site"], *host, "{host}: {line}");
        assert_eq!(fields["upstream"], upstream.as_str(), "{host}: {line}");
        assert_eq!(fields["upstream_error"], class, "{host}: {line}");
        let cause = fields["cause"].as_str().unwrap();
        assert!(causes.iter().any(|c| cause.contains(c)), "{host}: {line}");
        assert!(!cause.contains("client error"), "{host}: {line}");
        let series = format!("aop_upstream_errors_total{{site=\"{host}\"}}");
        assert_eq!(g.metric(&series), 1, "{host}");
    }
}

/// A Python `http.server` upstream that speaks HTTP/1.0 and says `Connection: close`:
/// `/len` has a Content-Length, any other path ends its body by closing.
const HTTP10: &str = r#"
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    def do_GET(self):
        body = b"hello from HTTP/1.0\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Connection", "close")
        if self.path == "/len":
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
s = HTTPServer(("127.0.0.1", 0), H)
print("addr=127.0.0.1:%d" % s.server_address[1], file=sys.stderr, flush=True)
s.serve_forever()
"#;

/// curl through the guard to an HTTP/1.0 upstream: HTTP/1.1 from the edge is answered
/// HTTP/1.1 and three requests share one connection (curl says it reused it; the guard
/// saw one handshake); HTTP/2 is answered in HTTP/2; HTTP/1.0 in HTTP/1.0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http10_upstream_is_answered_in_the_edge_version_and_keeps_the_edge_connection() {
    let test = "an_http10_upstream_is_answered_in_the_edge_version";
    if !aop_e2e::have_peer("curl", test) {
        return;
    }
    let Some(python) = aop_e2e::python(test) else {
        return;
    };
    let (child, port, _log) = aop_e2e::spawn_listening(&python, &["-c", HTTP10]);
    let _upstream = aop_e2e::Running(child);
    let host = "v10.example";
    let certs = Certs::new(&[host]);
    let g = Guard::start(certs.dir.path(), &site(host, &format!("127.0.0.1:{port}")));
    let roots = certs.origin_ca.pem();
    let curl = |args: &[&str]| {
        let mut c = aop_e2e::curl(host, g.port, &roots, Some(&certs.edge));
        c.args(args);
        tokio::task::block_in_place(|| run(&mut c))
    };

    let len = format!("https://{host}:{}/len", g.port);
    let eof = format!("https://{host}:{}/eof", g.port);
    let o = curl(&["--http1.1", "-v", &len, &eof]);
    let (out, err) = (stdout(&o), stderr(&o));
    assert_eq!(code(&o), 0, "{err}");
    assert_eq!(out, "hello from HTTP/1.0\n".repeat(3), "{err}");
    assert_eq!(err.matches("< HTTP/1.1 200 OK").count(), 3, "{err}");
    assert!(!err.contains("< HTTP/1.0"), "{err}");
    assert!(
        !err.to_ascii_lowercase().contains("< connection: close"),
        "{err}"
    );
    assert_eq!(
        err.matches("Re-using existing connection").count(),
        2,
        "{err}"
    );
    // One connection, so one handshake and one verdict.
    for _ in 0..3 {
        g.wait_log("aop::access");
    }
    assert_eq!(g.lines_with("client certificate verdict").len(), 1);

    let o = curl(&[
        "--http2",
        "--write-out",
        "version=%{http_version} status=%{http_code}\n",
    ]);
    assert_eq!(
        stdout(&o),
        "hello from HTTP/1.0\nversion=2 status=200\n",
        "{}",
        stderr(&o)
    );
    // An HTTP/1.0 request is answered in HTTP/1.0 (curl's --http1.0 offers ALPN
    // "http/1.0", which the guard does not: raw bytes instead).
    let tls = client_config(&roots, Some(&certs.edge));
    let mut stream = connect(g.addr(), host, true, &tls).await.unwrap();
    let r = exchange(
        &mut stream,
        format!("GET /len HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(r.text.starts_with("HTTP/1.0 200 OK\r\n"), "{}", r.text);
    assert_eq!(r.body(), "hello from HTTP/1.0\n");
}
