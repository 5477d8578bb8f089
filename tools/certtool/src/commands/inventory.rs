//! `inventory`: every certificate, where it is, when it expires.

use std::process::ExitCode;
use std::sync::Arc;

use aop_edge::{Resolve, Target, Timeouts};
use aop_ops::inventory::{self, Inventory, Options, Source};
use time::OffsetDateTime;

use crate::cli::InventoryArgs;
use crate::output::{Report, emit};

impl Report for Inventory {
    fn human(&self, out: &mut String) {
        let subject_w = self
            .certificates
            .iter()
            .map(|r| r.subject.len().min(48))
            .max()
            .unwrap_or(7)
            .max(7);
        out.push_str(&format!(
            "{:<13} {:>6}  {:<13} {:<10}  {:<subject_w$}  {:<16}  PLACES\n",
            "STATUS", "DAYS", "ROLE", "NOT AFTER", "SUBJECT", "SHA256"
        ));
        for r in &self.certificates {
            // Cut by characters, never inside one: names can be any UTF-8.
            let mut subject: String = r.subject.chars().take(48).collect();
            if r.subject.chars().count() > 48 {
                subject.pop();
                subject.push('…');
            }

            let places = match r.places.len() {
                0 => String::new(),
                1 => r.places[0].clone(),
                n => format!("{} (+{} more)", r.places[0], n - 1),
            };
            out.push_str(&format!(
                "{:<13} {:>6}  {:<13} {:<10}  {:<subject_w$}  {:<16}  {}\n",
                r.status.to_string(),
                r.days_left,
                r.role.to_string(),
                &aop_pki::rfc3339(r.not_after)[..10],
                subject,
                &r.sha256.to_string()[..16],
                places
            ));
            if let Some(l) = r.label {
                out.push_str(&format!("{:<13} {:>6}  ↳ {l}\n", "", ""));
            }
        }
        for u in &self.unreadable {
            out.push_str(&format!(
                "{:<13} {:>6}  {}: {}\n",
                "UNREADABLE", "-", u.place, u.error
            ));
        }
        if !self.keys.is_empty() {
            out.push_str("\nkeys (contents never shown):\n");
            for k in &self.keys {
                let pair = k.certificate.map_or_else(
                    || "no certificate found".to_owned(),
                    |c| format!("belongs to {}", &c.to_string()[..16]),
                );
                out.push_str(&format!("  {}  {pair}\n", k.path.display()));
            }
        }
        if !self.problems.is_empty() {
            out.push_str("\nproblems:\n");
            for p in &self.problems {
                out.push_str(&format!("  [{}] {}\n", p.kind, p.message));
            }
        }
        let s = &self.summary;
        out.push_str(&format!(
            "\n{} certificates: {} ok, {} renew-due, {} expiring (< {} days), {} expired, {} not yet valid; {} unreadable\n",
            s.certificates, s.ok, s.renew_due, s.expiring, self.warn_days, s.expired, s.not_yet_valid, s.unreadable
        ));
    }
}

pub(crate) fn run(args: &InventoryArgs, now: OffsetDateTime) -> anyhow::Result<ExitCode> {
    let mut opts = Options::default();
    opts.warn_days = args.warn_days;
    opts.at = args.at.unwrap_or(now);
    opts.provider = aop_pki::default_provider();
    if let Some(j) = args.jobs {
        opts.jobs = j;
    }
    let sources = probe_chains(args)?;
    let inv = inventory::scan(&args.paths, &sources, &opts);
    emit(&inv, args.json)?;
    Ok(ExitCode::from(inv.exit_code()))
}

/// The chain each probed endpoint presents, `--concurrency` endpoints at once, in the
/// order given. An endpoint that cannot be reached is reported as an unreadable source (a
/// row of its own), not a fatal error.
fn probe_chains(args: &InventoryArgs) -> anyhow::Result<Vec<Source>> {
    if args.probes.is_empty() {
        return Ok(Vec::new());
    }
    let targets = args
        .probes
        .iter()
        .map(|u| u.parse::<Target>())
        .collect::<Result<Vec<_>, _>>()?;
    let identity = args.identity.spec();
    // Inventory records what an endpoint presents; it does not decide whether to trust it.
    let config = Arc::new(aop_edge::danger::unverified_server_config(
        identity.as_ref(),
        aop_pki::default_provider(),
    )?);
    let resolve = Arc::new(Resolve::new(args.resolve.iter().cloned()));
    let limit = super::within_open_files(args.concurrency.min(targets.len()));
    let runtime = super::runtime()?;
    Ok(runtime.block_on(aop_edge::fleet::concurrently(
        targets,
        limit,
        move |t: Target| {
            let (config, resolve) = (config.clone(), resolve.clone());
            async move {
                let place = format!("{} (presented)", t.url);
                let chain = async {
                    let addr = aop_edge::address(&t.host, t.port, &resolve).await?;
                    let tls =
                        aop_edge::connect_tls(config, &t.host, addr, Timeouts::default()).await?;
                    Ok::<_, aop_edge::Error>(
                        tls.get_ref()
                            .1
                            .peer_certificates()
                            .map(<[_]>::to_vec)
                            .unwrap_or_default(),
                    )
                };
                match chain.await {
                    Ok(certs) => Source {
                        place,
                        certs,
                        error: None,
                    },
                    Err(e) => Source {
                        place,
                        certs: Vec::new(),
                        error: Some(format!("unreachable: {e}")),
                    },
                }
            }
        },
    )))
}
