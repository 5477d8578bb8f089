//! # aop-http: the HTTP facts an edge and an origin guard share
//!
//! Both ends of an authenticated origin pull forward HTTP requests: the edge proxy from
//! a visitor to the origin, the origin guard from the edge to its upstream. Both must
//! drop the headers that belong to one hop, and both tag each request with an id. This
//! crate holds those facts once, so neither side's library owns them for the other's
//! sake:
//!
//! ```text
//!   visitor ──▶ aop-edge-proxy ══ mTLS ══▶ aop-origin (guard) ──▶ upstream
//!               strip_hop_by_hop          strip_hop_by_hop
//!               request_id                request_id (unless the edge sent one)
//! ```
//!
//! It knows the [`http`] crate's types and nothing else: no TLS, no sockets, no hyper.
//! With the cargo feature `tunnel`, also tokio's IO traits: `tunnel::tunnel` copies
//! the bytes of an upgraded connection (a WebSocket) both ways, with an idle timeout.
//! With the cargo feature `log`, also tracing-subscriber: the module `log` holds the log line
//! formats both proxies write (logfmt text and JSON).
//!
//! ## Getting started
//!
//! ```
//! use http::{HeaderMap, HeaderValue};
//!
//! let mut headers = HeaderMap::new();
//! headers.insert("connection", HeaderValue::from_static("close, X-Session"));
//! headers.insert("x-session", HeaderValue::from_static("one hop only"));
//! headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
//! headers.insert("accept", HeaderValue::from_static("*/*"));
//!
//! aop_http::strip_hop_by_hop(&mut headers);
//! assert_eq!(headers.len(), 1); // only `accept` is forwarded
//!
//! let id = aop_http::request_id();
//! assert_eq!(id.len(), 24);
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use http::HeaderMap;
use http::header::{CONNECTION, CONTENT_LENGTH, HOST, HeaderName, UPGRADE};

#[cfg(feature = "log")]
pub mod log;
#[cfg(feature = "tunnel")]
pub mod tunnel;

/// Headers that belong to one hop (RFC 9110 §7.6.1) and are never forwarded, whatever
/// `Connection` says. Lowercase, as [`HeaderMap`] keeps names.
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

/// Remove the headers of one hop before a message is forwarded: those in [`HOP_BY_HOP`],
/// and every header the `Connection` field names ([`connection_options`]). Call it
/// before adding the headers the proxy sets itself, so a sender cannot use `Connection`
/// to remove those.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // The names `Connection` lists, read before it goes. No allocation without one.
    let listed: Vec<HeaderName> = connection_options(headers).collect();
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    for name in listed {
        headers.remove(name);
    }
}

/// The headers a message's `Connection` field makes hop-by-hop (RFC 9110 §7.6.1:
/// `Connection: close, X-Session` makes `X-Session` hop-by-hop), which
/// [`strip_hop_by_hop`] removes. Names are compared without regard to case; options that
/// are not header names (`close`) name nothing.
///
/// Never `Host` (the request's target, which the guard has already checked) or
/// `Content-Length` (the message's framing: a HEAD response's length would be lost):
/// neither is a field a hop can take away.
pub fn connection_options(headers: &HeaderMap) -> impl Iterator<Item = HeaderName> + '_ {
    headers
        .get_all(CONNECTION)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .filter_map(|option| HeaderName::from_bytes(option.trim_ascii()).ok())
        .filter(|name| name != HOST && name != CONTENT_LENGTH)
}

/// Whether a message's headers ask for (a request) or agree to (a `101` response) a
/// WebSocket upgrade and nothing else: exactly one `Upgrade` field whose value is the
/// single token `websocket` (any case, RFC 6455 §4.1), and `Connection` listing
/// `upgrade`. Any other protocol (`h2c`, `websocket, h2c`, a second `Upgrade` line) is
/// not: a proxy must never pass on an upgrade it cannot bound (h2c smuggling). For a
/// request, also require the method `GET` (RFC 6455 §4.1); that is the caller's.
pub fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    let mut upgrade = headers.get_all(UPGRADE).iter();
    let websocket = match (upgrade.next(), upgrade.next()) {
        (Some(v), None) => v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"websocket"),
        _ => false,
    };
    websocket
        && headers
            .get_all(CONNECTION)
            .iter()
            .flat_map(|value| value.as_bytes().split(|&b| b == b','))
            .any(|option| option.trim_ascii().eq_ignore_ascii_case(b"upgrade"))
}

/// Put back what [`strip_hop_by_hop`] took from a WebSocket upgrade the proxy forwards
/// (a request [`is_websocket_upgrade`] said yes to, or the `101` that accepted it):
/// `Connection: upgrade` and `Upgrade: websocket`, nothing else.
pub fn set_websocket_upgrade(headers: &mut HeaderMap) {
    headers.insert(CONNECTION, http::HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, http::HeaderValue::from_static("websocket"));
}

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

/// The most bytes of a certificate's name (its subject) either proxy puts in a metric
/// label, before `…`: a certificate cannot make every scrape carry kilobytes of its name.
pub const LABEL_MAX: usize = 128;

/// `value` as a metric label: cut to [`LABEL_MAX`] bytes on a character boundary, then
/// `…`; as it is if it fits.
pub fn bounded_label(value: &str) -> String {
    if value.len() <= LABEL_MAX {
        return value.to_owned();
    }
    let mut end = LABEL_MAX;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &value[..end])
}

#[cfg(test)]
mod tests {
    use http::{HeaderMap, HeaderValue};

    use super::{
        HOP_BY_HOP, LABEL_MAX, bounded_label, is_websocket_upgrade, request_id, strip_hop_by_hop,
    };

