//! What a certificate says, as plain data: [`CertInfo`].

use std::fmt;
use std::net::IpAddr;

use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use x509_parser::der_parser::asn1_rs::Tag;
use x509_parser::der_parser::oid::Oid;
use x509_parser::extensions::{ExtendedKeyUsage, GeneralName, KeyUsage, ParsedExtension};
use x509_parser::prelude::{FromDer as _, X509Certificate, X509Name};
use x509_parser::x509::SubjectPublicKeyInfo;

use crate::Sha256Fingerprint;

/// Everything an operator needs to know about one certificate, parsed with x509-parser.
///
/// Serialised as-is by `certtool inspect --json` (the schema is in `docs/json.md`).
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct CertInfo {
    /// Subject, RFC 4514 string (most specific RDN first, as `openssl -nameopt RFC2253`).
    pub subject: String,
    /// Issuer, RFC 4514 string.
    pub issuer: String,
    /// The subject's (first) common name, if it has one.
    pub common_name: Option<String>,
    /// Serial number, lowercase hex of its big-endian bytes (no sign byte).
    pub serial: String,
    /// X.509 version (1 or 3).
    pub version: u32,
    /// What the certificate is for, from basic constraints and EKU.
    pub role: Role,
    /// Whether basic constraints say CA.
    pub is_ca: bool,
    /// The path length constraint of a CA, if any.
    pub path_len: Option<u32>,
    /// Whether subject and issuer are the same name (a root, or a self-signed leaf).
    pub self_issued: bool,
    /// Key usage bits by their RFC 5280 names; empty when the extension is absent.
    pub key_usage: Vec<String>,
    /// Extended key usages (`serverAuth`, `clientAuth`, … or dotted OIDs); empty when absent.
    pub extended_key_usage: Vec<String>,
    /// Subject alternative names.
    pub san: SubjectAltNames,
    /// Whether the certificate has a subjectAltName extension at all (a name check may
    /// fall back to the CN only when it has none).
    #[cfg_attr(feature = "serde", serde(skip))]
    pub has_san_extension: bool,
    /// Public key algorithm and size.
    pub key: KeyInfo,
    /// Signature algorithm name (`sha256WithRSAEncryption`, `ecdsa-with-SHA256`, …).
    pub signature_algorithm: String,
    /// Start of validity.
    #[cfg_attr(feature = "serde", serde(with = "::time::serde::rfc3339"))]
    pub not_before: OffsetDateTime,
    /// End of validity.
    #[cfg_attr(feature = "serde", serde(with = "::time::serde::rfc3339"))]
    pub not_after: OffsetDateTime,
    /// Whole days from the time of inspection to `not_after` (negative once expired).
    pub days_left: i64,
    /// Valid, expired or not yet valid at the time of inspection.
    pub validity: Validity,
    /// SHA-256 of the certificate DER: the certificate pin.
    pub sha256: Sha256Fingerprint,
    /// SHA-256 of the SubjectPublicKeyInfo: the SPKI pin, which survives re-issue with the same key.
    pub spki_sha256: Sha256Fingerprint,
    /// Subject key identifier, lowercase hex.
    pub subject_key_id: Option<String>,
    /// Authority key identifier (key id part), lowercase hex.
    pub authority_key_id: Option<String>,
}

/// Subject alternative names by type.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct SubjectAltNames {
    /// DNS names, wildcards included as written.
    pub dns: Vec<String>,
    /// URIs (SPIFFE IDs and the like).
    pub uri: Vec<String>,
    /// IP addresses.
    pub ip: Vec<IpAddr>,
    /// Email addresses (rfc822Name).
    pub email: Vec<String>,
}

impl SubjectAltNames {
    /// True when the certificate carries no SAN of these types.
    pub fn is_empty(&self) -> bool {
        self.dns.is_empty() && self.uri.is_empty() && self.ip.is_empty() && self.email.is_empty()
    }
}

impl fmt::Display for SubjectAltNames {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let all = self
            .dns
            .iter()
            .map(|v| format!("DNS:{v}"))
            .chain(self.uri.iter().map(|v| format!("URI:{v}")))
            .chain(self.ip.iter().map(|v| format!("IP:{v}")))
            .chain(self.email.iter().map(|v| format!("email:{v}")));
        let mut first = true;
        for s in all {
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            f.write_str(&s)?;
        }
        Ok(())
    }
}

