//! aop's own certificate checks, on top of rustls-webpki's: what RFC 5280 and
//! `openssl verify -purpose sslclient -x509_strict` ask of a client chain and webpki
//! leaves out (it serves the Web PKI). [`crate::trust`] runs [`check_leaf`] before path
//! building and [`check_path`] on every path webpki verifies (a refused path lets webpki
//! try the next one), so `Trust::check` stays the one path for the handshake and for
//! `certtool verify`. docs/verification.md lists every check and every deliberate
//! difference from OpenSSL and RFC 5280.

use aws_lc_rs::signature::{self, ParsedPublicKey, VerificationAlgorithm};
use rustls_pki_types::alg_id;
use x509_parser::asn1_rs::{Any, FromDer as _, Oid, Tag};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{BasicConstraints, KeyUsage, ParsedExtension, X509Extension};
use x509_parser::oid_registry::{
    OID_X509_EXT_BASIC_CONSTRAINTS, OID_X509_EXT_CERTIFICATE_POLICIES,
    OID_X509_EXT_CRL_DISTRIBUTION_POINTS, OID_X509_EXT_EXTENDED_KEY_USAGE, OID_X509_EXT_KEY_USAGE,
    OID_X509_EXT_NAME_CONSTRAINTS, OID_X509_EXT_SUBJECT_ALT_NAME,
};
use x509_parser::public_key::PublicKey;
use x509_parser::x509::X509Version;

use crate::verdict::Reason;

/// A refusal: the reason, and words for a human naming the certificate and the problem.
pub(crate) type Refusal = (Reason, String);

/// The extensions aop acts on (or, for certificatePolicies, may safely ignore: aop runs
/// with initial-policy-set anyPolicy and requires no explicit policy), so a certificate
/// may mark them critical. Any other critical extension (policyConstraints,
/// policyMappings, inhibitAnyPolicy, an unknown OID) is refused: aop cannot honour it.
/// So are a critical subjectKeyIdentifier and authorityKeyIdentifier: RFC 5280 says they
/// MUST NOT be critical, and OpenSSL and webpki refuse them (webpki on the leaf and
/// intermediates; aop says the same of the anchor).
const HANDLED: [Oid<'static>; 7] = [
    OID_X509_EXT_BASIC_CONSTRAINTS,
    OID_X509_EXT_KEY_USAGE,
    OID_X509_EXT_EXTENDED_KEY_USAGE,
    OID_X509_EXT_SUBJECT_ALT_NAME,
    OID_X509_EXT_NAME_CONSTRAINTS,
    OID_X509_EXT_CERTIFICATE_POLICIES,
    OID_X509_EXT_CRL_DISTRIBUTION_POINTS,
];

/// The smallest and largest RSA modulus (bits) the origin verifies with: the range of
/// the provider's RSA algorithms (aws-lc-rs: 2048 to 8192).
const RSA_BITS: std::ops::RangeInclusive<usize> = 2048..=8192;

/// What the client's certificate alone must satisfy, before any path is built: not a
/// CA (`not_a_leaf`, as webpki would say later), names (an empty SAN extension; an
/// empty subject without a critical SAN; an empty issuer), its critical extensions, its
/// keyUsage (digitalSignature; no keyCertSign), and a public key the origin can use (a
/// known algorithm from `algs`, a well-formed key: an EC point on its curve, RSA of
/// 2048 to 8192 bits) — the handshake's CertificateVerify would fail on anything else,
/// so the offline verdict must too.
pub(crate) fn check_leaf(
    leaf: &X509Certificate<'_>,
    algs: &rustls::crypto::WebPkiSupportedAlgorithms,
) -> Result<(), Refusal> {
    let who = Who::Client.of(leaf);
    // A CA presented as the client certificate is that before anything else (webpki
    // refuses it too; saying it first keeps its keyUsage from being the reason).
    let bc = basic_constraints(leaf, &who)?;
    if bc.is_some_and(|(_, bc)| bc.ca) {
        return Err((
            Reason::NotALeaf,
            format!(
                "{who} is a CA (basicConstraints cA): a CA certificate was presented as the client certificate"
            ),
        ));
    }
    // RFC 5280 4.2.1.9: pathLenConstraint only with cA (OpenSSL -x509_strict: error 80).
    if let Some(len) = bc.and_then(|(_, bc)| bc.path_len_constraint) {
        return Err((
            Reason::BadEncoding,
            format!(
                "{who}: basicConstraints has pathLenConstraint {len} without cA (RFC 5280 4.2.1.9)"
            ),
        ));
    }
    names(leaf, &who, true)?;
    serial(leaf, &who)?;
    critical_extensions(leaf, &who)?;
    if let Some(ku) = key_usage(leaf, &who)? {
        // RFC 5280 4.1.2.6: a CRL issuer (cRLSign) must name itself in the subject
        // (OpenSSL -x509_strict: error 84).
        if ku.crl_sign() && leaf.subject().iter_rdn().next().is_none() {
            return Err((
                Reason::BadEncoding,
                format!("{who}: empty subject with keyUsage cRLSign (RFC 5280 4.1.2.6)"),
            ));
        }
        if !ku.digital_signature() {
            return Err((
                Reason::BadKeyUsage,
                format!(
                    "{who}: keyUsage [{ku}] lacks digitalSignature, which client authentication needs"
                ),
            ));
        }
        if ku.key_cert_sign() {
            return Err((
                Reason::BadKeyUsage,
                format!("{who}: keyUsage asserts keyCertSign but the certificate is not a CA"),
            ));
        }
    }
    public_key(leaf, algs, &who)
}

