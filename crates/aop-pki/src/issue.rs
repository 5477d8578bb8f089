//! Issuing certificates with rcgen: a CA, edge client certificates, origin server
//! certificates in the style of Cloudflare's Origin CA.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls_pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};

use crate::info::{CertInfo, Role, Validity};
use crate::keys::{KeyType, PrivateKeyPem, check_key_matches, default_provider};
use crate::load::{load_certificates, load_private_key};
use crate::{Error, Result};

/// Key generation, for issuance only (rcgen's key pairs).
impl KeyType {
    pub(crate) fn generate(self) -> Result<KeyPair> {
        Ok(match self {
            Self::EcdsaP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?,
            Self::EcdsaP384 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384)?,
            Self::Ed25519 => {
                // rcgen (via aws-lc-rs) serialises new Ed25519 keys as PKCS#8 v2 (RFC 5958,
                // public key included), which OpenSSL 3.0 — and so nginx — cannot load.
                // Write the v1 form every TLS stack reads.
                let key = aws_lc_rs::signature::Ed25519KeyPair::generate()
                    .map_err(|_| Error::Generate("Ed25519 key generation failed".into()))?;
                let v1 = key
                    .to_pkcs8v1()
                    .map_err(|_| Error::Generate("Ed25519 PKCS#8 encoding failed".into()))?;
                let der = rustls_pki_types::PrivatePkcs8KeyDer::from(v1.as_ref().to_vec());
                KeyPair::from_pkcs8_der_and_sign_algo(&der, &rcgen::PKCS_ED25519)?
            }
            Self::Rsa2048 => {
                KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)?
            }
            Self::Rsa4096 => {
                KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_4096)?
            }
        })
    }

    pub(crate) fn is_rsa(self) -> bool {
        matches!(self, Self::Rsa2048 | Self::Rsa4096)
    }
}

/// The validity periods Cloudflare's Origin CA offers, in days.
pub const ORIGIN_VALIDITY_DAYS: [u32; 7] = [7, 30, 90, 365, 730, 1095, 5475];

/// A certificate just issued, with its freshly generated key.
#[derive(Debug)]
#[non_exhaustive]
pub struct Issued {
    /// The new certificate.
    pub certificate: CertificateDer<'static>,
    /// The certificates that follow it in `cert.pem`: its CA (and that CA's chain). Empty
    /// for a self-signed CA.
    pub chain: Vec<CertificateDer<'static>>,
    /// The new private key (PKCS#8 PEM).
    pub key: PrivateKeyPem,
}

impl Issued {
    /// PEM of the certificate followed by its chain: what `cert.pem` holds.
    pub fn cert_pem(&self) -> String {
        std::iter::once(&self.certificate)
            .chain(&self.chain)
            .map(|c| crate::pem_encode("CERTIFICATE", c))
            .collect()
    }

    /// Describe the new certificate as of `at`.
    pub fn info(&self, at: OffsetDateTime) -> CertInfo {
        CertInfo::from_der(&self.certificate, at).expect("rcgen output parses")
    }
}

/// What a new CA should look like.
#[derive(Clone, Debug)]
pub struct CaRequest {
    /// Its common name.
    pub name: String,
    /// Its key algorithm.
    pub key_type: KeyType,
    /// Days of validity from now.
    pub days: u32,
    /// How many intermediate CAs may sit below it (0: it signs leaves only).
    pub path_len: u8,
}

impl CaRequest {
    /// A CA named `name` as `certtool ca create` makes it by default: ECDSA P-256, 3650
    /// days, path length 0. Change a field with `CaRequest { days: 10, ..CaRequest::new(…) }`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            key_type: KeyType::EcdsaP256,
            days: 3650,
            path_len: 0,
        }
    }

    /// Create the CA as of `now`, write it where `certtool ca create --out DIR` would
    /// (`DIR/ca.pem` 0644, `DIR/ca.key` 0600, DIR created 0700 if missing; existing files
    /// are refused), and load it back, ready to issue ([`Ca::load`] as of `now`).
    pub fn create_in(&self, dir: &Path, now: OffsetDateTime) -> Result<Ca> {
        let issued = create_ca(self, now)?;
        crate::ensure_dir(dir, true)?;
        crate::write_issued(
            &issued,
            &dir.join(Ca::CERT_FILE),
            &dir.join(Ca::KEY_FILE),
            crate::Overwrite::Refuse,
        )?;
        Ca::load(dir, now)
    }
}

