//! WebSocket tunnels: which visitor requests are WebSocket upgrades, and the tunnel
//! between the visitor and the origin once both have switched protocols (the byte copy
//! and its idle timeout are aop-http's, shared with the origin guard).
//!
//! Only `Upgrade: websocket` is ever forwarded: any other token (`h2c` above all) would
//! let a visitor speak a protocol to the origin that no proxy in between looks at
//! (request smuggling).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aop_http::tunnel::Traffic;
use hyper::upgrade::OnUpgrade;
use hyper::{Method, Request, Version};
use hyper_util::rt::TokioIo;

/// Whether `req` asks to become a WebSocket (RFC 6455 §4.1): `GET` over HTTP/1.1 with
/// exactly `Upgrade: websocket` and `Connection` naming `upgrade`
/// ([`aop_http::is_websocket_upgrade`]).
pub(crate) fn is_websocket_upgrade<B>(req: &Request<B>) -> bool {
    req.method() == Method::GET
        && req.version() == Version::HTTP_11
        && aop_http::is_websocket_upgrade(req.headers())
}

/// Tunnel counters, for the log.
#[derive(Debug, Default)]
pub(crate) struct Tunnels {
    open: AtomicU64,
    total: AtomicU64,
}

/// Carry bytes both ways between the visitor and the origin once both upgrades
/// complete, until both sides close, either fails, or nothing moves for `idle`; then
/// close both. Logs the tunnel's opening and its end (how, bytes each way, tunnels
/// open and in total).
pub(crate) async fn run(
    tunnels: Arc<Tunnels>,
    visitor: OnUpgrade,
    origin: OnUpgrade,
    idle: Duration,
    request_id: String,
) {
    let total = tunnels.total.fetch_add(1, Ordering::Relaxed) + 1;
    let open = tunnels.open.fetch_add(1, Ordering::Relaxed) + 1;
    tracing::info!(target: "aop::edge", request_id = %request_id, tunnels_open = open,
        tunnels_total = total, "websocket tunnel open");
    let (closed, up, down) = match tokio::try_join!(visitor, origin) {
        Err(e) => {
            tracing::debug!(target: "aop::edge", request_id = %request_id, error = %e, "upgrade failed");
            ("upgrade_failed", 0, 0)
        }
        Ok((visitor, origin)) => {
            let (visitor, origin) = (TokioIo::new(visitor), TokioIo::new(origin));
            let traffic = Traffic::default();
            let t =
                aop_http::tunnel::tunnel(visitor, origin, idle, std::future::pending(), &traffic)
                    .await;
            (t.end.as_str(), t.to_upstream, t.to_client)
        }
    };
    let open = tunnels.open.fetch_sub(1, Ordering::Relaxed) - 1;
    tracing::info!(target: "aop::edge", request_id = %request_id, closed, bytes_up = up,
        bytes_down = down, tunnels_open = open, tunnels_total = tunnels.total.load(Ordering::Relaxed),
        "websocket tunnel closed");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().method(method).uri("/");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn only_a_get_over_http1_is_a_websocket_upgrade() {
        let ws = [
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "WebSocket"),
        ];
        assert!(is_websocket_upgrade(&request("GET", &ws)));
        assert!(!is_websocket_upgrade(&request("POST", &ws)));
        let mut http10 = request("GET", &ws);
        *http10.version_mut() = Version::HTTP_10;
        assert!(!is_websocket_upgrade(&http10));
        let h2c = [("connection", "upgrade"), ("upgrade", "h2c")];
        assert!(!is_websocket_upgrade(&request("GET", &h2c)));
    }
}
