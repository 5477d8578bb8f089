//! The one place where aop-edge weakens verification, so a reviewer finds it at a glance.
//!
//! Only `certtool probe --insecure` uses it: a probe of an origin whose server
//! certificate you cannot verify (no Origin CA root to hand) still shows whether the
//! origin demands a client certificate. Nothing else in aop skips server verification.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};

use crate::IdentitySpec;

/// Accepts any server certificate, but still checks the handshake signatures (so the
/// peer at least holds the key of the certificate it sent).
#[derive(Debug)]
struct AnyServerCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyServerCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// A client configuration that does NOT verify the server's certificate, presenting
/// `identity` if given, under `provider` (usually [`aop_pki::default_provider`]; it also
/// checks the handshake signatures and that the key matches the certificate). For probes
/// only.
pub fn unverified_server_config(
    identity: Option<&IdentitySpec>,
    provider: Arc<CryptoProvider>,
) -> crate::Result<ClientConfig> {
    let algs = provider.signature_verification_algorithms;
    let builder = crate::identity::client_builder(provider.clone())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServerCertificate(algs)));
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some(id) => {
            let aop_pki::KeyPairFiles { chain, key } =
                aop_pki::load_key_pair(&id.cert, &id.key, &provider)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| crate::Error::BadIdentity {
                    path: id.cert.clone(),
                    detail: e.to_string(),
                })?
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}