/// What a path webpki verified must also satisfy: each issuer above the client's
/// certificate (`issuers`: the presented intermediates webpki used, the client's issuer
/// first, then the trust anchor's certificate last) is a CA with a critical
/// basicConstraints, a pathLenConstraint (the anchor's too) the path keeps, a keyUsage
/// with keyCertSign, no unhandled critical extension, and non-empty names. A v1 anchor
/// (no extensions at all) counts as a CA: an anchor is a name and a key (RFC 5280
/// 6.1.1).
///
/// When the anchor is the client's certificate itself (a self-signed certificate
/// trusted directly), `issuers` is that one certificate and only its extensions are
/// checked, not its CA-ness.
pub(crate) fn check_path(
    leaf: &X509Certificate<'_>,
    issuers: &[X509Certificate<'_>],
) -> Result<(), Refusal> {
    if let [anchor] = issuers
        && anchor.as_raw() == leaf.as_raw()
    {
        return critical_extensions(anchor, &Who::Anchor.of(anchor));
    }
    let last = issuers.len().saturating_sub(1);
    for (i, ca) in issuers.iter().enumerate() {
        // CAs between this one and the client's certificate; self-issued ones (a
        // re-keyed CA's link certificates) do not count (RFC 5280 6.1.4 (l)).
        let below = issuers[..i].iter().filter(|c| !self_issued(c)).count();
        if i == last {
            check_anchor(ca, below)?;
        } else {
            issuer(ca, &Who::Intermediate.of(ca), below, false)?;
        }
    }
    Ok(())
}

/// What a CA certificate in a trust file must be to vouch for any client, with `below`
/// CAs under it on the path (0 when judged alone, as `TrustSpec::anchor_certificates`
/// does): the anchor's part of [`check_path`] — a CA (or a v1 root), keyUsage with
/// keyCertSign, no unhandled critical extension, non-empty names, a DER serial, and an
/// extendedKeyUsage, if any, that allows clientAuth.
pub(crate) fn check_anchor(ca: &X509Certificate<'_>, below: usize) -> Result<(), Refusal> {
    issuer(ca, &Who::Anchor.of(ca), below, true)
}

/// An issuer on a path (`anchor`: the trust anchor's certificate, at the top).
fn issuer(ca: &X509Certificate<'_>, who: &str, below: usize, anchor: bool) -> Result<(), Refusal> {
    // OpenSSL's V1_ROOT: v1 and self-issued; a v1 intermediate placed in the trust
    // file says nothing of being a CA.
    let v1_anchor =
        anchor && ca.version() == X509Version::V1 && ca.extensions().is_empty() && self_issued(ca);
    if !v1_anchor {
        is_a_ca(ca, who, below)?;
        match key_usage(ca, who)? {
            None => {
                return Err((
                    Reason::BadKeyUsage,
                    format!("{who} has no keyUsage extension; a CA needs keyCertSign"),
                ));
            }
            Some(ku) if !ku.key_cert_sign() => {
                return Err((
                    Reason::BadKeyUsage,
                    format!("{who}: keyUsage [{ku}] lacks keyCertSign"),
                ));
            }
            Some(_) => {}
        }
    }
    critical_extensions(ca, who)?;
    names(ca, who, false)?;
    serial(ca, who)?;
    // webpki reads the extendedKeyUsage of the intermediates, not the anchor's: an
    // anchor whose EKU says it is for other purposes does not vouch for clients
    // (OpenSSL: unsuitable certificate purpose).
    if anchor {
        anchor_purpose(ca, who)?;
    }
    Ok(())
}

/// A serial number is a DER INTEGER: no redundant leading 00 or FF octet (OpenSSL's
/// decoder refuses such a certificate; webpki and x509-parser read it).
fn serial(x: &X509Certificate<'_>, who: &str) -> Result<(), Refusal> {
    match x.raw_serial() {
        [0x00, next, ..] if next & 0x80 == 0 => {}
        [0xff, next, ..] if next & 0x80 != 0 => {}
        [] => {}
        _ => return Ok(()),
    }
    Err((
        Reason::BadEncoding,
        format!("{who}: the serial number is not a minimal DER INTEGER"),
    ))
}

/// The anchor's extendedKeyUsage, when it has one, allows clientAuth (or any purpose).
fn anchor_purpose(x: &X509Certificate<'_>, who: &str) -> Result<(), Refusal> {
    let eku = x
        .extended_key_usage()
        .map_err(|e| (Reason::BadEncoding, format!("{who}: extendedKeyUsage: {e}")))?;
    match eku {
        Some(eku) if !(eku.value.client_auth || eku.value.any) => Err((
            Reason::BadEku,
            format!("{who}: its extendedKeyUsage does not include clientAuth"),
        )),
        _ => Ok(()),
    }
}

/// Which certificate a refusal is about, for the words of its detail.
#[derive(Clone, Copy)]
enum Who {
    Client,
    Intermediate,
    Anchor,
}

impl Who {
    /// The role and the certificate's subject (RFC 4514, as the verdict's subject), e.g.
    /// `the trust anchor CN=ca`.
    fn of(self, x: &X509Certificate<'_>) -> String {
        let role = match self {
            Self::Client => "the client certificate",
            Self::Intermediate => "the intermediate",
            Self::Anchor => "the trust anchor",
        };
        if x.subject().iter_rdn().next().is_none() {
            format!("{role} (empty subject)")
        } else {
            format!("{role} {}", aop_pki::rfc4514(x.subject()))
        }
    }
}

fn self_issued(x: &X509Certificate<'_>) -> bool {
    x.subject().as_raw() == x.issuer().as_raw()
}

/// Rules 1–3 for an issuer: a basicConstraints extension, critical, with cA, and a
/// pathLenConstraint of at least `below` (the CAs under it on this path).
fn is_a_ca(ca: &X509Certificate<'_>, who: &str, below: usize) -> Result<(), Refusal> {
    let not_a_ca = |why: String| Err((Reason::NotACa, format!("{who} {why}")));
    match basic_constraints(ca, who)? {
        None => not_a_ca("has no basicConstraints extension".into()),
        Some((_, bc)) if !bc.ca => not_a_ca("has basicConstraints without cA".into()),
        Some((false, _)) => not_a_ca(
            "has a basicConstraints extension that is not critical (RFC 5280 4.2.1.9)".into(),
        ),
        Some((true, bc)) => match bc.path_len_constraint {
            Some(len) if usize::try_from(len).is_ok_and(|len| len < below) => not_a_ca(format!(
                "allows {len} CA(s) below it (pathLenConstraint) and this path has {below}"
            )),
            _ => Ok(()),
        },
    }
}

/// Names that identify nothing: a SAN extension with no names, an empty issuer, and an
/// empty subject — for a client certificate only when a critical SAN does not take its
/// place (RFC 5280 4.2.1.6), for a CA always (it names the certificates it issues).
fn names(x: &X509Certificate<'_>, who: &str, leaf: bool) -> Result<(), Refusal> {
    let bad = |why: &str| Err((Reason::BadEncoding, format!("{who}: {why}")));
    let san = match unique(x, &OID_X509_EXT_SUBJECT_ALT_NAME, who)? {
        None => None,
        Some(ext) => match ext.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) if san.general_names.is_empty() => {
                return bad("the subjectAltName extension holds no names");
            }
            ParsedExtension::SubjectAlternativeName(_) => Some(ext.critical),
            _ => return bad("malformed subjectAltName extension"),
        },
    };
    if x.subject().iter_rdn().next().is_none() {
        if !leaf {
            return bad("empty subject name on a CA");
        }
        match san {
            None => return bad("empty subject and no subjectAltName extension"),
            Some(false) => {
                return bad("empty subject with a subjectAltName that is not critical");
            }
            Some(true) => {}
        }
    }
    if x.issuer().iter_rdn().next().is_none() {
        return bad("empty issuer name (RFC 5280 4.1.2.4)");
    }
    Ok(())
}

/// A critical extension aop does not handle is refused: its meaning would be ignored.
fn critical_extensions(x: &X509Certificate<'_>, who: &str) -> Result<(), Refusal> {
    match x
        .extensions()
        .iter()
        .find(|e| e.critical && !HANDLED.contains(&e.oid))
    {
        Some(e) => Err((
            Reason::UnhandledCriticalExtension,
            format!(
                "{who} has a critical extension aop does not handle: {}{}",
                e.oid.to_id_string(),
                match e.oid.to_id_string().as_str() {
                    "2.5.29.33" => " (policyMappings)",
                    "2.5.29.36" => " (policyConstraints)",
                    "2.5.29.54" => " (inhibitAnyPolicy)",
                    _ => "",
                }
            ),
        )),
        None => Ok(()),
    }
}