/// What a new edge (client) certificate should look like.
#[derive(Clone, Debug)]
pub struct ClientRequest {
    /// Its common name.
    pub common_name: String,
    /// Subject alternative names: DNS names, URIs (anything with a scheme, such as
    /// `spiffe://…`) or IP addresses.
    pub sans: Vec<String>,
    /// Days of validity from now.
    pub days: u32,
    /// Its key algorithm.
    pub key_type: KeyType,
}

/// What a new origin (server) certificate should look like.
#[derive(Clone, Debug)]
pub struct OriginRequest {
    /// DNS names it serves, `*.zone` wildcards allowed. The first is also its CN.
    pub hostnames: Vec<String>,
    /// Days of validity; must be one of [`ORIGIN_VALIDITY_DAYS`].
    pub days: u32,
    /// Its key algorithm.
    pub key_type: KeyType,
}

/// How far before "now" a new certificate's validity starts, to tolerate clock skew
/// between the machine that issues it and the machines that check it.
pub const BACKDATE: Duration = Duration::minutes(5);

/// Create a self-signed CA: basic constraints CA with a path length, key usage
/// keyCertSign + cRLSign (critical), a subject key identifier, a random 159-bit serial.
pub fn create_ca(req: &CaRequest, now: OffsetDateTime) -> Result<Issued> {
    let mut params = base_params(&req.name, req.days, now)?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(req.path_len));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = req.key_type.generate()?;
    let cert = params.self_signed(&key)?;
    Ok(Issued {
        certificate: cert.der().clone(),
        chain: Vec::new(),
        key: PrivateKeyPem::new(key.serialize_pem()),
    })
}

/// A CA loaded from disk, ready to issue.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    chain: Vec<CertificateDer<'static>>,
    info: CertInfo,
    cert_path: PathBuf,
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca")
            .field("subject", &self.info.subject)
            .field("cert_path", &self.cert_path)
            .finish_non_exhaustive()
    }
}

impl Ca {
    /// The file names `certtool ca create` writes in its `--out` directory.
    pub const CERT_FILE: &'static str = "ca.pem";
    /// See [`Ca::CERT_FILE`].
    pub const KEY_FILE: &'static str = "ca.key";

    /// Load `DIR/ca.pem` and `DIR/ca.key`, as written by [`create_ca`] via certtool.
    pub fn load(dir: &Path, now: OffsetDateTime) -> Result<Self> {
        Self::from_files(&dir.join(Self::CERT_FILE), &dir.join(Self::KEY_FILE), now)
    }

    /// Load a CA from a certificate file (the CA first, then any chain above it) and its
    /// key. Refuses a certificate that is not a CA, a key that does not match, and a CA
    /// outside its validity at `now`: nothing it signed would verify.
    pub fn from_files(cert_path: &Path, key_path: &Path, now: OffsetDateTime) -> Result<Self> {
        let chain = load_certificates(cert_path)?;
        let ca = &chain[0];
        let info = CertInfo::from_der(ca, now).map_err(|detail| Error::BadCertificate {
            path: cert_path.to_owned(),
            index: 1,
            detail,
        })?;
        let not_a_ca = |reason: &str| Error::NotACa {
            path: cert_path.to_owned(),
            reason: reason.to_owned(),
        };
        if info.role != Role::Ca {
            return Err(not_a_ca("its basic constraints do not say CA"));
        }
        if !info.key_usage.is_empty() && !info.key_usage.iter().any(|k| k == "keyCertSign") {
            return Err(not_a_ca("its key usage lacks keyCertSign"));
        }
        match info.validity {
            Validity::Valid => {}
            v => {
                return Err(Error::CaNotValid {
                    path: cert_path.to_owned(),
                    state: if v == Validity::Expired {
                        "expired"
                    } else {
                        "not yet valid"
                    },
                    not_before: info.not_before,
                    not_after: info.not_after,
                });
            }
        }
        let key_der = load_private_key(key_path)?;
        check_key_matches(ca, &key_der, cert_path, key_path, &default_provider())?;
        let key = KeyPair::try_from(&key_der).map_err(|e| Error::BadKey {
            path: key_path.to_owned(),
            detail: e.to_string(),
        })?;
        let issuer = Issuer::from_ca_cert_der(ca, key).map_err(|e| Error::NotACa {
            path: cert_path.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            issuer,
            chain,
            info,
            cert_path: cert_path.to_owned(),
        })
    }

