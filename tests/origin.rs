//! aop-origin, the guard, end to end: the real binary with a config file, a plain-HTTP
//! echo upstream, and the edge (aop-edge's pooled client) in front. What belongs here:
//! config errors, forwarding and header hygiene, per-site isolation, optional mode,
//! reload under traffic, metrics, draining, and the demo.

#![allow(clippy::unwrap_used)] // test helpers: a panic is a test failure with a backtrace

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use aop_e2e::pki::{self, Leaf, TestCa};
use aop_e2e::upstream::{Echo, header};
use aop_e2e::{TempDir, bin, code, metric, run, stderr, stdout, tempdir};
use aop_edge::{EdgeClient, IdentitySpec, IdentityStore, Resolve, StoreSpec, Timeouts};
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Bytes;

struct World {
    dir: TempDir,
    origin_ca: TestCa,
    edge: Leaf,
}

fn world() -> World {
    let dir = tempdir().unwrap();
    let origin_ca = pki::ca(dir.path(), "origin-ca");
    origin_ca.origin(
        "origin",
        &["a.example", "*.a.example", "b.example", "opt.example"],
    );
    let edge_ca = pki::ca(dir.path(), "edge-ca");
    let edge = edge_ca.client_at(
        "edge",
        &["spiffe://cdn.test/edge"],
        time::OffsetDateTime::now_utc(),
        30,
    );
    World {
        dir,
        origin_ca,
        edge,
    }
}

fn site(hosts: &str, trust: &str, upstream: std::net::SocketAddr, extra: &str) -> String {
    format!(
        "\n[[site]]\nhostnames = [{hosts}]\ncert = \"origin-ca/origin/cert.pem\"\nkey = \"origin-ca/origin/key.pem\"\ntrust = [{trust}]\nupstream = \"http://{upstream}\"\n{extra}"
    )
}

/// The shared harness's guard, with this file's edge client.
struct Guard(aop_e2e::guard::Guard);

impl std::ops::Deref for Guard {
    type Target = aop_e2e::guard::Guard;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Guard {
    fn start(dir: &Path, sites: &str) -> Self {
        Self(aop_e2e::guard::Guard::start(dir, sites))
    }

    /// The aop-origin binary, for what only a process shows (signals, exit codes).
    fn spawn_binary(dir: &Path, sites: &str) -> Self {
        Self(aop_e2e::guard::Guard::spawn_binary(dir, sites))
    }

    fn start_with(dir: &Path, top: &str, sites: &str) -> Self {
        Self(aop_e2e::guard::Guard::start(dir, &format!("{top}{sites}")))
    }

    fn resolve(&self) -> Resolve {
        Resolve::new(
            ["a.example", "www.a.example", "b.example", "opt.example"]
                .iter()
                .map(|h| format!("{h}:{}:127.0.0.1", self.port).parse().unwrap()),
        )
    }

    fn client(&self, w: &World, identity: Option<&Leaf>) -> EdgeClient<Empty<Bytes>> {
        let mut spec = StoreSpec::new([w.origin_ca.pem()]);
        spec.shared = identity.map(|l| IdentitySpec::new(&l.cert, &l.key));
        // With no identity, a zone identity nobody uses keeps EdgeClient from refusing
        // to send: the probe-style anonymous case is tested through certtool probe.
        EdgeClient::new(
            IdentityStore::load(&spec).unwrap(),
            self.resolve(),
            Timeouts::default(),
        )
    }

    async fn metrics_text(&self) -> String {
        let port = self.metrics;
        tokio::task::spawn_blocking(move || http_get(port, "/metrics"))
            .await
            .unwrap()
            .1
    }
}

fn http_get(port: u16, path: &str) -> (u16, String) {
    use std::io::{Read as _, Write as _};
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        tcp,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    tcp.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    (
        head.split_whitespace().nth(1).unwrap().parse().unwrap(),
        body.to_owned(),
    )
}

async fn get(
    client: &EdgeClient<Empty<Bytes>>,
    url: &str,
    headers: &[(&str, &str)],
) -> Result<(u16, String, hyper::HeaderMap), aop_edge::Error> {
    let mut req = hyper::Request::get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client.request(req.body(Empty::new()).unwrap()).await?;
    let status = resp.status().as_u16();
    let h = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned(), h))
}

