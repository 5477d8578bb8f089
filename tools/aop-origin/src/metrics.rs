//! Counters and the Prometheus text exposition on `metrics_listen` (`/metrics`,
//! `/healthz`, `/readyz`), on prometheus-client: its registry holds the families, its
//! encoder writes the text (format 0.0.4) and escapes label values.
//!
//! What only a scrape can know (certificate expiry under the policy in force, tunnel
//! bytes, the process's own figures) is put in a second registry made at each scrape.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aop_verify::{Policy, Verdict};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use time::OffsetDateTime;

/// A site's name as a label value: shared, so a label set costs no allocation.
type Site = Arc<str>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SiteLabel {
    site: Site,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandshakeLabels {
    site: Site,
    verdict: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    site: Site,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClosedLabels {
    site: Site,
    limit: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TunnelLabels {
    site: Site,
    protocol: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    site: Site,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    site: Site,
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

/// `result="success"|"failure"`, `source="signal"|"file"`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    result: &'static str,
    source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SettingLabel {
    setting: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CertificateLabels {
    site: Site,
    role: &'static str,
    sha256: String,
    subject: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CrlLabels {
    site: String,
    url: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CrlIssuerLabels {
    site: String,
    url: String,
    issuer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CrlFailureLabels {
    site: String,
    url: String,
    cause: &'static str,
}

/// One `crl_url` of a site, as its fetches left it.
#[derive(Debug, Default)]
struct CrlSeries {
    /// Each CRL held: issuer, thisUpdate, nextUpdate.
    held: Vec<(String, OffsetDateTime, Option<OffsetDateTime>)>,
    last_success: Option<OffsetDateTime>,
    failures: BTreeMap<&'static str, u64>,
}

/// `aop_crl_fetch_failures_total`'s causes, present from the start at 0.
pub(crate) const CRL_FAILURE_CAUSES: [&str; 13] = [
    "connect",
    "timeout",
    "http",
    "status",
    "redirect",
    "too_large",
    "malformed",
    "unknown_issuer",
    "bad_signature",
    "scoped",
    "future",
    "replay",
    "apply",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

/// `aop_handshake_duration_seconds`' buckets: a loopback handshake takes a millisecond,
/// one across the world a few hundred, one that times out `handshake_timeout_secs`.
const HANDSHAKE_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

fn handshake_histogram() -> Histogram {
    Histogram::new(HANDSHAKE_BUCKETS)
}

/// The families every site's counters are series of.
#[derive(Debug, Default, Clone)]
struct Families {
    handshakes: Family<HandshakeLabels, Counter>,
    requests: Family<RequestLabels, Counter>,
    upstream_errors: Family<SiteLabel, Counter>,
    misdirected: Family<SiteLabel, Counter>,
    bad_requests: Family<SiteLabel, Counter>,
    client_errors: Family<SiteLabel, Counter>,
    incomplete: Family<SiteLabel, Counter>,
    resumed: Family<SiteLabel, Counter>,
    closed: Family<ClosedLabels, Counter>,
    tunnels_open: Family<SiteLabel, Gauge>,
    tunnels: Family<TunnelLabels, Counter>,
    tunnels_closed: Family<ReasonLabels, Counter>,
}

/// Everything counted. Touched once per handshake and once per request; a site's
/// series are looked up once, when its counters are made.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    families: Families,
    sites: Mutex<BTreeMap<String, Arc<SiteMetrics>>>,
    reloads: Family<ReloadLabels, Counter>,
    handshake_seconds: Family<ResultLabel, Histogram, fn() -> Histogram>,
    connections: Family<StateLabel, Gauge>,
    /// 1 for each setting the file changed that only a restart applies (issue 15 item 2,
    /// set by the guard's reload).
    restart_required: Family<SettingLabel, Gauge>,
    /// Each site's `crl_url`, by (site, URL) (crate::crl).
    crls: Mutex<BTreeMap<(String, String), CrlSeries>>,
    /// Listeners bound and the policy loaded, and not draining: what `/readyz` says.
    ready: AtomicBool,
    /// Set once the guard has stopped (its drain over): the metrics listener closes.
    stopped: tokio::sync::watch::Sender<bool>,
}

impl Default for Metrics {
    fn default() -> Self {
        let families = Families::default();
        let reloads = Family::<ReloadLabels, Counter>::default();
        let handshake_seconds =
            Family::new_with_constructor(handshake_histogram as fn() -> Histogram);
        let connections = Family::<StateLabel, Gauge>::default();
        let restart_required = Family::<SettingLabel, Gauge>::default();
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        // Present from the start, at 0: a rate() needs the series before its first event.
        for result in ["success", "failure"] {
            for source in ["signal", "file"] {
                let _ = reloads.get_or_create(&ReloadLabels { result, source });
            }
        }
        for result in ["accepted", "refused"] {
            let _ = handshake_seconds.get_or_create(&ResultLabel { result });
        }
        for state in CONNECTION_STATES {
            let _ = connections.get_or_create(&StateLabel { state });
        }
        let f = &families;
        let mut r = Registry::default();
        r.register(
            "aop_handshakes",
            "TLS handshakes, by site, verdict and reason",
            f.handshakes.clone(),
        );
        r.register(
            "aop_requests",
            "HTTP requests answered, by site and status (the guard's own refusals, 400 and 421, included)",
            f.requests.clone(),
        );
        r.register(
            "aop_upstream_errors",
            "Requests the upstream could not answer (502)",
            f.upstream_errors.clone(),
        );
        r.register(
            "aop_misdirected_requests",
            "Requests whose Host belongs to another site than the SNI, or whose certificate a reload refuses (421)",
            f.misdirected.clone(),
        );
        r.register(
            "aop_bad_requests",
            "Requests refused for their Host: none, several, or one that does not parse (400)",
            f.bad_requests.clone(),
        );
        r.register(
            "aop_client_errors",
            "Requests refused as the client's fault: a broken or stalled body (400, 408), CONNECT (405), a transfer coding other than chunked (501)",
            f.client_errors.clone(),
        );
        r.register(
            "aop_handshakes_incomplete",
            "Handshakes whose client certificate passed but which did not complete (counted under SUCCESS in aop_handshakes_total too)",
            f.incomplete.clone(),
        );
        r.register(
            "aop_handshakes_resumed",
            "Handshakes that resumed a TLS session (a ticket from this origin, or from another with the same session_ticket_keys), counted in aop_handshakes_total too with the verdict of the certificate's re-check",
            f.resumed.clone(),
        );
        r.register(
            "aop_connections_closed",
            "Connections closed for a limit, by site (empty before the handshake) and limit",
            f.closed.clone(),
        );
        r.register(
            "aop_tunnels_open",
            "WebSocket tunnels open now, by site",
            f.tunnels_open.clone(),
        );
        r.register(
            "aop_tunnels",
            "WebSocket tunnels opened (the upstream switched protocols), by site",
            f.tunnels.clone(),
        );
        r.register(
            "aop_tunnels_closed",
            "WebSocket tunnels ended, by site and reason: closed (by a side), tunnel_idle (tunnel_idle_timeout_secs), stopped (a shutdown's grace ended), error, evicted (with its connection, by the connection budget), revoked (a reload's re-check: the connection no longer passes its rule)",
            f.tunnels_closed.clone(),
        );
        r.register(
            "aop_config_reloads",
            "Configuration reloads, by result and source: signal (SIGHUP), file (a file in use changed, reload_on_change)",
            reloads.clone(),
        );
        r.register(
            "aop_handshake_duration_seconds",
            "TLS handshakes from the first byte of the ClientHello to the verdict, by result: accepted (the connection is served) or refused",
            handshake_seconds.clone(),
        );
        r.register(
            "aop_connections",
            "Client connections open now, by state: handshaking (accepted, TLS under way or not yet begun), active (past the handshake, serving HTTP); tunnel counts the WebSocket tunnels open (each inside an active connection)",
            connections.clone(),
        );
        r.register(
            "aop_restart_required",
            "1 for a setting the configuration file changes that a reload does not apply (the reload logged \"restart required for: …\"; restart to apply it), else 0",
            restart_required.clone(),
        );
        r.register(
            "aop_build_info",
            "The running aop-origin: 1, with its version",
            build,
        );
        Self {
            registry: r,
            families,
            sites: Mutex::default(),
            reloads,
            handshake_seconds,
            connections,
            restart_required,
            crls: Mutex::default(),
            ready: AtomicBool::new(false),
            stopped: tokio::sync::watch::channel(false).0,
        }
    }
}

/// `aop_connections`' states.
const CONNECTION_STATES: [&str; 3] = ["handshaking", "active", "tunnel"];

/// One site's counters, made once per site and then updated without a lookup.
#[derive(Debug)]
pub(crate) struct SiteMetrics {
    site: Site,
    families: Families,
    upstream_errors: Counter,
    /// Requests refused as the client's fault (400 for a broken body, 405, 408, 501).
    client_errors: Counter,
    /// Handshakes whose certificate passed but which did not complete.
    incomplete: Counter,
    /// Handshakes that resumed a session.
    resumed: Counter,
    misdirected: Counter,
    bad_requests: Counter,
    tunnels_open: Gauge,
    tunnels_opened: Counter,
    /// Every site's tunnels: `aop_connections{state="tunnel"}`.
    tunnels_all: Gauge,
    /// WebSocket tunnel bytes, by direction, counted as they pass.
    traffic: aop_http::tunnel::Traffic,
}

/// A tunnel counted open until dropped, then counted ended: for the reason given to
/// [`OpenTunnel::end`], or `evicted` (its task was aborted with its connection, which
/// the budget closed).
#[must_use]
pub(crate) struct OpenTunnel {
    site: Arc<SiteMetrics>,
    reason: &'static str,
}

impl OpenTunnel {
    /// The tunnel ended for `reason` (`closed`, `tunnel_idle`, `stopped`, `error`).
    pub(crate) fn end(mut self, reason: &'static str) {
        self.reason = reason;
    }
}

impl Drop for OpenTunnel {
    fn drop(&mut self) {
        let s = &self.site;
        s.tunnels_open.dec();
        s.tunnels_all.dec();
        s.families
            .tunnels_closed
            .get_or_create(&ReasonLabels {
                site: s.site.clone(),
                reason: self.reason,
            })
            .inc();
    }
}

impl SiteMetrics {
    pub(crate) fn handshake(&self, v: &Verdict) {
        let verdict = match v.outcome {
            aop_verify::Outcome::Success => "SUCCESS",
            aop_verify::Outcome::Failed(_) => "FAILED",
            aop_verify::Outcome::None(_) => "NONE",
        };
        let reason = v.outcome.reason_str();
        self.families
            .handshakes
            .get_or_create(&HandshakeLabels {
                site: self.site.clone(),
                verdict,
                reason,
            })
            .inc();
        if !v.completed && v.is_success() {
            self.incomplete.inc();
        }
        if v.resumed {
            self.resumed.inc();
        }
        // A limit like the others: the connection is closed for it.
        if matches!(
            v.outcome,
            aop_verify::Outcome::None(aop_verify::NoneCause::HandshakeTimeout)
        ) {
            self.closed("handshake_timeout");
        }
    }

    pub(crate) fn client_error(&self) {
        self.client_errors.inc();
    }

    /// A connection closed for `limit` (a budget's, `max_connections`, or a timeout:
    /// `handshake_timeout`, `header_read_timeout`, `keepalive_timeout`, `send_timeout`).
    pub(crate) fn closed(&self, limit: &'static str) {
        self.families
            .closed
            .get_or_create(&ClosedLabels {
                site: self.site.clone(),
                limit,
            })
            .inc();
    }

    /// A request answered with `status` (the guard's own refusals included).
    pub(crate) fn request(&self, status: u16) {
        self.families
            .requests
            .get_or_create(&RequestLabels {
                site: self.site.clone(),
                status,
            })
            .inc();
    }

    /// A request answered 421 by the Host check or a reload's re-check.
    pub(crate) fn misdirected(&self) {
        self.misdirected.inc();
    }

    /// A request answered 400 for its Host.
    pub(crate) fn bad_request(&self) {
        self.bad_requests.inc();
    }

    pub(crate) fn upstream_error(&self) {
        self.upstream_errors.inc();
    }

    /// A tunnel opened: counted, and open until the value is dropped.
    pub(crate) fn tunnel_opened(self: &Arc<Self>) -> OpenTunnel {
        self.tunnels_opened.inc();
        self.tunnels_open.inc();
        self.tunnels_all.inc();
        OpenTunnel {
            site: self.clone(),
            reason: "evicted",
        }
    }

    /// The site's tunnel bytes, by direction, counted as they pass.
    pub(crate) fn tunnel_traffic(&self) -> &aop_http::tunnel::Traffic {
        &self.traffic
    }
}

/// A client connection counted in `aop_connections` under its state until dropped.
#[must_use]
pub(crate) struct ConnectionState {
    connections: Family<StateLabel, Gauge>,
    state: &'static str,
}

impl ConnectionState {
    /// The handshake is over and the connection is served.
    pub(crate) fn active(&mut self) {
        self.set("active");
    }

    fn set(&mut self, state: &'static str) {
        self.connections
            .get_or_create(&StateLabel { state: self.state })
            .dec();
        self.connections.get_or_create(&StateLabel { state }).inc();
        self.state = state;
    }
}

impl Drop for ConnectionState {
    fn drop(&mut self) {
        self.connections
            .get_or_create(&StateLabel { state: self.state })
            .dec();
    }
}

impl Metrics {
    /// The counters of `site` (created on first use, every per-site series at 0).
    pub(crate) fn site(&self, site: &str) -> Arc<SiteMetrics> {
        let mut m = self
            .sites
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(s) = m.get(site) {
            return s.clone();
        }
        let name: Site = Arc::from(site);
        let f = &self.families;
        let label = SiteLabel { site: name.clone() };
        let made = Arc::new(SiteMetrics {
            upstream_errors: f.upstream_errors.get_or_create(&label).clone(),
            client_errors: f.client_errors.get_or_create(&label).clone(),
            incomplete: f.incomplete.get_or_create(&label).clone(),
            resumed: f.resumed.get_or_create(&label).clone(),
            misdirected: f.misdirected.get_or_create(&label).clone(),
            bad_requests: f.bad_requests.get_or_create(&label).clone(),
            tunnels_open: f.tunnels_open.get_or_create(&label).clone(),
            tunnels_opened: f
                .tunnels
                .get_or_create(&TunnelLabels {
                    site: name.clone(),
                    protocol: "websocket",
                })
                .clone(),
            tunnels_all: self
                .connections
                .get_or_create(&StateLabel { state: "tunnel" })
                .clone(),
            traffic: aop_http::tunnel::Traffic::default(),
            families: f.clone(),
            site: name,
        });
        m.insert(site.to_owned(), made.clone());
        made
    }

    /// `aop_restart_required`: each setting only a restart applies, and whether the
    /// file now changes it.
    pub(crate) fn restart_required(&self, settings: &[(&'static str, bool)]) {
        for &(setting, changed) in settings {
            self.restart_required
                .get_or_create(&SettingLabel { setting })
                .set(i64::from(changed));
        }
    }

    /// A reload, by `source` (`signal` or `file`).
    pub(crate) fn reload(&self, ok: bool, source: &'static str) {
        let result = if ok { "success" } else { "failure" };
        self.reloads
            .get_or_create(&ReloadLabels { result, source })
            .inc();
    }

    /// A connection accepted: `handshaking` until [`ConnectionState::active`].
    pub(crate) fn connection(&self) -> ConnectionState {
        self.connections
            .get_or_create(&StateLabel {
                state: "handshaking",
            })
            .inc();
        ConnectionState {
            connections: self.connections.clone(),
            state: "handshaking",
        }
    }

    /// A handshake that took `took` ended: `accepted` (the connection is served) or not.
    pub(crate) fn handshake_took(&self, took: Duration, accepted: bool) {
        let result = if accepted { "accepted" } else { "refused" };
        self.handshake_seconds
            .get_or_create(&ResultLabel { result })
            .observe(took.as_secs_f64());
    }

    /// Set what `/readyz` answers: ready once the listeners are bound (the policy is
    /// loaded before), not ready once draining.
    pub(crate) fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// Whether `/readyz` answers 200.
    pub(crate) fn ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// The guard has stopped (or is dropped): the metrics listener closes. It serves
    /// until then, a drain included, so a scraper sees `/readyz` say 503 while draining.
    pub(crate) fn stop(&self) {
        self.stopped.send_replace(true);
    }

    /// Completes once [`Metrics::stop`] is called.
    pub(crate) fn stopped(&self) -> impl Future<Output = ()> + use<> {
        let mut stopped = self.stopped.subscribe();
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        }
    }

    /// The (site, URL) pairs the configuration in force fetches: the others' series go.
    pub(crate) fn crl_sources(&self, keep: &[(String, String)]) {
        let mut crls = self
            .crls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        crls.retain(|k, _| keep.contains(k));
        for k in keep {
            crls.entry(k.clone()).or_default();
        }
    }

    /// The CRLs held for (site, URL) now, and its last good fetch.
    pub(crate) fn crl_state(
        &self,
        site: &str,
        url: &str,
        held: Vec<(String, OffsetDateTime, Option<OffsetDateTime>)>,
        last_success: Option<OffsetDateTime>,
    ) {
        let mut crls = self
            .crls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let series = crls.entry((site.to_owned(), url.to_owned())).or_default();
        series.held = held;
        series.last_success = last_success;
    }

    /// A fetch of (site, URL) failed, or what it fetched was refused, for `cause`.
    pub(crate) fn crl_failed(&self, site: &str, url: &str, cause: &'static str) {
        let mut crls = self
            .crls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let series = crls.entry((site.to_owned(), url.to_owned())).or_default();
        *series.failures.entry(cause).or_default() += 1;
    }

    /// The CRL fetchers' series, at a scrape.
    fn crl_series(&self, r: &mut Registry, now: OffsetDateTime) {
        let this_update = Family::<CrlIssuerLabels, Gauge>::default();
        let next_update = Family::<CrlIssuerLabels, Gauge>::default();
        let age = Family::<CrlIssuerLabels, Gauge>::default();
        let last_success = Family::<CrlLabels, Gauge>::default();
        let failures = Family::<CrlFailureLabels, Counter>::default();
        let crls = self
            .crls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for ((site, url), series) in crls.iter() {
            let (site, url) = (bounded(site), bounded(url));
            for (issuer, this, next) in &series.held {
                let labels = CrlIssuerLabels {
                    site: site.clone(),
                    url: url.clone(),
                    issuer: bounded(issuer),
                };
                this_update
                    .get_or_create(&labels)
                    .set(this.unix_timestamp());
                age.get_or_create(&labels)
                    .set((now - *this).whole_seconds());
                if let Some(next) = next {
                    next_update
                        .get_or_create(&labels)
                        .set(next.unix_timestamp());
                }
            }
            if let Some(t) = series.last_success {
                last_success
                    .get_or_create(&CrlLabels {
                        site: site.clone(),
                        url: url.clone(),
                    })
                    .set(t.unix_timestamp());
            }
            for cause in CRL_FAILURE_CAUSES {
                failures
                    .get_or_create(&CrlFailureLabels {
                        site: site.clone(),
                        url: url.clone(),
                        cause,
                    })
                    .inc_by(series.failures.get(cause).copied().unwrap_or(0));
            }
        }
        r.register(
            "aop_crl_this_update_timestamp_seconds",
            "Each CRL fetched from a site's crl_url and in force: its thisUpdate (Unix time), by site, url and issuer",
            this_update,
        );
        r.register(
            "aop_crl_next_update_timestamp_seconds",
            "Each CRL fetched and in force: its nextUpdate (Unix time), by site, url and issuer; past it, crl_stale decides",
            next_update,
        );
        r.register(
            "aop_crl_age_seconds",
            "Each CRL fetched and in force: seconds since its thisUpdate, by site, url and issuer",
            age,
        );
        r.register(
            "aop_crl_last_success_timestamp_seconds",
            "When a fetch of a site's crl_url last succeeded (a CRL taken, or the same one again), by site and url",
            last_success,
        );
        r.register(
            "aop_crl_fetch_failures",
            "Fetches of a site's crl_url that failed or were refused (the CRLs held stay), by site, url and cause: connect, timeout, http, status, redirect, too_large, malformed, unknown_issuer, bad_signature, scoped, future, replay, apply",
            failures,
        );
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub(crate) fn render(&self, policy: &Policy, now: OffsetDateTime) -> String {
        let mut out = String::new();
        let scrape = self.at_scrape(policy, now);
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &scrape);
        out
    }

    /// What is read at each scrape: certificate expiry under `policy`, tunnel bytes, the
    /// process's own figures.
    fn at_scrape(&self, policy: &Policy, now: OffsetDateTime) -> Registry {
        let mut r = Registry::default();
        let bytes = Family::<DirectionLabels, Counter>::default();
        for m in self
            .sites
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
        {
            for (direction, n) in [
                ("to_upstream", m.traffic.to_upstream()),
                ("to_client", m.traffic.to_client()),
            ] {
                bytes
                    .get_or_create(&DirectionLabels {
                        site: m.site.clone(),
                        direction,
                    })
                    .inc_by(n);
            }
        }
        r.register(
            "aop_tunnel_bytes",
            "Bytes carried by WebSocket tunnels, by site and direction (to_upstream, to_client), counted as they pass",
            bytes,
        );
        let expiry = Family::<CertificateLabels, Gauge>::default();
        let set = |site: &Arc<str>,
                   role,
                   sha: aop_pki::Sha256Fingerprint,
                   subject: &str,
                   t: OffsetDateTime| {
            expiry
                .get_or_create(&CertificateLabels {
                    site: site.clone(),
                    role,
                    sha256: sha.to_string().chars().take(16).collect(),
                    subject: bounded(subject),
                })
                .set(t.unix_timestamp());
        };
        for rule in policy.rules() {
            let site = rule.name();
            let served = rule.server_certificate();
            set(
                site,
                "served",
                served.sha256,
                &served.subject,
                served.not_after,
            );
            for (subject, sha, t) in rule.trust().anchor_expiries() {
                set(site, "anchor", sha, subject, t);
            }
            for (issuer, sha, t) in rule.trust().crl_expiries() {
                if let Some(t) = t {
                    set(site, "crl", sha, issuer, t);
                }
            }
        }
        r.register(
            "aop_certificate_expiry_timestamp_seconds",
            "When each loaded certificate stops being valid (Unix time): the site's own (role served), each trust anchor (anchor), each CRL's nextUpdate (crl); by site, role, the first 16 hex digits of its SHA-256 and its subject (a CRL's issuer)",
            expiry,
        );
        // As Envoy's days_until_first_cert_expiring: the origin's own certificates and
        // every trust anchor loaded.
        let first = policy
            .rules()
            .flat_map(|r| {
                [
                    Some(r.server_certificate().not_after),
                    r.trust().earliest_anchor_expiry(),
                ]
            })
            .flatten()
            .min();
        if let Some(t) = first {
            let days = Gauge::<i64>::default();
            days.set((t - now).whole_days());
            r.register(
                "aop_days_until_first_cert_expiring",
                "Days until the first loaded certificate or trust anchor expires",
                days,
            );
        }
        self.crl_series(&mut r, now);
        let loaded = Gauge::<i64>::default();
        loaded.set(policy.loaded_at().unix_timestamp());
        r.register(
            "aop_policy_loaded_timestamp_seconds",
            "When the policy in force was loaded",
            loaded,
        );
        #[cfg(target_os = "linux")]
        process::register(&mut r);
        r
    }
}

/// A certificate subject as a label value: cut to [`aop_http::LABEL_MAX`] bytes (on a
/// character boundary, then `…`), so a certificate cannot make every scrape carry
/// kilobytes of its name. aop-edge-proxy bounds its identities' subjects the same way.
fn bounded(subject: &str) -> String {
    aop_http::bounded_label(subject)
}

/// The process's own figures, under the names every Prometheus client library uses,
/// read from /proc/self at each scrape.
#[cfg(target_os = "linux")]
mod process {
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::gauge::Gauge;
    use prometheus_client::registry::Registry;

    /// /proc's times are in USER_HZ, 100 on every architecture Linux runs aop on.
    const USER_HZ: f64 = 100.0;

    pub(super) fn register(r: &mut Registry) {
        if let Some((cpu, start)) = stat() {
            let c = Counter::<f64, std::sync::atomic::AtomicU64>::default();
            c.inc_by(cpu);
            r.register(
                "process_cpu_seconds",
                "User and system CPU time spent, in seconds",
                c,
            );
            let g = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
            g.set(start);
            r.register(
                "process_start_time_seconds",
                "When the process started (Unix time), in seconds",
                g,
            );
        }
        let mut int = |name: &str, help: &str, v: Option<u64>| {
            if let Some(v) = v {
                let g = Gauge::<i64>::default();
                g.set(i64::try_from(v).unwrap_or(i64::MAX));
                r.register(name, help, g);
            }
        };
        int(
            "process_resident_memory_bytes",
            "Resident memory, in bytes",
            resident(),
        );
        int(
            "process_open_fds",
            "Open file descriptors",
            std::fs::read_dir("/proc/self/fd")
                .ok()
                .map(|d| d.count() as u64),
        );
        int(
            "process_max_fds",
            "The open-files limit (soft)",
            rustix::process::getrlimit(rustix::process::Resource::Nofile).current,
        );
    }

    /// (CPU seconds, start time) from /proc/self/stat and /proc/stat's boot time.
    fn stat() -> Option<(f64, f64)> {
        let text = std::fs::read_to_string("/proc/self/stat").ok()?;
        // The command name is in parentheses and may hold anything: split after it.
        let fields: Vec<&str> = text[text.rfind(')')? + 2..].split_whitespace().collect();
        // utime, stime and starttime are fields 14, 15 and 22: indexes 11, 12, 19 here.
        let n = |i: usize| fields.get(i)?.parse::<f64>().ok();
        let cpu = (n(11)? + n(12)?) / USER_HZ;
        let boot: f64 = std::fs::read_to_string("/proc/stat")
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("btime "))?
            .trim()
            .parse()
            .ok()?;
        Some((cpu, boot + n(19)? / USER_HZ))
    }

    /// VmRSS from /proc/self/status (kB there).
    fn resident() -> Option<u64> {
        let text = std::fs::read_to_string("/proc/self/status").ok()?;
        let kb: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        Some(kb * 1024)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_bounded_on_a_character_boundary() {
        assert_eq!(bounded("CN=a"), "CN=a");
        let long = "é".repeat(100);
        let b = bounded(&long);
        assert!(b.len() <= aop_http::LABEL_MAX + '…'.len_utf8(), "{b}");
        assert!(b.ends_with('…'));
    }

    #[test]
    fn a_hostile_label_value_stays_one_escaped_series() {
        let m = Metrics::default();
        let site = m.site("a\"b\\c\nd} evil 1");
        site.request(200);
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &m.registry).unwrap();
        assert!(
            out.contains("aop_requests_total{site=\"a\\\"b\\\\c\\nd} evil 1\",status=\"200\"} 1\n"),
            "{out}"
        );
        assert!(out.lines().all(|l| !l.starts_with(" evil")), "{out}");
    }
}
