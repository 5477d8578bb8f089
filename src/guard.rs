//! aop-origin as the attacks in `tests/hostile` meet it: the real binary started from a
//! config file, a raw TLS client that writes exactly the bytes a test gives (with or
//! without SNI, with or without a client certificate), and an nginx upstream that routes
//! by Host the way a multi-tenant upstream does.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::pki::Leaf;

/// A running aop-origin; killed on drop.
pub struct Guard {
    child: Child,
    /// Its TLS port on 127.0.0.1.
    pub port: u16,
    /// Its metrics port on 127.0.0.1.
    pub metrics: u16,
    log: Receiver<String>,
    /// Every log line read so far (for assertions after the fact).
    seen: std::sync::Mutex<Vec<String>>,
    /// The config file.
    pub config: PathBuf,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Guard {
    /// Write `dir/origin.toml` (listen and metrics_listen on free loopback ports, then
    /// `rest`) and start aop-origin on it; returns once both listeners are up.
    pub fn start(dir: &Path, rest: &str) -> Self {
        Self::start_with_open_files(dir, rest, None)
    }

    /// As [`Guard::start`], with the open-files limit (soft, hard) set first.
    pub fn start_with_open_files(dir: &Path, rest: &str, nofile: Option<(u64, u64)>) -> Self {
        let config = dir.join("origin.toml");
        std::fs::write(
            &config,
            format!("listen = \"127.0.0.1:0\"\nmetrics_listen = \"127.0.0.1:0\"\n{rest}"),
        )
        .unwrap();
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
            child,
            port,
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

    /// Send a signal (`-HUP`, `-TERM`) to the guard.
    pub fn signal(&self, sig: &str) {
        let o = crate::run(Command::new("kill").args([sig, &self.child.id().to_string()]));
        assert_eq!(crate::code(&o), 0);
    }

    /// The /metrics text.
    pub fn metrics_text(&self) -> String {
        use std::io::{Read as _, Write as _};
        let mut tcp = std::net::TcpStream::connect(("127.0.0.1", self.metrics)).unwrap();
        write!(
            tcp,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        tcp.read_to_string(&mut out).unwrap();
        out
    }

    /// The value of one metric line (`name{labels}`), 0 if absent.
    pub fn metric(&self, series: &str) -> u64 {
        self.metrics_text()
            .lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Wait up to 10 s for the guard to exit; its exit code.
    pub fn wait_exit(&mut self) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code();
            }
            assert!(Instant::now() < deadline, "the guard did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The guard's TLS address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

/// A rustls client config trusting `roots` (the origin's CA), presenting `identity`.
pub fn client_config(roots: &Path, identity: Option<&Leaf>) -> Arc<rustls::ClientConfig> {
    let mut store = rustls::RootCertStore::empty();
    for c in aop_pki::load_certificates(roots).unwrap() {
        store.add(c).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
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