/// Public key algorithm and size.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct KeyInfo {
    /// `RSA`, `ECDSA P-256`, `ECDSA P-384`, `ECDSA P-521`, `Ed25519`, `Ed448`, or a dotted OID.
    pub algorithm: String,
    /// Key size in bits (0 where unknown).
    pub bits: u32,
}

impl fmt::Display for KeyInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.algorithm.as_str() {
            "RSA" => write!(f, "RSA {}", self.bits),
            other => f.write_str(other),
        }
    }
}

/// What a certificate may be used for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize),
    serde(rename_all = "kebab-case")
)]
#[non_exhaustive]
pub enum Role {
    /// Basic constraints say CA.
    Ca,
    /// A leaf whose EKU allows clientAuth and not serverAuth: an edge (origin-pull) certificate.
    Client,
    /// A leaf whose EKU allows serverAuth and not clientAuth: an origin's server certificate.
    Server,
    /// A leaf whose EKU allows both.
    ClientAndServer,
    /// A leaf without an EKU extension (usable for anything).
    Unrestricted,
    /// A leaf whose EKU allows neither TLS purpose.
    Other,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ca => "CA",
            Self::Client => "client",
            Self::Server => "server",
            Self::ClientAndServer => "client+server",
            Self::Unrestricted => "unrestricted",
            Self::Other => "other",
        })
    }
}

/// Where a moment falls in a certificate's validity period.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize),
    serde(rename_all = "kebab-case")
)]
pub enum Validity {
    /// `not_before <= t <= not_after`.
    Valid,
    /// `t > not_after`.
    Expired,
    /// `t < not_before`.
    NotYetValid,
}

impl Validity {
    /// Where `at` falls between `not_before` and `not_after`.
    pub fn at(not_before: OffsetDateTime, not_after: OffsetDateTime, at: OffsetDateTime) -> Self {
        if at < not_before {
            Self::NotYetValid
        } else if at > not_after {
            Self::Expired
        } else {
            Self::Valid
        }
    }
}

impl fmt::Display for Validity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Valid => "valid",
            Self::Expired => "expired",
            Self::NotYetValid => "not-yet-valid",
        })
    }
}

impl CertInfo {
    /// Parse `der` and describe it as of `at` (which sets `days_left` and `validity`).
    ///
    /// Certificates returned by [`crate::load_certificates`] have already been checked to
    /// parse; for arbitrary bytes this returns x509-parser's error text.
    ///
    /// A subjectAltName extension that does not parse, or holds a name that is not valid
    /// text or a valid IP address, makes the whole certificate malformed: a name check
    /// must never fall back to the CN because the SANs could not be read.
    pub fn from_der(der: &CertificateDer<'_>, at: OffsetDateTime) -> Result<Self, String> {
        let (_, x509) = X509Certificate::from_der(der).map_err(|e| e.to_string())?;
        Self::from_x509(&x509, der, at)
    }

