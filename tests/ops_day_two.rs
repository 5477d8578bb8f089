//! Day-two operations (issue 15 items 5 and 6), through the real certtool binary:
//! `certtool rotate` from working directories other than the one `init` ran in, and
//! `certtool inventory` on third-party anchors (Cloudflare's origin-pull CA) beside CAs
//! aop made.

#![allow(clippy::unwrap_used)] // test helpers: a panic is a test failure with a backtrace

use std::path::Path;
use std::process::{Command, Output};

use aop_e2e::{bin, code, pki, run, stderr, stdout, tempdir, workspace_root};
use serde_json::Value;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `certtool ARGS` run in `cwd`.
fn certtool_in(cwd: &Path, args: &[&str]) -> Output {
    run(Command::new(bin("certtool")).current_dir(cwd).args(args))
}

/// `certtool ARGS --json` in `cwd`, which must exit 0; its JSON.
fn ok_json(cwd: &Path, args: &[&str]) -> Value {
    let o = certtool_in(cwd, &[args, &["--json"]].concat());
    assert_eq!(code(&o), 0, "{args:?} in {}: {}", cwd.display(), stderr(&o));
    serde_json::from_str(&stdout(&o)).unwrap_or_else(|e| panic!("{args:?}: {e}: {}", stdout(&o)))
}

fn manifest(rot: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(rot.join("manifest.json")).unwrap()).unwrap()
}

#[test]
fn rotation_steps_work_from_any_working_directory() {
    let root = tempdir().unwrap();
    let ops = root.path().join("ops");
    let other = root.path().join("elsewhere/deeper");
    std::fs::create_dir_all(&other).unwrap();
    pki::ca(&ops.join("pki"), "ca");
    pki::ca(&ops.join("pki"), "ca2");
    let rot = ops.join("rot");

    // init and status from ops/, with relative paths.
    let init = ok_json(
        &ops,
        &[
            "rotate", "init", "--dir", "rot", "--ca", "pki/ca", "--cn", "edge",
        ],
    );
    assert_eq!(init["phase"], "single", "{init}");
    ok_json(&ops, &["rotate", "status", "--dir", "rot"]);
    // Recorded from the rotation directory, not from where init ran.
    assert_eq!(manifest(&rot)["active"]["ca_dir"], "../pki/ca");

    // stage, activate, status from the parent directory: the CA is found.
    let staged = ok_json(root.path(), &["rotate", "stage", "--dir", "ops/rot"]);
    assert_eq!(staged["phase"], "staged", "{staged}");
    assert_eq!(manifest(&rot)["next"]["ca_dir"], "../pki/ca");
    let activated = ok_json(
        root.path(),
        &["rotate", "activate", "--dir", "ops/rot", "--force"],
    );
    assert_eq!(activated["phase"], "activated", "{activated}");
    let status = ok_json(root.path(), &["rotate", "status", "--dir", "ops/rot"]);
    assert_eq!(status["phase"], "activated", "{status}");

    // retire, then stage from a new CA, both named relative to a third directory.
    ok_json(&other, &["rotate", "retire", "--dir", "../../ops/rot"]);
    let staged = ok_json(
        &other,
        &[
            "rotate",
            "stage",
            "--dir",
            "../../ops/rot",
            "--new-ca",
            "../../ops/pki/ca2",
        ],
    );
    assert_eq!(staged["phase"], "staged", "{staged}");
    let m = manifest(&rot);
    assert_eq!(m["next"]["ca_dir"], "../pki/ca2");
    assert_eq!(m["next"]["issuer"], "CN=ca2");
    // And status from inside the rotation directory itself.
    let status = ok_json(&rot, &["rotate", "status", "--dir", "."]);
    assert_eq!(status["phase"], "staged", "{status}");

    // An absolute --ca is recorded as given.
    let abs_ca = ops.join("pki/ca");
    ok_json(
        &other,
        &[
            "rotate",
            "init",
            "--dir",
            "rot-abs",
            "--ca",
            s(&abs_ca),
            "--cn",
            "edge",
        ],
    );
    assert_eq!(
        manifest(&other.join("rot-abs"))["active"]["ca_dir"],
        s(&abs_ca)
    );
}

