//! What the process answers to signals (SIGHUP reloads, SIGTERM and SIGINT drain; where
//! there are no Unix signals, ctrl-c drains and nothing reloads) and to a change of the
//! files in use (a reload, on Unix), and the count of work a drain waits for.

use std::path::PathBuf;
use std::sync::Arc;

#[cfg(unix)]
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;

/// The signals the proxy answers, installed (so no longer fatal to the process).
#[cfg(unix)]
pub(crate) struct Signals {
    hup: Signal,
    term: Signal,
    int: Signal,
}

/// What a signal asks for.
pub(crate) enum Asked {
    /// SIGHUP: reload the identities.
    #[cfg_attr(not(unix), allow(dead_code))] // no SIGHUP there
    Reload,
    /// SIGTERM or SIGINT (named): stop accepting, drain, exit 0.
    Stop(&'static str),
}

#[cfg(unix)]
impl Signals {
    /// Install the handlers. Before anything listens: a SIGHUP sent as soon as the proxy
    /// is reachable must not end it.
    pub(crate) fn install() -> std::io::Result<Self> {
        Ok(Self {
            hup: signal(SignalKind::hangup())?,
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// The next signal. Several of one kind sent before it is read count once, as the
    /// kernel delivers them.
    pub(crate) async fn next(&mut self) -> Asked {
        tokio::select! {
            _ = self.hup.recv() => Asked::Reload,
            _ = self.term.recv() => Asked::Stop("SIGTERM"),
            _ = self.int.recv() => Asked::Stop("SIGINT"),
        }
    }
}

/// Without Unix signals: ctrl-c only.
#[cfg(not(unix))]
pub(crate) struct Signals;

#[cfg(not(unix))]
impl Signals {
    /// Install the ctrl-c handler (when first awaited).
    pub(crate) fn install() -> std::io::Result<Self> {
        Ok(Self)
    }

    /// The next ctrl-c.
    pub(crate) async fn next(&mut self) -> Asked {
        match tokio::signal::ctrl_c().await {
            Ok(()) => Asked::Stop("ctrl-c"),
            Err(_) => std::future::pending().await,
        }
    }
}

/// `source="signal"`: a reload SIGHUP asked for.
pub(crate) const SIGNAL: &str = "signal";

/// `source="file"`: a reload a change of a file in use started.
pub(crate) const FILE: &str = "file";

/// Reload on file change: the watch on the directories of every certificate, key and root
/// file (`tools/watch.rs`), unless `--no-reload-on-change`, off Unix, or the watch could
/// not be set up (logged).
pub(crate) struct Changes {
    #[cfg(unix)]
    watch: Option<crate::watch::FileWatch>,
    #[cfg_attr(not(unix), allow(dead_code))] // only a watch reads them
    files: Vec<PathBuf>,
}

impl Changes {
    /// Watch `files` if `on`. Made before the files are loaded, so a change made while
    /// they load is seen.
    pub(crate) fn start(files: Vec<PathBuf>, on: bool) -> Self {
        #[cfg(unix)]
        {
            let watch = match on.then(|| crate::watch::FileWatch::new(files.clone())) {
                Some(Ok(w)) => Some(w),
                Some(Err(e)) => {
                    tracing::warn!(target: "aop::edge", error = %e,
                        "cannot watch the certificate files: only SIGHUP reloads");
                    None
                }
                None => None,
            };
            Self { watch, files }
        }
        #[cfg(not(unix))]
        {
            let _ = on;
            Self { files }
        }
    }

    /// Say what is watched (once the proxy listens).
    pub(crate) fn announce(&self) {
        #[cfg(unix)]
        if let Some(w) = &self.watch {
            let dirs: Vec<String> = w.dirs().map(|d| d.display().to_string()).collect();
            tracing::info!(target: "aop::edge", dirs = dirs.join(", ").as_str(),
                quiet_ms = crate::watch::QUIET.as_millis() as u64, files = self.files.len(),
                "reloading on file change");
        }
    }

    /// Watch the directories the files' links lead to now (after a reload by SIGHUP: a
    /// link may lead elsewhere since the last look).
    pub(crate) fn retarget(&mut self) {
        #[cfg(unix)]
        if let Some(w) = self.watch.as_mut() {
            w.retarget(&self.files);
        }
    }

    /// The files whose bytes changed, once some did (debounced); never without a watch.
    pub(crate) async fn next(&mut self) -> Vec<PathBuf> {
        #[cfg(unix)]
        if let Some(w) = self.watch.as_mut() {
            let files = self.files.clone();
            return w.changed(|| files.clone()).await;
        }
        std::future::pending().await
    }
}

/// How many visitor connections (and WebSocket tunnels) are open: a drain waits for 0.
#[derive(Clone, Debug)]
pub(crate) struct Drain(Arc<watch::Sender<usize>>);

/// One open connection or tunnel, counted in its [`Drain`] until dropped.
#[derive(Debug)]
pub(crate) struct Held(Arc<watch::Sender<usize>>);

impl Default for Drain {
    fn default() -> Self {
        Self(Arc::new(watch::Sender::new(0)))
    }
}

impl Drain {
    /// Count one more until the [`Held`] is dropped.
    pub(crate) fn hold(&self) -> Held {
        self.0.send_modify(|n| *n += 1);
        Held(self.0.clone())
    }

    /// How many are open now.
    pub(crate) fn open(&self) -> usize {
        *self.0.borrow()
    }

    /// Completes when none is open.
    pub(crate) async fn idle(&self) {
        let mut open = self.0.subscribe();
        let _ = open.wait_for(|n| *n == 0).await;
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}
