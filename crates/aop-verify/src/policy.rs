//! The origin's policy: rules keyed by SNI, each with its own trust and its own prebuilt
//! rustls `ServerConfig`.
//!
//! rustls's client-certificate verifier is not told the SNI, so per-SNI trust means one
//! `ServerConfig` per rule, chosen from the ClientHello before the handshake goes on
//! (see [`crate::Acceptor`]). Each config has its own session cache, so a session made
//! under one rule cannot be resumed under another. With session ticket keys
//! ([`PolicySpec::session_ticket_keys`]) each rule has its own ticket key instead, derived
//! from the files' keys, its name and its policy fingerprint (see [`crate::TicketKeys`]):
//! origins sharing the files resume each other's sessions, rule by rule.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use time::OffsetDateTime;

use crate::trust::{Trust, TrustSpec};
use crate::verdict::NoneCause;
use crate::verifier::Verifier;
use crate::{Error, Result};

/// What happens to a connection whose client certificate is not `SUCCESS`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Fail closed (the default): the handshake is aborted with a TLS alert on `FAILED`
    /// or `NONE`.
    #[default]
    Require,
    /// Like nginx's `ssl_verify_client optional`: the handshake completes and the
    /// verdict is handed to the application to decide. A certificate that fails to
    /// prove possession of its key still aborts the handshake.
    Optional,
}

impl std::str::FromStr for Mode {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "require" => Ok(Self::Require),
            "optional" => Ok(Self::Optional),
            _ => Err(Error::Config(format!(
                "mode {s:?}: expected \"require\" or \"optional\""
            ))),
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Require => "require",
            Self::Optional => "optional",
        })
    }
}

/// One rule, as file paths and values.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RuleSpec {
    /// A name for logs and metrics (the `rule` field of the verdict).
    pub name: String,
    /// SNI patterns it serves: exact hostnames or `*.zone` (any name ending in
    /// `.zone`; the bare `zone` is not included). Empty for the default rule.
    pub hostnames: Vec<String>,
    /// The origin's own certificate chain for these hostnames (PEM).
    pub cert: PathBuf,
    /// The origin's private key.
    pub key: PathBuf,
    /// What client certificates it accepts.
    pub trust: TrustSpec,
    /// `require` (default) or `optional`.
    pub mode: Mode,
    /// ALPN protocols offered on this rule's connections, most preferred first; `None`
    /// (the default) offers the policy's ([`PolicySpec::alpn`]). A site whose application
    /// speaks only HTTP/1.1 sets `Some(vec![b"http/1.1".to_vec()])`.
    pub alpn: Option<Vec<Vec<u8>>>,
}

impl RuleSpec {
    /// A `require` rule with the given server identity and trust.
    pub fn new(
        name: impl Into<String>,
        hostnames: impl IntoIterator<Item = impl Into<String>>,
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
        trust: TrustSpec,
    ) -> Self {
        Self {
            name: name.into(),
            hostnames: hostnames.into_iter().map(Into::into).collect(),
            cert: cert.into(),
            key: key.into(),
            trust,
            mode: Mode::Require,
            alpn: None,
        }
    }
}

