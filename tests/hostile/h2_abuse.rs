//! HTTP/2 abuse of the guard, frame by frame: malformed frames, SETTINGS and PING floods,
//! header floods (endless CONTINUATION, header lists past the limit), stream-reset
//! storms, more streams than SETTINGS_MAX_CONCURRENT_STREAMS, and a client that never
//! gives flow-control credit. The attacker is `tests/h2abuse/attack.py` (Python's ssl
//! with the edge's certificate, frames built by hand, PyPI `hyperframe` and `hpack` to
//! read the server: no aop code on that side); it refuses to attack a connection that
//! did not negotiate h2 and exchange SETTINGS, so nothing here can pass without reaching
//! HTTP/2. Each test asserts what the server sent (GOAWAY and its error code, RST_STREAM,
//! statuses), what reached the upstream (counted there), and that a well-behaved
//! `curl --http2` is served meanwhile. Scaled down to run in seconds.

use std::io::{BufRead as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::time::Duration;

use aop_e2e::guard::{Certs, Guard};
use aop_e2e::upstream::Echo;
use serde_json::Value;

fn site(upstream: std::net::SocketAddr) -> String {
    format!(
        "\n[[site]]\nhostnames = [\"a.test\"]\ncert = \"origin-ca/origin/cert.pem\"\nkey = \"origin-ca/origin/key.pem\"\n\
         trust = [\"edge-ca/ca.pem\"]\nupstream = \"http://{upstream}\"\n"
    )
}

/// The attack script's command line against `port` (SNI a.test), as the edge.
fn attack(python: &Path, certs: &Certs, port: u16, args: &[&str]) -> Command {
    let mut c = Command::new(python);
    c.arg(aop_e2e::workspace_root().join("tests/h2abuse/attack.py"))
        .args(["--port", &port.to_string(), "--sni", "a.test", "--ca"])
        .arg(certs.origin_ca.pem())
        .arg("--cert")
        .arg(&certs.edge.cert)
        .arg("--key")
        .arg(&certs.edge.key)
        .args(args);
    c
}

/// The `RESULT` of an attack's output, checked to have been made over h2 (the script
/// exits before attacking otherwise, and this fails with what it said).
fn result(out: &str, err: &str) -> Value {
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("the attack gave no result:\n{out}\n{err}"));
    let r: Value = serde_json::from_str(line).unwrap();
    assert_eq!(r["alpn"], "h2", "{r}");
    assert!(r["server_settings"].is_object(), "{r}");
    r
}

/// Run an attack to its end (at most 60 s).
async fn run_attack(python: &Path, certs: &Certs, port: u16, args: &[&str]) -> Value {
    let mut cmd = attack(python, certs, port, args);
    let out = tokio::task::spawn_blocking(move || {
        aop_e2e::run_within(&mut cmd, &[], Duration::from_secs(60))
    })
    .await
    .unwrap();
    result(&aop_e2e::stdout(&out), &aop_e2e::stderr(&out))
}

/// An attack started with `--hold`: it writes its flood, says `HELD`, and waits for
/// [`Held::release`].
struct Held {
    child: Child,
    lines: Receiver<String>,
}

impl Held {
    fn start(python: &Path, certs: &Certs, port: u16, args: &[&str]) -> (Self, Value) {
        let mut child = attack(python, certs, port, args)
            .arg("--hold")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(l);
            }
        });
        let held = lines
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("the attack did not say HELD"));
        let said = held
            .strip_prefix("HELD ")
            .unwrap_or_else(|| panic!("expected HELD, got {held}"));
        let said = serde_json::from_str(said).unwrap();
        (Self { child, lines }, said)
    }

    /// Let it read again, and take its result.
    fn release(mut self) -> Value {
        writeln!(self.child.stdin.as_mut().unwrap(), "go").unwrap();
        let mut out = String::new();
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(60)) {
            out.push_str(&l);
            out.push('\n');
        }
        let _ = aop_e2e::wait_within(&mut self.child, Duration::from_secs(10));
        result(&out, "")
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `curl --http2` with the edge's certificate: "HTTP-VERSION STATUS".
async fn curl_h2(certs: &Certs, port: u16) -> String {
    let (roots, edge) = (certs.origin_ca.pem(), certs.edge.clone());
    tokio::task::spawn_blocking(move || {
        let mut c = aop_e2e::curl("a.test", port, &roots, Some(&edge));
        c.args([
            "--http2",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} %{http_code}",
        ]);
        aop_e2e::stdout(&aop_e2e::run(&mut c))
    })
    .await
    .unwrap()
}

