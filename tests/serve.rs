//! `aop_verify::serve`, over real TLS on loopback. What belongs here: the accept loop
//! in process (graceful shutdown with an HTTP/2 stream open, many connections at once,
//! clients that close at once or send garbage), and aop-verify's examples built on it,
//! started as processes (`examples/axum.rs` with hyper HTTP/1.1 and HTTP/2 clients,
//! `examples/tonic.rs` with Python grpcio — a gRPC client nobody here wrote).
//! (`examples/origin.rs` is exercised by tests/verify.rs, tests/http2.rs and
//! tests/hostile/probe.rs.)

#![allow(clippy::unwrap_used)] // a test: panics are failures

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aop_e2e::pki::{self, Leaf, World};
use aop_e2e::{Running, run, stderr, stdout, wait_until_async};
use aop_verify::{Acceptor, Limits, Mode, PolicyHandle, PolicySpec, RuleSpec, TrustSpec, Verdict};
use http_body_util::{BodyExt as _, Empty, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, Version};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

/// The origin's certificate for a.example and b.example; the edge's from its CA.
fn world() -> World {
    World::new(&["a.example", "b.example"])
}

/// A rustls client config trusting the origin's CA, presenting `identity`, offering
/// `alpn`.
fn client(w: &World, identity: Option<&Leaf>, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut config = (*aop_e2e::guard::client_config(&w.origin_ca.pem(), identity)).clone();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

const H1: &[&[u8]] = &[b"http/1.1"];
const H2: &[&[u8]] = &[b"h2", b"http/1.1"];

/// An error with its sources, as one line (the TLS alert is a source of hyper's error).
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}

/// `GET https://AUTHORITY/` on a fresh connection with SNI `sni`, over HTTP/2 if ALPN
/// chose it, else HTTP/1.1 (`Host: AUTHORITY`): the version, the status and the body,
/// or the error with its sources.
async fn get(
    addr: SocketAddr,
    sni: &str,
    authority: &str,
    config: &Arc<rustls::ClientConfig>,
) -> Result<(Version, u16, String), String> {
    let tls = aop_e2e::guard::connect(addr, sni, true, config)
        .await
        .map_err(|e| chain(&e))?;
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let io = hyper_util::rt::TokioIo::new(tls);
    // A refusal (the TLS alert, read after a TLS 1.3 handshake) is the connection's
    // error, not the request's.
    let (sent, conn) = if h2 {
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                .await
                .map_err(|e| chain(&e))?;
        let conn = tokio::spawn(conn);
        let req = Request::get(format!("https://{authority}/"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        (send.send_request(req).await, conn)
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| chain(&e))?;
        let conn = tokio::spawn(conn);
        let req = Request::get("/")
            .header("host", authority)
            .body(Empty::<Bytes>::new())
            .unwrap();
        (send.send_request(req).await, conn)
    };
    let resp = match sent {
        Ok(resp) => resp,
        Err(e) => {
            return Err(match conn.await.unwrap() {
                Err(conn) => chain(&conn),
                Ok(()) => chain(&e),
            });
        }
    };
    let (version, status) = (resp.version(), resp.status().as_u16());
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| chain(&e))?
        .to_bytes();
    Ok((version, status, String::from_utf8_lossy(&body).into_owned()))
}

// ---- aop_verify::serve in process ----

/// Rules `a` (a.example) and `b` (b.example), both trusting the edge's CA, in `mode`;
/// the default ALPN (`h2`, then `http/1.1`).
fn policy(w: &World, mode: Mode) -> PolicySpec {
    let rule = |name: &str, host: &str| {
        let mut r = RuleSpec::new(
            name,
            [host],
            &w.server.cert,
            &w.server.key,
            TrustSpec::new([w.edge_ca.pem()]),
        );
        r.mode = mode;
        r
    };
    PolicySpec::new(vec![rule("a", "a.example"), rule("b", "b.example")])
}

