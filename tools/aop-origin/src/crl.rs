//! CRLs that stay current: each site's `crl_url` fetched over plain HTTP on a refresh
//! interval (and soon after a held CRL's nextUpdate), checked, cached on disk, and applied
//! the way a reload applies a policy.
//!
//! What a fetched CRL must pass before it counts, since whoever answers the URL (or sits
//! on the path to it) is not trusted:
//! - it parses (as webpki reads CRLs; one response holds at most [`MAX_CRLS`]), within
//!   [`MAX_CRL_BYTES`] and the site's `crl_fetch_timeout_secs`, through at most
//!   [`MAX_REDIRECTS`] redirects, each to the same host and port (a redirect elsewhere
//!   is refused `redirect`);
//! - its issuer is one of the site's trust anchors and that anchor's key signed it
//!   ([`aop_verify::Trust::verify_crl`]): a CRL from another CA is refused, and cannot
//!   revoke or un-revoke anything; it has no issuingDistributionPoint (a CRL of part of
//!   the CA's certificates would take the place of the one covering the edges: refused
//!   `scoped`), and its thisUpdate is at most [`aop_verify::CRL_CLOCK_SKEW`] ahead
//!   (`future`);
//! - it is newer than the CRL held from the same issuer for that URL (a higher cRLNumber,
//!   else a later thisUpdate): a replayed older CRL is refused, and the newer one stays.
//!
//! A refused response changes nothing (the held CRLs stay), and is logged and counted by
//! cause (`aop_crl_fetch_failures_total`). At most one fetch of a URL is in flight.
//!
//! The CRLs held for a (site, URL) are written (atomically, [`aop_pki::write_atomic`])
//! to one file in the site's `crl_cache_dir`, read at start and on a reload that adds
//! the URL — checked as a fetched CRL is — so a guard started while the CRL server is
//! down begins with the last good CRLs. Until a `crl_url` has a CRL, a `crl_stale =
//! "deny"` site refuses every client `revocation_unknown` (fail closed); `allow` serves.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aop_pki::CertificateRevocationListDer;
use aop_verify::{CrlFacts, Policy, TrustSpec};
use http_body_util::BodyExt as _;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use time::OffsetDateTime;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::config::{Config, CrlSource, CrlStale};
use crate::metrics::Metrics;

/// The largest CRL response read (10 MiB; a larger one is cut off and counted
/// `too_large`). A CA's CRL of 100,000 serials is about 4 MiB.
pub(crate) const MAX_CRL_BYTES: usize = 10 << 20;

/// Redirects followed for one fetch, each to the same host and port.
pub(crate) const MAX_REDIRECTS: usize = 3;

/// CRLs one response may hold (a PEM file of several CAs' CRLs).
pub(crate) const MAX_CRLS: usize = 16;

/// The soonest retry after a failed fetch, or of a CRL still stale after a fetch: the
/// refresh interval, if shorter.
const RETRY: Duration = Duration::from_secs(30);

/// How long after a held CRL's nextUpdate its URL is fetched again (the CA publishes its
/// next CRL by then).
const AFTER_NEXT_UPDATE: Duration = Duration::from_secs(2);

/// An `http://HOST[:PORT]/PATH` URL (no userinfo, no fragment).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct HttpUrl {
    /// `HOST:PORT` (the port defaulted to 80), what is dialled.
    authority: String,
    /// The `Host` header: HOST, with `:PORT` if one was given.
    host: String,
    /// `/PATH?QUERY`.
    path: String,
}

impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}{}", self.host, self.path)
    }
}

