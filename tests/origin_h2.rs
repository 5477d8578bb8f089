//! aop-origin with HTTP/2 from the edge: curl (`--http2`, `--http1.1`) and a rustls +
//! hyper HTTP/2 client through the guard to an HTTP/1.1 upstream written here (it
//! records what it saw: version, headers, body bytes). What belongs here: the protocol
//! the edge negotiates, the rewrite to HTTP/1.1, header parity between the two
//! protocols, the refusals on HTTP/2, trailers, uploads in bounded memory and the
//! descriptor bound on upstream connections. gRPC (h2c upstreams) is in tests/grpc.rs.

#![allow(clippy::unwrap_used)] // a test: panics are failures

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aop_e2e::guard::{Certs, Guard, client_config};
use aop_e2e::pki::Leaf;
use aop_e2e::{code, have_peer, run, stderr, stdout};
use http_body_util::{BodyExt as _, Empty, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// What the upstream saw of one request.
#[derive(Clone, Debug)]
struct Seen {
    version: hyper::Version,
    path: String,
    headers: BTreeMap<String, String>,
    bytes: u64,
    sum: u64,
}

/// An HTTP/1.1 upstream that records every request (streaming its body through a
/// checksum, never holding it) and answers `bytes=N sum=X`. `/hold` waits until
/// [`Upstream::release`].
struct Upstream {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Requests that arrived (counted before `/hold` waits).
    arrived: Arc<AtomicU64>,
    release: Arc<tokio::sync::watch::Sender<bool>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A checksum of a byte stream, the same however the stream is cut into pieces
/// (SipHash with fixed keys: std's `Hasher::write` buffers partial words, and std is
/// optimised even in a test build).
fn checksum() -> std::hash::DefaultHasher {
    std::hash::DefaultHasher::new()
}

impl Upstream {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let arrived = Arc::new(AtomicU64::new(0));
        let release = Arc::new(tokio::sync::watch::channel(false).0);
        let (s, a, r) = (seen.clone(), arrived.clone(), release.clone());
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (s, a, r) = (s.clone(), a.clone(), r.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (s, a, r) = (s.clone(), a.clone(), r.clone());
                        async move {
                            a.fetch_add(1, Ordering::SeqCst);
                            if req.uri().path() == "/hold" {
                                let _ = r.subscribe().wait_for(|go| *go).await;
                            }
                            let (parts, mut body) = req.into_parts();
                            let (mut bytes, mut sum) = (0u64, checksum());
                            while let Some(Ok(frame)) = body.frame().await {
                                if let Some(d) = frame.data_ref() {
                                    bytes += d.len() as u64;
                                    std::hash::Hasher::write(&mut sum, d);
                                }
                            }
                            let headers = parts
                                .headers
                                .iter()
                                .map(|(k, v)| {
                                    (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into())
                                })
                                .collect();
                            s.lock().unwrap().push(Seen {
                                version: parts.version,
                                path: parts.uri.path().to_owned(),
                                headers,
                                bytes,
                                sum: std::hash::Hasher::finish(&sum),
                            });
                            let answer = format!(
                                "bytes={bytes} sum={:x}\n",
                                std::hash::Hasher::finish(&sum)
                            );
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(answer))))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        Self {
            addr,
            seen,
            arrived,
            release,
            task,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn release(&self) {
        self.release.send_replace(true);
    }
}

/// Sites `a.example` (upstream `a`, then `extra`) and `b.example` (upstream `b`), both
/// trusting the edge's CA.
fn sites(a: SocketAddr, b: SocketAddr, extra: &str) -> String {
    let site = |host: &str, up: SocketAddr, extra: &str| {
        format!(
            "\n[[site]]\nhostnames = [\"{host}\"]\ncert = \"origin-ca/origin/cert.pem\"\n\
             key = \"origin-ca/origin/key.pem\"\ntrust = [\"edge-ca/ca.pem\"]\n\
             upstream = \"http://{up}\"\n{extra}\n"
        )
    };
    site("a.example", a, extra) + &site("b.example", b, "")
}

/// curl to `https://HOST:PORT/` (more options in `extra`), with `-w` printing
/// `\nversion=V status=S`: (exit code, stdout, stderr).
fn curl(
    host: &str,
    port: u16,
    roots: &Path,
    identity: Option<&Leaf>,
    extra: &[&str],
) -> (i32, String, String) {
    let mut c = aop_e2e::curl(host, port, roots, identity);
    c.args(["-w", "\nversion=%{http_version} status=%{http_code}"])
        .args(extra);
    let o = tokio::task::block_in_place(|| run(&mut c));
    (code(&o), stdout(&o), stderr(&o))
}

/// A rustls client presenting `identity`, offering `h2` then `http/1.1`.
fn h2_config(roots: &Path, identity: &Leaf) -> Arc<rustls::ClientConfig> {
    let mut config = (*client_config(roots, Some(identity))).clone();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

/// A hyper HTTP/2 client connection to `addr` with SNI `sni`.
async fn h2_client(
    addr: SocketAddr,
    sni: &str,
    config: Arc<rustls::ClientConfig>,
) -> hyper::client::conn::http2::SendRequest<Empty<Bytes>> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from(sni.to_owned()).unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    send
}

/// curl with the edge's certificate over HTTP/2 and over HTTP/1.1, each sending forged
/// verdict headers: both reach the upstream as HTTP/1.1 with the real verdict, the
/// forgeries gone, `Host` = the name curl asked for (`:authority` on HTTP/2), and the
/// same headers otherwise; the access log says which protocol the edge spoke.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_over_http2_and_http1_reaches_an_http1_upstream_alike() {
    if !have_peer(
        "curl",
        "curl_over_http2_and_http1_reaches_an_http1_upstream_alike",
    ) {
        return;
    }
    let certs = Certs::new(&["a.example", "b.example"]);
    let up = Upstream::start().await;
    let g = Guard::start(certs.dir.path(), &sites(up.addr, up.addr, ""));
    let roots = certs.origin_ca.pem();
    let forged = [
        "-H",
        "X-Client-Verify: FORGED",
        "-H",
        "X_Client_Verify: FORGED",
        "-H",
        "X-Client-Cert-Subject: CN=FORGED",
        "-H",
        "X-Forwarded-Server: FORGED",
    ];
    let mut seen = Vec::new();
    for (flag, version, protocol) in [("--http2", "2", "HTTP/2"), ("--http1.1", "1.1", "HTTP/1.1")]
    {
        let mut args = vec![flag];
        args.extend(forged);
        let (rc, out, err) = curl("a.example", g.port, &roots, Some(&certs.edge), &args);
        assert_eq!(rc, 0, "{flag}: {err}");
        assert!(
            out.ends_with(&format!("\nversion={version} status=200")),
            "{flag}: {out}"
        );
        let line = g.wait_log("request");
        assert!(
            line.contains(&format!("protocol={protocol}")) && line.contains("status=200"),
            "{line}"
        );
        let s = up.seen().pop().unwrap();
        assert_eq!(s.version, hyper::Version::HTTP_11, "{flag}");
        let h = &s.headers;
        assert_eq!(h["x-client-verify"], "SUCCESS", "{flag}");
        assert_eq!(h["x-client-cert-subject"], "CN=edge", "{flag}");
        assert_eq!(h["host"], format!("a.example:{}", g.port), "{flag}");
        assert!(!h.contains_key("x_client_verify"), "{flag}: {h:?}");
        assert!(!h.contains_key("x-forwarded-server"), "{flag}: {h:?}");
        assert!(!h.values().any(|v| v.contains("FORGED")), "{flag}: {h:?}");
        seen.push(s);
    }
    // Parity: the same header names and values, whichever protocol the edge spoke (the
    // request id is each request's own).
    let without_id = |s: &Seen| {
        let mut h = s.headers.clone();
        assert!(h.remove("x-request-id").is_some());
        h
    };
    assert_eq!(without_id(&seen[0]), without_id(&seen[1]));
}

/// The refusals hold on HTTP/2: another site's `:authority` is 421 and a `Host` that
/// differs from `:authority` 400 (neither reaches the upstream, the connection keeps
/// serving); without a client certificate, or with one from a foreign CA, the
/// handshake fails and the upstream sees nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_on_http2() {
    if !have_peer("curl", "refusals_on_http2") {
        return;
    }
    let certs = Certs::new(&["a.example", "b.example"]);
    let foreign = aop_e2e::pki::ca(certs.dir.path(), "foreign-ca").client("foreign");
    let up = Upstream::start().await;
    let g = Guard::start(certs.dir.path(), &sites(up.addr, up.addr, ""));
    let roots = certs.origin_ca.pem();
    // curl sends a Host given on HTTP/2 as `:authority`.
    let b = format!("Host: b.example:{}", g.port);
    let (rc, out, _) = curl(
        "a.example",
        g.port,
        &roots,
        Some(&certs.edge),
        &["--http2", "-H", &b],
    );
    assert_eq!((rc, out.as_str()), (0, "\nversion=2 status=421"));
    // (curl's exit code over TLS 1.2, the alert it reports)
    for (case, identity, (code12, alert)) in [
        ("no certificate", None, (98, "alert certificate required")),
        ("a foreign CA", Some(&foreign), (35, "alert unknown ca")),
    ] {
        // TLS 1.2: the alert ends the handshake itself (98: curl's "client certificate
        // required", 35: a handshake error).
        let (rc, out, err) = curl(
            "a.example",
            g.port,
            &roots,
            identity,
            &["--http2", "--tls-max", "1.2"],
        );
        assert_eq!(rc, code12, "{case}: {out}{err}");
        assert!(err.contains(alert), "{case}: {err}");
        assert_eq!(out, "\nversion=0 status=000", "{case}");
        // TLS 1.3: the alert arrives after curl's side of the handshake is done, on its
        // first read (56), or curl's HTTP/2 set-up finds the socket closed first (55).
        let (rc, out, err) = curl("a.example", g.port, &roots, identity, &["--http2"]);
        assert!(rc == 56 || rc == 55, "{case}: {rc} {out}{err}");
        assert!(rc == 55 || err.contains(alert), "{case}: {err}");
        assert_eq!(out, "\nversion=0 status=000", "{case}");
    }
    assert_eq!(
        up.arrived.load(Ordering::SeqCst),
        0,
        "refused, none forwarded"
    );

    let a = format!("a.example:{}", g.port);
    let mut send = h2_client(g.addr(), "a.example", h2_config(&roots, &certs.edge)).await;
    let mut get = async |authority: &str, host: Option<&str>| {
        let mut req = Request::get(format!("https://{authority}/"));
        if let Some(h) = host {
            req = req.header("host", h);
        }
        send.ready().await.unwrap();
        let resp = send
            .send_request(req.body(Empty::new()).unwrap())
            .await
            .unwrap();
        resp.status().as_u16()
    };
    assert_eq!(get(&a, Some("b.example")).await, 400);
    assert_eq!(get(&a, Some(&format!("b.example:{}", g.port))).await, 400);
    assert_eq!(get(&format!("b.example:{}", g.port), None).await, 421);
    assert_eq!(
        up.arrived.load(Ordering::SeqCst),
        0,
        "refused, none forwarded"
    );
    assert_eq!(get(&a, Some(&a)).await, 200, "the connection still serves");
    assert_eq!(up.arrived.load(Ordering::SeqCst), 1);
}

