//! The guard: accept with aop-verify, forward to the site's upstream with the verdict
//! attached, count, log, reload on SIGHUP, drain on SIGTERM.
//!
//! Every task a guard spawns (listeners, connections, the upstream client's connections)
//! goes through [`Shared::spawn`], which runs it under the guard's own log if it has one.

use std::borrow::Cow;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aop_verify::{Acceptor, Limits, PolicyHandle, Verdict};
use arc_swap::ArcSwap;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tracing::instrument::WithSubscriber as _;

use crate::Error;
use crate::budget::{Budget, Caps, Evicted, Slot, Start};
use crate::config::{Config, ConfigError, Upstream};
use crate::metrics::Metrics;
use crate::upstream::{Permits, SiteClient, Upstreams};
use crate::watch::FileWatch;

pub(crate) type Body = BoxBody<Bytes, hyper::Error>;

/// The headers the guard sets for the upstream. Any copy a client sent is removed first:
/// a client must never be able to claim a verdict.
pub(crate) const VERDICT_HEADERS: [&str; 7] = [
    "x-client-verify",
    "x-client-cert-fingerprint",
    "x-client-cert-subject",
    "x-client-cert-issuer",
    "x-client-cert-serial",
    "x-client-cert-not-after",
    "x-forwarded-client-cert",
];

/// Connections the metrics listener serves at once (more are closed at accept).
const METRICS_CONNECTIONS: usize = 16;

/// How long a metrics connection may last, its one request and answer included.
const METRICS_DEADLINE: Duration = Duration::from_secs(15);

/// Site name → upstream, as loaded with the policy.
#[derive(Debug)]
struct Sites(HashMap<String, SiteEntry>);

/// One site, resolved at load: its upstream authority, its upstream client and its
/// counters.
#[derive(Debug)]
struct SiteEntry {
    upstream: Option<hyper::http::uri::Authority>,
    client: SiteClient,
    metrics: Arc<crate::metrics::SiteMetrics>,
    /// `websocket`: WebSocket upgrades are tunnelled.
    websocket: bool,
}

impl Sites {
    fn new(upstreams: &[(String, Upstream)], metrics: &Metrics, clients: &Upstreams) -> Self {
        Self(
            upstreams
                .iter()
                .map(|(name, up)| {
                    let entry = SiteEntry {
                        upstream: up.authority.parse().ok(),
                        client: clients.for_site(up),
                        metrics: metrics.site(name),
                        websocket: up.websocket,
                    };
                    (name.clone(), entry)
                })
                .collect(),
        )
    }
}

/// Shared state of a running guard.
struct Shared {
    headers: HeaderCache,
    policy: PolicyHandle,
    /// The acceptor and the timeouts, as the last (re)load set them: a connection takes
    /// them at accept, a request at its start (see [`Tuning`]).
    tuning: ArcSwap<Tuning>,
    sites: ArcSwap<Sites>,
    /// The upstream clients, and the permits their connections hold.
    upstreams: Upstreams,
    metrics: Metrics,
    budget: Arc<Budget>,
    /// WebSocket tunnels: their idle timeout, and their stop when a drain's grace ends.
    tunnels: crate::websocket::Tunnels,
    /// Client connections open now (a tunnel's included); `idle` is told when the count
    /// falls to 0.
    active: AtomicUsize,
    idle: Notify,
    config_path: std::path::PathBuf,
    /// The configuration in force (the last that loaded), behind the lock every policy
    /// swap takes: a reload and a fetched CRL's rebuild never undo each other.
    applied: std::sync::Mutex<Arc<Config>>,
    /// The fetched CRLs (`crl_url`), and their fetcher's schedule.
    crls: Arc<crate::crl::Crls>,
    /// What a reload cannot change, as the guard started with it: a reload that finds
    /// it changed logs "restart required for: …" and sets `aop_restart_required`.
    fixed: Fixed,
    /// This guard's own log, if it was given one; else the process's.
    log: Option<tracing::Dispatch>,
}

/// What SIGHUP applies besides the policy: the limits and timeouts a new connection or
/// request takes when it starts (one that started keeps what it took).
struct Tuning {
    /// The handshake limits and the HTTP timeouts (`handshake_timeout_secs`,
    /// `max_handshakes`, `header_read_timeout_secs`, `keepalive_timeout_secs`,
    /// `send_timeout_secs`); a connection keeps the acceptor's limits it was accepted
    /// with.
    acceptor: Acceptor,
    /// `handshake_timeout_secs`.
    handshake_timeout: Duration,
    /// `upstream_timeout_secs`: how long the upstream may take to start answering once
    /// it has the whole request (then 504).
    upstream_timeout: Duration,
    /// `request_body_timeout_secs`.
    body_timeout: Duration,
    /// `grpc_body_timeout_secs`: the same, for a gRPC request's body.
    grpc_body_timeout: Duration,
    /// What made it, to tell a reload's changes.
    settings: Settings,
}

/// The settings a reload applies without a restart, as the file gave them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Settings {
    handshake_timeout_secs: u64,
    max_handshakes: usize,
    max_handshakes_per_peer: usize,
    max_unauthenticated_per_peer: usize,
    header_read_timeout_secs: u64,
    keepalive_timeout_secs: u64,
    request_body_timeout_secs: u64,
    send_timeout_secs: u64,
    upstream_timeout_secs: u64,
    grpc_body_timeout_secs: u64,
    tunnel_idle_timeout_secs: u64,
}

impl Settings {
    fn of(f: &crate::config::File) -> Self {
        Self {
            handshake_timeout_secs: f.handshake_timeout_secs,
            max_handshakes: f.max_handshakes,
            max_handshakes_per_peer: f.max_handshakes_per_peer,
            max_unauthenticated_per_peer: f.max_unauthenticated_per_peer,
            header_read_timeout_secs: f.header_read_timeout_secs,
            keepalive_timeout_secs: f.keepalive_timeout_secs,
            request_body_timeout_secs: f.request_body_timeout_secs,
            send_timeout_secs: f.send_timeout_secs,
            upstream_timeout_secs: f.upstream_timeout_secs,
            grpc_body_timeout_secs: f.grpc_body_timeout_secs,
            tunnel_idle_timeout_secs: f.tunnel_idle_timeout_secs,
        }
    }

    /// The names of the settings that differ from `old`, in the file's order.
    fn changed(&self, old: &Self) -> Vec<&'static str> {
        macro_rules! changed {
            ($($field:ident),*) => {
                [$((stringify!($field), self.$field != old.$field)),*]
            };
        }
        let pairs = changed!(
            handshake_timeout_secs,
            max_handshakes,
            max_handshakes_per_peer,
            max_unauthenticated_per_peer,
            header_read_timeout_secs,
            keepalive_timeout_secs,
            request_body_timeout_secs,
            send_timeout_secs,
            upstream_timeout_secs,
            grpc_body_timeout_secs,
            tunnel_idle_timeout_secs
        );
        pairs
            .into_iter()
            .filter(|(_, c)| *c)
            .map(|(n, _)| n)
            .collect()
    }

    /// Whether the acceptor's limits are the same as `old`'s.
    fn limits_eq(&self, old: &Self) -> bool {
        (
            self.handshake_timeout_secs,
            self.max_handshakes,
            self.header_read_timeout_secs,
            self.keepalive_timeout_secs,
            self.send_timeout_secs,
        ) == (
            old.handshake_timeout_secs,
            old.max_handshakes,
            old.header_read_timeout_secs,
            old.keepalive_timeout_secs,
            old.send_timeout_secs,
        )
    }

    /// The acceptor's limits.
    fn limits(&self) -> Limits {
        let secs = |s: u64| Duration::from_secs(s.max(1));
        let mut limits = Limits::default()
            .with_handshake_timeout(secs(self.handshake_timeout_secs))
            .with_max_handshakes(self.max_handshakes)
            .with_header_read_timeout(secs(self.header_read_timeout_secs))
            .with_keepalive_timeout(secs(self.keepalive_timeout_secs))
            .with_send_timeout(secs(self.send_timeout_secs))
            // The guard answers a plain CONNECT itself (405, counted as the client's
            // error, after the Host check).
            .with_plain_connect(true);
        // Extended CONNECT (RFC 8441) for WebSockets over HTTP/2, whatever the sites say
        // now: a reload may turn `websocket` on; a site with it off answers 501.
        limits.http2.connect_protocol = true;
        limits
    }

    /// The tuning these settings make, with `acceptor` if its limits are unchanged (so
    /// the handshakes in progress and the new ones share one `max_handshakes`).
    fn tuning(self, policy: &PolicyHandle, acceptor: Option<&Acceptor>) -> Tuning {
        let secs = |s: u64| Duration::from_secs(s.max(1));
        Tuning {
            acceptor: acceptor
                .cloned()
                .unwrap_or_else(|| Acceptor::new(policy.clone(), self.limits())),
            handshake_timeout: secs(self.handshake_timeout_secs),
            upstream_timeout: secs(self.upstream_timeout_secs),
            body_timeout: secs(self.request_body_timeout_secs),
            grpc_body_timeout: secs(self.grpc_body_timeout_secs),
            settings: self,
        }
    }

    /// The budget's caps, with `max_connections` (fixed at start).
    fn caps(&self, max_connections: usize) -> Caps {
        Caps {
            max_connections,
            max_handshakes: self.max_handshakes,
            per_peer_handshakes: self.max_handshakes_per_peer,
            per_peer_unauthenticated: self.max_unauthenticated_per_peer,
        }
    }
}

