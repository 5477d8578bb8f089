//! Real handshakes against the acceptor over an in-memory duplex, a rustls client on the
//! other end: the acceptor serves any byte stream with the peer address it is given, and
//! the crypto provider a policy names is the one its handshakes use — its signature
//! algorithms for the client's chain and CertificateVerify, its cipher suites (in aop's
//! order) for the connection.

#![allow(clippy::unwrap_used)] // a test: panics are failures

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::task::Poll;

use aop_pki::{Ca, CaRequest, ClientRequest, KeyType, OriginRequest, Overwrite};
use aop_verify::{
    Accepted, Acceptor, Limits, Mode, NoneCause, Outcome, PolicyHandle, PolicySpec, Reason,
    Refused, RuleSpec, TrustSpec,
};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::{CipherSuite, SignatureScheme, SupportedProtocolVersion};
use rustls_pki_types::{ServerName, SignatureVerificationAlgorithm, alg_id};
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt as _, DuplexStream};

/// A CA, the origin's certificate for `a.test` and two edge certificates from the CA:
/// one with an ECDSA P-256 key, one with an Ed25519 key (both signed with ECDSA P-256);
/// and `foreign`, an edge certificate from another CA.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::now_utc();
        let ca_request = |name: &str| CaRequest {
            name: name.into(),
            key_type: KeyType::EcdsaP256,
            days: 30,
            path_len: 0,
        };
        let write = |issued: &aop_pki::Issued, name: &str| {
            let (cert, key) = (
                dir.path().join(format!("{name}.pem")),
                dir.path().join(format!("{name}.key")),
            );
            aop_pki::write_issued(issued, &cert, &key, Overwrite::Refuse).unwrap();
            (cert, key)
        };
        let load = |name: &str| {
            let (cert, key) = write(&aop_pki::create_ca(&ca_request(name), now).unwrap(), name);
            Ca::from_files(&cert, &key, now).unwrap()
        };
        let (ca, foreign) = (load("ca"), load("foreign-ca"));
        let origin = OriginRequest {
            hostnames: vec!["a.test".into()],
            days: 30,
            key_type: KeyType::EcdsaP256,
        };
        write(&ca.issue_origin(&origin, now).unwrap(), "origin");
        for (ca, name, key_type) in [
            (&ca, "ecdsa", KeyType::EcdsaP256),
            (&ca, "ed25519", KeyType::Ed25519),
            (&foreign, "foreign", KeyType::EcdsaP256),
        ] {
            let client = ClientRequest {
                common_name: format!("edge-{name}"),
                sans: vec![],
                days: 30,
                key_type,
            };
            write(&ca.issue_client(&client, now).unwrap(), name);
        }
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A policy of one `require` rule for `a.test` trusting the CA, on `provider`.
    fn acceptor(&self, provider: Arc<CryptoProvider>) -> Acceptor {
        self.acceptor_in(Mode::Require, provider)
    }

    /// A policy of one rule in `mode` for `a.test` trusting the CA, on `provider`.
    fn acceptor_in(&self, mode: Mode, provider: Arc<CryptoProvider>) -> Acceptor {
        let mut rule = RuleSpec::new(
            "a",
            ["a.test"],
            self.path("origin.pem"),
            self.path("origin.key"),
            TrustSpec::new([self.path("ca.pem")]),
        );
        rule.mode = mode;
        let spec = PolicySpec::new(vec![rule]).with_provider(provider);
        let limits = Limits::default().with_log_verdicts(false);
        Acceptor::new(PolicyHandle::load(&spec).unwrap(), limits)
    }

    /// A rustls client (its own default provider) that trusts the CA and presents the
    /// edge certificate `name`.
    fn client(&self, name: &str) -> rustls::ClientConfig {
        self.client_of(Some(name), rustls::DEFAULT_VERSIONS)
    }

    /// A rustls client of `versions` that trusts the CA and presents the edge certificate
    /// `name`, or none. Its clones share one session cache, so they resume.
    fn client_of(
        &self,
        name: Option<&str>,
        versions: &[&'static SupportedProtocolVersion],
    ) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        for c in aop_pki::load_certificates(&self.path("ca.pem")).unwrap() {
            roots.add(c).unwrap();
        }
        let builder = rustls::ClientConfig::builder_with_provider(aop_pki::default_provider())
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots);
        match name {
            Some(name) => builder
                .with_client_auth_cert(
                    aop_pki::load_certificates(&self.path(&format!("{name}.pem"))).unwrap(),
                    aop_pki::load_private_key(&self.path(&format!("{name}.key"))).unwrap(),
                )
                .unwrap(),
            None => builder.with_no_client_auth(),
        }
    }
}

