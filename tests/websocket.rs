//! WebSockets through aop-origin, with peers nobody here wrote: the Python `websockets`
//! client (the edge, with its client certificate) → the guard → a Python `websockets`
//! echo server that reports the headers of every request it sees. What belongs here:
//! the HTTP/1.1 Upgrade (echo, verdict headers, refusals on the upgrade request, what is
//! never upgraded, what the upstream answers instead of 101), the tunnel's idle timeout,
//! drain and count, and RFC 8441's extended CONNECT over HTTP/2 (a raw h2 client).
//! Every attack is scaled down (timeouts of a second, 50 tunnels) so the file runs in
//! seconds.

#![allow(clippy::unwrap_used)] // test helpers: a panic is a test failure with a backtrace

use std::io::{BufRead as _, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use aop_e2e::guard::{Certs, Guard};
use aop_e2e::pki::Leaf;
use aop_e2e::upstream::{Echo, header, headers};
use aop_e2e::{Running, run_within, wait_until};
use serde_json::Value;

/// The upstream: a `websockets` echo server. Every request it receives (an upgrade or
/// not) is written to the log file as one JSON line `{"path", "headers"}` before it is
/// answered; `/forbidden` is answered 403; an opened WebSocket first sends the request's
/// headers (JSON), then echoes every message.
const UPSTREAM: &str = r#"
import asyncio, json, sys
from http import HTTPStatus
from websockets.asyncio.server import serve

LOG = sys.argv[1]

def headers(request):
    return [[k.lower(), v] for k, v in request.headers.raw_items()]

def process_request(connection, request):
    with open(LOG, "a") as f:
        f.write(json.dumps({"path": request.path, "headers": headers(request)}) + "\n")
    if request.path == "/forbidden":
        return connection.respond(HTTPStatus.FORBIDDEN, "no websockets here\n")
    return None

async def handler(ws):
    await ws.send(json.dumps(headers(ws.request)))
    async for message in ws:
        await ws.send(message)

async def main():
    async with serve(handler, "127.0.0.1", 0, process_request=process_request,
                     max_size=None, compression=None) as server:
        print(server.sockets[0].getsockname()[1], flush=True)
        await asyncio.Future()

asyncio.run(main())
"#;

/// The edge: a `websockets` client. argv[1] is a JSON object: `port`, `ca`, `cert`/`key`
/// (absent: no client certificate), `sni` (the TLS name), `host` (the URI's, so the
/// Host header; default `sni`), `path`, `headers` (more request headers), `scenario`.
/// Prints one JSON object.
const CLIENT: &str = r#"
import asyncio, json, os, ssl, sys
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

a = json.loads(sys.argv[1])

def context():
    c = ssl.create_default_context(cafile=a["ca"])
    if a.get("cert"):
        c.load_cert_chain(a["cert"], a["key"])
    return c

def opening():
    uri = "wss://%s:%d%s" % (a.get("host", a["sni"]), a["port"], a.get("path", "/"))
    return connect(uri, ssl=context(), server_hostname=a["sni"], host="127.0.0.1",
                   port=a["port"], proxy=None, max_size=None, compression=None,
                   additional_headers=a.get("headers", []), open_timeout=10,
                   ping_interval=None)

async def echo(ws, message):
    await ws.send(message)
    return (await ws.recv()) == message

async def main():
    s = a["scenario"]
    if s == "refused":
        try:
            async with opening() as ws:
                out = {"opened": True}
        except InvalidStatus as e:
            out = {"status": e.response.status_code}
        except Exception as e:
            out = {"error": type(e).__name__, "detail": str(e)}
    elif s == "echo":
        async with opening() as ws:
            seen = json.loads(await ws.recv())
            await ws.send("hello through aop")
            text = await ws.recv()
            blob = os.urandom(1 << 20)
            binary = await echo(ws, blob)
            response = [[k.lower(), v] for k, v in ws.response.headers.raw_items()]
            out = {"seen": seen, "text": text, "binary": binary,
                   "status": ws.response.status_code, "response": response}
    elif s == "idle":
        async with opening() as ws:
            await ws.recv()
            await asyncio.wait_for(ws.wait_closed(), 20)
            out = {"closed": True}
    elif s == "many":
        async def one(i):
            async with opening() as ws:
                await ws.recv()
                mine = ("tunnel %d " % i) * (100 + i)
                ok = await echo(ws, mine)
                ok = ok and await echo(ws, os.urandom(1000 + i))
                return ok
        results = await asyncio.gather(*(one(i) for i in range(a["n"])))
        out = {"ok": sum(1 for r in results if r)}
    elif s == "hold":
        # Open, say so, wait for a line on stdin, then echo once and close; or, if the
        # line is "wait", wait for the guard to close the tunnel.
        async with opening() as ws:
            await ws.recv()
            print("open", flush=True)
            line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
            if line.strip() == "wait":
                await asyncio.wait_for(ws.wait_closed(), 20)
                out = {"closed": True}
            else:
                out = {"echo": await echo(ws, "still here")}
    print(json.dumps(out), flush=True)

asyncio.run(main())
"#;

/// Every host the tests' origin certificate names: one site each.
const HOSTS: [&str; 5] = [
    "ws.example",
    "off.example",
    "silent.example",
    "plain.example",
    "liar.example",
];

/// A test's world: certificates, the Python, the upstream and the guard.
struct World {
    certs: Certs,
    /// `silent.example`'s upstream.
    _silent: std::net::TcpListener,
    python: PathBuf,
    upstream: Upstream,
    /// `plain.example`'s upstream, on `runtime`.
    plain: Echo,
    guard: Guard,
    runtime: tokio::runtime::Runtime,
}

/// The `websockets` echo server, killed on drop.
struct Upstream {
    _process: Running,
    port: u16,
    log: PathBuf,
}

impl Upstream {
    fn start(python: &Path, dir: &Path) -> Self {
        let script = dir.join("ws_upstream.py");
        std::fs::write(&script, UPSTREAM).unwrap();
        let log = dir.join("upstream.log");
        let mut child = Command::new(python)
            .arg(&script)
            .arg(&log)
            .stdout(Stdio::piped())
            .stderr(Stdio::null()) // a tunnel the guard closes is a traceback there
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("the upstream did not start: {line:?}"));
        Self {
            _process: Running(child),
            port,
            log,
        }
    }

    /// Every request it has seen: (path, headers as (name, value)).
    fn requests(&self) -> Vec<(String, Vec<(String, String)>)> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                (v["path"].as_str().unwrap().to_owned(), pairs(&v["headers"]))
            })
            .collect()
    }
}

