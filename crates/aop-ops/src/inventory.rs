//! Inventory: every certificate under some paths (and presented by live endpoints), one
//! row per distinct certificate, with where it was found, what it is, when it expires,
//! and what operators get wrong about it.
//!
//! Parallel over files (`jobs` threads); every step after reading is linear or
//! hash-indexed, so 10,000 files take seconds, not minutes.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aop_pki::{CertInfo, Error, Role, Sha256Fingerprint, Validity};
use rustls::crypto::CryptoProvider;
use rustls_pki_types::CertificateDer;
use serde::Serialize;
use time::OffsetDateTime;

/// A well-known public certificate that inventory names when it meets it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct KnownCertificate {
    /// Its certificate pin: SHA-256 of the DER, lowercase hex.
    pub sha256: &'static str,
    /// What it is, as the `label` of its row.
    pub label: &'static str,
}

/// The certificates inventory recognises, by SHA-256: Cloudflare's origin-pull CAs and
/// Origin CA roots, the ones an operator of authenticated origin pulls meets. Each is a
/// real certificate checked in under `testdata/cloudflare/`, whose README says where it
/// came from; `openssl x509 -in FILE -noout -fingerprint -sha256` gives the pin. Add a
/// certificate here, and its file there, together.
pub const KNOWN_CERTIFICATES: [KnownCertificate; 4] = [
    KnownCertificate {
        sha256: "9a1ac2b4be15f9f27eee20a734cba4e9898f61001b3bd7c84b69b56a3e25a2b9",
        label: "Cloudflare shared origin-pull CA (2019)",
    },
    KnownCertificate {
        sha256: "062465eea14401f48be7d9a873f2ee674f96806584225d50c04f761d4480b8ba",
        label: "Cloudflare shared origin-pull CA (2015, superseded; same key as 2019)",
    },
    KnownCertificate {
        sha256: "d3c7e85c91707fc0a12abc5d88266747aa4fa8e7b162f633ffb3c9d989947620",
        label: "Cloudflare Origin CA RSA root (2019)",
    },
    KnownCertificate {
        sha256: "b8f86d0d3f140d2f745bdfdc3d1b1b6cdd0e243a0e4847ec46f3d58005253220",
        label: "Cloudflare Origin CA ECC root (2016)",
    },
];

/// The label of a well-known certificate ([`KNOWN_CERTIFICATES`]), if `sha256` is one.
pub fn known_label(sha256: &Sha256Fingerprint) -> Option<&'static str> {
    let hex = sha256.to_string();
    KNOWN_CERTIFICATES
        .iter()
        .find(|k| k.sha256 == hex)
        .map(|k| k.label)
}

/// Where a certificate stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Valid, and not yet at two thirds of its lifetime.
    Ok,
    /// Past two thirds of its lifetime: renewal is due (as step-ca does it). Never a
    /// third-party anchor's status ([`Row::third_party_anchor`]): its issuer renews it.
    RenewDue,
    /// Expires within the warning window.
    Expiring,
    /// Not valid yet.
    NotYetValid,
    /// Expired.
    Expired,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ok => "ok",
            Self::RenewDue => "renew-due",
            Self::Expiring => "expiring",
            Self::NotYetValid => "not-yet-valid",
            Self::Expired => "expired",
        })
    }
}

/// Options for [`scan`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Options {
    /// A certificate is `expiring` within this many days (default 30).
    pub warn_days: i64,
    /// Threads reading and parsing files (default: the machine's parallelism).
    pub jobs: usize,
    /// The time statuses are computed for (default: now).
    pub at: OffsetDateTime,
    /// The crypto provider that derives a private key's public half, to pair it with
    /// its certificate (default: [`aop_pki::default_provider`]).
    pub provider: Arc<CryptoProvider>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            warn_days: 30,
            jobs: std::thread::available_parallelism().map_or(2, usize::from),
            at: OffsetDateTime::now_utc(),
            provider: aop_pki::default_provider(),
        }
    }
}

/// Certificates from somewhere that is not a file (a live endpoint's chain).
#[derive(Clone, Debug)]
pub struct Source {
    /// How to name the place in the report (`https://host:port/ (presented)`).
    pub place: String,
    /// The certificates found there, in order.
    pub certs: Vec<CertificateDer<'static>>,
    /// Why nothing could be read there, if so (reported as unreadable).
    pub error: Option<String>,
}