/// The whole policy, as file paths and values (for [`Policy::load`]).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct PolicySpec {
    /// Rules selected by SNI.
    pub rules: Vec<RuleSpec>,
    /// The shared rule: used when the ClientHello has no SNI, or an SNI no rule matches.
    /// Without it, such connections are refused (verdict `NONE`, reason `no_sni` /
    /// `unknown_sni`).
    pub default: Option<RuleSpec>,
    /// ALPN protocols offered, most preferred first (a rule may set its own,
    /// [`RuleSpec::alpn`]). Default: `h2`, then `http/1.1` — the hyper glue serves
    /// either, as ALPN chose (a client that offers no ALPN gets HTTP/1.1). An
    /// application that takes the TLS stream itself ([`crate::Accepted::into_parts`])
    /// and speaks only HTTP/1.1 sets `vec![b"http/1.1".to_vec()]`, or a client that
    /// offers `h2` would speak HTTP/2 to it.
    pub alpn: Vec<Vec<u8>>,
    /// The crypto provider every rule uses: its signature algorithms verify client
    /// chains and CertificateVerify, its key provider loads the origin's keys, and its
    /// cipher suites (reordered: AES-128-GCM first, see [`Policy::load`]), key exchange
    /// groups and randomness serve the handshakes. Default:
    /// [`aop_pki::default_provider`] (the process default if one is installed, else
    /// aws-lc-rs). Set it to use a FIPS build or a provider with fewer algorithms.
    pub provider: Arc<CryptoProvider>,
    /// Session ticket key files (nginx's format: 80 or 48 random bytes each, mode 0600),
    /// the first to encrypt new tickets, every one to decrypt: origins given the same
    /// files resume each other's sessions. Empty (the default): no tickets, each rule's
    /// own in-memory session cache, emptied by every reload. Read by every
    /// [`Policy::load`], so a rotation is replacing the files and reloading. See
    /// [`crate::TicketKeys`].
    pub session_ticket_keys: Vec<PathBuf>,
    /// How long a ticket made with [`PolicySpec::session_ticket_keys`] resumes (the
    /// lifetime the client is told, and checked when a ticket comes back): whole seconds,
    /// 1 s to [`crate::MAX_TICKET_LIFETIME`] (a week), else [`Policy::load`] fails with
    /// [`crate::Error::TicketLifetime`]. Default 1 hour.
    pub session_ticket_lifetime: std::time::Duration,
}

/// [`PolicySpec::session_ticket_lifetime`]'s default.
pub const DEFAULT_TICKET_LIFETIME: std::time::Duration = std::time::Duration::from_secs(3600);

impl PolicySpec {
    /// A policy of these rules and no default rule, on the default crypto provider.
    pub fn new(rules: Vec<RuleSpec>) -> Self {
        Self {
            rules,
            default: None,
            alpn: default_alpn(),
            provider: aop_pki::default_provider(),
            session_ticket_keys: Vec::new(),
            session_ticket_lifetime: DEFAULT_TICKET_LIFETIME,
        }
    }

    /// Offer `h2`, then `http/1.1`: the default since HTTP/2 streams have a send timer
    /// of their own; kept so that callers from when HTTP/2 was an opt-in compile (it
    /// also undoes an earlier change to [`PolicySpec::alpn`]).
    #[must_use]
    pub fn with_http2(mut self) -> Self {
        self.alpn = default_alpn();
        self
    }

    /// Use `provider` for every rule (see [`PolicySpec::provider`]).
    pub fn with_provider(mut self, provider: Arc<CryptoProvider>) -> Self {
        self.provider = provider;
        self
    }
}

/// [`PolicySpec::alpn`]'s default: `h2`, then `http/1.1`.
fn default_alpn() -> Vec<Vec<u8>> {
    vec![b"h2".to_vec(), b"http/1.1".to_vec()]
}

impl Default for PolicySpec {
    /// No rules, no default rule, ALPN `h2` then `http/1.1`, the default crypto
    /// provider.
    fn default() -> Self {
        Self {
            rules: Vec::new(),
            default: None,
            alpn: default_alpn(),
            provider: aop_pki::default_provider(),
            session_ticket_keys: Vec::new(),
            session_ticket_lifetime: DEFAULT_TICKET_LIFETIME,
        }
    }
}

/// One loaded rule.
#[derive(Debug)]
pub struct Rule {
    name: Arc<str>,
    server_cert: aop_pki::CertInfo,
    mode: Mode,
    trust: Arc<Trust>,
    verifier: Arc<Verifier>,
    config: Arc<ServerConfig>,
}

impl Rule {
    /// Its name.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// Its mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The origin's own certificate for this rule (what it presents to the edge).
    pub fn server_certificate(&self) -> &aop_pki::CertInfo {
        &self.server_cert
    }

    /// What it trusts.
    pub fn trust(&self) -> &Trust {
        &self.trust
    }

    /// The rustls server configuration for connections under this rule. Crate-private:
    /// in `optional` mode its verifier lets failed chains through and only the
    /// [`crate::Acceptor`] knows their verdict, so handing it to a plain rustls acceptor
    /// would turn "has peer certificates" into a false SUCCESS.
    pub(crate) fn server_config(&self) -> &Arc<ServerConfig> {
        &self.config
    }

    pub(crate) fn verifier(&self) -> &Verifier {
        &self.verifier
    }
}

