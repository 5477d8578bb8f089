//! aop's own certificate checks on top of webpki (issue 14), end to end: each offending
//! chain is made here with rcgen and judged twice, by the guard's real TLS handshake (the
//! alert the client reads, the guard's verdict line, its handshake counter) and by the
//! real `certtool verify` binary (`--json` and its exit code); the two must give the same
//! exact verdict. Each refusal has a control beside it, a chain from the same CAs without
//! the one defect, which both must accept. What belongs here: one test per reason those
//! checks add (key usage, CA-ness, critical extensions, name constraints on the subject,
//! revocation status unknown) and the per-site `allow_missing_eku` choice.

#![allow(clippy::unwrap_used)] // test helpers: a panic is a test failure with a backtrace

use std::path::{Path, PathBuf};
use std::time::Duration;

use aop_e2e::guard::{self, Certs, Guard};
use aop_e2e::origin::TestClient;
use aop_e2e::pki::{self, Leaf, Made, ca_params, client_params, write_chain};
use aop_e2e::upstream::{Echo, header};
use aop_e2e::{certtool, code, stderr, stdout, wait_until};
use aop_edge::{Failure, classify};
use rcgen::{
    CustomExtension, ExtendedKeyUsagePurpose as Eku, GeneralSubtree, KeyUsagePurpose as Ku,
    NameConstraints,
};
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Every hostname a test here serves (the origin's certificate covers them all).
const HOSTS: &[&str] = &["strict.test", "lenient.test"];

/// What a chain should get, from the guard and from certtool alike.
#[derive(Clone, Copy, Debug)]
enum Want {
    /// SUCCESS: the request reaches the upstream; certtool exits 0.
    Served,
    /// `FAILED:<reason>`: the handshake ends with this alert; certtool exits 1.
    Refused {
        reason: &'static str,
        alert: &'static str,
    },
}

use Want::{Refused, Served};

/// `bad_key_usage`, and the alert it sends.
const BAD_KEY_USAGE: Want = Refused {
    reason: "bad_key_usage",
    alert: "unsupported_certificate",
};

/// The origin's certificates (and the directory every chain here is written to), and an
/// echo upstream.
struct Bench {
    certs: Certs,
    echo: Echo,
}

impl Bench {
    async fn new() -> Self {
        Self {
            certs: Certs::new(HOSTS),
            echo: Echo::start().await,
        }
    }

    fn path(&self) -> &Path {
        self.certs.dir.path()
    }

    /// The guard with one site for each `(hostname, more keys)`, each trusting `trust`.
    fn guard(&self, trust: &[&Path], sites: &[(&str, &str)]) -> Guard {
        let trust: Vec<String> = trust.iter().map(|p| format!("{p:?}")).collect();
        let mut config = String::new();
        for (host, extra) in sites {
            config.push_str(&format!(
                "\n[[site]]\nhostnames = [\"{host}\"]\ncert = \"origin-ca/origin/cert.pem\"\n\
                 key = \"origin-ca/origin/key.pem\"\ntrust = [{}]\nupstream = \"http://{}\"\n{extra}\n",
                trust.join(", "),
                self.echo.addr
            ));
        }
        Guard::start(self.path(), &config)
    }

    /// One connection to `host` presenting `leaf`: the response text, or how the TLS
    /// connection failed.
    async fn connect(&self, g: &Guard, host: &str, leaf: &Leaf) -> Result<String, Failure> {
        // The chain as is: rustls' own client config would refuse to hold a certificate
        // webpki cannot parse (an unknown critical extension).
        let chain = aop_pki::load_certificates(&leaf.cert).unwrap();
        let config = TestClient::with_raw_chain(&self.certs.origin_ca.pem(), chain, leaf).config();
        let mut tls = guard::connect(g.addr(), host, true, &config)
            .await
            .map_err(|e| classify(&e))?;
        let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        // TLS 1.3: the client's handshake is over before the origin has judged its
        // certificate; a refusal is the alert read next.
        let _ = tls.write_all(request.as_bytes()).await;
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut buf))
            .await
            .expect("the guard answers or refuses within 10 s");
        match read {
            Err(e) if buf.is_empty() => Err(classify(&e)),
            _ => Ok(String::from_utf8_lossy(&buf).into_owned()),
        }
    }

    /// [`Bench::verdicts`], then [`Bench::probed`].
    #[allow(clippy::too_many_arguments)] // one table row, spelt out
    async fn judge(
        &self,
        g: &Guard,
        host: &str,
        trust: &[&Path],
        flags: &[&str],
        case: &str,
        leaf: &Leaf,
        want: Want,
    ) {
        self.verdicts(g, host, trust, flags, case, leaf, want).await;
        self.probed(g, host, case, leaf, want);
    }

    /// Judge `leaf` (its chain) through the guard's site `host` and through `certtool
    /// verify` with `trust` and `flags`, and assert both say `want`.
    #[allow(clippy::too_many_arguments)] // one table row, spelt out
    async fn verdicts(
        &self,
        g: &Guard,
        host: &str,
        trust: &[&Path],
        flags: &[&str],
        case: &str,
        leaf: &Leaf,
        want: Want,
    ) {
        let (verdict, reason) = verdict_and_reason(want);
        let series = format!(
            "aop_handshakes_total{{site=\"{host}\",verdict=\"{}\",reason=\"{reason}\"}}",
            verdict.split(':').next().unwrap()
        );
        let before = g.metric(&series);

        // The handshake.
        let seen = self.connect(g, host, leaf).await;
        match want {
            Served => {
                let text = seen.unwrap_or_else(|e| panic!("{case}: refused: {e:?}"));
                assert!(text.starts_with("HTTP/1.1 200 "), "{case}: {text}");
                assert_eq!(
                    header(&text, "x-client-verify").as_deref(),
                    Some("SUCCESS"),
                    "{case}: {text}"
                );
            }
            Refused { alert, .. } => assert_eq!(
                seen,
                Err(Failure::Refused {
                    alert: alert.into()
                }),
                "{case}"
            ),
        }
        let line = g.wait_log("client certificate verdict");
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert!(
            fields.contains(&format!("verdict={verdict}").as_str()),
            "{case}: {line}"
        );
        if !reason.is_empty() {
            assert!(
                fields.contains(&format!("reason={reason}").as_str()),
                "{case}: {line}"
            );
        }
        wait_until(
            &format!("{case}: {series} counted"),
            Duration::from_secs(10),
            || (g.metric(&series) == before + 1).then_some(()),
        );

        // Offline.
        let mut args: Vec<&str> = vec!["verify"];
        for t in trust {
            args.extend(["--trust", t.to_str().unwrap()]);
        }
        args.extend([
            "--chain",
            leaf.cert.to_str().unwrap(),
            "--sni",
            host,
            "--json",
        ]);
        args.extend(flags);
        let o = certtool(&args);
        let want_code = if matches!(want, Served) { 0 } else { 1 };
        assert_eq!(code(&o), want_code, "{case}: {}{}", stdout(&o), stderr(&o));
        let j: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
        assert_eq!(j["verdict"], verdict.as_str(), "{case}: {j}");
        assert_eq!(j["reason"], reason.as_str(), "{case}: {j}");
    }

    /// [`Bench::judge`] each `(case, leaf, want)` on the site `strict.test`, trusting
    /// `trust`, with no more flags.
    async fn table(&self, g: &Guard, trust: &[&Path], rows: &[(&str, &Leaf, Want)]) {
        for (case, leaf, want) in rows {
            self.judge(g, "strict.test", trust, &[], case, leaf, *want)
                .await;
        }
    }

    /// `certtool probe` of `leaf` on the guard's site `host` says what happened (the
    /// alert, or the response) and that the origin held; the guard logs the verdict again.
    fn probed(&self, g: &Guard, host: &str, case: &str, leaf: &Leaf, want: Want) {
        let (verdict, _) = verdict_and_reason(want);
        let o = self.probe(g, host, leaf, want);
        assert_eq!(code(&o), 0, "{case}: {}{}", stdout(&o), stderr(&o));
        let j: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
        let r = &j["results"][0];
        assert_eq!(r["conclusion"], "held", "{case}: {j}");
        match want {
            // (The guard answers with the upstream's response, which has no verdict header.)
            Served => assert_eq!(
                (&r["outcome"], &r["http_status"]),
                (&"accepted".into(), &200.into()),
                "{case}: {j}"
            ),
            Refused { alert, .. } => {
                assert_eq!(
                    (&r["outcome"], &r["alert"]),
                    (&"refused_tls".into(), &alert.into()),
                    "{case}: {j}"
                );
                let said = format!("the origin aborted the TLS handshake with alert {alert}");
                assert!(
                    r["summary"].as_str().unwrap().contains(&said),
                    "{case}: {j}"
                );
            }
        }
        let line = g.wait_log("client certificate verdict");
        assert!(
            line.split_whitespace()
                .any(|f| f == format!("verdict={verdict}")),
            "{case}, probed: {line}"
        );
    }

    /// `certtool probe` of `https://HOST:PORT/` on the guard, presenting `leaf`,
    /// expecting what `want` says.
    fn probe(&self, g: &Guard, host: &str, leaf: &Leaf, want: Want) -> std::process::Output {
        let url = format!("https://{host}:{}/", g.port);
        let resolve = format!("{host}:{}:127.0.0.1", g.port);
        let roots = self.certs.origin_ca.pem();
        let expect = if matches!(want, Served) {
            "accept"
        } else {
            "reject"
        };
        let args = [
            "probe",
            &url,
            "--resolve",
            &resolve,
            "--cacert",
            roots.to_str().unwrap(),
            "--cert",
            leaf.cert.to_str().unwrap(),
            "--key",
            leaf.key.to_str().unwrap(),
            "--expect",
            expect,
            "--json",
        ];
        // certtool blocks this worker; the guard runs on a runtime of its own.
        tokio::task::block_in_place(|| certtool(args))
    }
}

