//! The TOML configuration: parse, validate, and turn into an aop-verify policy.
//!
//! ```toml
//! listen = "0.0.0.0:443"            # or ["0.0.0.0:443", "[::]:443"]
//! # behind a TCP load balancer: a PROXY protocol header (v1 or v2) starts every connection
//! # (only from the balancers' addresses, `from`):
//! # listen = [{ addr = "0.0.0.0:8443", proxy_protocol = true, from = ["10.0.0.0/24"] }, "[::]:443"]
//! metrics_listen = "127.0.0.1:9090" # optional: /metrics and /healthz
//! log_format = "text"               # or "json"
//! handshake_timeout_secs = 10
//! max_handshakes = 1024             # handshakes in progress at once
//! max_connections = 10000           # open client connections at once
//! max_handshakes_per_peer = 64      # handshakes in progress from one address
//! max_unauthenticated_per_peer = 64 # established without a passing certificate, one address
//! header_read_timeout_secs = 10     # a request head must arrive whole within this
//! keepalive_timeout_secs = 60       # idle time before a connection's next request starts
//! request_body_timeout_secs = 30    # longest wait for the next piece of a request body
//! send_timeout_secs = 60            # longest a client may take none of the response
//! upstream_timeout_secs = 60        # the upstream's time to answer, once it has the request
//! grpc_body_timeout_secs = 300      # as request_body_timeout_secs, for a verified client's gRPC streams
//! tunnel_idle_timeout_secs = 300    # a WebSocket tunnel with no byte either way is closed
//! reload_on_change = true           # reload when this file or one it names changes (SIGHUP always)
//! # optional: TLS session tickets shared by a fleet (nginx's ssl_session_ticket_key files,
//! # 80 or 48 random bytes, mode 0600); the first encrypts, all decrypt:
//! # session_ticket_keys = ["tickets/current.key", "tickets/previous.key"]
//! # session_ticket_lifetime_secs = 3600
//!
//! [[site]]
//! hostnames = ["example.com", "*.example.com"]
//! cert = "origin/cert.pem"          # paths are relative to this file
//! key = "origin/key.pem"
//! trust = ["edge-ca.pem"]           # several overlap during a rotation
//! pins = []                         # certificate pins (SHA-256 hex)
//! spki_pins = []                    # SPKI pins
//! allow_san = []                    # DNS names, URIs, spiffe://td[/path[/*]]
//! crl = []
//! # CRLs fetched over HTTP and kept current (see the README's "CRLs over HTTP"):
//! # crl_url = ["http://pki.example/edge.crl"]
//! # crl_cache_dir = "crl-cache"     # required with crl_url: the last good CRLs, read at start
//! # crl_refresh_secs = 3600         # and soon after a CRL's nextUpdate
//! # crl_fetch_timeout_secs = 10     # the whole fetch, redirects included
//! crl_stale = "deny"                # a CRL past its nextUpdate: "deny" (default) or "allow"
//! allow_missing_eku = false       # true: a client certificate with no EKU at all passes
//! mode = "require"                  # or "optional"
//! upstream = "http://127.0.0.1:8080"
//! upstream_protocol = "http1"       # or "h2c": HTTP/2 with prior knowledge (gRPC upstreams)
//! websocket = true                  # WebSocket upgrades tunnelled (default: on with http1)
//! alpn = ["h2", "http/1.1"]         # what the edge may negotiate, most preferred first
//! ```
//!
//! A `[[site]]` with `default = true` (and no hostnames) serves every other SNI, and
//! connections without SNI.
//!
//! Beyond parsing, `--check`, start-up and every reload run `Config::lint`: a leaf in a
//! trust file, a CA anchor that can verify no client, a site whose every anchor expired,
//! a hostname its certificate does not name are errors; an expired anchor among current
//! ones, a key open to group or others and a session ticket key readable by its group are
//! warnings. (A session ticket key file of the wrong length, readable by others, or the
//! same key as one listed before it, is refused earlier, when the policy loads.)

use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};

use aop_pki::Sha256Fingerprint;
use aop_verify::{Mode, PolicySpec, RuleSpec, TrustSpec};
use serde::{Deserialize, Deserializer};
use toml::Spanned;

/// The whole file, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct File {
    #[serde(deserialize_with = "one_or_many")]
    pub(crate) listen: Vec<Listen>,
    #[serde(default)]
    pub(crate) metrics_listen: Option<SocketAddr>,
    #[serde(default)]
    pub(crate) log_format: LogFormat,
    #[serde(default = "default_handshake_timeout")]
    pub(crate) handshake_timeout_secs: u64,
    #[serde(default = "default_max_handshakes")]
    pub(crate) max_handshakes: usize,
    #[serde(default = "default_max_connections")]
    pub(crate) max_connections: usize,
    /// Handshakes in progress from one peer address at once; a further one closes that
    /// peer's oldest.
    #[serde(default = "default_per_peer")]
    pub(crate) max_handshakes_per_peer: usize,
    /// Established connections from one peer address whose certificate did not pass
    /// (optional mode: NONE or FAILED); a further one closes that peer's oldest.
    #[serde(default = "default_per_peer")]
    pub(crate) max_unauthenticated_per_peer: usize,
    #[serde(default = "default_header_read_timeout")]
    pub(crate) header_read_timeout_secs: u64,
    #[serde(default = "default_keepalive_timeout")]
    pub(crate) keepalive_timeout_secs: u64,
    #[serde(default = "default_request_body_timeout")]
    pub(crate) request_body_timeout_secs: u64,
    #[serde(default = "default_keepalive_timeout")]
    pub(crate) send_timeout_secs: u64,
    #[serde(default = "default_keepalive_timeout")]
    pub(crate) upstream_timeout_secs: u64,
    /// `request_body_timeout_secs` for a gRPC request (`content-type: application/grpc…`):
    /// a client stream may be quiet for long between messages. Only for a client whose
    /// certificate passed (verdict SUCCESS): others keep the short timer.
    #[serde(default = "default_grpc_body_timeout")]
    pub(crate) grpc_body_timeout_secs: u64,
    /// A WebSocket tunnel that carries no byte either way for this long is closed.
    #[serde(default = "default_tunnel_idle_timeout")]
    pub(crate) tunnel_idle_timeout_secs: u64,
    /// Session ticket key files, the first to encrypt (see `aop_verify::TicketKeys`).
    #[serde(default)]
    pub(crate) session_ticket_keys: Option<Spanned<Vec<Spanned<PathBuf>>>>,
    /// How long a ticket resumes.
    #[serde(default)]
    pub(crate) session_ticket_lifetime_secs: Option<Spanned<u64>>,
    /// Reload when this file or a file it names changes (watched with inotify), as
    /// SIGHUP does. Default on.
    #[serde(default = "default_reload_on_change")]
    pub(crate) reload_on_change: bool,
    #[serde(rename = "site", default)]
    pub(crate) sites: Vec<Spanned<Site>>,
}

fn default_reload_on_change() -> bool {
    true
}

fn default_handshake_timeout() -> u64 {
    10
}

fn default_max_handshakes() -> usize {
    1024
}

fn default_max_connections() -> usize {
    10_000
}

fn default_per_peer() -> usize {
    64
}

fn default_header_read_timeout() -> u64 {
    10
}

fn default_keepalive_timeout() -> u64 {
    60
}

fn default_request_body_timeout() -> u64 {
    30
}

fn default_tunnel_idle_timeout() -> u64 {
    300
}

fn default_grpc_body_timeout() -> u64 {
    300
}

/// How the guard writes its log lines (`log_format`).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum LogFormat {
    /// `text` (the default): tracing's plain format, one line an event, no colour.
    #[default]
    Text,
    /// `json`: one JSON object a line (see the README's Logs).
    Json,
}

