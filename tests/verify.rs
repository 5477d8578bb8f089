//! The origin verifier end to end: real TLS handshakes on loopback against an origin
//! built on aop-verify, with a rustls client, curl and openssl s_client as the edge, and
//! `certtool verify` giving the same verdicts offline. What belongs here: anything about
//! verdicts, SNI rules, modes, limits and reload as seen over a real connection.

#![allow(clippy::unwrap_used)] // test helpers: a panic is a test failure with a backtrace

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use aop_e2e::origin::{TestClient, TestOrigin};
use aop_e2e::pki::{self, Leaf};
use aop_e2e::{certtool, code, have_peer, run, stderr, stdout};
use aop_pki::Sha256Fingerprint;
use aop_verify::{Limits, Mode, NoneCause, Outcome, PolicySpec, RuleSpec, TrustSpec, Verdict};
use tokio::io::AsyncWriteExt as _;

/// Everything a test needs ([`pki::World`]): an origin CA and the origin's certificate
/// (for every test hostname), an edge CA and its edge certificate.
struct World(pki::World);

impl std::ops::Deref for World {
    type Target = pki::World;

    fn deref(&self) -> &pki::World {
        &self.0
    }
}

const HOSTS: &[&str] = &[
    "example.com",
    "*.example.com",
    "*.api.example.com",
    "*.zone-a.test",
    "*.zone-b.test",
    "plain.test",
    "pinned.test",
    "spki.test",
    "named.test",
    "crl.test",
    "stale.test",
    "deep.test",
    "optional.test",
    "other.test",
    "stale-crl.test",
    "sha1.test",
    "early.test",
];

fn world() -> World {
    World(pki::World::new(HOSTS))
}

impl World {
    fn rule(&self, name: &str, hosts: &[&str], trust: &[&Path]) -> RuleSpec {
        RuleSpec::new(
            name,
            hosts.iter().copied(),
            &self.server.cert,
            &self.server.key,
            TrustSpec::new(trust.iter().map(|p| p.to_path_buf())),
        )
    }

    /// A client certificate from a CA no rule trusts (`foreign/`).
    fn foreign(&self) -> Leaf {
        pki::ca(self.path(), "foreign").client("foreign")
    }

    /// One rule, `plain` for plain.test, trusting the edge CA.
    fn plain(&self) -> PolicySpec {
        PolicySpec::new(vec![self.rule(
            "plain",
            &["plain.test"],
            &[&self.edge_ca.pem()],
        )])
    }

    fn client(&self, identity: Option<&Leaf>) -> TestClient {
        TestClient::new(&self.origin_ca.pem(), identity)
    }
}

fn assert_verdict(v: &Verdict, want: &str, case: &str) {
    assert_eq!(v.to_string(), want, "{case}: detail {:?}", v.detail);
}

/// One connection: the client's result and the origin's verdict.
async fn exchange(
    origin: &mut TestOrigin,
    client: &TestClient,
    sni: &str,
) -> (Result<aop_e2e::origin::Seen, String>, Verdict) {
    let seen = client.get(origin.addr, sni).await;
    let verdict = origin.verdict().await;
    (seen, verdict)
}

/// (case, identity, SNI, verdict, alert the client sees, words the detail must hold)
type Case<'a> = (
    &'a str,
    Option<&'a Leaf>,
    &'a str,
    &'a str,
    &'a str,
    &'a str,
);