/// `[[name, value], …]` as pairs.
fn pairs(v: &Value) -> Vec<(String, String)> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p[0].as_str().unwrap().to_owned(),
                p[1].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Every value of header `name` in `headers`.
fn values(headers: &[(String, String)], name: &str) -> Vec<String> {
    headers
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .collect()
}

/// One `[[site]]` per host of [`HOSTS`], all trusting `edge-ca`: `ws.example` to the
/// `websockets` upstream (WebSockets on by default), `off.example` to it with
/// `websocket = false`, `silent.example` to `silent` (a port that accepts and never
/// answers), `plain.example` to `plain` (an upstream that answers every request with the
/// headers it got), `liar.example` to `liar` (see [`liar`]).
fn sites(upstream: u16, silent: SocketAddr, plain: SocketAddr, liar: SocketAddr) -> String {
    let site = |host: &str, to: String, extra: &str| {
        format!(
            "\n[[site]]\nhostnames = [\"{host}\"]\ncert = \"origin-ca/origin/cert.pem\"\nkey = \"origin-ca/origin/key.pem\"\ntrust = [\"edge-ca/ca.pem\"]\nupstream = \"http://{to}\"\n{extra}"
        )
    };
    let up = format!("127.0.0.1:{upstream}");
    [
        site("ws.example", up.clone(), ""),
        site("off.example", up.clone(), "websocket = false\n"),
        site("silent.example", silent.to_string(), ""),
        site("plain.example", plain.to_string(), ""),
        site("liar.example", liar.to_string(), ""),
    ]
    .concat()
}

/// An upstream that switches protocols wrongly, by the request's path: `/h2c` answers
/// `101` to `h2c`, `/no-upgrade` a `101` without `Upgrade`, any other path a `101` to
/// `websocket` with a `Sec-WebSocket-Accept` that is not the key's. Then it holds the
/// connection a while. Runs until the test process ends.
fn liar() -> SocketAddr {
    use std::io::Read as _;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut tcp in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && tcp.read(&mut byte).is_ok_and(|n| n == 1) {
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head);
                let path = head.split_whitespace().nth(1).unwrap_or("/");
                let upgrade = match path {
                    "/h2c" => "Upgrade: h2c\r\nConnection: Upgrade\r\n",
                    "/no-upgrade" => "Connection: Upgrade\r\n",
                    _ => {
                        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiAxwWRbjbGyJ0+xzxbOo=\r\n"
                    }
                };
                let _ = write!(tcp, "HTTP/1.1 101 Switching Protocols\r\n{upgrade}\r\n");
                std::thread::sleep(Duration::from_secs(5));
            });
        }
    });
    addr
}

/// A listener that accepts connections and never answers (kept open by the test).
fn silent_upstream() -> std::net::TcpListener {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap()
}

