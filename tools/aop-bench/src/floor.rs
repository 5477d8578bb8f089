//! The crypto floor, measured in the same run: what one server-side mTLS handshake
//! cannot do without, through the same rustls / aws-lc-rs calls the handshake makes.
//! A full TLS 1.3 handshake with a client certificate costs the server one X25519 key
//! pair and agreement, one P-256 signature (its CertificateVerify) and two P-256
//! verifications (the CA's signature on the client's certificate, and the client's
//! CertificateVerify); aop's chain cache removes the first verification on repeat
//! visits. A resumed handshake (`psk_dhe_ke`, the only mode rustls offers) costs one
//! X25519 and no signature.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use rustls::SignatureScheme;
use rustls::crypto::aws_lc_rs::default_provider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Microseconds of CPU per operation (this thread, wall clock on an otherwise idle core).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Floor {
    pub(crate) x25519_us: f64,
    pub(crate) sign_us: f64,
    pub(crate) verify_us: f64,
}

impl Floor {
    /// One full mTLS handshake without a chain cache.
    pub(crate) fn full_us(&self) -> f64 {
        self.x25519_us + self.sign_us + 2.0 * self.verify_us
    }

    /// One full mTLS handshake whose chain is already verified (aop's cache).
    pub(crate) fn full_cached_us(&self) -> f64 {
        self.x25519_us + self.sign_us + self.verify_us
    }
}

/// Mean time of `f` over at most `max` runs or about `budget`, after a short warm-up.
fn time_it(
    budget: Duration,
    max: u32,
    mut f: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<f64> {
    for _ in 0..20 {
        f()?;
    }
    let start = Instant::now();
    let mut n = 0u32;
    while n < max && start.elapsed() < budget {
        f()?;
        n += 1;
    }
    Ok(start.elapsed().as_secs_f64() * 1e6 / f64::from(n.max(1)))
}

/// Measure with the bench's own P-256 certificate and key (`cert`, `key`: the edge's).
pub(crate) fn measure(cert: &CertificateDer<'_>, key: &PrivateKeyDer<'_>) -> anyhow::Result<Floor> {
    let budget = Duration::from_millis(300);
    let provider = default_provider();
    let x25519 = provider
        .kx_groups
        .iter()
        .find(|g| g.name() == rustls::NamedGroup::X25519)
        .context("no X25519")?;
    let peer = x25519.start()?.pub_key().to_vec();
    let x25519_us = time_it(budget, 20_000, || {
        // The server's key pair and the agreement with the client's share.
        let kx = x25519.start()?;
        std::hint::black_box(kx.complete(&peer)?);
        Ok(())
    })?;

    let signer = rustls::crypto::aws_lc_rs::sign::any_ecdsa_type(key)?
        .choose_scheme(&[SignatureScheme::ECDSA_NISTP256_SHA256])
        .context("the key is not P-256")?;
    // A TLS 1.3 CertificateVerify input: 64 spaces, the context string, a SHA-256 hash.
    let mut msg = vec![0x20u8; 64];
    msg.extend_from_slice(b"TLS 1.3, server CertificateVerify\0");
    msg.extend_from_slice(&[0x5a; 32]);
    let sign_us = time_it(budget, 20_000, || {
        std::hint::black_box(signer.sign(&msg)?);
        Ok(())
    })?;

    let sig = signer.sign(&msg)?;
    let ee = webpki::EndEntityCert::try_from(cert)?;
    let verify_us = time_it(budget, 20_000, || {
        ee.verify_signature(webpki::aws_lc_rs::ECDSA_P256_SHA256, &msg, &sig)
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        Ok(())
    })?;
    Ok(Floor {
        x25519_us,
        sign_us,
        verify_us,
    })
}
