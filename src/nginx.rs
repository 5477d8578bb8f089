//! nginx as a real peer: an origin with `ssl_verify_client on` (or off), started on a
//! free loopback port with a generated config in a temporary directory.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running nginx; killed on drop.
pub struct Nginx {
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    child: Child,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM, not SIGKILL: a killed master leaves its workers running (and holding
        // the port); on SIGTERM it takes them down with it.
        crate::stop(&mut self.child, Duration::from_secs(5));
    }
}

/// The nginx binary, if installed (it is often in /usr/sbin, outside a user's PATH).
pub fn binary() -> Option<std::path::PathBuf> {
    crate::find_peer("nginx")
}

/// A loopback port free a moment ago. nginx must be told its port, so another process
/// may take it first: [`Nginx::start_http`] then sees nginx fail to bind and tries again
/// with another.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A whole nginx.conf that keeps everything in `dir` (pid, logs, temp files), runs in the
/// foreground with one worker of `worker_connections`, and has `http` as the body of its
/// `http {}` block (`upstream`s, `server`s). The benchmark's nginx uses it too.
pub fn config(dir: &Path, worker_connections: u32, http: &str) -> String {
    let d = dir.display();
    format!(
        r#"
user root;
worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections {worker_connections}; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
{http}
}}
"#
    )
}

impl Nginx {
    /// Start nginx serving TLS with `cert`/`key`; with `client_ca`, it requires client
    /// certificates from that CA (`ssl_verify_client on`), else it asks for none. Every
    /// response body is `verify=$ssl_client_verify dn=$ssl_client_s_dn`.
    pub fn start(dir: &Path, cert: &Path, key: &Path, client_ca: Option<&Path>) -> Self {
        let verify = match client_ca {
            Some(ca) => format!(
                "ssl_verify_client on;\n        ssl_client_certificate {};",
                ca.display()
            ),
            None => "ssl_verify_client off;".to_owned(),
        };
        let server = format!(
            r#"{verify}
        location / {{
            default_type text/plain;
            return 200 "verify=$ssl_client_verify dn=$ssl_client_s_dn\n";
        }}"#
        );
        Self::start_with(dir, cert, key, &server)
    }

    /// Start nginx serving TLS with `cert`/`key` (TLS 1.2 and 1.3), with `server` as the
    /// rest of its one `server {}` block: the `ssl_verify_client` lines, `add_header`s,
    /// `location`s.
    pub fn start_with(dir: &Path, cert: &Path, key: &Path, server: &str) -> Self {
        Self::start_http(dir, |port| {
            format!(
                r#"
    server {{
        listen 127.0.0.1:{port} ssl;
        server_name _;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        {server}
    }}"#,
                cert = cert.display(),
                key = key.display(),
            )
        })
    }

    /// Start nginx with `servers(port)` as the `server {}` blocks of its `http {}` block
    /// (each listening on `port`, a free loopback port); returns once it listens: its
    /// master has written its pid file, which it does only after binding every port. If
    /// the port was taken in the meantime (nginx says `Address already in use`), it tries
    /// again on another, up to 5 times.
    pub fn start_http(dir: &Path, servers: impl Fn(u16) -> String) -> Self {
        let bin = binary().expect("nginx is installed (see have_peer)");
        std::fs::create_dir_all(dir).unwrap();
        let d = dir.display();
        for _ in 0..5 {
            let port = free_port();
            let servers = servers(port);
            let conf = config(dir, 256, &servers);
            let conf_path = dir.join("nginx.conf");
            let pid_path = dir.join("nginx.pid");
            let stderr_path = dir.join("stderr.log");
            std::fs::write(&conf_path, conf).unwrap();
            let _ = std::fs::remove_file(&pid_path);
            let child = Command::new(&bin)
                .args(["-p", &d.to_string(), "-c", &conf_path.display().to_string()])
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&stderr_path).unwrap())
                .spawn()
                .unwrap();
            let mut nginx = Self { port, child };
            let pid = nginx.child.id().to_string();
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                if std::fs::read_to_string(&pid_path).is_ok_and(|p| p.trim() == pid) {
                    return nginx;
                }
                if let Ok(Some(status)) = nginx.child.try_wait() {
                    let said = std::fs::read_to_string(&stderr_path).unwrap_or_default()
                        + &std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
                    assert!(
                        said.contains("Address already in use"),
                        "nginx exited ({status}) before listening:\n{said}"
                    );
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "nginx did not start within 15 s; see {d}/error.log"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        panic!("nginx found its port taken 5 times in a row");
    }
}
