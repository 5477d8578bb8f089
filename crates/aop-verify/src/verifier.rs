//! The rustls client-certificate verifier of one rule, and the side channel that hands
//! its verdict to the acceptor.
//!
//! rustls calls the verifier synchronously from inside the handshake future's `poll`.
//! The acceptor wraps that future in [`Capture`], which arms a thread-local slot for the
//! duration of each poll; the verifier deposits its [`Checked`] result there. So the
//! acceptor learns the exact reason (and the certificate's details) even when rustls
//! aborts the handshake, without rebuilding a verifier per connection and without
//! re-verifying anything.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

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
pub(crate) struct Slot {
    pub(crate) checked: Option<Checked>,
    pub(crate) signature_failed: bool,
    /// The client proved it holds the certificate's key (its CertificateVerify checked).
    pub(crate) signature_verified: bool,
}

thread_local! {
    static SLOT: RefCell<Option<Slot>> = const { RefCell::new(None) };
}

fn with_slot(f: impl FnOnce(&mut Slot)) {
    SLOT.with(|s| {
        if let Some(slot) = s.borrow_mut().as_mut() {
            f(slot);
        }
    });
}

/// A future wrapper that collects what the verifier deposits while `inner` is polled.
pub(crate) struct Capture<F> {
    inner: F,
    slot: Option<Slot>,
}

impl<F> Capture<F> {
    pub(crate) fn new(inner: F) -> Self {
        Self {
            inner,
            slot: Some(Slot::default()),
        }
    }
}

/// Disarms the thread-local slot even if the inner poll panics.
struct Armed<'a>(&'a mut Option<Slot>);

impl Drop for Armed<'_> {
    fn drop(&mut self) {
        *self.0 = SLOT.with(|s| s.borrow_mut().take());
    }
}

impl<F: Future + Unpin> Future for Capture<F> {
    type Output = (F::Output, Slot);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        SLOT.with(|s| *s.borrow_mut() = this.slot.take());
        let armed = Armed(&mut this.slot);
        let polled = Pin::new(&mut this.inner).poll(cx);
        drop(armed);
        match polled {
            Poll::Ready(out) => Poll::Ready((out, this.slot.take().unwrap_or_default())),
            Poll::Pending => Poll::Pending,
        }
    }
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
    algs: WebPkiSupportedAlgorithms,
}

impl Verifier {
    pub(crate) fn new(
        rule: Arc<str>,
        trust: Arc<Trust>,
        others: Vec<(Arc<str>, Arc<Trust>)>,
        mode: Mode,
    ) -> Self {
        Self {
            rule,
            trust,
            others,
            mode,
            algs: rustls::crypto::aws_lc_rs::default_provider().signature_verification_algorithms,
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
        let budget = SignatureBudget::new(self.trust.signature_budget());
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
        with_slot(|slot| slot.checked = Some(checked));
        result
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let r = rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs);
        let ok = r.is_ok();
        with_slot(|slot| {
            slot.signature_failed |= !ok;
            slot.signature_verified |= ok;
        });
        r
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let r = rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs);
        let ok = r.is_ok();
        with_slot(|slot| {
            slot.signature_failed |= !ok;
            slot.signature_verified |= ok;
        });
        r
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
        let budget = SignatureBudget::new(v.trust.signature_budget());
        let checked = v.check_within(&chain[0], &chain[1..], at, &budget);
        assert_eq!(checked.outcome, Outcome::Failed(Reason::UnknownCa));
        assert_eq!(budget.verified(), 10);
        assert!(budget.exhausted());

        let of_b1 = client_of(&b[1], "edge-b1", now);
        let budget = SignatureBudget::new(v.trust.signature_budget());
        let checked = v.check_within(&of_b1, &[], at, &budget);
        assert_eq!(checked.outcome, Outcome::Failed(Reason::ZoneMismatch));
        assert_eq!(
            checked.detail.as_deref(),
            Some("the certificate is valid for rule \"b1\", not for rule \"a\"")
        );
        assert_eq!(budget.verified(), 2);
    }
}