/// One distinct certificate.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct Row {
    /// Where it stands.
    pub status: Status,
    /// Whole days to `not_after` (negative once expired).
    pub days_left: i64,
    /// CA, client, server, …
    pub role: Role,
    /// RFC 4514 subject.
    pub subject: String,
    /// RFC 4514 issuer.
    pub issuer: String,
    /// Serial, hex.
    pub serial: String,
    /// Start of validity.
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    /// End of validity.
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    /// Certificate pin.
    pub sha256: Sha256Fingerprint,
    /// SPKI pin.
    pub spki_sha256: Sha256Fingerprint,
    /// What it is, if it is a well-known certificate.
    pub label: Option<&'static str>,
    /// Every place it was found: `path` or `path#N` for the N-th in a bundle, or a URL.
    pub places: Vec<String>,
    /// The private key file that belongs to it, if one was found.
    pub key: Option<PathBuf>,
    /// Whether it is a third-party anchor: a well-known certificate
    /// ([`KNOWN_CERTIFICATES`]), or a self-issued CA certificate whose private key is
    /// nowhere in the inventory. The operator cannot renew it, so it is never
    /// `renew-due`: `ok` until within the warning window (`expiring`), then `expired`.
    pub third_party_anchor: bool,
    #[serde(skip)]
    info: CertInfo,
}

/// A private key that was found (its contents are never read out, only its public half).
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct KeyRow {
    /// The file.
    pub path: PathBuf,
    /// The certificate it belongs to (SHA-256), if that certificate was found.
    pub certificate: Option<Sha256Fingerprint>,
}

/// A file that looked like a certificate or key and could not be read.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct Unreadable {
    /// The file or endpoint.
    pub place: String,
    /// Why.
    pub error: String,
}

/// What kind of mistake a [`Problem`] is. Serialised, and printed, as its kebab-case
/// name (`unknown-issuer`, …; docs/json.md lists them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ProblemKind {
    /// A certificate whose issuer is nowhere in the inventory.
    UnknownIssuer,
    /// A certificate that outlives every CA that could have issued it.
    CaExpiresBeforeLeaf,
    /// An aop-origin configuration pins a certificate where an SPKI pin would survive a
    /// re-issue with the same key.
    CertificatePin,
    /// A private key whose certificate was not found.
    KeyWithoutCertificate,
    /// A client or server certificate found without its private key.
    CertificateWithoutKey,
    /// Several certificates share one key.
    SameKey,
    /// A device, FIFO or socket met while walking a directory: skipped, never opened.
    NotARegularFile,
}

impl ProblemKind {
    /// The name, as in the JSON and the human report.
    pub fn name(self) -> &'static str {
        match self {
            Self::UnknownIssuer => "unknown-issuer",
            Self::CaExpiresBeforeLeaf => "ca-expires-before-leaf",
            Self::CertificatePin => "certificate-pin",
            Self::KeyWithoutCertificate => "key-without-certificate",
            Self::CertificateWithoutKey => "certificate-without-key",
            Self::SameKey => "same-key",
            Self::NotARegularFile => "not-a-regular-file",
        }
    }
}

impl fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Something an operator probably got wrong.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct Problem {
    /// What kind of mistake.
    pub kind: ProblemKind,
    /// The certificate concerned, if any.
    pub sha256: Option<Sha256Fingerprint>,
    /// One sentence.
    pub message: String,
}

/// Counts by status.
#[derive(Clone, Debug, Default, Serialize)]
#[non_exhaustive]
pub struct Summary {
    /// Distinct certificates.
    pub certificates: usize,
    /// `ok`.
    pub ok: usize,
    /// `renew-due`.
    pub renew_due: usize,
    /// `expiring`.
    pub expiring: usize,
    /// `expired`.
    pub expired: usize,
    /// `not-yet-valid`.
    pub not_yet_valid: usize,
    /// Unreadable files.
    pub unreadable: usize,
}

/// The whole inventory. Serialised as-is by `certtool inventory --json` (docs/json.md).
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct Inventory {
    /// The time statuses are for.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// The warning window, in days.
    pub warn_days: i64,
    /// Counts.
    pub summary: Summary,
    /// One row per distinct certificate, soonest expiry first.
    pub certificates: Vec<Row>,
    /// Private keys found.
    pub keys: Vec<KeyRow>,
    /// Files that could not be read.
    pub unreadable: Vec<Unreadable>,
    /// Things to fix.
    pub problems: Vec<Problem>,
}