/// The verdict and reason words `want` means.
fn verdict_and_reason(want: Want) -> (String, String) {
    match want {
        Served => ("SUCCESS".to_owned(), String::new()),
        Refused { reason, .. } => (format!("FAILED:{reason}"), reason.to_owned()),
    }
}

// ---- Certificates, made with rcgen (aop_e2e::pki::Made) ----

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// An extension under a private arc no verifier knows (content: DER NULL).
fn unknown_extension(critical: bool) -> CustomExtension {
    let mut e = CustomExtension::from_oid_content(&[1, 3, 6, 1, 4, 1, 55555, 14, 1], vec![5, 0]);
    e.set_criticality(critical);
    e
}

// ---- The per-site EKU choice ----

/// A client certificate without any EKU extension is refused by default (`bad_eku`,
/// alert unsupported_certificate) and served by a site with `allow_missing_eku = true`
/// (certtool: `--allow-missing-eku`). One whose EKU says serverAuth only, or only
/// anyExtendedKeyUsage, is refused by both: the option is about a missing extension, not
/// a wrong one; and an EKU extension present but empty is malformed (`bad_encoding`),
/// not missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaf_without_eku_passes_only_where_the_site_allows_it() {
    let b = Bench::new().await;
    let root = b.path();
    let ca = pki::ca(root, "eku-ca");
    let trust = ca.pem();
    let no_eku = pki::client_without_eku(&ca, root);
    let server_only = pki::client_with(&ca, root, "server-eku", vec![Eku::ServerAuth], vec![]);
    let any_only = pki::client_with(&ca, root, "any-eku", vec![Eku::Any], vec![]);
    // extKeyUsage holding an empty SEQUENCE.
    let empty = CustomExtension::from_oid_content(&[2, 5, 29, 37], vec![0x30, 0x00]);
    let empty_eku = pki::client_with(&ca, root, "empty-eku", Vec::new(), vec![empty]);
    let edge = ca.client("edge");
    let g = b.guard(
        &[&trust],
        &[
            ("strict.test", ""),
            ("lenient.test", "allow_missing_eku = true"),
        ],
    );
    let bad_eku = Refused {
        reason: "bad_eku",
        alert: "unsupported_certificate",
    };
    let allow = ["--allow-missing-eku"];
    for (host, flags, case, leaf, want) in [
        ("strict.test", &[][..], "clientAuth", &edge, Served),
        ("strict.test", &[], "no EKU, default", &no_eku, bad_eku),
        ("strict.test", &[], "serverAuth only", &server_only, bad_eku),
        ("lenient.test", &allow, "clientAuth, allowed", &edge, Served),
        ("lenient.test", &allow, "no EKU, allowed", &no_eku, Served),
        (
            "lenient.test",
            &allow,
            "serverAuth only, allowed",
            &server_only,
            bad_eku,
        ),
        (
            "lenient.test",
            &allow,
            "anyExtendedKeyUsage only, allowed",
            &any_only,
            bad_eku,
        ),
        (
            "lenient.test",
            &allow,
            "empty EKU, allowed",
            &empty_eku,
            Refused {
                reason: "bad_encoding",
                alert: "bad_certificate",
            },
        ),
    ] {
        b.judge(&g, host, &[&trust], flags, case, leaf, want).await;
    }
}