    /// The CA certificate (first of [`Ca::chain`]).
    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.chain[0]
    }

    /// The CA certificate and any chain above it, as loaded.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// What the CA certificate says (as of the time it was loaded).
    pub fn info(&self) -> &CertInfo {
        &self.info
    }

    /// Issue an edge certificate: EKU clientAuth only, key usage digitalSignature.
    pub fn issue_client(&self, req: &ClientRequest, now: OffsetDateTime) -> Result<Issued> {
        let mut params = base_params(&req.common_name, req.days, now)?;
        params.subject_alt_names = req
            .sans
            .iter()
            .map(|s| client_san(s))
            .collect::<Result<_>>()?;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params, req.days, req.key_type, now)
    }

    /// Issue an origin certificate as Cloudflare's Origin CA would: EKU serverAuth only,
    /// every hostname a DNS SAN (wildcards allowed), the first also the CN, and a
    /// validity of 7, 30, 90, 365, 730, 1095 or 5475 days.
    pub fn issue_origin(&self, req: &OriginRequest, now: OffsetDateTime) -> Result<Issued> {
        if !ORIGIN_VALIDITY_DAYS.contains(&req.days) {
            return Err(Error::OriginValidity { days: req.days });
        }
        let Some(first) = req.hostnames.first() else {
            return Err(Error::InvalidName {
                name: String::new(),
                reason: "an origin certificate needs at least one hostname".into(),
            });
        };
        let mut params = base_params(first, req.days, now)?;
        params.subject_alt_names = req
            .hostnames
            .iter()
            .map(|h| Ok(SanType::DnsName(hostname(h, true)?.try_into()?)))
            .collect::<Result<_>>()?;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if req.key_type.is_rsa() {
            params.key_usages.push(KeyUsagePurpose::KeyEncipherment);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params, req.days, req.key_type, now)
    }

    /// Issue a CRL revoking `revoke` (each with the path it was read from, for errors),
    /// valid for `days` from `now`. The CRL number is the issue time in seconds, so
    /// later CRLs from the same CA have larger numbers. Every certificate must have been
    /// issued by this CA. Returns the CRL as PEM.
    pub fn create_crl(
        &self,
        revoke: &[(&Path, &CertificateDer<'_>)],
        days: u32,
        now: OffsetDateTime,
    ) -> Result<String> {
        if days == 0 {
            return Err(Error::Validity {
                days,
                reason: "must be at least one day",
            });
        }
        let now = now.replace_nanosecond(0).unwrap_or(now);
        let mut revoked_certs = Vec::with_capacity(revoke.len());
        for (path, cert) in revoke {
            let info = CertInfo::from_der(cert, now).map_err(|detail| Error::BadCertificate {
                path: path.to_path_buf(),
                index: 1,
                detail,
            })?;
            let same_key_id = match (&info.authority_key_id, &self.info.subject_key_id) {
                (Some(a), Some(s)) => a == s,
                _ => true,
            };
            if info.issuer != self.info.subject || !same_key_id {
                return Err(Error::NotIssuedBy {
                    path: path.to_path_buf(),
                    issuer: info.issuer,
                    ca: self.info.subject.clone(),
                });
            }
            let serial = x509_parser::parse_x509_certificate(cert)
                .map(|(_, x)| x.tbs_certificate.raw_serial().to_vec())
                .map_err(|e| Error::BadCertificate {
                    path: path.to_path_buf(),
                    index: 1,
                    detail: e.to_string(),
                })?;
            revoked_certs.push(rcgen::RevokedCertParams {
                serial_number: SerialNumber::from_slice(&serial),
                revocation_time: now,
                reason_code: None,
                invalidity_date: None,
            });
        }
        let params = rcgen::CertificateRevocationListParams {
            this_update: now - BACKDATE,
            next_update: now + Duration::days(i64::from(days)),
            crl_number: SerialNumber::from_slice(minimal(&now.unix_timestamp().to_be_bytes())),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        let crl = params.signed_by(&self.issuer)?;
        Ok(crate::pem_encode("X509 CRL", crl.der()))
    }

    fn sign(
        &self,
        mut params: CertificateParams,
        days: u32,
        key_type: KeyType,
        now: OffsetDateTime,
    ) -> Result<Issued> {
        if params.not_after > self.info.not_after {
            return Err(Error::OutlivesCa {
                path: self.cert_path.clone(),
                ca_not_after: self.info.not_after,
                days,
                max_days: (self.info.not_after - now).whole_days(),
            });
        }
        // ExplicitNoCa: basicConstraints CA:FALSE, and rcgen then writes the subject key
        // identifier as well.
        params.is_ca = IsCa::ExplicitNoCa;
        params.use_authority_key_identifier_extension = true;
        let key = key_type.generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            certificate: cert.der().clone(),
            chain: self.chain.clone(),
            key: PrivateKeyPem::new(key.serialize_pem()),
        })
    }
}

