//! The edge side end to end: aop-edge's identity store and pooled client against an
//! aop-verify origin (each flavour and the precedence between them), aop-edge-proxy,
//! `certtool probe` against origins that do and do not verify clients (aop-verify,
//! `openssl s_server`, nginx), and the edge against nginx with `ssl_verify_client on`;
//! HTTP/2 from the edge (one connection per identity, against aop's example origin and
//! nginx `listen … ssl http2`) and WebSockets through aop-edge-proxy (Python
//! `websockets` at both ends, nginx in between).

#![allow(clippy::unwrap_used)] // test helpers: a panic is a test failure with a backtrace

use std::io::{Read as _, Write as _};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aop_e2e::nginx::Nginx;
use aop_e2e::origin::TestOrigin;
use aop_e2e::pki::{self, Leaf, TestCa};
use aop_e2e::{TempDir, bin, certtool, code, have_peer, spawn_listening, stderr, stdout, tempdir};
use aop_edge::{
    EdgeClient, Failure, Flavour, IdentitySpec, IdentityStore, PresentedIdentity, Resolve,
    StoreSpec, Timeouts,
};
use aop_verify::{Limits, PolicySpec, RuleSpec, TrustSpec};
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Bytes;

const HOSTS: &[&str] = &[
    "example.com",
    "*.example.com",
    "h.example.com",
    "other.test",
];

/// An origin CA and the origin's certificate; three edge CAs, one per flavour, each with
/// an edge certificate.
struct World {
    dir: TempDir,
    origin_ca: TestCa,
    server: Leaf,
    host_ca: TestCa,
    zone_ca: TestCa,
    shared_ca: TestCa,
    host_edge: Leaf,
    zone_edge: Leaf,
    shared_edge: Leaf,
}

fn world() -> World {
    let dir = tempdir().unwrap();
    let origin_ca = pki::ca(dir.path(), "origin-ca");
    let server = origin_ca.origin("origin", HOSTS);
    let host_ca = pki::ca(dir.path(), "hostname-ca");
    let zone_ca = pki::ca(dir.path(), "zone-ca");
    let shared_ca = pki::ca(dir.path(), "shared-ca");
    World {
        host_edge: host_ca.client("edge-h.example.com"),
        zone_edge: zone_ca.client("edge-example.com"),
        shared_edge: shared_ca.client("edge-shared"),
        dir,
        origin_ca,
        server,
        host_ca,
        zone_ca,
        shared_ca,
    }
}

