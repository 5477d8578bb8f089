//! gRPC through aop-origin, with peers nobody here wrote: Python grpcio as client and
//! server (stubs generated at test time from testdata/grpc/echo.proto), nginx's
//! `grpc_pass grpcs://` as the edge. The guard's site speaks h2c (HTTP/2 with prior
//! knowledge) to the grpcio server. What belongs here: the four kinds of call end to
//! end, trailers (grpc-status, grpc-message) both ways, the verdict in the server's
//! metadata, the refusals as gRPC status codes, and the idle rule for gRPC request
//! streams.

#![allow(clippy::unwrap_used)] // a test: panics are failures

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::Duration;

use aop_e2e::guard::{Certs, Guard};
use aop_e2e::nginx::Nginx;
use aop_e2e::pki::Leaf;
use aop_e2e::{Running, have_peer, run, stderr, stdout};

/// The grpcio server: prints `port N` once it listens, then one line per call:
/// `call METHOD verify=V`. Every reply carries `verify=V keys=K` first (V: the
/// `x-client-verify` metadata it got, K: the metadata keys it got, sorted), so the
/// client shows what the server saw.
const SERVER: &str = r#"
import sys, time
from concurrent import futures
sys.path.insert(0, sys.argv[1])
import grpc, echo_pb2, echo_pb2_grpc

def seen(context, method):
    md = dict(context.invocation_metadata())
    verify = md.get("x-client-verify", "-")
    print("call", method, "verify=" + verify, flush=True)
    return ("verify=%s keys=%s" % (verify, ",".join(sorted(md)))).encode()

class Echo(echo_pb2_grpc.EchoServicer):
    def Unary(self, request, context):
        head = seen(context, "Unary")
        if request.data == b"nope":
            context.abort(grpc.StatusCode.NOT_FOUND, "nope")
        return echo_pb2.Msg(data=head + b"|" + request.data)

    def ServerStream(self, request, context):
        head = seen(context, "ServerStream")
        yield echo_pb2.Msg(data=head)
        for i in range(int(request.data)):
            yield echo_pb2.Msg(data=str(i).encode())

    def ClientStream(self, request_iterator, context):
        head = seen(context, "ClientStream")
        return echo_pb2.Msg(data=head + b"|" + b",".join(m.data for m in request_iterator))

    def Bidi(self, request_iterator, context):
        head = seen(context, "Bidi")
        yield echo_pb2.Msg(data=head)
        for m in request_iterator:
            yield echo_pb2.Msg(data=b"echo " + m.data)

server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
echo_pb2_grpc.add_EchoServicer_to_server(Echo(), server)
port = server.add_insecure_port("127.0.0.1:0")
server.start()
print("port", port, flush=True)
server.wait_for_termination()
"#;

/// The grpcio client: `client.py STUBS TARGET AUTHORITY [ROOTS CERT KEY] -- CASES…`.
/// Without ROOTS it speaks plaintext (h2c, to nginx); with them, TLS with SNI
/// `a.example` and the client certificate CERT/KEY (`-` for none). Each case prints one
/// line: `CASE OK …` or `CASE ERR CODE DETAILS`.
const CLIENT: &str = r#"
import sys, time
sys.path.insert(0, sys.argv[1])
import grpc, echo_pb2, echo_pb2_grpc
target, authority = sys.argv[2], sys.argv[3]
rest = sys.argv[4:]
cut = rest.index("--")
tls, cases = rest[:cut], rest[cut + 1:]
options = [("grpc.default_authority", authority)]
if tls:
    roots, cert, key = tls
    creds = grpc.ssl_channel_credentials(
        open(roots, "rb").read(),
        None if key == "-" else open(key, "rb").read(),
        None if cert == "-" else open(cert, "rb").read(),
    )
    options.append(("grpc.ssl_target_name_override", "a.example"))
    channel = grpc.secure_channel(target, creds, options=options)
else:
    channel = grpc.insecure_channel(target, options=options)