// ---- One test per reason the strict checks add ----

/// A client leaf's keyUsage must allow digitalSignature (TLS client auth proves the key
/// with a signature) and must not assert keyCertSign without being a CA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaf_whose_key_usage_forbids_signing_is_bad_key_usage() {
    let b = Bench::new().await;
    let root_ca = Made::new(ca_params("KU Root", None), None);
    let trust = root_ca.write_anchor(b.path(), "ku-root");
    let with_usage = |name: &str, usages: Vec<Ku>| {
        let mut p = client_params(name);
        p.key_usages = usages;
        write_chain(b.path(), name, &[&Made::new(p, Some(&root_ca))])
    };
    let good = with_usage("signing", vec![Ku::DigitalSignature]);
    let encipher = with_usage("encipher-only", vec![Ku::KeyEncipherment]);
    let non_repudiation = with_usage("non-repudiation-only", vec![Ku::ContentCommitment]);
    let cert_sign = with_usage("cert-sign", vec![Ku::DigitalSignature, Ku::KeyCertSign]);
    let g = b.guard(&[&trust], &[("strict.test", "")]);
    b.table(
        &g,
        &[&trust],
        &[
            ("digitalSignature", &good, Served),
            ("keyEncipherment only", &encipher, BAD_KEY_USAGE),
            ("nonRepudiation only", &non_repudiation, BAD_KEY_USAGE),
            ("keyCertSign on a leaf", &cert_sign, BAD_KEY_USAGE),
        ],
    )
    .await;
}

