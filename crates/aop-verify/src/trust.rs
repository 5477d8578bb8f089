//! What one rule trusts, and the check of a presented chain against it.
//!
//! The chain itself is verified by rustls-webpki (path building, signatures, validity,
//! EKU, CRLs); this module adds what webpki leaves out and the origin needs: the trust
//! anchor's own validity (as OpenSSL checks it: an expired CA verifies nothing), a
//! clientAuth EKU that must be present, a depth limit, certificate and SPKI pins, and a
//! SAN allowlist. Pins and allowlists narrow trust; they never replace the chain check.
//!
//! The work a client can make one check cost is bounded: a chain longer than the rule's
//! `max_depth` is refused before path building, exact duplicates among the presented
//! intermediates are dropped, and every signature webpki verifies (certificates and CRLs,
//! for this rule and for the `zone_mismatch` search of the others) goes through a
//! [`SignatureBudget`] that remembers each result for the rest of the check and verifies
//! at most [`Trust::signature_budget`] signatures (`2 × max_depth + 2`). A chain that needs
//! more is `chain_too_long`.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aop_pki::{CertInfo, Sha256Fingerprint, rfc3339};

use crate::view::tlv;
use rustls::crypto::CryptoProvider;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, TrustAnchor, UnixTime};
use time::OffsetDateTime;
use webpki::VerifiedPath;
use webpki::{
    CertRevocationList, EndEntityCert, ExpirationPolicy, KeyUsage, OwnedCertRevocationList,
    RevocationCheckDepth, RevocationOptionsBuilder, UnknownStatusPolicy,
};
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer as _;

use crate::verdict::{Outcome, Reason};
use crate::{Error, Result};
use crate::{constraints, strict};

/// The default maximum number of certificates a client may present (its own and the
/// intermediates above it).
pub const DEFAULT_MAX_DEPTH: usize = 4;

/// The largest `max_depth` a rule may set: webpki builds paths of at most six
/// intermediates above the client's certificate.
const MAX_DEPTH_LIMIT: usize = 7;

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
    /// Allowed client names. Empty: no name check. The certificate passes when one of
    /// its names matches one entry:
    /// - `edge.example.com` (no `:`): a DNS SAN, exactly, case-insensitively; or the CN
    ///   when the certificate has no subjectAltName extension at all and the CN is a DNS
    ///   name (LDH labels, so that DNS name constraints applied to it).
    /// - `spiffe://example.org`: any SPIFFE ID (with a path) of that trust domain;
    ///   `spiffe://example.org/edge/1`: exactly that ID; `spiffe://example.org/edge/*`:
    ///   any ID under `/edge/` (whole segments: `/edge/1`, `/edge/eu/1`, not `/edge` or
    ///   `/edge1`). These match only a certificate with exactly one URI SAN (an
    ///   X.509-SVID) that is a valid SPIFFE ID (lowercase trust domain; no port,
    ///   userinfo, query, fragment, empty, `.` or `..` segment). An entry starting
    ///   `spiffe:` that is none of these is a load error.
    /// - Any other entry with `:` (`https://edge.example/id`): a URI SAN, exactly.
    pub allow_san: Vec<String>,
    /// CRL files (PEM or DER). Certificates from CAs without a loaded CRL are not
    /// considered revoked; an expired CRL fails every certificate it covers (unless
    /// `allow_stale_crls`). Of several CRLs (here and in `crl_ders`) with the same
    /// issuer, authorityKeyIdentifier and issuingDistributionPoint, only the newest
    /// (cRLNumber, then thisUpdate; [`CrlFacts::newer_than`]) is used: an older one would
    /// otherwise hide what the newer one revokes.
    pub crls: Vec<PathBuf>,
    /// CRLs already in memory (aop-origin's fetched ones, checked with
    /// [`Trust::verify_crl`] first), used as those read from `crls` are.
    pub crl_ders: Vec<CertificateRevocationListDer<'static>>,
    /// A CRL past its nextUpdate still revokes what it lists, and no longer fails the
    /// certificates it covers (`crl_stale = "allow"`). Off by default: fail closed.
    pub allow_stale_crls: bool,
    /// `Some(why)`: a CRL this rule depends on is not at hand (never fetched, nothing
    /// cached): every chain that would pass fails `revocation_unknown` with `why`.
    pub crl_unavailable: Option<String>,
    /// The most certificates a client may present, its own included.
    pub max_depth: usize,
    /// Accept a client certificate with no extendedKeyUsage extension at all (RFC 5280
    /// and OpenSSL read that as "any purpose"). Off by default: an origin-pull
    /// certificate should say clientAuth, and a certificate without EKU may be a server
    /// certificate of the same CA. A certificate whose EKU lacks clientAuth is refused
    /// (`bad_eku`) either way.
    pub allow_missing_eku: bool,
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
            crl_ders: Vec::new(),
            allow_stale_crls: false,
            crl_unavailable: None,
            max_depth: DEFAULT_MAX_DEPTH,
            allow_missing_eku: false,
        }
    }

    /// Every certificate of the anchor files, parsed (validity as of `now`), in order:
    /// what a configuration check looks at (expired anchors). A certificate that is not
    /// a CA certificate and not self-signed — a leaf, alone or in a leaf+CA bundle — is
    /// refused with [`Error::LeafAnchor`]; failing that, a CA certificate that can verify
    /// no client (the check the handshake makes of its anchor, on a path of no other
    /// CA: not a CA by RFC 5280, no keyCertSign, an extendedKeyUsage without clientAuth…)
    /// with [`Error::UnusableAnchor`], the first such in order. A self-signed leaf
    /// trusted directly stays allowed. `aop-origin --check`, its start and reload, and
    /// `certtool verify` call this before [`Trust::load`]. (`Trust::load` itself still
    /// accepts such files, as webpki does; its checks refuse the chains.)
    pub fn anchor_certificates(&self, now: OffsetDateTime) -> Result<Vec<(PathBuf, CertInfo)>> {
        let mut out = Vec::new();
        let mut unusable = None;
        for path in &self.anchors {
            let ders = aop_pki::load_certificates(path)?;
            match judge_anchor_file(path, ders.iter(), now) {
                Ok(certs) => out.extend(certs),
                Err(e @ Error::UnusableAnchor { .. }) => {
                    unusable.get_or_insert(e);
                }
                Err(e) => return Err(e),
            }
        }
        match unusable {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }
}

