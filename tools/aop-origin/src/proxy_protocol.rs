//! The PROXY protocol (HAProxy's, v1 text and v2 binary), on a listener with
//! `proxy_protocol = true`: a TCP load balancer in front of the guard starts every
//! connection with a header naming the client's address, and the TLS ClientHello follows
//! in the same stream.
//!
//! Only the header's bytes are consumed, never one more (the ClientHello after it is the
//! acceptor's): the bytes are peeked until a whole header is in, then read. A v1 header is
//! at most 107 bytes; a v2 header's length is in its first 16 bytes, and one longer than
//! [`V2_MAX`] is refused before any of it is read. Parsing is the `ppp` crate's.
//!
//! What is trusted: the source address of a `PROXY` command over TCP (v1 `TCP4`/`TCP6`, v2
//! IPv4/IPv6 with the stream protocol). A v2 `LOCAL` command (the balancer's own health
//! check), v1 `UNKNOWN`, and v2's unspecified and UNIX families keep the socket's address;
//! TLVs are ignored. Anything else is no header: the connection is refused.

use std::net::SocketAddr;

use ppp::v1;
use ppp::v2::{self, Command};
use tokio::io::{AsyncReadExt as _, Interest};
use tokio::net::TcpStream;

/// The longest v1 header, CRLF included (the protocol's own limit).
const V1_MAX: usize = 107;

/// The fixed part of a v2 header: signature, version and command, family and protocol,
/// length.
const V2_FIXED: usize = 16;

/// The longest v2 header accepted: the fixed part, the addresses (216 bytes at most, two
/// UNIX paths) and TLVs. Load balancers send a few dozen bytes of TLVs (AWS's VPC
/// endpoint id, HAProxy's unique id or TLS details); 2 KiB leaves room for them while a
/// header claiming 64 KiB is refused unread.
pub(crate) const V2_MAX: usize = V2_FIXED + 2048;

/// What the header said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// The client's address, as the proxy saw it.
    Client(SocketAddr),
    /// No client address (`LOCAL`, `UNKNOWN`, a UNIX or unspecified family): the
    /// connection is the proxy's own.
    Proxy,
}

/// The proxy's address as a log field: empty for a direct connection, so every line
/// has the same fields.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Via(pub(crate) Option<SocketAddr>);

impl std::fmt::Display for Via {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(a) => a.fmt(f),
            None => Ok(()),
        }
    }
}

/// Read the header at the start of `tcp`, consuming exactly its bytes. The error says
/// what was wrong, for the verdict's `detail`. Unbounded in time: the caller's deadline
/// bounds it.
pub(crate) async fn read(tcp: &mut TcpStream) -> Result<Source, String> {
    let mut buf = vec![0u8; V2_MAX];
    let mut have = 0;
    let mut cap = V1_MAX;
    loop {
        have = peek_more(tcp, &mut buf[..cap], have)
            .await
            .map_err(|e| format!("reading the PROXY protocol header: {e}"))?;
        let seen = &buf[..have];
        if let Some(total) = v2_total(seen) {
            cap = total.min(V2_MAX);
        }
        let (source, len) = match parse(seen) {
            Parsed::Header { source, len } => (source, len),
            Parsed::Incomplete if have < cap => continue,
            Parsed::Incomplete => {
                return Err(format!(
                    "no PROXY protocol header in the first {have} bytes"
                ));
            }
            Parsed::Invalid(why) => return Err(why),
        };
        // The bytes are in (peeked): this read takes them, and only them.
        tcp.read_exact(&mut buf[..len])
            .await
            .map_err(|e| format!("reading the PROXY protocol header: {e}"))?;
        return Ok(source);
    }
}

/// What the bytes peeked so far are.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Parsed {
    /// A whole header of `len` bytes.
    Header { source: Source, len: usize },
    /// The start of a header, perhaps: more bytes may make one.
    Incomplete,
    /// Not a header, whatever follows.
    Invalid(String),
}

/// The whole length of the v2 header `bytes` start with, once its fixed part is in.
fn v2_total(bytes: &[u8]) -> Option<usize> {
    let fixed = bytes.get(..V2_FIXED)?;
    let length = u16::from_be_bytes([fixed[14], fixed[15]]);
    fixed
        .starts_with(v2::PROTOCOL_PREFIX)
        .then_some(V2_FIXED + usize::from(length))
}