impl World {
    /// The certificates, the upstream and a guard with `top` (top-level keys) before the
    /// sites; `None` if the Python is missing and skipping is allowed.
    fn new(test: &str, top: &str) -> Option<Self> {
        let python = aop_e2e::python(test)?;
        let silent = silent_upstream();
        let certs = Certs::new(&HOSTS);
        let upstream = Upstream::start(&python, certs.dir.path());
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let plain = runtime.block_on(Echo::start());
        let config = format!(
            "upstream_timeout_secs = 1\n{top}{}",
            sites(
                upstream.port,
                silent.local_addr().unwrap(),
                plain.addr,
                liar(),
            )
        );
        let guard = Guard::start(certs.dir.path(), &config);
        Some(Self {
            certs,
            _silent: silent,
            python,
            upstream,
            plain,
            guard,
            runtime,
        })
    }

    /// The client's arguments for `scenario` on `sni`, with the edge's certificate.
    fn args(&self, scenario: &str, sni: &str) -> Value {
        self.args_as(scenario, sni, Some(&self.certs.edge))
    }

    fn args_as(&self, scenario: &str, sni: &str, identity: Option<&Leaf>) -> Value {
        let mut a = serde_json::json!({
            "scenario": scenario,
            "port": self.guard.port,
            "ca": self.certs.origin_ca.pem(),
            "sni": sni,
        });
        if let Some(l) = identity {
            a["cert"] = Value::from(l.cert.to_str().unwrap());
            a["key"] = Value::from(l.key.to_str().unwrap());
        }
        a
    }

    fn client_command(&self, args: &Value) -> Command {
        let script = self.certs.dir.path().join("ws_client.py");
        if !script.exists() {
            std::fs::write(&script, CLIENT).unwrap();
        }
        let mut cmd = Command::new(&self.python);
        cmd.arg(&script).arg(args.to_string());
        cmd
    }

    /// Run the client to its end (within 60 s); its JSON answer.
    fn client(&self, args: &Value) -> Value {
        let out = run_within(&mut self.client_command(args), b"", Duration::from_secs(60));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "the client failed: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_str(stdout.lines().last().unwrap_or(""))
            .unwrap_or_else(|e| panic!("{e}: {stdout}"))
    }

    fn metric(&self, series: &str) -> u64 {
        self.guard.metric(series)
    }

    /// A client holding a tunnel to `ws.example` open, once the guard counts it open.
    fn hold(&self) -> Holding {
        let mut child = self
            .client_command(&self.args("hold", "ws.example"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "open");
        wait_until("the tunnel is open", Duration::from_secs(10), || {
            (self.metric("aop_tunnels_open{site=\"ws.example\"}") == 1).then_some(())
        });
        Holding { child, out }
    }
}

/// The `hold` client, its tunnel open.
struct Holding {
    child: std::process::Child,
    out: std::io::BufReader<std::process::ChildStdout>,
}

impl Holding {
    /// Tell it what to do next: `echo` (once, then close) or `wait` (for the guard to
    /// close the tunnel).
    fn say(&mut self, what: &str) {
        writeln!(self.child.stdin.as_mut().unwrap(), "{what}").unwrap();
    }

    /// Its JSON answer, once it has exited (within 20 s).
    fn result(mut self) -> Value {
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        assert!(aop_e2e::wait_within(&mut self.child, Duration::from_secs(20)).is_some());
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
    }
}

#[test]
fn text_and_a_mebibyte_echo_with_the_verdict_and_no_spoofed_header() {
    let Some(w) = World::new(
        "text_and_a_mebibyte_echo_with_the_verdict_and_no_spoofed_header",
        "",
    ) else {
        return;
    };
    let mut args = w.args("echo", "ws.example");
    args["path"] = "/chat?room=1".into();
    args["headers"] = serde_json::json!([
        ["X-Client-Verify", "FORGED"],
        ["X_Client_Verify", "FORGED"],
        ["X-Client-Cert-Subject", "CN=FORGED"],
        ["X-Forwarded-Client-Cert", "Hash=forged"],
        ["X-Request-Id", "ws-test-1"],
    ]);
    let out = w.client(&args);
    assert_eq!(out["status"], 101, "{out}");
    assert_eq!(out["text"], "hello through aop");
    assert_eq!(out["binary"], true);
    // What the upstream saw on the upgrade request: the guard's verdict only.
    let seen = pairs(&out["seen"]);
    assert_eq!(values(&seen, "x-client-verify"), ["SUCCESS"], "{seen:?}");
    assert!(values(&seen, "x_client_verify").is_empty(), "{seen:?}");
    assert_eq!(values(&seen, "x-client-cert-subject"), ["CN=edge"]);
    let xfcc = values(&seen, "x-forwarded-client-cert");
    assert_eq!(xfcc.len(), 1);
    assert!(xfcc[0].starts_with("Hash=") && xfcc[0] != "Hash=forged");
    assert_eq!(values(&seen, "x-request-id"), ["ws-test-1"]);
    assert_eq!(values(&seen, "upgrade"), ["websocket"]);
    assert_eq!(values(&seen, "connection"), ["upgrade"]);
    assert_eq!(values(&seen, "sec-websocket-version"), ["13"]);
    assert_eq!(
        values(&seen, "host"),
        [format!("ws.example:{}", w.guard.port)]
    );
    let requests = w.upstream.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].0, "/chat?room=1");
    // The client's 101 carries the upstream's accept (the client checked it) and the id.
    let response = pairs(&out["response"]);
    assert_eq!(values(&response, "x-request-id"), ["ws-test-1"]);
    assert_eq!(values(&response, "sec-websocket-accept").len(), 1);
    // Logged and counted: the request (101), then the tunnel once the client closed.
    let line = w.guard.wait_log("tunnel closed");
    assert!(
        line.contains("closed=\"closed\"") || line.contains("closed=closed"),
        "{line}"
    );
    assert!(
        line.contains("request_id=\"ws-test-1\"") || line.contains("request_id=ws-test-1"),
        "{line}"
    );
    let access = w.guard.lines_with("status=101");
    assert_eq!(access.len(), 1, "{access:?}");
    let text = w.guard.metrics_text();
    let m = |s: &str| aop_e2e::metric(&text, s).unwrap_or_else(|| panic!("no {s} in\n{text}"));
    assert_eq!(
        m("aop_tunnels_total{site=\"ws.example\",protocol=\"websocket\"}"),
        1
    );
    assert_eq!(m("aop_tunnels_open{site=\"ws.example\"}"), 0);
    assert_eq!(
        m("aop_tunnels_closed_total{site=\"ws.example\",reason=\"closed\"}"),
        1
    );
    assert_eq!(
        m("aop_requests_total{site=\"ws.example\",status=\"101\"}"),
        1
    );
    // Frames: the client's are masked (4 more bytes each), the 1 MiB one has an 8-byte
    // length; at least the payloads went each way.
    let up = m("aop_tunnel_bytes_total{site=\"ws.example\",direction=\"to_upstream\"}");
    let down = m("aop_tunnel_bytes_total{site=\"ws.example\",direction=\"to_client\"}");
    let payloads = (1 << 20) + "hello through aop".len() as u64;
    assert!(up > payloads && up < payloads + 200, "{up}");
    assert!(down > payloads && down < payloads + 2000, "{down}");
}

