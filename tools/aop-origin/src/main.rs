//! aop-origin: a ready origin guard. It terminates mutual TLS with aop-verify (per-SNI
//! trust, verdicts), forwards to a plain-HTTP upstream with the verdict attached, counts
//! everything, reloads on SIGHUP and drains on SIGTERM. `aop-origin demo` runs the whole
//! story on loopback. A thin shell: parse the arguments, hand over to the library
//! (`aop_origin::serve`, `Config::check`, `aop_origin::demo`), map its error to the exit
//! code.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[path = "../../generate.rs"] // `--generate`: the same in every binary
mod generate;

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
configuration, certificates and trust, and so does a change of any of those files \
(reload_on_change = true, the default; debounced); SIGTERM drains and exits.

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
    #[command(flatten)]
    _generate: generate::Flag,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Everything end to end on loopback, in a temporary directory; exit 0 iff all held.
    Demo,
}

fn main() -> ExitCode {
    let cli = generate::try_parse::<Cli>().unwrap_or_else(|e| e.exit());
    let done = match (cli.command, cli.config) {
        (Some(Command::Demo), _) => aop_origin::demo().map(|held| if held { 0 } else { 1 }),
        (None, Some(path)) if cli.check => aop_origin::Config::read(&path)
            .and_then(|config| config.check())
            .map(|warnings| {
                #[allow(clippy::print_stdout)] // the result of --check: ok, with its warnings
                {
                    for warning in &warnings {
                        println!("warning: {warning}");
                    }
                    println!("{}: ok", path.display());
                }
                0
            }),
        (None, Some(path)) => aop_origin::serve(&path).map(|()| 0),
        (None, None) => {
            #[allow(clippy::print_stderr)] // a usage error
            {
                eprintln!("aop-origin: give --config FILE, or run `aop-origin demo`");
            }
            return ExitCode::from(2);
        }
    };
    match done {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            #[allow(clippy::print_stderr)] // the binary's one place for fatal errors
            {
                // One line a problem (a configuration check may find several).
                for line in e.to_string().lines() {
                    eprintln!("aop-origin: {line}");
                }
            }
            // A configuration the operator must fix is a usage error; the rest are
            // runtime errors.
            ExitCode::from(match e {
                aop_origin::Error::Config(_) => 2,
                _ => 1,
            })
        }
    }
}