    fn from_x509(
        x509: &X509Certificate<'_>,
        der: &[u8],
        at: OffsetDateTime,
    ) -> Result<Self, String> {
        let tbs = &x509.tbs_certificate;
        let not_before = tbs.validity.not_before.to_datetime();
        let not_after = tbs.validity.not_after.to_datetime();

        let (is_ca, path_len) = match x509.basic_constraints() {
            Ok(Some(bc)) => (bc.value.ca, bc.value.path_len_constraint),
            _ => (false, None),
        };
        let key_usage = match x509.key_usage() {
            Ok(Some(ku)) => key_usage_names(ku.value),
            _ => Vec::new(),
        };
        let eku = x509.extended_key_usage().ok().flatten().map(|e| e.value);
        let extended_key_usage = eku.map(eku_names).unwrap_or_default();
        let role = if is_ca {
            Role::Ca
        } else {
            match eku {
                None => Role::Unrestricted,
                Some(e) if e.any => Role::Unrestricted,
                Some(e) => match (e.client_auth, e.server_auth) {
                    (true, true) => Role::ClientAndServer,
                    (true, false) => Role::Client,
                    (false, true) => Role::Server,
                    (false, false) => Role::Other,
                },
            }
        };

        let mut san = SubjectAltNames::default();
        let san_ext = x509
            .subject_alternative_name()
            .map_err(|e| format!("subjectAltName does not parse: {e}"))?;
        let has_san_extension = san_ext.is_some();
        for name in san_ext.iter().flat_map(|ext| &ext.value.general_names) {
            match name {
                GeneralName::DNSName(s) => san.dns.push((*s).to_owned()),
                GeneralName::URI(s) => san.uri.push((*s).to_owned()),
                GeneralName::RFC822Name(s) => san.email.push((*s).to_owned()),
                GeneralName::IPAddress(b) => {
                    if let Ok(a) = <[u8; 4]>::try_from(*b) {
                        san.ip.push(IpAddr::from(a));
                    } else if let Ok(a) = <[u8; 16]>::try_from(*b) {
                        san.ip.push(IpAddr::from(a));
                    } else {
                        return Err(format!(
                            "subjectAltName has an IP address of {} bytes",
                            b.len()
                        ));
                    }
                }
                GeneralName::Invalid(tag, _) => {
                    return Err(format!(
                        "subjectAltName has an invalid entry (tag {})",
                        tag.0
                    ));
                }
                _ => {}
            }
        }

        let mut subject_key_id = None;
        let mut authority_key_id = None;
        for ext in tbs.extensions() {
            match ext.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(k) => subject_key_id = Some(hex(k.0)),
                ParsedExtension::AuthorityKeyIdentifier(a) => {
                    authority_key_id = a.key_identifier.as_ref().map(|k| hex(k.0));
                }
                _ => {}
            }
        }

        let raw_serial = tbs.raw_serial();
        let serial = match raw_serial {
            [0, rest @ ..] if !rest.is_empty() => hex(rest),
            s => hex(s),
        };

        Ok(Self {
            has_san_extension,
            subject: rfc4514(tbs.subject()),
            issuer: rfc4514(tbs.issuer()),
            common_name: tbs
                .subject()
                .iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok())
                .map(str::to_owned),
            serial,
            version: tbs.version().0 + 1,
            role,
            is_ca,
            path_len,
            self_issued: tbs.subject().as_raw() == tbs.issuer().as_raw(),
            key_usage,
            extended_key_usage,
            san,
            key: key_info(tbs.public_key()),
            signature_algorithm: oid_name(&x509.signature_algorithm.algorithm),
            not_before,
            not_after,
            days_left: (not_after - at).whole_days(),
            validity: Validity::at(not_before, not_after, at),
            sha256: Sha256Fingerprint::of(der),
            spki_sha256: Sha256Fingerprint::of(tbs.subject_pki.raw),
            subject_key_id,
            authority_key_id,
        })
    }
}

/// Format a time as RFC 3339 (UTC, whole seconds), as used in all output.
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .replace_nanosecond(0)
        .unwrap_or(t)
        .format(&Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn key_usage_names(ku: &KeyUsage) -> Vec<String> {
    [
        (ku.digital_signature(), "digitalSignature"),
        (ku.non_repudiation(), "nonRepudiation"),
        (ku.key_encipherment(), "keyEncipherment"),
        (ku.data_encipherment(), "dataEncipherment"),
        (ku.key_agreement(), "keyAgreement"),
        (ku.key_cert_sign(), "keyCertSign"),
        (ku.crl_sign(), "cRLSign"),
        (ku.encipher_only(), "encipherOnly"),
        (ku.decipher_only(), "decipherOnly"),
    ]
    .into_iter()
    .filter(|(set, _)| *set)
    .map(|(_, name)| name.to_owned())
    .collect()
}

fn eku_names(eku: &ExtendedKeyUsage<'_>) -> Vec<String> {
    let mut out: Vec<String> = [
        (eku.any, "anyExtendedKeyUsage"),
        (eku.server_auth, "serverAuth"),
        (eku.client_auth, "clientAuth"),
        (eku.code_signing, "codeSigning"),
        (eku.email_protection, "emailProtection"),
        (eku.time_stamping, "timeStamping"),
        (eku.ocsp_signing, "OCSPSigning"),
    ]
    .into_iter()
    .filter(|(set, _)| *set)
    .map(|(_, name)| name.to_owned())
    .collect();
    out.extend(eku.other.iter().map(|o| o.to_id_string()));
    out
}

fn key_info(spki: &SubjectPublicKeyInfo<'_>) -> KeyInfo {
    let alg = &spki.algorithm.algorithm;
    let parsed = spki.parsed();
    let bits = parsed.as_ref().map(|p| p.key_size()).unwrap_or(0) as u32;
    let algorithm = match alg.to_id_string().as_str() {
        "1.2.840.113549.1.1.1" => "RSA".to_owned(),
        "1.2.840.10045.2.1" => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| o.to_id_string());
            match curve.as_deref() {
                Some("1.2.840.10045.3.1.7") => "ECDSA P-256".to_owned(),
                Some("1.3.132.0.34") => "ECDSA P-384".to_owned(),
                Some("1.3.132.0.35") => "ECDSA P-521".to_owned(),
                Some(other) => format!("ECDSA {other}"),
                None => "ECDSA".to_owned(),
            }
        }
        "1.3.101.112" => "Ed25519".to_owned(),
        "1.3.101.113" => "Ed448".to_owned(),
        _ => oid_name(alg),
    };
    let bits = match algorithm.as_str() {
        "Ed25519" => 256,
        "Ed448" => 456,
        _ => bits,
    };
    KeyInfo { algorithm, bits }
}