/// Big-endian bytes without leading zero bytes (keeping at least one), for a minimal DER
/// INTEGER.
fn minimal(bytes: &[u8]) -> &[u8] {
    let first = bytes
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(bytes.len().saturating_sub(1));
    &bytes[first..]
}

/// Parameters every certificate shares: CN, validity, random serial, key identifiers.
fn base_params(common_name: &str, days: u32, now: OffsetDateTime) -> Result<CertificateParams> {
    check_common_name(common_name)?;
    if days == 0 {
        return Err(Error::Validity {
            days,
            reason: "must be at least one day",
        });
    }
    if days > 36_500 {
        return Err(Error::Validity {
            days,
            reason: "more than 100 years",
        });
    }
    let now = now.replace_nanosecond(0).unwrap_or(now);
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.not_before = now - BACKDATE;
    params.not_after = now + Duration::days(i64::from(days));
    params.serial_number = Some(random_serial()?);
    Ok(params)
}

/// 20 random bytes with the top bit clear (a positive INTEGER) and a non-zero first byte
/// (so the encoding keeps its length): 159 bits of randomness, above the 64 the CA/B
/// Forum asks for and the 128 this project promises.
fn random_serial() -> Result<SerialNumber> {
    use aws_lc_rs::rand::{SecureRandom, SystemRandom};
    let mut b = [0u8; 20];
    SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| Error::Generate("the system random generator failed".into()))?;
    b[0] &= 0x7f;
    if b[0] == 0 {
        b[0] = 1;
    }
    Ok(SerialNumber::from_slice(&b))
}

fn check_common_name(cn: &str) -> Result<()> {
    let bad = |reason: &str| Error::InvalidName {
        name: cn.to_owned(),
        reason: reason.to_owned(),
    };
    if cn.trim().is_empty() {
        return Err(bad("empty"));
    }
    if cn.chars().count() > 64 {
        return Err(bad(
            "longer than the 64 characters X.509 allows in a common name",
        ));
    }
    if cn.chars().any(char::is_control) {
        return Err(bad("contains control characters"));
    }
    Ok(())
}

/// A DNS name, lowercased; `*.` is allowed as the whole leftmost label when `wildcard`.
fn hostname(name: &str, wildcard: bool) -> Result<String> {
    let bad = |reason: &str| Error::InvalidName {
        name: name.to_owned(),
        reason: reason.to_owned(),
    };
    let lower = crate::normalize_dns_name(name);
    if lower.parse::<IpAddr>().is_ok() {
        return Err(bad("an IP address, not a hostname"));
    }
    let rest = match lower.strip_prefix("*.") {
        Some(rest) if wildcard => rest,
        Some(_) => return Err(bad("wildcards are not allowed here")),
        None => &lower,
    };
    if rest.contains('*') {
        return Err(bad(
            "a wildcard may only be the whole leftmost label (*.example.com)",
        ));
    }
    if !rest.contains('.') && lower.starts_with("*.") {
        return Err(bad(
            "a wildcard needs at least two labels after it (*.example.com)",
        ));
    }
    if !crate::is_dns_name(rest) {
        return Err(bad("not a valid DNS name"));
    }
    Ok(lower)
}