/// One `[[site]]`. What an error may need to point at is kept with its place in the
/// file ([`Spanned`]).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Site {
    #[serde(default)]
    pub(crate) name: Option<String>,
    #[serde(default)]
    pub(crate) hostnames: Vec<Spanned<String>>,
    /// `default = true|false`, if given.
    #[serde(default)]
    pub(crate) default: Option<Spanned<bool>>,
    pub(crate) cert: Spanned<PathBuf>,
    pub(crate) key: Spanned<PathBuf>,
    pub(crate) trust: Spanned<Vec<Spanned<PathBuf>>>,
    #[serde(default)]
    pub(crate) pins: Vec<Sha256Fingerprint>,
    #[serde(default)]
    pub(crate) spki_pins: Vec<Sha256Fingerprint>,
    #[serde(default)]
    pub(crate) allow_san: Vec<String>,
    #[serde(default)]
    pub(crate) crl: Vec<Spanned<PathBuf>>,
    /// `crl_url = ["http://…"]`: CRLs fetched over HTTP (crate::crl).
    #[serde(default)]
    pub(crate) crl_url: Vec<Spanned<String>>,
    /// Where the fetched CRLs are kept (required with `crl_url`).
    #[serde(default)]
    pub(crate) crl_cache_dir: Option<Spanned<PathBuf>>,
    /// Seconds between fetches of each `crl_url`.
    #[serde(default)]
    pub(crate) crl_refresh_secs: Option<Spanned<u64>>,
    /// The longest one fetch may take, redirects included.
    #[serde(default)]
    pub(crate) crl_fetch_timeout_secs: Option<Spanned<u64>>,
    /// A CRL past its nextUpdate: refuse what it covers (`deny`) or serve with a warning.
    #[serde(default)]
    pub(crate) crl_stale: CrlStale,
    /// `allow_missing_eku = true`: accept a client certificate without any
    /// extendedKeyUsage extension (RFC 5280: any purpose). Default false: an origin-pull
    /// certificate should say clientAuth. An EKU without clientAuth is refused either way.
    #[serde(default)]
    pub(crate) allow_missing_eku: bool,
    #[serde(default, deserialize_with = "mode")]
    pub(crate) mode: Mode,
    #[serde(default)]
    pub(crate) max_depth: Option<usize>,
    pub(crate) upstream: Upstream,
    /// How the guard speaks to `upstream`.
    #[serde(default)]
    pub(crate) upstream_protocol: UpstreamProtocol,
    /// `websocket = true|false`: tunnel WebSocket upgrades to the upstream. Default: on
    /// with an `http1` upstream (the upgrade is HTTP/1.1's).
    #[serde(default)]
    pub(crate) websocket: Option<Spanned<bool>>,
    /// ALPN offered to the edge, most preferred first: `h2` and `http/1.1`, or one of them.
    #[serde(default)]
    pub(crate) alpn: Option<Spanned<Vec<Spanned<String>>>>,
}

/// `crl_stale`: what a CRL past its nextUpdate does to the certificates it covers.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum CrlStale {
    /// `deny` (the default): `revocation_unknown` until a current CRL arrives — fail
    /// closed, as nginx and Envoy do with an expired CRL.
    #[default]
    Deny,
    /// `allow`: the stale CRL still revokes what it lists; the rest pass, with a warning
    /// at each refresh.
    Allow,
}

/// The default `crl_refresh_secs`.
pub(crate) const CRL_REFRESH_SECS: u64 = 3600;

/// The default `crl_fetch_timeout_secs`.
pub(crate) const CRL_FETCH_TIMEOUT_SECS: u64 = 10;

/// One `crl_url` of a site, as the fetcher takes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CrlSource {
    /// The site's name.
    pub(crate) site: String,
    /// The URL.
    pub(crate) url: crate::crl::HttpUrl,
    /// The cache file for this (site, URL), in `crl_cache_dir`.
    pub(crate) cache: PathBuf,
    /// `crl_refresh_secs`.
    pub(crate) refresh: std::time::Duration,
    /// `crl_fetch_timeout_secs`.
    pub(crate) timeout: std::time::Duration,
    /// `crl_stale`.
    pub(crate) stale: CrlStale,
}

/// A site's `crl_url` entries, checked, as fetch sources.
fn crl_sources(
    site: &Site,
    name: &str,
    base: &Path,
    at: &dyn Fn(Range<usize>) -> String,
) -> Result<Vec<CrlSource>, ConfigError> {
    let secs = |v: &Option<Spanned<u64>>, key: &str, default: u64| match v {
        None => Ok(default),
        Some(v) if *v.get_ref() == 0 => Err(ConfigError(format!(
            "{}: key `{key}`: must be at least 1",
            at(v.span())
        ))),
        Some(v) => Ok(*v.get_ref()),
    };
    let refresh = secs(&site.crl_refresh_secs, "crl_refresh_secs", CRL_REFRESH_SECS)?;
    let timeout = secs(
        &site.crl_fetch_timeout_secs,
        "crl_fetch_timeout_secs",
        CRL_FETCH_TIMEOUT_SECS,
    )?;
    if site.crl_url.is_empty() {
        let stray = [
            (
                "crl_cache_dir",
                site.crl_cache_dir.as_ref().map(Spanned::span),
            ),
            (
                "crl_refresh_secs",
                site.crl_refresh_secs.as_ref().map(Spanned::span),
            ),
            (
                "crl_fetch_timeout_secs",
                site.crl_fetch_timeout_secs.as_ref().map(Spanned::span),
            ),
        ];
        if let Some((key, Some(span))) = stray.into_iter().find(|(_, s)| s.is_some()) {
            return Err(ConfigError(format!(
                "{}: key `{key}`: is for crl_url = [...], which site {name:?} does not have",
                at(span)
            )));
        }
        return Ok(Vec::new());
    }
    let Some(dir) = &site.crl_cache_dir else {
        let first = &site.crl_url[0];
        return Err(ConfigError(format!(
            "{}: key `crl_url`: needs crl_cache_dir = \"DIR\" (where the last good CRLs are kept, and read at start)",
            at(first.span())
        )));
    };
    let mut out: Vec<CrlSource> = Vec::new();
    for url in &site.crl_url {
        let parsed: crate::crl::HttpUrl = url
            .get_ref()
            .parse()
            .map_err(|e| ConfigError(format!("{}: key `crl_url`: {e}", at(url.span()))))?;
        if out.iter().any(|o| o.url == parsed) {
            return Err(ConfigError(format!(
                "{}: key `crl_url`: {:?} is listed twice",
                at(url.span()),
                url.get_ref()
            )));
        }
        let key = Sha256Fingerprint::of(format!("{name}\n{parsed}").as_bytes());
        let hex: String = key
            .to_string()
            .chars()
            .filter(char::is_ascii_hexdigit)
            .take(16)
            .collect();
        out.push(CrlSource {
            site: name.to_owned(),
            cache: base.join(dir.get_ref()).join(format!("{hex}.crl.pem")),
            url: parsed,
            refresh: std::time::Duration::from_secs(refresh),
            timeout: std::time::Duration::from_secs(timeout),
            stale: site.crl_stale,
        });
    }
    Ok(out)
}

/// A plain-HTTP upstream: `http://HOST:PORT`, and the protocol its site speaks to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Upstream {
    /// `HOST:PORT`.
    pub(crate) authority: String,
    /// The site's `upstream_protocol`.
    pub(crate) protocol: UpstreamProtocol,
    /// The site's `websocket`, as resolved.
    pub(crate) websocket: bool,
}

/// `upstream_protocol`: HTTP/1.1 (the default), or cleartext HTTP/2 with prior knowledge.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub(crate) enum UpstreamProtocol {
    /// `http1`: HTTP/1.1, one upstream connection per request in flight, pooled.
    #[default]
    #[serde(rename = "http1")]
    Http1,
    /// `h2c`: HTTP/2 without TLS, prior knowledge (no Upgrade): every request of the
    /// site is a stream on one connection. What gRPC servers speak.
    #[serde(rename = "h2c")]
    H2c,
}

/// The protocols a site may offer by ALPN, in the default order.
const ALPN: [&str; 2] = ["h2", "http/1.1"];

impl<'de> Deserialize<'de> for Upstream {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let bad = || {
            serde::de::Error::custom(format!(
                "{s:?} is not an upstream: expected http://HOST:PORT"
            ))
        };
        let rest = s.strip_prefix("http://").ok_or_else(bad)?;
        let authority = rest.trim_end_matches('/');
        let (host, port) = authority.rsplit_once(':').ok_or_else(bad)?;
        if host.is_empty() || authority.contains('/') || port.parse::<u16>().is_err() {
            return Err(bad());
        }
        Ok(Self {
            authority: authority.to_owned(),
            protocol: UpstreamProtocol::Http1,
            websocket: true,
        })
    }
}

fn mode<'de, D: Deserializer<'de>>(d: D) -> Result<Mode, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map_err(serde::de::Error::custom)
}

