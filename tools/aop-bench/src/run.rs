//! The benchmark run: certificates, servers, phases, table, ratios.

#![allow(clippy::print_stdout)] // the table is the product

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use aop_pki::{Ca, CaRequest, ClientRequest, KeyType, OriginRequest, Overwrite};
use rustls::ClientConfig;

use crate::load::{self, Stats};
use crate::procfs;

/// Flags of a run.
#[derive(Debug, clap::Args)]
pub(crate) struct Options {
    /// Seconds per phase (each phase also stops at --max-ops).
    #[arg(long, default_value_t = 2)]
    seconds: u64,
    /// Rounds: every server is measured this many times, interleaved, and the median
    /// round is reported (the machine is noisy; one round varies by ±5–10%).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Concurrent clients for the handshake phases.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Keep-alive connections for the request phases (HTTP/1.1 and HTTP/2).
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Concurrent streams per connection in the HTTP/2 request phase.
    #[arg(long, default_value_t = 10)]
    streams: usize,
    /// Idle connections held open for the memory phase.
    #[arg(long, default_value_t = 1000)]
    idle: usize,
    /// Upper bound of operations per phase.
    #[arg(long, default_value_t = 200_000)]
    max_ops: u64,
    /// Servers to run (aop, aop-nolog, rustls, nginx; also rustls-aoptls: bare rustls
    /// with aop's TLS settings), comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "aop,aop-nolog,rustls,rustls-aoptls,nginx"
    )]
    only: Vec<String>,
    /// Phases to run, comma-separated; the others are shown as 0. For profiling one
    /// phase of one server (e.g. under `perf record`).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "full,resumed,req,h2,idle"
    )]
    phases: Vec<Phase>,
}

/// A phase of a server's measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Phase {
    /// Full handshakes.
    Full,
    /// Resumed handshakes.
    Resumed,
    /// Keep-alive requests (HTTP/1.1).
    Req,
    /// Requests over HTTP/2: --connections × --streams at once.
    H2,
    /// Memory per idle connection.
    Idle,
    /// Resumption across a fleet (not in the default run): two aop-origins, each client
    /// alternating between them with a session store of its own, measured three ways —
    /// the stateful session cache (no ticket keys), one ticket key file shared by both,
    /// and a key file each — for the resumed fraction, handshakes per second and the two
    /// origins' CPU per handshake.
    Fleet,
}

struct Certs {
    edge_ca: PathBuf,
    edge: (PathBuf, PathBuf),
    origin_ca: PathBuf,
    origin: (PathBuf, PathBuf),
}

fn make_certs(dir: &Path) -> anyhow::Result<Certs> {
    let now = time::OffsetDateTime::now_utc();
    let ca = |name: &str| -> anyhow::Result<Ca> {
        let req = CaRequest {
            days: 365,
            ..CaRequest::new(name)
        };
        Ok(req.create_in(&dir.join(name), now)?)
    };
    let edge_ca = ca("edge-ca")?;
    let origin_ca = ca("origin-ca")?;
    let edge = edge_ca.issue_client(
        &ClientRequest {
            common_name: "edge".into(),
            sans: vec![],
            days: 90,
            key_type: KeyType::EcdsaP256,
        },
        now,
    )?;
    let origin = origin_ca.issue_origin(
        &OriginRequest {
            hostnames: vec![load::SNI.into()],
            days: 90,
            key_type: KeyType::EcdsaP256,
        },
        now,
    )?;
    let write = |name: &str, issued: &aop_pki::Issued| -> anyhow::Result<(PathBuf, PathBuf)> {
        let d = dir.join(name);
        std::fs::create_dir_all(&d)?;
        let (c, k) = (d.join("cert.pem"), d.join("key.pem"));
        aop_pki::write_issued(issued, &c, &k, Overwrite::Refuse)?;
        Ok((c, k))
    };
    Ok(Certs {
        edge_ca: dir.join("edge-ca/ca.pem"),
        edge: write("edge", &edge)?,
        origin_ca: dir.join("origin-ca/ca.pem"),
        origin: write("origin", &origin)?,
    })
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Wait until nothing listens on `port` any more (a server stopped: its port free for the
/// next one), with a deadline.
fn wait_closed(port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "127.0.0.1:{port} still listens after its server stopped"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// The sum of an aop-origin's `aop_handshakes_resumed_total` over its sites, from its
/// `/metrics` on `port`: the server's own count of resumed handshakes.
fn resumed_total(port: u16) -> anyhow::Result<u64> {
    use std::io::{Read as _, Write as _};
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port))?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")?;
    let mut text = String::new();
    tcp.read_to_string(&mut text)?;
    anyhow::ensure!(
        text.starts_with("HTTP/1.1 200"),
        "127.0.0.1:{port}/metrics: {}",
        text.lines().next().unwrap_or("no answer")
    );
    let mut total = 0;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("aop_handshakes_resumed_total") {
            let value = rest.rsplit(' ').next().unwrap_or_default();
            total += value
                .parse::<u64>()
                .with_context(|| format!("127.0.0.1:{port}/metrics: {line:?}"))?;
        }
    }
    Ok(total)
}

