//! Resumption across a fleet (issue 16, item 4): origins given the same session ticket key
//! files (`session_ticket_keys`, nginx's 80-byte format) resume each other's TLS sessions,
//! a ticket stays bound to the site and the policy that issued it, a resumed client
//! certificate is judged again under the policy in force, and bad key files are refused
//! at start and at reload with a line naming the file and the config line.
//!
//! Real guards (aop-origin in this process, and the binary for exit codes), a real rustls
//! client with a session store, and `openssl s_client -sess_out/-sess_in` as an outside
//! peer (its "Reused"/"New" is the proof of resumption, and its session file is where a
//! ticket is tampered with).

#![allow(clippy::unwrap_used)] // test helpers: a panic is a test failure with a backtrace

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use aop_e2e::guard::Guard;
use aop_e2e::origin::{Seen, TestClient};
use aop_e2e::upstream::Echo;

/// The certificates: the origin's for a.example and b.example, the edge's CA and its
/// client certificate, in a fresh directory.
struct Certs {
    dir: aop_e2e::TempDir,
    origin_ca: aop_e2e::pki::TestCa,
    edge_ca: aop_e2e::pki::TestCa,
    edge: aop_e2e::pki::Leaf,
}

impl Certs {
    fn new() -> Self {
        let dir = aop_e2e::tempdir().unwrap();
        let origin_ca = aop_e2e::pki::ca(dir.path(), "origin-ca");
        origin_ca.origin("origin", &["a.example", "b.example"]);
        let edge_ca = aop_e2e::pki::ca(dir.path(), "edge-ca");
        let edge = edge_ca.client("edge");
        Self {
            dir,
            origin_ca,
            edge_ca,
            edge,
        }
    }
}

/// A fresh ticket key file: 80 random bytes (nginx's `openssl rand 80`), mode 0600.
fn key_file(dir: &Path, name: &str) -> PathBuf {
    let mut bytes = [0u8; 80];
    aop_pki::default_provider()
        .secure_random
        .fill(&mut bytes)
        .unwrap();
    write_key(dir, name, &bytes, 0o600)
}

