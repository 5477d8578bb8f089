//! `probe`: the curl --resolve negative test.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use aop_edge::{
    Conclusion, Expectation, IdentitySpec, IdentityStore, Observed, ProbeResult, Resolve,
    StoreSpec, Target, Timeouts,
};
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

/// One target's result: the human line and the JSON object come from the same fields.
#[derive(Serialize)]
struct ProbeLine {
    url: String,
    sni: String,
    address: Option<SocketAddr>,
    /// What the origin did: [`Observed::word`].
    outcome: &'static str,
    alert: Option<String>,
    http_status: Option<u16>,
    verdict: Option<String>,
    /// nginx's certificate page, when the origin answered with it.
    nginx_page: Option<&'static str>,
    tls_version: Option<&'static str>,
    /// Whether the origin sent a CertificateRequest (null: no connection).
    certificate_requested: Option<bool>,
    /// Whether the probe sent a certificate in answer.
    certificate_sent: bool,
    /// held | open | failed | inconclusive.
    conclusion: &'static str,
    /// One sentence saying what proved the conclusion.
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
            out.push_str(&format!(
                "  expect {}: {}: {}\n",
                expect_word(self.expect),
                mark(r.conclusion),
                r.summary
            ));
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

/// The printed form of a conclusion word (`OPEN`, `FAILED` in capitals).
fn mark(conclusion: &str) -> String {
    match conclusion {
        "open" | "failed" => conclusion.to_ascii_uppercase(),
        other => other.to_owned(),
    }
}

impl ProbeLine {
    fn new(r: &ProbeResult, expect: Expect) -> Self {
        let judgement = r.judge(match expect {
            Expect::Accept => Expectation::Accept,
            Expect::Reject => Expectation::Reject,
        });
        let (mut alert, mut http_status, mut verdict, mut nginx_page) = (None, None, None, None);
        match &r.observed {
            Observed::RefusedTls { alert: a } | Observed::AlertBeforeCertificate { alert: a } => {
                alert = Some(a.clone());
            }
            Observed::RefusedHttp {
                status,
                nginx_page: page,
            } => {
                http_status = Some(*status);
                nginx_page = *page;
            }
            Observed::Answered { status } => http_status = Some(*status),
            Observed::Accepted { status, verdict: v } => {
                http_status = Some(*status);
                verdict = v.clone();
            }
            _ => {}
        }
        Self {
            url: r.target.url.clone(),
            sni: r.target.host.clone(),
            address: r.addr,
            outcome: r.observed.word(),
            alert,
            http_status,
            verdict,
            nginx_page,
            tls_version: r.tls_version,
            certificate_requested: r.certificate_requested,
            certificate_sent: r.certificate_sent,
            conclusion: judgement.conclusion.word(),
            summary: judgement.reason,
            held: judgement.conclusion == Conclusion::Held,
        }
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
        let config = aop_edge::danger::unverified_server_config(
            identity.as_ref(),
            aop_pki::default_provider(),
        )?;
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
        .map(|r| ProbeLine::new(r, args.expect))
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