fn sha256(leaf: &Leaf) -> String {
    let der = aop_pki::load_certificates(&leaf.cert)
        .unwrap()
        .swap_remove(0);
    aop_pki::Sha256Fingerprint::of(&der).to_string()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

impl World {
    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// An origin that, like Cloudflare's three flavours, trusts a different CA per
    /// hostname, per zone, and for everything else.
    fn origin_spec(&self) -> PolicySpec {
        let rule = |name: &str, hosts: &[&str], ca: &Path| {
            RuleSpec::new(
                name,
                hosts.iter().copied(),
                &self.server.cert,
                &self.server.key,
                TrustSpec::new([ca]),
            )
        };
        let mut spec = PolicySpec::new(vec![
            rule("per-hostname", &["h.example.com"], &self.host_ca.pem()),
            rule(
                "per-zone",
                &["example.com", "*.example.com"],
                &self.zone_ca.pem(),
            ),
        ]);
        spec.default = Some(rule("shared", &[], &self.shared_ca.pem()));
        // HTTP/2 first, whatever the default: the edge's own client speaks it.
        spec.with_http2()
    }

    fn store_spec(&self, with_hostname: bool) -> StoreSpec {
        let mut spec = StoreSpec::new([self.origin_ca.pem()]);
        spec.shared = Some(IdentitySpec::new(
            &self.shared_edge.cert,
            &self.shared_edge.key,
        ));
        spec.zones.push((
            "example.com".into(),
            IdentitySpec::new(&self.zone_edge.cert, &self.zone_edge.key),
        ));
        if with_hostname {
            spec.hostnames.push((
                "h.example.com".into(),
                IdentitySpec::new(&self.host_edge.cert, &self.host_edge.key),
            ));
        }
        spec
    }
}

fn resolve_all(port: u16) -> Resolve {
    Resolve::new(
        [
            "example.com",
            "www.example.com",
            "h.example.com",
            "other.test",
        ]
        .iter()
        .map(|h| format!("{h}:{port}:127.0.0.1").parse().unwrap()),
    )
}

/// A response through the edge client, read whole.
#[derive(Debug, PartialEq, Eq)]
struct Got {
    version: hyper::Version,
    status: u16,
    body: String,
    /// The origin's `X-Client-Cert-SHA256`.
    cert: Option<String>,
    /// The response's [`PresentedIdentity`].
    presented: u64,
}

async fn fetch(client: &EdgeClient<Empty<Bytes>>, url: &str) -> Result<Got, aop_edge::Error> {
    let req = hyper::Request::get(url).body(Empty::new()).unwrap();
    let resp = client.request(req).await?;
    let presented = resp.extensions().get::<PresentedIdentity>().unwrap().0;
    let cert = resp
        .headers()
        .get("x-client-cert-sha256")
        .map(|v| v.to_str().unwrap().to_owned());
    // The whole identity beside its id (what aop-edge-proxy logs as `presented=`): the
    // certificate the origin saw, whatever the store says by now.
    let whole = &resp.extensions().get::<aop_edge::Presented>().unwrap().0;
    assert_eq!(whole.id(), presented);
    if let Some(cert) = &cert {
        assert_eq!(&whole.certificate().sha256.to_string(), cert);
    }
    let (version, status) = (resp.version(), resp.status().as_u16());
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Ok(Got {
        version,
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
        cert,
        presented,
    })
}

async fn get(
    client: &EdgeClient<Empty<Bytes>>,
    url: &str,
) -> Result<(u16, String, Option<String>, u64), aop_edge::Error> {
    let g = fetch(client, url).await?;
    Ok((g.status, g.body, g.cert, g.presented))
}

#[tokio::test]
async fn each_flavour_reaches_its_rule_and_the_most_specific_identity_wins() {
    let w = world();
    let mut origin = TestOrigin::start(&w.origin_spec(), Limits::default()).await;
    let port = origin.addr.port();
    let store = IdentityStore::load(&w.store_spec(true)).unwrap();
    let client: EdgeClient<Empty<Bytes>> =
        EdgeClient::new(store, resolve_all(port), Timeouts::default());

    for (host, flavour, rule, leaf) in [
        (
            "h.example.com",
            Flavour::Hostname,
            "per-hostname",
            &w.host_edge,
        ),
        ("www.example.com", Flavour::Zone, "per-zone", &w.zone_edge),
        ("example.com", Flavour::Zone, "per-zone", &w.zone_edge),
        ("other.test", Flavour::Shared, "shared", &w.shared_edge),
    ] {
        let id = client.identity_for(host).unwrap();
        assert_eq!(id.flavour(), flavour, "{host}");
        let (status, body, cert, presented) = get(&client, &format!("https://{host}:{port}/"))
            .await
            .unwrap();
        assert_eq!(
            (status, body.as_str()),
            (200, "verdict SUCCESS\n"),
            "{host}"
        );
        assert_eq!(
            cert.as_deref(),
            Some(sha256(leaf).as_str()),
            "{host}: the origin saw the {flavour} certificate"
        );
        assert_eq!(presented, id.id(), "{host}");
        let v = origin.verdict().await;
        assert_eq!(
            (v.to_string().as_str(), v.rule.as_deref()),
            ("SUCCESS", Some(rule)),
            "{host}"
        );
    }

    // Without the per-hostname certificate, h.example.com gets the zone's — which that
    // hostname's rule does not accept: the origin refuses, and the edge says why.
    client.reload(IdentityStore::load(&w.store_spec(false)).unwrap());
    assert_eq!(
        client.identity_for("h.example.com").unwrap().flavour(),
        Flavour::Zone
    );
    let err = get(&client, &format!("https://h.example.com:{port}/"))
        .await
        .unwrap_err();
    assert_eq!(
        aop_edge::classify(&err),
        Failure::Refused {
            alert: "access_denied".into()
        },
        "{err}"
    );
    let v = origin.verdict().await;
    assert_eq!(v.to_string(), "FAILED:zone_mismatch");
    assert_eq!(v.rule.as_deref(), Some("per-hostname"));
}

#[tokio::test]
async fn the_pool_keeps_identities_apart_and_a_reload_drains_the_old_one() {
    let w = world();
    let mut spec = w.origin_spec();
    let next_shared_ca = pki::ca(w.path(), "next-shared-ca");
    let next_shared = next_shared_ca.client("next-shared");
    spec.default.as_mut().unwrap().trust =
        TrustSpec::new([w.shared_ca.pem(), next_shared_ca.pem()]);
    let mut origin = TestOrigin::start(&spec, Limits::default()).await;
    let port = origin.addr.port();
    let client: EdgeClient<Empty<Bytes>> = EdgeClient::new(
        IdentityStore::load(&w.store_spec(true)).unwrap(),
        resolve_all(port),
        Timeouts::default(),
    );

    // Two hostnames, one address, two identities: alternate requests.
    for round in 0..4 {
        for (host, leaf) in [
            ("h.example.com", &w.host_edge),
            ("www.example.com", &w.zone_edge),
        ] {
            let (status, _, cert, presented) = get(&client, &format!("https://{host}:{port}/"))
                .await
                .unwrap();
            assert_eq!(status, 200);
            assert_eq!(
                cert.unwrap(),
                sha256(leaf),
                "round {round}: {host} went out on a connection with the wrong certificate"
            );
            assert_eq!(presented, client.identity_for(host).unwrap().id());
        }
    }
    // Eight requests over fewer connections: pooled (each connection made with the
    // identity its requests needed, as the certificate headers above show). hyper may
    // occasionally open a second connection when it races the return of an idle one,
    // so only "fewer than one per request" is asserted. Every connection that served a
    // request has its verdict in already (the origin sends it before serving); a spare
    // one still in its handshake would only make the count lower.
    let verdicts = origin.pending_verdicts();
    assert!((2..8).contains(&verdicts.len()), "{verdicts:?}");

    // Rotate the shared certificate: new requests present the new one, on a new connection.
    let old_id = client.identity_for("other.test").unwrap().id();
    let (_, _, cert, _) = get(&client, &format!("https://other.test:{port}/"))
        .await
        .unwrap();
    assert_eq!(cert.unwrap(), sha256(&w.shared_edge));
    let mut next = w.store_spec(true);
    next.shared = Some(IdentitySpec::new(&next_shared.cert, &next_shared.key));
    client.reload(IdentityStore::load(&next).unwrap());
    let (status, _, cert, presented) = get(&client, &format!("https://other.test:{port}/"))
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(cert.unwrap(), sha256(&next_shared));
    assert_ne!(presented, old_id);
}

#[tokio::test]
async fn no_identity_and_no_roots_are_refused_before_connecting() {
    let w = world();
    let mut spec = StoreSpec::new([w.origin_ca.pem()]);
    spec.zones.push((
        "example.com".into(),
        IdentitySpec::new(&w.zone_edge.cert, &w.zone_edge.key),
    ));
    let client: EdgeClient<Empty<Bytes>> = EdgeClient::new(
        IdentityStore::load(&spec).unwrap(),
        Resolve::default(),
        Timeouts::default(),
    );
    let err = get(&client, "https://other.test/").await.unwrap_err();
    assert!(matches!(err, aop_edge::Error::NoIdentity { .. }), "{err}");

    let err = IdentityStore::load(&StoreSpec::new(Vec::<std::path::PathBuf>::new())).unwrap_err();
    assert!(matches!(err, aop_edge::Error::NoRoots), "{err}");
    let mut bad = StoreSpec::new([w.origin_ca.pem()]);
    bad.shared = Some(IdentitySpec::new(&w.zone_edge.cert, &w.shared_edge.key));
    let err = IdentityStore::load(&bad).unwrap_err().to_string();
    assert!(err.contains("private key does not match"), "{err}");
}

// ---- aop-edge-proxy ----

fn http_get(port: u16, path: &str, extra: &str) -> (u16, String, String) {
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        tcp,
        "GET {path} HTTP/1.1\r\nHost: edge.local\r\n{extra}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    tcp.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head.to_ascii_lowercase(), body.to_owned())
}

/// [`http_get`] from an async test.
async fn visit(port: u16, path: &'static str, extra: &'static str) -> (u16, String, String) {
    tokio::task::spawn_blocking(move || http_get(port, path, extra))
        .await
        .unwrap()
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
}

/// A running aop-edge-proxy (stopped on drop): its port and its log lines.
struct Proxy {
    _process: aop_e2e::Running,
    port: u16,
    log: std::sync::mpsc::Receiver<String>,
}

fn proxy(w: &World, origin_port: u16, host: &str, identity: &[&str]) -> Proxy {
    let resolve = format!("{host}:{origin_port}:127.0.0.1");
    let origin = format!("https://{host}:{origin_port}");
    let ca = w.origin_ca.pem();
    let mut args = vec![
        "--listen",
        "127.0.0.1:0",
        "--origin",
        &origin,
        "--resolve",
        &resolve,
        "--cacert",
        s(&ca),
    ];
    args.extend_from_slice(identity);
    let (child, port, rx) = spawn_listening(&bin("aop-edge-proxy"), &args);
    Proxy {
        _process: aop_e2e::Running(child),
        port,
        log: rx,
    }
}

#[tokio::test]
async fn the_edge_proxy_forwards_with_client_ip_headers_and_answers_502_when_refused() {
    let w = world();
    let mut origin = TestOrigin::start(&w.origin_spec(), Limits::default()).await;
    let port = origin.addr.port();

    let shared = [
        "--cert",
        s(&w.shared_edge.cert),
        "--key",
        s(&w.shared_edge.key),
    ];
    let zone = format!(
        "example.com={},{}",
        s(&w.zone_edge.cert),
        s(&w.zone_edge.key)
    );
    let with_zone = [&shared[..], &["--zone-cert", &zone]].concat();
    let p = proxy(&w, port, "www.example.com", &with_zone);
    let (status, head, body) = tokio::task::spawn_blocking({
        let pp = p.port;
        move || {
            http_get(
                pp,
                "/a/b?c=d",
                "X-Forwarded-For: 10.9.8.7\r\nCF-Connecting-IP: 6.6.6.6\r\n",
            )
        }
    })
    .await
    .unwrap();
    assert_eq!(
        (status, body.as_str()),
        (200, "verdict SUCCESS\n"),
        "{head}"
    );
    assert_eq!(
        header(&head, "x-client-cert-sha256"),
        Some(sha256(&w.zone_edge).as_str()),
        "the zone certificate wins over the shared one"
    );
    assert_eq!(
        header(&head, "x-echo-x-forwarded-for"),
        Some("10.9.8.7, 127.0.0.1")
    );
    assert_eq!(
        header(&head, "x-echo-cf-connecting-ip"),
        Some("127.0.0.1"),
        "a client cannot choose its own CF-Connecting-IP"
    );
    let id = header(&head, "x-request-id").expect("a request id");
    assert_eq!(header(&head, "x-echo-x-request-id"), Some(id));
    // HTTP/2 to the origin: the authority is `:authority`, with no Host field as well.
    assert_eq!(header(&head, "x-echo-host"), None);
    assert_eq!(origin.verdict().await.rule.as_deref(), Some("per-zone"));
    drop(p);

    // Only the shared certificate, which the zone's rule does not trust: 502, with why.
    let p = proxy(&w, port, "www.example.com", &shared);
    let (status, head, body) = tokio::task::spawn_blocking({
        let pp = p.port;
        move || http_get(pp, "/", "")
    })
    .await
    .unwrap();
    assert_eq!(status, 502, "{head}");
    // Over TLS 1.3 the origin refuses after the edge's handshake has ended; on HTTP/2 the
    // edge writes its preface at once, and an origin that closes with those bytes unread
    // makes its kernel send a reset that can discard the alert: then the edge only sees
    // the connection fail.
    assert!(
        body == "502 Bad Gateway: the origin refused the TLS handshake (alert access_denied)\n"
            || body.starts_with("502 Bad Gateway: request to www.example.com failed: client error"),
        "{body}"
    );
    assert_eq!(origin.verdict().await.to_string(), "FAILED:zone_mismatch");
    let deadline = Instant::now() + Duration::from_secs(10);
    let logged = loop {
        let line = p
            .log
            .recv_timeout(deadline - Instant::now())
            .expect("a log line for the failed pull");
        if line.contains("origin pull failed") {
            break line;
        }
    };
    assert!(logged.contains("status=502"), "{logged}");

    // A per-hostname certificate wins over the zone's, even where the origin wants the
    // zone's: here it is refused, which shows which one was presented.
    drop(p);
    let host = format!(
        "www.example.com={},{}",
        s(&w.host_edge.cert),
        s(&w.host_edge.key)
    );
    let zone = format!(
        "example.com={},{}",
        s(&w.zone_edge.cert),
        s(&w.zone_edge.key)
    );
    let p = proxy(
        &w,
        port,
        "www.example.com",
        &["--zone-cert", &zone, "--hostname-cert", &host],
    );
    let (status, _, body) = tokio::task::spawn_blocking({
        let pp = p.port;
        move || http_get(pp, "/", "")
    })
    .await
    .unwrap();
    assert_eq!(status, 502, "{body}");
    assert_eq!(
        origin.verdict().await.client.unwrap().subject,
        "CN=edge-h.example.com"
    );
    drop(p);

    // Bad flags: exit 2 with the file named.
    let o = aop_e2e::run(Command::new(bin("aop-edge-proxy")).args([
        "--listen",
        "127.0.0.1:0",
        "--origin",
        "https://x.test",
        "--cacert",
        "/nonexistent.pem",
        "--cert",
        s(&w.shared_edge.cert),
        "--key",
        s(&w.shared_edge.key),
    ]));
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("/nonexistent.pem: cannot read"),
        "{}",
        stderr(&o)
    );
}

