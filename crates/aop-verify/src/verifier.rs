//! The rustls client-certificate verifier of one rule, and how what it learns about one
//! handshake reaches the acceptor.
//!
//! A rule's verifier is built once, with its `ServerConfig`, and shared by every
//! handshake under that rule; rustls calls it synchronously while the handshake future
//! is polled. The acceptor runs each handshake inside [`LEARNT`]`.scope(…)`, a tokio
//! task-local holding that handshake's [`Learnt`]; the verifier records its [`Checked`]
//! result and the CertificateVerify outcome there, and the acceptor takes the record back
//! when the handshake ends ([`run_handshake`]). So the acceptor knows the exact reason
//! (and the certificate's details) even when rustls aborts the handshake with an alert,
//! without rebuilding a verifier per connection and without re-verifying anything. (The
//! rustls error cannot carry it: only `CertificateError::Other` has room for it, and that
//! always sends the alert `certificate_unknown`.)

use std::cell::RefCell;
use std::future::Future;
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::{CertificateDer, UnixTime};

use crate::policy::Mode;
use crate::trust::{Checked, SignatureBudget, Trust};
use crate::verdict::{Outcome, Reason};

/// What the verifier learnt during one handshake.
#[derive(Debug, Default)]
pub(crate) struct Learnt {
    /// The certificate check, if the client presented a certificate.
    pub(crate) checked: Option<Checked>,
    /// The client's CertificateVerify did not verify.
    pub(crate) signature_failed: bool,
    /// The client proved it holds the certificate's key (its CertificateVerify checked).
    pub(crate) signature_verified: bool,
}

tokio::task_local! {
    /// The record of the handshake being polled: set by [`run_handshake`], written by the
    /// [`Verifier`].
    static LEARNT: RefCell<Learnt>;
}

/// Record into the current handshake's [`Learnt`]; outside [`run_handshake`] (nothing
/// else in aop-verify runs a rule's `ServerConfig`), nothing is recorded.
fn record(f: impl FnOnce(&mut Learnt)) {
    let _ = LEARNT.try_with(|l| f(&mut l.borrow_mut()));
}

/// Run a handshake future (one that drives a rule's `ServerConfig`) and return its output
/// with what the rule's verifier learnt during it.
pub(crate) async fn run_handshake<F: Future>(handshake: F) -> (F::Output, Learnt) {
    let mut scoped = std::pin::pin!(LEARNT.scope(RefCell::default(), handshake));
    let output = scoped.as_mut().await;
    let learnt = scoped
        .as_mut()
        .take_value()
        .map(RefCell::into_inner)
        .unwrap_or_default();
    (output, learnt)
}

/// How many other rules a rejected certificate is tried against to tell
/// `zone_mismatch` from `unknown_ca`.
const MAX_ZONE_CHECKS: usize = 16;

/// The client-certificate verifier of one rule.
#[derive(Debug)]
pub(crate) struct Verifier {
    rule: Arc<str>,
    trust: Arc<Trust>,
    /// The other rules' trust, to tell `zone_mismatch` from `unknown_ca`.
    others: Vec<(Arc<str>, Arc<Trust>)>,
    mode: Mode,
    /// The rule's trust's algorithms, for the client's CertificateVerify.
    algs: WebPkiSupportedAlgorithms,
}

impl Verifier {
    pub(crate) fn new(
        rule: Arc<str>,
        trust: Arc<Trust>,
        others: Vec<(Arc<str>, Arc<Trust>)>,
        mode: Mode,
    ) -> Self {
        // The CertificateVerify is checked with the same provider's algorithms as the chain.
        let algs = *trust.algs();
        Self {
            rule,
            trust,
            others,
            mode,
            algs,
        }
    }

    /// The rule's full check: the trust check, then, for a certificate from an unknown
    /// CA, whether another rule would have accepted its chain (`zone_mismatch`).
    ///
    /// Both share one [`SignatureBudget`] of [`Trust::signature_budget`] signatures: that
    /// is all the signature checking a handshake's chain can cost (plus rustls's one
    /// CertificateVerify). A search of the other rules cut short by the budget leaves the
    /// verdict `unknown_ca`, which this rule's own check established.
    pub(crate) fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Checked {
        let budget = self.trust.budget();
        self.check_within(end_entity, intermediates, now, &budget)
    }

    fn check_within(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        budget: &SignatureBudget,
    ) -> Checked {
        let mut checked = self
            .trust
            .check_within(end_entity, intermediates, now, budget);
        if checked.outcome == Outcome::Failed(Reason::UnknownCa)
            && let Some((other, _)) = self
                .others
                .iter()
                // Bounded twice: never more than a few rules, and never past the budget.
                .take(MAX_ZONE_CHECKS)
                .take_while(|_| !budget.exhausted())
                .find(|(_, t)| t.chain_verifies(end_entity, intermediates, now, budget))
        {
            checked.outcome = Outcome::Failed(Reason::ZoneMismatch);
            checked.detail = Some(format!(
                "the certificate is valid for rule {other:?}, not for rule {:?}",
                self.rule
            ));
        }
        checked
    }
}

