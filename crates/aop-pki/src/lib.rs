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
//!   with rcgen ([`create_ca`], [`Ca::issue_client`], [`Ca::issue_origin`]; feature
//!   `issue`);
//! - **writes** files atomically, keys 0600 from the moment they exist, never
//!   overwriting unless told to ([`write_all_atomic`]; feature `write`);
//! - **checks** that a key belongs to a certificate ([`check_key_matches`]).
//!
//! The `certtool` binary is a thin shell over these functions (and over `aop-ops`, the
//! operator workflows built on them: inventory and rotation).
//!
//! ## Features
//!
//! With no feature this crate is the core a verifier links: load, inspect, fingerprint,
//! keys, PEM; no rcgen, no tempfile, no serde.
//!
//! | feature | adds | pulls in |
//! | --- | --- | --- |
//! | `issue` | [`create_ca`], [`CaRequest`], [`Ca`], [`Issued`], [`write_issued`] (implies `write`) | rcgen |
//! | `write` | [`write_atomic`], [`write_all_atomic`], [`ensure_dir`], [`FileMode`], [`Overwrite`] | tempfile |
//! | `serde` | `Serialize` for [`CertInfo`] and its parts, `Serialize`/`Deserialize` for [`Sha256Fingerprint`] and [`KeyType`] (as text) | serde |
//!
//! ## Getting started
//!
//! Create a CA, issue the edge's client certificate from it, and look at what came out
//! (features `issue` and `write`):
//!
//! ```
//! use aop_pki::{CaRequest, ClientRequest, KeyType, Role};
//! use time::OffsetDateTime;
//!
//! let now = OffsetDateTime::now_utc();
//! let dir = tempfile::tempdir().unwrap();
//! // Create a CA (P-256, 10 years), write it where `certtool ca create --out DIR` would
//! // (ca.pem 0644, ca.key 0600), and load it back to issue from it. The steps apart:
//! // `create_ca`, `write_issued`, `Ca::load`.
//! let ca = CaRequest::new("origin-pull CA").create_in(dir.path(), now)?;
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

// The manual above links the items of every feature; built without some, those links
// have nothing to point at.
#![cfg_attr(
    not(all(feature = "issue", feature = "serde")),
    allow(rustdoc::broken_intra_doc_links)
)]

mod error;
mod fingerprint;
mod info;
#[cfg(feature = "issue")]
mod issue;
mod keys;
mod load;
mod names;
#[cfg(feature = "write")]
mod write;

#[cfg(feature = "issue")]
use std::path::Path;

pub use error::{Error, Result};
pub use fingerprint::Sha256Fingerprint;
pub use info::{CertInfo, KeyInfo, Role, SubjectAltNames, Validity, rfc3339, rfc4514};
#[cfg(feature = "issue")]
pub use issue::{
    BACKDATE, Ca, CaRequest, ClientRequest, Issued, ORIGIN_VALIDITY_DAYS, OriginRequest, create_ca,
};
pub use keys::{
    KeyPairFiles, KeyType, PrivateKeyPem, check_key_matches, default_provider, load_key_pair,
};
pub use load::{
    MAX_FILE_SIZE, load_certificates, load_crls, load_private_key, open_for_writing,
    parse_certificates, parse_crls, parse_private_key, read_file, read_file_limited,
};
pub use names::{is_dns_name, normalize_dns_name, tls_version_name};
#[cfg(feature = "write")]
pub use write::{FileMode, Overwrite, PendingFile, ensure_dir, write_all_atomic, write_atomic};

/// Re-exported so users need not depend on rustls-pki-types for the DER types.
pub use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

/// PEM of one DER object, with `label` (`CERTIFICATE`, `X509 CRL`, …), LF line endings.
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    pem::encode_config(&pem::Pem::new(label, der), config)
}

/// Write what was issued: `cert.pem` (the certificate and its chain, 0644) and the key
/// (0600) as one set — neither is written if either target exists (unless
/// [`Overwrite::Replace`]), and both are staged in full before either is renamed into
/// place. (Features `issue` and `write`.)
#[cfg(feature = "issue")]
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
