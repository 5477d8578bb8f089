//! Attacks from a security review of the name-constraints engine: names x509-parser
//! reads only in part (an empty RDN, an attribute without a value, a bad OID) hiding a CN,
//! an O or an emailAddress, or making a CA look self-issued; quoted local parts.

use rcgen::{KeyPair, PublicKeyData as _, SigningKey as _};
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;

use super::{CN, O, UTF8, g_dir, g_dns, g_email, g_uri, nc as nc_der};
use crate::der::{seq, set, tlv, utc_time};
use crate::trust::{Trust, TrustSpec};
use crate::verdict::{Outcome, Reason};

/// An attribute: raw OID content bytes, tag, raw value bytes.
fn atv(oid: &[u8], tag: u8, v: &[u8]) -> Vec<u8> {
    seq(&[tlv(0x06, oid), tlv(tag, v)])
}
/// A Name of RDNs each a list of raw attributes.
fn name(rdns: &[Vec<Vec<u8>>]) -> Vec<u8> {
    seq(&rdns.iter().map(|r| set(r)).collect::<Vec<_>>())
}
fn cn_name(s: &str) -> Vec<u8> {
    name(&[vec![atv(CN, UTF8, s.as_bytes())]])
}

const EMAIL: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01];
const IA5: u8 = 0x16;

fn ext(oid: &[u8], critical: bool, value: Vec<u8>) -> Vec<u8> {
    let mut parts = vec![tlv(0x06, oid)];
    if critical {
        parts.push(vec![0x01, 0x01, 0xff]);
    }
    parts.push(tlv(0x04, &value));
    seq(&parts)
}
const BC: &[u8] = &[0x55, 0x1d, 0x13];
const KU: &[u8] = &[0x55, 0x1d, 0x0f];
const EKU: &[u8] = &[0x55, 0x1d, 0x25];
const SAN: &[u8] = &[0x55, 0x1d, 0x11];
const NC: &[u8] = &[0x55, 0x1d, 0x1e];
const ECDSA_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
const CLIENT_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02];

struct Ca {
    der: Vec<u8>,
    key: KeyPair,
    subject: Vec<u8>,
}

static SERIAL: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1000);

/// Sign a TBS built from these parts with `signer` (issuer's key) for `key`'s SPKI.
fn build(
    subject: &[u8],
    issuer_name: &[u8],
    spki: &[u8],
    exts: &[Vec<u8>],
    signer: &KeyPair,
) -> Vec<u8> {
    let now = OffsetDateTime::now_utc();
    let serial = SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let alg = seq(&[tlv(0x06, ECDSA_SHA256)]);
    let mut tbs_parts = vec![
        tlv(0xa0, &tlv(0x02, &[2])),
        tlv(0x02, &[&[0x01u8][..], &serial.to_be_bytes()[..]].concat()),
        alg.clone(),
        issuer_name.to_vec(),
        seq(&[
            utc_time(now - time::Duration::days(1)),
            utc_time(now + time::Duration::days(30)),
        ]),
        subject.to_vec(),
        spki.to_vec(),
    ];
    if !exts.is_empty() {
        tbs_parts.push(tlv(0xa3, &seq(exts)));
    }
    let tbs = seq(&tbs_parts);
    let sig = signer.sign(&tbs).unwrap();
    let mut bits = vec![0];
    bits.extend(sig);
    seq(&[tbs, alg, tlv(0x03, &bits)])
}

fn keyid(k: &KeyPair) -> Vec<u8> {
    let d = k.der_bytes();
    d[d.len() - 20..].to_vec()
}
const SKI: &[u8] = &[0x55, 0x1d, 0x0e];
const AKI: &[u8] = &[0x55, 0x1d, 0x23];
fn ski(k: &KeyPair) -> Vec<u8> {
    ext(SKI, false, tlv(0x04, &keyid(k)))
}
fn aki(k: &KeyPair) -> Vec<u8> {
    ext(AKI, false, seq(&[tlv(0x80, &keyid(k))]))
}
fn key() -> KeyPair {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap()
}

fn ca_exts(nc: Option<Vec<u8>>) -> Vec<Vec<u8>> {
    let mut e = vec![
        ext(BC, true, seq(&[vec![0x01, 0x01, 0xff]])),
        ext(KU, true, vec![0x03, 0x02, 0x01, 0x06]),
    ];
    if let Some(nc) = nc {
        e.push(ext(NC, true, nc));
    }
    e
}

