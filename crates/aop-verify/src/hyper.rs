//! hyper 1 glue (cargo feature `hyper`): serve a service over an accepted connection,
//! with the connection's verdict in every request's extensions.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper::body::{Body, Incoming};
use hyper::header::HOST;
use hyper::service::Service;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use rustls_pki_types::CertificateDer;

use crate::acceptor::host_in_rule;
use crate::{Accepted, Mode, Policy, PolicyHandle, Verdict, unix_time};

/// Serve HTTP/1.1 on an accepted connection. Every request carries the connection's
/// verdict as an `Arc<Verdict>` extension.
///
/// A request whose Host (any Host header, and the authority of an absolute request
/// target) belongs to another rule than the connection's SNI did, or to no rule, is
/// answered `421 Misdirected Request` with an empty body, without calling the service: a
/// client accepted under one zone's trust, or under the shared default rule, must not
/// reach a hostname whose rule trusts someone else. A request with no Host, or a Host
/// that is not text, is answered 400.
///
/// After a policy reload, a kept-alive connection's certificate is checked against the
/// new policy before its next request; if it no longer passes (a retired CA, a revoked
/// certificate, a removed rule) the request is answered 421 with `Connection: close`, so
/// the client reconnects and meets the new policy in a fresh handshake.
///
///
/// ```no_run
/// # use std::sync::Arc;
/// # use aop_verify::Verdict;
/// # fn handler(req: hyper::Request<hyper::body::Incoming>) {
/// let verdict = req.extensions().get::<Arc<Verdict>>().expect("set by aop-verify");
/// if !verdict.is_success() { /* optional mode: decide here */ }
/// # }
/// ```
pub fn serve_connection<S, B>(
    accepted: Accepted,
    service: S,
) -> impl Future<Output = Result<(), hyper::Error>>
where
    S: Service<Request<Incoming>, Response = Response<B>>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Body + Default + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    serve_connection_until(accepted, service, std::future::pending(), None)
}

/// As [`serve_connection`], and when `shutdown` completes, finish the request in
/// progress (if any), then close the connection gracefully instead of waiting for the
/// next request. `misdirected`, if given, counts the 421s.
///
/// The future returned is two pointers: the connection (hyper's state, the TLS stream,
/// the service; about 2 KiB) is one heap allocation of its own size, and `shutdown`
/// another. An `async fn` here would keep its arguments beside the connection they were
/// moved into, and a task that awaited it would carry both for the connection's whole
/// life (measured: a 16.7 KiB task per connection in aop-origin).
pub fn serve_connection_until<S, B, F>(
    accepted: Accepted,
    service: S,
    shutdown: F,
    misdirected: Option<Arc<std::sync::atomic::AtomicU64>>,
) -> impl Future<Output = Result<(), hyper::Error>>
where
    S: Service<Request<Incoming>, Response = Response<B>>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Body + Default + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    F: Future<Output = ()>,
{
    let chain: Option<Arc<[CertificateDer<'static>]>> = accepted
        .stream
        .get_ref()
        .1
        .peer_certificates()
        .map(|c| c.iter().map(|d| d.clone().into_owned()).collect());
    let service = WithVerdict {
        inner: service,
        verdict: Arc::new(accepted.verdict),
        checked: std::sync::Mutex::new(accepted.policy),
        handle: accepted.handle,
        chain,
        misdirected,
    };
    let mut conn = Box::pin(
        hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(accepted.stream), service),
    );
    let mut shutdown = Some(Box::pin(shutdown));
    std::future::poll_fn(move |cx| {
        if let Some(s) = shutdown.as_mut()
            && s.as_mut().poll(cx).is_ready()
        {
            shutdown = None;
            conn.as_mut().graceful_shutdown();
        }
        conn.as_mut().poll(cx)
    })
}