const PEER: &str = "192.0.2.7:4711";

/// The acceptor's result for one handshake with `client` over a duplex, and what the
/// client then reads (after the server side is dropped): `Ok(())` for a clean end,
/// else the client's error (a refusal's alert).
async fn handshake(
    acceptor: &Acceptor,
    client: rustls::ClientConfig,
) -> (Result<Accepted<DuplexStream>, Refused>, Result<(), String>) {
    handshake_from(acceptor, client, PEER.parse().unwrap(), 64 * 1024).await
}

/// [`handshake`], the connection coming from `peer` over a duplex that holds at most
/// `buffer` bytes in each direction (a small one delivers each flight in pieces).
async fn handshake_from(
    acceptor: &Acceptor,
    client: rustls::ClientConfig,
    peer: SocketAddr,
    buffer: usize,
) -> (Result<Accepted<DuplexStream>, Refused>, Result<(), String>) {
    let (server_io, client_io) = tokio::io::duplex(buffer);
    let client = tokio::spawn(async move {
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let name = ServerName::try_from("a.test").unwrap();
        let mut tls = connector
            .connect(name, client_io)
            .await
            .map_err(|e| e.to_string())?;
        let mut rest = Vec::new();
        tls.read_to_end(&mut rest)
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    });
    let mut accepted = acceptor.accept(server_io, peer).await;
    // A refusal has sent its alert and dropped the stream; an accepted connection closes.
    if let Ok(a) = accepted.as_mut() {
        tokio::io::AsyncWriteExt::shutdown(a.stream_mut())
            .await
            .unwrap();
    }
    (accepted, client.await.unwrap())
}

/// ALPN is the rule's when it sets one, else the policy's (by default `h2`, then
/// `http/1.1`); the server's preference wins among what the client offers, and a client
/// that offers none gets none.
#[tokio::test]
async fn alpn_is_the_rules_else_the_policys() {
    let pki = Pki::new();
    let rule = |alpn: Option<&[&[u8]]>| {
        let mut rule = RuleSpec::new(
            "a",
            ["a.test"],
            pki.path("origin.pem"),
            pki.path("origin.key"),
            TrustSpec::new([pki.path("ca.pem")]),
        );
        rule.alpn = alpn.map(|a| a.iter().map(|p| p.to_vec()).collect());
        rule
    };
    let offering = |protocols: &[&[u8]]| {
        let mut c = pki.client("ecdsa");
        c.alpn_protocols = protocols.iter().map(|p| p.to_vec()).collect();
        c
    };
    let (h1, h2): (&[u8], &[u8]) = (b"http/1.1", b"h2");
    let [both, only_h1, only_h2, none]: [&[&[u8]]; 4] = [&[h1, h2], &[h1], &[h2], &[]];
    for (alpn, client, want) in [
        (None, both, Some(h2)),
        (None, only_h1, Some(h1)),
        (None, none, None),
        (Some(only_h1), both, Some(h1)),
        (Some(only_h1), only_h2, None),
    ] {
        assert_eq!(
            PolicySpec::new(Vec::new()).alpn,
            [h2, h1],
            "the default: h2 first"
        );
        assert_eq!(PolicySpec::default().alpn, [h2, h1]);
        let mut spec = PolicySpec::new(vec![rule(alpn)]);
        spec.alpn = vec![h1.to_vec()];
        let spec = spec.with_http2();
        assert_eq!(spec.alpn, [h2, h1], "with_http2: the default again");
        let limits = Limits::default().with_log_verdicts(false);
        let acceptor = Acceptor::new(PolicyHandle::load(&spec).unwrap(), limits);
        let (accepted, _) = handshake(&acceptor, offering(client)).await;
        match accepted {
            Ok(a) => assert_eq!(a.alpn(), want, "rule {alpn:?}, client {client:?}"),
            // rustls refuses a client whose every protocol the server does not offer.
            Err(r) => assert!(
                alpn.is_some() && want.is_none(),
                "rule {alpn:?}, client {client:?}: {r}"
            ),
        }
    }
}