/// The GOAWAY the server sent: (error name, debug data).
fn goaway(r: &Value) -> (&str, &str) {
    let g = &r["goaway"];
    assert!(g.is_object(), "no GOAWAY: {r}");
    (g["error"].as_str().unwrap(), g["debug"].as_str().unwrap())
}

/// The attacker's Python and curl (`None`: missing, and skipping allowed).
fn python(test: &str) -> Option<PathBuf> {
    aop_e2e::python(test).filter(|_| aop_e2e::have_peer("curl", test))
}

/// The attacker's Python, and the guard for a.test (`config` first in its file) in front
/// of an echo upstream; `None` if a peer is missing and skipping is allowed.
async fn attacked(test: &str, config: &str) -> Option<(PathBuf, Certs, Echo, Guard)> {
    let py = python(test)?;
    let (certs, echo, guard) =
        super::guarded(&["a.test"], |up| format!("{config}{}", site(up))).await;
    Some((py, certs, echo, guard))
}

/// A DATA frame on stream 0 and a header block that names a table entry that does not
/// exist each end the connection with GOAWAY PROTOCOL_ERROR; a frame one byte longer
/// than SETTINGS_MAX_FRAME_SIZE with GOAWAY FRAME_SIZE_ERROR. (RFC 9113 §4.3 asks for
/// COMPRESSION_ERROR on a header block that cannot be decoded; the h2 crate answers
/// PROTOCOL_ERROR, a connection error all the same.) Nothing reaches the upstream, and
/// the guard serves the next client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_end_the_connection_with_the_right_goaway() {
    let Some((py, certs, echo, guard)) = attacked(
        "malformed_frames_end_the_connection_with_the_right_goaway",
        "",
    )
    .await
    else {
        return;
    };
    for (attack, error, last_stream) in [
        ("data-on-stream-0", "PROTOCOL_ERROR", 0),
        ("bad-hpack", "PROTOCOL_ERROR", 0),
        ("oversized-frame", "FRAME_SIZE_ERROR", 1),
    ] {
        let r = run_attack(&py, &certs, guard.port, &[attack]).await;
        assert_eq!(goaway(&r).0, error, "{attack}: {r}");
        assert_eq!(r["goaway"]["last_stream_id"], last_stream, "{attack}: {r}");
        assert_eq!(r["closed"], true, "{attack}: {r}");
        assert_eq!(r["statuses"], serde_json::json!({}), "{attack}: {r}");
        // And the guard says why the connection ended.
        let line = guard.wait_log("connection ended by an HTTP error");
        assert!(line.contains("error="), "{attack}: {line}");
    }
    // The oversized frame was a request body's: the request it belonged to may have
    // started (stream 1 is the GOAWAY's last stream), nothing else did.
    assert!(echo.started.load(Ordering::SeqCst) <= 1);
    assert_eq!(curl_h2(&certs, guard.port).await, "2 200");
}

/// 20 000 SETTINGS frames, then 20 000 PINGs, written without reading a single
/// acknowledgement: the h2 crate acknowledges one at a time and reads nothing more until
/// that acknowledgement is written (proto/settings.rs, proto/ping_pong.rs), so a flood
/// costs the server CPU and socket buffers, not memory. The connection survives: once
/// the client reads, every frame is acknowledged and a request on it is answered; the
/// guard serves curl while the flood is unread, and its resident memory (the binary,
/// measured from /proc) grows by less than 16 MiB over both floods.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_and_ping_floods_are_acknowledged_one_at_a_time() {
    let Some(py) = python("settings_and_ping_floods_are_acknowledged_one_at_a_time") else {
        return;
    };
    let certs = Certs::new(&["a.test"]);
    let echo = Echo::start().await;
    let config = certs.dir.path().join("origin.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\nlog_format = \"json\"\n{}",
            site(echo.addr)
        ),
    )
    .unwrap();
    let (child, port, _log) = aop_e2e::spawn_listening(
        &aop_e2e::bin("aop-origin"),
        &["--config", config.to_str().unwrap()],
    );
    let guard = aop_e2e::Running(child);
    let pid = guard.0.id();
    assert_eq!(curl_h2(&certs, port).await, "2 200");
    let before = rss_kib(pid);
    for flood in ["settings-flood", "ping-flood"] {
        let (held, said) = Held::start(&py, &certs, port, &[flood, "--count", "20000"]);
        assert_eq!(said["written"], 20000, "{flood}: {said}");
        assert_eq!(curl_h2(&certs, port).await, "2 200", "{flood}");
        let r = held.release();
        let acks = if flood == "settings-flood" {
            "settings_acks"
        } else {
            "ping_acks"
        };
        assert_eq!(r[acks], 20000, "{flood}: {r}");
        assert!(r["goaway"].is_null(), "{flood}: {r}");
        assert_eq!(r["closed"], false, "{flood}: {r}");
        assert_eq!(r["statuses"], serde_json::json!({"1": 200}), "{flood}: {r}");
    }
    let after = rss_kib(pid);
    assert!(
        after < before + 16 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
    // curl before and during each flood, and the request after each.
    assert_eq!(echo.started.load(Ordering::SeqCst), 5);
}

