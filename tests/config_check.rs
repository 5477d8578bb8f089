//! `aop-origin --check` and start-up refuse configurations that load but cannot work
//! (issue 15 item 3), through the real binary: every problem one line `aop-origin:
//! FILE:LINE: key `k`: what; what to do`, exit 2; warnings printed by `--check` (exit 0)
//! and logged at start. `certtool verify` refuses a trust file holding a leaf with the
//! same words.

#![allow(clippy::unwrap_used)] // test helpers: a panic is a test failure with a backtrace

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use aop_e2e::guard::Certs;
use aop_e2e::pki::{Made, ca_params, client_params};
use aop_e2e::{bin, code, run, stderr, stdout, workspace_root};

/// The 2015 Cloudflare origin-pull CA: a real anchor, expired 2020-01-12.
fn cloudflare_2015() -> PathBuf {
    workspace_root().join("testdata/cloudflare/origin_pull_ca_2015.pem")
}

fn certs() -> Certs {
    Certs::new(&["a.example", "*.a.example"])
}

/// A config in `dir`: line 1 `listen`, the site's `hostnames` on line 4, `cert` 5, `key`
/// 6, `trust` 7.
fn write(dir: &Path, hostnames: &str, key: &str, trust: &str) -> PathBuf {
    let path = dir.join("origin.toml");
    std::fs::write(
        &path,
        format!(
            "listen = \"127.0.0.1:0\"\n\n[[site]]\nhostnames = [{hostnames}]\ncert = \"origin-ca/origin/cert.pem\"\n\
             key = \"{key}\"\ntrust = [{trust}]\nupstream = \"http://127.0.0.1:9\"\n"
        ),
    )
    .unwrap();
    path
}

const KEY: &str = "origin-ca/origin/key.pem";
const HOSTS: &str = "\"a.example\", \"x.a.example\", \"*.a.example\"";

fn origin(config: &Path, check: bool) -> Output {
    let mut cmd = Command::new(bin("aop-origin"));
    cmd.args(["--config", config.to_str().unwrap()]);
    if check {
        cmd.arg("--check");
    }
    run(&mut cmd)
}

/// `--check` and start-up both exit 2 with exactly these lines (after `aop-origin: `).
fn refused(config: &Path, want: &[String]) {
    for check in [true, false] {
        let o = origin(config, check);
        let err = stderr(&o);
        assert_eq!(code(&o), 2, "check={check}: {err}");
        let got: Vec<&str> = err.lines().collect();
        let want: Vec<String> = want.iter().map(|w| format!("aop-origin: {w}")).collect();
        assert_eq!(got, want, "check={check}");
        assert_eq!(stdout(&o), "", "check={check}");
    }
}

/// `--check` exits 0 and prints `FILE: ok` alone.
fn passes(config: &Path) {
    let o = origin(config, true);
    assert_eq!(
        (code(&o), stdout(&o), stderr(&o)),
        (0, format!("{}: ok\n", config.display()), String::new())
    );
}

/// `--check` exits 0, printing these warnings and then `FILE: ok`.
fn warned(config: &Path, want: &[String]) {
    let o = origin(config, true);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let mut lines: Vec<String> = want.iter().map(|w| format!("warning: {w}")).collect();
    lines.push(format!("{}: ok", config.display()));
    assert_eq!(stdout(&o), lines.join("\n") + "\n");
}

/// The subject of a file's first certificate, as aop-pki writes it.
fn subject_of(path: &Path) -> String {
    let der = aop_pki::load_certificates(path).unwrap().remove(0);
    aop_pki::CertInfo::from_der(&der, time::OffsetDateTime::now_utc())
        .unwrap()
        .subject
}

/// The first certificate of a PEM file, as PEM.
fn first_pem(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let end = "-----END CERTIFICATE-----\n";
    let at = text.find(end).unwrap() + end.len();
    text[..at].to_owned()
}

#[test]
fn a_good_config_passes_with_no_warning() {
    let c = certs();
    let config = write(c.dir.path(), HOSTS, KEY, "\"edge-ca/ca.pem\"");
    passes(&config);
}

#[test]
fn a_trust_list_whose_every_anchor_expired_is_an_error() {
    let c = certs();
    let d = c.dir.path();
    std::fs::copy(cloudflare_2015(), d.join("cf2015.pem")).unwrap();
    // Twice in the list, both expired: still every anchor.
    let config = write(d, HOSTS, KEY, "\"cf2015.pem\",\n  \"cf2015.pem\"");
    let cf = d.join("cf2015.pem");
    let cf = cf.display();
    let subject = subject_of(&cloudflare_2015());
    assert!(subject.contains("origin-pull.cloudflare.net"), "{subject}");
    refused(
        &config,
        &[format!(
            "{}:7: key `trust`: every trust anchor of site \"a.example\" has expired: {subject} ({cf}, expired 2020-01-12T02:52:53Z); {subject} ({cf}, expired 2020-01-12T02:52:53Z); no client certificate can pass: add the edge's current CA certificate to `trust`",
            config.display()
        )],
    );
}

