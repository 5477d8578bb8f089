//! The verifier alone: `Trust::check` on an edge chain with certificate pins, SPKI pins
//! and a SAN allowlist configured — the first check (a cache miss: webpki path building,
//! the CA's signature, parsing) against the same chain again (a cache hit), measured with criterion;
//! and the cost of one JSON verdict log line.
//!
//! `cargo bench -p aop-verify --bench verify`

#![allow(missing_docs, clippy::unwrap_used)] // a benchmark: no docs, panics on setup failure

use std::hint::black_box;

use aop_pki::{Ca, CaRequest, ClientRequest, KeyType, Overwrite, Sha256Fingerprint};
use aop_verify::{Trust, TrustSpec, unix_time};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let now = time::OffsetDateTime::now_utc();
    let req = CaRequest {
        name: "edge CA".into(),
        key_type: KeyType::EcdsaP256,
        days: 365,
        path_len: 0,
    };
    let issued = aop_pki::create_ca(&req, now).unwrap();
    aop_pki::write_issued(
        &issued,
        &dir.path().join("ca.pem"),
        &dir.path().join("ca.key"),
        Overwrite::Refuse,
    )
    .unwrap();
    let ca = Ca::load(dir.path(), now).unwrap();
    let leaf = |i: usize| {
        ca.issue_client(
            &ClientRequest {
                common_name: format!("edge-{i}"),
                sans: vec!["spiffe://cdn.example/edge".into()],
                days: 90,
                key_type: KeyType::EcdsaP256,
            },
            now,
        )
        .unwrap()
        .certificate
    };
    let edge = leaf(0);
    let info = aop_pki::CertInfo::from_der(&edge, now).unwrap();
    let mut spec = TrustSpec::new([dir.path().join("ca.pem")]);
    spec.pins = vec![info.sha256, Sha256Fingerprint::of(b"another edge")];
    spec.spki_pins = vec![info.spki_sha256];
    spec.allow_san = vec!["spiffe://cdn.example/edge".into()];
    let at = unix_time(now);

    // A miss: every iteration gets a fresh Trust (loaded outside the timing), so the
    // chain is verified from scratch.
    c.bench_function(
        "check, cache miss (path building + CA signature + parse)",
        |b| {
            b.iter_batched_ref(
                || Trust::load(&spec).unwrap(),
                |trust| black_box(trust.check(black_box(&edge), &[], at)),
                BatchSize::SmallInput,
            );
        },
    );
    let trust = Trust::load(&spec).unwrap();
    assert!(trust.check(&edge, &[], at).outcome.is_success());
    c.bench_function("check, cache hit (same chain again)", |b| {
        b.iter(|| black_box(trust.check(black_box(&edge), &[], at)));
    });

    // One verdict line, as aop-origin logs it with `log_format = "json"` (formatted,
    // written to a sink).
    let checked = trust.check(&edge, &[], at);
    let mut verdict = aop_verify::Verdict::new(checked.outcome);
    verdict.client = checked.client;
    verdict.rule = Some("edge".into());
    verdict.sni = Some("origin.example".into());
    verdict.peer = Some(([127, 0, 0, 1], 40_000).into());
    verdict.tls_version = Some("TLSv1.3");
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_writer(std::io::sink)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        c.bench_function("verdict log line (JSON)", |b| {
            b.iter(|| black_box(&verdict).log());
        });
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
