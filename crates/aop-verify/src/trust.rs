//! What one rule trusts, and the check of a presented chain against it.
//!
//! The chain itself is verified by rustls-webpki (path building, signatures, validity,
//! EKU, CRLs); this module adds what webpki leaves out and the origin needs: the trust
//! anchor's own validity (as OpenSSL checks it: an expired CA verifies nothing), a
//! clientAuth EKU that must be present, a depth limit, certificate and SPKI pins, and a
//! SAN allowlist. Pins and allowlists narrow trust; they never replace the chain check.

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::Arc;

use aop_pki::{CertInfo, Sha256Fingerprint, rfc3339};
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use time::OffsetDateTime;
use webpki::{
    CertRevocationList, EndEntityCert, ExpirationPolicy, KeyUsage, OwnedCertRevocationList,
    RevocationCheckDepth, RevocationOptionsBuilder, UnknownStatusPolicy,
};

use crate::verdict::{Outcome, Reason};
use crate::{Error, Result};

/// The default maximum number of certificates a client may present (its own and the
/// intermediates above it).
pub const DEFAULT_MAX_DEPTH: usize = 4;

/// What a rule trusts, as file paths and values (for [`Trust::load`]).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct TrustSpec {
    /// PEM/DER files of trust anchors. Several files at once is how a rotation overlaps.
    pub anchors: Vec<PathBuf>,
    /// Certificate pins (SHA-256 of the client certificate's DER). Empty: no pin check.
    pub pins: Vec<Sha256Fingerprint>,
    /// SPKI pins (SHA-256 of its public key). Empty: no pin check. When either kind is
    /// given, the certificate must match one pin of either kind.
    pub spki_pins: Vec<Sha256Fingerprint>,
    /// Allowed DNS or URI SANs (exact; DNS case-insensitive). The CN counts only when the
    /// certificate has no DNS or URI SAN. Empty: no name check.
    pub allow_san: Vec<String>,
    /// CRL files (PEM or DER). Certificates from CAs without a loaded CRL are not
    /// considered revoked; an expired CRL fails every certificate it covers.
    pub crls: Vec<PathBuf>,
    /// The most certificates a client may present, its own included.
    pub max_depth: usize,
}

impl TrustSpec {
    /// Trust the anchors in these files, with no pins, allowlist or CRLs.
    pub fn new(anchors: impl IntoIterator<Item = impl Into<PathBuf>>) -> Self {
        Self {
            anchors: anchors.into_iter().map(Into::into).collect(),
            pins: Vec::new(),
            spki_pins: Vec::new(),
            allow_san: Vec::new(),
            crls: Vec::new(),
            max_depth: DEFAULT_MAX_DEPTH,
        }
    }
}

/// One trust anchor, with what we need to know about it beyond webpki's view.
#[derive(Debug)]
struct Anchor {
    subject: String,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
}

/// A loaded [`TrustSpec`], ready to check chains. Built once per policy load, shared by
/// every handshake; checking does no file I/O.
#[derive(Debug)]
pub struct Trust {
    anchors: Vec<TrustAnchor<'static>>,
    anchor_info: Vec<Anchor>,
    /// Subjects of the anchors (DER), sent as CertificateRequest hints.
    pub(crate) subjects: Vec<rustls::DistinguishedName>,
    crls: Vec<CertRevocationList<'static>>,
    pins: Vec<Sha256Fingerprint>,
    spki_pins: Vec<Sha256Fingerprint>,
    /// Allowed DNS names (and CNs), lowercase: DNS is case-insensitive.
    allow_dns: Vec<String>,
    /// Allowed URIs, exactly as given: URI paths are case-sensitive.
    allow_uri: Vec<String>,
    max_depth: usize,
    earliest_expiry: Option<OffsetDateTime>,
}

/// The result of checking one chain: the outcome, words for a human, and the client
/// certificate's details when it could be parsed.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Checked {
    /// `Success` or `Failed(reason)`.
    pub outcome: Outcome,
    /// Extra words (which certificate expired, which anchor, what `other` was).
    pub detail: Option<String>,
    /// The presented end-entity certificate.
    pub client: Option<Arc<CertInfo>>,
}

impl Checked {
    fn failed(
        reason: Reason,
        detail: impl Into<Option<String>>,
        client: Option<Arc<CertInfo>>,
    ) -> Self {
        Self {
            outcome: Outcome::Failed(reason),
            detail: detail.into(),
            client,
        }
    }
}