/// An intermediate must be allowed to sign certificates: keyUsage present, with
/// keyCertSign (webpki does not look).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_intermediate_without_key_cert_sign_is_bad_key_usage() {
    let b = Bench::new().await;
    let root_ca = Made::new(ca_params("KU Root", None), None);
    let trust = root_ca.write_anchor(b.path(), "ku-root");
    let under = |name: &str, usages: Vec<Ku>| {
        let mut p = ca_params(&format!("{name} Intermediate"), None);
        p.key_usages = usages;
        let intermediate = Made::new(p, Some(&root_ca));
        let leaf = Made::new(
            client_params(&format!("edge under {name}")),
            Some(&intermediate),
        );
        write_chain(b.path(), name, &[&leaf, &intermediate])
    };
    let good = under("cert-sign", vec![Ku::KeyCertSign]);
    let no_cert_sign = under("no-cert-sign", vec![Ku::DigitalSignature, Ku::CrlSign]);
    let no_usage = under("no-key-usage", Vec::new());
    let g = b.guard(&[&trust], &[("strict.test", "")]);
    b.table(
        &g,
        &[&trust],
        &[
            ("intermediate with keyCertSign", &good, Served),
            (
                "intermediate without keyCertSign",
                &no_cert_sign,
                BAD_KEY_USAGE,
            ),
            ("intermediate without keyUsage", &no_usage, BAD_KEY_USAGE),
        ],
    )
    .await;
}