#[test]
fn some_expired_anchors_are_a_warning_naming_each() {
    let c = certs();
    let d = c.dir.path();
    std::fs::copy(cloudflare_2015(), d.join("cf2015.pem")).unwrap();
    let config = write(d, HOSTS, KEY, "\"edge-ca/ca.pem\",\n  \"cf2015.pem\"");
    let o = origin(&config, true);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = stdout(&o);
    let first = out.lines().next().unwrap();
    let prefix = format!(
        "warning: {}:8: key `trust`: {}: anchor ",
        config.display(),
        d.join("cf2015.pem").display()
    );
    assert!(first.starts_with(&prefix), "{out}");
    let subject = subject_of(&cloudflare_2015());
    assert_eq!(
        first.strip_prefix(&prefix),
        Some(format!("{subject} expired 2020-01-12T02:52:53Z: it verifies nothing; remove it from site \"a.example\"'s trust").as_str()),
        "{out}"
    );
    warned(
        &config,
        &[first.strip_prefix("warning: ").unwrap().to_owned()],
    );
}

/// A leaf in a trust file — alone, first in a bundle, after its CA, or a thousand of
/// them — is refused at its `trust` line, naming its place in the file and its pin.
#[test]
fn a_trust_file_holding_a_leaf_is_an_error_with_the_pin_to_use() {
    let c = certs();
    let d = c.dir.path();
    let leaf = first_pem(&c.edge.cert);
    let ca = std::fs::read_to_string(d.join("edge-ca/ca.pem")).unwrap();
    let sha = aop_pki::Sha256Fingerprint::of(
        aop_pki::load_certificates(&c.edge.cert).unwrap()[0].as_ref(),
    );
    let cases = [
        ("leaf.pem", leaf.clone(), 1),
        ("leaf-first.pem", format!("{leaf}{ca}"), 1),
        ("ca-first.pem", format!("{ca}{leaf}"), 2),
        ("thousand.pem", leaf.repeat(1000), 1),
        // The origin's own server certificate (another CA's leaf).
        (
            "server.pem",
            first_pem(&d.join("origin-ca/origin/cert.pem")),
            1,
        ),
    ];
    for (name, pem, index) in cases {
        let file = d.join(name);
        std::fs::write(&file, pem).unwrap();
        let config = write(d, HOSTS, KEY, &format!("\"edge-ca/ca.pem\", \"{name}\""));
        let o = origin(&config, true);
        let err = stderr(&o);
        assert_eq!(code(&o), 2, "{name}: {err}");
        assert_eq!(err.lines().count(), 1, "{name}: {err}");
        let prefix = format!(
            "aop-origin: {}:7: key `trust`: {}: certificate #{index} (",
            config.display(),
            file.display()
        );
        assert!(
            err.starts_with(&prefix),
            "{name}: want {prefix:?}, got {err}"
        );
        assert!(err.contains(") is not a CA certificate: a trust file holding a leaf trusts its whole issuer (or nothing useful); put only CA certificates in trust, and to accept exactly this certificate pin its SHA-256 "), "{err}");
        if name != "server.pem" {
            assert!(
                err.trim_end().ends_with(&format!(
                    "(aop-origin: pins = [\"{sha}\"]; certtool verify: --pin {sha})"
                )),
                "{name}: {err}"
            );
        }
        refused(
            &config,
            &[err
                .trim_end()
                .strip_prefix("aop-origin: ")
                .unwrap()
                .to_owned()],
        );
        // certtool verify says the same of the same file.
        let o = aop_e2e::certtool([
            "verify",
            "--trust",
            file.to_str().unwrap(),
            "--chain",
            c.edge.cert.to_str().unwrap(),
        ]);
        let said = stderr(&o);
        assert_eq!(code(&o), 2, "{name}: {said}");
        assert!(
            said.contains(&format!("{}: certificate #{index} (", file.display())),
            "{name}: {said}"
        );
        assert!(said.contains("is not a CA certificate"), "{said}");
    }
    // The edge's CA alone: certtool verify passes the edge's certificate.
    let o = aop_e2e::certtool([
        "verify",
        "--trust",
        d.join("edge-ca/ca.pem").to_str().unwrap(),
        "--chain",
        c.edge.cert.to_str().unwrap(),
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
}

/// Hostnames the served certificate (`a.example`, `*.a.example`) does not cover: one line
/// each, at the line that names it. A wildcard covers one label, not two, and not the
/// bare zone.
#[test]
fn hostnames_the_served_certificate_does_not_cover_are_errors() {
    let c = certs();
    let d = c.dir.path();
    let config = write(
        d,
        "\"a.example\", \"x.a.example\",\n  \"y.x.a.example\", \"b.example\", \"*.b.example\"",
        KEY,
        "\"edge-ca/ca.pem\"",
    );
    let cert = d.join("origin-ca/origin/cert.pem");
    let line = |host: &str| {
        format!(
            "{}:5: key `hostnames`: \"{host}\" is not covered by the DNS names of {} (a.example, *.a.example): the edge's hostname check would refuse the origin; serve a certificate that names it, or move it to a site whose certificate does",
            config.display(),
            cert.display()
        )
    };
    refused(
        &config,
        &[
            line("y.x.a.example"),
            line("b.example"),
            line("*.b.example"),
        ],
    );
}

/// A key open to group or others is a warning with the fix, also through a symlink
/// (the target's mode counts); a 0600 key is silent.
#[cfg(unix)]
#[test]
fn a_key_open_to_others_is_a_warning_with_the_chmod() {
    use std::os::unix::fs::PermissionsExt as _;
    let c = certs();
    let d = c.dir.path();
    let key = d.join(KEY);
    assert_eq!(aop_e2e::mode(&key), 0o600);
    let open = d.join("open-key.pem");
    std::fs::copy(&key, &open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
    let link = d.join("link-key.pem");
    std::os::unix::fs::symlink(&open, &link).unwrap();
    for (name, mode) in [("open-key.pem", "0644"), ("link-key.pem", "0644")] {
        let config = write(d, HOSTS, name, "\"edge-ca/ca.pem\"");
        let path = d.join(name);
        warned(
            &config,
            &[format!(
                "{}:6: key `key`: {} is open to group or others (mode {mode}): whoever can read it can pose as this origin; run chmod 600 {}",
                config.display(),
                path.display(),
                path.display()
            )],
        );
    }
    // 0640 (group): still a warning; 0600 through a symlink: none.
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o640)).unwrap();
    let config = write(d, HOSTS, "link-key.pem", "\"edge-ca/ca.pem\"");
    let o = origin(&config, true);
    assert!(stdout(&o).contains("(mode 0640)"), "{}", stdout(&o));
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o600)).unwrap();
    let o = origin(&config, true);
    assert_eq!(
        (code(&o), stdout(&o)),
        (0, format!("{}: ok\n", config.display()))
    );
}