/// An in-memory stream is served like a TCP one: the verdict carries the peer address the
/// caller gave, the SNI, the rule and the TLS version.
#[tokio::test]
async fn a_duplex_stream_is_accepted_with_the_peer_it_was_given() {
    let pki = Pki::new();
    let acceptor = pki.acceptor(aop_pki::default_provider());
    let (accepted, client) = handshake(&acceptor, pki.client("ecdsa")).await;
    let accepted = accepted.unwrap();
    let v = accepted.verdict();
    assert_eq!(v.outcome, Outcome::Success);
    assert_eq!(v.peer, Some(PEER.parse().unwrap()));
    assert_eq!(v.sni.as_deref(), Some("a.test"));
    assert_eq!(v.rule.as_deref(), Some("a"));
    assert_eq!(v.tls_version, Some("TLSv1.3"));
    assert!(v.completed && !v.resumed);
    assert_eq!(
        v.client.as_ref().unwrap().common_name.as_deref(),
        Some("edge-ecdsa")
    );
    assert!(accepted.host_matches_rule("a.test:443"));
    assert!(!accepted.host_matches_rule("b.test"));
    assert_eq!(client, Ok(()));
}

/// `provider` without the ECDSA verification algorithms (leaked: a test builds a few).
fn without_ecdsa(provider: &CryptoProvider) -> Arc<CryptoProvider> {
    let ecdsa_key = |a: &&dyn SignatureVerificationAlgorithm| {
        [alg_id::ECDSA_P256, alg_id::ECDSA_P384, alg_id::ECDSA_P521]
            .contains(&a.public_key_alg_id())
    };
    let ecdsa_scheme = |s: SignatureScheme| {
        matches!(
            s,
            SignatureScheme::ECDSA_NISTP256_SHA256
                | SignatureScheme::ECDSA_NISTP384_SHA384
                | SignatureScheme::ECDSA_NISTP521_SHA512
        )
    };
    let algs = provider.signature_verification_algorithms;
    let mut p = provider.clone();
    p.signature_verification_algorithms = WebPkiSupportedAlgorithms {
        all: Vec::leak(algs.all.iter().copied().filter(|a| !ecdsa_key(a)).collect()),
        mapping: Vec::leak(
            algs.mapping
                .iter()
                .copied()
                .filter(|(s, _)| !ecdsa_scheme(*s))
                .collect(),
        ),
    };
    Arc::new(p)
}

/// The policy's provider verifies the client: without ECDSA, an edge certificate its CA
/// signed with ECDSA is `unsupported_algorithm` (alert decrypt_error) — the same
/// certificate passes under the default provider — and an edge whose own key is ECDSA
/// is never asked for a signature it could make, so it sends no certificate.
#[tokio::test]
async fn the_policys_provider_verifies_the_chain_and_the_proof_of_key() {
    let pki = Pki::new();
    let default = pki.acceptor(aop_pki::default_provider());
    let (accepted, _) = handshake(&default, pki.client("ed25519")).await;
    assert_eq!(accepted.unwrap().verdict().outcome, Outcome::Success);

    let narrow = pki.acceptor(without_ecdsa(&aop_pki::default_provider()));
    let (refused, client) = handshake(&narrow, pki.client("ed25519")).await;
    let v = refused.unwrap_err().verdict;
    assert_eq!(
        v.outcome,
        Outcome::Failed(Reason::UnsupportedAlgorithm),
        "{:?}",
        v.detail
    );
    assert_eq!(
        v.client.as_ref().unwrap().common_name.as_deref(),
        Some("edge-ed25519")
    );
    assert_eq!(client, Err("received fatal alert: DecryptError".into()));

    let (refused, client) = handshake(&narrow, pki.client("ecdsa")).await;
    let v = refused.unwrap_err().verdict;
    assert_eq!(v.outcome, Outcome::None(NoneCause::NoCertificate));
    assert_eq!(
        client,
        Err("received fatal alert: CertificateRequired".into())
    );
}