#[test]
fn refused_clients_never_reach_the_upstream() {
    let Some(w) = World::new("refused_clients_never_reach_the_upstream", "") else {
        return;
    };
    // No client certificate: the handshake fails (TLS 1.3: the alert arrives with the
    // first read, as the WebSocket handshake's).
    let out = w.client(&w.args_as("refused", "ws.example", None));
    assert!(out.get("error").is_some(), "{out}");
    assert!(out.get("status").is_none(), "{out}");
    // A certificate of a CA the site does not trust.
    let foreign = aop_e2e::pki::ca(w.certs.dir.path(), "foreign-ca").client("foreign");
    let out = w.client(&w.args_as("refused", "ws.example", Some(&foreign)));
    assert!(out.get("error").is_some(), "{out}");
    // A Host outside the connection's site (no site at all, and another site): 421.
    let mut args = w.args("refused", "ws.example");
    args["host"] = "elsewhere.example".into();
    assert_eq!(w.client(&args)["status"], 421);
    args["host"] = "plain.example".into();
    assert_eq!(w.client(&args)["status"], 421);
    assert_eq!(w.upstream.requests().len(), 0);
    let text = w.guard.metrics_text();
    assert_eq!(
        aop_e2e::metric_total(&text, "aop_handshakes_total", "verdict=\"NONE\""),
        1,
        "{text}"
    );
    assert_eq!(
        aop_e2e::metric_total(&text, "aop_handshakes_total", "verdict=\"FAILED\""),
        1
    );
    assert_eq!(
        aop_e2e::metric(&text, "aop_misdirected_requests_total{site=\"ws.example\"}"),
        Some(2)
    );
    assert_eq!(
        aop_e2e::metric_total(&text, "aop_tunnels_total", ""),
        0,
        "{text}"
    );
}

/// What the upstream answers instead of switching (403), an upstream that never
/// answers (504 after `upstream_timeout_secs`), a site with WebSockets off.
#[test]
fn an_upgrade_the_upstream_refuses_or_never_answers_or_the_site_does_not_allow() {
    let Some(w) = World::new(
        "an_upgrade_the_upstream_refuses_or_never_answers_or_the_site_does_not_allow",
        "",
    ) else {
        return;
    };
    let mut args = w.args("refused", "ws.example");
    args["path"] = "/forbidden".into();
    assert_eq!(w.client(&args)["status"], 403);
    assert_eq!(w.upstream.requests().len(), 1);
    w.guard.wait_log("upstream refused the WebSocket upgrade");
    // Accepts the connection, never answers: 504 after upstream_timeout_secs (1 s).
    let out = w.client(&w.args("refused", "silent.example"));
    assert_eq!(out["status"], 504, "{out}");
    // websocket = false: the Upgrade is stripped as any hop-by-hop header; the upstream
    // gets a plain GET and answers it (websockets: 426 Upgrade Required).
    let out = w.client(&w.args("refused", "off.example"));
    assert_eq!(out["status"], 426, "{out}");
    let requests = w.upstream.requests();
    assert_eq!(requests.len(), 2);
    let plain = &requests[1].1;
    assert!(values(plain, "upgrade").is_empty(), "{plain:?}");
    assert!(values(plain, "connection").is_empty(), "{plain:?}");
    assert_eq!(values(plain, "x-client-verify"), ["SUCCESS"]);
    w.guard
        .wait_log("WebSocket upgrade not forwarded (websocket = false)");
    let text = w.guard.metrics_text();
    assert_eq!(
        aop_e2e::metric_total(&text, "aop_tunnels_total", ""),
        0,
        "{text}"
    );
    assert_eq!(
        aop_e2e::metric(
            &text,
            "aop_requests_total{site=\"silent.example\",status=\"504\"}"
        ),
        Some(1)
    );
}

