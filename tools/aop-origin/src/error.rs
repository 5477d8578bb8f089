//! The library's one error type.

use std::net::SocketAddr;
use std::path::PathBuf;

/// What can go wrong starting or running a guard. Each message is one line that names
/// what an operator has to fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration, or a file it names, is unusable. The message names the file
    /// and, where it can, the line and key: `FILE:LINE: key `name`: what is wrong`.
    /// (`aop-origin` exits 2.)
    #[error("{0}")]
    Config(String),

    /// A listener the configuration asks for cannot be bound. A port below 1024 refused
    /// for want of privilege says which capability the process needs.
    #[error("{}: key `{key}`: {}", config.display(), listen_failure(*addr, source))]
    Listen {
        /// The configuration file.
        config: PathBuf,
        /// `listen` or `metrics_listen`.
        key: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// What the system said.
        source: std::io::Error,
    },

    /// The runtime, a signal handler or a socket could not be set up.
    #[error(transparent)]
    Io(#[from] std::io::Error),

    /// The demo could not set itself up (an expectation that failed is not an error: the
    /// demo reports it and returns `false`).
    #[error("demo: {0}")]
    Demo(String),
}

/// What binding `addr` failed with, in words; a hint where the fix is a capability.
fn listen_failure(addr: SocketAddr, source: &std::io::Error) -> String {
    if source.kind() == std::io::ErrorKind::PermissionDenied && addr.port() < 1024 {
        format!(
            "permission denied binding {addr} (a port below 1024 needs CAP_NET_BIND_SERVICE: \
             AmbientCapabilities=CAP_NET_BIND_SERVICE in the unit, or setcap \
             cap_net_bind_service=+ep)"
        )
    } else {
        format!("cannot listen on {addr}: {source}")
    }
}
