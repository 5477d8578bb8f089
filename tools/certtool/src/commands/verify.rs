//! `verify`: the origin's verdict, offline.

use std::path::PathBuf;
use std::process::ExitCode;

use aop_pki::CertInfo;
use aop_verify::{Trust, TrustSpec};
use serde::Serialize;
use time::OffsetDateTime;

use crate::cli::VerifyArgs;
use crate::output::{Report, cert_block, emit};

/// JSON: see docs/json.md, "verify".
#[derive(Serialize)]
struct VerifyReport {
    /// `SUCCESS`, `FAILED:<reason>` or `NONE`: exactly what the origin would log.
    verdict: String,
    /// The reason word (empty for SUCCESS).
    reason: &'static str,
    /// Words for a human, if any.
    detail: Option<String>,
    sni: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    at: OffsetDateTime,
    trust: Vec<PathBuf>,
    chain: PathBuf,
    /// The client certificate, if it could be parsed.
    certificate: Option<CertInfo>,
}

impl Report for VerifyReport {
    fn human(&self, out: &mut String) {
        out.push_str(&self.verdict);
        out.push('\n');
        if let Some(d) = &self.detail {
            out.push_str(&format!("  {:<13} {d}\n", "detail"));
        }
        if let Some(s) = &self.sni {
            out.push_str(&format!("  {:<13} {s}\n", "sni"));
        }
        out.push_str(&format!(
            "  {:<13} {}\n",
            "checked at",
            aop_pki::rfc3339(self.at)
        ));
        if let Some(c) = &self.certificate {
            cert_block(c, out);
        }
    }
}

pub(crate) fn run(args: &VerifyArgs, now: OffsetDateTime) -> anyhow::Result<ExitCode> {
    let at = args.at.unwrap_or(now);
    let mut spec = TrustSpec::new(args.trust.iter().cloned());
    spec.pins = args.pins.clone();
    spec.spki_pins = args.spki_pins.clone();
    spec.allow_san = args.allow_san.clone();
    spec.crls = args.crls.clone();
    spec.max_depth = args.max_depth;
    spec.allow_missing_eku = args.allow_missing_eku;
    // A leaf in a trust file (alone or in a leaf+CA bundle) is refused: a pin was meant.
    // A CA anchor that can verify no client is said on stderr, and the verdict (which
    // refuses every chain under it for the same reason) is still given: `verify` judges
    // chains, odd anchors included, as the origin would.
    match spec.anchor_certificates(now) {
        Err(e @ aop_verify::Error::UnusableAnchor { .. }) => {
            #[allow(clippy::print_stderr)] // a diagnostic, one line, beside the verdict
            {
                eprintln!("certtool: warning: {e}");
            }
        }
        other => {
            other?;
        }
    }
    let trust = Trust::load(&spec)?;
    let chain = aop_pki::load_certificates(&args.chain)?;
    let (ee, intermediates) = chain
        .split_first()
        .expect("load_certificates returns at least one");
    let checked = trust.check(ee, intermediates, at);
    let report = VerifyReport {
        verdict: checked.outcome.to_string(),
        reason: checked.outcome.reason_str(),
        detail: checked.detail,
        sni: args.sni.clone(),
        at,
        trust: args.trust.clone(),
        chain: args.chain.clone(),
        certificate: checked.client.map(|c| (*c).clone()),
    };
    emit(&report, args.json)?;
    Ok(if checked.outcome.is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
