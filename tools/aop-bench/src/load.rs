//! The load generator: bounded by time and by count, concurrent tasks on one tokio
//! runtime, latencies recorded per operation.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt as _, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// What one phase measured.
#[derive(Debug, Default, Clone)]
pub(crate) struct Stats {
    pub(crate) ops: u64,
    pub(crate) errors: u64,
    pub(crate) resumed: u64,
    /// Connections the server ended after serving requests (its request cap), replaced.
    pub(crate) reconnects: u64,
    pub(crate) elapsed: Duration,
    pub(crate) latencies: Vec<Duration>,
}

impl Stats {
    pub(crate) fn per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub(crate) fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let mut l = self.latencies.clone();
        l.sort();
        l[((l.len() - 1) as f64 * p).round() as usize]
    }
}

pub(crate) const SNI: &str = "bench.example";

/// The longest a connection (TCP and TLS) or a request may take: past it, it is an error,
/// so a server that stops answering cannot hold a phase past its duration.
const OP_TIMEOUT: Duration = Duration::from_secs(10);

async fn tls(
    config: &Arc<ClientConfig>,
    addr: SocketAddr,
) -> anyhow::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    tokio::time::timeout(OP_TIMEOUT, async {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let connector = tokio_rustls::TlsConnector::from(config.clone());
        Ok(connector.connect(ServerName::try_from(SNI)?, tcp).await?)
    })
    .await?
}

/// Await `send` (a request on its way) and read its whole answer, within [`OP_TIMEOUT`]:
/// whether it was a 200.
async fn get_ok<B>(send: impl Future<Output = hyper::Result<hyper::Response<B>>>) -> bool
where
    B: hyper::body::Body,
{
    let answered = async {
        let resp = send.await.ok()?;
        (resp.status() == 200).then_some(())?;
        resp.into_body().collect().await.ok()
    };
    matches!(
        tokio::time::timeout(OP_TIMEOUT, answered).await,
        Ok(Some(_))
    )
}

/// New TCP + TLS connection per operation: handshake, close_notify, wait for the
/// server's close (so the server has done its whole handshake, verification included).
pub(crate) async fn handshakes(
    config: Arc<ClientConfig>,
    addr: SocketAddr,
    concurrency: usize,
    duration: Duration,
    max: u64,
) -> Stats {
    phase(concurrency, duration, max, |bound| {
        let config = config.clone();
        async move {
            let mut s = Stats::default();
            while bound.another() {
                let t = Instant::now();
                let r = async {
                    let mut stream = tls(&config, addr).await?;
                    let resumed =
                        stream.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
                    stream.shutdown().await?;
                    let mut sink = Vec::new();
                    let _ =
                        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut sink))
                            .await;
                    Ok::<_, anyhow::Error>(resumed)
                }
                .await;
                match r {
                    Ok(resumed) => {
                        s.ops += 1;
                        s.resumed += u64::from(resumed);
                        s.latencies.push(t.elapsed());
                    }
                    Err(_) => s.errors += 1,
                }
            }
            s
        }
    })
    .await
}

/// As [`handshakes`], each task alternating between two origins, `addrs[0]` then
/// `addrs[1]`, with a session store of its own (`config` with an empty in-memory store
/// per task): every resumption it tries presents the ticket the *other* origin issued.
/// What an edge sees behind a balancer that spreads its connections over a fleet.
pub(crate) async fn alternating(
    config: Arc<ClientConfig>,
    addrs: [SocketAddr; 2],
    concurrency: usize,
    duration: Duration,
    max: u64,
) -> Stats {
    phase(concurrency, duration, max, |bound| {
        let mut own = (*config).clone();
        own.resumption = rustls::client::Resumption::in_memory_sessions(64);
        let config = Arc::new(own);
        async move {
            let mut s = Stats::default();
            let mut next = 0;
            while bound.another() {
                let addr = addrs[next];
                next = 1 - next;
                let t = Instant::now();
                let r = async {
                    let mut stream = tls(&config, addr).await?;
                    let resumed =
                        stream.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
                    // Read until the server closes: its NewSessionTicket arrives first.
                    stream.shutdown().await?;
                    let mut sink = Vec::new();
                    let _ =
                        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut sink))
                            .await;
                    Ok::<_, anyhow::Error>(resumed)
                }
                .await;
                match r {
                    Ok(resumed) => {
                        s.ops += 1;
                        s.resumed += u64::from(resumed);
                        s.latencies.push(t.elapsed());
                    }
                    Err(_) => s.errors += 1,
                }
            }
            s
        }
    })
    .await
}

