//! A certificate forge for tests: X.509 DER built field by field, so a test can make
//! the certificates no issuing library will (a v1 root, an empty issuer, a notBefore in
//! 1949, a non-minimal serial, an EC point off its curve, a critical extension nobody
//! knows, a nameConstraints of every form) and sign them with a real key.
//!
//! [`Cert`] is the TBSCertificate's fields; [`Cert::sign`] signs it with a [`Key`] from
//! the pool ([`key`]: each key type generated once per process, RSA keygen being slow).
//! SHA-1 and MD5 signatures, and RSA-1024 keys, come from `openssl` (aws-lc-rs makes
//! neither); everything else is signed in-process by rcgen's key pairs.
//!
//! Nothing here checks what it builds: that is the point.

use std::collections::HashMap;
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use rcgen::{PublicKeyData as _, SigningKey as _};
use time::OffsetDateTime;

/// DER's tag-length-value: `tag` followed by the definite length of `content` and
/// `content` itself.
pub fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

/// A SEQUENCE of already-encoded parts.
pub fn seq<I: IntoIterator<Item = Vec<u8>>>(parts: I) -> Vec<u8> {
    tlv(0x30, &parts.into_iter().flatten().collect::<Vec<u8>>())
}

/// An OBJECT IDENTIFIER from its dotted form (`"2.5.29.19"`).
pub fn oid(dotted: &str) -> Vec<u8> {
    let arcs: Vec<u64> = dotted
        .split('.')
        .map(|a| a.parse().expect("an OID arc is a number"))
        .collect();
    let mut body = Vec::new();
    let mut base128 = |mut v: u64| {
        let mut chunk = vec![(v & 0x7f) as u8];
        v >>= 7;
        while v > 0 {
            chunk.push(0x80 | (v & 0x7f) as u8);
            v >>= 7;
        }
        chunk.reverse();
        body.extend(chunk);
    };
    base128(arcs[0] * 40 + arcs[1]);
    for a in &arcs[2..] {
        base128(*a);
    }
    tlv(0x06, &body)
}

/// An INTEGER whose content octets are exactly `bytes` (no minimal-encoding fix-up: a
/// test may want a leading zero, or a negative number).
pub fn integer_bytes(bytes: &[u8]) -> Vec<u8> {
    tlv(0x02, bytes)
}

/// A small non-negative INTEGER, minimally encoded.
pub fn integer(v: u64) -> Vec<u8> {
    let mut bytes: Vec<u8> = v
        .to_be_bytes()
        .into_iter()
        .skip_while(|b| *b == 0)
        .collect();
    if bytes.first().is_none_or(|b| b & 0x80 != 0) {
        bytes.insert(0, 0);
    }
    integer_bytes(&bytes)
}

/// A BOOLEAN.
pub fn boolean(v: bool) -> Vec<u8> {
    tlv(0x01, &[if v { 0xff } else { 0 }])
}

/// An OCTET STRING.
pub fn octets(bytes: &[u8]) -> Vec<u8> {
    tlv(0x04, bytes)
}

/// A BIT STRING of whole octets (no unused bits).
pub fn bits(bytes: &[u8]) -> Vec<u8> {
    let mut body = vec![0];
    body.extend_from_slice(bytes);
    tlv(0x03, &body)
}

/// A NULL.
pub fn null() -> Vec<u8> {
    vec![0x05, 0x00]
}

/// `[n]` EXPLICIT (constructed context tag) around `inner`.
pub fn explicit(n: u8, inner: &[u8]) -> Vec<u8> {
    tlv(0xa0 | n, inner)
}

