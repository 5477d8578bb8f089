//! Counters and the Prometheus text exposition on `metrics_listen` (`/metrics`,
//! `/healthz`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use aop_verify::{Policy, Verdict};
use time::OffsetDateTime;

/// Everything counted. Small maps behind mutexes: touched once per handshake and once
/// per request, never held across an await.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    sites: Mutex<BTreeMap<String, Arc<SiteMetrics>>>,
    reloads: Mutex<BTreeMap<&'static str, u64>>,
}

/// One site's request counters, looked up once per connection and then updated without
/// allocating.
#[derive(Debug, Default)]
pub(crate) struct SiteMetrics {
    /// By (verdict, reason): both static words, so counting allocates nothing.
    handshakes: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    requests: Mutex<BTreeMap<u16, u64>>,
    upstream_errors: AtomicU64,
    /// Requests refused as the client's fault (400 for a broken body, 405, 408, 501).
    client_errors: AtomicU64,
    /// Handshakes whose certificate passed but which did not complete.
    incomplete: AtomicU64,
    /// Connections closed for a limit, by the limit's name.
    closed: Mutex<BTreeMap<&'static str, u64>>,
    /// 421s, 400s and timeouts, reported by aop-verify's hyper glue.
    pub(crate) conn: Arc<ConnCounters>,
    /// WebSocket tunnels.
    tunnels: TunnelCounters,
}

/// A site's WebSocket tunnels.
#[derive(Debug, Default)]
struct TunnelCounters {
    open: AtomicU64,
    opened: AtomicU64,
    /// By how they ended (`aop_http::tunnel::TunnelEnd::as_str`).
    ended: Mutex<BTreeMap<&'static str, u64>>,
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
        self.site.tunnels.open.fetch_sub(1, Ordering::Relaxed);
        bump(&self.site.tunnels.ended, self.reason);
    }
}

/// What aop-verify's hyper glue refused or closed on a site's connections.
#[derive(Debug, Default)]
pub(crate) struct ConnCounters {
    misdirected: AtomicU64,
    bad_request: AtomicU64,
    header_timeout: AtomicU64,
    keepalive_timeout: AtomicU64,
    send_timeout: AtomicU64,
}

impl aop_verify::hyper::Observer for ConnCounters {
    fn misdirected(&self) {
        self.misdirected.fetch_add(1, Ordering::Relaxed);
    }
    fn bad_request(&self) {
        self.bad_request.fetch_add(1, Ordering::Relaxed);
    }
    fn header_timeout(&self) {
        self.header_timeout.fetch_add(1, Ordering::Relaxed);
    }
    fn keepalive_timeout(&self) {
        self.keepalive_timeout.fetch_add(1, Ordering::Relaxed);
    }
    fn send_timeout(&self) {
        self.send_timeout.fetch_add(1, Ordering::Relaxed);
    }
}