impl std::str::FromStr for HttpUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s.starts_with("https://") {
            return Err(format!(
                "{s:?}: only http:// is fetched (a CRL is signed, so it needs no TLS; RFC 5280 distribution points are http://)"
            ));
        }
        let rest = s
            .strip_prefix("http://")
            .ok_or_else(|| format!("{s:?} is not an http:// URL"))?;
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let bad = |why: &str| format!("{s:?} is not a CRL URL: {why}");
        if host.is_empty() {
            return Err(bad("no host"));
        }
        if host.contains('@') {
            return Err(bad("userinfo is not allowed"));
        }
        if path.contains('#') || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("a fragment, a space or a control character"));
        }
        if let Some((_, port)) = host.rsplit_once(':')
            && !port.contains(']')
            && port.parse::<u16>().is_err()
        {
            return Err(bad("the port is not a number from 1 to 65535"));
        }
        let uri: hyper::Uri = s.parse().map_err(|e| bad(&format!("{e}")))?;
        let authority = uri.authority().ok_or_else(|| bad("no host"))?;
        let name = authority.host().to_ascii_lowercase();
        let port = authority.port_u16().unwrap_or(80);
        if name.is_empty() || port == 0 {
            return Err(bad("no host or port 0"));
        }
        Ok(Self {
            authority: format!("{name}:{port}"),
            host: host.to_ascii_lowercase(),
            path: path.to_owned(),
        })
    }
}

impl HttpUrl {
    /// A redirect's `Location`, read against this URL: a path on this URL's host, or an
    /// `http://` URL of the same host and port. Anything else (another host or port,
    /// https, file, a scheme-relative `//host`) is refused: whoever answers a plain-HTTP
    /// URL must not be able to send the guard to an address the configuration never
    /// named (a metadata service, a loopback admin port).
    fn follow(&self, location: &str) -> Result<Self, String> {
        if location.starts_with('/') && !location.starts_with("//") {
            return Ok(Self {
                path: location.to_owned(),
                ..self.clone()
            });
        }
        let next: Self = location
            .parse()
            .map_err(|e| format!("redirect refused: {e}"))?;
        if next.authority != self.authority {
            return Err(format!(
                "redirect refused: {location:?} leaves {} (only redirects to the same host and port are followed)",
                self.authority
            ));
        }
        Ok(next)
    }
}

/// The fetched CRLs in force, by (site, URL): what a policy is built with.
#[derive(Clone, Debug, Default)]
pub(crate) struct Held {
    by_source: BTreeMap<(String, HttpUrl), Vec<CertificateRevocationListDer<'static>>>,
}

impl Held {
    /// Put the CRLs held for `site`'s `crl_url`s into its `trust`; a `crl_stale =
    /// "deny"` site with a URL that has none yet refuses every client until it has.
    pub(crate) fn apply(&self, site: &str, sources: &[CrlSource], trust: &mut TrustSpec) {
        let mut missing = Vec::new();
        let mut deny = false;
        for s in sources.iter().filter(|s| s.site == site) {
            deny = s.stale == CrlStale::Deny;
            match self.by_source.get(&(s.site.clone(), s.url.clone())) {
                Some(ders) if !ders.is_empty() => trust.crl_ders.extend(ders.iter().cloned()),
                _ => missing.push(s.url.to_string()),
            }
        }
        if deny && !missing.is_empty() {
            trust.crl_unavailable = Some(format!(
                "no CRL yet from {} (crl_stale = \"deny\": refused until one is fetched)",
                missing.join(", ")
            ));
        }
    }
}

/// One CRL held: its bytes and what it says.
#[derive(Clone, Debug)]
struct Entry {
    der: CertificateRevocationListDer<'static>,
    facts: CrlFacts,
}

/// One (site, URL): its settings, the CRLs held (the newest from each issuer), when it
/// is next fetched.
#[derive(Debug)]
struct Slot {
    source: CrlSource,
    held: BTreeMap<String, Entry>,
    due: Instant,
    last_success: Option<OffsetDateTime>,
}

impl Slot {
    fn key(&self) -> (String, HttpUrl) {
        (self.source.site.clone(), self.source.url.clone())
    }
}

/// The fetcher's state: every (site, URL) of the configuration in force.
#[derive(Debug, Default)]
pub(crate) struct Crls {
    inner: Mutex<Inner>,
    /// Told when the sources change or a fetch ends: the fetcher looks again.
    wake: Notify,
    /// A CRL taken is not in force yet: its rebuild failed (a file the configuration
    /// names is broken now). Each fetch tries again, changed or not.
    unapplied: std::sync::atomic::AtomicBool,
}