/// The certificates of one anchor file (`ders`, in order), judged as
/// [`TrustSpec::anchor_certificates`] judges them: a leaf first ([`Error::LeafAnchor`]),
/// then the first CA that can verify no client ([`Error::UnusableAnchor`]).
fn judge_anchor_file<'a>(
    path: &Path,
    ders: impl Iterator<Item = &'a CertificateDer<'static>>,
    now: OffsetDateTime,
) -> Result<Vec<(PathBuf, CertInfo)>> {
    let mut out = Vec::new();
    let mut unusable = None;
    for (i, der) in ders.enumerate() {
        let info = CertInfo::from_der(der, now).map_err(|detail| Error::BadAnchor {
            path: path.to_owned(),
            index: i + 1,
            detail,
        })?;
        if !info.is_ca && !info.self_issued {
            return Err(Error::LeafAnchor {
                path: path.to_owned(),
                index: i + 1,
                subject: info.subject,
                sha256: info.sha256,
            });
        }
        if info.is_ca
            && unusable.is_none()
            && let Ok((_, x)) = X509Certificate::from_der(der.as_ref())
            && let Err((reason, detail)) = strict::check_anchor(&x, 0)
        {
            unusable = Some(Error::UnusableAnchor {
                path: path.to_owned(),
                index: i + 1,
                reason,
                detail,
            });
        }
        out.push((path.to_owned(), info));
    }
    match unusable {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// One trust anchor, with what we need to know about it beyond webpki's view.
#[derive(Debug)]
struct Anchor {
    /// The anchor's certificate, for aop's checks of the anchor as the top of a path
    /// (its pathLenConstraint, keyUsage, critical extensions, name constraints).
    der: CertificateDer<'static>,
    /// Which of the spec's anchor files it came from (an index into `anchor_files`).
    file: usize,
    subject: String,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
}

/// A loaded [`TrustSpec`], ready to check chains. Built once per policy load, shared by
/// every handshake; checking does no file I/O.
///
/// The work a client can cause is bounded: a check verifies at most
/// [`Trust::signature_budget`] signatures (`2 × max_depth + 2`, 10 by default; the TLS
/// verifier's `zone_mismatch` search of the other rules spends from the same budget),
/// verifies each (certificate, key) pair once however often path building retries it,
/// and refuses a chain that needs more as `chain_too_long`. A chain of more than
/// `max_depth` certificates is refused before path building; `max_depth` is at most 7
/// (webpki builds paths of at most six intermediates).
#[derive(Debug)]
pub struct Trust {
    /// Results of chain checks that succeeded, keyed by the SHA-256 of the presented
    /// chain. Lives and dies with this `Trust`: a reload (new anchors, CRLs, pins) starts
    /// an empty cache.
    cache: VerifiedCache,
    /// The earliest nextUpdate of the CRLs loaded (unix seconds): no cached result
    /// outlives it.
    crl_until: Option<i64>,
    /// Each CRL loaded: its issuer, the SHA-256 of its DER and its nextUpdate.
    crl_info: Vec<(String, Sha256Fingerprint, Option<OffsetDateTime>)>,
    anchors: Vec<TrustAnchor<'static>>,
    anchor_info: Vec<Anchor>,
    /// The spec's anchor files, in order.
    anchor_files: Vec<PathBuf>,
    /// Subjects of the anchors (DER), sent as CertificateRequest hints.
    pub(crate) subjects: Vec<rustls::DistinguishedName>,
    crls: Vec<CertRevocationList<'static>>,
    pins: Vec<Sha256Fingerprint>,
    spki_pins: Vec<Sha256Fingerprint>,
    /// The allowed names: DNS names (and CNs), URIs, SPIFFE IDs and prefixes.
    allow_san: constraints::AllowSan,
    max_depth: usize,
    allow_missing_eku: bool,
    /// `TrustSpec::allow_stale_crls`.
    allow_stale_crls: bool,
    /// `TrustSpec::crl_unavailable`.
    crl_unavailable: Option<String>,
    earliest_expiry: Option<OffsetDateTime>,
    /// The crypto provider's signature verification algorithms: every signature in a
    /// chain, and the handshake's CertificateVerify, is checked with these.
    algs: rustls::crypto::WebPkiSupportedAlgorithms,
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
pub(crate) fn unix_time(t: OffsetDateTime) -> UnixTime {
    UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        u64::try_from(t.unix_timestamp()).unwrap_or(0),
    ))
}

fn offset_time(t: UnixTime) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(i64::try_from(t.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

impl Trust {
    /// The anchors' certificates (DER), in load order: the trust part of a rule's policy
    /// fingerprint (session tickets).
    pub(crate) fn anchor_ders(&self) -> impl Iterator<Item = &[u8]> {
        self.anchor_info.iter().map(|a| a.der.as_ref())
    }

    /// Read every anchor and CRL file. Errors name the file. Signatures are verified with
    /// the process's default crypto provider ([`aop_pki::default_provider`]); a
    /// [`crate::Policy`] loads its rules' trust with [`crate::PolicySpec::provider`].
    pub fn load(spec: &TrustSpec) -> Result<Self> {
        Self::load_with_provider(spec, &aop_pki::default_provider())
    }

    /// [`Trust::load`], verifying signatures with `provider`'s algorithms (a FIPS build,
    /// or a provider that leaves some algorithms out).
    pub fn load_with_provider(spec: &TrustSpec, provider: &CryptoProvider) -> Result<Self> {
        if spec.anchors.is_empty() {
            return Err(Error::NoAnchors);
        }
        let now = OffsetDateTime::now_utc();
        let mut anchors = Vec::new();
        let mut anchor_info = Vec::new();
        for (file, path) in spec.anchors.iter().enumerate() {
            for (i, der) in aop_pki::load_certificates(path)?.into_iter().enumerate() {
                let bad = |detail: String| Error::BadAnchor {
                    path: path.clone(),
                    index: i + 1,
                    detail,
                };
                let info = CertInfo::from_der(&der, now).map_err(bad)?;
                let mut ta = webpki::anchor_from_trusted_cert(&der)
                    .map_err(|e| bad(format!("{e:?}")))?
                    .to_owned();
                // Name constraints of forms webpki fails on (URI, email, directoryName)
                // are aop's to apply (`constraints::check`, on every path).
                if ta
                    .name_constraints
                    .as_ref()
                    .is_some_and(|nc| !crate::view::webpki_reads_contents(nc.as_ref()))
                {
                    ta.name_constraints = None;
                }
                anchors.push(ta);
                anchor_info.push(Anchor {
                    der: der.clone().into_owned(),
                    file,
                    subject: info.subject,
                    not_before: info.not_before,
                    not_after: info.not_after,
                });
            }
        }
        let mut crls = Vec::new();
        let mut crl_until: Option<i64> = None;
        let mut crl_info = Vec::new();
        // Every CRL read: what ranks it among its issuer's (for those x509-parser reads),
        // its SHA-256, and webpki's form of it.
        let mut read: Vec<(Option<CrlRank>, Sha256Fingerprint, _)> = Vec::new();
        let files = spec
            .crls
            .iter()
            .map(|path| Ok((path.clone(), aop_pki::load_crls(path)?)))
            .collect::<Result<Vec<_>>>()?;
        let held = spec
            .crl_ders
            .iter()
            .map(|der| (PathBuf::from("(fetched CRL)"), vec![der.clone()]));
        for (path, ders) in files.into_iter().chain(held) {
            for der in ders {
                let crl = OwnedCertRevocationList::from_der(&der).map_err(|e| Error::BadCrl {
                    path: path.clone(),
                    detail: format!("{e:?}"),
                })?;
                let rank = x509_parser::revocation_list::CertificateRevocationList::from_der(&der)
                    .ok()
                    .map(|(_, parsed)| {
                        let facts = CrlFacts {
                            issuer: parsed.issuer().to_string(),
                            number: parsed.crl_number().map(|n| n.to_bytes_be()),
                            this_update: parsed.last_update().to_datetime(),
                            next_update: parsed.next_update().map(|t| t.to_datetime()),
                            revoked: parsed.iter_revoked_certificates().count(),
                        };
                        (crl_rank_key(&parsed), facts)
                    });
                read.push((rank, Sha256Fingerprint::of(&der), crl));
            }
        }
        // Of several CRLs of one issuer, key and scope (a local file and a fetched one,
        // two mirrors), only the newest is kept: webpki uses the first CRL that covers a
        // certificate, so an older one listed first would hide a newer revocation.
        let superseded = |i: usize| {
            let Some((key, facts)) = &read[i].0 else {
                return false;
            };
            read.iter().enumerate().any(|(j, (other, _, _))| {
                other.as_ref().is_some_and(|(k, f)| {
                    j != i
                        && k == key
                        && match f.newer_than(facts) {
                            std::cmp::Ordering::Greater => true,
                            std::cmp::Ordering::Equal => j < i,
                            std::cmp::Ordering::Less => false,
                        }
                })
            })
        };
        let keep: Vec<bool> = (0..read.len()).map(|i| !superseded(i)).collect();
        for ((rank, fingerprint, crl), keep) in read.into_iter().zip(keep) {
            if !keep {
                continue;
            }
            if let Some((_, facts)) = rank {
                let next = facts
                    .next_update
                    .map_or(i64::MIN, OffsetDateTime::unix_timestamp);
                crl_until = Some(crl_until.map_or(next, |u| u.min(next)));
                crl_info.push((facts.issuer, fingerprint, facts.next_update));
            }
            crls.push(CertRevocationList::Owned(crl));
        }
        if spec.max_depth == 0 || spec.max_depth > MAX_DEPTH_LIMIT {
            return Err(Error::Config(format!(
                "max_depth must be between 1 and {MAX_DEPTH_LIMIT} (webpki builds paths of at \
                 most {} intermediates), not {}",
                MAX_DEPTH_LIMIT - 1,
                spec.max_depth
            )));
        }
        let subjects = anchors
            .iter()
            .map(|a| rustls::DistinguishedName::in_sequence(a.subject.as_ref()))
            .collect();
        let earliest_expiry = anchor_info.iter().map(|a| a.not_after).min();
        Ok(Self {
            cache: VerifiedCache::default(),
            crl_until,
            crl_info,
            anchors,
            anchor_info,
            anchor_files: spec.anchors.clone(),
            subjects,
            crls,
            pins: spec.pins.clone(),
            spki_pins: spec.spki_pins.clone(),
            allow_san: constraints::AllowSan::parse(&spec.allow_san).map_err(Error::Config)?,
            max_depth: spec.max_depth,
            allow_missing_eku: spec.allow_missing_eku,
            allow_stale_crls: spec.allow_stale_crls,
            crl_unavailable: spec.crl_unavailable.clone(),
            earliest_expiry,
            algs: provider.signature_verification_algorithms,
        })
    }

    /// Each anchor file of the spec, in order, judged from the certificates loaded (not
    /// read again) as [`TrustSpec::anchor_certificates`] judges a file: its certificates
    /// (validity as of `now`), or why it is refused. What `aop-origin`'s configuration
    /// check looks at after loading, so a file replaced meanwhile is checked as loaded.
    pub fn anchor_files(&self, now: OffsetDateTime) -> Vec<Result<Vec<(PathBuf, CertInfo)>>> {
        self.anchor_files
            .iter()
            .enumerate()
            .map(|(file, path)| {
                let ders = self
                    .anchor_info
                    .iter()
                    .filter(|a| a.file == file)
                    .map(|a| &a.der);
                judge_anchor_file(path, ders, now)
            })
            .collect()
    }

    /// When the first of this rule's anchors expires.
    pub fn earliest_anchor_expiry(&self) -> Option<OffsetDateTime> {
        self.earliest_expiry
    }

    /// Each anchor loaded: its subject, the SHA-256 of its DER and its notAfter (for
    /// expiry metrics).
    pub fn anchor_expiries(
        &self,
    ) -> impl Iterator<Item = (&str, Sha256Fingerprint, OffsetDateTime)> {
        self.anchor_info.iter().map(|a| {
            (
                a.subject.as_str(),
                Sha256Fingerprint::of(&a.der),
                a.not_after,
            )
        })
    }

    /// Each CRL loaded: its issuer, the SHA-256 of its DER and its nextUpdate, if it has
    /// one (for expiry metrics).
    pub fn crl_expiries(
        &self,
    ) -> impl Iterator<Item = (&str, Sha256Fingerprint, Option<OffsetDateTime>)> {
        self.crl_info.iter().map(|(i, s, t)| (i.as_str(), *s, *t))
    }

    /// Check a CRL fetched from somewhere this trust does not vouch for (an HTTP
    /// distribution point): it must parse as webpki reads CRLs, name one of this trust's
    /// anchors as its issuer, and carry a valid signature by that anchor's key. Its facts
    /// on success, for the caller to tell a newer CRL from a replayed older one
    /// ([`CrlFacts::newer_than`]). A CRL signed by an intermediate CA (not an anchor here)
    /// cannot be checked before a handshake, and is refused `unknown_issuer`.
    ///
    /// A signed CRL is refused still if it carries an issuingDistributionPoint
    /// (`scoped`): such a CRL covers part of its CA's certificates (CA certificates
    /// only, one distribution point, some reasons), and taken in place of the one that
    /// covers the edges it would leave a revoked edge with no CRL at all. Refused also
    /// (`future`) if its thisUpdate is more than [`CRL_CLOCK_SKEW`] ahead of this clock.
    pub fn verify_crl(&self, der: &[u8]) -> Result<CrlFacts> {
        let refused = |problem, detail: String| Error::CrlRefused { problem, detail };
        let crl = OwnedCertRevocationList::from_der(der)
            .map_err(|e| refused("malformed", format!("not a CRL webpki can use: {e:?}")))?;
        let (_, parsed) = x509_parser::revocation_list::CertificateRevocationList::from_der(der)
            .map_err(|e| refused("malformed", format!("not a CRL: {e}")))?;
        let issuer = CertRevocationList::Owned(crl);
        let issuer = issuer.issuer();
        let (tbs, alg, signature) =
            signed_parts(der).ok_or_else(|| refused("malformed", "not a signed CRL".into()))?;
        let mut named = false;
        for anchor in self.anchors.iter().filter(|a| a.subject.as_ref() == issuer) {
            named = true;
            let Some((key_alg, key)) = spki_parts(anchor.subject_public_key_info.as_ref()) else {
                continue;
            };
            let good = self
                .algs
                .all
                .iter()
                .filter(|a| {
                    a.signature_alg_id().as_ref() == alg
                        && a.public_key_alg_id().as_ref() == key_alg
                })
                .any(|a| a.verify_signature(key, tbs, signature).is_ok());
            if good {
                if parsed.extensions().iter().any(|e| {
                    e.oid == x509_parser::oid_registry::OID_X509_EXT_ISSUER_DISTRIBUTION_POINT
                }) {
                    return Err(refused(
                        "scoped",
                        format!(
                            "issued by {}, but it has an issuingDistributionPoint: a CRL of part \
                             of the CA's certificates (CA certificates only, one distribution \
                             point, some reasons) would replace the one that covers the edges",
                            parsed.issuer()
                        ),
                    ));
                }
                let this_update = parsed.last_update().to_datetime();
                if this_update > OffsetDateTime::now_utc() + CRL_CLOCK_SKEW {
                    return Err(refused(
                        "future",
                        format!(
                            "issued by {}, with a thisUpdate of {this_update} (more than {} \
                             ahead of this clock)",
                            parsed.issuer(),
                            CRL_CLOCK_SKEW
                        ),
                    ));
                }
                return Ok(CrlFacts {
                    issuer: parsed.issuer().to_string(),
                    number: parsed.crl_number().map(|n| n.to_bytes_be()),
                    this_update: parsed.last_update().to_datetime(),
                    next_update: parsed.next_update().map(|t| t.to_datetime()),
                    revoked: parsed.iter_revoked_certificates().count(),
                });
            }
        }
        let issuer = parsed.issuer().to_string();
        Err(if named {
            refused(
                "bad_signature",
                format!("issued by {issuer}, but no trust anchor of that name signed it"),
            )
        } else {
            refused(
                "unknown_issuer",
                format!("issued by {issuer}, which is not a trust anchor of this site"),
            )
        })
    }

    /// The provider's signature verification algorithms this trust checks with.
    pub(crate) fn algs(&self) -> &rustls::crypto::WebPkiSupportedAlgorithms {
        &self.algs
    }

    /// Check a presented chain at time `at`. The same function serves the TLS verifier
    /// and `certtool verify`, so both give the same verdict.
    ///
    /// A chain that passed is remembered (keyed by the SHA-256 of the presented chain,
    /// at most 4,096 of them) until the earliest of: its certificate's, its
    /// intermediates' or its anchor's notAfter, and the loaded CRLs' nextUpdate — so an
    /// edge that presents the same chain on every handshake is not re-verified each time.
    /// Failures are never cached. The handshake signature that proves the client holds
    /// the key is checked by rustls on every handshake regardless.
    ///
    /// A check verifies at most [`Trust::signature_budget`] signatures; a chain that needs
    /// more is `chain_too_long`.
    pub fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        at: OffsetDateTime,
    ) -> Checked {
        let budget = self.budget();
        self.check_within(end_entity, intermediates, unix_time(at), &budget)
    }

    /// A fresh [`SignatureBudget`] of [`Trust::signature_budget`] signatures, spent with
    /// this trust's algorithms.
    pub(crate) fn budget(&self) -> SignatureBudget {
        SignatureBudget::new(self.signature_budget(), self.algs.all)
    }

    /// The most signatures one check of a presented chain verifies: `2 × max_depth + 2`.
    ///
    /// A path of `max_depth` certificates costs one signature per certificate and at most
    /// one per certificate for its issuer's CRL; the two more cover tries against
    /// same-named anchors (a CA re-keyed under its old name, during a rotation). A result
    /// is verified once per check: a path builder's retries of the same certificate
    /// against the same key are free. The handshake's own CertificateVerify signature is
    /// one more, checked by rustls.
    pub fn signature_budget(&self) -> usize {
        2 * self.max_depth + 2
    }

    /// [`Trust::check`], spending signatures from `budget` (the verifier shares one
    /// budget between this rule's check and the `zone_mismatch` search).
    pub(crate) fn check_within(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        at: UnixTime,
        budget: &SignatureBudget,
    ) -> Checked {
        let key = chain_key(end_entity, intermediates);
        let now = i64::try_from(at.as_secs()).unwrap_or(i64::MAX);
        if let Some(hit) = self.cache.get(&key, now) {
            return hit;
        }
        let checked = self.check_uncached(end_entity, intermediates, at, budget);
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
        budget: &SignatureBudget,
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
        let Ok((_, leaf)) = x509_parser::parse_x509_certificate(end_entity) else {
            return Checked::failed(
                Reason::BadEncoding,
                "unparsable certificate".to_owned(),
                client,
            );
        };
        if let Err((reason, detail)) = strict::check_leaf(&leaf, &self.algs) {
            return Checked::failed(reason, detail, client);
        }
        let intermediates = distinct(end_entity, intermediates);
        if let Err((reason, detail)) =
            self.verify_path(end_entity, &leaf, &intermediates, at, info, budget)
        {
            return Checked::failed(reason, detail, client);
        }
        // webpki accepts a leaf without any EKU; an origin-pull certificate must say
        // clientAuth, unless the rule allows a certificate with no EKU extension at all.
        let no_eku = info.extended_key_usage.is_empty();
        let client_auth = info.extended_key_usage.iter().any(|e| e == "clientAuth");
        if !(client_auth || no_eku && self.allow_missing_eku) {
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
        if !self.allow_san.is_empty() && !self.name_allowed(info) {
            return Checked::failed(Reason::NameNotAllowed, None, client);
        }
        if let Some(why) = &self.crl_unavailable {
            return Checked::failed(Reason::RevocationUnknown, why.clone(), client);
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
        budget: &SignatureBudget,
    ) -> bool {
        let presented = distinct(end_entity, intermediates);
        let shown = Shown::new(end_entity, &presented, budget);
        if shown.twins {
            return false;
        }
        let Ok((_, leaf)) = X509Certificate::from_der(end_entity.as_ref()) else {
            return false;
        };
        let shown_leaf = shown.leaf();
        let Ok(ee) = EndEntityCert::try_from(&shown_leaf) else {
            return false;
        };
        let shown_intermediates = shown.intermediates();
        // aop's path checks too: a chain another rule's trust would refuse for a name
        // constraint (say) is not "valid for that rule".
        let aop_checks = |path: &VerifiedPath<'_>| {
            self.check_verified_path(&leaf, path, &shown, &presented, Some(offset_time(at)))
                .map_err(|_| webpki::Error::UnknownIssuer)
        };
        ee.verify_for_usage(
            &budget.algs().refs(),
            &self.anchors,
            &shown_intermediates,
            at,
            KeyUsage::client_auth(),
            None,
            Some(&aop_checks),
        )
        .is_ok()
    }

    fn name_allowed(&self, info: &CertInfo) -> bool {
        self.allow_san.allows(info)
    }

    /// A candidate issuer in the chain whose key the origin cannot use (an RSA key outside
    /// 2048–8192 bits, an EC point off its curve): webpki reports its signatures as wrong,
    /// but the key is the problem.
    fn unusable_issuer_key(
        &self,
        leaf: &X509Certificate<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> Option<strict::Refusal> {
        let parsed: Vec<_> = intermediates
            .iter()
            .filter_map(|c| X509Certificate::from_der(c.as_ref()).ok())
            .map(|(_, x)| x)
            .collect();
        let issuers: Vec<&[u8]> = std::iter::once(leaf.issuer().as_raw())
            .chain(parsed.iter().map(|x| x.issuer().as_raw()))
            .collect();
        let presented = intermediates.iter().map(|c| c.as_ref());
        let anchors = self.anchor_info.iter().map(|a| a.der.as_ref());
        presented.chain(anchors).find_map(|der| {
            let (_, x) = X509Certificate::from_der(der).ok()?;
            if !issuers.contains(&x.subject().as_raw()) {
                return None;
            }
            let who = format!("the issuer {}", aop_pki::rfc4514(x.subject()));
            strict::public_key(&x, &self.algs, &who).err()
        })
    }

    /// aop's checks of a path webpki verified: [`strict::check_path`] and the name
    /// constraints of every CA in it, the anchor's certificate included.
    fn check_verified_path(
        &self,
        leaf: &X509Certificate<'_>,
        path: &VerifiedPath<'_>,
        shown: &Shown<'_>,
        presented: &[CertificateDer<'_>],
        valid_at: Option<OffsetDateTime>,
    ) -> std::result::Result<(), strict::Refusal> {
        let anchor = path.anchor();
        // Every loaded certificate with the anchor's name and key (a root re-issued with
        // the same key): the path stands if one of them passes. Only copies valid at
        // `valid_at` (the ones webpki was given): an expired or not-yet-valid copy must
        // not lift the constraints of the current one.
        let copies: Vec<&CertificateDer<'static>> = self
            .anchors
            .iter()
            .zip(&self.anchor_info)
            .filter(|(t, a)| {
                t.subject.as_ref() == anchor.subject.as_ref()
                    && t.subject_public_key_info.as_ref() == anchor.subject_public_key_info.as_ref()
                    && valid_at.is_none_or(|at| a.not_before <= at && at <= a.not_after)
            })
            .map(|(_, a)| &a.der)
            .collect();
        if copies.is_empty() {
            return Err((
                Reason::Other,
                "the path's trust anchor is not loaded".into(),
            ));
        }
        let ders: Vec<CertificateDer<'_>> =
            path.intermediate_certificates().map(|c| c.der()).collect();
        let mut issuers = Vec::new();
        for der in &ders {
            let Some(original) = shown.original(der.as_ref(), presented) else {
                return Err((
                    Reason::Other,
                    "a path certificate is not a presented one".into(),
                ));
            };
            match X509Certificate::from_der(original) {
                Ok((_, x)) => issuers.push(x),
                Err(e) => return Err((Reason::BadEncoding, format!("an intermediate: {e}"))),
            }
        }
        let mut first_refusal = None;
        for anchor_der in copies {
            let mut path = issuers.clone();
            match X509Certificate::from_der(anchor_der.as_ref()) {
                Ok((_, x)) => path.push(x),
                Err(e) => return Err((Reason::BadEncoding, format!("the trust anchor: {e}"))),
            }
            match strict::check_path(leaf, &path).and_then(|()| constraints::check(leaf, &path)) {
                Ok(()) => return Ok(()),
                Err(refusal) => {
                    first_refusal.get_or_insert(refusal);
                }
            }
        }
        Err(first_refusal.expect("at least one copy was checked"))
    }

    /// webpki path building against the anchors valid at `at`; if that finds no issuer
    /// but an expired (or not yet valid) anchor would have verified the chain, say so.
    fn verify_path(
        &self,
        end_entity: &CertificateDer<'_>,
        leaf: &X509Certificate<'_>,
        intermediates: &[CertificateDer<'_>],
        at: UnixTime,
        info: &CertInfo,
        budget: &SignatureBudget,
    ) -> std::result::Result<(), (Reason, Option<String>)> {
        let counted = budget.algs();
        let algs = counted.refs();
        let shown = Shown::new(end_entity, intermediates, budget);
        if shown.twins {
            return Err((
                Reason::BadEncoding,
                Some("a presented certificate copies another's re-encoding for webpki".into()),
            ));
        }
        let shown_leaf = shown.leaf();
        let shown_intermediates = shown.intermediates();
        let at_dt = offset_time(at);
        let ee = EndEntityCert::try_from(&shown_leaf)
            .map_err(|e| map_webpki_error(&e, info, intermediates, at_dt))?;
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
                    .with_expiration_policy(if self.allow_stale_crls {
                        ExpirationPolicy::Ignore
                    } else {
                        ExpirationPolicy::Enforce
                    })
                    .build()
            })
        };
        // aop's own checks run on every path webpki verifies; a refused path lets webpki
        // try the next. The first refusal is kept: a path that passed all of webpki's
        // checks and failed one of aop's says more than webpki's error for another path.
        let refused: std::sync::Mutex<Option<strict::Refusal>> = std::sync::Mutex::new(None);
        let aop_checks = |path: &VerifiedPath<'_>| -> std::result::Result<(), webpki::Error> {
            self.check_verified_path(leaf, path, &shown, intermediates, Some(at_dt))
                .map_err(|r| {
                    refused
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .get_or_insert(r);
                    webpki::Error::UnknownIssuer
                })
        };
        let result = ee.verify_for_usage(
            &algs,
            &valid,
            &shown_intermediates,
            at,
            KeyUsage::client_auth(),
            revocation,
            Some(&aop_checks),
        );
        let refused = refused
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match result {
            Ok(_) => Ok(()),
            Err(_) if budget.exhausted() => Err(budget.refusal()),
            Err(_) if refused.is_some() => {
                let (reason, detail) = refused.expect("checked");
                Err((reason, Some(detail)))
            }
            Err(webpki::Error::UnknownIssuer) if valid.len() < self.anchors.len() => {
                // Would an anchor outside its validity have verified it?
                let stale: Vec<_> = self
                    .anchors
                    .iter()
                    .zip(&self.anchor_info)
                    .filter(|(_, a)| !(a.not_before <= at_dt && at_dt <= a.not_after))
                    .collect();
                let tas: Vec<_> = stale.iter().map(|(t, _)| (*t).clone()).collect();
                let stale_checks = |path: &VerifiedPath<'_>| {
                    self.check_verified_path(leaf, path, &shown, intermediates, None)
                        .map_err(|_| webpki::Error::UnknownIssuer)
                };
                match ee.verify_for_usage(
                    &algs,
                    &tas,
                    &shown_intermediates,
                    at,
                    KeyUsage::client_auth(),
                    None,
                    Some(&stale_checks),
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
                    Err(_) if budget.exhausted() => Err(budget.refusal()),
                    Err(_) => Err((
                        Reason::UnknownCa,
                        Some(format!("no trusted issuer for {}", info.issuer)),
                    )),
                }
            }
            Err(webpki::Error::InvalidSignatureForPublicKey)
                if let Some((reason, detail)) = self.unusable_issuer_key(leaf, intermediates) =>
            {
                Err((reason, Some(detail)))
            }
            Err(e) => Err(map_webpki_error(&e, info, intermediates, at_dt)),
        }
    }
}

/// The presented chain as webpki is shown it ([`crate::view`]): each certificate, or its
/// view where it has one, with the views' signatures mapped to the originals in `budget`.
struct Shown<'a> {
    leaf: Cow<'a, [u8]>,
    intermediates: Vec<Cow<'a, [u8]>>,
    /// A presented certificate is a copy of another's view (refuse the chain).
    twins: bool,
}

