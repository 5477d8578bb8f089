//! A strict parser for the authority a request names (its `Host` header, the authority of
//! an absolute-form request target, HTTP/2's `:authority`).
//!
//! The origin decides which rule's trust a request falls under from that name, and an
//! upstream that routes by Host decides which tenant serves it. The two must never
//! disagree: a name the parser cannot read exactly is refused (400), never matched
//! loosely and never passed to a default rule. Accepted, after RFC 3986 §3.2 and RFC 9110
//! §7.2, narrowed to what a hostname can be:
//!
//! - a registered name: labels of ASCII letters, digits, `-` and `_`, separated by single
//!   dots, at most one trailing dot, at most 253 bytes (a percent-encoded or sub-delimiter
//!   character is refused: no DNS name holds one, and upstreams disagree on decoding);
//! - an IPv4 address, or an IPv6 address in brackets (no zone identifier, no IPvFuture);
//! - then optionally `:` and a decimal port of 1 to 5 digits, 1 to 65535 (port 0 names
//!   no service: nothing listens there, and an upstream may read it as "any" or as its
//!   default port).
//!
//! No user information (`user@`), no empty host, no empty port, no whitespace.
//!
//! ```
//! use aop_verify::authority::{self, Host};
//!
//! let a = authority::parse("Example.COM.:8443").unwrap();
//! assert_eq!(a.host, Host::Name("example.com".into()));
//! assert_eq!(a.port, Some(8443));
//! assert!(authority::parse("example.com:80x").is_err());
//! assert!(authority::parse("example.com:+443").is_err());
//! assert!(authority::parse("user@example.com").is_err());
//! ```

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// The longest registered name accepted (DNS's limit, without the trailing dot).
const MAX_NAME: usize = 253;

/// A parsed authority.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authority {
    /// The host.
    pub host: Host,
    /// The port, if one was given.
    pub port: Option<u16>,
}

/// The host part of an [`Authority`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Host {
    /// A registered name, lowercased, without a trailing dot.
    Name(String),
    /// An IPv4 address.
    V4(Ipv4Addr),
    /// An IPv6 address (written in brackets).
    V6(Ipv6Addr),
}

impl Host {
    /// The name rules are matched against: the registered name, or the address as text.
    pub fn match_name(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Self::Name(n) => std::borrow::Cow::Borrowed(n),
            Self::V4(a) => std::borrow::Cow::Owned(a.to_string()),
            Self::V6(a) => std::borrow::Cow::Owned(a.to_string()),
        }
    }
}

impl fmt::Display for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::Name(n) => f.write_str(n)?,
            Host::V4(a) => write!(f, "{a}")?,
            Host::V6(a) => write!(f, "[{a}]")?,
        }
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        Ok(())
    }
}

/// Why an authority was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BadAuthority {
    /// Empty, or nothing before the port.
    Empty,
    /// User information (`user@host`).
    UserInfo,
    /// A character no hostname holds.
    BadCharacter,
    /// An empty label (`a..b`, a leading dot), or a label starting or ending with `-`.
    BadLabel,
    /// Longer than 253 bytes.
    TooLong,
    /// Something after `:` that is not a decimal port 1–65535 (or nothing after it).
    BadPort,
    /// A bracketed literal that is not an IPv6 address (zone identifiers and IPvFuture
    /// included), or an unclosed bracket.
    BadIpLiteral,
}

impl fmt::Display for BadAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Empty => "no host",
            Self::UserInfo => "user information is not allowed",
            Self::BadCharacter => "a character no hostname holds",
            Self::BadLabel => "an empty label, or one that starts or ends with '-'",
            Self::TooLong => "longer than 253 bytes",
            Self::BadPort => "the port is not a decimal number 1-65535",
            Self::BadIpLiteral => "a bracketed literal that is not an IPv6 address",
        })
    }
}

impl std::error::Error for BadAuthority {}

/// Parse `s` strictly (see the [module docs](self)).
pub fn parse(s: &str) -> Result<Authority, BadAuthority> {
    if s.is_empty() {
        return Err(BadAuthority::Empty);
    }
    if s.contains('@') {
        return Err(BadAuthority::UserInfo);
    }
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (literal, after) = rest.split_once(']').ok_or(BadAuthority::BadIpLiteral)?;
        let addr: Ipv6Addr = literal.parse().map_err(|_| BadAuthority::BadIpLiteral)?;
        let port = match after {
            "" => None,
            p => Some(port(p.strip_prefix(':').ok_or(BadAuthority::BadPort)?)?),
        };
        return Ok(Authority {
            host: Host::V6(addr),
            port,
        });
    } else {
        match s.split_once(':') {
            Some((h, p)) => (h, Some(port(p)?)),
            None => (s, None),
        }
    };
    Ok(Authority {
        host: name(host)?,
        port,
    })
}

