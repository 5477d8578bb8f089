//! aop-origin: a ready origin guard. It terminates mutual TLS with aop-verify (per-SNI
//! trust, verdicts), forwards to a plain-HTTP upstream with the verdict attached, counts
//! everything, reloads on SIGHUP and drains on SIGTERM. `aop-origin demo` runs the whole
//! story on loopback.
//!
//! ```text
//! edge ──mTLS──▶ Guard (aop-verify: verdict per handshake) ──HTTP + X-Client-Verify──▶ upstream
//!                  └─ /metrics, /healthz on metrics_listen
//! ```
//!
//! # As a library
//!
//! A [`Config`] is a configuration file, read and validated. [`Guard::start`] binds the
//! listeners it names (port 0 is fine: ask [`Guard::listen_addr`] and
//! [`Guard::metrics_addr`] where they are) and serves on the current tokio runtime.
//! [`Guard::reload`] is what SIGHUP does: re-read the file and swap in the new policy and
//! upstreams, or keep the running ones and return the error. [`Guard::shutdown`] is what
//! SIGTERM does: stop accepting, let requests in flight finish, return when done.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! # async fn example() -> Result<(), aop_origin::Error> {
//! let config = aop_origin::Config::read("/etc/aop/origin.toml".as_ref())?;
//! config.check()?; // every certificate, key, trust and CRL file it names is usable
//! let guard = aop_origin::Guard::start(config).await?;
//! let (tls, metrics) = (guard.listen_addr(), guard.metrics_addr());
//! // … the edge connects to `tls`; a scraper reads `metrics` …
//! guard.reload()?; // the file changed: SIGHUP's work
//! guard.shutdown(Duration::from_secs(30)).await; // SIGTERM's
//! # let _ = (tls, metrics);
//! # Ok(())
//! # }
//! ```
//!
//! A guard logs (verdicts, requests, reloads) through `tracing`, to the process's
//! subscriber. [`Guard::start_with_log`] gives one guard a subscriber of its own instead —
//! [`log_dispatch`] makes the one the binary uses, for any writer — so several guards in
//! one process (tests) each keep their own lines, aop-verify's verdict lines included.
//!
//! The binary (`main.rs`) only parses its arguments, calls [`serve`], [`Config::check`]
//! or [`demo`], and turns an [`Error`] into its exit code.

use std::path::Path;

use tracing_subscriber::util::SubscriberInitExt as _;

mod budget;
mod config;
mod crl;
mod demo;
mod error;
mod guard;
mod logwriter;
mod metrics;
mod proxy_protocol;
#[cfg(unix)] // the service manager's socket is a Unix one
mod systemd;
mod upstream;
#[path = "../../watch.rs"] // reload on file change: the same in aop-edge-proxy
mod watch;
mod websocket;

pub use config::{Config, LogFormat};
pub use error::Error;
pub use guard::Guard;

/// `aop-origin demo`: everything end to end on loopback, in a temporary directory.
/// `Ok(true)` iff every expectation held; the story and its summary go to stdout.
pub fn demo() -> Result<bool, Error> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime
        .block_on(demo::run())
        .map_err(|e| Error::Demo(format!("{e:#}")))
}

/// `aop-origin --config FILE`: read the configuration, log to stderr in its
/// `log_format`, start the guard, reload on SIGHUP and (`reload_on_change`, on by
/// default) when the file or one it names changes, drain and return on SIGTERM or
/// SIGINT.
pub fn serve(path: &Path) -> Result<(), Error> {
    let config = Config::read(path)?;
    let (writer, _flush) = logwriter::stderr();
    // The process's subscriber (and `log` records, rustls' among them, into it). Only
    // fails if one is set already: then that one is used.
    let _ = log_dispatch(config.log_format(), writer).try_init();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        // Before the listeners: a SIGHUP sent once they are up must not end the process.
        let signals = guard::Signals::install()?;
        // Before the files are loaded: a change made while they load is seen.
        let watch = config
            .file
            .reload_on_change
            .then(|| guard::start_watch(config.files_in_use()))
            .flatten();
        signals.serve(Guard::start(config).await?, watch).await
    })
}

/// Parse and validate configuration `text` as if read from `path`, without opening any
/// file it names: `Ok` or the one-line error `--config` would print. The fuzzer's entry
/// (it must never panic, whatever the text).
pub fn parse_config(path: &Path, text: &str) -> Result<(), String> {
    Config::parse(path, text)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// What a `proxy_protocol` listener makes of the first `bytes` of a connection:
/// `Ok(Some((client, len)))` for a whole PROXY protocol header of `len` bytes naming
/// `client` (`None`: the proxy's own connection, whose socket address stands), `Ok(None)`
/// while more bytes may make one, `Err` (what was wrong, one line) for no header. The
/// fuzzer's entry (it must never panic, whatever the bytes).
pub fn parse_proxy_header(
    bytes: &[u8],
) -> Result<Option<(Option<std::net::SocketAddr>, usize)>, String> {
    use proxy_protocol::{Parsed, Source};
    match proxy_protocol::parse(bytes) {
        Parsed::Header { source, len } => {
            let client = match source {
                Source::Client(a) => Some(a),
                Source::Proxy => None,
            };
            Ok(Some((client, len)))
        }
        Parsed::Incomplete => Ok(None),
        Parsed::Invalid(why) => Err(why),
    }
}

/// The `tracing` subscriber the binary logs through, writing to `writer`: `format`'s
/// lines (logfmt text without colour, or JSON: [`aop_http::log`]), at `info` unless
/// `RUST_LOG` says otherwise. Give it to [`Guard::start_with_log`] for a guard with a log
/// of its own, or install it as the process's default.
pub fn log_dispatch<W>(format: LogFormat, writer: W) -> tracing::Dispatch
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Json => builder.event_format(aop_http::log::Json).finish().into(),
        LogFormat::Text => builder.event_format(aop_http::log::Logfmt).finish().into(),
    }
}
