//! The verifier alone: `Trust::check` on an edge chain with certificate pins, SPKI pins
//! and a SAN allowlist configured — the first check (a cache miss: webpki path building,
//! the CA's signature, parsing) against the same chain again (a cache hit), measured with criterion;
//! and the cost of one JSON verdict log line; and the work a hostile chain makes: the
//! client certificate presented with three CAs named exactly like the trusted one (fresh
//! keys), against the good chain in the same run, through `Trust::check` (signature
//! budget) and through webpki alone with the provider's algorithms (as before the budget).
//!
//! `cargo bench -p aop-verify --bench verify` (`-- impostor` for the hostile chain only)

#![allow(missing_docs, clippy::unwrap_used)] // a benchmark: no docs, panics on setup failure

use std::hint::black_box;

use aop_pki::{Ca, CaRequest, ClientRequest, KeyType, Overwrite, Sha256Fingerprint};
use aop_verify::{Trust, TrustSpec};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let now = time::OffsetDateTime::now_utc();
    let req = CaRequest {
        days: 365,
        ..CaRequest::new("edge CA")
    };
    let ca = req.create_in(dir.path(), now).unwrap();
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
    let at = now;

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

    // Three CAs named like the trusted one (fresh keys, path length 3), and a client
    // certificate from the first: path building tries each as the issuer of each other.
    let mut impostors = Vec::new();
    for i in 0..3 {
        let sub = dir.path().join(format!("impostor-{i}"));
        std::fs::create_dir_all(&sub).unwrap();
        let fake = aop_pki::create_ca(
            &CaRequest {
                path_len: 3,
                ..req.clone()
            },
            now,
        )
        .unwrap();
        aop_pki::write_issued(
            &fake,
            &sub.join("ca.pem"),
            &sub.join("ca.key"),
            Overwrite::Refuse,
        )
        .unwrap();
        impostors.push(fake.certificate);
    }
    let impostor_leaf = Ca::load(&dir.path().join("impostor-0"), now)
        .unwrap()
        .issue_client(
            &ClientRequest {
                common_name: "impostor".into(),
                sans: vec![],
                days: 30,
                key_type: KeyType::EcdsaP256,
            },
            now,
        )
        .unwrap()
        .certificate;
    assert_eq!(
        trust.check(&impostor_leaf, &impostors, at).outcome,
        aop_verify::Outcome::Failed(aop_verify::Reason::BadSignature)
    );
    let mut g = c.benchmark_group("impostor");
    g.bench_function("good chain, cache miss", |b| {
        b.iter_batched_ref(
            || Trust::load(&spec).unwrap(),
            |trust| black_box(trust.check(black_box(&edge), &[], at)),
            BatchSize::SmallInput,
        );
    });
    g.bench_function("leaf + 3 impostors, check (signature budget)", |b| {
        b.iter_batched_ref(
            || Trust::load(&spec).unwrap(),
            |trust| black_box(trust.check(black_box(&impostor_leaf), &impostors, at)),
            BatchSize::SmallInput,
        );
    });
    let anchors = [webpki::anchor_from_trusted_cert(ca.certificate()).unwrap()];
    let algs = aop_pki::default_provider().signature_verification_algorithms;
    let unix_at = rustls_pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        now.unix_timestamp().try_into().unwrap(),
    ));
    g.bench_function(
        "leaf + 3 impostors, webpki alone (before the budget)",
        |b| {
            b.iter(|| {
                let ee = webpki::EndEntityCert::try_from(black_box(&impostor_leaf)).unwrap();
                black_box(
                    ee.verify_for_usage(
                        algs.all,
                        &anchors,
                        &impostors,
                        unix_at,
                        webpki::KeyUsage::client_auth(),
                        None,
                        None,
                    )
                    .is_err(),
                )
            });
        },
    );
    g.finish();

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