/// Parse the start of a connection (a header, and perhaps what follows it).
pub(crate) fn parse(bytes: &[u8]) -> Parsed {
    use ppp::PartialResult as _;
    if b"PROXY ".starts_with(&bytes[..bytes.len().min(6)]) {
        return parse_v1(bytes);
    }
    if let Some(total) = v2_total(bytes)
        && total > V2_MAX
    {
        return Parsed::Invalid(format!(
            "a PROXY protocol v2 header of {total} bytes: more than the {V2_MAX} accepted"
        ));
    }
    match v2::Header::try_from(bytes) {
        Ok(h) => {
            let source = match (h.command, h.protocol, h.addresses) {
                (Command::Proxy, v2::Protocol::Stream, v2::Addresses::IPv4(a)) => {
                    Source::Client(SocketAddr::from((a.source_address, a.source_port)))
                }
                (Command::Proxy, v2::Protocol::Stream, v2::Addresses::IPv6(a)) => {
                    Source::Client(SocketAddr::from((a.source_address, a.source_port)))
                }
                _ => Source::Proxy,
            };
            Parsed::Header {
                source,
                len: h.len(),
            }
        }
        Err(e) if e.is_incomplete() => Parsed::Incomplete,
        Err(v2::ParseError::Prefix) => Parsed::Invalid(
            "not a PROXY protocol header (neither \"PROXY \" nor the v2 signature)".into(),
        ),
        Err(e) => Parsed::Invalid(format!(
            "not a valid PROXY protocol v2 header: {}",
            one_line(&e)
        )),
    }
}

/// A v1 header: the line up to the first CRLF, within [`V1_MAX`] bytes, judged whole
/// (ppp reads a line cut after a space, "… 4321 ", as an empty port, and takes a bare LF
/// for the end when no CR follows; the header's length must not depend on what comes
/// after it).
fn parse_v1(bytes: &[u8]) -> Parsed {
    let window = &bytes[..bytes.len().min(V1_MAX)];
    let Some(end) = window.iter().position(|&b| b == b'\r' || b == b'\n') else {
        return if bytes.len() < V1_MAX {
            Parsed::Incomplete
        } else {
            Parsed::Invalid(format!(
                "no CRLF in the first {V1_MAX} bytes: not a PROXY protocol v1 header"
            ))
        };
    };
    if end + 2 > V1_MAX {
        return Parsed::Invalid(format!(
            "a PROXY protocol v1 header longer than {V1_MAX} bytes"
        ));
    }
    match bytes.get(end..end + 2) {
        Some(b"\r\n") => {}
        None if bytes[end] == b'\r' => return Parsed::Incomplete,
        _ => {
            return Parsed::Invalid(
                "a PROXY protocol v1 header must end in CRLF, and hold no other CR or LF".into(),
            );
        }
    }
    let line = &bytes[..end + 2];
    match v1::Header::try_from(line) {
        Ok(h) if h.header.len() == line.len() => {
            let source = match h.addresses {
                v1::Addresses::Tcp4(a) => {
                    Source::Client(SocketAddr::from((a.source_address, a.source_port)))
                }
                v1::Addresses::Tcp6(a) => {
                    Source::Client(SocketAddr::from((a.source_address, a.source_port)))
                }
                v1::Addresses::Unknown => Source::Proxy,
            };
            Parsed::Header {
                source,
                len: line.len(),
            }
        }
        Ok(_) => Parsed::Invalid("a PROXY protocol v1 header that ppp read short".into()),
        Err(e) => Parsed::Invalid(format!(
            "not a valid PROXY protocol v1 header: {}",
            one_line(&e)
        )),
    }
}

/// `e`'s message on one line: ppp's say "must end in '\r\n'" with the characters
/// themselves.
fn one_line(e: &dyn std::fmt::Display) -> String {
    e.to_string().escape_debug().to_string()
}

/// Peek at what has arrived on `tcp` (up to `buf.len()` bytes), once more than `have`
/// bytes are there; returns how many. Readiness is cleared while nothing new arrives (a
/// peek leaves the bytes in, so the socket would stay readable and this would spin);
/// the end of the stream before a whole header is an error.
async fn peek_more(tcp: &TcpStream, buf: &mut [u8], have: usize) -> std::io::Result<usize> {
    use rustix::net::RecvFlags;
    use std::io::{Error, ErrorKind};
    loop {
        let ready = tcp.ready(Interest::READABLE).await?;
        let peeked = tcp.try_io(Interest::READABLE, || {
            let (_, n) = rustix::net::recv(tcp, &mut *buf, RecvFlags::PEEK | RecvFlags::DONTWAIT)?;
            match n {
                0 => Err(Error::new(
                    ErrorKind::UnexpectedEof,
                    "the connection ended before a header",
                )),
                n if n > have || n == buf.len() => Ok(n),
                // Nothing new: wait for the next arrival.
                _ => Err(Error::from(ErrorKind::WouldBlock)),
            }
        });
        match peeked {
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if ready.is_read_closed() {
                    return Err(Error::new(
                        ErrorKind::UnexpectedEof,
                        format!("the connection ended after {have} bytes"),
                    ));
                }
            }
            r => return r,
        }
    }
}

#[cfg(test)]
mod tests;
