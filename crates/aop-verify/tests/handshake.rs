//! Real handshakes against the acceptor over an in-memory duplex, a rustls client on the
//! other end: the acceptor serves any byte stream with the peer address it is given, and
//! the crypto provider a policy names is the one its handshakes use — its signature
//! algorithms for the client's chain and CertificateVerify, its cipher suites (in aop's
//! order) for the connection.

#![allow(clippy::unwrap_used)] // a test: panics are failures

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use aop_pki::{Ca, CaRequest, ClientRequest, KeyType, OriginRequest, Overwrite};
use aop_verify::{
    Accepted, Acceptor, Limits, NoneCause, Outcome, PolicyHandle, PolicySpec, Reason, Refused,
    RuleSpec, TrustSpec,
};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::{CipherSuite, SignatureScheme};
use rustls_pki_types::{ServerName, SignatureVerificationAlgorithm, alg_id};
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt as _, DuplexStream};

/// A CA, the origin's certificate for `a.test` and two edge certificates from the CA:
/// one with an ECDSA P-256 key, one with an Ed25519 key (both signed with ECDSA P-256).
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::now_utc();
        let ca = aop_pki::create_ca(
            &CaRequest {
                name: "edge CA".into(),
                key_type: KeyType::EcdsaP256,
                days: 30,
                path_len: 0,
            },
            now,
        )
        .unwrap();
        let write = |issued: &aop_pki::Issued, name: &str| {
            let (cert, key) = (
                dir.path().join(format!("{name}.pem")),
                dir.path().join(format!("{name}.key")),
            );
            aop_pki::write_issued(issued, &cert, &key, Overwrite::Refuse).unwrap();
        };
        write(&ca, "ca");
        let ca =
            Ca::from_files(&dir.path().join("ca.pem"), &dir.path().join("ca.key"), now).unwrap();
        let origin = OriginRequest {
            hostnames: vec!["a.test".into()],
            days: 30,
            key_type: KeyType::EcdsaP256,
        };
        write(&ca.issue_origin(&origin, now).unwrap(), "origin");
        for (name, key_type) in [("ecdsa", KeyType::EcdsaP256), ("ed25519", KeyType::Ed25519)] {
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
        let rule = RuleSpec::new(
            "a",
            ["a.test"],
            self.path("origin.pem"),
            self.path("origin.key"),
            TrustSpec::new([self.path("ca.pem")]),
        );
        let spec = PolicySpec::new(vec![rule]).with_provider(provider);
        let limits = Limits::default().with_log_verdicts(false);
        Acceptor::new(PolicyHandle::load(&spec).unwrap(), limits)
    }

    /// A rustls client (its own default provider) that trusts the CA and presents the
    /// edge certificate `name`.
    fn client(&self, name: &str) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        for c in aop_pki::load_certificates(&self.path("ca.pem")).unwrap() {
            roots.add(c).unwrap();
        }
        rustls::ClientConfig::builder_with_provider(aop_pki::default_provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(
                aop_pki::load_certificates(&self.path(&format!("{name}.pem"))).unwrap(),
                aop_pki::load_private_key(&self.path(&format!("{name}.key"))).unwrap(),
            )
            .unwrap()
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
    let (server_io, client_io) = tokio::io::duplex(64 * 1024);
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
    let peer: SocketAddr = PEER.parse().unwrap();
    let mut accepted = acceptor.accept(server_io, peer).await;
    // A refusal has sent its alert and dropped the stream; an accepted connection closes.
    if let Ok(a) = accepted.as_mut() {
        tokio::io::AsyncWriteExt::shutdown(a.stream_mut())
            .await
            .unwrap();
    }
    (accepted, client.await.unwrap())
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
