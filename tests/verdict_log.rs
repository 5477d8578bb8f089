//! The verdict log line, in its own test binary: a `tracing` subscriber set for one
//! thread would miss events whose callsite another test thread registered first, so this
//! test runs alone in its process.

#![allow(clippy::unwrap_used)] // test helpers: a panic is a test failure with a backtrace

use aop_e2e::origin::{TestClient, TestOrigin};
use aop_e2e::pki;
use aop_verify::{Limits, PolicySpec, RuleSpec, TrustSpec};

#[tokio::test(flavor = "current_thread")]
async fn each_connection_logs_one_structured_verdict_event_without_key_material() {
    let w = pki::World::new(&["plain.test"]);
    // The log goes to a file (a Mutex<File> is a tracing writer), read back at the end.
    let log = w.path().join("verdicts.json");
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_writer(std::sync::Mutex::new(std::fs::File::create(&log).unwrap()))
        .with_max_level(tracing::Level::INFO)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let (origin_ca, server, edge_ca, edge) = (&w.origin_ca, &w.server, &w.edge_ca, &w.edge);
    let foreign = pki::ca(w.path(), "foreign").client("foreign");
    let rule = RuleSpec::new(
        "plain",
        ["plain.test"],
        &server.cert,
        &server.key,
        TrustSpec::new([edge_ca.pem()]),
    );
    let mut origin = TestOrigin::start(&PolicySpec::new(vec![rule]), Limits::default()).await;
    for identity in [Some(edge), Some(&foreign), None] {
        let _ = TestClient::new(&origin_ca.pem(), identity)
            .get(origin.addr, "plain.test")
            .await;
        origin.verdict().await;
    }

    let text = std::fs::read_to_string(&log).unwrap();
    let events: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["target"] == "aop::verdict")
        .collect();
    assert_eq!(events.len(), 3, "one event per connection: {text}");
    let f = |i: usize, k: &str| events[i]["fields"][k].as_str().unwrap_or("").to_owned();
    assert_eq!(
        (f(0, "verdict"), events[0]["level"].as_str().unwrap()),
        ("SUCCESS".into(), "INFO")
    );
    assert_eq!(f(0, "subject"), "CN=edge");
    assert_eq!(f(0, "issuer"), "CN=edge-ca");
    assert_eq!(f(0, "sha256").len(), 64);
    assert_eq!(f(0, "sni"), "plain.test");
    assert_eq!(f(0, "rule"), "plain");
    assert_eq!(f(0, "tls_version"), "TLSv1.3");
    assert!(f(0, "peer").starts_with("127.0.0.1:"));
    assert!(!f(0, "serial").is_empty() && !f(0, "not_after").is_empty());
    assert_eq!(
        (f(1, "verdict"), f(1, "reason")),
        ("FAILED:unknown_ca".into(), "unknown_ca".into())
    );
    assert_eq!(events[1]["level"], "WARN");
    assert_eq!(
        (f(2, "verdict"), f(2, "reason")),
        ("NONE".into(), "no_certificate".into())
    );
    assert!(
        !text.contains("PRIVATE KEY") && !text.contains("BEGIN"),
        "no key material: {text}"
    );
}