/// Never an upgrade but `websocket`: `h2c` (request smuggling past the guard), a list,
/// two Upgrade lines, a POST, an upgrade with a body. Each reaches the upstream as a
/// plain request without Upgrade (nor what its Connection named), and no tunnel opens.
#[test]
fn only_websocket_is_ever_upgraded() {
    let Some(w) = World::new("only_websocket_is_ever_upgraded", "") else {
        return;
    };
    let key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";
    let head = "Host: plain.example\r\nConnection: close\r\n";
    let cases = [
        format!(
            "GET / HTTP/1.1\r\n{head}Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n"
        ),
        format!(
            "GET / HTTP/1.1\r\n{head}Connection: Upgrade\r\nUpgrade: websocket, h2c\r\n{key}\r\n"
        ),
        format!(
            "GET / HTTP/1.1\r\n{head}Connection: Upgrade\r\nUpgrade: websocket\r\nUpgrade: h2c\r\n{key}\r\n"
        ),
        format!(
            "POST / HTTP/1.1\r\n{head}Connection: Upgrade\r\nUpgrade: websocket\r\nContent-Length: 0\r\n{key}\r\n"
        ),
        format!(
            "GET / HTTP/1.1\r\n{head}Connection: Upgrade\r\nUpgrade: websocket\r\nContent-Length: 5\r\n{key}\r\nhello"
        ),
    ];
    let config = aop_e2e::guard::client_config(&w.certs.origin_ca.pem(), Some(&w.certs.edge));
    for (i, request) in cases.iter().enumerate() {
        let reply = w.runtime.block_on(async {
            let mut tls = aop_e2e::guard::connect(w.guard.addr(), "plain.example", true, &config)
                .await
                .unwrap();
            aop_e2e::guard::exchange(&mut tls, request.as_bytes()).await
        });
        assert_eq!(reply.status, 200, "case {i}: {}", reply.text);
        let seen = headers(reply.body());
        for name in ["upgrade", "http2-settings", "connection"] {
            assert!(
                !seen.iter().any(|(k, _)| k == name),
                "case {i}: {name} in {seen:?}"
            );
        }
        assert_eq!(
            header(reply.body(), "x-client-verify").as_deref(),
            Some("SUCCESS")
        );
        // The upgrade with a body went on as a request with its body.
        let body = (i == 4).then(|| "5".to_owned());
        assert_eq!(header(reply.body(), "x-echo-body-bytes"), body, "case {i}");
        assert_eq!(
            w.plain.requests.load(std::sync::atomic::Ordering::Relaxed),
            i as u64 + 1
        );
    }
    assert_eq!(
        aop_e2e::metric_total(&w.guard.metrics_text(), "aop_tunnels_total", ""),
        0
    );
}

#[test]
fn an_idle_tunnel_is_closed_logged_and_counted() {
    let Some(w) = World::new(
        "an_idle_tunnel_is_closed_logged_and_counted",
        "tunnel_idle_timeout_secs = 1\n",
    ) else {
        return;
    };
    let out = w.client(&w.args("idle", "ws.example"));
    assert_eq!(out["closed"], true);
    let line = w.guard.wait_log("tunnel closed");
    assert!(line.contains("tunnel_idle"), "{line}");
    assert_eq!(
        w.metric("aop_tunnels_closed_total{site=\"ws.example\",reason=\"tunnel_idle\"}"),
        1
    );
    assert_eq!(w.metric("aop_tunnels_open{site=\"ws.example\"}"), 0);
}

#[test]
fn fifty_concurrent_tunnels_each_echo_their_own() {
    let Some(w) = World::new("fifty_concurrent_tunnels_each_echo_their_own", "") else {
        return;
    };
    let mut args = w.args("many", "ws.example");
    args["n"] = 50.into();
    assert_eq!(w.client(&args)["ok"], 50);
    wait_until("50 tunnels closed", Duration::from_secs(10), || {
        (w.metric("aop_tunnels_closed_total{site=\"ws.example\",reason=\"closed\"}") == 50)
            .then_some(())
    });
    assert_eq!(
        w.metric("aop_tunnels_total{site=\"ws.example\",protocol=\"websocket\"}"),
        50
    );
    assert_eq!(w.metric("aop_tunnels_open{site=\"ws.example\"}"), 0);
}

