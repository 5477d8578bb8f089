//! hyper 1 glue (cargo feature `hyper`): serve a service over an accepted connection,
//! with the connection's verdict in every request's extensions.

use std::sync::Arc;

use hyper::body::{Body, Incoming};
use hyper::service::Service;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

use crate::{Accepted, Verdict};

/// Serve HTTP/1.1 on an accepted connection. Every request carries the connection's
/// verdict as an `Arc<Verdict>` extension:
///
/// ```no_run
/// # use std::sync::Arc;
/// # use aop_verify::Verdict;
/// # fn handler(req: hyper::Request<hyper::body::Incoming>) {
/// let verdict = req.extensions().get::<Arc<Verdict>>().expect("set by aop-verify");
/// if !verdict.is_success() { /* optional mode: decide here */ }
/// # }
/// ```
pub async fn serve_connection<S, B>(accepted: Accepted, service: S) -> Result<(), hyper::Error>
where
    S: Service<Request<Incoming>, Response = Response<B>>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let service = WithVerdict {
        inner: service,
        verdict: Arc::new(accepted.verdict),
    };
    hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(accepted.stream), service)
        .await
}

/// Inserts the verdict into each request, then calls the inner service.
struct WithVerdict<S> {
    inner: S,
    verdict: Arc<Verdict>,
}

impl<S> Service<Request<Incoming>> for WithVerdict<S>
where
    S: Service<Request<Incoming>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        req.extensions_mut().insert(Arc::clone(&self.verdict));
        self.inner.call(req)
    }
}