stub = echo_pb2_grpc.EchoStub(channel)
Msg = echo_pb2.Msg

def slow(pause):
    for m in [b"a", b"b", b"c"]:
        yield Msg(data=m)
        time.sleep(pause)

def call(case):
    if case == "unary":
        return stub.Unary(Msg(data=b"hello"), timeout=20).data.decode()
    if case == "nope":
        return stub.Unary(Msg(data=b"nope"), timeout=20).data.decode()
    if case == "sstream":
        got = [m.data.decode() for m in stub.ServerStream(Msg(data=b"100"), timeout=20)]
        ok = got[1:] == [str(i) for i in range(100)]
        return "%s %d %s" % (got[0], len(got) - 1, "in-order" if ok else got[1:])
    if case == "cstream":
        return stub.ClientStream(iter([Msg(data=b"m%d" % i) for i in range(10)]), timeout=20).data.decode()
    if case.startswith("quiet"):
        # A client stream that pauses between messages.
        pause = float(case[len("quiet"):])
        return stub.ClientStream(slow(pause), timeout=30).data.decode()
    if case == "bidi":
        got = [m.data.decode() for m in stub.Bidi(iter([Msg(data=b"x%d" % i) for i in range(5)]), timeout=20)]
        return got[0] + "|" + ",".join(got[1:])
    raise ValueError(case)

for case in cases:
    try:
        print(case, "OK", call(case), flush=True)
    except grpc.RpcError as e:
        print(case, "ERR", e.code().name, e.details(), flush=True)
"#;

/// A running grpcio server: its port and its call lines.
struct Server {
    _child: Running,
    port: u16,
    calls: Receiver<String>,
}

impl Server {
    /// Every call line that has arrived so far (without waiting).
    fn calls(&self) -> Vec<String> {
        self.calls.try_iter().collect()
    }

    /// The next call line (up to 20 s).
    fn next_call(&self) -> String {
        self.calls
            .recv_timeout(Duration::from_secs(20))
            .expect("a call reached the grpcio server")
    }
}

/// The Python stubs and scripts, in `dir`.
struct Py {
    python: PathBuf,
    dir: PathBuf,
}

impl Py {
    /// Generate the stubs from testdata/grpc/echo.proto and write the scripts; `None`
    /// if the venv is missing (and skipping is allowed).
    fn new(test: &str, dir: &Path) -> Option<Self> {
        let python = aop_e2e::python(test)?;
        let dir = dir.join("py");
        std::fs::create_dir(&dir).unwrap();
        let o = run(Command::new(&python)
            .args(["-m", "grpc_tools.protoc", "-I"])
            .arg(aop_e2e::workspace_root().join("testdata/grpc"))
            .arg(format!("--python_out={}", dir.display()))
            .arg(format!("--grpc_python_out={}", dir.display()))
            .arg("echo.proto"));
        assert!(o.status.success(), "{}", stderr(&o));
        std::fs::write(dir.join("server.py"), SERVER).unwrap();
        std::fs::write(dir.join("client.py"), CLIENT).unwrap();
        Some(Self { python, dir })
    }

    /// Start the grpcio server; returns once it listens.
    fn server(&self) -> Server {
        let mut child = Command::new(&self.python)
            .arg(self.dir.join("server.py"))
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let child = Running(child);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the grpcio server did not start");
        let port = line.strip_prefix("port ").unwrap().parse().unwrap();
        Server {
            _child: child,
            port,
            calls: rx,
        }
    }

    /// Run the client against `target` with `:authority` `authority`, over TLS with
    /// `tls` = (roots, identity) or plaintext; its output lines.
    fn client(
        &self,
        target: &str,
        authority: &str,
        tls: Option<(&Path, Option<&Leaf>)>,
        cases: &[&str],
    ) -> Vec<String> {
        let mut c = Command::new(&self.python);
        c.arg(self.dir.join("client.py"))
            .arg(&self.dir)
            .args([target, authority]);
        if let Some((roots, identity)) = tls {
            c.arg(roots);
            match identity {
                Some(l) => c.arg(&l.cert).arg(&l.key),
                None => c.args(["-", "-"]),
            };
        }
        c.arg("--").args(cases);
        let o = run(&mut c);
        assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
        stdout(&o).lines().map(str::to_owned).collect()
    }
}