#[tokio::test]
async fn every_reason_is_produced_by_a_real_certificate_in_a_real_handshake() {
    let w = world();
    let root = w.path();
    let foreign_ca = pki::ca(root, "foreign-ca");
    let foreign = foreign_ca.client("foreign");
    let now = time::OffsetDateTime::now_utc();
    let expired = w
        .edge_ca
        .client_at("expired", &[], now - time::Duration::days(100), 30);
    let future = w
        .edge_ca
        .client_at("future", &[], now + time::Duration::days(2), 30);
    let named = w
        .edge_ca
        .client_at("named", &["spiffe://cdn.test/edge"], now, 30);
    let revoked = w.edge_ca.client("revoked");
    let crl = w.edge_ca.crl(&[&revoked]);
    let server_as_client = w.edge_ca.origin("server-as-client", &["edge.test"]);
    let no_eku = pki::client_without_eku(&w.edge_ca, root);
    let any_eku = pki::client_with(
        &w.edge_ca,
        root,
        "any-eku",
        vec![
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
            rcgen::ExtendedKeyUsagePurpose::Any,
        ],
        Vec::new(),
    );
    // A subjectAltName whose contents are not valid DER, on a certificate whose CN is
    // on the allowlist: the CN must not stand in for SANs that could not be read.
    let bad_san = pki::client_with(
        &w.edge_ca,
        root,
        "spiffe://cdn.test/edge",
        vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth],
        vec![rcgen::CustomExtension::from_oid_content(
            &[2, 5, 29, 17],
            vec![0x30, 0x05, 0x82, 0x09, 0xff],
        )],
    );
    let named_upper = w
        .edge_ca
        .client_at("named-upper", &["spiffe://cdn.test/EDGE"], now, 30);
    let (stale_ca, stale_leaf) = pki::expired_ca_with_valid_leaf(root);
    let stale_chain = Leaf {
        cert: stale_leaf.cert.with_file_name("chain.pem"),
        key: stale_leaf.key.clone(),
    };
    let ca_a = pki::ca(root, "zone-a-ca");
    let ca_b = pki::ca(root, "zone-b-ca");
    let edge_a = ca_a.client("edge-a");
    let edge_b = ca_b.client("edge-b");
    let ca_as_leaf = w.edge_ca.as_leaf();
    let edge_info =
        aop_pki::CertInfo::from_der(&aop_pki::load_certificates(&w.edge.cert).unwrap()[0], now)
            .unwrap();

    let edge_ca_pem = w.edge_ca.pem();
    let mut pinned = w.rule("pinned", &["pinned.test"], &[&edge_ca_pem]);
    pinned.trust.pins = vec![Sha256Fingerprint::of(b"some other certificate")];
    let mut spki = w.rule("spki", &["spki.test"], &[&edge_ca_pem]);
    spki.trust.pins = vec![Sha256Fingerprint::of(b"not this one")];
    spki.trust.spki_pins = vec![edge_info.spki_sha256];
    let mut named_rule = w.rule("named", &["named.test"], &[&edge_ca_pem]);
    named_rule.trust.allow_san = vec!["spiffe://cdn.test/edge".into()];
    let mut crl_rule = w.rule("crl", &["crl.test"], &[&edge_ca_pem]);
    crl_rule.trust.crls = vec![crl];
    let mut deep = w.rule("deep", &["deep.test"], &[&edge_ca_pem]);
    deep.trust.max_depth = 1;
    let mut stale_crl = w.rule("crl-expired", &["stale-crl.test"], &[&edge_ca_pem]);
    stale_crl.trust.crls =
        vec![
            w.edge_ca
                .crl_at(&[], now - time::Duration::days(10), 1, "old-crl.pem"),
        ];
    let sha1 = have_peer("openssl", "every_reason: a SHA-1 certificate")
        .then(|| pki::sha1_ca_and_client(root));
    let mut rules = vec![
        w.rule("plain", &["plain.test"], &[&edge_ca_pem]),
        stale_crl,
        pinned,
        spki,
        named_rule,
        crl_rule,
        deep,
        w.rule("stale", &["stale.test"], &[&stale_ca]),
        w.rule("zone-a", &["*.zone-a.test"], &[&ca_a.pem()]),
        w.rule("zone-b", &["*.zone-b.test"], &[&ca_b.pem()]),
    ];
    if let Some((sha1_ca, _)) = &sha1 {
        rules.push(w.rule("sha1", &["sha1.test"], &[sha1_ca]));
    }
    let mut origin = TestOrigin::start(&PolicySpec::new(rules), Limits::default()).await;

    // (case, identity, SNI, verdict, alert the client sees, words the detail must hold)
    let cases: Vec<Case<'_>> = vec![
        ("the edge", Some(&w.edge), "plain.test", "SUCCESS", "", ""),
        (
            "no certificate",
            None,
            "plain.test",
            "NONE",
            "CertificateRequired",
            "no certificate",
        ),
        (
            "foreign CA",
            Some(&foreign),
            "plain.test",
            "FAILED:unknown_ca",
            "UnknownCA",
            "CN=foreign-ca",
        ),
        (
            "expired leaf",
            Some(&expired),
            "plain.test",
            "FAILED:expired",
            "CertificateExpired",
            "the certificate has expired",
        ),
        (
            "not yet valid",
            Some(&future),
            "plain.test",
            "FAILED:not_yet_valid",
            "CertificateExpired",
            "the certificate is not valid yet",
        ),
        (
            "server cert as client",
            Some(&server_as_client),
            "plain.test",
            "FAILED:bad_eku",
            "UnsupportedCertificate",
            "serverAuth",
        ),
        (
            "no EKU at all",
            Some(&no_eku),
            "plain.test",
            "FAILED:bad_eku",
            "UnsupportedCertificate",
            "clientAuth is required",
        ),
        (
            "CA as client",
            Some(&ca_as_leaf),
            "plain.test",
            "FAILED:not_a_leaf",
            "AccessDenied",
            "CA certificate",
        ),
        (
            "wrong pin",
            Some(&w.edge),
            "pinned.test",
            "FAILED:pin_mismatch",
            "AccessDenied",
            "match no pin",
        ),
        (
            "SPKI pin matches",
            Some(&w.edge),
            "spki.test",
            "SUCCESS",
            "",
            "",
        ),
        (
            "name not allowed",
            Some(&w.edge),
            "named.test",
            "FAILED:name_not_allowed",
            "AccessDenied",
            "",
        ),
        (
            "name allowed",
            Some(&named),
            "named.test",
            "SUCCESS",
            "",
            "",
        ),
        (
            "URI differs in case",
            Some(&named_upper),
            "named.test",
            "FAILED:name_not_allowed",
            "AccessDenied",
            "",
        ),
        (
            "clientAuth and anyExtendedKeyUsage",
            Some(&any_eku),
            "plain.test",
            "SUCCESS",
            "",
            "",
        ),
        (
            "revoked",
            Some(&revoked),
            "crl.test",
            "FAILED:revoked",
            "CertificateRevoked",
            "",
        ),
        ("not revoked", Some(&w.edge), "crl.test", "SUCCESS", "", ""),
        (
            "chain too long",
            Some(&w.edge),
            "deep.test",
            "FAILED:chain_too_long",
            "AccessDenied",
            "at most 1",
        ),
        (
            "expired anchor",
            Some(&stale_leaf),
            "stale.test",
            "FAILED:expired",
            "CertificateExpired",
            "trust anchor CN=expired CA expired",
        ),
        (
            "expired CA in the chain",
            Some(&stale_chain),
            "stale.test",
            "FAILED:expired",
            "CertificateExpired",
            "CN=expired CA in the presented chain",
        ),
        (
            "zone A on zone A",
            Some(&edge_a),
            "www.zone-a.test",
            "SUCCESS",
            "",
            "",
        ),
        (
            "zone A on zone B",
            Some(&edge_a),
            "www.zone-b.test",
            "FAILED:zone_mismatch",
            "AccessDenied",
            "valid for rule \"zone-a\"",
        ),
        (
            "zone B on zone A",
            Some(&edge_b),
            "api.zone-a.test",
            "FAILED:zone_mismatch",
            "AccessDenied",
            "valid for rule \"zone-b\"",
        ),
        (
            "expired CRL",
            Some(&w.edge),
            "stale-crl.test",
            "FAILED:revocation_unknown",
            "UnknownCA",
            "CRL has expired",
        ),
    ];
    let mut cases = cases;
    if let Some((_, sha1_leaf)) = &sha1 {
        cases.push((
            "SHA-1 signature",
            Some(sha1_leaf),
            "sha1.test",
            "FAILED:unsupported_algorithm",
            "DecryptError",
            "Unsupported",
        ));
    }
    for (case, identity, sni, want, alert, detail) in cases {
        let client = w.client(identity);
        let (seen, v) = exchange(&mut origin, &client, sni).await;
        assert_verdict(&v, want, case);
        assert_eq!(v.sni.as_deref(), Some(sni), "{case}");
        if want == "SUCCESS" {
            let seen = seen.unwrap_or_else(|e| panic!("{case}: {e}"));
            assert_eq!(
                (seen.status, seen.body.as_str()),
                (200, "verdict SUCCESS\n"),
                "{case}"
            );
            let c = v.client.as_ref().expect("the client certificate");
            assert_eq!(
                c.sha256,
                aop_pki::CertInfo::from_der(
                    &aop_pki::load_certificates(&identity.unwrap().cert).unwrap()[0],
                    now
                )
                .unwrap()
                .sha256
            );
            assert_eq!(v.tls_version, Some("TLSv1.3"));
        } else {
            let err = seen.expect_err(case);
            assert!(
                err.contains(alert),
                "{case}: the client should see alert {alert}, saw {err:?}"
            );
            let d = v.detail.as_deref().unwrap_or("");
            assert!(
                d.contains(detail),
                "{case}: detail {d:?} should contain {detail:?}"
            );
            if identity.is_some() {
                assert!(
                    v.client.is_some(),
                    "{case}: the refused certificate is still described"
                );
            }
        }
    }

    // A client that has the edge's certificate but not its key.
    let thief = TestClient::with_stolen_cert(&w.origin_ca.pem(), &w.edge, &foreign);
    let (seen, v) = exchange(&mut origin, &thief, "plain.test").await;
    assert_verdict(&v, "FAILED:bad_signature", "stolen certificate");
    assert!(seen.is_err());
    assert_eq!(v.client.as_ref().unwrap().subject, "CN=edge");

    // An unreadable subjectAltName (rustls's own client refuses to send it, so send the
    // bytes raw): bad_encoding, never a fall-back to the allowed CN.
    let raw = TestClient::with_raw_chain(
        &w.origin_ca.pem(),
        aop_pki::load_certificates(&bad_san.cert).unwrap(),
        &bad_san,
    );
    let (seen, v) = exchange(&mut origin, &raw, "named.test").await;
    assert_verdict(&v, "FAILED:bad_encoding", "unreadable SAN");
    assert!(v.detail.unwrap().contains("subjectAltName"));
    assert!(seen.unwrap_err().contains("BadCertificate"));

    // Bytes that are not a certificate at all.
    let junk = TestClient::with_raw_chain(
        &w.origin_ca.pem(),
        vec![rustls::pki_types::CertificateDer::from(
            b"\x30\x03\x02\x01\x00 not a certificate".to_vec(),
        )],
        &w.edge,
    );
    let (seen, v) = exchange(&mut origin, &junk, "plain.test").await;
    assert_verdict(&v, "FAILED:bad_encoding", "junk certificate");
    assert!(v.client.is_none());
    assert!(seen.unwrap_err().contains("BadCertificate"));

    // TLS 1.2 works the same.
    let tls12 = TestClient::with_versions(
        &w.origin_ca.pem(),
        Some(&w.edge),
        &[&rustls::version::TLS12],
    );
    let (seen, v) = exchange(&mut origin, &tls12, "plain.test").await;
    assert_verdict(&v, "SUCCESS", "TLS 1.2");
    assert_eq!(v.tls_version, Some("TLSv1.2"));
    assert_eq!(seen.unwrap().status, 200);
    let tls12_foreign = TestClient::with_versions(
        &w.origin_ca.pem(),
        Some(&foreign),
        &[&rustls::version::TLS12],
    );
    let (seen, v) = exchange(&mut origin, &tls12_foreign, "plain.test").await;
    assert_verdict(&v, "FAILED:unknown_ca", "TLS 1.2 foreign");
    assert!(seen.unwrap_err().contains("UnknownCA"));
}

