//! The checks behind aop's fuzz targets: one function per target, taking the fuzzer's
//! bytes. Each panics (through `assert!`) only when it finds a bug: a parser that panicked,
//! accepted what it must refuse, or broke one of its documented promises.
//!
//! One piece of code for both uses: `fuzz/fuzz_targets/<target>.rs` calls these under
//! libFuzzer (`cargo fuzz run <target>`), and the stable `cargo test --test fuzz_replay`
//! (tests/fuzz_replay.rs) includes this file and replays every committed corpus and
//! regression input through the same functions.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic is how a check reports a bug

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::AsyncWriteExt as _;

/// A fixed "now" (2026-06-01T00:00:00Z), so a check does not depend on the day it runs.
fn now() -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(1_780_272_000).unwrap()
}

/// An aop error must be one line naming the file it is about.
fn assert_one_line_naming(e: &dyn std::fmt::Display, path: &Path) {
    let msg = e.to_string();
    assert!(
        msg.contains(&*path.to_string_lossy()),
        "error does not name {}: {msg:?}",
        path.display()
    );
    assert!(!msg.contains('\n'), "error is not one line: {msg:?}");
}

/// `pem_der`: the certificate, private-key and CRL loaders on arbitrary file contents
/// (PEM or DER), then certificate inspection on every certificate they accept.
///
/// Never a panic; errors are one line naming the file; a loaded file holds at least one
/// certificate (CRL), each of which `CertInfo::from_der` reads without panicking.
pub fn pem_der(data: &[u8]) {
    let path = Path::new("fuzz/input.pem");
    match aop_pki::parse_certificates(data, path) {
        Ok(certs) => {
            assert!(
                !certs.is_empty(),
                "parse_certificates: Ok with no certificate"
            );
            for der in &certs {
                if let Ok(info) = aop_pki::CertInfo::from_der(der, now()) {
                    // Inspection's output paths (certtool inspect prints these).
                    let _ = format!("{info:?}");
                    let _ = aop_pki::rfc3339(info.not_after);
                }
            }
        }
        Err(e) => assert_one_line_naming(&e, path),
    }
    if let Err(e) = aop_pki::parse_private_key(data, path) {
        assert_one_line_naming(&e, path);
    }
    match aop_pki::parse_crls(data, path) {
        Ok(crls) => assert!(!crls.is_empty(), "parse_crls: Ok with no CRL"),
        Err(e) => assert_one_line_naming(&e, path),
    }
    // Inspection also takes bytes that are not a whole file's worth: the raw input as DER.
    let _ = aop_pki::CertInfo::from_der(&aop_pki::CertificateDer::from(data), now());
}

/// `config`: aop-origin's TOML configuration parser and validation (no file it names is
/// opened). Never a panic; an error is one line naming the configuration file.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return; // read_to_string refuses non-UTF-8 before the parser sees it
    };
    let path = Path::new("/etc/aop/origin.toml");
    if let Err(e) = aop_origin::parse_config(path, text) {
        assert_one_line_naming(&e, path);
    }
}

/// `authority`: the strict Host/authority parser. Never a panic; what it accepts
/// re-serialises to text it parses back to the same authority; it never accepts text
/// holding user information, whitespace, a percent sign or a control character.
pub fn authority(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return; // a header value that is not UTF-8 is refused before the parser
    };
    let Ok(a) = aop_verify::authority::parse(s) else {
        return;
    };
    assert!(
        !s.contains(['@', '%', '/', '?', '#', ' ', '\t', '\r', '\n']),
        "accepted {s:?}"
    );
    assert!(s.is_ascii(), "accepted non-ASCII {s:?}");
    let again = aop_verify::authority::parse(&a.to_string());
    assert_eq!(again.as_ref(), Ok(&a), "{s:?} -> {a} does not round-trip");
    // The name rules are matched against is itself a valid authority (no port).
    let name = a.host.match_name();
    if let aop_verify::authority::Host::Name(n) = &a.host {
        assert!(!n.ends_with('.') && n.len() <= 253, "name {n:?} from {s:?}");
        assert_eq!(n, &n.to_ascii_lowercase(), "name not lowercased: {n:?}");
        let b = aop_verify::authority::parse(&name).unwrap();
        assert_eq!(b.host, a.host);
    }
}

