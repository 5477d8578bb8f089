//! aop-edge-proxy's life as a process: SIGHUP reloads its identities (all or nothing,
//! under traffic, repeated, after `certtool rotate activate` as it prints the step),
//! SIGTERM drains it, `--metrics-listen` counts both (and holds off a crowd). The
//! chain is the real one: the aop-edge-proxy binary → aop-origin's guard (in this
//! process) → an echo upstream, which shows the certificate fingerprint the guard
//! verified for each request.

#![allow(clippy::unwrap_used)] // test helpers: a panic is a test failure with a backtrace

use std::io::{Read as _, Write as _};
use std::path::Path;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aop_e2e::guard::Guard;
use aop_e2e::pki::{Leaf, World};
use aop_e2e::upstream::{Echo, header};
use aop_e2e::{bin, spawn_listening, wait_until};

const HOST: &str = "a.example";

/// The chain, and the edge's identity files as it was started with them (`live/`).
struct Chain {
    w: World,
    _rt: tokio::runtime::Runtime,
    echo: Echo,
    guard: Guard,
    /// The guard's TLS port (where the proxy's --resolve points).
    port: u16,
    live: Leaf,
}

fn chain() -> Chain {
    chain_with(World::new(&[HOST]), "edge-ca/ca.pem")
}

/// [`chain`] in `w`, the guard trusting `trust` (relative to `w`'s directory).
fn chain_with(w: World, trust: &str) -> Chain {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let echo = rt.block_on(Echo::start());
    let guard = Guard::start(
        w.path(),
        &format!(
            "\n[[site]]\nhostnames = [\"{HOST}\"]\ncert = \"origin-ca/origin/cert.pem\"\nkey = \"origin-ca/origin/key.pem\"\ntrust = [\"{trust}\"]\nupstream = \"http://{}\"\n",
            echo.addr
        ),
    );
    let live = install(&w.edge, &w.path().join("live"));
    Chain {
        port: guard.port,
        w,
        _rt: rt,
        echo,
        guard,
        live,
    }
}