/// The settings a reload does not apply (a restart does): the listeners are bound, the
/// log is set up and the descriptor budget counted at start.
struct Fixed {
    listen: Vec<crate::config::Listen>,
    metrics_listen: Option<SocketAddr>,
    log_format: crate::LogFormat,
    max_connections: usize,
}

impl Fixed {
    /// The settings a restart applies, by name, in the file's order.
    const NAMES: [&'static str; 4] = ["listen", "metrics_listen", "log_format", "max_connections"];

    fn of(f: &crate::config::File) -> Self {
        Self {
            listen: f.listen.clone(),
            metrics_listen: f.metrics_listen,
            log_format: f.log_format,
            max_connections: f.max_connections,
        }
    }

    /// Each of [`Fixed::NAMES`], and whether `f` changes it (listen entries compared
    /// whole).
    fn changed(&self, f: &crate::config::File) -> [(&'static str, bool); 4] {
        let [listen, metrics_listen, log_format, max_connections] = Self::NAMES;
        [
            (listen, f.listen != self.listen),
            (metrics_listen, f.metrics_listen != self.metrics_listen),
            (log_format, f.log_format != self.log_format),
            (max_connections, f.max_connections != self.max_connections),
        ]
    }
}

impl Shared {
    /// The acceptor and timeouts in force now.
    fn tuning(&self) -> Arc<Tuning> {
        self.tuning.load_full()
    }

    /// Spawn `task` on the current runtime, under this guard's log.
    fn spawn<F>(&self, task: F) -> JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        spawn(self.log.as_ref(), task)
    }

    /// Run `f` with this guard's log as the current one (for what runs outside its tasks).
    fn logging<T>(&self, f: impl FnOnce() -> T) -> T {
        match &self.log {
            Some(log) => tracing::dispatcher::with_default(log, f),
            None => f(),
        }
    }

    /// Completes when no client connection is open.
    async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            let mut notified = std::pin::pin!(notified);
            // Registered before the count is read: a connection that ends in between wakes it.
            notified.as_mut().enable();
            if self.active.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl crate::crl::Host for Shared {
    fn policy(&self) -> Arc<aop_verify::Policy> {
        self.policy.current()
    }

    /// A reload's policy swap, with the configuration in force and the CRLs held now.
    /// Its files are read again: what else changed on disk since the policy in force
    /// was loaded (a site's certificate, its trust anchors) goes in force with it, and
    /// is returned for the caller to log.
    fn apply_crls(&self) -> Result<Vec<String>, String> {
        self.logging(|| {
            let applied = self
                .applied
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let (policy, _) = applied
                .load_checked_with(&self.crls.held())
                .map_err(|e| e.0.lines().next().unwrap_or_default().to_owned())?;
            let others = files_changed(&self.policy.current(), &policy);
            self.policy.replace(policy);
            Ok(others)
        })
    }

    fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn spawn_task(&self, task: Pin<Box<dyn Future<Output = ()> + Send>>) {
        self.spawn(task);
    }
}

/// What `new` loaded from files that differs from `old`, other than CRLs: each site's
/// certificate and trust anchors (`certificate (SITE)`, `trust (SITE)`).
fn files_changed(old: &aop_verify::Policy, new: &aop_verify::Policy) -> Vec<String> {
    let anchors = |r: &aop_verify::Rule| -> Vec<_> {
        r.trust()
            .anchor_expiries()
            .map(|(_, fingerprint, _)| fingerprint)
            .collect()
    };
    let mut changed = Vec::new();
    for rule in new.rules() {
        let Some(was) = old.rules().find(|o| o.name() == rule.name()) else {
            continue;
        };
        if was.server_certificate().sha256 != rule.server_certificate().sha256 {
            changed.push(format!("certificate ({})", rule.name()));
        }
        if anchors(was) != anchors(rule) {
            changed.push(format!("trust ({})", rule.name()));
        }
    }
    changed
}

/// Spawn `task` on the current runtime; under `log` as its current subscriber, if given.
fn spawn<F>(log: Option<&tracing::Dispatch>, task: F) -> JoinHandle<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    match log {
        Some(log) => tokio::spawn(task.with_subscriber(log.clone())),
        None => tokio::spawn(task),
    }
}

/// The executor of the upstream client's connection tasks: the guard's, so they log
/// where the guard does.
#[derive(Clone)]
pub(crate) struct Exec(Option<tracing::Dispatch>);

impl<F> hyper::rt::Executor<F> for Exec
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, task: F) {
        spawn(self.0.as_ref(), task);
    }
}

/// A running guard: its listeners are bound and served by tasks on the tokio runtime it
/// was started on. [`Guard::reload`] and [`Guard::shutdown`] are what SIGHUP and SIGTERM
/// do to the binary; dropping a guard stops its listeners without waiting.
pub struct Guard {
    listen: Vec<SocketAddr>,
    metrics: Option<SocketAddr>,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    /// The listeners' tasks: each ends, closing its listener, once told to shut down.
    listeners: Vec<JoinHandle<()>>,
    /// The metrics listener's task: it serves through a drain, and ends with the guard.
    metrics_task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("config", &self.shared.config_path)
            .field("listen", &self.listen)
            .field("metrics", &self.metrics)
            .finish_non_exhaustive()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        self.shared.metrics.stop();
    }
}

impl Guard {
    /// Load the policy (every file `config` names, each read once), bind the listeners
    /// (`listen`, and `metrics_listen` if given; port 0 picks a free port) and serve them
    /// on the current tokio runtime. Returns once every listener is bound. Logs through
    /// the process's `tracing` subscriber.
    ///
    /// Like the binary, it raises the process's soft open-files limit to the hard limit,
    /// and lowers `max_connections` to what fits in it (two descriptors a connection),
    /// with a warning.
    pub async fn start(config: Config) -> Result<Self, Error> {
        start(config, None).await
    }

    /// As [`Guard::start`], logging to `log` instead: every line of this guard (its
    /// verdicts, requests, reloads) goes there and nowhere else. See
    /// [`log_dispatch`](crate::log_dispatch).
    pub async fn start_with_log(config: Config, log: tracing::Dispatch) -> Result<Self, Error> {
        start(config, Some(log.clone())).with_subscriber(log).await
    }

    /// The first TLS listener's address (the port resolved, if the configuration said 0).
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen[0]
    }

    /// Every TLS listener's address, in the configuration's order.
    pub fn listen_addrs(&self) -> &[SocketAddr] {
        &self.listen
    }

    /// Where `/metrics`, `/healthz` and `/readyz` are served, if `metrics_listen` is
    /// configured.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics
    }

    /// Re-read and check the configuration file (as `--check` does) and swap in its
    /// policy and upstreams, and its timeouts and limits for the connections and requests
    /// that start from now on (SIGHUP's work). Connections keep going; each gets a new
    /// verdict under the new policy at its next request. `listen`, `metrics_listen`,
    /// `log_format` and `max_connections` change only on restart: a reload that finds
    /// them changed logs "restart required for: …" and sets `aop_restart_required`. On
    /// error the running configuration stays, and the errors (each naming the file, line
    /// and key) are logged and returned. Blocking: it reads files.
    pub fn reload(&self) -> Result<(), Error> {
        self.reload_from(SIGNAL)
    }

    /// [`Guard::reload`], counted and logged as `source` ([`SIGNAL`] or [`FILE`]).
    pub(crate) fn reload_from(&self, source: &'static str) -> Result<(), Error> {
        Ok(self.shared.logging(|| reload(&self.shared, source))?)
    }

    /// Stop accepting (once this returns, nothing listens on the guard's addresses), let
    /// the connections open now finish what they are doing (up to `grace`; a WebSocket
    /// tunnel until it ends), then close the tunnels still open and return (SIGTERM's
    /// work).
    pub async fn shutdown(mut self, grace: Duration) {
        self.shared
            .logging(|| tracing::info!(target: "aop::origin", "draining"));
        self.shared.metrics.set_ready(false);
        let _ = self.shutdown.send(true);
        for listener in std::mem::take(&mut self.listeners) {
            let _ = listener.await;
        }
        let drained = tokio::time::timeout(grace, self.shared.idle()).await;
        if drained.is_err() {
            // The grace is over: tunnels end now (HTTP connections end with the process).
            self.shared.tunnels.stop();
            let _ = tokio::time::timeout(Duration::from_secs(2), self.shared.idle()).await;
        }
        self.shared
            .logging(|| tracing::info!(target: "aop::origin", "stopped"));
        self.shared.metrics.stop();
        if let Some(task) = self.metrics_task.take() {
            let _ = task.await;
        }
    }

    /// Serve until SIGTERM or SIGINT, reloading on SIGHUP and, with `reload_on_change`
    /// (the default), when a file in use changes; then [`Guard::shutdown`] with 30 s of
    /// grace. What `aop-origin --config` does once started.
    pub async fn run_until_signalled(self) -> Result<(), Error> {
        let signals = Signals::install()?;
        let watch = Config::read_file(&self.shared.config_path)
            .ok()
            .filter(|c| c.file.reload_on_change)
            .and_then(|c| self.shared.logging(|| start_watch(c.files_in_use())));
        signals.serve(self, watch).await
    }
}

