//! aop-bench: aop-origin, a bare tokio-rustls server and nginx, measured side by side on
//! loopback in one run: full and resumed mTLS handshakes, keep-alive requests (HTTP/1.1,
//! and HTTP/2 with several streams per connection) through each server to a trivial
//! HTTP/1.1 upstream, and memory per idle connection — with the servers' own CPU time
//! per operation. Prints a table, then a last line of ratios.
//!
//! Bounded: every phase stops after its duration or its operation count, whichever
//! comes first. Servers listen on 127.0.0.1 only and are stopped at the end.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod activate;
mod floor;
mod load;
mod procfs;
mod run;
mod servers;

/// Benchmark aop-origin against bare rustls and nginx (mTLS, loopback).
#[derive(Debug, Parser)]
#[command(
    name = "aop-bench",
    version,
    long_about = "\
Benchmark aop-origin (full policy, verdict logging on) against a bare tokio-rustls server \
(WebPkiClientVerifier and nothing else) and nginx (ssl_verify_client on), all started by \
the bench on loopback and measured in the same run. For each: full mTLS handshakes per \
second (a new TCP + TLS connection each time), resumed handshakes, keep-alive requests \
through the server to a trivial upstream over HTTP/1.1 and over HTTP/2 (--connections × \
--streams at once; nginx with `listen … ssl http2`), memory per idle connection, and the server's \
CPU time per operation (from /proc). Ratios are baseline CPU ÷ aop CPU (higher is better). \
--phases fleet (not in the default run) measures resumption across two aop-origins that \
clients alternate between: the stateful session cache, one session ticket key file shared by \
both, and a key file each, with ratios against the stateful cache.

Example:
  cargo run --release -p aop-bench
  cargo run --release -p aop-bench -- --seconds 5 --concurrency 16 --only aop,rustls
  cargo run --release -p aop-bench -- --phases h2 --connections 8 --streams 10 --only aop,nginx
  cargo run --release -p aop-bench -- --phases fleet --rounds 3"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: run::Options,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// `certtool rotate activate --origins FILE` across a fleet of slow mTLS origins on
    /// loopback, against the same probes one at a time.
    #[command(long_about = "\
Start --origins real mTLS origins on loopback (127.1.x.y, one process, rustls requiring a \
client certificate from the rotation's trust.pem), each waiting --delay-ms after accept \
before its handshake, then time the real certtool's `rotate activate --origins FILE`: the \
whole fleet (activated, then rolled back), the fleet plus one origin that trusts only the \
current CA (refused: exit 1 and its table), and --jobs 1 over the first --baseline origins, \
scaled to the fleet. Medians of --rounds. Prints a table, then a last line of ratios.

Example:
  cargo run --release -p aop-bench -- activate
  cargo run --release -p aop-bench -- activate --origins 200 --delay-ms 25 --rounds 1")]
    Activate(activate::Options),
    /// (internal) the fleet of origins `activate` measures against.
    #[command(hide = true)]
    ServeOrigins(activate::ServeArgs),
    /// (internal) the bare tokio-rustls server the bench compares against.
    #[command(hide = true)]
    ServeRustls(servers::RustlsArgs),
    /// (internal) the trivial upstream.
    #[command(hide = true)]
    ServeUpstream(servers::UpstreamArgs),
}

#[allow(clippy::print_stderr)] // the binary's one place for fatal errors
fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::ServeRustls(a)) => servers::serve_rustls(a),
        Some(Command::ServeUpstream(a)) => servers::serve_upstream(a),
        Some(Command::Activate(o)) => activate::run(o),
        Some(Command::ServeOrigins(a)) => activate::serve(a),
        None => run::run(cli.run),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("aop-bench: {e:#}");
            ExitCode::from(1)
        }
    }
}