/// An HTTP/1.1 upstream that answers every request with a chunked body and a trailer
/// (`x-checksum: abc`), whatever the request said (hyper's own server would send it
/// only to a request with `TE: trailers`, which the guard does not forward to an
/// HTTP/1.1 upstream).
async fn trailer_upstream() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut byte = [0u8; 1];
                loop {
                    while !buf.ends_with(b"\r\n\r\n") {
                        if tcp.read(&mut byte).await.unwrap_or(0) == 0 {
                            return;
                        }
                        buf.push(byte[0]);
                    }
                    buf.clear();
                    let answer = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\
                                  Trailer: x-checksum\r\n\r\n5\r\nhello\r\n0\r\n\
                                  x-checksum: abc\r\n\r\n";
                    if tcp.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, task)
}

/// An HTTP/1.1 upstream's chunked trailers reach an HTTP/2 client as HTTP/2 trailers,
/// and an HTTP/1.1 client that sent `TE: trailers` (the guard keeps the upstream's
/// `Trailer` header, end to end by RFC 9110 §6.6.2: hyper's HTTP/1.1 server writes only
/// the fields it declares); an HTTP/1.1 client that did not gets the body without them
/// (hyper's server drops them, as RFC 9110 §6.5.1 allows).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailers_from_an_http1_upstream() {
    let certs = Certs::new(&["a.example", "b.example"]);
    let (up, _task) = trailer_upstream().await;
    let g = Guard::start(certs.dir.path(), &sites(up, up, ""));
    let roots = certs.origin_ca.pem();
    let mut send = h2_client(g.addr(), "a.example", h2_config(&roots, &certs.edge)).await;
    for _ in 0..2 {
        let req = Request::get(format!("https://a.example:{}/", g.port))
            .body(Empty::new())
            .unwrap();
        send.ready().await.unwrap();
        let resp = send.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["trailer"], "x-checksum");
        let body = resp.into_body().collect().await.unwrap();
        let trailers = body.trailers().cloned().expect("trailers");
        assert_eq!(trailers["x-checksum"], "abc");
        assert_eq!(body.to_bytes(), "hello");
    }

    let config = client_config(&roots, Some(&certs.edge));
    for (te, trailer) in [("TE: trailers\r\n", true), ("", false)] {
        let mut tls = aop_e2e::guard::connect(g.addr(), "a.example", true, &config)
            .await
            .unwrap();
        let request = format!("GET / HTTP/1.1\r\nHost: a.example\r\n{te}Connection: close\r\n\r\n");
        let reply = aop_e2e::guard::exchange(&mut tls, request.as_bytes()).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        assert!(
            reply.text.contains("\r\ntrailer: x-checksum\r\n"),
            "{}",
            reply.text
        );
        assert!(
            reply.body().starts_with("5\r\nhello\r\n0\r\n"),
            "{}",
            reply.text
        );
        assert_eq!(
            reply.body().contains("x-checksum: abc"),
            trailer,
            "{te:?}: {}",
            reply.text
        );
    }
}