// ---- certtool probe ----

fn probe(args: &[&str]) -> (i32, String, String) {
    let o = certtool(std::iter::once("probe").chain(args.iter().copied()));
    (code(&o), stdout(&o), stderr(&o))
}

/// `certtool probe https://example.com:PORT/` (resolved to 127.0.0.1, trusting the origin
/// CA), presenting `identity`, with `--expect EXPECT`: its exit code and stdout.
fn probe_example_com(w: &World, port: u16, identity: Option<&Leaf>, expect: &str) -> (i32, String) {
    let url = format!("https://example.com:{port}/");
    let resolve = format!("example.com:{port}:127.0.0.1");
    let ca = w.origin_ca.pem();
    let mut args = vec![url.as_str(), "--resolve", &resolve, "--cacert", s(&ca)];
    if let Some(l) = identity {
        args.extend(["--cert", s(&l.cert), "--key", s(&l.key)]);
    }
    args.extend(["--expect", expect]);
    let (c, out, _) = probe(&args);
    (c, out)
}

#[tokio::test]
async fn probe_tells_a_shut_back_door_from_an_open_one() {
    let w = world();
    let origin = TestOrigin::start(&w.origin_spec(), Limits::default()).await;
    let url = format!("https://www.example.com:{}/", origin.addr.port());
    let resolve = origin.resolve("www.example.com");
    let ca = w.origin_ca.pem();
    let run = |extra: Vec<String>| {
        let mut a = vec![
            url.clone(),
            "--resolve".into(),
            resolve.clone(),
            "--cacert".into(),
            s(&ca).to_owned(),
        ];
        a.extend(extra);
        tokio::task::spawn_blocking(move || {
            probe(&a.iter().map(String::as_str).collect::<Vec<_>>())
        })
    };
    let (c, out, err) = run(vec!["--expect".into(), "reject".into()]).await.unwrap();
    assert_eq!(c, 0, "{out}{err}");
    assert!(
        out.contains(
            "expect reject: held: the origin aborted the TLS handshake with alert certificate_required"
        ),
        "{out}"
    );
    assert!(out.contains("expect reject: held"), "{out}");

    let edge = [
        "--cert".to_owned(),
        s(&w.zone_edge.cert).to_owned(),
        "--key".to_owned(),
        s(&w.zone_edge.key).to_owned(),
    ];
    let (c, out, _) = run([&edge[..], &["--expect".into(), "accept".into()]].concat())
        .await
        .unwrap();
    assert_eq!(c, 0, "{out}");
    assert!(
        out.contains("expect accept: held: the origin answered HTTP 200 (X-Client-Verify: SUCCESS) to this client certificate"),
        "{out}"
    );
    let (c, out, _) = run([&edge[..], &["--expect".into(), "reject".into()]].concat())
        .await
        .unwrap();
    assert_eq!(c, 1, "{out}");
    assert!(out.contains("back door is OPEN"), "{out}");

    // The wrong certificate is refused with the origin's reason.
    let wrong = [
        "--cert".to_owned(),
        s(&w.host_edge.cert).to_owned(),
        "--key".to_owned(),
        s(&w.host_edge.key).to_owned(),
    ];
    let (c, out, _) = run([
        &wrong[..],
        &["--expect".into(), "reject".into(), "--json".into()],
    ]
    .concat())
    .await
    .unwrap();
    assert_eq!(c, 0, "{out}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["results"][0]["outcome"], "refused_tls");
    assert_eq!(j["results"][0]["alert"], "access_denied");
    assert_eq!(j["presented"]["sha256"], sha256(&w.host_edge));
    assert_eq!(j["held"], true);

    // The origin's own certificate must verify: a probe with the wrong roots proves nothing.
    let (c, out, _) = tokio::task::spawn_blocking({
        let (url, resolve, wrong_ca) = (url.clone(), resolve.clone(), w.shared_ca.pem());
        move || {
            probe(&[
                &url,
                "--resolve",
                &resolve,
                "--cacert",
                s(&wrong_ca),
                "--expect",
                "reject",
            ])
        }
    })
    .await
    .unwrap();
    assert_eq!(c, 1, "{out}");
    assert!(out.contains("did not verify"), "{out}");

    // Nobody listening: unreachable proves nothing either way.
    let (c, out, _) = probe(&[
        "https://x.test:1/",
        "--resolve",
        "x.test:1:127.0.0.1",
        "--cacert",
        s(&ca),
        "--expect",
        "reject",
    ]);
    assert_eq!(c, 1, "{out}");
    assert!(out.contains("unreachable"), "{out}");

    // Usage errors and unreadable input: exit 2. Input errors are one line; an argument
    // clap refuses gets clap's whole message, which names the argument.
    for (args, clap_names) in [
        (vec![url.as_str(), "--expect", "reject"], None),
        (
            vec!["http://x.test/", "--cacert", s(&ca), "--expect", "reject"],
            None,
        ),
        (
            vec![
                url.as_str(),
                "--resolve",
                "nonsense",
                "--cacert",
                s(&ca),
                "--expect",
                "reject",
            ],
            Some("--resolve"),
        ),
        (
            vec![
                url.as_str(),
                "--cacert",
                "/nonexistent.pem",
                "--expect",
                "reject",
            ],
            None,
        ),
        (
            vec![url.as_str(), "--cacert", s(&ca), "--expect", "maybe"],
            Some("--expect"),
        ),
    ] {
        let (c, out, err) = probe(&args);
        assert_eq!(c, 2, "{args:?}: {out}{err}");
        assert!(err.starts_with("certtool: "), "{args:?}: {err}");
        match clap_names {
            None => assert_eq!(err.lines().count(), 1, "{args:?}: {err}"),
            Some(flag) => assert!(
                err.lines().next().is_some_and(|l| l.contains(flag)),
                "{args:?}: {err}"
            ),
        }
    }
}

/// `openssl s_server -www` on a port of its choosing: answers HTTP to anyone, asking
/// (with `-Verify 1`) or not asking for a client certificate.
fn s_server(w: &World, require_client_cert: bool) -> (aop_e2e::Running, u16) {
    let ca = w.shared_ca.pem();
    let mut args = vec!["-cert", s(&w.server.cert), "-key", s(&w.server.key), "-www"];
    if require_client_cert {
        args.extend(["-Verify", "1", "-CAfile", s(&ca)]);
    }
    aop_e2e::openssl_s_server(&args)
}

#[test]
fn probe_catches_an_origin_that_does_not_verify_clients() {
    if !have_peer(
        "openssl",
        "probe_catches_an_origin_that_does_not_verify_clients",
    ) {
        return;
    }
    let w = world();
    let ca = w.origin_ca.pem();
    let (open, open_port) = s_server(&w, false);
    let (shut, shut_port) = s_server(&w, true);
    let open_url = format!("https://example.com:{open_port}/");
    let shut_url = format!("https://other.test:{shut_port}/");
    let open_resolve = format!("example.com:{open_port}:127.0.0.1");
    let shut_resolve = format!("other.test:{shut_port}:127.0.0.1");

    let (c, out) = probe_example_com(&w, open_port, None, "reject");
    assert_eq!(c, 1, "{out}");
    assert!(out.contains("expect reject: OPEN: the origin answered HTTP 200 to a client with no certificate; it did not ask for one — its back door is OPEN"), "{out}");

    let (c, out, _) = probe(&[
        &shut_url,
        "--resolve",
        &shut_resolve,
        "--cacert",
        s(&ca),
        "--expect",
        "reject",
    ]);
    assert_eq!(c, 0, "{out}");
    assert!(
        out.contains(
            "expect reject: held: the origin aborted the TLS handshake with alert certificate_required"
        ),
        "{out}"
    );

    // Both in one call: one held, one did not; exit 1, and the JSON says which.
    let (c, out, _) = probe(&[
        &shut_url,
        &open_url,
        "--resolve",
        &shut_resolve,
        "--resolve",
        &open_resolve,
        "--cacert",
        s(&ca),
        "--expect",
        "reject",
        "--json",
    ]);
    assert_eq!(c, 1, "{out}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["held"], false);
    assert_eq!(j["results"][0]["held"], true);
    assert_eq!(j["results"][1]["held"], false);
    assert_eq!(j["results"][1]["outcome"], "accepted");
    assert_eq!(j["results"][1]["http_status"], 200);

    // --insecure still tells the open origin apart, and says it did not verify.
    let (c, out, _) = probe(&[
        &open_url,
        "--resolve",
        &open_resolve,
        "--insecure",
        "--expect",
        "reject",
    ]);
    assert_eq!(c, 1, "{out}");
    assert!(out.contains("NOT verified"), "{out}");
    drop((open, shut));
}

#[tokio::test]
async fn the_edge_against_nginx_with_ssl_verify_client_on() {
    if !have_peer("nginx", "the_edge_against_nginx_with_ssl_verify_client_on") {
        return;
    }
    let w = world();
    let nginx = Nginx::start(
        &w.path().join("nginx"),
        &w.server.cert,
        &w.server.key,
        Some(&w.shared_ca.pem()),
    );
    let port = nginx.port;
    let url = format!("https://example.com:{port}/");

    // aop-edge presents the shared certificate; nginx's $ssl_client_verify is SUCCESS.
    let mut spec = StoreSpec::new([w.origin_ca.pem()]);
    spec.shared = Some(IdentitySpec::new(&w.shared_edge.cert, &w.shared_edge.key));
    let client: EdgeClient<Empty<Bytes>> = EdgeClient::new(
        IdentityStore::load(&spec).unwrap(),
        resolve_all(port),
        Timeouts::default(),
    );
    let (status, body, _, _) = get(&client, &url).await.unwrap();
    assert_eq!(
        (status, body.as_str()),
        (200, "verify=SUCCESS dn=CN=edge-shared\n")
    );

    // certtool probe: refused without a certificate (nginx answers 400), accepted with it.
    let (c, out) = probe_example_com(&w, port, None, "reject");
    assert_eq!(c, 0, "{out}");
    assert!(
        out.contains("No required SSL certificate was sent"),
        "{out}"
    );
    let (c, out) = probe_example_com(&w, port, Some(&w.shared_edge), "accept");
    assert_eq!(c, 0, "{out}");
    // A certificate from another CA: nginx answers 400 "The SSL certificate error".
    let (c, out) = probe_example_com(&w, port, Some(&w.zone_edge), "reject");
    assert_eq!(c, 0, "{out}");
    drop(nginx);

    // nginx with client verification off: the back door is open, and the probe says so.
    let open = Nginx::start(
        &w.path().join("nginx-open"),
        &w.server.cert,
        &w.server.key,
        None,
    );
    let (c, out) = probe_example_com(&w, open.port, None, "reject");
    assert_eq!(c, 1, "{out}");
    assert!(out.contains("back door is OPEN"), "{out}");
}

// ---- HTTP/2 from the edge ----

/// A TCP relay on loopback to port `to` that counts the connections it accepts: how many
/// TCP connections the edge opened, whatever the origin behind it. Stops on drop.
struct Relay {
    port: u16,
    accepted: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(to: u16) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicU64::new(0));
        let counter = accepted.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut edge, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    if let Ok(mut origin) = tokio::net::TcpStream::connect(("127.0.0.1", to)).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut edge, &mut origin).await;
                    }
                });
            }
        });
        Self {
            port,
            accepted,
            task,
        }
    }

    fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `n` requests to `url` at once through `client`, every one answered.