/// Resident memory of a process, KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// Header floods never reach the service: a HEADERS frame without END_HEADERS followed by
/// endless CONTINUATION frames is GOAWAY ENHANCE_YOUR_CALM ("too_many_continuations")
/// after a handful; a header list of 16 384 bytes as HTTP/2 counts it (the limit,
/// SETTINGS_MAX_HEADER_LIST_SIZE, is exclusive) is answered 431 on its stream and the
/// connection goes on (the next stream is served), while one byte less is served; one
/// over four times the limit is GOAWAY ENHANCE_YOUR_CALM ("header_list_way_too_large").
/// The upstream sees only the well-behaved requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_floods_never_reach_the_service() {
    let Some((py, certs, echo, guard)) =
        attacked("header_floods_never_reach_the_service", "").await
    else {
        return;
    };
    let r = run_attack(
        &py,
        &certs,
        guard.port,
        &["continuation-flood", "--count", "1000"],
    )
    .await;
    assert_eq!(
        goaway(&r),
        ("ENHANCE_YOUR_CALM", "too_many_continuations"),
        "{r}"
    );
    assert_eq!(r["closed"], true, "{r}");
    assert!(r["continuations_sent"].as_u64().unwrap() < 20, "{r}");
    assert_eq!(echo.started.load(Ordering::SeqCst), 0);

    let r = run_attack(&py, &certs, guard.port, &["big-headers", "--size", "16384"]).await;
    assert_eq!(
        r["statuses"],
        serde_json::json!({"1": 431, "3": 200}),
        "{r}"
    );
    assert!(r["goaway"].is_null(), "{r}");
    assert_eq!(echo.started.load(Ordering::SeqCst), 1);
    let r = run_attack(&py, &certs, guard.port, &["big-headers", "--size", "16383"]).await;
    assert_eq!(
        r["statuses"],
        serde_json::json!({"1": 200, "3": 200}),
        "{r}"
    );
    assert_eq!(echo.started.load(Ordering::SeqCst), 3);

    let r = run_attack(&py, &certs, guard.port, &["big-headers", "--size", "70000"]).await;
    assert_eq!(
        goaway(&r),
        ("ENHANCE_YOUR_CALM", "header_list_way_too_large"),
        "{r}"
    );
    assert_eq!(r["closed"], true, "{r}");
    assert_eq!(echo.started.load(Ordering::SeqCst), 3);
    assert_eq!(curl_h2(&certs, guard.port).await, "2 200");
    // The 431 is h2's own, before any service: the guard counted no such request.
    assert_eq!(
        guard.metric("aop_requests_total{site=\"a.test\",status=\"431\"}"),
        0
    );
}

/// 150 requests opened at once (their bodies still to come, so all stay open) on a
/// connection whose server said SETTINGS_MAX_CONCURRENT_STREAMS 100: the 50 past the
/// limit are refused (RST_STREAM REFUSED_STREAM, safe for a client to retry), the first
/// 100 reach the upstream and are answered once their bodies end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_past_the_concurrency_limit_are_refused() {
    let Some((py, certs, echo, guard)) =
        attacked("streams_past_the_concurrency_limit_are_refused", "").await
    else {
        return;
    };
    let r = run_attack(
        &py,
        &certs,
        guard.port,
        &["too-many-streams", "--count", "150"],
    )
    .await;
    assert_eq!(r["server_settings"]["3"], 100, "{r}");
    let ids = |first: u64, n: u64| (0..n).map(move |i| (first + 2 * i).to_string());
    let resets = r["resets"].as_object().unwrap();
    let statuses = r["statuses"].as_object().unwrap();
    assert_eq!(resets.len(), 50, "{r}");
    for id in ids(201, 50) {
        assert_eq!(resets[&id], "REFUSED_STREAM", "stream {id}: {r}");
    }
    assert_eq!(statuses.len(), 100, "{r}");
    for id in ids(1, 100) {
        assert_eq!(statuses[&id], 200, "stream {id}: {r}");
    }
    assert!(r["goaway"].is_null(), "{r}");
    assert_eq!(echo.started.load(Ordering::SeqCst), 100);
    assert_eq!(curl_h2(&certs, guard.port).await, "2 200");
}

