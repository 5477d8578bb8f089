//! aop-origin as the end-to-end tests meet it: the guard started from a config file (in
//! this process through the library, or as the real binary where only a process shows
//! what is tested: signals, exit codes, resource limits), a raw TLS client that writes
//! exactly the bytes a test gives (with or without SNI, with or without a client
//! certificate), and an nginx upstream that routes by Host the way a multi-tenant
//! upstream does.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender};
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::pki::Leaf;

/// A running aop-origin; stopped on drop.
pub struct Guard {
    /// Asserted unwind-safe: a test may catch a panic around a request to the guard
    /// (`catch_unwind(|| guard.metrics_text())`); nothing a panic interrupts leaves the
    /// guard's state half-changed.
    run: std::panic::AssertUnwindSafe<Run>,
    /// Its TLS port on 127.0.0.1.
    pub port: u16,
    /// Every TLS port, in the configuration's order (the binary's: its first only).
    pub ports: Vec<u16>,
    /// Its metrics port on 127.0.0.1.
    pub metrics: u16,
    log: Receiver<String>,
    /// Every log line read so far (for assertions after the fact).
    seen: std::sync::Mutex<Vec<String>>,
    /// The config file.
    pub config: PathBuf,
}

/// Where the guard runs.
enum Run {
    /// In this process, on a runtime of its own (so a test may block on it), logging to
    /// this harness only. `guard` is taken by a SIGTERM's shutdown, which says on `stopped`
    /// when it is done.
    InProcess {
        runtime: Option<tokio::runtime::Runtime>,
        guard: Option<aop_origin::Guard>,
        stopped: Option<Receiver<()>>,
    },
    /// The aop-origin binary; killed on drop.
    Process(Child),
}

