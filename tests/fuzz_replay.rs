//! Replays every committed fuzz input — `fuzz/corpus/<target>/` and the crashers kept in
//! `fuzz/regressions/<target>/` — through the same checks the cargo-fuzz targets run
//! (`fuzz/src/lib.rs`, included here), on the stable compiler, as part of `cargo test`.

#![allow(clippy::unwrap_used)] // a test

use std::path::{Path, PathBuf};

#[allow(unreachable_pub, dead_code)] // the fuzz crate's public checks, private here
#[path = "../fuzz/src/lib.rs"]
mod checks;

/// Run `check` on every committed input of `target`; fail listing every input that
/// panicked (each panic's message names what broke).
fn replay(target: &str, check: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut inputs: Vec<PathBuf> = Vec::new();
    for kind in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(kind).join(target)) else {
            continue;
        };
        inputs.extend(entries.map(|e| e.unwrap().path()).filter(|p| p.is_file()));
    }
    inputs.sort();
    assert!(
        !inputs.is_empty(),
        "no committed inputs for fuzz target {target}"
    );
    let failed: Vec<_> = inputs
        .iter()
        .filter(|p| {
            let data = std::fs::read(p).unwrap();
            std::panic::catch_unwind(|| check(&data)).is_err()
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{target}: {} of {} inputs fail: {failed:?}",
        failed.len(),
        inputs.len()
    );
}

#[test]
fn pem_der() {
    replay("pem_der", checks::pem_der);
}

#[test]
fn config() {
    replay("config", checks::config);
}

#[test]
fn authority() {
    replay("authority", checks::authority);
}

#[test]
fn proxy_header() {
    replay("proxy_header", checks::proxy_header);
}

#[test]
fn probe_reply() {
    replay("probe_reply", checks::probe_reply);
}

#[test]
fn manifest() {
    replay("manifest", checks::manifest);
}

#[test]
fn acceptor() {
    replay("acceptor", checks::acceptor);
}

#[test]
fn acceptor_hello() {
    replay("acceptor_hello", checks::acceptor_hello);
}

/// The acceptor target's framing: a ClientHello body behind a record and handshake header.
#[test]
fn client_hello_wrapping() {
    assert_eq!(
        checks::wrap_client_hello(&[0xAA, 0xBB]),
        [
            0x16, 0x03, 0x01, 0x00, 0x06, 0x01, 0x00, 0x00, 0x02, 0xAA, 0xBB
        ]
    );
    assert_eq!(checks::wrap_client_hello(&[0; 20_000]).len(), 16_384 + 5);
}

#[test]
fn client_chain() {
    replay("client_chain", checks::client_chain);
}

/// The committed client_chain seeds chain to the committed root (else the target would
/// fuzz nothing but refusals): each has the verdict it was made for.
#[test]
fn client_chain_seeds_match_the_root() {
    use aop_verify::{Outcome, Reason};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/client_chain");
    let outcome =
        |seed: &str| checks::client_chain_outcome(&std::fs::read(dir.join(seed)).unwrap()).unwrap();
    for seed in [
        "seed-spiffe",
        "seed-policies",
        "seed-1949",
        "seed-dns",
        "seed-spiffe-root",
    ] {
        assert_eq!(outcome(seed), Outcome::Success, "{seed}");
    }
    for seed in ["seed-outside", "seed-dns-outside"] {
        assert_eq!(
            outcome(seed),
            Outcome::Failed(Reason::NameConstraints),
            "{seed}"
        );
    }
    assert_eq!(
        outcome("seed-spiffe-reversed"),
        Outcome::Failed(Reason::NotALeaf),
        "seed-spiffe-reversed"
    );
}