/// The one extension with this OID, if any; a repeated one is malformed.
fn unique<'a, 'b>(
    x: &'a X509Certificate<'b>,
    oid: &Oid<'_>,
    who: &str,
) -> Result<Option<&'a X509Extension<'b>>, Refusal> {
    let mut found = x.extensions().iter().filter(|e| e.oid == *oid);
    let first = found.next();
    if found.next().is_some() {
        return Err((
            Reason::BadEncoding,
            format!("{who} repeats the extension {}", oid.to_id_string()),
        ));
    }
    Ok(first)
}

/// basicConstraints and whether it is critical; malformed or repeated → `bad_encoding`.
fn basic_constraints<'a>(
    x: &'a X509Certificate<'_>,
    who: &str,
) -> Result<Option<(bool, &'a BasicConstraints)>, Refusal> {
    match unique(x, &OID_X509_EXT_BASIC_CONSTRAINTS, who)? {
        None => Ok(None),
        Some(ext) => match ext.parsed_extension() {
            ParsedExtension::BasicConstraints(bc) => Ok(Some((ext.critical, bc))),
            _ => Err((
                Reason::BadEncoding,
                format!("{who}: malformed basicConstraints extension"),
            )),
        },
    }
}

/// keyUsage; malformed or repeated → `bad_encoding`.
fn key_usage<'a>(x: &'a X509Certificate<'_>, who: &str) -> Result<Option<&'a KeyUsage>, Refusal> {
    match unique(x, &OID_X509_EXT_KEY_USAGE, who)? {
        None => Ok(None),
        Some(ext) => match ext.parsed_extension() {
            ParsedExtension::KeyUsage(ku) => Ok(Some(ku)),
            _ => Err((
                Reason::BadEncoding,
                format!("{who}: malformed keyUsage extension"),
            )),
        },
    }
}

/// The client's public key is one the origin can verify a CertificateVerify with: its
/// algorithm (OID and parameters, exactly) is one of the provider's, an RSA modulus is
/// within [`RSA_BITS`], and the key parses (aws-lc-rs: an EC point on its curve, a
/// well-formed RSA key, 32 bytes of Ed25519). Also asked of an issuer's key when webpki
/// finds its signatures wrong, to say why.
pub(crate) fn public_key(
    leaf: &X509Certificate<'_>,
    algs: &rustls::crypto::WebPkiSupportedAlgorithms,
    who: &str,
) -> Result<(), Refusal> {
    let spki = leaf.public_key();
    let bad = |why: String| Err((Reason::BadEncoding, format!("{who}: {why}")));
    // The AlgorithmIdentifier's contents (OID and parameters), as webpki and the
    // provider name algorithms.
    let Some(id) = Any::from_der(spki.raw)
        .ok()
        .and_then(|(_, spki)| Any::from_der(spki.data).ok())
        .map(|(_, id)| id.data)
    else {
        return bad("malformed subjectPublicKeyInfo".into());
    };
    if !algs
        .all
        .iter()
        .any(|a| a.public_key_alg_id().as_ref() == id)
    {
        let params = match &spki.algorithm.parameters {
            None => String::new(),
            Some(p) => match (p.tag(), p.as_oid()) {
                (Tag::Oid, Ok(oid)) => format!(" with parameters {}", oid.to_id_string()),
                (Tag::Sequence, _) => " with explicit (SEQUENCE) parameters".into(),
                (Tag::Null, _) => " with NULL parameters".into(),
                (tag, _) => format!(" with parameters of tag {}", tag.0),
            },
        };
        return Err((
            Reason::UnsupportedAlgorithm,
            format!(
                "{who}: public key algorithm {}{params} is not one the origin verifies with",
                spki.algorithm.algorithm.to_id_string()
            ),
        ));
    }
    if spki.subject_public_key.unused_bits != 0 {
        return bad("the public key's BIT STRING has unused bits".into());
    }
    let key = spki.subject_public_key.data.as_ref();
    let verifier: &'static dyn VerificationAlgorithm = if id == alg_id::RSA_ENCRYPTION.as_ref() {
        let Ok(PublicKey::RSA(rsa)) = spki.parsed() else {
            return bad("malformed RSA public key".into());
        };
        let bits = bit_length(rsa.modulus);
        if !RSA_BITS.contains(&bits) {
            return Err((
                Reason::UnsupportedAlgorithm,
                format!(
                    "{who}: an RSA key of {bits} bits; the origin verifies {} to {} bits",
                    RSA_BITS.start(),
                    RSA_BITS.end()
                ),
            ));
        }
        &signature::RSA_PKCS1_2048_8192_SHA256
    } else if id == alg_id::ECDSA_P256.as_ref() {
        &signature::ECDSA_P256_SHA256_ASN1
    } else if id == alg_id::ECDSA_P384.as_ref() {
        &signature::ECDSA_P384_SHA384_ASN1
    } else if id == alg_id::ECDSA_P521.as_ref() {
        &signature::ECDSA_P521_SHA512_ASN1
    } else if id == alg_id::ED25519.as_ref() {
        // aws-lc-rs checks only the length; a y with no x on the curve never verifies.
        if !key.try_into().is_ok_and(ed25519_point_decodes) {
            return bad("the public key does not parse (not an Ed25519 point)".into());
        }
        &signature::ED25519
    } else if id == alg_id::ML_DSA_44.as_ref() {
        &signature::ML_DSA_44
    } else if id == alg_id::ML_DSA_65.as_ref() {
        &signature::ML_DSA_65
    } else if id == alg_id::ML_DSA_87.as_ref() {
        &signature::ML_DSA_87
    } else {
        // A provider's algorithm aws-lc-rs does not name: that provider parses the key
        // at CertificateVerify; there is nothing more to check here.
        return Ok(());
    };
    match ParsedPublicKey::new(verifier, key) {
        Ok(_) => Ok(()),
        Err(e) => bad(format!("the public key does not parse ({e})")),
    }
}

/// Whether 32 bytes decode to an edwards25519 point as aws-lc's verifier decodes them
/// (RFC 8032 5.1.3 step 2-3: x^2 = (y^2 - 1) / (d y^2 + 1) has a square root; y is
/// taken mod p, as aws-lc does).
fn ed25519_point_decodes(key: &[u8; 32]) -> bool {
    use num_bigint::BigUint;
    let p = (BigUint::from(1u8) << 255u32) - 19u8;
    let inv = |x: &BigUint| x.modpow(&(&p - 2u8), &p);
    let mut y = *key;
    y[31] &= 0x7f;
    let y = BigUint::from_bytes_le(&y) % &p;
    let d = (&p - 121_665u32) * inv(&BigUint::from(121_666u32)) % &p;
    let y2 = &y * &y % &p;
    let u = (&y2 + &p - 1u8) % &p;
    let v = (&d * &y2 + 1u8) % &p;
    let x2 = u * inv(&v) % &p;
    x2.bits() == 0 || x2.modpow(&((&p - 1u8) >> 1u32), &p) == BigUint::from(1u8)
}

