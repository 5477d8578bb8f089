//! A security review's attacks on strict.rs and its wiring in trust.rs, kept as
//! regression tests. The chains the review found accepted (or refused for a less
//! specific reason) are refused for the right reason since 4b1ae04; the attacks that
//! were already refused stay refused. Two tests pin a known difference from OpenSSL.

use super::*;
use aws_lc_rs::signature::{ParsedPublicKey, VerificationAlgorithm};
use num_bigint::BigUint;

/// The hex fields of the line of rsa_keys.txt (made with openssl; trusted nowhere)
/// named `name`.
fn fixture(name: &str) -> Vec<&'static str> {
    include_str!("rsa_keys.txt")
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no line {name} in rsa_keys.txt"))
        .split(' ')
        .collect()
}

/// A test-only RSA key.
struct Rsa {
    n: BigUint,
    e: BigUint,
    /// The private exponent, for the keys a test signs with.
    d: Option<BigUint>,
}

impl Rsa {
    /// `e=2^64+1`, `e=2^32+1`, `e=2^33+1` (2048 bits each, with `d`) or `8208`
    /// (e = 65537, public only).
    fn named(name: &str) -> Self {
        let mut hex = fixture(name)
            .into_iter()
            .map(|h| BigUint::parse_bytes(h.as_bytes(), 16).unwrap());
        let (n, e) = (hex.next().unwrap(), hex.next().unwrap());
        Self {
            n,
            e,
            d: hex.next(),
        }
    }

    /// The RSAPublicKey (RFC 8017), as in an SPKI's BIT STRING.
    fn public_key(&self) -> Vec<u8> {
        seq(&[&uint(&self.n.to_bytes_be()), &uint(&self.e.to_bytes_be())])
    }

    fn spki(&self) -> Vec<u8> {
        seq(&[
            &seq(&[&oid("1.2.840.113549.1.1.1"), &[0x05, 0x00]]),
            &bit_string(&self.public_key()),
        ])
    }

    fn len(&self) -> usize {
        self.n.bits().div_ceil(8) as usize
    }

    /// The PKCS #1 v1.5 encoding of SHA-256(`msg`) (RFC 8017 9.2).
    fn encoded(&self, msg: &[u8]) -> BigUint {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, msg);
        let info = [
            &[
                0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x01, 0x05, 0x00, 0x04, 0x20,
            ][..],
            digest.as_ref(),
        ]
        .concat();
        let mut em = vec![0x00, 0x01];
        em.resize(self.len() - info.len() - 1, 0xff);
        em.push(0x00);
        em.extend(info);
        BigUint::from_bytes_be(&em)
    }

    /// sha256WithRSAEncryption of `msg`: a valid signature (s^e = EM mod n).
    fn sign(&self, msg: &[u8]) -> Vec<u8> {
        let d = self.d.as_ref().expect("a key with d");
        let s = self.encoded(msg).modpow(d, &self.n).to_bytes_be();
        let s = [vec![0; self.len() - s.len()], s].concat();
        assert!(self.verifies(msg, &s));
        s
    }

    /// Whether `sig` is a valid sha256WithRSAEncryption signature of `msg`
    /// (RFC 8017 8.2.2: s^e mod n is the encoding), whatever the key's size.
    fn verifies(&self, msg: &[u8], sig: &[u8]) -> bool {
        BigUint::from_bytes_be(sig).modpow(&self.e, &self.n) == self.encoded(msg)
    }
}

// ---------------------------------------------------------------------------------
// Client public keys that check_leaf passed but the origin cannot use.