/// What the test service answers: the verdict's outcome, the client's subject (`-`
/// without one) and the request body's length; it says on `started` when a request
/// reaches it, before it reads the body.
async fn answer(
    req: Request<Incoming>,
    started: mpsc::UnboundedSender<()>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let verdict = req.extensions().get::<Arc<Verdict>>().unwrap().clone();
    let _ = started.send(());
    let len = match req.into_body().collect().await {
        Ok(b) => b.to_bytes().len(),
        Err(_) => 0,
    };
    let subject = verdict.client.as_ref().map_or("-", |c| c.subject.as_str());
    let text = format!("{} {subject} {len}", verdict.outcome);
    Ok(Response::new(Full::new(Bytes::from(text))))
}

/// A log that a test can read: a `tracing` subscriber writing into a buffer.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Log {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    fn lines_with(&self, needle: &str) -> Vec<String> {
        self.text()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_owned)
            .collect()
    }
}

/// A server on `aop_verify::serve` with the test service, logging into `Log`.
struct Served {
    addr: SocketAddr,
    started: mpsc::UnboundedReceiver<()>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    log: Log,
    /// The 421s the glue reported through `with_observer`.
    misdirected: Arc<Misdirected>,
}

/// Counts the 421s.
#[derive(Default)]
struct Misdirected(std::sync::atomic::AtomicU64);

impl aop_verify::hyper::Observer for Misdirected {
    fn misdirected(&self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Misdirected {
    fn count(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

async fn serve(spec: &PolicySpec) -> Served {
    let log = Log::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // A long handshake timeout: a test's silent connection must still be "in handshake"
    // when it shuts the server down, however loaded the machine (the default 10 s ran
    // out once under a parallel test run).
    let mut limits = Limits::default();
    limits.handshake_timeout = Duration::from_secs(120);
    let acceptor = Acceptor::new(PolicyHandle::load(spec).unwrap(), limits);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, started) = mpsc::unbounded_channel();
    let (stop, stopped) = oneshot::channel::<()>();
    let service = tower::service_fn(move |req| answer(req, tx.clone()));
    let misdirected = Arc::new(Misdirected::default());
    let server = aop_verify::serve(listener, acceptor, service)
        .with_observer(misdirected.clone())
        .with_graceful_shutdown(async {
            let _ = stopped.await;
        });
    let task = tokio::spawn(tracing::instrument::WithSubscriber::with_subscriber(
        server.into_future(),
        tracing::Dispatch::new(subscriber),
    ));
    Served {
        addr,
        started,
        stop: Some(stop),
        task,
        log,
        misdirected,
    }
}

/// A graceful shutdown while an HTTP/2 stream is open: the listener closes and a
/// handshake in progress is dropped at once, the stream's request finishes with its
/// answer, then the connection gets GOAWAY (NO_ERROR) and ends, and only then does
/// `serve`'s future resolve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_an_open_http2_stream_then_goaway() {
    let w = world();
    let mut s = serve(&policy(&w, Mode::Require)).await;
    // Accepted before the edge's connection (the queue is in order), and silent: its
    // handshake is in progress when the shutdown comes.
    let mut silent = TcpStream::connect(s.addr).await.unwrap();
    let tls = aop_e2e::guard::connect(s.addr, "a.example", true, &client(&w, Some(&w.edge), H2))
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (send, conn) = h2::client::handshake(tls).await.unwrap();
    let conn = tokio::spawn(conn);
    let mut ready = send.clone().ready().await.unwrap();
    let req = Request::post("https://a.example/").body(()).unwrap();
    let (resp, mut body) = ready.send_request(req, false).unwrap();
    body.send_data(Bytes::from_static(b"half "), false).unwrap();
    tokio::time::timeout(Duration::from_secs(10), s.started.recv())
        .await
        .expect("the request reaches the service")
        .unwrap();

    s.stop.take().unwrap().send(()).unwrap();
    // The shutdown is under way before the test connects to see the listener gone: a
    // connection accepted before it would count in its `connections=` (it did once).
    wait_until_async("the shutdown starts", Duration::from_secs(10), || {
        s.log
            .text()
            .contains("shutting down: no new connections")
            .then_some(())
    })
    .await;
    let addr = s.addr;
    wait_until_async("the listener closes", Duration::from_secs(10), || {
        std::net::TcpStream::connect(addr).is_err().then_some(())
    })
    .await;
    assert!(!s.task.is_finished(), "a stream is still open");
    assert!(!conn.is_finished(), "the connection waits for its stream");
    // The handshake in progress is dropped at once, not left to its 10 s timeout.
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), silent.read_to_end(&mut buf))
        .await
        .expect("a handshake in progress is dropped at the shutdown");
    assert!(buf.is_empty(), "{read:?} {buf:?}");

