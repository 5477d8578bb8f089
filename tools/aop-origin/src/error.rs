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

    /// A listener the configuration asks for cannot be bound.
    #[error("{}: key `{key}`: cannot listen on {addr}: {source}", config.display())]
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