/// A root's own pathLenConstraint binds (webpki ignores an anchor's): a root with
/// pathLen 0 cannot have an intermediate below it; one with pathLen 1 can.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_with_path_len_zero_above_an_intermediate_is_not_a_ca() {
    let b = Bench::new().await;
    let chain_under = |name: &str, path_len: u8| {
        let root_ca = Made::new(ca_params(&format!("{name} Root"), Some(path_len)), None);
        let intermediate = Made::new(
            ca_params(&format!("{name} Intermediate"), None),
            Some(&root_ca),
        );
        let leaf = Made::new(
            client_params(&format!("edge under {name}")),
            Some(&intermediate),
        );
        (
            root_ca.write_anchor(b.path(), name),
            write_chain(b.path(), name, &[&leaf, &intermediate]),
        )
    };
    let (zero, too_deep) = chain_under("pathlen-0", 0);
    let (one, fits) = chain_under("pathlen-1", 1);
    let trust: [&Path; 2] = [&zero, &one];
    let g = b.guard(&trust, &[("strict.test", "")]);
    b.table(
        &g,
        &trust,
        &[
            ("root pathLen 1, one intermediate", &fits, Served),
            (
                "root pathLen 0, one intermediate",
                &too_deep,
                Refused {
                    reason: "not_a_ca",
                    alert: "bad_certificate",
                },
            ),
        ],
    )
    .await;
}

/// A critical extension aop does not process refuses the chain, on the client's
/// certificate or on the trust anchor itself; the same extension not critical is
/// ignored. An anchor with one verifies nothing, so the origin refuses it at load (its
/// configuration check; tests/config_check.rs has the line) and the handshake never sees
/// it: `certtool verify` gives the verdict every chain under it would get.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_critical_extension_is_unhandled_critical_extension() {
    let b = Bench::new().await;
    let root_ca = Made::new(ca_params("Extension Root", None), None);
    let mut odd_root = ca_params("Odd Root", None);
    odd_root.custom_extensions = vec![unknown_extension(true)];
    let odd_root = Made::new(odd_root, None);
    let odd_anchor = odd_root.write_anchor(b.path(), "odd-root");
    let trust = [root_ca.write_anchor(b.path(), "extension-root")];
    let trust: Vec<&Path> = trust.iter().map(PathBuf::as_path).collect();
    let with_extension = |name: &str, critical: bool| {
        let mut p = client_params(name);
        p.custom_extensions = vec![unknown_extension(critical)];
        write_chain(b.path(), name, &[&Made::new(p, Some(&root_ca))])
    };
    let plain = with_extension("non-critical", false);
    let critical = with_extension("critical", true);
    let under_odd = write_chain(
        b.path(),
        "under-odd-root",
        &[&Made::new(
            client_params("edge under the odd root"),
            Some(&odd_root),
        )],
    );
    let g = b.guard(&trust, &[("strict.test", "")]);
    let unhandled = Refused {
        reason: "unhandled_critical_extension",
        alert: "bad_certificate",
    };
    b.table(
        &g,
        &trust,
        &[("unknown extension, not critical", &plain, Served)],
    )
    .await;
    let config = b.path().join("odd-root.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\n[[site]]\nhostnames = [\"strict.test\"]\n\
             cert = \"origin-ca/origin/cert.pem\"\nkey = \"origin-ca/origin/key.pem\"\n\
             trust = [{odd_anchor:?}]\nupstream = \"http://127.0.0.1:9\"\n"
        ),
    )
    .unwrap();
    let refused = aop_origin::Config::read(&config)
        .unwrap()
        .check()
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains(": certificate #1 can verify no client (every chain under it would be FAILED:unhandled_critical_extension)"),
        "{refused}"
    );
    let o = certtool([
        "verify",
        "--trust",
        odd_anchor.to_str().unwrap(),
        "--chain",
        under_odd.cert.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let j: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(j["verdict"], "FAILED:unhandled_critical_extension", "{j}");
    let case = "unknown extension, critical";
    b.verdicts(&g, "strict.test", &trust, &[], case, &critical, unhandled)
        .await;
    // The probe, built on rustls, will not present a certificate webpki cannot parse,
    // and says so.
    let o = b.probe(&g, "strict.test", &critical, unhandled);
    assert_eq!(code(&o), 2, "{case}: {}{}", stdout(&o), stderr(&o));
    assert!(
        stderr(&o).contains("cannot present this certificate"),
        "{case}: {}",
        stderr(&o)
    );
}

/// A CA's DNS name constraint applies to the subject CN of a leaf without a SAN (webpki
/// checks SANs only): permitted `example.com` takes CN `edge.example.com` and refuses
/// CN `edge.other.test`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cn_outside_a_dns_name_constraint_is_name_constraints() {
    let b = Bench::new().await;
    let mut p = ca_params("Constrained Root", None);
    p.name_constraints = Some(NameConstraints {
        permitted_subtrees: vec![GeneralSubtree::DnsName("example.com".into())],
        excluded_subtrees: Vec::new(),
    });
    let root_ca = Made::new(p, None);
    let trust = root_ca.write_anchor(b.path(), "constrained-root");
    let cn = |cn: &str| {
        write_chain(
            b.path(),
            cn,
            &[&Made::new(client_params(cn), Some(&root_ca))],
        )
    };
    let inside = cn("edge.example.com");
    let outside = cn("edge.other.test");
    let g = b.guard(&[&trust], &[("strict.test", "")]);
    b.table(
        &g,
        &[&trust],
        &[
            ("CN inside the constraint", &inside, Served),
            (
                "CN outside the constraint",
                &outside,
                Refused {
                    reason: "name_constraints",
                    alert: "bad_certificate",
                },
            ),
        ],
    )
    .await;
}