/// Convert an `OffsetDateTime` to webpki's time type (times before 1970 clamp to 0).
pub fn unix_time(t: OffsetDateTime) -> UnixTime {
    UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        u64::try_from(t.unix_timestamp()).unwrap_or(0),
    ))
}

fn offset_time(t: UnixTime) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(i64::try_from(t.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

impl Trust {
    /// Read every anchor and CRL file. Errors name the file.
    pub fn load(spec: &TrustSpec) -> Result<Self> {
        if spec.anchors.is_empty() {
            return Err(Error::NoAnchors);
        }
        let now = OffsetDateTime::now_utc();
        let mut anchors = Vec::new();
        let mut anchor_info = Vec::new();
        for path in &spec.anchors {
            for (i, der) in aop_pki::load_certificates(path)?.into_iter().enumerate() {
                let bad = |detail: String| Error::BadAnchor {
                    path: path.clone(),
                    index: i + 1,
                    detail,
                };
                let info = CertInfo::from_der(&der, now).map_err(bad)?;
                let ta = webpki::anchor_from_trusted_cert(&der)
                    .map_err(|e| bad(format!("{e:?}")))?
                    .to_owned();
                anchors.push(ta);
                anchor_info.push(Anchor {
                    subject: info.subject,
                    not_before: info.not_before,
                    not_after: info.not_after,
                });
            }
        }
        let mut crls = Vec::new();
        for path in &spec.crls {
            for der in aop_pki::load_crls(path)? {
                let crl = OwnedCertRevocationList::from_der(&der).map_err(|e| Error::BadCrl {
                    path: path.clone(),
                    detail: format!("{e:?}"),
                })?;
                crls.push(CertRevocationList::Owned(crl));
            }
        }
        if spec.max_depth == 0 {
            return Err(Error::Config("max_depth must be at least 1".into()));
        }
        let subjects = anchors
            .iter()
            .map(|a| rustls::DistinguishedName::in_sequence(a.subject.as_ref()))
            .collect();
        let earliest_expiry = anchor_info.iter().map(|a| a.not_after).min();
        Ok(Self {
            anchors,
            anchor_info,
            subjects,
            crls,
            pins: spec.pins.clone(),
            spki_pins: spec.spki_pins.clone(),
            // Anything with a scheme is a URI, matched exactly; the rest are DNS names.
            allow_dns: spec
                .allow_san
                .iter()
                .filter(|s| !s.contains(':'))
                .map(|s| s.to_ascii_lowercase())
                .collect(),
            allow_uri: spec
                .allow_san
                .iter()
                .filter(|s| s.contains(':'))
                .cloned()
                .collect(),
            max_depth: spec.max_depth,
            earliest_expiry,
        })
    }

    /// When the first of this rule's anchors expires.
    pub fn earliest_anchor_expiry(&self) -> Option<OffsetDateTime> {
        self.earliest_expiry
    }

    /// Check a presented chain at time `at`. The same function serves the TLS verifier
    /// and `certtool verify`, so both give the same verdict.
    pub fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        at: UnixTime,
    ) -> Checked {
        let at_dt = offset_time(at);
        let client = match CertInfo::from_der(end_entity, at_dt) {
            Ok(info) => Some(Arc::new(info)),
            Err(e) => return Checked::failed(Reason::BadEncoding, e, None),
        };
        let info = client.as_deref().expect("set above");
        if intermediates.len() + 1 > self.max_depth {
            return Checked::failed(
                Reason::ChainTooLong,
                format!(
                    "{} certificates presented; this rule allows at most {}",
                    intermediates.len() + 1,
                    self.max_depth
                ),
                client,
            );
        }
        if let Err((reason, detail)) = self.verify_path(end_entity, intermediates, at, info) {
            return Checked::failed(reason, detail, client);
        }
        // webpki accepts a leaf without any EKU; an origin-pull certificate must say clientAuth.
        if !info.extended_key_usage.iter().any(|e| e == "clientAuth") {
            return Checked::failed(
                Reason::BadEku,
                format!(
                    "extended key usage is [{}]; clientAuth is required",
                    info.extended_key_usage.join(", ")
                ),
                client,
            );
        }
        if (!self.pins.is_empty() || !self.spki_pins.is_empty())
            && !self.pins.contains(&info.sha256)
            && !self.spki_pins.contains(&info.spki_sha256)
        {
            return Checked::failed(
                Reason::PinMismatch,
                format!(
                    "sha256 {} / spki {} match no pin",
                    info.sha256, info.spki_sha256
                ),
                client,
            );
        }
        let has_allowlist = !self.allow_dns.is_empty() || !self.allow_uri.is_empty();
        if has_allowlist && !self.name_allowed(info) {
            return Checked::failed(Reason::NameNotAllowed, None, client);
        }
        Checked {
            outcome: Outcome::Success,
            detail: None,
            client,
        }
    }

    /// Whether the chain alone (no pins, names or anchor-validity rules) verifies to one
    /// of these anchors. Used to tell `zone_mismatch` from `unknown_ca`.
    pub(crate) fn chain_verifies(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        at: UnixTime,
    ) -> bool {
        let Ok(ee) = EndEntityCert::try_from(end_entity) else {
            return false;
        };
        ee.verify_for_usage(
            sig_algs(),
            &self.anchors,
            intermediates,
            at,
            KeyUsage::client_auth(),
            None,
            None,
        )
        .is_ok()
    }

    fn name_allowed(&self, info: &CertInfo) -> bool {
        // The CN counts only when there is no subjectAltName extension at all.
        if !info.has_san_extension {
            return info
                .common_name
                .as_ref()
                .is_some_and(|cn| self.allow_dns.contains(&cn.to_ascii_lowercase()));
        }
        info.san
            .dns
            .iter()
            .any(|d| self.allow_dns.contains(&d.to_ascii_lowercase()))
            || info.san.uri.iter().any(|u| self.allow_uri.contains(u))
    }

    /// webpki path building against the anchors valid at `at`; if that finds no issuer
    /// but an expired (or not yet valid) anchor would have verified the chain, say so.
    fn verify_path(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        at: UnixTime,
        info: &CertInfo,
    ) -> std::result::Result<(), (Reason, Option<String>)> {
        let ee = EndEntityCert::try_from(end_entity)
            .map_err(|e| (Reason::BadEncoding, Some(format!("{e:?}"))))?;
        let at_dt = offset_time(at);
        let valid: Cow<'_, [TrustAnchor<'static>]> = if self
            .anchor_info
            .iter()
            .all(|a| a.not_before <= at_dt && at_dt <= a.not_after)
        {
            Cow::Borrowed(&self.anchors)
        } else {
            Cow::Owned(
                self.anchors
                    .iter()
                    .zip(&self.anchor_info)
                    .filter(|(_, a)| a.not_before <= at_dt && at_dt <= a.not_after)
                    .map(|(t, _)| t.clone())
                    .collect(),
            )
        };
        let crl_refs: Vec<&CertRevocationList<'_>> = self.crls.iter().collect();
        let revocation = if crl_refs.is_empty() {
            None
        } else {
            RevocationOptionsBuilder::new(&crl_refs).ok().map(|b| {
                b.with_depth(RevocationCheckDepth::Chain)
                    .with_status_policy(UnknownStatusPolicy::Allow)
                    .with_expiration_policy(ExpirationPolicy::Enforce)
                    .build()
            })
        };
        let result = ee.verify_for_usage(
            sig_algs(),
            &valid,
            intermediates,
            at,
            KeyUsage::client_auth(),
            revocation,
            None,
        );
        match result {
            Ok(_) => Ok(()),
            Err(webpki::Error::UnknownIssuer) if valid.len() < self.anchors.len() => {
                // Would an anchor outside its validity have verified it?
                let stale: Vec<_> = self
                    .anchors
                    .iter()
                    .zip(&self.anchor_info)
                    .filter(|(_, a)| !(a.not_before <= at_dt && at_dt <= a.not_after))
                    .collect();
                let tas: Vec<_> = stale.iter().map(|(t, _)| (*t).clone()).collect();
                match ee.verify_for_usage(
                    sig_algs(),
                    &tas,
                    intermediates,
                    at,
                    KeyUsage::client_auth(),
                    None,
                    None,
                ) {
                    Ok(path) => {
                        let used = path.anchor().subject.as_ref();
                        let (_, a) = stale
                            .iter()
                            .find(|(t, _)| t.subject.as_ref() == used)
                            .expect("the anchor came from this list");
                        if at_dt > a.not_after {
                            Err((
                                Reason::Expired,
                                Some(format!(
                                    "trust anchor {} expired {}",
                                    a.subject,
                                    rfc3339(a.not_after)
                                )),
                            ))
                        } else {
                            Err((
                                Reason::NotYetValid,
                                Some(format!(
                                    "trust anchor {} is not valid before {}",
                                    a.subject,
                                    rfc3339(a.not_before)
                                )),
                            ))
                        }
                    }
                    Err(_) => Err((
                        Reason::UnknownCa,
                        Some(format!("no trusted issuer for {}", info.issuer)),
                    )),
                }
            }
            Err(e) => Err(map_webpki_error(&e, info, intermediates, at_dt)),
        }
    }
}

