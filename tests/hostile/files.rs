//! Devices, FIFOs and huge files where a certificate, key or configuration should be.
//!
//! The attack (issue 11, finding 5): a size cap that trusts the file's metadata reads
//! `/dev/zero` until memory runs out (metadata says 0 bytes), and opening a FIFO waits
//! forever for a writer. Every binary must refuse what is not a regular file without
//! reading it, and refuse what is over 4 MiB, with a one-line error naming the file —
//! and finish promptly: each run here is killed and failed after [`DEADLINE`].

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use aop_e2e::{TempDir, bin, code, stderr, stdout, tempdir};

/// Far longer than any of these runs takes (well under a second); only a hang reaches it.
const DEADLINE: Duration = Duration::from_secs(20);

/// Run `program args`, failing the test (and killing the process) if it has not exited
/// within [`DEADLINE`].
fn run_promptly(program: &Path, args: &[&str]) -> Output {
    aop_e2e::run_within(
        Command::new(program).args(args).env("NO_COLOR", "1"),
        &[],
        DEADLINE,
    )
}

fn certtool(args: &[&str]) -> Output {
    run_promptly(&bin("certtool"), args)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `dir/name` made a FIFO (with mkfifo(1)); nothing ever writes to it.
fn fifo(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let made = Command::new("mkfifo").arg(&path).status().unwrap();
    assert!(made.success(), "mkfifo {}", path.display());
    path
}

/// `dir/name` made a symlink to `/dev/zero`.
fn link_to_zero(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    std::os::unix::fs::symlink("/dev/zero", &path).unwrap();
    path
}

/// Exit code 2 and exactly one line on stderr, `want`.
fn assert_refused(o: &Output, want: &str) {
    let err = stderr(o);
    assert_eq!(
        (code(o), err.as_str()),
        (2, format!("{want}\n").as_str()),
        "stdout: {}",
        stdout(o)
    );
}

fn not_a_file(tool: &str, path: &Path, what: &str) -> String {
    format!(
        "{tool}: {}: is {what}, not a regular file; not read",
        path.display()
    )
}

/// A CA (ca.pem, ca.key) under `dir/name`.
fn ca(dir: &Path, name: &str) -> aop_e2e::pki::TestCa {
    aop_e2e::pki::ca(dir, name)
}

#[test]
fn inspect_refuses_a_device_unread() {
    // Before: 9 GB of RSS in 20 s, and counting.
    let o = certtool(&["inspect", "/dev/zero"]);
    assert_refused(
        &o,
        &not_a_file("certtool", Path::new("/dev/zero"), "a character device"),
    );
    let d = tempdir().unwrap();
    let zero = link_to_zero(d.path(), "zero.pem");
    let o = certtool(&["inspect", s(&zero)]);
    assert_refused(&o, &not_a_file("certtool", &zero, "a character device"));
}

#[test]
fn inspect_refuses_a_fifo_without_waiting() {
    // Before: blocked in open(2) until killed.
    let d = tempdir().unwrap();
    let pipe = fifo(d.path(), "cert.pem");
    let o = certtool(&["inspect", s(&pipe)]);
    assert_refused(&o, &not_a_file("certtool", &pipe, "a FIFO"));
}

#[test]
fn inspect_refuses_a_file_over_4_mib() {
    let d = tempdir().unwrap();
    let big = d.path().join("big.pem");
    std::fs::write(&big, vec![b'A'; 5 << 20]).unwrap();
    let o = certtool(&["inspect", s(&big)]);
    assert_refused(
        &o,
        &format!(
            "certtool: {}: too large: over 4 MiB; not read",
            big.display()
        ),
    );
    // A directory is no certificate either, and says so.
    let o = certtool(&["inspect", s(d.path())]);
    assert_refused(&o, &not_a_file("certtool", d.path(), "a directory"));
}

#[test]
fn inventory_reports_and_skips_a_fifo_and_a_link_to_a_device() {
    // Before: hung on the FIFO; without it, read zero.pem to 4.7 GB.
    let d = tempdir().unwrap();
    let ca = ca(d.path(), "ca");
    let scan = d.path().join("scan");
    std::fs::create_dir(&scan).unwrap();
    std::fs::copy(ca.pem(), scan.join("good.pem")).unwrap();
    let pipe = fifo(&scan, "pipe.pem");
    let zero = link_to_zero(&scan, "zero.pem");
    let o = certtool(&["inventory", s(&scan), "--json"]);
    // The one certificate is valid and not due: exit 0 (skipped files are problems to
    // look at, not unreadable certificates).
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let inv: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let certs = inv["certificates"].as_array().unwrap();
    assert_eq!(certs.len(), 1, "{inv:#}");
    assert_eq!(
        certs[0]["places"],
        serde_json::json!([s(&scan.join("good.pem"))])
    );
    assert_eq!(certs[0]["status"], "ok");
    assert_eq!(inv["unreadable"], serde_json::json!([]));
    assert_eq!(
        inv["problems"],
        serde_json::json!([
            {
                "kind": "not-a-regular-file",
                "sha256": null,
                "message": format!("{}: a FIFO, not a regular file; skipped", pipe.display()),
            },
            {
                "kind": "not-a-regular-file",
                "sha256": null,
                "message": format!(
                    "{}: a character device, not a regular file; skipped",
                    zero.display()
                ),
            },
        ])
    );

    // Named on the command line, the same files are unreadable input: exit 2.
    let o = certtool(&["inventory", s(&pipe), s(&zero), "--json"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    let inv: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(
        inv["unreadable"],
        serde_json::json!([
            { "place": s(&pipe), "error": "is a FIFO, not a regular file; not read" },
            { "place": s(&zero), "error": "is a character device, not a regular file; not read" },
        ])
    );
}

/// Every certtool command that reads a file, each given a FIFO or `/dev/zero` for it.
#[test]
fn every_certtool_command_refuses_devices_and_fifos() {
    let d = tempdir().unwrap();
    let ca = ca(d.path(), "ca");
    let leaf = ca.client("edge");
    let ca_pem = ca.pem();
    let pipe = fifo(d.path(), "pipe.pem");
    let zero = Path::new("/dev/zero");
    // A CA directory whose certificate is a FIFO, and one whose key is /dev/zero.
    let ca_fifo = d.path().join("ca-fifo");
    std::fs::create_dir(&ca_fifo).unwrap();
    fifo(&ca_fifo, "ca.pem");
    std::fs::copy(ca.dir.join("ca.key"), ca_fifo.join("ca.key")).unwrap();
    let ca_zero = d.path().join("ca-zero");
    std::fs::create_dir(&ca_zero).unwrap();
    std::fs::copy(ca.pem(), ca_zero.join("ca.pem")).unwrap();
    link_to_zero(&ca_zero, "ca.key");
    // A rotation directory whose manifest is a FIFO.
    let rot = d.path().join("rot");
    std::fs::create_dir(&rot).unwrap();
    let manifest = fifo(&rot, "manifest.json");
    // And one whose lock file is a FIFO (opened for writing, it would wait for a reader).
    let rot_locked = d.path().join("rot-locked");
    std::fs::create_dir(&rot_locked).unwrap();
    let lock = fifo(&rot_locked, ".lock");
    let out = d.path().join("out");

    let fifo_line = not_a_file("certtool", &pipe, "a FIFO");
    let zero_line = not_a_file("certtool", zero, "a character device");
    let cases: Vec<(Vec<&str>, String)> = vec![
        (
            vec!["verify", "--trust", "/dev/zero", "--chain", s(&leaf.cert)],
            zero_line.clone(),
        ),
        (
            vec!["verify", "--trust", s(&ca_pem), "--chain", s(&pipe)],
            fifo_line.clone(),
        ),
        (
            vec![
                "verify",
                "--trust",
                s(&ca_pem),
                "--chain",
                s(&leaf.cert),
                "--crl",
                s(&pipe),
            ],
            fifo_line.clone(),
        ),
        (
            vec![
                "issue",
                "client",
                "--ca",
                s(&ca_fifo),
                "--cn",
                "x",
                "--out",
                s(&out),
            ],
            not_a_file("certtool", &ca_fifo.join("ca.pem"), "a FIFO"),
        ),
        (
            vec![
                "issue",
                "client",
                "--ca",
                s(&ca_zero),
                "--cn",
                "x",
                "--out",
                s(&out),
            ],
            not_a_file("certtool", &ca_zero.join("ca.key"), "a character device"),
        ),
        (
            vec![
                "crl",
                "create",
                "--ca",
                s(&ca.dir),
                "--revoke",
                s(&pipe),
                "--out",
                s(&out),
            ],
            fifo_line.clone(),
        ),
        (
            vec!["rotate", "status", "--dir", s(&rot)],
            not_a_file("certtool", &manifest, "a FIFO"),
        ),
        (
            vec!["rotate", "stage", "--dir", s(&rot_locked)],
            not_a_file("certtool", &lock, "a FIFO"),
        ),
        (
            vec!["rotate", "rollback", "--dir", s(&rot_locked)],
            not_a_file("certtool", &lock, "a FIFO"),
        ),
        (
            vec![
                "cloudflare",
                "payload",
                "--cert",
                s(&leaf.cert),
                "--key",
                "/dev/zero",
                "--out",
                s(&out),
            ],
            zero_line.clone(),
        ),
        (
            vec![
                "cloudflare",
                "payload",
                "--cert",
                s(&pipe),
                "--key",
                s(&leaf.key),
                "--out",
                s(&out),
            ],
            fifo_line.clone(),
        ),
        // probe reads its files before connecting anywhere (port 9: discard, unused).
        (
            vec![
                "probe",
                "https://127.0.0.1:9/",
                "--cacert",
                s(&pipe),
                "--expect",
                "reject",
            ],
            fifo_line.clone(),
        ),
        (
            vec![
                "probe",
                "https://127.0.0.1:9/",
                "--cert",
                s(&leaf.cert),
                "--key",
                "/dev/zero",
                "--cacert",
                s(&ca_pem),
                "--expect",
                "accept",
            ],
            zero_line.clone(),
        ),
    ];
    for (args, want) in cases {
        let o = certtool(&args);
        let err = stderr(&o);
        assert_eq!(code(&o), 2, "certtool {args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "certtool {args:?}: {err}");
        assert!(
            err.trim_end()
                .ends_with(want.trim_start_matches("certtool: ")),
            "certtool {args:?}:\n want {want:?}\n  got {err:?}"
        );
    }
    assert!(!out.exists(), "nothing is written from refused input");
}

/// `listen` and one site whose cert, key and trust are the given paths (relative to the
/// config's directory), forwarding to a port nobody listens on.
fn origin_config(dir: &TempDir, cert: &str, key: &str, trust: &str) -> PathBuf {
    let config = dir.path().join("origin.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\n\n[[site]]\nhostnames = [\"a.example\"]\ncert = \"{cert}\"\nkey = \"{key}\"\ntrust = [\"{trust}\"]\nupstream = \"http://127.0.0.1:9\"\n"
        ),
    )
    .unwrap();
    config
}

#[test]
fn aop_origin_refuses_a_device_or_fifo_for_its_config_and_files() {
    let origin = bin("aop-origin");
    let o = run_promptly(&origin, &["--config", "/dev/zero", "--check"]);
    assert_refused(
        &o,
        &not_a_file("aop-origin", Path::new("/dev/zero"), "a character device"),
    );
    let d = tempdir().unwrap();
    let pipe = fifo(d.path(), "origin.toml");
    let o = run_promptly(&origin, &["--config", s(&pipe)]);
    assert_refused(&o, &not_a_file("aop-origin", &pipe, "a FIFO"));

    let d = tempdir().unwrap();
    let edge_ca = ca(d.path(), "edge-ca");
    let server = ca(d.path(), "origin-ca").origin("origin", &["a.example"]);
    let rel = |p: &Path| {
        p.strip_prefix(d.path())
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned()
    };
    fifo(d.path(), "trust.pem");
    fifo(d.path(), "cert.pem");
    link_to_zero(d.path(), "key.pem");
    let (cert, key, trust) = (rel(&server.cert), rel(&server.key), rel(&edge_ca.pem()));
    // Line 5 is `cert`, 6 `key`, 7 `trust`.
    for (cert, key, trust, line, named, what) in [
        (
            cert.as_str(),
            key.as_str(),
            "trust.pem",
            7,
            "trust",
            "a FIFO",
        ),
        (
            "cert.pem",
            key.as_str(),
            trust.as_str(),
            5,
            "cert",
            "a FIFO",
        ),
        (
            cert.as_str(),
            "key.pem",
            trust.as_str(),
            6,
            "key",
            "a character device",
        ),
    ] {
        let config = origin_config(&d, cert, key, trust);
        let file = d.path().join(match named {
            "trust" => trust,
            "cert" => cert,
            _ => key,
        });
        for check in [true, false] {
            let mut args = vec!["--config", s(&config)];
            if check {
                args.push("--check");
            }
            let o = run_promptly(&origin, &args);
            assert_refused(
                &o,
                &format!(
                    "aop-origin: {}:{line}: key `{named}`: {}",
                    config.display(),
                    not_a_file("", &file, what).trim_start_matches(": ")
                ),
            );
        }
    }
}

#[test]
fn aop_edge_proxy_refuses_a_fifo_for_its_certificate() {
    let d = tempdir().unwrap();
    let ca = ca(d.path(), "ca");
    let leaf = ca.client("edge");
    let pipe = fifo(d.path(), "cert.pem");
    let proxy = bin("aop-edge-proxy");
    let common = [
        "--listen",
        "127.0.0.1:0",
        "--origin",
        "https://a.example",
        "--resolve",
        "a.example:443:127.0.0.1",
    ];
    // (certificate, key, CA file) with one of them not a regular file.
    let roots = ca.pem();
    let (cert, key, roots, fifo) = (s(&leaf.cert), s(&leaf.key), s(&roots), s(&pipe));
    let zero = "/dev/zero";
    for ((cert, key, roots), file, what) in [
        ((fifo, key, roots), pipe.as_path(), "a FIFO"),
        ((cert, zero, roots), Path::new(zero), "a character device"),
        ((cert, key, fifo), pipe.as_path(), "a FIFO"),
    ] {
        let flags = ["--cert", cert, "--key", key, "--cacert", roots];
        let args: Vec<&str> = common.iter().chain(flags.iter()).copied().collect();
        let o = run_promptly(&proxy, &args);
        let err = stderr(&o);
        assert_eq!(code(&o), 2, "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        let want = not_a_file("", file, what);
        assert!(
            err.starts_with("aop-edge-proxy: ")
                && err.trim_end().ends_with(want.trim_start_matches(": ")),
            "want {want:?} in {err:?}"
        );
    }
}
