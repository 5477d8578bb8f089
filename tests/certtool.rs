//! certtool end to end: `ca create`, `issue client|origin` and `inspect`, checked with
//! OpenSSL as a second, independent verifier. What belongs here: anything that runs the
//! certtool binary. Library-level behaviour is tested beside the code in aop-pki.

#![allow(clippy::unwrap_used)] // test helpers: a panic is a test failure with a backtrace

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use aop_e2e::{certtool, code, have_peer, mode, run, stderr, stdout, tempdir, workspace_root};
use serde_json::Value;

const KEY_TYPES: [&str; 5] = ["ecdsa-p256", "ecdsa-p384", "ed25519", "rsa2048", "rsa4096"];

fn cloudflare(name: &str) -> PathBuf {
    workspace_root().join("testdata/cloudflare").join(name)
}

const CLOUDFLARE: [&str; 4] = [
    "authenticated_origin_pull_ca.pem",
    "origin_pull_ca_2015.pem",
    "origin_ca_rsa_root_2019.pem",
    "origin_ca_ecc_root_2016.pem",
];

fn ok(args: &[&str]) -> String {
    let o = certtool(args);
    assert_eq!(code(&o), 0, "certtool {args:?} failed: {}", stderr(&o));
    stdout(&o)
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 temp path")
}

/// `issue client --ca CA --cn CN --out OUT`.
fn issue_client<'a>(ca: &'a Path, cn: &'a str, out: &'a Path) -> Vec<&'a str> {
    vec![
        "issue",
        "client",
        "--ca",
        p(ca),
        "--cn",
        cn,
        "--out",
        p(out),
    ]
}

fn openssl(args: &[&str]) -> std::process::Output {
    run(Command::new("openssl").args(args))
}

/// `openssl verify -purpose P`: (exit code, combined output).
fn openssl_verify(ca: &Path, purpose: &str, cert: &Path) -> (i32, String) {
    let o = openssl(&["verify", "-CAfile", p(ca), "-purpose", purpose, p(cert)]);
    (code(&o), format!("{}{}", stdout(&o), stderr(&o)))
}

fn inspect_json(path: &Path) -> Value {
    let out = ok(&["inspect", "--json", p(path)]);
    serde_json::from_str(&out).expect("inspect --json is JSON")
}

