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
//!
//! Tests prove every write point safe by stopping a step right after its N-th write
//! ([`Rotation::with_write_hook`]), as a kill there would.
//!
//! `DIR/edge` is a symbolic link, swapped by an atomic rename; on a platform without
//! symbolic links (anything but Unix) a step that must move it fails with
//! [`Error::Unsupported`] before changing anything it cannot finish.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use aop_pki::{
    Ca, CertInfo, ClientRequest, FileMode, KeyType, Overwrite, PendingFile, Sha256Fingerprint,
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{Error, Result};

/// A step of the rotation, as `manifest.json` records the last one taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Step {
    /// The first certificate, trusted alone.
    Init,
    /// The next certificate issued; origins trust both.
    Stage,
    /// The edge switched to the next certificate.
    Activate,
    /// The old trust dropped.
    Retire,
    /// The last step undone.
    Rollback,
}

impl Step {
    /// The name on the command line and in the manifest: `init`, `stage`, …
    pub fn name(self) -> &'static str {
        match self {
            Self::Init => "init",
            Self::Stage => "stage",
            Self::Activate => "activate",
            Self::Retire => "retire",
            Self::Rollback => "rollback",
        }
    }
}

impl Step {
    /// Who must re-read their files after this step, and how: the origins after a step
    /// that rewrote `trust.pem` (`stage`, `retire`), the edges after one that moved
    /// `edge/` (`activate`), both after `init` and `rollback` (which may undo either).
    pub fn reloads(self) -> Vec<Reload> {
        let (origins, edges) = match self {
            Self::Stage | Self::Retire => (true, false),
            Self::Activate => (false, true),
            Self::Init | Self::Rollback => (true, true),
        };
        let mut out = Vec::new();
        if origins {
            out.extend_from_slice(ORIGIN_RELOADS);
        }
        if edges {
            out.extend_from_slice(EDGE_RELOADS);
        }
        out
    }
}

/// How one kind of server re-reads the rotation's files, without a restart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Reload {
    /// Whose files: `origin` (`trust.pem`) or `edge` (`edge/cert.pem`, `edge/key.pem`).
    pub role: &'static str,
    /// The server.
    pub program: &'static str,
    /// Commands that do it, the first preferred (`<pid>`: the server's process id).
    pub commands: &'static [&'static str],
}

/// The origins: aop-origin (its systemd unit's reload is SIGHUP) and nginx
/// (`ssl_client_certificate`).
const ORIGIN_RELOADS: &[Reload] = &[
    Reload {
        role: "origin",
        program: "aop-origin",
        commands: &["systemctl reload aop-origin", "kill -HUP <pid>"],
    },
    Reload {
        role: "origin",
        program: "nginx",
        commands: &["nginx -s reload"],
    },
];

/// The edges: aop-edge-proxy (its systemd unit's reload is SIGHUP) and nginx
/// (`proxy_ssl_certificate`).
const EDGE_RELOADS: &[Reload] = &[
    Reload {
        role: "edge",
        program: "aop-edge-proxy",
        commands: &["systemctl reload aop-edge-proxy", "kill -HUP <pid>"],
    },
    Reload {
        role: "edge",
        program: "nginx",
        commands: &["nginx -s reload"],
    },
];

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

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
    /// The CA directory it was issued from: absolute where the operator gave an absolute
    /// path, else relative to the rotation directory (so steps work from any working
    /// directory). Read with [`Rotation::ca_dir_of`], which also resolves manifests
    /// written before, whose relative paths were from the working directory of `init`.
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
    pub key_type: KeyType,
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
    pub last_step: Step,
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
        let damaged = |reason: String| Error::Damaged {
            dir: dir.to_owned(),
            detail: reason
                .chars()
                .map(|c| {
                    if c.is_control() {
                        c.escape_default().to_string()
                    } else {
                        c.to_string()
                    }
                })
                .collect(),
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
/// (read through [`aop_pki::read_file`], like every file).
fn read_text(path: &Path) -> Option<String> {
    String::from_utf8(aop_pki::read_file(path).ok()?).ok()
}

/// What [`Rotation::with_write_hook`] takes: called with `n` right after the `n`-th write
/// (from 1); an error stops the step there.
pub type WriteHook = dyn Fn(usize) -> io::Result<()> + Send + Sync;

/// A rotation directory.
pub struct Rotation {
    dir: PathBuf,
    /// Writes made through this value so far (what the hook is told).
    writes: AtomicUsize,
    hook: Option<Arc<WriteHook>>,
}

impl fmt::Debug for Rotation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rotation")
            .field("dir", &self.dir)
            .field("writes", &self.writes)
            .field("hook", &self.hook.as_ref().map(|_| "…"))
            .finish()
    }
}