#[tokio::test]
async fn sni_picks_the_most_specific_rule_and_unknown_names_are_refused() {
    let w = world();
    let ca = w.edge_ca.pem();
    let spec = PolicySpec::new(vec![
        w.rule("exact", &["www.example.com", "example.com"], &[&ca]),
        w.rule("zone", &["*.example.com"], &[&ca]),
    ]);
    let mut origin = TestOrigin::start(&spec, Limits::default()).await;
    let client = w.client(Some(&w.edge));
    for (sni, rule) in [
        ("www.example.com", "exact"),
        ("EXAMPLE.com", "exact"),
        ("api.example.com", "zone"),
        ("deep.api.example.com", "zone"),
    ] {
        let (seen, v) = exchange(&mut origin, &client, sni).await;
        assert_verdict(&v, "SUCCESS", sni);
        assert_eq!(v.rule.as_deref(), Some(rule), "{sni}");
        assert_eq!(seen.unwrap().status, 200);
    }
    // No rule and no default: refused before any certificate is asked for.
    let (seen, v) = exchange(&mut origin, &client, "other.test").await;
    assert_eq!(v.outcome, Outcome::None(NoneCause::UnknownSni));
    assert_eq!(v.rule, None);
    assert!(v.detail.unwrap().contains("other.test"));
    assert!(seen.is_err());

    // A client let in under one rule's SNI cannot reach another rule's hostname by its
    // Host header: 421, and the service is not called.
    let seen = client
        .get_host(origin.addr, "www.example.com", "api.example.com")
        .await
        .unwrap();
    assert_eq!(seen.status, 421);
    assert_eq!(seen.body, "");
    assert_verdict(&origin.verdict().await, "SUCCESS", "the handshake itself");
    let seen = client
        .get_host(origin.addr, "api.example.com", "deep.api.example.com:443")
        .await
        .unwrap();
    assert_eq!(seen.status, 200, "same rule, port ignored");
    origin.verdict().await;
    let seen = client
        .get_host(origin.addr, "api.example.com", "nowhere.test")
        .await
        .unwrap();
    assert_eq!(seen.status, 421, "a Host no rule serves");
    origin.verdict().await;
    // Every name a request could be routed by is checked: an absolute request target,
    // every Host header; a request without a Host is refused.
    for (request, want, case) in [
        (
            "GET http://www.example.com/ HTTP/1.1\r\nHost: api.example.com\r\nConnection: close\r\n\r\n",
            421,
            "absolute URI in, Host out",
        ),
        (
            "GET http://api.example.com/ HTTP/1.1\r\nHost: www.example.com\r\nConnection: close\r\n\r\n",
            421,
            "absolute URI out, Host in",
        ),
        (
            "GET / HTTP/1.1\r\nHost: www.example.com\r\nHost: api.example.com\r\nConnection: close\r\n\r\n",
            400,
            "two Host headers (400 even when both would pass: RFC 9112 §3.2)",
        ),
        ("GET / HTTP/1.0\r\n\r\n", 400, "no Host"),
        (
            "GET / HTTP/1.1\r\nHost: www.example.com\r\nConnection: close\r\n\r\n",
            200,
            "the right Host",
        ),
    ] {
        let seen = client
            .raw(origin.addr, "www.example.com", request)
            .await
            .unwrap();
        assert_eq!(seen.status, want, "{case}");
        origin.verdict().await;
    }

    // A default rule takes no hostnames, and rule names are unique.
    let mut bad = spec.clone();
    bad.default = Some(w.rule("shared", &["x.test"], &[&ca]));
    let err = aop_verify::PolicyHandle::load(&bad)
        .unwrap_err()
        .to_string();
    assert!(err.contains("takes no hostnames"), "{err}");
    let dup = PolicySpec::new(vec![
        w.rule("same", &["a.test"], &[&ca]),
        w.rule("same", &["b.test"], &[&ca]),
    ]);
    let err = aop_verify::PolicyHandle::load(&dup)
        .unwrap_err()
        .to_string();
    assert!(err.contains("two rules are named \"same\""), "{err}");

    // With a default (shared) rule, the unknown name lands there.
    let shared_ca = pki::ca(w.path(), "shared-ca");
    let shared_edge = shared_ca.client("shared-edge");
    let mut spec = spec.clone();
    spec.default = Some(w.rule("shared", &[], &[&shared_ca.pem()]));
    origin.policy.reload(&spec).unwrap();
    let (_, v) = exchange(&mut origin, &w.client(Some(&shared_edge)), "other.test").await;
    assert_verdict(&v, "SUCCESS", "default rule");
    assert_eq!(v.rule.as_deref(), Some("shared"));
    // The shared certificate is not valid for a zone that has its own CA.
    let (_, v) = exchange(
        &mut origin,
        &w.client(Some(&shared_edge)),
        "api.example.com",
    )
    .await;
    assert_verdict(&v, "FAILED:zone_mismatch", "shared cert on a per-zone rule");
}