/// Copy `leaf`'s files to `dir/cert.pem` and `dir/key.pem` (what a renewal tool writes).
fn install(leaf: &Leaf, dir: &Path) -> Leaf {
    std::fs::create_dir_all(dir).unwrap();
    let to = Leaf {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    std::fs::copy(&leaf.cert, &to.cert).unwrap();
    std::fs::copy(&leaf.key, &to.key).unwrap();
    to
}

fn sha256(cert: &Path) -> String {
    let der = aop_pki::load_certificates(cert).unwrap().swap_remove(0);
    aop_pki::Sha256Fingerprint::of(&der).to_string()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A running aop-edge-proxy with `--metrics-listen`: killed on drop if still running.
struct EdgeProxy {
    child: Child,
    port: u16,
    metrics: u16,
    log: Receiver<String>,
    seen: Vec<String>,
}

impl Drop for EdgeProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl EdgeProxy {
    /// To the chain's guard, presenting `extra` identities (`--cert …`, `--zone-cert …`);
    /// reloading on SIGHUP only.
    fn start(c: &Chain, extra: &[&str]) -> Self {
        let port = c.port;
        let (resolve, origin, ca) = (
            format!("{HOST}:{port}:127.0.0.1"),
            format!("https://{HOST}:{port}"),
            c.w.origin_ca.pem(),
        );
        // SIGHUP only: the tests rewrite the files and count the reloads they ask for
        // (tests/watch_reload.rs reloads on file change).
        let mut args = vec![
            "--no-reload-on-change",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--origin",
            &origin,
            "--resolve",
            &resolve,
            "--cacert",
            s(&ca),
        ];
        args.extend_from_slice(extra);
        let (child, port, log) = spawn_listening(&bin("aop-edge-proxy"), &args);
        let mut p = Self {
            child,
            port,
            metrics: 0,
            log,
            seen: Vec::new(),
        };
        let line = p.wait_log("metrics listening");
        let addr = line.split("metrics=").nth(1).unwrap();
        p.metrics = addr
            .split_whitespace()
            .next()
            .unwrap()
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        p
    }

    fn signal(&self, sig: &str) {
        let o = aop_e2e::run(Command::new("kill").args([sig, &self.child.id().to_string()]));
        assert_eq!(aop_e2e::code(&o), 0);
    }

    /// The next log line containing `needle` (up to 20 s).
    fn wait_log(&mut self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = self
                .log
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no log line with {needle:?}; seen: {:#?}", self.seen));
            self.seen.push(line.clone());
            if line.contains(needle) {
                return line;
            }
        }
    }

    /// Every line logged so far (without waiting) that contains `needle`.
    fn lines_with(&mut self, needle: &str) -> Vec<String> {
        while let Ok(line) = self.log.try_recv() {
            self.seen.push(line);
        }
        self.seen
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }

    /// SIGHUP, the line saying the shared certificate changed from `old` to `new`, and a
    /// new request presenting `new`.
    fn reload_to(&mut self, old: &str, new: &str) {
        self.signal("-HUP");
        let line = self.wait_log("identities reloaded");
        assert!(
            line.contains(&format!("changed=shared:*:{old}->{new}")),
            "{line}"
        );
        assert_eq!(presented(self.port).as_deref(), Some(new));
    }

    fn metrics_text(&self) -> String {
        let (status, _, body) = get(self.metrics, "/metrics").unwrap();
        assert_eq!(status, 200);
        body
    }

    fn metric(&self, series: &str) -> Option<u64> {
        aop_e2e::metric(&self.metrics_text(), series)
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

const RELOADS_OK: &str = "aop_edge_reloads_total{result=\"ok\",source=\"signal\"}";
const RELOADS_ERROR: &str = "aop_edge_reloads_total{result=\"error\",source=\"signal\"}";

/// One GET over a connection of its own: status, head (lowercase), body; `None` if the
/// connection failed.
fn get(port: u16, path: &str) -> Option<(u16, String, String)> {
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        tcp,
        "GET {path} HTTP/1.1\r\nHost: edge.local\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    tcp.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, head.to_ascii_lowercase(), body.to_owned()))
}

/// The fingerprint the guard verified, as the upstream echoes it; `None` for a failure
/// (no answer, or not 200).
fn presented(port: u16) -> Option<String> {
    match get(port, "/") {
        Some((200, _, body)) => header(&body, "x-client-cert-fingerprint"),
        _ => None,
    }
}

/// Requests through the proxy from `threads` threads, one after another on each, until
/// stopped or `limit` each: each thread's results in order.
struct Traffic {
    stop: Arc<AtomicBool>,
    results: Vec<Arc<Mutex<Vec<Option<String>>>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Traffic {
    fn start(port: u16, threads: usize, limit: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let results: Vec<_> = (0..threads).map(|_| Arc::default()).collect();
        let threads = results
            .iter()
            .map(|r: &Arc<Mutex<Vec<_>>>| {
                let (r, stop) = (r.clone(), stop.clone());
                std::thread::spawn(move || {
                    for _ in 0..limit {
                        if stop.load(Ordering::SeqCst) {
                            return;
                        }
                        let got = presented(port);
                        r.lock().unwrap().push(got);
                    }
                })
            })
            .collect();
        Self {
            stop,
            results,
            threads,
        }
    }

    /// Requests answered so far, over all threads.
    fn count(&self) -> usize {
        self.results.iter().map(|r| r.lock().unwrap().len()).sum()
    }

    /// Whether some answer so far presented `sha`.
    fn saw(&self, sha: &str) -> usize {
        self.results
            .iter()
            .map(|r| {
                r.lock()
                    .unwrap()
                    .iter()
                    .filter(|g| g.as_deref() == Some(sha))
                    .count()
            })
            .sum()
    }

    /// Stop, wait, and return each thread's results.
    fn finish(self) -> Vec<Vec<Option<String>>> {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().unwrap();
        }
        self.results
            .into_iter()
            .map(|r| std::mem::take(&mut *r.lock().unwrap()))
            .collect()
    }
}

#[test]
fn sighup_under_traffic_swaps_the_identity_with_no_failed_request() {
    let c = chain();
    let old = sha256(&c.live.cert);
    let next = c.w.edge_ca.client("edge-next");
    let new = sha256(&next.cert);
    let mut p = EdgeProxy::start(&c, &["--cert", s(&c.live.cert), "--key", s(&c.live.key)]);
    assert_eq!(p.metric(RELOADS_OK), Some(0), "present from the start");
    assert_eq!(p.metric(RELOADS_ERROR), Some(0), "present from the start");
    let expiry = |sha: &str| {
        format!(
            "aop_edge_identity_expiry_seconds{{flavour=\"shared\",name=\"*\",sha256=\"{sha}\",subject=\"CN="
        )
    };
    assert!(
        p.metrics_text().contains(&expiry(&old)),
        "{}",
        p.metrics_text()
    );

    let traffic = Traffic::start(p.port, 2, 5000);
    wait_until(
        "requests with the first certificate",
        Duration::from_secs(30),
        || (traffic.saw(&old) >= 20).then_some(()),
    );
    // A renewal rewrites the files the proxy was started with; SIGHUP picks them up.
    install(&next, &c.w.path().join("live"));
    p.reload_to(&old, &new);
    wait_until(
        "requests with the renewed certificate",
        Duration::from_secs(30),
        || (traffic.saw(&new) >= 20).then_some(()),
    );
    let answered = traffic.count();
    let results = traffic.finish();

    let failed: usize = results
        .iter()
        .map(|r| r.iter().filter(|g| g.is_none()).count())
        .sum();
    assert_eq!(failed, 0, "of {answered}+ requests");
    // On each thread: the old certificate, then the new one, never back.
    for r in &results {
        let first_new = r.iter().position(|g| g.as_deref() == Some(new.as_str()));
        let first_new = first_new.unwrap_or(r.len());
        assert!(
            r[..first_new]
                .iter()
                .all(|g| g.as_deref() == Some(old.as_str()))
        );
        assert!(
            r[first_new..]
                .iter()
                .all(|g| g.as_deref() == Some(new.as_str())),
            "went back to the old certificate"
        );
    }
    assert_eq!(p.metric(RELOADS_OK), Some(1));
    assert_eq!(p.metric(RELOADS_ERROR), Some(0));
    let text = p.metrics_text();
    assert!(text.contains(&expiry(&new)), "{text}");
    assert!(
        !text.contains(&old),
        "the retired identity's series is gone: {text}"
    );
    let total: u64 = aop_e2e::metric_total(&text, "aop_edge_requests_total", "status=\"200\"");
    assert!(total > answered as u64, "{total} <= {answered}");
    assert!(p.lines_with("reload refused").is_empty());
}

#[test]
fn a_broken_identity_on_sighup_keeps_the_whole_running_set() {
    let c = chain();
    // Shared (what the origin gets) and a zone identity no request uses: breaking the
    // zone's files must keep the renewed shared certificate out too (all or nothing).
    let zone_leaf = c.w.edge_ca.client("zone");
    let zone = install(&zone_leaf, &c.w.path().join("zone"));
    let zone_arg = format!("other.example={},{}", s(&zone.cert), s(&zone.key));
    let mut p = EdgeProxy::start(
        &c,
        &[
            "--cert",
            s(&c.live.cert),
            "--key",
            s(&c.live.key),
            "--zone-cert",
            &zone_arg,
        ],
    );
    let old = sha256(&c.live.cert);
    let next = c.w.edge_ca.client("edge-next");
    let new = sha256(&next.cert);
    assert_eq!(presented(p.port).as_deref(), Some(old.as_str()));
    install(&next, &c.w.path().join("live"));

    let other_key = c.w.edge_ca.client("other").key;
    let pem = std::fs::read_to_string(&zone_leaf.cert).unwrap();
    type Break<'a> = (&'a str, Box<dyn Fn()>, &'a Path, &'a str);
    let cases: Vec<Break<'_>> = vec![
        (
            "truncated certificate",
            Box::new({
                let (to, pem) = (zone.cert.clone(), pem.clone());
                // The leaf's block cut before its END line.
                move || {
                    let end = pem.find("-----END").unwrap();
                    std::fs::write(&to, &pem[..end - 10]).unwrap();
                }
            }),
            &zone.cert,
            "malformed PEM",
        ),
        (
            "key of another certificate",
            Box::new({
                let (cert, key, other) = (zone.cert.clone(), zone.key.clone(), other_key.clone());
                let pem = pem.clone();
                move || {
                    std::fs::write(&cert, &pem).unwrap();
                    std::fs::copy(&other, &key).unwrap();
                }
            }),
            &zone.key,
            "private key does not match the certificate",
        ),
        (
            "missing key",
            Box::new({
                let key = zone.key.clone();
                move || std::fs::remove_file(&key).unwrap()
            }),
            &zone.key,
            "cannot read",
        ),
    ];
    for (n, (what, break_it, file, problem)) in cases.iter().enumerate() {
        break_it();
        p.signal("-HUP");
        let line = p.wait_log("reload refused");
        assert!(
            line.contains(&format!("{}: {problem}", file.display())),
            "{what}: {line}"
        );
        assert!(p.alive(), "{what}");
        assert_eq!(
            presented(p.port).as_deref(),
            Some(old.as_str()),
            "{what}: the old set stays"
        );
        assert_eq!(p.metric(RELOADS_ERROR), Some(n as u64 + 1), "{what}");
        assert_eq!(p.metric(RELOADS_OK), Some(0), "{what}");
        let text = p.metrics_text();
        assert!(
            text.contains(&format!("sha256=\"{old}\"")) && !text.contains(&new),
            "{what}: {text}"
        );
    }
    // One line per refused reload, and nothing claimed reloaded.
    assert_eq!(p.lines_with("reload refused").len(), 3);
    assert!(p.lines_with("identities reloaded").is_empty());

    // Repaired: the next SIGHUP applies the whole new set.
    install(&zone_leaf, &c.w.path().join("zone"));
    p.reload_to(&old, &new);
    assert_eq!(p.metric(RELOADS_OK), Some(1));
    assert_eq!(p.metric(RELOADS_ERROR), Some(3));
}

#[test]
fn sigterm_drains_a_slow_request_refuses_new_connections_and_exits_0() {
    let c = chain();
    let mut p = EdgeProxy::start(&c, &["--cert", s(&c.live.cert), "--key", s(&c.live.key)]);
    // A kept-alive visitor connection, idle after its first response.
    let mut idle = std::net::TcpStream::connect(("127.0.0.1", p.port)).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(idle, "GET / HTTP/1.1\r\nHost: edge.local\r\n\r\n").unwrap();
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    // A slow request in flight (the upstream answers after 3 s).
    let port = p.port;
    let slow = std::thread::spawn(move || get(port, "/slow?sleep_ms=3000"));
    let started = c.echo.started.clone();
    wait_until(
        "the slow request at the upstream",
        Duration::from_secs(20),
        || (started.load(Ordering::SeqCst) == 2).then_some(()),
    );

    p.signal("-TERM");
    let line = p.wait_log("draining");
    assert!(
        line.contains("signal=SIGTERM") || line.contains("signal=\"SIGTERM\""),
        "{line}"
    );
    wait_until("new connections refused", Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", port))
            .is_err()
            .then_some(())
    });
    // The idle connection is closed at once (its first response whole before the end).
    let mut rest = Vec::new();
    idle.read_to_end(&mut rest).unwrap();
    // The request in flight completes.
    let (status, _, body) = slow.join().unwrap().expect("the slow request is answered");
    assert_eq!(status, 200, "{body}");
    assert_eq!(header(&body, "x-client-verify").as_deref(), Some("SUCCESS"));
    let exit = aop_e2e::wait_within(&mut p.child, Duration::from_secs(30)).expect("exits");
    assert_eq!(exit.code(), Some(0));
    let line = p.wait_log("stopped");
    assert!(
        line.contains("drained=true") && line.contains("unfinished=0"),
        "{line}"
    );
}

#[test]
fn sighup_repeated_quickly_under_traffic_fails_nothing() {
    let c = chain();
    let mut p = EdgeProxy::start(&c, &["--cert", s(&c.live.cert), "--key", s(&c.live.key)]);
    let sha = sha256(&c.live.cert);
    let traffic = Traffic::start(p.port, 2, 5000);
    wait_until("requests flowing", Duration::from_secs(30), || {
        (traffic.count() >= 10).then_some(())
    });
    // A burst: signals of one kind that arrive together may count once.
    for _ in 0..20 {
        p.signal("-HUP");
    }
    wait_until("a reload", Duration::from_secs(20), || {
        (p.metric(RELOADS_OK).unwrap() >= 1).then_some(())
    });
    // Then one at a time, each waited for: every one is a reload.
    for _ in 0..5 {
        let before = p.metric(RELOADS_OK).unwrap();
        p.signal("-HUP");
        wait_until("the next reload", Duration::from_secs(20), || {
            (p.metric(RELOADS_OK).unwrap() > before).then_some(())
        });
    }
    let after = traffic.count();
    wait_until(
        "requests after the reloads",
        Duration::from_secs(30),
        || (traffic.count() >= after + 10).then_some(()),
    );
    let results = traffic.finish();
    let all: Vec<_> = results.into_iter().flatten().collect();
    assert!(
        all.iter().all(|g| g.as_deref() == Some(sha.as_str())),
        "a request failed: {:?}",
        all.iter().filter(|g| g.is_none()).count()
    );
    assert!(p.alive());
    let ok = p.metric(RELOADS_OK).unwrap();
    assert!((6..=25).contains(&ok), "{ok}");
    assert_eq!(p.metric(RELOADS_ERROR), Some(0));
    assert!(p.lines_with("reload refused").is_empty());
    // One line per reload (the counter moves after its line is written).
    wait_until("a line per reload", Duration::from_secs(20), || {
        (p.lines_with("identities reloaded").len() as u64 == ok).then_some(())
    });
}

/// The rotation as an operator runs it: `certtool rotate activate` moves `edge/` (a
/// symbolic link, swapped by rename) and prints the edge's reload step; until that step
/// the proxy presents what it loaded, after it the origin sees the next certificate.
#[test]
fn certtool_rotate_then_the_printed_reload_step_switches_the_edge() {
    let w = World::new(&[HOST]);
    let rot = w.path().join("rot");
    let certtool = |args: &[&str]| {
        let o = aop_e2e::certtool(args);
        assert_eq!(aop_e2e::code(&o), 0, "{args:?}: {}", aop_e2e::stderr(&o));
        aop_e2e::stdout(&o)
    };
    let ca = w.edge_ca.dir.clone();
    certtool(&[
        "rotate",
        "init",
        "--dir",
        s(&rot),
        "--ca",
        s(&ca),
        "--cn",
        "edge",
    ]);
    let c = chain_with(w, "rot/trust.pem");
    let edge = Leaf {
        cert: rot.join("edge/cert.pem"),
        key: rot.join("edge/key.pem"),
    };
    let mut p = EdgeProxy::start(&c, &["--cert", s(&edge.cert), "--key", s(&edge.key)]);
    let old = sha256(&edge.cert);
    assert_eq!(presented(p.port).as_deref(), Some(old.as_str()));

    certtool(&["rotate", "stage", "--dir", s(&rot)]);
    c.guard.reload(); // the origins' step
    let activated = certtool(&["rotate", "activate", "--dir", s(&rot), "--force"]);
    assert!(
        activated.contains(
            "\n  aop-edge-proxy  systemctl reload aop-edge-proxy   or: kill -HUP <pid>\n"
        ),
        "{activated}"
    );
    let new = sha256(&edge.cert);
    assert_ne!(old, new);
    assert_eq!(
        presented(p.port).as_deref(),
        Some(old.as_str()),
        "not reloaded yet"
    );
    p.reload_to(&old, &new);
}

/// `--metrics-listen` answers `/metrics` and `/healthz` only, to a few scrapers at once:
/// eight that send nothing hold every slot, a ninth is closed unanswered (and visitors
/// are served all the same); once they are gone, scrapes are answered again.
#[test]
fn the_metrics_listener_answers_its_paths_to_a_few_scrapers_at_once() {
    let c = chain();
    let p = EdgeProxy::start(&c, &["--cert", s(&c.live.cert), "--key", s(&c.live.key)]);
    let (status, head, body) = get(p.metrics, "/healthz").unwrap();
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    assert!(head.contains("content-type: text/plain"), "{head}");
    let (status, head, _) = get(p.metrics, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(
        head.contains("content-type: application/openmetrics-text; version=1.0.0"),
        "{head}"
    );
    assert_eq!(get(p.metrics, "/metrics/x").map(|g| g.0), Some(404));
    assert_eq!(get(p.metrics, "/").map(|g| g.0), Some(404));

    let silent: Vec<_> = (0..8)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", p.metrics)).unwrap())
        .collect();
    assert_eq!(get(p.metrics, "/metrics"), None, "a ninth scraper");
    assert!(presented(p.port).is_some(), "visitors are served");
    drop(silent);
    wait_until("a scrape answered again", Duration::from_secs(20), || {
        get(p.metrics, "/metrics").filter(|g| g.0 == 200)
    });
}

/// An identity's subject is at most 128 bytes in `aop_edge_identity_expiry_seconds`, then
/// `…`, as aop-origin bounds its certificates' subjects: a certificate cannot make every
/// scrape carry kilobytes of its name.
#[test]
fn a_long_identity_subject_is_bounded_in_its_expiry_series() {
    use aop_e2e::pki::{Made, ca_params, client_params, write_chain};
    let c = chain();
    let ca = Made::new(ca_params("long-subject-ca", None), None);
    let leaf = Made::new(client_params(&"x".repeat(300)), Some(&ca));
    let long = write_chain(c.w.path(), "long-subject", &[&leaf]);
    let p = EdgeProxy::start(&c, &["--cert", s(&long.cert), "--key", s(&long.key)]);
    let text = p.metrics_text();
    // "CN=" and 125 x: 128 bytes, then the ellipsis.
    let bounded = format!("subject=\"CN={}…\"}}", "x".repeat(125));
    assert!(text.contains(&bounded), "{text}");
    assert!(!text.contains(&"x".repeat(126)), "{text}");
}