/// Sites `a.example` (h2c to `upstream`, then `extra`) and `b.example` (the same
/// upstream), both trusting the edge's CA.
fn sites(upstream: u16, extra: &str) -> String {
    let site = |host: &str, extra: &str| {
        format!(
            "\n[[site]]\nhostnames = [\"{host}\"]\ncert = \"origin-ca/origin/cert.pem\"\n\
             key = \"origin-ca/origin/key.pem\"\ntrust = [\"edge-ca/ca.pem\"]\n\
             upstream = \"http://127.0.0.1:{upstream}\"\nupstream_protocol = \"h2c\"\n{extra}\n"
        )
    };
    site("a.example", extra) + &site("b.example", "")
}

/// What the server says it saw, for a call through the guard: the verdict, and the
/// metadata keys (no `host`: h2c carries the name as `:authority` alone; the verdict
/// headers; X-Forwarded-For; grpcio's own).
fn saw(verdict: &str) -> String {
    let mut keys = vec![
        "user-agent",
        "x-client-cert-fingerprint",
        "x-client-cert-issuer",
        "x-client-cert-not-after",
        "x-client-cert-serial",
        "x-client-cert-subject",
        "x-client-verify",
        "x-forwarded-client-cert",
        // The guard's peer, appended (tests/forwarded_for.rs).
        "x-forwarded-for",
        "x-request-id",
    ];
    keys.sort_unstable();
    format!("verify={verdict} keys={}", keys.join(","))
}

/// The calls every path must pass, and what the client prints for each.
const CALLS: [&str; 5] = ["unary", "sstream", "cstream", "bidi", "nope"];

fn expected(head: &str) -> Vec<String> {
    vec![
        format!("unary OK {head}|hello"),
        format!("sstream OK {head} 100 in-order"),
        format!("cstream OK {head}|m0,m1,m2,m3,m4,m5,m6,m7,m8,m9"),
        format!("bidi OK {head}|echo x0,echo x1,echo x2,echo x3,echo x4"),
        "nope ERR NOT_FOUND nope".to_owned(),
    ]
}

/// A grpcio client speaking plaintext HTTP/2 to nginx, whose `grpc_pass grpcs://`
/// presents the edge's certificate to aop-origin, which speaks h2c to a grpcio server:
/// unary, server-stream (100 messages), client-stream and bidi calls pass; a handler's
/// NOT_FOUND/"nope" arrives as sent (trailers preserved both ways); the server sees
/// `x-client-verify: SUCCESS` and no Host.
#[test]
fn grpc_through_nginx_and_the_guard() {
    if !have_peer("nginx", "grpc_through_nginx_and_the_guard") {
        return;
    }
    let certs = Certs::new(&["a.example", "b.example"]);
    let Some(py) = Py::new("grpc_through_nginx_and_the_guard", certs.dir.path()) else {
        return;
    };
    let server = py.server();
    let guard = Guard::start(certs.dir.path(), &sites(server.port, ""));
    let roots = certs.origin_ca.pem();
    let edge = &certs.edge;
    let nginx = Nginx::start_http(&certs.dir.path().join("nginx"), |port| {
        format!(
            r#"
    server {{
        listen 127.0.0.1:{port} http2;
        location / {{
            grpc_pass grpcs://127.0.0.1:{guard};
            grpc_ssl_certificate {cert};
            grpc_ssl_certificate_key {key};
            grpc_ssl_trusted_certificate {roots};
            grpc_ssl_verify on;
            grpc_ssl_server_name on;
            grpc_ssl_name a.example;
            grpc_set_header Host a.example;
        }}
    }}"#,
            guard = guard.port,
            cert = edge.cert.display(),
            key = edge.key.display(),
            roots = roots.display(),
        )
    });
    let out = py.client(
        &format!("127.0.0.1:{}", nginx.port),
        "a.example",
        None,
        &CALLS,
    );
    assert_eq!(out, expected(&saw("SUCCESS")));
    let calls = ["Unary", "ServerStream", "ClientStream", "Bidi", "Unary"];
    for method in calls {
        assert_eq!(server.next_call(), format!("call {method} verify=SUCCESS"));
    }
    // Each call went through the guard over HTTP/2, and was logged with its status.
    let line = guard.wait_log("request");
    assert!(
        line.contains("protocol=HTTP/2") && line.contains("site=a.example"),
        "{line}"
    );
    assert!(line.contains("path=/aop.test.Echo/Unary"), "{line}");
}