fn write_key(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

/// Two sites, `a` (a.example) and `b` (b.example), on the certificates of `c`, both
/// trusting the edge's CA (and `a` also `extra_trust`; `a` with `crl` if given), with
/// these ticket keys (none: no `session_ticket_keys` line).
fn config(
    c: &Certs,
    upstream: SocketAddr,
    keys: &[&Path],
    extra_trust: Option<&Path>,
    crl: Option<&Path>,
) -> String {
    let d = c.dir.path().display();
    let q = |p: &Path| format!("{:?}", p.display().to_string());
    let mut out = String::new();
    if !keys.is_empty() {
        let list: Vec<String> = keys.iter().map(|k| q(k)).collect();
        out.push_str(&format!("session_ticket_keys = [{}]\n", list.join(", ")));
    }
    let site = |name: &str, trust: String, crl: String| {
        format!(
            "[[site]]\nname = \"{name}\"\nhostnames = [\"{name}.example\"]\n\
             cert = \"{d}/origin-ca/origin/cert.pem\"\nkey = \"{d}/origin-ca/origin/key.pem\"\n\
             trust = [{trust}]\ncrl = [{crl}]\nupstream = \"http://{upstream}\"\n"
        )
    };
    let edge = format!("\"{d}/edge-ca/ca.pem\"");
    let a_trust = match extra_trust {
        Some(t) => format!("{edge}, {}", q(t)),
        None => edge.clone(),
    };
    out.push_str(&site("a", a_trust, crl.map(q).unwrap_or_default()));
    out.push_str(&site("b", edge, String::new()));
    out
}

/// A guard of its own in `c.dir/name/` (its origin.toml there) on `rest`.
fn origin(c: &Certs, name: &str, rest: &str) -> Guard {
    let dir = c.dir.path().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    Guard::start(&dir, rest)
}

/// Rewrite `guard`'s config to `rest` and reload; waits for "configuration reloaded".
fn reload(guard: &Guard, rest: &str) {
    std::fs::write(
        &guard.config,
        format!("listen = \"127.0.0.1:0\"\nmetrics_listen = \"127.0.0.1:0\"\n{rest}"),
    )
    .unwrap();
    guard.reload();
    guard.wait_log("configuration reloaded");
}

/// GET / at `guard` with SNI `sni`: it must answer 200.
async fn get(client: &TestClient, guard: &Guard, sni: &str) -> Seen {
    let seen = client.get(guard.addr(), sni).await.unwrap();
    assert_eq!(seen.status, 200, "{seen:?}");
    seen
}

/// The guard's next verdict line for site `rule`: its `resumed=` and `verdict=` fields
/// (`SUCCESS`, `FAILED:revoked`).
fn verdict(guard: &Guard, rule: &str) -> (bool, String) {
    let line = guard.wait_log(&format!("rule={rule}"));
    let fields = aop_e2e::logfmt::parse(&line).unwrap();
    let get = |k| aop_e2e::logfmt::field(&fields, k).unwrap_or("").to_owned();
    (get("resumed") == "true", get("verdict"))
}

/// A ticket from origin A resumes at origin B with the same key file; origin C, with
/// another key file, makes a full handshake (and serves); a ticket back from C does not
/// resume at B either. Each resumption re-checks the client's certificate (SUCCESS,
/// resumed=true in B's verdict line).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_from_one_origin_resumes_at_another_with_the_same_key_file() {
    let c = Certs::new();
    let echo = Echo::start().await;
    let shared = key_file(c.dir.path(), "shared.key");
    let other = key_file(c.dir.path(), "other.key");
    let a = origin(&c, "A", &config(&c, echo.addr, &[&shared], None, None));
    let b = origin(&c, "B", &config(&c, echo.addr, &[&shared], None, None));
    let cc = origin(&c, "C", &config(&c, echo.addr, &[&other], None, None));
    let client = TestClient::new(&c.origin_ca.pem(), Some(&c.edge));

    assert!(!get(&client, &a, "a.example").await.resumed);
    assert!(
        get(&client, &b, "a.example").await.resumed,
        "A's ticket at B"
    );
    assert_eq!(verdict(&b, "a"), (true, "SUCCESS".to_owned()));
    assert_eq!(b.metric("aop_handshakes_resumed_total{site=\"a\"}"), 1);
    assert_eq!(a.metric("aop_handshakes_resumed_total{site=\"a\"}"), 0);
    // And back: B's new ticket resumes at A.
    assert!(
        get(&client, &a, "a.example").await.resumed,
        "B's ticket at A"
    );
    // Another key file: a full handshake, served.
    assert!(
        !get(&client, &cc, "a.example").await.resumed,
        "A's ticket at C"
    );
    assert_eq!(verdict(&cc, "a"), (false, "SUCCESS".to_owned()));
    // C's ticket at B: full.
    assert!(
        !get(&client, &b, "a.example").await.resumed,
        "C's ticket at B"
    );
}

/// Without `session_ticket_keys`, as before: a session resumes only at the origin that
/// made it (its stateful cache), never at another, and not after that origin's reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_ticket_keys_a_session_stays_with_its_origin_until_a_reload() {
    let c = Certs::new();
    let echo = Echo::start().await;
    let a = origin(&c, "A", &config(&c, echo.addr, &[], None, None));
    let b = origin(&c, "B", &config(&c, echo.addr, &[], None, None));
    let client = TestClient::new(&c.origin_ca.pem(), Some(&c.edge));
    assert!(!get(&client, &a, "a.example").await.resumed);
    assert!(
        !get(&client, &b, "a.example").await.resumed,
        "A's session at B"
    );
    assert!(
        get(&client, &b, "a.example").await.resumed,
        "B's own session"
    );
    reload(&b, &config(&c, echo.addr, &[], None, None));
    assert!(
        !get(&client, &b, "a.example").await.resumed,
        "after B's reload"
    );
}

