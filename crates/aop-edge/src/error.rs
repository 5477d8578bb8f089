//! The one error type of this crate.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Why an identity store could not be loaded, or an origin could not be reached.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A certificate or key file is unreadable or malformed (the message names it).
    #[error(transparent)]
    Pki(#[from] aop_pki::Error),

    /// No roots were given to verify origins' server certificates. There is no silent
    /// insecure mode.
    #[error("no roots to verify origin server certificates (give at least one --cacert)")]
    NoRoots,

    /// A root certificate cannot be used.
    #[error("{}: not usable as a root: {detail}", path.display())]
    BadRoot {
        /// The file.
        path: PathBuf,
        /// What rustls said.
        detail: String,
    },

    /// A client certificate and key cannot make a TLS client identity.
    #[error("{}: cannot present this certificate: {detail}", path.display())]
    BadIdentity {
        /// The certificate file.
        path: PathBuf,
        /// What rustls said.
        detail: String,
    },

    /// The crypto provider cannot make a TLS client configuration: it has no cipher
    /// suite for TLS 1.3 or 1.2, or no key exchange group.
    #[error("the crypto provider cannot make a TLS client: {detail}")]
    Provider {
        /// What rustls said.
        detail: String,
    },

    /// A zone or hostname for an identity is not a DNS name.
    #[error("invalid {what} {name:?}: not a DNS name")]
    BadName {
        /// `zone` or `hostname`.
        what: &'static str,
        /// The name as given.
        name: String,
    },

    /// The same zone or hostname was given two identities.
    #[error("{what} {name:?} has more than one certificate")]
    Duplicate {
        /// `zone` or `hostname`.
        what: &'static str,
        /// The name.
        name: String,
    },

    /// A `--resolve HOST:PORT:ADDR` or URL could not be parsed.
    #[error("{input:?}: {reason}")]
    Syntax {
        /// What was given.
        input: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// An origins file (see [`crate::fleet`]) has a line that is not `URL
    /// [HOST:PORT:ADDR]`, or no origin at all (`line` is `None`).
    #[error("{}: {reason}", crate::fleet::place(path, *line))]
    OriginsFile {
        /// The file.
        path: PathBuf,
        /// The line (from 1), if the problem is one line's.
        line: Option<usize>,
        /// What is wrong.
        reason: String,
    },

    /// No identity applies to this origin hostname (no per-hostname, per-zone or shared
    /// certificate): the request is not sent.
    #[error(
        "no client certificate configured for origin {host:?} (no per-hostname, per-zone or shared certificate)"
    )]
    NoIdentity {
        /// The origin hostname.
        host: String,
    },

    /// The origin's name did not resolve.
    #[error("cannot resolve {host}: {detail}")]
    Resolve {
        /// The hostname.
        host: String,
        /// What the resolver said.
        detail: String,
    },

    /// TCP connect failed.
    #[error("cannot connect to {addr}: {error}")]
    Connect {
        /// The address tried.
        addr: SocketAddr,
        /// What the OS said.
        error: std::io::Error,
    },

    /// A stage did not finish in time.
    #[error("{stage} with {addr} timed out after {after:?}")]
    Timeout {
        /// `TCP connect` or `TLS handshake`.
        stage: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The limit.
        after: Duration,
    },

    /// An origin sent no response head to a request within
    /// [`Timeouts::response_header`](crate::Timeouts::response_header).
    #[error("{host} sent no response head within {after:?}")]
    NoResponse {
        /// The origin hostname.
        host: String,
        /// The limit.
        after: Duration,
    },

    /// An HTTP request to an origin failed (connect, handshake, or the exchange itself).
    /// [`crate::classify`] tells a refusal by the origin from other failures.
    #[error("request to {host} failed: {error}")]
    Request {
        /// The origin hostname.
        host: String,
        /// The error (its source chain carries any TLS error).
        error: Box<dyn std::error::Error + Send + Sync>,
    },

    /// The TLS handshake failed (refused by the origin, or the origin's certificate was
    /// not trusted). See [`crate::classify`] for which.
    #[error("TLS handshake with {host} ({addr}) failed: {error}")]
    Handshake {
        /// The origin hostname (SNI).
        host: String,
        /// The address.
        addr: SocketAddr,
        /// The underlying error (carries the rustls error).
        error: std::io::Error,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
