//! What the process answers to signals (SIGHUP reloads, SIGTERM and SIGINT drain; where
//! there are no Unix signals, ctrl-c drains and nothing reloads), and the count of work a
//! drain waits for.

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