impl<'a> Shown<'a> {
    fn new(
        end_entity: &'a CertificateDer<'a>,
        intermediates: &'a [CertificateDer<'a>],
        budget: &SignatureBudget,
    ) -> Self {
        let show = |der: &'a [u8]| match crate::view::for_webpki(der) {
            Some(view) if budget.add_view(&view) => Cow::Owned(view.der),
            _ => Cow::Borrowed(der),
        };
        let leaf = show(end_entity.as_ref());
        let intermediates: Vec<_> = intermediates.iter().map(|c| show(c.as_ref())).collect();
        // A presented certificate shown as it is whose to-be-signed bytes are a
        // view's could only verify by borrowing that view's original's signature, and it
        // does not carry the original's extensions: it is a forgery of a view.
        let twin = |s: &Cow<'a, [u8]>| {
            matches!(s, Cow::Borrowed(_))
                && crate::view::tbs_of(s).is_some_and(|tbs| budget.is_view_tbs(tbs))
        };
        let twins = twin(&leaf) || intermediates.iter().any(twin);
        Self {
            leaf,
            intermediates,
            twins,
        }
    }

    fn leaf(&self) -> CertificateDer<'_> {
        CertificateDer::from(self.leaf.as_ref())
    }

    fn intermediates(&self) -> Vec<CertificateDer<'_>> {
        self.intermediates
            .iter()
            .map(|c| CertificateDer::from(c.as_ref()))
            .collect()
    }

    /// The presented certificate a certificate of webpki's path stands for.
    /// By identity (webpki's path borrows our buffers), never by content: a certificate
    /// with a view's bytes must not stand for the view's original.
    fn original<'s>(
        &'s self,
        shown: &'s [u8],
        presented: &'s [CertificateDer<'a>],
    ) -> Option<&'s [u8]> {
        self.intermediates
            .iter()
            .zip(presented)
            .find(|(s, _)| std::ptr::eq(s.as_ref(), shown))
            .map(|(_, p)| p.as_ref())
    }
}