async fn burst(client: &Arc<EdgeClient<Empty<Bytes>>>, url: &str, n: usize) -> Vec<Got> {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (client, url) = (client.clone(), url.to_owned());
        set.spawn(async move { fetch(&client, &url).await.unwrap() });
    }
    set.join_all().await
}

/// aop's example origin offering `h2` first, trusting all three edge CAs, behind a
/// counting relay. The edge offers `h2` by default: every response is HTTP/2; an
/// identity's 20 concurrent requests ride one TCP connection; a second identity to the
/// same address gets its own; 20 concurrent requests of a third, with no connection
/// yet, open one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_http2_each_identity_has_one_connection_and_never_shares_it() {
    let w = world();
    let (zone_ca, host_ca, shared_ca) = (w.zone_ca.pem(), w.host_ca.pem(), w.shared_ca.pem());
    let (_origin, port, log) = aop_e2e::example_origin(
        &w.server,
        &zone_ca,
        &["--http2", "--trust", s(&host_ca), "--trust", s(&shared_ca)],
    );
    let relay = Relay::start(port).await;
    let client = Arc::new(EdgeClient::new(
        IdentityStore::load(&w.store_spec(true)).unwrap(),
        resolve_all(relay.port),
        Timeouts::default(),
    ));
    let url = |host: &str| format!("https://{host}:{}/", relay.port);
    let ok = |host: &str| Got {
        version: hyper::Version::HTTP_2,
        status: 200,
        body: "hello from the origin; verdict SUCCESS\n".into(),
        cert: None,
        presented: client.identity_for(host).unwrap().id(),
    };

    // The zone's identity: one request opens the connection, 20 at once share it. The
    // hostname's identity, same origin address: a connection of its own, shared alike.
    for (host, connections) in [("www.example.com", 1), ("h.example.com", 2)] {
        assert_eq!(fetch(&client, &url(host)).await.unwrap(), ok(host));
        assert_eq!(relay.accepted(), connections, "{host}");
        for got in burst(&client, &url(host), 20).await {
            assert_eq!(got, ok(host));
        }
        assert_eq!(
            relay.accepted(),
            connections,
            "{host}: 20 concurrent requests on its one connection"
        );
    }

    // The shared identity, cold: 20 at once before any connection exists. The first
    // connects alone and the others wait for its connection (without that, hyper-util
    // opened 20 TLS connections here and kept one).
    for got in burst(&client, &url("other.test"), 20).await {
        assert_eq!(got, ok("other.test"));
    }
    assert_eq!(relay.accepted(), 3, "a cold burst of 20, one connection");

    // The origin's verdict log: exactly one connection per identity; every verdict is
    // SUCCESS.
    let mut lines = Vec::new();
    aop_e2e::wait_until_async(
        "the origin's verdict lines",
        Duration::from_secs(10),
        || {
            lines.extend(log.try_iter().filter(|l| l.contains("aop::verdict")));
            lines
                .iter()
                .any(|l| l.contains("CN=edge-shared"))
                .then_some(())
        },
    )
    .await;
    let with = |cn: &str| {
        lines
            .iter()
            .filter(|l| l.contains(&format!("subject=\"CN={cn}\"")))
            .count()
    };
    assert_eq!(
        (
            with("edge-example.com"),
            with("edge-h.example.com"),
            with("edge-shared")
        ),
        (1, 1, 1),
        "{lines:#?}"
    );
    assert!(
        lines.iter().all(|l| l.contains("verdict=SUCCESS")),
        "{lines:#?}"
    );
}