#[tokio::test]
async fn optional_mode_hands_none_and_failed_to_the_application() {
    let w = world();
    let foreign = w.foreign();
    let mut rule = w.rule("optional", &["optional.test"], &[&w.edge_ca.pem()]);
    rule.mode = Mode::Optional;
    let mut origin = TestOrigin::start(&PolicySpec::new(vec![rule]), Limits::default()).await;
    for (identity, want) in [
        (None, "NONE"),
        (Some(&foreign), "FAILED:unknown_ca"),
        (Some(&w.edge), "SUCCESS"),
    ] {
        let (seen, v) = exchange(&mut origin, &w.client(identity), "optional.test").await;
        assert_verdict(&v, want, want);
        let seen =
            seen.unwrap_or_else(|e| panic!("{want}: optional mode completes the handshake: {e}"));
        // The application (the test origin's handler) decided: 403 unless SUCCESS.
        let status = if want == "SUCCESS" { 200 } else { 403 };
        assert_eq!(
            (seen.status, seen.body),
            (status, format!("verdict {want}\n"))
        );
    }
    // Possession of the key is still required in optional mode.
    let thief = TestClient::with_stolen_cert(&w.origin_ca.pem(), &w.edge, &foreign);
    let (seen, v) = exchange(&mut origin, &thief, "optional.test").await;
    assert_verdict(&v, "FAILED:bad_signature", "optional, stolen certificate");
    assert!(seen.is_err());
}

#[tokio::test]
async fn garbage_idle_and_slow_clients_do_not_stop_the_origin() {
    let w = world();
    let spec = w.plain();
    let mut origin = TestOrigin::start(&spec, Limits::default().with_max_handshakes(1)).await;
    let client = w.client(Some(&w.edge));

    // Plain HTTP (garbage, to TLS) on the TLS port.
    let mut tcp = tokio::net::TcpStream::connect(origin.addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: plain.test\r\n\r\n")
        .await
        .unwrap();
    let v = origin.verdict().await;
    assert_eq!(v.outcome, Outcome::None(NoneCause::HandshakeError));
    assert!(v.detail.unwrap().contains("not a TLS ClientHello"));
    drop(tcp);
    let (seen, v) = exchange(&mut origin, &client, "plain.test").await;
    assert_verdict(&v, "SUCCESS", "after garbage");
    assert_eq!(seen.unwrap().status, 200);

    // A client that connects and says nothing is cut off at the handshake timeout (short
    // here, on an origin of its own: a real handshake need not fit in it).
    let limits = Limits::default().with_handshake_timeout(Duration::from_millis(300));
    let mut impatient = TestOrigin::start(&spec, limits).await;
    let idle = tokio::net::TcpStream::connect(impatient.addr)
        .await
        .unwrap();
    let v = impatient.verdict().await;
    assert_eq!(v.outcome, Outcome::None(NoneCause::HandshakeTimeout));
    drop(idle);

    // With the one handshake slot held by an idle client, the edge waits for it rather
    // than being refused; when the idle client goes away, the edge gets through.
    let mut spec2 = spec.clone();
    spec2.rules[0].name = "plain2".into();
    let limits = Limits::default().with_max_handshakes(1);
    let mut origin = TestOrigin::start(&spec2, limits).await;
    let idle = tokio::net::TcpStream::connect(origin.addr).await.unwrap();
    // Wait until the origin has accepted it. This test runs on one thread, and the
    // origin spawns the idle connection's handshake task in the same step as it counts
    // the connection, so that task runs (and takes the one slot) before the origin can
    // even accept the edge's connection below.
    let accepted = origin.accepted.clone();
    aop_e2e::wait_until_async(
        "the idle connection accepted",
        Duration::from_secs(10),
        || (accepted.load(std::sync::atomic::Ordering::SeqCst) > 0).then_some(()),
    )
    .await;
    let addr = origin.addr;
    let edge = tokio::spawn({
        let client = client.clone();
        async move { client.get(addr, "plain.test").await }
    });
    aop_e2e::wait_until_async(
        "the edge's connection accepted",
        Duration::from_secs(10),
        || (accepted.load(std::sync::atomic::Ordering::SeqCst) > 1).then_some(()),
    )
    .await;
    // The assertion, not a synchronisation: for a while after the origin accepted it,
    // the edge has no verdict and no answer (it is waiting for the slot).
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !edge.is_finished() && origin.pending_verdicts().is_empty(),
        "the edge must wait for the handshake slot"
    );
    drop(idle);
    let first = origin.verdict().await;
    assert_eq!(
        first.outcome,
        Outcome::None(NoneCause::HandshakeError),
        "{:?}",
        first.detail
    );
    let v = origin.verdict().await;
    assert_verdict(&v, "SUCCESS", "after the slot freed");
    assert_eq!(edge.await.unwrap().unwrap().status, 200);
}

/// The verdicts for the old and the new edge's connections, in turn, must be `want`.
async fn old_and_new(
    origin: &mut TestOrigin,
    clients: [&TestClient; 2],
    want: [&str; 2],
    when: &str,
) {
    for (client, want, who) in [(clients[0], want[0], "old"), (clients[1], want[1], "new")] {
        let (_, v) = exchange(origin, client, "plain.test").await;
        assert_verdict(&v, want, &format!("{who} {when}"));
    }
}