/// The bit length of a big-endian unsigned integer (leading zero bytes allowed).
fn bit_length(n: &[u8]) -> usize {
    let n = &n[n.iter().take_while(|b| **b == 0).count()..];
    match n.first() {
        None => 0,
        Some(b) => n.len() * 8 - b.leading_zeros() as usize,
    }
}

#[cfg(test)]
mod tests {
    //! Each check with the certificate that breaks it and one that keeps it, judged
    //! through [`Trust::check`] (so trust.rs's wiring is exercised too), except where
    //! webpki refuses a path before aop's checks see it: those call [`check_path`]
    //! directly. The certificates are DER built here and signed with aws-lc-rs keys:
    //! rcgen cannot write most of them (a v1 root, a non-critical basicConstraints, an
    //! unknown key algorithm, an EC point off its curve).

    use super::*;
    use crate::trust::{Checked, Trust, TrustSpec};
    use crate::verdict::Outcome;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{
        ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P384_SHA384_ASN1_SIGNING, EcdsaKeyPair,
        Ed25519KeyPair, KeyPair as _,
    };
    use rustls_pki_types::CertificateDer;
    use time::{Duration, OffsetDateTime};

    use crate::der::{self, bit_string, oid, tlv, uint, utc_time};

    /// [`der::seq`] of slices, so that a literal list may mix `&Vec<u8>` and `&[u8; N]`.
    fn seq(parts: &[&[u8]]) -> Vec<u8> {
        der::seq(parts)
    }

    /// A name of one CN, or the empty name for "".
    fn name(cn: &str) -> Vec<u8> {
        if cn.is_empty() {
            return seq(&[]);
        }
        let atv = seq(&[&oid("2.5.4.3"), &tlv(0x0c, cn.as_bytes())]);
        seq(&[&tlv(0x31, &atv)])
    }

    fn ext(id: &str, critical: bool, value: &[u8]) -> (String, Vec<u8>) {
        let crit: &[u8] = if critical { &[0x01, 0x01, 0xff] } else { &[] };
        (id.to_owned(), seq(&[&oid(id), crit, &tlv(0x04, value)]))
    }

    const BC: &str = "2.5.29.19";
    const KU: &str = "2.5.29.15";
    const SAN: &str = "2.5.29.17";

    fn basic_constraints(critical: bool, ca: bool, path_len: Option<u8>) -> (String, Vec<u8>) {
        let ca: &[u8] = if ca { &[0x01, 0x01, 0xff] } else { &[] };
        let len = path_len.map(|l| uint(&[l])).unwrap_or_default();
        ext(BC, critical, &seq(&[ca, &len]))
    }

    // keyUsage bits (RFC 5280 4.2.1.3), first bit = the byte's top bit.
    const DIGITAL_SIGNATURE: u8 = 0x80;
    const NON_REPUDIATION: u8 = 0x40;
    const KEY_ENCIPHERMENT: u8 = 0x20;
    const KEY_AGREEMENT: u8 = 0x08;
    const KEY_CERT_SIGN: u8 = 0x04;
    const CRL_SIGN: u8 = 0x02;

    fn key_usage(bits: u8) -> (String, Vec<u8>) {
        let unused = bits.trailing_zeros() as u8;
        ext(KU, true, &tlv(0x03, &[unused, bits]))
    }

    fn san_dns(names: &[&str], critical: bool) -> (String, Vec<u8>) {
        let names: Vec<Vec<u8>> = names.iter().map(|n| tlv(0x82, n.as_bytes())).collect();
        let refs: Vec<&[u8]> = names.iter().map(Vec::as_slice).collect();
        ext(SAN, critical, &seq(&refs))
    }

    fn client_auth() -> (String, Vec<u8>) {
        ext("2.5.29.37", false, &seq(&[&oid("1.3.6.1.5.5.7.3.2")]))
    }

    /// A P-256 key that signs certificates.
    struct Key(EcdsaKeyPair);

    impl Key {
        fn new() -> Self {
            Self(EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING).unwrap())
        }

