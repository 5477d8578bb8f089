//! A visitor's request body on its way to the origin, with an idle limit: a visitor that
//! stops sending its body holds one of the identity's HTTP/2 streams to the origin, and
//! enough such visitors would hold them all.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use tokio::time::{Instant, Sleep};

/// The visitor sent no part of its body for the idle limit.
#[derive(Debug)]
pub(crate) struct BodyIdle(pub(crate) Duration);

impl std::fmt::Display for BodyIdle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the visitor sent no request body for {:?}", self.0)
    }
}

impl std::error::Error for BodyIdle {}

/// The visitor's body; the idle clock runs only while the origin side waits for the
/// visitor (not while HTTP/2 flow control holds the body back), and restarts with each
/// piece. `Default` is an empty body.
#[derive(Debug, Default)]
pub(crate) struct VisitorBody {
    inner: Option<Incoming>,
    idle: Duration,
    /// Set while a poll is waiting on the visitor.
    waiting: Option<Pin<Box<Sleep>>>,
    /// Set once the limit has passed, for the proxy to answer 408.
    timed_out: Arc<AtomicBool>,
}

impl VisitorBody {
    pub(crate) fn new(inner: Incoming, idle: Duration) -> (Self, Arc<AtomicBool>) {
        let timed_out = Arc::new(AtomicBool::new(false));
        let body = Self {
            inner: Some(inner),
            idle,
            waiting: None,
            timed_out: timed_out.clone(),
        };
        (body, timed_out)
    }
}

impl Body for VisitorBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        if let Poll::Ready(frame) = Pin::new(inner).poll_frame(cx) {
            this.waiting = None;
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let idle = this.idle;
        let sleep = this
            .waiting
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(Instant::now() + idle)));
        ready!(sleep.as_mut().poll(cx));
        this.timed_out.store(true, Ordering::SeqCst);
        this.inner = None;
        Poll::Ready(Some(Err(Box::new(BodyIdle(idle)))))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}
