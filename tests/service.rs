//! What a service manager and a packager meet: aop-origin's sd_notify messages (READY=1
//! once listening, RELOADING=1/READY=1 around SIGHUP, STOPPING=1 at SIGTERM) read from a
//! real notify socket; the bind-permission error's capability hint; packaging/systemd
//! checked by `systemd-analyze verify` and `systemd-sysusers`; and `--generate` (man page,
//! bash/zsh/fish completions) of certtool, aop-origin and aop-edge-proxy.

#![allow(clippy::unwrap_used)] // a test: panics are failures

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use aop_e2e::pki::World;
use aop_e2e::{bin, code, have_peer, run, stderr, stdout, tempdir, wait_within};

/// A guard's configuration in `w`'s directory: `listen`, metrics on a free loopback
/// port, one site for a.example trusting the edge's CA. Reloading on SIGHUP only: the
/// tests rewrite it and count the messages of one reload.
fn config(w: &World, listen: &str) -> PathBuf {
    let path = w.path().join("origin.toml");
    std::fs::write(
        &path,
        format!(
            "listen = \"{listen}\"\nmetrics_listen = \"127.0.0.1:0\"\nreload_on_change = false\n\n[[site]]\n\
             hostnames = [\"a.example\"]\ncert = \"origin-ca/origin/cert.pem\"\n\
             key = \"origin-ca/origin/key.pem\"\ntrust = [\"edge-ca/ca.pem\"]\n\
             upstream = \"http://127.0.0.1:9\"\n"
        ),
    )
    .unwrap();
    path
}

/// A notify socket in `dir`, as systemd makes one for a Type=notify service.
fn notify_socket(dir: &Path) -> (UnixDatagram, PathBuf) {
    let path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    (socket, path)
}

/// The next message on `socket` (waits up to 20 s, then panics).
fn next(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = socket
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("no notify message: {e}"));
    String::from_utf8(buf[..n].to_vec()).unwrap()
}

/// aop-origin on `config` with `NOTIFY_SOCKET` set, its log in `dir/origin.log`.
fn spawn(config: &Path, notify: &Path, dir: &Path) -> Child {
    Command::new(bin("aop-origin"))
        .args(["--config", config.to_str().unwrap()])
        .env("NOTIFY_SOCKET", notify)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("origin.log")).unwrap())
        .spawn()
        .unwrap()
}

fn kill(child: &Child, sig: &str) {
    let o = run(Command::new("kill").args([sig, &child.id().to_string()]));
    assert_eq!(code(&o), 0, "{}", stderr(&o));
}

