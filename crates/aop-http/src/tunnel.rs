//! Byte tunnels after an HTTP upgrade (cargo feature `tunnel`): what a proxy runs once
//! both hops switched protocols (a WebSocket's `101`, or an extended CONNECT's `200`).
//!
//! A tunnel carries bytes it cannot read: nothing of HTTP bounds it any more, so
//! [`tunnel`] has an idle timeout of its own (no byte either way for that long closes
//! both sides) and a stop signal (a proxy's shutdown), and counts what it carries.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::time::Instant;

/// The copy buffer, each way: one TLS record's plaintext.
const BUFFER: usize = 16 * 1024;

/// How long each side is given to take a clean close (TLS `close_notify`) when a
/// tunnel is ended for idleness or a stop; then it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Bytes carried, by direction, updated as they pass: give the same one to many tunnels
/// to count them together (a site's, say), and read it while they run.
#[derive(Debug, Default)]
pub struct Traffic {
    to_upstream: AtomicU64,
    to_client: AtomicU64,
}

impl Traffic {
    /// Bytes read from the client and passed on to the upstream.
    pub fn to_upstream(&self) -> u64 {
        self.to_upstream.load(Ordering::Relaxed)
    }

    /// Bytes read from the upstream and passed on to the client.
    pub fn to_client(&self) -> u64 {
        self.to_client.load(Ordering::Relaxed)
    }
}

/// Why a tunnel ended.
#[derive(Debug)]
#[non_exhaustive]
pub enum TunnelEnd {
    /// Both sides closed (each end-of-stream passed on as a shutdown of the other side).
    Closed,
    /// No byte went either way for the idle timeout: both sides were closed.
    Idle,
    /// The stop signal came: both sides were closed.
    Stopped,
    /// Reading or writing a side failed (a reset, a broken TLS stream); both are closed.
    Failed(io::Error),
}

impl TunnelEnd {
    /// A word for logs and metrics: `closed`, `tunnel_idle`, `stopped`, `error`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Idle => "tunnel_idle",
            Self::Stopped => "stopped",
            Self::Failed(_) => "error",
        }
    }
}

/// What one tunnel carried, and how it ended.
#[derive(Debug)]
#[non_exhaustive]
pub struct Tunnelled {
    /// Bytes from the client to the upstream.
    pub to_upstream: u64,
    /// Bytes from the upstream to the client.
    pub to_client: u64,
    /// Why it ended.
    pub end: TunnelEnd,
}

/// Copy bytes both ways between `client` and `upstream` until both sides have closed,
/// either fails, no byte has gone either way for `idle`, or `stop` completes; then close
/// both (each given a second for a clean close) and say what passed. Bytes are also
/// added to `traffic` as they pass. Memory: one 16 KiB buffer each way.
///
/// A side that stops reading while the other keeps sending is bounded by the buffers:
/// its direction stalls, and the tunnel is idle once neither direction moves.
///
/// ```
/// # async fn demo() {
/// use std::time::Duration;
/// let (client, mut edge) = tokio::io::duplex(64);
/// let (upstream, mut app) = tokio::io::duplex(64);
/// let traffic = aop_http::tunnel::Traffic::default();
/// let run = aop_http::tunnel::tunnel(client, upstream, Duration::from_secs(300), std::future::pending(), &traffic);
/// # let _ = (&mut edge, &mut app, run);
/// # }
/// ```
pub async fn tunnel<C, U, S>(
    client: C,
    upstream: U,
    idle: Duration,
    stop: S,
    traffic: &Traffic,
) -> Tunnelled
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
    S: Future<Output = ()>,
{
    let start = Instant::now();
    // When a byte last moved, in ms since `start`.
    let last = AtomicU64::new(0);
    let (to_upstream, to_client) = (AtomicU64::new(0), AtomicU64::new(0));
    let mut client = Counted {
        inner: client,
        start,
        last: &last,
        mine: &to_upstream,
        shared: &traffic.to_upstream,
    };
    let mut upstream = Counted {
        inner: upstream,
        start,
        last: &last,
        mine: &to_client,
        shared: &traffic.to_client,
    };
    let watchdog = async {
        loop {
            let at = start + Duration::from_millis(last.load(Ordering::Relaxed)) + idle;
            if Instant::now() >= at {
                return;
            }
            tokio::time::sleep_until(at).await;
        }
    };
    let end = tokio::select! {
        r = tokio::io::copy_bidirectional_with_sizes(&mut client, &mut upstream, BUFFER, BUFFER) => match r {
            Ok(_) => TunnelEnd::Closed,
            Err(e) => TunnelEnd::Failed(e),
        },
        () = watchdog => TunnelEnd::Idle,
        () = stop => TunnelEnd::Stopped,
    };
    if matches!(end, TunnelEnd::Idle | TunnelEnd::Stopped) {
        let _ = tokio::time::timeout(CLOSE_GRACE, async {
            tokio::join!(client.inner.shutdown(), upstream.inner.shutdown())
        })
        .await;
    }
    Tunnelled {
        to_upstream: to_upstream.load(Ordering::Relaxed),
        to_client: to_client.load(Ordering::Relaxed),
        end,
    }
}