/// TLS 1.2 session tickets (RFC 5077) cross the fleet the same way: a session from A
/// resumes at B, not at C.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls12_tickets_resume_across_the_fleet_too() {
    let c = Certs::new();
    let echo = Echo::start().await;
    let shared = key_file(c.dir.path(), "shared.key");
    let other = key_file(c.dir.path(), "other.key");
    let a = origin(&c, "A", &config(&c, echo.addr, &[&shared], None, None));
    let b = origin(&c, "B", &config(&c, echo.addr, &[&shared], None, None));
    let cc = origin(&c, "C", &config(&c, echo.addr, &[&other], None, None));
    let client = TestClient::with_versions(
        &c.origin_ca.pem(),
        Some(&c.edge),
        &[&rustls::version::TLS12],
    );
    assert!(!get(&client, &a, "a.example").await.resumed);
    assert!(
        get(&client, &b, "a.example").await.resumed,
        "A's ticket at B"
    );
    let line = b.wait_log("rule=a");
    assert!(
        line.contains("tls_version=TLSv1.2") && line.contains("resumed=true"),
        "{line}"
    );
    assert!(
        !get(&client, &cc, "a.example").await.resumed,
        "B's ticket at C"
    );
}

/// The same origin, the same key file: a ticket made for site `a` presented at site `b`
/// (a client store that ignores the server name) makes a full handshake under `b`; after
/// B's trust for `a` changes (a second anchor added), a ticket made before does not
/// resume, while a reload that changes nothing of the policy keeps tickets valid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_is_bound_to_its_site_and_policy() {
    let c = Certs::new();
    let echo = Echo::start().await;
    let shared = key_file(c.dir.path(), "shared.key");
    let a = origin(&c, "A", &config(&c, echo.addr, &[&shared], None, None));
    let b = origin(&c, "B", &config(&c, echo.addr, &[&shared], None, None));

    // Site a's ticket offered to site b.
    let blind = TestClient::with_store(
        &c.origin_ca.pem(),
        Some(&c.edge),
        Arc::new(OneName(rustls::client::ClientSessionMemoryCache::new(16))),
    );
    assert!(!get(&blind, &a, "a.example").await.resumed);
    assert!(
        !get(&blind, &b, "b.example").await.resumed,
        "a's ticket at b"
    );
    assert_eq!(verdict(&b, "b"), (false, "SUCCESS".to_owned()));

    let client = TestClient::new(&c.origin_ca.pem(), Some(&c.edge));
    assert!(!get(&client, &a, "a.example").await.resumed);
    // A reload of the same policy: the ticket still resumes at B.
    reload(&b, &config(&c, echo.addr, &[&shared], None, None));
    assert!(
        get(&client, &b, "a.example").await.resumed,
        "after a no-op reload"
    );
    // B's trust for a changes: B's ticket from before does not resume there.
    let other_ca = aop_e2e::pki::ca(c.dir.path(), "other-ca");
    reload(
        &b,
        &config(&c, echo.addr, &[&shared], Some(&other_ca.pem()), None),
    );
    assert!(
        !get(&client, &b, "a.example").await.resumed,
        "after a trust change"
    );
    // Nor does B's new ticket at A, whose trust did not change.
    assert!(
        !get(&client, &a, "a.example").await.resumed,
        "B's new policy at A"
    );
}