/// One `listen` entry: `"IP:PORT"`, or `{ addr = "IP:PORT", proxy_protocol = true,
/// from = ["CIDR", ...] }` for a listener behind a TCP load balancer whose every
/// connection starts with a PROXY protocol header (v1 or v2): the address it names is
/// then the connection's peer. Only the balancers in `from` may send one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Listen {
    /// Where to listen.
    pub(crate) addr: SocketAddr,
    /// `proxy_protocol`: a PROXY protocol header is required before the TLS handshake.
    pub(crate) proxy_protocol: bool,
    /// `from`: the balancers' addresses, the only peers whose header is read (required
    /// with `proxy_protocol`; empty without).
    pub(crate) from: Vec<Cidr>,
}

/// An address block, `IP/LEN` or a bare `IP` (every bit); IPv4-mapped IPv6 is taken
/// as the IPv4 it maps, on both sides, so a dual-stack socket's peers match.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Cidr {
    net: IpAddr,
    len: u8,
}

impl Cidr {
    /// Whether `ip` is in this block.
    pub(crate) fn contains(self, ip: IpAddr) -> bool {
        let mask = |bits: u32, len: u8| u128::MAX.checked_shl(bits - u32::from(len)).unwrap_or(0);
        match (self.net, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let m = mask(32, self.len);
                u128::from(u32::from(net)) & m == u128::from(u32::from(ip)) & m
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let m = mask(128, self.len);
                u128::from(net) & m == u128::from(ip) & m
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not an address block (IP/LEN, or IP)");
        let (ip, len) = match s.split_once('/') {
            Some((ip, len)) => (ip, Some(len)),
            None => (s, None),
        };
        let ip: IpAddr = ip.parse().map_err(|_| bad())?;
        let bits: u8 = if ip.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => bits,
            // Digits only: `u8::from_str` would also take a `+`.
            Some(l) if l.bytes().all(|b| b.is_ascii_digit()) => l
                .parse::<u8>()
                .ok()
                .filter(|&l| l <= bits)
                .ok_or_else(bad)?,
            Some(_) => return Err(bad()),
        };
        // `::ffff:10.0.0.0/104` is `10.0.0.0/8`.
        let (net, len) = match ip {
            IpAddr::V6(v6) if len >= 96 && v6.to_ipv4_mapped().is_some() => {
                (ip.to_canonical(), len - 96)
            }
            _ => (ip, len),
        };
        let cidr = Self { net, len };
        if !cidr.contains_exactly_its_network() {
            return Err(format!(
                "{s:?} has bits set past its prefix length (the block is written with its first address)"
            ));
        }
        Ok(cidr)
    }
}

impl Cidr {
    /// Whether `net` has no bit set past `len` (so `10.0.0.1/8` is refused, not guessed).
    fn contains_exactly_its_network(self) -> bool {
        let host = match self.net {
            IpAddr::V4(v4) => u128::from(u32::from(v4)) << 96,
            IpAddr::V6(v6) => u128::from(v6),
        };
        host.checked_shl(u32::from(self.len)).unwrap_or(0) == 0
    }
}

impl<'de> Deserialize<'de> for Listen {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Entry;
        impl<'de> serde::de::Visitor<'de> for Entry {
            type Value = Listen;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an address (\"IP:PORT\") or a table { addr = \"IP:PORT\", proxy_protocol = true, from = [\"CIDR\"] }")
            }

            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Listen, E> {
                Ok(Listen {
                    addr: address(s)?,
                    proxy_protocol: false,
                    from: Vec::new(),
                })
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Listen, A::Error> {
                use serde::de::Error as _;
                let (mut addr, mut proxy_protocol, mut from) = (None, false, Vec::new());
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "addr" => addr = Some(map.next_value::<Address>()?.0),
                        "proxy_protocol" => proxy_protocol = map.next_value()?,
                        "from" => {
                            from = map
                                .next_value::<Vec<String>>()?
                                .iter()
                                .map(|s| s.parse())
                                .collect::<Result<_, String>>()
                                .map_err(A::Error::custom)?;
                        }
                        other => {
                            return Err(A::Error::unknown_field(
                                other,
                                &["addr", "proxy_protocol", "from"],
                            ));
                        }
                    }
                }
                let addr = addr.ok_or_else(|| A::Error::missing_field("addr"))?;
                // Without `from`, anyone who reaches the port could name any address.
                if proxy_protocol && from.is_empty() {
                    return Err(A::Error::custom(
                        "proxy_protocol = true needs from = [...], the balancers' addresses",
                    ));
                }
                if !proxy_protocol && !from.is_empty() {
                    return Err(A::Error::custom(
                        "from = [...] is for a proxy_protocol = true listener",
                    ));
                }
                Ok(Listen {
                    addr,
                    proxy_protocol,
                    from,
                })
            }
        }
        d.deserialize_any(Entry)
    }
}

/// `IP:PORT`, or an error saying that is what was expected.
fn address<E: serde::de::Error>(s: &str) -> Result<SocketAddr, E> {
    s.parse()
        .map_err(|_| E::custom(format!("{s:?} is not an address (IP:PORT)")))
}

/// A table's `addr`, parsed where it is read (so an error points at its own line).
struct Address(SocketAddr);

impl<'de> Deserialize<'de> for Address {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        address(&String::deserialize(d)?).map(Self)
    }
}