#[test]
fn every_key_type_is_accepted_by_openssl_for_its_purpose_and_refused_for_the_other() {
    if !have_peer("openssl", "every_key_type_is_accepted_by_openssl") {
        return;
    }
    let dir = tempdir().unwrap();
    for kt in KEY_TYPES {
        let ca = dir.path().join(kt).join("ca");
        let edge = dir.path().join(kt).join("edge");
        let origin = dir.path().join(kt).join("origin");
        ok(&[
            "ca",
            "create",
            "--name",
            &format!("{kt} CA"),
            "--out",
            p(&ca),
            "--key-type",
            kt,
        ]);
        ok(&[
            "issue",
            "client",
            "--ca",
            p(&ca),
            "--cn",
            "edge",
            "--san",
            "spiffe://cdn.example/edge",
            "--out",
            p(&edge),
            "--key-type",
            kt,
            "--days",
            "30",
        ]);
        ok(&[
            "issue",
            "origin",
            "--ca",
            p(&ca),
            "--hostname",
            "example.com",
            "--hostname",
            "*.example.com",
            "--out",
            p(&origin),
            "--key-type",
            kt,
            "--days",
            "90",
        ]);

        // Keys are private from the start; certificates are readable.
        assert_eq!(mode(&ca.join("ca.key")), 0o600, "{kt}");
        assert_eq!(mode(&edge.join("key.pem")), 0o600, "{kt}");
        assert_eq!(mode(&origin.join("key.pem")), 0o600, "{kt}");
        assert_eq!(mode(&ca.join("ca.pem")), 0o644, "{kt}");
        assert_eq!(mode(&edge.join("cert.pem")), 0o644, "{kt}");

        // OpenSSL parses each certificate and shows the extensions we promise.
        let text = |f: &Path| {
            let o = openssl(&["x509", "-in", p(f), "-noout", "-text"]);
            assert_eq!(
                code(&o),
                0,
                "{kt}: openssl x509 -text {}: {}",
                f.display(),
                stderr(&o)
            );
            stdout(&o)
        };
        let ca_text = text(&ca.join("ca.pem"));
        assert!(ca_text.contains("CA:TRUE, pathlen:0"), "{kt}: {ca_text}");
        assert!(
            ca_text.contains("Certificate Sign, CRL Sign"),
            "{kt}: {ca_text}"
        );
        assert!(
            ca_text.contains("Subject Key Identifier"),
            "{kt}: {ca_text}"
        );
        let edge_text = text(&edge.join("cert.pem"));
        assert!(
            edge_text.contains("TLS Web Client Authentication"),
            "{kt}: {edge_text}"
        );
        assert!(
            !edge_text.contains("TLS Web Server Authentication"),
            "{kt}: {edge_text}"
        );
        assert!(
            edge_text.contains("URI:spiffe://cdn.example/edge"),
            "{kt}: {edge_text}"
        );
        assert!(
            edge_text.contains("Authority Key Identifier"),
            "{kt}: {edge_text}"
        );
        assert!(
            edge_text.contains("Subject Key Identifier"),
            "{kt}: {edge_text}"
        );
        assert!(edge_text.contains("CA:FALSE"), "{kt}: {edge_text}");
        let origin_text = text(&origin.join("cert.pem"));
        assert!(
            origin_text.contains("TLS Web Server Authentication"),
            "{kt}: {origin_text}"
        );
        assert!(
            !origin_text.contains("TLS Web Client Authentication"),
            "{kt}: {origin_text}"
        );
        assert!(
            origin_text.contains("DNS:example.com, DNS:*.example.com"),
            "{kt}: {origin_text}"
        );

        // Accepted for its own purpose, refused for the other one.
        let ca_pem = ca.join("ca.pem");
        let (c, out) = openssl_verify(&ca_pem, "sslclient", &edge.join("cert.pem"));
        assert_eq!(c, 0, "{kt}: edge as client: {out}");
        let (c, out) = openssl_verify(&ca_pem, "sslserver", &edge.join("cert.pem"));
        assert_ne!(c, 0, "{kt}: edge must not verify as a server: {out}");
        assert!(
            out.contains("unsuitable certificate purpose"),
            "{kt}: {out}"
        );
        let (c, out) = openssl_verify(&ca_pem, "sslserver", &origin.join("cert.pem"));
        assert_eq!(c, 0, "{kt}: origin as server: {out}");
        let (c, out) = openssl_verify(&ca_pem, "sslclient", &origin.join("cert.pem"));
        assert_ne!(c, 0, "{kt}: origin must not verify as a client: {out}");
        assert!(
            out.contains("unsuitable certificate purpose"),
            "{kt}: {out}"
        );

        // A foreign CA verifies neither.
        let other = dir.path().join(kt).join("other-ca");
        ok(&["ca", "create", "--name", "other", "--out", p(&other)]);
        let (c, _) = openssl_verify(&other.join("ca.pem"), "sslclient", &edge.join("cert.pem"));
        assert_ne!(c, 0, "{kt}: a foreign CA must not verify the edge");

        // cert.pem holds the leaf, then its CA; the key belongs to the leaf.
        let chain = inspect_json(&edge.join("cert.pem"));
        let certs = chain["files"][0]["certificates"].as_array().unwrap();
        assert_eq!(certs.len(), 2, "{kt}");
        assert_eq!(certs[0]["role"], "client");
        assert_eq!(certs[1]["role"], "ca");
        assert_eq!(
            certs[1]["sha256"],
            inspect_json(&ca_pem)["files"][0]["certificates"][0]["sha256"]
        );
        let pub_from_key = openssl(&["pkey", "-in", p(&edge.join("key.pem")), "-pubout"]);
        let pub_from_cert = openssl(&[
            "x509",
            "-in",
            p(&edge.join("cert.pem")),
            "-noout",
            "-pubkey",
        ]);
        assert_eq!(code(&pub_from_key), 0, "{kt}: {}", stderr(&pub_from_key));
        assert_eq!(
            stdout(&pub_from_key),
            stdout(&pub_from_cert),
            "{kt}: key does not match cert"
        );
    }
}