/// The policy's provider serves the connection, its cipher suites in aop's order: a
/// provider of ChaCha20 only negotiates ChaCha20; the default one AES-128-GCM, though the
/// rustls client prefers AES-256-GCM.
#[tokio::test]
async fn the_policys_provider_serves_its_cipher_suites_in_aops_order() {
    let pki = Pki::new();
    let suite = |accepted: &Accepted<DuplexStream>| {
        accepted
            .stream()
            .get_ref()
            .1
            .negotiated_cipher_suite()
            .unwrap()
            .suite()
    };
    let (accepted, _) = handshake(
        &pki.acceptor(aop_pki::default_provider()),
        pki.client("ecdsa"),
    )
    .await;
    assert_eq!(
        suite(&accepted.unwrap()),
        CipherSuite::TLS13_AES_128_GCM_SHA256
    );

    let mut chacha = CryptoProvider::clone(&aop_pki::default_provider());
    chacha
        .cipher_suites
        .retain(|s| s.suite() == CipherSuite::TLS13_CHACHA20_POLY1305_SHA256);
    let (accepted, _) = handshake(&pki.acceptor(Arc::new(chacha)), pki.client("ecdsa")).await;
    assert_eq!(
        suite(&accepted.unwrap()),
        CipherSuite::TLS13_CHACHA20_POLY1305_SHA256
    );
}

/// The client of concurrent handshake `i`: a certificate from the CA, one from a foreign
/// CA, none; TLS 1.3 or 1.2.
fn kind(i: u16) -> (Option<&'static str>, &'static SupportedProtocolVersion) {
    let name = [Some("ecdsa"), Some("foreign"), None][usize::from(i % 3)];
    let version = [&rustls::version::TLS13, &rustls::version::TLS12][usize::from(i / 3 % 2)];
    (name, version)
}

/// The address concurrent handshake `i` comes from: its own port, so a verdict shows
/// whose it is.
fn peer(i: u16) -> SocketAddr {
    SocketAddr::from(([192, 0, 2, 7], 10_000 + i))
}

/// The duplex buffer of concurrent handshake `i`: 128 to 288 bytes, so each flight
/// arrives in pieces and the handshakes get out of step. A TLS 1.2 handshake then pauses
/// between the check of the client's certificate (its own record) and its end while
/// others run. (A rustls client's TLS 1.3 flight is one encrypted record: checked and
/// finished in the same poll.)
fn piece(i: u16) -> usize {
    128 + usize::from(i % 5) * 40
}

/// Whether the verdict of handshake `i` (in `optional` mode, so every one completes) is
/// exactly its own client's: its port, its TLS version, its certificate's CN, its
/// outcome. If not, what it was instead.
fn verdict_is_its_own(
    i: u16,
    accepted: &Result<Accepted<DuplexStream>, Refused>,
) -> Result<(), String> {
    let ((name, version), peer) = (kind(i), peer(i));
    let v = accepted
        .as_ref()
        .map_err(|r| format!("#{i} refused: {:?}", r.verdict))?
        .verdict();
    let expected = match name {
        Some("ecdsa") => Outcome::Success,
        Some(_) => Outcome::Failed(Reason::UnknownCa),
        None => Outcome::None(NoneCause::NoCertificate),
    };
    let cn = v.client.as_ref().and_then(|c| c.common_name.as_deref());
    let own_cn = name.map(|n| format!("edge-{n}"));
    let own_version = aop_pki::tls_version_name(version.version);
    if v.peer == Some(peer)
        && v.tls_version == Some(own_version)
        && cn == own_cn.as_deref()
        && v.outcome == expected
        && v.completed
    {
        Ok(())
    } else {
        Err(format!(
            "#{i} {name:?} {own_version} from {peer}: {} {cn:?} {:?} from {:?} ({:?})",
            v.outcome, v.tls_version, v.peer, v.detail
        ))
    }
}