/// Stream-reset storms. Each HEADERS followed at once by its RST_STREAM: the streams are
/// reset before the server takes them, and past 20 such streams pending at once (h2's
/// max_pending_accept_reset_streams, the CVE-2023-44487 bound) the connection ends with
/// GOAWAY ENHANCE_YOUR_CALM "too_many_resets" — having started almost nothing upstream.
/// Then the storm that evades that bound: ten requests at a time, a PING after them, and
/// their RST_STREAMs only once the PING is acknowledged, so every request has started
/// (its upstream request is under way, held by `?sleep_ms`) before it is cancelled. Past
/// Http2Limits::max_abandoned_streams (100) the glue sends GOAWAY (NO_ERROR: it is a
/// graceful end; streams opened after it are answered 421) and the guard logs
/// `goaway="reset_storm"`; the upstream saw at most those 100 and the streams open when
/// the GOAWAY went (≤ 100 more), never the whole storm.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_storms_end_the_connection() {
    let Some((py, certs, echo, guard)) = attacked("reset_storms_end_the_connection", "").await
    else {
        return;
    };
    // In writes of 21 pairs: the 21st reset pending at once is the batch's last frame, so
    // the server has read everything when it answers GOAWAY (bytes it never read would
    // turn its close into a TCP reset that can overtake the GOAWAY).
    let r = run_attack(
        &py,
        &certs,
        guard.port,
        &["reset-storm", "--count", "2100", "--batch", "21"],
    )
    .await;
    assert_eq!(goaway(&r), ("ENHANCE_YOUR_CALM", "too_many_resets"), "{r}");
    assert_eq!(r["closed"], true, "{r}");
    assert!(r["pairs_sent"].as_u64().unwrap() < 2100, "{r}");
    assert!(echo.started.load(Ordering::SeqCst) < 100);

    let started = echo.started.load(Ordering::SeqCst);
    let r = run_attack(
        &py,
        &certs,
        guard.port,
        &[
            "reset-storm",
            "--count",
            "500",
            "--sync",
            "--batch",
            "10",
            "--path",
            "/?sleep_ms=3000",
        ],
    )
    .await;
    let upstream = echo.started.load(Ordering::SeqCst) - started;
    assert_eq!(goaway(&r).0, "NO_ERROR", "{r}");
    assert_eq!(r["closed"], true, "{r}");
    assert!(r["pairs_sent"].as_u64().unwrap() < 500, "{r}");
    assert!(
        upstream <= 200,
        "{upstream} requests reached the upstream: {r}"
    );
    guard.wait_log("goaway=reset_storm");
    assert_eq!(curl_h2(&certs, guard.port).await, "2 200");
}

/// A client that sets SETTINGS_INITIAL_WINDOW_SIZE 0 and never sends WINDOW_UPDATE asks
/// for a response that cannot be sent: the stream is reset (RST_STREAM CANCEL) once it
/// has waited send_timeout_secs for credit, and the connection goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_withholding_flow_control_credit_has_its_stream_reset() {
    let Some((py, certs, _echo, guard)) = attacked(
        "a_client_withholding_flow_control_credit_has_its_stream_reset",
        "send_timeout_secs = 1\n",
    )
    .await
    else {
        return;
    };
    let r = run_attack(
        &py,
        &certs,
        guard.port,
        &[
            "withhold-window",
            "--window",
            "0",
            "--path",
            "/?pad=200000",
            "--wait",
            "20",
        ],
    )
    .await;
    assert_eq!(r["statuses"]["1"], 200, "{r}");
    assert_eq!(r["resets"]["1"], "CANCEL", "{r}");
    assert!(r["goaway"].is_null(), "{r}");
    assert_eq!(curl_h2(&certs, guard.port).await, "2 200");
}
