//! # aop-pki: certificates as data, for authenticated origin pulls
//!
//! Authenticated origin pulls (AOP) make every connection from a CDN or reverse-proxy
//! *edge* to an *origin* a mutual-TLS handshake: the edge presents a client certificate,
//! and the origin refuses anyone who cannot.
//!
//! ```text
//!   visitor ──https──▶ edge ══ mTLS, edge presents its client certificate ══▶ origin
//!                               (certtool issue client)        trusts the edge's CA
//!   attacker who found the origin's address ──── no certificate ────▶ origin: refused
//! ```
//!
//! This crate is the part of aop that knows nothing of sockets. It
//! - **loads** certificates and keys from PEM or DER, bundles included, and says in one
//!   line which file is wrong and how ([`load_certificates`], [`load_private_key`],
//!   [`Error`]);
//! - **inspects** a certificate into plain data ([`CertInfo`]): names, SANs, usages,
//!   validity, the certificate pin and the SPKI pin ([`Sha256Fingerprint`]);
//! - **issues** CAs, edge client certificates and Origin-CA-style server certificates
//!   with rcgen ([`create_ca`], [`Ca::issue_client`], [`Ca::issue_origin`]);
//! - **writes** files atomically, keys 0600 from the moment they exist, never
//!   overwriting unless told to ([`write_all_atomic`]);
//! - **checks** that a key belongs to a certificate ([`check_key_matches`]).
//!
//! The `certtool` binary is a thin shell over these functions.
//!
//! ## Getting started
//!
//! Create a CA, issue the edge's client certificate from it, and look at what came out:
//!
//! ```
//! use aop_pki::{create_ca, CaRequest, ClientRequest, KeyType, Role};
//! use time::OffsetDateTime;
//!
//! let now = OffsetDateTime::now_utc();
//! let ca_req = CaRequest { name: "origin-pull CA".into(), key_type: KeyType::EcdsaP256, days: 3650, path_len: 0 };
//! let ca = create_ca(&ca_req, now)?;
//!
//! // Write it where `certtool ca create --out DIR` would (ca.pem 0644, ca.key 0600)…
//! let dir = tempfile::tempdir().unwrap();
//! aop_pki::write_issued(&ca, &dir.path().join("ca.pem"), &dir.path().join("ca.key"), aop_pki::Overwrite::Refuse)?;
//!
//! // …and load it back to issue from it.
//! let ca = aop_pki::Ca::load(dir.path(), now)?;
//! let edge = ca.issue_client(
//!     &ClientRequest { common_name: "edge".into(), sans: vec!["spiffe://cdn/edge".into()], days: 90, key_type: KeyType::default() },
//!     now,
//! )?;
//! let info = edge.info(now);
//! assert_eq!(info.role, Role::Client);
//! assert_eq!(info.extended_key_usage, ["clientAuth"]);
//! assert_eq!(info.issuer, "CN=origin-pull CA");
//! println!("pin the edge with --pin {} or --spki-pin {}", info.sha256, info.spki_sha256);
//! # Ok::<(), aop_pki::Error>(())
//! ```
//!
//! Errors name the file and the problem:
//!
//! ```
//! let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("edge.pem");
//! std::fs::write(&path, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n").unwrap();
//! let err = aop_pki::load_certificates(&path).unwrap_err();
//! assert!(err.to_string().ends_with("edge.pem: expected a certificate, found a private key (PRIVATE KEY)"));
//! ```

mod error;
mod fingerprint;
mod info;
pub mod inventory;
mod issue;
mod keys;
mod load;
mod names;
pub mod rotate;
mod write;

use std::path::Path;

pub use error::{Error, Result};
pub use fingerprint::Sha256Fingerprint;
pub use info::{CertInfo, KeyInfo, Role, SubjectAltNames, Validity, rfc3339};
pub use issue::{
    BACKDATE, Ca, CaRequest, ClientRequest, Issued, KeyType, ORIGIN_VALIDITY_DAYS, OriginRequest,
    create_ca,
};
pub use keys::{KeyPairFiles, PrivateKeyPem, check_key_matches, default_provider, load_key_pair};
pub use load::{
    MAX_FILE_SIZE, load_certificates, load_crls, load_private_key, parse_certificates, parse_crls,
    parse_private_key, read_file, read_file_limited,
};
pub use names::{is_dns_name, normalize_dns_name, tls_version_name};
pub use write::{FileMode, Overwrite, PendingFile, ensure_dir, write_all_atomic, write_atomic};

/// Re-exported so users need not depend on rustls-pki-types for the DER types.
pub use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

/// PEM of one DER object, with `label` (`CERTIFICATE`, `X509 CRL`, …), LF line endings.
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    issue::to_pem(label, der)
}

/// Write what was issued: `cert.pem` (the certificate and its chain, 0644) and the key
/// (0600) as one set — neither is written if either target exists (unless
/// [`Overwrite::Replace`]), and both are staged in full before either is renamed into
/// place.
pub fn write_issued(
    issued: &Issued,
    cert_path: &Path,
    key_path: &Path,
    overwrite: Overwrite,
) -> Result<()> {
    let cert = issued.cert_pem();
    write_all_atomic(
        &[
            PendingFile {
                path: key_path.to_owned(),
                contents: issued.key.expose().as_bytes(),
                mode: FileMode::Secret,
            },
            PendingFile {
                path: cert_path.to_owned(),
                contents: cert.as_bytes(),
                mode: FileMode::Public,
            },
        ],
        overwrite,
    )
}
