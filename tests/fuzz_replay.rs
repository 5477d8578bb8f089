//! Replays every committed fuzz input — `fuzz/corpus/<target>/` and the crashers kept in
//! `fuzz/regressions/<target>/` — through the same checks the cargo-fuzz targets run
//! (`fuzz/src/lib.rs`, included here), on the stable compiler, as part of `cargo test`.

#![allow(clippy::unwrap_used)] // a test

use std::path::{Path, PathBuf};

#[allow(unreachable_pub, dead_code)] // the fuzz crate's public checks, private here
#[path = "../fuzz/src/lib.rs"]
mod checks;

/// Run `check` on every committed input of `target`; fail listing every input that
/// panicked (each panic's message names what broke).
fn replay(target: &str, check: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut inputs: Vec<PathBuf> = Vec::new();
    for kind in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(kind).join(target)) else {
            continue;
        };
        inputs.extend(entries.map(|e| e.unwrap().path()).filter(|p| p.is_file()));
    }
    inputs.sort();
    assert!(
        !inputs.is_empty(),
        "no committed inputs for fuzz target {target}"
    );
    let failed: Vec<_> = inputs
        .iter()
        .filter(|p| {
            let data = std::fs::read(p).unwrap();
            std::panic::catch_unwind(|| check(&data)).is_err()
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{target}: {} of {} inputs fail: {failed:?}",
        failed.len(),
        inputs.len()
    );
}

#[test]
fn pem_der() {
    replay("pem_der", checks::pem_der);
}

#[test]
fn config() {
    replay("config", checks::config);
}

#[test]
fn authority() {
    replay("authority", checks::authority);
}

#[test]
fn probe_reply() {
    replay("probe_reply", checks::probe_reply);
}

#[test]
fn manifest() {
    replay("manifest", checks::manifest);
}

#[test]
fn acceptor() {
    replay("acceptor", checks::acceptor);
}

#[test]
fn acceptor_hello() {
    replay("acceptor_hello", checks::acceptor_hello);
}

/// The acceptor target's framing: a ClientHello body behind a record and handshake header.
#[test]
fn client_hello_wrapping() {
    assert_eq!(
        checks::wrap_client_hello(&[0xAA, 0xBB]),
        [
            0x16, 0x03, 0x01, 0x00, 0x06, 0x01, 0x00, 0x00, 0x02, 0xAA, 0xBB
        ]
    );
    assert_eq!(checks::wrap_client_hello(&[0; 20_000]).len(), 16_384 + 5);
}
