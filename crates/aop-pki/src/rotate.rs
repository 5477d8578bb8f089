//! Rotating the edge's client certificate (and the CA behind it) in the safe order:
//!
//! 1. `stage`: issue the next certificate; origins' trust becomes current + next CA.
//! 2. `activate`: only once every origin accepts the next certificate; the edge switches.
//! 3. `retire`: origins' trust drops the old CA.
//!
//! State lives in a directory:
//!
//! ```text
//! DIR/manifest.json        the state (the commit point of every step)
//! DIR/certs/<id>/          every certificate issued: cert.pem (+chain), key.pem (0600), ca.pem
//! DIR/edge -> certs/<id>   what the edge presents: DIR/edge/cert.pem, DIR/edge/key.pem
//! DIR/trust.pem            what origins trust
//! ```
//!
//! Every step writes new certificate files first (in a fresh directory, never over
//! anything), then the manifest (atomically: this is the commit), then the files derived
//! from it: `trust.pem` (atomic write) and the `edge` symlink (atomic rename). A process
//! killed at any point leaves either the old manifest (and at most an unused certificate
//! directory) or the new manifest with derived files still to update; every command
//! first brings the derived files in line with the manifest, so re-running the same step
//! (or `rollback`) completes it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{Ca, CertInfo, ClientRequest, Error, KeyType, Overwrite, Result, Sha256Fingerprint};

/// Where the rotation is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// One certificate, trusted alone.
    Single,
    /// A next certificate exists; origins trust both CAs; the edge still presents the old one.
    Staged,
    /// The edge presents the new certificate; origins still trust the old CA too.
    Activated,
}

impl Phase {
    /// What to do next, in words.
    pub fn next_step(self) -> &'static str {
        match self {
            Self::Single => "nothing pending; `rotate stage` to begin the next rotation",
            Self::Staged => {
                "reload every origin with the new trust.pem, then `rotate activate --probe …` (it checks every origin accepts the next certificate)"
            }
            Self::Activated => {
                "reload every edge with the new edge/ certificate; once none presents the old one, `rotate retire`"
            }
        }
    }
}

/// One certificate in the rotation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CertRecord {
    /// Its directory under `certs/`.
    pub id: String,
    /// Certificate pin.
    pub sha256: Sha256Fingerprint,
    /// Its subject.
    pub subject: String,
    /// Its issuer.
    pub issuer: String,
    /// End of validity.
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    /// The CA directory it was issued from.
    pub ca_dir: PathBuf,
}

/// The rotation state (`manifest.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Manifest {
    /// Format version (1).
    pub version: u32,
    /// Common name of the edge certificates.
    pub common_name: String,
    /// Days of validity of each new certificate.
    pub days: u32,
    /// Key type of each new certificate.
    pub key_type: String,
    /// Where the rotation is.
    pub phase: Phase,
    /// What the edge presents.
    pub active: CertRecord,
    /// The staged certificate (phase `staged`).
    pub next: Option<CertRecord>,
    /// The certificate the edge presented before `activate` (phase `activated`).
    pub previous: Option<CertRecord>,
    /// Certificates retired.
    #[serde(default)]
    pub retired: Vec<CertRecord>,
    /// The last step taken.
    pub last_step: String,
    /// Incremented by every committed step (rollbacks included).
    #[serde(default)]
    pub generation: u64,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub updated: OffsetDateTime,
    /// The state before the last step, for `rollback`.
    pub undo: Option<Box<Self>>,
}

/// How many steps back `rollback` can go (the manifest keeps that many previous states).
pub const UNDO_DEPTH: usize = 16;

/// `m` with its undo chain cut so that, with `m` itself, it holds [`UNDO_DEPTH`] states.
fn bounded(mut m: Manifest) -> Manifest {
    let mut depth = 1;
    let mut cur = &mut m;
    while let Some(prev) = cur.undo.as_deref_mut() {
        depth += 1;
        if depth >= UNDO_DEPTH {
            prev.undo = None;
            break;
        }
        cur = prev;
    }
    m
}

