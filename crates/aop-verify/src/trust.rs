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
use x509_parser::prelude::FromDer as _;

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
    /// Results of chain checks that succeeded, keyed by the SHA-256 of the presented
    /// chain. Lives and dies with this `Trust`: a reload (new anchors, CRLs, pins) starts
    /// an empty cache.
    cache: VerifiedCache,
    /// The earliest nextUpdate of the CRLs loaded (unix seconds): no cached result
    /// outlives it.
    crl_until: Option<i64>,
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
        let mut crl_until: Option<i64> = None;
        for path in &spec.crls {
            for der in aop_pki::load_crls(path)? {
                if let Ok((_, parsed)) =
                    x509_parser::revocation_list::CertificateRevocationList::from_der(&der)
                {
                    let next = parsed.next_update().map_or(i64::MIN, |t| t.timestamp());
                    crl_until = Some(crl_until.map_or(next, |u| u.min(next)));
                }
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
            cache: VerifiedCache::default(),
            crl_until,
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
    ///
    /// A chain that passed is remembered (keyed by the SHA-256 of the presented chain,
    /// at most [`CACHE_MAX`] of them) until the earliest of: its certificate's, its
    /// intermediates' or its anchor's notAfter, and the loaded CRLs' nextUpdate — so an
    /// edge that presents the same chain on every handshake is not re-verified each time.
    /// Failures are never cached. The handshake signature that proves the client holds
    /// the key is checked by rustls on every handshake regardless.
    pub fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        at: UnixTime,
    ) -> Checked {
        let key = chain_key(end_entity, intermediates);
        let now = i64::try_from(at.as_secs()).unwrap_or(i64::MAX);
        if let Some(hit) = self.cache.get(&key, now) {
            return hit;
        }
        let checked = self.check_uncached(end_entity, intermediates, at);
        if checked.outcome == Outcome::Success
            && let Some(leaf) = &checked.client
            && let Some((from, until)) = self.valid_window(leaf, intermediates, now)
            && from <= now
            && now <= until
        {
            self.cache.insert(key, checked.clone(), from, until);
        }
        checked
    }

    /// The unix-second window in which a successful check of this chain stays true:
    /// inside the validity of the leaf and of every presented intermediate, of every
    /// anchor that could have been used, and before the CRLs' nextUpdate.
    fn valid_window(
        &self,
        leaf: &CertInfo,
        intermediates: &[CertificateDer<'_>],
        now: i64,
    ) -> Option<(i64, i64)> {
        let mut from = leaf.not_before.unix_timestamp();
        let mut until = leaf.not_after.unix_timestamp();
        for c in intermediates {
            let (_, x) = x509_parser::parse_x509_certificate(c).ok()?;
            from = from.max(x.validity().not_before.timestamp());
            until = until.min(x.validity().not_after.timestamp());
        }
        for a in &self.anchor_info {
            let (nb, na) = (a.not_before.unix_timestamp(), a.not_after.unix_timestamp());
            if nb <= now && now <= na {
                from = from.max(nb);
                until = until.min(na);
            }
        }
        if let Some(crl) = self.crl_until {
            until = until.min(crl);
        }
        Some((from, until))
    }

    /// [`Trust::check`] without the cache.
    fn check_uncached(
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

/// The most chain results a [`Trust`] remembers. When full it starts over: simple,
/// bounded, and an edge fleet presents far fewer distinct chains than this.
pub const CACHE_MAX: usize = 4096;

#[derive(Debug, Default)]
struct VerifiedCache {
    map: std::sync::Mutex<std::collections::HashMap<[u8; 32], (Checked, i64, i64)>>,
}

impl VerifiedCache {
    fn get(&self, key: &[u8; 32], now: i64) -> Option<Checked> {
        let map = self
            .map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match map.get(key) {
            Some((c, from, until)) if *from <= now && now <= *until => Some(c.clone()),
            _ => None,
        }
    }

    fn insert(&self, key: [u8; 32], checked: Checked, from: i64, until: i64) {
        let mut map = self
            .map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= CACHE_MAX {
            map.clear();
        }
        map.insert(key, (checked, from, until));
    }
}

/// SHA-256 over the presented chain, each certificate length-prefixed.
fn chain_key(end_entity: &CertificateDer<'_>, intermediates: &[CertificateDer<'_>]) -> [u8; 32] {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for c in std::iter::once(end_entity).chain(intermediates) {
        ctx.update(&(c.len() as u64).to_be_bytes());
        ctx.update(c);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use aop_pki::{Ca, CaRequest, ClientRequest, KeyType, Overwrite};

    fn setup(
        dir: &std::path::Path,
        leaf_days: u32,
    ) -> (Trust, Vec<CertificateDer<'static>>, OffsetDateTime) {
        let now = OffsetDateTime::now_utc();
        let req = CaRequest {
            name: "ca".into(),
            key_type: KeyType::EcdsaP256,
            days: 365,
            path_len: 0,
        };
        let ca = aop_pki::create_ca(&req, now).unwrap();
        aop_pki::write_issued(
            &ca,
            &dir.join("ca.pem"),
            &dir.join("ca.key"),
            Overwrite::Refuse,
        )
        .unwrap();
        let ca = Ca::load(dir, now).unwrap();
        let leaf = ca
            .issue_client(
                &ClientRequest {
                    common_name: "edge".into(),
                    sans: vec![],
                    days: leaf_days,
                    key_type: KeyType::EcdsaP256,
                },
                now,
            )
            .unwrap();
        let trust = Trust::load(&TrustSpec::new([dir.join("ca.pem")])).unwrap();
        (trust, vec![leaf.certificate.clone()], now)
    }

    fn cached(t: &Trust) -> usize {
        t.cache.map.lock().unwrap().len()
    }

    #[test]
    fn a_success_is_remembered_and_reused_within_its_window_only() {
        let d = tempfile::tempdir().unwrap();
        let (trust, chain, now) = setup(d.path(), 10);
        let at = unix_time(now);
        let first = trust.check(&chain[0], &[], at);
        assert_eq!(first.outcome, Outcome::Success);
        assert_eq!(cached(&trust), 1);
        let again = trust.check(&chain[0], &[], at);
        assert!(
            Arc::ptr_eq(
                first.client.as_ref().unwrap(),
                again.client.as_ref().unwrap()
            ),
            "served from the cache"
        );
        // Past the leaf's notAfter the cached SUCCESS must not be served.
        let later = trust.check(&chain[0], &[], unix_time(now + time::Duration::days(11)));
        assert_eq!(later.outcome, Outcome::Failed(Reason::Expired));
    }

    #[test]
    fn failures_are_not_remembered_and_the_cache_is_bounded() {
        let d = tempfile::tempdir().unwrap();
        let (trust, chain, now) = setup(d.path(), 10);
        let early = trust.check(&chain[0], &[], unix_time(now - time::Duration::days(2)));
        assert_eq!(early.outcome, Outcome::Failed(Reason::NotYetValid));
        assert_eq!(cached(&trust), 0);
        for i in 0..CACHE_MAX + 10 {
            trust.cache.insert(
                [
                    (i % 251) as u8,
                    (i / 251) as u8,
                    1,
                    2,
                    3,
                    4,
                    5,
                    6,
                    7,
                    8,
                    9,
                    10,
                    11,
                    12,
                    13,
                    14,
                    15,
                    16,
                    17,
                    18,
                    19,
                    20,
                    21,
                    22,
                    23,
                    24,
                    25,
                    26,
                    27,
                    28,
                    29,
                    30,
                ],
                early.clone(),
                0,
                1,
            );
        }
        assert!(cached(&trust) <= CACHE_MAX);
    }
}
