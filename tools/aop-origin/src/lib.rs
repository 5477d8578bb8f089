//! aop-origin: a ready origin guard. It terminates mutual TLS with aop-verify (per-SNI
//! trust, verdicts), forwards to a plain-HTTP upstream with the verdict attached, counts
//! everything, reloads on SIGHUP and drains on SIGTERM. `aop-origin demo` runs the whole
//! story on loopback.
//!
//! The binary (`main.rs`) only parses its arguments and calls [`run_config`] or
//! [`run_demo`]. [`parse_config`] is the configuration parser on its own, for the fuzzer
//! and its replay test.

use std::path::Path;
use std::process::ExitCode;

mod budget;
mod config;
mod demo;
mod guard;
mod jsonlog;
mod logwriter;
mod metrics;

#[allow(clippy::print_stderr)] // the binary's one place for fatal errors
fn fail(code: u8, e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("aop-origin: {e}");
    ExitCode::from(code)
}

/// `aop-origin demo`: everything end to end on loopback; exit 0 iff every expectation held.
pub fn run_demo() -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => return fail(1, &e),
    };
    match runtime.block_on(demo::run()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => fail(1, &format!("{e:#}")),
    }
}

/// `aop-origin --config FILE [--check]`: check the configuration and every file it names
/// (with `check`), or run the guard until SIGTERM. Exit 2 for a bad configuration.
pub fn run_config(path: &Path, check: bool) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => return fail(1, &e),
    };
    let loaded = match config::Loaded::read(path) {
        Ok(l) => l,
        Err(e) => return fail(2, &e),
    };
    if check {
        return match loaded.load_policy() {
            Ok(_) => {
                #[allow(clippy::print_stdout)] // the result of --check
                {
                    println!("{}: ok", path.display());
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail(2, &e),
        };
    }
    let _log_flush = init_logging(loaded.config.log_format);
    match runtime.block_on(guard::run(loaded)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<config::ConfigError>().is_some() => fail(2, &format!("{e:#}")),
        Err(e) => fail(1, &format!("{e:#}")),
    }
}

/// Parse and validate configuration `text` as if read from `path`, without opening any
/// file it names: `Ok` or the one-line error `--config` would print. The fuzzer's entry
/// (it must never panic, whatever the text).
pub fn parse_config(path: &Path, text: &str) -> Result<(), String> {
    config::Loaded::parse(path, text.to_owned())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Log to stderr through a batching background writer (see `logwriter`): no system call
/// and no thread wake-up per line on the handshake or request path, and no line dropped.
/// The returned guard flushes on exit.
fn init_logging(format: config::LogFormat) -> logwriter::FlushGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (writer, guard) = logwriter::stderr();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        config::LogFormat::Json => builder.event_format(jsonlog::Json).init(),
        config::LogFormat::Text => builder.with_ansi(false).init(),
    }
    guard
}
