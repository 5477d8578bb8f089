//! An origin built on aop-verify, run inside the test process on loopback, and a rustls
//! client to talk to it. The origin reports every verdict on a channel, so a test can
//! assert the exact verdict of each connection it makes.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use aop_verify::{Acceptor, Limits, PolicyHandle, PolicySpec, Verdict};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::pki::Leaf;

/// A running origin.
pub struct TestOrigin {
    /// Where it listens (127.0.0.1, a free port).
    pub addr: SocketAddr,
    /// Its policy, for reloads.
    pub policy: PolicyHandle,
    /// TCP connections accepted so far.
    pub accepted: Arc<std::sync::atomic::AtomicU64>,
    verdicts: mpsc::UnboundedReceiver<Verdict>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The origin's handler: 200 with the verdict in the body when SUCCESS, 403 otherwise
/// (which only `optional` mode can reach: it is the application deciding).
async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let verdict = req
        .extensions()
        .get::<Arc<Verdict>>()
        .expect("aop-verify sets it");
    let status = if verdict.is_success() {
        StatusCode::OK
    } else {
        StatusCode::FORBIDDEN
    };
    let mut resp = Response::new(Full::new(Bytes::from(format!("verdict {verdict}\n"))));
    *resp.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(&verdict.to_string()) {
        resp.headers_mut().insert("x-client-verify", v);
    }
    if let Some(c) = &verdict.client
        && let Ok(v) = hyper::header::HeaderValue::from_str(&c.sha256.to_string())
    {
        resp.headers_mut().insert("x-client-cert-sha256", v);
    }
    // Echo what an edge adds, so tests can see it arrived.
    for (name, echo) in [
        ("x-forwarded-for", "x-echo-x-forwarded-for"),
        ("cf-connecting-ip", "x-echo-cf-connecting-ip"),
        ("x-request-id", "x-echo-x-request-id"),
        ("host", "x-echo-host"),
    ] {
        if let Some(v) = req.headers().get(name) {
            resp.headers_mut().insert(echo, v.clone());
        }
    }
    Ok(resp)
}

impl TestOrigin {
    /// Load `spec` and serve it on 127.0.0.1.
    pub async fn start(spec: &PolicySpec, limits: Limits) -> Self {
        let policy = PolicyHandle::load(spec).expect("test policy loads");
        let acceptor = Acceptor::new(policy.clone(), limits);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, verdicts) = mpsc::unbounded_channel();
        let accepted = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = accepted.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, peer)) = listener.accept().await else {
                    continue;
                };
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match acceptor.accept(tcp, peer).await {
                        Ok(conn) => {
                            let _ = tx.send(conn.verdict().clone());
                            let _ =
                                aop_verify::hyper::serve_connection(conn, service_fn(handle)).await;
                        }
                        Err(refused) => {
                            let _ = tx.send(refused.verdict);
                        }
                    }
                });
            }
        });
        Self {
            addr,
            policy,
            accepted,
            verdicts,
            task,
        }
    }

    /// The next verdict the origin produced (waits up to 15 s).
    pub async fn verdict(&mut self) -> Verdict {
        tokio::time::timeout(Duration::from_secs(15), self.verdicts.recv())
            .await
            .expect("a verdict within 15 s")
            .expect("origin running")
    }

    /// Verdicts produced so far and not yet taken (does not wait).
    pub fn pending_verdicts(&mut self) -> Vec<Verdict> {
        let mut out = Vec::new();
        while let Ok(v) = self.verdicts.try_recv() {
            out.push(v);
        }
        out
    }

    /// `HOST:PORT:127.0.0.1` for curl's `--resolve`.
    pub fn resolve(&self, host: &str) -> String {
        format!("{host}:{}:127.0.0.1", self.addr.port())
    }
}

/// What a client saw.
#[derive(Debug)]
pub struct Seen {
    /// HTTP status.
    pub status: u16,
    /// Response body.
    pub body: String,
    /// Whether the TLS session was resumed.
    pub resumed: bool,
}

/// A rustls client: one `ClientConfig` (so sessions can resume across requests).
#[derive(Clone)]
pub struct TestClient {
    config: Arc<ClientConfig>,
}

impl TestClient {
    /// Trust `roots` (the origin's CA), present `identity` if given, TLS 1.3 and 1.2.
    pub fn new(roots: &Path, identity: Option<&Leaf>) -> Self {
        Self::with_versions(
            roots,
            identity,
            &[&rustls::version::TLS13, &rustls::version::TLS12],
        )
    }

