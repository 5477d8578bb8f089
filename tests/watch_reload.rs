//! Reload on file change (issue 16 item 2), through the real binaries: aop-origin
//! reloads when its configuration or a certificate, key or trust file it names changes,
//! aop-edge-proxy when one of its identities' or roots' files does, with no SIGHUP
//! (aop-edge-proxy's requests go through aop-origin's guard, which shows the
//! fingerprint it verified).
//! Each way a file is replaced — Kubernetes' atomic writer (a `..data` link renamed to a
//! new timestamped directory), a rename over the file, a write in place in two steps —
//! is done 20 times, alternating between two valid certificate sets, while requests
//! flow: none fails, and each swap is seen (the certificate presented flips). A broken
//! set keeps the running one, says why and is counted (`source="file"`); a burst of
//! writes is debounced; a directory removed and made again, and a link swapped to a
//! file outside the directory, are followed.

#![allow(clippy::unwrap_used)] // test helpers: a panic is a test failure with a backtrace

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aop_e2e::guard::{Guard, client_config};
use aop_e2e::pki::{Leaf, World};
use aop_e2e::upstream::Echo;
use aop_e2e::wait_until;

const HOST: &str = "a.example";

/// How a directory's `cert.pem` and `key.pem` are replaced.
#[derive(Clone, Copy, Debug)]
enum Layout {
    /// Kubernetes' atomic writer: `cert.pem -> ..data/cert.pem`, `..data -> ..TIMESTAMP`;
    /// an update writes a new `..TIMESTAMP` directory, renames a `..data_tmp` link over
    /// `..data`, then removes the old directory.
    Kubernetes,
    /// A new file written beside, then renamed over (`mv new cert.pem`).
    RenameOver,
    /// Truncated and written in place, in two writes.
    InPlace,
}

/// Make `dir` hold `leaf`'s certificate and key as `cert.pem` and `key.pem`, the way
/// `layout` replaces them (the `n`th time: the Kubernetes directory's name).
fn put(layout: Layout, dir: &Path, leaf: &Leaf, n: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let (cert, key) = (
        std::fs::read(&leaf.cert).unwrap(),
        std::fs::read(&leaf.key).unwrap(),
    );
    match layout {
        Layout::Kubernetes => {
            let data = dir.join("..data");
            let old = std::fs::read_link(&data).ok();
            let stamp = format!("..2026_12_02_06_00_00.{n:06}");
            let new = dir.join(&stamp);
            std::fs::create_dir(&new).unwrap();
            std::fs::write(new.join("cert.pem"), &cert).unwrap();
            std::fs::write(new.join("key.pem"), &key).unwrap();
            let tmp = dir.join("..data_tmp");
            std::os::unix::fs::symlink(&stamp, &tmp).unwrap();
            std::fs::rename(&tmp, &data).unwrap();
            for name in ["cert.pem", "key.pem"] {
                if std::fs::symlink_metadata(dir.join(name)).is_err() {
                    std::os::unix::fs::symlink(format!("..data/{name}"), dir.join(name)).unwrap();
                }
            }
            if let Some(old) = old {
                std::fs::remove_dir_all(dir.join(old)).unwrap();
            }
        }
        Layout::RenameOver => {
            for (name, bytes) in [("key.pem", &key), ("cert.pem", &cert)] {
                let tmp = dir.join(format!(".{name}.new"));
                std::fs::write(&tmp, bytes).unwrap();
                std::fs::rename(&tmp, dir.join(name)).unwrap();
            }
        }
        Layout::InPlace => {
            for (name, bytes) in [("cert.pem", &cert), ("key.pem", &key)] {
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(dir.join(name))
                    .unwrap();
                let half = bytes.len() / 2;
                f.write_all(&bytes[..half]).unwrap();
                f.flush().unwrap();
                f.write_all(&bytes[half..]).unwrap();
            }
        }
    }
}

fn sha256(cert: &Path) -> String {
    let der = aop_pki::load_certificates(cert).unwrap().swap_remove(0);
    aop_pki::Sha256Fingerprint::of(&der).to_string()
}

