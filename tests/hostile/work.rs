//! See main.rs.
//!
//! Client chains that make the origin's verifier work: certificates named exactly like the
//! trusted CA, with other keys. webpki tries each as the issuer of every other and checks
//! a signature against the anchor at the end of each path (16 for three impostors);
//! aop-verify verifies each (certificate, key) pair once per handshake and at most
//! `2 × max_depth + 2` signatures in all (10 by default), then says `chain_too_long`.
//! The counts are asserted in aop-verify's unit tests; here the guard's verdicts, alerts,
//! and that the edge is still served right after.

use std::path::Path;

use aop_e2e::guard::Guard;
use aop_e2e::origin::TestClient;
use aop_e2e::pki::{self, Leaf, TestCa};
use aop_e2e::tempdir;
use aop_e2e::upstream::Echo;

/// aop-origin (the harness's [`Guard`]) with one site, `a.example`, trusting `trust`
/// (paths relative to `dir`).
fn guard(dir: &Path, origin_ca: &TestCa, trust: &[&str], upstream: std::net::SocketAddr) -> Guard {
    let origin = origin_ca.origin("origin", &["a.example"]);
    let trust: Vec<String> = trust.iter().map(|t| format!("{t:?}")).collect();
    Guard::start(
        dir,
        &format!(
            "\n[[site]]\nhostnames = [\"a.example\"]\ncert = {:?}\nkey = {:?}\ntrust = [{}]\n\
             upstream = \"http://{upstream}\"\n",
            origin.cert,
            origin.key,
            trust.join(", ")
        ),
    )
}

/// Present `leaf`'s whole `cert.pem` (the leaf and the impostors) to the guard.
async fn present(g: &Guard, origin_ca: &TestCa, leaf: &Leaf) -> Result<u16, String> {
    let chain = aop_pki::load_certificates(&leaf.cert).unwrap();
    TestClient::with_raw_chain(&origin_ca.pem(), chain, leaf)
        .get(g.addr(), "a.example")
        .await
        .map(|seen| seen.status)
}

/// Three impostors of the edge CA: each costs the guard one signature (four in all, the
/// edge's chain costs one), the handshake is refused as webpki concludes (a signature
/// that does not verify: `bad_signature`, alert decrypt_error), and the edge's next
/// request on the same guard is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impostors_of_the_trusted_ca_are_refused_and_the_edge_is_served_right_after() {
    let dir = tempdir().unwrap();
    let origin_ca = pki::ca(dir.path(), "origin-ca");
    let edge_ca = pki::ca(dir.path(), "edge-ca");
    let edge = edge_ca.client("edge");
    let attack = pki::impostor_chain(&edge_ca, dir.path(), 3);
    let echo = Echo::start().await;
    let g = guard(dir.path(), &origin_ca, &["edge-ca/ca.pem"], echo.addr);

    let refused = present(&g, &origin_ca, &attack).await;
    assert_eq!(refused, Err("received fatal alert: DecryptError".into()));
    let line = g.wait_log("verdict=");
    assert!(line.contains("verdict=FAILED:bad_signature"), "{line}");
    assert!(line.contains("subject=\"CN=impostor edge\""), "{line}");

    let edge = TestClient::new(&origin_ca.pem(), Some(&edge));
    assert_eq!(
        edge.get(g.addr(), "a.example").await.map(|s| s.status),
        Ok(200)
    );
    assert!(g.wait_log("verdict=").contains("verdict=SUCCESS"));
}

/// A rule that trusts three CAs sharing one name (a CA re-keyed twice under its name, all
/// still in the bundle) makes each impostor cost three signatures: twelve, past the
/// budget of ten. The guard stops at the budget and refuses the chain as
/// `chain_too_long` (alert access_denied); an edge certificate from the last of those
/// CAs (three signatures) is served right after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impostors_past_the_signature_budget_are_chain_too_long_and_the_edge_is_served() {
    let dir = tempdir().unwrap();
    let origin_ca = pki::ca(dir.path(), "origin-ca");
    let first = pki::ca(dir.path(), "edge-ca");
    pki::ca(&dir.path().join("second"), "edge-ca");
    let third = pki::ca(&dir.path().join("third"), "edge-ca");
    let edge = third.client("edge");
    let attack = pki::impostor_chain(&first, dir.path(), 3);
    let echo = Echo::start().await;
    let g = guard(
        dir.path(),
        &origin_ca,
        &[
            "edge-ca/ca.pem",
            "second/edge-ca/ca.pem",
            "third/edge-ca/ca.pem",
        ],
        echo.addr,
    );

    let refused = present(&g, &origin_ca, &attack).await;
    assert_eq!(refused, Err("received fatal alert: AccessDenied".into()));
    let line = g.wait_log("verdict=");
    assert!(line.contains("verdict=FAILED:chain_too_long"), "{line}");
    assert!(
        line.contains("path building stopped at the limit of 10 signature checks"),
        "{line}"
    );

    let edge = TestClient::new(&origin_ca.pem(), Some(&edge));
    assert_eq!(
        edge.get(g.addr(), "a.example").await.map(|s| s.status),
        Ok(200)
    );
    assert!(g.wait_log("verdict=").contains("verdict=SUCCESS"));
}