/// Polls every future in one task until all are ready (what `join_all` does, without the
/// dependency): their handshakes interleave, each between the others' steps.
async fn join_in_one_task<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<_> = futures.into_iter().map(|f| Some(Box::pin(f))).collect();
    let mut outputs: Vec<_> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (slot, output) in futures.iter_mut().zip(&mut outputs) {
            if let Some(future) = slot {
                match future.as_mut().poll(cx) {
                    Poll::Ready(o) => (*output, *slot) = (Some(o), None),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().map(Option::unwrap).collect()
}

/// 90 handshakes polled concurrently in one task on a current-thread runtime: the
/// verifier's record is scoped to each handshake's future, not to the task or the
/// thread, so each verdict is its own client's.
#[tokio::test(flavor = "current_thread")]
async fn handshakes_interleaved_in_one_task_each_get_their_own_verdict() {
    let pki = Pki::new();
    let acceptor = pki.acceptor_in(Mode::Optional, aop_pki::default_provider());
    let handshakes = (0..90).map(|i| {
        let (name, version) = kind(i);
        let client = pki.client_of(name, &[version]);
        let acceptor = &acceptor;
        async move { handshake_from(acceptor, client, peer(i), piece(i)).await.0 }
    });
    let verdicts = join_in_one_task(handshakes.collect()).await;
    let wrong: Vec<_> = (0..)
        .zip(&verdicts)
        .filter_map(|(i, a)| verdict_is_its_own(i, a).err())
        .collect();
    assert_eq!(wrong, Vec::<String>::new());
}

/// 300 handshakes, each its own task, on two worker threads (a task may move between
/// them mid-handshake): each verdict is its own client's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawned_handshakes_on_two_threads_each_get_their_own_verdict() {
    let pki = Pki::new();
    let acceptor = pki.acceptor_in(Mode::Optional, aop_pki::default_provider());
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..300 {
        let (name, version) = kind(i);
        let client = pki.client_of(name, &[version]);
        let acceptor = acceptor.clone();
        tasks.spawn(async move {
            let (accepted, _) = handshake_from(&acceptor, client, peer(i), piece(i)).await;
            verdict_is_its_own(i, &accepted)
        });
    }
    let mut wrong = Vec::new();
    while let Some(checked) = tasks.join_next().await {
        wrong.extend(checked.unwrap().err());
    }
    assert_eq!(wrong, Vec::<String>::new());
}

/// A resumed session carries its chain without the verifier running: it is checked
/// again, so a session made in `optional` mode with a certificate from a foreign CA stays
/// `FAILED:unknown_ca` when resumed (never SUCCESS), and a good one stays SUCCESS, with
/// `resumed` set and the client's details — over TLS 1.3 and TLS 1.2, `require` and
/// `optional`.
#[tokio::test]
async fn a_resumed_session_keeps_its_certificates_verdict() {
    let pki = Pki::new();
    let cases = [
        (
            Mode::Optional,
            "foreign",
            Outcome::Failed(Reason::UnknownCa),
        ),
        (Mode::Optional, "ecdsa", Outcome::Success),
        (Mode::Require, "ecdsa", Outcome::Success),
    ];
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        for (mode, name, outcome) in &cases {
            let acceptor = pki.acceptor_in(*mode, aop_pki::default_provider());
            let client = pki.client_of(Some(name), &[version]);
            for n in 0..3 {
                let case = format!("{:?} {mode} {name} handshake {n}", version.version);
                let (accepted, end) = handshake(&acceptor, client.clone()).await;
                assert_eq!(end, Ok(()), "{case}");
                let accepted = accepted.unwrap();
                let v = accepted.verdict();
                assert_eq!(v.outcome, *outcome, "{case}: {:?}", v.detail);
                // The first handshake is full; the client resumes the session after it.
                assert_eq!(v.resumed, n > 0, "{case}");
                assert_eq!(v.peer, Some(PEER.parse().unwrap()), "{case}");
                assert_eq!(
                    v.client.as_ref().unwrap().common_name,
                    Some(format!("edge-{name}")),
                    "{case}"
                );
            }
        }
    }
}
