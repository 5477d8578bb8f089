//! Small HTTP facts the edge proxy and the origin guard share.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Headers that belong to one hop (RFC 9110 §7.6.1) and are never forwarded.
pub const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// A request id unique within this process and unlikely to repeat across processes:
/// 48 bits of the clock, 16 of the pid, a 32-bit counter, as 24 hex digits.
pub fn request_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{:012x}{:04x}{:08x}",
        nanos & 0xffff_ffff_ffff,
        std::process::id() & 0xffff,
        COUNTER.fetch_add(1, Ordering::Relaxed) & 0xffff_ffff
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_differ_and_have_a_fixed_width() {
        let (a, b) = (super::request_id(), super::request_id());
        assert_ne!(a, b);
        assert_eq!(a.len(), 24);
    }
}