/// The presented intermediates without exact copies of each other or of the client's
/// certificate: each copy would be one more candidate issuer for the path builder to try.
fn distinct<'a>(
    end_entity: &CertificateDer<'_>,
    intermediates: &'a [CertificateDer<'a>],
) -> Cow<'a, [CertificateDer<'a>]> {
    let copy = |i: usize| {
        intermediates[i].as_ref() == end_entity.as_ref()
            || intermediates[..i]
                .iter()
                .any(|c| c.as_ref() == intermediates[i].as_ref())
    };
    if !(0..intermediates.len()).any(copy) {
        return Cow::Borrowed(intermediates);
    }
    Cow::Owned(
        (0..intermediates.len())
            .filter(|&i| !copy(i))
            .map(|i| CertificateDer::from(intermediates[i].as_ref()))
            .collect(),
    )
}

/// The signature verifications one check may spend, and what each one found.
///
/// webpki is handed [`SignatureBudget::algs`] in place of the provider's algorithms: each
/// wraps one of them, answers a signature it has already verified in this check from
/// memory (path building retries the same certificate against the same key), and refuses
/// (as an invalid signature) every new one past the limit. webpki then gives up on each
/// remaining path at its first signature, and the check reports `chain_too_long`. The
/// count is exact: it is the number of times an algorithm's `verify_signature` ran.
#[derive(Debug)]
pub(crate) struct SignatureBudget {
    limit: usize,
    /// The provider's algorithms.
    algs: &'static [&'static dyn rustls_pki_types::SignatureVerificationAlgorithm],
    state: std::sync::Mutex<Spent>,
}