/// ML-DSA is in the provider's algorithm list (rustls' aws-lc-rs provider: ML-DSA-44,
/// -65, -87); its keys were never parsed, so a 10-byte "ML-DSA-44 key" read SUCCESS
/// though no CertificateVerify can verify with it. Now it is parsed: bad_encoding.
#[test]
fn finding_ml_dsa_key_is_never_parsed() {
    let junk = |o: &str, n: usize| seq(&[&seq(&[&oid(o)]), &bit_string(&vec![7; n])]);
    // aws-lc-rs refuses the key itself:
    assert!(ParsedPublicKey::new(&signature::ML_DSA_44, [7u8; 10]).is_err());
    // ML-DSA-44, -65 and -87 (OIDs .17, .18, .19), each with a key of the wrong size.
    for (o, n) in [
        ("2.16.840.1.101.3.4.3.17", 10usize),
        ("2.16.840.1.101.3.4.3.18", 1312),
        ("2.16.840.1.101.3.4.3.19", 1),
    ] {
        refused(
            &under_root(Tbs::leaf("edge", "root").spki(junk(o, n))),
            Reason::BadEncoding,
            "the public key",
        );
    }
}

/// An RSA key with e = 2^64+1: a signature OpenSSL verifies (s^e = EM mod n), but
/// aws-lc-rs and webpki refuse every signature with it, so the origin's handshake could
/// never succeed; check_leaf says so (bad_encoding).
#[test]
fn holds_rsa_huge_exponent_is_bad_encoding() {
    let rsa = Rsa::named("e=2^64+1");
    let key = rsa.public_key();
    let msg = b"hello\n";
    let sig = rsa.sign(msg);
    assert!(ParsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, &key).is_err());
    assert!(
        signature::RSA_PKCS1_2048_8192_SHA256
            .verify_sig(&key, msg, &sig)
            .is_err()
    );
    // webpki's algorithm (what rustls uses for CertificateVerify) refuses it too.
    let alg = webpki::aws_lc_rs::RSA_PKCS1_2048_8192_SHA256;
    assert!(alg.verify_signature(&key, msg, &sig).is_err());
    refused(
        &under_root(Tbs::leaf("edge", "root").spki(rsa.spki())),
        Reason::BadEncoding,
        "",
    );
}

/// Where the exponent bound lies: e = 2^32+1 (33 bits) verifies, e = 2^33+1 (34 bits)
/// does not; check_leaf passes exactly the keys verification works with.
#[test]
fn holds_rsa_exponent_boundary_matches_verification() {
    for (name, verifies) in [("e=2^32+1", true), ("e=2^33+1", false)] {
        let rsa = Rsa::named(name);
        let msg = b"hello\n";
        let ok = webpki::aws_lc_rs::RSA_PKCS1_2048_8192_SHA256
            .verify_signature(&rsa.public_key(), msg, &rsa.sign(msg))
            .is_ok();
        assert_eq!(ok, verifies, "{name}");
        let c = under_root(Tbs::leaf("edge", "root").spki(rsa.spki()));
        let expected = if verifies {
            Outcome::Success
        } else {
            Outcome::Failed(Reason::BadEncoding)
        };
        assert_eq!(c.outcome, expected, "{name} {:?}", c.detail);
    }
}

/// RSA moduli no signature verifies with: an even modulus, and e > n.
#[test]
fn holds_rsa_degenerate_moduli() {
    let rsa = |n: &[u8], e: &[u8]| {
        let key = seq(&[&uint(n), &uint(e)]);
        seq(&[
            &seq(&[&oid("1.2.840.113549.1.1.1"), &[0x05, 0x00]]),
            &bit_string(&key),
        ])
    };
    let mut n = vec![0u8; 256];
    aws_lc_rs::rand::fill(&mut n).unwrap();
    n[0] |= 0x80;
    *n.last_mut().unwrap() &= 0xfe; // even
    refused(
        &under_root(Tbs::leaf("edge", "root").spki(rsa(&n, &[1, 0, 1]))),
        Reason::BadEncoding,
        "",
    );
    // e larger than n (e of 2049 bits, odd).
    *n.last_mut().unwrap() |= 1;
    let mut e = vec![0xffu8; 257];
    e[0] = 1;
    refused(
        &under_root(Tbs::leaf("edge", "root").spki(rsa(&n, &e))),
        Reason::BadEncoding,
        "",
    );
}

