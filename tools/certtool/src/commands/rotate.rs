//! `rotate init|stage|activate|retire|status|rollback`, and `cloudflare payload`.

use std::path::PathBuf;
use std::process::ExitCode;

use aop_edge::{IdentitySpec, IdentityStore, Resolve, StoreSpec, Target, Timeouts};
use aop_ops::rotate::{CertRecord, Manifest, Phase, Reload, Rotation, Step, StepReport};
use serde::Serialize;
use time::OffsetDateTime;

use crate::cli::{PayloadArgs, RotateCommand};
use crate::output::{Report, emit};

/// JSON: see docs/json.md, "rotate".
#[derive(Serialize)]
struct RotateReport {
    dir: PathBuf,
    /// The step run (`status` for status).
    step: &'static str,
    /// Whether this run finished a step an interrupted run had committed.
    completed_interrupted: bool,
    /// Whether the step had already been taken; nothing was left to do.
    already_done: bool,
    phase: Phase,
    last_step: Step,
    #[serde(with = "time::serde::rfc3339")]
    updated: OffsetDateTime,
    active: Entry,
    next: Option<Entry>,
    previous: Option<Entry>,
    /// Whether trust.pem and edge/ match the manifest (false: a step was interrupted).
    files_in_step: bool,
    edge_cert: PathBuf,
    edge_key: PathBuf,
    trust: PathBuf,
    next_step: &'static str,
    /// Who re-reads which files after the last step, and the command for each server.
    reload: Vec<Reload>,
}

#[derive(Serialize)]
struct Entry {
    sha256: String,
    subject: String,
    issuer: String,
    #[serde(with = "time::serde::rfc3339")]
    not_after: OffsetDateTime,
    days_left: i64,
    dir: PathBuf,
}

impl Report for RotateReport {
    fn human(&self, out: &mut String) {
        if self.step != "status" {
            let how = if self.completed_interrupted {
                " (completed an interrupted run)"
            } else if self.already_done {
                " (already done; nothing to do)"
            } else {
                ""
            };
            out.push_str(&format!("rotate {}: done{how}\n", self.step));
        }
        out.push_str(&format!(
            "rotation in {}: phase {:?}, last step {} at {}\n",
            self.dir.display(),
            self.phase,
            self.last_step,
            aop_pki::rfc3339(self.updated)
        ));
        let mut line = |role: &str, e: &Entry| {
            out.push_str(&format!(
                "  {role:<9} {}  sha256 {}  expires {} ({} days)  issuer {}\n",
                e.subject,
                &e.sha256[..16],
                &aop_pki::rfc3339(e.not_after)[..10],
                e.days_left,
                e.issuer
            ));
        };
        line("active", &self.active);
        if let Some(n) = &self.next {
            line("next", n);
        }
        if let Some(p) = &self.previous {
            line("previous", p);
        }
        out.push_str(&format!(
            "  edge      {} + {}\n  trust     {}\n",
            self.edge_cert.display(),
            self.edge_key.display(),
            self.trust.display()
        ));
        if !self.files_in_step {
            out.push_str(
                "  FILES OUT OF STEP: a step was interrupted; run it again, or `rotate rollback`\n",
            );
        }
        out.push_str(&format!("next: {}\n", self.next_step));
        for role in ["origin", "edge"] {
            let mut servers = self.reload.iter().filter(|r| r.role == role).peekable();
            if servers.peek().is_none() {
                continue;
            }
            out.push_str(match role {
                "origin" => "reload every origin (it reads trust.pem):\n",
                _ => "reload every edge (it reads edge/cert.pem and edge/key.pem):\n",
            });
            for r in servers {
                out.push_str(&format!(
                    "  {:<15} {}\n",
                    r.program,
                    r.commands.join("   or: ")
                ));
            }
        }
    }
}

fn entry(rot: &Rotation, r: &CertRecord, now: OffsetDateTime) -> Entry {
    Entry {
        sha256: r.sha256.to_string(),
        subject: r.subject.clone(),
        issuer: r.issuer.clone(),
        not_after: r.not_after,
        days_left: (r.not_after - now).whole_days(),
        dir: rot.cert_dir(r),
    }
}

fn report(
    rot: &Rotation,
    step: &'static str,
    (completed, already): (bool, bool),
    m: &Manifest,
    now: OffsetDateTime,
) -> anyhow::Result<RotateReport> {
    Ok(RotateReport {
        dir: rot
            .edge_dir()
            .parent()
            .map(PathBuf::from)
            .unwrap_or_default(),
        step,
        completed_interrupted: completed,
        already_done: already,
        phase: m.phase,
        last_step: m.last_step,
        updated: m.updated,
        active: entry(rot, &m.active, now),
        next: m.next.as_ref().map(|r| entry(rot, r, now)),
        previous: m.previous.as_ref().map(|r| entry(rot, r, now)),
        files_in_step: rot.files_in_step(m)?,
        edge_cert: rot.edge_dir().join("cert.pem"),
        edge_key: rot.edge_dir().join("key.pem"),
        trust: rot.trust_path(),
        next_step: m.phase.next_step(),
        reload: m.last_step.reloads(),
    })
}