/// A drain waits for an open tunnel (which still carries messages, while nothing
/// listens any more), and stops once it closes; a tunnel still open when the grace ends
/// is closed.
#[test]
fn a_drain_waits_for_a_tunnel_then_closes_it_at_the_end_of_the_grace() {
    let Some(mut w) = World::new(
        "a_drain_waits_for_a_tunnel_then_closes_it_at_the_end_of_the_grace",
        "",
    ) else {
        return;
    };
    // A long grace: the drain waits for the tunnel, which still echoes.
    let mut held = w.hold();
    w.guard.shutdown_within(Duration::from_secs(30));
    w.guard.wait_log("draining");
    wait_until("nothing listens", Duration::from_secs(10), || {
        std::net::TcpStream::connect(w.guard.addr())
            .is_err()
            .then_some(())
    });
    assert!(w.guard.lines_with("stopped").is_empty());
    held.say("echo");
    assert_eq!(held.result()["echo"], true);
    w.guard.wait_log("stopped");
    assert_eq!(w.guard.wait_exit(), Some(0));
    let closed = w.guard.lines_with("tunnel closed");
    assert!(
        closed.len() == 1 && closed[0].contains("closed"),
        "{closed:?}"
    );

    // A short grace: the tunnel is closed when it ends.
    let Some(mut w) = World::new(
        "a_drain_waits_for_a_tunnel_then_closes_it_at_the_end_of_the_grace",
        "",
    ) else {
        return;
    };
    let mut held = w.hold();
    w.guard.shutdown_within(Duration::from_secs(1));
    held.say("wait");
    assert_eq!(held.result()["closed"], true);
    let line = w.guard.wait_log("tunnel closed");
    assert!(line.contains("stopped"), "{line}");
    w.guard.wait_log("stopped");
    assert_eq!(w.guard.wait_exit(), Some(0));
}

/// A masked WebSocket frame from a client (RFC 6455 §5.2): FIN, `opcode`, the mask key
/// 0 (so the payload stays as is), a payload under 126 bytes.
fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mut f = vec![0x80 | opcode, 0x80 | payload.len() as u8, 0, 0, 0, 0];
    f.extend_from_slice(payload);
    f
}

/// The first whole (unmasked) server frame at the start of `buf`: its opcode, payload
/// and length on the wire.
fn server_frame(buf: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
    let (&b0, &b1) = (buf.first()?, buf.get(1)?);
    let (len, at) = match b1 & 0x7f {
        126 => (
            u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?) as usize,
            4,
        ),
        127 => (
            u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?) as usize,
            10,
        ),
        n => (n as usize, 2),
    };
    let payload = buf.get(at..at + len)?;
    Some((b0 & 0x0f, payload.to_vec(), at + len))
}

/// An HTTP/2 connection to the guard as `sni` with the edge's certificate, once the
/// guard's SETTINGS (with ENABLE_CONNECT_PROTOCOL) are in.
async fn h2_connection(w: &World, sni: &str) -> h2::client::SendRequest<hyper::body::Bytes> {
    let mut config =
        (*aop_e2e::guard::client_config(&w.certs.origin_ca.pem(), Some(&w.certs.edge))).clone();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tls = aop_e2e::guard::connect(w.guard.addr(), sni, true, &std::sync::Arc::new(config))
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (send, conn) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut send = send.ready().await.unwrap();
    aop_e2e::wait_until_async("the guard's SETTINGS", Duration::from_secs(10), || {
        send.is_extended_connect_protocol_enabled().then_some(())
    })
    .await;
    send = send.ready().await.unwrap();
    send
}

/// An extended CONNECT (`:protocol`, if given) to `authority` + `path`.
fn connect_request(
    authority: &str,
    path: &str,
    protocol: Option<&'static str>,
) -> hyper::Request<()> {
    let mut req = hyper::Request::builder()
        .method(hyper::Method::CONNECT)
        .uri(format!("https://{authority}{path}"))
        .header("sec-websocket-version", "13")
        .header("x-client-verify", "FORGED");
    if let Some(p) = protocol {
        req = req.extension(h2::ext::Protocol::from_static(p));
    }
    req.body(()).unwrap()
}

