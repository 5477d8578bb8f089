//! The edge's metrics (`--metrics-listen`): reloads by result, requests by status, and
//! each identity's time to expiry, on prometheus-client; served as `/metrics` (OpenMetrics
//! text) beside `/healthz`.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aop_edge::IdentityStore;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// `result="ok"|"error"`, `source="signal"|"file"`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    result: &'static str,
    source: &'static str,
}

/// `status="200"`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: u16,
}

/// One identity the edge presents, as its series and the reload line name it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct IdentityLabels {
    /// `shared`, `per-zone` or `per-hostname`.
    pub(crate) flavour: String,
    /// The zone or hostname (`*` for the shared one).
    pub(crate) name: String,
    /// The certificate's SHA-256, hex.
    pub(crate) sha256: String,
    /// Its subject, at most [`aop_http::LABEL_MAX`] bytes (then `…`).
    pub(crate) subject: String,
}

/// The edge's metrics, registered once.
pub(crate) struct Metrics {
    registry: Registry,
    reloads: Family<ReloadLabels, Counter>,
    requests: Family<StatusLabels, Counter>,
    expiry: Family<IdentityLabels, Gauge>,
    /// The identities in force and when each expires (Unix seconds); the expiry gauge is
    /// computed from it at each scrape. Held while a scrape renders, so two scrapes never
    /// see each other's half-filled gauge.
    identities: Mutex<Vec<(IdentityLabels, i64)>>,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::default();
        let reloads = Family::<ReloadLabels, Counter>::default();
        let requests = Family::<StatusLabels, Counter>::default();
        let expiry = Family::<IdentityLabels, Gauge>::default();
        registry.register(
            "aop_edge_reloads",
            "Identity reloads, by result (error keeps the running identities) and source: signal (SIGHUP), file (a file in use changed)",
            reloads.clone(),
        );
        registry.register(
            "aop_edge_requests",
            "Visitor requests answered, by status (the origin's, or the edge's own 4xx/5xx)",
            requests.clone(),
        );
        registry.register(
            "aop_edge_identity_expiry_seconds",
            "Seconds until each client certificate the edge presents expires (negative once expired)",
            expiry.clone(),
        );
        // Present from the start at 0, so an alert on `increase(…{result="error"}[…])` has a
        // series before the first reload.
        for result in ["ok", "error"] {
            for source in ["signal", "file"] {
                let _ = reloads.get_or_create(&ReloadLabels { result, source });
            }
        }
        Self {
            registry,
            reloads,
            requests,
            expiry,
            identities: Mutex::default(),
        }
    }

    /// Count a reload, by `source` (`signal` or `file`).
    pub(crate) fn reloaded(&self, ok: bool, source: &'static str) {
        let result = if ok { "ok" } else { "error" };
        self.reloads
            .get_or_create(&ReloadLabels { result, source })
            .inc();
    }

    /// Count an answered request.
    pub(crate) fn answered(&self, status: StatusCode) {
        self.requests
            .get_or_create(&StatusLabels {
                status: status.as_u16(),
            })
            .inc();
    }

    /// Make `store`'s identities the ones reported; returns those reported before.
    pub(crate) fn set_identities(&self, store: &IdentityStore) -> Vec<IdentityLabels> {
        let mut rows: Vec<(IdentityLabels, i64)> = store
            .identities()
            .map(|i| {
                let cert = i.certificate();
                let labels = IdentityLabels {
                    flavour: i.flavour().to_string(),
                    name: i.label().to_owned(),
                    sha256: cert.sha256.to_string(),
                    // Bounded as aop-origin bounds its certificates' subjects.
                    subject: aop_http::bounded_label(&cert.subject),
                };
                (labels, cert.not_after.unix_timestamp())
            })
            .collect();
        rows.sort_by(|a, b| (&a.0.flavour, &a.0.name).cmp(&(&b.0.flavour, &b.0.name)));
        let old = std::mem::replace(&mut *self.lock(), rows);
        old.into_iter().map(|(labels, _)| labels).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(IdentityLabels, i64)>> {
        self.identities
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The OpenMetrics text, the expiry gauge computed for `now` (Unix seconds).
    fn render(&self, now: i64) -> String {
        let identities = self.lock();
        // Identities a reload retired leave the gauge with them.
        self.expiry.clear();
        for (labels, not_after) in identities.iter() {
            self.expiry.get_or_create(labels).set(not_after - now);
        }
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// At most this many scrapers at once; more are closed unanswered.
const CONNECTIONS: usize = 8;

/// How long a scraper's connection may last, its one request and answer included.
const DEADLINE: Duration = Duration::from_secs(15);

/// Serve `/metrics` and `/healthz` on `listener` for as long as the process runs.
pub(crate) async fn serve(listener: tokio::net::TcpListener, metrics: Arc<Metrics>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(CONNECTIONS));
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = service_fn(move |req: Request<Incoming>| {
                let metrics = metrics.clone();
                async move { Ok::<_, Infallible>(answer(&metrics, req.uri().path())) }
            });
            // A scraper sends its request head within 10 s, or is closed; it gets one answer
            // a connection, all within DEADLINE: one that pipelines requests and never
            // reads the answers would block hyper's write (where no timer runs) and keep
            // its slot for as long as it stays open. (aop-origin's metrics listener does
            // the same; aop-http, which both share, has no hyper to hold it once.)
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .keep_alive(false)
                .serve_connection(TokioIo::new(tcp), service);
            let _ = tokio::time::timeout(DEADLINE, conn).await;
        });
    }
}

fn answer(metrics: &Metrics, path: &str) -> Response<Full<Bytes>> {
    let (status, body, kind) = match path {
        "/metrics" => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
            (
                StatusCode::OK,
                metrics.render(now),
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )
        }
        "/healthz" => (StatusCode::OK, "ok\n".to_owned(), "text/plain"),
        _ => (
            StatusCode::NOT_FOUND,
            "not found\n".to_owned(),
            "text/plain",
        ),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(kind));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reload_counter_is_there_from_the_start_and_counts_each_result() {
        let m = Metrics::new();
        let text = m.render(0);
        for result in ["ok", "error"] {
            for source in ["signal", "file"] {
                let series = format!(
                    "aop_edge_reloads_total{{result=\"{result}\",source=\"{source}\"}} 0\n"
                );
                assert!(text.contains(&series), "{series}: {text}");
            }
        }
        m.reloaded(false, "file");
        m.answered(StatusCode::BAD_GATEWAY);
        let text = m.render(0);
        assert!(
            text.contains("aop_edge_reloads_total{result=\"error\",source=\"file\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("aop_edge_reloads_total{result=\"error\",source=\"signal\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("aop_edge_requests_total{status=\"502\"} 1\n"),
            "{text}"
        );
    }
}