#[derive(Debug, Default)]
struct Inner {
    slots: Vec<Slot>,
    /// URLs being fetched now.
    in_flight: HashSet<HttpUrl>,
}

/// Why a fetch or a fetched CRL was refused: the `cause` label, and words.
#[derive(Debug)]
struct Failure {
    cause: &'static str,
    detail: String,
}

impl Failure {
    fn new(cause: &'static str, detail: impl Into<String>) -> Self {
        Self {
            cause,
            detail: detail.into(),
        }
    }
}

/// What the fetcher needs of the guard.
pub(crate) trait Host: Send + Sync + 'static {
    /// The policy in force (a fetched CRL is checked against its site's trust).
    fn policy(&self) -> Arc<Policy>;
    /// Rebuild the policy with the CRLs held now, as a reload does, and swap it in:
    /// what else changed on disk and went in force with it (`trust (SITE)`, …).
    /// Blocking: it reads files.
    fn apply_crls(&self) -> Result<Vec<String>, String>;
    /// The counters.
    fn metrics(&self) -> &Metrics;
    /// Spawn a task under the guard's log.
    fn spawn_task(&self, task: Pin<Box<dyn Future<Output = ()> + Send>>);
}

/// The site's trust in `policy`, by name.
fn trust_of<'p>(policy: &'p Policy, site: &str) -> Option<&'p aop_verify::Trust> {
    policy
        .rules()
        .find(|r| **r.name() == *site)
        .map(aop_verify::Rule::trust)
}

