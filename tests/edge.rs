//! The edge side end to end: aop-edge's identity store and pooled client against an
//! aop-verify origin (each flavour and the precedence between them), aop-edge-proxy,
//! `certtool probe` against origins that do and do not verify clients (aop-verify,
//! `openssl s_server`, nginx), and the edge against nginx with `ssl_verify_client on`.

#![allow(clippy::unwrap_used)] // test helpers: a panic is a test failure with a backtrace

use std::io::{Read as _, Write as _};
use std::path::Path;
use std::process::Command;
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
        spec
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

async fn get(
    client: &EdgeClient<Empty<Bytes>>,
    url: &str,
) -> Result<(u16, String, Option<String>, u64), aop_edge::Error> {
    let req = hyper::Request::get(url).body(Empty::new()).unwrap();
    let resp = client.request(req).await?;
    let status = resp.status().as_u16();
    let presented = resp.extensions().get::<PresentedIdentity>().unwrap().0;
    let cert = resp
        .headers()
        .get("x-client-cert-sha256")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Ok((
        status,
        String::from_utf8_lossy(&body).into_owned(),
        cert,
        presented,
    ))
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
    assert_eq!(
        header(&head, "x-echo-host"),
        Some(format!("www.example.com:{port}").as_str())
    );
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
    assert_eq!(
        body,
        "502 Bad Gateway: the origin refused the TLS handshake (alert access_denied)\n"
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
    assert!(
        logged.contains("status=502") && logged.contains("alert access_denied"),
        "{logged}"
    );

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

    // Usage errors and unreadable input: exit 2.
    for args in [
        vec![url.as_str(), "--expect", "reject"],
        vec!["http://x.test/", "--cacert", s(&ca), "--expect", "reject"],
        vec![
            url.as_str(),
            "--resolve",
            "nonsense",
            "--cacert",
            s(&ca),
            "--expect",
            "reject",
        ],
        vec![
            url.as_str(),
            "--cacert",
            "/nonexistent.pem",
            "--expect",
            "reject",
        ],
        vec![url.as_str(), "--cacert", s(&ca), "--expect", "maybe"],
    ] {
        let (c, out, err) = probe(&args);
        assert_eq!(c, 2, "{args:?}: {out}{err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
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
