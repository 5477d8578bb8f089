//! The `--json` shapes of docs/json.md, parsed back from real certtool output into typed
//! structs that refuse unknown fields: a renamed or missing field fails here.

#![allow(clippy::unwrap_used)] // test helpers: a panic is a test failure with a backtrace
#![allow(dead_code)] // the fields exist to be parsed, not read

use std::path::PathBuf;

use aop_e2e::{certtool, code, stderr, stdout, tempdir, workspace_root};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CertInfo {
    subject: String,
    issuer: String,
    common_name: Option<String>,
    serial: String,
    version: u32,
    role: String,
    is_ca: bool,
    path_len: Option<u32>,
    self_issued: bool,
    key_usage: Vec<String>,
    extended_key_usage: Vec<String>,
    san: San,
    key: Key,
    signature_algorithm: String,
    not_before: String,
    not_after: String,
    days_left: i64,
    validity: String,
    sha256: String,
    spki_sha256: String,
    subject_key_id: Option<String>,
    authority_key_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct San {
    dns: Vec<String>,
    uri: Vec<String>,
    ip: Vec<std::net::IpAddr>,
    email: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Key {
    algorithm: String,
    bits: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Inspect {
    at: String,
    files: Vec<InspectFile>,
    errors: Vec<InspectError>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InspectFile {
    path: PathBuf,
    certificates: Vec<CertInfo>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InspectError {
    path: PathBuf,
    error: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Issue {
    command: String,
    files: Vec<Written>,
    certificate: CertInfo,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Written {
    path: PathBuf,
    contents: String,
    mode: String,
}

fn is_rfc3339_utc(s: &str) -> bool {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).is_ok()
        && s.ends_with('Z')
}

fn check_cert(c: &CertInfo) {
    assert_eq!(c.sha256.len(), 64);
    assert!(
        c.sha256
            .chars()
            .all(|ch| ch.is_ascii_hexdigit() && !ch.is_ascii_uppercase())
    );
    assert_eq!(c.spki_sha256.len(), 64);
    assert!(is_rfc3339_utc(&c.not_before) && is_rfc3339_utc(&c.not_after));
    assert!(
        [
            "ca",
            "client",
            "server",
            "client-and-server",
            "unrestricted",
            "other"
        ]
        .contains(&c.role.as_str())
    );
    assert!(["valid", "expired", "not-yet-valid"].contains(&c.validity.as_str()));
}

#[test]
fn issue_and_inspect_json_match_the_documented_schema() {
    let dir = tempdir().unwrap();
    let ca = dir.path().join("ca");
    let edge = dir.path().join("edge");
    let run = |args: &[&str]| {
        let o = certtool(args);
        assert_eq!(code(&o), 0, "{args:?}: {}", stderr(&o));
        stdout(&o)
    };
    let out = run(&[
        "ca",
        "create",
        "--name",
        "json CA",
        "--out",
        ca.to_str().unwrap(),
        "--json",
    ]);
    let issued: Issue = serde_json::from_str(&out).unwrap();
    assert_eq!(issued.command, "ca create");
    assert_eq!(issued.files.len(), 2);
    assert_eq!(
        (
            issued.files[1].contents.as_str(),
            issued.files[1].mode.as_str()
        ),
        ("private-key", "0600")
    );
    assert_eq!(issued.files[1].path, ca.join("ca.key"));
    check_cert(&issued.certificate);
    assert!(!out.contains("PRIVATE KEY"), "key material in output");

    let out = run(&[
        "issue",
        "client",
        "--ca",
        ca.to_str().unwrap(),
        "--cn",
        "edge",
        "--san",
        "10.0.0.9",
        "--san",
        "spiffe://x/y",
        "--out",
        edge.to_str().unwrap(),
        "--json",
    ]);
    let issued: Issue = serde_json::from_str(&out).unwrap();
    assert_eq!(issued.command, "issue client");
    assert_eq!(
        issued.certificate.san.ip,
        ["10.0.0.9".parse::<std::net::IpAddr>().unwrap()]
    );
    assert_eq!(issued.certificate.san.uri, ["spiffe://x/y"]);
    check_cert(&issued.certificate);

    let bad = workspace_root().join("testdata/bad/csr.pem");
    let o = certtool([
        "inspect".as_ref(),
        edge.join("cert.pem").as_os_str(),
        workspace_root()
            .join("testdata/cloudflare/origin_pull_ca_2015.pem")
            .as_os_str(),
        bad.as_os_str(),
        "--json".as_ref(),
    ]);
    assert_eq!(code(&o), 2);
    let report: Inspect = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(is_rfc3339_utc(&report.at));
    assert_eq!(report.files.len(), 2);
    assert_eq!(report.files[0].certificates.len(), 2);
    assert_eq!(report.errors.len(), 1);
    assert_eq!(report.errors[0].path, bad);
    for f in &report.files {
        f.certificates.iter().for_each(check_cert);
    }
}