/// 20 concurrent requests, no connection yet, to an origin that refuses the identity
/// (the zone's certificate where the hostname's rule wants its own): the first connects
/// alone and is refused; the others then go at once, not one after another, and each is
/// refused, with the origin's alert, also over HTTP/2, where the TLS error reaches the
/// request only as text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_burst_to_an_origin_that_refuses_fails_every_request_with_its_alert() {
    let w = world();
    let mut origin = TestOrigin::start(&w.origin_spec(), Limits::default()).await;
    let port = origin.addr.port();
    let client = Arc::new(EdgeClient::new(
        IdentityStore::load(&w.store_spec(false)).unwrap(),
        resolve_all(port),
        Timeouts::default(),
    ));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let (client, url) = (client.clone(), format!("https://h.example.com:{port}/"));
        set.spawn(async move { fetch(&client, &url).await.unwrap_err() });
    }
    // Over TLS 1.3 the origin refuses after our handshake has ended: when it closes with
    // our first bytes unread, its kernel's reset can discard the alert, and that request
    // fails as a broken pipe, a reset or a cancelled request instead (rare here). Every
    // request fails, and none otherwise.
    let refused = Failure::Refused {
        alert: "access_denied".into(),
    };
    let mut named = 0;
    for err in set.join_all().await {
        match aop_edge::classify(&err) {
            f if f == refused => named += 1,
            Failure::Other { .. }
                if ["BrokenPipe", "ConnectionReset", "Canceled"]
                    .iter()
                    .any(|lost| format!("{err:?}").contains(lost)) => {}
            other => panic!("{other:?}: {err:?}"),
        }
    }
    assert!(named > 0);
    let v = origin.verdict().await;
    assert_eq!(v.to_string(), "FAILED:zone_mismatch");
}

/// nginx as the origin: `listen … ssl` (with `http2` when asked) and
/// `ssl_verify_client on` for the three edge CAs; `/` answers with the client
/// verification, nginx's connection serial number, the protocol and any `Upgrade` it
/// was sent; `/ws/` is proxied to a WebSocket server on `ws_upstream` (if given), with
/// the verification in `X-Client-Verify` and `X-Client-DN`.
fn nginx_origin(w: &World, name: &str, http2: bool, ws_upstream: Option<u16>) -> Nginx {
    let dir = w.path().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let clients = dir.join("clients.pem");
    let pems: Vec<String> = [&w.zone_ca, &w.host_ca, &w.shared_ca]
        .iter()
        .map(|ca| std::fs::read_to_string(ca.pem()).unwrap())
        .collect();
    std::fs::write(&clients, pems.concat()).unwrap();
    let (cert, key) = (w.server.cert.display(), w.server.key.display());
    let (clients, h2) = (clients.display(), if http2 { " http2" } else { "" });
    let (upstream, ws) = match ws_upstream {
        Some(port) => (
            format!("upstream ws_upstream {{ server 127.0.0.1:{port}; }}"),
            r#"location /ws/ {
            proxy_pass http://ws_upstream;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_set_header X-Client-Verify $ssl_client_verify;
            proxy_set_header X-Client-DN $ssl_client_s_dn;
        }"#,
        ),
        None => (String::new(), ""),
    };
    Nginx::start_http(&dir, |port| {
        format!(
            r#"
    {upstream}
    server {{
        listen 127.0.0.1:{port} ssl{h2};
        server_name _;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_verify_client on;
        ssl_client_certificate {clients};
        location / {{
            default_type text/plain;
            return 200 "verify=$ssl_client_verify dn=$ssl_client_s_dn conn=$connection proto=$server_protocol upgrade=[$http_upgrade]\n";
        }}
        {ws}
    }}"#
        )
    })
}

/// `dn=… conn=N …`: nginx's connection serial number.
fn nginx_conn(body: &str) -> &str {
    body.split_whitespace()
        .find_map(|f| f.strip_prefix("conn="))
        .unwrap()
}

/// nginx with `listen … ssl http2` and `ssl_verify_client on`, a server nobody here
/// wrote: HTTP/2 by ALPN, 20 concurrent requests of an identity on one connection
/// (nginx's `$connection` is the same in every answer), another identity on another, each
/// answer naming its own certificate. `certtool probe`, which writes HTTP/1.1 by hand,
/// still works against it (it asks for `http/1.1` alone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_with_http2_gets_one_connection_per_identity_and_the_probe_still_works() {
    if !have_peer("nginx", "nginx_with_http2_gets_one_connection_per_identity") {
        return;
    }
    let w = world();
    let nginx = nginx_origin(&w, "nginx-h2", true, None);
    let client = Arc::new(EdgeClient::new(
        IdentityStore::load(&w.store_spec(true)).unwrap(),
        resolve_all(nginx.port),
        Timeouts::default(),
    ));
    let mut seen = Vec::new();
    for (host, cn) in [
        ("www.example.com", "edge-example.com"),
        ("h.example.com", "edge-h.example.com"),
    ] {
        let url = format!("https://{host}:{}/", nginx.port);
        let first = fetch(&client, &url).await.unwrap();
        let conn = nginx_conn(&first.body).to_owned();
        assert_eq!(
            (first.version, first.status, first.body.as_str()),
            (
                hyper::Version::HTTP_2,
                200,
                format!("verify=SUCCESS dn=CN={cn} conn={conn} proto=HTTP/2.0 upgrade=[]\n")
                    .as_str()
            )
        );
        assert_eq!(first.presented, client.identity_for(host).unwrap().id());
        for got in burst(&client, &url, 20).await {
            assert_eq!(got, first, "{host}: one connection for all 20");
        }
        seen.push(conn);
    }
    assert_ne!(seen[0], seen[1], "two identities, two connections");

    let port = nginx.port;
    let probes = tokio::task::spawn_blocking({
        let w_path = w.path().to_owned();
        let ca = w.origin_ca.pem();
        let shared = (w.shared_edge.cert.clone(), w.shared_edge.key.clone());
        move || {
            let _ = w_path;
            let url = format!("https://example.com:{port}/");
            let resolve = format!("example.com:{port}:127.0.0.1");
            let base = [url.as_str(), "--resolve", &resolve, "--cacert", s(&ca)];
            let with_cert = [
                &base[..],
                &["--cert", s(&shared.0), "--key", s(&shared.1)],
                &["--expect", "accept"],
            ]
            .concat();
            let without = [&base[..], &["--expect", "reject"]].concat();
            (probe(&with_cert), probe(&without))
        }
    })
    .await
    .unwrap();
    let ((c, out, err), (c2, out2, _)) = probes;
    assert_eq!(c, 0, "{out}{err}");
    assert!(out.contains("expect accept: held"), "{out}");
    assert_eq!(c2, 0, "{out2}");
    assert!(
        out2.contains("No required SSL certificate was sent"),
        "{out2}"
    );
}

