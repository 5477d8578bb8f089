//! The TOML configuration: parse, validate, and turn into an aop-verify policy.
//!
//! ```toml
//! listen = "0.0.0.0:443"            # or ["0.0.0.0:443", "[::]:443"]
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
//!
//! [[site]]
//! hostnames = ["example.com", "*.example.com"]
//! cert = "origin/cert.pem"          # paths are relative to this file
//! key = "origin/key.pem"
//! trust = ["edge-ca.pem"]           # several overlap during a rotation
//! pins = []                         # certificate pins (SHA-256 hex)
//! spki_pins = []                    # SPKI pins
//! allow_san = []                    # DNS or URI names
//! crl = []
//! mode = "require"                  # or "optional"
//! upstream = "http://127.0.0.1:8080"
//! ```
//!
//! A `[[site]]` with `default = true` (and no hostnames) serves every other SNI, and
//! connections without SNI.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use aop_pki::Sha256Fingerprint;
use aop_verify::{Mode, PolicySpec, RuleSpec, TrustSpec};
use serde::{Deserialize, Deserializer};

/// The whole file, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    #[serde(deserialize_with = "one_or_many")]
    pub(crate) listen: Vec<SocketAddr>,
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
    #[serde(rename = "site", default)]
    pub(crate) sites: Vec<Site>,
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

/// `log_format`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    #[default]
    Text,
    Json,
}

/// One `[[site]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Site {
    #[serde(default)]
    pub(crate) name: Option<String>,
    #[serde(default)]
    pub(crate) hostnames: Vec<String>,
    #[serde(default)]
    pub(crate) default: bool,
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
    pub(crate) trust: Vec<PathBuf>,
    #[serde(default)]
    pub(crate) pins: Vec<Sha256Fingerprint>,
    #[serde(default)]
    pub(crate) spki_pins: Vec<Sha256Fingerprint>,
    #[serde(default)]
    pub(crate) allow_san: Vec<String>,
    #[serde(default)]
    pub(crate) crl: Vec<PathBuf>,
    #[serde(default, deserialize_with = "mode")]
    pub(crate) mode: Mode,
    #[serde(default)]
    pub(crate) max_depth: Option<usize>,
    pub(crate) upstream: Upstream,
}

/// A plain-HTTP upstream: `http://HOST:PORT`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Upstream {
    /// `HOST:PORT`.
    pub(crate) authority: String,
}

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
        })
    }
}

fn mode<'de, D: Deserializer<'de>>(d: D) -> Result<Mode, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map_err(serde::de::Error::custom)
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SocketAddr>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    let list = match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    };
    if list.is_empty() {
        return Err(serde::de::Error::custom("at least one address is needed"));
    }
    list.iter()
        .map(|s| {
            s.parse()
                .map_err(|_| serde::de::Error::custom(format!("{s:?} is not an address (IP:PORT)")))
        })
        .collect()
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

/// A loaded configuration: the file, and what it turns into.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub(crate) path: PathBuf,
    pub(crate) config: Config,
    /// Site name → upstream, in rule order.
    pub(crate) upstreams: Vec<(String, Upstream)>,
    pub(crate) policy: PolicySpec,
    text: String,
}

impl Loaded {
    /// Read and validate `path`; every error names the file and, where it can, the line
    /// and key.
    pub(crate) fn read(path: &Path) -> Result<Self, ConfigError> {
        // Only a regular file, at most 4 MiB (a device or FIFO is refused unread).
        let bytes = aop_pki::read_file(path).map_err(|e| ConfigError(e.to_string()))?;
        let text = String::from_utf8(bytes)
            .map_err(|e| ConfigError(format!("{}: not UTF-8 text: {e}", path.display())))?;
        Self::parse(path, text)
    }

