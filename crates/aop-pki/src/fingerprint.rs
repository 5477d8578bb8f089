//! SHA-256 fingerprints: the certificate pin and the SPKI pin.

use std::fmt;
use std::str::FromStr;

use aws_lc_rs::digest;

use crate::Error;

/// A SHA-256 digest, shown as 64 lowercase hex digits.
///
/// Used for two different pins, which must not be confused:
/// - the **certificate pin**: SHA-256 of the whole certificate DER (what
///   `openssl x509 -fingerprint -sha256` prints). It changes with every re-issue.
/// - the **SPKI pin**: SHA-256 of the SubjectPublicKeyInfo. It survives a re-issue with
///   the same key (Cloudflare's 2019 origin-pull CA kept the 2015 key: SPKI pins survived,
///   certificate pins broke).
///
/// Parsing accepts upper or lower case, with or without colons (`AB:CD:…`).
///
/// ```
/// use aop_pki::Sha256Fingerprint;
/// let f = Sha256Fingerprint::of(b"abc");
/// assert_eq!(f.to_string(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
/// let parsed: Sha256Fingerprint = f.to_colon_hex().parse().unwrap();
/// assert_eq!(parsed, f);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256Fingerprint([u8; 32]);

impl Sha256Fingerprint {
    /// SHA-256 of `data`.
    pub fn of(data: &[u8]) -> Self {
        let d = digest::digest(&digest::SHA256, data);
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        Self(out)
    }

    /// The raw digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Upper-case hex with colons, as OpenSSL prints it.
    pub fn to_colon_hex(&self) -> String {
        let mut s = String::with_capacity(95);
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                s.push(':');
            }
            s.push_str(&format!("{b:02X}"));
        }
        s
    }
}

impl From<[u8; 32]> for Sha256Fingerprint {
    fn from(b: [u8; 32]) -> Self {
        Self(b)
    }
}

impl fmt::Display for Sha256Fingerprint {
    /// Lower-case hex, one write (the verdict log prints this on every handshake).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 64];
        for (pair, b) in out.chunks_exact_mut(2).zip(self.0) {
            pair[0] = HEX[usize::from(b >> 4)];
            pair[1] = HEX[usize::from(b & 0xf)];
        }
        f.write_str(std::str::from_utf8(&out).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for Sha256Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256Fingerprint({self})")
    }
}

impl FromStr for Sha256Fingerprint {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let hex: Vec<u8> = s.trim().bytes().filter(|&b| b != b':').collect();
        let bad = || Error::InvalidFingerprint(s.to_owned());
        if hex.len() != 64 {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, pair) in hex.chunks_exact(2).enumerate() {
            let hi = (pair[0] as char).to_digit(16).ok_or_else(bad)?;
            let lo = (pair[1] as char).to_digit(16).ok_or_else(bad)?;
            out[i] = (hi * 16 + lo) as u8;
        }
        Ok(Self(out))
    }
}

/// As its lowercase hex text (feature `serde`).
#[cfg(feature = "serde")]
impl serde::Serialize for Sha256Fingerprint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// From any text [`FromStr`] accepts (feature `serde`).
#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for Sha256Fingerprint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <String as serde::Deserialize>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_forms() {
        let f = Sha256Fingerprint::of(b"x");
        let lower = f.to_string();
        assert_eq!(lower.len(), 64);
        assert_eq!(lower.parse::<Sha256Fingerprint>().unwrap(), f);
        assert_eq!(
            lower.to_uppercase().parse::<Sha256Fingerprint>().unwrap(),
            f
        );
        assert_eq!(f.to_colon_hex().parse::<Sha256Fingerprint>().unwrap(), f);
        assert_eq!(f.to_colon_hex().len(), 95);
    }

    #[test]
    fn rejects_bad() {
        for bad in ["", "abc", &"g".repeat(64), &"a".repeat(66)] {
            assert!(matches!(
                bad.parse::<Sha256Fingerprint>(),
                Err(Error::InvalidFingerprint(_))
            ));
        }
    }
}
