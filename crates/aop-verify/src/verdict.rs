//! The verdict: what happened to one connection's client certificate, named like nginx's
//! `$ssl_client_verify` (`SUCCESS`, `FAILED:<reason>`, `NONE`), and its log line.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use aop_pki::{CertInfo, rfc3339};

/// Why a presented certificate was rejected: the closed vocabulary of DESIGN.md.
///
/// `Display` gives the contract word (`unknown_ca`, …). Words are only ever added, never
/// reused for something else.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// No path from the certificate to an anchor trusted for this SNI.
    UnknownCa,
    /// The certificate, an intermediate, or the trust anchor itself has expired.
    Expired,
    /// The certificate, an intermediate, or the trust anchor is not valid yet.
    NotYetValid,
    /// A signature in the chain, or the handshake signature proving the key, is wrong.
    BadSignature,
    /// The certificate has no extended key usage allowing clientAuth.
    BadEku,
    /// The certificate (or an intermediate) is on a loaded CRL.
    Revoked,
    /// The chain verified, but neither the certificate pin nor the SPKI pin matched.
    PinMismatch,
    /// The chain verified, but no SAN (or CN, when there is no SAN) is on the allowlist.
    NameNotAllowed,
    /// The certificate is valid for another zone or hostname's rule, not this SNI's.
    ZoneMismatch,
    /// The certificate (or chain) is not valid DER / X.509.
    BadEncoding,
    /// More certificates than the rule's maximum depth, or path building gave up.
    ChainTooLong,
    /// A signature or key algorithm this origin does not accept.
    UnsupportedAlgorithm,
    /// A CA certificate was presented as the client certificate.
    NotALeaf,
    /// A certificate in the chain is outside a name constraint of a CA above it (DNS,
    /// IP, email, URI such as a SPIFFE trust domain, or directoryName; the subject's CN
    /// and emailAddress count when there is no SAN of that form).
    NameConstraints,
    /// A keyUsage forbids the certificate's role: the client's lacks digitalSignature or
    /// asserts keyCertSign without being a CA; a CA's is missing or lacks keyCertSign.
    BadKeyUsage,
    /// A certificate above the client's may not issue it: no CA basicConstraints, a
    /// basicConstraints that is not critical, or its pathLenConstraint exceeded.
    NotACa,
    /// A certificate in the chain (the trust anchor included) carries a critical
    /// extension aop does not process.
    UnhandledCriticalExtension,
    /// The revocation status cannot be known: the loaded CRL covering an issuer has
    /// expired, or cannot be used (not signed by the issuer, a delta or indirect CRL).
    RevocationUnknown,
    /// Anything else; the verdict's `detail` says what.
    Other,
}

impl Reason {
    /// Every reason, in the order DESIGN.md lists them.
    pub const ALL: [Self; 19] = [
        Self::UnknownCa,
        Self::Expired,
        Self::NotYetValid,
        Self::BadSignature,
        Self::BadEku,
        Self::Revoked,
        Self::PinMismatch,
        Self::NameNotAllowed,
        Self::ZoneMismatch,
        Self::BadEncoding,
        Self::ChainTooLong,
        Self::UnsupportedAlgorithm,
        Self::NotALeaf,
        Self::NameConstraints,
        Self::BadKeyUsage,
        Self::NotACa,
        Self::UnhandledCriticalExtension,
        Self::RevocationUnknown,
        Self::Other,
    ];

    /// The contract word.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnknownCa => "unknown_ca",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::BadSignature => "bad_signature",
            Self::BadEku => "bad_eku",
            Self::Revoked => "revoked",
            Self::PinMismatch => "pin_mismatch",
            Self::NameNotAllowed => "name_not_allowed",
            Self::ZoneMismatch => "zone_mismatch",
            Self::BadEncoding => "bad_encoding",
            Self::ChainTooLong => "chain_too_long",
            Self::UnsupportedAlgorithm => "unsupported_algorithm",
            Self::NotALeaf => "not_a_leaf",
            Self::NameConstraints => "name_constraints",
            Self::BadKeyUsage => "bad_key_usage",
            Self::NotACa => "not_a_ca",
            Self::UnhandledCriticalExtension => "unhandled_critical_extension",
            Self::RevocationUnknown => "revocation_unknown",
            Self::Other => "other",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a connection has the verdict `NONE`: no certificate was verified. Not part of the
/// verdict string (which is just `NONE`); logged as the `reason` field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NoneCause {
    /// The client completed the handshake without a certificate (or, in `require`
    /// mode, was refused for not sending one).
    NoCertificate,
    /// The ClientHello named a host no rule serves, and there is no default rule.
    UnknownSni,
    /// The ClientHello had no SNI and there is no default rule.
    NoSni,
    /// The handshake did not finish within the handshake timeout.
    HandshakeTimeout,
    /// The bytes on the port were not a TLS handshake, or the handshake failed before a
    /// certificate was presented (protocol error, no common cipher, client alert).
    HandshakeError,
    /// On a listener that requires a PROXY protocol header, the connection did not start
    /// with a valid one (no TLS was attempted).
    ProxyHeader,
}

impl NoneCause {
    /// The word logged in the `reason` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoCertificate => "no_certificate",
            Self::UnknownSni => "unknown_sni",
            Self::NoSni => "no_sni",
            Self::HandshakeTimeout => "handshake_timeout",
            Self::HandshakeError => "handshake_error",
            Self::ProxyHeader => "proxy_header",
        }
    }
}

/// The three verdicts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The chain verified to an anchor trusted for this SNI and every policy check passed.
    Success,
    /// A certificate was presented and rejected.
    Failed(Reason),
    /// No certificate was presented (or the connection never got that far).
    None(NoneCause),
}

