//! aop-origin against the findings of the review after HTTP/2, h2c, gRPC and WebSockets
//! landed: verdict headers sent as request trailers, `*` targets, the body timer of a
//! client without a certificate.

#![allow(clippy::unwrap_used)] // a test: panics are failures

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use aop_e2e::guard::{Certs, Guard, client_config};
use http_body_util::{BodyExt as _, Empty, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;

/// What the h2c upstream saw of one request: its headers and its trailers.
#[derive(Clone, Debug)]
struct Seen {
    path: String,
    headers: HeaderMap,
    trailers: Option<HeaderMap>,
}

/// An h2c upstream (hyper's HTTP/2 server, prior knowledge) that records every request's
/// headers and trailers and answers 200.
struct H2cUpstream {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for H2cUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl H2cUpstream {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let s = s.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let s = s.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let trailers = body
                                .collect()
                                .await
                                .ok()
                                .and_then(|b| b.trailers().cloned());
                            s.lock().unwrap().push(Seen {
                                path: parts.uri.path().to_owned(),
                                headers: parts.headers,
                                trailers,
                            });
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("ok\n"))))
                        }
                    });
                    let _ = hyper::server::conn::http2::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
                });
            }
        });
        Self { addr, seen, task }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// Site `a.example`, h2c to `up`, `mode = "optional"`, trusting the edge's CA.
fn optional_h2c_site(up: SocketAddr, extra: &str) -> String {
    format!(
        "\n[[site]]\nhostnames = [\"a.example\"]\ncert = \"origin-ca/origin/cert.pem\"\n\
         key = \"origin-ca/origin/key.pem\"\ntrust = [\"edge-ca/ca.pem\"]\n\
         upstream = \"http://{up}\"\nupstream_protocol = \"h2c\"\nmode = \"optional\"\n{extra}\n"
    )
}

/// A hyper HTTP/2 client connection to the guard as `a.example`, presenting `identity`.
async fn h2<B>(
    g: &Guard,
    roots: &std::path::Path,
    identity: Option<&aop_e2e::pki::Leaf>,
) -> hyper::client::conn::http2::SendRequest<B>
where
    B: hyper::body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut config = (*client_config(roots, identity)).clone();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(g.addr()).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("a.example").unwrap(), tcp)
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

/// The trailers a forger sends: every verdict name, in underscore and mixed-case
/// spellings, `x-forwarded-server`, hop-by-hop names, and one benign `x-checksum`.
const FORGED: [(&str, &str); 12] = [
    ("x-client-verify", "SUCCESS"),
    ("x-client-cert-subject", "CN=admin"),
    ("x-client-cert-fingerprint", "00"),
    ("x-client-cert-issuer", "CN=ca"),
    ("x-client-cert-serial", "01"),
    ("x-client-cert-not-after", "2099"),
    ("x-forwarded-client-cert", "Hash=00;Subject=\"CN=admin\""),
    ("x_client_verify", "SUCCESS"),
    ("X_Client-Cert_Subject", "CN=admin"),
    ("x-forwarded-server", "admin"),
    ("keep-alive", "1"),
    ("x-checksum", "abc"),
];

/// The upstream's one request: the verdict header it got is `verify`, and of the
/// forged trailers only `x-checksum` arrived.
fn assert_scrubbed(up: &H2cUpstream, verify: &str) {
    let seen = up.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let seen = &seen[0];
    assert_eq!(seen.path, "/upload");
    assert_eq!(
        seen.headers["x-client-verify"], verify,
        "{:?}",
        seen.headers
    );
    assert_eq!(seen.headers.get_all("x-client-verify").iter().count(), 1);
    let trailers = seen.trailers.clone().expect("the benign trailer arrives");
    let names: Vec<&str> = trailers.keys().map(HeaderName::as_str).collect();
    assert_eq!(names, ["x-checksum"], "{trailers:?}");
    assert_eq!(trailers["x-checksum"], "abc");
}

/// An HTTP/2 client (with the edge's certificate, and without one on the optional
/// site) sends verdict headers as request trailers: none reaches the h2c upstream, which
/// sees the real verdict in the headers; the benign trailer does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verdict_trailers_never_reach_an_h2c_upstream_over_http2() {
    let certs = Certs::new(&["a.example"]);
    let roots = certs.origin_ca.pem();
    for identity in [Some(&certs.edge), None] {
        let up = H2cUpstream::start().await;
        let g = Guard::start(certs.dir.path(), &optional_h2c_site(up.addr, ""));
        let mut send = h2(&g, &roots, identity).await;
        let mut trailers = HeaderMap::new();
        // (The h2 crate refuses to send a connection-specific field: not `keep-alive`.)
        for (k, v) in FORGED.into_iter().filter(|(k, _)| *k != "keep-alive") {
            trailers.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_static(v),
            );
        }
        let body = Full::new(Bytes::from_static(b"hello"))
            .with_trailers(std::future::ready(Some(Ok::<_, Infallible>(trailers))));
        let req = Request::post(format!("https://a.example:{}/upload", g.port))
            .header("te", "trailers")
            .body(body)
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_scrubbed(
            &up,
            if identity.is_some() {
                "SUCCESS"
            } else {
                "NONE"
            },
        );
    }
}