/// Requests from `threads` threads, one after another on each, each on a connection of
/// its own, until stopped (at most `limit` each): every failure, and how many passed.
struct Traffic {
    stop: Arc<AtomicBool>,
    passed: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Traffic {
    fn start(
        threads: usize,
        limit: usize,
        request: impl Fn() -> Result<String, String> + Send + Sync + 'static,
    ) -> Self {
        let request = Arc::new(request);
        let stop = Arc::new(AtomicBool::new(false));
        let passed = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..threads)
            .map(|_| {
                let (request, stop, passed, failures) = (
                    request.clone(),
                    stop.clone(),
                    passed.clone(),
                    failures.clone(),
                );
                std::thread::spawn(move || {
                    for _ in 0..limit {
                        if stop.load(Ordering::SeqCst) {
                            return;
                        }
                        match request() {
                            Ok(_) => {
                                passed.fetch_add(1, Ordering::SeqCst);
                            }
                            Err(e) => failures.lock().unwrap().push(e),
                        }
                    }
                })
            })
            .collect();
        Self {
            stop,
            passed,
            failures,
            threads,
        }
    }

    /// Stop and wait: (passed, failures).
    fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().unwrap();
        }
        let failures = std::mem::take(&mut *self.failures.lock().unwrap());
        (self.passed.load(Ordering::SeqCst), failures)
    }
}

// ---------------------------------------------------------------------------------------
// aop-origin: its own certificate, key and configuration.

/// aop-origin (the binary, reloading on file change) serving a.example from `site/`,
/// trusting the edge's CA, in front of an echo upstream.
struct Origin {
    w: World,
    _rt: tokio::runtime::Runtime,
    _echo: Echo,
    guard: Guard,
    site: PathBuf,
    /// The second certificate for a.example (the first is `w.server`).
    other: Leaf,
    tls: Arc<rustls::ClientConfig>,
}