    body.send_data(Bytes::from_static(b"and the rest"), true)
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), resp)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut text = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        body.flow_control().release_capacity(chunk.len()).unwrap();
        text.extend_from_slice(&chunk);
    }
    assert_eq!(String::from_utf8(text).unwrap(), "SUCCESS CN=edge 17");

    let ended = tokio::time::timeout(Duration::from_secs(10), conn)
        .await
        .expect("the connection ends after its last stream")
        .unwrap();
    // The server closes once the stream is done; the client may still be writing then
    // (its TLS close_notify): an I/O error, never an HTTP/2 protocol error.
    assert!(
        ended.as_ref().err().is_none_or(h2::Error::is_io),
        "{ended:?}"
    );
    let err = match send.ready().await {
        Ok(mut s) => {
            let req = Request::get("https://a.example/").body(()).unwrap();
            match s.send_request(req, true) {
                Ok((resp, _)) => resp.await.unwrap_err(),
                Err(e) => e,
            }
        }
        Err(e) => e,
    };
    assert!(
        err.is_go_away() && err.is_remote() && err.reason() == Some(h2::Reason::NO_ERROR),
        "{err:?}"
    );
    let served = tokio::time::timeout(Duration::from_secs(10), s.task)
        .await
        .expect("serve resolves once every connection has ended")
        .unwrap();
    assert!(served.is_ok(), "{served:?}");
    let log = s.log.text();
    assert!(
        log.contains("shutting down: no new connections") && log.contains("connections=2"),
        "{log}"
    );
    assert!(log.contains("every connection has ended"), "{log}");
}

