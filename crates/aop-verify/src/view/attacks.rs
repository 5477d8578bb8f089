//! Attacks on webpki's view of a certificate (from a security review of the first
//! version): a certificate made to equal another's view ("twin"), encodings the view
//! would have cleaned up, duplicate extensions, the zone search, and random mutants.

use rustls_pki_types::CertificateDer;

use crate::der::{tlv, uint};
use crate::view::for_webpki;

// ---------- DER helpers ----------

/// One element read back: (tag, contents, what follows). Panics on what it cannot read.
fn parse_tlv(input: &[u8]) -> (u8, &[u8], &[u8]) {
    let tag = input[0];
    let first = input[1];
    let (len, rest) = if first < 0x80 {
        (first as usize, &input[2..])
    } else {
        let n = (first & 0x7f) as usize;
        let len = input[2..2 + n]
            .iter()
            .fold(0usize, |a, &b| (a << 8) | b as usize);
        (len, &input[2 + n..])
    };
    (tag, &rest[..len], &rest[len..])
}

/// (tbs whole, sigalg whole, signature BIT STRING whole)
fn split_cert(der: &[u8]) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let (_, body, _) = parse_tlv(der);
    let (_, _, after_tbs) = parse_tlv(body);
    let tbs = &body[..body.len() - after_tbs.len()];
    let (_, _, after_alg) = parse_tlv(after_tbs);
    let alg = &after_tbs[..after_tbs.len() - after_alg.len()];
    (tbs.to_vec(), alg.to_vec(), after_alg.to_vec())
}

fn join_cert(tbs: &[u8], alg: &[u8], sig_bits: &[u8]) -> Vec<u8> {
    let mut body = tbs.to_vec();
    body.extend_from_slice(alg);
    body.extend_from_slice(sig_bits);
    tlv(0x30, &body)
}

/// P-256 group order.
const N: [u8; 32] = [
    0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
    0xBC, 0xE6, 0xFA, 0xAD, 0xA7, 0x17, 0x9E, 0x84, 0xF3, 0xB9, 0xCA, 0xC2, 0xFC, 0x63, 0x25, 0x51,
];

/// The other valid ECDSA signature: (r, n - s). No private key needed.
fn malleate_ecdsa(sig_bits: &[u8]) -> Vec<u8> {
    let (0x03, bits, []) = parse_tlv(sig_bits) else {
        panic!("bit string")
    };
    assert_eq!(bits[0], 0);
    let (0x30, seq, []) = parse_tlv(&bits[1..]) else {
        panic!("seq")
    };
    let (0x02, r, rest) = parse_tlv(seq) else {
        panic!("r")
    };
    let (0x02, s, []) = parse_tlv(rest) else {
        panic!("s")
    };
    let s: Vec<u8> = s.iter().copied().skip_while(|&b| b == 0).collect();
    let mut s32 = [0u8; 32];
    s32[32 - s.len()..].copy_from_slice(&s);
    let mut out = [0u8; 32];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let d = N[i] as i16 - s32[i] as i16 - borrow;
        if d < 0 {
            out[i] = (d + 256) as u8;
            borrow = 1;
        } else {
            out[i] = d as u8;
            borrow = 0;
        }
    }
    let mut seq2 = uint(r);
    seq2.extend(uint(&out));
    let mut bits2 = vec![0u8];
    bits2.extend(tlv(0x30, &seq2));
    tlv(0x03, &bits2)
}

// ---------- certificates ----------

struct Ca {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl Ca {
    fn issuer(&self) -> rcgen::Issuer<'_, &rcgen::KeyPair> {
        rcgen::Issuer::from_ca_cert_der(self.cert.der(), &self.key).expect("issuer")
    }
}