/// Well-known OIDs, dotted.
pub mod oids {
    /// commonName.
    pub const CN: &str = "2.5.4.3";
    /// organizationName.
    pub const O: &str = "2.5.4.10";
    /// organizationalUnitName.
    pub const OU: &str = "2.5.4.11";
    /// countryName.
    pub const C: &str = "2.5.4.6";
    /// emailAddress (PKCS #9), the subject attribute.
    pub const EMAIL: &str = "1.2.840.113549.1.9.1";
    /// basicConstraints.
    pub const BASIC_CONSTRAINTS: &str = "2.5.29.19";
    /// keyUsage.
    pub const KEY_USAGE: &str = "2.5.29.15";
    /// extKeyUsage.
    pub const EXT_KEY_USAGE: &str = "2.5.29.37";
    /// subjectAltName.
    pub const SAN: &str = "2.5.29.17";
    /// nameConstraints.
    pub const NAME_CONSTRAINTS: &str = "2.5.29.30";
    /// certificatePolicies.
    pub const CERT_POLICIES: &str = "2.5.29.32";
    /// policyMappings.
    pub const POLICY_MAPPINGS: &str = "2.5.29.33";
    /// policyConstraints.
    pub const POLICY_CONSTRAINTS: &str = "2.5.29.36";
    /// inhibitAnyPolicy.
    pub const INHIBIT_ANY_POLICY: &str = "2.5.29.54";
    /// cRLDistributionPoints.
    pub const CRL_DP: &str = "2.5.29.31";
    /// subjectKeyIdentifier.
    pub const SKI: &str = "2.5.29.14";
    /// authorityKeyIdentifier.
    pub const AKI: &str = "2.5.29.35";
    /// anyPolicy.
    pub const ANY_POLICY: &str = "2.5.29.32.0";
    /// id-kp-clientAuth.
    pub const CLIENT_AUTH: &str = "1.3.6.1.5.5.7.3.2";
    /// id-kp-serverAuth.
    pub const SERVER_AUTH: &str = "1.3.6.1.5.5.7.3.1";
    /// id-kp-codeSigning.
    pub const CODE_SIGNING: &str = "1.3.6.1.5.5.7.3.3";
    /// anyExtendedKeyUsage.
    pub const ANY_EKU: &str = "2.5.29.37.0";
}

/// One attribute value and the string type it is written in.
#[derive(Clone, Debug)]
pub enum Str {
    /// UTF8String.
    Utf8(String),
    /// PrintableString.
    Printable(String),
    /// IA5String.
    Ia5(String),
}

impl Str {
    fn der(&self) -> Vec<u8> {
        match self {
            Self::Utf8(s) => tlv(0x0c, s.as_bytes()),
            Self::Printable(s) => tlv(0x13, s.as_bytes()),
            Self::Ia5(s) => tlv(0x16, s.as_bytes()),
        }
    }
}