/// A resumed certificate is judged again: the edge's certificate revoked by a CRL added
/// at B's reload (CRLs are not part of the ticket's binding) lets the ticket decrypt and
/// the session resume, and the verdict is FAILED:revoked with resumed=true: no request
/// reaches the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_certificate_revoked_after_a_reload_is_refused() {
    let c = Certs::new();
    let echo = Echo::start().await;
    let shared = key_file(c.dir.path(), "shared.key");
    let a = origin(&c, "A", &config(&c, echo.addr, &[&shared], None, None));
    let b = origin(&c, "B", &config(&c, echo.addr, &[&shared], None, None));
    let client = TestClient::new(&c.origin_ca.pem(), Some(&c.edge));
    assert!(!get(&client, &a, "a.example").await.resumed);
    let served = echo.requests.load(std::sync::atomic::Ordering::SeqCst);

    let crl = c.edge_ca.crl(&[&c.edge]);
    reload(&b, &config(&c, echo.addr, &[&shared], None, Some(&crl)));
    let refused = client.get(b.addr(), "a.example").await;
    assert!(refused.is_err(), "{refused:?}");
    assert_eq!(verdict(&b, "a"), (true, "FAILED:revoked".to_owned()));
    assert_eq!(b.metric("aop_handshakes_resumed_total{site=\"a\"}"), 1);
    assert_eq!(
        b.metric("aop_handshakes_total{site=\"a\",verdict=\"FAILED\",reason=\"revoked\"}"),
        1
    );
    assert_eq!(
        echo.requests.load(std::sync::atomic::Ordering::SeqCst),
        served,
        "a request of the revoked client reached the upstream"
    );
}

/// Rotation: with the new key first and the old one second, a ticket made under the old
/// key alone still resumes; with the old key removed, it does not (a full handshake,
/// served).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_previous_key_decrypts_after_rotation_and_a_removed_one_does_not() {
    let c = Certs::new();
    let echo = Echo::start().await;
    let old = key_file(c.dir.path(), "old.key");
    let new = key_file(c.dir.path(), "new.key");
    let a = origin(&c, "A", &config(&c, echo.addr, &[&old], None, None));
    let b = origin(&c, "B", &config(&c, echo.addr, &[&old], None, None));
    let (early, late) = (
        TestClient::new(&c.origin_ca.pem(), Some(&c.edge)),
        TestClient::new(&c.origin_ca.pem(), Some(&c.edge)),
    );
    assert!(!get(&early, &a, "a.example").await.resumed);
    assert!(!get(&late, &a, "a.example").await.resumed);

    reload(&b, &config(&c, echo.addr, &[&new, &old], None, None));
    assert!(get(&early, &b, "a.example").await.resumed, "old key second");
    reload(&b, &config(&c, echo.addr, &[&new], None, None));
    assert!(
        !get(&late, &b, "a.example").await.resumed,
        "old key removed"
    );
    // B's ticket under the new key resumes at B.
    assert!(get(&late, &b, "a.example").await.resumed, "new key");
}