impl Drop for Guard {
    fn drop(&mut self) {
        match &mut *self.run {
            Run::InProcess { runtime, guard, .. } => {
                drop(guard.take());
                // Its tasks are dropped: every listener and connection closes.
                if let Some(rt) = runtime.take() {
                    rt.shutdown_background();
                }
            }
            Run::Process(child) => {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// One log event's text, sent as lines to the guard's harness when the event is written.
struct LogLines {
    to: Sender<String>,
    text: Vec<u8>,
}

impl std::io::Write for LogLines {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.text.extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLines {
    fn drop(&mut self) {
        for line in String::from_utf8_lossy(&self.text).lines() {
            let _ = self.to.send(line.to_owned());
        }
    }
}

impl Guard {
    /// Write `dir/origin.toml` (listen and metrics_listen on port 0 of loopback, then
    /// `rest`) and start the guard on it in this process, with a log of its own; returns
    /// once both listeners are up. Panics with the error if it cannot start.
    pub fn start(dir: &Path, rest: &str) -> Self {
        Self::start_listening(dir, "\"127.0.0.1:0\"", rest)
    }

    /// As [`Guard::start`], with `listen` (a TOML value: `[{ addr = "127.0.0.1:0",
    /// proxy_protocol = true, from = ["127.0.0.3"] }, "127.0.0.1:0"]`) instead of one loopback port. Every
    /// listener's port is in [`Guard::ports`].
    pub fn start_listening(dir: &Path, listen: &str, rest: &str) -> Self {
        let config = write_config(dir, listen, rest);
        let loaded = aop_origin::Config::read(&config).unwrap_or_else(|e| panic!("{e}"));
        let (to, log) = std::sync::mpsc::channel();
        let sink = aop_origin::log_dispatch(loaded.log_format(), move || LogLines {
            to: to.clone(),
            text: Vec::new(),
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("aop-origin")
            .enable_all()
            .build()
            .unwrap();
        // Started on its runtime, waited for here (a test may call this from its own).
        let (started, start) = std::sync::mpsc::channel();
        runtime.spawn(async move {
            let _ = started.send(aop_origin::Guard::start_with_log(loaded, sink).await);
        });
        let guard = start
            .recv()
            .unwrap()
            .unwrap_or_else(|e| panic!("the guard did not start: {e}"));
        Self {
            port: guard.listen_addr().port(),
            ports: guard.listen_addrs().iter().map(SocketAddr::port).collect(),
            metrics: guard.metrics_addr().expect("metrics_listen is set").port(),
            run: std::panic::AssertUnwindSafe(Run::InProcess {
                runtime: Some(runtime),
                guard: Some(guard),
                stopped: None,
            }),
            log,
            seen: std::sync::Mutex::new(Vec::new()),
            config,
        }
    }

    /// As [`Guard::start`], but the aop-origin binary: for what only a process shows
    /// (signals, exit codes). Returns once both listeners are up (as its log says). It
    /// reloads on SIGHUP only (`reload_on_change = false`): a test that rewrites a file
    /// and sends SIGHUP gets the one reload it asked for.
    pub fn spawn_binary(dir: &Path, rest: &str) -> Self {
        Self::spawn_process(dir, &format!("reload_on_change = false\n{rest}"), None)
    }

    /// As [`Guard::spawn_binary`], reloading on file change too (the binary's default).
    pub fn spawn_watching(dir: &Path, rest: &str) -> Self {
        Self::spawn_process(dir, rest, None)
    }

    /// As [`Guard::start`], with the open-files limit (soft, hard) set first: then the
    /// aop-origin binary (as [`Guard::spawn_binary`] makes it), since the limit is a
    /// process's.
    pub fn start_with_open_files(dir: &Path, rest: &str, nofile: Option<(u64, u64)>) -> Self {
        match nofile {
            None => Self::start(dir, rest),
            Some(_) => {
                Self::spawn_process(dir, &format!("reload_on_change = false\n{rest}"), nofile)
            }
        }
    }

    fn spawn_process(dir: &Path, rest: &str, nofile: Option<(u64, u64)>) -> Self {
        let config = write_config(dir, "\"127.0.0.1:0\"", rest);
        let guard = crate::bin("aop-origin");
        let (child, port, log) = match nofile {
            None => crate::spawn_listening(&guard, &["--config", config.to_str().unwrap()]),
            Some((soft, hard)) => crate::spawn_listening(
                Path::new("bash"),
                &[
                    "-c",
                    &format!("ulimit -Sn {soft} && ulimit -Hn {hard} && exec \"$0\" \"$@\""),
                    guard.to_str().unwrap(),
                    "--config",
                    config.to_str().unwrap(),
                ],
            ),
        };
        let mut g = Self {
            run: std::panic::AssertUnwindSafe(Run::Process(child)),
            port,
            ports: vec![port],
            metrics: 0,
            log,
            seen: std::sync::Mutex::new(Vec::new()),
            config,
        };
        let line = g.wait_log("metrics listening");
        // Text logs say `metrics=IP:PORT`; JSON logs say `"metrics":"IP:PORT"`.
        let addr = line
            .split("metrics=")
            .nth(1)
            .and_then(|a| a.split_whitespace().next())
            .or_else(|| {
                line.split("\"metrics\":\"")
                    .nth(1)
                    .and_then(|a| a.split('"').next())
            })
            .unwrap();
        g.metrics = addr.rsplit(':').next().unwrap().parse().unwrap();
        g
    }

    /// The next log line containing `needle` (waits up to 20 s, then panics).
    pub fn wait_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .log
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no log line with {needle:?}"));
            self.seen.lock().unwrap().push(line.clone());
            if line.contains(needle) {
                return line;
            }
        }
    }

    /// Every log line that has arrived so far (without waiting), containing `needle`.
    pub fn lines_with(&self, needle: &str) -> Vec<String> {
        let mut seen = self.seen.lock().unwrap();
        while let Ok(line) = self.log.try_recv() {
            seen.push(line);
        }
        seen.iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }

    /// Re-read the config file, as SIGHUP does (a failure is in the log, as it would be).
    pub fn reload(&self) {
        self.signal("-HUP");
    }

    /// Send a signal (`-HUP`, `-TERM`) to the guard. In this process, the library call
    /// the binary makes for it: `-HUP` reloads, `-TERM` shuts down (see
    /// [`Guard::wait_exit`]).
    pub fn signal(&self, sig: &str) {
        match (&*self.run, sig) {
            (Run::Process(child), _) => {
                let o = crate::run(Command::new("kill").args([sig, &child.id().to_string()]));
                assert_eq!(crate::code(&o), 0);
            }
            (Run::InProcess { guard: Some(g), .. }, "-HUP") => {
                let _ = g.reload();
            }
            (Run::InProcess { .. }, "-TERM") => {
                panic!("-TERM is for a spawn_binary guard; in this process, call shutdown()");
            }
            (Run::InProcess { .. }, _) => panic!("{sig}: not a signal the guard answers"),
        }
    }

    /// Shut an in-process guard down as SIGTERM does (stop accepting, drain); the binary
    /// is sent SIGTERM. [`Guard::wait_exit`] waits for the end.
    pub fn shutdown(&mut self) {
        self.shutdown_within(Duration::from_secs(30));
    }

    /// As [`Guard::shutdown`], with `grace` for the drain instead of SIGTERM's 30 s (in
    /// this process only: the binary's grace is its own).
    pub fn shutdown_within(&mut self, grace: Duration) {
        match &mut *self.run {
            Run::Process(_) => self.signal("-TERM"),
            Run::InProcess {
                runtime,
                guard,
                stopped,
            } => {
                let (done, wait) = std::sync::mpsc::channel();
                let guard = guard.take().expect("shut down once");
                runtime.as_ref().unwrap().spawn(async move {
                    guard.shutdown(grace).await;
                    let _ = done.send(());
                });
                *stopped = Some(wait);
            }
        }
    }

    /// Wait up to 10 s for the guard to exit; its exit code (an in-process guard: 0 once
    /// its shutdown is done).
    pub fn wait_exit(&mut self) -> Option<i32> {
        match &mut *self.run {
            Run::Process(child) => crate::wait_within(child, Duration::from_secs(10))
                .expect("the guard did not exit")
                .code(),
            Run::InProcess { stopped, .. } => {
                let stopped = stopped.as_ref().expect("shutdown() first");
                stopped
                    .recv_timeout(Duration::from_secs(10))
                    .expect("the guard did not stop");
                Some(0)
            }
        }
    }

    /// The /metrics response (head and text).
    pub fn metrics_text(&self) -> String {
        self.metrics_response("/metrics")
    }

    /// GET `path` (`/metrics`, `/healthz`, `/readyz`) on the metrics listener: the status
    /// and the body.
    pub fn metrics_get(&self, path: &str) -> (u16, String) {
        let out = self.metrics_response(path);
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        (status, body.to_owned())
    }

    fn metrics_response(&self, path: &str) -> String {
        use std::io::{Read as _, Write as _};
        let mut tcp = std::net::TcpStream::connect(("127.0.0.1", self.metrics)).unwrap();
        write!(
            tcp,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        tcp.read_to_string(&mut out).unwrap();
        out
    }

    /// The value of one metric line (`name{labels}` exactly), 0 if absent.
    pub fn metric(&self, series: &str) -> u64 {
        crate::metric(&self.metrics_text(), series).unwrap_or(0)
    }

    /// The guard's TLS address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

/// Write `dir/origin.toml`: `listen` (a TOML value), metrics on port 0 of loopback, then
/// `rest`.
fn write_config(dir: &Path, listen: &str, rest: &str) -> PathBuf {
    let config = dir.join("origin.toml");
    std::fs::write(
        &config,
        format!("listen = {listen}\nmetrics_listen = \"127.0.0.1:0\"\n{rest}"),
    )
    .unwrap();
    config
}

/// A rustls client config trusting `roots` (the origin's CA), presenting `identity`.
pub fn client_config(roots: &Path, identity: Option<&Leaf>) -> Arc<rustls::ClientConfig> {
    let mut store = rustls::RootCertStore::empty();
    for c in aop_pki::load_certificates(roots).unwrap() {
        store.add(c).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(aop_pki::default_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store);
    let config = match identity {
        Some(l) => {
            let chain: Vec<CertificateDer<'static>> = aop_pki::load_certificates(&l.cert).unwrap();
            let key: PrivateKeyDer<'static> = aop_pki::load_private_key(&l.key).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    Arc::new(config)
}

/// A TLS connection to `addr`, verifying the origin as `name`; SNI `name` is sent only if
/// `sni` (without it the guard picks its default site).
pub async fn connect(
    addr: SocketAddr,
    name: &str,
    sni: bool,
    config: &Arc<rustls::ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let mut config = (**config).clone();
    config.enable_sni = sni;
    let tcp = TcpStream::connect(addr).await?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(name.to_owned()).unwrap(), tcp)
        .await
}

/// A response read off the wire.
#[derive(Debug)]
pub struct Reply {
    /// The status code (0 if the connection closed before a status line).
    pub status: u16,
    /// The head and body as text.
    pub text: String,
}

impl Reply {
    /// The body (after the blank line).
    pub fn body(&self) -> &str {
        self.text.split_once("\r\n\r\n").map_or("", |(_, b)| b)
    }
}

/// Write `request` as is, then read until the origin closes (or 10 s pass).
pub async fn exchange<S>(stream: &mut S, request: &[u8]) -> Reply
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let _ = stream.write_all(request).await;
    let _ = stream.flush().await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Reply { status, text }
}

/// nginx as a plain-HTTP upstream that routes by Host, like a multi-tenant upstream:
/// each `(server_name, body)` is a vhost answering `body`; the first is the default.
/// Its `port` is where it listens (127.0.0.1).
pub fn vhosts(dir: &Path, vhosts: &[(&str, &str)]) -> crate::nginx::Nginx {
    crate::nginx::Nginx::start_http(dir, |port| {
        let mut servers = String::new();
        for (i, (name, body)) in vhosts.iter().enumerate() {
            let default = if i == 0 { " default_server" } else { "" };
            servers.push_str(&format!(
                "    server {{ listen 127.0.0.1:{port}{default}; server_name {name}; \
                 location / {{ default_type text/plain; return 200 \"{body}\\n\"; }} }}\n"
            ));
        }
        servers
    })
}

/// Write `request` and read one response off a kept-alive connection (the head, then a
/// `Content-Length` body); `None` if the origin closed first. Waits up to 10 s.
pub async fn round_trip<S>(stream: &mut S, request: &[u8]) -> Option<Reply>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    stream.write_all(request).await.ok()?;
    stream.flush().await.ok()?;
    let read = async {
        let mut buf = Vec::new();
        let mut byte = [0u8; 1];
        while !buf.ends_with(b"\r\n\r\n") {
            if stream.read(&mut byte).await.ok()? == 0 {
                return None;
            }
            buf.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&buf).into_owned();
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        stream.read_exact(&mut body).await.ok()?;
        buf.extend_from_slice(&body);
        Some(buf)
    };
    let buf = tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .ok()??;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    Some(Reply { status, text })
}

/// Whether the origin closes `stream` within `limit` (reading and discarding anything
/// it sends first).
pub async fn closed_within<S>(stream: &mut S, limit: Duration) -> bool
where
    S: tokio::io::AsyncRead + Unpin,
{
    let mut buf = [0u8; 1024];
    tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// The certificates most guard tests start from, in a fresh temporary directory:
/// `origin-ca/` with the origin's certificate for `hosts` in `origin-ca/origin/` (what a
/// config's `cert`/`key` name), and `edge-ca/` with the edge's client certificate.
pub struct Certs {
    /// The directory (write the guard's config here).
    pub dir: crate::TempDir,
    /// The origin's CA (its `pem()` is the roots a client trusts).
    pub origin_ca: crate::pki::TestCa,
    /// The edge's client certificate, from `edge-ca/`.
    pub edge: Leaf,
}

impl Certs {
    /// Make them.
    pub fn new(hosts: &[&str]) -> Self {
        let dir = crate::tempdir().unwrap();
        let origin_ca = crate::pki::ca(dir.path(), "origin-ca");
        origin_ca.origin("origin", hosts);
        let edge = crate::pki::ca(dir.path(), "edge-ca").client("edge");
        Self {
            dir,
            origin_ca,
            edge,
        }
    }
}