impl Inventory {
    /// 0 all ok; 1 something expiring or due for renewal; 2 expired, not yet valid, or
    /// unreadable.
    pub fn exit_code(&self) -> u8 {
        let s = &self.summary;
        if s.expired + s.not_yet_valid + s.unreadable > 0 {
            2
        } else if s.expiring + s.renew_due > 0 {
            1
        } else {
            0
        }
    }
}

/// What one file held.
enum Found {
    Certs(PathBuf, Vec<CertInfo>, usize),
    Key(PathBuf, Option<Sha256Fingerprint>),
    Pins(PathBuf, Vec<(Sha256Fingerprint, usize)>),
    Unreadable(PathBuf, String),
    /// Met while walking a directory and not a regular file: what it is.
    NotAFile(PathBuf, &'static str),
}

/// Inventory `paths` (files, and directories walked recursively) plus `sources`.
pub fn scan(paths: &[PathBuf], sources: &[Source], opts: &Options) -> Inventory {
    let mut files = Vec::new();
    let mut unreadable = Vec::new();
    for p in paths {
        match std::fs::metadata(p) {
            Ok(m) if m.is_dir() => walk(p, &mut files, &mut HashSet::new(), &mut unreadable),
            Ok(_) => files.push((p.clone(), true)),
            Err(e) => unreadable.push(Unreadable {
                place: p.display().to_string(),
                error: format!("cannot read: {e}"),
            }),
        }
    }
    let jobs = opts.jobs.max(1);
    let chunk = files.len().div_ceil(jobs).max(1);
    let at = opts.at;
    let provider: &CryptoProvider = &opts.provider;
    let found: Vec<Found> = std::thread::scope(|s| {
        let handles: Vec<_> = files
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .flat_map(|(p, explicit)| read_one(p, *explicit, at, provider))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });

    let mut rows: HashMap<Sha256Fingerprint, Row> = HashMap::new();
    let mut add = |info: CertInfo, place: String| {
        rows.entry(info.sha256)
            .or_insert_with(|| new_row(info, opts))
            .places
            .push(place);
    };
    let mut keys = Vec::new();
    let mut pins = Vec::new();
    let mut problems = Vec::new();
    for f in found {
        match f {
            Found::Certs(path, infos, total) => {
                for (i, info) in infos.into_iter().enumerate() {
                    let place = if total > 1 {
                        format!("{}#{}", path.display(), i + 1)
                    } else {
                        path.display().to_string()
                    };
                    add(info, place);
                }
            }
            Found::Key(path, spki) => keys.push((path, spki)),
            Found::Pins(path, p) => {
                pins.extend(p.into_iter().map(|(pin, line)| (path.clone(), line, pin)));
            }
            Found::Unreadable(path, error) => unreadable.push(Unreadable {
                place: path.display().to_string(),
                error,
            }),
            Found::NotAFile(path, what) => problems.push(Problem {
                kind: ProblemKind::NotARegularFile,
                sha256: None,
                message: format!("{}: {what}, not a regular file; skipped", path.display()),
            }),
        }
    }
    for src in sources {
        if let Some(error) = &src.error {
            unreadable.push(Unreadable {
                place: src.place.clone(),
                error: error.clone(),
            });
        }
        let n = src.certs.len();
        for (i, der) in src.certs.iter().enumerate() {
            match CertInfo::from_der(der, at) {
                Ok(info) => add(
                    info,
                    if n > 1 {
                        format!("{}#{}", src.place, i + 1)
                    } else {
                        src.place.clone()
                    },
                ),
                Err(e) => unreadable.push(Unreadable {
                    place: format!("{}#{}", src.place, i + 1),
                    error: e,
                }),
            }
        }
    }

    // Keys ↔ certificates, by public key.
    let by_spki: HashMap<Sha256Fingerprint, Vec<Sha256Fingerprint>> =
        rows.values().fold(HashMap::new(), |mut m, r| {
            m.entry(r.spki_sha256).or_default().push(r.sha256);
            m
        });
    let mut key_rows = Vec::new();
    for (path, spki) in keys {
        let certs = spki.and_then(|s| by_spki.get(&s));
        let certificate = certs.and_then(|c| c.first().copied());
        for c in certs.into_iter().flatten() {
            if let Some(r) = rows.get_mut(c) {
                r.key.get_or_insert_with(|| path.clone());
            }
        }
        if certificate.is_none() {
            problems.push(Problem {
                kind: ProblemKind::KeyWithoutCertificate,
                sha256: None,
                message: format!(
                    "{}: a private key whose certificate is not in the inventory",
                    path.display()
                ),
            });
        }
        key_rows.push(KeyRow { path, certificate });
    }
    for r in rows.values_mut() {
        r.third_party_anchor =
            r.label.is_some() || (r.info.is_ca && r.info.self_issued && r.key.is_none());
        if r.third_party_anchor && r.status == Status::RenewDue {
            r.status = Status::Ok;
        }
    }
    let mut list: Vec<Row> = rows.into_values().collect();
    list.sort_by(|a, b| {
        (a.not_after, &a.subject, a.sha256).cmp(&(b.not_after, &b.subject, b.sha256))
    });

    // Issuers, by subject name (and key id where both sides have one).
    let by_subject: HashMap<&str, Vec<&Row>> = list.iter().fold(HashMap::new(), |mut m, r| {
        m.entry(r.subject.as_str()).or_default().push(r);
        m
    });
    for r in &list {
        if r.info.self_issued {
            continue;
        }
        let issuers: Vec<&&Row> = by_subject
            .get(r.issuer.as_str())
            .map(|v| {
                v.iter()
                    .filter(|i| i.info.is_ca)
                    .filter(
                        |i| match (&r.info.authority_key_id, &i.info.subject_key_id) {
                            (Some(a), Some(s)) => a == s,
                            _ => true,
                        },
                    )
                    .collect()
            })
            .unwrap_or_default();
        if issuers.is_empty() {
            problems.push(Problem {
                kind: ProblemKind::UnknownIssuer,
                sha256: Some(r.sha256),
                message: format!(
                    "{} ({}): its issuer {} is nowhere in the inventory",
                    r.subject,
                    short(&r.sha256),
                    r.issuer
                ),
            });
        } else if let Some(ca) = issuers
            .iter()
            .filter(|ca| ca.not_after < r.not_after)
            .max_by_key(|ca| ca.not_after)
            && issuers.iter().all(|ca| ca.not_after < r.not_after)
        {
            problems.push(Problem {
                kind: ProblemKind::CaExpiresBeforeLeaf,
                sha256: Some(r.sha256),
                message: format!(
                    "{} ({}) is valid until {}, but its CA {} expires {}: it stops verifying then",
                    r.subject,
                    short(&r.sha256),
                    aop_pki::rfc3339(r.not_after),
                    ca.subject,
                    aop_pki::rfc3339(ca.not_after)
                ),
            });
        }
        if matches!(r.role, Role::Client | Role::Server | Role::ClientAndServer)
            && r.key.is_none()
            && r.places.iter().all(|p| !p.starts_with("https://"))
        {
            problems.push(Problem {
                kind: ProblemKind::CertificateWithoutKey,
                sha256: Some(r.sha256),
                message: format!(
                    "{} ({}): no private key for it was found",
                    r.subject,
                    short(&r.sha256)
                ),
            });
        }
    }
    // Re-issues with the same key, and certificate pins that an SPKI pin would outlive.
    for (spki, certs) in &by_spki {
        if certs.len() > 1 {
            let names: Vec<String> = certs.iter().map(short).collect();
            problems.push(Problem {
                kind: ProblemKind::SameKey,
                sha256: None,
                message: format!(
                    "{} certificates share one key (SPKI {}): {}; an SPKI pin covers all of them, a certificate pin only one",
                    certs.len(),
                    short(spki),
                    names.join(", ")
                ),
            });
        }
    }
    let by_sha: HashMap<Sha256Fingerprint, &Row> = list.iter().map(|r| (r.sha256, r)).collect();
    for (path, line, pin) in pins {
        if let Some(r) = by_sha.get(&pin) {
            problems.push(Problem {
                kind: ProblemKind::CertificatePin,
                sha256: Some(r.sha256),
                message: format!(
                    "{}:{line}: pins {} by its certificate fingerprint, which changes at every re-issue; spki_pins = [\"{}\"] would survive a re-issue with the same key",
                    path.display(),
                    r.subject,
                    r.spki_sha256
                ),
            });
        }
    }

    let mut summary = Summary {
        certificates: list.len(),
        unreadable: unreadable.len(),
        ..Summary::default()
    };
    for r in &list {
        match r.status {
            Status::Ok => summary.ok += 1,
            Status::RenewDue => summary.renew_due += 1,
            Status::Expiring => summary.expiring += 1,
            Status::Expired => summary.expired += 1,
            Status::NotYetValid => summary.not_yet_valid += 1,
        }
    }
    key_rows.sort_by(|a, b| a.path.cmp(&b.path));
    unreadable.sort_by(|a, b| a.place.cmp(&b.place));
    Inventory {
        at,
        warn_days: opts.warn_days,
        summary,
        certificates: list,
        keys: key_rows,
        unreadable,
        problems,
    }
}

fn short(f: &Sha256Fingerprint) -> String {
    f.to_string()[..16].to_owned()
}

fn new_row(info: CertInfo, opts: &Options) -> Row {
    let lifetime = info.not_after - info.not_before;
    let renew_at = info.not_before + lifetime * 2 / 3;
    let status = match info.validity {
        Validity::Expired => Status::Expired,
        Validity::NotYetValid => Status::NotYetValid,
        Validity::Valid if info.days_left < opts.warn_days => Status::Expiring,
        Validity::Valid if opts.at >= renew_at => Status::RenewDue,
        Validity::Valid => Status::Ok,
    };
    let label = known_label(&info.sha256);
    Row {
        status,
        days_left: info.days_left,
        role: info.role,
        subject: info.subject.clone(),
        issuer: info.issuer.clone(),
        serial: info.serial.clone(),
        not_before: info.not_before,
        not_after: info.not_after,
        sha256: info.sha256,
        spki_sha256: info.spki_sha256,
        label,
        places: Vec::new(),
        key: None,
        third_party_anchor: false,
        info,
    }
}

/// Collect candidate files under `dir` (not following symlinked directories twice).
fn walk(
    dir: &Path,
    out: &mut Vec<(PathBuf, bool)>,
    seen: &mut HashSet<PathBuf>,
    errors: &mut Vec<Unreadable>,
) {
    let fail = |errors: &mut Vec<Unreadable>, e: std::io::Error| {
        errors.push(Unreadable {
            place: dir.display().to_string(),
            error: format!("cannot read directory: {e}"),
        });
    };
    let canonical = match dir.canonicalize() {
        Ok(c) => c,
        Err(e) => return fail(errors, e),
    };
    if !seen.insert(canonical) {
        return;
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => return fail(errors, e),
    };
    let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => walk(&path, out, seen, errors),
            Ok(t) if t.is_symlink() && path.is_dir() => walk(&path, out, seen, errors),
            Ok(_) => out.push((path, false)),
            Err(_) => {}
        }
    }
}