    /// Validate `text` as if read from `path`.
    pub(crate) fn parse(path: &Path, text: String) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(&text).map_err(|e| {
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
        let at = |needle: &str| -> String {
            let line = text
                .lines()
                .position(|l| l.contains(needle))
                .map_or(0, |i| i + 1);
            format!("{}:{line}", path.display())
        };
        if config.sites.is_empty() {
            return Err(ConfigError(format!(
                "{}: no [[site]] tables: nothing to serve",
                path.display()
            )));
        }
        let mut rules = Vec::new();
        let mut default = None;
        let mut upstreams = Vec::new();
        for (i, site) in config.sites.iter().enumerate() {
            let name = site
                .name
                .clone()
                .or_else(|| site.hostnames.first().cloned())
                .unwrap_or_else(|| {
                    if site.default {
                        "default".into()
                    } else {
                        format!("site{}", i + 1)
                    }
                });
            let mut trust = TrustSpec::new(site.trust.iter().map(|p| base.join(p)));
            trust.pins = site.pins.clone();
            trust.spki_pins = site.spki_pins.clone();
            trust.allow_san = site.allow_san.clone();
            trust.crls = site.crl.iter().map(|p| base.join(p)).collect();
            if let Some(d) = site.max_depth {
                trust.max_depth = d;
            }
            let mut rule = RuleSpec::new(
                &name,
                site.hostnames.clone(),
                base.join(&site.cert),
                base.join(&site.key),
                trust,
            );
            rule.mode = site.mode;
            if site.default {
                if !site.hostnames.is_empty() {
                    return Err(ConfigError(format!(
                        "{}: key `hostnames` (site {name:?}): a default site serves every other SNI; give it no hostnames",
                        at("default")
                    )));
                }
                if default.replace(rule).is_some() {
                    return Err(ConfigError(format!(
                        "{}: key `default`: only one site can be the default",
                        at("default")
                    )));
                }
            } else {
                if site.hostnames.is_empty() {
                    return Err(ConfigError(format!(
                        "{}: site {name:?} has no `hostnames` (give some, or `default = true`)",
                        path.display()
                    )));
                }
                rules.push(rule);
            }
            upstreams.push((name, site.upstream.clone()));
        }
        let mut policy = PolicySpec::new(rules);
        policy.default = default;
        let loaded = Self {
            path: path.to_owned(),
            config,
            upstreams,
            policy,
            text,
        };
        Ok(loaded)
    }

    /// Load the policy's files (certificates, keys, trust, CRLs): errors name the file and
    /// the config line and key that refer to it.
    pub(crate) fn load_policy(&self) -> Result<aop_verify::Policy, ConfigError> {
        // Read each file once here first, knowing which key named it, so an error can
        // point at the right line (the same file may appear under several keys).
        let base = self.path.parent().unwrap_or(Path::new("."));
        for (i, site) in self.config.sites.iter().enumerate() {
            let at = |key: &str, file: &Path, e: &dyn std::fmt::Display| {
                let line = self.line_of(i, key, &file.to_string_lossy());
                ConfigError(format!("{}:{line}: key `{key}`: {e}", self.path.display()))
            };
            aop_pki::load_certificates(&base.join(&site.cert))
                .map_err(|e| at("cert", &site.cert, &e))?;
            aop_pki::load_private_key(&base.join(&site.key))
                .map_err(|e| at("key", &site.key, &e))?;
            for t in &site.trust {
                aop_pki::load_certificates(&base.join(t)).map_err(|e| at("trust", t, &e))?;
            }
            for c in &site.crl {
                aop_pki::load_crls(&base.join(c)).map_err(|e| at("crl", c, &e))?;
            }
        }
        aop_verify::Policy::load(&self.policy).map_err(|e| {
            let msg = e.to_string();
            let line = self
                .text
                .lines()
                .position(|l| {
                    l.split('"')
                        .skip(1)
                        .step_by(2)
                        .any(|quoted| !quoted.is_empty() && msg.contains(quoted))
                })
                .map_or(String::new(), |i| format!(":{}", i + 1));
            ConfigError(format!("{}{line}: {msg}", self.path.display()))
        })
    }
}

impl Loaded {
    /// The line of `"value"` under `key` in the `site`-th `[[site]]` table (0 if not found).
    fn line_of(&self, site: usize, key: &str, value: &str) -> usize {
        let quoted = format!("\"{value}\"");
        let mut seen_sites = 0;
        let mut in_site = false;
        let mut current_key = String::new();
        for (i, line) in self.text.lines().enumerate() {
            let t = line.trim();
            if t.starts_with("[[") || (t.starts_with('[') && !t.starts_with("[\"")) {
                in_site = t == "[[site]]" && {
                    seen_sites += 1;
                    seen_sites == site + 1
                };
                continue;
            }
            if let Some((k, _)) = t.split_once('=')
                && !k.trim().starts_with('"')
            {
                current_key = k.trim().to_owned();
            }
            if in_site && current_key == key && line.contains(&quoted) {
                return i + 1;
            }
        }
        0
    }
}

/// 1-based line of byte `offset`, and the key on that line (text before `=`), if any.
fn locate(text: &str, offset: usize) -> (usize, String) {
    let before = &text[..offset.min(text.len())];
    let line_no = before.matches('\n').count() + 1;
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

    fn parse(text: &str) -> Result<Loaded, ConfigError> {
        Loaded::parse(Path::new("/etc/aop/origin.toml"), text.to_owned())
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
        assert_eq!(l.config.listen.len(), 2);
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
        let both = SITE.replace(
            "hostnames = [\"example.com\"]",
            "default = true\nhostnames = [\"x.test\"]",
        );
        let e = parse(&format!("listen = \"127.0.0.1:1\"\n{both}")).unwrap_err();
        assert!(e.0.contains("a default site serves every other SNI"), "{e}");
        let neither = SITE.replace("hostnames = [\"example.com\"]\n", "");
        let e = parse(&format!("listen = \"127.0.0.1:1\"\n{neither}")).unwrap_err();
        assert!(e.0.contains("has no `hostnames`"), "{e}");
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
}