/// EC client keys: the point at infinity (a single 00) is bad_encoding; a compressed
/// point is one aws-lc-rs verifies with (the same code runs at CertificateVerify).
#[test]
fn holds_ec_infinity_and_compressed() {
    let inf = ec_spki("1.2.840.10045.3.1.7", &[0]);
    refused(
        &under_root(Tbs::leaf("edge", "root").spki(inf)),
        Reason::BadEncoding,
        "",
    );
    let k = Key::new();
    let p = k.0.public_key().as_ref();
    let mut comp = vec![2 | (p[64] & 1)];
    comp.extend_from_slice(&p[1..33]);
    let msg = b"hello";
    let sig = k.0.sign(&SystemRandom::new(), msg).unwrap();
    let verifies = webpki::aws_lc_rs::ECDSA_P256_SHA256
        .verify_signature(&comp, msg, sig.as_ref())
        .is_ok();
    let c = under_root(Tbs::leaf("edge", "root").spki(ec_spki("1.2.840.10045.3.1.7", &comp)));
    assert_eq!(c.outcome == Outcome::Success, verifies, "{:?}", c.detail);
}

/// Ed25519: aws-lc-rs checks only a key's length (32 bytes); y = 2 (little-endian) is
/// not on edwards25519 (x^2 = 3 / (4d + 1) has no root), so no signature verifies with
/// it: bad_encoding. A real Ed25519 key still passes.
#[test]
fn finding_ed25519_key_not_on_curve() {
    let ed25519 = |k: &[u8]| seq(&[&seq(&[&oid("1.3.101.112")]), &bit_string(k)]);
    let mut y2 = [0u8; 32];
    y2[0] = 2;
    refused(
        &under_root(Tbs::leaf("edge", "root").spki(ed25519(&y2))),
        Reason::BadEncoding,
        "not an Ed25519 point",
    );
    let real = Ed25519KeyPair::generate().unwrap();
    passes(&under_root(
        Tbs::leaf("edge", "root").spki(ed25519(real.public_key().as_ref())),
    ));
}

// ---------------------------------------------------------------------------------
// Chains OpenSSL -x509_strict refuses and aop accepted.

/// A client certificate with basicConstraints { pathLenConstraint } and cA absent or
/// FALSE (OpenSSL -x509_strict: "Path length invalid for non-CA cert"; webpki tolerates
/// it on end entities): bad_encoding.
#[test]
fn finding_leaf_with_path_len_but_not_a_ca() {
    let bc = ext(BC, true, &seq(&[&uint(&[0])]));
    refused(
        &under_root(Tbs::leaf("edge", "root").with(bc)),
        Reason::BadEncoding,
        "pathLenConstraint 0 without cA",
    );
    let bc = ext(BC, true, &seq(&[&[0x01, 0x01, 0x00], &uint(&[3])]));
    // cA FALSE written out (a DEFAULT, not DER either) beside pathLen 3: bad_encoding.
    refused(
        &under_root(Tbs::leaf("edge", "root").with(bc)),
        Reason::BadEncoding,
        "",
    );
}

/// An empty subject written as one empty RDN SET (30 02 31 00) is empty, on a client
/// certificate without a SAN and on a CA.
#[test]
fn holds_empty_rdn_subject_is_empty() {
    let empty_rdn = seq(&[&tlv(0x31, &[])]);
    let mut t = Tbs::leaf("edge", "root").without(SAN);
    t.subject = empty_rdn.clone();
    refused(&under_root(t), Reason::BadEncoding, "");
    // A root whose subject (and so the client certificate's issuer) is one empty RDN.
    let k = Key::new();
    let mut root = Tbs::ca("x", "x", &k, None);
    root.subject = empty_rdn.clone();
    root.issuer = empty_rdn.clone();
    let root = root.sign(&k);
    let mut leaf = Tbs::leaf("edge", "x");
    leaf.issuer = empty_rdn;
    refused(&judge(&[&root], &[leaf.sign(&k)]), Reason::BadEncoding, "");
}

