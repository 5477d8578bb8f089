//! `aop-origin demo`: the whole story on loopback, in a temporary directory, with none of
//! the user's files. Exit 0 iff every expectation held.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use aop_edge::{
    EdgeClient, IdentitySpec, IdentityStore, Observed, Resolve, StoreSpec, Target, Timeouts,
};
use aop_pki::{Ca, CaRequest, ClientRequest, KeyType, OriginRequest, Overwrite};
use http_body_util::{BodyExt as _, Empty, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

use crate::{Config, Guard};

const HOST: &str = "demo.example";

#[allow(clippy::print_stdout)] // the demo's output is its product
fn say(s: &str) {
    println!("{s}");
}

struct Check {
    what: &'static str,
    expected: &'static str,
    observed: String,
    held: bool,
}

/// Make a CA in `dir/name`.
fn make_ca(dir: &Path, name: &str, now: time::OffsetDateTime) -> anyhow::Result<Ca> {
    let req = CaRequest {
        days: 365,
        ..CaRequest::new(name)
    };
    Ok(req.create_in(&dir.join(name), now)?)
}

fn write(dir: &Path, name: &str, issued: &aop_pki::Issued) -> anyhow::Result<IdentitySpec> {
    let d = dir.join(name);
    std::fs::create_dir_all(&d)?;
    let spec = IdentitySpec::new(d.join("cert.pem"), d.join("key.pem"));
    aop_pki::write_issued(issued, &spec.cert, &spec.key, Overwrite::Refuse)?;
    Ok(spec)
}

/// The upstream: answers with the verdict headers it received, one per line.
async fn upstream(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut body = String::new();
    for h in crate::guard::VERDICT_HEADERS
        .iter()
        .chain(["x-request-id", "cf-connecting-ip"].iter())
    {
        if let Some(v) = req.headers().get(*h) {
            let _ = writeln!(body, "{h}: {}", String::from_utf8_lossy(v.as_bytes()));
        }
    }
    Ok(Response::new(Full::new(Bytes::from(body))))
}

pub(crate) async fn run() -> anyhow::Result<bool> {
    // Verdict lines go to stdout as they happen: the demo shows the origin's log.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "aop::verdict=info,aop::origin=warn",
        ))
        .with_writer(std::io::stdout)
        .event_format(aop_http::log::Logfmt)
        .try_init();
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    let now = time::OffsetDateTime::now_utc();
    say(&format!(
        "aop-origin demo — everything in {}\n",
        dir.display()
    ));

    say("1. certificates: an edge CA and the edge's client certificate, an origin CA and the");
    say("   origin's certificate, and someone else's CA and certificate");
    let edge_ca = make_ca(dir, "edge-ca", now)?;
    let origin_ca = make_ca(dir, "origin-ca", now)?;
    let foreign_ca = make_ca(dir, "someone-else-ca", now)?;
    let edge = write(
        dir,
        "edge",
        &edge_ca.issue_client(
            &ClientRequest {
                common_name: "edge".into(),
                sans: vec!["spiffe://demo/edge".into()],
                days: 30,
                key_type: KeyType::EcdsaP256,
            },
            now,
        )?,
    )?;
    let intruder = write(
        dir,
        "intruder",
        &foreign_ca.issue_client(
            &ClientRequest {
                common_name: "intruder".into(),
                sans: vec![],
                days: 30,
                key_type: KeyType::EcdsaP256,
            },
            now,
        )?,
    )?;
    write(
        dir,
        "origin",
        &origin_ca.issue_origin(
            &OriginRequest {
                hostnames: vec![HOST.into()],
                days: 30,
                key_type: KeyType::EcdsaP256,
            },
            now,
        )?,
    )?;

    say("2. a tiny upstream on loopback, and the guard in front of it");
    let up = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let up_addr = up.local_addr()?;
    tokio::spawn(async move {
        while let Ok((tcp, _)) = up.accept().await {
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), hyper::service::service_fn(upstream))
                    .await;
            });
        }
    });
    let config = format!(
        r#"listen = "127.0.0.1:0"
metrics_listen = "127.0.0.1:0"

[[site]]
hostnames = ["{HOST}"]
cert = "origin/cert.pem"
key = "origin/key.pem"
trust = ["edge-ca/ca.pem"]
upstream = "http://{up_addr}"
"#
    );
    let config_path = dir.join("origin.toml");
    std::fs::write(&config_path, &config)?;
    for line in config.lines() {
        say(&format!("     {line}"));
    }
    let guard = Guard::start(Config::read(&config_path)?).await?;
    let port = guard.listen_addr().port();
    let url = format!("https://{HOST}:{port}/");
    let resolve = Resolve::new([format!("{HOST}:{port}:127.0.0.1").parse()?]);
    say(&format!(
        "   guard on 127.0.0.1:{port}, upstream on {up_addr}\n"
    ));

    say("3. connections (the guard's verdict log follows each):");
    let roots = dir.join("origin-ca/ca.pem");
    let mut checks = Vec::new();

    // The edge, presenting its certificate — and trying to forge a verdict header.
    let mut spec = StoreSpec::new([&roots]);
    spec.shared = Some(edge.clone());
    let client: EdgeClient<Empty<Bytes>> = EdgeClient::new(
        IdentityStore::load(&spec)?,
        resolve.clone(),
        Timeouts::default(),
    );
    let req = Request::get(&url)
        .header("x-client-verify", "SUCCESS-forged-by-client")
        .body(Empty::new())?;
    let (held, observed) = match client.request(req).await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let body =
                String::from_utf8_lossy(&resp.into_body().collect().await?.to_bytes()).into_owned();
            let ok = status == 200
                && body.contains("x-client-verify: SUCCESS\n")
                && !body.contains("forged");
            (
                ok,
                format!(
                    "HTTP {status}; upstream saw {}",
                    body.lines().next().unwrap_or("nothing")
                ),
            )
        }
        Err(e) => (false, format!("error: {e}")),
    };
    checks.push(Check {
        what: "the edge, with its certificate",
        expected: "served",
        observed,
        held,
    });

    // Straight to the origin's address without a certificate, and with someone else's.
    for (what, identity) in [
        ("directly, no certificate", None),
        ("directly, someone else's certificate", Some(&intruder)),
    ] {
        let mut spec = StoreSpec::new([&roots]);
        spec.shared = identity.cloned();
        let store = IdentityStore::load(&spec)?;
        let config = match store.select(HOST) {
            Some(id) => id.client_config().clone(),
            None => store.anonymous().clone(),
        };
        let r = aop_edge::probe(
            &url.parse::<Target>()?,
            &resolve,
            config,
            Timeouts::default(),
        )
        .await;
        let (held, observed) = match &r.observed {
            Observed::RefusedTls { alert } => (true, format!("refused: TLS alert {alert}")),
            other => (false, format!("{other:?}")),
        };
        checks.push(Check {
            what,
            expected: "refused",
            observed,
            held,
        });
    }

    // The negative test, as an operator runs it.
    let anonymous = IdentityStore::load(&StoreSpec::new([&roots]))?
        .anonymous()
        .clone();
    let r = aop_edge::probe(
        &url.parse::<Target>()?,
        &resolve,
        anonymous,
        Timeouts::default(),
    )
    .await;
    checks.push(Check {
        what: "certtool probe --expect reject",
        expected: "held",
        observed: format!(
            "{} ({})",
            if r.observed.is_refusal() {
                "held"
            } else {
                "FAILED"
            },
            r.observed.word()
        ),
        held: r.observed.is_refusal(),
    });

    // Metrics agree. A client may see the refusal before the guard has counted it: the
    // counts are read until they are all there (each handshake's verdict line is written
    // before it is counted), for up to 10 s.
    let success =
        format!("aop_handshakes_total{{site=\"{HOST}\",verdict=\"SUCCESS\",reason=\"\"}} 1");
    let refused = format!(
        "aop_handshakes_total{{site=\"{HOST}\",verdict=\"NONE\",reason=\"no_certificate\"}} 2"
    );
    let unknown = format!(
        "aop_handshakes_total{{site=\"{HOST}\",verdict=\"FAILED\",reason=\"unknown_ca\"}} 1"
    );
    let counted = |metrics: &str| {
        [&success, &refused, &unknown]
            .iter()
            .all(|want| metrics.lines().any(|l| l == want.as_str()))
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let ok = loop {
        let metrics = match guard.metrics_addr() {
            Some(addr) => fetch(addr, "/metrics").await.unwrap_or_default(),
            None => String::new(),
        };
        if counted(&metrics) {
            break true;
        }
        if tokio::time::Instant::now() >= deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    checks.push(Check {
        what: "/metrics counts every verdict",
        expected: "1 / 2 / 1",
        observed: if ok {
            "SUCCESS 1, NONE 2, FAILED:unknown_ca 1".into()
        } else {
            "counts differ".into()
        },
        held: ok,
    });

    guard.shutdown(Duration::from_secs(5)).await;

    say("\n4. summary");
    let w = checks.iter().map(|c| c.what.len()).max().unwrap_or(10);
    say(&format!(
        "   {:<w$}  {:<10}  {:<6}  observed",
        "check", "expected", "result"
    ));
    for c in &checks {
        say(&format!(
            "   {:<w$}  {:<10}  {:<6}  {}",
            c.what,
            c.expected,
            if c.held { "PASS" } else { "FAIL" },
            c.observed
        ));
    }
    let all = checks.iter().all(|c| c.held);
    say(&format!(
        "\n{}",
        if all {
            "demo: every expectation held — only the edge gets in."
        } else {
            "demo: SOME EXPECTATIONS FAILED (see above)."
        }
    ));
    Ok(all)
}

/// GET a path over plain HTTP/1.1 from the metrics listener.
async fn fetch(addr: std::net::SocketAddr, path: &str) -> anyhow::Result<String> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    let resp = send
        .send_request(
            Request::get(path)
                .header("host", "metrics")
                .body(Empty::<Bytes>::new())?,
        )
        .await?;
    Ok(String::from_utf8_lossy(&resp.into_body().collect().await?.to_bytes()).into_owned())
}
