//! `aop-bench activate`: `certtool rotate activate --origins FILE` across a fleet of real
//! mTLS origins on loopback, each slow to answer, against the same probes one at a time.
//!
//! The origins run in a process of their own (`aop-bench serve-origins`, a hidden
//! subcommand): one listener per origin, each on its own loopback address (127.1.x.y, a
//! port the kernel picks), all in one tokio runtime. Each waits `--delay-ms` after
//! accepting a connection before it starts the TLS handshake (a far origin's round trips,
//! paid once per probe), then runs a real rustls handshake that requires a client
//! certificate chaining to the rotation's `trust.pem` (current + next CA:
//! `WebPkiClientVerifier`), reads the request head and answers `200 ok`. One more origin,
//! the laggard, trusts only the current CA: listed, it makes activate refuse.
//!
//! Measured in one run, each the median of `--rounds`: the whole fleet at the default
//! concurrency (then `rotate rollback`, so the next round starts staged again), the fleet
//! plus the laggard (exit 1 and the refusal table, nothing changed), and `--jobs 1` over
//! the first `--baseline` origins, scaled to the fleet's size (one at a time is linear:
//! the run a fleet took before). Prints a table, then a last line of ratios.
//!
//! The bench raises its open-files soft limit to the hard one (rustix), in both
//! processes: the origins hold one listener each, plus the connections in flight.

#![allow(clippy::print_stdout)] // the table is the product

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use aop_pki::{Ca, CaRequest, KeyType, OriginRequest, Overwrite};
use rustls::server::WebPkiClientVerifier;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// `aop-bench activate`.
#[derive(Debug, clap::Args)]
pub(crate) struct Options {
    /// Origins in the fleet.
    #[arg(long, default_value_t = 1000)]
    origins: usize,
    /// Milliseconds each origin waits after accepting a connection, before its handshake.
    #[arg(long, default_value_t = 100)]
    delay_ms: u64,
    /// Origins probed one at a time (`--jobs 1`) for the baseline, scaled to the fleet.
    #[arg(long, default_value_t = 20)]
    baseline: usize,
    /// certtool's --concurrency for the fleet runs (default: certtool's own, 256).
    #[arg(long)]
    concurrency: Option<usize>,
    /// Rounds of each measurement; the median is reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

/// `serve-origins` (internal): the fleet.
#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// Origins trusting --trust.
    #[arg(long)]
    count: usize,
    /// Milliseconds to wait after accept, before the handshake.
    #[arg(long)]
    delay_ms: u64,
    #[arg(long)]
    cert: PathBuf,
    #[arg(long)]
    key: PathBuf,
    /// The client CAs the fleet trusts (the rotation's trust.pem).
    #[arg(long)]
    trust: PathBuf,
    /// The client CA the one lagging origin trusts (the current CA only).
    #[arg(long)]
    lagging_trust: PathBuf,
    /// Where to write the addresses, one a line (the laggard's last), once all listen.
    #[arg(long)]
    ready: PathBuf,
}

/// The origins' hostnames: `o<i>.fleet.example`, all under one wildcard certificate.
const ZONE: &str = "fleet.example";

/// Raise the open-files soft limit to the hard one; the limit in force.
fn raise_open_files() -> Option<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            return raised.current;
        }
    }
    limit.current
}

/// The `i`th origin's loopback address: 127.1.(i / 250).(i % 250 + 1).
fn loopback(i: usize) -> std::net::IpAddr {
    let (hi, lo) = (i / 250, i % 250 + 1);
    std::net::Ipv4Addr::new(127, 1, u8::try_from(hi).unwrap_or(u8::MAX), lo as u8).into()
}

fn server_config(
    cert: &Path,
    key: &Path,
    trust: &Path,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let provider = aop_pki::default_provider();
    let mut roots = rustls::RootCertStore::empty();
    for c in aop_pki::load_certificates(trust)? {
        roots.add(c)?;
    }
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build()?;
    let identity = aop_pki::load_key_pair(cert, key, &provider)?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.chain, identity.key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// One origin's connection: wait, handshake, read the request head, answer 200.
async fn serve_one(
    tcp: tokio::net::TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
    delay: Duration,
) {
    tokio::time::sleep(delay).await;
    let Ok(Ok(mut tls)) = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
    else {
        return;
    };
    let mut head = Vec::new();
    let mut buf = [0u8; 2048];
    let read = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
            match tls.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        true
    };
    if matches!(
        tokio::time::timeout(Duration::from_secs(10), read).await,
        Ok(true)
    ) {
        let _ = tls
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n")
            .await;
        let _ = tls.shutdown().await;
    }
}