/// RFC 8441: an extended CONNECT with `:protocol = websocket` over HTTP/2 reaches the
/// upstream as an HTTP/1.1 WebSocket upgrade (the guard's own key, its accept checked)
/// with the verdict headers, is answered 200, and tunnels WebSocket frames. Another
/// `:protocol`, or a site with WebSockets off: 501; a CONNECT without one: 405; an
/// `:authority` of another site: 421.
#[test]
fn rfc_8441_websocket_over_http2_is_an_upgrade_upstream() {
    let Some(w) = World::new("rfc_8441_websocket_over_http2_is_an_upgrade_upstream", "") else {
        return;
    };
    let authority = format!("ws.example:{}", w.guard.port);
    w.runtime.block_on(async {
        let mut send = h2_connection(&w, "ws.example").await;
        let (resp, mut up) = send
            .send_request(
                connect_request(&authority, "/chat", Some("websocket")),
                false,
            )
            .unwrap();
        let resp = resp.await.unwrap();
        assert_eq!(resp.status(), 200);
        assert!(resp.headers().get("sec-websocket-accept").is_none());
        let mut down = resp.into_body();
        let mut buf = Vec::new();
        let mut next = async || loop {
            if let Some((op, payload, n)) = server_frame(&buf) {
                buf.drain(..n);
                return Some((op, payload));
            }
            let data = down.data().await?.unwrap();
            let _ = down.flow_control().release_capacity(data.len());
            buf.extend_from_slice(&data);
        };
        // The upstream's first message: the headers it got.
        let (op, seen) = tokio::time::timeout(Duration::from_secs(10), next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(op, 1);
        let seen = pairs(&serde_json::from_slice(&seen).unwrap());
        assert_eq!(values(&seen, "x-client-verify"), ["SUCCESS"], "{seen:?}");
        assert_eq!(values(&seen, "upgrade"), ["websocket"]);
        assert_eq!(values(&seen, "connection"), ["upgrade"]);
        assert_eq!(values(&seen, "sec-websocket-version"), ["13"]);
        assert_eq!(values(&seen, "sec-websocket-key").len(), 1);
        assert_eq!(values(&seen, "host"), [authority.as_str()]);
        up.send_data(client_frame(1, b"hello over h2").into(), false)
            .unwrap();
        let (op, echo) = tokio::time::timeout(Duration::from_secs(10), next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!((op, echo.as_slice()), (1, &b"hello over h2"[..]));
        // A close frame: the upstream answers it and closes; the tunnel ends.
        up.send_data(client_frame(8, &1000u16.to_be_bytes()).into(), false)
            .unwrap();
        let (op, _) = tokio::time::timeout(Duration::from_secs(10), next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(op, 8);
        up.send_data(hyper::body::Bytes::new(), true).unwrap();

        // Another protocol, and a CONNECT without one, on the same connection.
        let (resp, _s) = send
            .send_request(connect_request(&authority, "/", Some("connect-udp")), true)
            .unwrap();
        assert_eq!(resp.await.unwrap().status(), 501);
        let mut send = send.ready().await.unwrap();
        let plain = hyper::Request::builder()
            .method(hyper::Method::CONNECT)
            .uri(authority.as_str())
            .body(())
            .unwrap();
        let (resp, _s) = send.send_request(plain, true).unwrap();
        assert_eq!(resp.await.unwrap().status(), 405);

        // An :authority outside the connection's site: 421, and nothing upstream.
        let mut send = send.ready().await.unwrap();
        let elsewhere = format!("plain.example:{}", w.guard.port);
        let (resp, _s) = send
            .send_request(connect_request(&elsewhere, "/", Some("websocket")), true)
            .unwrap();
        assert_eq!(resp.await.unwrap().status(), 421);

        // A site with WebSockets off.
        let mut send = h2_connection(&w, "off.example").await;
        let off = format!("off.example:{}", w.guard.port);
        let (resp, _s) = send
            .send_request(connect_request(&off, "/", Some("websocket")), true)
            .unwrap();
        assert_eq!(resp.await.unwrap().status(), 501);
    });
    let line = w.guard.wait_log("tunnel closed");
    assert!(
        line.contains("via=\"h2\"") || line.contains("via=h2"),
        "{line}"
    );
    assert_eq!(w.upstream.requests().len(), 1);
    assert_eq!(
        w.metric("aop_tunnels_total{site=\"ws.example\",protocol=\"websocket\"}"),
        1
    );
    assert_eq!(
        w.metric("aop_tunnels_closed_total{site=\"ws.example\",reason=\"closed\"}"),
        1
    );
}

/// An upstream that answers an upgrade with a `101` to something else than WebSocket, or
/// with a `Sec-WebSocket-Accept` that does not match the guard's key (RFC 8441): 502,
/// and no tunnel.
#[test]
fn a_switch_to_anything_but_websocket_is_a_502() {
    let Some(w) = World::new("a_switch_to_anything_but_websocket_is_a_502", "") else {
        return;
    };
    for path in ["/h2c", "/no-upgrade"] {
        let mut args = w.args("refused", "liar.example");
        args["path"] = path.into();
        assert_eq!(w.client(&args)["status"], 502, "{path}");
    }
    // Over HTTP/1.1 the client checks the accept itself (the guard passes it on); over
    // HTTP/2 the key is the guard's, and so is the check.
    let authority = format!("liar.example:{}", w.guard.port);
    w.runtime.block_on(async {
        let mut send = h2_connection(&w, "liar.example").await;
        let (resp, _s) = send
            .send_request(connect_request(&authority, "/", Some("websocket")), false)
            .unwrap();
        assert_eq!(resp.await.unwrap().status(), 502);
    });
    let text = w.guard.metrics_text();
    assert_eq!(
        aop_e2e::metric(&text, "aop_upstream_errors_total{site=\"liar.example\"}"),
        Some(3),
        "{text}"
    );
    assert_eq!(aop_e2e::metric_total(&text, "aop_tunnels_total", ""), 0);
    assert_eq!(
        w.guard
            .lines_with("upstream answered the WebSocket upgrade with no WebSocket")
            .len(),
        3
    );
}

/// A tunnel keeps its connection's budget slot after the 101 (hyper is done with the
/// connection then): with `max_connections = 1`, another connection closes it to make
/// room (the oldest of the site holding the most), and the tunnel ends with it.
#[test]
fn a_tunnel_holds_its_connections_budget_slot() {
    let Some(w) = World::new(
        "a_tunnel_holds_its_connections_budget_slot",
        "max_connections = 1\n",
    ) else {
        return;
    };
    let mut held = w.hold();
    held.say("wait");
    // Another connection: admitted by closing the tunnel's.
    let config = aop_e2e::guard::client_config(&w.certs.origin_ca.pem(), Some(&w.certs.edge));
    let reply = w.runtime.block_on(async {
        let mut tls = aop_e2e::guard::connect(w.guard.addr(), "plain.example", true, &config)
            .await
            .unwrap();
        aop_e2e::guard::exchange(
            &mut tls,
            b"GET / HTTP/1.1\r\nHost: plain.example\r\nConnection: close\r\n\r\n",
        )
        .await
    });
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(held.result()["closed"], true);
    let evicted = w.guard.wait_log("connection closed to make room");
    assert!(evicted.contains("max_connections_site_share"), "{evicted}");
    wait_until(
        "the tunnel counted evicted",
        Duration::from_secs(10),
        || {
            (w.metric("aop_tunnels_closed_total{site=\"ws.example\",reason=\"evicted\"}") == 1)
                .then_some(())
        },
    );
    assert_eq!(w.metric("aop_tunnels_open{site=\"ws.example\"}"), 0);
}

/// A reload re-checks each open tunnel's connection (a tunnel makes no further request,
/// so the glue's re-check before a request never runs for it): a reload that still
/// trusts the edge leaves the tunnel carrying messages; one whose `ws.example` trusts
/// another CA closes it (`closed="revoked"`, logged with the verdict, counted), and
/// leaves the other sites' counters alone.
#[test]
fn a_reload_that_stops_trusting_the_edge_closes_its_tunnels() {
    let Some(w) = World::new(
        "a_reload_that_stops_trusting_the_edge_closes_its_tunnels",
        "",
    ) else {
        return;
    };
    // The same trust, reloaded: the tunnel lives.
    let mut held = w.hold();
    w.guard.reload();
    wait_until("reloaded once", Duration::from_secs(10), || {
        (w.guard.lines_with("configuration reloaded").len() == 1).then_some(())
    });
    held.say("echo");
    assert_eq!(held.result()["echo"], true);
    wait_until("the tunnel closed", Duration::from_secs(10), || {
        (w.metric("aop_tunnels_closed_total{site=\"ws.example\",reason=\"closed\"}") == 1)
            .then_some(())
    });

    // ws.example now trusts only another CA: the open tunnel is closed.
    let mut held = w.hold();
    let other = aop_e2e::pki::ca(w.certs.dir.path(), "other-ca");
    let text = std::fs::read_to_string(&w.guard.config).unwrap();
    let at = text.find("hostnames = [\"ws.example\"]").unwrap();
    let trust = at + text[at..].find("edge-ca/ca.pem").unwrap();
    let text = format!(
        "{}{}{}",
        &text[..trust],
        other.pem().to_str().unwrap(),
        &text[trust + "edge-ca/ca.pem".len()..]
    );
    std::fs::write(&w.guard.config, text).unwrap();
    w.guard.reload();
    held.say("wait");
    assert_eq!(held.result()["closed"], true);
    let line = w
        .guard
        .wait_log("a tunnel's connection does not pass its rule");
    assert!(line.contains("was=SUCCESS"), "{line}");
    wait_until(
        "the tunnel counted revoked",
        Duration::from_secs(10),
        || {
            (w.metric("aop_tunnels_closed_total{site=\"ws.example\",reason=\"revoked\"}") == 1)
                .then_some(())
        },
    );
    let closed = w.guard.lines_with("tunnel closed");
    assert_eq!(closed.len(), 2, "{closed:?}");
    assert!(closed[1].contains("revoked"), "{closed:?}");
    assert_eq!(w.metric("aop_tunnels_open{site=\"ws.example\"}"), 0);
}