fn origin(layout: Layout) -> Origin {
    let w = World::new(&[HOST]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let echo = rt.block_on(Echo::start());
    let site = w.path().join("site");
    put(layout, &site, &w.server, 0);
    let other = w.origin_ca.origin("origin-b", &[HOST]);
    let guard = Guard::spawn_watching(w.path(), &site_config(echo.addr, "site"));
    let watching = guard.wait_log("reloading on file change");
    assert!(watching.contains("/site"), "{watching}");
    let tls = client_config(&w.origin_ca.pem(), Some(&w.edge));
    Origin {
        w,
        _rt: rt,
        _echo: echo,
        guard,
        site,
        other,
        tls,
    }
}

fn site_config(upstream: std::net::SocketAddr, dir: &str) -> String {
    format!(
        "\n[[site]]\nhostnames = [\"{HOST}\"]\ncert = \"{dir}/cert.pem\"\nkey = \"{dir}/key.pem\"\n\
         trust = [\"edge-ca/ca.pem\"]\nupstream = \"http://{upstream}\"\n"
    )
}

/// One GET to the guard on a connection of its own, presenting the edge's certificate:
/// the SHA-256 of the certificate the guard served, if the answer was 200.
fn served(port: u16, tls: &Arc<rustls::ClientConfig>) -> Result<String, String> {
    let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let conn = rustls::ClientConnection::new(tls.clone(), HOST.try_into().unwrap())
        .map_err(|e| e.to_string())?;
    let mut s = rustls::StreamOwned::new(conn, tcp);
    write!(
        s,
        "GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("write: {e}"))?;
    let mut out = Vec::new();
    // The guard closes without close_notify sometimes: what was read is the answer.
    let _ = s.read_to_end(&mut out);
    let out = String::from_utf8_lossy(&out);
    if !out.starts_with("HTTP/1.1 200") {
        return Err(format!("not 200: {:?}", out.lines().next()));
    }
    let cert = s
        .conn
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or("no server certificate")?;
    Ok(aop_pki::Sha256Fingerprint::of(cert).to_string())
}

impl Origin {
    fn served(&self) -> Result<String, String> {
        served(self.guard.port, &self.tls)
    }

    /// Requests to the guard from 2 threads.
    fn traffic(&self) -> Traffic {
        let (port, tls) = (self.guard.port, self.tls.clone());
        Traffic::start(2, 100_000, move || served(port, &tls))
    }

    /// Wait until a new connection is served `sha`.
    fn wait_served(&self, sha: &str, what: &str) {
        wait_until(what, Duration::from_secs(30), || {
            (self.served().as_deref() == Ok(sha)).then_some(())
        });
    }

    fn reloads(&self, result: &str, source: &str) -> u64 {
        self.guard.metric(&format!(
            "aop_config_reloads_total{{result=\"{result}\",source=\"{source}\"}}"
        ))
    }
}

/// 20 swaps between the two certificates in `layout`, under traffic.
fn origin_swaps(layout: Layout) {
    let o = origin(layout);
    let (a, b) = (sha256(&o.w.server.cert), sha256(&o.other.cert));
    assert_eq!(o.served().as_deref(), Ok(a.as_str()));
    for source in ["signal", "file"] {
        for result in ["success", "failure"] {
            assert_eq!(o.reloads(result, source), 0, "{result} {source} from 0");
        }
    }
    let traffic = o.traffic();
    for n in 1..=20 {
        let (leaf, sha) = if n % 2 == 1 {
            (&o.other, &b)
        } else {
            (&o.w.server, &a)
        };
        put(layout, &o.site, leaf, n);
        o.wait_served(sha, &format!("{layout:?} swap {n} served"));
    }
    let (passed, failures) = traffic.finish();
    assert!(failures.is_empty(), "{layout:?}: {failures:?}");
    assert!(passed > 20, "{passed} requests");
    let reloaded = o.reloads("success", "file");
    assert!(reloaded >= 20, "{layout:?}: {reloaded} reloads");
    assert_eq!(o.reloads("success", "signal"), 0);
    assert_eq!(o.reloads("failure", "signal"), 0);
    let line = o.guard.wait_log("configuration reloaded");
    assert!(line.contains("source=file"), "{line}");
    let seen = o.guard.lines_with("a file in use changed");
    assert!(seen.iter().any(|l| l.contains("site/cert.pem")), "{seen:?}");
    #[allow(clippy::print_stderr)] // the figures, for the one who runs it with --nocapture
    {
        eprintln!(
            "{layout:?}: 20 swaps, {passed} requests, {reloaded} reloads, {} refused",
            o.reloads("failure", "file")
        );
    }
}

#[test]
fn origin_kubernetes_secret_swaps_under_traffic() {
    origin_swaps(Layout::Kubernetes);
}

#[test]
fn origin_renames_over_the_files_under_traffic() {
    origin_swaps(Layout::RenameOver);
}

#[test]
fn origin_writes_in_place_under_traffic() {
    origin_swaps(Layout::InPlace);
}

#[test]
fn origin_a_broken_write_keeps_the_running_policy_until_a_good_one() {
    let o = origin(Layout::InPlace);
    let (a, b) = (sha256(&o.w.server.cert), sha256(&o.other.cert));
    let traffic = o.traffic();
    let key = o.site.join("key.pem");
    let good_key = std::fs::read_to_string(&key).unwrap();
    let other_cert = std::fs::read(&o.other.cert).unwrap();
    let cert = o.site.join("cert.pem");
    // What is written, and the file the refusal must name.
    type Break<'a> = (&'a str, Box<dyn Fn() + 'a>, &'a str);
    let cases: [Break<'_>; 2] = [
        (
            "a truncated key",
            Box::new(|| std::fs::write(&key, &good_key[..good_key.len() / 2]).unwrap()),
            "key.pem",
        ),
        (
            "the certificate of another key",
            Box::new(|| {
                std::fs::write(&key, &good_key).unwrap();
                std::fs::write(&cert, &other_cert).unwrap();
            }),
            "cert.pem",
        ),
    ];
    for (n, (what, write, file)) in cases.iter().enumerate() {
        write();
        let line = o.guard.wait_log("reload refused");
        assert!(line.contains("source=file"), "{what}: {line}");
        assert!(
            line.contains(&o.site.join(file).display().to_string()),
            "{what}: the line names {file}: {line}"
        );
        wait_until("the refusal counted", Duration::from_secs(10), || {
            (o.reloads("failure", "file") == n as u64 + 1).then_some(())
        });
        assert_eq!(
            o.served().as_deref(),
            Ok(a.as_str()),
            "{what}: still served"
        );
    }
    // A good write applies.
    put(Layout::InPlace, &o.site, &o.other, 1);
    o.wait_served(&b, "the good write served");
    let (passed, failures) = traffic.finish();
    assert!(failures.is_empty(), "{failures:?}");
    assert!(passed > 0);
    assert_eq!(o.reloads("failure", "file"), 2);
}

#[test]
fn origin_a_burst_of_writes_reloads_a_bounded_number_of_times_and_the_last_wins() {
    let o = origin(Layout::InPlace);
    let (a, b) = (sha256(&o.w.server.cert), sha256(&o.other.cert));
    // Two configurations: the site served from `site/` (a) or from `other/` (b).
    let other = o.w.path().join("other");
    put(Layout::InPlace, &other, &o.other, 0);
    let config = o.guard.config.clone();
    let text_a = std::fs::read_to_string(&config).unwrap();
    let text_b = text_a.replace("\"site/", "\"other/");
    assert_ne!(text_a, text_b);
    assert_eq!(o.served().as_deref(), Ok(a.as_str()));
    let traffic = o.traffic();
    for i in 0..1000 {
        let text = if i % 2 == 0 { &text_a } else { &text_b };
        std::fs::write(&config, text).unwrap();
    }
    o.wait_served(&b, "the last write served");
    let (passed, failures) = traffic.finish();
    assert!(failures.is_empty(), "{failures:?}");
    assert!(passed > 0);
    let reloads = o.reloads("success", "file") + o.reloads("failure", "file");
    // 1,000 writes within a few debounce periods: a handful of reloads, not hundreds.
    assert!(
        (1..=10).contains(&reloads),
        "{reloads} reloads for 1,000 writes"
    );
    #[allow(clippy::print_stderr)] // the figure, for the one who runs it with --nocapture
    {
        eprintln!("1,000 writes: {reloads} reloads");
    }
}

#[test]
fn origin_follows_a_directory_removed_and_made_again() {
    let o = origin(Layout::RenameOver);
    let (a, b) = (sha256(&o.w.server.cert), sha256(&o.other.cert));
    let traffic = o.traffic();
    std::fs::remove_dir_all(&o.site).unwrap();
    let line = o.guard.wait_log("reload refused");
    assert!(line.contains("source=file"), "{line}");
    assert!(line.contains("site/"), "{line}");
    assert_eq!(o.served().as_deref(), Ok(a.as_str()), "still served");
    // Made again: the new directory is watched (through its parent until it is there).
    put(Layout::RenameOver, &o.site, &o.other, 1);
    o.wait_served(&b, "the new directory's certificate served");
    // And a change in it after that is seen too.
    put(Layout::InPlace, &o.site, &o.w.server, 2);
    o.wait_served(&a, "a write in the new directory served");
    let (_, failures) = traffic.finish();
    assert!(failures.is_empty(), "{failures:?}");
}

#[test]
fn origin_follows_a_link_swapped_to_a_file_outside_its_directory() {
    let o = origin(Layout::Kubernetes);
    let (a, b) = (sha256(&o.w.server.cert), sha256(&o.other.cert));
    let outside = o.w.path().join("elsewhere");
    put(Layout::InPlace, &outside, &o.other, 0);
    let traffic = o.traffic();
    // The links now lead out of the watched directory (renamed over, as `ln -sfT` does).
    for name in ["key.pem", "cert.pem"] {
        let tmp = o.site.join(format!(".{name}.link"));
        std::os::unix::fs::symlink(outside.join(name), &tmp).unwrap();
        std::fs::rename(&tmp, o.site.join(name)).unwrap();
    }
    o.wait_served(&b, "the outside certificate served");
    // What they lead to is what is read, and its directory is watched from then on.
    put(Layout::InPlace, &outside, &o.w.server, 1);
    o.wait_served(&a, "a write to the outside file served");
    let (_, failures) = traffic.finish();
    assert!(failures.is_empty(), "{failures:?}");
}

// ---------------------------------------------------------------------------------------
// aop-edge-proxy: its client certificate and key.

/// aop-edge-proxy (the binary, reloading on file change) presenting the identity in
/// `live/`, to aop-origin's guard (in this process) trusting the edge's CA, in front of
/// an echo upstream that shows the fingerprint the guard verified.
struct Edge {
    w: World,
    _rt: tokio::runtime::Runtime,
    _echo: Echo,
    _guard: Guard,
    live: PathBuf,
    /// The second identity (the first is `w.edge`).
    other: Leaf,
    child: std::process::Child,
    port: u16,
    metrics: u16,
    log: std::sync::mpsc::Receiver<String>,
}

impl Drop for Edge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn edge(layout: Layout) -> Edge {
    let w = World::new(&[HOST]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let echo = rt.block_on(Echo::start());
    let guard = Guard::start(
        w.path(),
        &format!(
            "\n[[site]]\nhostnames = [\"{HOST}\"]\ncert = \"origin-ca/origin/cert.pem\"\n\
             key = \"origin-ca/origin/key.pem\"\ntrust = [\"edge-ca/ca.pem\"]\nupstream = \"http://{}\"\n",
            echo.addr
        ),
    );
    let live = w.path().join("live");
    put(layout, &live, &w.edge, 0);
    let other = w.edge_ca.client("edge-b");
    let (resolve, origin, ca) = (
        format!("{HOST}:{}:127.0.0.1", guard.port),
        format!("https://{HOST}:{}", guard.port),
        w.origin_ca.pem(),
    );
    let (cert, key) = (live.join("cert.pem"), live.join("key.pem"));
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
        "--origin",
        &origin,
        "--resolve",
        &resolve,
        "--cacert",
        ca.to_str().unwrap(),
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ];
    let (child, port, log) = aop_e2e::spawn_listening(&aop_e2e::bin("aop-edge-proxy"), &args);
    let mut e = Edge {
        w,
        _rt: rt,
        _echo: echo,
        _guard: guard,
        live,
        other,
        child,
        port,
        metrics: 0,
        log,
    };
    let line = e.wait_log("metrics listening");
    let addr = line.split("metrics=").nth(1).unwrap();
    let addr = addr.split_whitespace().next().unwrap();
    e.metrics = addr.rsplit(':').next().unwrap().parse().unwrap();
    let watching = e.wait_log("reloading on file change");
    assert!(watching.contains("/live"), "{watching}");
    e
}

/// One GET over a connection of its own to `port`: status and body.
fn get(port: u16, path: &str) -> Result<(u16, String), String> {
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        tcp,
        "GET {path} HTTP/1.1\r\nHost: edge.local\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut out = String::new();
    tcp.read_to_string(&mut out).map_err(|e| e.to_string())?;
    let (head, body) = out.split_once("\r\n\r\n").ok_or("no head")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("no status")?;
    Ok((status, body.to_owned()))
}

/// A request through the proxy: the fingerprint the guard verified, if 200.
fn presented(port: u16) -> Result<String, String> {
    match get(port, "/")? {
        (200, body) => aop_e2e::upstream::header(&body, "x-client-cert-fingerprint")
            .ok_or_else(|| "no fingerprint".to_owned()),
        (status, body) => Err(format!("{status}: {body}")),
    }
}

impl Edge {
    /// The next log line containing `needle` (up to 20 s).
    fn wait_log(&self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = self
                .log
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no log line with {needle:?}"));
            if line.contains(needle) {
                return line;
            }
        }
    }

    fn traffic(&self) -> Traffic {
        let port = self.port;
        Traffic::start(2, 100_000, move || presented(port))
    }

    fn wait_presented(&self, sha: &str, what: &str) {
        wait_until(what, Duration::from_secs(30), || {
            (presented(self.port).as_deref() == Ok(sha)).then_some(())
        });
    }

    fn reloads(&self, result: &str, source: &str) -> u64 {
        let (status, text) = get(self.metrics, "/metrics").unwrap();
        assert_eq!(status, 200);
        aop_e2e::metric(
            &text,
            &format!("aop_edge_reloads_total{{result=\"{result}\",source=\"{source}\"}}"),
        )
        .unwrap_or_else(|| panic!("no {result} {source} series: {text}"))
    }
}