/// `listen`: one entry, or an array of them (each error at its entry's line).
fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Listen>, D::Error> {
    struct List;
    impl<'de> serde::de::Visitor<'de> for List {
        type Value = Vec<Listen>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an address (\"IP:PORT\"), a table { addr = \"IP:PORT\", proxy_protocol = true, from = [\"CIDR\"] }, or an array of them")
        }

        fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Vec<Listen>, E> {
            Listen::deserialize(serde::de::value::StrDeserializer::new(s)).map(|l| vec![l])
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Vec<Listen>, A::Error> {
            Listen::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(|l| vec![l])
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Vec<Listen>, A::Error> {
            let mut list = Vec::new();
            while let Some(l) = seq.next_element()? {
                list.push(l);
            }
            if list.is_empty() {
                return Err(serde::de::Error::custom("at least one address is needed"));
            }
            Ok(list)
        }
    }
    d.deserialize_any(List)
}

/// A configuration error, with where it is: `FILE:LINE: message`.
#[derive(Debug)]
pub(crate) struct ConfigError(pub(crate) String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl From<ConfigError> for crate::Error {
    fn from(e: ConfigError) -> Self {
        Self::Config(e.0)
    }
}

/// A configuration file, read and validated: what [`Guard::start`](crate::Guard::start)
/// takes. The files it names (certificates, keys, trust, CRLs) are read when the guard
/// starts or reloads, or by [`Config::check`].
#[derive(Debug)]
pub struct Config {
    pub(crate) path: PathBuf,
    pub(crate) file: File,
    /// Site name → upstream, in rule order.
    pub(crate) upstreams: Vec<(String, Upstream)>,
    pub(crate) policy: PolicySpec,
    /// Every site's `crl_url`, in site order.
    pub(crate) crl_sources: Vec<CrlSource>,
    text: String,
}

impl Config {
    /// Read and validate `path`; every error names the file and, where it can, the line
    /// and key (`FILE:LINE: key `name`: what`).
    pub fn read(path: &Path) -> Result<Self, crate::Error> {
        Ok(Self::read_file(path)?)
    }

    /// Validate `text` as if read from `path` (no file it names is opened). The fuzzer's
    /// entry: never a panic, whatever the text.
    pub fn parse(path: &Path, text: &str) -> Result<Self, crate::Error> {
        Ok(Self::parse_text(path, text.to_owned())?)
    }

    /// Read every file the configuration names and check that it can work, as the guard
    /// does when it starts and on every reload: the warnings (one line each, `FILE:LINE:
    /// key `name`: what; what to do`), or the errors — the first file that is unusable,
    /// or every problem that stops the configuration from working, one line each. What
    /// `aop-origin --check` does. The checks: a leaf in a trust file, a CA anchor that
    /// can verify no client (not a CA by RFC 5280, no keyCertSign, an extendedKeyUsage
    /// without clientAuth…), a site whose every anchor expired, a hostname the site's
    /// certificate does not name (errors); an
    /// expired anchor beside current ones, a key file open to group or others (warnings).
    pub fn check(&self) -> Result<Vec<String>, crate::Error> {
        let (_, warnings) = self.load_checked()?;
        Ok(warnings)
    }

    /// The configuration file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its `log_format`.
    pub fn log_format(&self) -> LogFormat {
        self.file.log_format
    }

    /// Every file the guard reads from this configuration: the file itself, the session
    /// ticket key files, then each site's certificate, key, trust and CRL files (as joined
    /// to the file's directory). What `reload_on_change` watches.
    pub(crate) fn files_in_use(&self) -> Vec<PathBuf> {
        let mut files = vec![self.path.clone()];
        files.extend(self.policy.session_ticket_keys.iter().cloned());
        for rule in self.policy.rules.iter().chain(&self.policy.default) {
            files.push(rule.cert.clone());
            files.push(rule.key.clone());
            files.extend(rule.trust.anchors.iter().cloned());
            files.extend(rule.trust.crls.iter().cloned());
        }
        files.sort();
        files.dedup();
        files
    }

    /// As [`Config::read`], with this module's error.
    pub(crate) fn read_file(path: &Path) -> Result<Self, ConfigError> {
        // Only a regular file, at most 4 MiB (a device or FIFO is refused unread).
        let bytes = aop_pki::read_file(path).map_err(|e| ConfigError(e.to_string()))?;
        let text = String::from_utf8(bytes)
            .map_err(|e| ConfigError(format!("{}: not UTF-8 text: {e}", path.display())))?;
        Self::parse_text(path, text)
    }

    /// As [`Config::parse`], with this module's error.
    fn parse_text(path: &Path, text: String) -> Result<Self, ConfigError> {
        let file: File = toml::from_str(&text).map_err(|e| {
            let (line, key) = e
                .span()
                .map(|s| locate(&text, s.start))
                .unwrap_or((0, String::new()));
            let key = if key.is_empty() {
                String::new()
            } else {
                format!("key `{key}`: ")
            };
            ConfigError(format!(
                "{}:{line}: {key}{}",
                path.display(),
                e.message().trim()
            ))
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        // `FILE:LINE` of a value in the text.
        let at = |span: Range<usize>| format!("{}:{}", path.display(), line_at(&text, span.start));
        if file.sites.is_empty() {
            return Err(ConfigError(format!(
                "{}: no [[site]] tables: nothing to serve",
                path.display()
            )));
        }
        let mut rules = Vec::new();
        let mut default_rule = None;
        let mut upstreams = Vec::new();
        let mut crl_sources = Vec::new();
        for (i, table) in file.sites.iter().enumerate() {
            let site = table.get_ref();
            let hostnames: Vec<String> =
                site.hostnames.iter().map(|h| h.get_ref().clone()).collect();
            let default = site.default.as_ref().filter(|d| *d.get_ref());
            let name = site
                .name
                .clone()
                .or_else(|| hostnames.first().cloned())
                .unwrap_or_else(|| {
                    if default.is_some() {
                        "default".into()
                    } else {
                        format!("site{}", i + 1)
                    }
                });
            let mut trust =
                TrustSpec::new(site.trust.get_ref().iter().map(|p| base.join(p.get_ref())));
            trust.pins = site.pins.clone();
            trust.spki_pins = site.spki_pins.clone();
            trust.allow_san = site.allow_san.clone();
            trust.crls = site.crl.iter().map(|p| base.join(p.get_ref())).collect();
            trust.allow_missing_eku = site.allow_missing_eku;
            trust.allow_stale_crls = site.crl_stale == CrlStale::Allow;
            crl_sources.extend(self::crl_sources(site, &name, base, &at)?);
            if let Some(d) = site.max_depth {
                trust.max_depth = d;
            }
            let mut rule = RuleSpec::new(
                &name,
                hostnames,
                base.join(site.cert.get_ref()),
                base.join(site.key.get_ref()),
                trust,
            );
            rule.mode = site.mode;
            rule.alpn = Some(alpn(site, &at)?);
            if let Some(default) = default {
                if let Some(first) = site.hostnames.first() {
                    return Err(ConfigError(format!(
                        "{}: key `hostnames` (site {name:?}): a default site serves every other SNI; give it no hostnames",
                        at(first.span())
                    )));
                }
                if default_rule.replace(rule).is_some() {
                    return Err(ConfigError(format!(
                        "{}: key `default`: only one site can be the default",
                        at(default.span())
                    )));
                }
            } else {
                if site.hostnames.is_empty() {
                    return Err(ConfigError(format!(
                        "{}: site {name:?} has no `hostnames` (give some, or `default = true`)",
                        at(table.span())
                    )));
                }
                rules.push(rule);
            }
            let mut upstream = site.upstream.clone();
            upstream.protocol = site.upstream_protocol;
            upstream.websocket = websocket(site, &at)?;
            upstreams.push((name, upstream));
        }
        let mut policy = PolicySpec::new(rules);
        policy.default = default_rule;
        if let Some(keys) = &file.session_ticket_keys {
            if keys.get_ref().is_empty() {
                return Err(ConfigError(format!(
                    "{}: key `session_ticket_keys`: name at least one key file (80 random bytes: openssl rand 80), or leave the key out for no session tickets",
                    at(keys.span())
                )));
            }
            policy.session_ticket_keys = keys
                .get_ref()
                .iter()
                .map(|p| base.join(p.get_ref()))
                .collect();
        }
        if let Some(life) = &file.session_ticket_lifetime_secs {
            // A week at most (RFC 8446 §4.6.1), a second at least.
            if !(1..=604_800).contains(life.get_ref()) {
                return Err(ConfigError(format!(
                    "{}: key `session_ticket_lifetime_secs`: {} is out of range: 1 to 604800 (a week, TLS 1.3's limit)",
                    at(life.span()),
                    life.get_ref()
                )));
            }
            if file.session_ticket_keys.is_none() {
                return Err(ConfigError(format!(
                    "{}: key `session_ticket_lifetime_secs`: is for session tickets; set session_ticket_keys too",
                    at(life.span())
                )));
            }
            policy.session_ticket_lifetime = std::time::Duration::from_secs(*life.get_ref());
        }
        let loaded = Self {
            path: path.to_owned(),
            file,
            upstreams,
            policy,
            crl_sources,
            text,
        };
        Ok(loaded)
    }

    /// Load the policy's files (certificates, keys, trust, CRLs), each read once: an error
    /// names the file, and the config line and key that refer to it.
    #[cfg(test)]
    pub(crate) fn load_policy(&self) -> Result<aop_verify::Policy, ConfigError> {
        self.load_policy_with(&crate::crl::Held::default())
    }

    /// [`Config::load_policy`], each site's trust with the fetched CRLs `held` for it
    /// (and, if a `crl_url` of a `crl_stale = "deny"` site has none, every client of that
    /// site refused `revocation_unknown` until one arrives).
    pub(crate) fn load_policy_with(
        &self,
        held: &crate::crl::Held,
    ) -> Result<aop_verify::Policy, ConfigError> {
        let mut spec = self.policy.clone();
        for rule in spec.rules.iter_mut().chain(spec.default.as_mut()) {
            held.apply(&rule.name, &self.crl_sources, &mut rule.trust);
        }
        aop_verify::Policy::load(&spec).map_err(|e| self.placed(&e))
    }

    /// `e`, with the config line and key of the value it is about.
    fn placed(&self, e: &aop_verify::Error) -> ConfigError {
        match self.place_of(e) {
            Some((key, span)) => ConfigError(format!(
                "{}:{}: key `{key}`: {e}",
                self.path.display(),
                line_at(&self.text, span.start)
            )),
            None => ConfigError(format!("{}: {e}", self.path.display())),
        }
    }

    /// [`Config::load_policy`], then [`Config::lint`]: the policy and the warnings, or
    /// every error, one line each. What start-up, SIGHUP and `--check` do.
    pub(crate) fn load_checked(&self) -> Result<(aop_verify::Policy, Vec<String>), ConfigError> {
        self.load_checked_with(&crate::crl::Held::default())
    }

    /// [`Config::load_checked`] with the fetched CRLs `held` ([`Config::load_policy_with`]).
    pub(crate) fn load_checked_with(
        &self,
        held: &crate::crl::Held,
    ) -> Result<(aop_verify::Policy, Vec<String>), ConfigError> {
        let policy = self.load_policy_with(held)?;
        let (errors, warnings) = self.lint(&policy, time::OffsetDateTime::now_utc());
        if !errors.is_empty() {
            return Err(ConfigError(errors.join("\n")));
        }
        Ok((policy, warnings))
    }

    /// The checks for configurations that load but cannot work, as of `now`: (errors,
    /// warnings), each one line naming `FILE:LINE`, the key, and what to do. The
    /// certificates judged are those `policy` loaded from this configuration (not read
    /// again: a file replaced since, mid-rotation, is checked as it was loaded).
    ///
    /// - A site's trust files hold a leaf (not a CA certificate, not self-signed: alone
    ///   or in a leaf+CA bundle, which trusts the whole CA): error (pin it instead).
    /// - A CA certificate in a trust file that can verify no client (the handshake's
    ///   check of an anchor, `TrustSpec::anchor_certificates`: not a CA by RFC 5280, no
    ///   keyCertSign, an unhandled critical extension, an extendedKeyUsage without
    ///   clientAuth): error, naming the certificate's number in the file and the
    ///   reason every client under it would be refused with.
    /// - Every anchor of a site has expired: error (no client can pass); some have:
    ///   a warning naming each.
    /// - A site hostname its served certificate's DNS SANs do not cover (a wildcard SAN
    ///   covers one left-most label, RFC 6125 §6.4.3; both sides compared as the policy
    ///   reads names: case and a trailing dot do not matter): error (the edge's hostname
    ///   check would fail).
    /// - (Unix) a key file open to group or others (`mode & 0o077`, the symlink's
    ///   target): a warning with the `chmod 600` that fixes it — not an error, so an
    ///   upgrade does not take down an origin that ran this way.
    /// - (Unix) a session ticket key file readable by its group (`mode & 0o070`;
    ///   Kubernetes mounts secrets 0440 under `fsGroup` whatever `defaultMode` says): a
    ///   warning. Readable by others is an error, from the policy's load.
    pub(crate) fn lint(
        &self,
        policy: &aop_verify::Policy,
        now: time::OffsetDateTime,
    ) -> (Vec<String>, Vec<String>) {
        let (mut errors, mut warnings) = (Vec::new(), Vec::new());
        let base = self.path.parent().unwrap_or(Path::new("."));
        let at = |span: Range<usize>| {
            format!(
                "{}:{}",
                self.path.display(),
                line_at(&self.text, span.start)
            )
        };
        for (site, (name, _)) in self
            .file
            .sites
            .iter()
            .map(Spanned::get_ref)
            .zip(&self.upstreams)
        {
            // Trust: leaves, and expiry.
            let mut expired = Vec::new();
            let mut anchors = 0;
            // The rule the policy loaded for this site (same name; the policy refuses two
            // rules of one name).
            let Some(rule) = policy.rules().find(|r| **r.name() == **name) else {
                continue;
            };
            // One judgement per entry of `trust`, in order.
            let judged = rule.trust().anchor_files(now).into_iter();
            for (file, judged) in site.trust.get_ref().iter().zip(judged) {
                match judged {
                    // This site's own `trust` line (the file may be in other sites' too).
                    Err(e) => errors.push(format!("{}: key `trust`: {e}", at(file.span()))),
                    Ok(certs) => {
                        anchors += certs.len();
                        for (path, info) in certs.into_iter().filter(|(_, c)| c.not_after < now) {
                            expired.push((file.span(), path, info));
                        }
                    }
                }
            }
            if anchors > 0 && expired.len() == anchors {
                let list: Vec<String> = expired
                    .iter()
                    .map(|(_, path, info)| {
                        format!(
                            "{} ({}, expired {})",
                            info.subject,
                            path.display(),
                            aop_pki::rfc3339(info.not_after)
                        )
                    })
                    .collect();
                errors.push(format!(
                    "{}: key `trust`: every trust anchor of site {name:?} has expired: {}; no client certificate can pass: add the edge's current CA certificate to `trust`",
                    at(site.trust.span()),
                    list.join("; ")
                ));
            } else {
                for (span, path, info) in &expired {
                    warnings.push(format!(
                        "{}: key `trust`: {}: anchor {} expired {}: it verifies nothing; remove it from site {name:?}'s trust",
                        at(span.clone()),
                        path.display(),
                        info.subject,
                        aop_pki::rfc3339(info.not_after)
                    ));
                }
            }
            // Hostnames the served certificate does not name.
            let cert = base.join(site.cert.get_ref());
            let served = rule.server_certificate();
            for host in &site.hostnames {
                // As the policy reads both (case, a trailing dot: `a.example.`).
                let host_name = aop_pki::normalize_dns_name(host.get_ref());
                let covered = served
                    .san
                    .dns
                    .iter()
                    .any(|san| covers(&aop_pki::normalize_dns_name(san), &host_name));
                if !covered {
                    errors.push(format!(
                        "{}: key `hostnames`: {:?} is not covered by the DNS names of {} ({}): the edge's hostname check would refuse the origin; serve a certificate that names it, or move it to a site whose certificate does",
                        at(host.span()),
                        host.get_ref(),
                        cert.display(),
                        if served.san.dns.is_empty() {
                            "none".to_owned()
                        } else {
                            served.san.dns.join(", ")
                        }
                    ));
                }
            }
            // Keys open to others.
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt as _;
                let key = base.join(site.key.get_ref());
                if let Ok(meta) = std::fs::metadata(&key)
                    && meta.permissions().mode() & 0o077 != 0
                {
                    warnings.push(format!(
                        "{}: key `key`: {} is open to group or others (mode {:04o}): whoever can read it can pose as this origin; run chmod 600 {}",
                        at(site.key.span()),
                        key.display(),
                        meta.permissions().mode() & 0o7777,
                        key.display()
                    ));
                }
            }
        }
        // Session ticket keys readable by their group (others: refused at load).
        #[cfg(unix)]
        for file in self
            .file
            .session_ticket_keys
            .iter()
            .flat_map(|k| k.get_ref())
        {
            use std::os::unix::fs::PermissionsExt as _;
            let key = base.join(file.get_ref());
            if let Ok(meta) = std::fs::metadata(&key)
                && meta.permissions().mode() & 0o070 != 0
            {
                warnings.push(format!(
                    "{}: key `session_ticket_keys`: {} is readable by its group (mode {:04o}): whoever is in that group can decrypt every session it protects; run chmod 600 {} (Kubernetes: fsGroup makes secret files 0440 whatever defaultMode says; give the pod no fsGroup, or one only the origin runs in)",
                    at(file.span()),
                    key.display(),
                    meta.permissions().mode() & 0o7777,
                    key.display()
                ));
            }
        }
        (errors, warnings)
    }

    /// The key and the place in the file of the value a policy error is about. A file
    /// error names its file first (`FILE: …`); of the places that give that file (the same
    /// file may appear under several keys) the first under a key that reads what the error
    /// is about (a key file's error is `key`'s, a certificate's `cert`'s or `trust`'s). A
    /// hostname error names the pattern (a duplicate: its last place).
    fn place_of(&self, e: &aop_verify::Error) -> Option<(&'static str, Range<usize>)> {
        let sites = self.file.sites.iter().map(Spanned::get_ref);
        match e {
            aop_verify::Error::Pattern { pattern, .. }
            | aop_verify::Error::DuplicatePattern(pattern) => {
                return sites
                    .flat_map(|s| &s.hostnames)
                    .rfind(|h| h.get_ref() == pattern)
                    .map(|h| ("hostnames", h.span()));
            }
            aop_verify::Error::TicketKey { path, detail } => {
                let base = self.path.parent().unwrap_or(Path::new("."));
                let mut files = self
                    .file
                    .session_ticket_keys
                    .iter()
                    .flat_map(|k| k.get_ref())
                    .filter(|k| base.join(k.get_ref()) == *path);
                // A duplicate is the later of the two places.
                let file = if detail.starts_with("the same key as ") {
                    files.next_back()
                } else {
                    files.next()
                };
                return file.map(|k| ("session_ticket_keys", k.span()));
            }
            aop_verify::Error::NoAnchors => {
                return sites
                    .map(|s| &s.trust)
                    .find(|t| t.get_ref().is_empty())
                    .map(|t| ("trust", t.span()));
            }
            _ => {}
        }
        use aop_pki::Error as Pki;
        let keys: &[&str] = match e {
            aop_verify::Error::Pki(
                Pki::NotAKey { .. } | Pki::BadKey { .. } | Pki::KeyMismatch { .. },
            ) => &["key"],
            aop_verify::Error::Pki(
                Pki::NotACertificate { .. } | Pki::BadCertificate { .. } | Pki::NotPemOrDer { .. },
            ) => &["cert", "trust"],
            aop_verify::Error::ServerCert { .. } => &["cert"],
            aop_verify::Error::BadAnchor { .. }
            | aop_verify::Error::LeafAnchor { .. }
            | aop_verify::Error::UnusableAnchor { .. } => &["trust"],
            aop_verify::Error::Pki(Pki::NotACrl { .. }) | aop_verify::Error::BadCrl { .. } => {
                &["crl"]
            }
            _ => &["cert", "key", "trust", "crl"],
        };
        let msg = e.to_string();
        let base = self.path.parent().unwrap_or(Path::new("."));
        let names = |file: &Spanned<PathBuf>| {
            msg.strip_prefix(&base.join(file.get_ref()).display().to_string())
                .is_some_and(|rest| rest.starts_with(": "))
        };
        sites
            .flat_map(|s| {
                let files = [("cert", &s.cert), ("key", &s.key)].into_iter();
                let trust = s.trust.get_ref().iter().map(|t| ("trust", t));
                files.chain(trust).chain(s.crl.iter().map(|c| ("crl", c)))
            })
            .find(|(key, file)| keys.contains(key) && names(file))
            .map(|(key, file)| (key, file.span()))
    }
}

/// A site's `alpn`, checked: protocols of [`ALPN`], each once, at least one (default:
/// all of them, `h2` first).
fn alpn(site: &Site, at: &dyn Fn(Range<usize>) -> String) -> Result<Vec<Vec<u8>>, ConfigError> {
    let Some(list) = &site.alpn else {
        return Ok(ALPN.iter().map(|p| p.as_bytes().to_vec()).collect());
    };
    if list.get_ref().is_empty() {
        return Err(ConfigError(format!(
            "{}: key `alpn`: offer at least one of \"h2\", \"http/1.1\"",
            at(list.span())
        )));
    }
    let mut out: Vec<Vec<u8>> = Vec::new();
    for p in list.get_ref() {
        let name = p.get_ref();
        if !ALPN.contains(&name.as_str()) {
            return Err(ConfigError(format!(
                "{}: key `alpn`: {name:?} is not a protocol the guard serves: expected \"h2\" or \"http/1.1\"",
                at(p.span())
            )));
        }
        if out.iter().any(|o| o == name.as_bytes()) {
            return Err(ConfigError(format!(
                "{}: key `alpn`: {name:?} is listed twice",
                at(p.span())
            )));
        }
        out.push(name.as_bytes().to_vec());
    }
    Ok(out)
}

/// A site's `websocket`: on unless turned off, or its upstream speaks h2c (a WebSocket
/// goes to the upstream as an HTTP/1.1 upgrade; `websocket = true` there is an error).
fn websocket(site: &Site, at: &dyn Fn(Range<usize>) -> String) -> Result<bool, ConfigError> {
    let http1 = site.upstream_protocol == UpstreamProtocol::Http1;
    match &site.websocket {
        None => Ok(http1),
        Some(w) if *w.get_ref() && !http1 => Err(ConfigError(format!(
            "{}: key `websocket`: a WebSocket reaches the upstream as an HTTP/1.1 upgrade: not with upstream_protocol = \"h2c\"",
            at(w.span())
        ))),
        Some(w) => Ok(*w.get_ref()),
    }
}

/// Whether the certificate's DNS name `san` covers the site hostname `host` (ASCII
/// case-insensitive; the caller strips trailing dots, `aop_pki::normalize_dns_name`). A
/// wildcard SAN `*.zone` covers one left-most label (RFC 6125 §6.4.3), and a hostname
/// pattern `*.zone` only if the SAN is `*.zone` too.
fn covers(san: &str, host: &str) -> bool {
    if san.eq_ignore_ascii_case(host) {
        return true;
    }
    let (Some(zone), Some((label, rest))) = (san.strip_prefix("*."), host.split_once('.')) else {
        return false;
    };
    !label.is_empty() && label != "*" && rest.eq_ignore_ascii_case(zone)
}

/// 1-based line of byte `offset` in `text`.
fn line_at(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// 1-based line of byte `offset`, and the key on that line (text before `=`), if any.
fn locate(text: &str, offset: usize) -> (usize, String) {
    let line_no = line_at(text, offset);
    let line = text.lines().nth(line_no - 1).unwrap_or("");
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim().to_owned())
        .unwrap_or_default();
    (line_no, key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse_text(Path::new("/etc/aop/origin.toml"), text.to_owned())
    }

    const SITE: &str = r#"
[[site]]
hostnames = ["example.com"]
cert = "c.pem"
key = "k.pem"
trust = ["ca.pem"]
upstream = "http://127.0.0.1:8080"
"#;

    #[test]
    fn good_config() {
        let l = parse(&format!(
            "listen = [\"127.0.0.1:8443\", \"[::1]:8443\"]\n{SITE}"
        ))
        .unwrap();
        assert_eq!(l.file.listen.len(), 2);
        assert_eq!(l.upstreams[0].0, "example.com");
        assert_eq!(l.upstreams[0].1.authority, "127.0.0.1:8080");
        assert_eq!(l.policy.rules[0].cert, Path::new("/etc/aop/c.pem"));
    }

    #[test]
    fn default_sites() {
        let default_site = SITE.replace("hostnames = [\"example.com\"]", "default = true");
        let l = parse(&format!("listen = \"127.0.0.1:1\"\n{SITE}{default_site}")).unwrap();
        assert_eq!(l.policy.rules.len(), 1);
        assert_eq!(l.policy.default.as_ref().unwrap().name, "default");
        let e = parse(&format!(
            "listen = \"127.0.0.1:1\"\n{default_site}{default_site}"
        ))
        .unwrap_err();
        assert!(e.0.contains("only one site can be the default"), "{e}");
        assert!(
            e.0.starts_with("/etc/aop/origin.toml:11: key `default`: "),
            "{e}"
        );
        let both = SITE.replace(
            "hostnames = [\"example.com\"]",
            "default = true\nhostnames = [\"x.test\"]",
        );
        let e = parse(&format!("listen = \"127.0.0.1:1\"\n{both}")).unwrap_err();
        assert!(e.0.contains("a default site serves every other SNI"), "{e}");
        assert!(
            e.0.starts_with("/etc/aop/origin.toml:5: key `hostnames` "),
            "{e}"
        );
        let neither = SITE.replace("hostnames = [\"example.com\"]\n", "");
        let e = parse(&format!("listen = \"127.0.0.1:1\"\n{neither}")).unwrap_err();
        assert!(e.0.contains("has no `hostnames`"), "{e}");
        assert!(e.0.starts_with("/etc/aop/origin.toml:3: site "), "{e}");
    }

    /// Policy errors point at the value they are about: a file by its path (each file
    /// read once, by the policy), a hostname pattern, an empty trust list.
    #[test]
    fn policy_errors_name_the_line_and_key_of_their_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("origin.toml");
        let load = |site: &str| {
            let text = format!("listen = \"127.0.0.1:1\"\n{site}");
            let e = Config::parse_text(&path, text)
                .unwrap()
                .load_policy()
                .unwrap_err();
            e.0.strip_prefix(&format!("{}:", path.display()))
                .unwrap()
                .to_owned()
        };
        // Every file is missing: whichever the policy reads first, the error points at
        // the line and key that name it.
        let e = load(SITE);
        let named = [
            (5, "cert", "c.pem"),
            (6, "key", "k.pem"),
            (7, "trust", "ca.pem"),
        ]
        .iter()
        .any(|(line, key, file)| {
            let file = dir.path().join(file);
            e.starts_with(&format!(
                "{line}: key `{key}`: {}: cannot read",
                file.display()
            ))
        });
        assert!(named, "{e}");
        // The same file under two keys: the first place that names it.
        let e = load(&SITE.replace("[\"ca.pem\"]", "[\"c.pem\"]"));
        let want = format!(
            "5: key `cert`: {}: cannot read",
            dir.path().join("c.pem").display()
        );
        assert!(e.starts_with(&want), "{e}");
        let e = load(&SITE.replace("example.com", "bad pattern"));
        assert!(
            e.starts_with("4: key `hostnames`: invalid hostname pattern"),
            "{e}"
        );
        let e = load(&SITE.replace("[\"ca.pem\"]", "[]"));
        assert!(e.starts_with("7: key `trust`: "), "{e}");
    }

    /// `allow_missing_eku` is off unless the site says true, and only takes a boolean.
    #[test]
    fn allow_missing_eku_is_per_site_and_off_by_default() {
        let l = parse(&format!("listen = \"127.0.0.1:1\"\n{SITE}")).unwrap();
        assert!(!l.policy.rules[0].trust.allow_missing_eku);
        let l = parse(&format!(
            "listen = \"127.0.0.1:1\"\n{SITE}allow_missing_eku = true\n"
        ))
        .unwrap();
        assert!(l.policy.rules[0].trust.allow_missing_eku);
        let e = parse(&format!(
            "listen = \"127.0.0.1:1\"\n{SITE}allow_missing_eku = \"yes\"\n"
        ))
        .unwrap_err();
        assert!(
            e.0.starts_with("/etc/aop/origin.toml:9: key `allow_missing_eku`: "),
            "{e}"
        );
    }

    /// `alpn` defaults to h2 then http/1.1, takes a subset in any order, and refuses
    /// anything else at its line; `upstream_protocol` is `http1` (default) or `h2c`.
    #[test]
    fn alpn_and_upstream_protocol() {
        let l = parse(&format!("listen = \"127.0.0.1:1\"\n{SITE}")).unwrap();
        let both = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        assert_eq!(l.policy.rules[0].alpn.as_ref(), Some(&both));
        assert_eq!(l.upstreams[0].1.protocol, UpstreamProtocol::Http1);
        let l = parse(&format!(
            "listen = \"127.0.0.1:1\"\n{SITE}alpn = [\"http/1.1\"]\nupstream_protocol = \"h2c\"\n"
        ))
        .unwrap();
        assert_eq!(
            l.policy.rules[0].alpn.as_ref(),
            Some(&vec![b"http/1.1".to_vec()])
        );
        assert_eq!(l.upstreams[0].1.protocol, UpstreamProtocol::H2c);
        for (alpn, line, said) in [
            (
                "[\"h2\", \"h3\"]",
                9,
                "\"h3\" is not a protocol the guard serves",
            ),
            ("[\"h2\", \"h2\"]", 9, "\"h2\" is listed twice"),
            ("[]", 9, "offer at least one"),
            ("[\n\"HTTP/1.1\"]", 10, "\"HTTP/1.1\" is not a protocol"),
        ] {
            let e = parse(&format!("listen = \"127.0.0.1:1\"\n{SITE}alpn = {alpn}\n")).unwrap_err();
            assert!(
                e.0.starts_with(&format!("/etc/aop/origin.toml:{line}: key `alpn`: ")),
                "{e}"
            );
            assert!(e.0.contains(said), "{e}");
        }
        let e = parse(&format!(
            "listen = \"127.0.0.1:1\"\n{SITE}upstream_protocol = \"h2\"\n"
        ))
        .unwrap_err();
        assert!(
            e.0.starts_with("/etc/aop/origin.toml:9: key `upstream_protocol`: "),
            "{e}"
        );
        assert!(e.0.contains("`http1`, `h2c`") || e.0.contains("h2c"), "{e}");
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let e = parse(&format!(
            "listen = \"127.0.0.1:8443\"\n{}",
            SITE.replace("require", "x") + "mode = \"sometimes\"\n"
        ))
        .unwrap_err();
        assert!(
            e.0.starts_with("/etc/aop/origin.toml:9: key `mode`: "),
            "{e}"
        );
        let e = parse(&format!("listen = \"nowhere\"\n{SITE}")).unwrap_err();
        assert!(
            e.0.starts_with("/etc/aop/origin.toml:1: key `listen`: "),
            "{e}"
        );
        assert!(e.0.contains("\"nowhere\" is not an address"), "{e}");
        let e = parse(&format!("listen = \"127.0.0.1:1\"\nbogus = 1\n{SITE}")).unwrap_err();
        assert!(
            e.0.starts_with("/etc/aop/origin.toml:2: key `bogus`: unknown field `bogus`"),
            "{e}"
        );
        let e = parse(&format!(
            "listen = \"127.0.0.1:1\"\n{}",
            SITE.replace("http://127.0.0.1:8080", "https://x")
        ))
        .unwrap_err();
        assert!(
            e.0.starts_with("/etc/aop/origin.toml:8: key `upstream`: "),
            "{e}"
        );
        let e = parse("listen = \"127.0.0.1:1\"\n").unwrap_err();
        assert!(e.0.contains("no [[site]]"), "{e}");
        let e = parse(&format!(
            "listen = \"127.0.0.1:1\"\n{}",
            SITE.replace("[\"ca.pem\"]", "[\"ca.pem\"]\npins = [\"zz\"]")
        ))
        .unwrap_err();
        assert!(
            e.0.starts_with("/etc/aop/origin.toml:8: key `pins`: "),
            "{e}"
        );
    }

    /// `listen` takes an address, a table with `proxy_protocol`, or an array of either;
    /// a bad entry is an error at its own line.
    #[test]
    fn listen_entries_and_proxy_protocol() {
        let listen =
            |value: &str| parse(&format!("listen = {value}\n{SITE}")).map(|c| c.file.listen);
        let plain = |a: &str| Listen {
            addr: a.parse().unwrap(),
            proxy_protocol: false,
            from: Vec::new(),
        };
        let proxied = |a: &str| Listen {
            addr: a.parse().unwrap(),
            proxy_protocol: true,
            from: vec!["10.0.0.0/8".parse().unwrap()],
        };
        assert_eq!(listen("\"127.0.0.1:1\"").unwrap(), [plain("127.0.0.1:1")]);
        assert_eq!(
            listen("{ addr = \"127.0.0.1:2\", proxy_protocol = true, from = [\"10.0.0.0/8\"] }")
                .unwrap(),
            [proxied("127.0.0.1:2")]
        );
        assert_eq!(
            listen("[\"[::1]:1\", { addr = \"127.0.0.1:2\", proxy_protocol = true, from = [\"10.0.0.0/8\"] }, { addr = \"127.0.0.1:3\" }]")
                .unwrap(),
            [plain("[::1]:1"), proxied("127.0.0.1:2"), plain("127.0.0.1:3")]
        );
        let l = parse(&format!(
            "[[listen]]\naddr = \"127.0.0.1:4\"\nproxy_protocol = true\nfrom = [\"10.0.0.0/8\"]\n{SITE}"
        ))
        .unwrap();
        assert_eq!(l.file.listen, [proxied("127.0.0.1:4")]);
        for (value, line, said) in [
            (
                "[\n\"127.0.0.1:1\",\n\"nowhere\"]",
                3,
                "\"nowhere\" is not an address",
            ),
            (
                "[\"127.0.0.1:1\",\n{ addr = \"x:1\", proxy_protocol = true }]",
                2,
                "\"x:1\" is not an address",
            ),
            (
                "{ addr = \"127.0.0.1:1\", proxy = true }",
                1,
                "unknown field `proxy`",
            ),
            ("{ proxy_protocol = true }", 1, "missing field `addr`"),
            (
                "{ addr = \"127.0.0.1:1\", proxy_protocol = \"yes\" }",
                1,
                "invalid type",
            ),
            ("[]", 1, "at least one address"),
            ("1", 1, "an address (\"IP:PORT\")"),
            (
                "[\"127.0.0.1:1\",\n{ addr = \"127.0.0.1:2\", proxy_protocol = true }]",
                2,
                "proxy_protocol = true needs from = [...], the balancers' addresses",
            ),
            (
                "{ addr = \"127.0.0.1:2\", proxy_protocol = true, from = [] }",
                1,
                "proxy_protocol = true needs from = [...]",
            ),
            (
                "{ addr = \"127.0.0.1:2\", from = [\"10.0.0.0/8\"] }",
                1,
                "from = [...] is for a proxy_protocol = true listener",
            ),
            (
                "{ addr = \"127.0.0.1:2\", proxy_protocol = true, from = [\"10.0.0.1/8\"] }",
                1,
                "\"10.0.0.1/8\" has bits set past its prefix length",
            ),
            (
                "{ addr = \"127.0.0.1:2\", proxy_protocol = true, from = [\"lb.example\"] }",
                1,
                "\"lb.example\" is not an address block",
            ),
        ] {
            let e = listen(value).unwrap_err();
            assert!(
                e.0.starts_with(&format!("/etc/aop/origin.toml:{line}: ")),
                "{value}: {e}"
            );
            assert!(e.0.contains(said), "{value}: {e}");
        }
    }

    /// `from`'s blocks: `IP/LEN` or a bare IP; IPv4-mapped IPv6 matches its IPv4 either way.
    #[test]
    fn cidr_blocks() {
        let c = |s: &str| s.parse::<Cidr>();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        for (block, inside, outside) in [
            ("10.0.0.0/8", "10.255.1.2", "11.0.0.0"),
            ("10.0.0.0/8", "::ffff:10.1.1.1", "::ffff:11.1.1.1"),
            ("192.0.2.7", "192.0.2.7", "192.0.2.8"),
            ("192.0.2.7/32", "::ffff:192.0.2.7", "192.0.2.6"),
            ("0.0.0.0/0", "203.0.113.1", "::1"),
            ("::ffff:10.0.0.0/104", "10.9.9.9", "11.0.0.0"),
            ("2001:db8::/32", "2001:db8:ffff::1", "2001:db9::"),
            ("::1", "::1", "127.0.0.1"),
            ("::/0", "2001:db8::1", "10.0.0.1"),
        ] {
            let b = c(block).unwrap();
            assert!(b.contains(ip(inside)), "{block} {inside}");
            assert!(!b.contains(ip(outside)), "{block} {outside}");
        }
        for bad in [
            "10.0.0.0/33",
            "10.0.0.0/+8",
            "10.0.0.0/",
            "10.0.0.0/-1",
            "10.0.0/8",
            "/8",
            "::/129",
            "10.0.0.1/8",
            "2001:db8::1/32",
            " 10.0.0.0/8",
            "10.0.0.0/08x",
        ] {
            assert!(c(bad).is_err(), "{bad}");
        }
    }

    /// The checks judge the certificates the policy loaded: a trust file or served
    /// certificate replaced after the load (mid-rotation) is not read again; the next
    /// load sees the new bytes.
    #[test]
    fn lint_judges_what_the_policy_loaded() {
        let now = time::OffsetDateTime::now_utc();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        aop_pki::CaRequest::new("edge")
            .create_in(&d.join("edge"), now)
            .unwrap();
        let origin = aop_pki::CaRequest::new("origin")
            .create_in(&d.join("origin"), now)
            .unwrap();
        let req = |host: &str| aop_pki::OriginRequest {
            hostnames: vec![host.to_owned()],
            days: aop_pki::ORIGIN_VALIDITY_DAYS[0],
            key_type: aop_pki::KeyType::EcdsaP256,
        };
        let write = |issued: &aop_pki::Issued| {
            aop_pki::write_issued(
                issued,
                &d.join("c.pem"),
                &d.join("k.pem"),
                aop_pki::Overwrite::Replace,
            )
            .unwrap();
        };
        write(&origin.issue_origin(&req("example.com"), now).unwrap());
        std::fs::copy(d.join("edge/ca.pem"), d.join("ca.pem")).unwrap();
        let path = d.join("origin.toml");
        let config =
            Config::parse_text(&path, format!("listen = \"127.0.0.1:1\"\n{SITE}")).unwrap();
        let policy = config.load_policy().unwrap();
        // Replaced after the load: a leaf as the trust file, a certificate for another name.
        std::fs::copy(d.join("c.pem"), d.join("ca.pem")).unwrap();
        write(&origin.issue_origin(&req("other.example"), now).unwrap());
        assert_eq!(config.lint(&policy, now), (vec![], vec![]));
        let errors = config.load_checked().unwrap_err().0;
        let lines: Vec<&str> = errors.lines().collect();
        assert_eq!(lines.len(), 2, "{errors}");
        assert!(
            lines[0].starts_with(&format!("{}:7: key `trust`: ", path.display()))
                && lines[0].contains("is not a CA certificate"),
            "{errors}"
        );
        assert!(
            lines[1].starts_with(&format!(
                "{}:4: key `hostnames`: \"example.com\" is not covered",
                path.display()
            )),
            "{errors}"
        );
    }

    /// A wildcard SAN covers exactly one left-most label (RFC 6125 §6.4.3); a hostname
    /// pattern `*.zone` only a SAN `*.zone`; case does not matter.
    #[test]
    fn san_coverage_follows_rfc_6125() {
        for (san, host, covered) in [
            ("a.example", "a.example", true),
            ("A.Example", "a.example", true),
            ("*.a.example", "x.a.example", true),
            ("*.a.example", "X.A.EXAMPLE", true),
            ("*.a.example", "*.a.example", true),
            ("*.a.example", "a.example", false),
            ("*.a.example", "y.x.a.example", false),
            ("*.a.example", ".a.example", false),
            ("x.a.example", "*.a.example", false),
            ("*.example", "*.a.example", false),
            ("a.example", "b.example", false),
            ("*", "a", false),
        ] {
            assert_eq!(covers(san, host), covered, "{san} covers {host}?");
        }
    }

    /// `crl_url` needs `crl_cache_dir`, takes http:// only, each URL once; the CRL keys
    /// without `crl_url` and zero seconds are errors at their line; `crl_stale` is
    /// `deny` by default and sets the trust's stale policy.
    #[test]
    fn crl_fetch_keys() {
        let with = |extra: &str| parse(&format!("listen = \"127.0.0.1:1\"\n{SITE}{extra}"));
        let l =
            with("crl_url = [\"http://pki.example/e.crl\"]\ncrl_cache_dir = \"cache\"\n").unwrap();
        let s = &l.crl_sources[0];
        assert_eq!(s.url.to_string(), "http://pki.example/e.crl");
        assert_eq!(s.refresh.as_secs(), CRL_REFRESH_SECS);
        assert_eq!(s.timeout.as_secs(), CRL_FETCH_TIMEOUT_SECS);
        assert_eq!(s.stale, CrlStale::Deny);
        assert!(s.cache.starts_with("/etc/aop/cache"), "{:?}", s.cache);
        assert!(!l.policy.rules[0].trust.allow_stale_crls);
        let l = with("crl_stale = \"allow\"\n").unwrap();
        assert!(l.policy.rules[0].trust.allow_stale_crls);
        assert!(l.crl_sources.is_empty());
        for (extra, line, said) in [
            ("crl_url = [\"http://a/x\"]\n", 9, "needs crl_cache_dir"),
            (
                "crl_cache_dir = \"c\"\ncrl_url = [\"https://a/x\"]\n",
                10,
                "only http:// is fetched",
            ),
            (
                "crl_cache_dir = \"c\"\ncrl_url = [\"http://a/x\",\n\"http://a/x\"]\n",
                11,
                "listed twice",
            ),
            ("crl_cache_dir = \"c\"\n", 9, "is for crl_url"),
            ("crl_refresh_secs = 5\n", 9, "is for crl_url"),
            (
                "crl_cache_dir = \"c\"\ncrl_url = [\"http://a/x\"]\ncrl_refresh_secs = 0\n",
                11,
                "must be at least 1",
            ),
            ("crl_stale = \"maybe\"\n", 9, "unknown variant"),
        ] {
            let e = with(extra).unwrap_err();
            assert!(
                e.0.starts_with(&format!("/etc/aop/origin.toml:{line}: key `")),
                "{extra}: {e}"
            );
            assert!(e.0.contains(said), "{extra}: {e}");
        }
    }

    /// `websocket` is on by default with an `http1` upstream, off with `h2c` (the upgrade
    /// is HTTP/1.1's), and `websocket = true` with `h2c` is an error at its line;
    /// `tunnel_idle_timeout_secs` defaults to 300.
    #[test]
    fn websocket_and_the_tunnel_idle_timeout() {
        let l = parse(&format!("listen = \"127.0.0.1:1\"\n{SITE}")).unwrap();
        assert!(l.upstreams[0].1.websocket);
        assert_eq!(l.file.tunnel_idle_timeout_secs, 300);
        let l = parse(&format!(
            "listen = \"127.0.0.1:1\"\ntunnel_idle_timeout_secs = 5\n{SITE}websocket = false\n"
        ))
        .unwrap();
        assert!(!l.upstreams[0].1.websocket);
        assert_eq!(l.file.tunnel_idle_timeout_secs, 5);
        let l = parse(&format!(
            "listen = \"127.0.0.1:1\"\n{SITE}upstream_protocol = \"h2c\"\n"
        ))
        .unwrap();
        assert!(!l.upstreams[0].1.websocket);
        let e = parse(&format!(
            "listen = \"127.0.0.1:1\"\n{SITE}upstream_protocol = \"h2c\"\nwebsocket = true\n"
        ))
        .unwrap_err();
        assert!(
            e.0.starts_with("/etc/aop/origin.toml:10: key `websocket`: "),
            "{e}"
        );
        let e = parse(&format!(
            "listen = \"127.0.0.1:1\"\n{SITE}websocket = \"yes\"\n"
        ))
        .unwrap_err();
        assert!(
            e.0.starts_with("/etc/aop/origin.toml:9: key `websocket`: "),
            "{e}"
        );
    }
}