/// 200 connections open at once (HTTP/1.1 and HTTP/2 alternately, twelve clients: ten
/// edge certificates, a foreign CA's, none — optional mode lets them all in): each
/// request carries its own connection's verdict and client, never another's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_connections_at_once_each_get_their_own_verdict() {
    let w = world();
    let s = serve(&policy(&w, Mode::Optional)).await;
    let foreign = pki::ca(w.path(), "foreign").client("intruder");
    let mut clients: Vec<(Arc<rustls::ClientConfig>, String)> = (0..10)
        .map(|i| {
            let name = format!("edge-{i}");
            let leaf = w.edge_ca.client(&name);
            (
                client(&w, Some(&leaf), if i % 2 == 0 { H1 } else { H2 }),
                format!("SUCCESS CN={name} 0"),
            )
        })
        .collect();
    clients.push((
        client(&w, Some(&foreign), H2),
        "FAILED:unknown_ca CN=intruder 0".into(),
    ));
    clients.push((client(&w, None, H1), "NONE - 0".into()));

    const N: usize = 200;
    let barrier = Arc::new(tokio::sync::Barrier::new(N));
    let tasks: Vec<_> = (0..N)
        .map(|i| {
            let (config, want) = clients[i % clients.len()].clone();
            let barrier = barrier.clone();
            let addr = s.addr;
            tokio::spawn(async move {
                let tls = aop_e2e::guard::connect(addr, "a.example", true, &config)
                    .await
                    .unwrap();
                let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                let io = hyper_util::rt::TokioIo::new(tls);
                // Every connection is open (its handshake done) before any request.
                barrier.wait().await;
                let resp = if h2 {
                    let (mut send, conn) = hyper::client::conn::http2::handshake(
                        hyper_util::rt::TokioExecutor::new(),
                        io,
                    )
                    .await
                    .unwrap();
                    tokio::spawn(conn);
                    let req = Request::get("https://a.example/")
                        .body(Empty::<Bytes>::new())
                        .unwrap();
                    send.send_request(req).await.unwrap()
                } else {
                    let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
                    tokio::spawn(conn);
                    let req = Request::get("/")
                        .header("host", "a.example")
                        .body(Empty::<Bytes>::new())
                        .unwrap();
                    send.send_request(req).await.unwrap()
                };
                assert_eq!(
                    resp.version(),
                    if h2 {
                        Version::HTTP_2
                    } else {
                        Version::HTTP_11
                    }
                );
                let body = resp.into_body().collect().await.unwrap().to_bytes();
                assert_eq!(String::from_utf8_lossy(&body), want, "connection {i}");
            })
        })
        .collect();
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .expect("every connection is answered")
            .unwrap();
    }
    let foreign = (0..N).filter(|i| i % clients.len() == 10).count();
    assert_eq!(s.log.lines_with("verdict=FAILED:unknown_ca").len(), foreign);
}

/// A client that connects and closes at once, and one that sends an HTTP request
/// instead of a ClientHello: each is refused and logged by the acceptor (NONE,
/// handshake_error), and the accept loop goes on serving the edge (and reports its 421 to
/// the observer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_accept_loop_survives_clients_that_close_at_once_or_send_garbage() {
    let w = world();
    let s = serve(&policy(&w, Mode::Require)).await;
    let edge = client(&w, Some(&w.edge), H2);

    drop(TcpStream::connect(s.addr).await.unwrap());
    let mut garbage = TcpStream::connect(s.addr).await.unwrap();
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n")
        .await
        .unwrap();
    let mut seen = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), garbage.read_to_end(&mut seen))
        .await
        .expect("the origin closes a connection that is not TLS");
    assert!(read.is_ok() || seen.is_empty(), "{read:?}");
    assert!(
        !String::from_utf8_lossy(&seen).contains("HTTP/1.1"),
        "no HTTP answer: {seen:?}"
    );
    let lines = wait_until_async("two refusals logged", Duration::from_secs(10), || {
        let l = s.log.lines_with("reason=\"handshake_error\"");
        (l.len() == 2).then_some(l)
    })
    .await;
    assert!(
        lines.iter().all(|l| l.contains("verdict=NONE")),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("not a TLS ClientHello")),
        "{lines:?}"
    );

    for _ in 0..2 {
        let got = get(s.addr, "a.example", "a.example", &edge).await.unwrap();
        assert_eq!(got, (Version::HTTP_2, 200, "SUCCESS CN=edge 0".into()));
    }
    // A name of the other rule: 421, told to the observer given to serve.
    let got = get(s.addr, "a.example", "b.example", &edge).await.unwrap();
    assert_eq!((got.0, got.1), (Version::HTTP_2, 421));
    assert_eq!(s.misdirected.count(), 1);
    assert!(!s.task.is_finished());
}

// ---- the examples, as processes ----

/// Start `examples/NAME.rs` serving a.example and b.example (a rule each), trusting the
/// edge's CA, with `extra` arguments; its port and its stderr lines.
fn example(name: &str, w: &World, extra: &[&str]) -> (Running, u16, Receiver<String>) {
    example_with_open_files(name, w, extra, None)
}