/// A distinguished name: its attributes, one per RDN, in order. Empty is allowed.
#[derive(Clone, Debug, Default)]
pub struct Name(pub Vec<(&'static str, Str)>);

impl Name {
    /// The empty name (an empty SEQUENCE).
    pub fn empty() -> Self {
        Self(Vec::new())
    }

    /// `CN=cn`.
    pub fn cn(cn: &str) -> Self {
        Self(vec![(oids::CN, Str::Utf8(cn.to_owned()))])
    }

    /// This name with `oid=value` (UTF8String) appended.
    pub fn with(mut self, oid: &'static str, value: &str) -> Self {
        self.0.push((oid, Str::Utf8(value.to_owned())));
        self
    }

    /// This name with an emailAddress attribute (IA5String) appended.
    pub fn with_email(mut self, email: &str) -> Self {
        self.0.push((oids::EMAIL, Str::Ia5(email.to_owned())));
        self
    }

    /// The Name's DER.
    pub fn der(&self) -> Vec<u8> {
        seq(self
            .0
            .iter()
            .map(|(o, v)| tlv(0x31, &seq([oid(o), v.der()]))))
    }
}

/// A validity bound and its encoding.
#[derive(Clone, Copy, Debug)]
pub enum Time {
    /// UTCTime (`YYMMDDHHMMSSZ`), as RFC 5280 asks for 1950–2049.
    Utc(OffsetDateTime),
    /// GeneralizedTime (`YYYYMMDDHHMMSSZ`).
    Generalized(OffsetDateTime),
    /// What RFC 5280 asks: UTCTime for 1950–2049, GeneralizedTime otherwise.
    Auto(OffsetDateTime),
    /// UTCTime without seconds (`YYMMDDHHMMZ`): valid BER, refused by RFC 5280.
    UtcNoSeconds(OffsetDateTime),
}

impl Time {
    /// The time itself.
    pub fn at(self) -> OffsetDateTime {
        match self {
            Self::Utc(t) | Self::Generalized(t) | Self::Auto(t) | Self::UtcNoSeconds(t) => t,
        }
    }

    /// The DER.
    pub fn der(self) -> Vec<u8> {
        let t = self.at();
        let (y, mo, d, h, mi, s) = (
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
        );
        match self {
            Self::Auto(_) if (1950..2050).contains(&y) => Self::Utc(t).der(),
            Self::Auto(_) | Self::Generalized(_) => tlv(
                0x18,
                format!("{y:04}{mo:02}{d:02}{h:02}{mi:02}{s:02}Z").as_bytes(),
            ),
            Self::Utc(_) => tlv(
                0x17,
                format!("{:02}{mo:02}{d:02}{h:02}{mi:02}{s:02}Z", y % 100).as_bytes(),
            ),
            Self::UtcNoSeconds(_) => tlv(
                0x17,
                format!("{:02}{mo:02}{d:02}{h:02}{mi:02}Z", y % 100).as_bytes(),
            ),
        }
    }
}

/// A GeneralName (RFC 5280 4.2.1.6), for SANs and name constraints.
#[derive(Clone, Debug)]
pub enum GeneralName {
    /// otherName: a type OID and its value (any DER).
    Other(&'static str, Vec<u8>),
    /// rfc822Name.
    Email(String),
    /// dNSName.
    Dns(String),
    /// directoryName.
    Dir(Name),
    /// uniformResourceIdentifier.
    Uri(String),
    /// iPAddress: 4 or 16 octets in a SAN; address and mask (8 or 32) in a constraint;
    /// any length when a test wants a malformed one.
    Ip(Vec<u8>),
    /// registeredID.
    Registered(&'static str),
}

impl GeneralName {
    /// The DER (context-tagged, as in a GeneralNames sequence).
    pub fn der(&self) -> Vec<u8> {
        match self {
            Self::Other(type_id, value) => tlv(0xa0, &[oid(type_id), explicit(0, value)].concat()),
            Self::Email(s) => tlv(0x81, s.as_bytes()),
            Self::Dns(s) => tlv(0x82, s.as_bytes()),
            Self::Dir(n) => explicit(4, &n.der()),
            Self::Uri(s) => tlv(0x86, s.as_bytes()),
            Self::Ip(b) => tlv(0x87, b),
            Self::Registered(o) => {
                let mut d = oid(o);
                d[0] = 0x88;
                d
            }
        }
    }
}

/// One extension: its OID, criticality and value (the DER inside the OCTET STRING).
#[derive(Clone, Debug)]
pub struct Ext {
    /// The extension's OID, dotted.
    pub oid: String,
    /// The critical flag (written only when true, as DER asks).
    pub critical: bool,
    /// extnValue's content.
    pub value: Vec<u8>,
}

/// keyUsage bits (RFC 5280 4.2.1.3), to OR together for [`Ext::key_usage`].
pub mod ku {
    /// digitalSignature.
    pub const DIGITAL_SIGNATURE: u16 = 1 << 0;
    /// nonRepudiation (contentCommitment).
    pub const NON_REPUDIATION: u16 = 1 << 1;
    /// keyEncipherment.
    pub const KEY_ENCIPHERMENT: u16 = 1 << 2;
    /// dataEncipherment.
    pub const DATA_ENCIPHERMENT: u16 = 1 << 3;
    /// keyAgreement.
    pub const KEY_AGREEMENT: u16 = 1 << 4;
    /// keyCertSign.
    pub const KEY_CERT_SIGN: u16 = 1 << 5;
    /// cRLSign.
    pub const CRL_SIGN: u16 = 1 << 6;
}

impl Ext {
    /// Any extension.
    pub fn new(oid: &str, critical: bool, value: Vec<u8>) -> Self {
        Self {
            oid: oid.to_owned(),
            critical,
            value,
        }
    }

    /// The same extension with another critical flag.
    pub fn critical(mut self, critical: bool) -> Self {
        self.critical = critical;
        self
    }

    /// basicConstraints: cA and an optional pathLenConstraint.
    pub fn basic_constraints(critical: bool, ca: bool, path_len: Option<u64>) -> Self {
        let mut parts = Vec::new();
        if ca {
            parts.push(boolean(true));
        }
        if let Some(n) = path_len {
            parts.push(integer(n));
        }
        Self::new(oids::BASIC_CONSTRAINTS, critical, seq(parts))
    }

    /// keyUsage with these [`ku`] bits (DER: trailing zero bits dropped).
    pub fn key_usage(critical: bool, usage: u16) -> Self {
        // Bit 0 is the most significant bit of the first octet.
        let mut octets_: Vec<u8> = vec![0; 2];
        for bit in 0..9 {
            if usage & (1 << bit) != 0 {
                octets_[bit / 8] |= 0x80 >> (bit % 8);
            }
        }
        while octets_.last() == Some(&0) {
            octets_.pop();
        }
        let unused = octets_.last().map_or(0, |last| last.trailing_zeros() as u8);
        let mut body = vec![unused];
        body.extend(octets_);
        Self::new(oids::KEY_USAGE, critical, tlv(0x03, &body))
    }

    /// extKeyUsage with these purposes (OIDs, dotted).
    pub fn eku(critical: bool, purposes: &[&str]) -> Self {
        Self::new(
            oids::EXT_KEY_USAGE,
            critical,
            seq(purposes.iter().map(|p| oid(p))),
        )
    }

    /// subjectAltName with these names (none: an empty SAN extension).
    pub fn san(critical: bool, names: &[GeneralName]) -> Self {
        Self::new(oids::SAN, critical, seq(names.iter().map(GeneralName::der)))
    }

    /// nameConstraints with these permitted and excluded subtrees (each omitted when
    /// empty).
    pub fn name_constraints(
        critical: bool,
        permitted: &[GeneralName],
        excluded: &[GeneralName],
    ) -> Self {
        let subtrees = |tag: u8, names: &[GeneralName]| {
            let body: Vec<u8> = names.iter().flat_map(|n| seq([n.der()])).collect();
            tlv(tag, &body)
        };
        let mut parts = Vec::new();
        if !permitted.is_empty() {
            parts.push(subtrees(0xa0, permitted));
        }
        if !excluded.is_empty() {
            parts.push(subtrees(0xa1, excluded));
        }
        Self::new(oids::NAME_CONSTRAINTS, critical, seq(parts))
    }

    /// certificatePolicies with these policy OIDs (no qualifiers).
    pub fn policies(critical: bool, policies: &[&str]) -> Self {
        Self::new(
            oids::CERT_POLICIES,
            critical,
            seq(policies.iter().map(|p| seq([oid(p)]))),
        )
    }

    /// subjectKeyIdentifier.
    pub fn ski(id: &[u8]) -> Self {
        Self::new(oids::SKI, false, octets(id))
    }

    /// authorityKeyIdentifier with a keyIdentifier only.
    pub fn aki(id: &[u8]) -> Self {
        Self::new(oids::AKI, false, seq([tlv(0x80, id)]))
    }

    fn der(&self) -> Vec<u8> {
        let mut parts = vec![oid(&self.oid)];
        if self.critical {
            parts.push(boolean(true));
        }
        parts.push(octets(&self.value));
        seq(parts)
    }
}

/// The key identifier aop's tests give a public key: the first 20 octets of the SHA-256
/// of its SubjectPublicKeyInfo.
pub fn key_id(spki: &[u8]) -> Vec<u8> {
    aop_pki::Sha256Fingerprint::of(spki).as_bytes()[..20].to_vec()
}

/// The key types of the pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// ECDSA P-256 (signs with SHA-256).
    EcdsaP256,
    /// ECDSA P-384 (signs with SHA-384).
    EcdsaP384,
    /// ECDSA P-521 (signs with SHA-512).
    EcdsaP521,
    /// Ed25519.
    Ed25519,
    /// RSA 2048 (signs PKCS #1 v1.5 with SHA-256).
    Rsa2048,
    /// RSA 4096.
    Rsa4096,
    /// RSA 1024, made by `openssl` (aws-lc-rs refuses to make one); signs through
    /// `openssl` too.
    Rsa1024,
}

impl KeyKind {
    /// Whether it is an ECDSA key.
    pub fn is_ec(self) -> bool {
        matches!(self, Self::EcdsaP256 | Self::EcdsaP384 | Self::EcdsaP521)
    }

    /// The name used in test case descriptions (`ecdsa-p256`, `rsa2048`, …).
    pub fn name(self) -> &'static str {
        match self {
            Self::EcdsaP256 => "ecdsa-p256",
            Self::EcdsaP384 => "ecdsa-p384",
            Self::EcdsaP521 => "ecdsa-p521",
            Self::Ed25519 => "ed25519",
            Self::Rsa2048 => "rsa2048",
            Self::Rsa4096 => "rsa4096",
            Self::Rsa1024 => "rsa1024",
        }
    }
}

/// The digest a signature is made with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Digest {
    /// The key's own (rcgen's choice: SHA-256 for P-256 and RSA, SHA-384 for P-384,
    /// SHA-512 for P-521; Ed25519 has none).
    Native,
    /// SHA-1, by `openssl` (RSA and ECDSA keys).
    Sha1,
    /// MD5, by `openssl` (RSA keys).
    Md5,
    /// SHA-384, by `openssl` (RSA and ECDSA keys: P-256 with SHA-384, say).
    Sha384,
    /// SHA-512, by `openssl` (RSA and ECDSA keys).
    Sha512,
    /// RSASSA-PSS with SHA-256, MGF1-SHA-256 and a 32-octet salt, by `openssl` (RSA keys).
    RsaPss,
}

/// A key of the pool: its private key (PKCS #8 PEM), its SubjectPublicKeyInfo, and an
/// rcgen key pair when aws-lc-rs can hold it.
#[derive(Debug)]
pub struct Key {
    /// Its type.
    pub kind: KeyKind,
    /// The private key, PKCS #8 PEM (`PRIVATE KEY`).
    pub pem: String,
    /// SubjectPublicKeyInfo DER.
    pub spki: Vec<u8>,
    pair: Option<rcgen::KeyPair>,
}

/// The pool's key `slot` of type `kind`, generated on first use and kept for the
/// process (so RSA keygen happens once per key).
pub fn key(kind: KeyKind, slot: u8) -> &'static Key {
    /// One cell per (type, slot), leaked: keys live for the process.
    type Pool = Mutex<HashMap<(KeyKind, u8), &'static OnceLock<Key>>>;
    static POOL: OnceLock<Pool> = OnceLock::new();
    let cell: &'static OnceLock<Key> = POOL
        .get_or_init(Default::default)
        .lock()
        .unwrap()
        .entry((kind, slot))
        .or_insert_with(|| Box::leak(Box::new(OnceLock::new())));
    // Generated outside the pool's lock: another thread may make another key meanwhile.
    cell.get_or_init(|| Key::generate(kind))
}