/// An origin that offers only `http/1.1` (aop-verify's glue with `PolicySpec::alpn`
/// `http/1.1`, nginx without `http2`) is spoken to in HTTP/1.1, and aop-edge-proxy never forwards an
/// `Upgrade` other than `websocket`: `h2c` (request smuggling) or `websocket, h2c`
/// arrive as plain requests with no `Upgrade` at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_offering_only_http1_gets_http1_and_no_other_upgrade_is_forwarded() {
    if !have_peer("nginx", "an_origin_offering_only_http1_gets_http1") {
        return;
    }
    let w = world();
    let mut spec = w.origin_spec();
    spec.alpn = vec![b"http/1.1".to_vec()];
    let origin = TestOrigin::start(&spec, Limits::default()).await;
    let port = origin.addr.port();
    let client: EdgeClient<Empty<Bytes>> = EdgeClient::new(
        IdentityStore::load(&w.store_spec(true)).unwrap(),
        resolve_all(port),
        Timeouts::default(),
    );
    let got = fetch(&client, &format!("https://www.example.com:{port}/"))
        .await
        .unwrap();
    assert_eq!(
        (got.version, got.status, got.body.as_str()),
        (hyper::Version::HTTP_11, 200, "verdict SUCCESS\n")
    );
    let zone = format!(
        "example.com={},{}",
        s(&w.zone_edge.cert),
        s(&w.zone_edge.key)
    );
    // Through aop-edge-proxy: HTTP/1.1 has a Host field, the origin's authority.
    let p = proxy(&w, port, "www.example.com", &["--zone-cert", &zone]);
    let pp = p.port;
    let (status, head, _) = visit(pp, "/", "").await;
    assert_eq!(status, 200, "{head}");
    assert_eq!(
        header(&head, "x-echo-host"),
        Some(format!("www.example.com:{port}").as_str())
    );
    drop(p);

    let nginx = nginx_origin(&w, "nginx-h1", false, None);
    let client: EdgeClient<Empty<Bytes>> = EdgeClient::new(
        IdentityStore::load(&w.store_spec(true)).unwrap(),
        resolve_all(nginx.port),
        Timeouts::default(),
    );
    let got = fetch(&client, &format!("https://www.example.com:{}/", nginx.port))
        .await
        .unwrap();
    assert_eq!((got.version, got.status), (hyper::Version::HTTP_11, 200));
    assert!(
        got.body
            .starts_with("verify=SUCCESS dn=CN=edge-example.com conn=")
            && got.body.ends_with(" proto=HTTP/1.1 upgrade=[]\n"),
        "{}",
        got.body
    );

    let p = proxy(&w, nginx.port, "www.example.com", &["--zone-cert", &zone]);
    let pp = p.port;
    for extra in [
        "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n",
        "Connection: Upgrade\r\nUpgrade: websocket, h2c\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n",
        "Connection: Upgrade\r\nUpgrade: websocket\r\nUpgrade: h2c\r\n",
    ] {
        let (status, head, body) = visit(pp, "/", extra).await;
        assert_eq!(status, 200, "{extra}: {head}");
        assert!(
            body.ends_with(" proto=HTTP/1.1 upgrade=[]\n"),
            "{extra}: {body}"
        );
    }
}

// ---- WebSockets through aop-edge-proxy ----

/// A WebSocket server (Python `websockets`, a peer nobody here wrote): echoes every
/// message; `/ws/headers` first sends its handshake request's headers as JSON;
/// `/ws/refuse` answers the handshake 403.
const WS_SERVER: &str = r#"
import asyncio, json
from http import HTTPStatus
from websockets.asyncio.server import serve

async def handler(ws):
    if ws.request.path == "/ws/headers":
        await ws.send(json.dumps({k.lower(): v for k, v in ws.request.headers.raw_items()}))
    async for message in ws:
        await ws.send(message)

def process_request(connection, request):
    if request.path == "/ws/refuse":
        return connection.respond(HTTPStatus.FORBIDDEN, "refused\n")
    return None

async def main():
    async with serve(handler, "127.0.0.1", 0, process_request=process_request,
                     max_size=None, ping_interval=None) as server:
        print("PORT", server.sockets[0].getsockname()[1], flush=True)
        await asyncio.get_running_loop().create_future()

asyncio.run(main())
"#;

/// A WebSocket client (Python `websockets`): `client.py URL SCENARIO` prints one JSON
/// object. `echo`: a text message and a 1 MiB binary one, echoed; `many`: 10 WebSockets
/// at once, each echoing its own message; `headers`: the first message; `refuse`: the handshake's status and body; `idle`: whether the connection
/// is closed under it while it waits (30 s at most) without sending.
const WS_CLIENT: &str = r#"
import asyncio, json, sys
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

async def main(url, scenario):
    out = {}
    if scenario == "many":
        async def one(i):
            async with connect(url, proxy=None, ping_interval=None, close_timeout=1) as ws:
                await ws.send(f"visitor {i}")
                return await ws.recv() == f"visitor {i}"
        out["echoed"] = sum(await asyncio.gather(*(one(i) for i in range(10))))
    elif scenario == "refuse":
        try:
            async with connect(url, proxy=None):
                out["opened"] = True
        except InvalidStatus as e:
            out["status"] = e.response.status_code
            out["body"] = e.response.body.decode()
    else:
        async with connect(url, proxy=None, max_size=None, ping_interval=None, close_timeout=1) as ws:
            if scenario == "echo":
                await ws.send("hello, origin")
                out["text"] = await ws.recv()
                blob = bytes(range(256)) * 4096
                await ws.send(blob)
                back = await ws.recv()
                out["binary"] = len(back)
                out["binary_equal"] = back == blob
            elif scenario == "headers":
                out["headers"] = json.loads(await ws.recv())
            elif scenario == "idle":
                try:
                    await asyncio.wait_for(ws.recv(), 30)
                    out["closed"] = False
                except ConnectionClosed:
                    out["closed"] = True
    print(json.dumps(out), flush=True)

asyncio.run(main(sys.argv[1], sys.argv[2]))
"#;

/// Start [`WS_SERVER`] with `python`; returns once it listens, with its port.
fn ws_server(python: &Path, dir: &Path) -> (aop_e2e::Running, u16) {
    use std::io::BufRead as _;
    let script = dir.join("ws_server.py");
    std::fs::write(&script, WS_SERVER).unwrap();
    let mut child = Command::new(python)
        .arg(&script)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let running = aop_e2e::Running(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = std::io::BufReader::new(stdout).lines();
        let port = lines.by_ref().map_while(Result::ok).find_map(|l| {
            l.strip_prefix("PORT ")
                .and_then(|p| p.trim().parse::<u16>().ok())
        });
        let _ = tx.send(port);
        lines.for_each(drop);
    });
    let port = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap()
        .expect("the WebSocket server says its port");
    (running, port)
}

/// Run [`WS_CLIENT`] against aop-edge-proxy on `proxy_port`: its JSON answer.
async fn ws_client(
    python: &Path,
    dir: &Path,
    proxy_port: u16,
    path: &str,
    scenario: &str,
) -> serde_json::Value {
    let script = dir.join("ws_client.py");
    std::fs::write(&script, WS_CLIENT).unwrap();
    let url = format!("ws://127.0.0.1:{proxy_port}{path}");
    let (python, scenario) = (python.to_owned(), scenario.to_owned());
    let o = tokio::task::spawn_blocking(move || {
        aop_e2e::run(Command::new(&python).arg(&script).arg(&url).arg(&scenario))
    })
    .await
    .unwrap();
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    serde_json::from_str(&stdout(&o)).unwrap_or_else(|e| panic!("{e}: {}", stdout(&o)))
}

/// The next log line of `p` that contains `needle` (10 s at most).
fn log_line(p: &Proxy, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let line = p
            .log
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("a log line with {needle:?}"));
        if line.contains(needle) {
            return line;
        }
    }
}