fn wait_port(port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "nothing listens on 127.0.0.1:{port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Pin to a CPU with `taskset` where the machine has two or more and taskset exists.
fn pinned(cpu: Option<usize>, program: &Path) -> Command {
    match cpu {
        Some(c) => {
            let mut cmd = Command::new("taskset");
            cmd.args(["-c", &c.to_string()]).arg(program);
            cmd
        }
        None => Command::new(program),
    }
}

struct Server {
    name: &'static str,
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGTERM first: nginx's master takes its workers down with it.
        aop_e2e::stop(&mut self.child, Duration::from_secs(5));
    }
}

impl Server {
    /// The pid whose family owns the work (under taskset, taskset execs the program).
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

fn aop_origin_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe.with_file_name("aop-origin");
    // Under `cargo run` (CARGO is set), build it every time: a no-op when it is fresh,
    // and never a stale guard measured after a change to aop-origin (`cargo run -p
    // aop-bench` builds only aop-bench).
    if !bin.exists() || std::env::var_os("CARGO").is_some() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "-p", "aop-origin"]);
        if exe
            .parent()
            .and_then(Path::file_name)
            .is_some_and(|n| n == "release")
        {
            cmd.arg("--release");
        }
        anyhow::ensure!(cmd.status()?.success(), "cannot build aop-origin");
    }
    Ok(bin)
}

