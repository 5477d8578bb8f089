//! Every `--json` shape of docs/json.md (inspect, ca create / issue, verify, crl create,
//! probe, inventory, rotate, and the Cloudflare payload file), parsed back from real
//! certtool output into typed structs that refuse unknown fields: a renamed, missing or
//! undocumented field fails here.

#![allow(clippy::unwrap_used)] // test helpers: a panic is a test failure with a backtrace

#[path = "json/shapes.rs"]
mod shapes;

use aop_e2e::{certtool, code, stderr, stdout, tempdir, workspace_root};
use shapes::*;

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

fn is_fingerprint(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `certtool ARGS` must exit `want`; its stdout parsed as `T` (unknown fields refused).
fn json<T: serde::de::DeserializeOwned>(args: &[&str], want: i32) -> T {
    let o = certtool(args);
    assert_eq!(code(&o), want, "{args:?}: {}{}", stdout(&o), stderr(&o));
    serde_json::from_str(&stdout(&o)).unwrap_or_else(|e| panic!("{args:?}: {e}: {}", stdout(&o)))
}

fn s(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

/// `rotate activate`: refused (exit 1, the origins that did not accept), then forced (the
/// rotation report, the same rows under `probes`), from the real binary. The origin is a
/// closed port: refused at connect, at once.
#[test]
fn rotate_activate_refusal_and_forced_match_the_documented_schema() {
    let dir = tempdir().unwrap();
    let root = dir.path();
    let ca = aop_e2e::pki::ca(root, "ca");
    let rot = root.join("rot");
    let init = [
        "rotate",
        "init",
        "--dir",
        s(&rot),
        "--ca",
        s(&ca.dir),
        "--cn",
        "edge",
    ];
    assert_eq!(code(&certtool(init)), 0);
    assert_eq!(code(&certtool(["rotate", "stage", "--dir", s(&rot)])), 0);
    // A port nothing listens on: bound, then closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let origins = root.join("origins.txt");
    std::fs::write(
        &origins,
        format!("https://a.example:{port}/ a.example:{port}:127.0.0.1\n"),
    )
    .unwrap();
    let args = |force: bool| {
        let mut a = vec![
            "rotate".to_owned(),
            "activate".into(),
            "--dir".into(),
            s(&rot).into(),
            "--origins".into(),
            s(&origins).into(),
            "--cacert".into(),
            s(&ca.pem()).into(),
            "--json".into(),
        ];
        if force {
            a.push("--force".into());
        }
        a
    };
    let refused: RotateRefusal = json(
        &args(false).iter().map(String::as_str).collect::<Vec<_>>(),
        1,
    );
    assert_eq!(
        (
            refused.step.as_str(),
            refused.activated,
            refused.probed,
            refused.concurrency
        ),
        ("activate", false, 1, 1)
    );
    assert_eq!(refused.dir, rot);
    let row = &refused.refused[0];
    assert_eq!(
        (
            row.url.clone(),
            row.address.clone(),
            row.outcome.as_str(),
            row.alert.clone()
        ),
        (
            format!("https://a.example:{port}/"),
            Some(format!("127.0.0.1:{port}")),
            "unreachable",
            None
        )
    );
    assert!(row.said.contains("Connection refused"), "{}", row.said);
    let forced: Rotate = json(
        &args(true).iter().map(String::as_str).collect::<Vec<_>>(),
        0,
    );
    assert_eq!(
        (forced.step.as_str(), forced.phase.as_str()),
        ("activate", "activated")
    );
    let probes = forced.probes.expect("activate's probes");
    assert_eq!((probes.probed, probes.refused.len()), (1, 1));
    assert_eq!(probes.refused[0].outcome, "unreachable");
    let status: Rotate = json(&["rotate", "status", "--dir", s(&rot), "--json"], 0);
    assert!(status.probes.is_none());
}

/// verify (SUCCESS and FAILED), crl create, inventory, rotate (init, stage) and the
/// Cloudflare payload, each from the real binary.
#[test]
fn verify_crl_inventory_rotate_and_payload_match_the_documented_schema() {
    let dir = tempdir().unwrap();
    let root = dir.path();
    let ca = aop_e2e::pki::ca(root, "ca");
    let edge = ca.client("edge");
    let foreign = aop_e2e::pki::ca(root, "foreign").client("foreign");

    let trust = ca.pem();
    let verify = |chain: &aop_e2e::pki::Leaf, sni: &[&str], want: i32| -> Verify {
        let chain = s(&chain.cert);
        let args = [
            &["verify", "--json", "--trust", s(&trust), "--chain", chain],
            sni,
        ]
        .concat();
        json(&args, want)
    };
    let ok = verify(&edge, &["--sni", "example.com"], 0);
    assert_eq!((ok.verdict.as_str(), ok.reason.as_str()), ("SUCCESS", ""));
    assert_eq!(ok.sni.as_deref(), Some("example.com"));
    assert!(is_rfc3339_utc(&ok.at));
    assert_eq!((ok.trust, ok.chain), (vec![ca.pem()], edge.cert.clone()));
    check_cert(ok.certificate.as_ref().unwrap());
    let refused = verify(&foreign, &[], 1);
    assert_eq!(
        (refused.verdict.as_str(), refused.reason.as_str()),
        ("FAILED:unknown_ca", "unknown_ca")
    );
    assert!(refused.detail.is_some() && refused.sni.is_none());

    let crl_path = root.join("crl.pem");
    let (ca_dir, revoke, out) = (s(&ca.dir), s(&edge.cert), s(&crl_path));
    let crl: CrlCreate = json(
        &[
            "crl", "create", "--ca", ca_dir, "--revoke", revoke, "--days", "7", "--out", out,
            "--json",
        ],
        0,
    );
    assert_eq!(crl.command, "crl create");
    assert_eq!(crl.path, crl_path);
    assert_eq!(crl.issuer, "CN=ca");
    assert_eq!(crl.revoked.len(), 1);
    assert!(is_rfc3339_utc(&crl.next_update));

    let rot = root.join("rot");
    let init: Rotate = json(
        &[
            "rotate",
            "init",
            "--dir",
            s(&rot),
            "--ca",
            s(&ca.dir),
            "--cn",
            "edge",
            "--json",
        ],
        0,
    );
    assert_eq!(
        (init.step.as_str(), init.phase.as_str()),
        ("init", "single")
    );
    assert!(init.next.is_none() && init.previous.is_none() && init.files_in_step);
    assert!(is_fingerprint(&init.active.sha256) && is_rfc3339_utc(&init.updated));
    assert_eq!(init.edge_cert, rot.join("edge/cert.pem"));
    let staged: Rotate = json(&["rotate", "stage", "--dir", s(&rot), "--json"], 0);
    assert_eq!(
        (staged.step.as_str(), staged.phase.as_str()),
        ("stage", "staged")
    );
    // Stage rewrote trust.pem: the origins reload, each server with its command.
    let reload: Vec<_> = staged
        .reload
        .iter()
        .map(|r| (r.role.as_str(), r.program.as_str(), r.commands.join(" | ")))
        .collect();
    assert_eq!(
        reload,
        [
            (
                "origin",
                "aop-origin",
                "systemctl reload aop-origin | kill -HUP <pid>".to_owned()
            ),
            ("origin", "nginx", "nginx -s reload".to_owned()),
        ]
    );
    assert_eq!(init.reload.len(), 4, "init: origins and edges");
    let next = staged.next.expect("a staged certificate");
    assert_ne!(next.sha256, staged.active.sha256);

    let inv: Inventory = json(&["inventory", s(root), "--json"], 0);
    assert!(is_rfc3339_utc(&inv.at));
    assert_eq!(inv.summary.unreadable, 0);
    assert_eq!(inv.summary.certificates as usize, inv.certificates.len());
    for row in &inv.certificates {
        assert!(is_fingerprint(&row.sha256) && is_fingerprint(&row.spki_sha256));
        assert!(
            ["ok", "renew-due", "expiring", "expired", "not-yet-valid"]
                .contains(&row.status.as_str())
        );
        assert!(!row.places.is_empty());
    }
    assert!(
        inv.keys
            .iter()
            .all(|k| k.certificate.as_deref().is_none_or(is_fingerprint))
    );
    assert!(inv.unreadable.is_empty());
    assert!(
        inv.problems
            .iter()
            .all(|p| !p.kind.is_empty() && !p.message.is_empty())
    );

    let payload_path = root.join("payload.json");
    let (cert, key, out) = (s(&edge.cert), s(&edge.key), s(&payload_path));
    let o = certtool([
        "cloudflare",
        "payload",
        "--cert",
        cert,
        "--key",
        key,
        "--out",
        out,
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let text = std::fs::read_to_string(&payload_path).unwrap();
    let payload: CloudflarePayload = serde_json::from_str(&text).unwrap();
    assert!(
        payload
            .certificate
            .starts_with("-----BEGIN CERTIFICATE-----")
    );
    assert!(payload.private_key.contains("PRIVATE KEY-----"));
}

/// `certtool probe --json` against a real origin (aop-verify, in this process): refused
/// without a certificate, served with the edge's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_json_matches_the_documented_schema() {
    let w = aop_e2e::pki::World::new(&["example.com"]);
    let (origin_ca, server, edge_ca, edge) = (&w.origin_ca, &w.server, &w.edge_ca, &w.edge);
    let spec = aop_verify::PolicySpec::new(vec![aop_verify::RuleSpec::new(
        "example",
        ["example.com"],
        &server.cert,
        &server.key,
        aop_verify::TrustSpec::new([edge_ca.pem()]),
    )]);
    let origin = aop_e2e::origin::TestOrigin::start(&spec, aop_verify::Limits::default()).await;
    let url = format!("https://example.com:{}/", origin.addr.port());
    let resolve = origin.resolve("example.com");
    let roots = origin_ca.pem();
    let base = [
        "probe",
        url.as_str(),
        "--resolve",
        resolve.as_str(),
        "--cacert",
        s(&roots),
    ];

    // certtool blocks this worker; the origin runs on the other.
    let probe = |extra: &[&str]| -> Probe {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        tokio::task::block_in_place(|| json(&args, 0))
    };
    let refused = probe(&["--expect", "reject", "--json"]);
    assert_eq!(refused.expect, "reject");
    assert!(refused.presented.is_none() && refused.server_verified && refused.held);
    let r = &refused.results[0];
    assert_eq!(
        (r.outcome.as_str(), r.alert.as_deref()),
        ("refused_tls", Some("certificate_required"))
    );
    assert_eq!(
        (r.certificate_requested, r.certificate_sent),
        (Some(true), false)
    );
    assert_eq!((r.conclusion.as_str(), r.held), ("held", true));
    assert_eq!(r.sni, "example.com");

    let (cert, key) = (s(&edge.cert), s(&edge.key));
    let served = probe(&["--cert", cert, "--key", key, "--expect", "accept", "--json"]);
    let presented = served.presented.as_ref().unwrap();
    assert_eq!(presented.subject, "CN=edge");
    assert!(is_fingerprint(&presented.sha256));
    let r = &served.results[0];
    assert_eq!((r.outcome.as_str(), r.http_status), ("accepted", Some(200)));
    assert_eq!(r.verdict.as_deref(), Some("SUCCESS"));
    assert_eq!(r.tls_version.as_deref(), Some("TLSv1.3"));
    assert!(r.address.is_some() && r.nginx_page.is_none());
}
