//! HAProxy as a real PROXY protocol sender: a TCP load balancer (`mode tcp`) on a free
//! loopback port in front of one server, started with a generated config in a
//! temporary directory, killed on drop. Find it first with
//! [`have_peer("haproxy", …)`](crate::have_peer).

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running haproxy; stopped on drop.
pub struct Haproxy {
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    child: Child,
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        crate::stop(&mut self.child, Duration::from_secs(5));
    }
}

/// Whether something listens on TCP port `port` of 127.0.0.1 (read from /proc/net/tcp:
/// connecting to haproxy to find out would open a connection to its server too).
fn listening(port: u16) -> bool {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let local = format!("0100007F:{port:04X}");
    table.lines().skip(1).any(|l| {
        let cols: Vec<&str> = l.split_whitespace().collect();
        cols.get(1) == Some(&local.as_str()) && cols.get(3) == Some(&"0A")
    })
}

impl Haproxy {
    /// Start haproxy in TCP mode forwarding every connection to `server`, opening its
    /// side of each from `source` (an address of its own, so the server's TCP peer is
    /// not the client's), with `options` on its `server` line (`send-proxy` for PROXY
    /// protocol v1, `send-proxy-v2` for v2). Returns once it listens; if another process
    /// took its port meanwhile, it tries again on another, up to 5 times.
    pub fn start(dir: &Path, server: SocketAddr, source: &str, options: &str) -> Self {
        let bin = crate::find_peer("haproxy").expect("haproxy is installed (see have_peer)");
        std::fs::create_dir_all(dir).unwrap();
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let conf = format!(
                "global\n    maxconn 64\n\
                 defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n\
                 frontend lb\n    bind 127.0.0.1:{port}\n    default_backend origin\n\
                 backend origin\n    server guard {server} source {source} {options}\n"
            );
            let conf_path = dir.join("haproxy.cfg");
            let stderr_path = dir.join("haproxy.log");
            std::fs::write(&conf_path, conf).unwrap();
            let child = Command::new(&bin)
                .arg("-db")
                .arg("-f")
                .arg(&conf_path)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&stderr_path).unwrap())
                .spawn()
                .unwrap();
            let mut haproxy = Self { port, child };
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                if listening(port) {
                    return haproxy;
                }
                if let Ok(Some(status)) = haproxy.child.try_wait() {
                    let said = std::fs::read_to_string(&stderr_path).unwrap_or_default();
                    assert!(
                        said.contains("cannot bind") || said.contains("Address already in use"),
                        "haproxy exited ({status}) before listening:\n{said}"
                    );
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "haproxy did not listen within 15 s; see {}",
                    stderr_path.display()
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        panic!("haproxy found its port taken 5 times in a row");
    }
}