/// A grpcio client straight to the guard over TLS with the edge's certificate: the
/// same calls pass. A client stream quiet for longer than `request_body_timeout_secs`
/// (1 s here) passes: gRPC request bodies wait `grpc_body_timeout_secs` instead; past
/// that (2 s here) the call fails. A foreign CA's certificate and no certificate get
/// UNAVAILABLE, an `:authority` of another site UNKNOWN (HTTP 421), and none of them
/// reaches the server.
#[test]
fn grpc_straight_to_the_guard() {
    let certs = Certs::new(&["a.example", "b.example"]);
    let Some(py) = Py::new("grpc_straight_to_the_guard", certs.dir.path()) else {
        return;
    };
    let foreign = aop_e2e::pki::ca(certs.dir.path(), "foreign-ca").client("foreign");
    let server = py.server();
    let guard = Guard::start(
        certs.dir.path(),
        &format!(
            "request_body_timeout_secs = 1\ngrpc_body_timeout_secs = 2\n{}",
            sites(server.port, "")
        ),
    );
    let roots = certs.origin_ca.pem();
    let target = format!("127.0.0.1:{}", guard.port);
    let authority = format!("a.example:{}", guard.port);
    let mut cases = CALLS.to_vec();
    cases.extend(["quiet1.2", "quiet3"]);
    let out = py.client(
        &target,
        &authority,
        Some((&roots, Some(&certs.edge))),
        &cases,
    );
    let head = saw("SUCCESS");
    let mut want = expected(&head);
    want.push(format!("quiet1.2 OK {head}|a,b,c"));
    assert_eq!(&out[..6], &want[..]);
    // Past grpc_body_timeout_secs the guard ends the call: the upstream has not answered
    // yet (a client stream is answered at its end), so the answer is the guard's 408,
    // which grpcio reports as UNKNOWN.
    assert_eq!(
        out[6], "quiet3 ERR UNKNOWN Received http2 header with status: 408",
        "{out:?}"
    );
    let line = guard.wait_log("status=408");
    assert!(line.contains("path=/aop.test.Echo/ClientStream"), "{line}");
    let before = server.calls().len();

    let authority_b = format!("b.example:{}", guard.port);
    for (case, identity, authority, code) in [
        ("foreign CA", Some(&foreign), &authority, "UNAVAILABLE"),
        ("no certificate", None, &authority, "UNAVAILABLE"),
        ("another site", Some(&certs.edge), &authority_b, "UNKNOWN"),
    ] {
        let out = py.client(&target, authority, Some((&roots, identity)), &["unary"]);
        assert_eq!(out.len(), 1, "{case}: {out:?}");
        assert!(
            out[0].starts_with(&format!("unary ERR {code} ")),
            "{case}: {out:?}"
        );
    }
    let line = guard.wait_log("outside the connection's rule");
    assert!(line.contains(&format!("host={authority_b}")), "{line}");
    assert_eq!(
        server.calls().len(),
        0,
        "after {before}: refused calls reached the server"
    );
}
