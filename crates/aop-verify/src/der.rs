//! A small DER writer for the unit tests: enough X.509 to build the certificates rcgen
//! cannot write (a v1 root, raw names, malformed extensions, odd keys). One element is
//! view.rs's [`encode`](crate::view::encode), so tests write lengths as the view does.

use time::OffsetDateTime;

/// One DER element: `tag`, a minimal definite length, `content`.
pub(crate) use crate::view::encode as tlv;

/// A SEQUENCE of these elements, in order.
pub(crate) fn seq<T: AsRef<[u8]>>(parts: &[T]) -> Vec<u8> {
    tlv(0x30, &concat(parts))
}

/// A SET of these elements, in the order given (not sorted).
pub(crate) fn set<T: AsRef<[u8]>>(parts: &[T]) -> Vec<u8> {
    tlv(0x31, &concat(parts))
}

fn concat<T: AsRef<[u8]>>(parts: &[T]) -> Vec<u8> {
    parts
        .iter()
        .flat_map(|p| p.as_ref().iter().copied())
        .collect()
}

/// An OBJECT IDENTIFIER from its dotted form ("2.5.29.19").
pub(crate) fn oid(dotted: &str) -> Vec<u8> {
    let arcs: Vec<u64> = dotted.split('.').map(|a| a.parse().unwrap()).collect();
    let mut body = Vec::new();
    for arc in std::iter::once(arcs[0] * 40 + arcs[1]).chain(arcs[2..].iter().copied()) {
        let mut chunk = vec![(arc & 0x7f) as u8];
        let mut rest = arc >> 7;
        while rest > 0 {
            chunk.push((rest & 0x7f) as u8 | 0x80);
            rest >>= 7;
        }
        body.extend(chunk.iter().rev());
    }
    tlv(0x06, &body)
}

/// A non-negative INTEGER from big-endian bytes (leading zeros dropped, one added where
/// the top bit is set or nothing is left).
pub(crate) fn uint(bytes: &[u8]) -> Vec<u8> {
    let mut b: Vec<u8> = bytes.iter().copied().skip_while(|b| *b == 0).collect();
    if b.first().is_none_or(|b| b & 0x80 != 0) {
        b.insert(0, 0);
    }
    tlv(0x02, &b)
}

/// A BIT STRING of whole bytes (no unused bits).
pub(crate) fn bit_string(bytes: &[u8]) -> Vec<u8> {
    tlv(0x03, &[&[0u8][..], bytes].concat())
}

/// A UTCTime (YYMMDDHHMMSSZ).
pub(crate) fn utc_time(t: OffsetDateTime) -> Vec<u8> {
    let s = format!(
        "{:02}{:02}{:02}{:02}{:02}{:02}Z",
        t.year() % 100,
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    tlv(0x17, s.as_bytes())
}
