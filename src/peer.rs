//! Outside peers (openssl, curl, nginx, the PyPI peers in `.peers/venv`) and child processes: finding a peer (a missing
//! one fails the test unless `AOP_ALLOW_SKIP=1`), running a command with a deadline,
//! stopping a server, and a server that says which port it bound.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use crate::pki::Leaf;

/// The variable that lets a test whose outside peer is missing pass without running:
/// `AOP_ALLOW_SKIP=1`. Without it a missing peer fails the test.
pub const ALLOW_SKIP: &str = "AOP_ALLOW_SKIP";

/// How long an outside peer (openssl, curl) or a workspace binary run by [`run`] may
/// take before it is killed and the test fails with what it printed.
pub const PEER_DEADLINE: Duration = Duration::from_secs(60);

/// Where a peer program is: on `PATH`, or in an sbin directory (nginx often lives in
/// /usr/sbin, outside a user's `PATH`).
pub fn find_peer(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// Whether the peer `program` is installed. A missing peer panics (the test fails,
/// saying how to install it) unless `AOP_ALLOW_SKIP=1`: then it prints a `SKIPPED`
/// line (shown by `cargo test -- --nocapture`) and returns false, and the test returns.
/// Under `CI=true` (.ci/run) a missing peer fails whatever `AOP_ALLOW_SKIP` says.
pub fn have_peer(program: &str, test: &str) -> bool {
    find_peer(program).is_some() || unavailable(&format!("{program} not found"), test)
}

/// The rule for a missing peer, also for what is not a program (network namespaces, the
/// Python with the PyPI peers): panics with `problem` (`openssl not found`), unless
/// `AOP_ALLOW_SKIP=1` (and not `CI=true`), which prints `SKIPPED` and returns false.
pub(crate) fn unavailable(problem: &str, test: &str) -> bool {
    let allow_skip = std::env::var(ALLOW_SKIP).is_ok_and(|v| v == "1");
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    skip_missing(problem, test, allow_skip && !ci)
}

/// The Python with the PyPI peers (grpcio, grpcio-tools, websockets, h2) that
/// `.ci/peers` installs: `$AOP_PYTHON`, else the workspace's `.peers/venv`. `None`
/// means missing: the caller treats it as [`have_peer`] does (panic unless
/// `AOP_ALLOW_SKIP=1`, which prints `SKIPPED` and returns `None`).
pub fn python(test: &str) -> Option<PathBuf> {
    let found = std::env::var_os("AOP_PYTHON")
        .map(PathBuf::from)
        .or_else(|| Some(Path::new(env!("CARGO_MANIFEST_DIR")).join(".peers/venv/bin/python")))
        .filter(|p| p.is_file());
    if found.is_none() {
        unavailable(
            "Python with the PyPI peers (bash .ci/peers) not found",
            test,
        );
    }
    found
}

/// The rule for a missing peer: panic, or with `allow_skip` say SKIPPED and return false.
#[allow(clippy::print_stderr)] // the SKIPPED notice belongs in the test output
fn skip_missing(problem: &str, test: &str, allow_skip: bool) -> bool {
    assert!(
        allow_skip,
        "{test}: {problem}; install it (see .ci/run) or set {ALLOW_SKIP}=1 to skip"
    );
    eprintln!("\n*** SKIPPED {test}: {problem} ({ALLOW_SKIP}=1) ***\n");
    false
}

/// Run a command to completion (stdin empty), returning its output (never panicking on
/// a non-zero exit). A command still running after [`PEER_DEADLINE`] is killed and the
/// test fails with what it printed.
pub fn run(cmd: &mut Command) -> Output {
    run_within(cmd, &[], PEER_DEADLINE)
}

/// Run a command with `input` on its stdin (then closed), for at most `limit`: killed
/// then, and the test fails with the command and what it printed so far.
pub fn run_within(cmd: &mut Command, input: &[u8], limit: Duration) -> Output {
    use std::io::{Read as _, Write as _};
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let drain = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    // On a thread, so a peer that never reads cannot hold this past the deadline; one that
    // exits without reading its input is not an error here.
    std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let status = wait_within(&mut child, limit);
    let (stdout, stderr) = (out.join().unwrap(), err.join().unwrap());
    let Some(status) = status else {
        panic!(
            "{cmd:?} still running after {limit:?}; killed. stdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        );
    };
    Output {
        status,
        stdout,
        stderr,
    }
}

/// Wait up to `limit` for `child` to exit; `None` (and the child killed and reaped) if
/// it did not.
pub fn wait_within(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Stop a child: SIGTERM (so a server can take its own children down with it), wait up
/// to `grace`, then SIGKILL. Reaped either way.
pub fn stop(child: &mut Child, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = wait_within(child, grace);
}

/// A child process killed (SIGTERM, then SIGKILL) on drop.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        stop(&mut self.0, Duration::from_secs(5));
    }
}

/// `openssl s_server -accept 127.0.0.1:0 ARGS` (give it `-cert`, `-key`, `-www`, …);
/// returns once it listens, with the port it says it bound (`ACCEPT 127.0.0.1:PORT` on
/// its stdout) — no port is picked for it, so none can be taken in between.
pub fn openssl_s_server(args: &[&str]) -> (Running, u16) {
    use std::io::BufRead as _;
    let mut child = Command::new("openssl")
        .args(["s_server", "-accept", "127.0.0.1:0"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start openssl s_server: {e}"));
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let running = Running(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let port = lines.by_ref().map_while(Result::ok).find_map(|l| {
            l.strip_prefix("ACCEPT 127.0.0.1:")
                .and_then(|p| p.trim().parse::<u16>().ok())
        });
        let _ = tx.send(port);
        // Keep reading, so the server never blocks on a full pipe.
        lines.for_each(drop);
    });
    match rx.recv_timeout(Duration::from_secs(15)) {
        Ok(Some(port)) => (running, port),
        Ok(None) => panic!("openssl s_server {args:?} exited without listening"),
        Err(_) => panic!("openssl s_server {args:?} did not listen within 15 s"),
    }
}

/// aop-verify's example origin (`examples/origin.rs`) on a port of its choosing, serving
/// `server` and trusting `trust`, with `extra` arguments (`--mode optional`); returns
/// once it listens, with the port and its stderr lines (its verdict log).
pub fn example_origin(
    server: &Leaf,
    trust: &Path,
    extra: &[&str],
) -> (Running, u16, std::sync::mpsc::Receiver<String>) {
    let (cert, key) = (server.cert.to_str().unwrap(), server.key.to_str().unwrap());
    let mut args = vec!["--listen", "127.0.0.1:0", "--cert", cert, "--key", key];
    args.extend(["--trust", trust.to_str().unwrap()]);
    args.extend_from_slice(extra);
    let (child, port, log) = crate::spawn_listening(&crate::example("aop-verify", "origin"), &args);
    (Running(child), port, log)
}

/// A loopback port that refuses every connection for as long as the returned socket
/// lives: bound and never listening, so no other process can take the port meanwhile.
pub fn refused_port() -> (tokio::net::TcpSocket, u16) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(([127, 0, 0, 1], 0).into()).unwrap();
    let port = socket.local_addr().unwrap().port();
    (socket, port)
}

/// `curl -sS --max-time 10 https://HOST:PORT/` with HOST resolved to 127.0.0.1, trusting
/// `roots` (the origin's CA), presenting `identity` if given. More options may follow
/// (curl takes them after the URL too); then [`run`] it.
pub fn curl(host: &str, port: u16, roots: &Path, identity: Option<&Leaf>) -> Command {
    let mut c = Command::new("curl");
    c.args(["-sS", "--max-time", "10", "--resolve"])
        .arg(format!("{host}:{port}:127.0.0.1"))
        .arg("--cacert")
        .arg(roots);
    if let Some(l) = identity {
        c.arg("--cert").arg(&l.cert).arg("--key").arg(&l.key);
    }
    c.arg(format!("https://{host}:{port}/"));
    c
}

/// `openssl s_client` to `addr` as an edge would: verifying the origin against `roots`
/// (`-verify_return_error`), sending SNI `servername` (none if `None`), presenting
/// `identity`, then `extra`; it sends `GET /` (Host: the servername) and reads until the
/// origin closes. Killed and failed after 20 s.
pub fn s_client(
    addr: SocketAddr,
    servername: Option<&str>,
    roots: &Path,
    identity: Option<&Leaf>,
    extra: &[&str],
) -> Output {
    let mut c = Command::new("openssl");
    c.args(["s_client", "-connect", &addr.to_string(), "-CAfile"])
        .arg(roots)
        .args(["-verify_return_error", "-ign_eof"]);
    match servername {
        Some(name) => c.args(["-servername", name]),
        None => c.arg("-noservername"),
    };
    if let Some(l) = identity {
        c.arg("-cert").arg(&l.cert).arg("-key").arg(&l.key);
    }
    c.args(extra);
    let host = servername.unwrap_or_default();
    let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    run_within(&mut c, request.as_bytes(), Duration::from_secs(20))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(
        expected = "t: aop-no-such-peer not found; install it (see .ci/run) or set AOP_ALLOW_SKIP=1 to skip"
    )]
    fn a_missing_peer_fails_the_test() {
        assert!(find_peer("aop-no-such-peer").is_none());
        skip_missing("aop-no-such-peer not found", "t", false);
    }

    #[test]
    fn a_missing_peer_is_skipped_only_when_asked() {
        assert!(!skip_missing("aop-no-such-peer not found", "t", true));
    }

    #[test]
    fn a_peer_that_does_not_finish_is_killed_at_the_deadline() {
        let hung = std::panic::catch_unwind(|| {
            run_within(
                Command::new("sh").args(["-c", "echo started; exec sleep 30"]),
                &[],
                Duration::from_millis(300),
            )
        });
        let message = *hung.unwrap_err().downcast::<String>().unwrap();
        assert!(
            message.contains("still running after 300ms; killed"),
            "{message}"
        );
        assert!(message.contains("stdout:\nstarted\n"), "{message}");
    }
}