fn oid_name(oid: &Oid<'_>) -> String {
    match oid.to_id_string().as_str() {
        "1.3.101.112" => "ED25519".to_owned(),
        "1.2.840.113549.1.1.10" => "rsassaPss".to_owned(),
        _ => x509_parser::objects::oid2sn(oid, x509_parser::objects::oid_registry())
            .map(str::to_owned)
            .unwrap_or_else(|_| oid.to_id_string()),
    }
}

/// An X.509 name as RFC 4514 text, as [`CertInfo::subject`] and `issuer` show it: RDNs
/// in reverse order, `,` between them, `+` inside a multi-valued RDN, special characters
/// escaped, non-string values as `#` + hex DER.
pub fn rfc4514(name: &X509Name<'_>) -> String {
    let rdns: Vec<String> = name
        .iter_rdn()
        .map(|rdn| {
            rdn.iter()
                .map(|atv| {
                    let ty = attr_short_name(atv.attr_type());
                    let value = match atv.as_str() {
                        Ok(s) => escape_rfc4514(s),
                        Err(_) => match atv.attr_value().tag() {
                            // Legacy string types: show the bytes as text when they are.
                            Tag::T61String
                            | Tag::BmpString
                            | Tag::UniversalString
                            | Tag::VisibleString => {
                                escape_rfc4514(&String::from_utf8_lossy(atv.as_slice()))
                            }
                            _ => format!("#{}", hex(atv.attr_value().as_bytes())),
                        },
                    };
                    format!("{ty}={value}")
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

fn attr_short_name(oid: &Oid<'_>) -> String {
    match oid.to_id_string().as_str() {
        "2.5.4.3" => "CN",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.6" => "C",
        "2.5.4.9" => "STREET",
        "0.9.2342.19200300.100.1.25" => "DC",
        "0.9.2342.19200300.100.1.1" => "UID",
        "1.2.840.113549.1.9.1" => "emailAddress",
        "2.5.4.5" => "serialNumber",
        other => return other.to_owned(),
    }
    .to_owned()
}

fn escape_rfc4514(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let n = s.chars().count();
    for (i, c) in s.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i + 1 == n && c == ' ');
        if special {
            out.push('\\');
            out.push(c);
        } else if c == '\0' {
            out.push_str("\\00");
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        assert_eq!(escape_rfc4514("a,b"), "a\\,b");
        assert_eq!(escape_rfc4514(" #x "), "\\ #x\\ ");
        assert_eq!(escape_rfc4514("#x"), "\\#x");
        assert_eq!(escape_rfc4514("CloudFlare, Inc."), "CloudFlare\\, Inc.");
    }

    #[test]
    fn validity_edges() {
        let t = OffsetDateTime::UNIX_EPOCH;
        let d = time::Duration::days(1);
        assert_eq!(Validity::at(t, t + d, t), Validity::Valid);
        assert_eq!(Validity::at(t, t + d, t + d), Validity::Valid);
        assert_eq!(Validity::at(t, t + d, t - d), Validity::NotYetValid);
        assert_eq!(Validity::at(t, t + d, t + d + d), Validity::Expired);
    }
}
