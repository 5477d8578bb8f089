//! webpki's view of a certificate: the certificate without the parts webpki refuses but
//! aop processes itself, so that webpki's path building, signatures, validity, EKU and
//! CRL checks still run on everything else.
//!
//! webpki fails every URI, email (rfc822Name) and directoryName name constraint, refuses
//! a critical certificatePolicies extension, and cannot represent a notBefore before
//! 1970. aop handles each itself ([`crate::constraints`], [`crate::strict`]), so the
//! certificate webpki is shown:
//!
//! - has no nameConstraints extension when that extension holds a form other than
//!   dNSName and iPAddress (aop's [`crate::constraints::check`] applies it, every form;
//!   where webpki does see a nameConstraints extension, a path must pass both);
//! - has no certificatePolicies extension when it is critical (aop accepts policies
//!   without processing them: initial-policy-set anyPolicy, no explicit policy required);
//! - has a notBefore of 1970-01-01T00:00:00Z when the real one is earlier (the same
//!   answer for every time webpki is asked about).
//!
//! Nothing else changes, and the result is checked: it must parse, and its serial,
//! issuer, subject, public key, notAfter and every remaining extension must equal the
//! original's, or webpki is shown the original. Signatures are never verified over the
//! view: [`crate::trust::SignatureBudget`] swaps a view's to-be-signed bytes for the
//! original's before any algorithm runs, so the issuer's signature still covers exactly
//! the bytes it signed.

use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer as _;

/// id-ce-nameConstraints.
const NAME_CONSTRAINTS: &[u8] = &[0x55, 0x1d, 0x1e];
/// id-ce-certificatePolicies.
const CERTIFICATE_POLICIES: &[u8] = &[0x55, 0x1d, 0x20];
/// 1970-01-01T00:00:00Z as a DER UTCTime.
const EPOCH_UTCTIME: &[u8] = b"\x17\x0d700101000000Z";

/// A certificate as webpki is shown it, and the to-be-signed bytes it stands for.
#[derive(Debug)]
pub(crate) struct View {
    /// The view: a whole certificate, same signature algorithm and signature.
    pub(crate) der: Vec<u8>,
    /// The view's tbsCertificate (what webpki hands the signature algorithm).
    pub(crate) tbs: Vec<u8>,
    /// The original's tbsCertificate (what the issuer signed).
    pub(crate) original_tbs: Vec<u8>,
}

/// The view of `der` webpki should judge, or `None` when it can be shown as it is (or
/// cannot be rewritten safely: then webpki judges the original and refuses what it
/// refuses).
pub(crate) fn for_webpki(der: &[u8]) -> Option<View> {
    let (rest, cert) = X509Certificate::from_der(der).ok()?;
    if !rest.is_empty() {
        return None;
    }
    let early = cert.validity().not_before.timestamp() < 0;
    let drop_ext = |oid: &[u8], critical: bool, value: &[u8]| -> bool {
        (oid == NAME_CONSTRAINTS && !webpki_reads(value))
            || (oid == CERTIFICATE_POLICIES && critical)
    };
    let dropping = cert
        .extensions()
        .iter()
        .any(|e| drop_ext(e.oid.as_bytes(), e.critical, e.value));
    if !early && !dropping {
        return None;
    }
    // webpki's DER checks must not be lost to the re-encoding. The headers
    // the view re-encodes must already be minimal (re-encoding the original unchanged
    // gives it back byte for byte), and no extension may appear twice (webpki refuses a
    // duplicate it sees; it must not be hidden by dropping both copies).
    if rewrite(der, false, &|_, _, _| false)?.der != der {
        return None;
    }
    let mut oids: Vec<&[u8]> = cert.extensions().iter().map(|e| e.oid.as_bytes()).collect();
    oids.sort_unstable();
    if oids.windows(2).any(|w| w[0] == w[1]) {
        return None;
    }
    let view = rewrite(der, early, &drop_ext)?;
    same_but_for_the_changes(&cert, &view.der, early).then_some(view)
}

