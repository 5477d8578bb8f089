//! The `--json` shapes of docs/json.md as typed structs that refuse unknown fields,
//! shared by tests/json_schema.rs (every shape) and tests/hostile (`certtool probe`).
//! Included with `#[path]`: this directory has no main.rs, so cargo builds no test of
//! its own from it.

// The fields exist to be parsed (a missing, renamed or undocumented one fails); each
// test reads only some of them.
#![allow(dead_code)]

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CertInfo {
    pub(crate) subject: String,
    pub(crate) issuer: String,
    pub(crate) common_name: Option<String>,
    pub(crate) serial: String,
    pub(crate) version: u32,
    pub(crate) role: String,
    pub(crate) is_ca: bool,
    pub(crate) path_len: Option<u32>,
    pub(crate) self_issued: bool,
    pub(crate) key_usage: Vec<String>,
    pub(crate) extended_key_usage: Vec<String>,
    pub(crate) san: San,
    pub(crate) key: Key,
    pub(crate) signature_algorithm: String,
    pub(crate) not_before: String,
    pub(crate) not_after: String,
    pub(crate) days_left: i64,
    pub(crate) validity: String,
    pub(crate) sha256: String,
    pub(crate) spki_sha256: String,
    pub(crate) subject_key_id: Option<String>,
    pub(crate) authority_key_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct San {
    pub(crate) dns: Vec<String>,
    pub(crate) uri: Vec<String>,
    pub(crate) ip: Vec<std::net::IpAddr>,
    pub(crate) email: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Key {
    pub(crate) algorithm: String,
    pub(crate) bits: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Inspect {
    pub(crate) at: String,
    pub(crate) files: Vec<InspectFile>,
    pub(crate) errors: Vec<InspectError>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct InspectFile {
    pub(crate) path: PathBuf,
    pub(crate) certificates: Vec<CertInfo>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct InspectError {
    pub(crate) path: PathBuf,
    pub(crate) error: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Issue {
    pub(crate) command: String,
    pub(crate) files: Vec<Written>,
    pub(crate) certificate: CertInfo,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Written {
    pub(crate) path: PathBuf,
    pub(crate) contents: String,
    pub(crate) mode: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Verify {
    pub(crate) verdict: String,
    pub(crate) reason: String,
    pub(crate) detail: Option<String>,
    pub(crate) sni: Option<String>,
    pub(crate) at: String,
    pub(crate) trust: Vec<PathBuf>,
    pub(crate) chain: PathBuf,
    pub(crate) certificate: Option<CertInfo>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CrlCreate {
    pub(crate) command: String,
    pub(crate) path: PathBuf,
    pub(crate) issuer: String,
    pub(crate) revoked: Vec<String>,
    pub(crate) next_update: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Probe {
    pub(crate) expect: String,
    pub(crate) presented: Option<Presented>,
    pub(crate) server_verified: bool,
    pub(crate) held: bool,
    pub(crate) results: Vec<ProbeResult>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Presented {
    pub(crate) subject: String,
    pub(crate) sha256: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProbeResult {
    pub(crate) url: String,
    pub(crate) sni: String,
    pub(crate) address: Option<std::net::SocketAddr>,
    pub(crate) outcome: String,
    pub(crate) alert: Option<String>,
    pub(crate) http_status: Option<u16>,
    pub(crate) verdict: Option<String>,
    pub(crate) nginx_page: Option<String>,
    pub(crate) tls_version: Option<String>,
    pub(crate) certificate_requested: Option<bool>,
    pub(crate) certificate_sent: bool,
    pub(crate) conclusion: String,
    pub(crate) summary: String,
    pub(crate) held: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Inventory {
    pub(crate) at: String,
    pub(crate) warn_days: u32,
    pub(crate) summary: InventorySummary,
    pub(crate) certificates: Vec<InventoryRow>,
    pub(crate) keys: Vec<InventoryKey>,
    pub(crate) unreadable: Vec<Unreadable>,
    pub(crate) problems: Vec<Problem>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct InventorySummary {
    pub(crate) certificates: u32,
    pub(crate) ok: u32,
    pub(crate) renew_due: u32,
    pub(crate) expiring: u32,
    pub(crate) expired: u32,
    pub(crate) not_yet_valid: u32,
    pub(crate) unreadable: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct InventoryRow {
    pub(crate) status: String,
    pub(crate) days_left: i64,
    pub(crate) role: String,
    pub(crate) subject: String,
    pub(crate) issuer: String,
    pub(crate) serial: String,
    pub(crate) not_before: String,
    pub(crate) not_after: String,
    pub(crate) sha256: String,
    pub(crate) spki_sha256: String,
    pub(crate) label: Option<String>,
    pub(crate) places: Vec<String>,
    pub(crate) key: Option<String>,
    pub(crate) third_party_anchor: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct InventoryKey {
    pub(crate) path: String,
    pub(crate) certificate: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Unreadable {
    pub(crate) place: String,
    pub(crate) error: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Problem {
    pub(crate) kind: String,
    pub(crate) sha256: Option<String>,
    pub(crate) message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Rotate {
    pub(crate) dir: PathBuf,
    pub(crate) step: String,
    pub(crate) completed_interrupted: bool,
    pub(crate) already_done: bool,
    pub(crate) phase: String,
    pub(crate) last_step: String,
    pub(crate) updated: String,
    pub(crate) active: RotateCert,
    pub(crate) next: Option<RotateCert>,
    pub(crate) previous: Option<RotateCert>,
    pub(crate) files_in_step: bool,
    pub(crate) edge_cert: PathBuf,
    pub(crate) edge_key: PathBuf,
    pub(crate) trust: PathBuf,
    pub(crate) next_step: String,
    pub(crate) reload: Vec<RotateReload>,
    pub(crate) probes: Option<RotateProbes>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RotateProbes {
    pub(crate) probed: usize,
    pub(crate) concurrency: usize,
    pub(crate) refused: Vec<RefusedOrigin>,
}

/// `rotate activate` refused (exit 1): the origins that do not accept the next certificate.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RotateRefusal {
    pub(crate) dir: PathBuf,
    pub(crate) step: String,
    pub(crate) activated: bool,
    pub(crate) probed: usize,
    pub(crate) concurrency: usize,
    pub(crate) refused: Vec<RefusedOrigin>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RefusedOrigin {
    pub(crate) url: String,
    pub(crate) address: Option<String>,
    pub(crate) outcome: String,
    pub(crate) alert: Option<String>,
    pub(crate) said: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RotateReload {
    pub(crate) role: String,
    pub(crate) program: String,
    pub(crate) commands: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RotateCert {
    pub(crate) sha256: String,
    pub(crate) subject: String,
    pub(crate) issuer: String,
    pub(crate) not_after: String,
    pub(crate) days_left: i64,
    pub(crate) dir: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CloudflarePayload {
    pub(crate) certificate: String,
    pub(crate) private_key: String,
}

/// docs/json.md's probe `outcome` words.
pub(crate) const OUTCOMES: &[&str] = &[
    "accepted",
    "refused_http",
    "answered",
    "not_http",
    "refused_tls",
    "alert_before_certificate",
    "closed_in_handshake",
    "closed",
    "no_reply",
    "server_untrusted",
    "unreachable",
    "error",
];