#[test]
fn ready_once_listening_reloading_then_ready_on_sighup_stopping_on_sigterm() {
    let w = World::new(&["a.example"]);
    let config = config(&w, "127.0.0.1:0");
    let (socket, path) = notify_socket(w.path());
    let mut child = spawn(&config, &path, w.path());

    // The first message is READY=1, and it names the listener: which accepts at once.
    let ready = next(&socket);
    assert!(ready.starts_with("READY=1\n"), "{ready:?}");
    let addr = ready
        .lines()
        .find_map(|l| l.strip_prefix("STATUS=serving on "))
        .unwrap_or_else(|| panic!("no STATUS= in {ready:?}"));
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    std::net::TcpStream::connect(addr).expect("READY=1 means the listener accepts");

    // SIGHUP: RELOADING=1 with the monotonic time, then READY=1 once applied.
    kill(&child, "-HUP");
    let reloading = next(&socket);
    assert!(reloading.starts_with("RELOADING=1\n"), "{reloading:?}");
    let usec = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .unwrap_or_else(|| panic!("no MONOTONIC_USEC= in {reloading:?}"));
    assert!(usec.parse::<u64>().unwrap() > 0, "{reloading:?}");
    assert_eq!(
        next(&socket),
        "READY=1\nSTATUS=configuration reloaded\n",
        "after the reload"
    );

    // A reload refused still ends in READY=1 (the running configuration serves), and the
    // status says why.
    std::fs::write(&config, "listen = [\n").unwrap();
    kill(&child, "-HUP");
    assert!(next(&socket).starts_with("RELOADING=1\n"));
    let refused = next(&socket);
    assert!(
        refused.starts_with("READY=1\nSTATUS=reload refused, the running configuration stays: ")
            && refused.contains("origin.toml"),
        "{refused:?}"
    );
    assert_eq!(refused.lines().count(), 2, "one STATUS line: {refused:?}");
    std::net::TcpStream::connect(addr).expect("still serving");

    // SIGTERM: STOPPING=1 as the drain starts, then exit 0.
    kill(&child, "-TERM");
    assert_eq!(next(&socket), "STOPPING=1\nSTATUS=draining\n");
    let status = wait_within(&mut child, Duration::from_secs(20)).expect("exits after SIGTERM");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn no_ready_for_a_configuration_that_fails_to_load() {
    let w = World::new(&["a.example"]);
    let config = config(&w, "127.0.0.1:0");
    std::fs::remove_file(w.path().join("origin-ca/origin/key.pem")).unwrap();
    let (socket, path) = notify_socket(w.path());
    let mut child = spawn(&config, &path, w.path());
    let status = wait_within(&mut child, Duration::from_secs(20)).expect("exits");
    let log = std::fs::read_to_string(w.path().join("origin.log")).unwrap();
    assert_eq!(status.code(), Some(2), "{log}");
    assert!(log.contains("key.pem"), "{log}");
    socket.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 4096];
    let got = socket.recv(&mut buf);
    assert!(
        matches!(&got, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "no message at all: {:?}",
        got.map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
    );
}

/// Whether this process may bind ports below 1024 (root, or CAP_NET_BIND_SERVICE): then
/// the guard is run with that capability dropped, as an ordinary user would be.
fn privileged() -> bool {
    std::net::TcpListener::bind("127.0.0.1:1")
        .map(drop)
        .map_err(|e| e.kind())
        != Err(std::io::ErrorKind::PermissionDenied)
}

#[test]
fn a_low_port_refused_for_want_of_privilege_names_the_capability() {
    let w = World::new(&["a.example"]);
    // As a user without CAP_NET_BIND_SERVICE: port 80 below the unprivileged start (1024
    // unless the system lowered it, which leaves nothing to refuse).
    let start: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .map(|s| s.trim().parse().unwrap())
        .unwrap_or(1024);
    assert!(
        start > 80,
        "ip_unprivileged_port_start is {start}: every user may bind port 80 here"
    );
    let config = config(&w, "127.0.0.1:80");
    let guard = bin("aop-origin");
    let mut cmd = if privileged() {
        assert!(have_peer("setpriv", "the bind-permission hint"));
        let mut c = Command::new("setpriv");
        c.args([
            "--bounding-set=-net_bind_service",
            "--inh-caps=-net_bind_service",
        ])
        .arg(&guard);
        c
    } else {
        Command::new(&guard)
    };
    let o = run(cmd.args(["--config", config.to_str().unwrap()]));
    assert_eq!(
        stderr(&o),
        format!(
            "aop-origin: {}: key `listen`: permission denied binding 127.0.0.1:80 (a port \
             below 1024 needs CAP_NET_BIND_SERVICE: AmbientCapabilities=CAP_NET_BIND_SERVICE \
             in the unit, or setcap cap_net_bind_service=+ep)\n",
            config.display()
        )
    );
    assert_eq!(
        code(&o),
        1,
        "a runtime error, as every listener that cannot be bound"
    );
}

#[test]
fn a_port_in_use_gets_no_capability_hint() {
    let w = World::new(&["a.example"]);
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap();
    let config = config(&w, &addr.to_string());
    let o = run(Command::new(bin("aop-origin")).args(["--config", config.to_str().unwrap()]));
    let err = stderr(&o);
    assert_eq!(code(&o), 1, "{err}");
    assert!(
        err.starts_with(&format!(
            "aop-origin: {}: key `listen`: cannot listen on {addr}: ",
            config.display()
        )),
        "{err}"
    );
    assert!(!err.contains("CAP_NET_BIND_SERVICE"), "{err}");
}

/// packaging/systemd/NAME with `/usr/bin/BINARY` replaced by the binary just built (verify
/// checks that ExecStart= is executable), then `edit`, written into `dir`.
fn unit_copy(dir: &Path, name: &str, edit: impl Fn(String) -> String) -> PathBuf {
    let text = std::fs::read_to_string(
        aop_e2e::workspace_root()
            .join("packaging/systemd")
            .join(name),
    )
    .unwrap();
    let binary = name.trim_end_matches(".service");
    let text = text.replace(&format!("/usr/bin/{binary}"), bin(binary).to_str().unwrap());
    let path = dir.join(name);
    std::fs::write(&path, edit(text)).unwrap();
    path
}

/// The units packaging/systemd holds.
const UNITS: [&str; 2] = ["aop-origin.service", "aop-edge-proxy.service"];

/// `systemd-analyze verify` on `unit`: its exit code and everything it printed. (Without
/// man pages: the check must not depend on man-db being installed.)
fn verify(unit: &Path) -> (i32, String) {
    let o = run(Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(unit));
    (code(&o), format!("{}{}", stdout(&o), stderr(&o)))
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify_and_a_broken_copy_does_not() {
    if !have_peer("systemd-analyze", "systemd-analyze verify") {
        return;
    }
    let dir = tempdir().unwrap();
    for unit in UNITS {
        let good = unit_copy(dir.path(), unit, |t| t);
        assert_eq!(verify(&good), (0, String::new()), "{unit}");

        // systemd ignores an unknown key with a warning (exit 0): the check is "exit 0 and
        // nothing printed", and this copy fails it.
        let sub = tempdir().unwrap();
        let typo = unit_copy(sub.path(), unit, |t| {
            t.replacen("ProtectSystem=strict", "ProtectSystm=strict", 1)
        });
        let (_, said) = verify(&typo);
        assert!(said.contains("Unknown key 'ProtectSystm'"), "{said}");

        let sub = tempdir().unwrap();
        let missing = unit_copy(sub.path(), unit, |t| {
            t.replace(
                bin(unit.trim_end_matches(".service")).to_str().unwrap(),
                "/nonexistent/aop",
            )
        });
        let (code, said) = verify(&missing);
        assert_ne!(code, 0, "{said}");
        assert!(said.contains("/nonexistent/aop"), "{said}");
    }
}

#[test]
fn the_units_sandbox_keeps_systemds_exposure_rating_ok() {
    if !have_peer("systemd-analyze", "systemd-analyze security") {
        return;
    }
    // `--threshold=20`: an overall exposure above 2.0 (of 10) fails.
    let security = |unit: &Path| {
        let o = run(Command::new("systemd-analyze")
            .args(["security", "--offline=yes", "--threshold=20", "--no-pager"])
            .arg(unit));
        (code(&o), format!("{}{}", stdout(&o), stderr(&o)))
    };
    for unit in UNITS {
        let dir = tempdir().unwrap();
        let (code, said) = security(&unit_copy(dir.path(), unit, |t| t));
        assert_eq!(code, 0, "{unit}: {said}");
        assert!(
            said.contains(&format!("Overall exposure level for {unit}: 1.")),
            "{said}"
        );
        // The same unit without its sandbox fails the check.
        let sub = tempdir().unwrap();
        let bare = unit_copy(sub.path(), unit, |t| {
            t.lines()
                .filter(|l| {
                    ![
                        "Protect",
                        "Private",
                        "Restrict",
                        "SystemCall",
                        "NoNewPrivileges",
                        "CapabilityBoundingSet",
                    ]
                    .iter()
                    .any(|k| l.starts_with(k))
                })
                .map(|l| format!("{l}\n"))
                .collect()
        });
        let (code, said) = security(&bare);
        assert_ne!(code, 0, "{unit} without a sandbox: {said}");
        assert!(
            said.contains("UNSAFE") || said.contains("EXPOSED"),
            "{said}"
        );
    }
}

#[test]
fn the_sysusers_file_declares_the_units_users() {
    if !have_peer("systemd-sysusers", "systemd-sysusers --dry-run") {
        return;
    }
    let root = aop_e2e::workspace_root().join("packaging/systemd");
    for user in ["aop-origin", "aop-edge-proxy"] {
        let unit = std::fs::read_to_string(root.join(format!("{user}.service"))).unwrap();
        assert!(unit.contains(&format!("\nUser={user}\n")), "{unit}");
    }
    let dir = tempdir().unwrap();
    let o = aop_e2e::run_within(
        Command::new("systemd-sysusers")
            .args(["--dry-run", "--root"])
            .arg(dir.path())
            .arg("-"),
        &std::fs::read(root.join("aop.sysusers")).unwrap(),
        aop_e2e::PEER_DEADLINE,
    );
    let said = format!("{}{}", stdout(&o), stderr(&o));
    assert_eq!(code(&o), 0, "{said}");
    for user in ["aop-origin", "aop-edge-proxy"] {
        assert!(said.contains(&format!("Creating user '{user}'")), "{said}");
    }
}

const BINARIES: [&str; 3] = ["certtool", "aop-origin", "aop-edge-proxy"];
const KINDS: [&str; 4] = ["man", "complete-bash", "complete-zsh", "complete-fish"];

/// `BINARY --generate KIND`: its stdout, after asserting exit 0 and nothing on stderr.
fn generate(binary: &str, kind: &str) -> String {
    let o = run(Command::new(bin(binary)).args(["--generate", kind]));
    assert_eq!(code(&o), 0, "{binary} --generate {kind}: {}", stderr(&o));
    assert_eq!(stderr(&o), "", "{binary} --generate {kind}");
    stdout(&o)
}

#[test]
fn every_binary_generates_its_man_page_and_completions() {
    for binary in BINARIES {
        for kind in KINDS {
            let out = generate(binary, kind);
            assert!(out.len() > 500, "{binary} --generate {kind}: {out}");
            // Every script completes the binary's own flags, --generate's values included.
            if kind != "man" {
                assert!(out.contains(binary), "{binary} {kind}");
                assert!(out.contains("complete-bash"), "{binary} {kind}");
            }
        }
        let man = generate(binary, "man");
        assert!(
            man.contains(&format!("\n.TH {binary} 1 ")),
            "{binary}: {man}"
        );
        // bash reads the script without a syntax error.
        let dir = tempdir().unwrap();
        let script = dir.path().join("completion.bash");
        std::fs::write(&script, generate(binary, "complete-bash")).unwrap();
        let o = run(Command::new("bash").arg("-n").arg(&script));
        assert_eq!(code(&o), 0, "{binary}: bash -n: {}", stderr(&o));
    }
}

/// The subcommands `certtool [path] --help` lists under "Commands:", without `help`.
fn subcommands(path: &[&str]) -> Vec<String> {
    let o = run(Command::new(bin("certtool")).args(path).arg("--help"));
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    stdout(&o)
        .lines()
        .skip_while(|l| *l != "Commands:")
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

#[test]
fn certtools_man_page_has_a_section_for_every_subcommand() {
    let man = generate("certtool", "man");
    let top = subcommands(&[]);
    assert!(top.len() >= 9, "{top:?}");
    for name in &top {
        let heading = format!("\n.SH \"CERTTOOL {}\"\n", name.to_uppercase());
        assert!(man.contains(&heading), "{heading:?} in the man page");
        for sub in subcommands(&[name]) {
            let heading = format!(
                "\n.SH \"CERTTOOL {} {}\"\n",
                name.to_uppercase(),
                sub.to_uppercase()
            );
            assert!(man.contains(&heading), "{heading:?} in the man page");
        }
    }
    // A subcommand's own flags are in its section (`rotate stage --dir`).
    let stage = &man[man.find(".SH \"CERTTOOL ROTATE STAGE\"").unwrap()..];
    let stage = &stage[..stage[4..].find("\n.SH ").map_or(stage.len(), |i| i + 4)];
    assert!(stage.contains("\\-\\-dir"), "{stage}");

    // Rendered by man itself, where installed (man-db is not a peer CI installs).
    if aop_e2e::find_peer("man").is_some() {
        let dir = tempdir().unwrap();
        let page = dir.path().join("certtool.1");
        std::fs::write(&page, &man).unwrap();
        let o = run(Command::new("man")
            .arg("-l")
            .arg(&page)
            .env("MANWIDTH", "100"));
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        // Without grotty's overstrike (bold is `C\x08C`).
        let mut text = String::new();
        for c in stdout(&o).chars() {
            if c == '\x08' {
                text.pop();
            } else {
                text.push(c);
            }
        }
        assert!(text.contains("CERTTOOL ROTATE STAGE"), "{text}");
        assert!(text.contains("SYNOPSIS"), "{text}");
    }
}

#[test]
fn generate_takes_one_known_kind_and_nothing_beside_it() {
    for binary in BINARIES {
        let o = run(Command::new(bin(binary)).args(["--generate", "complete-powershell"]));
        assert_eq!(code(&o), 2, "{binary}");
        assert!(
            stderr(&o)
                .contains("[possible values: man, complete-bash, complete-zsh, complete-fish]"),
            "{binary}: {}",
            stderr(&o)
        );
        let o = run(Command::new(bin(binary)).args(["--generate"]));
        assert_eq!(code(&o), 2, "{binary}: {}", stderr(&o));
        assert_eq!(stdout(&o), "", "{binary}");
    }
    let o = run(Command::new(bin("aop-origin")).args(["--generate", "man", "--config", "x.toml"]));
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("cannot be used with"), "{}", stderr(&o));
    assert_eq!(stdout(&o), "");
    // The short help keeps it out of the way; the long help lists it.
    for binary in BINARIES {
        let short = stdout(&run(Command::new(bin(binary)).arg("-h")));
        assert!(!short.contains("--generate"), "{binary}: {short}");
        let long = stdout(&run(Command::new(bin(binary)).arg("--help")));
        assert!(long.contains("--generate <KIND>"), "{binary}: {long}");
    }
}