/// A CA named `name`; `nc` = a raw NameConstraints value (critical), signed by `by`.
fn ca(name: &str, nc: Option<Vec<u8>>, by: Option<&Ca>) -> Ca {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(rcgen::DnType::CommonName, name);
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    if let Some(nc) = nc {
        let mut ext = rcgen::CustomExtension::from_oid_content(&[2, 5, 29, 30], nc);
        ext.set_criticality(true);
        p.custom_extensions.push(ext);
    }
    let cert = match by {
        Some(by) => p.signed_by(&key, &by.issuer()).expect("signed"),
        None => p.self_signed(&key).expect("self"),
    };
    Ca { cert, key }
}

/// NameConstraints: permitted URI host.
fn uri_nc(host: &[u8]) -> Vec<u8> {
    tlv(0x30, &tlv(0xa0, &tlv(0x30, &tlv(0x86, host))))
}

fn client(
    uri: &str,
    by: &Ca,
    edit: impl FnOnce(&mut rcgen::CertificateParams),
) -> rcgen::Certificate {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    p.subject_alt_names = vec![rcgen::SanType::URI(uri.try_into().expect("uri"))];
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    p.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    edit(&mut p);
    p.signed_by(&key, &by.issuer()).expect("signed")
}

fn trust(
    dir: &std::path::Path,
    root: &Ca,
    edit: impl FnOnce(&mut crate::TrustSpec),
) -> crate::Trust {
    let path = dir.join("anchors.pem");
    std::fs::write(&path, root.cert.pem()).expect("write");
    let mut spec = crate::TrustSpec::new([path]);
    edit(&mut spec);
    crate::Trust::load(&spec).expect("load")
}

fn verdict(t: &crate::Trust, leaf: &[u8], chain: &[Vec<u8>]) -> String {
    let chain: Vec<CertificateDer<'static>> = chain
        .iter()
        .map(|c| CertificateDer::from(c.clone()))
        .collect();
    let c = t.check(
        &CertificateDer::from(leaf.to_vec()),
        &chain,
        time::OffsetDateTime::now_utc(),
    );
    format!("{} {:?}", c.outcome, c.detail)
}

/// The setting: the operator's root R (the rule's anchor) issued tenant A a sub-CA X,
/// name-constrained (critical, URI) to spiffe://tenant-a.example. Tenant A holds X's key
/// and issues itself a certificate for tenant B's SPIFFE ID. The rule for tenant B trusts
/// R and allows spiffe://tenant-b.example.
struct Setting {
    _dir: tempfile::TempDir,
    trust: crate::Trust,
    x: Vec<u8>,
    leaf: Vec<u8>,
}

fn setting() -> Setting {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = ca("operator root", None, None);
    let x = ca(
        "tenant-a sub-CA",
        Some(uri_nc(b"tenant-a.example")),
        Some(&root),
    );
    let leaf = client("spiffe://tenant-b.example/payments", &x, |_| {});
    let trust = trust(dir.path(), &root, |s| {
        s.allow_san = vec!["spiffe://tenant-b.example".into()];
    });
    Setting {
        _dir: dir,
        trust,
        x: x.cert.der().to_vec(),
        leaf: leaf.der().to_vec(),
    }
}

#[test]
fn control_the_constraint_is_enforced_when_x_is_presented_alone() {
    let s = setting();
    let v = verdict(&s.trust, &s.leaf, std::slice::from_ref(&s.x));
    println!("[X] -> {v}");
    assert!(v.starts_with("FAILED:name_constraints"), "{v}");
}

/// FINDING 1a: present X's VIEW (its exact bytes, computed from public data) before X.
/// webpki's path uses the view bytes; `Shown::original` maps them back by content to the
/// FIRST presented certificate with those shown bytes — the twin, which has no
/// nameConstraints — so constraints::check never sees X's constraint.
#[test]
fn a_view_twin_presented_before_x_does_not_lift_the_uri_constraint() {
    let s = setting();
    let twin = for_webpki(&s.x).expect("X has a view").der;
    // The twin alone does not verify (its signature is over X's TBS)...
    let alone = verdict(&s.trust, &s.leaf, std::slice::from_ref(&twin));
    println!("[twin] -> {alone}");
    assert!(alone.starts_with("FAILED:"), "{alone}");
    // ...but beside X it borrows X's signature through the budget's mapping.
    let v = verdict(&s.trust, &s.leaf, &[twin, s.x.clone()]);
    assert!(v.starts_with("FAILED:bad_encoding"), "{v}");
}