/// 20 swaps between the two identities in `layout`, under traffic through the proxy.
fn edge_swaps(layout: Layout) {
    let e = edge(layout);
    let (a, b) = (sha256(&e.w.edge.cert), sha256(&e.other.cert));
    assert_eq!(presented(e.port).as_deref(), Ok(a.as_str()));
    for source in ["signal", "file"] {
        for result in ["ok", "error"] {
            assert_eq!(e.reloads(result, source), 0, "{result} {source} from 0");
        }
    }
    let traffic = e.traffic();
    for n in 1..=20 {
        let (leaf, sha) = if n % 2 == 1 {
            (&e.other, &b)
        } else {
            (&e.w.edge, &a)
        };
        put(layout, &e.live, leaf, n);
        e.wait_presented(sha, &format!("{layout:?} swap {n} presented"));
    }
    let (passed, failures) = traffic.finish();
    assert!(failures.is_empty(), "{layout:?}: {failures:?}");
    assert!(passed > 20, "{passed} requests");
    let reloaded = e.reloads("ok", "file");
    assert!(reloaded >= 20, "{layout:?}: {reloaded} reloads");
    assert_eq!(e.reloads("ok", "signal"), 0);
    let line = e.wait_log("identities reloaded");
    assert!(line.contains("source=file"), "{line}");
    #[allow(clippy::print_stderr)] // the figures, for the one who runs it with --nocapture
    {
        eprintln!(
            "edge {layout:?}: 20 swaps, {passed} requests, {reloaded} reloads, {} refused",
            e.reloads("error", "file")
        );
    }
}