/// `serve-origins`: bind every origin, write their addresses to --ready, serve until killed.
pub(crate) fn serve(a: ServeArgs) -> anyhow::Result<()> {
    raise_open_files();
    let fleet = tokio_rustls::TlsAcceptor::from(server_config(&a.cert, &a.key, &a.trust)?);
    let lagging =
        tokio_rustls::TlsAcceptor::from(server_config(&a.cert, &a.key, &a.lagging_trust)?);
    let delay = Duration::from_millis(a.delay_ms);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let mut addrs = String::new();
            for i in 0..=a.count {
                let listener = tokio::net::TcpListener::bind((loopback(i), 0))
                    .await
                    .with_context(|| format!("bind {}", loopback(i)))?;
                addrs.push_str(&format!("{}\n", listener.local_addr()?));
                let acceptor = if i == a.count {
                    lagging.clone()
                } else {
                    fleet.clone()
                };
                tokio::spawn(async move {
                    loop {
                        let Ok((tcp, _)) = listener.accept().await else {
                            // Out of descriptors, most likely: let some close.
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        };
                        let _ = tcp.set_nodelay(true);
                        tokio::spawn(serve_one(tcp, acceptor.clone(), delay));
                    }
                });
            }
            aop_pki::write_atomic(
                &a.ready,
                addrs.as_bytes(),
                aop_pki::FileMode::Public,
                Overwrite::Replace,
            )?;
            std::future::pending::<anyhow::Result<()>>().await
        })
}

/// A workspace binary beside this one; under `cargo run`, built first (see run.rs).
fn binary(package: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe.with_file_name(package);
    if !bin.exists() || std::env::var_os("CARGO").is_some() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "-p", package]);
        if exe
            .parent()
            .and_then(Path::file_name)
            .is_some_and(|n| n == "release")
        {
            cmd.arg("--release");
        }
        anyhow::ensure!(cmd.status()?.success(), "cannot build {package}");
    }
    Ok(bin)
}

/// The fleet's origins process, killed on drop.
struct Fleet(std::process::Child);

impl Drop for Fleet {
    fn drop(&mut self) {
        aop_e2e::stop(&mut self.0, Duration::from_secs(5));
    }
}