#[derive(Debug, Default)]
struct Spent {
    verified: usize,
    refused: bool,
    /// Every verification so far, with its result.
    seen: Vec<Verified>,
    /// The to-be-signed bytes of each certificate webpki was shown a view of
    /// ([`crate::view`]), and the original's: a signature over a view's bytes is
    /// verified over the original's.
    views: Vec<ViewedTbs>,
}

/// A view's to-be-signed bytes, and the original's.
type ViewedTbs = (Box<[u8]>, Box<[u8]>);

/// One signature verified in a check: the algorithm (its index), the inputs, the result.
#[derive(Debug)]
struct Verified {
    alg: usize,
    public_key: Box<[u8]>,
    message: Box<[u8]>,
    signature: Box<[u8]>,
    valid: bool,
}

impl SignatureBudget {
    pub(crate) fn new(
        limit: usize,
        algs: &'static [&'static dyn rustls_pki_types::SignatureVerificationAlgorithm],
    ) -> Self {
        Self {
            limit,
            algs,
            state: std::sync::Mutex::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Spent> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The signatures verified so far (answers from memory not counted).
    #[cfg(test)]
    pub(crate) fn verified(&self) -> usize {
        self.state().verified
    }

    /// Whether a signature was refused for want of budget.
    pub(crate) fn exhausted(&self) -> bool {
        self.state().refused
    }

    /// The verdict for a check that ran out of budget.
    fn refusal(&self) -> (Reason, Option<String>) {
        (
            Reason::ChainTooLong,
            Some(format!(
                "path building stopped at the limit of {} signature checks",
                self.limit
            )),
        )
    }

    /// Verify signatures over `view`'s to-be-signed bytes as over the original's. `false`
    /// (and nothing recorded) when another original already has a view with these bytes:
    /// that certificate must then be shown to webpki as it is.
    fn add_view(&self, view: &crate::view::View) -> bool {
        let mut state = self.state();
        match state.views.iter().find(|(v, _)| **v == *view.tbs) {
            Some((_, original)) => **original == *view.original_tbs,
            None => {
                state.views.push((
                    view.tbs.as_slice().into(),
                    view.original_tbs.as_slice().into(),
                ));
                true
            }
        }
    }

    /// Whether these are a view's to-be-signed bytes.
    fn is_view_tbs(&self, tbs: &[u8]) -> bool {
        self.state().views.iter().any(|(v, _)| **v == *tbs)
    }

    /// The provider's algorithms, each counted against this budget.
    pub(crate) fn algs(&self) -> CountedAlgs<'_> {
        CountedAlgs(
            self.algs
                .iter()
                .enumerate()
                .map(|(index, &inner)| Counted {
                    index,
                    inner,
                    budget: self,
                })
                .collect(),
        )
    }

    fn verify(
        &self,
        alg: usize,
        inner: &dyn rustls_pki_types::SignatureVerificationAlgorithm,
        public_key: &[u8],
        message: &[u8],
        signature: &[u8],
    ) -> std::result::Result<(), rustls_pki_types::InvalidSignature> {
        let mut state = self.state();
        let original = state
            .views
            .iter()
            .find(|(view, _)| **view == *message)
            .map(|(_, original)| original.clone());
        let message = original.as_deref().unwrap_or(message);
        let known = state.seen.iter().find(|v| {
            v.alg == alg
                && *v.public_key == *public_key
                && *v.message == *message
                && *v.signature == *signature
        });
        let valid = match known {
            Some(v) => v.valid,
            None if state.verified >= self.limit => {
                state.refused = true;
                false
            }
            None => {
                state.verified += 1;
                let valid = inner
                    .verify_signature(public_key, message, signature)
                    .is_ok();
                state.seen.push(Verified {
                    alg,
                    public_key: public_key.into(),
                    message: message.into(),
                    signature: signature.into(),
                    valid,
                });
                valid
            }
        };
        if valid {
            Ok(())
        } else {
            Err(rustls_pki_types::InvalidSignature)
        }
    }
}