/// The signals the binary answers, installed (so no longer fatal to the process).
pub(crate) struct Signals {
    hup: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Signals {
    /// Install the SIGHUP and SIGTERM handlers (SIGINT is tokio's `ctrl_c`).
    pub(crate) fn install() -> Result<Self, Error> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            hup: signal(SignalKind::hangup())?,
            term: signal(SignalKind::terminate())?,
        })
    }

    /// Serve `guard` until SIGTERM or SIGINT; SIGHUP reloads, and so does a change of a
    /// file in use while `watch` is given (made before the guard loaded them:
    /// `reload_on_change`). The service manager is told each step (`crate::systemd`).
    pub(crate) async fn serve(
        mut self,
        guard: Guard,
        mut watch: Option<FileWatch>,
    ) -> Result<(), Error> {
        crate::systemd::ready(guard.listen_addrs());
        let path = guard.shared.config_path.clone();
        if let Some(w) = &watch {
            guard.shared.logging(|| watching(w));
        }
        // The files of the last configuration that parsed (a broken one names none).
        let mut files =
            Config::read_file(&path).map_or_else(|_| vec![path.clone()], |c| c.files_in_use());
        loop {
            let source = tokio::select! {
                _ = self.hup.recv() => SIGNAL,
                changed = async {
                    match watch.as_mut() {
                        Some(w) => w.changed(|| in_use(&path, &mut files)).await,
                        None => std::future::pending().await,
                    }
                } => {
                    let changed: Vec<String> = changed.iter().map(|p| p.display().to_string()).collect();
                    guard.shared.logging(|| tracing::info!(target: "aop::origin", files = changed.join(", ").as_str(),
                        "a file in use changed: reloading"));
                    FILE
                }
                _ = self.term.recv() => break,
                _ = tokio::signal::ctrl_c() => break,
            };
            crate::systemd::reloading();
            crate::systemd::reloaded(guard.reload_from(source).err().as_ref());
            // The configuration may name other files now, or turn watching on or off.
            let Ok(config) = Config::read_file(&path) else {
                continue;
            };
            files = config.files_in_use();
            match (&mut watch, config.file.reload_on_change) {
                (Some(w), true) => w.retarget(&files),
                (None, true) => {
                    watch = guard.shared.logging(|| start_watch(files.clone()));
                    if let Some(w) = &watch {
                        guard.shared.logging(|| watching(w));
                    }
                }
                (Some(_), false) => {
                    watch = None;
                    guard.shared.logging(|| {
                        tracing::info!(target: "aop::origin",
                        "reload_on_change = false: no longer watching; SIGHUP reloads");
                    });
                }
                (None, false) => {}
            }
        }
        crate::systemd::stopping();
        guard.shutdown(Duration::from_secs(30)).await;
        Ok(())
    }
}

/// `source="signal"`: a reload SIGHUP (or [`Guard::reload`]) asked for.
pub(crate) const SIGNAL: &str = "signal";

/// `source="file"`: a reload a change of a file in use started (`reload_on_change`).
pub(crate) const FILE: &str = "file";

/// The files `config` names now, kept in `last`; if it cannot be read, the ones it named
/// when it last could (with the file itself).
fn in_use(config: &std::path::Path, last: &mut Vec<std::path::PathBuf>) -> Vec<std::path::PathBuf> {
    if let Ok(c) = Config::read_file(config) {
        *last = c.files_in_use();
    }
    last.clone()
}

/// Watch `files`' directories for `reload_on_change`; `None` (logged) if no watch can
/// be set up: SIGHUP still reloads. Made before the guard loads the files, said
/// ([`watching`]) once it serves.
pub(crate) fn start_watch(files: Vec<std::path::PathBuf>) -> Option<FileWatch> {
    match FileWatch::new(files) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(target: "aop::origin", error = %e,
                "cannot watch the files in use (reload_on_change): only SIGHUP reloads");
            None
        }
    }
}

/// The line saying what is watched.
fn watching(w: &FileWatch) {
    let dirs: Vec<String> = w.dirs().map(|d| d.display().to_string()).collect();
    tracing::info!(target: "aop::origin", dirs = dirs.join(", ").as_str(),
        quiet_ms = crate::watch::QUIET.as_millis() as u64, "reloading on file change");
}

/// SIGHUP's work: re-read and check the file; if it passes, swap in its policy (sites,
/// certificates, trust, CRLs, upstreams) and the settings new connections and requests
/// take ([`Settings`]), and say which; the ones only a restart applies ([`Fixed`]) are
/// logged "restart required for: …" and set in `aop_restart_required`. An error keeps
/// everything running as it was.
fn reload(shared: &Shared, source: &'static str) -> Result<(), ConfigError> {
    let config = shared.config_path.display().to_string();
    let mut applied = shared
        .applied
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let result = Config::read_file(&shared.config_path).and_then(|loaded| {
        let (policy, warnings) = loaded.load_checked_with(&shared.crls.held())?;
        // A URL the file adds starts from its cache; one whose issuer left the trust
        // drops its CRLs: then the policy is built again with what is held.
        let policy = if shared.crls.configure(&loaded, &policy, &shared.metrics) {
            loaded.load_checked_with(&shared.crls.held())?.0
        } else {
            policy
        };
        for warning in &warnings {
            tracing::warn!(target: "aop::origin", config = config.as_str(), warning = warning.as_str(), "configuration check");
        }
        let settings = Settings::of(&loaded.file);
        let tuning = shared.tuning();
        let changed = settings.changed(&tuning.settings);
        if !changed.is_empty() {
            let old = tuning.settings;
            let keep = settings.limits_eq(&old).then_some(&tuning.acceptor);
            shared
                .tuning
                .store(Arc::new(settings.tuning(&shared.policy, keep)));
            shared
                .budget
                .set_caps(settings.caps(shared.budget.caps().max_connections));
        }
        shared.policy.replace(policy);
        shared.sites.store(Arc::new(Sites::new(
            &loaded.upstreams,
            &shared.metrics,
            &shared.upstreams,
        )));
        shared.tunnels.reloaded(Duration::from_secs(
            settings.tunnel_idle_timeout_secs.max(1),
        ));
        let restart = shared.fixed.changed(&loaded.file);
        shared.metrics.restart_required(&restart);
        let restart: Vec<&str> = restart.iter().filter(|(_, c)| *c).map(|(n, _)| *n).collect();
        *applied = Arc::new(loaded);
        Ok((changed, restart))
    });
    drop(applied);
    shared.metrics.reload(result.is_ok(), source);
    match result {
        Ok((changed, restart)) => {
            let applied = ["sites", "certificates", "trust", "crl", "upstreams"]
                .into_iter()
                .chain(changed)
                .collect::<Vec<_>>()
                .join(", ");
            let restart = restart.join(", ");
            if !restart.is_empty() {
                tracing::warn!(target: "aop::origin", config = config.as_str(), restart_required = restart.as_str(),
                    "restart required for: {restart} (the running values stay until then)");
            }
            tracing::info!(target: "aop::origin", config = config.as_str(), source, applied = applied.as_str(),
                restart_required = restart.as_str(), "configuration reloaded");
            Ok(())
        }
        Err(e) => {
            // One line a problem.
            for problem in e.0.lines() {
                tracing::error!(target: "aop::origin", config = config.as_str(), source, error = problem,
                    "reload refused; the running configuration stays");
            }
            Err(e)
        }
    }
}

/// File descriptors kept for listeners, logs, config and certificate reads.
const FD_RESERVE: u64 = 256;

