//! certtool: issue, inspect, verify, inventory, rotate and probe the certificates of
//! authenticated origin pulls. A thin shell over `aop-pki` (certificates), `aop-ops`
//! (inventory, rotation), `aop-verify` and `aop-edge`: parse the command line, run the
//! command, print the result, exit 0 / 1 / 2.

use std::process::ExitCode;

mod cli;
mod commands;
#[path = "../../generate.rs"] // `--generate`: the same in every binary
mod generate;
mod output;

fn main() -> ExitCode {
    let cli = match generate::try_parse::<cli::Cli>() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(), // --help, --version
        Err(e) => {
            // Usage errors: clap's whole message (the missing arguments, the "similar
            // argument" tip, the possible values), its first line prefixed as every error.
            let text = e.render().to_string();
            #[allow(clippy::print_stderr)] // the binary's one place for error output
            {
                eprintln!(
                    "certtool: {}",
                    text.trim_end().trim_start_matches("error: ")
                );
            }
            return ExitCode::from(2);
        }
    };
    match commands::run(cli) {
        Ok(code) => code,
        Err(e) => {
            // Diagnostics go to stderr, one line, naming the file and the problem.
            #[allow(clippy::print_stderr)] // the binary's one place for error output
            {
                eprintln!("certtool: {e:#}{}", commands::hint_for(&e));
            }
            commands::exit_code_for(&e)
        }
    }
}