/// The longest PROXY protocol header aop-origin reads (a v2 header with 2 KiB of
/// addresses and TLVs).
const PROXY_HEADER_MAX: usize = 16 + 2048;

/// `proxy_header`: what a `proxy_protocol` listener of aop-origin makes of a connection's
/// first bytes. Never a panic; an error is one line; a header is no longer than the input
/// or [`PROXY_HEADER_MAX`], parses the same from its own bytes alone (the ClientHello
/// after it is never part of it), and every shorter prefix of it waits for more (a header
/// split across TCP segments is never refused); the wait ends before
/// [`PROXY_HEADER_MAX`] bytes.
pub fn proxy_header(data: &[u8]) {
    let parsed = aop_origin::parse_proxy_header(data);
    match &parsed {
        Ok(Some((_, len))) => {
            let len = *len;
            assert!(
                len > 0 && len <= data.len() && len <= PROXY_HEADER_MAX,
                "a header of {len} bytes in {}",
                data.len()
            );
            assert_eq!(
                aop_origin::parse_proxy_header(&data[..len]),
                parsed,
                "the header parses differently without what follows it"
            );
            for cut in 0..len {
                assert_eq!(
                    aop_origin::parse_proxy_header(&data[..cut]),
                    Ok(None),
                    "the header's first {cut} bytes are not waited on"
                );
            }
        }
        Ok(None) => assert!(
            data.len() < PROXY_HEADER_MAX,
            "still waiting after {} bytes",
            data.len()
        ),
        Err(e) => assert!(!e.contains('\n'), "error is not one line: {e:?}"),
    }
}

/// `probe_reply`: `certtool probe`'s classifier of what an origin sent back after the
/// handshake. Never a panic; and content served (a 2xx or 3xx status line) is never
/// read as a refusal.
pub fn probe_reply(data: &[u8]) {
    let observed = aop_edge::probe::classify_reply(data);
    let _ = observed.word();
    if let Some(status) = status_of(data)
        && (200..400).contains(&status)
    {
        assert!(
            !observed.is_refusal(),
            "a {status} reply classified as a refusal: {observed:?}"
        );
    }
}

/// The status of an `HTTP/1.x NNN` status line at the start of `data`, if it is one.
fn status_of(data: &[u8]) -> Option<u16> {
    let rest = data
        .strip_prefix(b"HTTP/1.1 ")
        .or_else(|| data.strip_prefix(b"HTTP/1.0 "))?;
    let digits = rest.get(..3)?;
    if !digits.iter().all(u8::is_ascii_digit) || rest.get(3).is_some_and(|b| *b != b' ') {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// `manifest`: the rotation manifest (`manifest.json`) parser and its checks. Never a
/// panic; an error names the rotation directory; a manifest it accepts names its
/// certificate directories with a single plain path component (no way out of `certs/`).
pub fn manifest(data: &[u8]) {
    let dir = Path::new("/var/lib/aop/rotation");
    match aop_ops::rotate::Manifest::from_json(data, dir) {
        Ok(m) => {
            let rotation = aop_ops::rotate::Rotation::new(dir);
            let certs = dir.join("certs");
            let recs = std::iter::once(&m.active)
                .chain(m.next.iter())
                .chain(m.previous.iter())
                .chain(m.retired.iter());
            for rec in recs {
                assert_eq!(
                    rotation.cert_dir(rec).parent(),
                    Some(certs.as_path()),
                    "certificate id {:?} leaves certs/",
                    rec.id
                );
            }
            let _ = m.phase.next_step();
        }
        Err(e) => assert_one_line_naming(&e, dir),
    }
}

/// What the acceptor targets share: a runtime, a policy, an acceptor and a listener.
struct AcceptorRig {
    runtime: tokio::runtime::Runtime,
    acceptor: aop_verify::Acceptor,
    listener: tokio::net::TcpListener,
    _dir: tempfile::TempDir,
}

thread_local! {
    /// One per thread (the replay test runs targets on parallel threads, and each must get
    /// back its own connection from the listener).
    static RIG: AcceptorRig = AcceptorRig::new();
}

impl AcceptorRig {
    /// A CA, an origin certificate for `a.test` (and a default rule with the same
    /// identity, so a hello without SNI gets as far as one with it), both in `require`
    /// mode trusting the CA.
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "fuzz CA");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let origin_key = rcgen::KeyPair::generate().unwrap();
        let origin_params = rcgen::CertificateParams::new(vec!["a.test".to_owned()]).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, &ca_key);
        let origin = origin_params.signed_by(&origin_key, &issuer).unwrap();
        let file = |name: &str, text: String| -> PathBuf {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let ca_pem = file("ca.pem", ca.pem());
        let cert_pem = file("origin.pem", origin.pem());
        let key_pem = file("origin.key", origin_key.serialize_pem());
        let rule = |name: &str, hosts: Vec<&str>| {
            aop_verify::RuleSpec::new(
                name,
                hosts,
                &cert_pem,
                &key_pem,
                aop_verify::TrustSpec::new([&ca_pem]),
            )
        };
        let mut spec = aop_verify::PolicySpec::new(vec![rule("a", vec!["a.test"])]);
        spec.default = Some(rule("default", vec![]));
        let policy = aop_verify::PolicyHandle::load(&spec).unwrap();
        let limits = aop_verify::Limits::default()
            .with_handshake_timeout(Duration::from_secs(2))
            .with_log_verdicts(false);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(SocketAddr::from((
                Ipv4Addr::LOCALHOST,
                0,
            ))))
            .unwrap();
        Self {
            runtime,
            acceptor: aop_verify::Acceptor::new(policy, limits),
            listener,
            _dir: dir,
        }
    }
}