/// Python `websockets` client → aop-edge-proxy → nginx (`ssl http2`,
/// `ssl_verify_client on`, `proxy_pass` with Upgrade) → Python `websockets` server: a
/// real chain. Plain requests reach nginx over HTTP/2; the WebSocket goes over HTTP/1.1
/// (nginx 1.22 cannot upgrade an HTTP/2 stream), text and a 1 MiB binary message echo,
/// the server sees nginx's `SUCCESS` for the edge's certificate and the edge's
/// headers, a server refusing with 403 gives the visitor 403, 10 WebSockets at once
/// each echo their own, and an idle tunnel is closed after `--tunnel-idle-timeout`;
/// every tunnel is counted in the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_proxy_tunnels_websockets_through_nginx_to_a_websockets_server() {
    let Some(python) = aop_e2e::python("the_edge_proxy_tunnels_websockets") else {
        return;
    };
    if !have_peer("nginx", "the_edge_proxy_tunnels_websockets") {
        return;
    }
    let w = world();
    let (_server, ws_port) = ws_server(&python, w.path());
    let nginx = nginx_origin(&w, "nginx-ws", true, Some(ws_port));
    let zone = format!(
        "example.com={},{}",
        s(&w.zone_edge.cert),
        s(&w.zone_edge.key)
    );
    let p = proxy(&w, nginx.port, "www.example.com", &["--zone-cert", &zone]);

    // A plain request: HTTP/2 to nginx, HTTP/1.1 to the visitor.
    let pp = p.port;
    let (status, head, body) = visit(pp, "/", "").await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(status, 200);
    assert!(
        body.starts_with("verify=SUCCESS dn=CN=edge-example.com conn=")
            && body.ends_with(" proto=HTTP/2.0 upgrade=[]\n"),
        "{body}"
    );

    let echo = ws_client(&python, w.path(), p.port, "/ws/echo", "echo").await;
    assert_eq!(
        echo,
        serde_json::json!({"text": "hello, origin", "binary": 1 << 20, "binary_equal": true})
    );
    let open = log_line(&p, "websocket tunnel open");
    assert!(open.contains("tunnels_open=1 tunnels_total=1"), "{open}");
    let closed = log_line(&p, "websocket tunnel closed");
    assert!(
        closed.contains("closed=closed") && closed.contains("tunnels_open=0 tunnels_total=1"),
        "{closed}"
    );

    let seen = ws_client(&python, w.path(), p.port, "/ws/headers", "headers").await;
    let h = &seen["headers"];
    assert_eq!(h["x-client-verify"], "SUCCESS", "{h}");
    assert_eq!(h["x-client-dn"], "CN=edge-example.com", "{h}");
    assert_eq!(h["x-forwarded-for"], "127.0.0.1", "{h}");
    assert_eq!(h["cf-connecting-ip"], "127.0.0.1", "{h}");
    assert_eq!(h["upgrade"], "websocket", "{h}");
    assert_eq!(h["x-request-id"].as_str().unwrap().len(), 24, "{h}");
    assert!(log_line(&p, "websocket tunnel open").contains("tunnels_total=2"));

    let refused = ws_client(&python, w.path(), p.port, "/ws/refuse", "refuse").await;
    assert_eq!(
        refused,
        serde_json::json!({"status": 403, "body": "refused\n"})
    );
    let line = log_line(&p, "forwarded");
    assert!(
        line.contains("status=403") && line.contains("upgrade=refused"),
        "{line}"
    );

    // 10 at once: each its own tunnel, all counted, all closed.
    let many = ws_client(&python, w.path(), p.port, "/ws/echo", "many").await;
    assert_eq!(many, serde_json::json!({"echoed": 10}));
    log_line(&p, "tunnels_open=0 tunnels_total=12");
    drop(p);

    // An idle tunnel is closed after the idle timeout, and counted.
    let p = proxy(
        &w,
        nginx.port,
        "www.example.com",
        &["--zone-cert", &zone, "--tunnel-idle-timeout", "1"],
    );
    let idle = ws_client(&python, w.path(), p.port, "/ws/echo", "idle").await;
    assert_eq!(idle, serde_json::json!({"closed": true}));
    let closed = log_line(&p, "websocket tunnel closed");
    assert!(
        closed.contains("closed=tunnel_idle") && closed.contains("tunnels_open=0 tunnels_total=1"),
        "{closed}"
    );
}

/// An origin (ours, answering by hand) that switches to a protocol the visitor did not
/// ask for: `101` with `Upgrade: h2c` to a WebSocket request, and `101 Upgrade:
/// websocket` to a plain GET. The visitor gets 502 both times, and no tunnel opens.
#[tokio::test]
async fn the_edge_proxy_answers_502_when_the_origin_switches_to_another_protocol() {
    let w = world();
    let provider = aop_pki::default_provider();
    let pair = aop_pki::load_key_pair(&w.server.cert, &w.server.key, &provider).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(pair.chain, pair.key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let origin = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut buf = [0; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let asked = String::from_utf8_lossy(&head).to_ascii_lowercase();
                let answer = if asked.contains("upgrade: websocket") {
                    "h2c"
                } else {
                    "websocket"
                };
                let reply = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: {answer}\r\n\r\n"
                );
                let _ = tls.write_all(reply.as_bytes()).await;
                let _ = tls.read(&mut buf).await;
            });
        }
    });
    let shared = [
        "--cert",
        s(&w.shared_edge.cert),
        "--key",
        s(&w.shared_edge.key),
    ];
    let p = proxy(&w, port, "www.example.com", &shared);
    let pp = p.port;
    for extra in [
        "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n",
        "",
    ] {
        let (status, head, _) = visit(pp, "/", extra).await;
        assert_eq!(status, 502, "{extra}: {head}");
    }
    let line = log_line(&p, "origin pull failed");
    assert!(line.contains("status=502"), "{line}");
    assert!(
        !p.log
            .try_iter()
            .any(|l| l.contains("websocket tunnel open")),
        "no tunnel"
    );
    origin.abort();
}

// ---- hostile visitors and a busy origin: the shared HTTP/2 connection holds ----

static CHUNK: [u8; 16 * 1024] = [b'x'; 16 * 1024];

/// A response body of `left` bytes of `x` in 16 KiB pieces, counted into `produced` as
/// the origin's HTTP/2 hands them on (as flow control lets it).
#[derive(Default)]
struct Chunks {
    left: usize,
    produced: Option<Arc<AtomicU64>>,
}

impl hyper::body::Body for Chunks {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        let n = self.left.min(CHUNK.len());
        if n == 0 {
            return std::task::Poll::Ready(None);
        }
        self.left -= n;
        if let Some(p) = &self.produced {
            p.fetch_add(n as u64, Ordering::SeqCst);
        }
        std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(Bytes::from_static(
            &CHUNK[..n],
        )))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.left as u64)
    }
}

/// An aop-verify origin (the world's policy, over HTTP/2) with an application: `/big/N`
/// answers N bytes; `/silent` never answers; `/read` reads the request body whole and
/// says its length in `x-read`; anything else answers `xx`. It counts the requests that
/// reach it, the response bytes it has produced, and the bodies `/read` read whole.
struct AppOrigin {
    port: u16,
    requests: Arc<AtomicU64>,
    produced: Arc<AtomicU64>,
    read: Arc<AtomicU64>,
    accepted: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for AppOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl AppOrigin {
    async fn start(w: &World, limits: Limits) -> Self {
        let policy = aop_verify::PolicyHandle::load(&w.origin_spec()).unwrap();
        let acceptor = aop_verify::Acceptor::new(policy, limits);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let [requests, produced, read, accepted] =
            std::array::from_fn(|_| Arc::new(AtomicU64::new(0)));
        let counters = (
            requests.clone(),
            produced.clone(),
            read.clone(),
            accepted.clone(),
        );
        let task = tokio::spawn(async move {
            while let Ok((tcp, peer)) = listener.accept().await {
                counters.3.fetch_add(1, Ordering::SeqCst);
                let (acceptor, requests, produced, read) = (
                    acceptor.clone(),
                    counters.0.clone(),
                    counters.1.clone(),
                    counters.2.clone(),
                );
                tokio::spawn(async move {
                    let Ok(conn) = acceptor.accept(tcp, peer).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let (produced, read) = (produced.clone(), read.clone());
                            requests.fetch_add(1, Ordering::SeqCst);
                            async move {
                                let path = req.uri().path().to_owned();
                                let mut resp = hyper::Response::new(Chunks {
                                    left: 2,
                                    produced: None,
                                });
                                if let Some(n) = path.strip_prefix("/big/") {
                                    resp.body_mut().left = n.parse().unwrap();
                                    resp.body_mut().produced = Some(produced);
                                } else if path == "/silent" {
                                    std::future::pending::<()>().await;
                                } else if path == "/read" {
                                    let body = req.into_body().collect().await;
                                    let Ok(body) = body else {
                                        return Err("the request body failed");
                                    };
                                    read.fetch_add(1, Ordering::SeqCst);
                                    let n = body.to_bytes().len().to_string();
                                    resp.headers_mut().insert("x-read", n.parse().unwrap());
                                }
                                Ok::<_, &'static str>(resp)
                            }
                        },
                    );
                    let _ = aop_verify::hyper::serve_connection(conn, service).await;
                });
            }
        });
        Self {
            port,
            requests,
            produced,
            read,
            accepted,
            task,
        }
    }
}

fn proxy_to_app(w: &World, app: &AppOrigin, extra: &[&str]) -> Proxy {
    let zone = format!(
        "example.com={},{}",
        s(&w.zone_edge.cert),
        s(&w.zone_edge.key)
    );
    let args = [&["--zone-cert", zone.as_str()][..], extra].concat();
    proxy(w, app.port, "www.example.com", &args)
}

/// `request` (a whole HTTP/1.1 request head, and any body) to the proxy on a raw TCP
/// connection; the status and the response as text, read until the proxy closes.
fn raw_visit(port: u16, request: &str) -> (u16, String) {
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    tcp.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = tcp.read_to_end(&mut out);
    let out = String::from_utf8_lossy(&out).into_owned();
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, out)
}