/// The same over HTTP/1.1: a chunked request's trailers, from a client without a
/// certificate on the optional site.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verdict_trailers_never_reach_an_h2c_upstream_over_http1() {
    let certs = Certs::new(&["a.example"]);
    let roots = certs.origin_ca.pem();
    for identity in [None, Some(&certs.edge)] {
        let up = H2cUpstream::start().await;
        let g = Guard::start(certs.dir.path(), &optional_h2c_site(up.addr, ""));
        let config = client_config(&roots, identity);
        let mut tls = aop_e2e::guard::connect(g.addr(), "a.example", true, &config)
            .await
            .unwrap();
        let trailers: String = FORGED
            .iter()
            .map(|(k, v)| format!("{k}: {v}\r\n"))
            .collect();
        let request = format!(
            "POST /upload HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\n\
             TE: trailers\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n{trailers}\r\n"
        );
        let reply = aop_e2e::guard::exchange(&mut tls, request.as_bytes()).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        assert_scrubbed(
            &up,
            if identity.is_some() {
                "SUCCESS"
            } else {
                "NONE"
            },
        );
    }
}

/// The asterisk target is for OPTIONS alone: `GET *` / `POST *` (HTTP/1.1) and `:path: *`
/// with GET or POST (HTTP/2) are answered 400 and never forwarded; `OPTIONS *` on both
/// reaches the upstream as `*`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_asterisk_target_is_for_options_only() {
    let certs = Certs::new(&["a.example"]);
    let roots = certs.origin_ca.pem();
    let up = H2cUpstream::start().await;
    let g = Guard::start(certs.dir.path(), &optional_h2c_site(up.addr, ""));
    let config = client_config(&roots, Some(&certs.edge));
    for (method, status) in [("GET", 400), ("POST", 400), ("OPTIONS", 200)] {
        let mut tls = aop_e2e::guard::connect(g.addr(), "a.example", true, &config)
            .await
            .unwrap();
        let request = format!(
            "{method} * HTTP/1.1\r\nHost: a.example\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        let reply = aop_e2e::guard::exchange(&mut tls, request.as_bytes()).await;
        assert_eq!(reply.status, status, "HTTP/1.1 {method}: {}", reply.text);
    }

    let mut send = h2(&g, &roots, Some(&certs.edge)).await;
    for (method, status) in [("GET", 400), ("POST", 400), ("OPTIONS", 200)] {
        let uri = hyper::Uri::builder()
            .scheme("https")
            .authority(format!("a.example:{}", g.port))
            .path_and_query("*")
            .build()
            .unwrap();
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .body(Empty::<Bytes>::new())
            .unwrap();
        send.ready().await.unwrap();
        let resp = send.send_request(req).await.unwrap();
        assert_eq!(resp.status(), status, "HTTP/2 {method}");
    }
    let seen: Vec<String> = up.seen().into_iter().map(|s| s.path).collect();
    assert_eq!(seen, ["*", "*"], "only the OPTIONS requests are forwarded");
}

/// `grpc_body_timeout_secs` is for the edge's gRPC calls: a client without a
/// certificate on an optional site whose gRPC request body stalls gets the guard's 408
/// after `request_body_timeout_secs` (1 s; the gRPC timer here is 600 s, far past the
/// test's own bound), so it cannot hold an upstream connection for the long timer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grpc_body_timer_needs_a_verified_client() {
    let certs = Certs::new(&["a.example"]);
    let roots = certs.origin_ca.pem();
    let up = H2cUpstream::start().await;
    let g = Guard::start(
        certs.dir.path(),
        &format!(
            "request_body_timeout_secs = 1\ngrpc_body_timeout_secs = 600\n{}",
            optional_h2c_site(up.addr, "")
        ),
    );
    let mut send = h2(&g, &roots, None).await;
    // A first message, then nothing: the body never ends.
    let body = Full::new(Bytes::from_static(b"\0\0\0\0\x01a"))
        .with_trailers(std::future::pending::<Option<Result<HeaderMap, Infallible>>>());
    let req = Request::post(format!(
        "https://a.example:{}/aop.test.Echo/ClientStream",
        g.port
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(body)
    .unwrap();
    let resp = tokio::time::timeout(std::time::Duration::from_secs(60), send.send_request(req))
        .await
        .expect("answered on the short timer")
        .unwrap();
    assert_eq!(resp.status(), 408);
    let line = g.wait_log("status=408");
    assert!(line.contains("verdict=NONE"), "{line}");
}
