//! The one error type of this crate: everything that can stop a policy from loading.
//! (Rejected clients are not errors: they get a [`crate::Verdict`].)

use std::path::PathBuf;

/// Why a policy (or a reload) could not be loaded. The running policy, if any, is kept.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A certificate, key or CRL file is unreadable or malformed (the message names it).
    #[error(transparent)]
    Pki(#[from] aop_pki::Error),

    /// A rule has no trust anchors: it would trust nothing, or (worse) be mistaken for
    /// one that trusts everything.
    #[error("a rule has no trust anchors (trust = [])")]
    NoAnchors,

    /// A certificate in a trust file cannot be used as a trust anchor.
    #[error("{}: certificate #{index} cannot be a trust anchor: {detail}", path.display())]
    BadAnchor {
        /// The trust file.
        path: PathBuf,
        /// Position in the file, from 1.
        index: usize,
        /// Why.
        detail: String,
    },

    /// A trust file holds a certificate that is not a CA certificate and not
    /// self-signed: a server or client certificate (alone, or first in a bundle with its
    /// CA). As an anchor it would trust what that certificate's own issuer never
    /// vouched for, and a bundle silently trusts its whole CA; what was meant is a pin.
    /// (A self-signed client certificate trusted directly stays allowed.) Refused by
    /// [`crate::TrustSpec::anchor_certificates`].
    #[error(
        "{}: certificate #{index} ({subject}) is not a CA certificate: a trust file holding a leaf trusts its whole issuer (or nothing useful); put only CA certificates in trust, and to accept exactly this certificate pin its SHA-256 {sha256} (aop-origin: pins = [\"{sha256}\"]; certtool verify: --pin {sha256})",
        path.display()
    )]
    LeafAnchor {
        /// The trust file.
        path: PathBuf,
        /// Position in the file, from 1.
        index: usize,
        /// The certificate's subject.
        subject: String,
        /// The certificate's SHA-256 (what a pin takes).
        sha256: aop_pki::Sha256Fingerprint,
    },

    /// A CA certificate in a trust file that can verify no client: every path through
    /// it fails the check the handshake makes of its anchor (not a CA by RFC 5280, no
    /// keyCertSign, an unhandled critical extension, an extendedKeyUsage without
    /// clientAuth…). `reason` is the verdict every client under it would get. Refused by
    /// [`crate::TrustSpec::anchor_certificates`] (after any [`Error::LeafAnchor`]).
    #[error(
        "{}: certificate #{index} can verify no client (every chain under it would be FAILED:{reason}): {detail}; replace it with the edge's CA certificate as issued for client authentication, or remove it from trust",
        path.display()
    )]
    UnusableAnchor {
        /// The trust file.
        path: PathBuf,
        /// Position in the file, from 1.
        index: usize,
        /// The reason word of the verdict every client under it would get.
        reason: crate::Reason,
        /// Which certificate, and what is wrong with it.
        detail: String,
    },

    /// A CRL file parses as PEM/DER but not as a CRL webpki can use.
    #[error("{}: unusable CRL: {detail}", path.display())]
    BadCrl {
        /// The CRL file.
        path: PathBuf,
        /// Why.
        detail: String,
    },

    /// A CRL from outside (fetched over HTTP) that this trust cannot vouch for
    /// ([`Trust::verify_crl`](crate::Trust::verify_crl)).
    #[error("CRL refused ({problem}): {detail}")]
    CrlRefused {
        /// `malformed`, `unknown_issuer` (no trust anchor of the issuer's name), or
        /// `bad_signature` (an anchor of that name, but not its signature).
        problem: &'static str,
        /// What the CRL says it is, and what is wrong.
        detail: String,
    },

    /// The origin's own certificate and key cannot make a TLS server configuration.
    #[error("{}: cannot serve this certificate: {detail}", path.display())]
    ServerCert {
        /// The certificate file.
        path: PathBuf,
        /// What rustls said.
        detail: String,
    },

    /// A session ticket key file is unusable: unreadable, not a regular file, not 80 or
    /// 48 bytes, (Unix) readable by others, or the same key as one listed before it. See
    /// [`crate::TicketKeys::load`].
    #[error("{}: session ticket key: {detail}", path.display())]
    TicketKey {
        /// The key file.
        path: PathBuf,
        /// Why.
        detail: String,
    },

    /// [`crate::PolicySpec::session_ticket_lifetime`] is not a whole number of seconds
    /// from 1 to [`crate::MAX_TICKET_LIFETIME`] (a week: RFC 8446 §4.6.1 caps a ticket's
    /// lifetime there).
    #[error(
        "session ticket lifetime {0:?} is out of range: a whole number of seconds from 1 to 604800 (a week, TLS 1.3's limit)"
    )]
    TicketLifetime(std::time::Duration),

    /// A hostname pattern is not an exact DNS name or `*.zone`.
    #[error("invalid hostname pattern {pattern:?}: {reason}")]
    Pattern {
        /// The pattern as given.
        pattern: String,
        /// Why.
        reason: &'static str,
    },

    /// Two rules claim the same hostname pattern.
    #[error("hostname pattern {0:?} appears in more than one rule")]
    DuplicatePattern(String),

    /// Something else about the policy is inconsistent.
    #[error("invalid policy: {0}")]
    Config(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
