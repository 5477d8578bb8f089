//! A reload that lowers a per-peer cap (review 15b): the budget evicted one connection per
//! admission (`if` over the cap, not `while`), so a peer already over the new cap stays
//! over it after every new connection it opens: the cap never converges while the peer
//! keeps its connections alive. Now the next admission closes as many as it takes.

#![allow(clippy::unwrap_used)] // test helpers: a panic is a test failure with a backtrace

use std::io::ErrorKind;
use std::net::TcpStream;
use std::time::Duration;

use aop_e2e::guard::{Certs, Guard};
use aop_e2e::wait_until;

fn site() -> &'static str {
    "[[site]]\nhostnames = [\"a.example\"]\ncert = \"origin-ca/origin/cert.pem\"\n\
     key = \"origin-ca/origin/key.pem\"\ntrust = [\"edge-ca/ca.pem\"]\nupstream = \"http://127.0.0.1:9\"\n"
}

/// Whether the guard has closed `tcp` (EOF or reset), without blocking.
fn closed(tcp: &TcpStream) -> bool {
    tcp.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    match tcp.peek(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) if e.kind() == ErrorKind::WouldBlock => false,
        Err(_) => true,
    }
}

/// Ten silent handshakes from one peer under the default cap (64); a reload lowers
/// `max_handshakes_per_peer` to 2; the peer opens one more. After that admission the
/// peer must hold at most 2 handshakes: 9 of the 10 older ones closed (not 1, as before).
#[test]
fn lowering_a_per_peer_cap_converges_at_the_next_admission() {
    let c = Certs::new(&["a.example"]);
    let top = "handshake_timeout_secs = 120\n";
    let guard = Guard::start(c.dir.path(), &format!("{top}{}", site()));
    let old: Vec<TcpStream> = (0..10)
        .map(|_| TcpStream::connect(guard.addr()).unwrap())
        .collect();
    // All ten admitted (none closed) before the reload.
    wait_until("ten admitted", Duration::from_secs(5), || {
        (guard.metric("aop_connections{state=\"handshaking\"}") >= 10).then_some(())
    });
    std::fs::write(
        &guard.config,
        format!(
            "listen = \"127.0.0.1:0\"\nmetrics_listen = \"127.0.0.1:0\"\n{top}max_handshakes_per_peer = 2\n{}",
            site()
        ),
    )
    .unwrap();
    guard.reload();
    let line = guard.wait_log("configuration reloaded");
    assert!(line.contains("max_handshakes_per_peer"), "{line}");
    let _new = TcpStream::connect(guard.addr()).unwrap();
    // The admission does evict (its peer is over the cap)…
    wait_until("one older handshake closed", Duration::from_secs(5), || {
        (old.iter().any(closed)).then_some(())
    });
    // …and as many as it takes: the peer holds 2 (the newest older one and the new one).
    wait_until(
        "the peer brought down to its new cap of 2 (9 of the 10 older handshakes closed)",
        Duration::from_secs(5),
        || (old.iter().filter(|t| closed(t)).count() >= 9).then_some(()),
    );
    wait_until("2 handshakes open", Duration::from_secs(5), || {
        (guard.metric("aop_connections{state=\"handshaking\"}") == 2).then_some(())
    });
    assert_eq!(old.iter().filter(|t| closed(t)).count(), 9);
    assert_eq!(
        guard.lines_with("closed=max_handshakes_per_peer").len(),
        9,
        "{:#?}",
        guard.lines_with("closed=")
    );
}