pub(crate) fn run(cmd: RotateCommand, now: OffsetDateTime) -> anyhow::Result<ExitCode> {
    let (dir, json) = match &cmd {
        RotateCommand::Init(a) => (&a.common.dir, a.common.json),
        RotateCommand::Stage(a) => (&a.common.dir, a.common.json),
        RotateCommand::Activate(a) => (&a.common.dir, a.common.json),
        RotateCommand::Retire(a) | RotateCommand::Status(a) | RotateCommand::Rollback(a) => {
            (&a.dir, a.json)
        }
    };
    // The manifest records the CA's directory, so rotation takes no --ca FILE --ca-key FILE.
    let ca = match &cmd {
        RotateCommand::Init(a) => Some((&a.ca, "--ca")),
        RotateCommand::Stage(a) => a.new_ca.as_ref().map(|ca| (ca, "--new-ca")),
        _ => None,
    };
    if let Some((ca, flag)) = ca
        && ca.is_file()
    {
        return Err(crate::commands::UsageError(format!(
            "{}: rotate {flag} takes a CA directory (holding {} and {}), not a file",
            ca.display(),
            aop_pki::Ca::CERT_FILE,
            aop_pki::Ca::KEY_FILE
        ))
        .into());
    }
    let rot = Rotation::new(dir.clone());
    let done: StepReport = match &cmd {
        RotateCommand::Init(a) => rot.init(&a.ca, &a.cn, a.days, a.key.key_type, now)?,
        RotateCommand::Stage(a) => rot.stage(a.new_ca.as_deref(), now)?,
        // An activate killed after its commit: finish it (nothing left to probe).
        RotateCommand::Activate(_) if rot.manifest()?.last_step == Step::Activate => {
            rot.activate(Ok(()), false, now)?
        }
        RotateCommand::Activate(a) => {
            let proof = if a.probes.is_empty() {
                Err("no --probe given: list every origin, so each is shown to accept the next certificate (or --force)".to_owned())
            } else {
                let (cert, key) = rot.staged_files()?;
                probe_all(a.probes.as_slice(), &a.resolve, &a.cacert, &cert, &key)?
            };
            rot.activate(proof, a.force, now)?
        }
        RotateCommand::Retire(_) => rot.retire(now)?,
        RotateCommand::Rollback(_) => rot.rollback()?,
        RotateCommand::Status(_) => {
            let m = rot.manifest()?;
            emit(&report(&rot, "status", (false, false), &m, now)?, json)?;
            return Ok(ExitCode::SUCCESS);
        }
    };
    emit(
        &report(
            &rot,
            done.step.name(),
            (done.completed_interrupted, done.already_done),
            &done.manifest,
            now,
        )?,
        json,
    )?;
    Ok(ExitCode::SUCCESS)
}

/// Probe every origin presenting the staged certificate; `Err` says which refused.
fn probe_all(
    urls: &[String],
    resolve: &[aop_edge::ResolveEntry],
    roots: &[PathBuf],
    cert: &std::path::Path,
    key: &std::path::Path,
) -> anyhow::Result<Result<(), String>> {
    if roots.is_empty() {
        return Err(aop_edge::Error::NoRoots.into());
    }
    let targets = urls
        .iter()
        .map(|u| u.parse::<Target>())
        .collect::<Result<Vec<_>, _>>()?;
    let mut spec = StoreSpec::new(roots.iter().cloned());
    spec.shared = Some(IdentitySpec::new(cert, key));
    let store = IdentityStore::load(&spec)?;
    let config = store
        .select("any.invalid")
        .expect("the shared identity")
        .client_config()
        .clone();
    let resolve = Resolve::new(resolve.iter().cloned());
    let runtime = super::runtime()?;
    let failures: Vec<String> = runtime.block_on(async {
        let mut failures = Vec::new();
        for t in &targets {
            let r = aop_edge::probe(t, &resolve, config.clone(), Timeouts::default()).await;
            if !r.observed.is_accepted() {
                failures.push(format!(
                    "{} does not accept the next certificate ({})",
                    t.url,
                    r.observed.word()
                ));
            }
        }
        failures
    });
    Ok(if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; "))
    })
}

pub(crate) fn payload(args: &PayloadArgs) -> anyhow::Result<ExitCode> {
    let certs = aop_pki::load_certificates(&args.cert)?;
    // Read once: the key that is checked is the text that goes into the payload.
    let key_bytes = aop_pki::read_file(&args.key)?;
    let key = aop_pki::parse_private_key(&key_bytes, &args.key)?;
    aop_pki::check_key_matches(
        &certs[0],
        &key,
        &args.cert,
        &args.key,
        &aop_pki::default_provider(),
    )?;
    let cert_pem: String = certs
        .iter()
        .map(|c| aop_pki::pem_encode("CERTIFICATE", c))
        .collect();
    let key_pem = String::from_utf8(key_bytes).map_err(|_| aop_pki::Error::BadKey {
        path: args.key.clone(),
        detail: "not PEM text; the payload takes a PEM key".into(),
    })?;
    let body = serde_json::json!({ "certificate": cert_pem, "private_key": key_pem.trim_end().to_owned() + "\n" });
    let text = serde_json::to_string_pretty(&body)? + "\n";
    let overwrite = if args.force {
        aop_pki::Overwrite::Replace
    } else {
        aop_pki::Overwrite::Refuse
    };
    aop_pki::write_atomic(
        &args.out,
        text.as_bytes(),
        aop_pki::FileMode::Secret,
        overwrite,
    )?;
    #[derive(Serialize)]
    struct Written<'a> {
        command: &'static str,
        path: &'a std::path::Path,
        mode: &'static str,
    }
    impl Report for Written<'_> {
        fn human(&self, out: &mut String) {
            out.push_str(&format!(
                "cloudflare payload: wrote {} ({}; it holds the private key)\n",
                self.path.display(),
                self.mode
            ));
        }
    }
    emit(
        &Written {
            command: "cloudflare payload",
            path: &args.out,
            mode: "0600",
        },
        false,
    )?;
    Ok(ExitCode::SUCCESS)
}