/// FINDING 1b: same, in the order [X, twin'], with twin' = X's view TBS + the other valid
/// ECDSA signature (r, n-s). The budget maps twin''s TBS to X's and the malleated
/// signature verifies; twin' matches no view by bytes, so `original` returns twin' itself.
/// (So fixing only `original`'s lookup order is not enough.)
#[test]
fn a_malleated_view_twin_after_x_does_not_lift_the_uri_constraint() {
    let s = setting();
    let view = for_webpki(&s.x).expect("X has a view").der;
    let (tbs, alg, sig) = split_cert(&view);
    let twin = join_cert(&tbs, &alg, &malleate_ecdsa(&sig));
    assert_ne!(twin, view);
    let v = verdict(&s.trust, &s.leaf, &[s.x.clone(), twin]);
    assert!(v.starts_with("FAILED:bad_encoding"), "{v}");
}

/// The exact twin after X: refused like any other twin.
#[test]
fn an_exact_twin_after_x_is_refused() {
    let s = setting();
    let twin = for_webpki(&s.x).expect("view").der;
    let v = verdict(&s.trust, &s.leaf, &[s.x.clone(), twin]);
    assert!(v.starts_with("FAILED:bad_encoding"), "{v}");
}

/// Email and directoryName constraints fall the same way (one form is enough to show it:
/// an email (rfc822Name) constraint, leaf with an email SAN outside it).
#[test]
fn a_view_twin_does_not_lift_an_email_constraint_either() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = ca("operator root", None, None);
    let nc = tlv(
        0x30,
        &tlv(0xa0, &tlv(0x30, &tlv(0x81, b"tenant-a.example"))),
    );
    let x = ca("tenant-a sub-CA", Some(nc), Some(&root));
    let leaf = client("https://tenant-b.example/id", &x, |p| {
        p.subject_alt_names.push(rcgen::SanType::Rfc822Name(
            "ceo@tenant-b.example".try_into().expect("email"),
        ));
    });
    let t = trust(dir.path(), &root, |_| {});
    let xd = x.cert.der().to_vec();
    let alone = verdict(&t, leaf.der(), std::slice::from_ref(&xd));
    println!("email [X] -> {alone}");
    assert!(alone.starts_with("FAILED:name_constraints"), "{alone}");
    let twin = for_webpki(&xd).expect("view").der;
    let v = verdict(&t, leaf.der(), &[twin, xd]);
    assert!(v.starts_with("FAILED:bad_encoding"), "{v}");
}

/// CRL: a revoked X stays revoked through its twin (same serial, same issuer).
#[test]
fn a_revoked_x_is_refused_with_or_without_its_twin() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = ca("operator root", None, None);
    let x = ca(
        "tenant-a sub-CA",
        Some(uri_nc(b"tenant-a.example")),
        Some(&root),
    );
    let leaf = client("spiffe://tenant-a.example/ok", &x, |_| {});
    let (_, xp) = x509_parser::parse_x509_certificate(x.cert.der()).expect("parse");
    let now = time::OffsetDateTime::now_utc();
    let crl = rcgen::CertificateRevocationListParams {
        this_update: now - time::Duration::hours(1),
        next_update: now + time::Duration::days(1),
        crl_number: rcgen::SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: vec![rcgen::RevokedCertParams {
            serial_number: rcgen::SerialNumber::from_slice(xp.raw_serial()),
            revocation_time: now - time::Duration::hours(1),
            reason_code: None,
            invalidity_date: None,
        }],
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    }
    .signed_by(&root.issuer())
    .expect("crl");
    let crl_path = dir.path().join("crl.pem");
    std::fs::write(&crl_path, crl.pem().expect("pem")).expect("write");
    let t = trust(dir.path(), &root, |s| s.crls = vec![crl_path]);
    let xd = x.cert.der().to_vec();
    let twin = for_webpki(&xd).expect("view").der;
    let v = verdict(&t, leaf.der(), std::slice::from_ref(&xd));
    assert!(v.starts_with("FAILED:revoked"), "{v}");
    let v = verdict(&t, leaf.der(), &[twin, xd]);
    assert!(v.starts_with("FAILED:bad_encoding"), "{v}");
}