fn client_san(s: &str) -> Result<SanType> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    if let Some((scheme, rest)) = s.split_once(':') {
        let scheme_ok = scheme
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
        if scheme_ok && !rest.is_empty() {
            if !s.is_ascii() || s.chars().any(|c| c.is_ascii_whitespace() || c.is_control()) {
                return Err(Error::InvalidName {
                    name: s.to_owned(),
                    reason: "a URI must be ASCII without spaces".into(),
                });
            }
            return Ok(SanType::URI(s.try_into()?));
        }
    }
    Ok(SanType::DnsName(hostname(s, true)?.try_into()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trip() {
        for len in 0..70 {
            let der: Vec<u8> = (0..len).map(|i| (i * 37 % 256) as u8).collect();
            let pem = crate::pem_encode("CERTIFICATE", &der);
            let (kind, back) = rustls_pki_types::pem::from_buf(&mut pem.as_bytes())
                .unwrap()
                .unwrap();
            assert_eq!(kind, rustls_pki_types::pem::SectionKind::Certificate);
            assert_eq!(back, der, "len {len}");
        }
    }

    #[test]
    fn hostnames() {
        assert_eq!(hostname("Example.COM.", true).unwrap(), "example.com");
        assert_eq!(hostname("*.example.com", true).unwrap(), "*.example.com");
        for bad in [
            "*.com",
            "a.*.com",
            "*x.example.com",
            "10.0.0.1",
            "exa mple.com",
            "",
            "*.example.com",
        ] {
            let wildcard = bad != "*.example.com";
            assert!(hostname(bad, wildcard).is_err(), "{bad}");
        }
    }

    #[test]
    fn sans() {
        assert!(matches!(
            client_san("spiffe://edge/zone").unwrap(),
            SanType::URI(_)
        ));
        assert!(matches!(
            client_san("10.1.2.3").unwrap(),
            SanType::IpAddress(_)
        ));
        assert!(matches!(
            client_san("edge.example.net").unwrap(),
            SanType::DnsName(_)
        ));
        assert!(client_san("not a name").is_err());
    }

    #[test]
    fn serials_are_random_and_positive() {
        let a = random_serial().unwrap().to_bytes();
        let b = random_serial().unwrap().to_bytes();
        assert_ne!(a, b);
        assert_eq!(a.len(), 20);
        assert!(a[0] & 0x80 == 0 && a[0] != 0);
    }

    #[test]
    fn ed25519_keys_are_pkcs8_v1() {
        // OpenSSL 3.0 (nginx) cannot read the v2 form; see KeyType::generate.
        let key = KeyType::Ed25519.generate().unwrap();
        let der = key.serialized_der();
        assert_eq!(der.len(), 48);
        assert_eq!(&der[2..5], &[0x02, 0x01, 0x00], "version 0 = PKCS#8 v1");
    }

    #[test]
    fn key_type_names_round_trip() {
        for k in KeyType::ALL {
            assert_eq!(k.name().parse::<KeyType>().unwrap(), k);
        }
        assert!("rsa1024".parse::<KeyType>().is_err());
    }
}

#[cfg(test)]
mod issue_tests {
    use super::*;

    fn now() -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    fn ca_in(dir: &Path, key_type: KeyType, days: u32, at: OffsetDateTime) -> Ca {
        let req = CaRequest {
            key_type,
            days,
            ..CaRequest::new("unit CA")
        };
        req.create_in(dir, at).unwrap()
    }

    #[test]
    fn every_key_type_issues_what_it_says() {
        for kt in KeyType::ALL {
            let d = tempfile::tempdir().unwrap();
            let ca = ca_in(d.path(), kt, 365, now());
            assert_eq!(ca.info().role, Role::Ca);
            assert_eq!(ca.info().path_len, Some(0));
            assert_eq!(ca.info().key_usage, ["keyCertSign", "cRLSign"]);

            let client = ca
                .issue_client(
                    &ClientRequest {
                        common_name: "edge".into(),
                        sans: vec!["edge.example.net".into(), "spiffe://cdn/edge".into()],
                        days: 30,
                        key_type: kt,
                    },
                    now(),
                )
                .unwrap();
            let info = client.info(now());
            assert_eq!(info.role, Role::Client, "{kt}");
            assert_eq!(info.extended_key_usage, ["clientAuth"]);
            assert_eq!(info.san.dns, ["edge.example.net"]);
            assert_eq!(info.san.uri, ["spiffe://cdn/edge"]);
            assert_eq!(info.issuer, "CN=unit CA");
            assert_eq!(info.authority_key_id, ca.info().subject_key_id);
            assert!(info.subject_key_id.is_some());
            assert_eq!(
                info.days_left, 29,
                "{kt}: 30 days from now, minus the part-day"
            );
            assert_eq!(client.chain.len(), 1);
            assert_eq!(info.serial.len(), 40, "a 20-byte serial");

            let origin = ca
                .issue_origin(
                    &OriginRequest {
                        hostnames: vec!["Example.com".into(), "*.example.com".into()],
                        days: 90,
                        key_type: kt,
                    },
                    now(),
                )
                .unwrap();
            let info = origin.info(now());
            assert_eq!(info.role, Role::Server, "{kt}");
            assert_eq!(info.san.dns, ["example.com", "*.example.com"]);
            assert_eq!(info.subject, "CN=Example.com");
            let expect_ku: &[&str] = if kt.is_rsa() {
                &["digitalSignature", "keyEncipherment"]
            } else {
                &["digitalSignature"]
            };
            assert_eq!(info.key_usage, expect_ku, "{kt}");

            // The key written is the key of the certificate, and no other's.
            let key =
                crate::parse_private_key(client.key.expose().as_bytes(), Path::new("k")).unwrap();
            let p = default_provider();
            check_key_matches(
                &client.certificate,
                &key,
                Path::new("c"),
                Path::new("k"),
                &p,
            )
            .unwrap();
            let e = check_key_matches(
                &origin.certificate,
                &key,
                Path::new("c"),
                Path::new("k"),
                &p,
            )
            .unwrap_err();
            assert!(matches!(e, Error::KeyMismatch { .. }), "{e}");
        }
    }

    #[test]
    fn origin_validity_is_cloudflares_list() {
        let d = tempfile::tempdir().unwrap();
        let ca = ca_in(d.path(), KeyType::EcdsaP256, 36_500, now());
        for days in ORIGIN_VALIDITY_DAYS {
            let req = OriginRequest {
                hostnames: vec!["a.example".into()],
                days,
                key_type: KeyType::EcdsaP256,
            };
            ca.issue_origin(&req, now()).unwrap();
        }
        for days in [0, 1, 31, 364, 366, 5474] {
            let req = OriginRequest {
                hostnames: vec!["a.example".into()],
                days,
                key_type: KeyType::EcdsaP256,
            };
            let e = ca.issue_origin(&req, now()).unwrap_err();
            assert!(
                matches!(e, Error::OriginValidity { days: d } if d == days),
                "{e}"
            );
        }
    }

    #[test]
    fn ca_validity_is_enforced() {
        let d = tempfile::tempdir().unwrap();
        let ca = ca_in(d.path(), KeyType::EcdsaP256, 10, now());
        let req = |days| ClientRequest {
            common_name: "e".into(),
            sans: vec![],
            days,
            key_type: KeyType::EcdsaP256,
        };
        ca.issue_client(&req(9), now()).unwrap();
        let e = ca.issue_client(&req(11), now()).unwrap_err();
        assert!(
            matches!(
                e,
                Error::OutlivesCa {
                    days: 11,
                    max_days: 9,
                    ..
                }
            ),
            "{e}"
        );

        // Not yet valid, and expired, CAs are refused at load.
        let future = tempfile::tempdir().unwrap();
        let req = CaRequest {
            days: 10,
            ..CaRequest::new("f")
        };
        req.create_in(future.path(), now() + Duration::days(2))
            .unwrap();
        let e = Ca::load(future.path(), now()).unwrap_err();
        assert!(
            matches!(
                e,
                Error::CaNotValid {
                    state: "not yet valid",
                    ..
                }
            ),
            "{e}"
        );
        let e = Ca::load(future.path(), now() + Duration::days(20)).unwrap_err();
        assert!(
            matches!(
                e,
                Error::CaNotValid {
                    state: "expired",
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn bad_names_are_refused() {
        for cn in ["", "   ", &"x".repeat(65), "a\nb"] {
            assert!(
                matches!(base_params(cn, 1, now()), Err(Error::InvalidName { .. })),
                "{cn:?}"
            );
        }
        assert!(matches!(
            base_params("ok", 0, now()),
            Err(Error::Validity { .. })
        ));
        assert!(matches!(
            base_params("ok", 40_000, now()),
            Err(Error::Validity { .. })
        ));
    }
}