/// The signature algorithms rustls's aws-lc-rs provider verifies (built once: making a
/// provider allocates).
pub(crate) fn sig_algs() -> &'static [&'static dyn rustls_pki_types::SignatureVerificationAlgorithm]
{
    static ALGS: std::sync::LazyLock<rustls::crypto::WebPkiSupportedAlgorithms> =
        std::sync::LazyLock::new(|| {
            rustls::crypto::aws_lc_rs::default_provider().signature_verification_algorithms
        });
    ALGS.all
}

/// Map a webpki error onto the closed reason vocabulary, with words for a human.
fn map_webpki_error(
    e: &webpki::Error,
    leaf: &CertInfo,
    intermediates: &[CertificateDer<'_>],
    at: OffsetDateTime,
) -> (Reason, Option<String>) {
    use webpki::Error as E;
    // Which certificate is out of its validity period: the leaf, or a presented one above it.
    let which = |leaf_bad: bool| {
        if leaf_bad {
            return "the certificate".to_owned();
        }
        intermediates
            .iter()
            .filter_map(|c| CertInfo::from_der(c, at).ok())
            .find(|c| c.validity != aop_pki::Validity::Valid)
            .map(|c| {
                format!(
                    "{} in the presented chain (valid {} to {})",
                    c.subject,
                    rfc3339(c.not_before),
                    rfc3339(c.not_after)
                )
            })
            .unwrap_or_else(|| "a certificate in the chain".to_owned())
    };
    match e {
        E::UnknownIssuer => (
            Reason::UnknownCa,
            Some(format!("no trusted issuer for {}", leaf.issuer)),
        ),
        E::CertExpired { .. } => {
            let leaf_bad = at > leaf.not_after;
            (
                Reason::Expired,
                Some(format!("{} has expired", which(leaf_bad))),
            )
        }
        E::CertNotValidYet { .. } => {
            let leaf_bad = at < leaf.not_before;
            (
                Reason::NotYetValid,
                Some(format!("{} is not valid yet", which(leaf_bad))),
            )
        }
        E::InvalidSignatureForPublicKey => (Reason::BadSignature, None),
        #[allow(deprecated)] // older webpki versions still produce the unit variants
        E::RequiredEkuNotFound | E::RequiredEkuNotFoundContext(_) => (
            Reason::BadEku,
            Some(format!(
                "extended key usage is [{}]; clientAuth is required",
                leaf.extended_key_usage.join(", ")
            )),
        ),
        E::CertRevoked => (Reason::Revoked, None),
        E::CaUsedAsEndEntity => (
            Reason::NotALeaf,
            Some("a CA certificate was presented as the client certificate".into()),
        ),
        E::MaximumPathDepthExceeded
        | E::MaximumPathBuildCallsExceeded
        | E::MaximumSignatureChecksExceeded => (Reason::ChainTooLong, Some(format!("{e:?}"))),
        #[allow(deprecated)]
        E::UnsupportedSignatureAlgorithm
        | E::UnsupportedSignatureAlgorithmContext(_)
        | E::UnsupportedSignatureAlgorithmForPublicKey
        | E::UnsupportedSignatureAlgorithmForPublicKeyContext(_)
        | E::SignatureAlgorithmMismatch => (Reason::UnsupportedAlgorithm, Some(format!("{e:?}"))),
        E::BadDer
        | E::BadDerTime
        | E::TrailingData(_)
        | E::MalformedExtensions
        | E::ExtensionValueInvalid
        | E::UnsupportedCertVersion
        | E::InvalidCertValidity
        | E::EmptyEkuExtension
        | E::InvalidSerialNumber => (Reason::BadEncoding, Some(format!("{e:?}"))),
        E::CrlExpired { .. } => (
            Reason::Other,
            Some("a loaded CRL has expired; refusing until it is renewed".into()),
        ),
        other => (Reason::Other, Some(format!("{other:?}"))),
    }
}