/// The anchor's URI constraint (stripped from webpki's TrustAnchor at load) is applied
/// by check(), but chain_verifies (the zone_mismatch search) runs no aop check: a chain
/// outside the anchor's constraint "verifies" there.
#[test]
fn the_zone_search_applies_the_anchors_stripped_constraint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = ca("tenant-a root", Some(uri_nc(b"tenant-a.example")), None);
    let leaf = client("spiffe://tenant-b.example/x", &root, |_| {});
    let t = trust(dir.path(), &root, |_| {});
    let v = verdict(&t, leaf.der(), &[]);
    println!("anchor NC, check -> {v}");
    assert!(v.starts_with("FAILED:name_constraints"), "{v}");
    let budget = t.budget();
    let leaf_der = CertificateDer::from(leaf.der().to_vec());
    let zone = t.chain_verifies(
        &leaf_der,
        &[],
        crate::trust::unix_time(time::OffsetDateTime::now_utc()),
        &budget,
    );
    assert!(!zone, "another rule would call this zone_mismatch");
}

/// BER lengths: a leaf whose TBS header uses a non-minimal long-form length is refused by
/// webpki (bad_encoding); give it a critical certificatePolicies extension and the view
/// re-encodes the header minimally: accepted.
#[test]
fn a_non_der_header_is_not_normalised_by_the_view() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = ca("operator root", None, None);
    let t = trust(dir.path(), &root, |_| {});
    let policies = |p: &mut rcgen::CertificateParams| {
        let any = tlv(0x30, &tlv(0x30, &tlv(0x06, &[0x55, 0x1d, 0x20, 0])));
        let mut e = rcgen::CustomExtension::from_oid_content(&[2, 5, 29, 32], any);
        e.set_criticality(true);
        p.custom_extensions.push(e);
    };
    for (name, with_policies) in [("plain", false), ("critical policies", true)] {
        let leaf = if with_policies {
            client("spiffe://x.example/a", &root, policies)
        } else {
            client("spiffe://x.example/a", &root, |_| {})
        };
        let (tbs, alg, _) = split_cert(leaf.der());
        let (_, tbs_body, _) = parse_tlv(&tbs);
        // 0x84 + 4 length bytes: non-minimal.
        let mut bad_tbs = vec![0x30, 0x84];
        bad_tbs.extend((tbs_body.len() as u32).to_be_bytes());
        bad_tbs.extend_from_slice(tbs_body);
        let sig = rcgen::SigningKey::sign(&root.key, &bad_tbs).expect("sign");
        let mut bits = vec![0u8];
        bits.extend(sig);
        let cert = join_cert(&bad_tbs, &alg, &tlv(0x03, &bits));
        let parses = x509_parser::parse_x509_certificate(&cert).is_ok();
        let v = verdict(&t, &cert, &[]);
        assert!(
            v.starts_with("FAILED:bad_encoding"),
            "{name}: x509-parser ok={parses} -> {v}"
        );
    }
}

// ---------- panics ----------

struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