#[test]
fn a_manifest_written_the_old_way_keeps_working_where_its_path_resolves() {
    let root = tempdir().unwrap();
    let ops = root.path().join("ops");
    pki::ca(&ops.join("pki"), "ca");
    let rot = ops.join("rot");
    ok_json(
        &ops,
        &[
            "rotate", "init", "--dir", "rot", "--ca", "pki/ca", "--cn", "edge",
        ],
    );
    // What earlier versions wrote: the CA relative to init's working directory (ops/).
    let mut m = manifest(&rot);
    m["active"]["ca_dir"] = "pki/ca".into();
    std::fs::write(
        rot.join("manifest.json"),
        serde_json::to_vec_pretty(&m).unwrap(),
    )
    .unwrap();

    // From elsewhere the old path leads nowhere: refused, naming the path, nothing staged.
    let o = certtool_in(root.path(), &["rotate", "stage", "--dir", "ops/rot"]);
    assert_ne!(code(&o), 0, "{}", stdout(&o));
    assert!(stderr(&o).contains("pki/ca"), "{}", stderr(&o));
    assert_eq!(manifest(&rot)["phase"], "single");

    // From the directory it was written in, it still resolves; the next certificate
    // records the path the new way, so later steps work from anywhere.
    let staged = ok_json(&ops, &["rotate", "stage", "--dir", "rot"]);
    assert_eq!(staged["phase"], "staged", "{staged}");
    assert_eq!(manifest(&rot)["next"]["ca_dir"], "../pki/ca");
    ok_json(
        root.path(),
        &["rotate", "activate", "--dir", "ops/rot", "--force"],
    );
    ok_json(root.path(), &["rotate", "retire", "--dir", "ops/rot"]);
    let staged = ok_json(root.path(), &["rotate", "stage", "--dir", "ops/rot"]);
    assert_eq!(staged["phase"], "staged", "{staged}");
}

fn inventory(args: &[&str]) -> (i32, Value) {
    let o = certtool_in(
        &workspace_root(),
        &[&["inventory"][..], args, &["--json"]].concat(),
    );
    let v = serde_json::from_str(&stdout(&o))
        .unwrap_or_else(|e| panic!("{args:?}: {e}: {}{}", stdout(&o), stderr(&o)));
    (code(&o), v)
}