/// An empty subject with keyUsage cRLSign, even beside a critical SAN (RFC 5280
/// 4.1.2.6: a CRL issuer names itself in the subject; OpenSSL -x509_strict refuses it):
/// bad_encoding.
#[test]
fn finding_empty_subject_with_crl_sign_leaf() {
    let mut t = Tbs::leaf("edge", "root")
        .with(san_dns(&["edge.example"], true))
        .with(key_usage(DIGITAL_SIGNATURE | CRL_SIGN));
    t.subject = name("");
    refused(
        &under_root(t),
        Reason::BadEncoding,
        "empty subject with keyUsage cRLSign",
    );
}

/// A v1 certificate in the trust file that is not self-signed (a v1 intermediate the
/// operator put there) is not a CA: the v1 exception is for roots (OpenSSL's V1_ROOT).
#[test]
fn finding_v1_non_root_anchor_is_a_ca() {
    let (root_key, inter_key) = (Key::new(), Key::new());
    let mut v1 = Tbs::ca("inter", "root", &inter_key, None);
    v1.v1 = true;
    v1.exts.clear();
    let v1 = v1.sign(&root_key);
    refused(
        &judge(&[&v1], &[Tbs::leaf("edge", "inter").sign(&inter_key)]),
        Reason::NotACa,
        "",
    );
}

/// Two loaded copies of a root with the same name and key: the current one re-issued
/// with pathLenConstraint 0, an expired (or not yet valid) one without. Only copies
/// valid at the check's time count, so the current copy's pathLen holds: not_a_ca.
#[test]
fn finding_expired_anchor_copy_lifts_the_current_copys_constraints() {
    let k = Keys::new();
    let now = OffsetDateTime::now_utc();
    let current = k.root(Some(0)).sign(&k.root);
    let old = k
        .root(None)
        .sign_at(&k.root, now - Duration::days(800), now - Duration::days(30));
    let future = k
        .root(None)
        .sign_at(&k.root, now + Duration::days(30), now + Duration::days(800));
    let inter = k.inter(None).sign(&k.root);
    let leaf = Tbs::leaf("edge", "inter").sign(&k.inter);
    let chain = [leaf, inter];
    for anchors in [&[&current][..], &[&current, &old], &[&current, &future]] {
        refused(&judge(anchors, &chain), Reason::NotACa, "pathLenConstraint");
    }
    // A current copy with an unknown critical extension and the expired copy: the
    // current one is refused for its extension, and the expired one does not count.
    let crit = k
        .root(None)
        .with(ext("1.3.6.1.4.1.99999.1", true, &[5, 0]))
        .sign(&k.root);
    refused(
        &judge(&[&crit, &old], &chain),
        Reason::UnhandledCriticalExtension,
        "",
    );
}

/// The same for a URI name constraint (aop alone applies it; webpki cannot read it):
/// the current root permits URIs under example.org only; an expired copy without
/// nameConstraints no longer lets a spiffe://evil.org client through.
#[test]
fn finding_expired_anchor_copy_lifts_uri_name_constraints() {
    let k = Keys::new();
    let now = OffsetDateTime::now_utc();
    let nc = ext(
        "2.5.29.30",
        true,
        &seq(&[&tlv(0xa0, &seq(&[&tlv(0x86, b"example.org")]))]),
    );
    let current = k.root(None).with(nc).sign(&k.root);
    let old = k
        .root(None)
        .sign_at(&k.root, now - Duration::days(800), now - Duration::days(30));
    let san = ext(SAN, false, &seq(&[&tlv(0x86, b"spiffe://evil.org/edge/1")]));
    let leaf = Tbs::leaf("edge", "root").with(san).sign(&k.root);
    for anchors in [&[&current][..], &[&current, &old]] {
        refused(
            &judge(anchors, std::slice::from_ref(&leaf)),
            Reason::NameConstraints,
            "",
        );
    }
}

