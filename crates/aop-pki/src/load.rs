//! Reading certificates and private keys from PEM or DER files.
//!
//! Every function here names the file in its error and says what is wrong with it, in
//! words: empty, truncated, not PEM, a private key where a certificate belongs, a CSR.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use rustls_pki_types::pem::{self, SectionKind};
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

use crate::{Error, Result};

/// The most [`read_file`] reads: 4 MiB, far above any certificate bundle, key, CRL or
/// configuration aop has a use for.
pub const MAX_FILE_SIZE: u64 = 4 * 1024 * 1024;

/// Read a whole regular file of at most [`MAX_FILE_SIZE`] bytes. Every file aop reads
/// (certificates, keys, trust bundles, CRLs, configurations, manifests) goes through here.
///
/// Symbolic links are followed; what they lead to must be a regular file. A device, a
/// FIFO, a socket or a directory is refused with [`Error::NotAFile`] without being read,
/// and a file over the limit with [`Error::TooLarge`]. See [`read_file_limited`].
pub fn read_file(path: &Path) -> Result<Vec<u8>> {
    read_file_limited(path, MAX_FILE_SIZE)
}

/// [`read_file`] with another limit, in bytes.
///
/// What the file is gets checked twice: with `stat` before opening (so a device is never
/// opened, and a FIFO never waited on), and with `fstat` on the opened handle (so a file
/// swapped in between is caught). On Unix the file is opened with `O_NONBLOCK`, so even a
/// FIFO swapped in between cannot block the open. The size in the metadata is only a
/// first check: the read itself stops after `limit + 1` bytes, and a file that grew past
/// the limit while being read is refused, never truncated.
pub fn read_file_limited(path: &Path, limit: u64) -> Result<Vec<u8>> {
    use std::io::Read as _;
    let read_error = |error| Error::Read {
        path: path.to_owned(),
        error,
    };
    let too_large = || Error::TooLarge {
        path: path.to_owned(),
        limit,
    };
    regular_file(path, &std::fs::metadata(path).map_err(read_error)?)?;
    let file = open_without_blocking(path).map_err(read_error)?;
    let meta = file.metadata().map_err(read_error)?;
    regular_file(path, &meta)?;
    if meta.len() > limit {
        return Err(too_large());
    }
    // The metadata is a hint for the allocation, never trusted for the bound.
    let hint = usize::try_from(meta.len()).unwrap_or(0).saturating_add(1);
    let mut bytes = Vec::with_capacity(hint);
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > limit {
        return Err(too_large());
    }
    Ok(bytes)
}

/// Open `path` for writing, creating it if missing and never truncating it: the way to
/// open a lock file. As in [`read_file`], anything but a regular file is refused with
/// [`Error::NotAFile`] (checked before opening and again on the handle), and on Unix the
/// open cannot block (a FIFO planted at `path` is refused, not waited on). Other failures
/// are [`Error::Write`].
pub fn open_for_writing(path: &Path) -> Result<std::fs::File> {
    let write_error = |error| Error::Write {
        path: path.to_owned(),
        error,
    };
    if let Ok(meta) = std::fs::metadata(path) {
        regular_file(path, &meta)?;
    }
    let file = without_blocking(
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true),
    )
    .open(path)
    .map_err(write_error)?;
    regular_file(path, &file.metadata().map_err(write_error)?)?;
    Ok(file)
}

/// Refuse anything but a regular file, saying what it is.
fn regular_file(path: &Path, meta: &std::fs::Metadata) -> Result<()> {
    let t = meta.file_type();
    if t.is_file() {
        return Ok(());
    }
    Err(Error::NotAFile {
        path: path.to_owned(),
        what: describe_file_type(t),
    })
}

/// "a character device", "a FIFO", … for what is not a regular file.
fn describe_file_type(t: std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt as _;
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    if t.is_dir() {
        "a directory"
    } else if t.is_symlink() {
        "a symbolic link"
    } else {
        "something else"
    }
}