/// rustls's CertificateVerify check (`verify`), which has webpki parse the client's
/// certificate: when it fails and the certificate has a view ([`crate::view`]) — webpki
/// refuses a critical certificatePolicies or a notBefore before 1970 that aop accepted —
/// it is asked again with the view, whose public key is the original's (checked). The
/// common case, a certificate webpki reads, costs nothing more; and every outcome is
/// recorded for the verdict.
fn check_signature(
    cert: &CertificateDer<'_>,
    verify: impl Fn(&CertificateDer<'_>) -> Result<HandshakeSignatureValid, rustls::Error>,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    let r = verify(cert).or_else(|e| match crate::view::for_webpki(cert.as_ref()) {
        Some(view) => verify(&CertificateDer::from(view.der)),
        None => Err(e),
    });
    let ok = r.is_ok();
    record(|l| {
        l.signature_failed |= !ok;
        l.signature_verified |= ok;
    });
    r
}

/// The rustls error (and so the TLS alert) for a reason.
fn rustls_error(reason: Reason) -> rustls::Error {
    #[allow(deprecated)] // BadSignature: the context variant needs details we do not have here
    let e = match reason {
        Reason::UnknownCa => CertificateError::UnknownIssuer,
        Reason::Expired => CertificateError::Expired,
        Reason::NotYetValid => CertificateError::NotValidYet,
        Reason::Revoked => CertificateError::Revoked,
        Reason::BadSignature => CertificateError::BadSignature,
        Reason::BadEku => CertificateError::InvalidPurpose,
        Reason::BadEncoding => CertificateError::BadEncoding,
        Reason::UnsupportedAlgorithm => CertificateError::UnsupportedSignatureAlgorithm,
        Reason::BadKeyUsage => CertificateError::InvalidPurpose,
        Reason::NameConstraints | Reason::NotACa => CertificateError::BadEncoding,
        Reason::UnhandledCriticalExtension => CertificateError::UnhandledCriticalExtension,
        Reason::RevocationUnknown => CertificateError::UnknownRevocationStatus,
        _ => CertificateError::ApplicationVerificationFailure,
    };
    rustls::Error::InvalidCertificate(e)
}

impl ClientCertVerifier for Verifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mode == Mode::Require
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.trust.subjects
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let checked = self.check(end_entity, intermediates, now);
        let result = match (checked.outcome, self.mode) {
            (Outcome::Failed(reason), Mode::Require) => Err(rustls_error(reason)),
            _ => Ok(ClientCertVerified::assertion()),
        };
        record(|l| l.checked = Some(checked));
        result
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        check_signature(cert, |c| {
            rustls::crypto::verify_tls12_signature(message, c, dss, &self.algs)
        })
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        check_signature(cert, |c| {
            rustls::crypto::verify_tls13_signature(message, c, dss, &self.algs)
        })
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::tests::{ca_named, client_of, impostors};
    use crate::trust::{TrustSpec, unix_time};

    fn trust(ca_dir: &std::path::Path) -> Arc<Trust> {
        Arc::new(Trust::load(&TrustSpec::new([ca_dir.join("ca.pem")])).unwrap())
    }

    /// The `zone_mismatch` search spends from the handshake's budget: impostors of a name
    /// that three other rules trust (four signatures a rule) stop at the budget, and the
    /// verdict stays this rule's `unknown_ca`. A real certificate of another rule is still
    /// found out (two signatures: the first other rule's key, then its own CA's).
    #[test]
    fn the_zone_mismatch_search_shares_the_handshake_budget() {
        let d = tempfile::tempdir().unwrap();
        let now = time::OffsetDateTime::now_utc();
        let at = unix_time(now);
        let own = ca_named(d.path(), "own", "a", 0, now);
        let b: Vec<_> = (0..3)
            .map(|i| ca_named(d.path(), &format!("b{i}"), "b", 0, now))
            .collect();
        let others = b
            .iter()
            .enumerate()
            .map(|(i, dir)| (Arc::from(format!("b{i}")), trust(dir)))
            .collect();
        let v = Verifier::new("a".into(), trust(&own), others, Mode::Require);
        assert_eq!(v.trust.signature_budget(), 10);

        let chain = impostors(d.path(), "b", 3, now);
        let budget = v.trust.budget();
        let checked = v.check_within(&chain[0], &chain[1..], at, &budget);
        assert_eq!(checked.outcome, Outcome::Failed(Reason::UnknownCa));
        assert_eq!(budget.verified(), 10);
        assert!(budget.exhausted());

        let of_b1 = client_of(&b[1], "edge-b1", now);
        let budget = v.trust.budget();
        let checked = v.check_within(&of_b1, &[], at, &budget);
        assert_eq!(checked.outcome, Outcome::Failed(Reason::ZoneMismatch));
        assert_eq!(
            checked.detail.as_deref(),
            Some("the certificate is valid for rule \"b1\", not for rule \"a\"")
        );
        assert_eq!(budget.verified(), 2);
    }
}