#[test]
fn a_bad_config_exits_2_naming_file_line_and_key() {
    let w = world();
    let dir = w.dir.path();
    let up = "127.0.0.1:9".parse().unwrap();
    let cases = [
        (
            format!(
                "listen = \"127.0.0.1:0\"\n{}mode = \"sometimes\"\n",
                site("\"a.example\"", "\"edge-ca/ca.pem\"", up, "")
            ),
            9,
            "key `mode`: invalid policy: mode \"sometimes\"",
        ),
        (
            format!(
                "listen = \"127.0.0.1:0\"\nlisten_backlog = 5\n{}",
                site("\"a.example\"", "\"edge-ca/ca.pem\"", up, "")
            ),
            2,
            "key `listen_backlog`: unknown field",
        ),
        (
            format!(
                "listen = \"here\"\n{}",
                site("\"a.example\"", "\"edge-ca/ca.pem\"", up, "")
            ),
            1,
            "key `listen`: \"here\" is not an address",
        ),
        (
            format!(
                "listen = \"127.0.0.1:0\"\n{}",
                site("\"a.example\"", "\"edge-ca/missing.pem\"", up, "")
            ),
            7,
            "edge-ca/missing.pem: cannot read",
        ),
        (
            format!(
                "listen = \"127.0.0.1:0\"\n{}",
                site("\"a.example\"", "\"origin-ca/origin/key.pem\"", up, "")
            ),
            7,
            "expected a certificate, found a private key",
        ),
    ];
    let config = dir.join("bad.toml");
    for (text, line, want) in cases {
        std::fs::write(&config, &text).unwrap();
        for check in [false, true] {
            let mut cmd = Command::new(bin("aop-origin"));
            cmd.args(["--config", config.to_str().unwrap()]);
            if check {
                cmd.arg("--check");
            }
            let o = run(&mut cmd);
            assert_eq!(code(&o), 2, "{text}\n{}", stderr(&o));
            let err = stderr(&o);
            assert_eq!(err.lines().count(), 1, "{err}");
            let prefix = format!("aop-origin: {}:{line}: ", config.display());
            assert!(err.starts_with(&prefix), "want {prefix:?}, got {err:?}");
            assert!(err.contains(want), "want {want:?} in {err:?}");
        }
    }
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\n{}",
            site("\"a.example\"", "\"edge-ca/ca.pem\"", up, "")
        ),
    )
    .unwrap();
    let o = run(Command::new(bin("aop-origin")).args([
        "--config",
        config.to_str().unwrap(),
        "--check",
    ]));
    assert_eq!(
        (code(&o), stdout(&o)),
        (0, format!("{}: ok\n", config.display()))
    );
    let o = run(&mut Command::new(bin("aop-origin")));
    assert_eq!(code(&o), 2);
}