/// What a step did, for the report.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct StepReport {
    /// The step.
    pub step: Step,
    /// Whether this run only finished a step an earlier, interrupted run had committed.
    pub completed_interrupted: bool,
    /// Whether the step had already been taken (by an earlier run, perhaps one killed
    /// after its last write): nothing was left to do.
    pub already_done: bool,
    /// The state now.
    pub manifest: Manifest,
}

fn not_found(dir: &Path) -> Error {
    aop_pki::Error::Read {
        path: dir.join("manifest.json"),
        error: io::Error::new(
            io::ErrorKind::NotFound,
            "no rotation here (run `rotate init`)",
        ),
    }
    .into()
}

/// How [`Rotation::begin`] found the rotation.
enum Begun {
    /// The step had been committed by an earlier run: finished, nothing more to do.
    Done(StepReport),
    /// Go ahead: the lock (held until dropped) and the state to step from.
    Go(std::fs::File, Manifest),
}

/// A refusal to take a step from the current phase.
fn wrong_phase(dir: &Path, step: Step, phase: Phase) -> Error {
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
        Self {
            dir: dir.into(),
            writes: AtomicUsize::new(0),
            hook: None,
        }
    }

    /// Call `hook` right after every write this value makes (the n-th write, counted
    /// from 1 over this value's life: a certificate set, the manifest, trust.pem, the edge
    /// link, a rollback intent). If it returns an error, the step stops there with
    /// [`Error::Stopped`], leaving the files exactly as a process killed at that point
    /// would: how tests prove every write point safe. Programs pass no hook.
    #[must_use]
    pub fn with_write_hook(
        mut self,
        hook: impl Fn(usize) -> io::Result<()> + Send + Sync + 'static,
    ) -> Self {
        self.hook = Some(Arc::new(hook));
        self
    }

    /// A write has been made: count it and ask the hook whether to go on.
    fn wrote(&self) -> Result<()> {
        let n = self.writes.fetch_add(1, Ordering::SeqCst) + 1;
        match &self.hook {
            Some(hook) => hook(n).map_err(|error| Error::Stopped {
                dir: self.dir.clone(),
                write: n,
                error,
            }),
            None => Ok(()),
        }
    }

    /// Hold `DIR/.lock` for the rest of a step: two steps at once are refused, not mixed.
    fn lock(&self) -> Result<std::fs::File> {
        let path = self.dir.join(".lock");
        // A FIFO or device planted as the lock is refused, and cannot block the open.
        let file = aop_pki::open_for_writing(&path)?;
        // Wait a little (a lock can be held for a moment by a process forked while it was
        // open), then refuse.
        for _ in 0..100 {
            match file.try_lock() {
                Ok(()) => return Ok(file),
                Err(std::fs::TryLockError::WouldBlock) => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(std::fs::TryLockError::Error(error)) => {
                    return Err(aop_pki::Error::Write { path, error }.into());
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

    /// Where `rec`'s CA directory is, as a path usable from the current working directory:
    /// an absolute `ca_dir` as it is; a relative one under the rotation directory if a
    /// `ca.pem` is there (how every step records it now), else as written, from the
    /// working directory (how manifests written before recorded it: they keep working
    /// from the directory they were made in, and the next certificate issued records
    /// the path relative to the rotation directory).
    pub fn ca_dir_of(&self, rec: &CertRecord) -> PathBuf {
        if rec.ca_dir.is_absolute() {
            return rec.ca_dir.clone();
        }
        let under = self.dir.join(&rec.ca_dir);
        if under.join("ca.pem").is_file() || !rec.ca_dir.join("ca.pem").is_file() {
            under
        } else {
            rec.ca_dir.clone()
        }
    }

    /// How a record names `ca_dir` (a path from the working directory, just loaded):
    /// absolute as given; a relative one as the way from the rotation directory to it,
    /// between the two real (canonical) directories.
    fn recorded_ca_dir(&self, ca_dir: &Path) -> Result<PathBuf> {
        if ca_dir.is_absolute() {
            return Ok(ca_dir.to_owned());
        }
        let real = |p: &Path| {
            p.canonicalize().map_err(|error| {
                Error::from(aop_pki::Error::Read {
                    path: p.to_owned(),
                    error,
                })
            })
        };
        let (from, to) = (real(&self.dir)?, real(ca_dir)?);
        let common = from
            .components()
            .zip(to.components())
            .take_while(|(a, b)| a == b)
            .count();
        let mut rel: PathBuf = from
            .components()
            .skip(common)
            .map(|_| std::path::Component::ParentDir)
            .collect();
        rel.extend(to.components().skip(common));
        if rel.as_os_str().is_empty() {
            rel.push(".");
        }
        Ok(rel)
    }

    /// Read the manifest.
    pub fn manifest(&self) -> Result<Manifest> {
        let path = self.manifest_path();
        let bytes = match aop_pki::read_file(&path) {
            Ok(b) => b,
            Err(aop_pki::Error::Read { error, .. }) if error.kind() == io::ErrorKind::NotFound => {
                return Err(not_found(&self.dir));
            }
            Err(e) => return Err(e.into()),
        };
        Manifest::from_json(&bytes, &self.dir)
    }

    /// Write the manifest (the commit point). Callers set `generation` one above the
    /// state they replace. Any other step than a rollback first removes a rollback
    /// intent an interrupted rollback may have left, so it cannot be mistaken later.
    fn commit(&self, m: &Manifest) -> Result<()> {
        if m.last_step != Step::Rollback {
            let _ = std::fs::remove_file(self.intent_path());
        }
        let json = serde_json::to_vec_pretty(m).map_err(|e| Error::Rotation {
            dir: self.dir.clone(),
            reason: format!("cannot encode manifest.json: {e}"),
        })?;
        aop_pki::write_atomic(
            &self.manifest_path(),
            &json,
            FileMode::Public,
            Overwrite::Replace,
        )?;
        self.wrote()
    }

    /// Issue a certificate from `ca_dir` into a fresh `certs/<id>/`.
    fn issue(
        &self,
        ca_dir: &Path,
        m_cn: &str,
        days: u32,
        key_type: KeyType,
        now: OffsetDateTime,
    ) -> Result<CertRecord> {
        let ca = Ca::load(ca_dir, now)?;
        let recorded = self.recorded_ca_dir(ca_dir)?;
        let req = ClientRequest {
            common_name: m_cn.to_owned(),
            sans: Vec::new(),
            days,
            key_type,
        };
        let issued = ca.issue_client(&req, now)?;
        let info: CertInfo = issued.info(now);
        let id = format!(
            "{}-{}",
            now.unix_timestamp(),
            &info.sha256.to_string()[..12]
        );
        let dir = self.dir.join("certs").join(&id);
        aop_pki::ensure_dir(&dir, true)?;
        let ca_pem: String = ca
            .chain()
            .iter()
            .take(1)
            .map(|c| aop_pki::pem_encode("CERTIFICATE", c))
            .collect();
        aop_pki::write_all_atomic(
            &[
                PendingFile {
                    path: dir.join("key.pem"),
                    contents: issued.key.expose().as_bytes(),
                    mode: FileMode::Secret,
                },
                PendingFile {
                    path: dir.join("cert.pem"),
                    contents: issued.cert_pem().as_bytes(),
                    mode: FileMode::Public,
                },
                PendingFile {
                    path: dir.join("ca.pem"),
                    contents: ca_pem.as_bytes(),
                    mode: FileMode::Public,
                },
            ],
            Overwrite::Refuse,
        )?;
        self.wrote()?;
        Ok(CertRecord {
            id,
            sha256: info.sha256,
            subject: info.subject,
            issuer: info.issuer,
            not_after: info.not_after,
            ca_dir: recorded,
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
            for der in aop_pki::load_certificates(&self.cert_dir(rec).join("ca.pem"))? {
                if seen.insert(Sha256Fingerprint::of(&der)) {
                    out.push_str(&aop_pki::pem_encode("CERTIFICATE", &der));
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
            aop_pki::write_atomic(
                &self.trust_path(),
                trust.as_bytes(),
                FileMode::Public,
                Overwrite::Replace,
            )?;
            self.wrote()?;
        }
        let target = PathBuf::from("certs").join(&m.active.id);
        if std::fs::read_link(self.edge_dir()).ok() != Some(target.clone()) {
            self.link_edge(&target)?;
            self.wrote()?;
        }
        Ok(())
    }

    /// Point `DIR/edge` at `target` atomically: a new link beside it, renamed over it,
    /// then the directory synced.
    #[cfg(unix)]
    fn link_edge(&self, target: &Path) -> Result<()> {
        let tmp = self.dir.join(format!(".edge.{}.tmp", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let werr = |path: PathBuf| move |error| aop_pki::Error::Write { path, error };
        std::os::unix::fs::symlink(target, &tmp).map_err(werr(tmp.clone()))?;
        std::fs::rename(&tmp, self.edge_dir()).map_err(werr(self.edge_dir()))?;
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(werr(self.dir.clone()))?;
        Ok(())
    }

    /// Without symbolic links there is no atomic way to switch `DIR/edge`: refuse.
    #[cfg(not(unix))]
    fn link_edge(&self, _target: &Path) -> Result<()> {
        Err(Error::Unsupported {
            dir: self.dir.clone(),
        })
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
        key_type: KeyType,
        now: OffsetDateTime,
    ) -> Result<StepReport> {
        // Without symbolic links no step could finish: refuse before writing anything.
        if cfg!(not(unix)) {
            return Err(Error::Unsupported {
                dir: self.dir.clone(),
            });
        }
        match self.manifest() {
            Ok(m) if m.last_step == Step::Init && m.undo.is_none() => {
                // Already initialised (perhaps by a run killed part way): finish it.
                let repaired = !self.files_in_step(&m)?;
                if repaired {
                    self.derive(&m)?;
                }
                return Ok(StepReport {
                    step: Step::Init,
                    completed_interrupted: repaired,
                    already_done: !repaired,
                    manifest: m,
                });
            }
            Ok(_) => {
                return Err(aop_pki::Error::Exists {
                    path: self.manifest_path(),
                }
                .into());
            }
            Err(Error::Pki(aop_pki::Error::Read { error, .. }))
                if error.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        aop_pki::ensure_dir(&self.dir, true)?;
        let _lock = self.lock()?;
        let rec = self.issue(ca_dir, common_name, days, key_type, now)?;
        let m = Manifest {
            version: 1,
            common_name: common_name.to_owned(),
            days,
            key_type,
            phase: Phase::Single,
            active: rec,
            next: None,
            previous: None,
            retired: Vec::new(),
            last_step: Step::Init,
            generation: 1,
            updated: now,
            undo: None,
        };
        self.commit(&m)?;
        self.derive(&m)?;
        Ok(StepReport {
            step: Step::Init,
            completed_interrupted: false,
            already_done: false,
            manifest: m,
        })
    }

    /// If the manifest says `step` was the last step taken, finish it (derived files) and
    /// report it done: re-running a step, after a kill at any point, completes it.
    fn resume(&self, step: Step) -> Result<(Manifest, Option<StepReport>)> {
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
        step: Step,
        now: OffsetDateTime,
    ) -> Result<StepReport> {
        next.last_step = step;
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

    /// What stage, activate and retire do first: take the lock, finish `step` if an
    /// earlier run committed it ([`Begun::Done`]), else check that the rotation is in
    /// phase `from`.
    fn begin(&self, step: Step, from: Phase) -> Result<Begun> {
        let lock = self.lock()?;
        let (m, done) = self.resume(step)?;
        if let Some(r) = done {
            return Ok(Begun::Done(r));
        }
        if m.phase != from {
            return Err(wrong_phase(&self.dir, step, m.phase));
        }
        Ok(Begun::Go(lock, m))
    }

    /// Stage the next certificate (from `new_ca`, or the current CA).
    pub fn stage(&self, new_ca: Option<&Path>, now: OffsetDateTime) -> Result<StepReport> {
        let (_lock, m) = match self.begin(Step::Stage, Phase::Single)? {
            Begun::Done(r) => return Ok(r),
            Begun::Go(lock, m) => (lock, m),
        };
        let ca_dir = new_ca.map_or_else(|| self.ca_dir_of(&m.active), Path::to_owned);
        let rec = self.issue(&ca_dir, &m.common_name, m.days, m.key_type, now)?;
        let mut next = m.clone();
        next.phase = Phase::Staged;
        next.next = Some(rec);
        self.advance(m, next, Step::Stage, now)
    }

    /// The staged certificate's files (cert.pem, key.pem), for probing before `activate`
    /// (which takes the SHA-256 of the certificate probed: see [`Rotation::activate`]).
    pub fn staged_files(&self) -> Result<(PathBuf, PathBuf)> {
        let m = self.manifest()?;
        let rec = m
            .next
            .as_ref()
            .ok_or_else(|| wrong_phase(&self.dir, Step::Activate, m.phase))?;
        let d = self.cert_dir(rec);
        Ok((d.join("cert.pem"), d.join("key.pem")))
    }

    /// Switch the edge to the staged certificate. `origins_accept` is the caller's proof
    /// that every origin accepts it: `Ok(sha256)` names the certificate the caller probed
    /// (certtool probes with the staged files, before taking the lock). Under the lock,
    /// a proof about any certificate but the one staged now is refused, `force` or not:
    /// a `rollback` and a `stage` while the probes ran must not get an unprobed
    /// certificate activated. Without a proof (and without `force`) nothing changes.
    pub fn activate(
        &self,
        origins_accept: std::result::Result<Sha256Fingerprint, String>,
        force: bool,
        now: OffsetDateTime,
    ) -> Result<StepReport> {
        let (_lock, m) = match self.begin(Step::Activate, Phase::Staged)? {
            Begun::Done(r) => return Ok(r),
            Begun::Go(lock, m) => (lock, m),
        };
        let staged = m.next.clone().expect("staged");
        match origins_accept {
            Ok(probed) if probed != staged.sha256 => {
                return Err(Error::Rotation {
                    dir: self.dir.clone(),
                    reason: format!(
                        "not activating: the staged certificate changed while probing (probed sha256 {probed}, staged now {}); nothing changed; run activate again",
                        staged.sha256
                    ),
                });
            }
            Ok(_) => {}
            Err(why) if !force => {
                return Err(Error::Rotation {
                    dir: self.dir.clone(),
                    reason: format!("not activating: {why}; nothing changed"),
                });
            }
            Err(_) => {}
        }
        let mut next = m.clone();
        next.phase = Phase::Activated;
        next.previous = Some(m.active.clone());
        next.active = staged;
        next.next = None;
        self.advance(m, next, Step::Activate, now)
    }

    /// Drop the old certificate's CA from the origins' trust.
    pub fn retire(&self, now: OffsetDateTime) -> Result<StepReport> {
        let (_lock, m) = match self.begin(Step::Retire, Phase::Activated)? {
            Begun::Done(r) => return Ok(r),
            Begun::Go(lock, m) => (lock, m),
        };
        let mut next = m.clone();
        next.phase = Phase::Single;
        next.retired.extend(m.previous.clone());
        // Keep the recent history only (the certificates stay in certs/).
        let excess = next.retired.len().saturating_sub(UNDO_DEPTH);
        next.retired.drain(..excess);
        next.previous = None;
        self.advance(m, next, Step::Retire, now)
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
            if to == Some(m.generation) && m.last_step == Step::Rollback {
                self.derive(&m)?;
                let _ = std::fs::remove_file(self.intent_path());
                return Ok(StepReport {
                    step: Step::Rollback,
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
        prev.last_step = Step::Rollback;
        prev.generation = m.generation + 1;
        let intent = format!("{} {}\n", m.generation, prev.generation);
        aop_pki::write_atomic(
            &self.intent_path(),
            intent.as_bytes(),
            FileMode::Public,
            Overwrite::Replace,
        )?;
        self.wrote()?;
        self.commit(&prev)?;
        self.derive(&prev)?;
        let _ = std::fs::remove_file(self.intent_path());
        Ok(StepReport {
            step: Step::Rollback,
            completed_interrupted: repaired,
            already_done: false,
            manifest: prev,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is a failure with a backtrace

    use super::*;

    /// A manifest as every earlier version wrote it (step and key type as plain text; the
    /// undo chain holds more of the same, as the lifecycle tests' real manifests show).
    const OLD_MANIFEST: &str = r#"{
  "version": 1,
  "common_name": "edge",
  "days": 90,
  "key_type": "ecdsa-p384",
  "phase": "staged",
  "active": {
    "id": "1764000000-9a1ac2b4be15",
    "sha256": "9a1ac2b4be15f9f27eee20a734cba4e9898f61001b3bd7c84b69b56a3e25a2b9",
    "subject": "CN=edge",
    "issuer": "CN=ca",
    "not_after": "2026-02-22T12:00:00Z",
    "ca_dir": "/srv/pki/ca"
  },
  "next": {
    "id": "1764000100-062465eea144",
    "sha256": "062465eea14401f48be7d9a873f2ee674f96806584225d50c04f761d4480b8ba",
    "subject": "CN=edge",
    "issuer": "CN=ca",
    "not_after": "2026-02-22T12:01:40Z",
    "ca_dir": "/srv/pki/ca"
  },
  "previous": null,
  "retired": [],
  "last_step": "stage",
  "generation": 2,
  "updated": "2025-11-24T12:01:40Z",
  "undo": null
}"#;

    #[test]
    fn an_existing_manifest_loads_typed_and_writes_back_byte_for_byte() {
        let m = Manifest::from_json(OLD_MANIFEST.as_bytes(), Path::new("/rot")).unwrap();
        assert_eq!(m.last_step, Step::Stage);
        assert_eq!(m.key_type, KeyType::EcdsaP384);
        assert_eq!(
            String::from_utf8(serde_json::to_vec_pretty(&m).unwrap()).unwrap(),
            OLD_MANIFEST
        );
    }

    #[test]
    fn an_unknown_step_or_key_type_is_a_damaged_manifest() {
        for (from, to) in [
            (r#""last_step": "stage""#, r#""last_step": "restage""#),
            (r#""key_type": "ecdsa-p384""#, r#""key_type": "rsa1024""#),
        ] {
            let text = OLD_MANIFEST.replacen(from, to, 1);
            let e = Manifest::from_json(text.as_bytes(), Path::new("/rot")).unwrap_err();
            assert!(matches!(e, Error::Damaged { .. }), "{e}");
            let line = e.to_string();
            assert!(
                line.starts_with("/rot: manifest.json is damaged: "),
                "{line}"
            );
            assert!(!line.contains('\n'), "{line}");
        }
    }

    #[test]
    fn step_names_are_their_serialised_form() {
        for step in [
            Step::Init,
            Step::Stage,
            Step::Activate,
            Step::Retire,
            Step::Rollback,
        ] {
            assert_eq!(serde_json::to_string(&step).unwrap(), format!("\"{step}\""));
        }
    }

    #[test]
    fn the_write_hook_stops_a_step_where_a_kill_would_and_a_rerun_finishes_it() {
        let root = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::now_utc();
        let ca = root.path().join("ca");
        aop_pki::CaRequest::new("ca").create_in(&ca, now).unwrap();
        let dir = root.path().join("rot");
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        // Writes of init: 1 the certificate set, 2 the manifest (the commit), 3 trust.pem,
        // 4 the edge link. Stop after the commit.
        let rot = Rotation::new(&dir).with_write_hook(move |n| {
            log.lock().unwrap().push(n);
            if n == 2 {
                Err(io::Error::other("killed"))
            } else {
                Ok(())
            }
        });
        let e = rot
            .init(&ca, "edge", 30, KeyType::EcdsaP256, now)
            .unwrap_err();
        assert!(matches!(e, Error::Stopped { write: 2, .. }), "{e}");
        assert_eq!(*seen.lock().unwrap(), [1, 2]);
        assert!(
            e.to_string().ends_with("stopped after write 2: killed"),
            "{e}"
        );

        let again = Rotation::new(&dir);
        let m = again.manifest().unwrap();
        assert!(!again.files_in_step(&m).unwrap(), "committed, not derived");
        let r = again
            .init(&ca, "edge", 30, KeyType::EcdsaP256, now)
            .unwrap();
        assert!(r.completed_interrupted);
        assert!(again.files_in_step(&r.manifest).unwrap());
    }

    #[test]
    fn a_proof_about_another_certificate_than_the_one_staged_is_refused_and_writes_nothing() {
        let root = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::now_utc();
        let ca = root.path().join("ca");
        aop_pki::CaRequest::new("ca").create_in(&ca, now).unwrap();
        let rot = Rotation::new(root.path().join("rot"));
        rot.init(&ca, "edge", 30, KeyType::EcdsaP256, now).unwrap();
        // The probes ran with X staged; meanwhile a rollback and a stage put Y there.
        let x = rot.stage(None, now).unwrap().manifest.next.unwrap().sha256;
        rot.rollback().unwrap();
        let y = rot.stage(None, now).unwrap().manifest.next.unwrap().sha256;
        assert_ne!(x, y);
        let manifest = std::fs::read(root.path().join("rot/manifest.json")).unwrap();
        let edge = std::fs::read(rot.edge_dir().join("cert.pem")).unwrap();
        for force in [false, true] {
            let e = rot.activate(Ok(x), force, now).unwrap_err();
            assert!(matches!(e, Error::Rotation { .. }), "{e}");
            assert!(
                e.to_string().ends_with(&format!(
                    "not activating: the staged certificate changed while probing (probed sha256 {x}, staged now {y}); nothing changed; run activate again"
                )),
                "{e}"
            );
            assert_eq!(
                std::fs::read(root.path().join("rot/manifest.json")).unwrap(),
                manifest
            );
            assert_eq!(
                std::fs::read(rot.edge_dir().join("cert.pem")).unwrap(),
                edge
            );
        }
        // No proof, no force: refused too; the proof about Y activates Y.
        let e = rot
            .activate(Err("no probes".into()), false, now)
            .unwrap_err();
        assert!(
            e.to_string()
                .ends_with("not activating: no probes; nothing changed"),
            "{e}"
        );
        let r = rot.activate(Ok(y), false, now).unwrap();
        assert_eq!(r.manifest.active.sha256, y);
        assert_eq!(r.manifest.phase, Phase::Activated);
    }
}