#[test]
fn edge_kubernetes_secret_swaps_under_traffic() {
    edge_swaps(Layout::Kubernetes);
}

#[test]
fn edge_renames_over_the_files_under_traffic() {
    edge_swaps(Layout::RenameOver);
}

#[test]
fn edge_writes_in_place_under_traffic() {
    edge_swaps(Layout::InPlace);
}

#[test]
fn edge_a_truncated_key_keeps_the_running_identity_until_a_good_write() {
    let e = edge(Layout::InPlace);
    let (a, b) = (sha256(&e.w.edge.cert), sha256(&e.other.cert));
    let traffic = e.traffic();
    let key = e.live.join("key.pem");
    let good = std::fs::read_to_string(&key).unwrap();
    std::fs::write(&key, &good[..good.len() / 2]).unwrap();
    let line = e.wait_log("reload refused");
    assert!(line.contains("source=file"), "{line}");
    assert!(
        line.contains(&key.display().to_string()),
        "names the key: {line}"
    );
    wait_until("the refusal counted", Duration::from_secs(10), || {
        (e.reloads("error", "file") == 1).then_some(())
    });
    assert_eq!(
        presented(e.port).as_deref(),
        Ok(a.as_str()),
        "still presented"
    );
    put(Layout::InPlace, &e.live, &e.other, 1);
    e.wait_presented(&b, "the good write presented");
    let (passed, failures) = traffic.finish();
    assert!(failures.is_empty(), "{failures:?}");
    assert!(passed > 0);
    assert_eq!(e.reloads("error", "file"), 1);
}
