//! A fleet on several hosts (issue 16, item 5): network namespaces made by the test
//! (`aop_e2e::netns`), three aop-origin binaries each on a host of its own (10.77.0.2-4,
//! port 443 on each), each in front of an echo upstream on its host's loopback, and an
//! edge host (10.77.0.1) running one aop-edge-proxy per origin, all presenting
//! `certtool rotate`'s `rot/edge/cert.pem`. A full rotation (stage → reload → activate
//! --probe → reload the edge → retire → reload) runs while clients on the edge host send
//! requests through every proxy without pause: not one may fail.
//!
//! Each origin host has its own copy of `trust.pem`, as a fleet gets it from its
//! configuration management: the test copies `rot/trust.pem` there atomically, then sends
//! SIGHUP. `certtool` runs on the edge host, where `rot/` is and from where it reaches
//! the origins by their addresses.
//!
//! Needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) and `ip` (iproute2, in .ci/peers). Without
//! them the test fails, or with `AOP_ALLOW_SKIP=1` (never under `CI=true`) says SKIPPED.

#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used)] // test helpers: a panic is a test failure with a backtrace

use std::io::{Read as _, Write as _};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aop_e2e::netns::{self, Daemon, Lan, Netns};
use aop_e2e::upstream::{Echo, header};
use aop_e2e::{bin, code, pki, stderr, stdout, tempdir, wait_until};
use serde_json::Value;

const TEST: &str = "a_full_rotation_across_three_origin_hosts_under_traffic_fails_no_request";
const ORIGINS: [&str; 3] = ["o1", "o2", "o3"];
/// Requests a client thread sends at most: the loop stops by itself even if the test
/// never stops it (it stops it long before).
const LIMIT: usize = 50_000;
/// Requests each origin must answer in a phase before the test goes on.
const EACH: usize = 20;

/// Phases the clients stamp on each request as they send it.
const BEFORE: usize = 0;
const ROTATING: usize = 1;
const RETIRED: usize = 2;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn sha256(cert: &Path) -> String {
    let der = aop_pki::load_certificates(cert).unwrap().swap_remove(0);
    aop_pki::Sha256Fingerprint::of(&der).to_string()
}

/// One origin host: aop-origin on `addr:443` in front of its echo upstream.
struct Origin {
    name: &'static str,
    addr: Ipv4Addr,
    /// Its files: origin.toml, trust.pem (its copy).
    dir: PathBuf,
    guard: Daemon,
    echo: Echo,
}

impl Origin {
    fn hostname(&self) -> String {
        format!("{}.example", self.name)
    }

    fn url(&self) -> String {
        format!("https://{}/", self.hostname())
    }

    /// `--resolve HOST:443:ADDR`.
    fn resolve(&self) -> String {
        format!("{}:443:{}", self.hostname(), self.addr)
    }

    /// Copy `trust` to the host's trust.pem (atomically, as configuration management
    /// would), send SIGHUP, and wait for the line saying the guard applied it.
    fn deploy_trust(&mut self, trust: &Path) {
        self.guard.drain();
        aop_pki::write_atomic(
            &self.dir.join("trust.pem"),
            &std::fs::read(trust).unwrap(),
            aop_pki::FileMode::Public,
            aop_pki::Overwrite::Replace,
        )
        .unwrap();
        self.guard.signal("-HUP");
        // Any reload logged from here read the new file: it began after the copy.
        let line = self
            .guard
            .wait_line(&["configuration reloaded", "reload refused"]);
        assert!(
            line.contains("configuration reloaded") && line.contains("trust"),
            "{}: {line}",
            self.name
        );
    }
}

/// What one request through the edge got: the phase it was sent in, and the certificate
/// fingerprint and X-Forwarded-For the origin's upstream saw, or why it failed.
#[derive(Debug)]
struct Answer {
    phase: usize,
    got: Result<(String, String), String>,
}

/// `GET /` through the edge proxy on 127.0.0.1:`port` (run on the edge host).
fn through_edge(port: u16, host: &str) -> Result<(String, String), String> {
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        tcp,
        "GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut out = String::new();
    tcp.read_to_string(&mut out).map_err(|e| e.to_string())?;
    let (head, body) = out.split_once("\r\n\r\n").ok_or("no response head")?;
    if head.split_whitespace().nth(1) != Some("200") {
        return Err(format!("{head}\n{body}"));
    }
    let fingerprint = header(body, "x-client-cert-fingerprint").ok_or(body)?;
    let forwarded_for = header(body, "x-forwarded-for").unwrap_or_default();
    Ok((fingerprint, forwarded_for))
}