impl Crls {
    /// The CRLs held now.
    pub(crate) fn held(&self) -> Held {
        let inner = self.lock();
        Held {
            by_source: inner
                .slots
                .iter()
                .map(|s| (s.key(), s.held.values().map(|e| e.der.clone()).collect()))
                .collect(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Take `config`'s sources (start, and each reload that passed): a URL already held
    /// keeps its CRLs — those its site's trust in `policy` still verifies; a new one
    /// starts from its cache file (each CRL checked as a fetched one) and is fetched now.
    /// Whether the CRLs held changed (then the caller rebuilds the policy with them).
    pub(crate) fn configure(&self, config: &Config, policy: &Policy, metrics: &Metrics) -> bool {
        let mut inner = self.lock();
        let before: Vec<_> = inner
            .slots
            .iter()
            .map(|s| (s.key(), s.held.keys().cloned().collect::<Vec<_>>()))
            .collect();
        let mut old = std::mem::take(&mut inner.slots);
        let now = Instant::now();
        for source in &config.crl_sources {
            let trust = trust_of(policy, &source.site);
            let slot = match old
                .iter()
                .position(|s| s.source.site == source.site && s.source.url == source.url)
            {
                Some(i) => {
                    let mut slot = old.swap_remove(i);
                    // Checked again: the trust may have lost the CRL's issuer.
                    slot.held
                        .retain(|_, e| trust.is_some_and(|t| t.verify_crl(&e.der).is_ok()));
                    if slot.source.refresh != source.refresh {
                        slot.due = now;
                    }
                    slot.source = source.clone();
                    slot
                }
                None => Slot {
                    held: trust.map(|t| from_cache(source, t)).unwrap_or_default(),
                    source: source.clone(),
                    due: now,
                    last_success: None,
                },
            };
            inner.slots.push(slot);
        }
        let after: Vec<_> = inner
            .slots
            .iter()
            .map(|s| (s.key(), s.held.keys().cloned().collect::<Vec<_>>()))
            .collect();
        metrics.crl_sources(
            &inner
                .slots
                .iter()
                .map(|s| (s.source.site.clone(), s.source.url.to_string()))
                .collect::<Vec<_>>(),
        );
        for slot in &inner.slots {
            report(metrics, slot);
        }
        drop(inner);
        self.wake.notify_one();
        before != after || !before.is_empty() && after.is_empty()
    }

    /// What the CRLs held for `source` say.
    fn facts(&self, source: &CrlSource) -> Vec<CrlFacts> {
        self.lock()
            .slots
            .iter()
            .filter(|s| s.source.site == source.site && s.source.url == source.url)
            .flat_map(|s| s.held.values().map(|e| e.facts.clone()))
            .collect()
    }

    /// The sources due now (marked in flight), and when the next one is due.
    fn take_due(&self, now: Instant) -> (Vec<CrlSource>, Option<Instant>) {
        let mut inner = self.lock();
        let Inner { slots, in_flight } = &mut *inner;
        let mut due = Vec::new();
        let mut next: Option<Instant> = None;
        for slot in slots.iter() {
            if in_flight.contains(&slot.source.url) {
                continue;
            }
            if slot.due <= now {
                in_flight.insert(slot.source.url.clone());
                due.push(slot.source.clone());
            } else {
                next = Some(next.map_or(slot.due, |n| n.min(slot.due)));
            }
        }
        (due, next)
    }

    /// Take a fetched body for `source`: every CRL in it checked, then each newer than
    /// the one held from its issuer replaces it. The CRLs that changed, or why the whole
    /// response was refused (nothing changes then).
    fn take(
        &self,
        source: &CrlSource,
        policy: &Policy,
        body: &[u8],
    ) -> Result<Vec<CrlFacts>, Failure> {
        let ders = aop_pki::parse_crls(body, Path::new(&source.url.to_string()))
            .map_err(|e| Failure::new("malformed", e.to_string()))?;
        if ders.len() > MAX_CRLS {
            return Err(Failure::new(
                "malformed",
                format!("{} CRLs in one response; at most {MAX_CRLS}", ders.len()),
            ));
        }
        let trust = trust_of(policy, &source.site)
            .ok_or_else(|| Failure::new("unknown_issuer", "the site is gone"))?;
        let mut fetched = Vec::new();
        for der in ders {
            let facts = trust.verify_crl(&der).map_err(|e| match e {
                aop_verify::Error::CrlRefused { problem, detail } => Failure::new(problem, detail),
                other => Failure::new("malformed", other.to_string()),
            })?;
            fetched.push(Entry { der, facts });
        }
        let mut inner = self.lock();
        let Some(slot) = inner
            .slots
            .iter_mut()
            .find(|s| s.source.site == source.site && s.source.url == source.url)
        else {
            return Ok(Vec::new());
        };
        // All or nothing: an older CRL beside a newer one is still a replay.
        for e in &fetched {
            if let Some(held) = slot.held.get(&e.facts.issuer)
                && held.der != e.der
                && e.facts.newer_than(&held.facts) != std::cmp::Ordering::Greater
            {
                return Err(Failure::new(
                    "replay",
                    format!(
                        "a CRL of {} not newer than the one held (number {}, thisUpdate {} vs number {}, thisUpdate {}): kept the held one",
                        e.facts.issuer,
                        number(&e.facts),
                        aop_pki::rfc3339(e.facts.this_update),
                        number(&held.facts),
                        aop_pki::rfc3339(held.facts.this_update)
                    ),
                ));
            }
        }
        let mut changed = Vec::new();
        for e in fetched {
            if slot
                .held
                .get(&e.facts.issuer)
                .is_none_or(|h| h.der != e.der)
            {
                changed.push(e.facts.clone());
                slot.held.insert(e.facts.issuer.clone(), e);
            }
        }
        if !changed.is_empty() {
            let pem: String = slot
                .held
                .values()
                .map(|e| aop_pki::pem_encode("X509 CRL", &e.der))
                .collect();
            if let Some(dir) = slot.source.cache.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            if let Err(e) = aop_pki::write_atomic(
                &slot.source.cache,
                pem.as_bytes(),
                aop_pki::FileMode::Public,
                aop_pki::Overwrite::Replace,
            ) {
                // Applied all the same: the CRL is good; only a restart would miss it.
                tracing::warn!(target: "aop::origin", site = source.site.as_str(), url = %source.url,
                    error = %e, "CRL cache not written");
            }
        }
        Ok(changed)
    }

    /// A fetch of `source` ended: schedule the next, count, say what is stale.
    fn ended(&self, source: &CrlSource, result: Result<(), &Failure>, metrics: &Metrics) {
        let mut inner = self.lock();
        inner.in_flight.remove(&source.url);
        let now = Instant::now();
        let wall = OffsetDateTime::now_utc();
        if let Some(slot) = inner
            .slots
            .iter_mut()
            .find(|s| s.source.site == source.site && s.source.url == source.url)
        {
            let refresh = slot.source.refresh;
            let next_update = slot.held.values().filter_map(|e| e.facts.next_update).min();
            let stale = next_update.is_some_and(|n| n <= wall);
            slot.due = match (result, next_update) {
                (Err(_), _) => now + refresh.min(RETRY),
                (Ok(()), _) if stale => now + refresh.min(RETRY),
                (Ok(()), Some(n)) => {
                    let until =
                        Duration::try_from(n - wall).unwrap_or_default() + AFTER_NEXT_UPDATE;
                    now + refresh.min(until)
                }
                (Ok(()), None) => now + refresh,
            };
            if result.is_ok() {
                slot.last_success = Some(wall);
            }
            for e in slot.held.values() {
                let Some(n) = e.facts.next_update.filter(|n| *n <= wall) else {
                    continue;
                };
                let (site, url, issuer) = (
                    slot.source.site.as_str(),
                    slot.source.url.to_string(),
                    e.facts.issuer.as_str(),
                );
                let next_update = aop_pki::rfc3339(n);
                match slot.source.stale {
                    CrlStale::Allow => {
                        tracing::warn!(target: "aop::origin", site, url, issuer, next_update,
                        "CRL past its nextUpdate; crl_stale = \"allow\": what it does not list is served");
                    }
                    CrlStale::Deny => {
                        tracing::error!(target: "aop::origin", site, url, issuer, next_update,
                        "CRL past its nextUpdate; crl_stale = \"deny\": every certificate it covers is refused (revocation_unknown)");
                    }
                }
            }
            report(metrics, slot);
        }
        if let Err(f) = result {
            metrics.crl_failed(&source.site, &source.url.to_string(), f.cause);
        }
        drop(inner);
        self.wake.notify_one();
    }
}

/// The metrics of `slot` as it is now.
fn report(metrics: &Metrics, slot: &Slot) {
    metrics.crl_state(
        &slot.source.site,
        &slot.source.url.to_string(),
        slot.held
            .values()
            .map(|e| {
                (
                    e.facts.issuer.clone(),
                    e.facts.this_update,
                    e.facts.next_update,
                )
            })
            .collect(),
        slot.last_success,
    );
}

/// A CRL's number for a log line (hex), or `none`.
fn number(f: &CrlFacts) -> String {
    f.number.as_ref().map_or_else(
        || "none".to_owned(),
        |n| n.iter().map(|b| format!("{b:02x}")).collect(),
    )
}

/// The CRLs of `source`'s cache file that `trust` verifies, the newest per issuer. A
/// missing file is an empty start; an unreadable or refused one is logged and skipped
/// (the next fetch writes it again).
fn from_cache(source: &CrlSource, trust: &aop_verify::Trust) -> BTreeMap<String, Entry> {
    let mut held: BTreeMap<String, Entry> = BTreeMap::new();
    let path = &source.cache;
    if !path.exists() {
        return held;
    }
    let ders = match aop_pki::load_crls(path) {
        Ok(ders) => ders,
        Err(e) => {
            tracing::warn!(target: "aop::origin", site = source.site.as_str(), url = %source.url,
                error = %e, "CRL cache unusable; fetching");
            return held;
        }
    };
    for der in ders.into_iter().take(MAX_CRLS) {
        match trust.verify_crl(&der) {
            Ok(facts) => {
                if held
                    .get(&facts.issuer)
                    .is_none_or(|h| facts.newer_than(&h.facts) == std::cmp::Ordering::Greater)
                {
                    held.insert(facts.issuer.clone(), Entry { der, facts });
                }
            }
            Err(e) => {
                tracing::warn!(target: "aop::origin", site = source.site.as_str(), url = %source.url,
                    cache = %path.display(), error = %e, "cached CRL refused");
            }
        }
    }
    if !held.is_empty() {
        tracing::info!(target: "aop::origin", site = source.site.as_str(), url = %source.url,
            cache = %path.display(), crls = held.len(), "CRL cache read");
    }
    held
}

/// Fetch every source when due, until `shutdown`.
pub(crate) async fn run<H: Host>(
    host: Arc<H>,
    crls: Arc<Crls>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (due, next) = crls.take_due(Instant::now());
        for source in due {
            let (host2, crls2) = (host.clone(), crls.clone());
            host.spawn_task(Box::pin(async move {
                fetch_and_take(&host2, &crls2, &source).await;
            }));
        }
        let sleep = async {
            match next {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = sleep => {}
            () = crls.wake.notified() => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
    }
}

/// One fetch of `source`, taken, applied, counted.
async fn fetch_and_take<H: Host>(host: &Arc<H>, crls: &Arc<Crls>, source: &CrlSource) {
    let result = match tokio::time::timeout(source.timeout, get(&source.url)).await {
        Err(_) => Err(Failure::new(
            "timeout",
            format!("no whole answer within {:?}", source.timeout),
        )),
        Ok(r) => r,
    };
    let result = match result {
        Ok(body) => crls.take(source, &host.policy(), &body),
        Err(f) => Err(f),
    };
    let result = match result {
        Ok(changed) if changed.is_empty() && !crls.unapplied.load(Ordering::Acquire) => Ok(()),
        Ok(mut changed) => {
            if changed.is_empty() {
                // Nothing new, but what is held is not in force yet: say what will be.
                changed = crls.facts(source);
            }
            let h = host.clone();
            let applied = match tokio::task::spawn_blocking(move || h.apply_crls()).await {
                Ok(Ok(others)) => Ok(others),
                Ok(Err(e)) => Err(Failure::new("apply", e)),
                Err(e) => Err(Failure::new("apply", e.to_string())),
            };
            crls.unapplied.store(applied.is_err(), Ordering::Release);
            if let Ok(others) = &applied {
                // In force from here: new handshakes, and each kept-alive connection's
                // next request. The policy was built from the files on disk now: what
                // else changed there since the last load went in force too, and says so.
                let applied: String = std::iter::once("crl")
                    .chain(others.iter().map(String::as_str))
                    .collect::<Vec<_>>()
                    .join(", ");
                for f in &changed {
                    tracing::info!(target: "aop::origin", site = source.site.as_str(), url = %source.url,
                        issuer = f.issuer.as_str(), crl_number = number(f).as_str(),
                        this_update = %aop_pki::rfc3339(f.this_update),
                        next_update = %f.next_update.map(aop_pki::rfc3339).unwrap_or_default(),
                        revoked = f.revoked, applied = applied.as_str(), "CRL updated");
                }
                if !others.is_empty() {
                    tracing::warn!(target: "aop::origin", site = source.site.as_str(), url = %source.url,
                        applied = applied.as_str(),
                        "CRL update read every file again: files changed on disk since the last reload went in force with it");
                }
            }
            applied.map(|_| ())
        }
        Err(f) => Err(f),
    };
    if let Err(f) = &result {
        tracing::warn!(target: "aop::origin", site = source.site.as_str(), url = %source.url,
            cause = f.cause, error = f.detail.as_str(), "CRL fetch refused; the CRLs held stay");
    }
    crls.ended(source, result.as_ref().map(|_| ()), host.metrics());
}

/// GET `url` (following up to [`MAX_REDIRECTS`] redirects on its host and port): the body
/// of a 200, at most [`MAX_CRL_BYTES`]. The caller bounds the time.
async fn get(url: &HttpUrl) -> Result<Vec<u8>, Failure> {
    let mut url = url.clone();
    for _ in 0..=MAX_REDIRECTS {
        match get_once(&url).await? {
            Got::Body(b) => return Ok(b),
            Got::Redirect(location) => {
                url = url
                    .follow(&location)
                    .map_err(|e| Failure::new("redirect", e))?;
            }
        }
    }
    Err(Failure::new(
        "redirect",
        format!("more than {MAX_REDIRECTS} redirects"),
    ))
}

enum Got {
    Body(Vec<u8>),
    Redirect(String),
}

/// One request on a new connection.
async fn get_once(url: &HttpUrl) -> Result<Got, Failure> {
    let tcp = tokio::net::TcpStream::connect(&url.authority)
        .await
        .map_err(|e| Failure::new("connect", format!("{}: {e}", url.authority)))?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| Failure::new("http", e.to_string()))?;
    let conn = tokio::spawn(conn);
    let result = async {
        let request = hyper::Request::get(url.path.as_str())
            .header(hyper::header::HOST, url.host.as_str())
            .header(hyper::header::USER_AGENT, "aop-origin")
            .header(hyper::header::ACCEPT, "application/pkix-crl, */*")
            .body(http_body_util::Empty::<Bytes>::new())
            .map_err(|e| Failure::new("http", e.to_string()))?;
        let response = send
            .send_request(request)
            .await
            .map_err(|e| Failure::new("http", e.to_string()))?;
        let status = response.status();
        if status.is_redirection() {
            let location = response
                .headers()
                .get(hyper::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .ok_or_else(|| Failure::new("redirect", format!("{status} without a Location")))?;
            return Ok(Got::Redirect(location.to_owned()));
        }
        if status != hyper::StatusCode::OK {
            return Err(Failure::new("status", format!("answered {status}")));
        }
        let declared = response
            .headers()
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|l| l.to_str().ok())
            .and_then(|l| l.parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_CRL_BYTES as u64) {
            return Err(Failure::new(
                "too_large",
                format!(
                    "{} bytes declared; at most {MAX_CRL_BYTES}",
                    declared.unwrap_or(0)
                ),
            ));
        }
        let mut body = response.into_body();
        let mut out = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| Failure::new("http", e.to_string()))?;
            if let Some(data) = frame.data_ref() {
                if out.len() + data.len() > MAX_CRL_BYTES {
                    return Err(Failure::new(
                        "too_large",
                        format!("more than {MAX_CRL_BYTES} bytes; cut off"),
                    ));
                }
                out.extend_from_slice(data);
            }
        }
        Ok(Got::Body(out))
    }
    .await;
    conn.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u: HttpUrl = "http://PKI.example/edge.crl".parse().unwrap();
        assert_eq!(u.authority, "pki.example:80");
        assert_eq!(u.to_string(), "http://pki.example/edge.crl");
        let u: HttpUrl = "http://127.0.0.1:8080".parse().unwrap();
        assert_eq!(
            (u.authority.as_str(), u.path.as_str()),
            ("127.0.0.1:8080", "/")
        );
        let u: HttpUrl = "http://[::1]:81/a?b=c".parse().unwrap();
        assert_eq!(
            (u.authority.as_str(), u.path.as_str()),
            ("[::1]:81", "/a?b=c")
        );
        for bad in [
            "https://pki.example/x.crl",
            "ftp://pki.example/x.crl",
            "http://",
            "http://u:p@pki.example/x",
            "http://pki.example/x#f",
            "http://pki.example/a b",
            "http://pki.example:0/x",
            "http://pki.example:99999/x",
            "pki.example/x",
        ] {
            assert!(bad.parse::<HttpUrl>().is_err(), "{bad}");
        }
        let base: HttpUrl = "http://a.example:81/x".parse().unwrap();
        assert_eq!(
            base.follow("/y").unwrap().to_string(),
            "http://a.example:81/y"
        );
        assert_eq!(
            base.follow("http://A.example:81/z").unwrap().to_string(),
            "http://a.example:81/z"
        );
        for bad in [
            "http://b.example/z",
            "http://a.example/z",
            "http://a.example:82/z",
            "http://169.254.169.254/latest/meta-data/",
            "https://b.example/z",
            "file:///etc/passwd",
            "//b.example/z",
            "z",
        ] {
            assert!(base.follow(bad).is_err(), "{bad}");
        }
    }
}
