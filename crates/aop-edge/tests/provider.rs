//! The crypto provider a caller gives is the one aop-edge uses: for every client
//! configuration it builds ([`IdentityStore`], [`danger::unverified_server_config`]) and
//! for the check that each key matches its certificate. Real handshakes on loopback with
//! a rustls origin that reports the cipher suite it negotiated.

#![allow(clippy::unwrap_used)] // test helpers: a panic is a test failure with a backtrace

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use aop_edge::{Error, IdentitySpec, IdentityStore, StoreSpec, Timeouts, danger};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::crypto::{CryptoProvider, KeyProvider, aws_lc_rs};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::SigningKey;
use rustls::{CipherSuite, ClientConfig, ServerConfig};

const ORIGIN: &str = "origin.test";

/// A CA, an origin certificate for [`ORIGIN`] and an edge client certificate, as files.
struct Pki {
    _dir: tempfile::TempDir,
    roots: PathBuf,
    client: IdentitySpec,
    server: Arc<ServerConfig>,
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let issue = |name: &str| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        (cert, key)
    };
    let (server_cert, server_key) = issue(ORIGIN);
    let (client_cert, client_key) = issue("edge.test");
    let roots = dir.path().join("ca.pem");
    std::fs::write(&roots, ca_cert.pem()).unwrap();
    let client = IdentitySpec::new(dir.path().join("edge.pem"), dir.path().join("edge.key"));
    std::fs::write(&client.cert, client_cert.pem()).unwrap();
    std::fs::write(&client.key, client_key.serialize_pem()).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der()));
    let server = ServerConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![server_cert.der().clone()], key)
        .unwrap();
    Pki {
        _dir: dir,
        roots,
        client,
        server: Arc::new(server),
    }
}

/// aws-lc-rs with only `suite` (so a handshake that works used this provider).
fn only(suite: CipherSuite) -> Arc<CryptoProvider> {
    let mut provider = aws_lc_rs::default_provider();
    provider.cipher_suites.retain(|s| s.suite() == suite);
    assert_eq!(provider.cipher_suites.len(), 1);
    Arc::new(provider)
}

/// Handshake with a fresh origin presenting `config`; the suite the origin negotiated.
async fn suite_seen_by_origin(
    server: &Arc<ServerConfig>,
    config: Arc<ClientConfig>,
) -> CipherSuite {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(server.clone());
    let origin = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let tls = acceptor.accept(tcp).await.unwrap();
        tls.get_ref().1.negotiated_cipher_suite().unwrap().suite()
    });
    let edge = aop_edge::connect_tls(config, ORIGIN, addr, Timeouts::default()).await;
    edge.unwrap();
    origin.await.unwrap()
}

const CHACHA: CipherSuite = CipherSuite::TLS13_CHACHA20_POLY1305_SHA256;

#[tokio::test]
async fn the_store_builds_every_client_config_with_the_given_provider() {
    let pki = pki();
    let mut spec = StoreSpec::new([&pki.roots]);
    spec.shared = Some(pki.client.clone());

    // The default provider prefers AES: the control.
    let store = IdentityStore::load(&spec).unwrap();
    let shared = store.select(ORIGIN).unwrap().client_config().clone();
    assert_ne!(suite_seen_by_origin(&pki.server, shared).await, CHACHA);

    spec.provider = only(CHACHA);
    let store = IdentityStore::load(&spec).unwrap();
    let shared = store.select(ORIGIN).unwrap().client_config().clone();
    assert_eq!(suite_seen_by_origin(&pki.server, shared).await, CHACHA);
    let anonymous = store.anonymous().clone();
    assert_eq!(suite_seen_by_origin(&pki.server, anonymous).await, CHACHA);
}

#[tokio::test]
async fn the_unverified_config_uses_the_given_provider() {
    let pki = pki();
    for identity in [None, Some(&pki.client)] {
        let config = danger::unverified_server_config(identity, only(CHACHA)).unwrap();
        let suite = suite_seen_by_origin(&pki.server, Arc::new(config)).await;
        assert_eq!(suite, CHACHA, "identity {identity:?}");
    }
}

/// A key provider that loads no key, so every key check must fail if it is used.
#[derive(Debug)]
struct NoKeys;

impl KeyProvider for NoKeys {
    fn load_private_key(
        &self,
        _: PrivateKeyDer<'static>,
    ) -> Result<Arc<dyn SigningKey>, rustls::Error> {
        Err(rustls::Error::General("this provider loads no keys".into()))
    }
}

static NO_KEYS: NoKeys = NoKeys;

#[test]
fn keys_are_checked_with_the_given_provider() {
    let pki = pki();
    let provider = Arc::new(CryptoProvider {
        key_provider: &NO_KEYS,
        ..aws_lc_rs::default_provider()
    });
    let want = format!(
        "{}: unusable private key: unexpected error: this provider loads no keys",
        pki.client.key.display()
    );

    let mut spec = StoreSpec::new([&pki.roots]);
    spec.shared = Some(pki.client.clone());
    spec.provider = provider.clone();
    let err = IdentityStore::load(&spec).unwrap_err();
    assert!(matches!(err, Error::Pki(_)), "{err:?}");
    assert_eq!(err.to_string(), want);

    let err = danger::unverified_server_config(Some(&pki.client), provider).unwrap_err();
    assert_eq!(err.to_string(), want);
}

#[test]
fn a_provider_with_no_cipher_suite_is_refused_with_a_reason() {
    let pki = pki();
    let mut provider = aws_lc_rs::default_provider();
    provider.cipher_suites.clear();
    let provider = Arc::new(provider);

    let mut spec = StoreSpec::new([&pki.roots]);
    spec.provider = provider.clone();
    let err = IdentityStore::load(&spec).unwrap_err();
    assert!(matches!(err, Error::Provider { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "the crypto provider cannot make a TLS client: unexpected error: no usable cipher suites configured"
    );

    let err = danger::unverified_server_config(None, provider).unwrap_err();
    assert!(matches!(err, Error::Provider { .. }), "{err:?}");
}