/// Bad key files: wrong length (79, 81, 0 bytes, 1 MiB), a directory, a FIFO, missing,
/// readable by others (0644, 0604, a symbolic link to a 0644 file), the same file listed twice, the same key in another file — each refused by
/// `--check` and at start (exit 2, one line naming the config line and the file), and at
/// a reload (the running keys stay: a ticket made before still resumes). Nothing of the
/// key is printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_key_files_are_refused_at_start_and_at_reload() {
    let c = Certs::new();
    let echo = Echo::start().await;
    let dir = c.dir.path();
    let good = key_file(dir, "good.key");
    let secret = std::fs::read(&good).unwrap();
    let short = write_key(dir, "short.key", &[7u8; 79], 0o600);
    let empty = write_key(dir, "empty.key", &[], 0o600);
    let open = write_key(dir, "open.key", &secret, 0o644);
    let others = write_key(dir, "others.key", &secret, 0o604);
    let copy = write_key(dir, "copy.key", &secret, 0o600);
    let long = write_key(dir, "long.key", &[7u8; 81], 0o600);
    let huge = write_key(dir, "huge.key", &vec![7u8; 1 << 20], 0o600);
    let to_open = dir.join("to_open.key");
    std::os::unix::fs::symlink(&open, &to_open).unwrap();
    let fifo = dir.join("fifo.key");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let folder = dir.join("folder.key");
    std::fs::create_dir(&folder).unwrap();
    let missing = dir.join("missing.key");
    let twice = format!("the same key as {} (listed before it)", good.display());
    let cases: [(&Path, &str); 12] = [
        (
            &short,
            "79 bytes; a session ticket key file holds exactly 80 (or 48)",
        ),
        (
            &empty,
            "0 bytes; a session ticket key file holds exactly 80 (or 48)",
        ),
        (
            &long,
            "81 bytes; a session ticket key file holds exactly 80 (or 48)",
        ),
        (&huge, "too large: over"),
        (&fifo, "not a regular file"),
        (&to_open, "readable by others (mode 0644)"),
        (&open, "readable by others (mode 0644)"),
        (&others, "readable by others (mode 0604)"),
        (&good, &twice),
        (&copy, &twice),
        (&folder, "not a regular file"),
        (&missing, "No such file or directory"),
    ];
    let check_dir = dir.join("check");
    std::fs::create_dir_all(&check_dir).unwrap();
    let toml = check_dir.join("origin.toml");
    for (bad, says) in cases {
        std::fs::write(
            &toml,
            format!(
                "listen = \"127.0.0.1:0\"\n{}",
                config(&c, echo.addr, &[&good, bad], None, None)
            ),
        )
        .unwrap();
        // The second key is on line 2, in the one session_ticket_keys line.
        let want = format!(
            "{}:2: key `session_ticket_keys`: {}: session ticket key: ",
            toml.display(),
            bad.display()
        );
        for args in [&["--check"][..], &[][..]] {
            let o = aop_e2e::run(
                Command::new(aop_e2e::bin("aop-origin"))
                    .arg("--config")
                    .arg(&toml)
                    .args(args),
            );
            let err = aop_e2e::stderr(&o);
            assert_eq!(aop_e2e::code(&o), 2, "{args:?} {bad:?}: {err}");
            assert!(err.contains(&want) && err.contains(says), "{err}");
            assert_eq!(err.trim().lines().count(), 1, "{err}");
            assert!(aop_e2e::stdout(&o).is_empty());
            for chunk in secret.chunks(16) {
                let hex: String = chunk.iter().map(|b| format!("{b:02x}")).collect();
                assert!(!err.contains(&hex));
            }
        }
    }

    // The configuration's own mistakes, at their line.
    let body = config(&c, echo.addr, &[], None, None);
    for (top, says) in [
        (
            "session_ticket_keys = []\n".to_owned(),
            "key `session_ticket_keys`: name at least one key file",
        ),
        (
            format!(
                "session_ticket_keys = [{:?}]\nsession_ticket_lifetime_secs = 0\n",
                good.display().to_string()
            ),
            "key `session_ticket_lifetime_secs`: 0 is out of range: 1 to 604800",
        ),
        (
            "session_ticket_lifetime_secs = 60\n".to_owned(),
            "key `session_ticket_lifetime_secs`: is for session tickets; set session_ticket_keys too",
        ),
    ] {
        std::fs::write(&toml, format!("listen = \"127.0.0.1:0\"\n{top}{body}")).unwrap();
        let line = if top.contains("lifetime_secs = 0") {
            3
        } else {
            2
        };
        let o = aop_e2e::run(
            Command::new(aop_e2e::bin("aop-origin"))
                .arg("--config")
                .arg(&toml)
                .arg("--check"),
        );
        let err = aop_e2e::stderr(&o);
        assert_eq!(aop_e2e::code(&o), 2, "{err}");
        assert!(
            err.contains(&format!("{}:{line}: {says}", toml.display())),
            "{err}"
        );
    }

    // A 48-byte key (nginx's older format) is a key.
    let k48 = write_key(dir, "k48.key", &secret[..48], 0o600);
    std::fs::write(
        &toml,
        format!(
            "listen = \"127.0.0.1:0\"\n{}",
            config(&c, echo.addr, &[&k48, &good], None, None)
        ),
    )
    .unwrap();
    let o = aop_e2e::run(
        Command::new(aop_e2e::bin("aop-origin"))
            .arg("--config")
            .arg(&toml)
            .arg("--check"),
    );
    assert_eq!(aop_e2e::code(&o), 0, "{}", aop_e2e::stderr(&o));

    // At reload: refused, and the running keys stay.
    let a = origin(&c, "A", &config(&c, echo.addr, &[&good], None, None));
    let client = TestClient::new(&c.origin_ca.pem(), Some(&c.edge));
    assert!(!get(&client, &a, "a.example").await.resumed);
    for (bad, says) in cases {
        std::fs::write(
            &a.config,
            format!(
                "listen = \"127.0.0.1:0\"\nmetrics_listen = \"127.0.0.1:0\"\n{}",
                config(&c, echo.addr, &[&good, bad], None, None)
            ),
        )
        .unwrap();
        a.reload();
        let line = a.wait_log("reload refused");
        assert!(
            line.contains("session_ticket_keys") && line.contains(says),
            "{line}"
        );
        assert!(get(&client, &a, "a.example").await.resumed, "after {bad:?}");
    }
}