/// The only row of an inventory: (status, third_party_anchor, days_left).
fn only_row(inv: &Value) -> (String, bool, i64) {
    let rows = inv["certificates"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{inv}");
    (
        rows[0]["status"].as_str().unwrap().to_owned(),
        rows[0]["third_party_anchor"].as_bool().unwrap(),
        rows[0]["days_left"].as_i64().unwrap(),
    )
}

#[test]
fn a_third_party_anchor_is_not_renew_due_until_it_is_expiring() {
    let cf = workspace_root().join("testdata/cloudflare/authenticated_origin_pull_ca.pem");
    // Valid until 2029-11-01 17:00 UTC: past two thirds of its life on 2026-12-01, which
    // made it renew-due (exit 1) before: now ok, with its expiry reported, exit 0.
    let (c, inv) = inventory(&[s(&cf), "--at", "2026-12-01T00:00:00Z"]);
    assert_eq!(c, 0, "{inv}");
    assert_eq!(only_row(&inv), ("ok".into(), true, 1066));
    assert_eq!(inv["certificates"][0]["not_after"], "2029-11-01T17:00:00Z");
    assert_eq!(inv["summary"]["renew_due"], 0);
    // Within the warning window it is expiring (exit 1), whatever window is asked for.
    let (c, inv) = inventory(&[s(&cf), "--at", "2029-10-15T00:00:00Z"]);
    assert_eq!((c, only_row(&inv)), (1, ("expiring".into(), true, 17)));
    let (c, inv) = inventory(&[
        s(&cf),
        "--at",
        "2026-12-01T00:00:00Z",
        "--warn-days",
        "1100",
    ]);
    assert_eq!((c, only_row(&inv)), (1, ("expiring".into(), true, 1066)));
    // Expired: exit 2, as any certificate.
    let (c, inv) = inventory(&[s(&cf), "--at", "2029-11-02T00:00:00Z"]);
    assert_eq!(
        (c, only_row(&inv).0, only_row(&inv).1),
        (2, "expired".into(), true)
    );
}

#[test]
fn a_ca_aop_made_is_renew_due_with_its_key_and_an_anchor_without_it() {
    let root = tempdir().unwrap();
    let now = time::OffsetDateTime::now_utc();
    // Ten years, 2,500 days gone: past two thirds of its life.
    let ca = pki::ca_valid_from(
        root.path(),
        "old-ca",
        now - time::Duration::days(2500),
        3650,
    );
    // With its key beside it: the operator renews it, so renew-due as today, exit 1.
    let (c, inv) = inventory(&[s(&ca.dir)]);
    assert_eq!(c, 1, "{inv}");
    let (status, anchor, _) = only_row(&inv);
    assert_eq!((status.as_str(), anchor), ("renew-due", false));
    assert!(
        inv["certificates"][0]["key"]
            .as_str()
            .unwrap()
            .ends_with("old-ca/ca.key")
    );
    // Its certificate alone (a copy in an origin's trust list, no key in the inventory):
    // a third-party anchor, ok until it is expiring.
    let (c, inv) = inventory(&[s(&ca.pem())]);
    assert_eq!(c, 0, "{inv}");
    let (status, anchor, _) = only_row(&inv);
    assert_eq!((status.as_str(), anchor), ("ok", true));
    // A leaf past two thirds, keyless, is no anchor: still renew-due.
    let leaf = ca.client_at("renew", &[], now - time::Duration::days(300), 365);
    let (c, inv) = inventory(&[s(&leaf.cert)]);
    assert_eq!(c, 1, "{inv}");
    let rows = inv["certificates"].as_array().unwrap();
    let leaf_row = rows.iter().find(|r| r["subject"] == "CN=renew").unwrap();
    assert_eq!(leaf_row["status"], "renew-due");
    assert_eq!(leaf_row["third_party_anchor"], false);
}

/// Each rotation step names the servers that must re-read the files it changed, with
/// the command for each (issue 15 item 1): the origins after `stage` and `retire`
/// (trust.pem), the edges after `activate` (edge/), in the human output as in `--json`.
#[test]
fn rotation_steps_print_each_servers_reload_command() {
    let root = tempdir().unwrap();
    pki::ca(root.path(), "ca");
    let human = |args: &[&str]| {
        let o = certtool_in(root.path(), args);
        assert_eq!(code(&o), 0, "{args:?}: {}", stderr(&o));
        stdout(&o)
    };
    let origins = "reload every origin (it reads trust.pem):\n  aop-origin      systemctl reload aop-origin   or: kill -HUP <pid>\n  nginx           nginx -s reload\n";
    let edges = "reload every edge (it reads edge/cert.pem and edge/key.pem):\n  aop-edge-proxy  systemctl reload aop-edge-proxy   or: kill -HUP <pid>\n  nginx           nginx -s reload\n";
    let init = human(&[
        "rotate", "init", "--dir", "rot", "--ca", "ca", "--cn", "edge",
    ]);
    assert!(init.ends_with(&format!("{origins}{edges}")), "{init}");
    let staged = human(&["rotate", "stage", "--dir", "rot"]);
    assert!(
        staged.ends_with(origins) && !staged.contains("aop-edge-proxy"),
        "{staged}"
    );
    let activated = human(&["rotate", "activate", "--dir", "rot", "--force"]);
    assert!(
        activated.ends_with(edges) && !activated.contains("aop-origin"),
        "{activated}"
    );
    let json = ok_json(root.path(), &["rotate", "status", "--dir", "rot"]);
    assert_eq!(
        json["reload"],
        serde_json::json!([
            {"role": "edge", "program": "aop-edge-proxy", "commands": ["systemctl reload aop-edge-proxy", "kill -HUP <pid>"]},
            {"role": "edge", "program": "nginx", "commands": ["nginx -s reload"]},
        ])
    );
    let retired = human(&["rotate", "retire", "--dir", "rot"]);
    assert!(retired.ends_with(origins), "{retired}");
}
