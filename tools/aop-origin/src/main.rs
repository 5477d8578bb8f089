//! aop-origin: a ready origin guard. It terminates mutual TLS with aop-verify (per-SNI
//! trust, verdicts), forwards to a plain-HTTP upstream with the verdict attached, counts
//! everything, reloads on SIGHUP and drains on SIGTERM. `aop-origin demo` runs the whole
//! story on loopback. A thin shell: parse, then hand over to `guard` or `demo`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod config;
mod demo;
mod guard;
mod jsonlog;
mod logwriter;
mod metrics;

/// Put in front of an origin you cannot change: only your edge gets through.
#[derive(Debug, Parser)]
#[command(
    name = "aop-origin",
    version,
    args_conflicts_with_subcommands = true,
    long_about = "\
A ready origin guard for authenticated origin pulls. It terminates mutual TLS with per-SNI \
client-certificate policy (aop-verify), refuses everyone but the edge, and forwards to a \
plain-HTTP upstream with the verdict attached (X-Client-Verify, X-Client-Cert-*, \
x-forwarded-client-cert; any copy a client sent is removed). SIGHUP reloads the \
configuration, certificates and trust; SIGTERM drains and exits.

Example:
  aop-origin --config /etc/aop/origin.toml
  aop-origin --config /etc/aop/origin.toml --check
  aop-origin demo

Exit codes: 0 clean exit (demo: every expectation held); 1 a demo expectation failed or a \
runtime error; 2 usage error or a bad configuration (the message names file, line and key)."
)]
struct Cli {
    /// The TOML configuration (see the crate docs / README for its keys).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Only check the configuration and every file it names, then exit.
    #[arg(long, requires = "config")]
    check: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Everything end to end on loopback, in a temporary directory; exit 0 iff all held.
    Demo,
}

#[allow(clippy::print_stderr)] // the binary's one place for fatal errors
fn fail(code: u8, e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("aop-origin: {e}");
    ExitCode::from(code)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => return fail(1, &e),
    };
    match (cli.command, cli.config) {
        (Some(Command::Demo), _) => match runtime.block_on(demo::run()) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(1),
            Err(e) => fail(1, &format!("{e:#}")),
        },
        (None, Some(path)) => {
            let loaded = match config::Loaded::read(&path) {
                Ok(l) => l,
                Err(e) => return fail(2, &e),
            };
            if cli.check {
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
                Err(e) if e.downcast_ref::<config::ConfigError>().is_some() => {
                    fail(2, &format!("{e:#}"))
                }
                Err(e) => fail(1, &format!("{e:#}")),
            }
        }
        (None, None) => fail(2, &"give --config FILE, or run `aop-origin demo`"),
    }
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