    #[test]
    fn labels_are_bounded_on_a_character_boundary() {
        assert_eq!(bounded_label("CN=a"), "CN=a");
        let fits = "x".repeat(LABEL_MAX);
        assert_eq!(bounded_label(&fits), fits);
        assert_eq!(
            bounded_label(&"x".repeat(LABEL_MAX + 1)),
            format!("{}…", "x".repeat(LABEL_MAX))
        );
        // 'é' is two bytes: 64 of them fill 128 bytes, the 65th is cut whole.
        assert_eq!(
            bounded_label(&"é".repeat(100)),
            format!("{}…", "é".repeat(64))
        );
        let odd = format!("x{}", "é".repeat(100));
        assert_eq!(bounded_label(&odd), format!("x{}…", "é".repeat(63)));
    }

    /// Headers from `(name, value)` pairs, names as written on the wire (any case), after
    /// [`strip_hop_by_hop`]: what is left, as sorted `name: value` lines.
    fn stripped(pairs: &[(&str, &str)]) -> Vec<String> {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        strip_hop_by_hop(&mut map);
        let mut left: Vec<String> = map
            .iter()
            .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap()))
            .collect();
        left.sort();
        left
    }

    #[test]
    fn every_fixed_hop_by_hop_header_goes() {
        let mut pairs: Vec<(&str, &str)> = HOP_BY_HOP.iter().map(|h| (*h, "x")).collect();
        pairs.push(("accept", "*/*"));
        assert_eq!(stripped(&pairs), ["accept: */*"]);
    }

    #[test]
    fn a_header_named_in_connection_goes() {
        let left = stripped(&[
            ("connection", "X-Session"),
            ("x-session", "secret"),
            ("x-other", "kept"),
        ]);
        assert_eq!(left, ["x-other: kept"]);
    }

    #[test]
    fn connection_close_keep_alive_and_upgrade() {
        for value in ["close", "keep-alive", "Upgrade", "close, upgrade"] {
            let left = stripped(&[
                ("connection", value),
                ("keep-alive", "timeout=5"),
                ("upgrade", "websocket"),
                ("content-type", "text/plain"),
            ]);
            assert_eq!(left, ["content-type: text/plain"], "{value}");
        }
    }

    #[test]
    fn te_and_trailer_go_whatever_connection_says() {
        let left = stripped(&[
            ("TE", "trailers"),
            ("Trailer", "x-checksum"),
            ("x-checksum", "abc"),
        ]);
        // `Trailer` names a trailer field, not a hop-by-hop one: the field stays.
        assert_eq!(left, ["x-checksum: abc"]);
    }

    #[test]
    fn spoofed_names_in_odd_casing_and_spacing_go() {
        let left = stripped(&[
            ("CoNnEcTiOn", " x-SpOoFeD ,,\tX-Forwarded-For , "),
            ("connection", "X-Second-Line"),
            ("X-Spoofed", "1"),
            ("x-forwarded-for", "203.0.113.7"),
            ("X-SECOND-LINE", "2"),
            ("Keep-ALIVE", "timeout=5"),
            ("x-kept", "3"),
        ]);
        assert_eq!(left, ["x-kept: 3"]);
    }

    #[test]
    fn connection_cannot_remove_host_or_the_framing() {
        let left = stripped(&[
            ("connection", "host, Content-Length, close"),
            ("host", "example.com"),
            ("content-length", "1000"),
        ]);
        assert_eq!(left, ["content-length: 1000", "host: example.com"]);
    }

    #[test]
    fn options_that_are_not_header_names_remove_nothing() {
        let left = stripped(&[("connection", "a b, (x), close"), ("x-kept", "1")]);
        assert_eq!(left, ["x-kept: 1"]);
    }

    #[test]
    fn only_a_websocket_upgrade_is_one() {
        let upgrade = |pairs: &[(&str, &str)]| {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                map.append(
                    http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    HeaderValue::from_str(value).unwrap(),
                );
            }
            is_websocket_upgrade(&map)
        };
        assert!(upgrade(&[
            ("upgrade", "websocket"),
            ("connection", "Upgrade")
        ]));
        let mut put_back = HeaderMap::new();
        super::set_websocket_upgrade(&mut put_back);
        assert!(is_websocket_upgrade(&put_back));
        assert_eq!(put_back.len(), 2);
        assert!(upgrade(&[
            ("Upgrade", " WebSocket "),
            ("Connection", "keep-alive, upgrade")
        ]));
        assert!(upgrade(&[
            ("upgrade", "websocket"),
            ("connection", "keep-alive"),
            ("connection", "Upgrade"),
        ]));
        for refused in [
            &[
                ("upgrade", "h2c"),
                ("connection", "Upgrade, HTTP2-Settings"),
            ][..],
            &[("upgrade", "websocket, h2c"), ("connection", "upgrade")],
            &[("upgrade", "h2c, websocket"), ("connection", "upgrade")],
            &[
                ("upgrade", "websocket"),
                ("upgrade", "h2c"),
                ("connection", "upgrade"),
            ],
            &[("upgrade", "websocket")],
            &[("upgrade", "websocket"), ("connection", "keep-alive")],
            &[("upgrade", "websocket"), ("connection", "upgraded")],
            &[("connection", "upgrade")],
            &[("upgrade", "websocket/13"), ("connection", "upgrade")],
        ] {
            assert!(!upgrade(refused), "{refused:?}");
        }
    }

    #[test]
    fn ids_differ_and_have_a_fixed_width() {
        let (a, b) = (request_id(), request_id());
        assert_ne!(a, b);
        assert_eq!(a.len(), 24);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
    }
}