        fn spki(&self) -> Vec<u8> {
            ec_spki("1.2.840.10045.3.1.7", self.0.public_key().as_ref())
        }
    }

    fn ec_spki(curve: &str, point: &[u8]) -> Vec<u8> {
        seq(&[
            &seq(&[&oid("1.2.840.10045.2.1"), &oid(curve)]),
            &bit_string(point),
        ])
    }

    fn rsa_spki(bits: usize) -> Vec<u8> {
        let mut n = vec![0u8; bits / 8];
        aws_lc_rs::rand::fill(&mut n).unwrap();
        n[0] |= 0x80;
        *n.last_mut().unwrap() |= 1;
        let key = seq(&[&uint(&n), &uint(&[0x01, 0x00, 0x01])]);
        seq(&[
            &seq(&[&oid("1.2.840.113549.1.1.1"), &[0x05, 0x00]]),
            &bit_string(&key),
        ])
    }

    /// What a certificate says, before it is signed.
    #[derive(Clone)]
    struct Tbs {
        v1: bool,
        issuer: Vec<u8>,
        subject: Vec<u8>,
        spki: Vec<u8>,
        exts: Vec<(String, Vec<u8>)>,
    }

    impl Tbs {
        /// A CA as aop-pki makes one: critical basicConstraints cA (with `path_len`),
        /// critical keyUsage keyCertSign and cRLSign.
        fn ca(subject: &str, issuer: &str, key: &Key, path_len: Option<u8>) -> Self {
            Self {
                v1: false,
                issuer: name(issuer),
                subject: name(subject),
                spki: key.spki(),
                exts: vec![
                    basic_constraints(true, true, path_len),
                    key_usage(KEY_CERT_SIGN | CRL_SIGN),
                ],
            }
        }

        /// A client certificate as aop-pki makes one: critical keyUsage
        /// digitalSignature, EKU clientAuth, a DNS SAN.
        fn leaf(subject: &str, issuer: &str) -> Self {
            Self {
                v1: false,
                issuer: name(issuer),
                subject: name(subject),
                spki: Key::new().spki(),
                exts: vec![
                    key_usage(DIGITAL_SIGNATURE),
                    client_auth(),
                    san_dns(&["edge.example"], false),
                ],
            }
        }

        /// This extension instead of the one with its OID (or added).
        fn with(mut self, (id, der): (String, Vec<u8>)) -> Self {
            match self.exts.iter_mut().find(|(i, _)| *i == id) {
                Some(e) => e.1 = der,
                None => self.exts.push((id, der)),
            }
            self
        }

        fn without(mut self, id: &str) -> Self {
            self.exts.retain(|(i, _)| i != id);
            self
        }

        fn spki(mut self, spki: Vec<u8>) -> Self {
            self.spki = spki;
            self
        }

        fn sign(&self, by: &Key) -> CertificateDer<'static> {
            let now = OffsetDateTime::now_utc();
            self.sign_at(by, now - Duration::hours(1), now + Duration::days(30))
        }

        /// Signed by `by`, valid from `not_before` to `not_after`.
        fn sign_at(
            &self,
            by: &Key,
            not_before: OffsetDateTime,
            not_after: OffsetDateTime,
        ) -> CertificateDer<'static> {
            let mut serial = [0u8; 8];
            aws_lc_rs::rand::fill(&mut serial).unwrap();
            serial[0] = serial[0] & 0x7f | 0x01;
            let sig_alg = seq(&[&oid("1.2.840.10045.4.3.2")]);
            let version = if self.v1 {
                Vec::new()
            } else {
                tlv(0xa0, &uint(&[2]))
            };
            let exts = if self.exts.is_empty() {
                Vec::new()
            } else {
                let all: Vec<&[u8]> = self.exts.iter().map(|(_, d)| d.as_slice()).collect();
                tlv(0xa3, &seq(&all))
            };
            let tbs = seq(&[
                &version,
                &uint(&serial),
                &sig_alg,
                &self.issuer,
                &seq(&[&utc_time(not_before), &utc_time(not_after)]),
                &self.subject,
                &self.spki,
                &exts,
            ]);
            let sig = by.0.sign(&SystemRandom::new(), &tbs).unwrap();
            CertificateDer::from(seq(&[&tbs, &sig_alg, &bit_string(sig.as_ref())]))
        }
    }

    /// The verdict on `chain` (client certificate first) of a rule trusting `anchors`.
    fn judge(anchors: &[&CertificateDer<'_>], chain: &[CertificateDer<'_>]) -> Checked {
        let dir = tempfile::tempdir().unwrap();
        let pem: String = anchors
            .iter()
            .map(|a| aop_pki::pem_encode("CERTIFICATE", a))
            .collect();
        let path = dir.path().join("anchors.pem");
        std::fs::write(&path, pem).unwrap();
        let trust = Trust::load(&TrustSpec::new([path])).unwrap();
        trust.check(&chain[0], &chain[1..], OffsetDateTime::now_utc())
    }

    #[track_caller]
    fn passes(c: &Checked) {
        assert_eq!(c.outcome, Outcome::Success, "{:?}", c.detail);
    }

    #[track_caller]
    fn refused(c: &Checked, reason: Reason, words: &str) {
        assert_eq!(c.outcome, Outcome::Failed(reason), "{:?}", c.detail);
        let detail = c.detail.as_deref().unwrap_or_default();
        assert!(detail.contains(words), "{detail:?} lacks {words:?}");
    }

    /// A root and a client certificate it issued, from `leaf` (named with issuer "root").
    fn under_root(leaf: Tbs) -> Checked {
        let k = Keys::new();
        let root = k.root(None).sign(&k.root);
        judge(&[&root], &[leaf.sign(&k.root)])
    }

    /// The keys of a root (CN=root) and of an intermediate (CN=inter) under it.
    struct Keys {
        root: Key,
        inter: Key,
    }

    impl Keys {
        fn new() -> Self {
            Self {
                root: Key::new(),
                inter: Key::new(),
            }
        }

        fn root(&self, path_len: Option<u8>) -> Tbs {
            Tbs::ca("root", "root", &self.root, path_len)
        }

        fn inter(&self, path_len: Option<u8>) -> Tbs {
            Tbs::ca("inter", "root", &self.inter, path_len)
        }

        /// root → intermediate → client, the root and intermediate as given.
        fn judge(&self, root: Tbs, inter: Tbs) -> Checked {
            let root = root.sign(&self.root);
            let inter = inter.sign(&self.root);
            let leaf = Tbs::leaf("edge", "inter").sign(&self.inter);
            judge(&[&root], &[leaf, inter])
        }
    }

    fn parsed<'a>(der: &'a CertificateDer<'_>) -> X509Certificate<'a> {
        X509Certificate::from_der(der).unwrap().1
    }

    /// A check that refuses aop's own certificates is a bug: certtool's CAs and client
    /// certificates, of each key type, pass every check.
    #[test]
    fn aop_pki_certificates_pass_every_check() {
        use aop_pki::{CaRequest, ClientRequest, KeyType};
        let d = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::now_utc();
        let algs = aop_pki::default_provider().signature_verification_algorithms;
        // RSA-4096 keys take seconds to make; RSA-2048 takes the same code path.
        for key_type in KeyType::ALL.into_iter().filter(|k| *k != KeyType::Rsa4096) {
            let dir = d.path().join(format!("{key_type:?}"));
            let ca = CaRequest {
                key_type,
                ..CaRequest::new("aop CA")
            }
            .create_in(&dir, now)
            .unwrap();
            let leaf = ca
                .issue_client(
                    &ClientRequest {
                        common_name: "edge".into(),
                        sans: vec!["edge.example".into()],
                        days: 30,
                        key_type,
                    },
                    now,
                )
                .unwrap()
                .certificate;
            let trust = Trust::load(&TrustSpec::new([dir.join("ca.pem")])).unwrap();
            passes(&trust.check(&leaf, &[], now));
            let ca_der = aop_pki::load_certificates(&dir.join("ca.pem"))
                .unwrap()
                .swap_remove(0);
            assert_eq!(check_leaf(&parsed(&leaf), &algs), Ok(()), "{key_type:?}");
            assert_eq!(
                check_path(&parsed(&leaf), &[parsed(&ca_der)]),
                Ok(()),
                "{key_type:?}"
            );
        }
    }

    #[test]
    fn the_certificates_built_here_pass_when_nothing_is_wrong() {
        passes(&under_root(Tbs::leaf("edge", "root")));
        let k = Keys::new();
        passes(&k.judge(k.root(Some(1)), k.inter(Some(0))));
    }

    // The client certificate alone.

    #[test]
    fn an_empty_san_extension_is_bad_encoding() {
        let c = under_root(Tbs::leaf("edge", "root").with(san_dns(&[], false)));
        refused(
            &c,
            Reason::BadEncoding,
            "the client certificate CN=edge: the subjectAltName extension holds no names",
        );
    }

    #[test]
    fn an_empty_subject_needs_a_critical_san() {
        let c = under_root(Tbs::leaf("", "root").without(SAN));
        refused(
            &c,
            Reason::BadEncoding,
            "the client certificate (empty subject): empty subject and no subjectAltName",
        );
        let c = under_root(Tbs::leaf("", "root"));
        refused(
            &c,
            Reason::BadEncoding,
            "empty subject with a subjectAltName that is not critical",
        );
        passes(&under_root(
            Tbs::leaf("", "root").with(san_dns(&["edge.example"], true)),
        ));
    }

    #[test]
    fn an_empty_issuer_is_bad_encoding() {
        let key = Key::new();
        let root = Tbs::ca("", "", &key, None).sign(&key);
        let leaf = Tbs::leaf("edge", "").sign(&key);
        refused(
            &judge(&[&root], &[leaf]),
            Reason::BadEncoding,
            "the client certificate CN=edge: empty issuer name",
        );
    }

    #[test]
    fn an_unknown_critical_extension_is_refused_and_a_non_critical_one_is_not() {
        let c =
            under_root(Tbs::leaf("edge", "root").with(ext("1.3.6.1.4.1.99999.1", true, &[5, 0])));
        refused(
            &c,
            Reason::UnhandledCriticalExtension,
            "the client certificate CN=edge has a critical extension aop does not handle: 1.3.6.1.4.1.99999.1",
        );
        // policyConstraints: aop does not process policies, so it cannot honour it.
        let c = under_root(Tbs::leaf("edge", "root").with(ext(
            "2.5.29.36",
            true,
            &seq(&[&tlv(0x80, &[0])]),
        )));
        refused(
            &c,
            Reason::UnhandledCriticalExtension,
            "2.5.29.36 (policyConstraints)",
        );
        passes(&under_root(Tbs::leaf("edge", "root").with(ext(
            "1.3.6.1.4.1.99999.1",
            false,
            &[5, 0],
        ))));
        // Handled extensions may be critical (keyUsage is, in every certificate here).
        passes(&under_root(
            Tbs::leaf("edge", "root").with(san_dns(&["edge.example"], true)),
        ));
    }

    #[test]
    fn a_client_key_usage_without_digital_signature_is_refused() {
        for (bits, shown) in [
            (KEY_ENCIPHERMENT, "Key Encipherment"),
            (NON_REPUDIATION, "Non Repudiation"),
            // OpenSSL's sslclient purpose accepts keyAgreement; TLS client auth signs.
            (KEY_AGREEMENT, "Key Agreement"),
        ] {
            let c = under_root(Tbs::leaf("edge", "root").with(key_usage(bits)));
            refused(
                &c,
                Reason::BadKeyUsage,
                &format!(
                    "the client certificate CN=edge: keyUsage [{shown}] lacks digitalSignature"
                ),
            );
        }
        passes(&under_root(
            Tbs::leaf("edge", "root").with(key_usage(DIGITAL_SIGNATURE | KEY_ENCIPHERMENT)),
        ));
        passes(&under_root(Tbs::leaf("edge", "root").without(KU)));
    }

    #[test]
    fn key_cert_sign_on_a_client_certificate_is_refused() {
        let c = under_root(
            Tbs::leaf("edge", "root").with(key_usage(DIGITAL_SIGNATURE | KEY_CERT_SIGN)),
        );
        refused(
            &c,
            Reason::BadKeyUsage,
            "keyUsage asserts keyCertSign but the certificate is not a CA",
        );
        let c = under_root(
            Tbs::leaf("edge", "root")
                .with(key_usage(DIGITAL_SIGNATURE | KEY_CERT_SIGN))
                .with(basic_constraints(true, false, None)),
        );
        refused(&c, Reason::BadKeyUsage, "not a CA");
        // With cA the key usage is consistent, but a CA is no client certificate: that
        // is the reason, whatever its keyUsage (a CA's keyCertSign and cRLSign lack
        // digitalSignature, which would otherwise be said first).
        for ku in [DIGITAL_SIGNATURE | KEY_CERT_SIGN, KEY_CERT_SIGN | CRL_SIGN] {
            let c = under_root(
                Tbs::leaf("edge", "root")
                    .with(key_usage(ku))
                    .with(basic_constraints(true, true, None)),
            );
            refused(
                &c,
                Reason::NotALeaf,
                "the client certificate CN=edge is a CA (basicConstraints cA)",
            );
        }
    }

    #[test]
    fn a_key_algorithm_the_provider_does_not_verify_with_is_unsupported() {
        // An OID no one knows, RSA-PSS keys, secp256k1, and P-256 with explicit
        // parameters instead of the named curve.
        let unknown = seq(&[&seq(&[&oid("1.3.6.1.4.1.99999.7")]), &bit_string(&[1; 32])]);
        let c = under_root(Tbs::leaf("edge", "root").spki(unknown));
        refused(
            &c,
            Reason::UnsupportedAlgorithm,
            "the client certificate CN=edge: public key algorithm 1.3.6.1.4.1.99999.7 is not one the origin verifies with",
        );
        let pss = seq(&[
            &seq(&[&oid("1.2.840.113549.1.1.10")]),
            &bit_string(&[1; 32]),
        ]);
        let c = under_root(Tbs::leaf("edge", "root").spki(pss));
        refused(&c, Reason::UnsupportedAlgorithm, "1.2.840.113549.1.1.10");
        let point = Key::new().0.public_key().as_ref().to_vec();
        let k1 = ec_spki("1.3.132.0.10", &point);
        let c = under_root(Tbs::leaf("edge", "root").spki(k1));
        refused(
            &c,
            Reason::UnsupportedAlgorithm,
            "1.2.840.10045.2.1 with parameters 1.3.132.0.10",
        );
        let explicit = seq(&[
            &seq(&[&oid("1.2.840.10045.2.1"), &seq(&[&uint(&[1])])]),
            &bit_string(&point),
        ]);
        let c = under_root(Tbs::leaf("edge", "root").spki(explicit));
        refused(
            &c,
            Reason::UnsupportedAlgorithm,
            "1.2.840.10045.2.1 with explicit (SEQUENCE) parameters",
        );
    }

    #[test]
    fn a_key_that_does_not_parse_is_bad_encoding() {
        // The P-256 point with its y coordinate changed: off the curve.
        let mut point = Key::new().0.public_key().as_ref().to_vec();
        *point.last_mut().unwrap() ^= 1;
        let c = under_root(Tbs::leaf("edge", "root").spki(ec_spki("1.2.840.10045.3.1.7", &point)));
        refused(
            &c,
            Reason::BadEncoding,
            "the client certificate CN=edge: the public key does not parse",
        );
        // An Ed25519 key of 31 bytes.
        let short = seq(&[&seq(&[&oid("1.3.101.112")]), &bit_string(&[7; 31])]);
        let c = under_root(Tbs::leaf("edge", "root").spki(short));
        refused(&c, Reason::BadEncoding, "the public key does not parse");
        // An RSA key that is not a SEQUENCE of two INTEGERs.
        let garbled = seq(&[
            &seq(&[&oid("1.2.840.113549.1.1.1"), &[0x05, 0x00]]),
            &bit_string(&[0x30, 0x03, 0x02, 0x01, 0x01]),
        ]);
        let c = under_root(Tbs::leaf("edge", "root").spki(garbled));
        refused(&c, Reason::BadEncoding, "malformed RSA public key");
    }

    #[test]
    fn every_key_the_provider_verifies_with_passes() {
        let p384 = EcdsaKeyPair::generate(&ECDSA_P384_SHA384_ASN1_SIGNING).unwrap();
        let p384 = ec_spki("1.3.132.0.34", p384.public_key().as_ref());
        passes(&under_root(Tbs::leaf("edge", "root").spki(p384)));
        let ed = Ed25519KeyPair::generate().unwrap();
        let ed = seq(&[
            &seq(&[&oid("1.3.101.112")]),
            &bit_string(ed.public_key().as_ref()),
        ]);
        passes(&under_root(Tbs::leaf("edge", "root").spki(ed)));
        for bits in [2048, 4096, 8192] {
            passes(&under_root(Tbs::leaf("edge", "root").spki(rsa_spki(bits))));
        }
    }

    #[test]
    fn rsa_outside_2048_to_8192_bits_is_unsupported() {
        let c = under_root(Tbs::leaf("edge", "root").spki(rsa_spki(1024)));
        refused(
            &c,
            Reason::UnsupportedAlgorithm,
            "the client certificate CN=edge: an RSA key of 1024 bits; the origin verifies 2048 to 8192 bits",
        );
        let c = under_root(Tbs::leaf("edge", "root").spki(rsa_spki(2040)));
        refused(&c, Reason::UnsupportedAlgorithm, "an RSA key of 2040 bits");
        let c = under_root(Tbs::leaf("edge", "root").spki(rsa_spki(8200)));
        refused(&c, Reason::UnsupportedAlgorithm, "an RSA key of 8200 bits");
    }

    // Each issuer on a verified path.

    #[test]
    fn an_anchor_that_is_not_a_ca_verifies_nothing() {
        let key = Key::new();
        let leaf = Tbs::leaf("edge", "root").sign(&key);
        let no_bc = Tbs::ca("root", "root", &key, None).without(BC).sign(&key);
        refused(
            &judge(&[&no_bc], std::slice::from_ref(&leaf)),
            Reason::NotACa,
            "the trust anchor CN=root has no basicConstraints extension",
        );
        let not_ca = Tbs::ca("root", "root", &key, None)
            .with(basic_constraints(true, false, None))
            .sign(&key);
        refused(
            &judge(&[&not_ca], std::slice::from_ref(&leaf)),
            Reason::NotACa,
            "the trust anchor CN=root has basicConstraints without cA",
        );
    }

    /// `check_anchor` (what `TrustSpec::anchor_certificates` asks of a CA anchor, with
    /// no CA below it) is the anchor's part of `check_path`: a root and a v1 root pass; a
    /// root without keyCertSign, with an EKU lacking clientAuth, or with a
    /// basicConstraints that is not critical is refused, with the verdict's reason.
    #[test]
    fn check_anchor_judges_an_anchor_alone_as_a_path_would() {
        let k = Keys::new();
        let judge = |t: Tbs| check_anchor(&parsed(&t.sign(&k.root)), 0).map_err(|(r, _)| r);
        assert_eq!(judge(k.root(Some(0))), Ok(()));
        assert_eq!(judge(k.root(None).with(client_auth())), Ok(()));
        let mut v1 = k.root(None);
        v1.v1 = true;
        v1.exts.clear();
        assert_eq!(judge(v1), Ok(()));
        // digitalSignature only.
        assert_eq!(
            judge(k.root(None).with(key_usage(0x80))),
            Err(Reason::BadKeyUsage)
        );
        let server_auth = ext("2.5.29.37", false, &seq(&[&oid("1.3.6.1.5.5.7.3.1")]));
        assert_eq!(judge(k.root(None).with(server_auth)), Err(Reason::BadEku));
        assert_eq!(
            judge(k.root(None).with(basic_constraints(false, true, None))),
            Err(Reason::NotACa)
        );
    }

    #[test]
    fn a_v1_root_is_a_ca_and_a_v1_intermediate_is_refused() {
        let k = Keys::new();
        let mut v1 = k.root(None);
        v1.v1 = true;
        v1.exts.clear();
        passes(&judge(
            &[&v1.sign(&k.root)],
            &[Tbs::leaf("edge", "root").sign(&k.root)],
        ));
        let mut v1 = k.inter(None);
        v1.v1 = true;
        v1.exts.clear();
        let c = k.judge(k.root(None), v1);
        assert_eq!(
            c.outcome,
            Outcome::Failed(Reason::BadEncoding),
            "{:?}",
            c.detail
        );
        // A v3 root without extensions is no v1 root: it says nothing of being a CA.
        let mut bare = k.root(None);
        bare.exts.clear();
        refused(
            &judge(
                &[&bare.sign(&k.root)],
                &[Tbs::leaf("edge", "root").sign(&k.root)],
            ),
            Reason::NotACa,
            "has no basicConstraints",
        );
    }

    #[test]
    fn basic_constraints_must_be_critical_on_every_ca() {
        let k = Keys::new();
        let c = k.judge(
            k.root(None).with(basic_constraints(false, true, None)),
            k.inter(None),
        );
        refused(
            &c,
            Reason::NotACa,
            "the trust anchor CN=root has a basicConstraints extension that is not critical",
        );
        let c = k.judge(
            k.root(None),
            k.inter(None).with(basic_constraints(false, true, None)),
        );
        refused(
            &c,
            Reason::NotACa,
            "the intermediate CN=inter has a basicConstraints extension that is not critical",
        );
    }

    #[test]
    fn the_anchors_path_length_is_kept() {
        let k = Keys::new();
        let c = k.judge(k.root(Some(0)), k.inter(None));
        refused(
            &c,
            Reason::NotACa,
            "the trust anchor CN=root allows 0 CA(s) below it (pathLenConstraint) and this path has 1",
        );
        passes(&k.judge(k.root(Some(1)), k.inter(None)));
        // Directly under a pathLen-0 root is fine.
        let root = k.root(Some(0)).sign(&k.root);
        passes(&judge(&[&root], &[Tbs::leaf("edge", "root").sign(&k.root)]));
    }

    /// A self-issued intermediate (the root's name, a new key: a re-keyed CA's link
    /// certificate) does not count against pathLenConstraint (RFC 5280 6.1.4 (l)).
    #[test]
    fn a_self_issued_intermediate_does_not_count_against_path_length() {
        let k = Keys::new();
        let root = k.root(Some(0)).sign(&k.root);
        let link = Tbs::ca("root", "root", &k.inter, Some(0)).sign(&k.root);
        let leaf = Tbs::leaf("edge", "root").sign(&k.inter);
        passes(&judge(&[&root], &[leaf, link]));
    }

    /// webpki refuses an intermediate's own pathLenConstraint, cA=false or missing
    /// basicConstraints and unknown critical extensions before aop sees the path;
    /// check_path refuses them too, for a path that reaches it.
    #[test]
    fn check_path_refuses_what_webpki_refuses_first_in_intermediates() {
        let (k, b_key) = (Keys::new(), Key::new());
        let root = k.root(None).sign(&k.root);
        let a = Tbs::ca("a", "root", &k.inter, Some(0)).sign(&k.root);
        let b = Tbs::ca("b", "a", &b_key, None).sign(&k.inter);
        let leaf = Tbs::leaf("edge", "b").sign(&b_key);
        let path = |a: &CertificateDer<'_>| {
            check_path(&parsed(&leaf), &[parsed(&b), parsed(a), parsed(&root)])
        };
        assert_eq!(
            path(&a),
            Err((
                Reason::NotACa,
                "the intermediate CN=a allows 0 CA(s) below it (pathLenConstraint) and this path has 1"
                    .into()
            ))
        );
        let a1 = Tbs::ca("a", "root", &k.inter, Some(1)).sign(&k.root);
        assert_eq!(path(&a1), Ok(()));
        let no_bc = Tbs::ca("a", "root", &k.inter, None)
            .without(BC)
            .sign(&k.root);
        assert_eq!(path(&no_bc).unwrap_err().0, Reason::NotACa);
        let not_ca = Tbs::ca("a", "root", &k.inter, None)
            .with(basic_constraints(true, false, None))
            .sign(&k.root);
        assert_eq!(path(&not_ca).unwrap_err().0, Reason::NotACa);
        let critical = Tbs::ca("a", "root", &k.inter, None)
            .with(ext("2.5.29.54", true, &uint(&[0])))
            .sign(&k.root);
        assert_eq!(
            path(&critical),
            Err((
                Reason::UnhandledCriticalExtension,
                "the intermediate CN=a has a critical extension aop does not handle: 2.5.29.54 (inhibitAnyPolicy)"
                    .into()
            ))
        );
    }

    #[test]
    fn a_ca_needs_key_usage_with_key_cert_sign() {
        let k = Keys::new();
        let c = k.judge(
            k.root(None),
            k.inter(None).with(key_usage(DIGITAL_SIGNATURE | CRL_SIGN)),
        );
        refused(
            &c,
            Reason::BadKeyUsage,
            "the intermediate CN=inter: keyUsage [Digital Signature, CRL Sign] lacks keyCertSign",
        );
        let c = k.judge(k.root(None), k.inter(None).without(KU));
        refused(
            &c,
            Reason::BadKeyUsage,
            "the intermediate CN=inter has no keyUsage extension; a CA needs keyCertSign",
        );
        let c = k.judge(k.root(None).without(KU), k.inter(None));
        refused(
            &c,
            Reason::BadKeyUsage,
            "the trust anchor CN=root has no keyUsage",
        );
        passes(&k.judge(
            k.root(None).with(key_usage(KEY_CERT_SIGN)),
            k.inter(None).with(key_usage(KEY_CERT_SIGN)),
        ));
    }

    #[test]
    fn an_anchor_with_an_unknown_critical_extension_is_not_used() {
        let k = Keys::new();
        let c = k.judge(
            k.root(None).with(ext("2.5.29.33", true, &seq(&[]))),
            k.inter(None),
        );
        refused(
            &c,
            Reason::UnhandledCriticalExtension,
            "the trust anchor CN=root has a critical extension aop does not handle: 2.5.29.33 (policyMappings)",
        );
        passes(&k.judge(
            k.root(None).with(ext("2.5.29.33", false, &seq(&[]))),
            k.inter(None),
        ));
    }

    #[test]
    fn a_ca_with_empty_names_is_bad_encoding() {
        let k = Keys::new();
        // The intermediate's issuer is the root's (empty) subject.
        let c = k.judge(
            Tbs::ca("", "", &k.root, None),
            Tbs::ca("inter", "", &k.inter, None),
        );
        refused(
            &c,
            Reason::BadEncoding,
            "the intermediate CN=inter: empty issuer name",
        );
        let c = k.judge(k.root(None), k.inter(None).with(san_dns(&[], false)));
        refused(
            &c,
            Reason::BadEncoding,
            "the intermediate CN=inter: the subjectAltName extension holds no names",
        );
        passes(&k.judge(
            k.root(None),
            k.inter(None).with(san_dns(&["ca.example"], false)),
        ));
    }

    /// A self-signed client certificate trusted directly is its own anchor: no
    /// basicConstraints, no keyCertSign, and it passes; only its critical extensions
    /// are checked (check_leaf has, already).
    #[test]
    fn a_self_signed_client_certificate_trusted_directly_is_not_held_to_ca_rules() {
        let key = Key::new();
        let leaf = Tbs::leaf("edge", "edge").spki(key.spki()).sign(&key);
        passes(&judge(&[&leaf], std::slice::from_ref(&leaf)));
        let odd = Tbs::leaf("edge", "edge")
            .spki(key.spki())
            .with(ext("1.3.6.1.4.1.99999.1", true, &[5, 0]))
            .sign(&key);
        assert_eq!(
            check_path(&parsed(&odd), &[parsed(&odd)]).unwrap_err().0,
            Reason::UnhandledCriticalExtension
        );
    }

    /// Details name a certificate by its subject in RFC 4514, as the verdict's
    /// `subject` field does.
    #[test]
    fn details_name_the_certificate_as_the_verdict_does() {
        let rdn = |id: &str, v: &str| tlv(0x31, &seq(&[&oid(id), &tlv(0x0c, v.as_bytes())]));
        let mut t = Tbs::leaf("edge", "root");
        t.subject = seq(&[&rdn("2.5.4.10", "Edge, Inc."), &rdn("2.5.4.3", "edge")]);
        let der = t.sign(&Key::new());
        assert_eq!(
            Who::Client.of(&parsed(&der)),
            r"the client certificate CN=edge,O=Edge\, Inc."
        );
        t.subject = name("");
        let der = t.sign(&Key::new());
        assert_eq!(
            Who::Anchor.of(&parsed(&der)),
            "the trust anchor (empty subject)"
        );
    }

    #[test]
    fn bit_length_ignores_leading_zeros() {
        assert_eq!(bit_length(&[]), 0);
        assert_eq!(bit_length(&[0, 0]), 0);
        assert_eq!(bit_length(&[0, 0x80, 0]), 16);
        assert_eq!(bit_length(&[0x01, 0xff]), 9);
    }

    /// What webpki refuses in an intermediate before aop's checks see the path lands on
    /// the reason check_path would give (trust.rs maps webpki's errors).
    #[test]
    fn webpki_refusals_in_intermediates_land_on_the_same_reasons() {
        let k = Keys::new();
        let root = || k.root(None);
        let inter = || k.inter(None);
        let outcome = |inter: Tbs| k.judge(root(), inter).outcome;
        assert_eq!(
            outcome(inter().without(BC)),
            Outcome::Failed(Reason::NotACa)
        );
        assert_eq!(
            outcome(inter().with(basic_constraints(true, false, None))),
            Outcome::Failed(Reason::NotACa)
        );
        assert_eq!(
            outcome(inter().with(ext("1.3.6.1.4.1.99999.1", true, &[5, 0]))),
            Outcome::Failed(Reason::UnhandledCriticalExtension)
        );
        let b_key = Key::new();
        let a = Tbs::ca("a", "root", &k.inter, Some(0)).sign(&k.root);
        let b = Tbs::ca("b", "a", &b_key, None).sign(&k.inter);
        let leaf = Tbs::leaf("edge", "b").sign(&b_key);
        assert_eq!(
            judge(&[&root().sign(&k.root)], &[leaf, b, a]).outcome,
            Outcome::Failed(Reason::NotACa)
        );
    }

    /// certificatePolicies is handled (aop runs with anyPolicy and requires none): a
    /// critical one passes, on the client certificate and on a CA.
    #[test]
    fn a_critical_certificate_policies_passes() {
        let any_policy = || ext("2.5.29.32", true, &seq(&[&seq(&[&oid("2.5.29.32.0")])]));
        passes(&under_root(Tbs::leaf("edge", "root").with(any_policy())));
        let k = Keys::new();
        passes(&k.judge(
            k.root(None).with(any_policy()),
            k.inter(None).with(any_policy()),
        ));
    }

    mod review;
}