/// Open for reading, [`without_blocking`].
fn open_without_blocking(path: &Path) -> std::io::Result<std::fs::File> {
    without_blocking(std::fs::OpenOptions::new().read(true)).open(path)
}

/// On Unix, add `O_NONBLOCK` (a FIFO opens at once instead of waiting for the other end;
/// regular files ignore the flag) and `O_NOCTTY` (a terminal never becomes the
/// controlling one).
fn without_blocking(options: &mut std::fs::OpenOptions) -> &mut std::fs::OpenOptions {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY);
    }
    options
}

/// Load every certificate in a file: PEM (one or several `CERTIFICATE` blocks; other
/// blocks, such as a key in a combined file, are ignored) or DER (one certificate, or
/// several concatenated).
///
/// Fails unless the file holds at least one certificate and every certificate in it
/// parses as X.509.
pub fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    parse_certificates(&read_file(path)?, path)
}

/// [`load_certificates`] on bytes already read; `path` is only used in errors.
pub fn parse_certificates(bytes: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let path = path.to_owned();
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(Error::Empty { path });
    }
    let certs = if looks_like_pem(bytes) {
        let sections = pem_sections(bytes, &path)?;
        let certs: Vec<_> = sections
            .iter()
            .filter(|s| s.kind == Some(SectionKind::Certificate))
            .map(|s| CertificateDer::from(s.der.clone()))
            .collect();
        if certs.is_empty() {
            return Err(Error::NotACertificate {
                found: describe_sections(&sections),
                path,
            });
        }
        certs
    } else {
        der_certificates(bytes, &path)?
    };
    for (i, cert) in certs.iter().enumerate() {
        check_certificate_der(cert, &path, i + 1)?;
    }
    Ok(certs)
}

/// Load the one private key in a file (PKCS#8, PKCS#1 RSA or SEC1 EC; PEM or DER).
pub fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    parse_private_key(&read_file(path)?, path)
}

/// [`load_private_key`] on bytes already read; `path` is only used in errors.
pub fn parse_private_key(bytes: &[u8], path: &Path) -> Result<PrivateKeyDer<'static>> {
    let path = path.to_owned();
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(Error::Empty { path });
    }
    if !looks_like_pem(bytes) {
        return match PrivateKeyDer::try_from(bytes.to_vec()) {
            Ok(key) => Ok(key),
            Err(_) if x509_parser::parse_x509_certificate(bytes).is_ok() => Err(Error::NotAKey {
                path,
                found: "a DER certificate".into(),
            }),
            Err(detail) => Err(Error::NotAKey {
                path,
                found: format!("neither PEM nor a DER private key ({detail})"),
            }),
        };
    }
    let sections = pem_sections(bytes, &path)?;
    let mut keys = sections.iter().filter_map(|s| match s.kind {
        Some(SectionKind::PrivateKey) => Some(PrivateKeyDer::Pkcs8(s.der.clone().into())),
        Some(SectionKind::RsaPrivateKey) => Some(PrivateKeyDer::Pkcs1(s.der.clone().into())),
        Some(SectionKind::EcPrivateKey) => Some(PrivateKeyDer::Sec1(s.der.clone().into())),
        _ => None,
    });
    match (keys.next(), keys.next()) {
        (Some(key), None) => Ok(key),
        (Some(_), Some(_)) => Err(Error::BadKey {
            path,
            detail: "the file holds more than one private key".into(),
        }),
        (None, _) => Err(Error::NotAKey {
            found: describe_sections(&sections),
            path,
        }),
    }
}

/// Load every certificate revocation list in a file: PEM (`X509 CRL` blocks) or DER.
///
/// Only the encoding is checked here; the CRL's signature and validity are checked by
/// the verifier that uses it.
pub fn load_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>> {
    parse_crls(&read_file(path)?, path)
}