const CERT_EXTENSIONS: [&str; 6] = ["pem", "crt", "cer", "der", "key", "cert"];

/// Read one file. Files met while walking a directory are only reported when they look
/// like certificates or keys; files named explicitly always are.
fn read_one(
    path: &Path,
    explicit: bool,
    at: OffsetDateTime,
    provider: &CryptoProvider,
) -> Vec<Found> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    // A device or FIFO is never opened, and no read goes past the limit (read_file). A
    // file met while walking that is too large is no certificate: skipped, as before.
    let bytes = match aop_pki::read_file(path) {
        Ok(b) => b,
        Err(Error::NotAFile { what, .. }) if !explicit => {
            return vec![Found::NotAFile(path.to_owned(), what)];
        }
        Err(Error::TooLarge { .. }) if !explicit => return Vec::new(),
        Err(e) => return vec![Found::Unreadable(path.to_owned(), without_path(&e, path))],
    };
    if ext == "toml" {
        return pins_in_config(&bytes)
            .map(|p| Found::Pins(path.to_owned(), p))
            .into_iter()
            .collect();
    }
    let has_pem = bytes.windows(11).any(|w| w == b"-----BEGIN ");
    if !explicit && !has_pem && !CERT_EXTENSIONS.contains(&ext.as_str()) {
        return Vec::new();
    }
    let mut out = Vec::new();
    let has_key = bytes.windows(12).any(|w| w == b"PRIVATE KEY-");
    if has_key {
        match aop_pki::parse_private_key(&bytes, path) {
            Ok(key) => out.push(Found::Key(path.to_owned(), spki_of(&key, provider))),
            Err(e) => out.push(Found::Unreadable(path.to_owned(), e.to_string())),
        }
    }
    let has_cert = bytes.windows(17).any(|w| w == b"BEGIN CERTIFICATE");
    if has_cert || (!has_pem && !has_key) {
        match aop_pki::parse_certificates(&bytes, path) {
            Ok(certs) => {
                let total = certs.len();
                let infos = certs
                    .iter()
                    .filter_map(|c| CertInfo::from_der(c, at).ok())
                    .collect();
                out.push(Found::Certs(path.to_owned(), infos, total));
            }
            Err(_) if !explicit && !has_cert && ext == "key" => {}
            Err(e) => out.push(Found::Unreadable(path.to_owned(), without_path(&e, path))),
        }
    }
    out
}