/// The client_chain target's framing: 2-byte big-endian lengths, at most five
/// certificates, one cut short takes what is left.
#[test]
fn client_chain_framing() {
    let split = |d: &[u8]| -> Vec<Vec<u8>> {
        checks::split_chain(d)
            .iter()
            .map(|c| c.as_ref().to_vec())
            .collect()
    };
    assert_eq!(
        split(&checks::join_chain(&[b"ab", b"", b"c"])),
        [b"ab".to_vec(), vec![], b"c".to_vec()]
    );
    assert_eq!(split(&[0, 9, 1, 2]), [vec![1, 2]]);
    assert_eq!(split(&[0]), Vec::<Vec<u8>>::new());
    assert_eq!(split(&[0; 20]).len(), checks::CLIENT_CHAIN_MAX);
}

/// Writes the client_chain target's fixed trust and seeds (run once, by hand: `cargo test
/// --test fuzz_replay -- --ignored client_chain_seeds`; ECDSA keys are random, so every
/// run makes a new root, and the committed corpus then no longer chains to it):
/// `fuzz/src/client_chain_root.pem` (a root whose critical nameConstraints permit the URI
/// host and the DNS name `example.org`), `fuzz/src/client_chain_leaves.pem` (the seed
/// leaves `Trust::check` accepts) and `fuzz/corpus/client_chain/seed-*` (chains through
/// an intermediate with a URI constraint: spiffe:// leaves inside and outside it, one with
/// a critical certificatePolicies, one with a 1949 notBefore; leaves of the root's own
/// with DNS names inside and outside its constraint; and broken orders of them).
#[test]
#[ignore = "writes new keys: run by hand to replace the client_chain seeds"]
fn client_chain_seeds() {
    use aop_e2e::forge::{
        self, Cert, Digest, Ext, GeneralName, Key, KeyKind, Name, Time, Version, ku, oids,
    };
    use aop_verify::{Outcome, Reason};
    use time::{Date, Month, OffsetDateTime};

    let day = |y, m, d| {
        OffsetDateTime::new_utc(
            Date::from_calendar_date(y, m, d).unwrap(),
            time::Time::MIDNIGHT,
        )
    };
    let sign = |subject: &str,
                key: &Key,
                issuer: Option<(&str, &Key)>,
                serial: u8,
                not_before: Time,
                extensions: Vec<Ext>| {
        let (issuer_name, signer) = issuer.unwrap_or((subject, key));
        let mut extensions = extensions;
        extensions.push(Ext::ski(&forge::key_id(&key.spki)));
        extensions.push(Ext::aki(&forge::key_id(&signer.spki)));
        Cert {
            version: Version::V3,
            serial: vec![serial],
            tbs_sig_alg: None,
            issuer: Name::cn(issuer_name),
            subject: Name::cn(subject),
            not_before,
            not_after: Time::Auto(day(2036, Month::January, 1)),
            spki: key.spki.clone(),
            extensions,
        }
        .sign(signer, Digest::Native)
    };
    let ca_exts = |nc: Ext| {
        vec![
            Ext::basic_constraints(true, true, None),
            Ext::key_usage(true, ku::KEY_CERT_SIGN | ku::CRL_SIGN),
            nc,
        ]
    };
    let leaf_exts = |names: &[GeneralName]| {
        vec![
            Ext::key_usage(true, ku::DIGITAL_SIGNATURE),
            Ext::eku(false, &[oids::CLIENT_AUTH]),
            Ext::san(false, names),
        ]
    };
    let uri = |u: &str| GeneralName::Uri(u.to_owned());
    let dns = |d: &str| GeneralName::Dns(d.to_owned());
    let from = Time::Auto(day(2025, Month::January, 1));

    let root_key = forge::key(KeyKind::EcdsaP256, 0);
    let root_name = "client_chain root";
    let root = sign(
        root_name,
        root_key,
        None,
        1,
        from,
        ca_exts(Ext::name_constraints(
            true,
            &[uri("example.org"), dns("example.org")],
            &[],
        )),
    );
    let int_key = forge::key(KeyKind::EcdsaP256, 1);
    let int_name = "client_chain intermediate";
    let int = sign(
        int_name,
        int_key,
        Some((root_name, root_key)),
        2,
        from,
        ca_exts(Ext::name_constraints(true, &[uri("example.org")], &[])),
    );
    let leaf_key = forge::key(KeyKind::EcdsaP256, 2);
    let by_int = Some((int_name, int_key));
    let by_root = Some((root_name, root_key));
    // (name, certificate, expected outcome)
    let leaves: Vec<(&str, Vec<u8>, Outcome)> = vec![
        (
            "spiffe",
            sign(
                "edge",
                leaf_key,
                by_int,
                10,
                from,
                leaf_exts(&[uri("spiffe://example.org/edge")]),
            ),
            Outcome::Success,
        ),
        (
            "policies",
            sign("policies", leaf_key, by_int, 11, from, {
                let mut e = leaf_exts(&[uri("spiffe://example.org/policies")]);
                e.push(Ext::policies(true, &["2.23.140.1.2.1"]));
                e
            }),
            Outcome::Success,
        ),
        (
            "1949",
            sign(
                "old",
                leaf_key,
                by_int,
                12,
                Time::Generalized(day(1949, Month::December, 31)),
                leaf_exts(&[uri("spiffe://example.org/old")]),
            ),
            Outcome::Success,
        ),
        (
            "outside",
            sign(
                "outside",
                leaf_key,
                by_int,
                13,
                from,
                leaf_exts(&[uri("spiffe://example.net/edge")]),
            ),
            Outcome::Failed(Reason::NameConstraints),
        ),
        (
            "dns",
            sign(
                "edge.example.org",
                leaf_key,
                by_root,
                14,
                from,
                leaf_exts(&[dns("edge.example.org"), uri("spiffe://example.org/dns")]),
            ),
            Outcome::Success,
        ),
        (
            "dns-outside",
            sign(
                "edge.example.net",
                leaf_key,
                by_root,
                15,
                from,
                leaf_exts(&[dns("edge.example.net")]),
            ),
            Outcome::Failed(Reason::NameConstraints),
        ),
    ];

    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let root_pem = fuzz.join("src/client_chain_root.pem");
    std::fs::write(&root_pem, forge::pem(std::slice::from_ref(&root))).unwrap();
    let trust = aop_verify::Trust::load(&aop_verify::TrustSpec::new([&root_pem])).unwrap();
    let at = OffsetDateTime::from_unix_timestamp(1_780_272_000).unwrap(); // checks::now()
    let corpus = fuzz.join("corpus/client_chain");
    std::fs::create_dir_all(&corpus).unwrap();
    let mut passing = Vec::new();
    for (name, leaf, expected) in &leaves {
        let chain: Vec<&[u8]> = if *name == "dns" || *name == "dns-outside" {
            vec![leaf]
        } else {
            vec![leaf, &int]
        };
        let checked = trust.check(
            &aop_pki::CertificateDer::from(chain[0].to_vec()),
            &chain[1..]
                .iter()
                .map(|c| aop_pki::CertificateDer::from(c.to_vec()))
                .collect::<Vec<_>>(),
            at,
        );
        assert_eq!(checked.outcome, *expected, "{name}: {checked:?}");
        if expected.is_success() {
            passing.push(leaf.clone());
        }
        let mut with_root = chain.clone();
        with_root.push(&root);
        let reversed: Vec<&[u8]> = chain.iter().rev().copied().collect();
        for (kind, seed) in [
            ("", chain.clone()),
            ("-root", with_root),
            ("-reversed", reversed),
        ] {
            std::fs::write(
                corpus.join(format!("seed-{name}{kind}")),
                checks::join_chain(&seed),
            )
            .unwrap();
        }
    }
    std::fs::write(
        fuzz.join("src/client_chain_leaves.pem"),
        forge::pem(&passing),
    )
    .unwrap();
}