/// As [`example`], with the open-files limit `nofile` set first if given.
fn example_with_open_files(
    name: &str,
    w: &World,
    extra: &[&str],
    nofile: Option<u32>,
) -> (Running, u16, Receiver<String>) {
    let (cert, key) = (
        w.server.cert.to_str().unwrap(),
        w.server.key.to_str().unwrap(),
    );
    let trust = w.edge_ca.pem();
    let mut args = vec!["--listen", "127.0.0.1:0", "--cert", cert, "--key", key];
    args.extend(["--trust", trust.to_str().unwrap()]);
    args.extend(["--host", "a.example", "--host", "b.example"]);
    args.extend_from_slice(extra);
    let program = aop_e2e::example("aop-verify", name);
    let (child, port, log) = match nofile {
        None => aop_e2e::spawn_listening(&program, &args),
        Some(n) => {
            let ulimit = format!("ulimit -n {n} && exec \"$0\" \"$@\"");
            let mut sh = vec!["-c", ulimit.as_str(), program.to_str().unwrap()];
            sh.extend(args);
            aop_e2e::spawn_listening(Path::new("bash"), &sh)
        }
    };
    (Running(child), port, log)
}

/// The next stderr line containing `needle` (waits up to 15 s).
fn line_with(log: &Receiver<String>, needle: &str) -> String {
    lines_until(log, needle).pop().unwrap()
}

/// Every stderr line up to the next one containing `needle`, that one last (waits up to
/// 15 s for it).
fn lines_until(log: &Receiver<String>, needle: &str) -> Vec<String> {
    let mut lines = Vec::new();
    loop {
        let line = log
            .recv_timeout(Duration::from_secs(15))
            .unwrap_or_else(|_| panic!("no log line with {needle:?} after {lines:?}"));
        let found = line.contains(needle);
        lines.push(line);
        if found {
            return lines;
        }
    }
}

/// examples/axum.rs: the verdict in the body over HTTP/1.1 and HTTP/2; a foreign CA's
/// certificate refused in the handshake (the client reads UnknownCA, the log says
/// FAILED:unknown_ca), no certificate likewise (CertificateRequired, NONE); a name of the
/// other rule 421 on both protocols.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_axum_example_serves_the_verdict_and_refuses_the_rest() {
    let w = world();
    let (_axum, port, log) = example("axum", &w, &[]);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    for (alpn, version) in [(H1, Version::HTTP_11), (H2, Version::HTTP_2)] {
        let edge = client(&w, Some(&w.edge), alpn);
        let got = get(addr, "a.example", "a.example", &edge).await.unwrap();
        assert_eq!(got, (version, 200, "verdict SUCCESS\n".into()));
        let line = line_with(&log, "aop::verdict");
        assert!(
            line.contains("verdict=SUCCESS") && line.contains("rule=\"a.example\""),
            "{line}"
        );
        // b.example is served, but under its own rule: not on a connection made for a.
        let got = get(addr, "a.example", "b.example", &edge).await.unwrap();
        assert_eq!((got.0, got.1), (version, 421));
        let line = line_with(&log, "outside the connection's rule: 421");
        assert!(
            line.contains("host=b.example") && line.contains("rule=\"a.example\""),
            "{line}"
        );
    }
    let foreign = pki::ca(w.path(), "foreign").client("intruder");
    for (identity, alert, verdict) in [
        (Some(&foreign), "UnknownCA", "verdict=FAILED:unknown_ca"),
        (None, "CertificateRequired", "verdict=NONE"),
    ] {
        for alpn in [H1, H2] {
            let err = get(addr, "a.example", "a.example", &client(&w, identity, alpn))
                .await
                .unwrap_err();
            assert!(err.contains(alert), "{err}");
            let line = line_with(&log, "aop::verdict");
            assert!(line.contains(verdict), "{line}");
        }
    }
}