/// Raise the soft limit on open files to the hard limit, and return how many client
/// connections fit in it, and the permits for upstream connections. A client connection
/// is one descriptor; an upstream connection another, but one HTTP/2 client connection
/// can drive up to 100 upstream requests at once, so upstream connections are not
/// counted per client connection: each holds one of the permits (see
/// [`crate::upstream`]). Half of what the limit leaves is for client connections at
/// most, and the permits are all the rest: if `max_connections` client connections do
/// not fit, running out of descriptors would refuse every new connection at `accept` —
/// the edge's included — before the budget could make room. So the budget is lowered to
/// what fits, and said.
///
/// Returns the connections to allow, the permits, and (open-files limit, connections
/// that fit) when `max_connections` had to be lowered, for the caller to log once its
/// listeners are up.
fn connections_within_fd_limit(max_connections: usize) -> (usize, Permits, Option<(u64, usize)>) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            limit = raised;
        }
    }
    let Some(files) = limit.current else {
        return (max_connections, Permits::within(None, 0, 0), None); // unlimited
    };
    let fits = usize::try_from(files.saturating_sub(FD_RESERVE) / 2)
        .unwrap_or(usize::MAX)
        .max(1);
    let connections = max_connections.min(fits);
    let permits = Permits::within(Some(files), FD_RESERVE, connections);
    let lowered = (max_connections > fits).then_some((files, fits));
    (connections, permits, lowered)
}

/// Bind the listeners and start serving `loaded`; the tasks log to `log` if given.
async fn start(loaded: Config, log: Option<tracing::Dispatch>) -> Result<Guard, Error> {
    let metrics = Metrics::default();
    let crls = Arc::new(crate::crl::Crls::default());
    let (policy, warnings) = loaded.load_checked_with(&crls.held())?;
    // The fetched CRLs start from their caches, checked against the trust just loaded.
    let policy = if crls.configure(&loaded, &policy, &metrics) {
        loaded.load_checked_with(&crls.held())?.0
    } else {
        policy
    };
    let policy = PolicyHandle::new(policy);
    let loaded = Arc::new(loaded);
    let cfg = &loaded.file;
    let settings = Settings::of(cfg);
    let (max_connections, permits, lowered) = connections_within_fd_limit(cfg.max_connections);
    let budget = Budget::new(settings.caps(max_connections));
    let upstreams = Upstreams::new(Exec(log.clone()), permits);
    metrics.restart_required(&Fixed::NAMES.map(|n| (n, false)));
    let shared = Arc::new(Shared {
        headers: HeaderCache::default(),
        tuning: ArcSwap::from_pointee(settings.tuning(&policy, None)),
        policy: policy.clone(),
        sites: ArcSwap::from_pointee(Sites::new(&loaded.upstreams, &metrics, &upstreams)),
        upstreams,
        metrics,
        budget,
        tunnels: crate::websocket::Tunnels::new(
            Duration::from_secs(cfg.tunnel_idle_timeout_secs.max(1)),
            policy,
        ),
        active: AtomicUsize::new(0),
        idle: Notify::new(),
        config_path: loaded.path.clone(),
        fixed: Fixed::of(cfg),
        crls,
        log,
        applied: std::sync::Mutex::new(loaded.clone()),
    });
    let (shutdown, shutdown_rx) = watch::channel(false);
    let mut addrs = Vec::new();
    // Every listener is bound before any is served: an error leaves nothing running.
    let mut listeners = Vec::new();
    for entry in &cfg.listen {
        let listener = bind(&loaded.path, "listen", entry.addr).await?;
        addrs.push(listener.local_addr()?);
        // A `proxy_protocol` listener's balancers (`from`): the peers whose header is read.
        let balancers: Option<Arc<[crate::config::Cidr]>> =
            entry.proxy_protocol.then(|| entry.from.as_slice().into());
        listeners.push((listener, balancers));
    }
    let metrics = match cfg.metrics_listen {
        Some(addr) => {
            let listener = bind(&loaded.path, "metrics_listen", addr).await?;
            Some((listener.local_addr()?, listener))
        }
        None => None,
    };
    let mut tasks = Vec::new();
    for ((listener, balancers), local) in listeners.into_iter().zip(&addrs) {
        let proxy_protocol = balancers.is_some();
        tracing::info!(target: "aop::origin", addr = %local, proxy_protocol, "listening");
        tasks.push(shared.spawn(accept_loop(
            listener,
            balancers,
            shared.clone(),
            shutdown_rx.clone(),
        )));
    }
    // The configuration check's warnings, before "metrics listening": whoever waits for
    // that line has them.
    for warning in &warnings {
        tracing::warn!(target: "aop::origin", config = %loaded.path.display(), warning = warning.as_str(), "configuration check");
    }
    let mut metrics_task = None;
    let metrics_addr = metrics.map(|(local, listener)| {
        tracing::info!(target: "aop::origin", metrics = %local, "metrics listening");
        metrics_task = Some(shared.spawn(metrics_loop(listener, shared.clone())));
        local
    });
    // The CRL fetcher: each `crl_url` is fetched now, then on its schedule.
    shared.spawn(crate::crl::run(
        shared.clone(),
        shared.crls.clone(),
        shutdown_rx.clone(),
    ));
    // Every listener bound, the policy loaded: /readyz says 200.
    shared.metrics.set_ready(true);
    if let Some((files, fits)) = lowered {
        tracing::warn!(target: "aop::origin", max_connections = cfg.max_connections, open_files_limit = files,
            lowered_to = fits, "max_connections does not fit the open-files limit (half of it for client connections, the rest for upstream connections); lowered");
    }
    Ok(Guard {
        listen: addrs,
        metrics: metrics_addr,
        shared,
        shutdown,
        listeners: tasks,
        metrics_task,
    })
}

/// Bind `addr`, named by `key` in the configuration file `config`.
async fn bind(
    config: &std::path::Path,
    key: &'static str,
    addr: SocketAddr,
) -> Result<TcpListener, Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Listen {
            config: config.to_owned(),
            key,
            addr,
            source,
        })
}

/// Accept on `listener`; with `balancers` (a `proxy_protocol` listener's `from`), each
/// connection from one of them must start with a PROXY protocol header (see
/// [`crate::proxy_protocol`]), and one from anywhere else is refused unread.
async fn accept_loop(
    listener: TcpListener,
    balancers: Option<Arc<[crate::config::Cidr]>>,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(target: "aop::origin", error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let talking = has_bytes(&tcp);
        let start = |talking| {
            if talking {
                Start::Talking
            } else {
                Start::Silent(rustix::io::dup(&tcp).ok())
            }
        };
        // Only a balancer named in `from` may name the client: anyone else could claim
        // any address (another client's, to close its handshakes by its per-peer cap).
        let peer_ip = peer.ip().to_canonical();
        let proxy_protocol = balancers.is_some();
        let balancer = balancers
            .as_deref()
            .is_some_and(|from| from.iter().any(|block| block.contains(peer_ip)));
        // Behind a load balancer the socket's peer is the balancer: per-peer caps wait
        // for the address its header names. Anyone else is a peer as on a plain listener.
        // A balancer's connection is silent until a ClientHello byte follows its header.
        let admitted = if balancer {
            shared.budget.admit_proxied(start(false))
        } else {
            shared.budget.admit(peer.ip(), start(talking))
        };
        let Some(slot) = admitted else {
            shared.metrics.site("").closed("max_connections");
            tracing::warn!(target: "aop::verdict", %peer, closed = "max_connections",
                "connection refused: max_connections reached and no connection could make room");
            continue;
        };
        if proxy_protocol && !balancer {
            let detail = format!(
                "{peer_ip} may not send a PROXY protocol header (not in this listener's from)"
            );
            refuse_unheaded(&shared, peer, aop_verify::NoneCause::ProxyHeader, detail);
            drop((slot, tcp));
            continue;
        }
        let task_shared = shared.clone();
        let shutdown = shutdown.clone();
        shared.active.fetch_add(1, Ordering::AcqRel);
        shared.spawn(async move {
            let shared = task_shared;
            let proxied = balancer.then_some(Proxied);
            connection(&shared, tcp, peer, slot, talking, proxied, shutdown).await;
            if shared.active.fetch_sub(1, Ordering::AcqRel) == 1 {
                shared.idle.notify_waiters();
            }
        });
    }
}

/// Whether bytes from the client are waiting on `tcp` already (a non-blocking peek): a
/// real client's ClientHello arrives with the TCP handshake's last ACK.
fn has_bytes(tcp: &tokio::net::TcpStream) -> bool {
    use rustix::net::RecvFlags;
    let mut byte = [0u8; 1];
    matches!(
        rustix::net::recv(tcp, &mut byte[..], RecvFlags::PEEK | RecvFlags::DONTWAIT),
        Ok((_, n)) if n > 0
    )
}