impl Key {
    fn generate(kind: KeyKind) -> Self {
        let pair = match kind {
            KeyKind::EcdsaP256 => rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
            KeyKind::EcdsaP384 => rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384),
            KeyKind::EcdsaP521 => rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P521_SHA512),
            KeyKind::Ed25519 => rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519),
            KeyKind::Rsa2048 => {
                rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
            }
            KeyKind::Rsa4096 => {
                rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_4096)
            }
            KeyKind::Rsa1024 => {
                let pem = openssl(
                    &[
                        "genpkey",
                        "-algorithm",
                        "RSA",
                        "-pkeyopt",
                        "rsa_keygen_bits:1024",
                    ],
                    b"",
                );
                let pem = String::from_utf8(pem).unwrap();
                let spki = openssl(&["pkey", "-pubout", "-outform", "DER"], pem.as_bytes());
                return Self {
                    kind,
                    pem,
                    spki,
                    pair: None,
                };
            }
        }
        .expect("key generation");
        Self {
            kind,
            pem: pair.serialize_pem(),
            spki: pair.subject_public_key_info(),
            pair: Some(pair),
        }
    }

    /// The AlgorithmIdentifier of a signature by this key with `digest`.
    pub fn sig_alg(&self, digest: Digest) -> Vec<u8> {
        let rsa = |o: &str| seq([oid(o), null()]);
        match (self.kind, digest) {
            (KeyKind::EcdsaP256, Digest::Native) => seq([oid("1.2.840.10045.4.3.2")]),
            (KeyKind::EcdsaP384, Digest::Native) => seq([oid("1.2.840.10045.4.3.3")]),
            (KeyKind::EcdsaP521, Digest::Native) => seq([oid("1.2.840.10045.4.3.4")]),
            (KeyKind::Ed25519, _) => seq([oid("1.3.101.112")]),
            (_, Digest::Sha384) if self.kind.is_ec() => seq([oid("1.2.840.10045.4.3.3")]),
            (_, Digest::Sha512) if self.kind.is_ec() => seq([oid("1.2.840.10045.4.3.4")]),
            (KeyKind::EcdsaP256 | KeyKind::EcdsaP384 | KeyKind::EcdsaP521, _) => {
                seq([oid("1.2.840.10045.4.1")]) // ecdsa-with-SHA1 (MD5 and PSS have none)
            }
            (_, Digest::Native) => rsa("1.2.840.113549.1.1.11"),
            (_, Digest::Sha1) => rsa("1.2.840.113549.1.1.5"),
            (_, Digest::Md5) => rsa("1.2.840.113549.1.1.4"),
            (_, Digest::Sha384) => rsa("1.2.840.113549.1.1.12"),
            (_, Digest::Sha512) => rsa("1.2.840.113549.1.1.13"),
            (_, Digest::RsaPss) => {
                let sha256 = || seq([oid("2.16.840.1.101.3.4.2.1"), null()]);
                seq([
                    oid("1.2.840.113549.1.1.10"),
                    seq([
                        explicit(0, &sha256()),
                        explicit(1, &seq([oid("1.2.840.113549.1.1.8"), sha256()])),
                        explicit(2, &integer(32)),
                    ]),
                ])
            }
        }
    }

    /// A signature over `message` with `digest`.
    pub fn sign(&self, message: &[u8], digest: Digest) -> Vec<u8> {
        match (&self.pair, digest) {
            (Some(pair), Digest::Native) => pair.sign(message).expect("sign"),
            _ => {
                let dir = tempfile::tempdir().unwrap();
                let key = dir.path().join("key.pem");
                std::fs::write(&key, &self.pem).unwrap();
                let mut args = vec![
                    "dgst",
                    match digest {
                        Digest::Native | Digest::RsaPss => "-sha256",
                        Digest::Sha1 => "-sha1",
                        Digest::Md5 => "-md5",
                        Digest::Sha384 => "-sha384",
                        Digest::Sha512 => "-sha512",
                    },
                ];
                if digest == Digest::RsaPss {
                    args.extend([
                        "-sigopt",
                        "rsa_padding_mode:pss",
                        "-sigopt",
                        "rsa_pss_saltlen:32",
                        "-sigopt",
                        "rsa_mgf1_md:sha256",
                    ]);
                }
                args.extend(["-sign", key.to_str().unwrap()]);
                openssl(&args, message)
            }
        }
    }
}

