//! `rotate init|stage|activate|retire|status|rollback`, and `cloudflare payload`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use aop_edge::{
    IdentitySpec, IdentityStore, Observed, Origin, ProbeResult, Resolve, StoreSpec, Target,
    Timeouts,
};
use aop_ops::rotate::{CertRecord, Manifest, Phase, Reload, Rotation, Step, StepReport};
use serde::Serialize;
use time::OffsetDateTime;

use crate::cli::{PayloadArgs, RotateActivateArgs, RotateCommand};
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
    /// `activate`'s probes (null for the other steps, and for an activate that only
    /// completed an interrupted run or was forced with nothing to probe).
    probes: Option<Probes>,
}

/// What `activate` probed: how many origins, how many at once, and those that did not
/// accept the next certificate (only ever listed here under --force).
#[derive(Serialize)]
struct Probes {
    probed: usize,
    concurrency: usize,
    refused: Vec<RefusedOrigin>,
}

/// One origin that did not accept the next certificate: a row of the refusal table.
#[derive(Serialize)]
struct RefusedOrigin {
    url: String,
    /// The address connected to (null: it did not resolve).
    address: Option<SocketAddr>,
    /// What the origin did: aop_edge::Observed::word (`refused_tls`, `unreachable`, …),
    /// or `redirected` for a 3xx.
    outcome: &'static str,
    /// The TLS alert it sent, if any (`unknown_ca`, `certificate_required`, …).
    alert: Option<String>,
    /// What it said, in a few words: the alert, the HTTP status, the connect error.
    said: String,
}

impl RefusedOrigin {
    fn new(r: &ProbeResult) -> Self {
        let (alert, said) = match &r.observed {
            Observed::RefusedTls { alert } => (Some(alert.clone()), alert.clone()),
            Observed::AlertBeforeCertificate { alert } => (
                Some(alert.clone()),
                format!("{alert} (before the certificate was sent)"),
            ),
            Observed::RefusedHttp { status, nginx_page } => (
                None,
                match nginx_page {
                    Some(page) => format!("HTTP {status} ({page})"),
                    None => format!("HTTP {status}"),
                },
            ),
            Observed::Answered { status } => (None, format!("HTTP {status}")),
            Observed::Accepted { status, .. } if !(200..=299).contains(status) => (
                None,
                format!("HTTP {status}: a redirect does not show the certificate was accepted"),
            ),
            Observed::Accepted { status, verdict } => (
                None,
                format!(
                    "HTTP {status}, X-Client-Verify: {}",
                    verdict.as_deref().unwrap_or("-")
                ),
            ),
            Observed::NotHttp { start } => (None, format!("not HTTP: {start}")),
            Observed::ClosedInHandshake { .. } => {
                (None, "closed the connection in the TLS handshake".into())
            }
            Observed::Closed => (None, "closed the connection without a reply".into()),
            Observed::NoReply { after } => (None, format!("no reply in {} s", after.as_secs_f32())),
            Observed::ServerUntrusted { detail } => {
                (None, format!("its certificate did not verify: {detail}"))
            }
            Observed::Unreachable { detail } | Observed::Error { detail } => (None, detail.clone()),
            other => (None, other.word().to_owned()),
        };
        // A 3xx is the probe's `accepted` (content served), but no proof for activate.
        let outcome = match &r.observed {
            Observed::Accepted { status, .. } if !(200..=299).contains(status) => "redirected",
            o => o.word(),
        };
        Self {
            url: r.target.url.clone(),
            address: r.addr,
            outcome,
            alert,
            said,
        }
    }
}