/// Normalise `openssl x509 -fingerprint -sha256` output to lowercase hex.
fn openssl_fingerprint(cert: &Path) -> String {
    let o = openssl(&["x509", "-in", p(cert), "-noout", "-fingerprint", "-sha256"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = stdout(&o);
    let hex = out.trim().rsplit('=').next().unwrap();
    hex.replace(':', "").to_lowercase()
}

/// SHA-256 of the SubjectPublicKeyInfo, by OpenSSL.
fn openssl_spki_pin(cert: &Path, dir: &Path) -> String {
    let der = dir.join("spki.der");
    let pubkey = openssl(&["x509", "-in", p(cert), "-noout", "-pubkey"]);
    let pem = dir.join("pub.pem");
    fs::write(&pem, &pubkey.stdout).unwrap();
    let o = openssl(&[
        "pkey",
        "-pubin",
        "-in",
        p(&pem),
        "-outform",
        "DER",
        "-out",
        p(&der),
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = openssl(&["dgst", "-sha256", "-r", p(&der)]);
    stdout(&o).split_whitespace().next().unwrap().to_owned()
}

fn openssl_field(cert: &Path, flag: &str) -> String {
    let o = openssl(&[
        "x509",
        "-in",
        p(cert),
        "-noout",
        flag,
        "-nameopt",
        "RFC2253",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = stdout(&o);
    out.trim().split_once('=').unwrap().1.to_owned()
}

#[test]
fn inspect_agrees_with_openssl_on_fingerprints_names_and_serials() {
    if !have_peer("openssl", "inspect_agrees_with_openssl") {
        return;
    }
    let dir = tempdir().unwrap();
    let ca = dir.path().join("ca");
    let edge = dir.path().join("edge");
    ok(&[
        "ca",
        "create",
        "--name",
        "Pin, Test \"CA\"",
        "--out",
        p(&ca),
        "--key-type",
        "rsa2048",
    ]);
    ok(&issue_client(&ca, "edge", &edge));
    // The edge's own certificate, alone, for openssl (which reads the first PEM block).
    let mut files: Vec<PathBuf> = CLOUDFLARE.iter().map(|n| cloudflare(n)).collect();
    files.push(ca.join("ca.pem"));
    files.push(edge.join("cert.pem"));
    for f in &files {
        let json = inspect_json(f);
        let c = &json["files"][0]["certificates"][0];
        assert_eq!(
            c["sha256"].as_str().unwrap(),
            openssl_fingerprint(f),
            "{}",
            f.display()
        );
        assert_eq!(
            c["spki_sha256"].as_str().unwrap(),
            openssl_spki_pin(f, dir.path()),
            "{}",
            f.display()
        );
        assert_eq!(
            c["subject"].as_str().unwrap(),
            openssl_field(f, "-subject"),
            "{}",
            f.display()
        );
        assert_eq!(
            c["issuer"].as_str().unwrap(),
            openssl_field(f, "-issuer"),
            "{}",
            f.display()
        );
        assert_eq!(
            c["serial"].as_str().unwrap(),
            openssl_field(f, "-serial").to_lowercase(),
            "{}",
            f.display()
        );
    }
    // The human output prints the same pin.
    let human = ok(&["inspect", p(&cloudflare(CLOUDFLARE[0]))]);
    assert!(
        human.contains(&openssl_fingerprint(&cloudflare(CLOUDFLARE[0]))),
        "{human}"
    );
}

#[test]
fn inspect_reads_every_cloudflare_certificate() {
    // No outside peer: the expected values come from testdata/cloudflare/README.md.
    let mut args = vec!["inspect".to_owned(), "--json".to_owned()];
    args.extend(
        CLOUDFLARE
            .iter()
            .map(|n| cloudflare(n).display().to_string()),
    );
    let o = certtool(&args);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let json: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let files = json["files"].as_array().unwrap();
    assert_eq!(files.len(), 4);
    let cert = |i: usize| &files[i]["certificates"][0];

    // The shared origin-pull CA and its 2015 predecessor: same key, same serial.
    assert!(cert(0)["sha256"].as_str().unwrap().starts_with("9a1ac2b4"));
    assert!(cert(1)["sha256"].as_str().unwrap().starts_with("062465ee"));
    assert_eq!(cert(0)["spki_sha256"], cert(1)["spki_sha256"]);
    assert!(
        cert(0)["spki_sha256"]
            .as_str()
            .unwrap()
            .starts_with("e2ef9fe8")
    );
    assert_eq!(cert(0)["serial"], cert(1)["serial"]);
    assert_ne!(cert(0)["sha256"], cert(1)["sha256"]);
    assert_eq!(cert(0)["key"]["algorithm"], "RSA");
    assert_eq!(cert(0)["key"]["bits"], 4096);
    assert_eq!(cert(0)["signature_algorithm"], "sha512WithRSAEncryption");
    assert_eq!(cert(0)["path_len"], 2);
    assert_eq!(cert(0)["role"], "ca");
    assert_eq!(cert(0)["not_after"], "2029-11-01T17:00:00Z");
    // `inspect` judges validity as of now (it has no --at): what it says follows the
    // clock, so this keeps passing after 2029-11-01 (`inventory --at` pins the time in
    // tests/lifecycle.rs).
    let expired = time::OffsetDateTime::now_utc() >= time::macros::datetime!(2029-11-01 17:00 UTC);
    assert_eq!(
        cert(0)["validity"],
        if expired { "expired" } else { "valid" }
    );
    // The 2015 certificate has the unusual AlgorithmIdentifier (no NULL parameters): read, and expired.
    assert_eq!(cert(1)["signature_algorithm"], "sha512WithRSAEncryption");
    assert_eq!(cert(1)["validity"], "expired");
    assert!(cert(1)["days_left"].as_i64().unwrap() < 0);
    assert!(cert(2)["sha256"].as_str().unwrap().starts_with("d3c7e85c"));
    assert_eq!(cert(2)["key"]["bits"], 2048);
    assert!(cert(3)["sha256"].as_str().unwrap().starts_with("b8f86d0d"));
    assert_eq!(cert(3)["key"]["algorithm"], "ECDSA P-256");
    assert_eq!(cert(3)["validity"], "expired");
    assert!(json["errors"].as_array().unwrap().is_empty());
}

#[test]
fn inspect_reads_der_and_bundles() {
    if !have_peer("openssl", "inspect_reads_der_and_bundles") {
        return;
    }
    let dir = tempdir().unwrap();
    let der = dir.path().join("ca.der");
    let o = openssl(&[
        "x509",
        "-in",
        p(&cloudflare(CLOUDFLARE[2])),
        "-outform",
        "DER",
        "-out",
        p(&der),
    ]);
    assert_eq!(code(&o), 0);
    let j = inspect_json(&der);
    assert_eq!(
        j["files"][0]["certificates"][0]["sha256"].as_str().unwrap(),
        openssl_fingerprint(&cloudflare(CLOUDFLARE[2]))
    );

    let bundle = dir.path().join("bundle.pem");
    let text = format!(
        "{}{}",
        fs::read_to_string(cloudflare(CLOUDFLARE[0])).unwrap(),
        fs::read_to_string(cloudflare(CLOUDFLARE[1])).unwrap()
    );
    fs::write(&bundle, text).unwrap();
    let j = inspect_json(&bundle);
    assert_eq!(j["files"][0]["certificates"].as_array().unwrap().len(), 2);
    let human = ok(&["inspect", p(&bundle)]);
    assert!(
        human.contains("bundle.pem [1/2]") && human.contains("bundle.pem [2/2]"),
        "{human}"
    );
}

#[test]
fn bad_input_exits_2_with_one_line_naming_the_file() {
    let bad = workspace_root().join("testdata/bad");
    let cases = [
        ("empty.pem", "empty file"),
        ("whitespace.pem", "empty file"),
        (
            "truncated.pem",
            "malformed PEM: truncated: the CERTIFICATE block has no END line",
        ),
        (
            "bad-base64.pem",
            "malformed PEM: a block is not valid base64",
        ),
        (
            "random.der",
            "not PEM and not a DER certificate (binary data that is not a valid X.509 structure",
        ),
        (
            "text.txt",
            "not PEM and not a DER certificate (text without a -----BEGIN line)",
        ),
        (
            "private-key.pem",
            "expected a certificate, found a private key (PRIVATE KEY)",
        ),
        (
            "csr.pem",
            "expected a certificate, found a certificate signing request (CERTIFICATE REQUEST)",
        ),
        (
            "public-key.pem",
            "expected a certificate, found a public key (PUBLIC KEY)",
        ),
        (
            "does-not-exist.pem",
            "cannot read: No such file or directory",
        ),
    ];
    for (name, expect) in cases {
        let path = bad.join(name);
        let o = certtool(["inspect".as_ref(), path.as_os_str()]);
        assert_eq!(code(&o), 2, "{name}: {}", stderr(&o));
        let err = stderr(&o);
        assert_eq!(err.lines().count(), 1, "{name}: one line, got {err:?}");
        let want = format!("certtool: {}: {expect}", path.display());
        assert!(err.starts_with(&want), "{name}: want {want:?}, got {err:?}");
        assert!(stdout(&o).is_empty(), "{name}: nothing on stdout");
    }

    // One bad file among good ones: the good ones are still reported, exit is still 2.
    let o = certtool([
        "inspect".as_ref(),
        cloudflare(CLOUDFLARE[0]).as_os_str(),
        bad.join("csr.pem").as_os_str(),
        "--json".as_ref(),
    ]);
    assert_eq!(code(&o), 2);
    let j: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(j["files"].as_array().unwrap().len(), 1);
    assert_eq!(
        j["errors"][0]["path"],
        bad.join("csr.pem").display().to_string()
    );
    assert_eq!(stderr(&o).lines().count(), 1);
}

#[test]
fn overwrite_needs_force_and_leaves_the_old_bytes() {
    let dir = tempdir().unwrap();
    let ca = dir.path().join("ca");
    ok(&["ca", "create", "--name", "one", "--out", p(&ca)]);
    let (pem, key) = (
        fs::read(ca.join("ca.pem")).unwrap(),
        fs::read(ca.join("ca.key")).unwrap(),
    );

    let o = certtool(["ca", "create", "--name", "two", "--out", p(&ca)]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert_eq!(
        stderr(&o).trim_end(),
        format!(
            "certtool: {}: already exists; not overwritten (pass --force to replace it)",
            ca.join("ca.key").display()
        )
    );
    assert_eq!(
        fs::read(ca.join("ca.pem")).unwrap(),
        pem,
        "ca.pem must be untouched"
    );
    assert_eq!(
        fs::read(ca.join("ca.key")).unwrap(),
        key,
        "ca.key must be untouched"
    );

    // Only one of the pair exists: still nothing is written.
    fs::remove_file(ca.join("ca.key")).unwrap();
    let o = certtool(["ca", "create", "--name", "two", "--out", p(&ca)]);
    assert_eq!(code(&o), 1);
    assert!(!ca.join("ca.key").exists(), "no half-written pair");
    assert_eq!(fs::read(ca.join("ca.pem")).unwrap(), pem);
    fs::write(ca.join("ca.key"), &key).unwrap();

    ok(&["ca", "create", "--name", "two", "--out", p(&ca), "--force"]);
    assert_ne!(fs::read(ca.join("ca.pem")).unwrap(), pem);
    assert_ne!(fs::read(ca.join("ca.key")).unwrap(), key);
    assert_eq!(mode(&ca.join("ca.key")), 0o600);
    let j = inspect_json(&ca.join("ca.pem"));
    assert_eq!(j["files"][0]["certificates"][0]["subject"], "CN=two");

    // The same for a leaf.
    let edge = dir.path().join("edge");
    ok(&issue_client(&ca, "edge", &edge));
    let before = fs::read(edge.join("cert.pem")).unwrap();
    let o = certtool(issue_client(&ca, "edge2", &edge));
    assert_eq!(code(&o), 1);
    assert_eq!(fs::read(edge.join("cert.pem")).unwrap(), before);
    ok(&[issue_client(&ca, "edge2", &edge), vec!["--force"]].concat());
    assert_ne!(fs::read(edge.join("cert.pem")).unwrap(), before);
    // No temporary files are left behind.
    let names: Vec<_> = fs::read_dir(&edge)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn issuing_refuses_bad_cas_and_bad_requests_with_exit_2() {
    let dir = tempdir().unwrap();
    let ca = dir.path().join("ca");
    ok(&["ca", "create", "--name", "ca", "--out", p(&ca)]);
    let out = dir.path().join("out");
    let expect_2 = |args: &[&str], want: &str| {
        let o = certtool(args);
        assert_eq!(code(&o), 2, "{args:?}: {}", stderr(&o));
        let err = stderr(&o);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(want), "{args:?}: want {want:?} in {err:?}");
        assert!(!out.join("key.pem").exists(), "{args:?} wrote a key");
    };

    // Origin CA validities only, hostnames only, and a leaf may not outlive its CA (3650
    // days). 365 is the default --days.
    for (hostname, days, want) in [
        (
            "example.com",
            "100",
            "100 days is not an Origin CA validity; choose one of 7, 30, 90, 365, 730, 1095, 5475",
        ),
        ("*.com", "365", "invalid name \"*.com\""),
        ("10.0.0.1", "365", "an IP address, not a hostname"),
        ("example.com", "5475", "before a 5475-day certificate would"),
    ] {
        expect_2(
            &[
                "issue",
                "origin",
                "--ca",
                p(&ca),
                "--hostname",
                hostname,
                "--days",
                days,
                "--out",
                p(&out),
            ],
            want,
        );
    }
    // A missing CA directory names the file it looked for.
    let missing = dir.path().join("nope");
    expect_2(
        &issue_client(&missing, "e", &out),
        &format!("{}: cannot read", missing.join("ca.pem").display()),
    );
    // A leaf is not a CA.
    let edge = dir.path().join("edge");
    ok(&issue_client(&ca, "edge", &edge));
    let fake = dir.path().join("fake-ca");
    fs::create_dir(&fake).unwrap();
    fs::copy(edge.join("cert.pem"), fake.join("ca.pem")).unwrap();
    fs::copy(edge.join("key.pem"), fake.join("ca.key")).unwrap();
    expect_2(
        &issue_client(&fake, "e", &out),
        "not usable as a CA: its basic constraints do not say CA",
    );
    // A key that belongs to another CA.
    let other = dir.path().join("other");
    ok(&["ca", "create", "--name", "other", "--out", p(&other)]);
    let mixed = dir.path().join("mixed");
    fs::create_dir(&mixed).unwrap();
    fs::copy(ca.join("ca.pem"), mixed.join("ca.pem")).unwrap();
    fs::copy(other.join("ca.key"), mixed.join("ca.key")).unwrap();
    expect_2(
        &issue_client(&mixed, "e", &out),
        &format!(
            "{}: private key does not match the certificate in {}",
            mixed.join("ca.key").display(),
            mixed.join("ca.pem").display()
        ),
    );
    // A certificate file where the key belongs.
    fs::copy(ca.join("ca.pem"), mixed.join("ca.key")).unwrap();
    expect_2(
        &issue_client(&mixed, "e", &out),
        "expected a private key, found a certificate (CERTIFICATE)",
    );
    // An expired CA signs nothing.
    let expired = dir.path().join("expired");
    write_expired_ca(&expired);
    expect_2(&issue_client(&expired, "e", &out), "the CA is expired");
    // Usage errors (clap) are exit 2 too.
    let o = certtool(["issue", "origin", "--ca", p(&ca), "--out", p(&out)]);
    assert_eq!(code(&o), 2);
    let o = certtool([
        "ca",
        "create",
        "--name",
        "x",
        "--out",
        p(&out),
        "--key-type",
        "rsa1024",
    ]);
    assert_eq!(code(&o), 2);
}

fn write_expired_ca(dir: &Path) {
    let long_ago = time::OffsetDateTime::now_utc() - time::Duration::days(400);
    fs::create_dir_all(dir).unwrap();
    let req = aop_pki::CaRequest {
        days: 30,
        ..aop_pki::CaRequest::new("expired")
    };
    req.create_in(dir, long_ago).unwrap();
}

#[test]
fn every_command_has_an_example_in_its_help() {
    for cmd in [
        vec!["ca", "create", "--help"],
        vec!["issue", "client", "--help"],
        vec!["issue", "origin", "--help"],
        vec!["inspect", "--help"],
    ] {
        let out = ok(&cmd);
        assert!(out.contains("Example:"), "{cmd:?}: {out}");
        assert!(out.contains("Exit codes:"), "{cmd:?}: {out}");
    }
}

/// Usage errors clap finds: exit 2, on stderr, with clap's whole message — the missing
/// argument's name, the "similar argument" tip, the possible values — not its first line.
#[test]
fn usage_errors_print_clap_whole_message() {
    let dir = tempdir().unwrap();
    let out = dir.path().join("ca");
    let create = |flag: &'static str, value: &'static str| {
        vec!["ca", "create", flag, value, "--name", "x", "--out", p(&out)]
    };
    let cases = [
        (
            vec!["probe", "https://x", "--cacert", "f"],
            [
                "the following required arguments were not provided:",
                "--expect <EXPECT>",
            ],
        ),
        (
            create("--dayz", "3"),
            [
                "unexpected argument '--dayz'",
                "tip: a similar argument exists: '--days'",
            ],
        ),
        (
            create("--key-type", "rsa"),
            [
                "invalid value 'rsa' for '--key-type",
                "[possible values: ecdsa-p256, ecdsa-p384, ed25519, rsa2048, rsa4096]",
            ],
        ),
    ];
    for (args, wants) in cases {
        let o = certtool(&args);
        let err = stderr(&o);
        assert_eq!(code(&o), 2, "{args:?}: {err}");
        assert_eq!(stdout(&o), "", "{args:?}");
        assert!(err.starts_with("certtool: "), "{args:?}: {err}");
        for want in wants {
            assert!(err.contains(want), "{args:?}: want {want:?} in {err}");
        }
    }
    assert!(!out.exists(), "a usage error wrote the CA");
}

#[test]
fn ca_is_a_directory_or_a_certificate_with_ca_key() {
    if !have_peer("openssl", "ca_is_a_directory_or_a_certificate_with_ca_key") {
        return;
    }
    let dir = tempdir().unwrap();
    let ca = dir.path().join("ca");
    ok(&["ca", "create", "--name", "ca", "--out", p(&ca)]);
    let (ca_pem, ca_key) = (ca.join("ca.pem"), ca.join("ca.key"));
    let by_dir = ["--ca", p(&ca)];
    let by_files = ["--ca", p(&ca_pem), "--ca-key", p(&ca_key)];

    // Both forms issue client and origin certificates OpenSSL accepts against the CA,
    // and CRLs it accepts as signed by the CA.
    for (form, flags) in [("dir", &by_dir[..]), ("files", &by_files[..])] {
        let edge = dir.path().join(form).join("edge");
        let origin = dir.path().join(form).join("origin");
        let crl = dir.path().join(form).join("crl.pem");
        let with = |head: &[&'static str], tail: &[&str]| -> String {
            let args: Vec<&str> = head
                .iter()
                .copied()
                .chain(flags.iter().copied())
                .chain(tail.iter().copied())
                .collect();
            ok(&args)
        };
        with(&["issue", "client"], &["--cn", "edge", "--out", p(&edge)]);
        with(
            &["issue", "origin"],
            &["--hostname", "example.com", "--out", p(&origin)],
        );
        let cert = edge.join("cert.pem");
        with(
            &["crl", "create"],
            &["--revoke", p(&cert), "--out", p(&crl)],
        );
        let (c, o) = openssl_verify(&ca_pem, "sslclient", &cert);
        assert_eq!(c, 0, "{form}: {o}");
        let (c, o) = openssl_verify(&ca_pem, "sslserver", &origin.join("cert.pem"));
        assert_eq!(c, 0, "{form}: {o}");
        let o = openssl(&["crl", "-in", p(&crl), "-noout", "-CAfile", p(&ca_pem)]);
        assert_eq!(code(&o), 0, "{form}: {}", stderr(&o));
        assert!(stderr(&o).contains("verify OK"), "{form}: {}", stderr(&o));
    }

    // The wrong combinations: exit 2, one line saying which form was expected, nothing
    // written, and never the key's contents.
    let out = dir.path().join("wrong");
    let key_text = fs::read_to_string(&ca_key).unwrap();
    let file_alone = format!(
        "certtool: {}: --ca names a file, so --ca-key FILE (the CA's private key) is needed; \
         or give --ca DIR holding ca.pem and ca.key\n",
        ca_pem.display()
    );
    let dir_and_key = format!(
        "certtool: {}: --ca names a directory (its ca.key is the key), so --ca-key is not \
         expected; with --ca-key, --ca must be the CA certificate file\n",
        ca.display()
    );
    let rotate_file = format!(
        "certtool: {}: rotate --ca takes a CA directory (holding ca.pem and ca.key), not a file\n",
        ca_pem.display()
    );
    let o_ = p(&out);
    let client: &[&str] = &["issue", "client", "--cn", "e", "--out", o_];
    let origin: &[&str] = &["issue", "origin", "--hostname", "a.example", "--out", o_];
    let crl: &[&str] = &["crl", "create", "--out", o_];
    let rotate: &[&str] = &["rotate", "init", "--dir", o_, "--cn", "e"];
    let pem_alone: &[&str] = &["--ca", p(&ca_pem)];
    let dir_key: &[&str] = &["--ca", p(&ca), "--ca-key", p(&ca_key)];
    let pem_pem: &[&str] = &["--ca", p(&ca_pem), "--ca-key", p(&ca_pem)];
    let key_key: &[&str] = &["--ca", p(&ca_key), "--ca-key", p(&ca_key)];
    // (command, CA flags, the whole of stderr; None: aop-pki's own one-line error).
    let cases = [
        (client, pem_alone, Some(&file_alone)),
        (origin, pem_alone, Some(&file_alone)),
        (crl, pem_alone, Some(&file_alone)),
        (client, dir_key, Some(&dir_and_key)),
        (crl, dir_key, Some(&dir_and_key)),
        (rotate, pem_alone, Some(&rotate_file)),
        // --ca-key naming the certificate, --ca naming the key.
        (client, pem_pem, None),
        (client, key_key, None),
    ];
    for (command, ca_flags, want) in cases {
        let args: Vec<&str> = command.iter().chain(ca_flags).copied().collect();
        let o = certtool(&args);
        let err = stderr(&o);
        assert_eq!(code(&o), 2, "{args:?}: {err}");
        match want {
            Some(want) => assert_eq!(&err, want, "{args:?}"),
            None => assert_eq!(err.lines().count(), 1, "{args:?}: {err}"),
        }
        assert!(!err.contains(key_text.trim()), "{args:?} printed the key");
        assert!(!out.exists(), "{args:?} wrote {}", out.display());
    }
}