/// examples/axum.rs with 64 open files at most, and 100 clients that connect and send
/// nothing: once no descriptor is left, `accept` fails (EMFILE); the loop logs it and
/// retries after a pause — not in a spin — and serves the edge again once the clients
/// have gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_accept_loop_waits_out_running_out_of_descriptors() {
    let w = world();
    let (_axum, port, log) = example_with_open_files("axum", &w, &[], Some(64));
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut silent = Vec::new();
    for _ in 0..100 {
        silent.push(TcpStream::connect(addr).await.unwrap());
    }
    let line = line_with(&log, "accept failed");
    assert!(line.contains("Too many open files"), "{line}");
    drop(silent);
    // The edge's connection waits in the listen queue until descriptors are free again.
    let edge = client(&w, Some(&w.edge), H2);
    let got = tokio::time::timeout(
        Duration::from_secs(30),
        get(addr, "a.example", "a.example", &edge),
    )
    .await
    .expect("served once the silent clients have gone")
    .unwrap();
    assert_eq!(got, (Version::HTTP_2, 200, "verdict SUCCESS\n".into()));
    let lines = lines_until(&log, "verdict=SUCCESS");
    let failed = lines.iter().filter(|l| l.contains("accept failed")).count();
    // One attempt per 50 ms pause: a few dozen at most while the clients held their
    // descriptors (a loop that spun would log thousands).
    assert!(failed < 400, "{failed} failed accepts logged");
}

/// examples/axum.rs on SIGTERM while an upload is in flight: the listener closes at
/// once, the upload finishes and is answered (with the verdict), the connection closes,
/// and the process exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_axum_example_finishes_the_request_in_flight_on_sigterm() {
    let w = world();
    let (mut axum, port, log) = example("axum", &w, &[]);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut tls = aop_e2e::guard::connect(addr, "a.example", true, &client(&w, Some(&w.edge), H1))
        .await
        .unwrap();
    tls.write_all(b"POST /upload HTTP/1.1\r\nHost: a.example\r\nContent-Length: 10\r\n\r\n12345")
        .await
        .unwrap();
    line_with(&log, "upload started");

    let term = run(Command::new("kill").args(["-TERM", &axum.0.id().to_string()]));
    assert!(term.status.success(), "{}", stderr(&term));
    line_with(&log, "shutting down: no new connections");
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the listener is closed"
    );
    assert!(
        axum.0.try_wait().unwrap().is_none(),
        "a request is in flight"
    );

    tls.write_all(b"67890").await.unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut reply))
        .await
        .expect("answered, then closed")
        .unwrap();
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
    assert!(
        reply.ends_with("\r\n\r\nverdict SUCCESS; 10 bytes\n"),
        "{reply}"
    );
    let status = aop_e2e::wait_within(&mut axum.0, Duration::from_secs(10))
        .expect("the process ends once its connection has");
    assert_eq!(status.code(), Some(0));
}

/// The gRPC client script: one Check per argument `NAME:CERT:KEY:AUTHORITY` (CERT and
/// KEY empty for none) against 127.0.0.1:PORT with SNI a.example, printing
/// `NAME OK <status> <x-client-verify>` or `NAME ERR <code>`.
const GRPC_CLIENT: &str = r#"
import sys
sys.path.insert(0, sys.argv[1])
import grpc, health_pb2, health_pb2_grpc
port, roots = sys.argv[2], open(sys.argv[3], "rb").read()
for case in sys.argv[4:]:
    name, cert, key, authority = case.split(":")
    creds = grpc.ssl_channel_credentials(
        roots,
        open(key, "rb").read() if key else None,
        open(cert, "rb").read() if cert else None,
    )
    options = [("grpc.ssl_target_name_override", "a.example"),
               ("grpc.default_authority", authority)]
    with grpc.secure_channel("127.0.0.1:" + port, creds, options=options) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply, call = stub.Check.with_call(health_pb2.HealthCheckRequest(), timeout=10)
            verdict = dict(call.initial_metadata()).get("x-client-verify")
            status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            print(name, "OK", status, verdict, flush=True)
        except grpc.RpcError as e:
            print(name, "ERR", e.code().name, flush=True)