/// [`load_crls`] on bytes already read; `path` is only used in errors.
pub fn parse_crls(bytes: &[u8], path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>> {
    let path = path.to_owned();
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(Error::Empty { path });
    }
    let crls: Vec<_> = if looks_like_pem(bytes) {
        let sections = pem_sections(bytes, &path)?;
        let crls: Vec<_> = sections
            .iter()
            .filter(|s| s.kind == Some(SectionKind::Crl))
            .map(|s| CertificateRevocationListDer::from(s.der.clone()))
            .collect();
        if crls.is_empty() {
            return Err(Error::NotACrl {
                found: describe_sections(&sections),
                path,
            });
        }
        crls
    } else {
        vec![CertificateRevocationListDer::from(bytes.to_vec())]
    };
    for crl in &crls {
        if let Err(e) = x509_parser::revocation_list::CertificateRevocationList::from_der(crl) {
            return Err(Error::NotACrl {
                path,
                found: format!("something that does not parse as a CRL ({e})"),
            });
        }
    }
    Ok(crls)
}

/// One PEM block: its label, and its kind where rustls-pki-types knows it.
struct Section {
    label: String,
    kind: Option<SectionKind>,
    der: Vec<u8>,
}

fn looks_like_pem(bytes: &[u8]) -> bool {
    bytes.windows(11).any(|w| w == b"-----BEGIN ")
}

/// Decode every PEM block. Blocks whose label rustls-pki-types does not know (for
/// example `ENCRYPTED PRIVATE KEY`) are kept with `kind: None` so errors can name them.
fn pem_sections(bytes: &[u8], path: &Path) -> Result<Vec<Section>> {
    let malformed = |detail: String| Error::MalformedPem {
        path: path.to_owned(),
        detail,
    };
    let labels = begin_labels(bytes);
    let mut known = Vec::new();
    let mut rd = Cursor::new(bytes);
    loop {
        match pem::from_buf(&mut rd) {
            Ok(Some((kind, der))) => known.push((kind, der)),
            Ok(None) => break,
            Err(pem::Error::MissingSectionEnd { end_marker }) => {
                let label = String::from_utf8_lossy(&end_marker).into_owned();
                let label = label.trim_start_matches("-----END ").trim_end_matches('-');
                return Err(malformed(format!(
                    "truncated: the {label} block has no END line"
                )));
            }
            Err(pem::Error::IllegalSectionStart { line }) => {
                return Err(malformed(format!(
                    "bad BEGIN line {:?}",
                    String::from_utf8_lossy(&line).trim_end()
                )));
            }
            Err(pem::Error::Base64Decode(e)) => {
                return Err(malformed(format!("a block is not valid base64 ({e})")));
            }
            Err(e) => return Err(malformed(e.to_string())),
        }
    }
    // Pair the decoded (known) blocks with the labels in file order.
    let mut known = known.into_iter().peekable();
    let mut out = Vec::with_capacity(labels.len());
    for label in labels {
        let kind = label_kind(&label);
        match (kind, known.peek()) {
            (Some(k), Some((next, _))) if *next == k => {
                let (kind, der) = known.next().expect("peeked");
                out.push(Section {
                    label,
                    kind: Some(kind),
                    der,
                });
            }
            _ => out.push(Section {
                label,
                kind: None,
                der: Vec::new(),
            }),
        }
    }
    if out.is_empty() {
        return Err(malformed("no PEM block found".into()));
    }
    Ok(out)
}

fn begin_labels(bytes: &[u8]) -> Vec<String> {
    bytes
        .split(|&b| b == b'\n' || b == b'\r')
        .filter_map(|line| line.strip_prefix(b"-----BEGIN "))
        .map(|rest| {
            let end = rest.iter().position(|&b| b == b'-').unwrap_or(rest.len());
            String::from_utf8_lossy(&rest[..end]).into_owned()
        })
        .collect()
}

fn label_kind(label: &str) -> Option<SectionKind> {
    Some(match label {
        "CERTIFICATE" => SectionKind::Certificate,
        "PUBLIC KEY" => SectionKind::PublicKey,
        "RSA PRIVATE KEY" => SectionKind::RsaPrivateKey,
        "PRIVATE KEY" => SectionKind::PrivateKey,
        "EC PRIVATE KEY" => SectionKind::EcPrivateKey,
        "X509 CRL" => SectionKind::Crl,
        "CERTIFICATE REQUEST" => SectionKind::Csr,
        "ECHCONFIG" => SectionKind::EchConfigList,
        _ => return None,
    })
}