/// A loaded policy: every file read, every `ServerConfig` built. Selecting a rule and
/// checking a certificate do no I/O and build nothing.
#[derive(Debug)]
pub struct Policy {
    rules: Vec<Rule>,
    exact: HashMap<String, usize>,
    /// `.zone` suffix → rule.
    zones: HashMap<String, usize>,
    default: Option<usize>,
    loaded_at: OffsetDateTime,
}

impl Policy {
    /// Read every file of `spec` and build the rustls configurations. Errors name the
    /// file at fault.
    ///
    /// Every configuration is built on [`PolicySpec::provider`] with its cipher suites
    /// reordered: AES-128-GCM first (then AES-256-GCM, then the rest, in the provider's
    /// order), and the server's order wins over the client's. A handshake is bounded at the
    /// 128-bit security level by its X25519 or P-256 exchange and the P-256 (or
    /// 2048/3072-bit RSA) signatures, so AES-256-GCM-SHA384, which most clients put first,
    /// adds cost without adding strength: SHA-384 has no instructions of its own on x86-64
    /// (SHA-NI covers SHA-256 only), and a TLS 1.3 handshake runs its key schedule and
    /// transcript through it some forty times. This is also BoringSSL's fixed order on
    /// hardware with AES instructions. One TLS 1.3 ticket is sent per handshake, not
    /// rustls' two: an edge spends one ticket on each resumption and gets one back, and
    /// each ticket costs a key derivation, a record and a session-cache entry holding the
    /// client's chain; a client that asks for more with RFC 9149 `ticket_request` gets up
    /// to four.
    pub fn load(spec: &PolicySpec) -> Result<Self> {
        if spec.rules.is_empty() && spec.default.is_none() {
            return Err(Error::Config("no rules and no default rule".into()));
        }
        let specs: Vec<&RuleSpec> = spec.rules.iter().chain(spec.default.as_ref()).collect();
        if let Some(d) = &spec.default
            && !d.hostnames.is_empty()
        {
            return Err(Error::Config(format!(
                "the default rule {:?} applies to every SNI; it takes no hostnames",
                d.name
            )));
        }
        let mut names = std::collections::HashSet::new();
        for r in &specs {
            if !names.insert(r.name.as_str()) {
                return Err(Error::Config(format!("two rules are named {:?}", r.name)));
            }
        }
        let mut exact = HashMap::new();
        let mut zones = HashMap::new();
        for (i, r) in spec.rules.iter().enumerate() {
            if r.hostnames.is_empty() {
                return Err(Error::Config(format!("rule {:?} has no hostnames", r.name)));
            }
            for h in &r.hostnames {
                let (map, key) = match parse_pattern(h)? {
                    Pattern::Exact(name) => (&mut exact, name),
                    Pattern::Zone(suffix) => (&mut zones, suffix),
                };
                if map.insert(key, i).is_some() {
                    return Err(Error::DuplicatePattern(h.clone()));
                }
            }
        }
        let trusts = specs
            .iter()
            .map(|r| Trust::load_with_provider(&r.trust, &spec.provider).map(Arc::new))
            .collect::<Result<Vec<_>>>()?;
        let provider = tuned_provider(&spec.provider);
        let tickets = if spec.session_ticket_keys.is_empty() {
            None
        } else {
            crate::tickets::check_lifetime(spec.session_ticket_lifetime)?;
            Some(crate::TicketKeys::load(&spec.session_ticket_keys)?)
        };
        let mut rules = Vec::with_capacity(specs.len());
        for (i, r) in specs.iter().enumerate() {
            let name: Arc<str> = Arc::from(r.name.as_str());
            let others = specs
                .iter()
                .zip(&trusts)
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, (o, t))| (Arc::from(o.name.as_str()), Arc::clone(t)))
                .collect();
            let verifier = Arc::new(Verifier::new(
                name.clone(),
                trusts[i].clone(),
                others,
                r.mode,
            ));
            let alpn = r.alpn.as_ref().unwrap_or(&spec.alpn);
            let ticketer = match &tickets {
                Some(keys) => Some(keys.for_site(
                    &r.name,
                    &fingerprint(r, &trusts[i]),
                    spec.session_ticket_lifetime,
                )?),
                None => None,
            };
            let (config, server_cert) =
                server_config(r, verifier.clone(), alpn, &provider, ticketer)?;
            rules.push(Rule {
                name,
                server_cert,
                mode: r.mode,
                trust: trusts[i].clone(),
                verifier,
                config,
            });
        }
        Ok(Self {
            default: spec.default.as_ref().map(|_| rules.len() - 1),
            rules,
            exact,
            zones,
            loaded_at: OffsetDateTime::now_utc(),
        })
    }

    /// A connection accepted under an earlier policy, judged under this one (after a
    /// reload): its certificate chain (`chain`, end entity first, as the client presented
    /// it; `None` without a certificate: NONE stays NONE) checked again by the rule its SNI
    /// selects now. `None` if the connection must end: that rule is not the one it was
    /// accepted under (gone, or the SNI now selects another), or it is in `require` mode
    /// and the certificate no longer passes. Otherwise its verdict under this policy:
    /// `verdict` itself if the outcome is unchanged.
    pub fn recheck(
        &self,
        verdict: &Arc<crate::Verdict>,
        chain: Option<&[rustls::pki_types::CertificateDer<'_>]>,
    ) -> Option<Arc<crate::Verdict>> {
        let (rule, verdict) = self.rejudge(verdict, chain)?;
        // Judged by the rule's mode now, not the one it was accepted under.
        (rule.mode() != Mode::Require || verdict.is_success()).then_some(verdict)
    }

    /// [`Policy::recheck`] before the rule's mode has its say: the rule the connection
    /// still belongs to and its verdict under it (`verdict` itself if the outcome is
    /// unchanged), or `None` if that rule is gone. The hyper glue uses it to log what
    /// changed before it decides.
    pub(crate) fn rejudge(
        &self,
        verdict: &Arc<crate::Verdict>,
        chain: Option<&[rustls::pki_types::CertificateDer<'_>]>,
    ) -> Option<(&Rule, Arc<crate::Verdict>)> {
        let rule = self
            .select(verdict.sni.as_deref())
            .ok()
            .filter(|rule| Some(rule.name().as_ref()) == verdict.rule.as_deref())?;
        // No certificate: NONE stays NONE.
        let again = chain.and_then(<[_]>::split_first).map(|(ee, rest)| {
            rule.verifier()
                .check(ee, rest, crate::trust::unix_time(OffsetDateTime::now_utc()))
        });
        let verdict = match again {
            Some(again) if again.outcome != verdict.outcome => {
                let mut v = crate::Verdict::clone(verdict);
                v.outcome = again.outcome;
                v.detail = again.detail;
                v.client = again.client.or(v.client);
                Arc::new(v)
            }
            _ => verdict.clone(),
        };
        Some((rule, verdict))
    }

    /// The rule for an SNI: exact hostname, else the longest `*.zone` that matches, else
    /// the default rule. Without a match, why the connection must be refused.
    pub fn select(&self, sni: Option<&str>) -> Result<&Rule, NoneCause> {
        let Some(sni) = sni else {
            return self.default.map(|i| &self.rules[i]).ok_or(NoneCause::NoSni);
        };
        let name = aop_pki::normalize_dns_name(sni);
        if let Some(&i) = self.exact.get(&name) {
            return Ok(&self.rules[i]);
        }
        for (pos, _) in name.match_indices('.') {
            if let Some(&i) = self.zones.get(&name[pos..]) {
                return Ok(&self.rules[i]);
            }
        }
        self.default
            .map(|i| &self.rules[i])
            .ok_or(NoneCause::UnknownSni)
    }

    /// Every rule, the default last.
    pub fn rules(&self) -> impl Iterator<Item = &Rule> {
        self.rules.iter()
    }

    /// When this policy was loaded.
    pub fn loaded_at(&self) -> OffsetDateTime {
        self.loaded_at
    }
}

enum Pattern {
    Exact(String),
    /// The suffix including its leading dot: `.example.com`.
    Zone(String),
}

fn parse_pattern(p: &str) -> Result<Pattern> {
    let bad = |reason| Error::Pattern {
        pattern: p.to_owned(),
        reason,
    };
    let lower = aop_pki::normalize_dns_name(p);
    let (zone, name) = match lower.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, lower.as_str()),
    };
    if name.contains('*') {
        return Err(bad(
            "a wildcard may only be the whole leftmost label (*.example.com)",
        ));
    }
    if !aop_pki::is_dns_name(name) {
        return Err(bad("not a DNS name"));
    }
    Ok(if zone {
        Pattern::Zone(format!(".{name}"))
    } else {
        Pattern::Exact(name.to_owned())
    })
}