#[tokio::test]
async fn reload_swaps_trust_atomically_and_a_broken_reload_keeps_the_old_policy() {
    let w = world();
    let next_ca = pki::ca(w.path(), "next-ca");
    let next_edge = next_ca.client("next-edge");
    let mut origin = TestOrigin::start(&w.plain(), Limits::default()).await;
    let old = w.client(Some(&w.edge));
    let new = w.client(Some(&next_edge));
    old_and_new(
        &mut origin,
        [&old, &new],
        ["SUCCESS", "FAILED:unknown_ca"],
        "before",
    )
    .await;

    // Rotation step 1: trust both.
    let both = PolicySpec::new(vec![w.rule(
        "plain",
        &["plain.test"],
        &[&w.edge_ca.pem(), &next_ca.pem()],
    )]);
    origin.policy.reload(&both).unwrap();
    old_and_new(
        &mut origin,
        [&old, &new],
        ["SUCCESS", "SUCCESS"],
        "during overlap",
    )
    .await;

    // A reload naming a file that does not exist is refused, naming it; the overlap stays.
    let missing = w.path().join("no-such-ca.pem");
    let broken = PolicySpec::new(vec![w.rule("plain", &["plain.test"], &[&missing])]);
    let err = origin.policy.reload(&broken).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!("{}: cannot read", missing.display())),
        "{err}"
    );
    let garbage = w.path().join("garbage.pem");
    std::fs::write(&garbage, "-----BEGIN CERTIFICATE-----\nnope\n").unwrap();
    let broken = PolicySpec::new(vec![w.rule("plain", &["plain.test"], &[&garbage])]);
    let err = origin.policy.reload(&broken).unwrap_err().to_string();
    assert!(err.contains("garbage.pem: malformed PEM"), "{err}");
    old_and_new(
        &mut origin,
        [&old, &new],
        ["SUCCESS", "SUCCESS"],
        "after broken reload",
    )
    .await;

    // Step 3: retire the old CA.
    let retired = PolicySpec::new(vec![w.rule("plain", &["plain.test"], &[&next_ca.pem()])]);
    origin.policy.reload(&retired).unwrap();
    old_and_new(
        &mut origin,
        [&old, &new],
        ["FAILED:unknown_ca", "SUCCESS"],
        "after retire",
    )
    .await;
}

#[tokio::test]
async fn resumed_sessions_carry_a_rechecked_verdict_and_do_not_survive_a_reload() {
    let w = world();
    let mut origin = TestOrigin::start(&w.plain(), Limits::default()).await;
    let client = w.client(Some(&w.edge));
    let (seen, v) = exchange(&mut origin, &client, "plain.test").await;
    assert!(!seen.unwrap().resumed);
    assert!(!v.resumed);
    let (seen, v) = exchange(&mut origin, &client, "plain.test").await;
    assert!(
        seen.unwrap().resumed,
        "the second connection resumes (TLS 1.3 ticket)"
    );
    assert!(v.resumed);
    assert_verdict(&v, "SUCCESS", "resumed");
    assert_eq!(
        v.client.as_ref().unwrap().subject,
        "CN=edge",
        "the stored certificate was re-checked"
    );

    // After a reload that stops trusting the edge, its old session is worthless: a full
    // handshake happens and is refused.
    let other = pki::ca(w.path(), "other-ca");
    origin
        .policy
        .reload(&PolicySpec::new(vec![w.rule(
            "plain",
            &["plain.test"],
            &[&other.pem()],
        )]))
        .unwrap();
    let (seen, v) = exchange(&mut origin, &client, "plain.test").await;
    assert!(seen.is_err());
    assert!(!v.resumed);
    assert_verdict(&v, "FAILED:unknown_ca", "after reload");
}

/// Two refusals the table above does not reach: a client certificate whose CA signature
/// was tampered with (one bit of the signature flipped; it still parses), and a trust
/// anchor that is not valid yet (its leaf is). The handshake and `certtool verify` give
/// the same verdict, reason and detail.
#[tokio::test]
async fn a_tampered_signature_and_a_not_yet_valid_anchor_are_refused_in_the_handshake_and_offline()
{
    let w = world();
    let root = w.path();
    let tampered = pki::tampered(&w.edge, root, "tampered");
    let (early_ca, early_leaf) = pki::future_ca_with_valid_leaf(root);
    let spec = PolicySpec::new(vec![
        w.rule("plain", &["plain.test"], &[&w.edge_ca.pem()]),
        w.rule("early", &["early.test"], &[&early_ca]),
    ]);
    let mut origin = TestOrigin::start(&spec, Limits::default()).await;
    let early_from = aop_pki::CertInfo::from_der(
        &aop_pki::load_certificates(&early_ca).unwrap()[0],
        time::OffsetDateTime::now_utc(),
    )
    .unwrap()
    .not_before;
    let early_detail = format!(
        "trust anchor CN=not-yet-valid CA is not valid before {}",
        aop_pki::rfc3339(early_from)
    );
    // (case, identity, trust, SNI, verdict, alert the client sees, detail)
    let cases = [
        (
            "tampered signature",
            &tampered,
            w.edge_ca.pem(),
            "plain.test",
            "FAILED:bad_signature",
            "DecryptError",
            None,
        ),
        (
            "anchor not yet valid",
            &early_leaf,
            early_ca.clone(),
            "early.test",
            "FAILED:not_yet_valid",
            "CertificateExpired",
            Some(early_detail.as_str()),
        ),
    ];
    for (case, identity, trust, sni, want, alert, detail) in cases {
        let (seen, v) = exchange(&mut origin, &w.client(Some(identity)), sni).await;
        assert_verdict(&v, want, case);
        assert_eq!(v.detail.as_deref(), detail, "{case}");
        let err = seen.expect_err(case);
        assert!(
            err.contains(alert),
            "{case}: want alert {alert}, saw {err:?}"
        );

        let o = certtool([
            "verify",
            "--trust",
            s(&trust),
            "--chain",
            s(&identity.cert),
            "--sni",
            sni,
            "--json",
        ]);
        assert_eq!(code(&o), 1, "{case}: {}{}", stdout(&o), stderr(&o));
        let j: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
        assert_eq!(j["verdict"], want, "{case}");
        assert_eq!(j["reason"], want.trim_start_matches("FAILED:"), "{case}");
        assert_eq!(j["detail"].as_str(), detail, "{case}");
    }
}

// ---- Outside peers: curl and openssl s_client as the edge ----

/// curl as the edge (through [`aop_e2e::curl`]) for `https://HOST:PORT/` on the origin,
/// over HTTP/1.1: a refused curl reads the TLS 1.3 alert on its first read and prints it,
/// while over HTTP/2 it may first fail to write its preface to the closed connection
/// (exit 55) and never read the alert. (HTTP/2 refusals: tests/http2.rs.)
async fn curl(origin: &TestOrigin, w: &World, identity: Option<&Leaf>, host: &str) -> Output {
    let mut c = aop_e2e::curl(host, origin.addr.port(), &w.origin_ca.pem(), identity);
    c.arg("--http1.1");
    off_thread(move || run(&mut c)).await
}