/// The aop-origin binary with `sites` in `dir/origin.toml` (and the open-files limit
/// `nofile` if given): the child (its pid is the guard's), its TLS port and its log.
fn spawn_guard(
    dir: &Path,
    sites: &str,
    nofile: Option<u64>,
) -> (aop_e2e::Running, u16, std::sync::mpsc::Receiver<String>) {
    let config = dir.join("origin.toml");
    std::fs::write(&config, format!("listen = \"127.0.0.1:0\"\n{sites}")).unwrap();
    let bin = aop_e2e::bin("aop-origin");
    let config = config.to_str().unwrap();
    let (child, port, log) = match nofile {
        None => aop_e2e::spawn_listening(&bin, &["--config", config]),
        Some(n) => aop_e2e::spawn_listening(
            Path::new("bash"),
            &[
                "-c",
                &format!("ulimit -n {n} && exec \"$0\" \"$@\""),
                bin.to_str().unwrap(),
                "--config",
                config,
            ],
        ),
    };
    (aop_e2e::Running(child), port, log)
}

/// A process's peak resident set (`VmHWM`), in KiB.
fn vm_hwm(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Upload `len` bytes of a pseudo-random stream with `curl -T -` (`flag`: `--http2` or
/// `--http1.1`); returns the stream's checksum and what curl printed.
fn upload(port: u16, roots: &Path, edge: &Leaf, flag: &str, len: u64) -> (u64, String) {
    use std::io::Write as _;
    // Not aop_e2e::curl: its URL would be a second transfer.
    let mut c = std::process::Command::new("curl");
    c.args(["-sS", "--max-time", "600", flag, "-T", "-", "--resolve"])
        .arg(format!("a.example:{port}:127.0.0.1"))
        .arg("--cacert")
        .arg(roots)
        .arg("--cert")
        .arg(&edge.cert)
        .arg("--key")
        .arg(&edge.key)
        .args(["-w", " version=%{http_version}"])
        .arg(format!("https://a.example:{port}/upload"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let (mut x, mut sum, mut left) = (0x9e37_79b9_7f4a_7c15_u64, checksum(), len);
    let mut buf = vec![0u8; 1 << 16];
    while left > 0 {
        let n = buf.len().min(left as usize);
        for chunk in buf[..n].chunks_mut(8) {
            // xorshift64: cheap bytes that differ everywhere.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
        std::hash::Hasher::write(&mut sum, &buf[..n]);
        stdin.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
    drop(stdin);
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{flag}: {}", stderr(&o));
    (std::hash::Hasher::finish(&sum), stdout(&o))
}

/// Uploads through the guard are streamed: 64 MiB (`AOP_UPLOAD_MIB` to change it;
/// scripts/upload-rss.sh runs 1 GiB) over HTTP/2 and over HTTP/1.1 reach the upstream
/// byte for byte, as HTTP/1.1, and the guard's peak resident set (the binary's VmHWM)
/// grows by far less than the upload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::print_stderr)] // the figures belong in the test's output
async fn uploads_stream_in_bounded_memory() {
    if !have_peer("curl", "uploads_stream_in_bounded_memory") {
        return;
    }
    let mib: u64 = std::env::var("AOP_UPLOAD_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let len = mib << 20;
    let certs = Certs::new(&["a.example", "b.example"]);
    let up = Upstream::start().await;
    let (guard, port, _log) = spawn_guard(certs.dir.path(), &sites(up.addr, up.addr, ""), None);
    let pid = guard.0.id();
    let roots = certs.origin_ca.pem();
    // A small request first: the baseline is a guard that has served.
    let (rc, _, err) = curl("a.example", port, &roots, Some(&certs.edge), &["--http2"]);
    assert_eq!(rc, 0, "{err}");
    for (flag, version) in [("--http2", "2"), ("--http1.1", "1.1")] {
        let before = vm_hwm(pid);
        let (sum, out) =
            tokio::task::block_in_place(|| upload(port, &roots, &certs.edge, flag, len));
        let after = vm_hwm(pid);
        assert_eq!(
            out,
            format!("bytes={len} sum={sum:x}\n version={version}"),
            "{flag}"
        );
        let s = up.seen().pop().unwrap();
        assert_eq!(
            (s.path.as_str(), s.version),
            ("/upload", hyper::Version::HTTP_11)
        );
        assert_eq!((s.bytes, s.sum), (len, sum), "{flag}");
        eprintln!(
            "upload of {mib} MiB {flag}: guard VmHWM {before} KiB before, {after} KiB after (+{} KiB)",
            after - before
        );
        assert!(
            after - before < 32 * 1024,
            "{flag}: the guard's peak RSS grew from {before} KiB to {after} KiB for a {mib} MiB upload"
        );
    }
}

/// Upstream connections hold descriptor permits: with an open-files limit of 300 (256
/// kept back, 22 for client connections, 22 for upstream connections), 40 requests held
/// by the upstream on one HTTP/2 connection get 17 upstream connections (one upstream's
/// share: three quarters); the other 23 are answered 503 after a short wait and never
/// reach it. Meanwhile `b.example`, whose upstream is another, is served from the
/// quarter left. Once released, the 17 are answered and the guard serves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_stay_within_the_open_files_limit() {
    let certs = Certs::new(&["a.example", "b.example"]);
    let up = Upstream::start().await;
    let other = Upstream::start().await;
    let (_guard, port, log) =
        spawn_guard(certs.dir.path(), &sites(up.addr, other.addr, ""), Some(300));
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let send = h2_client(
        addr,
        "a.example",
        h2_config(&certs.origin_ca.pem(), &certs.edge),
    )
    .await;
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..40 {
        let mut send = send.clone();
        calls.spawn(async move {
            let req = Request::get(format!("https://a.example:{port}/hold"))
                .body(Empty::new())
                .unwrap();
            send.ready().await.unwrap();
            let resp = send.send_request(req).await.unwrap();
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            (status, body)
        });
    }
    let mut refused = 0;
    while refused < 23 {
        let (status, body) = calls.join_next().await.unwrap().unwrap();
        assert_eq!(
            (status, &body[..]),
            (503, &b"too many upstream connections\n"[..])
        );
        refused += 1;
    }
    assert_eq!(up.arrived.load(Ordering::SeqCst), 17);
    let line = loop {
        let l = log.recv_timeout(Duration::from_secs(10)).unwrap();
        if l.contains("no upstream connection permit") {
            break l;
        }
    };
    assert!(line.contains("site=a.example"), "{line}");
    let mut to_b = h2_client(
        addr,
        "b.example",
        h2_config(&certs.origin_ca.pem(), &certs.edge),
    )
    .await;
    to_b.ready().await.unwrap();
    let resp = to_b
        .send_request(
            Request::get(format!("https://b.example:{port}/"))
                .body(Empty::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "another upstream's share is not taken");
    assert_eq!(other.arrived.load(Ordering::SeqCst), 1);
    up.release();
    let empty = format!("bytes=0 sum={:x}\n", std::hash::Hasher::finish(&checksum()));
    while let Some(r) = calls.join_next().await {
        let (status, body) = r.unwrap();
        assert_eq!((status, &body[..]), (200, empty.as_bytes()));
    }
    assert_eq!(up.arrived.load(Ordering::SeqCst), 17);
    // The pooled connections serve what comes next.
    let mut send = send;
    send.ready().await.unwrap();
    let resp = send
        .send_request(
            Request::get(format!("https://a.example:{port}/"))
                .body(Empty::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(up.arrived.load(Ordering::SeqCst), 18);
}