#[test]
fn fuzz_for_webpki_and_check_do_not_panic() {
    let s = setting();
    let twin = for_webpki(&s.x).expect("view").der;
    let early = {
        let root = ca("r", None, None);
        client("spiffe://x.example/a", &root, |p| {
            p.not_before = time::OffsetDateTime::from_unix_timestamp(-631_152_001).expect("1949");
        })
        .der()
        .to_vec()
    };
    let seeds = [s.x.clone(), twin, early, s.leaf.clone()];
    let mut rng = Lcg(0x5eed);
    let mut views = 0usize;
    let iters: usize = std::env::var("FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let started = std::time::Instant::now();
    for i in 0..iters {
        let mut c = seeds[i % seeds.len()].clone();
        let edits = 1 + rng.next() % 4;
        for _ in 0..edits {
            let at = (rng.next() as usize) % c.len();
            match rng.next() % 4 {
                0 => c[at] = rng.next() as u8,
                1 => c[at] ^= 1 << (rng.next() % 8),
                2 => {
                    c.remove(at);
                }
                _ => c.insert(at, rng.next() as u8),
            }
        }
        if let Some(v) = for_webpki(&c) {
            views += 1;
            // The view must carry the original's signature block and TBS mapping.
            assert_eq!(
                v.original_tbs,
                x509_parser::parse_x509_certificate(&c)
                    .expect("parsed")
                    .1
                    .tbs_certificate
                    .as_ref()
            );
        }
        if i % 10 == 0 {
            let _ = verdict(&s.trust, &s.leaf, &[c.clone(), s.x.clone()]);
            let _ = verdict(&s.trust, &c, std::slice::from_ref(&s.x));
        }
    }
    println!(
        "fuzz: {iters} mutants, {views} had views, {:?}",
        started.elapsed()
    );
}

/// Duplicate extensions that the view drops both copies of: webpki would refuse a
/// duplicate (set_extension_once) or the critical policies; with the view neither is seen
/// and strict.rs only checks uniqueness of SAN/BC/KU.
#[test]
fn duplicate_extensions_are_not_dropped_from_the_view() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = ca("operator root", None, None);
    let t = trust(dir.path(), &root, |_| {});
    let leaf = client("spiffe://x.example/a", &root, |p| {
        for _ in 0..2 {
            let any = tlv(0x30, &tlv(0x30, &tlv(0x06, &[0x55, 0x1d, 0x20, 0])));
            let mut e = rcgen::CustomExtension::from_oid_content(&[2, 5, 29, 32], any);
            e.set_criticality(true);
            p.custom_extensions.push(e);
        }
        // and two URI nameConstraints on the leaf
        for h in [&b"a.example"[..], b"b.example"] {
            let mut e = rcgen::CustomExtension::from_oid_content(&[2, 5, 29, 30], uri_nc(h));
            e.set_criticality(true);
            p.custom_extensions.push(e);
        }
    });
    let v = verdict(&t, leaf.der(), &[]);
    assert!(v.starts_with("FAILED:"), "{v}");
    assert!(for_webpki(leaf.der()).is_none());
}