impl Manifest {
    /// Parse the contents of `manifest.json` (of the rotation in `dir`, which errors
    /// name), and check that every certificate id, in the undo chain too, is one plain
    /// directory name: no record can point outside `certs/`.
    pub fn from_json(bytes: &[u8], dir: &Path) -> Result<Self> {
        // serde_json quotes what it could not read, control characters and all: escape
        // them so the error stays one line (found by the `manifest` fuzz target).
        let damaged = |reason: String| Error::Rotation {
            dir: dir.to_owned(),
            reason: format!(
                "manifest.json is damaged: {}",
                reason
                    .chars()
                    .map(|c| {
                        if c.is_control() {
                            c.escape_default().to_string()
                        } else {
                            c.to_string()
                        }
                    })
                    .collect::<String>()
            ),
        };
        let m: Self = serde_json::from_slice(bytes).map_err(|e| damaged(e.to_string()))?;
        let mut state = Some(&m);
        while let Some(s) = state {
            let recs = std::iter::once(&s.active)
                .chain(&s.next)
                .chain(&s.previous)
                .chain(&s.retired);
            for rec in recs {
                let mut parts = Path::new(&rec.id).components();
                if !matches!(
                    (parts.next(), parts.next()),
                    (Some(std::path::Component::Normal(_)), None)
                ) {
                    return Err(damaged(format!(
                        "certificate id {:?} is not a plain directory name",
                        rec.id
                    )));
                }
            }
            state = s.undo.as_deref();
        }
        Ok(m)
    }
}

/// A derived text file's contents, if it is a readable regular file within the limit
/// (read through [`crate::read_file`], like every file).
fn read_text(path: &Path) -> Option<String> {
    String::from_utf8(crate::read_file(path).ok()?).ok()
}

/// Test hook: `AOP_TEST_CRASH_AT_WRITE=N` aborts the process right after the N-th write
/// a rotation step makes, as a SIGKILL would, so tests can prove every write point safe.
fn write_point() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static WRITES: AtomicUsize = AtomicUsize::new(0);
    let n = WRITES.fetch_add(1, Ordering::SeqCst) + 1;
    if std::env::var("AOP_TEST_CRASH_AT_WRITE")
        .ok()
        .and_then(|v| v.parse().ok())
        == Some(n)
    {
        std::process::abort();
    }
}

/// A rotation directory.
#[derive(Debug)]
pub struct Rotation {
    dir: PathBuf,
}

/// What a step did, for the report.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct StepReport {
    /// The step.
    pub step: &'static str,
    /// Whether this run only finished a step an earlier, interrupted run had committed.
    pub completed_interrupted: bool,
    /// Whether the step had already been taken (by an earlier run, perhaps one killed
    /// after its last write): nothing was left to do.
    pub already_done: bool,
    /// The state now.
    pub manifest: Manifest,
}

fn not_found(dir: &Path) -> Error {
    Error::Read {
        path: dir.join("manifest.json"),
        error: std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no rotation here (run `rotate init`)",
        ),
    }
}

/// A refusal to take a step from the current phase.
fn wrong_phase(dir: &Path, step: &str, phase: Phase) -> Error {
    Error::Rotation {
        dir: dir.to_owned(),
        reason: format!(
            "cannot {step} in phase {phase:?}; next: {}",
            phase.next_step()
        ),
    }
}