/// Several problems of several kinds: one line each, errors only (the warnings of a
/// refused configuration are not printed), in the site's order.
#[test]
fn several_problems_are_several_lines() {
    let c = certs();
    let d = c.dir.path();
    std::fs::copy(cloudflare_2015(), d.join("cf2015.pem")).unwrap();
    let config = write(d, "\"b.example\"", KEY, "\"cf2015.pem\"");
    for check in [true, false] {
        let o = origin(&config, check);
        let err = stderr(&o);
        assert_eq!(code(&o), 2, "{err}");
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 2, "{err}");
        assert!(
            lines[0].starts_with(&format!(
                "aop-origin: {}:7: key `trust`: every trust anchor",
                config.display()
            )),
            "{err}"
        );
        assert!(
            lines[1].starts_with(&format!(
                "aop-origin: {}:4: key `hostnames`: \"b.example\" is not covered",
                config.display()
            )),
            "{err}"
        );
    }
}

/// At start-up the warnings are logged (the guard runs).
#[cfg(unix)]
#[test]
fn start_up_logs_the_warnings_and_serves() {
    use std::os::unix::fs::PermissionsExt as _;
    let c = certs();
    let d = c.dir.path();
    let key = d.join(KEY);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o604)).unwrap();
    let guard = aop_e2e::guard::Guard::spawn_binary(
        d,
        &format!(
            "\n[[site]]\nhostnames = [\"a.example\"]\ncert = \"origin-ca/origin/cert.pem\"\nkey = \"{KEY}\"\n\
             trust = [\"edge-ca/ca.pem\"]\nupstream = \"http://127.0.0.1:9\"\n"
        ),
    );
    // Logged before the listeners: seen by the time the guard is up.
    let lines = guard.lines_with("configuration check");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].to_ascii_lowercase().contains("warn"),
        "{}",
        lines[0]
    );
    // The line of `key = ` in the file the harness wrote (it adds its own lines first).
    let text = std::fs::read_to_string(&guard.config).unwrap();
    let at = 1 + text
        .lines()
        .position(|l| l.starts_with("key = "))
        .expect("a key line");
    assert!(
        lines[0].contains(&format!(
            "{}:{at}: key `key`: {} is open to group or others (mode 0604)",
            guard.config.display(),
            key.display()
        )),
        "{}",
        lines[0]
    );
}