/// One side of a tunnel: what is read from it is counted and stamps the tunnel's last
/// activity; so does every write that goes through.
struct Counted<'a, T> {
    inner: T,
    start: Instant,
    last: &'a AtomicU64,
    mine: &'a AtomicU64,
    shared: &'a AtomicU64,
}

impl<T> Counted<'_, T> {
    fn stamp(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<'_, T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        if n > 0 {
            self.mine.fetch_add(n, Ordering::Relaxed);
            self.shared.fetch_add(n, Ordering::Relaxed);
            self.stamp();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<'_, T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.stamp();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::{Traffic, TunnelEnd, tunnel};

    #[tokio::test]
    async fn bytes_pass_both_ways_and_are_counted_then_closes() {
        let (client, mut edge) = tokio::io::duplex(1024);
        let (upstream, mut app) = tokio::io::duplex(1024);
        let traffic = Traffic::default();
        let run = tunnel(
            client,
            upstream,
            Duration::from_secs(60),
            std::future::pending(),
            &traffic,
        );
        let peers = async {
            edge.write_all(b"hello").await.unwrap();
            let mut got = [0u8; 5];
            app.read_exact(&mut got).await.unwrap();
            assert_eq!(&got, b"hello");
            app.write_all(b"world!").await.unwrap();
            let mut got = [0u8; 6];
            edge.read_exact(&mut got).await.unwrap();
            assert_eq!(&got, b"world!");
            edge.shutdown().await.unwrap();
            app.shutdown().await.unwrap();
            // Each end-of-stream reaches the other side.
            assert_eq!(app.read(&mut got).await.unwrap(), 0);
            assert_eq!(edge.read(&mut got).await.unwrap(), 0);
        };
        let (done, ()) = tokio::join!(run, peers);
        assert!(matches!(done.end, TunnelEnd::Closed), "{done:?}");
        assert_eq!((done.to_upstream, done.to_client), (5, 6));
        assert_eq!((traffic.to_upstream(), traffic.to_client()), (5, 6));
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_tunnel_is_closed_and_activity_keeps_it_open() {
        let (client, mut edge) = tokio::io::duplex(1024);
        let (upstream, mut app) = tokio::io::duplex(1024);
        let traffic = Traffic::default();
        let started = tokio::time::Instant::now();
        let run = tunnel(
            client,
            upstream,
            Duration::from_secs(10),
            std::future::pending(),
            &traffic,
        );
        let peers = async {
            // A byte every 6 s keeps it open past the first 10 s.
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_secs(6)).await;
                edge.write_all(b"x").await.unwrap();
                let mut b = [0u8; 1];
                app.read_exact(&mut b).await.unwrap();
            }
            // Then silence: both sides see the close.
            let mut b = [0u8; 1];
            assert_eq!(edge.read(&mut b).await.unwrap(), 0);
            assert_eq!(app.read(&mut b).await.unwrap(), 0);
        };
        let (done, ()) = tokio::join!(run, peers);
        assert!(matches!(done.end, TunnelEnd::Idle), "{done:?}");
        assert_eq!(done.end.as_str(), "tunnel_idle");
        assert_eq!(started.elapsed(), Duration::from_secs(28));
        assert_eq!(done.to_upstream, 3);
    }

    #[tokio::test]
    async fn a_stop_closes_both_sides() {
        let (client, mut edge) = tokio::io::duplex(1024);
        let (upstream, mut app) = tokio::io::duplex(1024);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let traffic = Traffic::default();
        let run = tunnel(
            client,
            upstream,
            Duration::from_secs(60),
            async {
                let _ = stopped.await;
            },
            &traffic,
        );
        let peers = async {
            stop.send(()).unwrap();
            let mut b = [0u8; 1];
            assert_eq!(edge.read(&mut b).await.unwrap(), 0);
            assert_eq!(app.read(&mut b).await.unwrap(), 0);
        };
        let (done, ()) = tokio::join!(run, peers);
        assert!(matches!(done.end, TunnelEnd::Stopped), "{done:?}");
    }
}