/// Start server `name`. `in_flight` is the most requests the bench has in flight at once
/// (nginx keeps that many upstream connections alive, as aop's pool does).
fn start(
    name: &'static str,
    dir: &Path,
    certs: &Certs,
    upstream: u16,
    in_flight: usize,
    cpu: Option<usize>,
) -> anyhow::Result<Server> {
    let port = free_port()?;
    let child = match name {
        "aop" | "aop-nolog" => {
            let d = dir.join(name);
            std::fs::create_dir_all(&d)?;
            let config = d.join("origin.toml");
            std::fs::write(
                &config,
                format!(
                    "listen = \"127.0.0.1:{port}\"\nlog_format = \"json\"\n\n[[site]]\nhostnames = [\"{}\"]\ncert = \"{}\"\nkey = \"{}\"\ntrust = [\"{}\"]\nupstream = \"http://127.0.0.1:{upstream}\"\n",
                    load::SNI,
                    certs.origin.0.display(),
                    certs.origin.1.display(),
                    certs.edge_ca.display()
                ),
            )?;
            let log = std::fs::File::create(d.join("verdicts.log"))?;
            let mut cmd = pinned(cpu, &aop_origin_binary()?);
            cmd.args(["--config", config.to_str().unwrap_or_default()]);
            cmd.env("RUST_LOG", if name == "aop" { "info" } else { "off" });
            cmd.stdout(Stdio::null()).stderr(log).spawn()?
        }
        "rustls" | "rustls-aoptls" => {
            let mut cmd = pinned(cpu, &std::env::current_exe()?);
            cmd.args(["serve-rustls", "--listen", &format!("127.0.0.1:{port}")])
                .args([
                    "--cert",
                    certs.origin.0.to_str().unwrap_or_default(),
                    "--key",
                    certs.origin.1.to_str().unwrap_or_default(),
                ])
                .args([
                    "--ca",
                    certs.edge_ca.to_str().unwrap_or_default(),
                    "--upstream",
                    &format!("127.0.0.1:{upstream}"),
                ]);
            if name == "rustls-aoptls" {
                cmd.arg("--aop-tls");
            }
            cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn()?
        }
        "nginx" => {
            let bin = aop_e2e::nginx::binary().context("nginx is not installed")?;
            let d = dir.join("nginx");
            std::fs::create_dir_all(&d)?;
            let http = format!(
                r#"    upstream up {{ server 127.0.0.1:{upstream}; keepalive {keepalive}; }}
    server {{
        listen 127.0.0.1:{port} ssl http2;
        server_name {sni};
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_verify_client on;
        ssl_client_certificate {ca};
        ssl_session_cache shared:SSL:10m;
        ssl_session_tickets on;
        # aop's max_requests_per_connection (and nginx's default): both make the
        # bench's client reconnect every 1000 requests, HTTP/2 streams included.
        keepalive_requests 1000;
        location / {{
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}"#,
                sni = load::SNI,
                cert = certs.origin.0.display(),
                key = certs.origin.1.display(),
                ca = certs.edge_ca.display(),
                keepalive = in_flight.max(32),
            );
            std::fs::write(
                d.join("nginx.conf"),
                aop_e2e::nginx::config(&d, 4096, &http),
            )?;
            let mut cmd = pinned(cpu, &bin);
            cmd.args([
                "-p",
                d.to_str().unwrap_or_default(),
                "-c",
                d.join("nginx.conf").to_str().unwrap_or_default(),
            ]);
            cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn()?
        }
        other => {
            anyhow::bail!("unknown server {other:?} (aop, aop-nolog, rustls, rustls-aoptls, nginx)")
        }
    };
    let server = Server { name, child, port };
    wait_port(port).with_context(|| format!("{name} did not start"))?;
    Ok(server)
}

/// The edge's client configuration: its certificate, the origin's CA, ALPN `alpn` only.
fn client_config(certs: &Certs, resume: bool, alpn: &[u8]) -> anyhow::Result<Arc<ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for c in aop_pki::load_certificates(&certs.origin_ca)? {
        roots.add(c)?;
    }
    let mut config = ClientConfig::builder_with_provider(aop_pki::default_provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(
            aop_pki::load_certificates(&certs.edge.0)?,
            aop_pki::load_private_key(&certs.edge.1)?,
        )?;
    config.alpn_protocols = vec![alpn.to_vec()];
    if !resume {
        config.resumption = rustls::client::Resumption::disabled();
    }
    Ok(Arc::new(config))
}

#[derive(Default, Clone)]
struct Row {
    name: &'static str,
    full: Stats,
    full_cpu_us: f64,
    resumed: Stats,
    resumed_cpu_us: f64,
    req: Stats,
    req_cpu_us: f64,
    h2: Stats,
    h2_cpu_us: f64,
    idle_kib: f64,
}

fn measure<F: Future<Output = Stats>>(
    rt: &tokio::runtime::Runtime,
    pid: u32,
    f: F,
) -> (Stats, f64) {
    let before = procfs::cpu_seconds(pid);
    let stats = rt.block_on(f);
    let cpu = procfs::cpu_seconds(pid) - before;
    // A phase that served nothing has no CPU per operation (0: shown, never compared).
    let per_op_us = if stats.ops == 0 {
        0.0
    } else {
        cpu * 1e6 / stats.ops as f64
    };
    (stats, per_op_us)
}

pub(crate) fn run(opts: Options) -> anyhow::Result<()> {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let taskset = Command::new("taskset").arg("--version").output().is_ok();
    let (server_cpu, client_cpu) = if cpus >= 2 && taskset {
        (Some(1), Some(0))
    } else {
        (None, None)
    };
    if let Some(c) = client_cpu {
        let _ = Command::new("taskset")
            .args(["-cp", &c.to_string(), &std::process::id().to_string()])
            .output();
    }
    let tmp = tempfile::tempdir()?;
    let certs = make_certs(tmp.path())?;
    let duration = Duration::from_secs(opts.seconds);
    println!(
        "aop-bench: {cpus} CPUs; servers pinned to {}, client to {}; {} s per phase (at most {} ops), {} rounds (median reported); {} concurrent handshakes, {} keep-alive connections, {} idle connections",
        server_cpu.map_or("-".into(), |c| format!("cpu{c}")),
        client_cpu.map_or("-".into(), |c| format!("cpu{c}")),
        opts.seconds,
        opts.max_ops,
        opts.rounds,
        opts.concurrency,
        opts.connections,
        opts.idle
    );

    let floor = crate::floor::measure(
        &aop_pki::load_certificates(&certs.edge.0)?[0],
        &aop_pki::load_private_key(&certs.edge.1)?,
    )?;

    let upstream_port = free_port()?;
    let mut upstream = pinned(client_cpu, &std::env::current_exe()?)
        .args([
            "serve-upstream",
            "--listen",
            &format!("127.0.0.1:{upstream_port}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    wait_port(upstream_port)?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cpus.min(2))
        .enable_all()
        .build()?;
    let fresh = client_config(&certs, false, b"http/1.1")?;
    let resuming = client_config(&certs, true, b"http/1.1")?;
    let h2 = client_config(&certs, false, b"h2")?;
    let mut all: Vec<(&'static str, Vec<Row>)> = Vec::new();
    let per_server = opts.phases.iter().any(|p| *p != Phase::Fleet);
    let mut fleet: Vec<(Fleet, Vec<FleetRow>)> = Vec::new();
    for round in 0..opts.rounds.max(1) {
        println!("round {}/{}", round + 1, opts.rounds.max(1));
        if opts.phases.contains(&Phase::Fleet) {
            for mode in [Fleet::Stateful, Fleet::OneKeyFile, Fleet::TwoKeyFiles] {
                let row = measure_fleet(
                    &rt,
                    mode,
                    tmp.path(),
                    &certs,
                    upstream_port,
                    server_cpu,
                    &resuming,
                    &opts,
                )?;
                println!(
                    "  fleet {:<13} done: {} handshakes ({} errors), {} resumed ({} by the origins' aop_handshakes_resumed_total)",
                    mode.name(),
                    row.stats.ops,
                    row.stats.errors,
                    row.stats.resumed,
                    row.origin_resumed
                );
                if row.origin_resumed != row.stats.resumed {
                    println!(
                        "  WARNING: the clients counted {} resumed handshakes, the origins {}",
                        row.stats.resumed, row.origin_resumed
                    );
                }
                match fleet.iter_mut().find(|(m, _)| *m == mode) {
                    Some((_, v)) => v.push(row),
                    None => fleet.push((mode, vec![row])),
                }
            }
        }
        for name in opts.only.iter().filter(|_| per_server) {
            let name: &'static str = match name.as_str() {
                "aop" => "aop",
                "aop-nolog" => "aop-nolog",
                "rustls" => "rustls",
                "rustls-aoptls" => "rustls-aoptls",
                "nginx" => "nginx",
                other => anyhow::bail!("unknown server {other:?}"),
            };
            if name == "nginx" && aop_e2e::nginx::binary().is_none() {
                println!("nginx: SKIPPED (not installed; apt-get install nginx)");
                continue;
            }
            let in_flight = opts.connections * opts.streams.max(1);
            let server = start(
                name,
                tmp.path(),
                &certs,
                upstream_port,
                in_flight,
                server_cpu,
            )?;
            let addr: SocketAddr = ([127, 0, 0, 1], server.port).into();
            let pid = server.pid();
            let handshakes = |config: &Arc<ClientConfig>, time, max| {
                load::handshakes(config.clone(), addr, opts.concurrency, time, max)
            };
            // Warm up (and fill the server's caches the way a busy edge would).
            rt.block_on(handshakes(&fresh, Duration::from_secs(1), 500));
            let mut row = Row {
                name: server.name,
                ..Row::default()
            };
            let phase = |p| opts.phases.contains(&p);
            if phase(Phase::Full) {
                (row.full, row.full_cpu_us) =
                    measure(&rt, pid, handshakes(&fresh, duration, opts.max_ops));
            }
            if phase(Phase::Resumed) {
                // Sessions to resume first.
                rt.block_on(handshakes(&resuming, Duration::from_millis(300), 200));
                (row.resumed, row.resumed_cpu_us) =
                    measure(&rt, pid, handshakes(&resuming, duration, opts.max_ops));
            }
            if phase(Phase::Req) {
                (row.req, row.req_cpu_us) = measure(
                    &rt,
                    pid,
                    load::requests(
                        fresh.clone(),
                        addr,
                        opts.connections,
                        duration,
                        opts.max_ops,
                    ),
                );
            }
            if phase(Phase::H2) {
                (row.h2, row.h2_cpu_us) = measure(
                    &rt,
                    pid,
                    load::h2_requests(
                        h2.clone(),
                        addr,
                        opts.connections,
                        opts.streams,
                        duration,
                        opts.max_ops,
                    ),
                );
            }
            if phase(Phase::Idle) {
                let before = procfs::rss_kib(pid);
                let (held, _) = rt.block_on(load::idle(fresh.clone(), addr, opts.idle));
                std::thread::sleep(Duration::from_millis(500));
                let after = procfs::rss_kib(pid);
                row.idle_kib = after.saturating_sub(before) as f64 / held.len().max(1) as f64;
                drop(held);
            }
            println!(
                "  {:<13} done: {} full ({} errors), {} resumed of {}, {} requests ({} errors, {} reconnections), {} h2 requests ({} errors, {} reconnections)",
                name,
                row.full.ops,
                row.full.errors,
                row.resumed.resumed,
                row.resumed.ops,
                row.req.ops,
                row.req.errors,
                row.req.reconnects,
                row.h2.ops,
                row.h2.errors,
                row.h2.reconnects
            );
            match all.iter_mut().find(|(n, _)| *n == name) {
                Some((_, v)) => v.push(row),
                None => all.push((name, vec![row])),
            }
            let port = server.port;
            drop(server);
            wait_closed(port)?;
        }
    }
    let rows: Vec<Row> = all.into_iter().map(|(_, v)| median(v)).collect();
    let _ = upstream.kill();
    let _ = upstream.wait();
    if per_server {
        report(&rows, &floor);
    }
    if !fleet.is_empty() {
        report_fleet(&fleet);
    }
    Ok(())
}

/// How the two origins of the fleet phase resume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fleet {
    /// No ticket keys: each origin's stateful session cache (the baseline).
    Stateful,
    /// `session_ticket_keys` naming one key file, the same for both.
    OneKeyFile,
    /// A key file each.
    TwoKeyFiles,
}

impl Fleet {
    fn name(self) -> &'static str {
        match self {
            Self::Stateful => "stateful",
            Self::OneKeyFile => "one-key-file",
            Self::TwoKeyFiles => "two-key-files",
        }
    }
}

struct FleetRow {
    /// What the clients saw (`resumed`: their handshakes of kind Resumed).
    stats: Stats,
    /// Resumed handshakes by the origins' own count (`aop_handshakes_resumed_total`,
    /// both origins, over the measured phase): a cross-check of `stats.resumed`.
    origin_resumed: u64,
    /// Both origins' CPU per handshake, µs.
    cpu_us: f64,
}

/// A ticket key file of 80 random bytes, 0600 (nginx's format).
fn ticket_key(path: &Path) -> anyhow::Result<()> {
    let mut bytes = [0u8; 80];
    aop_pki::default_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("no randomness"))?;
    aop_pki::write_atomic(path, &bytes, aop_pki::FileMode::Secret, Overwrite::Replace)?;
    Ok(())
}

/// Start two aop-origins resuming as `mode` says, warm them up, and measure clients
/// alternating between them for a phase.
#[allow(clippy::too_many_arguments)] // one call site, every argument a different thing
fn measure_fleet(
    rt: &tokio::runtime::Runtime,
    mode: Fleet,
    dir: &Path,
    certs: &Certs,
    upstream: u16,
    cpu: Option<usize>,
    client: &Arc<ClientConfig>,
    opts: &Options,
) -> anyhow::Result<FleetRow> {
    let d = dir.join("fleet").join(mode.name());
    std::fs::create_dir_all(&d)?;
    let keys = match mode {
        Fleet::Stateful => [None, None],
        Fleet::OneKeyFile => {
            ticket_key(&d.join("shared.key"))?;
            [Some(d.join("shared.key")), Some(d.join("shared.key"))]
        }
        Fleet::TwoKeyFiles => {
            ticket_key(&d.join("a.key"))?;
            ticket_key(&d.join("b.key"))?;
            [Some(d.join("a.key")), Some(d.join("b.key"))]
        }
    };
    let mut origins = Vec::new();
    for (name, key) in ["A", "B"].into_iter().zip(keys) {
        let od = d.join(name);
        std::fs::create_dir_all(&od)?;
        let port = free_port()?;
        let metrics = free_port()?;
        let config = od.join("origin.toml");
        let tickets = key.map_or(String::new(), |k| {
            format!("session_ticket_keys = [{:?}]\n", k.display().to_string())
        });
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:{port}\"\nmetrics_listen = \"127.0.0.1:{metrics}\"\nlog_format = \"json\"\n{tickets}\n[[site]]\nhostnames = [\"{}\"]\ncert = \"{}\"\nkey = \"{}\"\ntrust = [\"{}\"]\nupstream = \"http://127.0.0.1:{upstream}\"\n",
                load::SNI,
                certs.origin.0.display(),
                certs.origin.1.display(),
                certs.edge_ca.display()
            ),
        )?;
        let log = std::fs::File::create(od.join("verdicts.log"))?;
        let mut cmd = pinned(cpu, &aop_origin_binary()?);
        cmd.args(["--config", config.to_str().unwrap_or_default()]);
        cmd.env("RUST_LOG", "info");
        let child = cmd.stdout(Stdio::null()).stderr(log).spawn()?;
        let server = Server {
            name: "aop",
            child,
            port,
        };
        wait_port(port).with_context(|| format!("fleet origin {name} did not start"))?;
        wait_port(metrics).with_context(|| format!("fleet origin {name}'s metrics"))?;
        origins.push((server, metrics));
    }
    let addrs: [SocketAddr; 2] = [
        ([127, 0, 0, 1], origins[0].0.port).into(),
        ([127, 0, 0, 1], origins[1].0.port).into(),
    ];
    let resumed =
        || -> anyhow::Result<u64> { origins.iter().map(|(_, m)| resumed_total(*m)).sum() };
    let run = |time, max| load::alternating(client.clone(), addrs, opts.concurrency, time, max);
    rt.block_on(run(Duration::from_secs(1), 500));
    let resumed_before = resumed()?;
    let before: f64 = origins
        .iter()
        .map(|(o, _)| procfs::cpu_seconds(o.pid()))
        .sum();
    let stats = rt.block_on(run(Duration::from_secs(opts.seconds), opts.max_ops));
    let cpu: f64 = origins
        .iter()
        .map(|(o, _)| procfs::cpu_seconds(o.pid()))
        .sum::<f64>()
        - before;
    let origin_resumed = resumed()?.saturating_sub(resumed_before);
    let cpu_us = if stats.ops == 0 {
        0.0
    } else {
        cpu * 1e6 / stats.ops as f64
    };
    let ports: Vec<u16> = origins.iter().map(|(o, _)| o.port).collect();
    drop(origins);
    for port in ports {
        wait_closed(port)?;
    }
    Ok(FleetRow {
        stats,
        origin_resumed,
        cpu_us,
    })
}

/// The fleet table (the median round of each mode, by CPU per handshake) and its ratios
/// against the stateful cache measured in the same run.
fn report_fleet(fleet: &[(Fleet, Vec<FleetRow>)]) {
    let median = |rows: &[FleetRow]| -> (f64, f64, f64, usize) {
        let mut i: Vec<usize> = (0..rows.len()).collect();
        i.sort_by(|a, b| rows[*a].cpu_us.total_cmp(&rows[*b].cpu_us));
        let r = &rows[i[i.len() / 2]];
        let resumed = r.stats.resumed as f64 / (r.stats.ops.max(1)) as f64;
        (resumed, r.stats.per_sec(), r.cpu_us, i[i.len() / 2])
    };
    println!();
    println!(
        "{:<15} | {:>9} {:>9} {:>7} {:>7} {:>9} | {:>12} {:>12}",
        "fleet (2 aop)",
        "resumed",
        "hs/s",
        "p50 ms",
        "p99 ms",
        "CPU µs/hs",
        "hs/s ratio",
        "CPU ratio"
    );
    let base = fleet
        .iter()
        .find(|(m, _)| *m == Fleet::Stateful)
        .map(|(_, rows)| median(rows));
    for (mode, rows) in fleet {
        let (resumed, rate, cpu, at) = median(rows);
        let r = &rows[at];
        let (rate_ratio, cpu_ratio) = match base {
            Some((_, brate, bcpu, _)) if brate > 0.0 && cpu > 0.0 => {
                (format!("{:.2}", rate / brate), format!("{:.2}", bcpu / cpu))
            }
            _ => ("-".into(), "-".into()),
        };
        println!(
            "{:<15} | {:>8.1}% {:>9.0} {:>7.2} {:>7.2} {:>9.0} | {:>12} {:>12}",
            mode.name(),
            100.0 * resumed,
            rate,
            ms(r.stats.percentile(0.5)),
            ms(r.stats.percentile(0.99)),
            cpu,
            rate_ratio,
            cpu_ratio
        );
    }
    println!(
        "FLEET clients alternate between two aop-origins, each with a session store of its own; ratios against the stateful cache in this run (hs/s: higher is better; CPU: stateful CPU per handshake ÷ this mode's)"
    );
}

/// The median round of a server: each CPU figure is the median of its rounds; throughput
/// and latencies come from the round with the median full-handshake CPU.
fn median(mut rounds: Vec<Row>) -> Row {
    fn mid(mut v: Vec<f64>) -> f64 {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    }
    let full = mid(rounds.iter().map(|r| r.full_cpu_us).collect());
    let resumed = mid(rounds.iter().map(|r| r.resumed_cpu_us).collect());
    let req = mid(rounds.iter().map(|r| r.req_cpu_us).collect());
    let h2 = mid(rounds.iter().map(|r| r.h2_cpu_us).collect());
    let idle = mid(rounds.iter().map(|r| r.idle_kib).collect());
    rounds.sort_by(|a, b| a.full_cpu_us.total_cmp(&b.full_cpu_us));
    let n = rounds.len();
    let mut row = rounds.swap_remove(n / 2);
    row.full_cpu_us = full;
    row.resumed_cpu_us = resumed;
    row.req_cpu_us = req;
    row.h2_cpu_us = h2;
    row.idle_kib = idle;
    row
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn report(rows: &[Row], floor: &crate::floor::Floor) {
    println!();
    println!(
        "{:<13} | {:>9} {:>7} {:>7} {:>9} | {:>9} {:>7} {:>9} | {:>9} {:>7} {:>7} {:>9} | {:>9} {:>7} {:>7} {:>9} | {:>10}",
        "server",
        "full hs/s",
        "p50 ms",
        "p99 ms",
        "CPU µs/hs",
        "resumed/s",
        "resumed",
        "CPU µs/hs",
        "req/s",
        "p50 ms",
        "p99 ms",
        "CPU µs/req",
        "h2 req/s",
        "p50 ms",
        "p99 ms",
        "CPU µs/req",
        "KiB/idle"
    );
    for r in rows {
        let resumed_share = if r.resumed.ops > 0 {
            format!(
                "{:.0}%",
                100.0 * r.resumed.resumed as f64 / r.resumed.ops as f64
            )
        } else {
            "-".into()
        };
        println!(
            "{:<13} | {:>9.0} {:>7.2} {:>7.2} {:>9.0} | {:>9.0} {:>7} {:>9.0} | {:>9.0} {:>7.2} {:>7.2} {:>9.1} | {:>9.0} {:>7.2} {:>7.2} {:>9.1} | {:>10.1}",
            r.name,
            r.full.per_sec(),
            ms(r.full.percentile(0.5)),
            ms(r.full.percentile(0.99)),
            r.full_cpu_us,
            r.resumed.per_sec(),
            resumed_share,
            r.resumed_cpu_us,
            r.req.per_sec(),
            ms(r.req.percentile(0.5)),
            ms(r.req.percentile(0.99)),
            r.req_cpu_us,
            r.h2.per_sec(),
            ms(r.h2.percentile(0.5)),
            ms(r.h2.percentile(0.99)),
            r.h2_cpu_us,
            r.idle_kib
        );
    }
    let get = |n: &str| rows.iter().find(|r| r.name == n);
    let ratio = |base: Option<&Row>, f: fn(&Row) -> f64| -> String {
        match (base, get("aop")) {
            (Some(b), Some(a)) if f(a) > 0.0 && f(b) > 0.0 => format!("{:.2}", f(b) / f(a)),
            _ => "-".into(),
        }
    };
    let log_cost = |f: fn(&Row) -> f64| match (get("aop"), get("aop-nolog")) {
        (Some(a), Some(n)) if f(n) > 0.0 => format!("{:+.1}%", 100.0 * (f(a) / f(n) - 1.0)),
        _ => "-".into(),
    };
    println!(
        "FLOOR (µs of CPU per operation, this machine, this run): X25519 {:.1}, P-256 sign {:.1}, P-256 verify {:.1}; server side of a full mTLS handshake {:.0} ({:.0} with the chain cached), of a resumed one {:.0}",
        floor.x25519_us,
        floor.sign_us,
        floor.verify_us,
        floor.full_us(),
        floor.full_cached_us(),
        floor.x25519_us,
    );
    println!(
        "RATIO full aop/rustls={} aop/nginx={} resumed aop/rustls={} aop/nginx={} resumed/full(aop)={} req aop/rustls={} aop/nginx={} h2 aop/rustls={} aop/nginx={} mem nginx/aop={} json_log_cost full={} resumed={}",
        ratio(get("rustls"), |r| r.full_cpu_us),
        ratio(get("nginx"), |r| r.full_cpu_us),
        ratio(get("rustls"), |r| r.resumed_cpu_us),
        ratio(get("nginx"), |r| r.resumed_cpu_us),
        get("aop").map_or("-".into(), |a| if a.resumed_cpu_us > 0.0 {
            format!("{:.2}", a.full_cpu_us / a.resumed_cpu_us)
        } else {
            "-".into()
        }),
        ratio(get("rustls"), |r| r.req_cpu_us),
        ratio(get("nginx"), |r| r.req_cpu_us),
        ratio(get("rustls"), |r| r.h2_cpu_us),
        ratio(get("nginx"), |r| r.h2_cpu_us),
        ratio(get("nginx"), |r| r.idle_kib),
        log_cost(|r| r.full_cpu_us),
        log_cost(|r| r.resumed_cpu_us),
    );
}