/// Send `bytes` to the acceptor over loopback TCP, then close the write side: whatever
/// they are, the connection must be refused (nobody can finish a handshake without
/// answering the server), never accepted, and never a panic.
fn refused(bytes: &[u8]) {
    RIG.with(|rig| refused_by(rig, bytes));
}

fn refused_by(rig: &AcceptorRig, bytes: &[u8]) {
    rig.runtime.block_on(async {
        let addr = rig.listener.local_addr().unwrap();
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (server, _) = rig.listener.accept().await.unwrap();
        // Write concurrently with the handshake: the server may answer (or close) before
        // it has read everything, and a full socket buffer must not deadlock the check.
        let writer = async move {
            let _ = client.write_all(bytes).await;
            let _ = client.shutdown().await;
            // Keep the client open (reading the server's answer) until the server closes.
            let mut sink = Vec::new();
            let _ = tokio::io::AsyncReadExt::read_to_end(&mut client, &mut sink).await;
        };
        let (result, ()) = tokio::join!(rig.acceptor.accept(server, None), writer);
        if let Ok(accepted) = result {
            panic!("accepted a connection: {:?}", accepted.verdict());
        }
    });
}

/// `acceptor`: arbitrary bytes where a ClientHello should be.
pub fn acceptor(data: &[u8]) {
    refused(data);
}

/// `acceptor_hello`: the bytes are the body of a ClientHello handshake message, behind a
/// valid TLS record header and handshake header (so the fuzzer starts inside the hello);
/// whatever follows the body in the same record is part of it.
pub fn acceptor_hello(data: &[u8]) {
    refused(&wrap_client_hello(data));
}

/// `body` as a ClientHello handshake message in one TLS record (the record is cut at the
/// largest length a record can carry).
pub fn wrap_client_hello(body: &[u8]) -> Vec<u8> {
    let body = &body[..body.len().min(16_384 - 4)];
    let hs_len = u32::try_from(body.len()).unwrap();
    let rec_len = u16::try_from(body.len() + 4).unwrap();
    let mut out = Vec::with_capacity(body.len() + 9);
    out.extend_from_slice(&[0x16, 0x03, 0x01]);
    out.extend_from_slice(&rec_len.to_be_bytes());
    out.push(0x01);
    out.extend_from_slice(&hs_len.to_be_bytes()[1..]);
    out.extend_from_slice(body);
    out
}

/// `client_chain`: a presented client chain to aop-verify's `Trust::check` (strict.rs,
/// the webpki views of view.rs, webpki's path building, constraints.rs), against a fixed
/// trust: `client_chain_root.pem`, a root whose critical nameConstraints permit the URI
/// host `example.org` and the DNS name `example.org`.
///
/// The input is up to [`CLIENT_CHAIN_MAX`] certificates, each behind a 2-byte big-endian
/// length (one cut short takes what is left); the first is the client's certificate, the
/// rest its intermediates, checked at a fixed time.
///
/// Never a panic; a second check of the same chain (which may now come from the cache of
/// verified chains) gives the same outcome; and SUCCESS only for a leaf whose
/// TBSCertificate is exactly that of one of the genuinely signed seed leaves expected to
/// pass (`client_chain_leaves.pem`): no change keeps a signature valid, so SUCCESS for
/// anything else is a forgery, or a constraint, getting through.
pub fn client_chain(data: &[u8]) {
    let _ = client_chain_outcome(data);
}