/// A loaded CRL past its nextUpdate leaves every certificate it covers with an unknown
/// revocation status: `revocation_unknown`, alert unknown_ca (as OpenSSL and BoringSSL
/// send); a current CRL from the same CA serves the same leaf.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_crl_is_revocation_unknown() {
    let b = Bench::new().await;
    let root_ca = Made::new(ca_params("CRL Root", None), None);
    let trust = root_ca.write_anchor(b.path(), "crl-root");
    let leaf = write_chain(
        b.path(),
        "edge",
        &[&Made::new(
            client_params("edge under the CRL root"),
            Some(&root_ca),
        )],
    );
    let crl = |name: &str, this_update: OffsetDateTime, days: i64| {
        let pem = rcgen::CertificateRevocationListParams {
            this_update,
            next_update: this_update + time::Duration::days(days),
            crl_number: rcgen::SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: Vec::new(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        }
        .signed_by(&root_ca.issuer)
        .unwrap()
        .pem()
        .unwrap();
        let path = b.path().join(name);
        std::fs::write(&path, pem).unwrap();
        path
    };
    let stale = crl("stale.crl.pem", now() - time::Duration::days(10), 9);
    let fresh = crl("fresh.crl.pem", now() - time::Duration::minutes(5), 7);
    let g = b.guard(
        &[&trust],
        &[
            ("strict.test", &format!("crl = [{stale:?}]")),
            ("lenient.test", &format!("crl = [{fresh:?}]")),
        ],
    );
    let (stale, fresh) = (stale.to_str().unwrap(), fresh.to_str().unwrap());
    b.judge(
        &g,
        "lenient.test",
        &[&trust],
        &["--crl", fresh],
        "current CRL",
        &leaf,
        Served,
    )
    .await;
    b.judge(
        &g,
        "strict.test",
        &[&trust],
        &["--crl", stale],
        "expired CRL",
        &leaf,
        Refused {
            reason: "revocation_unknown",
            alert: "unknown_ca",
        },
    )
    .await;
}