/// Run `openssl args` with `input` on stdin; its stdout (panics on failure).
fn openssl(args: &[&str], input: &[u8]) -> Vec<u8> {
    let o = crate::run_within(
        Command::new("openssl").args(args),
        input,
        crate::PEER_DEADLINE,
    );
    assert!(
        o.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o.stdout
}

/// An SPKI of `kind` made by `openssl` for keys aws-lc-rs will not make or hold:
/// `"dsa"` (DSA 2048) or `"ec-explicit"` (a P-256 key with explicit curve parameters).
pub fn openssl_spki(kind: &str) -> Vec<u8> {
    let pem = match kind {
        "dsa" => {
            let params = openssl(
                &[
                    "genpkey",
                    "-genparam",
                    "-algorithm",
                    "DSA",
                    "-pkeyopt",
                    "dsa_paramgen_bits:2048",
                ],
                b"",
            );
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("params.pem");
            std::fs::write(&p, params).unwrap();
            openssl(&["genpkey", "-paramfile", p.to_str().unwrap()], b"")
        }
        "ec-explicit" => openssl(
            &[
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-param_enc",
                "explicit",
            ],
            b"",
        ),
        other => panic!("openssl_spki: unknown kind {other}"),
    };
    openssl(&["pkey", "-pubout", "-outform", "DER"], &pem)
}

/// X.509 version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// v1: no version field, no extensions written.
    V1,
    /// v3.
    V3,
}