/// One `certtool rotate activate` run: its wall time and output.
struct Run {
    wall: Duration,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn certtool(certtool: &Path, args: &[&str]) -> anyhow::Result<Run> {
    let start = Instant::now();
    let out = Command::new(certtool)
        .args(args)
        .stdin(Stdio::null())
        .output()?;
    Ok(Run {
        wall: start.elapsed(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap_or_default()
}

pub(crate) fn run(opts: Options) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=60_000).contains(&opts.origins),
        "--origins: 1 to 60,000"
    );
    let baseline = opts.baseline.clamp(1, opts.origins);
    let files = raise_open_files();
    let certtool_bin = binary("certtool")?;
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    let now = time::OffsetDateTime::now_utc();
    let ca = |name: &str| -> anyhow::Result<Ca> {
        Ok(CaRequest::new(name).create_in(&dir.join(name), now)?)
    };
    let origin_ca = ca("origin-ca")?;
    ca("edge-ca-1")?;
    ca("edge-ca-2")?;
    let server = origin_ca.issue_origin(
        &OriginRequest {
            hostnames: vec![format!("*.{ZONE}")],
            days: 90,
            key_type: KeyType::EcdsaP256,
        },
        now,
    )?;
    let (cert, key) = (dir.join("origin-cert.pem"), dir.join("origin-key.pem"));
    aop_pki::write_issued(&server, &cert, &key, Overwrite::Refuse)?;
    let rot = dir.join("rot");
    for args in [
        &[
            "rotate",
            "init",
            "--dir",
            s(&rot),
            "--ca",
            s(&dir.join("edge-ca-1")),
            "--cn",
            "edge",
        ][..],
        &[
            "rotate",
            "stage",
            "--dir",
            s(&rot),
            "--new-ca",
            s(&dir.join("edge-ca-2")),
        ],
    ] {
        let r = certtool(&certtool_bin, args)?;
        anyhow::ensure!(r.code == Some(0), "{args:?}: {}", r.stderr);
    }

    let ready = dir.join("fleet.addrs");
    let child = Command::new(std::env::current_exe()?)
        .args(["serve-origins", "--count", &opts.origins.to_string()])
        .args(["--delay-ms", &opts.delay_ms.to_string()])
        .args(["--cert", s(&cert), "--key", s(&key)])
        .args(["--trust", s(&rot.join("trust.pem"))])
        .args(["--lagging-trust", s(&dir.join("edge-ca-1/ca.pem"))])
        .args(["--ready", s(&ready)])
        .stdout(Stdio::null())
        .spawn()?;
    let mut fleet = Fleet(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    let addrs: Vec<SocketAddr> = loop {
        if let Ok(text) = std::fs::read_to_string(&ready) {
            break text
                .lines()
                .map(str::parse)
                .collect::<Result<_, _>>()
                .context("the fleet's addresses")?;
        }
        if let Some(status) = fleet.0.try_wait()? {
            anyhow::bail!("the origins exited: {status}");
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the origins did not start in 60 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    anyhow::ensure!(addrs.len() == opts.origins + 1, "{} addresses", addrs.len());
    let line = |i: usize| {
        let host = format!("o{i}.{ZONE}");
        let a = addrs[i];
        format!(
            "https://{host}:{}/ {host}:{}:{}\n",
            a.port(),
            a.port(),
            a.ip()
        )
    };
    let list = |path: &Path, range: std::ops::Range<usize>| -> anyhow::Result<()> {
        let text: String = range.map(line).collect();
        Ok(std::fs::write(path, text)?)
    };
    let (whole, refusing, first) = (
        dir.join("origins.txt"),
        dir.join("origins-lagging.txt"),
        dir.join("origins-baseline.txt"),
    );
    list(&whole, 0..opts.origins)?;
    list(&refusing, 0..opts.origins + 1)?;
    list(&first, 0..baseline)?;
    let cacert = dir.join("origin-ca/ca.pem");
    let concurrency = opts.concurrency.map(|c| c.to_string());
    // `jobs`: certtool's --concurrency (None: its default).
    let activate = |origins: &Path, jobs: Option<&str>| -> anyhow::Result<Run> {
        let mut args = vec![
            "rotate",
            "activate",
            "--dir",
            s(&rot),
            "--origins",
            s(origins),
        ];
        args.extend(["--cacert", s(&cacert)]);
        if let Some(j) = jobs {
            args.extend(["--concurrency", j]);
        }
        certtool(&certtool_bin, &args)
    };
    let rollback = || -> anyhow::Result<()> {
        let r = certtool(&certtool_bin, &["rotate", "rollback", "--dir", s(&rot)])?;
        anyhow::ensure!(r.code == Some(0), "rollback: {}", r.stderr);
        Ok(())
    };
    let manifest = || std::fs::read(rot.join("manifest.json"));

    println!(
        "aop-bench activate: {} origins on 127.1.x.y (ports the kernel picked), each waiting {} ms after accept before its mTLS handshake; certtool --concurrency {}; {} rounds (median); open files {}",
        opts.origins,
        opts.delay_ms,
        concurrency.as_deref().unwrap_or("default (256)"),
        opts.rounds.max(1),
        files.map_or("unlimited".into(), |f| f.to_string()),
    );
    let (mut fleet_times, mut refused_times, mut one_times) = (Vec::new(), Vec::new(), Vec::new());
    let mut table = String::new();
    for round in 0..opts.rounds.max(1) {
        // The whole fleet accepts: activated, then rolled back to staged.
        let r = activate(&whole, concurrency.as_deref())?;
        anyhow::ensure!(r.code == Some(0), "activate: {}{}", r.stdout, r.stderr);
        fleet_times.push(r.wall);
        rollback()?;
        // With the laggard: refused, the table names it alone, nothing changed.
        let before = manifest()?;
        let r = activate(&refusing, concurrency.as_deref())?;
        anyhow::ensure!(r.code == Some(1), "refusal: {}{}", r.stdout, r.stderr);
        let rows: Vec<&str> = r.stdout.lines().skip(2).collect();
        let laggard = format!("o{}.{ZONE}", opts.origins);
        anyhow::ensure!(
            rows.len() == 1 && rows[0].contains(&laggard) && rows[0].contains("unknown_ca"),
            "the table names the laggard alone: {}",
            r.stdout
        );
        anyhow::ensure!(manifest()? == before, "a refusal changed the manifest");
        refused_times.push(r.wall);
        table = r.stdout;
        // One at a time, the first --baseline origins.
        let r = activate(&first, Some("1"))?;
        anyhow::ensure!(r.code == Some(0), "--jobs 1: {}{}", r.stdout, r.stderr);
        one_times.push(r.wall);
        rollback()?;
        println!("round {}/{} done", round + 1, opts.rounds.max(1));
    }
    let (fleet_t, refused_t, one_t) = (
        median(fleet_times),
        median(refused_times),
        median(one_times),
    );
    let scaled = one_t.as_secs_f64() * opts.origins as f64 / baseline as f64;
    println!("\nthe refusal, as printed (fleet + laggard):\n{table}");
    println!("{:<44} | {:>9} | {:>13}", "run", "wall s", "per origin ms");
    let row = |name: String, secs: f64, n: usize| {
        println!("{name:<44} | {secs:>9.3} | {:>13.2}", secs * 1e3 / n as f64);
    };
    row(
        format!("fleet, {} origins, all accept", opts.origins),
        fleet_t.as_secs_f64(),
        opts.origins,
    );
    row(
        "fleet + 1 lagging, refused (exit 1)".to_owned(),
        refused_t.as_secs_f64(),
        opts.origins + 1,
    );
    row(
        format!("--jobs 1, {baseline} origins"),
        one_t.as_secs_f64(),
        baseline,
    );
    row(
        format!("--jobs 1, scaled to {} origins", opts.origins),
        scaled,
        opts.origins,
    );
    println!(
        "RATIO activate sequential/concurrent={:.1} fleet_wall_s={:.3} target_s=2.0 within_target={}",
        scaled / fleet_t.as_secs_f64(),
        fleet_t.as_secs_f64(),
        fleet_t <= Duration::from_secs(2)
    );
    drop(fleet);
    Ok(())
}
