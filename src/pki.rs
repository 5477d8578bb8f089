//! Certificates for tests, made on the spot: with aop-pki where it can make them, and
//! with rcgen directly for the cases aop-pki refuses to make (a leaf that outlives an
//! expired CA, for instance).

use std::path::{Path, PathBuf};

use aop_pki::{Ca, CaRequest, ClientRequest, KeyType, OriginRequest, Overwrite};
use time::{Duration, OffsetDateTime};

/// A certificate file (leaf first, then its CA) and its key file.
#[derive(Clone, Debug)]
pub struct Leaf {
    /// `cert.pem`.
    pub cert: PathBuf,
    /// `key.pem`.
    pub key: PathBuf,
}

/// A CA written to a directory, ready to issue.
pub struct TestCa {
    /// The directory (ca.pem, ca.key).
    pub dir: PathBuf,
    ca: Ca,
}

/// The certificates most tests start from, in a fresh temporary directory: `origin-ca/`
/// with the origin's certificate for the given hosts (`origin-ca/origin/`), and
/// `edge-ca/` with the edge's client certificate (`edge-ca/edge/`).
pub struct World {
    /// The directory (removed on drop).
    pub dir: crate::TempDir,
    /// The origin's CA (its `pem()` is the roots a client trusts).
    pub origin_ca: TestCa,
    /// The origin's certificate.
    pub server: Leaf,
    /// The edge's CA (what an origin trusts).
    pub edge_ca: TestCa,
    /// The edge's client certificate.
    pub edge: Leaf,
}