/// [`SignatureBudget::algs`]: hand `refs()` to webpki.
pub(crate) struct CountedAlgs<'b>(Vec<Counted<'b>>);

impl CountedAlgs<'_> {
    pub(crate) fn refs(&self) -> Vec<&dyn rustls_pki_types::SignatureVerificationAlgorithm> {
        self.0
            .iter()
            .map(|c| c as &dyn rustls_pki_types::SignatureVerificationAlgorithm)
            .collect()
    }
}

/// One of the provider's signature algorithms, counted against a [`SignatureBudget`].
#[derive(Debug)]
struct Counted<'b> {
    index: usize,
    inner: &'static dyn rustls_pki_types::SignatureVerificationAlgorithm,
    budget: &'b SignatureBudget,
}

impl rustls_pki_types::SignatureVerificationAlgorithm for Counted<'_> {
    fn verify_signature(
        &self,
        public_key: &[u8],
        message: &[u8],
        signature: &[u8],
    ) -> std::result::Result<(), rustls_pki_types::InvalidSignature> {
        self.budget
            .verify(self.index, self.inner, public_key, message, signature)
    }

    fn public_key_alg_id(&self) -> rustls_pki_types::AlgorithmIdentifier {
        self.inner.public_key_alg_id()
    }

    fn signature_alg_id(&self) -> rustls_pki_types::AlgorithmIdentifier {
        self.inner.signature_alg_id()
    }

    fn fips_status(&self) -> rustls_pki_types::FipsStatus {
        self.inner.fips_status()
    }

    fn fips(&self) -> bool {
        self.inner.fips()
    }
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
        | E::MaximumSignatureChecksExceeded
        | E::MaximumNameConstraintComparisonsExceeded => {
            (Reason::ChainTooLong, Some(format!("{e:?}")))
        }
        E::NameConstraintViolation | E::UnsupportedNameType => (
            Reason::NameConstraints,
            Some("a name in the chain is outside a CA's name constraints".into()),
        ),
        E::PathLenConstraintViolated => (
            Reason::NotACa,
            Some("an intermediate's pathLenConstraint is exceeded".into()),
        ),
        E::EndEntityUsedAsCa => (
            Reason::NotACa,
            Some("a certificate that is not a CA issued a certificate in the chain".into()),
        ),
        E::UnsupportedCriticalExtension => (
            Reason::UnhandledCriticalExtension,
            Some("a certificate in the chain has a critical extension aop does not process".into()),
        ),
        E::CertDistrusted => (
            Reason::UnknownCa,
            Some("a key in the chain is on webpki's distrust list".into()),
        ),
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
        | E::InvalidSerialNumber
        | E::MalformedNameConstraint
        | E::MalformedDnsIdentifier
        | E::InvalidNetworkMaskConstraint => (Reason::BadEncoding, Some(format!("{e:?}"))),
        E::CrlExpired { .. } => (
            Reason::RevocationUnknown,
            Some("a loaded CRL has expired; refusing until it is renewed".into()),
        ),
        #[allow(deprecated)]
        E::UnknownRevocationStatus
        | E::IssuerNotCrlSigner
        | E::InvalidCrlSignatureForPublicKey
        | E::InvalidCrlNumber
        | E::UnsupportedCrlVersion
        | E::UnsupportedDeltaCrl
        | E::UnsupportedIndirectCrl
        | E::UnsupportedRevocationReason
        | E::UnsupportedRevocationReasonsPartitioning
        | E::UnsupportedCrlIssuingDistributionPoint
        | E::UnsupportedCrlSignatureAlgorithm
        | E::UnsupportedCrlSignatureAlgorithmContext(_)
        | E::UnsupportedCrlSignatureAlgorithmForPublicKey
        | E::UnsupportedCrlSignatureAlgorithmForPublicKeyContext(_) => (
            Reason::RevocationUnknown,
            Some(format!("a loaded CRL cannot be used for this chain: {e:?}")),
        ),
        other => (Reason::Other, Some(format!("{other:?}"))),
    }
}

