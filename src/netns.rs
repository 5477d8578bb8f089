//! Several hosts on one machine: network namespaces made by the test (`ip netns`, Debian's
//! iproute2), each a host with its own address on one private LAN, and the workspace's
//! binaries started inside them.
//!
//! ```text
//!   aop-<pid>-<n>-edge   aop-<pid>-<n>-o1   aop-<pid>-<n>-o2   …    one namespace a host
//!     eth0 10.77.0.1       eth0 10.77.0.2     eth0 10.77.0.3          (lo up in each)
//!        │                    │                  │
//!   ─────┴────── br0 in aop-<pid>-<n>-hub ───────┴──────────          veth pairs into one bridge
//! ```
//!
//! The bridge lives in a namespace of its own and nothing is routed out of it: no
//! interface, address or route is added to the machine's own namespace, and no packet
//! leaves the machine. Names carry the test process's id; every namespace is deleted when
//! its [`Lan`] is dropped (a panicking test unwinds through that too), and a namespace of
//! this prefix whose process is gone (a test killed by SIGKILL) is deleted by the next
//! [`Lan::new`].
//!
//! A process runs in a host with [`Netns::command`] (`ip netns exec NS PROGRAM`, which
//! `exec`s PROGRAM: the child's pid is the program's own, so signals reach it), a piece of
//! the test with [`Netns::within`] (a thread moved into the namespace: the sockets it
//! makes, listening or connecting, belong to that host for their whole life, whichever
//! thread later uses them).

use std::net::Ipv4Addr;
use std::os::fd::AsFd as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

/// The start of every namespace name the harness makes: `aop-<pid>-<n>-<host>`.
pub const PREFIX: &str = "aop-";

/// The LAN's addresses: host `i` (0-based, in the order given to [`Lan::new`]) is
/// `10.77.0.<i + 1>/24`.
pub const SUBNET: [u8; 3] = [10, 77, 0];

/// One network namespace, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

/// A host on the [`Lan`]: its namespace, its name (`edge`, `o1`) and address.
#[derive(Debug)]
pub struct Host {
    /// Its namespace.
    pub ns: Netns,
    /// The name the test gave it.
    pub name: String,
    /// Its address on the LAN (`eth0`).
    pub addr: Ipv4Addr,
}

/// Hosts joined by one bridge, in namespaces of their own; all deleted on drop.
#[derive(Debug)]
pub struct Lan {
    /// Dropped first: the hosts' ends of the veth pairs go with their namespaces.
    hosts: Vec<Host>,
    _hub: Netns,
}

/// `ip`, wherever it is installed (often /usr/sbin, outside a user's `PATH`).
fn ip() -> PathBuf {
    crate::find_peer("ip").unwrap_or_else(|| PathBuf::from("ip"))
}

/// Run `ip ARGS`: `Err` with what it said when it fails.
fn ip_run(args: &[&str]) -> Result<(), String> {
    let o = crate::run(Command::new(ip()).args(args));
    if o.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            crate::stderr(&o).trim()
        ))
    }
}

impl Netns {
    /// `ip netns add NAME`.
    fn add(name: String) -> Result<Self, String> {
        ip_run(&["netns", "add", &name])?;
        Ok(Self { name })
    }

    /// Its name (`aop-<pid>-<n>-<host>`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip [-n NAME] ARGS…` run against this namespace.
    fn ip(&self, args: &[&str]) -> Result<(), String> {
        ip_run(&[&["-n", &self.name], args].concat())
    }

    /// `ip netns exec NAME PROGRAM`: add its arguments, then run or spawn it. `ip` execs
    /// PROGRAM in place, so the child is PROGRAM itself.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(ip());
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Run `f` on a thread moved into this namespace, and return what it returns (its
    /// panic goes on as this thread's). Sockets `f` makes belong to this host: a listener
    /// bound here keeps accepting here, served by any thread; the test's own threads stay
    /// in the machine's namespace.
    pub fn within<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            s.spawn(|| {
                self.enter();
                f()
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// As [`Netns::within`], on a thread of its own that the test joins when it likes.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = self.path();
        std::thread::spawn(move || {
            enter(&path);
            f()
        })
    }

    fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// Move the calling thread (only it) into this namespace.
    fn enter(&self) {
        enter(&self.path());
    }
}

/// `setns(2)` the calling thread into the network namespace bound at `path`.
fn enter(path: &Path) {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    rustix::thread::move_into_link_name_space(
        file.as_fd(),
        Some(rustix::thread::LinkNameSpaceType::Network),
    )
    .unwrap_or_else(|e| panic!("setns {}: {e}", path.display()));
}

impl Drop for Netns {
    fn drop(&mut self) {
        // The namespace itself lives on while a process is still in it; its name goes.
        let _ = ip_run(&["netns", "del", &self.name]);
    }
}

impl Lan {
    /// Namespaces `aop-<pid>-<n>-<name>` for `names` (`edge`, `o1`, …), each with
    /// loopback up and `eth0` at `10.77.0.<i + 1>/24`, bridged in `aop-<pid>-<n>-hub`.
    /// Stale namespaces of a finished process are deleted first. `Err` says why the
    /// namespaces could not be made (not root, no CAP_NET_ADMIN, no veth or bridge
    /// support): what `ip` said.
    pub fn new(names: &[&str]) -> Result<Self, String> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        assert!(names.len() < 250, "one /24");
        remove_stale();
        let stem = format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let hub = Netns::add(format!("{stem}-hub"))?;
        hub.ip(&["link", "add", "br0", "type", "bridge"])?;
        hub.ip(&["link", "set", "br0", "up"])?;
        let mut hosts = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let ns = Netns::add(format!("{stem}-{name}"))?;
            let port = format!("v{i}");
            let addr = Ipv4Addr::new(
                SUBNET[0],
                SUBNET[1],
                SUBNET[2],
                u8::try_from(i + 1).unwrap(),
            );
            // Made in the hub, its peer end moved straight into the host as eth0.
            hub.ip(&[
                "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns.name,
            ])?;
            hub.ip(&["link", "set", &port, "master", "br0", "up"])?;
            ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", "eth0"])?;
            ns.ip(&["link", "set", "eth0", "up"])?;
            ns.ip(&["link", "set", "lo", "up"])?;
            hosts.push(Host {
                ns,
                name: (*name).to_owned(),
                addr,
            });
        }
        Ok(Self { hosts, _hub: hub })
    }

