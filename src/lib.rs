//! Test harness for aop's end-to-end tests (the `tests/` directory of the workspace root).
//!
//! What belongs here: things every end-to-end test needs — locating and running the
//! workspace's binaries, temporary directories, running outside peers (openssl, curl,
//! nginx) with a deadline, and the rule for a missing peer: the test fails, unless
//! `AOP_ALLOW_SKIP=1` asks for it to be skipped (then it prints a `SKIPPED` line and
//! returns; never under `CI=true`). [`netns`] makes several hosts on one machine (network
//! namespaces) for the fleet test.

#![allow(clippy::unwrap_used)] // test support: a panic is how a broken test setup is reported

mod check;
pub mod forge;
pub mod guard;
pub mod haproxy;
pub mod logfmt;
#[cfg(target_os = "linux")]
pub mod netns;
pub mod nginx;
pub mod origin;
mod peer;
pub mod pki;
pub mod upstream;

pub use check::{metric, metric_total, wait_until, wait_until_async};
pub use peer::{
    ALLOW_SKIP, PEER_DEADLINE, Running, curl, example_origin, find_peer, have_peer,
    openssl_s_server, python, refused_port, run, run_within, s_client, stop, wait_within,
};

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

pub use tempfile::{TempDir, tempdir};

/// The directory cargo puts binaries in for this build (`target/debug` or `target/release`).
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test-binary>
    exe.parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps")
        .to_owned()
}

/// Path to a workspace binary (`certtool`, `aop-edge-proxy`, and `aop-origin` where a
/// test needs its process: signals, exit codes, `--check`, the demo), built on first use.
///
/// `cargo test --workspace` does not build other packages' executables for the root
/// package's tests, so the harness asks cargo to build them once per test process, with
/// the same profile and target directory.
pub fn bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "--bins", "--workspace"]);
        if bin_dir().file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build");
        assert!(status.success(), "cargo build --bins failed");
    });
    let path = bin_dir().join(name);
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// Path to an example of a workspace package, built on first use (like [`bin`]).
pub fn example(package: &str, name: &str) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "-p", package, "--example", name]);
    if bin_dir().file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let status = cmd.status().expect("run cargo build --example");
    assert!(status.success(), "cargo build --example {name} failed");
    bin_dir().join("examples").join(name)
}

/// stdout as UTF-8 text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// stderr as UTF-8 text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The root of the workspace (for testdata/).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Start a workspace binary that logs `… addr=IP:PORT …` on stderr when it listens;
/// returns the child, the port, and a channel of its stderr lines (ANSI colour off).
pub fn spawn_listening(
    program: &Path,
    args: &[&str],
) -> (std::process::Child, u16, std::sync::mpsc::Receiver<String>) {
    use std::io::BufRead as _;
    let mut child = Command::new(program)
        .args(args)
        .env("NO_COLOR", "1")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let port = loop {
        let line = rx
            .recv_timeout(std::time::Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("{} did not start listening", program.display()));
        // Text logs say `addr=IP:PORT`; JSON logs say `"addr":"IP:PORT"`.
        let found = line
            .split("addr=")
            .nth(1)
            .and_then(|a| a.split_whitespace().next())
            .or_else(|| {
                line.split("\"addr\":\"")
                    .nth(1)
                    .and_then(|a| a.split('"').next())
            });
        if let Some(addr) = found {
            break addr.rsplit(':').next().unwrap().parse().unwrap();
        }
    };
    (child, port, rx)
}

/// Run `certtool` with `args`.
pub fn certtool<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    run(Command::new(bin("certtool")).args(args))
}

/// Exit code of a finished process (-1 if killed by a signal).
pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

/// Unix permission bits of a file.
#[cfg(unix)]
pub fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}