/// A CRL's [`crl_rank_key`] and facts: what ranks it among its issuer's CRLs.
type CrlRank = (Vec<u8>, CrlFacts);

/// What a CRL is ranked against others by: its issuer's name, its
/// authorityKeyIdentifier and its issuingDistributionPoint (raw DER, each
/// length-prefixed). CRLs of one key share a key only if they cover the same certificates.
fn crl_rank_key(crl: &x509_parser::revocation_list::CertificateRevocationList<'_>) -> Vec<u8> {
    let mut key = Vec::new();
    let mut put = |bytes: &[u8]| {
        key.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
        key.extend_from_slice(bytes);
    };
    put(crl.tbs_cert_list.issuer.as_raw());
    for oid in [
        x509_parser::oid_registry::OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER,
        x509_parser::oid_registry::OID_X509_EXT_ISSUER_DISTRIBUTION_POINT,
    ] {
        match crl.extensions().iter().find(|e| e.oid == oid) {
            Some(e) => put(e.value),
            None => put(b"-"),
        }
    }
    key
}

/// How far ahead of this clock a CRL's thisUpdate may be for [`Trust::verify_crl`].
pub const CRL_CLOCK_SKEW: time::Duration = time::Duration::minutes(5);

/// What [`Trust::verify_crl`] read from a CRL it accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CrlFacts {
    /// Its issuer (RFC 4514).
    pub issuer: String,
    /// Its cRLNumber, big-endian without leading zeros, if it has one.
    pub number: Option<Vec<u8>>,
    /// Its thisUpdate.
    pub this_update: OffsetDateTime,
    /// Its nextUpdate, if it has one.
    pub next_update: Option<OffsetDateTime>,
    /// How many certificates it lists.
    pub revoked: usize,
}

impl CrlFacts {
    /// How this CRL compares with `other` from the same issuer: by cRLNumber when both
    /// have one (RFC 5280 5.2.3: it increases with every CRL the issuer makes), then by
    /// thisUpdate. A CRL that is not `Greater` than the one held is not newer: taking it
    /// would let whoever replays an older CRL un-revoke what the newer one revokes.
    pub fn newer_than(&self, other: &Self) -> std::cmp::Ordering {
        let number = |n: &Option<Vec<u8>>| {
            n.as_ref().map(|n| {
                let n: Vec<u8> = n.iter().copied().skip_while(|b| *b == 0).collect();
                (n.len(), n)
            })
        };
        let by_number = match (number(&self.number), number(&other.number)) {
            (Some(a), Some(b)) => a.cmp(&b),
            _ => std::cmp::Ordering::Equal,
        };
        by_number.then(self.this_update.cmp(&other.this_update))
    }
}

/// A signed CRL's parts: the whole tbsCertList element (what is signed), the contents
/// of its signatureAlgorithm, and the signature's bytes.
fn signed_parts(der: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let (0x30, list, []) = tlv(der)? else {
        return None;
    };
    let (0x30, _, rest) = tlv(list)? else {
        return None;
    };
    let tbs = &list[..list.len() - rest.len()];
    let (0x30, alg, rest) = tlv(rest)? else {
        return None;
    };
    let (0x03, bits, []) = tlv(rest)? else {
        return None;
    };
    let (0, signature) = bits.split_first()? else {
        return None;
    };
    Some((tbs, alg, signature))
}

/// A SubjectPublicKeyInfo's contents (as webpki keeps an anchor's): its algorithm's
/// contents and the key's bytes.
fn spki_parts(spki: &[u8]) -> Option<(&[u8], &[u8])> {
    let (0x30, alg, rest) = tlv(spki)? else {
        return None;
    };
    let (0x03, bits, []) = tlv(rest)? else {
        return None;
    };
    let (0, key) = bits.split_first()? else {
        return None;
    };
    Some((alg, key))
}

/// The most chain results a [`Trust`] remembers. When full it starts over: simple,
/// bounded, and an edge fleet presents far fewer distinct chains than this.
const CACHE_MAX: usize = 4096;

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
pub(crate) mod tests {
    use super::*;
    use aop_pki::{Ca, CaRequest, ClientRequest, KeyType};

