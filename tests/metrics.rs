//! aop-origin's metrics listener against a running guard: `/metrics` parsed as the
//! Prometheus text format (a strict parser below: every line must parse), each series
//! checked after a known sequence of actions (a success, a refusal, a 421, a limit
//! close, a reload); `/readyz` through a drain; a certificate whose subject attacks
//! the exposition.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use aop_e2e::guard::{Certs, Guard, client_config, closed_within, connect, round_trip};
use aop_e2e::pki;
use aop_e2e::upstream::Echo;
use aop_e2e::{code, have_peer, run, wait_until};
use tokio::io::AsyncWriteExt as _;

/// One sample: metric name, labels (unescaped), value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parse the text format strictly: `# HELP`/`# TYPE` lines, blank lines, and samples
/// `name{k="v",…} value` with `\\`, `\"` and `\n` the only escapes. Panics on any line
/// that is none of these, naming it.
fn parse(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
            continue;
        }
        let sample = sample(line).unwrap_or_else(|| panic!("not a sample: {line:?}\n{text}"));
        out.push(sample);
    }
    out
}

fn sample(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' '])?;
    let name = &line[..name_end];
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    {
        return None;
    }
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(r) = rest.strip_prefix('{') {
        let mut chars = r.char_indices().peekable();
        loop {
            // key
            let (start, _) = *chars.peek()?;
            if r[start..].starts_with('}') {
                rest = &r[start + 1..];
                break;
            }
            let eq = r[start..].find('=')? + start;
            let key = &r[start..eq];
            if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return None;
            }
            while chars.peek()?.0 <= eq {
                chars.next();
            }
            if chars.next()?.1 != '"' {
                return None;
            }
            let mut value = String::new();
            loop {
                match chars.next()?.1 {
                    '\\' => match chars.next()?.1 {
                        '\\' => value.push('\\'),
                        '"' => value.push('"'),
                        'n' => value.push('\n'),
                        _ => return None,
                    },
                    '"' => break,
                    '\n' => return None,
                    c => value.push(c),
                }
            }
            labels.insert(key.to_owned(), value);
            match chars.peek()?.1 {
                ',' => {
                    chars.next();
                }
                '}' => {}
                _ => return None,
            }
        }
    }
    let value = rest.strip_prefix(' ')?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// The samples of `name` whose labels include every `(key, value)` of `with`.
fn find<'a>(samples: &'a [Sample], name: &str, with: &[(&str, &str)]) -> Vec<&'a Sample> {
    samples
        .iter()
        .filter(|s| {
            s.name == name
                && with
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect()
}

/// The value of the one sample of `name` with exactly these labels; panics if absent.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<_> = find(samples, name, labels)
        .into_iter()
        .filter(|s| s.labels.len() == labels.len())
        .collect();
    assert_eq!(found.len(), 1, "{name} {labels:?}: {found:?}");
    found[0].value
}

/// Whether a text log line has `key=value`, bare or quoted.
fn has_field(line: &str, key: &str, value: &str) -> bool {
    line.split_whitespace()
        .any(|f| f == format!("{key}={value}") || f == format!("{key}=\"{value}\""))
}

fn scrape(guard: &Guard) -> Vec<Sample> {
    let (status, body) = guard.metrics_get("/metrics");
    assert_eq!(status, 200, "{body}");
    parse(&body)
}