/// Completes when the client has sent something (or closed): tokio's readiness can be
/// reported before any byte is there, so each wake-up is checked with a peek.
async fn first_bytes(tcp: &tokio::net::TcpStream) {
    use rustix::net::RecvFlags;
    loop {
        if tcp.readable().await.is_err() {
            return;
        }
        let peeked = tcp.try_io(tokio::io::Interest::READABLE, || {
            let mut byte = [0u8; 1];
            rustix::net::recv(tcp, &mut byte[..], RecvFlags::PEEK | RecvFlags::DONTWAIT)
                .map_err(std::io::Error::from)
        });
        match peeked {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            _ => return,
        }
    }
}

/// A connection on a `proxy_protocol` listener: its header comes before the handshake.
struct Proxied;

/// Wait, silent (the budget closes silent connections first, so a churn of bare TCP
/// connections cannot push out a handshake under way), until the client sends its first
/// bytes (the caller then marks it talking, or reads a PROXY protocol header first).
/// False if the budget closed it or `deadline` passed first (both logged and counted):
/// the caller drops the connection.
async fn until_first_bytes(
    shared: &Shared,
    tcp: &tokio::net::TcpStream,
    peer: SocketAddr,
    slot: &Slot,
    deadline: tokio::time::Instant,
    tuning: &Tuning,
) -> bool {
    let spoke = tokio::select! {
        r = tokio::time::timeout_at(deadline, first_bytes(tcp)) => r.is_ok(),
        why = slot.evicted() => {
            closed_for_budget(shared, why, peer, None);
            return false;
        }
    };
    if !spoke {
        let mut v = Verdict::new(aop_verify::Outcome::None(
            aop_verify::NoneCause::HandshakeTimeout,
        ));
        v.peer = Some(peer);
        v.detail = Some(format!(
            "no ClientHello within {:?}",
            tuning.handshake_timeout
        ));
        v.log();
        shared.metrics.site("").handshake(&v);
        return false;
    }
    true
}

/// One client connection: the handshake (after the PROXY protocol header if `proxied`),
/// then serving, either cut short if the budget needs its slot.
async fn connection(
    shared: &Arc<Shared>,
    mut tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    slot: Slot,
    talking: bool,
    proxied: Option<Proxied>,
    shutdown: watch::Receiver<bool>,
) {
    // The handshake future is large and boxed: a task keeps the size of its largest
    // state for its whole life; boxed, it is freed when the handshake ends, and the task
    // carries only what serving needs (see `serve`).
    // Silent until the first byte of a ClientHello: the budget closes silent connections
    // first, so a churn of bare TCP connections cannot push out a handshake under way.
    // The acceptor and timeouts in force at accept (a reload changes them for later
    // connections).
    let tuning = shared.tuning();
    let mut state = shared.metrics.connection();
    // The header, the ClientHello's first byte and the handshake share one handshake
    // timeout, counted from accept.
    let accepted = tokio::time::Instant::now();
    let deadline = accepted + tuning.handshake_timeout;
    if !talking && !until_first_bytes(shared, &tcp, peer, &slot, deadline, &tuning).await {
        return;
    }
    if proxied.is_none() {
        slot.talking();
    }
    // Through a load balancer, the client is who its header says; the balancer is `via`.
    let (peer, via) = match proxied {
        None => (peer, None),
        Some(Proxied) => {
            let header = tokio::select! {
                h = tokio::time::timeout_at(deadline, crate::proxy_protocol::read(&mut tcp)) => h,
                why = slot.evicted() => {
                    closed_for_budget(shared, why, peer, None);
                    return;
                }
            };
            let source = match header {
                Ok(Ok(source)) => source,
                Ok(Err(detail)) => {
                    refuse_unheaded(shared, peer, aop_verify::NoneCause::ProxyHeader, detail);
                    return;
                }
                Err(_) => {
                    let detail = format!(
                        "no complete PROXY protocol header within {:?}",
                        tuning.handshake_timeout
                    );
                    refuse_unheaded(
                        shared,
                        peer,
                        aop_verify::NoneCause::HandshakeTimeout,
                        detail,
                    );
                    return;
                }
            };
            let client = match source {
                crate::proxy_protocol::Source::Client(client) => client,
                crate::proxy_protocol::Source::Proxy => peer,
            };
            slot.identified(client.ip());
            // A balancer sends the header the moment its client connects: until a byte of
            // the ClientHello follows, the connection is as silent as a bare one (a churn
            // of bare connections through the balancer cannot push out a handshake).
            if !has_bytes(&tcp) {
                slot.silent(rustix::io::dup(&tcp).ok());
                if !until_first_bytes(shared, &tcp, client, &slot, deadline, &tuning).await {
                    return;
                }
            }
            slot.talking();
            (client, Some(peer))
        }
    };
    let began = Instant::now();
    let handshake = tokio::select! {
        h = Box::pin(tuning.acceptor.accept_via(tcp, Some(peer), via, accepted)) => h,
        why = slot.evicted() => {
            closed_for_budget(shared, why, peer, None);
            return;
        }
    };
    shared
        .metrics
        .handshake_took(began.elapsed(), handshake.is_ok());
    drop(tuning);
    let site = handshake
        .as_ref()
        .map(|c| c.verdict().rule.clone())
        .unwrap_or_default();
    let authenticated = handshake
        .as_ref()
        .ok()
        .filter(|c| c.verdict().is_success())
        .and(site.clone());
    let Some(serve) = serve(shared, handshake, peer, via, shutdown) else {
        return;
    };
    slot.established(authenticated);
    state.active();
    tokio::select! {
        served = serve => {
            // A malformed HTTP/2 frame, a flood hyper or h2 ended with GOAWAY, a request
            // cut off: one line, so no connection ends unexplained.
            if let Err(e) = served {
                tracing::info!(target: "aop::access", %peer, site = site.as_deref().unwrap_or(""),
                    error = %e, "connection ended by an HTTP error");
            }
        }
        why = slot.evicted() => closed_for_budget(shared, why, peer, site.as_deref()),
    }
}

/// What aop-verify's hyper glue refuses or closes on a connection: counted against the
/// connection's site, and each request it answers itself (400, 421) logged as an access
/// line, so every request is in the access log and `aop_requests_total`.
impl aop_verify::hyper::Observer for ConnCtx {
    fn misdirected(&self) {
        self.metrics.misdirected();
    }
    fn bad_request(&self) {
        self.metrics.bad_request();
    }
    fn header_timeout(&self) {
        self.metrics.closed("header_read_timeout");
    }
    fn keepalive_timeout(&self) {
        self.metrics.closed("keepalive_timeout");
    }
    fn send_timeout(&self) {
        self.metrics.closed("send_timeout");
    }
    fn refused(&self, req: &Request<Incoming>, status: StatusCode, reason: &'static str) {
        self.metrics.request(status.as_u16());
        let field = |name| logged(req.headers().get(name));
        let host = req
            .uri()
            .authority()
            .map_or_else(|| field("host"), |a| Cow::Borrowed(a.as_str()));
        let protocol = match req.version() {
            hyper::Version::HTTP_2 => "HTTP/2",
            hyper::Version::HTTP_10 => "HTTP/1.0",
            _ => "HTTP/1.1",
        };
        tracing::info!(
            target: "aop::access",
            request_id = aop_http::request_id().as_str(),
            site = %self.site,
            peer = %self.peer,
            via = %self.via,
            cf_connecting_ip = &*field("cf-connecting-ip"),
            x_forwarded_for = &*field("x-forwarded-for"),
            method = %req.method(),
            protocol,
            host = &*host,
            path = req.uri().path_and_query().map_or("/", |t| t.as_str()),
            status = status.as_u16(),
            reason,
            "request"
        );
    }
}

/// A header's value as the access line logs it (empty if absent): lossily, so a value
/// with a byte outside UTF-8 (obs-text, which hyper takes and the upstream gets) is
/// still logged, that byte as U+FFFD.
fn logged(v: Option<&HeaderValue>) -> Cow<'_, str> {
    v.map_or(Cow::Borrowed(""), |v| String::from_utf8_lossy(v.as_bytes()))
}

/// Log and count a connection on a `proxy_protocol` listener refused before TLS: no valid
/// header (`proxy_header`), or none whole in time (`handshake_timeout`). Its peer is the
/// socket's: nothing else is known.
fn refuse_unheaded(
    shared: &Shared,
    peer: SocketAddr,
    cause: aop_verify::NoneCause,
    detail: String,
) {
    let mut v = Verdict::new(aop_verify::Outcome::None(cause));
    v.peer = Some(peer);
    v.detail = Some(detail);
    v.log();
    shared.metrics.site("").handshake(&v);
}