    fn setup(dir: &Path, leaf_days: u32) -> (Trust, Vec<CertificateDer<'static>>, OffsetDateTime) {
        let now = OffsetDateTime::now_utc();
        let req = CaRequest {
            days: 365,
            ..CaRequest::new("ca")
        };
        let ca = req.create_in(dir, now).unwrap();
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

    /// A CA named `name` (one CN) with path length `path_len`, written to `dir/sub`;
    /// returns that directory (ca.pem, ca.key).
    pub(crate) fn ca_named(
        dir: &Path,
        sub: &str,
        name: &str,
        path_len: u8,
        now: OffsetDateTime,
    ) -> PathBuf {
        let sub = dir.join(sub);
        std::fs::create_dir_all(&sub).unwrap();
        let req = CaRequest {
            days: 365,
            path_len,
            ..CaRequest::new(name)
        };
        req.create_in(&sub, now).unwrap();
        sub
    }

    /// A client certificate (CN `cn`) issued by the CA in `ca_dir`.
    pub(crate) fn client_of(
        ca_dir: &Path,
        cn: &str,
        now: OffsetDateTime,
    ) -> CertificateDer<'static> {
        Ca::load(ca_dir, now)
            .unwrap()
            .issue_client(
                &ClientRequest {
                    common_name: cn.into(),
                    sans: vec![],
                    days: 30,
                    key_type: KeyType::EcdsaP256,
                },
                now,
            )
            .unwrap()
            .certificate
    }

    /// `n` CAs named `name` (fresh keys, path length `n`, self-signed) in `dir/impostor-*`,
    /// and a client certificate issued by the first: the leaf and the impostors, as a
    /// client would present them.
    pub(crate) fn impostors(
        dir: &Path,
        name: &str,
        n: usize,
        now: OffsetDateTime,
    ) -> Vec<CertificateDer<'static>> {
        let path_len = u8::try_from(n).unwrap();
        let dirs: Vec<_> = (0..n)
            .map(|i| ca_named(dir, &format!("impostor-{i}"), name, path_len, now))
            .collect();
        std::iter::once(client_of(&dirs[0], "impostor-edge", now))
            .chain(dirs.iter().map(|d| {
                aop_pki::load_certificates(&d.join("ca.pem"))
                    .unwrap()
                    .swap_remove(0)
            }))
            .collect()
    }

    /// Three certificates named like the trusted CA make webpki try every one as the issuer
    /// of every other: 16 paths, each ending in a signature check against the anchor. Each
    /// distinct (certificate, key) pair is verified once: four signatures, whatever the order.
    #[test]
    fn a_chain_of_impostors_costs_one_signature_per_certificate() {
        let d = tempfile::tempdir().unwrap();
        let (trust, _, now) = setup(d.path(), 10);
        let chain = impostors(d.path(), "ca", 3, now);
        assert_eq!(chain.len(), DEFAULT_MAX_DEPTH);
        let budget = trust.budget();
        let checked = trust.check_within(&chain[0], &chain[1..], unix_time(now), &budget);
        assert_eq!(checked.outcome, Outcome::Failed(Reason::BadSignature));
        assert_eq!(budget.verified(), 4);
        assert!(!budget.exhausted());
        assert_eq!(trust.signature_budget(), 10);
    }

    /// The bound is enforced: past it, no signature is verified and the verdict is
    /// `chain_too_long`, whatever webpki would have concluded.
    #[test]
    fn past_the_budget_nothing_more_is_verified_and_the_chain_is_too_long() {
        let d = tempfile::tempdir().unwrap();
        let (trust, _, now) = setup(d.path(), 10);
        let chain = impostors(d.path(), "ca", 3, now);
        let budget = SignatureBudget::new(2, trust.algs.all);
        let checked = trust.check_within(&chain[0], &chain[1..], unix_time(now), &budget);
        assert_eq!(checked.outcome, Outcome::Failed(Reason::ChainTooLong));
        assert_eq!(
            checked.detail.as_deref(),
            Some("path building stopped at the limit of 2 signature checks")
        );
        assert_eq!(budget.verified(), 2);
        assert!(budget.exhausted());
    }

    /// A rule whose bundle holds three anchors with one name (a CA re-keyed twice under its
    /// name) makes each impostor cost three signatures: 12 pairs, over the budget of 10.
    /// The check stops at exactly 10. A good certificate from the last of those anchors
    /// still passes, and the cache still serves it without a signature.
    #[test]
    fn same_named_anchors_make_the_impostors_exceed_the_budget_and_good_chains_still_pass() {
        let d = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::now_utc();
        let anchors: Vec<_> = (0..3)
            .map(|i| ca_named(d.path(), &format!("ca-{i}"), "ca", 0, now))
            .collect();
        let trust = Trust::load(&TrustSpec::new(anchors.iter().map(|a| a.join("ca.pem")))).unwrap();
        let chain = impostors(d.path(), "ca", 3, now);
        let budget = trust.budget();
        let checked = trust.check_within(&chain[0], &chain[1..], unix_time(now), &budget);
        assert_eq!(checked.outcome, Outcome::Failed(Reason::ChainTooLong));
        assert_eq!(budget.verified(), trust.signature_budget());

        let good = client_of(&anchors[2], "edge", now);
        let budget = trust.budget();
        let checked = trust.check_within(&good, &[], unix_time(now), &budget);
        assert_eq!(checked.outcome, Outcome::Success);
        assert_eq!(
            budget.verified(),
            3,
            "two wrong anchors, then the right one"
        );
        let again = trust.budget();
        assert!(
            trust
                .check_within(&good, &[], unix_time(now), &again)
                .outcome
                .is_success()
        );
        assert_eq!(again.verified(), 0, "served from the cache");
    }

    #[test]
    fn copies_of_presented_certificates_are_dropped() {
        let a = CertificateDer::from(vec![1u8, 2]);
        let b = CertificateDer::from(vec![3u8]);
        let ee = CertificateDer::from(vec![9u8]);
        let given = [a.clone(), ee.clone(), a.clone(), b.clone(), b.clone()];
        assert_eq!(*distinct(&ee, &given), [a.clone(), b.clone()]);
        let clean = [a, b];
        assert!(matches!(distinct(&ee, &clean), Cow::Borrowed(_)));
    }

    #[test]
    fn max_depth_beyond_what_webpki_builds_is_refused() {
        let d = tempfile::tempdir().unwrap();
        setup(d.path(), 10);
        let mut spec = TrustSpec::new([d.path().join("ca.pem")]);
        spec.max_depth = MAX_DEPTH_LIMIT;
        assert!(Trust::load(&spec).is_ok());
        spec.max_depth = MAX_DEPTH_LIMIT + 1;
        let e = Trust::load(&spec).unwrap_err().to_string();
        assert_eq!(
            e,
            "invalid policy: max_depth must be between 1 and 7 (webpki builds paths of at most 6 intermediates), not 8"
        );
    }

    fn cached(t: &Trust) -> usize {
        t.cache.map.lock().unwrap().len()
    }

    #[test]
    fn a_success_is_remembered_and_reused_within_its_window_only() {
        let d = tempfile::tempdir().unwrap();
        let (trust, chain, now) = setup(d.path(), 10);
        let first = trust.check(&chain[0], &[], now);
        assert_eq!(first.outcome, Outcome::Success);
        assert_eq!(cached(&trust), 1);
        let again = trust.check(&chain[0], &[], now);
        assert!(
            Arc::ptr_eq(
                first.client.as_ref().unwrap(),
                again.client.as_ref().unwrap()
            ),
            "served from the cache"
        );
        // Past the leaf's notAfter the cached SUCCESS must not be served.
        let later = trust.check(&chain[0], &[], now + time::Duration::days(11));
        assert_eq!(later.outcome, Outcome::Failed(Reason::Expired));
    }

    #[test]
    fn failures_are_not_remembered_and_the_cache_is_bounded() {
        let d = tempfile::tempdir().unwrap();
        let (trust, chain, now) = setup(d.path(), 10);
        let early = trust.check(&chain[0], &[], now - time::Duration::days(2));
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