/// A CA with this subject (raw Name), optional raw nameConstraints, signed by parent (or itself).
fn ca(subject: Vec<u8>, nc: Option<Vec<u8>>, parent: Option<&Ca>) -> Ca {
    ca_with(subject, None, ca_exts(nc), parent)
}
/// A CA with an explicit issuer name override (for self-issued tests) and extensions.
fn ca_with(
    subject: Vec<u8>,
    issuer_override: Option<Vec<u8>>,
    exts: Vec<Vec<u8>>,
    parent: Option<&Ca>,
) -> Ca {
    let k = key();
    let spki = k.subject_public_key_info();
    let (issuer_name, signer) = match parent {
        Some(p) => (p.subject.clone(), &p.key),
        None => (subject.clone(), &k),
    };
    let issuer_name = issuer_override.unwrap_or(issuer_name);
    let mut exts = exts;
    exts.push(ski(&k));
    exts.push(aki(signer));
    let der = build(&subject, &issuer_name, &spki, &exts, signer);
    Ca {
        der,
        key: k,
        subject,
    }
}

/// A client cert: raw subject, raw SAN extension value (None: no SAN ext).
fn leaf(subject: Vec<u8>, san: Option<Vec<u8>>, parent: &Ca) -> CertificateDer<'static> {
    leaf_exts(
        subject,
        san.map(|v| ext(SAN, false, v)).into_iter().collect(),
        parent,
    )
}
fn leaf_exts(subject: Vec<u8>, more: Vec<Vec<u8>>, parent: &Ca) -> CertificateDer<'static> {
    let k = key();
    let mut exts = vec![
        ext(KU, true, vec![0x03, 0x02, 0x07, 0x80]),
        ext(EKU, false, seq(&[tlv(0x06, CLIENT_AUTH)])),
    ];
    exts.extend(more);
    exts.push(aki(&parent.key));
    CertificateDer::from(build(
        &subject,
        &parent.subject,
        &k.subject_public_key_info(),
        &exts,
        &parent.key,
    ))
}
fn san(names: &[Vec<u8>]) -> Option<Vec<u8>> {
    Some(seq(names))
}

/// Run through Trust::check; also write root.pem / chain.pem / leaf.pem into /tmp/review-nc-certs/<case>/.
fn run(
    case: &str,
    root: &Ca,
    leaf: &CertificateDer<'_>,
    chain: &[&Ca],
    allow_san: &[&str],
) -> (Outcome, String, Option<String>) {
    let dir = std::path::PathBuf::from("/tmp/review-nc-certs").join(case);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("leaf.der"), leaf.as_ref()).unwrap();
    for (i, c) in chain.iter().enumerate() {
        std::fs::write(dir.join(format!("chain{i}.der")), &c.der).unwrap();
    }
    let path = dir.join("root.der");
    std::fs::write(&path, &root.der).unwrap();
    let mut spec = TrustSpec::new([path]);
    spec.allow_san = allow_san.iter().map(|s| (*s).to_owned()).collect();
    let tr = Trust::load(&spec).unwrap();
    let ders: Vec<_> = chain
        .iter()
        .map(|c| CertificateDer::from(c.der.clone()))
        .collect();
    let c = tr.check(leaf, &ders, OffsetDateTime::now_utc());
    let subj = c.client.as_ref().map(|i| {
        format!(
            "subject={:?} cn={:?} san_dns={:?} san_uri={:?}",
            i.subject, i.common_name, i.san.dns, i.san.uri
        )
    });
    let d = c.detail.clone().unwrap_or_default();
    println!(
        "CASE {case}: {:?} | {d} | {}",
        c.outcome,
        subj.clone().unwrap_or_default()
    );
    (c.outcome, d, subj)
}