"#;

/// examples/tonic.rs with Python grpcio (stubs generated from testdata/grpc/health.proto
/// at test time): in `require` mode the edge gets SERVING and sees its verdict in the
/// response metadata; a foreign CA's certificate and no certificate get UNAVAILABLE and
/// never reach the service; an `:authority` of the other rule gets UNKNOWN (HTTP 421).
/// In `optional` mode the service itself answers NOT_SERVING, with the verdict.
#[test]
fn the_tonic_example_answers_grpcio_by_the_verdict() {
    let Some(python) = aop_e2e::python("the_tonic_example_answers_grpcio_by_the_verdict") else {
        return;
    };
    let w = world();
    let stubs = w.path().join("stubs");
    std::fs::create_dir(&stubs).unwrap();
    let protos = aop_e2e::workspace_root().join("testdata/grpc");
    let o = run(Command::new(&python)
        .args(["-m", "grpc_tools.protoc", "-I"])
        .arg(&protos)
        .arg(format!("--python_out={}", stubs.display()))
        .arg(format!("--grpc_python_out={}", stubs.display()))
        .arg("health.proto"));
    assert!(o.status.success(), "{}", stderr(&o));
    let script = w.path().join("client.py");
    std::fs::write(&script, GRPC_CLIENT).unwrap();
    let foreign = pki::ca(w.path(), "foreign").client("intruder");
    let case = |name: &str, identity: Option<&Leaf>, authority: &str| {
        let (cert, key) = identity.map_or((String::new(), String::new()), |l| {
            (l.cert.display().to_string(), l.key.display().to_string())
        });
        format!("{name}:{cert}:{key}:{authority}")
    };
    let grpc = |port: u16, cases: &[String]| -> String {
        let o = run(Command::new(&python)
            .arg(&script)
            .arg(&stubs)
            .arg(port.to_string())
            .arg(w.origin_ca.pem())
            .args(cases));
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o)
    };

    let (tonic, port, log) = example("tonic", &w, &[]);
    let out = grpc(
        port,
        &[
            case("edge", Some(&w.edge), "a.example"),
            case("foreign", Some(&foreign), "a.example"),
            case("none", None, "a.example"),
            case("other-rule", Some(&w.edge), "b.example"),
        ],
    );
    assert_eq!(
        out,
        "edge OK SERVING SUCCESS\nforeign ERR UNAVAILABLE\nnone ERR UNAVAILABLE\n\
         other-rule ERR UNKNOWN\n"
    );
    // The 421 came last: every line before it has been read. The refusals were logged,
    // and the service was called once, for the edge.
    let lines = lines_until(&log, "outside the connection's rule: 421");
    let checks: Vec<_> = lines
        .iter()
        .filter(|l| l.contains("health: check"))
        .collect();
    assert!(
        checks.len() == 1 && checks[0].contains("verdict=SUCCESS"),
        "{checks:?}"
    );
    for verdict in ["verdict=FAILED:unknown_ca", "verdict=NONE"] {
        assert!(
            lines.iter().any(|l| l.contains(verdict)),
            "{verdict}: {lines:?}"
        );
    }
    drop(tonic);

    let (_tonic, port, log) = example("tonic", &w, &["--mode", "optional"]);
    let out = grpc(
        port,
        &[
            case("foreign", Some(&foreign), "a.example"),
            case("none", None, "a.example"),
        ],
    );
    assert_eq!(
        out,
        "foreign OK NOT_SERVING FAILED:unknown_ca\nnone OK NOT_SERVING NONE\n"
    );
    let line = line_with(&log, "health: check");
    assert!(line.contains("verdict=FAILED:unknown_ca"), "{line}");
    let line = line_with(&log, "health: check");
    assert!(line.contains("verdict=NONE"), "{line}");
}