/// Log and count a connection the budget closed.
fn closed_for_budget(shared: &Shared, why: Evicted, peer: SocketAddr, site: Option<&str>) {
    shared.metrics.site(site.unwrap_or("")).closed(why.as_str());
    let phase = if site.is_some() {
        "established"
    } else {
        "handshake"
    };
    let which = match why {
        Evicted::SiteShare => "the oldest connection of the site holding the most",
        Evicted::PeerHandshakes | Evicted::PeerUnauthenticated => {
            "its peer's oldest such connection"
        }
        Evicted::Handshakes | Evicted::Connections => {
            "the oldest connection without a passing certificate"
        }
    };
    tracing::warn!(target: "aop::verdict", %peer, site = site.unwrap_or(""), closed = why.as_str(), phase,
        "connection closed to make room: {} reached; this was {which}", why.as_str());
}

/// Count the handshake's verdict against its site and, if the connection was accepted,
/// return the future that serves it. Not `async`: the `Accepted` moved into the
/// connection must not also stay in the task.
fn serve(
    shared: &Arc<Shared>,
    handshake: Result<aop_verify::Accepted, aop_verify::Refused>,
    peer: SocketAddr,
    via: Option<SocketAddr>,
    mut shutdown: watch::Receiver<bool>,
) -> Option<impl Future<Output = Result<(), hyper::Error>> + use<>> {
    let sites = shared.sites.load();
    let verdict = match &handshake {
        Ok(conn) => conn.verdict(),
        Err(refused) => &refused.verdict,
    };
    let site: Arc<str> = verdict.rule.clone().unwrap_or_else(|| Arc::from(""));
    let entry = sites.0.get(site.as_ref());
    let metrics = entry.map_or_else(|| shared.metrics.site(&site), |e| e.metrics.clone());
    metrics.handshake(verdict);
    let conn = handshake.ok()?;
    let ctx = Arc::new(ConnCtx {
        tunnels: Arc::default(),
        // Kept whatever the site says now: a reload may turn `websocket` on, and this
        // connection's next upgrade must be re-checked against the policy then.
        chain: conn.stream().get_ref().1.peer_certificates().map(Arc::from),
        verdict: std::sync::Mutex::new(None),
        metrics,
        site,
        peer,
        via: crate::proxy_protocol::Via(via),
    });
    let tunnels = ctx.tunnels.clone();
    let observer: Arc<dyn aop_verify::hyper::Observer> = ctx.clone();
    let service = {
        let shared = shared.clone();
        service_fn(move |req| {
            let (shared, ctx) = (shared.clone(), ctx.clone());
            async move { Ok::<_, Infallible>(forward(&shared, &ctx, req).await) }
        })
    };
    let stop = async move {
        let _ = shutdown.wait_for(|s| *s).await;
    };
    let conn = aop_verify::hyper::serve_connection_until(conn, service, stop, observer);
    Some(async move {
        // A tunnel keeps the connection's place (its budget slot, its count in a drain)
        // after HTTP/1.1 has handed the connection over; dropped early (the budget
        // closing the connection), this ends them.
        let _abort = tunnels.guard();
        let served = conn.await;
        tunnels.finish().await;
        served
    })
}

/// What every request on one connection shares, computed once at accept. The site's
/// route (its upstream, upstream client, `websocket`) is not here: each request looks it
/// up in [`Shared::sites`], so a reload's upstreams reach kept-alive connections at
/// their next request.
struct ConnCtx {
    site: Arc<str>,
    /// The connection's WebSocket tunnels.
    tunnels: Arc<crate::websocket::Held>,
    /// The client's certificate chain, kept for its tunnels to re-check after a reload
    /// (whatever `websocket` says at accept: a reload may turn it on).
    chain: Option<Arc<[aop_pki::CertificateDer<'static>]>>,
    /// The client's address: the TCP peer's, or on a `proxy_protocol` listener the one
    /// its header gave.
    peer: SocketAddr,
    /// The load balancer's address on a `proxy_protocol` listener (logged as `via`).
    via: crate::proxy_protocol::Via,
    /// The verdict headers for the upstream (X-Client-*, XFCC), made on the first request
    /// (a connection that sends none costs nothing) and shared by every connection with
    /// the same verdict; made again if a reload gives the connection a new verdict.
    verdict: std::sync::Mutex<Option<(Arc<Verdict>, Headers)>>,
    metrics: Arc<crate::metrics::SiteMetrics>,
}

impl ConnCtx {
    /// The verdict headers for `verdict`: made once per connection, and again only if a
    /// reload gave the connection a new verdict.
    fn headers_for(&self, shared: &Shared, verdict: &Arc<Verdict>) -> Headers {
        let mut cached = self
            .verdict
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match &*cached {
            Some((v, h)) if Arc::ptr_eq(v, verdict) => h.clone(),
            _ => {
                let h = shared.headers.get(verdict);
                *cached = Some((verdict.clone(), h.clone()));
                h
            }
        }
    }
}

/// A header value from text a certificate chose: control characters dropped.
fn value(s: &str) -> Option<HeaderValue> {
    let clean: String = s.chars().filter(|c| !c.is_control()).collect();
    HeaderValue::from_bytes(clean.as_bytes()).ok()
}

/// The headers that carry `verdict` to the upstream.
pub(crate) fn verdict_headers(verdict: &Verdict) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = Vec::with_capacity(VERDICT_HEADERS.len());
    let mut set = |name: &'static str, v: Option<HeaderValue>| {
        if let Some(v) = v {
            out.push((HeaderName::from_static(name), v));
        }
    };
    set("x-client-verify", value(&verdict.to_string()));
    if let Some(c) = &verdict.client {
        set("x-client-cert-fingerprint", value(&c.sha256.to_string()));
        set("x-client-cert-subject", value(&c.subject));
        set("x-client-cert-issuer", value(&c.issuer));
        set("x-client-cert-serial", value(&c.serial));
        set(
            "x-client-cert-not-after",
            value(&aop_pki::rfc3339(c.not_after)),
        );
        if verdict.is_success() {
            // Envoy's x-forwarded-client-cert: Hash, Subject, URI, DNS. Values are quoted
            // (with \ and " escaped), so a `;`, `,` or `=` in a name cannot add a field.
            let q = |v: &str| format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""));
            let mut xfcc = format!("Hash={};Subject={}", c.sha256, q(&c.subject));
            for u in &c.san.uri {
                xfcc.push_str(&format!(";URI={}", q(u)));
            }
            for d in &c.san.dns {
                xfcc.push_str(&format!(";DNS={}", q(d)));
            }
            set("x-forwarded-client-cert", value(&xfcc));
        }
    }
    out
}

/// Verdict headers by (certificate, verdict): an edge fleet presents a few certificates
/// over and over, so connections share one copy. Bounded; starts over when full.
type Headers = Arc<Vec<(HeaderName, HeaderValue)>>;

#[derive(Default)]
struct HeaderCache(
    std::sync::Mutex<HashMap<(Option<aop_pki::Sha256Fingerprint>, String), Headers>>,
);

impl HeaderCache {
    fn get(&self, verdict: &Verdict) -> Headers {
        let key = (
            verdict.client.as_ref().map(|c| c.sha256),
            verdict.to_string(),
        );
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(h) = map.get(&key) {
            return h.clone();
        }
        if map.len() >= 1024 {
            map.clear();
        }
        map.entry(key)
            .or_insert_with(|| Arc::new(verdict_headers(verdict)))
            .clone()
    }
}

/// Remove every field a client must not pass to the upstream: hop-by-hop fields, the
/// proxy's own `x-forwarded-server` and every verdict header in any spelling. Serves the
/// request's headers and its trailers alike: a trailer reaches an HTTP/2 upstream (and a
/// gRPC server's metadata) as a field of the request, so `x-client-verify: SUCCESS` sent
/// as a trailer is as much a spoof as the header.
fn scrub_client_fields(headers: &mut HeaderMap) {
    aop_http::strip_hop_by_hop(headers);
    // A proxy's own name, which no application should route by: not the client's to set.
    headers.remove("x-forwarded-server");
    for h in VERDICT_HEADERS {
        headers.remove(h);
    }
    // `X_Client_Verify` reaches a CGI/WSGI application as HTTP_X_CLIENT_VERIFY, the same
    // variable as the real header: drop every spelling with underscores too.
    let spoofs: Vec<HeaderName> = headers
        .keys()
        .filter(|k| {
            k.as_str().contains('_')
                && VERDICT_HEADERS.contains(&k.as_str().replace('_', "-").as_str())
        })
        .cloned()
        .collect();
    for k in spoofs {
        headers.remove(k);
    }
}