/// The refusal table, one row per origin, columns as wide as their widest cell.
fn refused_table(rows: &[RefusedOrigin], out: &mut String) {
    // Text a terminal cannot be tricked by: control characters shown as `?`.
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect()
    };
    let cells: Vec<[String; 4]> = rows
        .iter()
        .map(|r| {
            [
                clean(&r.url),
                r.address.map_or_else(|| "-".to_owned(), |a| a.to_string()),
                r.outcome.to_owned(),
                clean(&r.said),
            ]
        })
        .collect();
    let head = ["ORIGIN", "ADDRESS", "OUTCOME", "SAID"].map(str::to_owned);
    let width = |i: usize| {
        cells
            .iter()
            .chain([&head])
            .map(|c| c[i].chars().count())
            .max()
            .unwrap_or(0)
    };
    let (w0, w1, w2) = (width(0), width(1), width(2));
    for c in [&head].into_iter().chain(&cells) {
        out.push_str(&format!(
            "  {:<w0$}  {:<w1$}  {:<w2$}  {}\n",
            c[0], c[1], c[2], c[3]
        ));
    }
}

/// `activate` refused: the origins that did not accept the next certificate.
/// JSON: see docs/json.md, "rotate activate, refused".
#[derive(Serialize)]
struct Refusal {
    dir: PathBuf,
    step: &'static str,
    activated: bool,
    probed: usize,
    concurrency: usize,
    refused: Vec<RefusedOrigin>,
}