impl Outcome {
    /// `true` for [`Outcome::Success`].
    pub fn is_success(self) -> bool {
        self == Self::Success
    }

    /// The `reason` word: the FAILED reason, the NONE cause, or empty for SUCCESS.
    pub fn reason_str(self) -> &'static str {
        match self {
            Self::Success => "",
            Self::Failed(r) => r.as_str(),
            Self::None(c) => c.as_str(),
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Success => f.write_str("SUCCESS"),
            Self::Failed(r) => write!(f, "FAILED:{r}"),
            Self::None(_) => f.write_str("NONE"),
        }
    }
}

/// Everything known about one connection's client authentication.
///
/// `Display` is exactly the verdict string: `SUCCESS`, `FAILED:<reason>` or `NONE`.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Verdict {
    /// The outcome.
    pub outcome: Outcome,
    /// Extra words for a human (which anchor expired, which rule the certificate is valid
    /// for, what `other` was). Never key material.
    pub detail: Option<String>,
    /// The presented client certificate, when one was presented and could be parsed.
    pub client: Option<Arc<CertInfo>>,
    /// The rule that matched the SNI (its name), if any.
    pub rule: Option<Arc<str>>,
    /// The SNI from the ClientHello.
    pub sni: Option<String>,
    /// The peer's address.
    pub peer: Option<SocketAddr>,
    /// The address of the proxy (a TCP load balancer) whose PROXY protocol header named
    /// `peer`; `None` for a connection straight from the peer.
    pub via: Option<SocketAddr>,
    /// `TLSv1.3` or `TLSv1.2`, once negotiated.
    pub tls_version: Option<&'static str>,
    /// Whether the session was resumed (the stored certificate was re-checked against
    /// the current policy).
    pub resumed: bool,
    /// Whether the TLS handshake completed. `false` with a `SUCCESS` outcome means the
    /// certificate passed every check but the handshake then failed (the client reset
    /// the connection after its Finished, say): the certificate's verdict is still its
    /// own, never turned into `FAILED`.
    pub completed: bool,
}

impl Verdict {
    /// A verdict with only an outcome; the other fields are filled in as they are learnt.
    pub fn new(outcome: Outcome) -> Self {
        Self {
            outcome,
            detail: None,
            client: None,
            rule: None,
            sni: None,
            peer: None,
            via: None,
            tls_version: None,
            resumed: false,
            completed: false,
        }
    }

    /// `true` for `SUCCESS`.
    pub fn is_success(&self) -> bool {
        self.outcome.is_success()
    }

    /// Emit the verdict as one structured `tracing` event with target `aop::verdict`:
    /// `SUCCESS` at INFO, anything else at WARN. Fields: `verdict`, `reason`, `sni`,
    /// `peer`, `via`, `subject`, `issuer`, `serial`, `sha256`, `not_after`, `rule`,
    /// `tls_version`, `resumed`, `completed`, `detail`. Absent values are empty strings, so every
    /// line has the same fields.
    pub fn log(&self) {
        let c = self.client.as_deref();
        let sni = self.sni.as_deref().unwrap_or("");
        let peer = OrEmpty(self.peer.as_ref());
        let via = OrEmpty(self.via.as_ref());
        let subject = c.map_or("", |c| c.subject.as_str());
        let issuer = c.map_or("", |c| c.issuer.as_str());
        let serial = c.map_or("", |c| c.serial.as_str());
        let sha256 = OrEmpty(c.map(|c| &c.sha256));
        let not_after = c.map(|c| rfc3339(c.not_after)).unwrap_or_default();
        let rule = self.rule.as_deref().unwrap_or("");
        let tls = self.tls_version.unwrap_or("");
        let detail = self.detail.as_deref().unwrap_or("");
        let reason = self.outcome.reason_str();
        macro_rules! event {
            ($level:expr) => {
                tracing::event!(
                    target: "aop::verdict",
                    $level,
                    verdict = %self.outcome,
                    reason,
                    sni,
                    peer = %peer,
                    via = %via,
                    subject,
                    issuer,
                    serial,
                    sha256 = %sha256,
                    not_after,
                    rule,
                    tls_version = tls,
                    resumed = self.resumed,
                    completed = self.completed,
                    detail,
                    "client certificate verdict"
                )
            };
        }
        if self.is_success() && self.completed {
            event!(tracing::Level::INFO);
        } else {
            event!(tracing::Level::WARN);
        }
    }
}

/// Displays the value, or nothing: a log field without a `String` made for it.
struct OrEmpty<'a, T>(Option<&'a T>);

impl<T: fmt::Display> fmt::Display for OrEmpty<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(v) => v.fmt(f),
            None => Ok(()),
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.outcome.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_the_contract() {
        assert_eq!(Outcome::Success.to_string(), "SUCCESS");
        assert_eq!(Outcome::None(NoneCause::UnknownSni).to_string(), "NONE");
        let words: Vec<_> = Reason::ALL
            .iter()
            .map(|r| Outcome::Failed(*r).to_string())
            .collect();
        assert_eq!(
            words,
            [
                "FAILED:unknown_ca",
                "FAILED:expired",
                "FAILED:not_yet_valid",
                "FAILED:bad_signature",
                "FAILED:bad_eku",
                "FAILED:revoked",
                "FAILED:pin_mismatch",
                "FAILED:name_not_allowed",
                "FAILED:zone_mismatch",
                "FAILED:bad_encoding",
                "FAILED:chain_too_long",
                "FAILED:unsupported_algorithm",
                "FAILED:not_a_leaf",
                "FAILED:name_constraints",
                "FAILED:bad_key_usage",
                "FAILED:not_a_ca",
                "FAILED:unhandled_critical_extension",
                "FAILED:revocation_unknown",
                "FAILED:other",
            ]
        );
    }
}
