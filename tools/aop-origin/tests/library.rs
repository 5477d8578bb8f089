//! aop-origin as a library: guards started in this process (ports 0, asked for their
//! addresses), each with a log of its own; reload and shutdown as methods; the errors a
//! caller gets. The guard's forwarding and attacks on it are tested end to end from the
//! workspace root (tests/origin.rs, tests/hostile), on the same entry point.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aop_edge::{IdentityStore, Resolve, StoreSpec, Target, Timeouts};
use aop_origin::{Config, Error, Guard, LogFormat};
use aop_pki::{CaRequest, KeyType, OriginRequest, Overwrite};

const HOST: &str = "lib.example";

/// A guard's log, as text: what its `tracing` subscriber wrote.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Log {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Log {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// The first line containing `needle`, waiting up to 10 s for it.
    async fn wait_for(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(line) = self.text().lines().find(|l| l.contains(needle)) {
                return line.to_owned();
            }
            assert!(Instant::now() < deadline, "no log line with {needle:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn subscriber(&self) -> tracing::Dispatch {
        let log = self.clone();
        aop_origin::log_dispatch(LogFormat::Text, move || log.clone())
    }
}

/// In `dir`: an origin CA and the origin's certificate for [`HOST`], an edge CA, and
/// `origin.toml` serving them with `listen` (metrics on port 0); returns the config path.
fn setup(dir: &Path, listen: &str) -> PathBuf {
    let now = time::OffsetDateTime::now_utc();
    let origin_ca = CaRequest::new("origin-ca")
        .create_in(&dir.join("origin-ca"), now)
        .unwrap();
    CaRequest::new("edge-ca")
        .create_in(&dir.join("edge-ca"), now)
        .unwrap();
    let origin = origin_ca
        .issue_origin(
            &OriginRequest {
                hostnames: vec![HOST.into()],
                days: 30,
                key_type: KeyType::EcdsaP256,
            },
            now,
        )
        .unwrap();
    aop_pki::write_issued(
        &origin,
        &dir.join("cert.pem"),
        &dir.join("key.pem"),
        Overwrite::Refuse,
    )
    .unwrap();
    let config = dir.join("origin.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"{listen}\"\nmetrics_listen = \"127.0.0.1:0\"\n\n[[site]]\n\
             hostnames = [\"{HOST}\"]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n\
             trust = [\"edge-ca/ca.pem\"]\nupstream = \"http://127.0.0.1:9\"\n"
        ),
    )
    .unwrap();
    config
}

/// Connect to `guard` without a client certificate, as `certtool probe` does.
async fn probe_anonymously(dir: &Path, guard: &Guard) -> bool {
    let port = guard.listen_addr().port();
    let resolve = Resolve::new([format!("{HOST}:{port}:127.0.0.1").parse().unwrap()]);
    let store = IdentityStore::load(&StoreSpec::new([dir.join("origin-ca/ca.pem")])).unwrap();
    let target: Target = format!("https://{HOST}:{port}/").parse().unwrap();
    let r = aop_edge::probe(
        &target,
        &resolve,
        store.anonymous().clone(),
        Timeouts::default(),
    )
    .await;
    r.observed.is_refusal()
}

#[tokio::test]
async fn two_guards_in_one_process_each_keep_their_own_log_and_addresses() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (log_a, log_b) = (Log::default(), Log::default());
    let config_a = setup(dir_a.path(), "127.0.0.1:0");
    let a = Guard::start_with_log(Config::read(&config_a).unwrap(), log_a.subscriber())
        .await
        .unwrap();
    let b = Guard::start_with_log(
        Config::read(&setup(dir_b.path(), "127.0.0.1:0")).unwrap(),
        log_b.subscriber(),
    )
    .await
    .unwrap();
    let (a_tls, b_tls) = (a.listen_addr(), b.listen_addr());
    let a_metrics = a.metrics_addr().unwrap();
    assert!(a_tls.port() != 0 && a_metrics.port() != 0 && a_tls != b_tls);
    assert_eq!(a.listen_addrs(), [a_tls]);
    assert!(log_a.text().contains(&format!("listening addr={a_tls}")));
    assert!(log_b.text().contains(&format!("listening addr={b_tls}")));

    // The verdict line comes from aop-verify's acceptor, inside the guard's task.
    assert!(probe_anonymously(dir_a.path(), &a).await, "refused");
    let verdict = log_a.wait_for("client certificate verdict").await;
    assert!(verdict.contains("verdict=NONE"), "{verdict}");
    assert!(verdict.contains(&format!("sni={HOST} ")), "{verdict}");
    assert!(!log_b.text().contains("verdict"), "{}", log_b.text());

    // A reload that fails keeps the running configuration, and says why: to the caller
    // and in the guard's own log.
    let good = std::fs::read_to_string(&config_a).unwrap();
    std::fs::write(&config_a, good.replace("edge-ca/ca.pem", "missing.pem")).unwrap();
    let Err(Error::Config(e)) = a.reload() else {
        panic!("a reload naming a missing file must fail")
    };
    let want = format!("{}:8: key `trust`: ", config_a.display());
    assert!(e.starts_with(&want) && e.contains("cannot read"), "{e}");
    log_a.wait_for("reload refused").await;
    assert!(probe_anonymously(dir_a.path(), &a).await, "still serving");
    std::fs::write(&config_a, good).unwrap();
    a.reload().unwrap();
    log_a.wait_for("configuration reloaded").await;
    assert!(!log_b.text().contains("reload"), "{}", log_b.text());

    // Shut down: once it returns, nothing listens; the other guard serves on.
    a.shutdown(Duration::from_secs(5)).await;
    log_a.wait_for("stopped").await;
    assert!(tokio::net::TcpStream::connect(a_tls).await.is_err());
    assert!(tokio::net::TcpStream::connect(a_metrics).await.is_err());
    assert!(probe_anonymously(dir_b.path(), &b).await);
    b.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn start_errors_name_the_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let config = setup(dir.path(), &addr.to_string());
    let e = Guard::start(Config::read(&config).unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::Listen { key: "listen", addr: a, .. } if *a == addr),
        "{e:?}"
    );
    assert!(
        e.to_string().starts_with(&format!(
            "{}: key `listen`: cannot listen on {addr}: ",
            config.display()
        )),
        "{e}"
    );

    std::fs::remove_file(dir.path().join("key.pem")).unwrap();
    let loaded = Config::read(&config).unwrap(); // the file is valid TOML; the key is gone
    let Err(Error::Config(e)) = loaded.check() else {
        panic!("check must fail")
    };
    let want = format!("{}:7: key `key`: ", config.display());
    assert!(e.starts_with(&want) && e.contains("key.pem"), "{e}");
    let e = Guard::start(loaded).await.unwrap_err();
    assert!(
        matches!(&e, Error::Config(m) if m.starts_with(&want)),
        "{e}"
    );
}