/// Whether webpki processes every subtree of this nameConstraints value: only dNSName
/// ([2]) and iPAddress ([7]) are.
fn webpki_reads(value: &[u8]) -> bool {
    // NameConstraints ::= SEQUENCE { permittedSubtrees [0] OPTIONAL, excludedSubtrees [1] OPTIONAL }
    // GeneralSubtrees ::= SEQUENCE OF GeneralSubtree; GeneralSubtree ::= SEQUENCE { base GeneralName, … }
    let Some((0x30, body, [])) = tlv(value) else {
        return false;
    };
    let mut subtrees = body;
    while !subtrees.is_empty() {
        let Some((0xa0 | 0xa1, mut list, rest)) = tlv(subtrees) else {
            return false;
        };
        subtrees = rest;
        while !list.is_empty() {
            let Some((0x30, subtree, rest)) = tlv(list) else {
                return false;
            };
            list = rest;
            match tlv(subtree) {
                Some((0x82 | 0x87, _, _)) => {}
                _ => return false,
            }
        }
    }
    true
}

/// [`webpki_reads`] for the contents of a NameConstraints SEQUENCE (what a webpki
/// `TrustAnchor` keeps).
pub(crate) fn webpki_reads_contents(contents: &[u8]) -> bool {
    webpki_reads(&encode(0x30, contents))
}

/// The tbsCertificate (header included) of a certificate, as the view's walker finds it.
pub(crate) fn tbs_of(der: &[u8]) -> Option<&[u8]> {
    let (0x30, cert, _) = tlv(der)? else {
        return None;
    };
    let (0x30, _, after_tbs) = tlv(cert)? else {
        return None;
    };
    Some(&cert[..cert.len() - after_tbs.len()])
}

/// Which extensions a view leaves out: `(oid, critical, value) -> bool`.
type DropExt<'a> = dyn Fn(&[u8], bool, &[u8]) -> bool + 'a;

