//! SPIFFE end to end: a SPIFFE-style CA (a root whose critical nameConstraints permits
//! the URI host `example.org`, the trust domain; an intermediate below it that narrows
//! nothing) issues X.509-SVIDs, and a site allows `spiffe://example.org/edge/*`. Each
//! SVID is judged by the guard's real handshake, with curl as the edge (exit code, the
//! alert curl reports, the guard's verdict line, the upstream's x-client-verify), and by
//! the real `certtool verify --allow-san … --json` (exit code, verdict, reason); both
//! must say the same exact verdict. What belongs here: SPIFFE trust domains as name
//! constraints and SPIFFE-aware allow_san entries; the matchers' corner cases are unit
//! tests in crates/aop-verify/src/constraints/tests.rs.

#![allow(clippy::unwrap_used)] // test helpers: a panic is a test failure with a backtrace

use std::path::Path;

use aop_e2e::forge::{Ext, GeneralName};
use aop_e2e::guard::{Certs, Guard};
use aop_e2e::pki::{self, Leaf, Made};
use aop_e2e::upstream::{Echo, header};
use aop_e2e::{certtool, code, run, stderr, stdout};
use rcgen::{CustomExtension, SanType};

const HOST: &str = "spiffe.test";
const ALLOW: &str = "spiffe://example.org/edge/*";

/// A critical nameConstraints permitting URIs whose host is `host` (RFC 5280: the base
/// of a URI subtree is a host, or `.domain`). rcgen writes DNS, email, directoryName and
/// IP subtrees only; the forge writes every form.
fn permit_uri_host(host: &str) -> CustomExtension {
    let nc = Ext::name_constraints(true, &[GeneralName::Uri(host.into())], &[]);
    let mut ext = CustomExtension::from_oid_content(&[2, 5, 29, 30], nc.value);
    ext.set_criticality(true);
    ext
}

/// An X.509-SVID (with these URI SANs) issued by `by`, written with its chain (`by`
/// included, the root not) to `dir/name/`.
fn svid(dir: &Path, name: &str, uris: &[&str], by: &Made) -> Leaf {
    let mut p = pki::client_params(name);
    p.subject_alt_names = uris
        .iter()
        .map(|u| SanType::URI((*u).try_into().unwrap()))
        .collect();
    pki::write_chain(dir, name, &[&Made::new(p, Some(by)), by])
}

/// What both judges must say about one SVID: the verdict, and for a refusal the alert
/// curl reports.
struct Case<'a> {
    what: &'a str,
    leaf: Leaf,
    verdict: &'a str,
    alert: &'a str,
}