impl Report for Refusal {
    fn human(&self, out: &mut String) {
        out.push_str(&format!(
            "rotate activate: REFUSED: {} of {} origins do not accept the next certificate; nothing changed\n",
            self.refused.len(),
            self.probed
        ));
        refused_table(&self.refused, out);
    }
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
        if let Some(p) = &self.probes {
            if p.refused.is_empty() {
                out.push_str(&format!(
                    "  {} origins accept the next certificate\n",
                    p.probed
                ));
            } else {
                out.push_str(&format!(
                    "  FORCED: {} of {} origins do not accept the certificate the edge now presents:\n",
                    p.refused.len(),
                    p.probed
                ));
                refused_table(&p.refused, out);
            }
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
    probes: Option<Probes>,
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
        probes,
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
    let mut probes = None;
    let done: StepReport = match &cmd {
        RotateCommand::Init(a) => rot.init(&a.ca, &a.cn, a.days, a.key.key_type, now)?,
        RotateCommand::Stage(a) => rot.stage(a.new_ca.as_deref(), now)?,
        // An activate killed after its commit: finish it (nothing left to probe; should
        // another step land first, this is no proof and activate refuses).
        RotateCommand::Activate(_) if rot.manifest()?.last_step == Step::Activate => rot.activate(
            Err("the rotation moved on; run activate again".to_owned()),
            false,
            now,
        )?,
        RotateCommand::Activate(a) => {
            let origins = origins(a)?;
            let proof = if origins.is_empty() {
                Err("no --probe or --origins given: list every origin, so each is shown to accept the next certificate (or --force)".to_owned())
            } else {
                let (cert, key) = rot.staged_files()?;
                // The proof names the certificate probed: activate refuses it, under the
                // rotation lock, if another one was staged meanwhile.
                let probed = aop_pki::load_certificates(&cert)?
                    .first()
                    .map(|der| aop_pki::Sha256Fingerprint::of(der))
                    .ok_or_else(|| anyhow::anyhow!("{}: no certificate", cert.display()))?;
                let p = probe_all(&origins, a, &cert, &key)?;
                let proof = if p.refused.is_empty() {
                    Ok(probed)
                } else {
                    Err(format!(
                        "{} of {} origins do not accept the next certificate (the table is on stdout)",
                        p.refused.len(),
                        p.probed
                    ))
                };
                probes = Some(p);
                proof
            };
            match rot.activate(proof, a.force, now) {
                Ok(done) => done,
                Err(e) => {
                    // Refused: the table of the origins that did not accept, then the
                    // error line on stderr; the step has changed nothing.
                    if let Some(p) = probes.take()
                        && !p.refused.is_empty()
                    {
                        emit(
                            &Refusal {
                                dir: dir.clone(),
                                step: "activate",
                                activated: false,
                                probed: p.probed,
                                concurrency: p.concurrency,
                                refused: p.refused,
                            },
                            json,
                        )?;
                    }
                    return Err(e.into());
                }
            }
        }
        RotateCommand::Retire(_) => rot.retire(now)?,
        RotateCommand::Rollback(_) => rot.rollback()?,
        RotateCommand::Status(_) => {
            let m = rot.manifest()?;
            emit(
                &report(&rot, "status", (false, false), &m, now, None)?,
                json,
            )?;
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
            probes,
        )?,
        json,
    )?;
    Ok(ExitCode::SUCCESS)
}

/// Every origin `activate` must probe: the --probe URLs, then the --origins file's
/// lines. A malformed URL or line is an error before anything is probed.
fn origins(a: &RotateActivateArgs) -> anyhow::Result<Vec<Origin>> {
    let mut origins = a
        .probes
        .iter()
        .map(|u| Ok(Origin::new(u.parse::<Target>()?)))
        .collect::<Result<Vec<_>, aop_edge::Error>>()?;
    if let Some(path) = &a.origins {
        origins.extend(aop_edge::fleet::read_origins(path)?);
    }
    // The same origin twice (a --probe URL also in the file: the same host, port, path
    // and address connected to) is probed once.
    let mut seen = std::collections::HashSet::new();
    origins.retain(|o| {
        let t = &o.target;
        let addr = o.pin.as_ref().map(|p| p.addr).or_else(|| {
            // A later --resolve for the same HOST:PORT wins, as in aop_edge::Resolve.
            a.resolve
                .iter()
                .rev()
                .find(|e| e.host == t.host && e.port == t.port)
                .map(|e| e.addr)
        });
        seen.insert((t.host.clone(), t.port, t.path.clone(), addr))
    });
    // A --resolve that no URL uses would send nothing where it says (a port typo, and the
    // probe goes to DNS's address instead): a usage error, as a pin in the file is.
    if let Some(e) = a.resolve.iter().find(|e| {
        !origins
            .iter()
            .any(|o| o.target.host == e.host && o.target.port == e.port)
    }) {
        return Err(crate::commands::UsageError(format!(
            "--resolve {}:{}:{}: no --probe or --origins URL is for {}:{}; nothing probed",
            e.host, e.port, e.addr, e.host, e.port
        ))
        .into());
    }
    Ok(origins)
}

/// Probe every origin presenting the staged certificate, `--concurrency` at once (fewer
/// if the open-files limit is lower); the origins that did not accept it, in the order
/// given.
fn probe_all(
    origins: &[Origin],
    a: &RotateActivateArgs,
    cert: &std::path::Path,
    key: &std::path::Path,
) -> anyhow::Result<Probes> {
    if a.cacert.is_empty() {
        return Err(aop_edge::Error::NoRoots.into());
    }
    let mut spec = StoreSpec::new(a.cacert.iter().cloned());
    spec.shared = Some(IdentitySpec::new(cert, key));
    let store = IdentityStore::load(&spec)?;
    let config = store
        .select("any.invalid")
        .expect("the shared identity")
        .client_config()
        .clone();
    let resolve = Resolve::new(a.resolve.iter().cloned());
    let mut timeouts = Timeouts::default();
    timeouts.connect = Duration::from_secs(a.timeout);
    timeouts.handshake = Duration::from_secs(a.timeout);
    let limit = super::within_open_files(a.concurrency.min(origins.len()));
    let runtime = super::runtime()?;
    let results = runtime.block_on(aop_edge::probe_all(
        origins, &resolve, config, timeouts, limit,
    ));
    // Out of file descriptors here is no answer from the origins: not a refusal table.
    let local: Vec<&ProbeResult> = results
        .iter()
        .filter(|r| matches!(r.observed, Observed::LocalError { .. }))
        .collect();
    if let Some(first) = local.first() {
        let Observed::LocalError { detail } = &first.observed else {
            unreachable!("filtered")
        };
        return Err(super::HostError(format!(
            "{} of {} origins could not be probed: this host ran out of file descriptors ({detail}); lower --concurrency or raise `ulimit -n`; nothing changed",
            local.len(),
            origins.len()
        ))
        .into());
    }
    Ok(Probes {
        probed: origins.len(),
        concurrency: limit,
        refused: results
            .iter()
            .filter(|r| !r.observed.is_accepted())
            .map(RefusedOrigin::new)
            .collect(),
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