/// A v1 copy of a root next to a v3 copy (same name and key) that carries pathLen 0:
/// the v1 copy (no extensions, a CA by the v1 exception) lets every path through.
/// A documented consequence of the decided rule "the path stands if one valid copy
/// passes" (an operator who keeps a v1 copy of a root keeps its lack of constraints);
/// this pins today's behaviour.
#[test]
fn design_v1_copy_voids_the_v3_copys_constraints() {
    let k = Keys::new();
    let v3 = k.root(Some(0)).sign(&k.root);
    let mut v1 = k.root(None);
    v1.v1 = true;
    v1.exts.clear();
    let v1 = v1.sign(&k.root);
    let inter = k.inter(None).sign(&k.root);
    let leaf = Tbs::leaf("edge", "inter").sign(&k.inter);
    refused(
        &judge(&[&v3], &[leaf.clone(), inter.clone()]),
        Reason::NotACa,
        "pathLen",
    );
    passes(&judge(&[&v3, &v1], &[leaf, inter]));
}

// ---------------------------------------------------------------------------------
// Refusals on a less specific reason.

/// An intermediate whose key is an EC point off its curve: the key is the problem
/// (bad_encoding, as for a client key; OpenSSL: "unable to decode issuer public key"),
/// not the signature.
#[test]
fn finding_intermediate_key_that_does_not_parse_is_bad_signature() {
    let k = Keys::new();
    let root = k.root(None).sign(&k.root);
    let mut point = k.inter.0.public_key().as_ref().to_vec();
    *point.last_mut().unwrap() ^= 1;
    let inter = k
        .inter(None)
        .spki(ec_spki("1.2.840.10045.3.1.7", &point))
        .sign(&k.root);
    let leaf = Tbs::leaf("edge", "inter").sign(&k.inter);
    refused(&judge(&[&root], &[leaf, inter]), Reason::BadEncoding, "");
}

/// An intermediate with a real RSA key of 8208 bits that really signed the client
/// certificate: the origin verifies 2048 to 8192 bits, so unsupported_algorithm (as for
/// a client key of that size), not bad_signature.
#[test]
fn finding_intermediate_rsa_over_8192_is_bad_signature() {
    let rsa = Rsa::named("8208");
    let k = Keys::new();
    let root = k.root(None).sign(&k.root);
    let inter = k.inter(None).spki(rsa.spki()).sign(&k.root);
    // CN=edge under CN=inter, signed by the 8208-bit key: really signed.
    let hex = fixture("8208-leaf")[0];
    let der: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    let (_, x) = X509Certificate::from_der(&der).unwrap();
    assert!(rsa.verifies(x.tbs_certificate.as_ref(), &x.signature_value.data));
    let leaf = CertificateDer::from(der);
    refused(
        &judge(&[&root], &[leaf, inter]),
        Reason::UnsupportedAlgorithm,
        "8208 bits",
    );
    refused(
        &under_root(Tbs::leaf("edge", "root").spki(rsa.spki())),
        Reason::UnsupportedAlgorithm,
        "",
    );
}

/// A self-issued link certificate under an intermediate with pathLen 0: RFC 5280
/// (6.1.4 (l)) and OpenSSL do not count it; webpki counts every intermediate, so aop
/// refuses. A known difference (stricter than OpenSSL), pinned here as it is today:
/// bad_signature (webpki's error ranking keeps a dead branch's BadSignature over
/// PathLenConstraintViolated); the cause is the path length.
#[test]
fn difference_self_issued_under_intermediate_path_len() {
    let (k, link_key) = (Keys::new(), Key::new());
    let root = k.root(None).sign(&k.root);
    let inter = k.inter(Some(0)).sign(&k.root);
    let link = Tbs::ca("inter", "inter", &link_key, Some(0)).sign(&k.inter);
    let leaf = Tbs::leaf("edge", "inter").sign(&link_key);
    refused(
        &judge(&[&root], &[leaf.clone(), link.clone(), inter]),
        Reason::BadSignature,
        "",
    );
    let inter1 = k.inter(Some(1)).sign(&k.root);
    passes(&judge(&[&root], &[leaf, link, inter1]));
}

// ---------------------------------------------------------------------------------
// Hostile sizes (check_leaf runs before any signature is verified: anyone who can open
// a TLS connection controls every byte of the client certificate). Refused (or judged)
// without a panic; what they cost is aop-bench's business.