/// Remove every verdict header a client sent (and the rest [`scrub_client_fields`]
/// removes), then set the real ones.
fn apply_verdict_headers(headers: &mut HeaderMap, verdict_headers: &[(HeaderName, HeaderValue)]) {
    scrub_client_fields(headers);
    for (name, value) in verdict_headers {
        headers.insert(name.clone(), value.clone());
    }
}

/// Append the TCP peer's address (the edge's) to `X-Forwarded-For` as nginx's
/// `$proxy_add_x_forwarded_for` does: the client's fields, joined with `, ` in order, then
/// the peer's address; only the peer's address when the client sent none. The address is
/// bare (IPv6 without brackets, no port; an IPv4-mapped one as IPv4). The client's part is
/// passed on unjudged (it is bounded by the request-head limits); the last entry is the
/// one the guard vouches for.
fn add_forwarded_for(headers: &mut HeaderMap, peer: std::net::IpAddr) {
    let name = HeaderName::from_static("x-forwarded-for");
    let mut joined = Vec::new();
    for v in headers.get_all(&name).iter().filter(|v| !v.is_empty()) {
        joined.extend_from_slice(v.as_bytes());
        joined.extend_from_slice(b", ");
    }
    joined.extend_from_slice(peer.to_canonical().to_string().as_bytes());
    // Every piece is a field value already, so the whole is one.
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        headers.insert(name, v);
    }
}

pub(crate) fn text(status: StatusCode, body: &str) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from(body.to_owned()))
            .map_err(|n| match n {})
            .boxed(),
    );
    *r.status_mut() = status;
    r
}

async fn forward(shared: &Shared, ctx: &ConnCtx, req: Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    let verdict = req
        .extensions()
        .get::<Arc<Verdict>>()
        .cloned()
        .expect("aop-verify sets the verdict");
    // What the client sent end to end: a header its `Connection` names goes no further
    // (answer() strips it), so it is neither logged nor adopted.
    let hop: Vec<HeaderName> = aop_http::connection_options(req.headers()).collect();
    let sent = |name: &str| {
        req.headers()
            .get(name)
            .filter(|_| !hop.iter().any(|h| h == name))
            .cloned()
    };
    let id = match sent("x-request-id") {
        // A client's id is kept if it is a plain token; anything else is replaced.
        Some(v)
            if !v.is_empty()
                && v.len() <= 128
                && v.as_bytes()
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(b)) =>
        {
            v
        }
        _ => value(&aop_http::request_id()).unwrap_or_else(|| HeaderValue::from_static("-")),
    };
    let method = req.method().clone();
    let protocol = match req.version() {
        hyper::Version::HTTP_2 => "HTTP/2",
        hyper::Version::HTTP_10 => "HTTP/1.0",
        _ => "HTTP/1.1",
    };
    let target = req.uri().path_and_query().cloned();
    let cf_ip = sent("cf-connecting-ip");
    let xff = sent("x-forwarded-for");

    let resp = answer(shared, ctx, req, &verdict, &id).await;
    let status = resp.status().as_u16();
    ctx.metrics.request(status);
    tracing::info!(
        target: "aop::access",
        // What the client chose is logged as quoted strings, never bare: a value with
        // spaces cannot add fields (`x verdict=SUCCESS`) to the line.
        request_id = id.to_str().unwrap_or("-"),
        site = %ctx.site,
        peer = %ctx.peer,
        via = %ctx.via,
        cf_connecting_ip = &*logged(cf_ip.as_ref()),
        x_forwarded_for = &*logged(xff.as_ref()),
        %method,
        protocol,
        path = target.as_ref().map_or("/", |t| t.as_str()),
        status,
        verdict = %verdict,
        ms = started.elapsed().as_millis() as u64,
        "request"
    );
    let mut resp = resp;
    resp.headers_mut()
        .insert(HeaderName::from_static("x-request-id"), id);
    resp
}

/// A site's route, as one request takes it from [`Shared::sites`].
struct Route {
    upstream: Option<hyper::http::uri::Authority>,
    client: SiteClient,
    websocket: bool,
}

/// Refuse what must not reach the upstream, else forward the request and stream the
/// answer back.
async fn answer(
    shared: &Shared,
    ctx: &ConnCtx,
    mut req: Request<Incoming>,
    verdict: &Arc<Verdict>,
    id: &HeaderValue,
) -> Response<Body> {
    use crate::websocket::{Asked, Upgrade};
    // The site's route as the last (re)load left it: a kept-alive connection follows a
    // reload at its next request.
    let route = shared.sites.load().0.get(ctx.site.as_ref()).map(|e| Route {
        upstream: e.upstream.clone(),
        client: e.client.clone(),
        websocket: e.websocket,
    });
    let websocket_on = route.as_ref().is_some_and(|r| r.websocket);
    let websocket = match Upgrade::of(&mut req, websocket_on, &ctx.site) {
        Asked::No => None,
        Asked::WebSocket(w) => Some(w),
        Asked::Refused(r) => {
            ctx.metrics.client_error();
            return r;
        }
    };
    if req.method() == hyper::Method::CONNECT && websocket.is_none() {
        // A tunnel through the guard would carry anything, unlogged and unchecked.
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "CONNECT is not allowed\n");
        r.headers_mut().insert(
            hyper::header::ALLOW,
            HeaderValue::from_static("GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH"),
        );
        ctx.metrics.client_error();
        return r;
    }
    // The asterisk form names the server, not a resource, and only for OPTIONS (RFC 9112
    // §3.2.4, RFC 9113 §8.3.1): `GET *` is no request an upstream should have to judge.
    if req.uri().path() == "*" && req.method() != hyper::Method::OPTIONS {
        ctx.metrics.client_error();
        return text(
            StatusCode::BAD_REQUEST,
            "the target * is for OPTIONS only\n",
        );
    }
    // hyper decodes a body whose last transfer coding is `chunked`; any coding before it
    // (`gzip, chunked`) would be dropped on the way to the upstream. Refuse, as nginx does.
    let mut codings = req
        .headers()
        .get_all(hyper::header::TRANSFER_ENCODING)
        .iter();
    if let Some(te) = codings.next()
        && (codings.next().is_some()
            || !te
                .to_str()
                .is_ok_and(|v| v.trim().eq_ignore_ascii_case("chunked")))
    {
        ctx.metrics.client_error();
        let mut r = text(
            StatusCode::NOT_IMPLEMENTED,
            "only the chunked transfer coding is supported\n",
        );
        r.headers_mut()
            .insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
        return r;
    }
    let Some(Route {
        upstream: Some(authority),
        client,
        ..
    }) = &route
    else {
        return text(StatusCode::BAD_GATEWAY, "no upstream for this site\n");
    };
    let edge_version = req.version();
    let (mut parts, body) = req.into_parts();
    // Read before `te` goes with the other hop-by-hop headers (see SiteClient::prepare).
    let te_trailers = crate::upstream::te_trailers(&parts.headers);
    let grpc = crate::upstream::is_grpc(&parts.headers);
    let verdict_headers = ctx.headers_for(shared, verdict);
    apply_verdict_headers(&mut parts.headers, &verdict_headers);
    add_forwarded_for(&mut parts.headers, ctx.peer.ip());
    // An absolute-form target names the host (RFC 9112 §3.2.2): the upstream gets that
    // name, already checked against the connection's site, as its Host.
    if let Some(authority) = parts.uri.authority()
        && let Ok(host) = HeaderValue::from_str(authority.as_str())
    {
        parts.headers.insert(hyper::header::HOST, host);
    }
    parts
        .headers
        .insert(HeaderName::from_static("x-request-id"), id.clone());
    let mut uri = hyper::http::uri::Parts::default();
    uri.scheme = Some(hyper::http::uri::Scheme::HTTP);
    uri.authority = Some(authority.clone());
    uri.path_and_query = Some(
        parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| hyper::http::uri::PathAndQuery::from_static("/")),
    );
    match hyper::Uri::from_parts(uri) {
        Ok(uri) => parts.uri = uri,
        Err(_) => return text(StatusCode::BAD_REQUEST, "bad request target\n"),
    }
    client.prepare(&mut parts, te_trailers);
    if let Some(w) = &websocket {
        w.prepare(&mut parts);
    }
    let fault = Arc::new(std::sync::atomic::AtomicU8::new(BODY_OK));
    let (sent_whole, mut body_sent) = watch::channel(hyper::body::Body::is_end_stream(&body));
    let body = ClientBody {
        inner: body,
        // A gRPC client stream may be quiet between messages for longer than an upload;
        // only the edge's (a verified certificate) earns that: a client without one on an
        // optional site could otherwise hold an upstream permit for the long timer.
        timeout: if grpc && verdict.is_success() {
            shared.tuning().grpc_body_timeout
        } else {
            shared.tuning().body_timeout
        },
        sleep: None,
        fault: fault.clone(),
        sent_whole,
    };
    // The upstream has `upstream_timeout_secs` to answer from the moment it has the whole
    // request: a long upload is bounded by the body's own stall timer, not by this one.
    let request = client.request(Request::from_parts(parts, body));
    let deadline = async {
        let _ = body_sent.wait_for(|whole| *whole).await;
        tokio::time::sleep(shared.tuning().upstream_timeout).await;
    };
    let sent = tokio::select! {
        r = request => Ok(r),
        () = deadline => Err(()),
    };
    // A request body the client broke (bad chunked framing, a stall) is the client's
    // error, not the upstream's, whatever the upstream call then reports.
    let client_fault = |fault: &std::sync::atomic::AtomicU8| match fault.load(Ordering::Acquire) {
        BODY_MALFORMED => Some(text(StatusCode::BAD_REQUEST, "malformed request body\n")),
        BODY_TIMEOUT => Some(text(
            StatusCode::REQUEST_TIMEOUT,
            "the request body stalled\n",
        )),
        _ => None,
    };
    let closing = |mut r: Response<Body>| {
        ctx.metrics.client_error();
        r.headers_mut()
            .insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
        r
    };
    let sent = match (sent, websocket) {
        (Ok(Ok(r)), Some(w)) => {
            return w.answer(
                r,
                &crate::websocket::Tunnel {
                    tunnels: &shared.tunnels,
                    held: &ctx.tunnels,
                    metrics: &ctx.metrics,
                    site: &ctx.site,
                    peer: ctx.peer,
                    id,
                    verdict,
                    chain: ctx.chain.as_ref(),
                },
            );
        }
        (sent, _) => sent,
    };
    match sent {
        Err(_) => {
            if let Some(r) = client_fault(&fault) {
                return closing(r);
            }
            ctx.metrics.upstream_error();
            let timeout = crate::upstream::Failure::Timeout;
            tracing::warn!(target: "aop::origin", request_id = id.to_str().unwrap_or("-"), site = %ctx.site,
                upstream = %authority, upstream_error = timeout.name(),
                cause = format!("no answer within {}s", shared.tuning().upstream_timeout.as_secs()).as_str(),
                "upstream timed out");
            let (status, body) = timeout.status_and_body();
            text(status, body)
        }
        Ok(Err(e)) => {
            if let Some(r) = client_fault(&fault) {
                return closing(r);
            }
            ctx.metrics.upstream_error();
            if crate::upstream::exhausted(&e) {
                tracing::warn!(target: "aop::origin", request_id = id.to_str().unwrap_or("-"), site = %ctx.site, upstream = %authority, error = %e,
                    "no upstream connection permit (open-files limit)");
                return text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too many upstream connections\n",
                );
            }
            // The class and the root cause, not hyper_util's "client error (Connect)".
            let (failure, cause) = crate::upstream::Failure::of(&e);
            tracing::warn!(target: "aop::origin", request_id = id.to_str().unwrap_or("-"), site = %ctx.site,
                upstream = %authority, upstream_error = failure.name(), cause = cause.as_str(), "upstream error");
            let (status, body) = failure.status_and_body();
            text(status, body)
        }
        Ok(Ok(r)) if r.status() == StatusCode::SWITCHING_PROTOCOLS => {
            // Not a WebSocket upgrade the guard forwarded (any other `Upgrade` is
            // stripped): a 101 would leave a tunnel nothing here bounds or checks.
            ctx.metrics.upstream_error();
            tracing::warn!(target: "aop::origin", site = %ctx.site, upstream = %authority, "upstream switched protocols unasked");
            text(StatusCode::BAD_GATEWAY, "upstream switched protocols\n")
        }
        Ok(Ok(r)) => {
            let (mut parts, body) = r.into_parts();
            crate::upstream::strip_response_hop_by_hop(&mut parts.headers);
            // The guard answers in its own version, the edge's connection's (RFC 9110
            // §2.5), not the upstream's: an HTTP/1.0 upstream's answer goes to an HTTP/1.1
            // edge as HTTP/1.1, its connection kept alive (its `Connection: close` went
            // with the hop-by-hop headers).
            parts.version = edge_version;
            Response::from_parts(parts, body.boxed())
        }
    }
}