/// Run `f` (a blocking peer) off this test's one thread, which the origin needs.
async fn off_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test]
async fn curl_resolve_sees_the_edge_accepted_and_everyone_else_refused() {
    if !have_peer("curl", "curl_resolve_sees_the_edge_accepted") {
        return;
    }
    let w = world();
    let foreign = w.foreign();
    let spec = PolicySpec::new(vec![w.rule(
        "zone",
        &["*.example.com", "example.com"],
        &[&w.edge_ca.pem()],
    )]);
    let mut origin = TestOrigin::start(&spec, Limits::default()).await;

    let o = curl(&origin, &w, Some(&w.edge), "www.example.com").await;
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o), "verdict SUCCESS\n");
    assert_verdict(&origin.verdict().await, "SUCCESS", "curl edge");

    let o = curl(&origin, &w, None, "www.example.com").await;
    assert_ne!(code(&o), 0);
    assert!(
        stderr(&o).contains("certificate required"),
        "{}",
        stderr(&o)
    );
    assert_verdict(&origin.verdict().await, "NONE", "curl without certificate");

    let o = curl(&origin, &w, Some(&foreign), "www.example.com").await;
    assert_ne!(code(&o), 0);
    assert!(stderr(&o).contains("unknown ca"), "{}", stderr(&o));
    assert_verdict(&origin.verdict().await, "FAILED:unknown_ca", "curl foreign");
}

/// openssl s_client as the edge (through [`aop_e2e::s_client`]), off this test's thread.
async fn s_client(
    origin: &TestOrigin,
    w: &World,
    identity: Option<&Leaf>,
    servername: Option<&str>,
    extra: &[&str],
) -> Output {
    let (addr, roots) = (origin.addr, w.origin_ca.pem());
    let identity = identity.cloned();
    let servername = servername.map(str::to_owned);
    let extra: Vec<String> = extra.iter().map(|a| a.to_string()).collect();
    off_thread(move || {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        aop_e2e::s_client(
            addr,
            servername.as_deref(),
            &roots,
            identity.as_ref(),
            &extra,
        )
    })
    .await
}

#[tokio::test]
async fn openssl_s_client_as_the_edge() {
    if !have_peer("openssl", "openssl_s_client_as_the_edge") {
        return;
    }
    let w = world();
    let foreign = w.foreign();
    let mut origin = TestOrigin::start(&w.plain(), Limits::default()).await;
    let o = s_client(&origin, &w, Some(&w.edge), Some("plain.test"), &[]).await;
    assert!(
        stdout(&o).contains("verdict SUCCESS"),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
    assert_verdict(&origin.verdict().await, "SUCCESS", "s_client edge");

    let o = s_client(&origin, &w, Some(&foreign), Some("plain.test"), &[]).await;
    assert!(!stdout(&o).contains("verdict"), "{}", stdout(&o));
    assert!(stderr(&o).contains("alert unknown ca"), "{}", stderr(&o));
    assert_verdict(
        &origin.verdict().await,
        "FAILED:unknown_ca",
        "s_client foreign",
    );

    // No SNI and no default rule: refused, and the verdict says why.
    let o = s_client(&origin, &w, Some(&w.edge), None, &[]).await;
    assert!(!stdout(&o).contains("verdict"));
    let v = origin.verdict().await;
    assert_eq!(v.outcome, Outcome::None(NoneCause::NoSni));
}

/// aop's cipher-suite order, not the client's: openssl (like rustls) puts
/// TLS_AES_256_GCM_SHA384 first, and the origin picks TLS_AES_128_GCM_SHA256 (cheaper at
/// the same 128-bit strength as the key exchange); a client that offers only AES-256 still
/// gets it. One session ticket per handshake, not two.
#[tokio::test]
async fn openssl_s_client_gets_aes_128_and_one_ticket() {
    if !have_peer("openssl", "openssl_s_client_gets_aes_128_and_one_ticket") {
        return;
    }
    let w = world();
    let mut origin = TestOrigin::start(&w.plain(), Limits::default()).await;
    let o = s_client(&origin, &w, Some(&w.edge), Some("plain.test"), &[]).await;
    let out = stdout(&o);
    assert!(out.contains("verdict SUCCESS"), "{out}{}", stderr(&o));
    assert!(
        out.contains("Cipher is TLS_AES_128_GCM_SHA256"),
        "the origin's order wins: {out}"
    );
    assert_eq!(
        out.matches("Post-Handshake New Session Ticket arrived")
            .count(),
        1,
        "one ticket: {out}"
    );
    assert_verdict(&origin.verdict().await, "SUCCESS", "default suites");

    let aes256 = ["-ciphersuites", "TLS_AES_256_GCM_SHA384"];
    let o = s_client(&origin, &w, Some(&w.edge), Some("plain.test"), &aes256).await;
    let out = stdout(&o);
    assert!(out.contains("verdict SUCCESS"), "{out}{}", stderr(&o));
    assert!(out.contains("Cipher is TLS_AES_256_GCM_SHA384"), "{out}");
    assert_verdict(&origin.verdict().await, "SUCCESS", "AES-256 only");
}

/// One TLS 1.3 ticket per handshake; a client that asks for more (RFC 9149) gets what it
/// asks for, up to four.
#[tokio::test]
async fn one_ticket_per_handshake_and_up_to_four_on_request() {
    let w = world();
    let mut origin = TestOrigin::start(&w.plain(), Limits::default()).await;
    for (asked, want) in [(None, 1), (Some(3), 3), (Some(10), 4)] {
        let request = asked.map(|n| rustls::client::TicketRequest {
            new_session_count: n,
            resumption_count: 1,
        });
        let (client, tickets) =
            TestClient::counting_tickets(&w.origin_ca.pem(), Some(&w.edge), request);
        let seen = client.get(origin.addr, "plain.test").await.unwrap();
        assert_eq!(seen.status, 200);
        assert_verdict(&origin.verdict().await, "SUCCESS", "ticket request");
        assert_eq!(
            tickets.load(std::sync::atomic::Ordering::SeqCst),
            want,
            "asked for {asked:?}"
        );
    }
}

/// `examples/origin.rs` serving the origin's certificate, trusting the edge CA.
fn start_example(
    w: &World,
    extra: &[&str],
) -> (aop_e2e::Running, u16, std::sync::mpsc::Receiver<String>) {
    aop_e2e::example_origin(&w.server, &w.edge_ca.pem(), extra)
}

fn verdict_line(rx: &std::sync::mpsc::Receiver<String>) -> String {
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("a verdict line on stderr");
        if line.contains("aop::verdict") {
            return line;
        }
    }
}