/// One OID of ~60 KB (one arc of 60,000 base-128 digits) as an attribute type in the
/// subject, and as an unknown critical extension.
#[test]
fn holds_huge_oid_arc() {
    let mut arc = vec![0x81u8; 60_000];
    *arc.last_mut().unwrap() = 0x01;
    let big_oid = tlv(0x06, &[&[0x2a][..], &arc].concat());
    let mut t = Tbs::leaf("edge", "root");
    t.subject = seq(&[&tlv(0x31, &seq(&[&big_oid, &tlv(0x0c, b"x")]))]);
    passes(&under_root(t));
    let ext_der = seq(&[&big_oid, &[0x01, 0x01, 0xff], &tlv(0x04, &[5, 0])]);
    refused(
        &under_root(Tbs::leaf("edge", "root").with(("big".into(), ext_der))),
        Reason::UnhandledCriticalExtension,
        "",
    );
}

/// Many extensions (3,000 tiny non-critical unknown ones) and many RDNs (4,000).
#[test]
fn holds_many_extensions_and_rdns() {
    let mut t = Tbs::leaf("edge", "root");
    for i in 0..3000u32 {
        let o = format!("1.3.6.1.4.1.99999.{i}");
        t.exts
            .push((o.clone(), seq(&[&oid(&o), &tlv(0x04, &[5, 0])])));
    }
    passes(&under_root(t));
    let mut t = Tbs::leaf("edge", "root");
    let rdn = tlv(0x31, &seq(&[&oid("2.5.4.3"), &tlv(0x0c, b"a,")]));
    let rdns: Vec<&[u8]> = (0..4000).map(|_| rdn.as_slice()).collect();
    t.subject = seq(&rdns);
    passes(&under_root(t));
}

// ---------------------------------------------------------------------------------
// Encodings that hold.

#[test]
fn holds_key_usage_encodings() {
    // keyUsage present with zero bits (03 01 00), and 03 02 00 00.
    for (label, ku) in [("ku-empty", vec![0u8]), ("ku-zero-byte", vec![0u8, 0])] {
        let c = under_root(Tbs::leaf("edge", "root").with(ext(KU, true, &tlv(3, &ku))));
        assert_eq!(
            c.outcome,
            Outcome::Failed(Reason::BadKeyUsage),
            "{label} {:?}",
            c.detail
        );
    }
    // Set bits in the unused (padding) bits: der-parser refuses (DER), so bad_encoding.
    // On a CA: keyCertSign (0x04) hidden in 3 unused bits.
    let k = Keys::new();
    refused(
        &k.judge(
            k.root(None),
            k.inter(None).with(ext(KU, true, &tlv(3, &[3, 0x86]))),
        ),
        Reason::BadEncoding,
        "",
    );
    // A client certificate with digitalSignature and keyCertSign hidden in padding.
    refused(
        &under_root(Tbs::leaf("edge", "root").with(ext(KU, true, &tlv(3, &[3, 0x84])))),
        Reason::BadEncoding,
        "",
    );
    // A 3-byte keyUsage (digitalSignature, decipherOnly and a trailing zero byte DER
    // would drop): read for its bits, digitalSignature among them; today accepted.
    let c =
        under_root(Tbs::leaf("edge", "root").with(ext(KU, true, &tlv(3, &[0, 0x80, 0x80, 0x00]))));
    passes(&c);
}