impl World {
    /// Make them, the origin's certificate for `hosts`.
    pub fn new(hosts: &[&str]) -> Self {
        let dir = crate::tempdir().unwrap();
        let origin_ca = ca(dir.path(), "origin-ca");
        let server = origin_ca.origin("origin", hosts);
        let edge_ca = ca(dir.path(), "edge-ca");
        let edge = edge_ca.client("edge");
        Self {
            dir,
            origin_ca,
            server,
            edge_ca,
            edge,
        }
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// Create a CA named `name` in `root/name`, valid from `start` for `days`.
pub fn ca_valid_from(root: &Path, name: &str, start: OffsetDateTime, days: u32) -> TestCa {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let ca = CaRequest {
        days,
        ..CaRequest::new(name)
    }
    .create_in(&dir, start)
    .unwrap();
    TestCa { dir, ca }
}

/// Create a CA named `name` in `root/name`, valid now for ten years.
pub fn ca(root: &Path, name: &str) -> TestCa {
    ca_valid_from(root, name, now(), 3650)
}

impl TestCa {
    /// `ca.pem`.
    pub fn pem(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// `ca.pem` and `ca.key` as a [`Leaf`] (to present a CA as a client).
    pub fn as_leaf(&self) -> Leaf {
        Leaf {
            cert: self.dir.join("ca.pem"),
            key: self.dir.join("ca.key"),
        }
    }

    fn write(&self, name: &str, issued: &aop_pki::Issued) -> Leaf {
        let dir = self.dir.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let leaf = Leaf {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        };
        aop_pki::write_issued(issued, &leaf.cert, &leaf.key, Overwrite::Replace).unwrap();
        leaf
    }

    /// An edge client certificate with these SANs, valid from `start` for `days`.
    pub fn client_at(&self, name: &str, sans: &[&str], start: OffsetDateTime, days: u32) -> Leaf {
        let req = ClientRequest {
            common_name: name.to_owned(),
            sans: sans.iter().map(|s| (*s).to_owned()).collect(),
            days,
            key_type: KeyType::EcdsaP256,
        };
        let issued = self.ca.issue_client(&req, start).unwrap();
        self.write(name, &issued)
    }

    /// An edge client certificate, valid now for 90 days.
    pub fn client(&self, name: &str) -> Leaf {
        self.client_at(name, &[], now(), 90)
    }

    /// An origin server certificate for `hosts`, valid now for 365 days.
    pub fn origin(&self, name: &str, hosts: &[&str]) -> Leaf {
        let req = OriginRequest {
            hostnames: hosts.iter().map(|s| (*s).to_owned()).collect(),
            days: 365,
            key_type: KeyType::EcdsaP256,
        };
        let issued = self.ca.issue_origin(&req, now()).unwrap();
        self.write(name, &issued)
    }

    /// A CRL revoking `leaves`, written to `ca-dir/crl.pem`.
    pub fn crl(&self, leaves: &[&Leaf]) -> PathBuf {
        self.crl_at(leaves, now(), 7, "crl.pem")
    }

    /// A CRL revoking `leaves`, issued at `at` for `days`, written to `ca-dir/name`.
    pub fn crl_at(&self, leaves: &[&Leaf], at: OffsetDateTime, days: u32, name: &str) -> PathBuf {
        let certs: Vec<_> = leaves
            .iter()
            .map(|l| {
                (
                    l.cert.clone(),
                    aop_pki::load_certificates(&l.cert).unwrap().swap_remove(0),
                )
            })
            .collect();
        let refs: Vec<_> = certs.iter().map(|(p, c)| (p.as_path(), c)).collect();
        let pem = self.ca.create_crl(&refs, days, at).unwrap();
        let path = self.dir.join(name);
        std::fs::write(&path, pem).unwrap();
        path
    }
}

/// A CA that expired yesterday (valid for a year before that) and a client certificate
/// it signed that is itself still valid — which aop-pki refuses to make, and an origin
/// must refuse to accept. Returns (ca.pem, the leaf). The leaf's `cert.pem` holds the
/// leaf alone; `chain.pem` beside it holds the leaf and the CA.
pub fn expired_ca_with_valid_leaf(root: &Path) -> (PathBuf, Leaf) {
    let ca_valid = (now() - Duration::days(366), now() - Duration::days(1));
    ca_outside_its_validity(root, "expired", ca_valid)
}

/// A CA valid only from tomorrow (for a year) and a client certificate it signed that
/// is valid now — a trust anchor not valid yet. Laid out as [`expired_ca_with_valid_leaf`]
/// (under `not-yet-valid-ca/`, CN `not-yet-valid CA`).
pub fn future_ca_with_valid_leaf(root: &Path) -> (PathBuf, Leaf) {
    let ca_valid = (now() + Duration::days(1), now() + Duration::days(366));
    ca_outside_its_validity(root, "not-yet-valid", ca_valid)
}

/// `NAME-ca/` with a CA (CN `NAME CA`) valid over `(not_before, not_after)` and a leaf
/// valid from 10 days ago for 40 days, which rcgen signs whatever the CA's dates.
fn ca_outside_its_validity(
    root: &Path,
    name: &str,
    (not_before, not_after): (OffsetDateTime, OffsetDateTime),
) -> (PathBuf, Leaf) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let dir = root.join(format!("{name}-ca"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name = rcgen::DistinguishedName::new();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("{name} CA"));
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params.not_before = not_before;
    ca_params.not_after = not_after;
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);

    let mut leaf = CertificateParams::default();
    leaf.distinguished_name = rcgen::DistinguishedName::new();
    leaf.distinguished_name
        .push(DnType::CommonName, format!("edge under the {name} CA"));
    leaf.is_ca = IsCa::ExplicitNoCa;
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    leaf.not_before = now() - Duration::days(10);
    leaf.not_after = now() + Duration::days(30);
    leaf.use_authority_key_identifier_extension = true;
    let leaf_key = KeyPair::generate().unwrap();
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();

    let ca_pem = dir.join("ca.pem");
    std::fs::write(&ca_pem, ca_cert.pem()).unwrap();
    let out = Leaf {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    // The leaf alone: the chain check must then find the (expired) anchor itself.
    std::fs::write(&out.cert, leaf_cert.pem()).unwrap();
    // And with the CA in the presented chain, as cert.pem files usually are.
    std::fs::write(dir.join("chain.pem"), leaf_cert.pem() + &ca_cert.pem()).unwrap();
    std::fs::write(&out.key, leaf_key.serialize_pem()).unwrap();
    (ca_pem, out)
}

/// A client certificate with no extended key usage at all (webpki would accept it for
/// anything; the origin requires clientAuth), signed by `ca`.
pub fn client_without_eku(ca: &TestCa, root: &Path) -> Leaf {
    client_with(ca, root, "no-eku", Vec::new(), Vec::new())
}

/// A client certificate signed by `ca` with exactly these EKUs and extra extensions,
/// made with rcgen directly (aop-pki only makes well-formed ones).
pub fn client_with(
    ca: &TestCa,
    root: &Path,
    name: &str,
    ekus: Vec<rcgen::ExtendedKeyUsagePurpose>,
    extensions: Vec<rcgen::CustomExtension>,
) -> Leaf {
    use rcgen::{CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key =
        KeyPair::from_pem(&std::fs::read_to_string(ca.dir.join("ca.key")).unwrap()).unwrap();
    let ca_der = aop_pki::load_certificates(&ca.pem())
        .unwrap()
        .swap_remove(0);
    let issuer = Issuer::from_ca_cert_der(&ca_der, ca_key).unwrap();
    let mut p = CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, name);
    p.is_ca = IsCa::ExplicitNoCa;
    p.extended_key_usages = ekus;
    p.custom_extensions = extensions;
    p.not_before = now() - Duration::minutes(5);
    p.not_after = now() + Duration::days(30);
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, &issuer).unwrap();
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let leaf = Leaf {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    std::fs::write(&leaf.cert, cert.pem()).unwrap();
    std::fs::write(&leaf.key, key.serialize_pem()).unwrap();
    leaf
}

/// `leaf` with one bit of its CA's signature flipped (in the last byte of the leaf's
/// DER, inside the signature BIT STRING; the certificate still parses), written to
/// `root/NAME/` with the same key and the rest of the chain after it unchanged.
pub fn tampered(leaf: &Leaf, root: &Path, name: &str) -> Leaf {
    let chain = aop_pki::load_certificates(&leaf.cert).unwrap();
    let mut der = chain[0].as_ref().to_vec();
    *der.last_mut().unwrap() ^= 0x01;
    let mut pem = aop_pki::pem_encode("CERTIFICATE", &der);
    for c in &chain[1..] {
        pem += &aop_pki::pem_encode("CERTIFICATE", c.as_ref());
    }
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let out = Leaf {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    std::fs::write(&out.cert, pem).unwrap();
    std::fs::copy(&leaf.key, &out.key).unwrap();
    out
}

/// A CA and a client certificate signed with RSA-SHA1, which OpenSSL still makes and no
/// origin should accept. Made with `openssl` (a test peer). Returns (ca.pem, the leaf).
pub fn sha1_ca_and_client(root: &Path) -> (PathBuf, Leaf) {
    use std::process::Command;
    let dir = root.join("sha1");
    std::fs::create_dir_all(&dir).unwrap();
    let p = |n: &str| dir.join(n).display().to_string();
    let ok = |args: &[&str]| {
        let o = crate::run(Command::new("openssl").args(args));
        assert!(
            o.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    ok(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-sha1",
        "-days",
        "30",
        "-subj",
        "/CN=sha1 CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout",
        &p("ca.key"),
        "-out",
        &p("ca.pem"),
    ]);
    ok(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=sha1 edge",
        "-keyout",
        &p("key.pem"),
        "-out",
        &p("req.pem"),
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "extendedKeyUsage=clientAuth\nbasicConstraints=critical,CA:FALSE\n",
    )
    .unwrap();
    ok(&[
        "x509",
        "-req",
        "-sha1",
        "-in",
        &p("req.pem"),
        "-CA",
        &p("ca.pem"),
        "-CAkey",
        &p("ca.key"),
        "-CAcreateserial",
        "-days",
        "10",
        "-extfile",
        &p("ext.cnf"),
        "-out",
        &p("cert.pem"),
    ]);
    (
        dir.join("ca.pem"),
        Leaf {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        },
    )
}

/// A CA valid for 40 more days and a client certificate it signed that is valid for 100:
/// the leaf will outlive its issuer (aop-pki refuses to make this; operators manage to).
/// Returns (ca.pem, the leaf; its cert.pem holds the leaf alone).
pub fn leaf_outliving_ca(root: &Path) -> (PathBuf, Leaf) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let dir = root.join("short-ca");
    std::fs::create_dir_all(&dir).unwrap();
    let mut ca = CertificateParams::default();
    ca.distinguished_name = rcgen::DistinguishedName::new();
    ca.distinguished_name
        .push(DnType::CommonName, "short-lived CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = now() - Duration::days(1);
    ca.not_after = now() + Duration::days(40);
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let mut leaf = CertificateParams::default();
    leaf.distinguished_name = rcgen::DistinguishedName::new();
    leaf.distinguished_name.push(DnType::CommonName, "outlives");
    leaf.is_ca = IsCa::ExplicitNoCa;
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    leaf.not_before = now() - Duration::days(1);
    leaf.not_after = now() + Duration::days(100);
    leaf.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    let out = Leaf {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    std::fs::write(&out.cert, cert.pem()).unwrap();
    std::fs::write(&out.key, key.serialize_pem()).unwrap();
    (dir.join("ca.pem"), out)
}

/// A chain built to make a path builder work: `n` CAs named exactly like `ca` (its one
/// CN), with fresh keys and no path-length limit, self-signed, and a client
/// certificate issued by the first of them. A verifier that trusts `ca` tries each
/// impostor as the issuer of the client certificate and of every other impostor, and
/// checks a signature against `ca`'s key at the end of each path: webpki alone verifies
/// 16 signatures for `n = 3`. The leaf's `cert.pem` holds the leaf and the `n` impostors,
/// in the order a client would present them.
pub fn impostor_chain(ca: &TestCa, root: &Path, n: usize) -> Leaf {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let ca_der = aop_pki::load_certificates(&ca.pem())
        .unwrap()
        .swap_remove(0);
    // aop-pki names a CA with one CN, which rcgen encodes the same way here.
    let info = aop_pki::CertInfo::from_der(&ca_der, now()).unwrap();
    let cn = info.common_name.unwrap();
    assert_eq!(info.subject, format!("CN={cn}"), "a CA named by one CN");
    let mut pem = String::new();
    let mut first = None;
    let mut impostors = String::new();
    for _ in 0..n {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, cn.as_str());
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.not_before = now() - Duration::minutes(5);
        params.not_after = now() + Duration::days(30);
        let key = KeyPair::generate().unwrap();
        impostors += &params.self_signed(&key).unwrap().pem();
        first.get_or_insert((params, key));
    }
    let (params, key) = first.expect("n > 0");
    let issuer = Issuer::new(params, key);
    let mut leaf = CertificateParams::default();
    leaf.distinguished_name = rcgen::DistinguishedName::new();
    leaf.distinguished_name
        .push(DnType::CommonName, "impostor edge");
    leaf.is_ca = IsCa::ExplicitNoCa;
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    leaf.not_before = now() - Duration::minutes(5);
    leaf.not_after = now() + Duration::days(30);
    let leaf_key = KeyPair::generate().unwrap();
    pem += &leaf.signed_by(&leaf_key, &issuer).unwrap().pem();
    pem += &impostors;
    let dir = root.join("impostors");
    std::fs::create_dir_all(&dir).unwrap();
    let out = Leaf {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    std::fs::write(&out.cert, pem).unwrap();
    std::fs::write(&out.key, leaf_key.serialize_pem()).unwrap();
    out
}

/// A certificate made with rcgen for a test chain, field by field as the test wants it
/// (aop-pki only makes well-formed ones): its PEM, its key, and the issuer it can be.
pub struct Made {
    /// The certificate, PEM.
    pub pem: String,
    /// Its private key, PEM.
    pub key: String,
    /// It, as the issuer of what it signs next.
    pub issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl Made {
    /// Sign `params` (a fresh P-256 key) with `by`, or self-sign them.
    pub fn new(params: rcgen::CertificateParams, by: Option<&Self>) -> Self {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = match by {
            Some(issuer) => params.signed_by(&key, &issuer.issuer),
            None => params.self_signed(&key),
        }
        .unwrap();
        Self {
            pem: cert.pem(),
            key: key.serialize_pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// Write the certificate alone (a trust anchor) to `root/name.pem`.
    pub fn write_anchor(&self, root: &Path, name: &str) -> PathBuf {
        let path = root.join(format!("{name}.pem"));
        std::fs::write(&path, &self.pem).unwrap();
        path
    }
}

/// rcgen parameters with this CN only, valid from five minutes ago for 30 days.
pub fn named(cn: &str) -> rcgen::CertificateParams {
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    p.not_before = now() - Duration::minutes(5);
    p.not_after = now() + Duration::days(30);
    p
}

/// A well-formed CA's parameters ([`named`]): critical basicConstraints cA (with this
/// pathLenConstraint, if any), keyUsage keyCertSign and cRLSign.
pub fn ca_params(cn: &str, path_len: Option<u8>) -> rcgen::CertificateParams {
    use rcgen::BasicConstraints;
    let mut p = named(cn);
    p.is_ca = rcgen::IsCa::Ca(path_len.map_or(BasicConstraints::Unconstrained, |n| {
        BasicConstraints::Constrained(n)
    }));
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    p
}

/// A well-formed client leaf's parameters ([`named`]): basicConstraints cA=false,
/// keyUsage digitalSignature, EKU clientAuth, no SAN.
pub fn client_params(cn: &str) -> rcgen::CertificateParams {
    let mut p = named(cn);
    p.is_ca = rcgen::IsCa::ExplicitNoCa;
    p.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    p
}

/// Write `chain` (the client's certificate first, then intermediates) and the first
/// one's key to `root/name/` (cert.pem, key.pem).
pub fn write_chain(root: &Path, name: &str, chain: &[&Made]) -> Leaf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let leaf = Leaf {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    let pem: String = chain.iter().map(|m| m.pem.as_str()).collect();
    std::fs::write(&leaf.cert, pem).unwrap();
    std::fs::write(&leaf.key, &chain[0].key).unwrap();
    leaf
}