/// Kubernetes mounts a secret 0440 under `fsGroup` whatever `defaultMode` says: a ticket
/// key readable by its group (not others) is a warning naming the line and the fix, as a
/// group-readable TLS private key is, not a refusal: `--check` exits 0, and the origin
/// starts and resumes with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_readable_key_is_a_warning_not_a_refusal() {
    use std::os::unix::fs::PermissionsExt as _;
    let c = Certs::new();
    let echo = Echo::start().await;
    let dir = c.dir.path();
    let good = key_file(dir, "good.key");
    let group = key_file(dir, "group.key");
    std::fs::set_permissions(&group, std::fs::Permissions::from_mode(0o440)).unwrap();
    let link = dir.join("link.key");
    std::os::unix::fs::symlink(&group, &link).unwrap();
    let check_dir = dir.join("check");
    std::fs::create_dir_all(&check_dir).unwrap();
    let toml = check_dir.join("origin.toml");
    for key in [&group, &link] {
        std::fs::write(
            &toml,
            format!(
                "listen = \"127.0.0.1:0\"\n{}",
                config(&c, echo.addr, &[&good, key], None, None)
            ),
        )
        .unwrap();
        let o = aop_e2e::run(
            Command::new(aop_e2e::bin("aop-origin"))
                .arg("--config")
                .arg(&toml)
                .arg("--check"),
        );
        let out = aop_e2e::stdout(&o);
        assert_eq!(aop_e2e::code(&o), 0, "{}{out}", aop_e2e::stderr(&o));
        let warning = format!(
            "{}:2: key `session_ticket_keys`: {} is readable by its group (mode 0440): whoever is in that group can decrypt every session it protects; run chmod 600 {} (Kubernetes: fsGroup makes secret files 0440 whatever defaultMode says; ",
            toml.display(),
            key.display(),
            key.display()
        );
        assert!(out.contains(&warning), "{out}");
        assert!(
            !out.contains(&format!(
                "{}:2: key `session_ticket_keys`: {} ",
                toml.display(),
                good.display()
            )),
            "{out}"
        );
    }
    // It serves: a ticket from an origin whose first key is the group-readable one
    // resumes at another with the same files.
    let keys: [&Path; 2] = [&group, &good];
    let a = origin(&c, "A", &config(&c, echo.addr, &keys, None, None));
    let b = origin(&c, "B", &config(&c, echo.addr, &keys, None, None));
    let client = TestClient::new(&c.origin_ca.pem(), Some(&c.edge));
    assert!(!get(&client, &a, "a.example").await.resumed);
    assert!(get(&client, &b, "a.example").await.resumed);
}

/// The site's name is in the ticket key, not only the SNI rustls compares: origin B serves
/// the same SNI (a.example) under another site name (`z`), same certificate, same trust,
/// same key file. A's ticket must not resume there (a full handshake, served). The other
/// tests change the SNI too, which rustls's own check refuses whatever the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_sni_under_another_site_name_does_not_resume() {
    let c = Certs::new();
    let echo = Echo::start().await;
    let shared = key_file(c.dir.path(), "shared.key");
    let a_conf = config(&c, echo.addr, &[&shared], None, None);
    // B: site `a` renamed `z`, still serving a.example; site b as it was.
    let z_conf = a_conf.replacen("name = \"a\"", "name = \"z\"", 1);
    assert_ne!(a_conf, z_conf);
    let a = origin(&c, "A", &a_conf);
    let b = origin(&c, "B", &z_conf);
    let client = TestClient::new(&c.origin_ca.pem(), Some(&c.edge));
    assert!(!get(&client, &a, "a.example").await.resumed);
    // Control: the same configuration as A resumes (a third origin).
    let a2 = origin(&c, "A2", &a_conf);
    let control = TestClient::new(&c.origin_ca.pem(), Some(&c.edge));
    assert!(!get(&control, &a, "a.example").await.resumed);
    assert!(get(&control, &a2, "a.example").await.resumed, "control");
    assert!(
        !get(&client, &b, "a.example").await.resumed,
        "a's ticket resumed under site z"
    );
    assert_eq!(verdict(&b, "z"), (false, "SUCCESS".to_owned()));
}

