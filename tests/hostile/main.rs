//! Attacks on aop, run against the real binaries (aop-origin, certtool) and real peers on
//! loopback. Each module takes one class of attack; each test states the attack, runs it,
//! and asserts the safe outcome (the exact status, verdict, exit code or log line).
//!
//! - `host`: Host / authority smuggling past the SNI's rule (421, 400, 405);
//! - `idle`: slow and idle connections, connection budgets, timeouts;
//! - `h2_abuse`: HTTP/2 frame by frame (malformed frames, SETTINGS/PING floods, header
//!   floods, reset storms, too many streams, withheld flow-control credit);
//! - `framing`: malformed request framing (chunked, Transfer-Encoding), slow uploads,
//!   reload verdicts, a certificate that passed whose handshake the client cut;
//! - `probe`: `certtool probe` against origins that are open, shut, or ambiguous;
//! - `files`: devices, FIFOs and huge files where a certificate or config should be;
//! - `work`: chains built to make the origin do expensive work per handshake;
//! - `review`: what an adversarial review of the hardening found (header spellings,
//!   forwarding hosts, pipelining, proof of key, reload modes, connection churn, one site's
//!   clients against another's edge, forged access-log fields).

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod files;
mod framing;
mod h2_abuse;
mod host;
mod idle;
mod probe;
mod review;
#[path = "../json/shapes.rs"]
mod shapes;
mod work;

/// The usual start of an attack on the guard: certificates for `hosts`
/// ([`Certs`](aop_e2e::guard::Certs)), an echo upstream, and the guard on
/// `config(the upstream's address)`.
async fn guarded(
    hosts: &[&str],
    config: impl FnOnce(std::net::SocketAddr) -> String,
) -> (
    aop_e2e::guard::Certs,
    aop_e2e::upstream::Echo,
    aop_e2e::guard::Guard,
) {
    let certs = aop_e2e::guard::Certs::new(hosts);
    let echo = aop_e2e::upstream::Echo::start().await;
    let guard = aop_e2e::guard::Guard::start(certs.dir.path(), &config(echo.addr));
    (certs, echo, guard)
}