/// [`ClientBody::fault`] values.
const BODY_OK: u8 = 0;
const BODY_MALFORMED: u8 = 1;
const BODY_TIMEOUT: u8 = 2;

pin_project_lite::pin_project! {
    /// The client's request body on its way to the upstream: streamed, never held whole;
    /// a stall longer than `timeout` between pieces ends it, and `fault` records whether
    /// the client broke it (so the answer is 400 or 408, not 502).
    pub(crate) struct ClientBody {
        #[pin]
        inner: Incoming,
        timeout: Duration,
        sleep: Option<Pin<Box<tokio::time::Sleep>>>,
        fault: Arc<std::sync::atomic::AtomicU8>,
        // Set once the body has ended (at once for a request without one).
        sent_whole: watch::Sender<bool>,
    }
}

impl hyper::body::Body for ClientBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        use std::task::Poll;
        let mut this = self.project();
        match this.inner.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Err(e))) => {
                this.fault.store(BODY_MALFORMED, Ordering::Release);
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(frame) => {
                *this.sleep = None;
                if frame.is_none() || this.inner.is_end_stream() {
                    this.sent_whole.send_replace(true);
                }
                let frame = frame.map(|f| {
                    f.map(|mut f| {
                        if let Some(trailers) = f.trailers_mut() {
                            scrub_client_fields(trailers);
                        }
                        f
                    })
                });
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let timeout = *this.timeout;
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if sleep.as_mut().poll(cx).is_ready() {
                    this.fault.store(BODY_TIMEOUT, Ordering::Release);
                    return Poll::Ready(Some(Err("the request body stalled".into())));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Serve `/metrics`, `/healthz` and `/readyz` until the guard has stopped (through a
/// drain: `/readyz` answers 503 from its start).
async fn metrics_loop(listener: TcpListener, shared: Arc<Shared>) {
    let stopped = shared.metrics.stopped();
    let mut stopped = std::pin::pin!(stopped);
    // The metrics port answers a scraper, not the world: a few connections at once, each
    // closed unless a whole request head arrives within 10 s, and after one answer (or
    // METRICS_DEADLINE, whichever is first).
    let slots = Arc::new(tokio::sync::Semaphore::new(METRICS_CONNECTIONS));
    loop {
        let tcp = tokio::select! {
            r = listener.accept() => match r {
                Ok((t, _)) => t,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stopped => return,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue; // dropped: closed
        };
        let task_shared = shared.clone();
        shared.spawn(async move {
            let shared = task_shared;
            let _slot = slot;
            let service = service_fn(move |req: Request<Incoming>| {
                let shared = shared.clone();
                async move {
                    let resp = match req.uri().path() {
                        "/metrics" => {
                            let body = shared
                                .metrics
                                .render(&shared.policy.current(), time::OffsetDateTime::now_utc());
                            let mut r = text(StatusCode::OK, &body);
                            r.headers_mut().insert(
                                hyper::header::CONTENT_TYPE,
                                HeaderValue::from_static(
                                    prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
                                ),
                            );
                            r
                        }
                        "/healthz" => text(StatusCode::OK, "ok\n"),
                        "/readyz" if shared.metrics.ready() => text(StatusCode::OK, "ready\n"),
                        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
                        _ => text(StatusCode::NOT_FOUND, "not found\n"),
                    };
                    Ok::<_, Infallible>(resp)
                }
            });
            // One request a connection, and the whole of it within METRICS_DEADLINE: a
            // scraper that pipelines requests and never reads the answers would block
            // hyper's write (where no timer runs) and keep its slot for as long as it stays
            // open.
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .keep_alive(false)
                .serve_connection(TokioIo::new(tcp), service);
            let _ = tokio::time::timeout(METRICS_DEADLINE, conn).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_takes_the_peer_bare_as_nginx_writes_it() {
        let xff = |sent: &[&str], peer: &str| {
            let mut h = HeaderMap::new();
            for v in sent {
                h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
            }
            add_forwarded_for(&mut h, peer.parse().unwrap());
            let all: Vec<_> = h.get_all("x-forwarded-for").iter().cloned().collect();
            assert_eq!(all.len(), 1);
            all[0].to_str().unwrap().to_owned()
        };
        assert_eq!(xff(&[], "2001:db8::7"), "2001:db8::7");
        assert_eq!(xff(&[], "::ffff:192.0.2.1"), "192.0.2.1");
        assert_eq!(xff(&["a", "", "b, c"], "192.0.2.1"), "a, b, c, 192.0.2.1");
    }
}