/// "a private key (PRIVATE KEY)" for the first block, and how many more there are.
fn describe_sections(sections: &[Section]) -> String {
    let Some(first) = sections.first() else {
        return "no PEM block".into();
    };
    let what = match first.label.as_str() {
        "PRIVATE KEY" | "RSA PRIVATE KEY" | "EC PRIVATE KEY" => "a private key",
        "ENCRYPTED PRIVATE KEY" => "an encrypted private key",
        "CERTIFICATE REQUEST" | "NEW CERTIFICATE REQUEST" => "a certificate signing request",
        "X509 CRL" => "a certificate revocation list",
        "PUBLIC KEY" => "a public key",
        "CERTIFICATE" => "a certificate",
        "TRUSTED CERTIFICATE" => "an OpenSSL 'trusted certificate' (convert it with openssl x509)",
        _ => "a PEM block",
    };
    let more = match sections.len() {
        1 => String::new(),
        n => format!(" and {} more block(s)", n - 1),
    };
    format!("{what} ({}){more}", first.label)
}

/// Certificates from a DER file: one, or several concatenated.
fn der_certificates(bytes: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        match x509_parser::parse_x509_certificate(rest) {
            Ok((after, _)) => {
                out.push(CertificateDer::from(
                    rest[..rest.len() - after.len()].to_vec(),
                ));
                rest = after;
            }
            Err(e) if out.is_empty() => return Err(not_a_der_certificate(bytes, path, &e)),
            Err(e) => {
                return Err(Error::BadCertificate {
                    path: path.to_owned(),
                    index: out.len() + 1,
                    detail: format!("trailing bytes after the last certificate ({e})"),
                });
            }
        }
    }
    Ok(out)
}

fn not_a_der_certificate(
    bytes: &[u8],
    path: &Path,
    e: &x509_parser::nom::Err<x509_parser::error::X509Error>,
) -> Error {
    let path: PathBuf = path.to_owned();
    let found = if PrivateKeyDer::try_from(bytes).is_ok() {
        "a DER private key"
    } else if x509_parser::certification_request::X509CertificationRequest::from_der(bytes).is_ok()
    {
        "a DER certificate signing request"
    } else if x509_parser::revocation_list::CertificateRevocationList::from_der(bytes).is_ok() {
        "a DER certificate revocation list"
    } else {
        return Error::NotPemOrDer {
            path,
            detail: der_failure(bytes, e),
        };
    };
    Error::NotACertificate {
        path,
        found: found.into(),
    }
}

/// Why bytes that are not PEM are not a DER certificate either, in words.
fn der_failure(bytes: &[u8], e: &x509_parser::nom::Err<x509_parser::error::X509Error>) -> String {
    let printable = bytes
        .iter()
        .filter(|b| b.is_ascii_graphic() || b.is_ascii_whitespace())
        .count();
    if printable * 10 >= bytes.len() * 9 {
        "text without a -----BEGIN line".into()
    } else if bytes[0] != 0x30 {
        "binary data that does not start with an ASN.1 SEQUENCE".into()
    } else {
        format!("binary data that is not a valid X.509 structure: {e}")
    }
}

fn check_certificate_der(cert: &CertificateDer<'_>, path: &Path, index: usize) -> Result<()> {
    let bad = |detail: String| Error::BadCertificate {
        path: path.to_owned(),
        index,
        detail,
    };
    match x509_parser::parse_x509_certificate(cert) {
        Ok(([], _)) => Ok(()),
        Ok((rest, _)) => Err(bad(format!("{} trailing bytes", rest.len()))),
        Err(e) => Err(bad(e.to_string())),
    }
}

