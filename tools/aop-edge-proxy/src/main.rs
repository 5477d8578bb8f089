//! aop-edge-proxy: plain HTTP in, mutual TLS to the origin out. The smallest edge, for
//! testing origins and as a client-side sidecar. A thin shell over `aop-edge`.

use std::process::ExitCode;

mod body;
mod cli;
#[path = "../../generate.rs"] // `--generate`: the same in every binary
mod generate;
mod metrics;
mod proxy;
mod signals;
mod tunnel;
#[cfg(unix)]
#[path = "../../watch.rs"] // reload on file change: the same in aop-origin
mod watch;

fn main() -> ExitCode {
    let args = generate::try_parse::<cli::Args>().unwrap_or_else(|e| e.exit());
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => return fail(&anyhow::anyhow!("cannot start the runtime: {e}")),
    };
    match runtime.block_on(proxy::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn fail(e: &anyhow::Error) -> ExitCode {
    #[allow(clippy::print_stderr)] // the binary's one place for fatal errors
    {
        eprintln!("aop-edge-proxy: {e:#}");
    }
    ExitCode::from(2)
}