async fn raw_visit_async(port: u16, request: String) -> (u16, String) {
    tokio::task::spawn_blocking(move || raw_visit(port, &request))
        .await
        .unwrap()
}

/// A visitor's CONNECT, `OPTIONS *`, and a URL on another authority are answered by the
/// proxy (405, 400, 400) and never reach the origin; an absolute URL naming the origin,
/// and a path, are forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_proxy_forwards_only_paths_on_its_origin() {
    let w = world();
    let app = AppOrigin::start(&w, Limits::default()).await;
    let p = proxy_to_app(&w, &app, &[]);
    for (request, status, why) in [
        (
            "CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\nConnection: close\r\n\r\n"
                .to_owned(),
            405,
            "CONNECT is not proxied",
        ),
        (
            "OPTIONS * HTTP/1.1\r\nHost: edge.local\r\nConnection: close\r\n\r\n".to_owned(),
            400,
            "the request target is not a path on this origin",
        ),
        (
            "GET http://evil.test/x HTTP/1.1\r\nHost: evil.test\r\nConnection: close\r\n\r\n"
                .to_owned(),
            400,
            "the request target is not a path on this origin",
        ),
        (
            format!(
                "GET https://other.test:{}/ HTTP/1.1\r\nHost: edge.local\r\nConnection: close\r\n\r\n",
                app.port
            ),
            400,
            "the request target is not a path on this origin",
        ),
    ] {
        let (got, out) = raw_visit_async(p.port, request.clone()).await;
        assert_eq!(got, status, "{request}: {out}");
        assert!(out.ends_with(&format!("{why}\n")), "{request}: {out}");
    }
    assert_eq!(
        app.requests.load(Ordering::SeqCst),
        0,
        "nothing reached the origin"
    );
    let named = format!(
        "GET https://www.example.com:{}/ HTTP/1.1\r\nHost: edge.local\r\nConnection: close\r\n\r\n",
        app.port
    );
    for request in [
        named,
        "GET /a HTTP/1.1\r\nHost: edge.local\r\nConnection: close\r\n\r\n".to_owned(),
    ] {
        let (got, out) = raw_visit_async(p.port, request.clone()).await;
        assert_eq!(got, 200, "{request}: {out}");
        assert!(out.ends_with("\r\n\r\nxx"), "{out}");
    }
    assert_eq!(app.requests.load(Ordering::SeqCst), 2);
}

/// 20, then 50, visitors each start a 4 MiB download through the proxy and never read
/// it; once the origin has sent each its stream's window's worth, an innocent visitor's
/// 1 MiB download still completes whole over the same HTTP/2 connection: no visitor's
/// unread data takes another stream's credit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visitors_that_do_not_read_their_downloads_stall_no_one_else() {
    let w = world();
    let app = AppOrigin::start(&w, Limits::default()).await;
    let p = proxy_to_app(&w, &app, &[]);
    let mut stalled = Vec::new();
    for k in [20, 50] {
        while stalled.len() < k {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.set_recv_buffer_size(4096).unwrap();
            let mut tcp = socket
                .connect(([127, 0, 0, 1], p.port).into())
                .await
                .unwrap();
            tokio::io::AsyncWriteExt::write_all(
                &mut tcp,
                b"GET /big/67108864 HTTP/1.1\r\nHost: edge.local\r\n\r\n",
            )
            .await
            .unwrap();
            stalled.push(tcp);
        }
        // Each stalled stream has had at least its window (256 KiB) from the origin, and
        // the origin has stopped sending: every buffer on the way is full.
        let want = k as u64 * 256 * 1024;
        let (mut last, mut quiet) = (0, 0);
        aop_e2e::wait_until_async(
            "the stalled downloads to fill their buffers",
            Duration::from_secs(30),
            || {
                let now = app.produced.load(Ordering::SeqCst);
                quiet = if now == last { quiet + 1 } else { 0 };
                last = now;
                (now >= want && quiet >= 20).then_some(())
            },
        )
        .await;
        let (status, head, body) = visit(p.port, "/big/1048576", "").await;
        assert_eq!(status, 200, "{head}");
        assert_eq!(body.len(), 1 << 20, "K={k}: the innocent download whole");
        assert!(body.bytes().all(|b| b == b'x'));
    }
    assert_eq!(
        app.accepted.load(Ordering::SeqCst),
        1,
        "all on one connection"
    );
    drop(stalled);
}

/// An origin that never answers: the edge client fails the request with
/// `Error::NoResponse` after `Timeouts::response_header`, and the proxy answers 504; the
/// connection still serves the next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_without_a_response_head_in_time_is_504() {
    let w = world();
    let app = AppOrigin::start(&w, Limits::default()).await;
    let mut timeouts = Timeouts::default();
    timeouts.response_header = Duration::from_secs(1);
    let client: EdgeClient<Empty<Bytes>> = EdgeClient::new(
        IdentityStore::load(&w.store_spec(false)).unwrap(),
        resolve_all(app.port),
        timeouts,
    );
    let url = format!("https://www.example.com:{}", app.port);
    let e = get(&client, &format!("{url}/silent")).await.unwrap_err();
    assert!(
        matches!(&e, aop_edge::Error::NoResponse { host, after } if host == "www.example.com" && *after == Duration::from_secs(1)),
        "{e:?}"
    );
    assert_eq!(get(&client, &format!("{url}/")).await.unwrap().0, 200);
    assert_eq!(app.accepted.load(Ordering::SeqCst), 1);

    let p = proxy_to_app(&w, &app, &["--response-header-timeout", "1"]);
    let (status, head, body) = visit(p.port, "/silent", "").await;
    assert_eq!(status, 504, "{head}");
    assert_eq!(
        body,
        "504 Gateway Timeout: www.example.com sent no response head within 1s\n"
    );
    assert_eq!(visit(p.port, "/", "").await.0, 200);
}

/// A visitor that stops sending its request body: 408 after `--request-body-timeout`,
/// and the origin's application never gets the body whole (its stream was reset); a
/// visitor that sends its body whole is forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visitor_that_stops_sending_its_body_gets_408() {
    let w = world();
    let app = AppOrigin::start(&w, Limits::default()).await;
    let p = proxy_to_app(&w, &app, &["--request-body-timeout", "1"]);
    let (status, out) = raw_visit_async(
        p.port,
        "POST /read HTTP/1.1\r\nHost: edge.local\r\nContent-Length: 100\r\n\r\nabc".into(),
    )
    .await;
    assert_eq!(status, 408, "{out}");
    assert!(
        out.ends_with("408 Request Timeout: the visitor sent no request body for 1s\n"),
        "{out}"
    );
    assert_eq!(app.requests.load(Ordering::SeqCst), 1);
    let body = "y".repeat(100);
    let (status, out) = raw_visit_async(
        p.port,
        format!("POST /read HTTP/1.1\r\nHost: edge.local\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{body}"),
    )
    .await;
    assert_eq!(status, 200, "{out}");
    assert!(
        out.to_ascii_lowercase().contains("x-read: 100\r\n"),
        "{out}"
    );
    assert_eq!(
        app.read.load(Ordering::SeqCst),
        1,
        "only the whole body was read"
    );
}

/// 64 requests at a time, 1280 in all, through one client to an origin that closes
/// each connection (GOAWAY) after 100 requests: streams the origin did not process are
/// sent again, and every request gets its 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_across_the_origins_request_cap_all_succeed() {
    let w = world();
    let app = AppOrigin::start(&w, Limits::default().with_max_requests_per_connection(100)).await;
    let client = Arc::new(EdgeClient::new(
        IdentityStore::load(&w.store_spec(false)).unwrap(),
        resolve_all(app.port),
        Timeouts::default(),
    ));
    let url = format!("https://www.example.com:{}/", app.port);
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let (client, url) = (client.clone(), url.clone());
        set.spawn(async move {
            let mut failed = Vec::new();
            for _ in 0..20 {
                match get(&client, &url).await {
                    Ok((200, body, ..)) if body == "xx" => {}
                    other => failed.push(format!("{other:?}")),
                }
            }
            failed
        });
    }
    let failed: Vec<String> = set.join_all().await.into_iter().flatten().collect();
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(
        app.accepted.load(Ordering::SeqCst) >= 12,
        "the origin closed its connections: {}",
        app.accepted.load(Ordering::SeqCst)
    );
}