/// `openssl s_client` as the outside peer: its session from A is "Reused" at B (same key
/// file); the same session with bytes of its ticket flipped makes a full handshake
/// ("New"), served, at both, and the guard carries on.
#[test]
fn openssl_resumes_across_origins_and_a_tampered_ticket_gets_a_full_handshake() {
    if !aop_e2e::have_peer(
        "openssl",
        "openssl_resumes_across_origins_and_a_tampered_ticket_gets_a_full_handshake",
    ) {
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let echo = rt.block_on(Echo::start());
    let c = Certs::new();
    let shared = key_file(c.dir.path(), "shared.key");
    let a = origin(&c, "A", &config(&c, echo.addr, &[&shared], None, None));
    let b = origin(&c, "B", &config(&c, echo.addr, &[&shared], None, None));
    let dir = c.dir.path();
    let sess = dir.join("sess.pem");
    let s_client = |addr: SocketAddr, args: &[&str]| -> String {
        let mut cmd = Command::new("openssl");
        cmd.args(["s_client", "-connect"])
            .arg(addr.to_string())
            .args(["-servername", "a.example", "-cert"])
            .arg(&c.edge.cert)
            .arg("-key")
            .arg(&c.edge.key)
            .arg("-CAfile")
            .arg(c.origin_ca.pem())
            .args(["-ign_eof", "-tls1_3"])
            .args(args);
        let o = aop_e2e::run_within(
            &mut cmd,
            b"GET / HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n",
            Duration::from_secs(30),
        );
        let out = aop_e2e::stdout(&o);
        assert!(
            out.contains("HTTP/1.1 200"),
            "{out}\n{}",
            aop_e2e::stderr(&o)
        );
        out
    };
    let sess_s = sess.to_str().unwrap();
    let first = s_client(a.addr(), &["-sess_out", sess_s]);
    assert!(first.contains("\nNew, TLSv1.3"), "{first}");
    let at_b = s_client(b.addr(), &["-sess_in", sess_s]);
    assert!(at_b.contains("\nReused, TLSv1.3"), "{at_b}");

    // The same session file, its ticket's bytes flipped.
    s_client(a.addr(), &["-sess_out", sess_s]);
    let tampered = dir.join("tampered.pem");
    for (i, at) in [0usize, 20, 40, 80, usize::MAX].into_iter().enumerate() {
        std::fs::write(&tampered, flip_ticket(&std::fs::read(&sess).unwrap(), at)).unwrap();
        for g in [a.addr(), b.addr()] {
            let out = s_client(g, &["-sess_in", tampered.to_str().unwrap()]);
            assert!(out.contains("\nNew, TLSv1.3"), "flip {i}: {out}");
        }
    }
    // Untampered, still resumes; and replayed by 8 clients at once, at both origins:
    // every one resumes (a ticket is not single-use; each resumption is a fresh key
    // exchange, psk_dhe_ke) and each is re-checked (8 SUCCESS resumed=true lines at B).
    assert!(s_client(b.addr(), &["-sess_in", sess_s]).contains("\nReused, TLSv1.3"));
    let before = b.lines_with("resumed=true").len();
    std::thread::scope(|scope| {
        let runs: Vec<_> = (0..8)
            .map(|i| {
                let g = if i % 2 == 0 { a.addr() } else { b.addr() };
                let s_client = &s_client;
                scope.spawn(move || s_client(g, &["-sess_in", sess_s]))
            })
            .collect();
        for r in runs {
            let out = r.join().unwrap();
            assert!(out.contains("\nReused, TLSv1.3"), "{out}");
        }
    });
    aop_e2e::wait_until(
        "4 more resumed verdicts at B",
        Duration::from_secs(10),
        || (b.lines_with("resumed=true").len() >= before + 4).then_some(()),
    );
    assert!(
        b.lines_with("resumed=true")
            .iter()
            .all(|l| l.contains("verdict=SUCCESS"))
    );
}

/// An OpenSSL session file (PEM `SSL SESSION PARAMETERS`) with one byte of its ticket
/// flipped: the byte `at` (the last byte for `usize::MAX`) of the octet string under tag
/// [10], tlsext_tick.
fn flip_ticket(pem: &[u8], at: usize) -> Vec<u8> {
    let parsed = ::pem::parse(pem).unwrap();
    let mut der = parsed.contents().to_vec();
    // The outer SEQUENCE's content, then its elements in turn.
    let (mut pos, end) = header(&der, 0);
    while pos < end {
        let (content, next) = header(&der, pos);
        if der[pos] == 0xAA {
            // [10] EXPLICIT OCTET STRING
            let (ticket, ticket_end) = header(&der, content);
            assert_eq!(der[content], 0x04);
            let len = ticket_end - ticket;
            der[ticket + at.min(len - 1)] ^= 0x5A;
            return ::pem::encode(&::pem::Pem::new(parsed.tag(), der)).into_bytes();
        }
        pos = next;
    }
    panic!("no ticket in the session file");
}

/// The DER element at `pos`: (where its content starts, where it ends).
fn header(der: &[u8], pos: usize) -> (usize, usize) {
    let first = der[pos + 1];
    let (len, start) = if first & 0x80 == 0 {
        (usize::from(first), pos + 2)
    } else {
        let n = usize::from(first & 0x7F);
        let len = der[pos + 2..pos + 2 + n]
            .iter()
            .fold(0usize, |acc, b| acc << 8 | usize::from(*b));
        (len, pos + 2 + n)
    };
    (start, start + len)
}

/// A client session store that files every session under one name, so a ticket made for
/// one site is offered to another (a client mixing up its stores, or an attacker
/// replaying a ticket at another site).
#[derive(Debug)]
struct OneName(rustls::client::ClientSessionMemoryCache);

fn one() -> rustls::pki_types::ServerName<'static> {
    rustls::pki_types::ServerName::try_from("fleet.invalid").unwrap()
}