/// Inside the trust domain and under /edge/ → SUCCESS; another trust domain under the
/// same CA → `name_constraints` (the root's URI constraint, through the intermediate);
/// inside the domain but not under /edge/, or two URI SANs (not an X.509-SVID) →
/// `name_not_allowed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spiffe_trust_domain_and_path_prefix_through_the_guard_and_certtool() {
    let have_curl = aop_e2e::have_peer("curl", "spiffe: curl as the edge");
    let certs = Certs::new(&[HOST]);
    let dir = certs.dir.path();
    let mut root = pki::ca_params("SPIFFE Root example.org", None);
    root.custom_extensions.push(permit_uri_host("example.org"));
    let root = Made::new(root, None);
    let intermediate = Made::new(pki::ca_params("SPIRE Server CA", None), Some(&root));
    let trust = root.write_anchor(dir, "spiffe-root");

    let cases = [
        Case {
            what: "an edge SVID of the trust domain",
            leaf: svid(
                dir,
                "edge-1",
                &["spiffe://example.org/edge/1"],
                &intermediate,
            ),
            verdict: "SUCCESS",
            alert: "",
        },
        Case {
            what: "deeper under /edge/",
            leaf: svid(
                dir,
                "edge-eu-2",
                &["spiffe://example.org/edge/eu/2"],
                &intermediate,
            ),
            verdict: "SUCCESS",
            alert: "",
        },
        Case {
            what: "another trust domain under the same CA",
            leaf: svid(
                dir,
                "other-td",
                &["spiffe://other.org/edge/1"],
                &intermediate,
            ),
            verdict: "FAILED:name_constraints",
            alert: "alert bad certificate",
        },
        Case {
            what: "a subdomain of the trust domain",
            leaf: svid(
                dir,
                "sub-td",
                &["spiffe://a.example.org/edge/1"],
                &intermediate,
            ),
            verdict: "FAILED:name_constraints",
            alert: "alert bad certificate",
        },
        Case {
            what: "the trust domain, outside /edge/",
            leaf: svid(dir, "db-1", &["spiffe://example.org/db/1"], &intermediate),
            verdict: "FAILED:name_not_allowed",
            alert: "alert access denied",
        },
        Case {
            what: "a prefix of /edge/ that is not a segment",
            leaf: svid(
                dir,
                "edgeless",
                &["spiffe://example.org/edgeless/1"],
                &intermediate,
            ),
            verdict: "FAILED:name_not_allowed",
            alert: "alert access denied",
        },
        Case {
            what: "two URI SANs (not an X.509-SVID)",
            leaf: svid(
                dir,
                "two-ids",
                &["spiffe://example.org/edge/1", "spiffe://example.org/edge/2"],
                &intermediate,
            ),
            verdict: "FAILED:name_not_allowed",
            alert: "alert access denied",
        },
    ];

    // Offline: certtool verify.
    for c in &cases {
        let o = certtool([
            "verify",
            "--trust",
            trust.to_str().unwrap(),
            "--chain",
            c.leaf.cert.to_str().unwrap(),
            "--allow-san",
            ALLOW,
            "--json",
        ]);
        let want_code = if c.verdict == "SUCCESS" { 0 } else { 1 };
        assert_eq!(
            code(&o),
            want_code,
            "{}: {}{}",
            c.what,
            stdout(&o),
            stderr(&o)
        );
        let j: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
        assert_eq!(j["verdict"], c.verdict, "{}: {j}", c.what);
        let reason = c.verdict.strip_prefix("FAILED:").unwrap_or("");
        assert_eq!(j["reason"], reason, "{}: {j}", c.what);
        if reason == "name_constraints" {
            let detail = j["detail"].as_str().unwrap();
            assert!(
                detail.contains("outside the permitted URI subtrees [\"example.org\"]")
                    && detail.contains("CA CN=SPIFFE Root example.org"),
                "{}: {detail}",
                c.what
            );
        }
    }

    // An allow_san entry that is not a SPIFFE ID or prefix is a usage error naming it.
    let o = certtool([
        "verify",
        "--trust",
        trust.to_str().unwrap(),
        "--chain",
        cases[0].leaf.cert.to_str().unwrap(),
        "--allow-san",
        "spiffe://example.org/edge/",
    ]);
    assert_eq!(code(&o), 2, "{}{}", stdout(&o), stderr(&o));
    assert!(
        stderr(&o).contains("allow_san entry \"spiffe://example.org/edge/\""),
        "{}",
        stderr(&o)
    );

    // So is one in the guard's config: `--check` and a start alike refuse it.
    let site = |allow: &str| {
        format!(
            "listen = \"127.0.0.1:0\"\n[[site]]\nhostnames = [\"{HOST}\"]\n\
             cert = \"origin-ca/origin/cert.pem\"\nkey = \"origin-ca/origin/key.pem\"\n\
             trust = [{trust:?}]\nupstream = \"http://127.0.0.1:9\"\nallow_san = [\"{allow}\"]\n"
        )
    };
    let config = dir.join("bad-spiffe.toml");
    std::fs::write(&config, site("spiffe://example.org/*/edge")).unwrap();
    for check in [true, false] {
        let mut cmd = std::process::Command::new(aop_e2e::bin("aop-origin"));
        cmd.args(["--config", config.to_str().unwrap()]);
        if check {
            cmd.arg("--check");
        }
        let o = run(&mut cmd);
        assert_eq!(code(&o), 2, "{}", stderr(&o));
        assert!(
            stderr(&o).contains("allow_san entry \"spiffe://example.org/*/edge\""),
            "{}",
            stderr(&o)
        );
    }

    if !have_curl {
        return;
    }
    // Through the guard, curl as the edge.
    let echo = Echo::start().await;
    let g = Guard::start(
        dir,
        &format!(
            "\n[[site]]\nhostnames = [\"{HOST}\"]\ncert = \"origin-ca/origin/cert.pem\"\n\
             key = \"origin-ca/origin/key.pem\"\ntrust = [{trust:?}]\nupstream = \"http://{}\"\n\
             allow_san = [\"{ALLOW}\"]\n",
            echo.addr
        ),
    );
    let roots = certs.origin_ca.pem();
    for c in &cases {
        let mut curl = aop_e2e::curl(HOST, g.port, &roots, Some(&c.leaf));
        let o = tokio::task::block_in_place(|| run(&mut curl));
        let line = g.wait_log("client certificate verdict");
        assert!(
            line.split_whitespace()
                .any(|f| f == format!("verdict={}", c.verdict)),
            "{}: {line}",
            c.what
        );
        if c.verdict == "SUCCESS" {
            assert_eq!(code(&o), 0, "{}: {}", c.what, stderr(&o));
            assert_eq!(
                header(&stdout(&o), "x-client-verify").as_deref(),
                Some("SUCCESS"),
                "{}",
                c.what
            );
        } else {
            // 56: the TLS 1.3 alert, read after curl's side of the handshake.
            assert_eq!(code(&o), 56, "{}: {}{}", c.what, stdout(&o), stderr(&o));
            assert!(stderr(&o).contains(c.alert), "{}: {}", c.what, stderr(&o));
            let reason = c.verdict.strip_prefix("FAILED:").unwrap();
            assert!(
                line.split_whitespace()
                    .any(|f| f == format!("reason={reason}")),
                "{}: {line}",
                c.what
            );
        }
    }
}