/// One client thread per origin on the edge host, each sending requests one after
/// another through that origin's proxy, until stopped or [`LIMIT`].
struct Traffic {
    stop: Arc<AtomicBool>,
    phase: Arc<AtomicUsize>,
    answers: Vec<Arc<Mutex<Vec<Answer>>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Traffic {
    fn start(edge: &Netns, targets: Vec<(u16, String)>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let phase = Arc::new(AtomicUsize::new(BEFORE));
        let answers: Vec<Arc<Mutex<Vec<Answer>>>> =
            targets.iter().map(|_| Arc::default()).collect();
        let threads = targets
            .into_iter()
            .zip(&answers)
            .map(|((port, host), answers)| {
                let (stop, phase, answers) = (stop.clone(), phase.clone(), answers.clone());
                edge.spawn(move || {
                    for _ in 0..LIMIT {
                        if stop.load(Ordering::SeqCst) {
                            return;
                        }
                        let phase = phase.load(Ordering::SeqCst);
                        let got = through_edge(port, &host);
                        answers.lock().unwrap().push(Answer { phase, got });
                    }
                })
            })
            .collect();
        Self {
            stop,
            phase,
            answers,
            threads,
        }
    }

    /// Wait until every origin has answered [`EACH`] requests sent in `phase` presenting
    /// `sha`; a failed request anywhere fails the test at once.
    fn wait_each(&self, phase: usize, sha: &str) {
        wait_until(
            &format!("{EACH} requests to each origin in phase {phase} presenting {sha}"),
            Duration::from_secs(30),
            || {
                let mut enough = true;
                for answers in &self.answers {
                    // Copied out of the lock: a panic here must not poison the clients'.
                    let (failed, n) = {
                        let a = answers.lock().unwrap();
                        let failed = a.iter().find(|x| x.got.is_err()).map(|x| format!("{x:?}"));
                        let n = a
                            .iter()
                            .filter(|x| x.phase == phase)
                            .filter(|x| x.got.as_ref().is_ok_and(|(f, _)| f == sha))
                            .count();
                        (failed, n)
                    };
                    assert!(failed.is_none(), "a request failed: {}", failed.unwrap());
                    enough &= n >= EACH;
                }
                enough.then_some(())
            },
        );
    }

    /// Stop, wait, and return each origin's answers in order.
    fn finish(mut self) -> Vec<Vec<Answer>> {
        self.stop.store(true, Ordering::SeqCst);
        for t in std::mem::take(&mut self.threads) {
            t.join().unwrap();
        }
        self.answers
            .iter()
            .map(|a| std::mem::take(&mut *a.lock().unwrap()))
            .collect()
    }
}

impl Drop for Traffic {
    /// A test that panics stops its clients too.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// `certtool ARGS` on the edge host.
fn certtool_on(edge: &Netns, args: &[&str]) -> Output {
    aop_e2e::run(edge.command(bin("certtool")).args(args))
}

/// [`certtool_on`] with `--json`: the exit code and the JSON it printed.
fn certtool_json(edge: &Netns, args: &[&str]) -> (i32, Value) {
    let o = certtool_on(edge, &[args, &["--json"]].concat());
    let v = serde_json::from_str(&stdout(&o))
        .unwrap_or_else(|e| panic!("{args:?}: {e}: {}{}", stdout(&o), stderr(&o)));
    (code(&o), v)
}

#[test]
fn a_full_rotation_across_three_origin_hosts_under_traffic_fails_no_request() {
    // First made, last dropped: every process below is gone before its namespace is.
    let Some(lan) = netns::lan(TEST, &["edge", "o1", "o2", "o3"]) else {
        return;
    };
    let edge = &lan.host("edge").ns;
    let dir = tempdir().unwrap();
    let root = dir.path();

    // Certificates: the origins' own from one CA; the edge's from `certtool rotate init`,
    // the next one from a second CA (so that retiring the first refuses its certificate).
    let origin_ca = pki::ca(root, "origin-ca");
    pki::ca(root, "edge-ca");
    pki::ca(root, "edge-ca-2");
    let rot = root.join("rot");
    let (c, init) = certtool_json(
        edge,
        &[
            "rotate",
            "init",
            "--dir",
            s(&rot),
            "--ca",
            s(&root.join("edge-ca")),
            "--cn",
            "edge.example.net",
        ],
    );
    assert_eq!((c, init["phase"].as_str()), (0, Some("single")), "{init}");
    let (edge_cert, edge_key) = (rot.join("edge/cert.pem"), rot.join("edge/key.pem"));
    // The first certificate and key, kept for the probes after retire.
    let old = pki::Leaf {
        cert: std::fs::canonicalize(&edge_cert).unwrap(),
        key: std::fs::canonicalize(&edge_key).unwrap(),
    };
    let old_sha = sha256(&old.cert);

    // Three origin hosts: echo upstream on the host's loopback, aop-origin on ADDR:443.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut origins: Vec<Origin> = ORIGINS
        .iter()
        .map(|&name| {
            let host = lan.host(name);
            let dir = root.join(name);
            std::fs::create_dir_all(&dir).unwrap();
            let server = origin_ca.origin(name, &[&format!("{name}.example")]);
            std::fs::copy(rot.join("trust.pem"), dir.join("trust.pem")).unwrap();
            // Bound on the host's thread: the listener is the host's loopback's.
            let echo = host.ns.within(|| runtime.block_on(Echo::start()));
            let config = dir.join("origin.toml");
            std::fs::write(
                &config,
                format!(
                    "listen = \"{addr}:443\"\n\n[[site]]\nhostnames = [\"{name}.example\"]\ncert = \"{}\"\nkey = \"{}\"\ntrust = [\"trust.pem\"]\nupstream = \"http://{}\"\n",
                    s(&server.cert),
                    s(&server.key),
                    echo.addr,
                    addr = host.addr,
                ),
            )
            .unwrap();
            let guard = Daemon::spawn(&host.ns, &bin("aop-origin"), &["--config", s(&config)]);
            assert_eq!(guard.port, 443);
            Origin {
                name,
                addr: host.addr,
                dir,
                guard,
                echo,
            }
        })
        .collect();

    // The edge host: one aop-edge-proxy per origin, on its loopback, presenting rot/edge.
    let mut proxies: Vec<Daemon> = origins
        .iter()
        .map(|o| {
            Daemon::spawn(
                edge,
                &bin("aop-edge-proxy"),
                &[
                    // The rotation's reload step is SIGHUP (what certtool prints), and
                    // its line is asserted: not a reload on file change before it.
                    "--no-reload-on-change",
                    "--listen",
                    "127.0.0.1:0",
                    "--origin",
                    &format!("https://{}", o.hostname()),
                    "--resolve",
                    &o.resolve(),
                    "--cacert",
                    s(&origin_ca.pem()),
                    "--cert",
                    s(&edge_cert),
                    "--key",
                    s(&edge_key),
                ],
            )
        })
        .collect();

    let traffic = Traffic::start(
        edge,
        proxies
            .iter()
            .zip(&origins)
            .map(|(p, o)| (p.port, o.hostname()))
            .collect(),
    );
    traffic.wait_each(BEFORE, &old_sha);
    traffic.phase.store(ROTATING, Ordering::SeqCst);

    // Stage: trust.pem holds both CAs. Two origins get it; the third not yet.
    let (c, staged) = certtool_json(
        edge,
        &[
            "rotate",
            "stage",
            "--dir",
            s(&rot),
            "--new-ca",
            s(&root.join("edge-ca-2")),
        ],
    );
    assert_eq!(
        (c, staged["phase"].as_str()),
        (0, Some("staged")),
        "{staged}"
    );
    let trust = rot.join("trust.pem");
    for o in &mut origins[..2] {
        o.deploy_trust(&trust);
    }
    let mut probes = vec!["rotate", "activate", "--dir", s(&rot)];
    let flags: Vec<[String; 4]> = origins
        .iter()
        .map(|o| ["--probe".into(), o.url(), "--resolve".into(), o.resolve()])
        .collect();
    probes.extend(flags.iter().flatten().map(String::as_str));
    let ca = origin_ca.pem();
    probes.extend(["--cacert", s(&ca)]);

    // Activate probes every origin from the edge host: o3 lacks the next trust, so it
    // refuses, naming o3 alone, and changes nothing (the manifest and rot/edge as they were).
    let manifest = std::fs::read(rot.join("manifest.json")).unwrap();
    let o = certtool_on(edge, &probes);
    let said = format!("{}{}", stdout(&o), stderr(&o));
    assert_eq!(code(&o), 1, "{said}");
    assert!(
        said.contains("https://o3.example/")
            && !said.contains("https://o1.example/")
            && !said.contains("https://o2.example/"),
        "{said}"
    );
    assert_eq!(std::fs::read(rot.join("manifest.json")).unwrap(), manifest);
    assert_eq!(sha256(&edge_cert), old_sha);

    // The third origin gets it; now activate switches rot/edge to the next certificate.
    origins[2].deploy_trust(&trust);
    let o = certtool_on(edge, &[&probes[..], &["--json"]].concat());
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let activated: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(activated["phase"], "activated", "{activated}");
    let new_sha = sha256(&edge_cert);
    assert_ne!(new_sha, old_sha);

    // Reload the edge: each proxy says it swapped old for new, and each origin's upstream
    // then sees the new fingerprint.
    for p in &mut proxies {
        p.drain();
        p.signal("-HUP");
        let line = p.wait_line(&["identities reloaded", "reload refused"]);
        assert!(
            line.contains(&format!("changed=shared:*:{old_sha}->{new_sha}")),
            "{line}"
        );
    }
    traffic.wait_each(ROTATING, &new_sha);

    // Retire: trust.pem holds the next CA only, on every origin.
    let (c, retired) = certtool_json(edge, &["rotate", "retire", "--dir", s(&rot)]);
    assert_eq!(
        (c, retired["phase"].as_str()),
        (0, Some("single")),
        "{retired}"
    );
    assert_eq!(aop_pki::load_certificates(&trust).unwrap().len(), 1);
    for o in &mut origins {
        o.deploy_trust(&trust);
    }
    traffic.phase.store(RETIRED, Ordering::SeqCst);
    traffic.wait_each(RETIRED, &new_sha);
    let answers = traffic.finish();

    // Not one request failed; each origin answered with the old certificate, then only
    // with the new one, and after retire only with the new one; each came from the edge
    // host's address.
    for (o, answers) in origins.iter().zip(&answers) {
        let failed: Vec<&Answer> = answers.iter().filter(|a| a.got.is_err()).collect();
        assert!(
            failed.is_empty(),
            "{}: {} of {} requests failed; the first: {:?}",
            o.name,
            failed.len(),
            answers.len(),
            failed.first()
        );
        let seen: Vec<(usize, &str, &str)> = answers
            .iter()
            .map(|a| {
                let (f, xff) = a.got.as_ref().unwrap();
                (a.phase, f.as_str(), xff.as_str())
            })
            .collect();
        let switch = seen.iter().position(|(_, f, _)| *f == new_sha).unwrap();
        assert!(switch >= EACH, "{}: old certificate {switch} times", o.name);
        assert!(
            seen[..switch].iter().all(|(_, f, _)| *f == old_sha)
                && seen[switch..].iter().all(|(_, f, _)| *f == new_sha),
            "{}: not old then new: {seen:?}",
            o.name
        );
        let after = seen.iter().filter(|(p, _, _)| *p == RETIRED).count();
        assert!(after >= EACH, "{}: {after} requests after retire", o.name);
        let edge_addr = lan.host("edge").addr.to_string();
        assert!(
            seen.iter().all(|(_, _, xff)| xff.ends_with(&edge_addr)),
            "{}: {:?}",
            o.name,
            seen.first()
        );
        let served = o.echo.requests.load(Ordering::SeqCst);
        assert!(
            served >= u64::try_from(answers.len()).unwrap(),
            "{}: upstream answered {served} of {}",
            o.name,
            answers.len()
        );
    }

    // After retire the old certificate is refused by every origin, the new one served.
    for o in &origins {
        let probe = |leaf: &pki::Leaf, expect: &str| {
            certtool_json(
                edge,
                &[
                    "probe",
                    &o.url(),
                    "--resolve",
                    &o.resolve(),
                    "--cacert",
                    s(&ca),
                    "--cert",
                    s(&leaf.cert),
                    "--key",
                    s(&leaf.key),
                    "--expect",
                    expect,
                ],
            )
        };
        let (c, j) = probe(&old, "reject");
        assert_eq!(c, 0, "{}: {j}", o.name);
        let r = &j["results"][0];
        assert_eq!(
            (
                r["outcome"].as_str(),
                r["alert"].as_str(),
                j["held"].as_bool()
            ),
            (Some("refused_tls"), Some("unknown_ca"), Some(true)),
            "{}: {j}",
            o.name
        );
        assert_eq!(j["presented"]["sha256"], old_sha.as_str());
        let (c, j) = probe(&old, "accept");
        assert_eq!(
            (c, j["held"].as_bool()),
            (1, Some(false)),
            "{}: {j}",
            o.name
        );

        let new = pki::Leaf {
            cert: edge_cert.clone(),
            key: edge_key.clone(),
        };
        let (c, j) = probe(&new, "accept");
        assert_eq!(c, 0, "{}: {j}", o.name);
        let r = &j["results"][0];
        assert_eq!(
            (
                r["outcome"].as_str(),
                r["http_status"].as_u64(),
                r["verdict"].as_str()
            ),
            (Some("accepted"), Some(200), None),
            "{}: {j}",
            o.name
        );
        assert_eq!(j["presented"]["sha256"], new_sha.as_str());
    }
    drop(proxies);
    drop(origins);
    let names: Vec<String> = ["edge", "o1", "o2", "o3"]
        .iter()
        .map(|h| lan.host(h).ns.name().to_owned())
        .collect();
    drop(lan);
    let left = namespaces();
    assert!(names.iter().all(|n| !left.contains(n)), "{left:?}");
}

/// `ip ARGS`.
fn ip(args: &[&str]) -> Output {
    aop_e2e::run(std::process::Command::new(aop_e2e::find_peer("ip").unwrap()).args(args))
}

/// The namespaces' names, as `ip netns list` gives them.
fn namespaces() -> Vec<String> {
    let o = ip(&["netns", "list"]);
    stdout(&o)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// The harness itself: two hosts reach each other on the LAN and not on each other's
/// loopback; namespaces go when their LAN is dropped, a panic included, and a run killed
/// before its drop leaves namespaces the next LAN removes (those of a live process stay).
#[test]
fn hosts_are_apart_and_their_namespaces_go_even_on_panic() {
    let test = "hosts_are_apart_and_their_namespaces_go_even_on_panic";
    let Some(lan) = netns::lan(test, &["a", "b"]) else {
        return;
    };
    let (a, b) = (lan.host("a"), lan.host("b"));
    assert_eq!(
        (a.addr, b.addr),
        ([10, 77, 0, 1].into(), [10, 77, 0, 2].into())
    );
    let on_lan =
        a.ns.within(|| std::net::TcpListener::bind((a.addr, 0)).unwrap());
    let on_lo =
        a.ns.within(|| std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap());
    let (lan_port, lo_port) = (
        on_lan.local_addr().unwrap().port(),
        on_lo.local_addr().unwrap().port(),
    );
    let from_b = b.ns.within(|| {
        let mut tcp = std::net::TcpStream::connect((a.addr, lan_port)).unwrap();
        tcp.write_all(b"x").unwrap();
        std::net::TcpStream::connect(("127.0.0.1", lo_port)).map(drop)
    });
    let (mut got, peer) = on_lan.accept().unwrap();
    assert_eq!(peer.ip(), std::net::IpAddr::from(b.addr));
    let mut byte = [0];
    got.read_exact(&mut byte).unwrap();
    assert_eq!(&byte, b"x");
    assert_eq!(
        from_b.unwrap_err().kind(),
        std::io::ErrorKind::ConnectionRefused,
        "b's loopback is its own"
    );

    // Left by a process that is gone, and by this one (alive): only the first is stale.
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let dead = gone.id();
    gone.wait().unwrap();
    let stale = format!("{}{dead}-0-stale", netns::PREFIX);
    let live = format!("{}{}-999999-live", netns::PREFIX, std::process::id());
    for name in [&stale, &live] {
        let o = ip(&["netns", "add", name]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
    }
    let mut made = Vec::new();
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let lan = Lan::new(&["c"]).unwrap();
        made.push(lan.host("c").ns.name().to_owned());
        panic!("a test fails with its LAN up");
    }));
    assert!(panicked.is_err());
    let names = namespaces();
    assert!(!names.contains(&stale), "{names:?}");
    assert!(names.contains(&live), "{names:?}");
    assert!(!names.contains(&made[0]), "{names:?}");
    let o = ip(&["netns", "del", &live]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));

    let ours = [a.ns.name().to_owned(), b.ns.name().to_owned()];
    drop(lan);
    let names = namespaces();
    assert!(ours.iter().all(|n| !names.contains(n)), "{names:?}");
}