impl SiteMetrics {
    pub(crate) fn handshake(&self, v: &Verdict) {
        let verdict = match v.outcome {
            aop_verify::Outcome::Success => "SUCCESS",
            aop_verify::Outcome::Failed(_) => "FAILED",
            aop_verify::Outcome::None(_) => "NONE",
        };
        bump(&self.handshakes, (verdict, v.outcome.reason_str()));
        if !v.completed && v.is_success() {
            self.incomplete.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn client_error(&self) {
        self.client_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn closed(&self, limit: &'static str) {
        bump(&self.closed, limit);
    }

    pub(crate) fn request(&self, status: u16) {
        bump(&self.requests, status);
    }

    pub(crate) fn upstream_error(&self) {
        self.upstream_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// A tunnel opened: counted, and open until the value is dropped.
    pub(crate) fn tunnel_opened(self: &Arc<Self>) -> OpenTunnel {
        self.tunnels.opened.fetch_add(1, Ordering::Relaxed);
        self.tunnels.open.fetch_add(1, Ordering::Relaxed);
        OpenTunnel {
            site: self.clone(),
            reason: "evicted",
        }
    }

    /// The site's tunnel bytes, by direction, counted as they pass.
    pub(crate) fn tunnel_traffic(&self) -> &aop_http::tunnel::Traffic {
        &self.tunnels.traffic
    }
}

fn bump<K: Ord>(m: &Mutex<BTreeMap<K, u64>>, k: K) {
    *m.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .entry(k)
        .or_default() += 1;
}

impl Metrics {
    /// The counters of `site` (created on first use).
    pub(crate) fn site(&self, site: &str) -> Arc<SiteMetrics> {
        let mut m = self
            .sites
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(s) = m.get(site) {
            return s.clone();
        }
        m.entry(site.to_owned()).or_default().clone()
    }

    pub(crate) fn reload(&self, ok: bool) {
        bump(&self.reloads, if ok { "success" } else { "failure" });
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub(crate) fn render(&self, policy: &Policy, now: OffsetDateTime) -> String {
        let mut out = String::new();
        let sites = self
            .sites
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        out.push_str("# HELP aop_handshakes_total TLS handshakes, by site, verdict and reason.\n");
        out.push_str("# TYPE aop_handshakes_total counter\n");
        for (site, m) in &sites {
            let handshakes = m
                .handshakes
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for ((verdict, reason), n) in handshakes.iter() {
                let _ = writeln!(
                    out,
                    "aop_handshakes_total{{site=\"{}\",verdict=\"{verdict}\",reason=\"{reason}\"}} {n}",
                    esc(site)
                );
            }
        }
        out.push_str("# HELP aop_requests_total HTTP requests answered, by site and status.\n");
        out.push_str("# TYPE aop_requests_total counter\n");
        for (site, m) in &sites {
            let requests = m
                .requests
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for (status, n) in requests.iter() {
                let _ = writeln!(
                    out,
                    "aop_requests_total{{site=\"{}\",status=\"{status}\"}} {n}",
                    esc(site)
                );
            }
        }
        out.push_str(
            "# HELP aop_upstream_errors_total Requests the upstream could not answer (502).\n",
        );
        out.push_str("# TYPE aop_upstream_errors_total counter\n");
        for (site, m) in &sites {
            let n = m.upstream_errors.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "aop_upstream_errors_total{{site=\"{}\"}} {n}",
                esc(site)
            );
        }
        out.push_str(
            "# HELP aop_misdirected_requests_total Requests whose Host belongs to another site than the SNI (421).\n",
        );
        out.push_str("# TYPE aop_misdirected_requests_total counter\n");
        for (site, m) in &sites {
            let n = m.conn.misdirected.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "aop_misdirected_requests_total{{site=\"{}\"}} {n}",
                esc(site)
            );
        }
        counter(
            &mut out,
            "aop_bad_requests_total",
            "Requests refused for their Host: none, several, or one that does not parse (400).",
            &sites,
            |m| m.conn.bad_request.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "aop_client_errors_total",
            "Requests refused as the client's fault: a broken or stalled body (400, 408), CONNECT (405), a transfer coding other than chunked (501).",
            &sites,
            |m| m.client_errors.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "aop_handshakes_incomplete_total",
            "Handshakes whose client certificate passed but which did not complete (counted under SUCCESS in aop_handshakes_total too).",
            &sites,
            |m| m.incomplete.load(Ordering::Relaxed),
        );
        out.push_str("# HELP aop_connections_closed_total Connections closed for a limit, by site (empty before the handshake) and limit.\n");
        out.push_str("# TYPE aop_connections_closed_total counter\n");
        for (site, m) in &sites {
            let mut closed = m
                .closed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            for (limit, c) in [
                ("header_read_timeout", &m.conn.header_timeout),
                ("keepalive_timeout", &m.conn.keepalive_timeout),
                ("send_timeout", &m.conn.send_timeout),
            ] {
                let n = c.load(Ordering::Relaxed);
                if n > 0 {
                    *closed.entry(limit).or_default() += n;
                }
            }
            for (limit, n) in closed {
                let _ = writeln!(
                    out,
                    "aop_connections_closed_total{{site=\"{}\",limit=\"{limit}\"}} {n}",
                    esc(site)
                );
            }
        }
        render_tunnels(&mut out, &sites);
        out.push_str(
            "# HELP aop_config_reloads_total Configuration reloads (SIGHUP), by result.\n",
        );
        out.push_str("# TYPE aop_config_reloads_total counter\n");
        for (result, n) in self
            .reloads
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
        {
            let _ = writeln!(out, "aop_config_reloads_total{{result=\"{result}\"}} {n}");
        }
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
        out.push_str("# HELP aop_days_until_first_cert_expiring Days until the first loaded certificate or trust anchor expires.\n");
        out.push_str("# TYPE aop_days_until_first_cert_expiring gauge\n");
        if let Some(t) = first {
            let _ = writeln!(
                out,
                "aop_days_until_first_cert_expiring {}",
                (t - now).whole_days()
            );
        }
        out.push_str(
            "# HELP aop_policy_loaded_timestamp_seconds When the policy in force was loaded.\n",
        );
        out.push_str("# TYPE aop_policy_loaded_timestamp_seconds gauge\n");
        let _ = writeln!(
            out,
            "aop_policy_loaded_timestamp_seconds {}",
            policy.loaded_at().unix_timestamp()
        );
        out
    }
}

/// The WebSocket tunnel families.
fn render_tunnels(out: &mut String, sites: &BTreeMap<String, Arc<SiteMetrics>>) {
    out.push_str("# HELP aop_tunnels_open WebSocket tunnels open now, by site.\n");
    out.push_str("# TYPE aop_tunnels_open gauge\n");
    for (site, m) in sites {
        let n = m.tunnels.open.load(Ordering::Relaxed);
        let _ = writeln!(out, "aop_tunnels_open{{site=\"{}\"}} {n}", esc(site));
    }
    out.push_str("# HELP aop_tunnels_total WebSocket tunnels opened (the upstream switched protocols), by site.\n");
    out.push_str("# TYPE aop_tunnels_total counter\n");
    for (site, m) in sites {
        let n = m.tunnels.opened.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "aop_tunnels_total{{site=\"{}\",protocol=\"websocket\"}} {n}",
            esc(site)
        );
    }
    out.push_str("# HELP aop_tunnels_closed_total WebSocket tunnels ended, by site and reason: closed (by a side), tunnel_idle (tunnel_idle_timeout_secs), stopped (a shutdown's grace ended), error, evicted (with its connection, by the connection budget), revoked (a reload's re-check: the connection no longer passes its rule).\n");
    out.push_str("# TYPE aop_tunnels_closed_total counter\n");
    for (site, m) in sites {
        let ended = m
            .tunnels
            .ended
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (reason, n) in ended.iter() {
            let _ = writeln!(
                out,
                "aop_tunnels_closed_total{{site=\"{}\",reason=\"{reason}\"}} {n}",
                esc(site)
            );
        }
    }
    out.push_str("# HELP aop_tunnel_bytes_total Bytes carried by WebSocket tunnels, by site and direction (to_upstream, to_client), counted as they pass.\n");
    out.push_str("# TYPE aop_tunnel_bytes_total counter\n");
    for (site, m) in sites {
        let t = &m.tunnels.traffic;
        for (direction, n) in [
            ("to_upstream", t.to_upstream()),
            ("to_client", t.to_client()),
        ] {
            let _ = writeln!(
                out,
                "aop_tunnel_bytes_total{{site=\"{}\",direction=\"{direction}\"}} {n}",
                esc(site)
            );
        }
    }
}

/// One per-site counter family.
fn counter(
    out: &mut String,
    name: &str,
    help: &str,
    sites: &BTreeMap<String, Arc<SiteMetrics>>,
    value: impl Fn(&SiteMetrics) -> u64,
) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} counter");
    for (site, m) in sites {
        let _ = writeln!(out, "{name}{{site=\"{}\"}} {}", esc(site), value(m));
    }
}

/// Escape a Prometheus label value.
fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