use x509_parser::prelude::FromDer as _;

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> &'static Path {
        Path::new("f.pem")
    }

    #[test]
    fn empty_and_whitespace() {
        assert!(matches!(
            parse_certificates(b"", p()),
            Err(Error::Empty { .. })
        ));
        assert!(matches!(
            parse_certificates(b" \n\t", p()),
            Err(Error::Empty { .. })
        ));
        assert!(matches!(
            parse_private_key(b"\n", p()),
            Err(Error::Empty { .. })
        ));
    }

    #[test]
    fn truncated_pem_names_the_block() {
        let e = parse_certificates(b"-----BEGIN CERTIFICATE-----\nMIIB\n", p()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "f.pem: malformed PEM: truncated: the CERTIFICATE block has no END line"
        );
    }

    #[test]
    fn unknown_block_is_named() {
        let pem =
            b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n";
        let e = parse_certificates(pem, p()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "f.pem: expected a certificate, found an encrypted private key (ENCRYPTED PRIVATE KEY)"
        );
        let e = parse_private_key(pem, p()).unwrap_err();
        assert!(matches!(e, Error::NotAKey { .. }), "{e}");
    }

    #[cfg(unix)] // the tests that make devices, links and FIFOs
    fn not_a_file(e: &Error) -> &'static str {
        match e {
            Error::NotAFile { what, .. } => what,
            other => panic!("expected NotAFile, got {other}"),
        }
    }

    #[cfg(unix)]
    #[test]
    fn devices_and_links_to_them_are_refused_unread() {
        let e = read_file(Path::new("/dev/zero")).unwrap_err();
        assert_eq!(not_a_file(&e), "a character device");
        assert_eq!(
            e.to_string(),
            "/dev/zero: is a character device, not a regular file; not read"
        );
        let d = tempfile::tempdir().unwrap();
        let link = d.path().join("zero.pem");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        assert_eq!(
            not_a_file(&load_certificates(&link).unwrap_err()),
            "a character device"
        );
        assert_eq!(not_a_file(&read_file(d.path()).unwrap_err()), "a directory");
    }

    #[cfg(unix)]
    #[test]
    fn a_fifo_is_refused_without_waiting_for_a_writer() {
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("cert.pem");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        // No writer ever comes: opening it for reading would wait forever.
        assert_eq!(not_a_file(&load_private_key(&fifo).unwrap_err()), "a FIFO");
        assert_eq!(not_a_file(&load_crls(&fifo).unwrap_err()), "a FIFO");
        // Opening without blocking is what the fstat check relies on if the FIFO is
        // swapped in after the stat.
        let f = open_without_blocking(&fifo).unwrap();
        assert!(!f.metadata().unwrap().is_file());
    }

    #[test]
    fn the_limit_is_exact_and_said() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("big.pem");
        std::fs::write(&f, vec![b'a'; 1000]).unwrap();
        assert_eq!(read_file_limited(&f, 1000).unwrap().len(), 1000);
        let e = read_file_limited(&f, 999).unwrap_err();
        assert!(matches!(e, Error::TooLarge { limit: 999, .. }), "{e}");
        assert!(
            e.to_string()
                .ends_with("big.pem: too large: over 999 bytes; not read")
        );
        std::fs::write(&f, vec![b'a'; MAX_FILE_SIZE as usize + 1]).unwrap();
        let e = load_certificates(&f).unwrap_err();
        assert!(
            e.to_string().ends_with(": too large: over 4 MiB; not read"),
            "{e}"
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_read_is_capped_whatever_the_metadata_says() {
        // procfs files are regular files whose metadata says 0 bytes.
        let status = Path::new("/proc/self/status");
        assert_eq!(std::fs::metadata(status).unwrap().len(), 0);
        assert!(read_file(status).unwrap().len() > 10);
        let e = read_file_limited(status, 10).unwrap_err();
        assert!(matches!(e, Error::TooLarge { limit: 10, .. }), "{e}");
    }

    #[test]
    fn garbage_is_not_pem_or_der() {
        let e = parse_certificates(b"hello world", p()).unwrap_err();
        assert!(matches!(e, Error::NotPemOrDer { .. }), "{e}");
    }
}
