//! Knowing every certificate and rotating without locking the edge out: `certtool
//! inventory`, `certtool rotate` (the whole cycle against a real origin that reloads
//! trust.pem, and a SIGKILL-equivalent at every write point: the step run in-process,
//! stopped by aop-ops' write hook, then recovered by the real binary), `certtool cloudflare payload`.

#![allow(clippy::unwrap_used)] // test helpers: a panic is a test failure with a backtrace

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use aop_e2e::origin::{TestClient, TestOrigin};
use aop_e2e::pki::{self, Leaf};
use aop_e2e::{certtool, code, mode, stderr, stdout, tempdir, workspace_root};
use aop_verify::{Limits, PolicySpec, RuleSpec, TrustSpec};
use serde_json::Value;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn json(args: &[&str]) -> (i32, Value) {
    let o = certtool(args);
    let v = serde_json::from_str(&stdout(&o))
        .unwrap_or_else(|e| panic!("{args:?}: {e}: {}{}", stdout(&o), stderr(&o)));
    (code(&o), v)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// Only the first PEM block of a file (a leaf without its chain).
fn first_block(from: &Path, to: &Path) {
    let text = std::fs::read_to_string(from).unwrap();
    let end = text.find("-----END CERTIFICATE-----").unwrap() + "-----END CERTIFICATE-----\n".len();
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::write(to, &text[..end]).unwrap();
}

#[test]
fn inventory_of_a_fixture_tree_has_exact_rows_statuses_and_problems() {
    let dir = tempdir().unwrap();
    let tree = dir.path().join("tree");
    let now = time::OffsetDateTime::now_utc();
    let day = time::Duration::days(1);
    copy_dir(
        &workspace_root().join("testdata/cloudflare"),
        &tree.join("cloudflare"),
    );
    let ca = pki::ca(&tree.join("pki"), "ca");
    ca.client("edge");
    ca.client_at("expiring", &[], now, 10);
    ca.client_at("renew", &[], now - day * 300, 365);
    ca.client_at("future", &[], now + day * 2, 30);
    ca.client_at("old", &[], now - day * 100, 30);
    let keyless = ca.client("keyless");
    std::fs::remove_file(&keyless.key).unwrap();
    let elsewhere = pki::ca(dir.path(), "elsewhere-ca");
    let orphan = elsewhere.client("orphan");
    first_block(&orphan.cert, &tree.join("orphan/cert.pem"));
    std::fs::copy(&orphan.key, tree.join("orphan/key.pem")).unwrap();
    pki::leaf_outliving_ca(&tree);
    std::fs::create_dir_all(tree.join("sub/deep")).unwrap();
    std::fs::copy(
        workspace_root().join("testdata/bad/private-key.pem"),
        tree.join("sub/deep/lonely.key"),
    )
    .unwrap();
    std::fs::copy(
        workspace_root().join("testdata/bad/truncated.pem"),
        tree.join("sub/broken.pem"),
    )
    .unwrap();
    std::fs::write(tree.join("sub/notes.txt"), "not a certificate\n").unwrap();
    let edge_sha = aop_pki::CertInfo::from_der(
        &aop_pki::load_certificates(&tree.join("pki/ca/edge/cert.pem")).unwrap()[0],
        now,
    )
    .unwrap()
    .sha256;
    std::fs::write(
        tree.join("origin.toml"),
        format!("listen = \"127.0.0.1:443\"\n\n[[site]]\nhostnames = [\"a.example\"]\ncert = \"c.pem\"\nkey = \"k.pem\"\ntrust = [\"pki/ca/ca.pem\"]\npins = [\"{edge_sha}\"]\nupstream = \"http://127.0.0.1:8080\"\n"),
    )
    .unwrap();

    let (c, inv) = json(&["inventory", s(&tree), "--json"]);
    assert_eq!(c, 2, "expired and unreadable entries: exit 2");
    let rows: HashMap<String, &Value> = inv["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["subject"].as_str().unwrap().to_owned(), r))
        .collect();
    let status = |subject: &str| {
        rows.get(subject)
            .unwrap_or_else(|| panic!("no row for {subject}: {:?}", rows.keys()))["status"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(status("CN=edge"), "ok");
    assert_eq!(status("CN=ca"), "ok");
    assert_eq!(status("CN=expiring"), "expiring");
    assert_eq!(status("CN=renew"), "renew-due");
    assert_eq!(status("CN=future"), "not-yet-valid");
    assert_eq!(status("CN=old"), "expired");
    assert_eq!(status("CN=orphan"), "ok");
    assert_eq!(status("CN=outlives"), "ok");
    assert_eq!(status("CN=short-lived CA"), "ok");
    // 4 Cloudflare + ca + 6 leaves under it + orphan + short CA + outlives = 14 distinct.
    assert_eq!(inv["summary"]["certificates"], 14, "{:?}", rows.keys());
    // The CA appears once, with every place it was found (its own file and each chain).
    let ca_places = rows["CN=ca"]["places"].as_array().unwrap();
    assert_eq!(ca_places.len(), 7, "{ca_places:?}");
    assert!(
        ca_places
            .iter()
            .any(|p| p.as_str().unwrap().ends_with("pki/ca/edge/cert.pem#2"))
    );
    // Keys are paired, never printed.
    assert!(
        rows["CN=edge"]["key"]
            .as_str()
            .unwrap()
            .ends_with("pki/ca/edge/key.pem")
    );
    assert!(!serde_json::to_string(&inv).unwrap().contains("PRIVATE KEY"));
    // Cloudflare's certificates are recognised.
    let labels: Vec<&str> = inv["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["label"].as_str())
        .collect();
    assert_eq!(labels.len(), 4, "{labels:?}");
    assert!(labels.contains(&"Cloudflare shared origin-pull CA (2019)"));
    // Unreadable, with why.
    let unreadable = inv["unreadable"].as_array().unwrap();
    assert_eq!(unreadable.len(), 1, "{unreadable:?}");
    assert!(
        unreadable[0]["place"]
            .as_str()
            .unwrap()
            .ends_with("sub/broken.pem")
    );
    assert!(
        unreadable[0]["error"]
            .as_str()
            .unwrap()
            .contains("truncated")
    );
    // Problems operators get wrong.
    let problems: Vec<(String, String)> = inv["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["kind"].as_str().unwrap().to_owned(),
                p["message"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let has =
        |kind: &str, words: &str| problems.iter().any(|(k, m)| k == kind && m.contains(words));
    for (kind, words, found) in [
        ("unknown-issuer", "CN=orphan", true),
        ("ca-expires-before-leaf", "CN=outlives", true),
        ("key-without-certificate", "lonely.key", true),
        ("certificate-without-key", "CN=keyless", true),
        ("certificate-without-key", "CN=edge", false),
        ("same-key", "2 certificates share one key", true),
        ("certificate-pin", "origin.toml:8: pins CN=edge", true),
        ("unknown-issuer", "CN=edge", false),
    ] {
        assert_eq!(has(kind, words), found, "{kind} {words}: {problems:#?}");
    }

    // The human table: aligned, one line per certificate, keys listed without content.
    let human = stdout(&certtool(["inventory", s(&tree)]));
    assert!(human.starts_with("STATUS"), "{human}");
    assert!(
        human.contains("\nexpiring ") && human.contains("\nrenew-due "),
        "{human}"
    );
    assert!(
        human.contains("lonely.key  no certificate found"),
        "{human}"
    );

    // Cloudflare's certificates at a fixed time, exactly.
    let (c, cf) = json(&[
        "inventory",
        s(&tree.join("cloudflare")),
        "--at",
        "2026-12-01T00:00:00Z",
        "--json",
    ]);
    assert_eq!(c, 2);
    let got: Vec<(String, String)> = cf["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["sha256"].as_str().unwrap()[..8].to_owned(),
                r["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("062465ee".to_owned(), "expired".to_owned()),
            ("b8f86d0d".to_owned(), "expired".to_owned()),
            // Third-party anchors past two thirds of their life: not renew-due (the
            // operator cannot renew them), ok until within the warning window.
            ("d3c7e85c".to_owned(), "ok".to_owned()),
            ("9a1ac2b4".to_owned(), "ok".to_owned()),
        ]
    );
    // Exit codes: 0 all ok, 1 something expiring or due, 2 something expired.
    let cf = tree.join("cloudflare");
    let cf2019 = tree.join("cloudflare/authenticated_origin_pull_ca.pem");
    let (ca_pem, edge_dir, expiring) = (
        tree.join("pki/ca/ca.pem"),
        tree.join("pki/ca/edge"),
        tree.join("pki/ca/expiring"),
    );
    let cases: [(Vec<&str>, i32, &str); 6] = [
        (
            vec![s(&cf), "--at", "2021-01-01T00:00:00Z"],
            2,
            "the 2015 CA had expired by 2021",
        ),
        (
            vec![s(&cf2019), "--at", "2022-01-01T00:00:00Z"],
            0,
            "the 2019 CA alone, early in its life: ok",
        ),
        (
            vec![s(&cf2019), "--at", "2029-10-15T00:00:00Z"],
            1,
            "within 30 days of expiry: exit 1",
        ),
        (vec![s(&ca_pem), s(&edge_dir)], 0, "a clean tree"),
        (vec![s(&ca_pem), s(&expiring)], 1, "an expiring leaf"),
        (
            vec![s(&ca_pem), s(&expiring), "--warn-days", "5"],
            0,
            "9 days left of 10: not within 5 days, not yet past 2/3 of its life",
        ),
    ];
    for (args, want, why) in cases {
        let (c, _) = json(&[&["inventory"][..], &args, &["--json"]].concat());
        assert_eq!(c, want, "{why}");
    }
    // Usage errors.
    let o = certtool(["inventory"]);
    assert_eq!(code(&o), 2);
}

#[tokio::test]
async fn inventory_records_what_a_live_endpoint_presents() {
    let dir = tempdir().unwrap();
    let origin_ca = pki::ca(dir.path(), "origin-ca");
    let server = origin_ca.origin("origin", &["a.example"]);
    let edge_ca = pki::ca(dir.path(), "edge-ca");
    let rule = RuleSpec::new(
        "a",
        ["a.example"],
        &server.cert,
        &server.key,
        TrustSpec::new([edge_ca.pem()]),
    );
    let origin = TestOrigin::start(&PolicySpec::new(vec![rule]), Limits::default()).await;
    let url = format!("https://a.example:{}/", origin.addr.port());
    let resolve = origin.resolve("a.example");
    let unreachable = "https://b.example:1/".to_owned();
    let o = tokio::task::spawn_blocking(move || {
        certtool([
            "inventory",
            "--probe",
            &url,
            "--probe",
            &unreachable,
            "--resolve",
            &resolve,
            "--resolve",
            "b.example:1:127.0.0.1",
            "--json",
        ])
    })
    .await
    .unwrap();
    let inv: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let rows = inv["certificates"].as_array().unwrap();
    assert_eq!(
        rows.len(),
        2,
        "the origin's certificate and its CA: {rows:?}"
    );
    let leaf = rows
        .iter()
        .find(|r| r["subject"] == "CN=a.example")
        .unwrap();
    assert!(
        leaf["places"][0]
            .as_str()
            .unwrap()
            .contains("(presented)#1"),
        "{:?}",
        leaf["places"]
    );
    let ca = rows
        .iter()
        .find(|r| r["subject"] == "CN=origin-ca")
        .unwrap();
    assert!(
        ca["places"][0].as_str().unwrap().contains("(presented)#2"),
        "{:?}",
        ca["places"]
    );
    assert!(
        inv["unreadable"][0]["error"]
            .as_str()
            .unwrap()
            .contains("unreachable")
    );
    assert_eq!(code(&o), 2, "an unreachable endpoint counts as unreadable");

    // Presenting the edge's certificate (--cert/--key) the same chain is recorded, and
    // nothing is unreadable.
    let edge = edge_ca.client("edge");
    let (url, resolve) = (
        format!("https://a.example:{}/", origin.addr.port()),
        origin.resolve("a.example"),
    );
    let o = tokio::task::spawn_blocking(move || {
        let (c, k) = (
            edge.cert.display().to_string(),
            edge.key.display().to_string(),
        );
        certtool([
            "inventory",
            "--probe",
            &url,
            "--resolve",
            &resolve,
            "--cert",
            &c,
            "--key",
            &k,
            "--json",
        ])
    })
    .await
    .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let inv: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(inv["certificates"].as_array().unwrap().len(), 2);
    let o = certtool([
        "inventory",
        "--probe",
        "https://a.example/",
        "--cert",
        "/x.pem",
    ]);
    assert_eq!(code(&o), 2, "--cert needs --key");
}

// ---- rotate ----

struct Rot {
    dir: PathBuf,
}

impl Rot {
    fn run(&self, args: &[&str]) -> std::process::Output {
        let mut a = vec!["rotate", args[0], "--dir", s(&self.dir)];
        a.extend_from_slice(&args[1..]);
        certtool(a)
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert_eq!(code(&o), 0, "rotate {args:?}: {}{}", stdout(&o), stderr(&o));
        stdout(&o)
    }

    fn status(&self) -> Value {
        serde_json::from_str(&self.ok(&["status", "--json"])).unwrap()
    }

    fn edge(&self) -> Leaf {
        Leaf {
            cert: self.dir.join("edge/cert.pem"),
            key: self.dir.join("edge/key.pem"),
        }
    }

    fn trust(&self) -> PathBuf {
        self.dir.join("trust.pem")
    }
}

/// `certtool rotate init --dir DIR --ca CA --cn edge`.
fn rotate_init(dir: &Path, ca: &Path) -> std::process::Output {
    certtool([
        "rotate",
        "init",
        "--dir",
        s(dir),
        "--ca",
        s(ca),
        "--cn",
        "edge",
    ])
}

fn sha(cert: &Path) -> String {
    aop_pki::Sha256Fingerprint::of(&aop_pki::load_certificates(cert).unwrap()[0]).to_string()
}

#[tokio::test]
async fn the_whole_rotation_cycle_against_a_real_origin_refuses_no_edge_request() {
    let dir = tempdir().unwrap();
    let origin_ca = pki::ca(dir.path(), "origin-ca");
    let server = origin_ca.origin("origin", &["a.example"]);
    let ca1 = pki::ca(dir.path(), "edge-ca-1");
    let ca2 = pki::ca(dir.path(), "edge-ca-2");
    let rot = Rot {
        dir: dir.path().join("rot"),
    };
    let init = certtool([
        "rotate",
        "init",
        "--dir",
        s(&rot.dir),
        "--ca",
        s(&ca1.dir),
        "--cn",
        "edge",
        "--days",
        "30",
    ]);
    assert_eq!(code(&init), 0, "{}", stderr(&init));
    assert_eq!(mode(&rot.edge().key), 0o600);

    // The origin trusts whatever trust.pem says, re-read on each reload.
    let spec = PolicySpec::new(vec![RuleSpec::new(
        "a",
        ["a.example"],
        &server.cert,
        &server.key,
        TrustSpec::new([rot.trust()]),
    )]);
    let mut origin = TestOrigin::start(&spec, Limits::default()).await;
    let roots = origin_ca.pem();
    let edge_ok = |origin: &mut TestOrigin, leaf: &Leaf| {
        let client = TestClient::new(&roots, Some(leaf));
        let addr = origin.addr;
        async move { client.get(addr, "a.example").await.map(|s| s.status) }
    };
    let first_edge = rot.edge();
    let first = Leaf {
        cert: std::fs::canonicalize(&first_edge.cert).unwrap(),
        key: std::fs::canonicalize(&first_edge.key).unwrap(),
    };
    assert_eq!(edge_ok(&mut origin, &rot.edge()).await, Ok(200));
    origin.verdict().await;

    // Stage the next certificate from a new CA.
    rot.ok(&["stage", "--new-ca", s(&ca2.dir)]);
    let st = rot.status();
    assert_eq!(st["phase"], "staged");
    assert_eq!(
        sha(&rot.edge().cert),
        sha(&first.cert),
        "the edge is unchanged by stage"
    );
    let trust = aop_pki::load_certificates(&rot.trust()).unwrap();
    assert_eq!(trust.len(), 2, "current + next CA");

    // The origin has not reloaded: activate must refuse, and change nothing.
    let probe = [
        "--probe".to_owned(),
        format!("https://a.example:{}/", origin.addr.port()),
        "--resolve".to_owned(),
        origin.resolve("a.example"),
        "--cacert".to_owned(),
        s(&roots).to_owned(),
    ];
    let before = std::fs::read(rot.dir.join("manifest.json")).unwrap();
    // Without any --probe (and without --force), activate refuses too.
    let o = activate(&rot.dir, &[]).await;
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("no --probe or --origins given"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        std::fs::read(rot.dir.join("manifest.json")).unwrap(),
        before
    );
    let o = activate(&rot.dir, &probe).await;
    assert_eq!(code(&o), 1, "{}{}", stdout(&o), stderr(&o));
    assert!(
        stderr(&o).contains("1 of 1 origins do not accept the next certificate")
            && stderr(&o).contains("nothing changed"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        std::fs::read(rot.dir.join("manifest.json")).unwrap(),
        before
    );
    assert_eq!(sha(&rot.edge().cert), sha(&first.cert));
    origin.verdict().await; // the probe's own (refused) connection
    assert_eq!(
        edge_ok(&mut origin, &rot.edge()).await,
        Ok(200),
        "the edge never noticed"
    );
    origin.verdict().await;

    // Reload the origin; now activate succeeds and the edge switches.
    origin.policy.reload(&spec).unwrap();
    let o = activate(&rot.dir, &probe).await;
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    origin.verdict().await;
    assert_eq!(rot.status()["phase"], "activated");
    assert_ne!(
        sha(&rot.edge().cert),
        sha(&first.cert),
        "the edge now presents the next certificate"
    );
    assert_eq!(edge_ok(&mut origin, &rot.edge()).await, Ok(200));
    origin.verdict().await;
    assert_eq!(
        edge_ok(&mut origin, &first).await,
        Ok(200),
        "an edge not yet reloaded still gets in"
    );
    origin.verdict().await;

    // Retire: the old CA leaves trust.pem; after the reload the old certificate is refused.
    rot.ok(&["retire"]);
    origin.policy.reload(&spec).unwrap();
    assert_eq!(aop_pki::load_certificates(&rot.trust()).unwrap().len(), 1);
    assert_eq!(edge_ok(&mut origin, &rot.edge()).await, Ok(200));
    origin.verdict().await;
    assert!(edge_ok(&mut origin, &first).await.is_err());
    assert_eq!(origin.verdict().await.to_string(), "FAILED:unknown_ca");

    // Rollback undoes retire: both trusted again.
    rot.ok(&["rollback"]);
    origin.policy.reload(&spec).unwrap();
    assert_eq!(edge_ok(&mut origin, &first).await, Ok(200));
    origin.verdict().await;
    let st = rot.status();
    assert_eq!(
        (st["phase"].as_str(), st["files_in_step"].as_bool()),
        (Some("activated"), Some(true))
    );
    assert_eq!(st["previous"]["sha256"], sha(&first.cert));

    // Wrong-phase steps are refused with exit 1 and the next step named.
    let o = rot.run(&["stage"]);
    assert_eq!(code(&o), 1);
    assert!(
        stderr(&o).contains("cannot stage in phase Activated"),
        "{}",
        stderr(&o)
    );
    let o = rotate_init(&rot.dir, &ca1.dir);
    assert_eq!(code(&o), 1, "init never overwrites: {}", stderr(&o));
    let o = certtool(["rotate", "status", "--dir", s(&dir.path().join("nothing"))]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
}

/// `certtool rotate activate --dir DIR PROBE-ARGS…`, off the async runtime (the origin
/// under test runs on it).
async fn activate(dir: &Path, probe: &[String]) -> std::process::Output {
    let mut args = vec![
        "rotate".to_owned(),
        "activate".to_owned(),
        "--dir".to_owned(),
        dir.display().to_string(),
    ];
    args.extend(probe.iter().cloned());
    tokio::task::spawn_blocking(move || certtool(args))
        .await
        .unwrap()
}

/// Build the state just before `step` in a fresh directory.
fn prepare(root: &Path, ca: &Path, step: &str) -> Rot {
    let rot = Rot {
        dir: root.to_owned(),
    };
    if step == "init" {
        return rot;
    }
    let o = rotate_init(root, ca);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let order = ["stage", "activate", "retire"];
    for pre in order.iter().take_while(|p| **p != step) {
        let args: &[&str] = if *pre == "activate" {
            &["activate", "--force"]
        } else {
            &[pre]
        };
        rot.ok(args);
    }
    if step == "rollback" {
        rot.ok(&["stage"]);
    }
    rot
}

/// After the step completes, what must hold.
fn assert_done(rot: &Rot, step: &str) {
    let st = rot.status();
    assert_eq!(st["files_in_step"], true, "{step}: {st}");
    let want = match step {
        "init" | "retire" | "rollback" => "single",
        "stage" => "staged",
        "activate" => "activated",
        _ => unreachable!(),
    };
    assert_eq!(st["phase"], want, "{step}: {st}");
    let edge = rot.edge();
    let provider = aop_pki::default_provider();
    aop_pki::load_key_pair(&edge.cert, &edge.key, &provider).unwrap();
    assert_eq!(
        sha(&edge.cert),
        st["active"]["sha256"].as_str().unwrap(),
        "{step}: edge/ is the active certificate"
    );
}

/// Run `step` in-process on the rotation in `dir`, stopped right after its `at`-th write
/// by the rotation's write hook, exactly as a process killed there would be (the same
/// arguments as `certtool rotate STEP --dir DIR`, `--force` for activate). `Ok`: the step
/// made fewer writes and finished.
fn step_stopped_at(
    dir: &Path,
    ca: &Path,
    step: &str,
    at: usize,
) -> Result<aop_ops::rotate::StepReport, aop_ops::Error> {
    let rot = aop_ops::rotate::Rotation::new(dir).with_write_hook(move |n| {
        if n == at {
            Err(std::io::Error::other("killed here"))
        } else {
            Ok(())
        }
    });
    let now = time::OffsetDateTime::now_utc();
    match step {
        "init" => rot.init(ca, "edge", 90, aop_pki::KeyType::EcdsaP256, now),
        "stage" => rot.stage(None, now),
        "activate" => rot.activate(Err("no --probe given".into()), true, now),
        "retire" => rot.retire(now),
        "rollback" => rot.rollback(),
        other => unreachable!("{other}"),
    }
}

#[test]
fn a_kill_at_any_write_point_leaves_a_state_that_the_same_step_or_rollback_completes() {
    let root = tempdir().unwrap();
    let ca = pki::ca(root.path(), "ca");
    // One thread a step: the cases are independent directories, and most of their time is
    // spent waiting on certtool processes and fsync.
    let cases = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|threads| {
        for step in ["init", "stage", "activate", "retire", "rollback"] {
            let (root, ca, cases) = (&root, &ca, &cases);
            threads.spawn(move || {
                for crash_at in 1..=5 {
                    for recovery in ["same step", "rollback"] {
                        if step == "init" && recovery == "rollback" {
                            continue; // nothing to roll back to before init
                        }
                        let dir = root
                            .path()
                            .join(format!("{step}-{crash_at}-{}", recovery.replace(' ', "-")));
                        let rot = prepare(&dir, &ca.dir, step);
                        let args: Vec<&str> = match step {
                            "init" => vec!["init", "--ca", s(&ca.dir), "--cn", "edge"],
                            "activate" => vec!["activate", "--force"],
                            other => vec![other],
                        };
                        let crashed = match step_stopped_at(&rot.dir, &ca.dir, step, crash_at) {
                            Err(aop_ops::Error::Stopped { write, .. }) => {
                                assert_eq!(write, crash_at, "{step}: stopped where asked");
                                true
                            }
                            Err(e) => panic!("{step} at {crash_at}: {e}"),
                            Ok(_) => false,
                        };
                        if !crashed {
                            assert_done(&rot, step);
                            continue;
                        }
                        cases.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        // Whatever happened, status reads the state.
                        if step != "init" || rot.dir.join("manifest.json").exists() {
                            let st = rot.run(&["status", "--json"]);
                            assert_eq!(
                                code(&st),
                                0,
                                "{step} killed at write {crash_at}: status: {}",
                                stderr(&st)
                            );
                        }
                        if recovery == "same step" {
                            rot.ok(&args);
                            assert_done(&rot, step);
                        } else {
                            let o = rot.run(&["rollback"]);
                            if code(&o) != 0 {
                                // Killed before its commit, at init: the state is the old one, and
                                // there is nothing before it to roll back to.
                                assert!(
                                    stderr(&o).contains("nothing to roll back"),
                                    "{step} at {crash_at}: {}",
                                    stderr(&o)
                                );
                            }
                            let st = rot.status();
                            assert_eq!(
                                st["files_in_step"], true,
                                "{step} at {crash_at}, rolled back: {st}"
                            );
                            let edge = rot.edge();
                            let provider = aop_pki::default_provider();
                            aop_pki::load_key_pair(&edge.cert, &edge.key, &provider).unwrap();
                        }
                    }
                }
            });
        }
    });
    let cases = cases.into_inner();
    assert!(
        cases >= 12,
        "the crash points were really exercised ({cases})"
    );
}

/// `certtool cloudflare payload --cert CERT --key KEY --out OUT`.
fn payload(cert: &Path, key: &Path, out: &Path) -> std::process::Output {
    certtool([
        "cloudflare",
        "payload",
        "--cert",
        s(cert),
        "--key",
        s(key),
        "--out",
        s(out),
    ])
}

#[test]
fn cloudflare_payload_is_the_api_body_written_0600() {
    let dir = tempdir().unwrap();
    let ca = pki::ca(dir.path(), "ca");
    let edge = ca.client("edge");
    let other = ca.client("other");
    let out = dir.path().join("upload.json");
    let o = payload(&edge.cert, &edge.key, &out);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(mode(&out), 0o600);
    let body: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(body.as_object().unwrap().len(), 2);
    assert_eq!(
        body["certificate"].as_str().unwrap(),
        std::fs::read_to_string(&edge.cert).unwrap()
    );
    assert_eq!(
        body["private_key"].as_str().unwrap(),
        std::fs::read_to_string(&edge.key).unwrap()
    );
    let before = std::fs::read(&out).unwrap();
    let o = payload(&other.cert, &other.key, &out);
    assert_eq!(code(&o), 1);
    assert_eq!(std::fs::read(&out).unwrap(), before);
    let o = payload(&edge.cert, &other.key, &dir.path().join("x.json"));
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("private key does not match"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn long_rotation_histories_stay_readable_and_stale_intents_are_ignored() {
    use aop_ops::rotate::{Phase, Rotation, UNDO_DEPTH};
    let root = tempdir().unwrap();
    let ca = pki::ca(root.path(), "ca");
    let rot = Rotation::new(root.path().join("rot"));
    let now = time::OffsetDateTime::now_utc();
    rot.init(&ca.dir, "edge", 30, aop_pki::KeyType::EcdsaP256, now)
        .unwrap();
    // 50 full rotations: 150 steps. The manifest keeps a bounded history.
    for _ in 0..50 {
        rot.stage(None, now).unwrap();
        let staged = rot.manifest().unwrap().next.unwrap().sha256;
        rot.activate(Ok(staged), false, now).unwrap();
        rot.retire(now).unwrap();
    }
    let size = std::fs::metadata(root.path().join("rot/manifest.json"))
        .unwrap()
        .len();
    assert!(size < 200_000, "manifest.json is {size} bytes");
    for _ in 0..UNDO_DEPTH {
        rot.rollback().unwrap();
    }
    let err = rot.rollback().unwrap_err().to_string();
    assert!(err.contains("nothing to roll back"), "{err}");
    assert!(rot.files_in_step(&rot.manifest().unwrap()).unwrap());

    // A rollback intent left by a killed rollback must not fool a later rollback once
    // another step has been committed.
    let rot2 = Rotation::new(root.path().join("rot2"));
    rot2.init(&ca.dir, "edge", 30, aop_pki::KeyType::EcdsaP256, now)
        .unwrap();
    rot2.stage(None, now).unwrap();
    let g = rot2.manifest().unwrap().generation;
    std::fs::write(
        root.path().join("rot2/rollback.intent"),
        format!("{} {}\n", g, g + 1),
    )
    .unwrap();
    let staged = rot2.manifest().unwrap().next.unwrap().sha256;
    rot2.activate(Ok(staged), false, now).unwrap();
    assert_eq!(rot2.manifest().unwrap().phase, Phase::Activated);
    let r = rot2.rollback().unwrap();
    assert_eq!(
        r.manifest.phase,
        Phase::Staged,
        "the rollback really happened"
    );
}

#[test]
fn inventory_prints_long_non_ascii_names_without_breaking_them() {
    let dir = tempdir().unwrap();
    let ca = pki::ca(dir.path(), "ca");
    let name = format!("{}ééééé", "a".repeat(44));
    ca.client(&name);
    let o = certtool(["inventory", s(dir.path())]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stdout(&o).contains(&format!("CN={}", "a".repeat(44))),
        "{}",
        stdout(&o)
    );
    assert!(stdout(&o).contains('…'), "{}", stdout(&o));
}

#[test]
fn two_rotation_steps_at_once_are_refused_not_mixed() {
    let root = tempdir().unwrap();
    let ca = pki::ca(root.path(), "ca");
    let rot = Rot {
        dir: root.path().join("rot"),
    };
    let o = rotate_init(&rot.dir, &ca.dir);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let before = std::fs::read(rot.dir.join("manifest.json")).unwrap();
    // Another step holds the lock.
    let held = std::fs::OpenOptions::new()
        .write(true)
        .open(rot.dir.join(".lock"))
        .unwrap();
    held.lock().unwrap();
    let o = rot.run(&["stage"]);
    assert_eq!(code(&o), 1);
    assert!(
        stderr(&o).contains("another rotate step is running"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        std::fs::read(rot.dir.join("manifest.json")).unwrap(),
        before
    );
    held.unlock().unwrap();
    rot.ok(&["stage"]);
}

// ---- rotate activate across a fleet ----

/// `certtool rotate activate --dir DIR ARGS…` as a blocking child, off the runtime the
/// origins run on.
async fn activate_with(dir: &Path, args: Vec<String>) -> std::process::Output {
    let mut all = vec![
        "rotate".to_owned(),
        "activate".to_owned(),
        "--dir".to_owned(),
        dir.display().to_string(),
    ];
    all.extend(args);
    tokio::task::spawn_blocking(move || certtool(all))
        .await
        .unwrap()
}

/// The bytes of every file a refused activate must leave alone.
fn rotation_bytes(rot: &Rot) -> Vec<Vec<u8>> {
    [
        "manifest.json",
        "trust.pem",
        "edge/cert.pem",
        "edge/key.pem",
    ]
    .iter()
    .map(|f| std::fs::read(rot.dir.join(f)).unwrap())
    .collect()
}

/// 20 real origins (aop-verify, each its own hostname and port) listed in an origins
/// file; two trust only the current CA. Activate refuses: the table names exactly those
/// two with the alert they sent, exit 1, not a byte of the rotation changed. Once they
/// reload the new trust.pem, the same file activates. Every origin is probed once a run.
#[tokio::test]
async fn activate_probes_an_origins_file_and_names_exactly_the_origins_that_refuse() {
    const N: usize = 20;
    let dir = tempdir().unwrap();
    let origin_ca = pki::ca(dir.path(), "origin-ca");
    let names: Vec<String> = (0..N).map(|i| format!("o{i}.fleet.example")).collect();
    let server = origin_ca.origin(
        "origin",
        &names.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let ca1 = pki::ca(dir.path(), "edge-ca-1");
    let ca2 = pki::ca(dir.path(), "edge-ca-2");
    let rot = Rot {
        dir: dir.path().join("rot"),
    };
    assert_eq!(code(&rotate_init(&rot.dir, &ca1.dir)), 0);
    rot.ok(&["stage", "--new-ca", s(&ca2.dir)]);

    // Origins 3 and 17 have not reloaded: they trust the current CA only.
    let lagging = [3, 17];
    let spec = |i: usize, trust: PathBuf| {
        PolicySpec::new(vec![RuleSpec::new(
            "fleet",
            [names[i].as_str()],
            &server.cert,
            &server.key,
            TrustSpec::new([trust]),
        )])
    };
    let mut origins = Vec::new();
    for i in 0..N {
        let trust = if lagging.contains(&i) {
            ca1.pem()
        } else {
            rot.trust()
        };
        origins.push(TestOrigin::start(&spec(i, trust), Limits::default()).await);
    }
    let ports: Vec<u16> = origins.iter().map(|o| o.addr.port()).collect();
    let url = |i: usize| format!("https://{}:{}/", names[i], ports[i]);
    let mut file = String::from("# the fleet\n\n");
    for (i, o) in origins.iter().enumerate() {
        file.push_str(&format!(
            "{}   {}   # origin {i}\n",
            url(i),
            o.resolve(&names[i])
        ));
    }
    let list = dir.path().join("origins.txt");
    std::fs::write(&list, &file).unwrap();
    let args = |extra: &[&str]| {
        let mut a = vec![
            "--origins".to_owned(),
            s(&list).to_owned(),
            "--cacert".to_owned(),
            s(&origin_ca.pem()).to_owned(),
        ];
        a.extend(extra.iter().map(|e| (*e).to_owned()));
        a
    };
    let accepted = |origins: &[TestOrigin]| -> Vec<u64> {
        origins
            .iter()
            .map(|o| o.accepted.load(std::sync::atomic::Ordering::SeqCst))
            .collect()
    };

    let before = rotation_bytes(&rot);
    let o = activate_with(&rot.dir, args(&["--concurrency", "4"])).await;
    assert_eq!(code(&o), 1, "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        "rotate activate: REFUSED: 2 of 20 origins do not accept the next certificate; nothing changed"
    );
    let rows: Vec<Vec<&str>> = lines[2..]
        .iter()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        ["ORIGIN", "ADDRESS", "OUTCOME", "SAID"]
    );
    let want: Vec<Vec<String>> = lagging
        .iter()
        .map(|&i| {
            vec![
                url(i),
                origins[i].addr.to_string(),
                "refused_tls".into(),
                "unknown_ca".into(),
            ]
        })
        .collect();
    assert_eq!(rows, want, "{out}");
    assert_eq!(
        stderr(&o).trim_end(),
        format!(
            "certtool: {}: not activating: 2 of 20 origins do not accept the next certificate (the table is on stdout); nothing changed",
            rot.dir.display()
        )
    );
    assert_eq!(rotation_bytes(&rot), before, "nothing changed");
    assert_eq!(accepted(&origins), vec![1; N], "every origin probed once");
    for (i, o) in origins.iter_mut().enumerate() {
        let v = o.verdict().await.to_string();
        let want = if lagging.contains(&i) {
            "FAILED:unknown_ca"
        } else {
            "SUCCESS"
        };
        assert_eq!(v, want, "origin {i}");
    }

    // The same rows in --json, default concurrency.
    let o = activate_with(&rot.dir, args(&["--json"])).await;
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(
        (&v["step"], &v["activated"], &v["probed"], &v["concurrency"]),
        (
            &Value::from("activate"),
            &Value::from(false),
            &Value::from(N),
            &Value::from(N)
        )
    );
    let json_rows: Vec<(String, String, String, String)> = v["refused"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["url"].as_str().unwrap().to_owned(),
                r["address"].as_str().unwrap().to_owned(),
                r["outcome"].as_str().unwrap().to_owned(),
                r["alert"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let want: Vec<_> = lagging
        .iter()
        .map(|&i| {
            (
                url(i),
                origins[i].addr.to_string(),
                "refused_tls".to_owned(),
                "unknown_ca".to_owned(),
            )
        })
        .collect();
    assert_eq!(json_rows, want);
    assert_eq!(rotation_bytes(&rot), before, "nothing changed");
    assert_eq!(accepted(&origins), vec![2; N]);

    // A --resolve no URL uses (a port typo) is a usage error naming it; nothing probed.
    let typo = format!("{}:1:127.0.0.1", names[0]);
    let o = activate_with(&rot.dir, args(&["--resolve", &typo])).await;
    assert_eq!(code(&o), 2, "{}{}", stdout(&o), stderr(&o));
    assert_eq!(
        stderr(&o).trim_end(),
        format!(
            "certtool: --resolve {typo}: no --probe or --origins URL is for {}:1; nothing probed",
            names[0]
        )
    );
    assert_eq!(accepted(&origins), vec![2; N], "nothing probed");
    // Origin 5 given again as --probe (same URL and address): probed once, counted once.
    let pin5 = origins[5].resolve(&names[5]);
    let o = activate_with(
        &rot.dir,
        args(&["--probe", &url(5), "--resolve", &pin5, "--json"]),
    )
    .await;
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["probed"], Value::from(N));
    assert_eq!(accepted(&origins), vec![3; N], "every origin probed once");
    assert_eq!(rotation_bytes(&rot), before, "nothing changed");

    // The two reload the new trust.pem: all 20 accept, and the edge switches.
    for &i in &lagging {
        origins[i].policy.reload(&spec(i, rot.trust())).unwrap();
    }
    let o = activate_with(&rot.dir, args(&[])).await;
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).starts_with("rotate activate: done\n  20 origins accept the next certificate\n"),
        "{}",
        stdout(&o)
    );
    assert_eq!(rot.status()["phase"], "activated");
    assert_eq!(accepted(&origins), vec![4; N]);
    assert_ne!(rotation_bytes(&rot), before);
}

/// A bad origins file is one line naming FILE:LINE (or FILE), exit 2, and no origin is
/// probed: each attack against the real binary, with a live origin listed first.
#[tokio::test]
async fn a_bad_origins_file_is_refused_at_its_line_and_nothing_is_probed() {
    let dir = tempdir().unwrap();
    let origin_ca = pki::ca(dir.path(), "origin-ca");
    let server = origin_ca.origin("origin", &["a.example"]);
    let ca = pki::ca(dir.path(), "edge-ca");
    let rot = Rot {
        dir: dir.path().join("rot"),
    };
    assert_eq!(code(&rotate_init(&rot.dir, &ca.dir)), 0);
    rot.ok(&["stage"]);
    let spec = PolicySpec::new(vec![RuleSpec::new(
        "a",
        ["a.example"],
        &server.cert,
        &server.key,
        TrustSpec::new([rot.trust()]),
    )]);
    let origin = TestOrigin::start(&spec, Limits::default()).await;
    let good = format!(
        "https://a.example:{}/ {}\n",
        origin.addr.port(),
        origin.resolve("a.example")
    );
    let before = rotation_bytes(&rot);
    let path = |name: &str| dir.path().join(name);
    let cases: Vec<(&str, Vec<u8>, String)> = vec![
        (
            "garbage.txt",
            format!("{good}garbage\n").into_bytes(),
            ":2: \"garbage\": only https:// URLs can be probed".into(),
        ),
        (
            "fields.txt",
            format!("{good}https://a.example/ a.example:443:127.0.0.1 extra\n").into_bytes(),
            ":2: expected `URL [HOST:PORT:ADDR]`, found 3 fields".into(),
        ),
        (
            "plain.txt",
            format!("{good}http://a.example/\n").into_bytes(),
            ":2: \"http://a.example/\": only https:// URLs can be probed".into(),
        ),
        (
            "dup.txt",
            format!("{good}# again\n{good}").into_bytes(),
            ":3: the same origin as line 1".into(),
        ),
        (
            "binary.txt",
            [good.as_bytes(), b"https://a.example/\xff\n"].concat(),
            ":2: not UTF-8 text (byte 19 of the line)".into(),
        ),
        (
            "escape.txt",
            format!("{good}https://a.example/\x1b]0;owned\x07\n").into_bytes(),
            ":2: a control character (U+001B)".into(),
        ),
        (
            "longline.txt",
            format!("{good}https://a.example/{}\n", "a".repeat(5000)).into_bytes(),
            ":2: line longer than 4096 bytes".into(),
        ),
        (
            "pin.txt",
            format!(
                "https://a.example:{}/ b.example:1:127.0.0.1\n",
                origin.addr.port()
            )
            .into_bytes(),
            format!(
                ":1: the pin is for b.example:1, the URL for a.example:{}",
                origin.addr.port()
            ),
        ),
        (
            "empty.txt",
            Vec::new(),
            ": no origins (one `URL [HOST:PORT:ADDR]` a line)".into(),
        ),
        (
            "comments.txt",
            b"# nothing yet\n\n".to_vec(),
            ": no origins (one `URL [HOST:PORT:ADDR]` a line)".into(),
        ),
        (
            "huge.txt",
            good.repeat(2 << 20 >> 6).into_bytes(),
            ": too large: over".into(),
        ),
    ];
    let mut runs = Vec::new();
    for (name, bytes, want) in &cases {
        std::fs::write(path(name), bytes).unwrap();
        runs.push((path(name), format!("{}{want}", path(name).display())));
    }
    std::fs::create_dir(path("a-dir")).unwrap();
    runs.push((path("a-dir"), format!("{}: ", path("a-dir").display())));
    let fifo = path("fifo");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    runs.push((fifo.clone(), format!("{}: ", fifo.display())));
    for (file, want) in runs {
        let o = activate_with(
            &rot.dir,
            vec![
                "--origins".into(),
                s(&file).into(),
                "--cacert".into(),
                s(&origin_ca.pem()).into(),
            ],
        )
        .await;
        let err = stderr(&o);
        assert_eq!(code(&o), 2, "{}: {err}", file.display());
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.starts_with(&format!("certtool: {want}")),
            "want certtool: {want}…\n got {err}"
        );
        assert!(stdout(&o).is_empty(), "{}", stdout(&o));
    }
    assert_eq!(
        origin.accepted.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "nothing probed"
    );
    assert_eq!(rotation_bytes(&rot), before);
    // The good line alone activates.
    std::fs::write(path("good.txt"), &good).unwrap();
    let o = activate_with(
        &rot.dir,
        vec![
            "--origins".into(),
            s(&path("good.txt")).into(),
            "--cacert".into(),
            s(&origin_ca.pem()).into(),
        ],
    )
    .await;
    assert_eq!(code(&o), 0, "{}", stderr(&o));
}

/// Out of file descriptors on the edge host is no answer from the origins: with 90 of
/// 128 descriptors taken (inherited), 64 probes at once against a silent origin run out;
/// activate says so on one line (exit 2), prints no refusal table, changes nothing.
#[test]
fn running_out_of_file_descriptors_is_a_local_error_not_refusing_origins() {
    let dir = tempdir().unwrap();
    let origin_ca = pki::ca(dir.path(), "origin-ca");
    let ca1 = pki::ca(dir.path(), "edge-ca-1");
    let rot = Rot {
        dir: dir.path().join("rot"),
    };
    assert_eq!(code(&rotate_init(&rot.dir, &ca1.dir)), 0);
    rot.ok(&["stage"]);
    // Connections complete into the backlog and never get an answer: each probe holds
    // its socket until --timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let list: String = (0..64)
        .map(|i| format!("https://localhost:{port}/p{i} localhost:{port}:127.0.0.1\n"))
        .collect();
    let file = dir.path().join("origins.txt");
    std::fs::write(&file, list).unwrap();
    let before = rotation_bytes(&rot);
    let script = format!(
        "ulimit -n 128 && for i in $(seq 10 99); do eval \"exec $i</dev/null\"; done; exec \"$0\" rotate activate --dir '{}' --origins '{}' --cacert '{}' --concurrency 64 --timeout 1",
        rot.dir.display(),
        file.display(),
        origin_ca.pem().display()
    );
    let o = std::process::Command::new("bash")
        .arg("-c")
        .arg(script)
        .arg(aop_e2e::bin("certtool"))
        .output()
        .unwrap();
    assert_eq!(code(&o), 2, "{}{}", stdout(&o), stderr(&o));
    assert_eq!(stdout(&o), "", "no refusal table");
    let err = stderr(&o);
    let line = err
        .lines()
        .find(|l| !l.starts_with("certtool: note:"))
        .unwrap();
    assert!(
        line.starts_with("certtool: ")
            && line.contains(
                " of 64 origins could not be probed: this host ran out of file descriptors ("
            )
            && line.ends_with("; lower --concurrency or raise `ulimit -n`; nothing changed"),
        "{err}"
    );
    assert_eq!(
        err.lines().count(),
        1 + err
            .lines()
            .filter(|l| l.starts_with("certtool: note:"))
            .count()
    );
    assert_eq!(rotation_bytes(&rot), before, "nothing changed");
    drop(silent);
}

/// A real nginx with `ssl_verify_client optional_no_ca` that sends every client whose
/// certificate did not verify to a login page (302): activate must not take the redirect
/// for acceptance. Once nginx trusts the staged certificate's CA (200), it activates.
#[test]
fn activate_refuses_an_nginx_that_redirects_the_unverified_to_a_login_page() {
    if !aop_e2e::have_peer("nginx", "activate_refuses_an_nginx_that_redirects") {
        return;
    }
    let dir = tempdir().unwrap();
    let origin_ca = pki::ca(dir.path(), "origin-ca");
    let server = origin_ca.origin("origin", &["localhost"]);
    let ca1 = pki::ca(dir.path(), "edge-ca-1");
    let ca2 = pki::ca(dir.path(), "edge-ca-2");
    let rot = Rot {
        dir: dir.path().join("rot"),
    };
    assert_eq!(code(&rotate_init(&rot.dir, &ca1.dir)), 0);
    rot.ok(&["stage", "--new-ca", s(&ca2.dir)]);
    let nginx_trusting = |trust: &Path, sub: &str| {
        aop_e2e::nginx::Nginx::start_with(
            &dir.path().join(sub),
            &server.cert,
            &server.key,
            &format!(
                r#"ssl_verify_client optional_no_ca;
        ssl_client_certificate {};
        location / {{
            if ($ssl_client_verify != SUCCESS) {{ return 302 /login; }}
            return 200 "welcome\n";
        }}"#,
                trust.display()
            ),
        )
    };
    let before = rotation_bytes(&rot);
    // Trusts the current CA only: the staged certificate gets the redirect.
    let nginx = nginx_trusting(&ca1.pem(), "nginx-old");
    let url = format!("https://localhost:{}/", nginx.port);
    let pin = format!("localhost:{}:127.0.0.1", nginx.port);
    let args = |url: &str, pin: &str| {
        vec![
            "rotate",
            "activate",
            "--dir",
            s(&rot.dir),
            "--probe",
            url,
            "--resolve",
            pin,
            "--cacert",
            s(&origin_ca.pem()),
        ]
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>()
    };
    let o = certtool(args(&url, &pin));
    assert_eq!(code(&o), 1, "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        "rotate activate: REFUSED: 1 of 1 origins do not accept the next certificate; nothing changed"
    );
    assert_eq!(
        lines[2].split_whitespace().collect::<Vec<_>>(),
        [
            url.as_str(),
            &format!("127.0.0.1:{}", nginx.port),
            "redirected",
            "HTTP",
            "302:",
            "a",
            "redirect",
            "does",
            "not",
            "show",
            "the",
            "certificate",
            "was",
            "accepted"
        ]
    );
    assert_eq!(rotation_bytes(&rot), before, "nothing changed");
    drop(nginx);

    // Reloaded with the new trust.pem (current + next): 200, and the edge switches.
    let nginx = nginx_trusting(&rot.trust(), "nginx-new");
    let url = format!("https://localhost:{}/", nginx.port);
    let pin = format!("localhost:{}:127.0.0.1", nginx.port);
    let o = certtool(args(&url, &pin));
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert_eq!(rot.status()["phase"], "activated");
}