/// Each attack is refused; the controls pass.
#[test]
fn review_regressions() {
    let refused = |o: (Outcome, String, Option<String>), r: Reason| {
        assert_eq!(o.0, Outcome::Failed(r), "{}", o.1);
    };
    let vis = ca(
        cn_name("rg-vis"),
        Some(nc_der(&[g_dns("example.com")], &[])),
        None,
    );
    let hidden = name(&[
        vec![atv(CN, UTF8, b"ok.example.com")],
        vec![],
        vec![atv(CN, UTF8, b"evil.com")],
    ]);
    refused(
        run(
            "R-N1",
            &vis,
            &leaf(hidden.clone(), None, &vis),
            &[],
            &["ok.example.com"],
        ),
        Reason::BadEncoding,
    );
    refused(
        run(
            "R-N2",
            &vis,
            &leaf(hidden, san(&[g_uri("spiffe://x/y")]), &vis),
            &[],
            &[],
        ),
        Reason::BadEncoding,
    );
    let ex = ca(
        cn_name("rg-ex"),
        Some(nc_der(
            &[],
            &[g_dir(&[&[(O, UTF8, "Evil")]]), g_email("example.com")],
        )),
        None,
    );
    let h2 = name(&[
        vec![atv(CN, UTF8, b"edge")],
        vec![],
        vec![atv(O, UTF8, b"Evil")],
        vec![atv(EMAIL, IA5, b"eve@example.com")],
    ]);
    refused(
        run("R-N4", &ex, &leaf(h2, None, &ex), &[], &[]),
        Reason::BadEncoding,
    );
    let mix = ca(
        cn_name("rg-mix"),
        Some(nc_der(&[g_dns("example.com")], &[g_uri("never.invalid")])),
        None,
    );
    refused(
        run(
            "R-B1",
            &mix,
            &leaf(
                name(&[vec![atv(&[0x55, 0x04, 0x80, 0x03], UTF8, b"evil.com")]]),
                None,
                &mix,
            ),
            &[],
            &[],
        ),
        Reason::BadEncoding,
    );
    refused(
        run(
            "R-H2",
            &mix,
            &leaf(
                name(&[vec![atv(&[0x55, 0x04, 0x83], UTF8, b"evil.com")]]),
                None,
                &mix,
            ),
            &[],
            &[],
        ),
        Reason::BadEncoding,
    );
    let em = ca(
        cn_name("rg-em"),
        Some(nc_der(&[], &[g_email("eve@example.com")])),
        None,
    );
    refused(
        run(
            "R-C5",
            &em,
            &leaf(
                name(&[
                    vec![atv(CN, UTF8, b"x")],
                    vec![atv(
                        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x80, 0x01],
                        IA5,
                        b"eve@example.com",
                    )],
                ]),
                None,
                &em,
            ),
            &[],
            &[],
        ),
        Reason::BadEncoding,
    );
    refused(
        run(
            "R-C1",
            &em,
            &leaf(cn_name("x"), san(&[g_email("\"eve\"@example.com")]), &em),
            &[],
            &[],
        ),
        Reason::NameConstraints,
    );
    // fake self-issued
    let r = ca(
        cn_name("rg-R"),
        Some(nc_der(&[g_uri("example.org")], &[])),
        None,
    );
    let tca = ca(cn_name("rg-T"), None, Some(&r));
    let nm = |s: &[u8]| name(&[vec![atv(CN, UTF8, b"X")], vec![], vec![atv(CN, UTF8, s)]]);
    let i1 = ca(nm(b"bbbb"), None, Some(&tca));
    let mut exts = ca_exts(None);
    exts.push(ext(SAN, false, seq(&[g_uri("spiffe://evil.org/ca")])));
    let i2 = ca_with(nm(b"aaaa"), None, exts, Some(&i1));
    let lf = leaf(cn_name("x"), san(&[g_uri("spiffe://example.org/x")]), &i2);
    refused(
        run("R-N7b", &r, &lf, &[&i2, &i1, &tca], &[]),
        Reason::BadEncoding,
    );
    // still fine: ordinary chains
    assert_eq!(
        run(
            "R-ok",
            &vis,
            &leaf(cn_name("a.example.com"), None, &vis),
            &[],
            &[]
        )
        .0,
        Outcome::Success
    );
    assert_eq!(
        run(
            "R-ok-email",
            &em,
            &leaf(
                cn_name("x"),
                san(&[g_email("\"alice\"@example.com"), g_email("bob@example.com")]),
                &em
            ),
            &[],
            &[]
        )
        .0,
        Outcome::Failed(Reason::NameConstraints)
    );
    assert_eq!(
        run(
            "R-ok-email2",
            &em,
            &leaf(cn_name("x"), san(&[g_email("bob@example.com")]), &em),
            &[],
            &[]
        )
        .0,
        Outcome::Success
    );
}
