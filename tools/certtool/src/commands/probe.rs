//! `probe`: the curl --resolve negative test.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use aop_edge::{IdentitySpec, IdentityStore, Observed, Resolve, StoreSpec, Target, Timeouts};
use serde::Serialize;

use crate::cli::{Expect, ProbeArgs};
use crate::output::{Report, emit};

/// JSON: see docs/json.md, "probe".
#[derive(Serialize)]
struct ProbeReport {
    expect: Expect,
    /// The client certificate presented, if any.
    presented: Option<Presented>,
    /// Whether the origins' certificates were verified (false only with --insecure).
    server_verified: bool,
    /// Whether every expectation held.
    held: bool,
    results: Vec<ProbeLine>,
}

#[derive(Serialize)]
struct Presented {
    subject: String,
    sha256: String,
}

#[derive(Serialize)]
struct ProbeLine {
    url: String,
    sni: String,
    address: Option<SocketAddr>,
    /// accepted | refused_tls | refused_http | closed | server_untrusted | unreachable | error
    outcome: &'static str,
    alert: Option<String>,
    http_status: Option<u16>,
    verdict: Option<String>,
    tls_version: Option<&'static str>,
    /// One sentence saying what happened.
    summary: String,
    held: bool,
}

impl Report for ProbeReport {
    fn human(&self, out: &mut String) {
        let who = match &self.presented {
            Some(p) => format!("presenting {} (sha256 {})", p.subject, p.sha256),
            None => "presenting no client certificate".to_owned(),
        };
        for r in &self.results {
            let addr = r
                .address
                .map(|a| a.to_string())
                .unwrap_or_else(|| "-".into());
            out.push_str(&format!(
                "probe {} via {addr} (SNI {}), {who}\n",
                r.url, r.sni
            ));
            out.push_str(&format!("  {}\n", r.summary));
            let mark = if r.held { "held" } else { "FAILED" };
            out.push_str(&format!("  expect {}: {mark}\n", expect_word(self.expect)));
        }
        if !self.server_verified {
            out.push_str("note: --insecure: the origins' certificates were NOT verified\n");
        }
    }
}

fn expect_word(e: Expect) -> &'static str {
    match e {
        Expect::Accept => "accept",
        Expect::Reject => "reject",
    }
}

fn summary(o: &Observed, expect: Expect, presented: bool) -> String {
    let client = if presented {
        "this client certificate"
    } else {
        "a client with no certificate"
    };
    match o {
        Observed::Accepted { status, verdict } if expect == Expect::Reject => format!(
            "ACCEPTED: the origin answered HTTP {status}{} to {client} — its back door is OPEN",
            verdict
                .as_ref()
                .map(|v| format!(" (verdict {v})"))
                .unwrap_or_default()
        ),
        Observed::Accepted { status, verdict } => format!(
            "accepted: the origin answered HTTP {status}{}",
            verdict
                .as_ref()
                .map(|v| format!(" (verdict {v})"))
                .unwrap_or_default()
        ),
        Observed::RefusedTls { alert } => {
            format!("refused: the origin aborted the TLS handshake with alert {alert}")
        }
        Observed::RefusedHttp { why, .. } => format!("refused: {why}"),
        Observed::Closed => {
            "inconclusive: the origin closed the connection without answering (a refusing origin sends a TLS alert or an HTTP error)".into()
        }
        Observed::ServerUntrusted { detail } => {
            format!(
                "not checked: the origin's own certificate did not verify ({detail}); give the right --cacert"
            )
        }
        Observed::Unreachable { detail } => {
            format!("unreachable: {detail} — this proves nothing either way")
        }
        Observed::Error { detail } => format!("error: {detail}"),
        _ => format!("{o:?}"),
    }
}

pub(crate) fn run(args: &ProbeArgs) -> anyhow::Result<ExitCode> {
    let targets = args
        .urls
        .iter()
        .map(|u| u.parse::<Target>())
        .collect::<Result<Vec<_>, _>>()?;
    let identity = args.identity.spec();
    let (config, presented) = if args.insecure {
        let config = aop_edge::danger::unverified_server_config(identity.as_ref())?;
        (
            Arc::new(config),
            identity.as_ref().map(presented_of).transpose()?,
        )
    } else {
        if args.cacert.is_empty() {
            return Err(aop_edge::Error::NoRoots.into());
        }
        let mut spec = StoreSpec::new(args.cacert.iter().cloned());
        spec.shared = identity.clone();
        let store = IdentityStore::load(&spec)?;
        match store.select("any.invalid") {
            Some(id) => (
                id.client_config().clone(),
                Some(Presented {
                    subject: id.certificate().subject.clone(),
                    sha256: id.certificate().sha256.to_string(),
                }),
            ),
            None => (store.anonymous().clone(), None),
        }
    };
    let resolve = Resolve::new(args.resolve.iter().cloned());
    let mut timeouts = Timeouts::default();
    timeouts.connect = Duration::from_secs(args.timeout);
    timeouts.handshake = Duration::from_secs(args.timeout);
    let runtime = super::runtime()?;
    let results = runtime.block_on(async {
        let mut out = Vec::with_capacity(targets.len());
        for t in &targets {
            out.push(aop_edge::probe(t, &resolve, config.clone(), timeouts).await);
        }
        out
    });
    let lines: Vec<ProbeLine> = results
        .iter()
        .map(|r| {
            let held = match args.expect {
                Expect::Accept => r.observed.is_accepted(),
                Expect::Reject => r.observed.is_refusal(),
            };
            let (alert, http_status, verdict) = match &r.observed {
                Observed::RefusedTls { alert } => (Some(alert.clone()), None, None),
                Observed::RefusedHttp { status, .. } => (None, Some(*status), None),
                Observed::Accepted { status, verdict } => (None, Some(*status), verdict.clone()),
                _ => (None, None, None),
            };
            ProbeLine {
                url: r.target.url.clone(),
                sni: r.target.host.clone(),
                address: r.addr,
                outcome: r.observed.word(),
                alert,
                http_status,
                verdict,
                tls_version: r.tls_version,
                summary: summary(&r.observed, args.expect, presented.is_some()),
                held,
            }
        })
        .collect();
    let held = lines.iter().all(|l| l.held);
    let report = ProbeReport {
        expect: args.expect,
        presented,
        server_verified: !args.insecure,
        held,
        results: lines,
    };
    emit(&report, args.json)?;
    Ok(if held {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn presented_of(id: &IdentitySpec) -> anyhow::Result<Presented> {
    let cert = aop_pki::load_certificates(&id.cert)?.swap_remove(0);
    let info =
        aop_pki::CertInfo::from_der(&cert, time::OffsetDateTime::now_utc()).map_err(|detail| {
            aop_pki::Error::BadCertificate {
                path: id.cert.clone(),
                index: 1,
                detail,
            }
        })?;
    Ok(Presented {
        subject: info.subject,
        sha256: info.sha256.to_string(),
    })
}