/// An error's line without the leading `PATH: ` (the report names the place already).
fn without_path(e: &Error, path: &Path) -> String {
    let msg = e.to_string();
    msg.strip_prefix(&format!("{}: ", path.display()))
        .unwrap_or(&msg)
        .to_owned()
}

/// SHA-256 of the public half of a private key (to pair it with its certificate), as
/// `provider` derives it.
fn spki_of(
    key: &rustls_pki_types::PrivateKeyDer<'_>,
    provider: &CryptoProvider,
) -> Option<Sha256Fingerprint> {
    let signing = provider
        .key_provider
        .load_private_key(key.clone_key())
        .ok()?;
    signing
        .public_key()
        .map(|spki| Sha256Fingerprint::of(spki.as_ref()))
}

/// Certificate pins in an aop-origin configuration (`[[site]] pins = [...]`), with the
/// line each stands on (from the TOML parser's spans).
fn pins_in_config(bytes: &[u8]) -> Option<Vec<(Sha256Fingerprint, usize)>> {
    #[derive(serde::Deserialize)]
    struct Config {
        #[serde(default)]
        site: Vec<Site>,
    }
    #[derive(serde::Deserialize)]
    struct Site {
        #[serde(default)]
        pins: Vec<toml::Spanned<toml::Value>>,
    }
    let text = std::str::from_utf8(bytes).ok()?;
    if !text.contains("[[site]]") {
        return None;
    }
    let config: Config = toml::from_str(text).ok()?;
    let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
    Some(
        config
            .site
            .iter()
            .flat_map(|site| &site.pins)
            .filter_map(|pin| {
                let fp = pin.get_ref().as_str()?.parse::<Sha256Fingerprint>().ok()?;
                Some((fp, line_of(pin.span().start)))
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is a failure with a backtrace

    use super::*;

    #[test]
    fn config_pins_carry_the_line_they_stand_on() {
        let pin = "aa".repeat(32);
        // The pin is named in a comment first: its line is where the value stands.
        let text = format!(
            "# old: {pin}\n[[site]]\nhostnames = [\"a\"]\npins = [\n  7,\n  \"{pin}\",\n]\n"
        );
        let found = pins_in_config(text.as_bytes()).unwrap();
        assert_eq!(found, [(pin.parse().unwrap(), 6)]);
        assert!(
            pins_in_config(b"listen = 1").is_none(),
            "no site: not a config"
        );
        assert!(pins_in_config(b"[[site]]\npins = [").is_none(), "not TOML");
    }

    #[test]
    fn problem_kinds_print_as_they_serialise() {
        for kind in [
            ProblemKind::UnknownIssuer,
            ProblemKind::CaExpiresBeforeLeaf,
            ProblemKind::CertificatePin,
            ProblemKind::KeyWithoutCertificate,
            ProblemKind::CertificateWithoutKey,
            ProblemKind::SameKey,
            ProblemKind::NotARegularFile,
        ] {
            assert_eq!(serde_json::to_string(&kind).unwrap(), format!("\"{kind}\""));
        }
    }

    #[test]
    fn known_certificates_are_pins_and_are_found() {
        for k in KNOWN_CERTIFICATES {
            let pin: Sha256Fingerprint = k.sha256.parse().unwrap();
            assert_eq!(pin.to_string(), k.sha256, "lowercase hex, no colons");
            assert_eq!(known_label(&pin), Some(k.label));
        }
        assert_eq!(known_label(&Sha256Fingerprint::of(b"")), None);
    }
}