#[test]
fn holds_basic_constraints_encodings() {
    let k = Keys::new();
    // Negative pathLen on the anchor (only aop reads the anchor's).
    let neg = ext(BC, true, &seq(&[&[0x01, 0x01, 0xff], &tlv(2, &[0xff])]));
    refused(
        &k.judge(k.root(None).with(neg), k.inter(None)),
        Reason::BadEncoding,
        "",
    );
    // pathLen 2^40 on the anchor (OpenSSL: invalid too).
    let huge = ext(
        BC,
        true,
        &seq(&[&[0x01, 0x01, 0xff], &uint(&[1, 0, 0, 0, 0, 0])]),
    );
    refused(
        &k.judge(k.root(None).with(huge), k.inter(None)),
        Reason::BadEncoding,
        "",
    );
    // cA as BER TRUE 0x01 on the anchor (not a DER boolean): read as TRUE, as OpenSSL
    // reads it; today accepted (the anchor is the operator's own).
    let ber = ext(BC, true, &seq(&[&[0x01, 0x01, 0x01]]));
    passes(&k.judge(k.root(None).with(ber), k.inter(None)));
    // Explicit cA FALSE on the anchor -> not_a_ca.
    let f = ext(BC, true, &seq(&[&[0x01, 0x01, 0x00]]));
    refused(
        &k.judge(k.root(None).with(f), k.inter(None)),
        Reason::NotACa,
        "",
    );
    // basicConstraints with trailing bytes inside the extnValue on the anchor.
    let trailing = ext(
        BC,
        true,
        &[&seq(&[&[0x01, 0x01, 0xff]])[..], &[0x05, 0x00]].concat(),
    );
    let root = k.root(None).with(trailing).sign(&k.root);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.pem");
    std::fs::write(&path, aop_pki::pem_encode("CERTIFICATE", &root)).unwrap();
    let e = Trust::load(&TrustSpec::new([path]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("cannot be a trust anchor: BadDer"), "{e}");
    // pathLen only ({INTEGER 5}, cA absent) on the anchor -> not_a_ca.
    let only = ext(BC, true, &seq(&[&uint(&[5])]));
    refused(
        &k.judge(k.root(None).with(only), k.inter(None)),
        Reason::NotACa,
        "",
    );
}

/// Self-issued is DER-exact: a CA with the root's name in another string type
/// (PrintableString for UTF8String) is not self-issued (stricter than OpenSSL, which
/// compares canonical names), so it counts against the root's pathLen 0.
#[test]
fn holds_self_issued_is_der_exact() {
    let k = Keys::new();
    let root = k.root(Some(0)).sign(&k.root);
    // A link certificate whose subject == issuer == the root's name.
    let link = Tbs::ca("root", "root", &k.inter, Some(0)).sign(&k.root);
    passes(&judge(
        &[&root],
        &[Tbs::leaf("edge", "root").sign(&k.inter), link],
    ));
    // Subject "root" as PrintableString: not self-issued for aop.
    let mut t = Tbs::ca("root", "root", &k.inter, Some(0));
    t.subject = seq(&[&tlv(0x31, &seq(&[&oid("2.5.4.3"), &tlv(0x13, b"root")]))]);
    let link = t.clone().sign(&k.root);
    let mut leaf = Tbs::leaf("edge", "root");
    leaf.issuer = t.subject.clone();
    refused(
        &judge(&[&root], &[leaf.sign(&k.inter), link]),
        Reason::NotACa,
        "pathLenConstraint",
    );
}

/// A critical flag written as BER TRUE (0x01) is read as critical: no way around the
/// critical-extension check.
#[test]
fn holds_ber_critical_flag() {
    let e = seq(&[
        &oid("1.3.6.1.4.1.99999.1"),
        &[0x01, 0x01, 0x01],
        &tlv(0x04, &[5, 0]),
    ]);
    refused(
        &under_root(Tbs::leaf("edge", "root").with(("x".into(), e))),
        Reason::UnhandledCriticalExtension,
        "1.3.6.1.4.1.99999.1",
    );
    // Explicit critical FALSE (the DEFAULT written out): a non-critical unknown
    // extension, today accepted.
    let e = seq(&[
        &oid("1.3.6.1.4.1.99999.1"),
        &[0x01, 0x01, 0x00],
        &tlv(0x04, &[5, 0]),
    ]);
    passes(&under_root(Tbs::leaf("edge", "root").with(("x".into(), e))));
}

/// An issuerUniqueID holding extension-looking content: webpki refuses unique IDs on a
/// client certificate.
#[test]
fn holds_unique_ids() {
    let k = Keys::new();
    let root = k.root(None).sign(&k.root);
    let t = Tbs::leaf("edge", "root");
    let sig_alg = seq(&[&oid("1.2.840.10045.4.3.2")]);
    let now = OffsetDateTime::now_utc();
    let exts: Vec<&[u8]> = t.exts.iter().map(|(_, d)| d.as_slice()).collect();
    let crit = seq(&[
        &oid("1.3.6.1.4.1.99999.1"),
        &[0x01, 0x01, 0xff],
        &tlv(0x04, &[5, 0]),
    ]);
    let tbs = seq(&[
        &tlv(0xa0, &uint(&[2])),
        &uint(&[0x42]),
        &sig_alg,
        &t.issuer,
        &seq(&[
            &utc_time(now - Duration::hours(1)),
            &utc_time(now + Duration::days(3)),
        ]),
        &t.subject,
        &t.spki,
        &tlv(0x81, &[&[0u8][..], &crit].concat()),
        &tlv(0xa3, &seq(&exts)),
    ]);
    let sig = k.root.0.sign(&SystemRandom::new(), &tbs).unwrap();
    let leaf = CertificateDer::from(seq(&[&tbs, &sig_alg, &bit_string(sig.as_ref())]));
    refused(&judge(&[&root], &[leaf]), Reason::BadEncoding, "");
}

/// SPKI parameter confusion on the client key.
#[test]
fn holds_spki_confusion() {
    let point = Key::new().0.public_key().as_ref().to_vec();
    // id-ecPublicKey with the P-256 OID plus a trailing NULL in the AlgorithmIdentifier.
    let k = seq(&[
        &seq(&[
            &oid("1.2.840.10045.2.1"),
            &oid("1.2.840.10045.3.1.7"),
            &[5, 0],
        ]),
        &bit_string(&point),
    ]);
    refused(
        &under_root(Tbs::leaf("edge", "root").spki(k)),
        Reason::UnsupportedAlgorithm,
        "",
    );
    // rsaEncryption without NULL parameters.
    let mut rsa = rsa_spki(2048);
    let with_null = seq(&[&oid("1.2.840.113549.1.1.1"), &[0x05, 0x00]]);
    let pos = rsa
        .windows(with_null.len())
        .position(|w| w == with_null)
        .unwrap();
    let key_part = rsa.split_off(pos + with_null.len());
    let no_null = seq(&[&seq(&[&oid("1.2.840.113549.1.1.1")]), &key_part]);
    refused(
        &under_root(Tbs::leaf("edge", "root").spki(no_null)),
        Reason::UnsupportedAlgorithm,
        "",
    );
    // Ed448.
    let ed448 = seq(&[&seq(&[&oid("1.3.101.113")]), &bit_string(&[9; 57])]);
    refused(
        &under_root(Tbs::leaf("edge", "root").spki(ed448)),
        Reason::UnsupportedAlgorithm,
        "",
    );
    // An RSA SPKI whose key BIT STRING holds a whole RSA SPKI (aws-lc-rs's RSA parser
    // accepts RFC 5280 SPKI as well as RFC 8017).
    let nested = seq(&[
        &seq(&[&oid("1.2.840.113549.1.1.1"), &[0x05, 0x00]]),
        &bit_string(&rsa_spki(2048)),
    ]);
    refused(
        &under_root(Tbs::leaf("edge", "root").spki(nested)),
        Reason::BadEncoding,
        "",
    );
    // An RSA modulus of 8200 bits.
    refused(
        &under_root(Tbs::leaf("edge", "root").spki(rsa_spki(8200))),
        Reason::UnsupportedAlgorithm,
        "",
    );
}

/// The "anchor is the client certificate" shortcut needs the same DER: another
/// certificate with the name and key of a directly trusted self-signed client
/// certificate is judged as issued by a CA (not_a_ca).
#[test]
fn holds_leaf_as_anchor_shortcut() {
    let key = Key::new();
    let trusted = Tbs::leaf("edge", "edge").spki(key.spki()).sign(&key);
    let other = Tbs::leaf("evil", "edge").sign(&key);
    refused(
        &judge(&[&trusted], std::slice::from_ref(&other)),
        Reason::NotACa,
        "",
    );
    // The trusted certificate presented again as its own intermediate.
    refused(
        &judge(&[&trusted], &[other, trusted.clone()]),
        Reason::NotACa,
        "",
    );
    passes(&judge(&[&trusted], std::slice::from_ref(&trusted)));
}
