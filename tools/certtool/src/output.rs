//! Printing results: human text or `--json`, from the same result type.
//!
//! Results go to stdout; diagnostics to stderr. The JSON shapes are documented in
//! docs/json.md and tested by parsing them back.

use std::fmt::Write as _;
use std::io::Write as _;

use aop_pki::{CertInfo, rfc3339};
use serde::Serialize;

/// A command's result, printable both ways.
pub(crate) trait Report: Serialize {
    /// Human-readable text.
    fn human(&self, out: &mut String);
}

/// Print `report` to stdout, as JSON or as text.
pub(crate) fn emit<R: Report>(report: &R, json: bool) -> anyhow::Result<()> {
    let text = if json {
        let mut s = serde_json::to_string_pretty(report)?;
        s.push('\n');
        s
    } else {
        let mut s = String::new();
        report.human(&mut s);
        s
    };
    let mut stdout = std::io::stdout().lock();
    // A closed pipe (`certtool inspect … | head`) is not an error worth reporting.
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}

/// One certificate as an indented block of `label  value` lines.
pub(crate) fn cert_block(info: &CertInfo, out: &mut String) {
    let mut line = |label: &str, value: &str| {
        let _ = writeln!(out, "  {label:<13} {value}");
    };
    line("subject", &info.subject);
    line("issuer", &info.issuer);
    line("serial", &info.serial);
    let role = match (info.is_ca, info.path_len) {
        (true, Some(n)) => format!("{} (path length {n})", info.role),
        _ => info.role.to_string(),
    };
    line("role", &role);
    if !info.san.is_empty() {
        line("SAN", &info.san.to_string());
    }
    if !info.key_usage.is_empty() {
        line("key usage", &info.key_usage.join(", "));
    }
    if !info.extended_key_usage.is_empty() {
        line("ext key usage", &info.extended_key_usage.join(", "));
    }
    line("key", &info.key.to_string());
    line("signature", &info.signature_algorithm);
    line("not before", &rfc3339(info.not_before));
    let days = match info.validity {
        aop_pki::Validity::Valid => format!("{} days left", info.days_left),
        aop_pki::Validity::Expired => format!("EXPIRED {} days ago", -info.days_left),
        aop_pki::Validity::NotYetValid => "NOT YET VALID".to_owned(),
    };
    line(
        "not after",
        &format!("{} ({days})", rfc3339(info.not_after)),
    );
    line("sha256", &info.sha256.to_string());
    line("spki sha256", &info.spki_sha256.to_string());
}