/// A BER time webpki refuses (UTCTime without seconds), before 1970: the view replaces it
/// with a DER 1970 time.
#[test]
fn a_ber_not_before_is_not_normalised_by_the_view() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = ca("operator root", None, None);
    let t = trust(dir.path(), &root, |_| {});
    let leaf = client("spiffe://x.example/a", &root, |p| {
        p.not_before = time::OffsetDateTime::from_unix_timestamp(-10_000_000).expect("1969");
    });
    let (tbs, alg, _) = split_cert(leaf.der());
    let (_, body, _) = parse_tlv(&tbs);
    // fields: version, serial, sigalg, issuer, validity, ...
    let mut fields = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let (_, _, next) = parse_tlv(rest);
        fields.push(rest[..rest.len() - next.len()].to_vec());
        rest = next;
    }
    let validity_field = fields[4].clone();
    let (_, validity, _) = parse_tlv(&validity_field);
    let (_, nb, not_after) = parse_tlv(validity);
    println!("original notBefore {:?}", String::from_utf8_lossy(nb));
    for (what, nb_new) in [
        ("UTCTime without seconds", tlv(0x17, b"6909010000Z")),
        ("UTCTime with offset", tlv(0x17, b"690901000000+0100")),
    ] {
        let mut v = nb_new.clone();
        v.extend_from_slice(not_after);
        fields[4] = tlv(0x30, &v);
        let new_tbs = tlv(0x30, &fields.concat());
        let sig = rcgen::SigningKey::sign(&root.key, &new_tbs).expect("sign");
        let mut bits = vec![0u8];
        bits.extend(sig);
        let cert = join_cert(&new_tbs, &alg, &tlv(0x03, &bits));
        let parsed = x509_parser::parse_x509_certificate(&cert)
            .map(|(_, c)| c.validity().not_before.timestamp());
        let view = for_webpki(&cert).is_some();
        let v = verdict(&t, &cert, &[]);
        assert!(
            !view && v.starts_with("FAILED:bad_encoding"),
            "{what}: x509-parser {parsed:?}, view={view} -> {v}"
        );
    }
}

/// A CRL from outside (fetched over HTTP) counts only if an anchor of its issuer's name
/// signed it: another CA's, a same-named CA's (another key), or bytes that are no CRL
/// are refused with their problem; of two good ones, the higher number is newer.
#[test]
fn a_fetched_crl_must_be_signed_by_an_anchor_and_newer_to_count() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = ca("edge root", None, None);
    let twin = ca("edge root", None, None);
    let other = ca("other root", None, None);
    let t = trust(dir.path(), &root, |_| {});
    let now = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .expect("ns");
    let crl = |by: &Ca, number: u64, at: time::OffsetDateTime| {
        rcgen::CertificateRevocationListParams {
            this_update: at,
            next_update: at + time::Duration::days(1),
            crl_number: rcgen::SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs: Vec::new(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        }
        .signed_by(&by.issuer())
        .expect("crl")
        .der()
        .to_vec()
    };
    let older = t.verify_crl(&crl(&root, 1, now)).expect("good");
    assert_eq!(older.issuer, "CN=edge root");
    assert_eq!(older.number.as_deref(), Some(&[1u8][..]));
    assert_eq!(older.this_update, now);
    assert_eq!(older.next_update, Some(now + time::Duration::days(1)));
    // A higher number is newer even with an earlier thisUpdate; same number: thisUpdate.
    let newer = t
        .verify_crl(&crl(&root, 2, now - time::Duration::hours(1)))
        .expect("good");
    assert_eq!(newer.newer_than(&older), std::cmp::Ordering::Greater);
    assert_eq!(older.newer_than(&newer), std::cmp::Ordering::Less);
    let later = t
        .verify_crl(&crl(&root, 1, now + time::Duration::seconds(1)))
        .expect("good");
    assert_eq!(later.newer_than(&older), std::cmp::Ordering::Greater);
    assert_eq!(older.newer_than(&older), std::cmp::Ordering::Equal);
    let problem = |der: &[u8]| match t.verify_crl(der) {
        Err(crate::Error::CrlRefused { problem, .. }) => problem,
        other => panic!("{other:?}"),
    };
    assert_eq!(problem(&crl(&twin, 3, now)), "bad_signature");
    assert_eq!(problem(&crl(&other, 3, now)), "unknown_issuer");
    assert_eq!(problem(b"not a crl"), "malformed");
    let mut flipped = crl(&root, 3, now);
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    assert_eq!(problem(&flipped), "bad_signature");
    // Signed by the anchor, but of another scope (an ARL), or from the future.
    let arl = rcgen::CertificateRevocationListParams {
        this_update: now,
        next_update: now + time::Duration::days(1),
        crl_number: rcgen::SerialNumber::from(9u64),
        issuing_distribution_point: Some(rcgen::CrlIssuingDistributionPoint {
            distribution_point: rcgen::CrlDistributionPoint {
                uris: vec!["http://pki.example/arl.crl".into()],
            },
            scope: Some(rcgen::CrlScope::CaCertsOnly),
        }),
        revoked_certs: Vec::new(),
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    }
    .signed_by(&root.issuer())
    .expect("arl");
    assert_eq!(problem(arl.der()), "scoped");
    assert_eq!(
        problem(&crl(&root, 10, now + time::Duration::minutes(6))),
        "future"
    );
    t.verify_crl(&crl(&root, 10, now + time::Duration::minutes(4)))
        .expect("within the skew");
}