fn port(p: &str) -> Result<u16, BadAuthority> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(BadAuthority::BadPort);
    }
    match p.parse() {
        Ok(0) | Err(_) => Err(BadAuthority::BadPort),
        Ok(n) => Ok(n),
    }
}

fn name(h: &str) -> Result<Host, BadAuthority> {
    let h = h.strip_suffix('.').unwrap_or(h);
    if h.is_empty() {
        return Err(BadAuthority::Empty);
    }
    if h.len() > MAX_NAME {
        return Err(BadAuthority::TooLong);
    }
    if !h
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(BadAuthority::BadCharacter);
    }
    if h.split('.')
        .any(|l| l.is_empty() || l.starts_with('-') || l.ends_with('-'))
    {
        return Err(BadAuthority::BadLabel);
    }
    // Four decimal labels are an IPv4 address, and nothing else: `1.2.3.999` or
    // `01.2.3.4` is refused rather than treated as a name an upstream might read as an
    // address.
    if h.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return h
            .parse::<Ipv4Addr>()
            .map(Host::V4)
            .map_err(|_| BadAuthority::BadCharacter);
    }
    Ok(Host::Name(h.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::{BadAuthority as B, Host, parse};

    #[test]
    fn accepted() {
        let ok = |s: &str, host: Host, port: Option<u16>| {
            let a = parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"));
            assert_eq!((a.host, a.port), (host, port), "{s:?}");
        };
        let name = |n: &str| Host::Name(n.into());
        ok("a.test", name("a.test"), None);
        ok("A.Test.", name("a.test"), None);
        ok("a.test:443", name("a.test"), Some(443));
        ok("a.test:1", name("a.test"), Some(1));
        ok("a.test:65535", name("a.test"), Some(65535));
        ok("_acme.a-b.test", name("_acme.a-b.test"), None);
        ok("localhost", name("localhost"), None);
        ok(
            "127.0.0.1:8443",
            Host::V4([127, 0, 0, 1].into()),
            Some(8443),
        );
        ok("[::1]", Host::V6("::1".parse().unwrap()), None);
        ok("[::1]:443", Host::V6("::1".parse().unwrap()), Some(443));
    }

    #[test]
    fn refused() {
        for (s, why) in [
            ("", B::Empty),
            (".", B::Empty),
            (":443", B::Empty),
            ("a.test:80x", B::BadPort),
            ("a.test:+443", B::BadPort),
            ("a.test:443:1", B::BadPort),
            ("a.test:9443x", B::BadPort),
            ("a.test:", B::BadPort),
            ("a.test:65536", B::BadPort),
            ("a.test:0", B::BadPort),
            ("a.test:00000", B::BadPort),
            ("[::1]:0", B::BadPort),
            ("a.test:000443", B::BadPort),
            ("a.test: 443", B::BadPort),
            ("user@a.test", B::UserInfo),
            ("@a.test", B::UserInfo),
            ("a.test/", B::BadCharacter),
            ("a.test\\", B::BadCharacter),
            ("a test", B::BadCharacter),
            ("%61.test", B::BadCharacter),
            ("a.test,b.test", B::BadCharacter),
            ("a.test;x", B::BadCharacter),
            ("a.tést", B::BadCharacter),
            ("a..test", B::BadLabel),
            (".a.test", B::BadLabel),
            ("a.test..", B::BadLabel),
            ("-a.test", B::BadLabel),
            ("a-.test", B::BadLabel),
            ("1.2.3.999", B::BadCharacter),
            ("1.2.3", B::BadCharacter),
            ("[::1", B::BadIpLiteral),
            ("[::1]x", B::BadPort),
            ("[::1]:", B::BadPort),
            ("[fe80::1%25eth0]", B::BadIpLiteral),
            ("[v1.fe]", B::BadIpLiteral),
            ("[a.test]", B::BadIpLiteral),
            ("::1", B::BadPort),
        ] {
            assert_eq!(parse(s), Err(why), "{s:?}");
        }
        let long = format!("{}.test", "a".repeat(250));
        assert_eq!(parse(&long), Err(B::TooLong));
    }

    #[test]
    fn display_parses_back() {
        for s in ["a.test", "a.test:1", "[::1]:443", "10.0.0.1"] {
            let a = parse(s).unwrap();
            assert_eq!(parse(&a.to_string()).unwrap(), a);
        }
    }
}