impl rustls::client::ClientSessionStore for OneName {
    fn set_kx_hint(&self, _: rustls::pki_types::ServerName<'static>, group: rustls::NamedGroup) {
        self.0.set_kx_hint(one(), group);
    }

    fn kx_hint(&self, _: &rustls::pki_types::ServerName<'_>) -> Option<rustls::NamedGroup> {
        self.0.kx_hint(&one())
    }

    fn set_tls12_session(
        &self,
        _: rustls::pki_types::ServerName<'static>,
        value: rustls::client::Tls12ClientSessionValue,
    ) {
        self.0.set_tls12_session(one(), value);
    }

    fn tls12_session(
        &self,
        _: &rustls::pki_types::ServerName<'_>,
    ) -> Option<rustls::client::Tls12ClientSessionValue> {
        self.0.tls12_session(&one())
    }

    fn remove_tls12_session(&self, _: &rustls::pki_types::ServerName<'static>) {
        self.0.remove_tls12_session(&one());
    }

    fn insert_tls13_ticket(
        &self,
        _: rustls::pki_types::ServerName<'static>,
        value: rustls::client::Tls13ClientSessionValue,
    ) {
        self.0.insert_tls13_ticket(one(), value);
    }

    fn take_tls13_ticket(
        &self,
        _: &rustls::pki_types::ServerName<'static>,
    ) -> Option<rustls::client::Tls13ClientSessionValue> {
        self.0.take_tls13_ticket(&one())
    }
}