/// The fields of one certificate to forge.
#[derive(Clone, Debug)]
pub struct Cert {
    /// X.509 version.
    pub version: Version,
    /// The serial's content octets, written as given.
    pub serial: Vec<u8>,
    /// The TBS signature AlgorithmIdentifier (`None`: the signer's).
    pub tbs_sig_alg: Option<Vec<u8>>,
    /// The issuer name.
    pub issuer: Name,
    /// The subject name.
    pub subject: Name,
    /// notBefore.
    pub not_before: Time,
    /// notAfter.
    pub not_after: Time,
    /// SubjectPublicKeyInfo DER, as given.
    pub spki: Vec<u8>,
    /// Extensions, in order (ignored for v1).
    pub extensions: Vec<Ext>,
}

impl Cert {
    /// The TBSCertificate's DER, with `sig_alg` where the signer's algorithm goes.
    pub fn tbs(&self, sig_alg: &[u8]) -> Vec<u8> {
        let mut parts = Vec::new();
        if self.version == Version::V3 {
            parts.push(explicit(0, &integer(2)));
        }
        parts.push(integer_bytes(&self.serial));
        parts.push(self.tbs_sig_alg.clone().unwrap_or_else(|| sig_alg.to_vec()));
        parts.push(self.issuer.der());
        parts.push(seq([self.not_before.der(), self.not_after.der()]));
        parts.push(self.subject.der());
        parts.push(self.spki.clone());
        if self.version == Version::V3 && !self.extensions.is_empty() {
            parts.push(explicit(3, &seq(self.extensions.iter().map(Ext::der))));
        }
        seq(parts)
    }

    /// The certificate's DER: the TBS signed by `signer` with `digest`.
    pub fn sign(&self, signer: &Key, digest: Digest) -> Vec<u8> {
        let alg = signer.sig_alg(digest);
        let tbs = self.tbs(&alg);
        let signature = signer.sign(&tbs, digest);
        seq([tbs, alg, bits(&signature)])
    }
}

/// PEM of one or more DER certificates.
pub fn pem(ders: &[Vec<u8>]) -> String {
    ders.iter()
        .map(|d| aop_pki::pem_encode("CERTIFICATE", d))
        .collect()
}