/// Of two CRLs of one issuer (an old local file and a newer fetched one, two mirrors),
/// only the newest counts, in either order: webpki uses the first that covers a
/// certificate, so the older clean one would otherwise hide the newer revocation. A CRL
/// of another scope (an IDP) is ranked apart and does not displace the full one.
#[test]
fn the_newest_crl_of_an_issuer_wins_whatever_the_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = ca("edge root", None, None);
    let leaf = client("spiffe://edge.example/1", &root, |_| {});
    let (_, lp) = x509_parser::parse_x509_certificate(leaf.der()).expect("parse");
    let now = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .expect("ns");
    let crl = |number: u64, at: time::OffsetDateTime, revoke: bool, arl: bool| {
        rcgen::CertificateRevocationListParams {
            this_update: at,
            next_update: at + time::Duration::days(1),
            crl_number: rcgen::SerialNumber::from(number),
            issuing_distribution_point: arl.then(|| rcgen::CrlIssuingDistributionPoint {
                distribution_point: rcgen::CrlDistributionPoint {
                    uris: vec!["http://pki.example/arl.crl".into()],
                },
                scope: Some(rcgen::CrlScope::CaCertsOnly),
            }),
            revoked_certs: if revoke {
                vec![rcgen::RevokedCertParams {
                    serial_number: rcgen::SerialNumber::from_slice(lp.raw_serial()),
                    revocation_time: at,
                    reason_code: None,
                    invalidity_date: None,
                }]
            } else {
                Vec::new()
            },
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        }
        .signed_by(&root.issuer())
        .expect("crl")
        .der()
        .to_vec()
    };
    let hour = time::Duration::hours(1);
    let old_clean = crl(1, now - 2 * hour, false, false);
    let new_revoking = crl(2, now - hour, true, false);
    let newest_arl = crl(3, now, false, true);
    let file = dir.path().join("old.crl");
    std::fs::write(&file, &old_clean).expect("write");
    let der = |d: &Vec<u8>| rustls_pki_types::CertificateRevocationListDer::from(d.clone());
    // The old one as a file (read first), the newer as a fetched CRL.
    let t = trust(dir.path(), &root, |s| {
        s.crls = vec![file.clone()];
        s.crl_ders = vec![der(&new_revoking)];
    });
    let v = verdict(&t, leaf.der(), &[]);
    assert!(v.starts_with("FAILED:revoked"), "file then fetched: {v}");
    // Both fetched, the old one first (two mirrors); and an ARL beside them.
    let t = trust(dir.path(), &root, |s| {
        s.crl_ders = vec![der(&old_clean), der(&newest_arl), der(&new_revoking)];
    });
    let v = verdict(&t, leaf.der(), &[]);
    assert!(v.starts_with("FAILED:revoked"), "mirrors: {v}");
    assert_eq!(t.crl_expiries().count(), 2, "the old CRL is not kept");
    // Control: the old one alone serves the leaf.
    let t = trust(dir.path(), &root, |s| s.crl_ders = vec![der(&old_clean)]);
    let v = verdict(&t, leaf.der(), &[]);
    assert!(v.starts_with("SUCCESS"), "control: {v}");
}