impl Rotation {
    /// The rotation in `dir` (which may not exist yet, for `init`).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// Hold `DIR/.lock` for the rest of a step: two steps at once are refused, not mixed.
    fn lock(&self) -> Result<std::fs::File> {
        let path = self.dir.join(".lock");
        let werr = |error| Error::Write {
            path: path.clone(),
            error,
        };
        // A FIFO or device planted as the lock is refused, and cannot block the open.
        if let Ok(meta) = std::fs::metadata(&path) {
            crate::load::regular_file(&path, &meta)?;
        }
        let file = crate::load::without_blocking(
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true),
        )
        .open(&path)
        .map_err(werr)?;
        crate::load::regular_file(&path, &file.metadata().map_err(werr)?)?;
        // Wait a little (a lock can be held for a moment by a process forked while it was
        // open), then refuse.
        for _ in 0..100 {
            match file.try_lock() {
                Ok(()) => return Ok(file),
                Err(std::fs::TryLockError::WouldBlock) => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(std::fs::TryLockError::Error(error)) => {
                    return Err(Error::Write { path, error });
                }
            }
        }
        Err(Error::Rotation {
            dir: self.dir.clone(),
            reason: "another rotate step is running here; try again when it has finished".into(),
        })
    }

    fn manifest_path(&self) -> PathBuf {
        self.dir.join("manifest.json")
    }

    /// `DIR/trust.pem`.
    pub fn trust_path(&self) -> PathBuf {
        self.dir.join("trust.pem")
    }

    /// `DIR/edge` (a symlink to the active certificate's directory).
    pub fn edge_dir(&self) -> PathBuf {
        self.dir.join("edge")
    }

    /// The directory of a certificate record.
    pub fn cert_dir(&self, rec: &CertRecord) -> PathBuf {
        self.dir.join("certs").join(&rec.id)
    }

    /// Read the manifest.
    pub fn manifest(&self) -> Result<Manifest> {
        let path = self.manifest_path();
        let bytes = match crate::read_file(&path) {
            Ok(b) => b,
            Err(Error::Read { error, .. }) if error.kind() == std::io::ErrorKind::NotFound => {
                return Err(not_found(&self.dir));
            }
            Err(e) => return Err(e),
        };
        Manifest::from_json(&bytes, &self.dir)
    }

    /// Write the manifest (the commit point). Callers set `generation` one above the
    /// state they replace. Any other step than a rollback first removes a rollback
    /// intent an interrupted rollback may have left, so it cannot be mistaken later.
    fn commit(&self, m: &Manifest) -> Result<()> {
        if m.last_step != "rollback" {
            let _ = std::fs::remove_file(self.intent_path());
        }
        let json = serde_json::to_vec_pretty(m).map_err(|e| Error::Generate(e.to_string()))?;
        crate::write_atomic(
            &self.manifest_path(),
            &json,
            crate::FileMode::Public,
            Overwrite::Replace,
        )?;
        write_point();
        Ok(())
    }

    /// Issue a certificate from `ca_dir` into a fresh `certs/<id>/`.
    fn issue(
        &self,
        ca_dir: &Path,
        m_cn: &str,
        days: u32,
        key_type: &str,
        now: OffsetDateTime,
    ) -> Result<CertRecord> {
        let ca = Ca::load(ca_dir, now)?;
        let req = ClientRequest {
            common_name: m_cn.to_owned(),
            sans: Vec::new(),
            days,
            key_type: key_type.parse::<KeyType>()?,
        };
        let issued = ca.issue_client(&req, now)?;
        let info: CertInfo = issued.info(now);
        let id = format!(
            "{}-{}",
            now.unix_timestamp(),
            &info.sha256.to_string()[..12]
        );
        let dir = self.dir.join("certs").join(&id);
        crate::ensure_dir(&dir, true)?;
        let ca_pem: String = ca
            .chain()
            .iter()
            .take(1)
            .map(|c| crate::pem_encode("CERTIFICATE", c))
            .collect();
        crate::write_all_atomic(
            &[
                crate::PendingFile {
                    path: dir.join("key.pem"),
                    contents: issued.key.expose().as_bytes(),
                    mode: crate::FileMode::Secret,
                },
                crate::PendingFile {
                    path: dir.join("cert.pem"),
                    contents: issued.cert_pem().as_bytes(),
                    mode: crate::FileMode::Public,
                },
                crate::PendingFile {
                    path: dir.join("ca.pem"),
                    contents: ca_pem.as_bytes(),
                    mode: crate::FileMode::Public,
                },
            ],
            Overwrite::Refuse,
        )?;
        write_point();
        Ok(CertRecord {
            id,
            sha256: info.sha256,
            subject: info.subject,
            issuer: info.issuer,
            not_after: info.not_after,
            ca_dir: ca_dir.to_owned(),
        })
    }

    /// The CA certificates origins must trust in this state, deduplicated, as PEM.
    fn trust_pem(&self, m: &Manifest) -> Result<String> {
        let mut recs = vec![&m.active];
        recs.extend(m.next.iter());
        recs.extend(m.previous.iter());
        let mut seen = std::collections::HashSet::new();
        let mut out = String::new();
        for rec in recs {
            for der in crate::load_certificates(&self.cert_dir(rec).join("ca.pem"))? {
                if seen.insert(Sha256Fingerprint::of(&der)) {
                    out.push_str(&crate::pem_encode("CERTIFICATE", &der));
                }
            }
        }
        Ok(out)
    }

    /// Whether the derived files (trust.pem, the edge link) match the manifest.
    pub fn files_in_step(&self, m: &Manifest) -> Result<bool> {
        let trust_ok = read_text(&self.trust_path()) == Some(self.trust_pem(m)?);
        let edge_ok = std::fs::read_link(self.edge_dir()).ok()
            == Some(PathBuf::from("certs").join(&m.active.id));
        Ok(trust_ok && edge_ok)
    }

    /// Make trust.pem and the edge link match the manifest (each write atomic).
    fn derive(&self, m: &Manifest) -> Result<()> {
        let trust = self.trust_pem(m)?;
        if read_text(&self.trust_path()).as_deref() != Some(trust.as_str()) {
            crate::write_atomic(
                &self.trust_path(),
                trust.as_bytes(),
                crate::FileMode::Public,
                Overwrite::Replace,
            )?;
            write_point();
        }
        let target = PathBuf::from("certs").join(&m.active.id);
        if std::fs::read_link(self.edge_dir()).ok() != Some(target.clone()) {
            let tmp = self.dir.join(format!(".edge.{}.tmp", std::process::id()));
            let _ = std::fs::remove_file(&tmp);
            let werr = |path: PathBuf| move |error| Error::Write { path, error };
            #[cfg(unix)]
            std::os::unix::fs::symlink(&target, &tmp).map_err(werr(tmp.clone()))?;
            std::fs::rename(&tmp, self.edge_dir()).map_err(werr(self.edge_dir()))?;
            std::fs::File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(werr(self.dir.clone()))?;
            write_point();
        }
        Ok(())
    }

    /// Bring derived files in line with the manifest (after an interrupted step).
    /// Returns whether anything had to be done.
    pub fn repair(&self) -> Result<bool> {
        let m = self.manifest()?;
        if self.files_in_step(&m)? {
            return Ok(false);
        }
        self.derive(&m)?;
        Ok(true)
    }

    /// Start a rotation: the first certificate, trusted alone.
    pub fn init(
        &self,
        ca_dir: &Path,
        common_name: &str,
        days: u32,
        key_type: &str,
        now: OffsetDateTime,
    ) -> Result<StepReport> {
        match self.manifest() {
            Ok(m) if m.last_step == "init" && m.undo.is_none() => {
                // Already initialised (perhaps by a run killed part way): finish it.
                let repaired = !self.files_in_step(&m)?;
                if repaired {
                    self.derive(&m)?;
                }
                return Ok(StepReport {
                    step: "init",
                    completed_interrupted: repaired,
                    already_done: !repaired,
                    manifest: m,
                });
            }
            Ok(_) => {
                return Err(Error::Exists {
                    path: self.manifest_path(),
                });
            }
            Err(Error::Read { error, .. }) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        crate::ensure_dir(&self.dir, true)?;
        let _lock = self.lock()?;
        let rec = self.issue(ca_dir, common_name, days, key_type, now)?;
        let m = Manifest {
            version: 1,
            common_name: common_name.to_owned(),
            days,
            key_type: key_type.to_owned(),
            phase: Phase::Single,
            active: rec,
            next: None,
            previous: None,
            retired: Vec::new(),
            last_step: "init".into(),
            generation: 1,
            updated: now,
            undo: None,
        };
        self.commit(&m)?;
        self.derive(&m)?;
        Ok(StepReport {
            step: "init",
            completed_interrupted: false,
            already_done: false,
            manifest: m,
        })
    }

    /// If the manifest says `step` was the last step taken, finish it (derived files) and
    /// report it done: re-running a step, after a kill at any point, completes it.
    fn resume(&self, step: &'static str) -> Result<(Manifest, Option<StepReport>)> {
        let m = self.manifest()?;
        let repaired = self.repair()?;
        if m.last_step == step {
            return Ok((
                m.clone(),
                Some(StepReport {
                    step,
                    completed_interrupted: repaired,
                    already_done: !repaired,
                    manifest: m,
                }),
            ));
        }
        Ok((m, None))
    }

    /// Commit `next` as the state after `step` from `m` (which becomes its undo), then
    /// bring the derived files in line.
    fn advance(
        &self,
        m: Manifest,
        mut next: Manifest,
        step: &'static str,
        now: OffsetDateTime,
    ) -> Result<StepReport> {
        next.last_step = step.into();
        next.generation = m.generation + 1;
        next.updated = now;
        next.undo = Some(Box::new(bounded(m)));
        self.commit(&next)?;
        self.derive(&next)?;
        Ok(StepReport {
            step,
            completed_interrupted: false,
            already_done: false,
            manifest: next,
        })
    }

    /// Stage the next certificate (from `new_ca`, or the current CA).
    pub fn stage(&self, new_ca: Option<&Path>, now: OffsetDateTime) -> Result<StepReport> {
        let _lock = self.lock()?;
        let (m, done) = self.resume("stage")?;
        if let Some(r) = done {
            return Ok(r);
        }
        if m.phase != Phase::Single {
            return Err(wrong_phase(&self.dir, "stage", m.phase));
        }
        let ca_dir = new_ca.map_or_else(|| m.active.ca_dir.clone(), Path::to_owned);
        let rec = self.issue(&ca_dir, &m.common_name, m.days, &m.key_type, now)?;
        let mut next = m.clone();
        next.phase = Phase::Staged;
        next.next = Some(rec);
        self.advance(m, next, "stage", now)
    }

    /// The staged certificate's files (cert.pem, key.pem), for probing before `activate`.
    pub fn staged_files(&self) -> Result<(PathBuf, PathBuf)> {
        let m = self.manifest()?;
        let rec = m
            .next
            .as_ref()
            .ok_or_else(|| wrong_phase(&self.dir, "activate", m.phase))?;
        let d = self.cert_dir(rec);
        Ok((d.join("cert.pem"), d.join("key.pem")))
    }

    /// Switch the edge to the staged certificate. `origins_accept` is the caller's proof
    /// that every origin accepts it (certtool probes them); without it (and without
    /// `force`) nothing changes.
    pub fn activate(
        &self,
        origins_accept: std::result::Result<(), String>,
        force: bool,
        now: OffsetDateTime,
    ) -> Result<StepReport> {
        let _lock = self.lock()?;
        let (m, done) = self.resume("activate")?;
        if let Some(r) = done {
            return Ok(r);
        }
        if m.phase != Phase::Staged {
            return Err(wrong_phase(&self.dir, "activate", m.phase));
        }
        if let Err(why) = origins_accept
            && !force
        {
            return Err(Error::Rotation {
                dir: self.dir.clone(),
                reason: format!("not activating: {why}; nothing changed"),
            });
        }
        let mut next = m.clone();
        next.phase = Phase::Activated;
        next.previous = Some(m.active.clone());
        next.active = m.next.clone().expect("staged");
        next.next = None;
        self.advance(m, next, "activate", now)
    }

    /// Drop the old certificate's CA from the origins' trust.
    pub fn retire(&self, now: OffsetDateTime) -> Result<StepReport> {
        let _lock = self.lock()?;
        let (m, done) = self.resume("retire")?;
        if let Some(r) = done {
            return Ok(r);
        }
        if m.phase != Phase::Activated {
            return Err(wrong_phase(&self.dir, "retire", m.phase));
        }
        let mut next = m.clone();
        next.phase = Phase::Single;
        next.retired.extend(m.previous.clone());
        // Keep the recent history only (the certificates stay in certs/).
        let excess = next.retired.len().saturating_sub(UNDO_DEPTH);
        next.retired.drain(..excess);
        next.previous = None;
        self.advance(m, next, "retire", now)
    }

    fn intent_path(&self) -> PathBuf {
        self.dir.join("rollback.intent")
    }

    /// Undo the last step (repeatable, back to `init`). After an interrupted step, the
    /// step is first completed, then undone: the result is the state before it.
    ///
    /// Rollback can be repeated on purpose, so "run it again" must not undo twice: before
    /// committing, it records its intent (`rollback.intent`: from generation → to
    /// generation); a re-run that finds the intent already committed only finishes it.
    pub fn rollback(&self) -> Result<StepReport> {
        let _lock = self.lock()?;
        let m = self.manifest()?;
        if let Some(text) = read_text(&self.intent_path()) {
            let to = text
                .split_whitespace()
                .nth(1)
                .and_then(|t| t.parse::<u64>().ok());
            if to == Some(m.generation) && m.last_step == "rollback" {
                self.derive(&m)?;
                let _ = std::fs::remove_file(self.intent_path());
                return Ok(StepReport {
                    step: "rollback",
                    completed_interrupted: true,
                    already_done: false,
                    manifest: m,
                });
            }
            let _ = std::fs::remove_file(self.intent_path());
        }
        let repaired = self.repair()?;
        let Some(prev) = m.undo.clone() else {
            return Err(Error::Rotation {
                dir: self.dir.clone(),
                reason: "nothing to roll back (the rotation is at init)".into(),
            });
        };
        let mut prev = *prev;
        prev.last_step = "rollback".into();
        prev.generation = m.generation + 1;
        let intent = format!("{} {}\n", m.generation, prev.generation);
        crate::write_atomic(
            &self.intent_path(),
            intent.as_bytes(),
            crate::FileMode::Public,
            Overwrite::Replace,
        )?;
        write_point();
        self.commit(&prev)?;
        self.derive(&prev)?;
        let _ = std::fs::remove_file(self.intent_path());
        Ok(StepReport {
            step: "rollback",
            completed_interrupted: repaired,
            already_done: false,
            manifest: prev,
        })
    }
}