/// Checks the Host against the connection's rule, inserts the verdict into each
/// request, then calls the inner service.
struct WithVerdict<S> {
    inner: S,
    verdict: Arc<Verdict>,
    /// The policy this connection's certificate was last checked against.
    checked: std::sync::Mutex<Arc<Policy>>,
    /// The policy in force.
    handle: PolicyHandle,
    /// The client's chain, to re-check it after a reload.
    chain: Option<Arc<[CertificateDer<'static>]>>,
    misdirected: Option<Arc<std::sync::atomic::AtomicU64>>,
}

impl<S> WithVerdict<S> {
    /// The policy to judge this request by: the one in force, once the connection's
    /// certificate has been re-checked against it after a reload; `None` if it no longer
    /// passes (or its rule is gone), and the connection must end.
    fn policy(&self) -> Option<Arc<Policy>> {
        let current = self.handle.current();
        let mut checked = self
            .checked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if Arc::ptr_eq(&checked, &current) {
            return Some(current);
        }
        let rule = current.select(self.verdict.sni.as_deref()).ok()?;
        if Some(rule.name().as_ref()) != self.verdict.rule.as_deref() {
            return None;
        }
        if rule.mode() == Mode::Require {
            let (ee, rest) = self.chain.as_deref()?.split_first()?;
            let again = rule
                .verifier()
                .check(ee, rest, unix_time(time::OffsetDateTime::now_utc()));
            if !again.outcome.is_success() {
                tracing::warn!(target: "aop::verdict", rule = rule.name().as_ref(), verdict = %again.outcome,
                    "a kept-alive connection's certificate no longer passes the reloaded policy: 421 and close");
                return None;
            }
        }
        *checked = current.clone();
        Some(current)
    }
}

impl<S, B> Service<Request<Incoming>> for WithVerdict<S>
where
    S: Service<Request<Incoming>, Response = Response<B>>,
    B: Default,
{
    type Response = Response<B>;
    type Error = S::Error;
    type Future = Checked<S::Future, B, S::Error>;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        let refuse = |status: StatusCode| {
            let mut resp = Response::new(B::default());
            *resp.status_mut() = status;
            Checked::Misdirected(Some(resp))
        };
        let Some(policy) = self.policy() else {
            let mut resp = Response::new(B::default());
            *resp.status_mut() = StatusCode::MISDIRECTED_REQUEST;
            resp.headers_mut().insert(
                hyper::header::CONNECTION,
                hyper::header::HeaderValue::from_static("close"),
            );
            return Checked::Misdirected(Some(resp));
        };
        // Every name the request could be routed by: the request-target's authority (an
        // absolute URI) and every Host header. None, or one that is not text: 400. Any
        // outside this connection's rule: 421.
        let mut names: Vec<Option<&str>> = req
            .uri()
            .authority()
            .map(|a| Some(a.as_str()))
            .into_iter()
            .collect();
        names.extend(req.headers().get_all(HOST).iter().map(|h| h.to_str().ok()));
        if names.is_empty() || names.iter().any(Option::is_none) {
            return refuse(StatusCode::BAD_REQUEST);
        }
        if let Some(host) = names
            .iter()
            .flatten()
            .find(|h| !host_in_rule(&policy, self.verdict.rule.as_deref(), h))
        {
            tracing::warn!(target: "aop::verdict", %host, rule = self.verdict.rule.as_deref().unwrap_or(""),
                sni = self.verdict.sni.as_deref().unwrap_or(""), "request for a host outside the connection's rule: 421");
            if let Some(m) = &self.misdirected {
                m.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            return refuse(StatusCode::MISDIRECTED_REQUEST);
        }
        req.extensions_mut().insert(Arc::clone(&self.verdict));
        Checked::Inner(Box::pin(self.inner.call(req)))
    }
}

/// The service's future, or an immediate 421.
pub enum Checked<F, B, E> {
    /// The inner service is handling the request.
    Inner(Pin<Box<F>>),
    /// The Host did not belong to the connection's rule.
    Misdirected(Option<Response<B>>),
    #[doc(hidden)]
    _Error(std::marker::PhantomData<fn() -> E>),
}

// Nothing in `Checked` is structurally pinned: the inner future is boxed, and the
// response is moved out, never pinned.
impl<F, B, E> Unpin for Checked<F, B, E> {}

impl<F, B, E> Future for Checked<F, B, E>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Self::Inner(f) => f.as_mut().poll(cx),
            Self::Misdirected(resp) => {
                Poll::Ready(Ok(resp.take().expect("polled after completion")))
            }
            Self::_Error(_) => unreachable!("never constructed"),
        }
    }
}
