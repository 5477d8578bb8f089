//! Host smuggling: a client let in under one site's trust (here the shared default site)
//! names another site's hostname in a way a loose parser would not recognise, hoping the
//! request falls to its own site while an upstream that routes by Host serves the other
//! tenant. Every name must parse strictly (400 otherwise), and a name that belongs to
//! another site is 421 on every site, the default included.

use aop_e2e::guard::{Guard, Reply, client_config, connect, exchange, vhosts};
use aop_e2e::pki::{self, Leaf};
use aop_e2e::tempdir;

struct Tenants {
    _dir: aop_e2e::TempDir,
    _upstream: aop_e2e::nginx::Nginx,
    guard: Guard,
    roots: std::path::PathBuf,
    edge_a: Leaf,
    edge_c: Leaf,
}

/// A site for `a.test` trusting CA-A and a default site trusting CA-C, both in front of
/// nginx vhosts: `a.test` answers "tenant A", anything else "tenant C".
fn tenants() -> Option<Tenants> {
    if !aop_e2e::have_peer("nginx", "hostile::host") {
        return None;
    }
    let dir = tempdir().unwrap();
    let d = dir.path();
    let origin_ca = pki::ca(d, "origin-ca");
    origin_ca.origin("origin", &["a.test", "c.test"]);
    let edge_a = pki::ca(d, "ca-a").client("edge-a");
    let edge_c = pki::ca(d, "ca-c").client("edge-c");
    let upstream = vhosts(
        &d.join("nginx"),
        &[("_", "tenant C"), ("a.test", "tenant A")],
    );
    let site = |head: &str, trust: &str| {
        format!(
            "\n[[site]]\n{head}\ncert = \"origin-ca/origin/cert.pem\"\nkey = \"origin-ca/origin/key.pem\"\n\
             trust = [\"{trust}/ca.pem\"]\nupstream = \"http://127.0.0.1:{}\"\n",
            upstream.port
        )
    };
    let config = format!(
        "{}{}",
        site("name = \"tenant-a\"\nhostnames = [\"a.test\"]", "ca-a"),
        site("name = \"shared\"\ndefault = true", "ca-c")
    );
    let guard = Guard::start(d, &config);
    Some(Tenants {
        roots: origin_ca.pem(),
        _dir: dir,
        _upstream: upstream,
        guard,
        edge_a,
        edge_c,
    })
}

impl Tenants {
    /// One request on a fresh connection: as the shared edge without SNI, or as tenant
    /// A's edge with SNI a.test.
    async fn send(&self, tenant_a: bool, request: &str) -> Reply {
        let (leaf, sni) = if tenant_a {
            (&self.edge_a, true)
        } else {
            (&self.edge_c, false)
        };
        let config = client_config(&self.roots, Some(leaf));
        let mut tls = connect(self.guard.addr(), "a.test", sni, &config)
            .await
            .expect("the handshake passes: the attack is after it");
        exchange(&mut tls, request.as_bytes()).await
    }
}

fn get(host_lines: &str) -> String {
    format!("GET / HTTP/1.1\r\n{host_lines}Connection: close\r\n\r\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_the_default_site_cannot_parse_or_does_not_own_never_reaches_the_upstream() {
    let Some(t) = tenants() else { return };
    // The door works for the legitimate cases (the controls).
    let r = t.send(false, &get("Host: c.test\r\n")).await;
    assert_eq!((r.status, r.body()), (200, "tenant C\n"), "{}", r.text);
    let r = t.send(true, &get("Host: a.test\r\n")).await;
    assert_eq!((r.status, r.body()), (200, "tenant A\n"), "{}", r.text);
    let r = t.send(false, &get("Host: [::1]:443\r\n")).await;
    assert_eq!((r.status, r.body()), (200, "tenant C\n"), "{}", r.text);

    let mut bad = 0;
    // Unparsable authorities naming tenant A, from the shared edge: 400, never A's page.
    for host in [
        "a.test:80x",
        "a.test:+443",
        "a.test:443:1",
        "a.test:9443x",
        "a.test:",
        "a.test:65536",
        "user@a.test",
        "a.test/x",
        "a..test",
        "%61.test",
        "a.test,c.test",
        "[::1",
        "",
    ] {
        let r = t.send(false, &get(&format!("Host: {host}\r\n"))).await;
        assert_eq!(r.status, 400, "Host {host:?}: {}", r.text);
        assert!(
            !r.text.contains("tenant"),
            "Host {host:?} reached the upstream: {}",
            r.text
        );
        bad += 1;
    }
    // Tenant A's name, however spelt: 421 on the default site.
    for host in ["a.test", "A.TEST", "a.test.", "a.test:443", "a.test:0443"] {
        let r = t.send(false, &get(&format!("Host: {host}\r\n"))).await;
        assert_eq!(r.status, 421, "Host {host:?}: {}", r.text);
        assert!(!r.text.contains("tenant"), "{}", r.text);
    }
    // And the other way: tenant A's connection cannot name the shared site's hosts.
    let r = t.send(true, &get("Host: c.test\r\n")).await;
    assert_eq!(r.status, 421, "{}", r.text);
    let r = t.send(true, &get("Host: a.test:443:1\r\n")).await;
    assert_eq!(r.status, 400, "{}", r.text);
    bad += 1;
    // Two Host headers: 400 even when both would pass; none: 400.
    let r = t
        .send(false, &get("Host: c.test\r\nHost: c.test\r\n"))
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    let r = t
        .send(false, &get("Host: c.test\r\nHost: a.test\r\n"))
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    let r = t.send(false, &get("")).await;
    assert_eq!(r.status, 400, "{}", r.text);
    bad += 3;
    // Absolute-form targets: the authority is checked like a Host.
    let r = t
        .send(
            false,
            "GET http://a.test/ HTTP/1.1\r\nHost: c.test\r\nConnection: close\r\n\r\n",
        )
        .await;
    assert_eq!(r.status, 421, "{}", r.text);
    assert!(!r.text.contains("tenant"), "{}", r.text);
    let r = t
        .send(
            false,
            "GET http://a.test:80x/ HTTP/1.1\r\nHost: c.test\r\nConnection: close\r\n\r\n",
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(!r.text.contains("tenant"), "{}", r.text);
    bad += 1;
    // CONNECT: to another tenant 421, to its own site 405, never forwarded.
    let r = t
        .send(
            false,
            "CONNECT a.test:443 HTTP/1.1\r\nHost: a.test:443\r\nConnection: close\r\n\r\n",
        )
        .await;
    assert_eq!(r.status, 421, "{}", r.text);
    let r = t
        .send(
            false,
            "CONNECT c.test:443 HTTP/1.1\r\nHost: c.test:443\r\nConnection: close\r\n\r\n",
        )
        .await;
    assert_eq!(r.status, 405, "{}", r.text);
    assert!(!r.text.contains("tenant"), "{}", r.text);

    let metrics = t.guard.metrics_text();
    for (series, want) in [
        ("aop_bad_requests_total{site=\"shared\"}", bad - 1),
        ("aop_bad_requests_total{site=\"tenant-a\"}", 1),
        ("aop_client_errors_total{site=\"shared\"}", 1),
    ] {
        assert_eq!(
            aop_e2e::metric(&metrics, series),
            Some(want as u64),
            "{series}:\n{metrics}"
        );
    }
}