/// `hostnames` with a trailing dot (or in capitals): the policy reads `a.example.` as
/// `a.example` (as SNI is matched), so the served certificate covers it; `--check` and
/// start-up must not refuse a configuration that works (review 15b R2-2).
#[test]
fn a_trailing_dot_hostname_the_certificate_covers_passes() {
    let c = certs();
    for hosts in [
        "\"a.example.\"",
        "\"x.a.example.\"",
        "\"*.a.example.\"",
        "\"A.Example.\", \"X.A.EXAMPLE\"",
    ] {
        let config = write(c.dir.path(), hosts, KEY, "\"edge-ca/ca.pem\"");
        passes(&config);
    }
    // Still refused when the name is not covered, with or without its dot.
    let config = write(
        c.dir.path(),
        "\"b.example.\", \"y.x.a.example.\"",
        KEY,
        "\"edge-ca/ca.pem\"",
    );
    let cert = c.dir.path().join("origin-ca/origin/cert.pem");
    let line = |host: &str| {
        format!(
            "{}:4: key `hostnames`: \"{host}\" is not covered by the DNS names of {} (a.example, *.a.example): the edge's hostname check would refuse the origin; serve a certificate that names it, or move it to a site whose certificate does",
            config.display(),
            cert.display()
        )
    };
    refused(&config, &[line("b.example."), line("y.x.a.example.")]);
}

