//! The one error type of this crate.

use std::io;
use std::path::PathBuf;

use time::OffsetDateTime;

use crate::info::rfc3339;

/// Everything that can go wrong while loading, inspecting, issuing or writing certificates.
///
/// Every variant that concerns a file carries its path, and `Display` gives one line an
/// operator can act on: `PATH: what is wrong`.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read: missing, unreadable.
    #[error("{}: cannot read: {error}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        error: io::Error,
    },

    /// The path names something other than a regular file (a device, a FIFO, a socket, a
    /// directory), after following symbolic links. It is refused without reading: a
    /// device can be endless and a FIFO can block forever.
    #[error("{}: is {what}, not a regular file; not read", path.display())]
    NotAFile {
        /// The path as given.
        path: PathBuf,
        /// What it is, in words: `a character device`, `a FIFO`, `a directory`, …
        what: &'static str,
    },

    /// The file is larger than the limit ([`crate::MAX_FILE_SIZE`] unless said otherwise),
    /// or grew past it while being read. It is refused, never silently truncated.
    #[error("{}: too large: over {}; not read", path.display(), size(*limit))]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit, in bytes.
        limit: u64,
    },

    /// The file is empty (or only whitespace).
    #[error("{}: empty file", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },

    /// The file is neither PEM nor a DER certificate.
    #[error("{}: not PEM and not a DER certificate ({detail})", path.display())]
    NotPemOrDer {
        /// The file.
        path: PathBuf,
        /// Why the DER parse failed.
        detail: String,
    },

    /// The file looks like PEM but cannot be decoded (truncated, bad base64, bad BEGIN line).
    #[error("{}: malformed PEM: {detail}", path.display())]
    MalformedPem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },

    /// A certificate was expected and the file holds something else.
    #[error("{}: expected a certificate, found {found}", path.display())]
    NotACertificate {
        /// The file.
        path: PathBuf,
        /// What the file holds instead, in words ("a private key", "a certificate signing request").
        found: String,
    },

    /// A certificate revocation list was expected and the file holds something else.
    #[error("{}: expected a CRL, found {found}", path.display())]
    NotACrl {
        /// The file.
        path: PathBuf,
        /// What the file holds instead.
        found: String,
    },

    /// A block that claims to be a certificate does not parse as X.509.
    #[error("{}: certificate #{index} is malformed: {detail}", path.display())]
    BadCertificate {
        /// The file.
        path: PathBuf,
        /// Position of the certificate in the file, from 1.
        index: usize,
        /// What the parser said.
        detail: String,
    },

    /// A private key was expected and the file holds something else.
    #[error("{}: expected a private key, found {found}", path.display())]
    NotAKey {
        /// The file.
        path: PathBuf,
        /// What the file holds instead.
        found: String,
    },

    /// The private key is encoded correctly but cannot be used (unsupported type, bad encoding).
    #[error("{}: unusable private key: {detail}", path.display())]
    BadKey {
        /// The file.
        path: PathBuf,
        /// Why.
        detail: String,
    },

    /// The private key does not belong to the certificate.
    #[error("{}: private key does not match the certificate in {}", key.display(), cert.display())]
    KeyMismatch {
        /// The key file.
        key: PathBuf,
        /// The certificate file.
        cert: PathBuf,
    },

    /// The target file exists and overwriting was not allowed.
    #[error("{}: already exists; not overwritten", path.display())]
    Exists {
        /// The file that would have been replaced.
        path: PathBuf,
    },

    /// A file could not be written.
    #[error("{}: cannot write: {error}", path.display())]
    Write {
        /// The file (or directory) being written.
        path: PathBuf,
        /// What the operating system said.
        error: io::Error,
    },

    /// The certificate given as a CA cannot issue certificates.
    #[error("{}: not usable as a CA: {reason}", path.display())]
    NotACa {
        /// The CA certificate file.
        path: PathBuf,
        /// Why (no CA basic constraint, no keyCertSign).
        reason: String,
    },

    /// A certificate to revoke was not issued by the CA asked to revoke it.
    #[error("{}: issued by {issuer:?}, not by this CA ({ca:?})", path.display())]
    NotIssuedBy {
        /// The certificate file.
        path: PathBuf,
        /// Its issuer.
        issuer: String,
        /// The CA's subject.
        ca: String,
    },

    /// The CA is outside its validity period, so nothing it signs would verify.
    #[error("{}: the CA is {state} (valid {} to {})", path.display(), rfc3339(*not_before), rfc3339(*not_after))]
    CaNotValid {
        /// The CA certificate file.
        path: PathBuf,
        /// `expired` or `not yet valid`.
        state: &'static str,
        /// Start of the CA's validity.
        not_before: OffsetDateTime,
        /// End of the CA's validity.
        not_after: OffsetDateTime,
    },

    /// The certificate asked for would stay valid after its CA expires.
    #[error(
        "{}: the CA expires {}, before a {days}-day certificate would; ask for at most {max_days} days",
        path.display(), rfc3339(*ca_not_after)
    )]
    OutlivesCa {
        /// The CA certificate file.
        path: PathBuf,
        /// End of the CA's validity.
        ca_not_after: OffsetDateTime,
        /// Days asked for.
        days: u32,
        /// The most days that fit inside the CA's validity.
        max_days: i64,
    },

    /// An Origin CA style certificate was asked for with a validity Cloudflare does not offer.
    #[error(
        "{days} days is not an Origin CA validity; choose one of 7, 30, 90, 365, 730, 1095, 5475"
    )]
    OriginValidity {
        /// Days asked for.
        days: u32,
    },

    /// A validity period that makes no sense (zero days, or beyond what X.509 can encode).
    #[error("invalid validity of {days} days: {reason}")]
    Validity {
        /// Days asked for.
        days: u32,
        /// Why it is refused.
        reason: &'static str,
    },

    /// A name given for a certificate is not acceptable.
    #[error("invalid name {name:?}: {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// Why it is refused.
        reason: String,
    },

    /// The key type named is not one this crate generates.
    #[error(
        "unknown key type {0:?}; choose one of ecdsa-p256, ecdsa-p384, ed25519, rsa2048, rsa4096"
    )]
    UnknownKeyType(String),

    /// A fingerprint given as text is not 32 bytes of hex.
    #[error("invalid SHA-256 fingerprint {0:?}: expected 64 hex digits (colons allowed)")]
    InvalidFingerprint(String),

    /// Certificate or key generation failed inside rcgen or the crypto provider.
    #[error("certificate generation failed: {0}")]
    Generate(String),
}

/// `4 MiB` for whole mebibytes, `1000 bytes` otherwise.
fn size(bytes: u64) -> String {
    if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{bytes} bytes")
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(feature = "issue")]
impl From<rcgen::Error> for Error {
    fn from(e: rcgen::Error) -> Self {
        Self::Generate(e.to_string())
    }
}