fn server_config(
    r: &RuleSpec,
    verifier: Arc<Verifier>,
    alpn: &[Vec<u8>],
    provider: &Arc<CryptoProvider>,
    ticketer: Option<crate::tickets::SiteTicketer>,
) -> Result<(Arc<ServerConfig>, aop_pki::CertInfo)> {
    let aop_pki::KeyPairFiles { chain, key } = aop_pki::load_key_pair(&r.cert, &r.key, provider)?;
    let info =
        aop_pki::CertInfo::from_der(&chain[0], OffsetDateTime::now_utc()).map_err(|detail| {
            aop_pki::Error::BadCertificate {
                path: r.cert.clone(),
                index: 1,
                detail,
            }
        })?;
    let mut config = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| Error::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| Error::ServerCert {
            path: r.cert.clone(),
            detail: e.to_string(),
        })?;
    config.alpn_protocols = alpn.to_vec();
    tune_server_config(&mut config);
    // Resumption state: this ServerConfig's own session cache (rustls' default, 256
    // sessions), a new and empty one on every reload, so a session made under one rule
    // can never resume under another, nor under a policy that replaced it. Stateless
    // tickets and a larger cache both cost more server CPU per resumption, as measured
    // with aop-bench (figures in the README; rustls removes a used TLS 1.3 session with
    // a linear scan of the cache). With session ticket keys, `Policy::load` sets a
    // ticketer bound to the rule and its policy fingerprint (`crate::tickets`).
    if let Some(t) = ticketer {
        config.ticketer = Arc::new(t);
    }
    Ok((Arc::new(config), info))
}