/// A served certificate whose DNS names end in a dot (`b.example.`, `*.b.example.`)
/// covers `b.example` and `x.b.example`, as the edge's hostname check reads them.
#[cfg(unix)]
#[test]
fn a_certificate_naming_absolute_names_covers_the_hostnames() {
    use std::os::unix::fs::PermissionsExt as _;
    let c = certs();
    let d = c.dir.path();
    let mut params =
        rcgen::CertificateParams::new(vec!["b.example.".to_owned(), "*.b.example.".to_owned()])
            .unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "b.example");
    let served = Made::new(params, None);
    std::fs::write(d.join("abs-cert.pem"), &served.pem).unwrap();
    std::fs::write(d.join("abs-key.pem"), &served.key).unwrap();
    std::fs::set_permissions(
        d.join("abs-key.pem"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let config = d.join("origin.toml");
    std::fs::write(
        &config,
        "listen = \"127.0.0.1:0\"\n\n[[site]]\nhostnames = [\"b.example\", \"x.b.example\", \"c.example\"]\n\
         cert = \"abs-cert.pem\"\nkey = \"abs-key.pem\"\ntrust = [\"edge-ca/ca.pem\"]\nupstream = \"http://127.0.0.1:9\"\n",
    )
    .unwrap();
    refused(
        &config,
        &[format!(
            "{}:4: key `hostnames`: \"c.example\" is not covered by the DNS names of {} (b.example., *.b.example.): the edge's hostname check would refuse the origin; serve a certificate that names it, or move it to a site whose certificate does",
            config.display(),
            d.join("abs-cert.pem").display()
        )],
    );
}

/// The verdict on `client` under a trust of `anchor` alone, in-process (the handshake's
/// check): its reason word.
fn verdict_of(dir: &Path, anchor: &Path, client: &Made) -> String {
    let trust = aop_verify::Trust::load(&aop_verify::TrustSpec::new([anchor])).unwrap();
    let der = aop_pki::load_certificates(&client.write_anchor(dir, "client-under-test")).unwrap();
    trust
        .check(&der[0], &[], time::OffsetDateTime::now_utc())
        .outcome
        .to_string()
}

/// A CA anchor that can verify no client — its extendedKeyUsage says serverAuth only, or
/// its keyUsage lacks keyCertSign — is an error at its `trust` line naming its number in
/// the file and the verdict every client under it gets (the handshake's own check of an
/// anchor); alone or beside a good CA. `certtool verify` gives that verdict and says the
/// same on stderr (review 15b R2-3).
#[test]
fn a_ca_anchor_that_can_verify_no_client_is_an_error() {
    let c = certs();
    let d = c.dir.path();
    let mut server_only = ca_params("server-only CA", None);
    server_only.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let mut no_kcs = ca_params("no keyCertSign CA", None);
    no_kcs.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    let cases = [
        (
            "server-only",
            server_only,
            "bad_eku",
            "the trust anchor CN=server-only CA: its extendedKeyUsage does not include clientAuth",
        ),
        (
            "no-kcs",
            no_kcs,
            "bad_key_usage",
            "the trust anchor CN=no keyCertSign CA: keyUsage [Digital Signature] lacks keyCertSign",
        ),
    ];
    let good_ca = std::fs::read_to_string(d.join("edge-ca/ca.pem")).unwrap();
    for (name, params, reason, detail) in cases {
        let ca = Made::new(params, None);
        let client = Made::new(client_params("edge"), Some(&ca));
        let file = ca.write_anchor(d, name);
        // The handshake refuses every client under it, for this reason.
        assert_eq!(verdict_of(d, &file, &client), format!("FAILED:{reason}"));
        let said = |config: &Path, line: usize, file: &Path, index: usize| {
            format!(
                "{}:{line}: key `trust`: {}: certificate #{index} can verify no client (every chain under it would be FAILED:{reason}): {detail}; replace it with the edge's CA certificate as issued for client authentication, or remove it from trust",
                config.display(),
                file.display()
            )
        };
        let config = write(d, HOSTS, KEY, &format!("\"{name}.pem\""));
        refused(&config, &[said(&config, 7, &file, 1)]);
        // Second in a bundle after a good CA, and in the list after a good file.
        let bundle = d.join(format!("{name}-bundle.pem"));
        std::fs::write(&bundle, format!("{good_ca}{}", ca.pem)).unwrap();
        let config = write(
            d,
            HOSTS,
            KEY,
            &format!("\"edge-ca/ca.pem\",\n  \"{name}-bundle.pem\""),
        );
        refused(&config, &[said(&config, 8, &bundle, 2)]);
        // certtool verify: the verdict, exit 1, and the warning in the same words.
        let o = aop_e2e::certtool([
            "verify",
            "--trust",
            file.to_str().unwrap(),
            "--chain",
            d.join("client-under-test.pem").to_str().unwrap(),
        ]);
        assert_eq!(code(&o), 1, "{}", stderr(&o));
        assert_eq!(
            stdout(&o).lines().next(),
            Some(format!("FAILED:{reason}").as_str())
        );
        assert_eq!(
            stderr(&o),
            format!(
                "certtool: warning: {}: certificate #1 can verify no client (every chain under it would be FAILED:{reason}): {detail}; replace it with the edge's CA certificate as issued for client authentication, or remove it from trust\n",
                file.display()
            )
        );
    }
    // A self-signed client certificate trusted directly (not a CA) stays allowed.
    let own = Made::new(client_params("self-signed edge"), None);
    let file = own.write_anchor(d, "self-signed-edge");
    assert_eq!(verdict_of(d, &file, &own), "SUCCESS");
    let config = write(d, HOSTS, KEY, "\"self-signed-edge.pem\"");
    passes(&config);
}

/// The same leaf file in the trust of two sites: each site's error names its own `trust`
/// line (review 15b R2-4).
#[test]
fn a_leaf_trusted_by_two_sites_is_reported_at_each_sites_line() {
    let c = certs();
    let site = |host: &str| {
        format!(
            "\n[[site]]\nhostnames = [\"{host}\"]\ncert = \"origin-ca/origin/cert.pem\"\n\
             key = \"{KEY}\"\ntrust = [\"origin-ca/origin/cert.pem\"]\nupstream = \"http://127.0.0.1:9\"\n"
        )
    };
    let config = c.dir.path().join("origin.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\n{}{}",
            site("a.example"),
            site("x.a.example")
        ),
    )
    .unwrap();
    let text = std::fs::read_to_string(&config).unwrap();
    let trust_lines: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.starts_with("trust"))
        .map(|(i, _)| i + 1)
        .collect();
    assert_eq!(trust_lines, [7, 14]);
    let cert = c.dir.path().join("origin-ca/origin/cert.pem");
    let o = origin(&config, true);
    let err = stderr(&o);
    assert_eq!(code(&o), 2, "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    for (got, line) in lines.iter().zip([7, 14]) {
        let want = format!(
            "aop-origin: {}:{line}: key `trust`: {}: certificate #1 (",
            config.display(),
            cert.display()
        );
        assert!(got.starts_with(&want), "want {want:?}, got {got:?}");
        assert!(got.contains(") is not a CA certificate: "), "{got}");
    }
    refused(
        &config,
        &lines
            .iter()
            .map(|l| l.strip_prefix("aop-origin: ").unwrap().to_owned())
            .collect::<Vec<_>>(),
    );
}
