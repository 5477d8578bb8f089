//! Private keys: checking that a key belongs to a certificate, and keeping key text out
//! of logs.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::{Error, Result};

/// The key algorithms aop generates (feature `issue`) and names. `ecdsa-p256` is the
/// default: small, fast, and accepted by every TLS stack an origin runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyType {
    /// ECDSA on P-256 with SHA-256.
    #[default]
    EcdsaP256,
    /// ECDSA on P-384 with SHA-384.
    EcdsaP384,
    /// Ed25519.
    Ed25519,
    /// RSA 2048, PKCS#1 v1.5 with SHA-256.
    Rsa2048,
    /// RSA 4096, PKCS#1 v1.5 with SHA-256.
    Rsa4096,
}

impl KeyType {
    /// Every key type, in the order they are documented.
    pub const ALL: [Self; 5] = [
        Self::EcdsaP256,
        Self::EcdsaP384,
        Self::Ed25519,
        Self::Rsa2048,
        Self::Rsa4096,
    ];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::EcdsaP256 => "ecdsa-p256",
            Self::EcdsaP384 => "ecdsa-p384",
            Self::Ed25519 => "ed25519",
            Self::Rsa2048 => "rsa2048",
            Self::Rsa4096 => "rsa4096",
        }
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for KeyType {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| Error::UnknownKeyType(s.to_owned()))
    }
}

/// As its name, `ecdsa-p256` … (feature `serde`).
#[cfg(feature = "serde")]
impl serde::Serialize for KeyType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// From its name, `ecdsa-p256` … (feature `serde`).
#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for KeyType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = <String as serde::Deserialize>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// PEM text of a private key. `Debug` never shows it, so it cannot leak into a log by
/// accident; the only ways out are [`PrivateKeyPem::expose`] and writing it to a file.
pub struct PrivateKeyPem(String);

impl PrivateKeyPem {
    #[cfg(feature = "issue")]
    pub(crate) fn new(pem: String) -> Self {
        Self(pem)
    }

    /// The PEM text itself. Only for writing it to a 0600 file or handing it to a TLS
    /// library; never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PrivateKeyPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKeyPem(<redacted>)")
    }
}

/// The crypto provider aop uses when the caller names none: the process-wide default
/// if the program installed one ([`CryptoProvider::install_default`], e.g. a FIPS
/// build), else rustls' aws-lc-rs provider. This is the only place aop picks a provider;
/// every library entry point that does cryptography takes one from its caller.
pub fn default_provider() -> Arc<CryptoProvider> {
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
}

/// A certificate chain (leaf first) and the private key that belongs to its leaf.
#[derive(Debug)]
pub struct KeyPairFiles {
    /// The chain as read, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key.
    pub key: PrivateKeyDer<'static>,
}

/// Load an identity: the certificates of `cert_path`, the key of `key_path`, and the
/// check that the key belongs to the first certificate ([`check_key_matches`]). The one
/// way aop reads a certificate-and-key pair; errors name the file at fault.
pub fn load_key_pair(
    cert_path: &Path,
    key_path: &Path,
    provider: &CryptoProvider,
) -> Result<KeyPairFiles> {
    let chain = crate::load_certificates(cert_path)?;
    let key = crate::load_private_key(key_path)?;
    check_key_matches(&chain[0], &key, cert_path, key_path, provider)?;
    Ok(KeyPairFiles { chain, key })
}

/// Check that `key` is the private key of `cert`, by comparing the public key derived
/// from the private key (with the crypto provider rustls will use to serve it) with the
/// certificate's SubjectPublicKeyInfo. The paths are only used in errors.
pub fn check_key_matches(
    cert: &CertificateDer<'_>,
    key: &PrivateKeyDer<'_>,
    cert_path: &Path,
    key_path: &Path,
    provider: &CryptoProvider,
) -> Result<()> {
    let signing = provider
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| Error::BadKey {
            path: key_path.to_owned(),
            detail: e.to_string(),
        })?;
    let Some(public) = signing.public_key() else {
        return Err(Error::BadKey {
            path: key_path.to_owned(),
            detail: "cannot derive its public key".into(),
        });
    };
    let (_, x509) = X509Certificate::from_der(cert).map_err(|e| Error::BadCertificate {
        path: cert_path.to_owned(),
        index: 1,
        detail: e.to_string(),
    })?;
    if x509.tbs_certificate.subject_pki.raw == public.as_ref() {
        Ok(())
    } else {
        Err(Error::KeyMismatch {
            key: key_path.to_owned(),
            cert: cert_path.to_owned(),
        })
    }
}