/// The policy fingerprint a rule's ticket key is derived from: SHA-256 over its name,
/// hostnames (as the policy reads them, sorted), mode, and trust — the anchors' DER
/// (sorted, so the trust files' order and paths do not matter), certificate and SPKI
/// pins, name allowlist, `max_depth` and `allow_missing_eku`. Origins whose rule agrees on
/// these resume each other's tickets; a change to any of them refuses every earlier
/// ticket. CRLs, the served certificate and ALPN are left out: revocation is judged again
/// on every resumption (the acceptor re-checks the chain a ticket carries), and neither of
/// the others changes what a client certificate may reach.
fn fingerprint(r: &RuleSpec, trust: &Trust) -> [u8; 32] {
    use aws_lc_rs::digest;
    let mut ctx = digest::Context::new(&digest::SHA256);
    let mut field = |tag: &[u8], value: &[u8]| {
        for part in [tag, value] {
            ctx.update(&u64::try_from(part.len()).unwrap_or(u64::MAX).to_be_bytes());
            ctx.update(part);
        }
    };
    field(b"name", r.name.as_bytes());
    let mut hosts: Vec<String> = r
        .hostnames
        .iter()
        .map(|h| aop_pki::normalize_dns_name(h))
        .collect();
    hosts.sort();
    for h in &hosts {
        field(b"hostname", h.as_bytes());
    }
    field(b"mode", r.mode.to_string().as_bytes());
    let mut anchors: Vec<&[u8]> = trust.anchor_ders().collect();
    anchors.sort_unstable();
    for a in anchors {
        field(b"anchor", a);
    }
    let sorted = |v: &[aop_pki::Sha256Fingerprint]| {
        let mut v: Vec<String> = v.iter().map(ToString::to_string).collect();
        v.sort();
        v
    };
    for p in sorted(&r.trust.pins) {
        field(b"pin", p.as_bytes());
    }
    for p in sorted(&r.trust.spki_pins) {
        field(b"spki_pin", p.as_bytes());
    }
    let mut san = r.trust.allow_san.clone();
    san.sort();
    for n in &san {
        field(b"allow_san", n.as_bytes());
    }
    field(b"max_depth", &(r.trust.max_depth as u64).to_be_bytes());
    field(b"allow_missing_eku", &[u8::from(r.trust.allow_missing_eku)]);
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// `provider` with AES-128-GCM first: AES-128-GCM, then AES-256-GCM, then the rest in
/// the provider's order (see [`Policy::load`] for why). The suites themselves are the
/// provider's, unchanged.
pub(crate) fn tuned_provider(provider: &CryptoProvider) -> Arc<CryptoProvider> {
    let mut p = provider.clone();
    p.cipher_suites.sort_by_key(|s| match s.suite() {
        rustls::CipherSuite::TLS13_AES_128_GCM_SHA256 => 0,
        rustls::CipherSuite::TLS13_AES_256_GCM_SHA384 => 1,
        rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        | rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => 2,
        _ => 3,
    });
    Arc::new(p)
}

/// aop's settings for a `ServerConfig` built on a [`tuned_provider`]: the server's
/// cipher-suite order, not the client's; one TLS 1.3 ticket per handshake, up to four
/// for a client that asks with RFC 9149 `ticket_request` (see [`Policy::load`]).
pub(crate) fn tune_server_config(config: &mut ServerConfig) {
    config.ignore_client_order = true;
    config.send_tls13_tickets = 1;
    config.max_tls13_tickets = 4;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        assert!(
            matches!(parse_pattern("Example.COM").unwrap(), Pattern::Exact(n) if n == "example.com")
        );
        assert!(
            matches!(parse_pattern("*.example.com").unwrap(), Pattern::Zone(z) if z == ".example.com")
        );
        for bad in ["*", "a.*.com", "*x.com", "10.0.0.1", "", "exa mple.com"] {
            assert!(parse_pattern(bad).is_err(), "{bad}");
        }
    }

    /// The ticket binding's fingerprint: the same trust under other paths and in another
    /// order (another machine of the fleet), other CRLs or other case in a hostname give the
    /// same fingerprint; another anchor, pin, allowlist, mode, hostname or name another.
    #[test]
    fn policy_fingerprint_is_what_the_rule_trusts_not_where_its_files_are() {
        let dir = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::now_utc();
        let a = crate::trust::tests::ca_named(dir.path(), "a", "CA A", 0, now).join("ca.pem");
        let b = crate::trust::tests::ca_named(dir.path(), "b", "CA B", 0, now).join("ca.pem");
        let (a2, b2) = (dir.path().join("copy-a.pem"), dir.path().join("copy-b.pem"));
        std::fs::copy(&a, &a2).unwrap();
        std::fs::copy(&b, &b2).unwrap();
        // The trust loaded without the CRLs (the test names one that does not exist): the
        // fingerprint reads the rest from the spec.
        let fp = |r: &RuleSpec| {
            let mut t = r.trust.clone();
            t.crls.clear();
            fingerprint(r, &Trust::load(&t).unwrap())
        };
        let rule = |anchors: &[&PathBuf]| {
            RuleSpec::new(
                "api",
                ["api.example", "*.api.example"],
                "c",
                "k",
                TrustSpec::new(anchors.iter().copied()),
            )
        };
        let base = fp(&rule(&[&a, &b]));
        let mut same = rule(&[&b2, &a2]);
        same.trust.crls = vec![dir.path().join("any.crl")];
        same.hostnames = vec!["*.API.example".into(), "api.example.".into()];
        same.alpn = Some(vec![b"http/1.1".to_vec()]);
        assert_eq!(fp(&same), base);
        let pin: aop_pki::Sha256Fingerprint = "00".repeat(32).parse().unwrap();
        type Change = Box<dyn Fn(&mut RuleSpec)>;
        let changes: Vec<(&str, Change)> = vec![
            ("an anchor fewer", Box::new(|r| r.trust.anchors.truncate(1))),
            ("a pin", Box::new(move |r| r.trust.pins.push(pin))),
            (
                "an SPKI pin",
                Box::new(move |r| r.trust.spki_pins.push(pin)),
            ),
            (
                "allow_san",
                Box::new(|r| r.trust.allow_san.push("edge.example".into())),
            ),
            ("max_depth", Box::new(|r| r.trust.max_depth = 2)),
            (
                "allow_missing_eku",
                Box::new(|r| r.trust.allow_missing_eku = true),
            ),
            ("mode", Box::new(|r| r.mode = Mode::Optional)),
            (
                "a hostname",
                Box::new(|r| r.hostnames.push("www.example".into())),
            ),
            ("the name", Box::new(|r| r.name = "www".into())),
        ];
        for (what, change) in changes {
            let mut r = rule(&[&a, &b]);
            change(&mut r);
            assert_ne!(fp(&r), base, "{what}");
        }
    }
}