/// One DER element: (tag, contents, what follows). Single-byte tags, definite lengths in
/// at most four bytes, minimal encodings not required (x509-parser already read this
/// certificate; here we only need to find the element again). Also reads a CRL's and a
/// key's outer structure for `trust`'s signature check, which webpki parses again.
pub(crate) fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    if tag & 0x1f == 0x1f {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// Encode one DER element.
pub(crate) fn encode(tag: u8, contents: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(contents.len() + 6);
    out.push(tag);
    let len = contents.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(contents);
    out
}

/// The certificate with its notBefore moved to 1970 (when `early`) and the extensions
/// `drop_ext(oid, critical, value)` picks removed.
fn rewrite(der: &[u8], early: bool, drop_ext: &DropExt<'_>) -> Option<View> {
    let (0x30, cert, []) = tlv(der)? else {
        return None;
    };
    let (0x30, tbs_body, after_tbs) = tlv(cert)? else {
        return None;
    };
    let original_tbs = &cert[..cert.len() - after_tbs.len()];
    let mut fields = Vec::new();
    let mut rest = tbs_body;
    while !rest.is_empty() {
        let (tag, contents, next) = tlv(rest)?;
        fields.push((tag, contents, &rest[..rest.len() - next.len()]));
        rest = next;
    }
    // version [0], serial, signature, issuer, validity, subject, spki, [1], [2], [3]
    let offset = usize::from(fields.first()?.0 == 0xa0);
    let mut body = Vec::with_capacity(tbs_body.len());
    for (i, &(tag, contents, whole)) in fields.iter().enumerate() {
        if i == offset + 3 && early {
            if tag != 0x30 {
                return None;
            }
            let (time_tag, time, not_after) = tlv(contents)?;
            // The notBefore replaced must be a DER time (webpki refuses others).
            let digits = |t: &[u8]| t.iter().all(u8::is_ascii_digit);
            let der_time = match (time_tag, time) {
                (0x17, [t @ .., b'Z']) => t.len() == 12 && digits(t),
                (0x18, [t @ .., b'Z']) => t.len() == 14 && digits(t),
                _ => false,
            };
            if !der_time {
                return None;
            }
            let mut v = EPOCH_UTCTIME.to_vec();
            v.extend_from_slice(not_after);
            body.extend(encode(0x30, &v));
        } else if tag == 0xa3 {
            let (0x30, mut list, []) = tlv(contents)? else {
                return None;
            };
            let mut kept = Vec::with_capacity(list.len());
            while !list.is_empty() {
                let (0x30, ext, next) = tlv(list)? else {
                    return None;
                };
                let whole_ext = &list[..list.len() - next.len()];
                list = next;
                let (0x06, oid, after_oid) = tlv(ext)? else {
                    return None;
                };
                let (critical, value) = match tlv(after_oid)? {
                    (0x01, [b], after) => (*b != 0, after),
                    _ => (false, after_oid),
                };
                let (0x04, value, []) = tlv(value)? else {
                    return None;
                };
                if !drop_ext(oid, critical, value) {
                    kept.extend_from_slice(whole_ext);
                }
            }
            if !kept.is_empty() {
                body.extend(encode(0xa3, &encode(0x30, &kept)));
            }
        } else {
            body.extend_from_slice(whole);
        }
    }
    let tbs = encode(0x30, &body);
    let mut cert_body = tbs.clone();
    cert_body.extend_from_slice(after_tbs);
    Some(View {
        der: encode(0x30, &cert_body),
        tbs,
        original_tbs: original_tbs.to_vec(),
    })
}

/// Whether `view` parses and equals `original` in everything but the intended changes.
fn same_but_for_the_changes(original: &X509Certificate<'_>, view: &[u8], early: bool) -> bool {
    let Ok((rest, v)) = X509Certificate::from_der(view) else {
        return false;
    };
    let kept: Vec<_> = original
        .extensions()
        .iter()
        .filter(|e| {
            let oid = e.oid.as_bytes();
            !((oid == NAME_CONSTRAINTS && !webpki_reads(e.value))
                || (oid == CERTIFICATE_POLICIES && e.critical))
        })
        .map(|e| (e.oid.as_bytes(), e.critical, e.value))
        .collect();
    let theirs: Vec<_> = v
        .extensions()
        .iter()
        .map(|e| (e.oid.as_bytes(), e.critical, e.value))
        .collect();
    rest.is_empty()
        && v.tbs_certificate.version == original.tbs_certificate.version
        && v.raw_serial() == original.raw_serial()
        && v.issuer().as_raw() == original.issuer().as_raw()
        && v.subject().as_raw() == original.subject().as_raw()
        && v.public_key().raw == original.public_key().raw
        && v.signature_algorithm == original.signature_algorithm
        && v.signature_value == original.signature_value
        && v.validity().not_after == original.validity().not_after
        && (early || v.validity().not_before == original.validity().not_before)
        && kept == theirs
}

#[cfg(test)]
mod attacks;

#[cfg(test)]
mod tests {
    use super::*;

    /// A CA (`name`), optionally constrained to the URI host `uri_host`, signed by
    /// `issuer` (self-signed when `None`).
    fn ca(
        name: &str,
        uri_host: Option<&[u8]>,
        issuer: Option<&rcgen::Issuer<'_, &rcgen::KeyPair>>,
    ) -> (rcgen::Certificate, rcgen::KeyPair) {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        if let Some(host) = uri_host {
            let value = encode(0x30, &encode(0xa0, &encode(0x30, &encode(0x86, host))));
            let mut nc = rcgen::CustomExtension::from_oid_content(&[2, 5, 29, 30], value);
            nc.set_criticality(true);
            params.custom_extensions.push(nc);
        }
        let cert = match issuer {
            Some(issuer) => params.signed_by(&key, issuer).expect("signed"),
            None => params.self_signed(&key).expect("self-signed"),
        };
        (cert, key)
    }

    /// A client certificate with the URI SAN `uri`, adjusted by `edit`.
    fn client(
        uri: &str,
        issuer: &rcgen::Issuer<'_, &rcgen::KeyPair>,
        edit: impl FnOnce(&mut rcgen::CertificateParams),
    ) -> rcgen::Certificate {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.subject_alt_names = vec![rcgen::SanType::URI(uri.try_into().expect("uri"))];
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        edit(&mut params);
        params.signed_by(&key, issuer).expect("signed")
    }

    fn trust_in(dir: &std::path::Path, root: &rcgen::Certificate) -> crate::Trust {
        let path = dir.join("anchors.pem");
        std::fs::write(&path, root.pem()).expect("write");
        crate::Trust::load(&crate::TrustSpec::new([path])).expect("load")
    }

    #[test]
    fn webpki_no_longer_refuses_what_aop_checks_itself() {
        let dir = tempfile::tempdir().expect("tempdir");
        let now = time::OffsetDateTime::now_utc();
        let (root, root_key) = ca("spiffe root", Some(b"example.org"), None);
        let root_issuer = rcgen::Issuer::from_ca_cert_der(root.der(), &root_key).expect("issuer");
        let (mid, mid_key) = ca("spiffe mid", Some(b"example.org"), Some(&root_issuer));
        let mid_issuer = rcgen::Issuer::from_ca_cert_der(mid.der(), &mid_key).expect("issuer");
        let trust = trust_in(dir.path(), &root);
        let check = |leaf: &rcgen::Certificate, chain: &[&rcgen::Certificate]| {
            let chain: Vec<_> = chain.iter().map(|c| c.der().clone()).collect();
            trust.check(leaf.der(), &chain, now).outcome.to_string()
        };
        // A URI name constraint on the anchor, and on an intermediate.
        let direct = client("spiffe://example.org/edge/1", &root_issuer, |_| {});
        assert_eq!(check(&direct, &[]), "SUCCESS");
        let below_mid = client("spiffe://example.org/edge/2", &mid_issuer, |_| {});
        assert_eq!(check(&below_mid, &[&mid]), "SUCCESS");
        // A critical certificatePolicies extension (anyPolicy).
        let policies = client("spiffe://example.org/edge/3", &root_issuer, |p| {
            let any_policy = encode(0x30, &encode(0x30, &encode(0x06, &[0x55, 0x1d, 0x20, 0])));
            let mut ext = rcgen::CustomExtension::from_oid_content(&[2, 5, 29, 32], any_policy);
            ext.set_criticality(true);
            p.custom_extensions.push(ext);
        });
        assert_eq!(check(&policies, &[]), "SUCCESS");
        // A notBefore in 1949 (GeneralizedTime).
        let early = client("spiffe://example.org/edge/4", &root_issuer, |p| {
            p.not_before = time::OffsetDateTime::from_unix_timestamp(-631_152_001).expect("1949");
        });
        assert_eq!(check(&early, &[]), "SUCCESS");
    }

    #[test]
    fn a_view_never_carries_a_forged_signature() {
        // A genuine intermediate whose URI constraint an attacker widened: its view (no
        // nameConstraints) is byte for byte the genuine one's, but the issuer's signature
        // is checked over the tampered original, so the chain is refused, presented alone
        // or beside the genuine certificate, in either order.
        let dir = tempfile::tempdir().expect("tempdir");
        let now = time::OffsetDateTime::now_utc();
        let (root, root_key) = ca("spiffe root", None, None);
        let root_issuer = rcgen::Issuer::from_ca_cert_der(root.der(), &root_key).expect("issuer");
        let (mid, mid_key) = ca("spiffe mid", Some(b"example.org"), Some(&root_issuer));
        let mid_issuer = rcgen::Issuer::from_ca_cert_der(mid.der(), &mid_key).expect("issuer");
        let leaf = client("spiffe://example.org/edge/1", &mid_issuer, |_| {});
        let trust = trust_in(dir.path(), &root);
        let genuine = mid.der().clone();
        let mut tampered = genuine.to_vec();
        let at = tampered
            .windows(11)
            .position(|w| w == b"example.org")
            .expect("the constraint is in the certificate");
        tampered[at + 10] = b'h';
        let tampered = rustls_pki_types::CertificateDer::from(tampered);
        assert_eq!(
            for_webpki(&tampered).expect("view").der,
            for_webpki(&genuine).expect("view").der
        );
        let verdict = |chain: &[rustls_pki_types::CertificateDer<'_>]| {
            trust.check(leaf.der(), chain, now).outcome.to_string()
        };
        assert_eq!(verdict(std::slice::from_ref(&genuine)), "SUCCESS");
        assert_eq!(
            verdict(std::slice::from_ref(&tampered)),
            "FAILED:bad_signature"
        );
        assert_eq!(
            verdict(&[tampered.clone(), genuine.clone()]),
            "FAILED:bad_signature"
        );
        assert_eq!(verdict(&[genuine, tampered]), "SUCCESS");
    }

    #[test]
    fn lengths_round_trip() {
        for len in [0usize, 1, 127, 128, 255, 256, 65_535, 65_536] {
            let body = vec![7u8; len];
            let der = encode(0x04, &body);
            let (tag, contents, rest) = tlv(&der).expect("parses");
            assert_eq!((tag, contents.len(), rest.len()), (0x04, len, 0));
        }
    }

    #[test]
    fn truncated_or_huge_lengths_are_refused() {
        assert!(tlv(&[0x30]).is_none());
        assert!(tlv(&[0x30, 0x05, 1, 2]).is_none());
        assert!(tlv(&[0x30, 0x85, 1, 1, 1, 1, 1]).is_none());
        assert!(tlv(&[0x30, 0x80]).is_none());
        assert!(tlv(&[0x1f, 0x01, 0x00]).is_none());
    }

    #[test]
    fn dns_and_ip_constraints_are_left_to_webpki_and_the_rest_are_not() {
        // permitted: dNSName "example.com"
        let dns = encode(
            0x30,
            &encode(0xa0, &encode(0x30, &encode(0x82, b"example.com"))),
        );
        assert!(webpki_reads(&dns));
        // permitted: URI "example.org"
        let uri = encode(
            0x30,
            &encode(0xa0, &encode(0x30, &encode(0x86, b"example.org"))),
        );
        assert!(!webpki_reads(&uri));
        assert!(!webpki_reads(b"\x30\x03\xa0\x01"));
    }

    #[test]
    fn an_ordinary_certificate_is_shown_as_it_is() {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["a.test".into()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        assert!(for_webpki(cert.der()).is_none());
    }

    #[test]
    fn a_uri_constraint_and_an_early_not_before_are_rewritten_and_nothing_else() {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.not_before = time::OffsetDateTime::from_unix_timestamp(-631_152_001).expect("1949");
        let uri = encode(
            0x30,
            &encode(0xa0, &encode(0x30, &encode(0x86, b"example.org"))),
        );
        let mut nc = rcgen::CustomExtension::from_oid_content(&[2, 5, 29, 30], uri);
        nc.set_criticality(true);
        params.custom_extensions.push(nc);
        let cert = params.self_signed(&key).expect("cert");
        let view = for_webpki(cert.der()).expect("rewritten");
        let (_, v) = X509Certificate::from_der(&view.der).expect("parses");
        assert_eq!(v.validity().not_before.timestamp(), 0);
        assert!(
            v.extensions()
                .iter()
                .all(|e| e.oid.as_bytes() != NAME_CONSTRAINTS)
        );
        assert!(v.basic_constraints().expect("bc").is_some());
        let (_, original) = X509Certificate::from_der(cert.der()).expect("parses");
        assert_eq!(view.original_tbs, original.tbs_certificate.as_ref());
        assert_eq!(view.tbs, v.tbs_certificate.as_ref());
    }
}