    /// The host named `name`.
    pub fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name} on this LAN"))
    }
}

/// A [`Lan`] for `test`, or `None` where namespaces cannot be made here: no `ip`, not
/// root, no CAP_NET_ADMIN. That follows the rule for a missing peer ([`crate::have_peer`]):
/// the test fails unless `AOP_ALLOW_SKIP=1`, and always under `CI=true`; skipped, it prints
/// a `SKIPPED` line with the reason.
pub fn lan(test: &str, names: &[&str]) -> Option<Lan> {
    if !crate::have_peer("ip", test) {
        return None;
    }
    match Lan::new(names) {
        Ok(lan) => Some(lan),
        Err(why) => {
            crate::peer::unavailable(
                &format!(
                    "cannot make network namespaces (run as root: CAP_NET_ADMIN and CAP_SYS_ADMIN): {why}"
                ),
                test,
            );
            None
        }
    }
}

/// Delete every `aop-<pid>-…` namespace whose process no longer runs (left by a test that
/// was killed before its drop ran). Namespaces of running processes, and names not of
/// this form, are left alone.
pub fn remove_stale() {
    let o = crate::run(Command::new(ip()).args(["netns", "list"]));
    for line in crate::stdout(&o).lines() {
        // `NAME` or `NAME (id: N)`.
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let pid = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok());
        if let Some(pid) = pid
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = ip_run(&["netns", "del", name]);
        }
    }
}

/// A workspace binary running in a namespace, its stderr read line by line; killed on
/// drop.
pub struct Daemon {
    child: Child,
    /// The port its log said it listens on (its first `addr=`).
    pub port: u16,
    log: Receiver<String>,
    seen: Vec<String>,
    what: String,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    /// Start `program ARGS` in `ns` (as [`crate::spawn_listening`]: `NO_COLOR`, stderr
    /// read); returns once it logs the address it listens on.
    pub fn spawn(ns: &Netns, program: &Path, args: &[&str]) -> Self {
        let mut all = vec!["netns", "exec", ns.name(), program.to_str().unwrap()];
        all.extend_from_slice(args);
        let (child, port, log) = crate::spawn_listening(&ip(), &all);
        // `ip netns exec` execs the program: signals sent to this pid reach it.
        let exe = std::fs::read_link(format!("/proc/{}/exe", child.id())).unwrap();
        assert_eq!(
            exe,
            std::fs::canonicalize(program).unwrap(),
            "ip netns exec forked instead of exec'ing"
        );
        Self {
            child,
            port,
            log,
            seen: Vec::new(),
            what: format!("{} in {}", program.display(), ns.name()),
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send `sig` (`-HUP`, `-TERM`).
    pub fn signal(&self, sig: &str) {
        let o = crate::run(Command::new("kill").args([sig, &self.pid().to_string()]));
        assert_eq!(crate::code(&o), 0, "kill {sig} {}", self.what);
    }

    /// Read every line logged so far, without waiting: a later [`Daemon::wait_line`] sees
    /// only lines logged after this.
    pub fn drain(&mut self) {
        while let Ok(line) = self.log.try_recv() {
            self.seen.push(line);
        }
    }

    /// The next new line containing any of `needles` (up to 20 s, then a panic with
    /// every line seen).
    pub fn wait_line(&mut self, needles: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = self.log.recv_timeout(left) else {
                panic!(
                    "{}: no line with {needles:?} within 20 s; seen:\n{}",
                    self.what,
                    self.seen.join("\n")
                );
            };
            self.seen.push(line.clone());
            if needles.iter().any(|n| line.contains(n)) {
                return line;
            }
        }
    }

    /// Every line read so far containing `needle`.
    pub fn lines_with(&mut self, needle: &str) -> Vec<String> {
        self.drain();
        self.seen
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }
}
