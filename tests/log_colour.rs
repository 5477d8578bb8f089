//! Colour in logs only on a terminal: aop-edge-proxy's log redirected to a file carries
//! no ANSI escape, even when nothing (NO_COLOR) asks it not to colour.

#![allow(clippy::unwrap_used)] // a test: panics are failures

use std::io::{Read as _, Write as _};
use std::process::{Command, Stdio};
use std::time::Duration;

use aop_e2e::{Running, bin, pki, tempdir, wait_until};

#[test]
fn aop_edge_proxy_writes_no_ansi_escape_into_a_redirected_log() {
    let dir = tempdir().unwrap();
    let ca = pki::ca(dir.path(), "origin-ca");
    let edge = pki::ca(dir.path(), "edge-ca").client("edge");
    let log_path = dir.path().join("edge.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let (_held, refused) = aop_e2e::refused_port();
    let resolve = format!("www.example.com:{refused}:127.0.0.1");
    let origin = format!("https://www.example.com:{refused}");
    let _proxy = Running(
        Command::new(bin("aop-edge-proxy"))
            .args(["--listen", "127.0.0.1:0", "--origin", &origin])
            .args(["--resolve", &resolve, "--cacert"])
            .arg(ca.pem())
            .arg("--cert")
            .arg(&edge.cert)
            .arg("--key")
            .arg(&edge.key)
            // What a colour-loving terminal would set; only the file decides.
            .env_remove("NO_COLOR")
            .env_remove("CLICOLOR_FORCE")
            .env("TERM", "xterm-256color")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let read = || std::fs::read(&log_path).unwrap();
    let port: u16 = wait_until(
        "the proxy logs its address",
        Duration::from_secs(30),
        || {
            // Read past any escape sequences, so that a coloured log fails the assertion
            // below rather than this wait.
            let text = strip_sgr(&String::from_utf8_lossy(&read()));
            let addr = text.split("addr=").nth(1)?.split_whitespace().next()?;
            let port: String = addr
                .rsplit(':')
                .next()?
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            port.parse().ok()
        },
    );
    // A request whose origin refuses: a warning line with fields (the kind a level and
    // field names would be coloured in).
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        tcp,
        "GET / HTTP/1.1\r\nHost: www.example.com\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    let _ = tcp.read_to_string(&mut reply);
    assert!(reply.starts_with("HTTP/1.1 502"), "{reply}");
    let bytes = wait_until("the refusal is logged", Duration::from_secs(10), || {
        let b = read();
        strip_sgr(&String::from_utf8_lossy(&b))
            .contains("status=502")
            .then_some(b)
    });
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.lines().count() >= 2, "{text}");
    assert!(!bytes.contains(&0x1b), "an escape in the log: {text:?}");
    assert!(text.contains(" level=warn "), "{text}");
}

/// `text` without its SGR sequences (`ESC [ … m`).
fn strip_sgr(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('\x1b') {
        out.push_str(&rest[..at]);
        rest = rest[at..].split_once('m').map_or("", |(_, after)| after);
    }
    out.push_str(rest);
    out
}