    /// As [`TestClient::new`], with only the given protocol versions.
    pub fn with_versions(
        roots: &Path,
        identity: Option<&Leaf>,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Self {
        let mut store = RootCertStore::empty();
        for c in aop_pki::load_certificates(roots).unwrap() {
            store.add(c).unwrap();
        }
        let builder = ClientConfig::builder_with_provider(aop_pki::default_provider())
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(store);
        let config = match identity {
            Some(leaf) => builder
                .with_client_auth_cert(
                    aop_pki::load_certificates(&leaf.cert).unwrap(),
                    aop_pki::load_private_key(&leaf.key).unwrap(),
                )
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        Self {
            config: Arc::new(config),
        }
    }

    /// As [`TestClient::new`], asking for `request` session tickets (RFC 9149
    /// `ticket_request`) if given. The counter counts the TLS 1.3 tickets received.
    pub fn counting_tickets(
        roots: &Path,
        identity: Option<&Leaf>,
        request: Option<rustls::client::TicketRequest>,
    ) -> (Self, Arc<std::sync::atomic::AtomicUsize>) {
        let base = Self::new(roots, identity);
        let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut config = (*base.config).clone();
        config.send_ticket_request = request;
        config.resumption = rustls::client::Resumption::store(Arc::new(CountingStore {
            inner: rustls::client::ClientSessionMemoryCache::new(64),
            tickets: count.clone(),
        }));
        (
            Self {
                config: Arc::new(config),
            },
            count,
        )
    }

    /// As [`TestClient::new`], keeping its sessions in `store` (a test's own
    /// [`rustls::client::ClientSessionStore`]).
    pub fn with_store(
        roots: &Path,
        identity: Option<&Leaf>,
        store: Arc<dyn rustls::client::ClientSessionStore>,
    ) -> Self {
        let base = Self::new(roots, identity);
        let mut config = (*base.config).clone();
        config.resumption = rustls::client::Resumption::store(store);
        Self {
            config: Arc::new(config),
        }
    }

    /// Its rustls config, for a connection a test drives itself.
    pub fn config(&self) -> Arc<ClientConfig> {
        self.config.clone()
    }

    /// `GET /` over TLS to `addr` with SNI `sni`. `Err` carries the TLS or I/O error text.
    pub async fn get(&self, addr: SocketAddr, sni: &str) -> Result<Seen, String> {
        self.get_host(addr, sni, sni).await
    }

    /// As [`TestClient::get`], with a Host header that may differ from the SNI.
    pub async fn get_host(&self, addr: SocketAddr, sni: &str, host: &str) -> Result<Seen, String> {
        self.raw(
            addr,
            sni,
            &format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        )
        .await
    }

    /// Send `request` (a whole HTTP/1.x request, as bytes on the wire) over TLS with SNI
    /// `sni`, and read the response.
    pub async fn raw(&self, addr: SocketAddr, sni: &str, request: &str) -> Result<Seen, String> {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let connector = tokio_rustls::TlsConnector::from(self.config.clone());
        let name = ServerName::try_from(sni.to_owned()).map_err(|e| e.to_string())?;
        let mut tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        let resumed = tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
        tls.write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut buf)).await;
        match read {
            Ok(Ok(_)) => {}
            Ok(Err(e)) if buf.is_empty() => return Err(e.to_string()),
            Ok(Err(_)) => {} // a close without close_notify after a full response
            Err(_) => return Err("timed out reading the response".into()),
        }
        let text = String::from_utf8_lossy(&buf).into_owned();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("no HTTP response: {text:?}"))?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        Ok(Seen {
            status,
            body,
            resumed,
        })
    }
}

/// A client-certificate resolver that presents a certificate signed with an unrelated
/// key — a client that has a certificate but not its key. rustls refuses to build such a
/// config through the safe API, which is the point.
#[derive(Debug)]
pub struct WrongKey(pub Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for WrongKey {
    fn resolve(
        &self,
        _: &[&[u8]],
        _: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

impl TestClient {
    /// Present `cert`'s chain but sign with `key`'s key.
    pub fn with_stolen_cert(roots: &Path, cert: &Leaf, key: &Leaf) -> Self {
        Self::with_raw_chain(roots, aop_pki::load_certificates(&cert.cert).unwrap(), key)
    }

    /// Present exactly these bytes as the certificate chain (they need not parse), and
    /// sign with `key`'s key.
    pub fn with_raw_chain(
        roots: &Path,
        chain: Vec<rustls::pki_types::CertificateDer<'static>>,
        key: &Leaf,
    ) -> Self {
        let provider = aop_pki::default_provider();
        let mut store = RootCertStore::empty();
        for c in aop_pki::load_certificates(roots).unwrap() {
            store.add(c).unwrap();
        }
        let signing = provider
            .key_provider
            .load_private_key(aop_pki::load_private_key(&key.key).unwrap())
            .unwrap();
        let certified = rustls::sign::CertifiedKey::new(chain, signing);
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(store)
            .with_client_cert_resolver(Arc::new(WrongKey(Arc::new(certified))));
        Self {
            config: Arc::new(config),
        }
    }
}

/// A client session store that counts the TLS 1.3 tickets put into it.
#[derive(Debug)]
struct CountingStore {
    inner: rustls::client::ClientSessionMemoryCache,
    tickets: Arc<std::sync::atomic::AtomicUsize>,
}

impl rustls::client::ClientSessionStore for CountingStore {
    fn set_kx_hint(&self, name: ServerName<'static>, group: rustls::NamedGroup) {
        self.inner.set_kx_hint(name, group);
    }

    fn kx_hint(&self, name: &ServerName<'_>) -> Option<rustls::NamedGroup> {
        self.inner.kx_hint(name)
    }

    fn set_tls12_session(
        &self,
        name: ServerName<'static>,
        value: rustls::client::Tls12ClientSessionValue,
    ) {
        self.inner.set_tls12_session(name, value);
    }

    fn tls12_session(
        &self,
        name: &ServerName<'_>,
    ) -> Option<rustls::client::Tls12ClientSessionValue> {
        self.inner.tls12_session(name)
    }

    fn remove_tls12_session(&self, name: &ServerName<'static>) {
        self.inner.remove_tls12_session(name);
    }

    fn insert_tls13_ticket(
        &self,
        name: ServerName<'static>,
        value: rustls::client::Tls13ClientSessionValue,
    ) {
        self.tickets
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.insert_tls13_ticket(name, value);
    }

    fn take_tls13_ticket(
        &self,
        name: &ServerName<'static>,
    ) -> Option<rustls::client::Tls13ClientSessionValue> {
        self.inner.take_tls13_ticket(name)
    }
}