/// `connections` keep-alive connections, each sending GET / back to back. A connection
/// the server closes after serving requests (its request cap, as nginx's
/// keepalive_requests and aop's max_requests_per_connection) is replaced while the phase
/// lasts; one that serves none ends its share.
pub(crate) async fn requests(
    config: Arc<ClientConfig>,
    addr: SocketAddr,
    connections: usize,
    duration: Duration,
    max: u64,
) -> Stats {
    phase(connections, duration, max, |bound| {
        let config = config.clone();
        async move {
            let mut s = Stats::default();
            while bound.open() {
                let connected = async {
                    let stream = tls(&config, addr).await?;
                    let (send, conn) =
                        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
                    tokio::spawn(conn);
                    Ok::<_, anyhow::Error>(send)
                };
                let Ok(mut send) = connected.await else {
                    s.errors += 1;
                    break;
                };
                let served = s.ops;
                while matches!(
                    tokio::time::timeout(OP_TIMEOUT, send.ready()).await,
                    Ok(Ok(()))
                ) && bound.another()
                {
                    let t = Instant::now();
                    let req = hyper::Request::get("/")
                        .header("host", SNI)
                        .body(Empty::<Bytes>::new())
                        .expect("valid");
                    if get_ok(send.send_request(req)).await {
                        s.ops += 1;
                        s.latencies.push(t.elapsed());
                    } else {
                        s.errors += 1;
                        break;
                    }
                }
                if s.ops == served {
                    break;
                }
                s.reconnects += u64::from(bound.open());
            }
            s
        }
    })
    .await
}

/// `connections` HTTP/2 connections (the client's `config` must offer only `h2`), each
/// carrying `streams` requests at once: `streams` tasks per connection sending GET / back
/// to back on it. A connection the server ends (a GOAWAY after its request limit) is
/// replaced by a new one while the phase lasts; one that does not negotiate h2 counts
/// as an error and ends its share.
pub(crate) async fn h2_requests(
    config: Arc<ClientConfig>,
    addr: SocketAddr,
    connections: usize,
    streams: usize,
    duration: Duration,
    max: u64,
) -> Stats {
    phase(connections, duration, max, |bound| {
        let config = config.clone();
        async move {
            let mut s = Stats::default();
            while bound.open() {
                let Ok(send) = h2_connect(&config, addr).await else {
                    s.errors += 1;
                    break;
                };
                let tasks = (0..streams)
                    .map(|_| tokio::spawn(h2_stream_loop(send.clone(), bound.clone())))
                    .collect();
                drop(send);
                let done = merge(tasks, Instant::now()).await;
                if done.ops == 0 {
                    // Nothing served on a fresh connection: another would fare the same.
                    s.errors += done.errors.max(1);
                    break;
                }
                // Its streams failed because the server ended it (GOAWAY after its
                // request cap): replaced, not an error.
                s.ops += done.ops;
                s.reconnects += u64::from(done.errors > 0);
                s.latencies.extend(done.latencies);
            }
            s
        }
    })
    .await
}

