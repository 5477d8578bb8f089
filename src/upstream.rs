//! A plain-HTTP upstream for the origin guard's tests: it answers every request with the
//! request's headers, one `name: value` per line, and counts requests. `?sleep_ms=N`
//! makes it wait first (to have a request in flight); `?pad=N` adds N bytes to the
//! answer (a response too large for the socket buffers).

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

/// A running echo upstream.
pub struct Echo {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Requests answered.
    pub requests: Arc<AtomicU64>,
    /// Requests received (counted before any `sleep_ms`).
    pub started: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn echo(
    req: Request<Incoming>,
    count: Arc<AtomicU64>,
    started: Arc<AtomicU64>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    started.fetch_add(1, Ordering::Relaxed);
    if let Some(ms) = req
        .uri()
        .query()
        .and_then(|q| q.strip_prefix("sleep_ms="))
        .and_then(|v| v.parse().ok())
    {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let (parts, incoming) = req.into_parts();
    // Read the request body whole before answering, as an application would: a request
    // whose body never finishes never gets an answer from here.
    let received = http_body_util::BodyExt::collect(incoming)
        .await
        .map(|b| b.to_bytes().len());
    let mut body = String::new();
    if let Ok(n) = received
        && n > 0
    {
        let _ = writeln!(body, "x-echo-body-bytes: {n}");
    }
    for (name, value) in &parts.headers {
        let _ = writeln!(
            body,
            "{name}: {}",
            String::from_utf8_lossy(value.as_bytes())
        );
    }
    // `?pad=N`: N more bytes after the headers (a large response).
    if let Some(n) = parts
        .uri
        .query()
        .and_then(|q| q.strip_prefix("pad="))
        .and_then(|v| v.parse::<usize>().ok())
    {
        body.push_str(&".".repeat(n));
    }
    count.fetch_add(1, Ordering::Relaxed);
    Ok(Response::new(Full::new(Bytes::from(body))))
}

impl Echo {
    /// Start on 127.0.0.1, a free port.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicU64::new(0));
        let started = Arc::new(AtomicU64::new(0));
        let (count, begun) = (requests.clone(), started.clone());
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (count, begun) = (count.clone(), begun.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        echo(req, count.clone(), begun.clone())
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        Self {
            addr,
            requests,
            started,
            task,
        }
    }
}

/// The header lines of an echo body as (name, value) pairs.
pub fn headers(body: &str) -> Vec<(String, String)> {
    body.lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Every value of one echoed header (a field sent several times is several lines).
pub fn header_values(body: &str, name: &str) -> Vec<String> {
    headers(body)
        .into_iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v)
        .collect()
}

/// The value of one echoed header, if present.
pub fn header(body: &str, name: &str) -> Option<String> {
    headers(body)
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}