/// [`client_chain`]'s checks, returning the outcome (`None`: no certificate in `data`).
pub fn client_chain_outcome(data: &[u8]) -> Option<aop_verify::Outcome> {
    let certs = split_chain(data);
    let (leaf, intermediates) = certs.split_first()?;
    let fixed = client_chain_trust();
    let first = fixed.trust.check(leaf, intermediates, now());
    let second = fixed.trust.check(leaf, intermediates, now());
    assert_eq!(
        first.outcome, second.outcome,
        "the same chain checked twice: {first:?} then {second:?}"
    );
    if first.outcome.is_success() {
        let tbs = tbs_of(leaf);
        assert!(
            tbs.is_some_and(|t| fixed.passing_tbs.contains(&t)),
            "SUCCESS for a leaf that is not a signed seed leaf expected to pass: {first:?}"
        );
    }
    Some(first.outcome)
}

/// The most certificates [`client_chain`] reads from one input.
pub const CLIENT_CHAIN_MAX: usize = 5;

/// [`client_chain`]'s framing: up to [`CLIENT_CHAIN_MAX`] certificates, each behind a
/// 2-byte big-endian length.
pub fn split_chain(mut data: &[u8]) -> Vec<aop_pki::CertificateDer<'static>> {
    let mut certs = Vec::new();
    while certs.len() < CLIENT_CHAIN_MAX
        && let [hi, lo, rest @ ..] = data
    {
        let (cert, next) =
            rest.split_at(usize::from(u16::from_be_bytes([*hi, *lo])).min(rest.len()));
        certs.push(aop_pki::CertificateDer::from(cert.to_vec()));
        data = next;
    }
    certs
}

/// `certs` in [`client_chain`]'s framing (the inverse of [`split_chain`]).
pub fn join_chain(certs: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for cert in certs {
        out.extend_from_slice(&u16::try_from(cert.len()).unwrap().to_be_bytes());
        out.extend_from_slice(cert);
    }
    out
}

/// The fixed trust of [`client_chain`] and the TBSCertificates it may accept.
struct ClientChainTrust {
    trust: aop_verify::Trust,
    passing_tbs: Vec<Vec<u8>>,
}

/// The root of [`client_chain`]'s trust (made by tests/fuzz_replay.rs's
/// `client_chain_seeds`, with the corpus seeds and the leaves).
pub const CLIENT_CHAIN_ROOT: &[u8] = include_bytes!("client_chain_root.pem");

/// The seed leaves `Trust::check` accepts under [`CLIENT_CHAIN_ROOT`].
pub const CLIENT_CHAIN_LEAVES: &[u8] = include_bytes!("client_chain_leaves.pem");

fn client_chain_trust() -> &'static ClientChainTrust {
    static TRUST: std::sync::OnceLock<ClientChainTrust> = std::sync::OnceLock::new();
    TRUST.get_or_init(|| {
        // Anchors are loaded from files, as aop loads them.
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root.pem");
        std::fs::write(&root, CLIENT_CHAIN_ROOT).unwrap();
        let trust = aop_verify::Trust::load(&aop_verify::TrustSpec::new([&root])).unwrap();
        let leaves =
            aop_pki::parse_certificates(CLIENT_CHAIN_LEAVES, Path::new("client_chain_leaves.pem"))
                .unwrap();
        let passing_tbs = leaves
            .iter()
            .map(|l| tbs_of(l).expect("a seed leaf is a certificate"))
            .collect();
        ClientChainTrust { trust, passing_tbs }
    })
}

/// The TBSCertificate (its whole DER) of `cert`, if x509-parser reads it as a certificate
/// (aop-verify reads every certificate it accepts with x509-parser).
pub fn tbs_of(cert: &[u8]) -> Option<Vec<u8>> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).ok()?;
    Some(parsed.tbs_certificate.as_ref().to_vec())
}