/// A TLS connection that negotiated `h2`, and hyper's HTTP/2 client on it.
async fn h2_connect(
    config: &Arc<ClientConfig>,
    addr: SocketAddr,
) -> anyhow::Result<hyper::client::conn::http2::SendRequest<Empty<Bytes>>> {
    let stream = tls(config, addr).await?;
    anyhow::ensure!(
        stream.get_ref().1.alpn_protocol() == Some(b"h2"),
        "the server did not choose h2"
    );
    let (send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(stream),
    )
    .await?;
    tokio::spawn(conn);
    Ok(send)
}

/// One stream's worth of load: GET / on `send` until the bound is reached or the
/// connection fails.
async fn h2_stream_loop(
    mut send: hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
    bound: Bound,
) -> Stats {
    let mut s = Stats::default();
    while bound.another() {
        let t = Instant::now();
        let req = hyper::Request::get(format!("https://{SNI}/"))
            .body(Empty::<Bytes>::new())
            .expect("valid");
        let sent = async {
            send.ready().await?;
            send.send_request(req).await
        };
        if get_ok(sent).await {
            s.ops += 1;
            s.latencies.push(t.elapsed());
        } else {
            s.errors += 1;
            break;
        }
    }
    s
}

/// Open `n` connections, complete one request on each, and keep them open.
pub(crate) async fn idle(
    config: Arc<ClientConfig>,
    addr: SocketAddr,
    n: usize,
) -> (
    Vec<hyper::client::conn::http1::SendRequest<Empty<Bytes>>>,
    u64,
) {
    let mut held = Vec::with_capacity(n);
    let mut errors = 0;
    for chunk in 0..n.div_ceil(50) {
        let mut batch = Vec::new();
        for _ in 0..50.min(n - chunk * 50) {
            let config = config.clone();
            batch.push(tokio::spawn(async move {
                let stream = tls(&config, addr).await.ok()?;
                let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .ok()?;
                tokio::spawn(conn);
                let req = hyper::Request::get("/")
                    .header("host", SNI)
                    .body(Empty::<Bytes>::new())
                    .ok()?;
                get_ok(send.send_request(req)).await.then_some(send)
            }));
        }
        for b in batch {
            match b.await.ok().flatten() {
                Some(s) => held.push(s),
                None => errors += 1,
            }
        }
    }
    (held, errors)
}

/// A phase's bound, shared by its tasks: a deadline, and a count of operations taken one
/// at a time.
#[derive(Clone)]
struct Bound {
    deadline: Instant,
    taken: Arc<AtomicU64>,
    max: u64,
}

impl Bound {
    /// Whether one more operation may start.
    fn another(&self) -> bool {
        Instant::now() < self.deadline && self.taken.fetch_add(1, Ordering::Relaxed) < self.max
    }

    /// Whether the phase still runs (without taking an operation).
    fn open(&self) -> bool {
        Instant::now() < self.deadline && self.taken.load(Ordering::Relaxed) < self.max
    }
}

/// Run `tasks` copies of `task` under one [`Bound`] of `duration` and `max` operations,
/// and add up what they measured.
async fn phase<F, Fut>(tasks: usize, duration: Duration, max: u64, task: F) -> Stats
where
    F: Fn(Bound) -> Fut,
    Fut: Future<Output = Stats> + Send + 'static,
{
    let started = Instant::now();
    let bound = Bound {
        deadline: started + duration,
        taken: Arc::new(AtomicU64::new(0)),
        max,
    };
    let tasks = (0..tasks)
        .map(|_| tokio::spawn(task(bound.clone())))
        .collect();
    merge(tasks, started).await
}

async fn merge(tasks: Vec<tokio::task::JoinHandle<Stats>>, started: Instant) -> Stats {
    let mut total = Stats::default();
    for t in tasks {
        if let Ok(s) = t.await {
            total.ops += s.ops;
            total.errors += s.errors;
            total.resumed += s.resumed;
            total.reconnects += s.reconnects;
            total.latencies.extend(s.latencies);
        }
    }
    total.elapsed = started.elapsed();
    total
}
