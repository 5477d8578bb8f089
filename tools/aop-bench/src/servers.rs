//! The servers under test that the bench runs itself: a bare tokio-rustls server (the
//! floor of aop's own overhead) and the trivial upstream. aop-origin and nginx are
//! started as they are (see `run.rs`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::server::WebPkiClientVerifier;

/// `serve-rustls`.
#[derive(Debug, clap::Args)]
pub(crate) struct RustlsArgs {
    #[arg(long)]
    listen: SocketAddr,
    #[arg(long)]
    cert: PathBuf,
    #[arg(long)]
    key: PathBuf,
    /// Client CA.
    #[arg(long)]
    ca: PathBuf,
    #[arg(long)]
    upstream: SocketAddr,
    /// aop's TLS settings (its cipher-suite order, one ticket per handshake) and nothing
    /// else of aop: what aop's own code costs beyond its TLS configuration.
    #[arg(long)]
    aop_tls: bool,
}

/// `serve-upstream`.
#[derive(Debug, clap::Args)]
pub(crate) struct UpstreamArgs {
    #[arg(long)]
    listen: SocketAddr,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// A tokio-rustls server with `WebPkiClientVerifier` and nothing else, forwarding each
/// request (HTTP/1.1, or HTTP/2 when ALPN chose it) to the upstream over a keep-alive
/// HTTP/1.1 client — what aop does, minus aop.
pub(crate) fn serve_rustls(a: RustlsArgs) -> anyhow::Result<()> {
    let provider = if a.aop_tls {
        aop_verify::bench::tuned_provider(&aop_pki::default_provider())
    } else {
        aop_pki::default_provider()
    };
    let mut roots = rustls::RootCertStore::empty();
    for c in aop_pki::load_certificates(&a.ca)? {
        roots.add(c)?;
    }
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build()?;
    let identity = aop_pki::load_key_pair(&a.cert, &a.key, &provider)?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.chain, identity.key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    if a.aop_tls {
        aop_verify::bench::tune_server_config(&mut config);
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let upstream = a.upstream;
    runtime()?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(a.listen)
            .await
            .context("bind")?;
        let client: Client<HttpConnector, Incoming> =
            Client::builder(TokioExecutor::new()).build(HttpConnector::new());
        loop {
            let (tcp, _) = listener.accept().await?;
            let (acceptor, client) = (acceptor.clone(), client.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                    let client = client.clone();
                    async move {
                        let path = req
                            .uri()
                            .path_and_query()
                            .map_or("/", |p| p.as_str())
                            .to_owned();
                        *req.uri_mut() = format!("http://{upstream}{path}").parse().expect("valid");
                        // To the upstream over HTTP/1.1 whatever the client spoke.
                        *req.version_mut() = hyper::Version::HTTP_11;
                        let resp: Response<BoxBody<Bytes, hyper::Error>> =
                            match client.request(req).await {
                                Ok(r) => r.map(|b| b.boxed()),
                                Err(_) => Response::builder()
                                    .status(502)
                                    .body(Full::new(Bytes::new()).map_err(|n| match n {}).boxed())
                                    .expect("valid"),
                            };
                        Ok::<_, Infallible>(resp)
                    }
                });
                // HTTP/2 when the client chose it by ALPN, as aop-origin and nginx do;
                // hyper's defaults otherwise.
                if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                } else {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                }
            });
        }
    })
}

/// Answers every request `200 ok`.
pub(crate) fn serve_upstream(a: UpstreamArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(a.listen)
            .await
            .context("bind")?;
        loop {
            let (tcp, _) = listener.accept().await?;
            let _ = tcp.set_nodelay(true);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req: Request<Incoming>| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok\n"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    })
}