#[test]
fn the_example_origin_serves_the_edge_and_says_the_verdict() {
    if !have_peer("curl", "the_example_origin_serves_the_edge") {
        return;
    }
    let w = world();
    let roots = w.origin_ca.pem();
    let curl = |port: u16, identity: Option<&Leaf>| {
        run(&mut aop_e2e::curl("example.com", port, &roots, identity))
    };
    let (child, port, rx) = start_example(&w, &["--http2"]);
    // HTTP/2 by ALPN, and HTTP/1.1 for a client that asks for it.
    for (flag, version) in [("--http2", "2"), ("--http1.1", "1.1")] {
        let mut c = aop_e2e::curl("example.com", port, &roots, Some(&w.edge));
        let o = run(c.args([flag, "-w", "%{http_version}"]));
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        assert_eq!(
            stdout(&o),
            format!("hello from the origin; verdict SUCCESS\n{version}")
        );
        let line = verdict_line(&rx);
        assert!(
            line.contains("verdict=SUCCESS") && line.contains("subject=\"CN=edge\""),
            "{line}"
        );
    }
    let o = curl(port, None);
    assert_ne!(code(&o), 0);
    assert!(verdict_line(&rx).contains("verdict=NONE"));
    drop(child);

    let (_child, port, rx) = start_example(&w, &["--mode", "optional"]);
    let o = curl(port, None);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o), "hello from the origin; verdict NONE\n");
    assert!(verdict_line(&rx).contains("reason=\"no_certificate\""));
}

// ---- certtool verify: the same verdicts, offline ----