fn sites(upstream: std::net::SocketAddr, trust: &str) -> String {
    let mut out = String::from("header_read_timeout_secs = 1\n");
    for host in ["a.test", "b.test"] {
        out.push_str(&format!(
            "\n[[site]]\nhostnames = [\"{host}\"]\ncert = \"origin-ca/origin/cert.pem\"\n\
             key = \"origin-ca/origin/key.pem\"\ntrust = [\"{trust}\"]\nupstream = \"http://{upstream}\"\n"
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_series_after_a_success_a_refusal_a_421_a_limit_close_and_a_reload() {
    if !have_peer("curl", "metrics") {
        return;
    }
    let certs = Certs::new(&["a.test", "b.test"]);
    let echo = Echo::start().await;
    let guard = Guard::start(certs.dir.path(), &sites(echo.addr, "edge-ca/ca.pem"));
    let roots = certs.origin_ca.pem();

    // At start: every fixed series present, at 0.
    let m = scrape(&guard);
    for result in ["success", "failure"] {
        for source in ["signal", "file"] {
            assert_eq!(
                value(
                    &m,
                    "aop_config_reloads_total",
                    &[("result", result), ("source", source)]
                ),
                0.0
            );
        }
    }
    for result in ["accepted", "refused"] {
        assert_eq!(
            value(
                &m,
                "aop_handshake_duration_seconds_count",
                &[("result", result)]
            ),
            0.0
        );
    }
    for state in ["handshaking", "active", "tunnel"] {
        assert_eq!(value(&m, "aop_connections", &[("state", state)]), 0.0);
    }
    let build = find(&m, "aop_build_info", &[]);
    assert_eq!(build.len(), 1, "{build:?}");
    assert_eq!(build[0].value, 1.0);
    assert_eq!(
        build[0].labels.get("version").map(String::as_str),
        Some(env!("CARGO_PKG_VERSION"))
    );
    // One series per certificate and site: the served one and the anchor.
    let now = time::OffsetDateTime::now_utc().unix_timestamp() as f64;
    for site in ["a.test", "b.test"] {
        let certs_of = find(
            &m,
            "aop_certificate_expiry_timestamp_seconds",
            &[("site", site)],
        );
        assert_eq!(certs_of.len(), 2, "{certs_of:?}");
        for (role, file) in [
            ("served", "origin-ca/origin/cert.pem"),
            ("anchor", "edge-ca/ca.pem"),
        ] {
            let der = aop_pki::load_certificates(&certs.dir.path().join(file)).unwrap();
            let info =
                aop_pki::CertInfo::from_der(&der[0], time::OffsetDateTime::now_utc()).unwrap();
            let s = find(
                &m,
                "aop_certificate_expiry_timestamp_seconds",
                &[
                    ("site", site),
                    ("role", role),
                    ("sha256", &info.sha256.to_string()[..16]),
                    ("subject", &info.subject),
                ],
            );
            assert_eq!(s.len(), 1, "{role}: {certs_of:?}");
            assert_eq!(s[0].value, info.not_after.unix_timestamp() as f64);
        }
        let anchor = find(
            &m,
            "aop_certificate_expiry_timestamp_seconds",
            &[("site", site), ("role", "anchor")],
        );
        assert!(
            anchor[0].labels["subject"].contains("edge-ca"),
            "{anchor:?}"
        );
    }
    assert!(value(&m, "aop_days_until_first_cert_expiring", &[]) >= 1.0);
    #[cfg(target_os = "linux")]
    {
        assert!(value(&m, "process_resident_memory_bytes", &[]) > 1e6);
        assert!(value(&m, "process_open_fds", &[]) >= 3.0);
        assert!(value(&m, "process_max_fds", &[]) >= value(&m, "process_open_fds", &[]));
        assert!(value(&m, "process_cpu_seconds_total", &[]) >= 0.0);
        let start = value(&m, "process_start_time_seconds", &[]);
        assert!(
            start <= now + 1.0 && start > now - 86400.0,
            "{start} vs {now}"
        );
    }
    assert_eq!(guard.metrics_get("/readyz"), (200, "ready\n".into()));
    assert_eq!(guard.metrics_get("/healthz").0, 200);

    // A success, kept open: one active connection.
    let config = client_config(&roots, Some(&certs.edge));
    let mut ok = connect(guard.addr(), "a.test", true, &config)
        .await
        .unwrap();
    let r = round_trip(&mut ok, b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text);
    let m = scrape(&guard);
    assert_eq!(value(&m, "aop_connections", &[("state", "active")]), 1.0);
    drop(ok);

    // A refusal: no client certificate where one is required.
    let anonymous = client_config(&roots, None);
    let mut refused = connect(guard.addr(), "a.test", true, &anonymous).await;
    if let Ok(tls) = &mut refused {
        // TLS 1.3: the refusal arrives after the client's handshake is done.
        let _ = tls
            .write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
            .await;
        assert!(closed_within(tls, Duration::from_secs(10)).await);
    }
    wait_until("the refusal counted", Duration::from_secs(10), || {
        let m = scrape(&guard);
        (value(
            &m,
            "aop_handshake_duration_seconds_count",
            &[("result", "refused")],
        ) == 1.0)
            .then_some(())
    });

    // A 421: curl to a.test (SNI) asking for b.test (Host).
    let out = run(
        aop_e2e::curl("a.test", guard.port, &roots, Some(&certs.edge)).args([
            "-H",
            "Host: b.test",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ]),
    );
    assert_eq!(code(&out), 0, "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "421");
    let line = guard.wait_log("status=421");
    for (key, value) in [
        ("reason", "host_outside_rule"),
        ("site", "a.test"),
        ("host", "b.test"),
    ] {
        assert!(has_field(&line, key, value), "{key}={value} in {line}");
    }
    assert!(line.contains("peer=127.0.0.1:"), "{line}");
    assert!(line.contains("aop::access"), "an access line: {line}");

    // A limit close: a request head that never ends, closed after
    // header_read_timeout_secs, with a line naming the limit and the peer.
    let mut slow = connect(guard.addr(), "a.test", true, &config)
        .await
        .unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\n")
        .await
        .unwrap();
    let local = slow.get_ref().0.local_addr().unwrap();
    assert!(closed_within(&mut slow, Duration::from_secs(20)).await);
    let line = guard.wait_log("header_read_timeout");
    assert!(has_field(&line, "closed", "header_read_timeout"), "{line}");
    assert!(has_field(&line, "peer", &local.to_string()), "{line}");

    guard.reload();
    let m = wait_until("the reload counted", Duration::from_secs(10), || {
        let m = scrape(&guard);
        let reloads = [("result", "success"), ("source", "signal")];
        (value(&m, "aop_config_reloads_total", &reloads) == 1.0).then_some(m)
    });
    for (result, source) in [
        ("failure", "signal"),
        ("success", "file"),
        ("failure", "file"),
    ] {
        assert_eq!(
            value(
                &m,
                "aop_config_reloads_total",
                &[("result", result), ("source", source)]
            ),
            0.0
        );
    }
    for (labels, want) in [
        (vec![("site", "a.test"), ("status", "200")], 1.0),
        (vec![("site", "a.test"), ("status", "421")], 1.0),
    ] {
        assert_eq!(value(&m, "aop_requests_total", &labels), want, "{labels:?}");
    }
    assert_eq!(
        value(&m, "aop_misdirected_requests_total", &[("site", "a.test")]),
        1.0
    );
    assert_eq!(
        value(
            &m,
            "aop_connections_closed_total",
            &[("site", "a.test"), ("limit", "header_read_timeout")]
        ),
        1.0
    );
    // Three handshakes accepted (the success, curl, the slow header), one refused.
    assert_eq!(
        value(
            &m,
            "aop_handshake_duration_seconds_count",
            &[("result", "accepted")]
        ),
        3.0
    );
    assert_eq!(
        value(
            &m,
            "aop_handshake_duration_seconds_count",
            &[("result", "refused")]
        ),
        1.0
    );
    let inf = value(
        &m,
        "aop_handshake_duration_seconds_bucket",
        &[("result", "accepted"), ("le", "+Inf")],
    );
    assert_eq!(inf, 3.0);
    // Every connection ended: none counted in any state.
    wait_until("no connection open", Duration::from_secs(10), || {
        let m = scrape(&guard);
        ["handshaking", "active", "tunnel"]
            .iter()
            .all(|s| value(&m, "aop_connections", &[("state", s)]) == 0.0)
            .then_some(())
    });
}

#[test]
fn readyz_is_503_while_draining_and_the_listener_closes_after() {
    let certs = Certs::new(&["a.test"]);
    let rest = "handshake_timeout_secs = 60\n\n[[site]]\nhostnames = [\"a.test\"]\n\
         cert = \"origin-ca/origin/cert.pem\"\nkey = \"origin-ca/origin/key.pem\"\n\
         trust = [\"edge-ca/ca.pem\"]\nupstream = \"http://127.0.0.1:9\"\n";
    let mut guard = Guard::start(certs.dir.path(), rest);
    // Start returns once every listener is bound and the policy loaded: ready.
    assert_eq!(guard.metrics_get("/readyz"), (200, "ready\n".into()));
    // A connection that says nothing holds the drain (handshake_timeout_secs = 60).
    let silent = std::net::TcpStream::connect(guard.addr()).unwrap();
    wait_until(
        "the silent connection counted",
        Duration::from_secs(10),
        || {
            let m = scrape(&guard);
            (value(&m, "aop_connections", &[("state", "handshaking")]) == 1.0).then_some(())
        },
    );
    guard.shutdown_within(Duration::from_secs(30));
    wait_until("readyz says 503", Duration::from_secs(10), || {
        (guard.metrics_get("/readyz") == (503, "not ready\n".into())).then_some(())
    });
    // Still draining, still scraped.
    assert_eq!(
        value(
            &scrape(&guard),
            "aop_connections",
            &[("state", "handshaking")]
        ),
        1.0
    );
    assert!(std::net::TcpStream::connect(guard.addr()).is_err());
    drop(silent);
    assert_eq!(guard.wait_exit(), Some(0));
    assert!(std::net::TcpStream::connect(("127.0.0.1", guard.metrics)).is_err());
}

#[test]
fn a_hostile_certificate_subject_is_one_escaped_bounded_label() {
    let certs = Certs::new(&["a.test"]);
    let dir = certs.dir.path();
    // Quotes, a backslash, a newline, a brace and 1 KB.
    let cn = format!(
        "evil\" }} aop_build_info{{version=\"x\"}} 1\\\nnext{}",
        "x".repeat(1024)
    );
    let hostile = pki::Made::new(pki::ca_params(&cn, None), None);
    hostile.write_anchor(dir, "hostile");
    let rest = format!(
        "\n[[site]]\nhostnames = [\"a.test\"]\ncert = \"origin-ca/origin/cert.pem\"\n\
         key = \"origin-ca/origin/key.pem\"\ntrust = [\"{}\"]\nupstream = \"http://127.0.0.1:9\"\n",
        Path::new("hostile.pem").display(),
    );
    let guard = Guard::start(dir, &rest);
    let (status, body) = guard.metrics_get("/metrics");
    assert_eq!(status, 200);
    // Every line parses: the subject added no line and no series.
    let m = parse(&body);
    assert_eq!(find(&m, "aop_build_info", &[]).len(), 1, "{body}");
    let anchor = find(
        &m,
        "aop_certificate_expiry_timestamp_seconds",
        &[("role", "anchor")],
    );
    assert_eq!(anchor.len(), 1, "{body}");
    let subject = &anchor[0].labels["subject"];
    assert!(subject.contains("evil"), "{subject:?}");
    // The quote and the backslash reach the label (RFC 4514 escapes them as \" and \\).
    assert!(
        subject.contains('"') && subject.contains('\\'),
        "{subject:?}"
    );
    assert!(subject.len() <= 128 + '…'.len_utf8(), "{}", subject.len());
    assert!(subject.ends_with('…'), "{subject:?}");
}

#[test]
fn a_connection_closed_for_the_handshake_timeout_is_counted_and_logged_with_its_peer() {
    let certs = Certs::new(&["a.test"]);
    let rest = "handshake_timeout_secs = 1\n\n[[site]]\nhostnames = [\"a.test\"]\n\
         cert = \"origin-ca/origin/cert.pem\"\nkey = \"origin-ca/origin/key.pem\"\n\
         trust = [\"edge-ca/ca.pem\"]\nupstream = \"http://127.0.0.1:9\"\n";
    let guard = Guard::start(certs.dir.path(), rest);
    // Says nothing: closed once handshake_timeout_secs pass.
    let mut silent = std::net::TcpStream::connect(guard.addr()).unwrap();
    let local = silent.local_addr().unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(std::io::Read::read(&mut silent, &mut buf).unwrap_or(0), 0);
    let line = guard.wait_log("handshake_timeout");
    assert!(has_field(&line, "peer", &local.to_string()), "{line}");
    let m = scrape(&guard);
    assert_eq!(
        value(
            &m,
            "aop_connections_closed_total",
            &[("site", ""), ("limit", "handshake_timeout")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            "aop_handshakes_total",
            &[
                ("site", ""),
                ("verdict", "NONE"),
                ("reason", "handshake_timeout")
            ]
        ),
        1.0
    );
}

/// Scrapers that pipeline `GET /metrics` and never read the answers (review 15b): each
/// metrics listener answers one request a connection and closes it (and bounds a
/// connection's whole life at 15 s), so such a scraper cannot keep its slot: with as many
/// of them open as there are slots, /healthz is still answered.
mod pipelined_scrapers {
    use std::io::{ErrorKind, Read as _, Write as _};
    use std::net::TcpStream;
    use std::time::Duration;

    use aop_e2e::guard::{Certs, Guard};
    use aop_e2e::{bin, spawn_listening, wait_until};

    /// One GET over a connection of its own: the status, `None` if unanswered.
    fn status(port: u16, path: &str) -> Option<u16> {
        let mut tcp = TcpStream::connect(("127.0.0.1", port)).ok()?;
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(
            tcp,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut out = String::new();
        tcp.read_to_string(&mut out).ok()?;
        out.split_whitespace().nth(1)?.parse().ok()
    }

    /// `n` connections, each sending as many pipelined `GET /metrics` as the socket takes
    /// (40,000 at most) until the server closes it or stops reading, never reading an
    /// answer. Returned open (those the server has not closed), silent from now on.
    fn pipelining_scrapers(port: u16, n: usize) -> Vec<TcpStream> {
        let one = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
        let burst: Vec<u8> = one
            .iter()
            .copied()
            .cycle()
            .take(one.len() * 40_000)
            .collect();
        (0..n)
            .map(|_| {
                let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
                tcp.set_nonblocking(true).unwrap();
                let (mut sent, mut stalls) = (0, 0);
                while sent < burst.len() && stalls < 100 {
                    match tcp.write(&burst[sent..]) {
                        Ok(n) => sent += n,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {
                            stalls += 1;
                            // Paces the writer while the server reads; waits for nothing.
                            std::thread::sleep(Duration::from_millis(10));
                        }
                        // Closed by the server after its one answer: what it should do.
                        Err(_) => break,
                    }
                }
                tcp
            })
            .collect()
    }

    /// Every slot taken by a pipelining scraper that stays open: /healthz is answered
    /// well before the 15 s deadline (one answer a connection frees the slot at once).
    fn still_answered(port: u16, slots: usize) {
        let held = pipelining_scrapers(port, slots);
        wait_until(
            "/healthz answered while the pipelining scrapers stay open",
            Duration::from_secs(10),
            || (status(port, "/healthz") == Some(200)).then_some(()),
        );
        drop(held);
    }

    #[test]
    fn aop_origin_metrics_slots_are_not_held_by_unread_pipelined_scrapes() {
        let c = Certs::new(&["a.example"]);
        let guard = Guard::start(
            c.dir.path(),
            "[[site]]\nhostnames = [\"a.example\"]\ncert = \"origin-ca/origin/cert.pem\"\n\
             key = \"origin-ca/origin/key.pem\"\ntrust = [\"edge-ca/ca.pem\"]\nupstream = \"http://127.0.0.1:9\"\n",
        );
        assert_eq!(status(guard.metrics, "/readyz"), Some(200));
        still_answered(guard.metrics, 16); // METRICS_CONNECTIONS
        assert_eq!(status(guard.metrics, "/readyz"), Some(200));
    }

    #[test]
    fn aop_edge_proxy_metrics_slots_are_not_held_by_unread_pipelined_scrapes() {
        let c = Certs::new(&["a.example"]);
        let ca = c.origin_ca.pem();
        let args = [
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--origin",
            "https://a.example:9",
            "--resolve",
            "a.example:9:127.0.0.1",
            "--cacert",
            ca.to_str().unwrap(),
            "--cert",
            c.edge.cert.to_str().unwrap(),
            "--key",
            c.edge.key.to_str().unwrap(),
        ];
        let (mut child, _, log) = spawn_listening(&bin("aop-edge-proxy"), &args);
        let metrics: u16 = loop {
            let line = log.recv_timeout(Duration::from_secs(30)).unwrap();
            if let Some(addr) = line.split("metrics=").nth(1) {
                let addr = addr.split_whitespace().next().unwrap();
                break addr.rsplit(':').next().unwrap().parse().unwrap();
            }
        };
        assert_eq!(status(metrics, "/healthz"), Some(200));
        let result = std::panic::catch_unwind(|| still_answered(metrics, 8)); // CONNECTIONS
        let _ = child.kill();
        let _ = child.wait();
        if let Err(e) = result {
            std::panic::resume_unwind(e);
        }
    }
}