#[tokio::test]
async fn the_guard_forwards_with_the_real_verdict_and_strips_forged_headers() {
    let w = world();
    let echo = Echo::start().await;
    // HTTP/1.1 (a `Connection` header and a Host apart from the target are HTTP/1.1's;
    // the same hygiene on HTTP/2 is in tests/origin_h2.rs).
    let g = Guard::start(
        w.dir.path(),
        &site(
            "\"a.example\", \"*.a.example\"",
            "\"edge-ca/ca.pem\"",
            echo.addr,
            "alpn = [\"http/1.1\"]\n",
        ),
    );
    let client = g.client(&w, Some(&w.edge));
    let forged = [
        ("x-client-verify", "SUCCESS"),
        ("x-client-cert-subject", "CN=admin"),
        ("x-client-cert-fingerprint", "00"),
        ("x-forwarded-client-cert", "Hash=00;Subject=\"CN=admin\""),
        ("cf-connecting-ip", "198.51.100.7"),
        ("x-forwarded-for", "198.51.100.7, 10.0.0.1"),
        ("x-request-id", "edge-req-1"),
        ("x_client_verify", "SUCCESS-forged"),
        ("X_Client_Cert_Subject", "CN=admin"),
        // Connection names headers as hop-by-hop: they go, but the guard's own verdict
        // headers, set after the strip, cannot be removed this way.
        (
            "connection",
            "x-client-verify, X-Forwarded-Client-Cert, x-hop-secret",
        ),
        ("x-hop-secret", "1"),
    ];
    let (status, body, resp_headers) = get(
        &client,
        &format!("https://www.a.example:{}/path?q=1", g.port),
        &forged,
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let edge = aop_pki::CertInfo::from_der(
        &aop_pki::load_certificates(&w.edge.cert).unwrap()[0],
        time::OffsetDateTime::now_utc(),
    )
    .unwrap();
    assert_eq!(header(&body, "x-client-verify").as_deref(), Some("SUCCESS"));
    assert_eq!(
        header(&body, "x-client-cert-subject").as_deref(),
        Some("CN=edge")
    );
    assert_eq!(
        header(&body, "x-client-cert-issuer").as_deref(),
        Some("CN=edge-ca")
    );
    assert_eq!(
        header(&body, "x-client-cert-fingerprint"),
        Some(edge.sha256.to_string())
    );
    assert_eq!(
        header(&body, "x-client-cert-serial"),
        Some(edge.serial.clone())
    );
    assert_eq!(
        header(&body, "x-client-cert-not-after"),
        Some(aop_pki::rfc3339(edge.not_after))
    );
    assert_eq!(
        header(&body, "x-forwarded-client-cert"),
        Some(format!(
            "Hash={};Subject=\"CN=edge\";URI=\"spiffe://cdn.test/edge\"",
            edge.sha256
        ))
    );
    assert_eq!(
        body.matches("x-client-verify").count(),
        1,
        "exactly one copy: {body}"
    );
    assert!(!body.contains("CN=admin"), "{body}");
    assert_eq!(header(&body, "x-hop-secret"), None, "{body}");
    assert_eq!(header(&body, "connection"), None, "{body}");
    // What the edge says about the visitor passes through; the request id too.
    assert_eq!(
        header(&body, "cf-connecting-ip").as_deref(),
        Some("198.51.100.7")
    );
    assert_eq!(
        header(&body, "x-forwarded-for").as_deref(),
        Some("198.51.100.7, 10.0.0.1, 127.0.0.1")
    );
    assert_eq!(header(&body, "x-request-id").as_deref(), Some("edge-req-1"));
    assert_eq!(resp_headers.get("x-request-id").unwrap(), "edge-req-1");
    let access = g.wait_log("aop::access");
    for want in [
        "request_id=edge-req-1",
        "verdict=SUCCESS",
        "status=200",
        "cf_connecting_ip=198.51.100.7",
        "path=\"/path?q=1\"",
    ] {
        assert!(access.contains(want), "{want} in {access}");
    }
    // Headers the client's Connection names are one hop's: not forwarded, not logged as
    // the visitor's, and its request id is not adopted.
    let (status, body, resp_headers) = get(
        &client,
        &format!("https://www.a.example:{}/hop", g.port),
        &[
            (
                "connection",
                "cf-connecting-ip, X-Request-Id, x-forwarded-for",
            ),
            ("cf-connecting-ip", "203.0.113.9"),
            ("x-forwarded-for", "203.0.113.9"),
            ("x-request-id", "hop-id"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(!body.contains("203.0.113.9"), "{body}");
    let id = resp_headers.get("x-request-id").unwrap().to_str().unwrap();
    assert_ne!(id, "hop-id");
    assert_eq!(header(&body, "x-request-id").as_deref(), Some(id));
    let access = g.wait_log("path=/hop");
    assert!(!access.contains("203.0.113.9"), "{access}");
    assert!(access.contains(&format!("request_id={id}")), "{access}");
    // A Host outside the connection's site: 421, never reaches the upstream.
    let before = echo.requests.load(std::sync::atomic::Ordering::Relaxed);
    let (status, _, _) = get(
        &client,
        &format!("https://www.a.example:{}/", g.port),
        &[("host", "b.example")],
    )
    .await
    .unwrap();
    assert_eq!(status, 421);
    assert_eq!(
        echo.requests.load(std::sync::atomic::Ordering::Relaxed),
        before
    );
}

#[tokio::test]
async fn each_site_trusts_only_its_own_edge_and_optional_mode_passes_verdicts_on() {
    let w = world();
    let echo = Echo::start().await;
    let b_ca = pki::ca(w.dir.path(), "b-ca");
    let b_edge = b_ca.client("b-edge");
    let sites = site("\"a.example\"", "\"edge-ca/ca.pem\"", echo.addr, "")
        + &site("\"b.example\"", "\"b-ca/ca.pem\"", echo.addr, "")
        + &site(
            "\"opt.example\"",
            "\"edge-ca/ca.pem\"",
            echo.addr,
            "mode = \"optional\"\n",
        );
    let g = Guard::start(w.dir.path(), &sites);

    let a = g.client(&w, Some(&w.edge));
    let b = g.client(&w, Some(&b_edge));
    assert_eq!(
        get(&a, &format!("https://a.example:{}/", g.port), &[])
            .await
            .unwrap()
            .0,
        200
    );
    assert_eq!(
        get(&b, &format!("https://b.example:{}/", g.port), &[])
            .await
            .unwrap()
            .0,
        200
    );
    // Zone A's edge certificate on zone B: refused, and said so.
    let err = get(&a, &format!("https://b.example:{}/", g.port), &[])
        .await
        .unwrap_err();
    assert_eq!(
        aop_edge::classify(&err),
        aop_edge::Failure::Refused {
            alert: "access_denied".into()
        },
        "{err}"
    );
    let err = get(&b, &format!("https://a.example:{}/", g.port), &[])
        .await
        .unwrap_err();
    assert!(
        matches!(aop_edge::classify(&err), aop_edge::Failure::Refused { .. }),
        "{err}"
    );

    // Optional mode: the upstream decides, with the real verdict in hand.
    let (status, body, _) = get(
        &b,
        &format!("https://opt.example:{}/", g.port),
        &[("x-client-verify", "SUCCESS")],
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        header(&body, "x-client-verify").as_deref(),
        Some("FAILED:zone_mismatch")
    );
    assert_eq!(
        header(&body, "x-client-cert-subject").as_deref(),
        Some("CN=b-edge")
    );
    assert_eq!(
        header(&body, "x-forwarded-client-cert"),
        None,
        "only a verified certificate is forwarded as XFCC"
    );

    let metrics = g.metrics_text().await;
    for series in [
        "aop_handshakes_total{site=\"b.example\",verdict=\"FAILED\",reason=\"zone_mismatch\"}",
        "aop_handshakes_total{site=\"a.example\",verdict=\"FAILED\",reason=\"zone_mismatch\"}",
        "aop_handshakes_total{site=\"a.example\",verdict=\"SUCCESS\",reason=\"\"}",
        "aop_handshakes_total{site=\"opt.example\",verdict=\"FAILED\",reason=\"zone_mismatch\"}",
        "aop_requests_total{site=\"a.example\",status=\"200\"}",
    ] {
        assert_eq!(metric(&metrics, series), Some(1), "{series}\n{metrics}");
    }
    assert!(
        metrics.contains("# TYPE aop_days_until_first_cert_expiring gauge"),
        "{metrics}"
    );
    let days: i64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("aop_days_until_first_cert_expiring "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (364..=365).contains(&days),
        "the edge is not counted; the origin cert (365 d) and CAs (3650 d) are: {days}"
    );
    assert_eq!(http_get(g.metrics, "/healthz"), (200, "ok\n".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reload_in_the_middle_of_steady_traffic_fails_no_request() {
    let w = world();
    let echo = Echo::start().await;
    let next_ca = pki::ca(w.dir.path(), "next-ca");
    let next_edge = next_ca.client("next-edge");
    let g = Guard::spawn_binary(
        w.dir.path(),
        &site("\"a.example\"", "\"edge-ca/ca.pem\"", echo.addr, ""),
    );
    let url = format!("https://a.example:{}/", g.port);
    let pooled = std::sync::Arc::new(g.client(&w, Some(&w.edge)));

    // Steady load until the reloads are done (and at least 60 requests each): 4 workers,
    // every 5th request on a fresh connection.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (pooled, url, fresh_spec, done) = (
            pooled.clone(),
            url.clone(),
            (w.origin_ca.pem(), w.edge.clone(), g.resolve()),
            done.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            let mut i = 0;
            while i < 60 || !done.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                let r = if i % 5 == 0 {
                    let mut spec = StoreSpec::new([fresh_spec.0.clone()]);
                    spec.shared = Some(IdentitySpec::new(&fresh_spec.1.cert, &fresh_spec.1.key));
                    let fresh: EdgeClient<Empty<Bytes>> = EdgeClient::new(
                        IdentityStore::load(&spec).unwrap(),
                        fresh_spec.2.clone(),
                        Timeouts::default(),
                    );
                    get(&fresh, &url, &[]).await
                } else {
                    get(&pooled, &url, &[]).await
                };
                match r {
                    Ok((200, _, _)) => {}
                    other => failures.push(format!("{i}: {other:?}")),
                }
            }
            failures
        }));
    }
    // Meanwhile: trust the next CA too (reload), then a broken config (refused), then the
    // good one again.
    let good = std::fs::read_to_string(&g.config).unwrap().replace(
        "\"edge-ca/ca.pem\"",
        "\"edge-ca/ca.pem\", \"next-ca/ca.pem\"",
    );
    // The load is under way before the first reload.
    aop_e2e::wait_until_async("20 requests served", Duration::from_secs(20), || {
        (echo.requests.load(std::sync::atomic::Ordering::Relaxed) >= 20).then_some(())
    })
    .await;
    std::fs::write(&g.config, &good).unwrap();
    g.signal("-HUP");
    g.wait_log("configuration reloaded");
    std::fs::write(
        &g.config,
        good.replace("next-ca/ca.pem", "next-ca/missing.pem"),
    )
    .unwrap();
    g.signal("-HUP");
    let refused = g.wait_log("reload refused");
    assert!(
        refused.contains("next-ca/missing.pem: cannot read"),
        "{refused}"
    );
    std::fs::write(&g.config, &good).unwrap();
    g.signal("-HUP");
    g.wait_log("configuration reloaded");
    done.store(true, std::sync::atomic::Ordering::Relaxed);

    let mut failures = Vec::new();
    for wkr in workers {
        failures.extend(wkr.await.unwrap());
    }
    assert!(
        failures.is_empty(),
        "{} failed requests: {failures:?}",
        failures.len()
    );
    assert!(echo.requests.load(std::sync::atomic::Ordering::Relaxed) >= 240);

    // The reload took: the next CA's edge gets in.
    let next = g.client(&w, Some(&next_edge));
    assert_eq!(get(&next, &url, &[]).await.unwrap().0, 200);
    let metrics = g.metrics_text().await;
    assert_eq!(
        metric(
            &metrics,
            "aop_config_reloads_total{result=\"success\",source=\"signal\"}"
        ),
        Some(2),
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            "aop_config_reloads_total{result=\"failure\",source=\"signal\"}"
        ),
        Some(1),
        "{metrics}"
    );
}

#[tokio::test]
async fn sigterm_lets_the_request_in_flight_finish() {
    let w = world();
    let echo = Echo::start().await;
    let mut g = Guard::spawn_binary(
        w.dir.path(),
        &site("\"a.example\"", "\"edge-ca/ca.pem\"", echo.addr, ""),
    );
    let client = g.client(&w, Some(&w.edge));
    let url = format!("https://a.example:{}/?sleep_ms=500", g.port);
    let slow = tokio::spawn(async move { get(&client, &url, &[]).await });
    // Wait until the request is really in flight (at the upstream), however slow the machine.
    aop_e2e::wait_until_async(
        "the request at the upstream",
        Duration::from_secs(20),
        || (echo.started.load(std::sync::atomic::Ordering::Relaxed) > 0).then_some(()),
    )
    .await;
    g.signal("-TERM");
    let (status, _, _) = slow.await.unwrap().unwrap();
    assert_eq!(status, 200, "the request in flight completes");
    assert_eq!(g.0.wait_exit(), Some(0), "the guard exits 0 after SIGTERM");
}

#[test]
fn the_demo_runs_and_every_expectation_holds() {
    let o = run(Command::new(bin("aop-origin")).arg("demo"));
    let out = stdout(&o);
    assert_eq!(code(&o), 0, "{out}{}", stderr(&o));
    assert!(out.contains("demo: every expectation held"), "{out}");
    for want in [
        "verdict=SUCCESS",
        "verdict=NONE",
        "verdict=FAILED:unknown_ca",
        "PASS",
    ] {
        assert!(out.contains(want), "{want} in {out}");
    }
    assert!(!out.contains("FAIL "), "{out}");
}

#[tokio::test]
async fn json_logs_are_one_object_per_line_with_the_verdict_fields() {
    let w = world();
    let echo = Echo::start().await;
    let g = Guard::start_with(
        w.dir.path(),
        "log_format = \"json\"\n",
        &site("\"a.example\"", "\"edge-ca/ca.pem\"", echo.addr, ""),
    );
    let client = g.client(&w, Some(&w.edge));
    assert_eq!(
        get(&client, &format!("https://a.example:{}/", g.port), &[])
            .await
            .unwrap()
            .0,
        200
    );
    let verdict: serde_json::Value = serde_json::from_str(&g.wait_log("aop::verdict")).unwrap();
    assert_eq!(verdict["fields"]["verdict"], "SUCCESS");
    assert_eq!(verdict["fields"]["subject"], "CN=edge");
    assert_eq!(verdict["fields"]["rule"], "a.example");
    assert_eq!(verdict["level"], "INFO");
    assert_eq!(verdict["target"], "aop::verdict");
    let sha = verdict["fields"]["sha256"].as_str().unwrap();
    assert!(
        sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()),
        "{sha}"
    );
    assert!(
        verdict["fields"]["peer"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    assert_eq!(verdict["fields"]["resumed"], false);
    let access: serde_json::Value = serde_json::from_str(&g.wait_log("aop::access")).unwrap();
    assert_eq!(access["fields"]["status"], 200);
    assert_eq!(access["fields"]["verdict"], "SUCCESS");
}

#[tokio::test]
async fn an_upstream_that_is_down_gets_502_and_is_counted() {
    let w = world();
    // A port nothing listens on (held, so nothing can start listening there meanwhile).
    let (_held, port) = aop_e2e::refused_port();
    let dead = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let g = Guard::start(
        w.dir.path(),
        &site("\"a.example\"", "\"edge-ca/ca.pem\"", dead, ""),
    );
    let client = g.client(&w, Some(&w.edge));
    let (status, body, _) = get(&client, &format!("https://a.example:{}/", g.port), &[])
        .await
        .unwrap();
    assert_eq!(
        (status, body.as_str()),
        (502, "upstream unavailable: connection refused\n")
    );
    let metrics = g.metrics_text().await;
    assert_eq!(
        metric(&metrics, "aop_upstream_errors_total{site=\"a.example\"}"),
        Some(1),
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            "aop_requests_total{site=\"a.example\",status=\"502\"}"
        ),
        Some(1),
        "{metrics}"
    );
}

/// curl as the edge, through the guard: an outside TLS stack against aop-origin. With the
/// edge's certificate it is served over HTTP/2 (a site offers `h2` by default; more in
/// tests/origin_h2.rs) and the verdict headers reach the upstream; without a
/// certificate, or with one from a CA the site does not trust, the handshake is refused
/// (curl exits 56: the TLS 1.3 alert arrives after curl's side of the handshake is done,
/// on its first read) and the guard's verdict line says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_as_the_edge_through_the_guard() {
    if !aop_e2e::have_peer("curl", "curl_as_the_edge_through_the_guard") {
        return;
    }
    let w = world();
    let echo = Echo::start().await;
    let foreign = pki::ca(w.dir.path(), "foreign-ca").client("foreign");
    let g = Guard::start(
        w.dir.path(),
        &site("\"a.example\"", "\"edge-ca/ca.pem\"", echo.addr, ""),
    );
    let roots = w.origin_ca.pem();
    let curl = |identity: Option<&Leaf>| {
        let mut c = aop_e2e::curl("a.example", g.port, &roots, identity);
        c.args([
            "--http2",
            "--write-out",
            "\nversion=%{http_version} status=%{http_code}\n",
        ]);
        tokio::task::block_in_place(|| run(&mut c))
    };

    let o = curl(Some(&w.edge));
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let body = stdout(&o);
    assert!(body.ends_with("\nversion=2 status=200\n"), "{body}");
    assert_eq!(header(&body, "x-client-verify").as_deref(), Some("SUCCESS"));
    assert_eq!(
        header(&body, "x-client-cert-subject").as_deref(),
        Some("CN=edge")
    );
    let line = g.wait_log("client certificate verdict");
    assert!(
        line.contains("verdict=SUCCESS") && line.contains("subject=\"CN=edge\""),
        "{line}"
    );

    for (case, identity, verdict, reason, said) in [
        (
            "anonymous",
            None,
            "verdict=NONE",
            "reason=no_certificate",
            "alert certificate required",
        ),
        (
            "foreign CA",
            Some(&foreign),
            "verdict=FAILED:unknown_ca",
            "reason=unknown_ca",
            "alert unknown ca",
        ),
    ] {
        let o = curl(identity);
        // 56: the TLS 1.3 alert, read after curl's side of the handshake; 55: curl's
        // HTTP/2 set-up found the socket closed first (no alert text then).
        let rc = code(&o);
        assert!(rc == 56 || rc == 55, "{case}: {}{}", stdout(&o), stderr(&o));
        assert!(
            rc == 55 || stderr(&o).contains(said),
            "{case}: {}",
            stderr(&o)
        );
        assert!(!stdout(&o).contains("status=200"), "{case}: {}", stdout(&o));
        let line = g.wait_log("client certificate verdict");
        assert!(
            line.contains(verdict) && line.contains(reason),
            "{case}: {line}"
        );
    }
    assert_eq!(echo.requests.load(std::sync::atomic::Ordering::Relaxed), 1);
}
