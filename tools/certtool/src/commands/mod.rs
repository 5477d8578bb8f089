//! One module per command; each parses nothing and prints through [`crate::output`].

use std::process::ExitCode;

use crate::cli::{CaCommand, Cli, CloudflareCommand, Command, CrlCommand, IssueCommand};

mod inspect;
mod inventory;
mod issue;
mod probe;
mod rotate;
mod verify;

/// Run the parsed command line.
pub(crate) fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let now = time::OffsetDateTime::now_utc();
    match cli.command {
        Command::Ca(CaCommand::Create(args)) => issue::ca_create(&args, now),
        Command::Issue(IssueCommand::Client(args)) => issue::client(&args, now),
        Command::Issue(IssueCommand::Origin(args)) => issue::origin(&args, now),
        Command::Inspect(args) => inspect::run(&args, now),
        Command::Verify(args) => verify::run(&args, now),
        Command::Crl(CrlCommand::Create(args)) => issue::crl_create(&args, now),
        Command::Probe(args) => probe::run(&args),
        Command::Inventory(args) => inventory::run(&args, now),
        Command::Rotate(cmd) => rotate::run(cmd, now),
        Command::Cloudflare(CloudflareCommand::Payload(args)) => rotate::payload(&args),
    }
}

/// The contract's exit code for an error: 1 when the operation was refused or failed
/// while acting (a file exists, a write failed), 2 when the input was unusable.
pub(crate) fn exit_code_for(e: &anyhow::Error) -> ExitCode {
    let pki = |e: &aop_pki::Error| match e {
        aop_pki::Error::Exists { .. }
        | aop_pki::Error::Write { .. }
        | aop_pki::Error::Generate(_) => ExitCode::from(1),
        _ => ExitCode::from(2),
    };
    match e.downcast_ref::<aop_ops::Error>() {
        Some(aop_ops::Error::Pki(e)) => return pki(e),
        // A step refused, a damaged manifest, no symbolic links: the operation failed.
        Some(_) => return ExitCode::from(1),
        None => {}
    }
    if e.downcast_ref::<UsageError>().is_some() || e.downcast_ref::<HostError>().is_some() {
        return ExitCode::from(2);
    }
    match e.downcast_ref::<aop_pki::Error>() {
        Some(e) => pki(e),
        // aop-verify's load errors are all about unusable input files.
        None if e.downcast_ref::<aop_verify::Error>().is_some() => ExitCode::from(2),
        None if e.downcast_ref::<aop_edge::Error>().is_some() => ExitCode::from(2),
        None => ExitCode::from(1),
    }
}

/// A command line clap accepts but the command cannot use (which form of a flag goes with
/// which): exit 2, the message on one line.
#[derive(Debug)]
pub(crate) struct UsageError(pub(crate) String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// This host could not do the work (out of file descriptors while probing): exit 2, one
/// line; it says nothing about the peers.
#[derive(Debug)]
pub(crate) struct HostError(pub(crate) String);

impl std::fmt::Display for HostError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HostError {}

/// A short hint appended to the error line, where there is an obvious next step.
pub(crate) fn hint_for(e: &anyhow::Error) -> &'static str {
    let pki =
        e.downcast_ref::<aop_pki::Error>()
            .or_else(|| match e.downcast_ref::<aop_ops::Error>() {
                Some(aop_ops::Error::Pki(e)) => Some(e),
                _ => None,
            });
    match pki {
        Some(aop_pki::Error::Exists { .. }) => " (pass --force to replace it)",
        _ => "",
    }
}

/// The runtime for the commands that talk to the network (probe, inventory --probe,
/// rotate activate): one worker per CPU (at most 4), so a fleet's handshakes use every
/// core.
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    use anyhow::Context as _;
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cpus.min(4))
        .enable_all()
        .build()
        .context("cannot start the runtime")
}

/// Descriptors kept free for everything but the probes' sockets (the runtime, files,
/// stdio).
#[cfg(unix)]
const FD_RESERVE: u64 = 64;

/// `wanted` probes at once: elsewhere than Unix there is no open-files limit to fit.
#[cfg(not(unix))]
pub(crate) fn within_open_files(wanted: usize) -> usize {
    wanted
}

/// `wanted` probes at once, or as many as the open-files limit allows: the soft limit is
/// first raised to the hard one (each probe holds one socket). Lowering says so on
/// stderr.
#[cfg(unix)]
pub(crate) fn within_open_files(wanted: usize) -> usize {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            limit = raised;
        }
    }
    let Some(files) = limit.current else {
        return wanted; // unlimited
    };
    let fits = usize::try_from(files.saturating_sub(FD_RESERVE))
        .unwrap_or(usize::MAX)
        .max(1);
    if wanted > fits {
        #[allow(clippy::print_stderr)] // a note beside the result, not the result
        {
            eprintln!(
                "certtool: note: probing {fits} at once, not {wanted}: the open-files limit is {files}"
            );
        }
    }
    wanted.min(fits)
}