fn verify(args: &[&str]) -> (i32, String) {
    let o = certtool(std::iter::once("verify").chain(args.iter().copied()));
    (
        code(&o),
        stdout(&o).lines().next().unwrap_or("").to_owned() + &stderr(&o),
    )
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn certtool_verify_gives_the_origins_verdict_offline() {
    let w = world();
    let root = w.path();
    let now = time::OffsetDateTime::now_utc();
    let ca = w.edge_ca.pem();
    let foreign = pki::ca(root, "foreign").client("foreign");
    let expired = w
        .edge_ca
        .client_at("expired", &[], now - time::Duration::days(100), 30);
    let revoked = w.edge_ca.client("revoked");
    let server = w.edge_ca.origin("server", &["x.test"]);
    let (stale_ca, stale_leaf) = pki::expired_ca_with_valid_leaf(root);

    // certtool makes the CRL here, and openssl must read it.
    let crl = root.join("crl.pem");
    let o = crl_create(&w, Some(&revoked), &crl, &[]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    if have_peer("openssl", "certtool_verify: openssl crl") {
        let o = run(Command::new("openssl").args(["crl", "-in", s(&crl), "-noout", "-text"]));
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        let serial = aop_pki::CertInfo::from_der(
            &aop_pki::load_certificates(&revoked.cert).unwrap()[0],
            now,
        )
        .unwrap()
        .serial;
        assert!(
            stdout(&o).to_lowercase().contains(&serial),
            "{}",
            stdout(&o)
        );
        let o = run(Command::new("openssl").args([
            "verify",
            "-crl_check",
            "-CAfile",
            s(&ca),
            "-CRLfile",
            s(&crl),
            s(&revoked.cert),
        ]));
        assert_ne!(code(&o), 0, "openssl agrees the certificate is revoked");
        assert!(stdout(&o).contains("revoked") || stderr(&o).contains("revoked"));
    }
    let edge_pin =
        aop_pki::CertInfo::from_der(&aop_pki::load_certificates(&w.edge.cert).unwrap()[0], now)
            .unwrap()
            .sha256
            .to_colon_hex();

    let (ca_p, edge_p, foreign_p) = (s(&ca), s(&w.edge.cert), s(&foreign.cert));
    let (revoked_p, crl_p) = (s(&revoked.cert), s(&crl));
    // (trust, chain, more arguments, exit code, verdict)
    let cases: Vec<(&str, &str, Vec<&str>, i32, &str)> = vec![
        (ca_p, edge_p, vec![], 0, "SUCCESS"),
        (ca_p, foreign_p, vec![], 1, "FAILED:unknown_ca"),
        (ca_p, s(&expired.cert), vec![], 1, "FAILED:expired"),
        (ca_p, s(&server.cert), vec![], 1, "FAILED:bad_eku"),
        (ca_p, ca_p, vec![], 1, "FAILED:not_a_leaf"),
        (ca_p, revoked_p, vec!["--crl", crl_p], 1, "FAILED:revoked"),
        (ca_p, edge_p, vec!["--crl", crl_p], 0, "SUCCESS"),
        (ca_p, edge_p, vec!["--pin", &edge_pin], 0, "SUCCESS"),
        (
            ca_p,
            foreign_p,
            vec!["--pin", &edge_pin],
            1,
            "FAILED:unknown_ca",
        ),
        (
            ca_p,
            revoked_p,
            vec!["--pin", &edge_pin],
            1,
            "FAILED:pin_mismatch",
        ),
        (
            ca_p,
            edge_p,
            vec!["--allow-san", "edge.test"],
            1,
            "FAILED:name_not_allowed",
        ),
        (ca_p, edge_p, vec!["--allow-san", "EDGE"], 0, "SUCCESS"),
        (
            ca_p,
            edge_p,
            vec!["--max-depth", "1"],
            1,
            "FAILED:chain_too_long",
        ),
        (
            s(&stale_ca),
            s(&stale_leaf.cert),
            vec![],
            1,
            "FAILED:expired",
        ),
        // --at: the edge certificate (90 days) is expired in two years, not yet valid last year.
        (
            ca_p,
            edge_p,
            vec!["--at", "2099-01-01T00:00:00Z"],
            1,
            "FAILED:expired",
        ),
        (
            ca_p,
            edge_p,
            vec!["--at", "2000-01-01T00:00:00Z"],
            1,
            "FAILED:not_yet_valid",
        ),
    ];
    let sha1 =
        have_peer("openssl", "certtool_verify: SHA-1").then(|| pki::sha1_ca_and_client(root));
    let mut cases = cases;
    if let Some((sha1_ca, sha1_leaf)) = &sha1 {
        cases.push((
            s(sha1_ca),
            s(&sha1_leaf.cert),
            vec![],
            1,
            "FAILED:unsupported_algorithm",
        ));
    }
    for (trust, chain, more, want_code, want) in cases {
        let args = [&["--trust", trust, "--chain", chain], &more[..]].concat();
        let (c, first) = verify(&args);
        assert_eq!(
            (c, first.as_str()),
            (want_code, want),
            "certtool verify {args:?}"
        );
    }

    // The JSON report parses and carries the same verdict.
    let o = certtool([
        "verify",
        "--trust",
        s(&ca),
        "--chain",
        s(&foreign.cert),
        "--sni",
        "plain.test",
        "--json",
    ]);
    assert_eq!(code(&o), 1);
    let j: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(j["verdict"], "FAILED:unknown_ca");
    assert_eq!(j["reason"], "unknown_ca");
    assert_eq!(j["sni"], "plain.test");
    assert_eq!(j["certificate"]["subject"], "CN=foreign");

    // Unreadable input is exit 2 with one line naming the file.
    let bad = aop_e2e::workspace_root().join("testdata/bad");
    for (args, names) in [
        (
            vec!["--trust", s(&ca), "--chain", s(&w.edge.key)],
            w.edge.key.clone(),
        ),
        (
            vec![
                "--trust",
                s(&bad.join("truncated.pem")),
                "--chain",
                s(&w.edge.cert),
            ],
            bad.join("truncated.pem"),
        ),
        (
            vec![
                "--trust",
                s(&ca),
                "--chain",
                s(&w.edge.cert),
                "--crl",
                s(&ca),
            ],
            ca.clone(),
        ),
        (
            vec!["--trust", s(&ca), "--chain", s(&root.join("missing.pem"))],
            root.join("missing.pem"),
        ),
    ] {
        let o = certtool(std::iter::once("verify").chain(args.iter().copied()));
        assert_eq!(code(&o), 2, "{args:?}: {}", stderr(&o));
        let err = stderr(&o);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.starts_with(&format!("certtool: {}: ", names.display())),
            "{err}"
        );
    }
    let (c, out) = verify(&["--trust", s(&ca), "--chain", s(&w.edge.cert), "--pin", "zz"]);
    assert_eq!(c, 2, "{out}");
    let (c, out) = verify(&[
        "--trust",
        s(&ca),
        "--chain",
        s(&w.edge.cert),
        "--at",
        "yesterday",
    ]);
    assert_eq!(c, 2, "{out}");
}

/// `certtool crl create` by the edge CA, revoking `revoke`, written to `out`.
fn crl_create(w: &World, revoke: Option<&Leaf>, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["crl", "create", "--ca", s(&w.edge_ca.dir), "--out", s(out)];
    if let Some(l) = revoke {
        args.extend(["--revoke", s(&l.cert)]);
    }
    certtool(args.iter().chain(extra))
}

#[test]
fn crl_create_refuses_what_it_should() {
    let w = world();
    let other = pki::ca(w.path(), "other").client("other");
    let out = w.path().join("crl.pem");
    let o = crl_create(&w, Some(&other), &out, &[]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("not by this CA"), "{}", stderr(&o));
    assert!(!out.exists());
    let o = crl_create(&w, None, &out, &[]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let before = std::fs::read(&out).unwrap();
    let o = crl_create(&w, Some(&w.edge), &out, &[]);
    assert_eq!(code(&o), 1);
    assert_eq!(std::fs::read(&out).unwrap(), before);
    let o = crl_create(&w, Some(&w.edge), &out, &["--force"]);
    assert_eq!(code(&o), 0);
    let _unused: PathBuf = out;
}

#[tokio::test]
async fn a_kept_alive_connection_is_rechecked_after_a_reload() {
    use aop_edge::{EdgeClient, IdentitySpec, IdentityStore, Resolve, StoreSpec, Timeouts};
    use http_body_util::{BodyExt as _, Empty};
    let w = world();
    let next_ca = pki::ca(w.path(), "next-ca");
    let mut origin = TestOrigin::start(&w.plain(), Limits::default()).await;
    let mut store = StoreSpec::new([w.origin_ca.pem()]);
    store.shared = Some(IdentitySpec::new(&w.edge.cert, &w.edge.key));
    // HTTP/1.1, whose 421 says `Connection: close` (HTTP/2's GOAWAY: tests/http2.rs).
    store.alpn = vec![b"http/1.1".to_vec()];
    let resolve = Resolve::new([origin.resolve("plain.test").parse().unwrap()]);
    let client: EdgeClient<Empty<hyper::body::Bytes>> = EdgeClient::new(
        IdentityStore::load(&store).unwrap(),
        resolve,
        Timeouts::default(),
    );
    let url = format!("https://plain.test:{}/", origin.addr.port());
    let get = || async {
        let resp = client
            .request(hyper::Request::get(&url).body(Empty::new()).unwrap())
            .await?;
        let status = resp.status().as_u16();
        let close = resp
            .headers()
            .get("connection")
            .is_some_and(|v| v == "close");
        let _ = resp.into_body().collect().await;
        Ok::<_, aop_edge::Error>((status, close))
    };
    assert_eq!(get().await.unwrap(), (200, false));
    assert_verdict(&origin.verdict().await, "SUCCESS", "first");
    assert_eq!(
        get().await.unwrap(),
        (200, false),
        "the same kept-alive connection"
    );
    // A reload that drops the edge's CA, while the connection is still open.
    origin
        .policy
        .reload(&PolicySpec::new(vec![w.rule(
            "plain",
            &["plain.test"],
            &[&next_ca.pem()],
        )]))
        .unwrap();
    assert_eq!(
        get().await.unwrap(),
        (421, true),
        "re-checked against the new policy: 421 and close"
    );
    let err = get().await.unwrap_err();
    assert_eq!(
        aop_edge::classify(&err),
        aop_edge::Failure::Refused {
            alert: "unknown_ca".into()
        },
        "{err}"
    );
    assert_verdict(
        &origin.verdict().await,
        "FAILED:unknown_ca",
        "the new handshake",
    );
    // A reload that keeps trusting the edge does not disturb its connections.
    origin
        .policy
        .reload(&PolicySpec::new(vec![w.rule(
            "plain",
            &["plain.test"],
            &[&w.edge_ca.pem(), &next_ca.pem()],
        )]))
        .unwrap();
    assert_eq!(get().await.unwrap(), (200, false));
    origin.verdict().await;
    origin
        .policy
        .reload(&PolicySpec::new(vec![w.rule(
            "plain",
            &["plain.test"],
            &[&w.edge_ca.pem()],
        )]))
        .unwrap();
    assert_eq!(
        get().await.unwrap(),
        (200, false),
        "still trusted: served on the same connection"
    );
}
