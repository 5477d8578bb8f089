//! Which client certificate the edge presents to which origin.
//!
//! Three flavours, as Cloudflare has them; the most specific wins:
//! per-hostname > per-zone > shared. rustls's `ResolvesClientCert` is not told the
//! server name, so each identity gets its own prebuilt `ClientConfig` (and so its own
//! TLS session cache: a session made with one certificate is never resumed with another).

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use aop_pki::CertInfo;
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, RootCertStore};
use time::OffsetDateTime;

use crate::{Error, Result};

/// Which kind of identity matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Flavour {
    /// A certificate for one origin hostname.
    Hostname,
    /// A certificate for a zone (the apex and every name below it).
    Zone,
    /// The shared certificate, for every origin.
    Shared,
}

impl fmt::Display for Flavour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Hostname => "per-hostname",
            Self::Zone => "per-zone",
            Self::Shared => "shared",
        })
    }
}

/// A certificate (chain, PEM) and its key, as files.
#[derive(Clone, Debug)]
pub struct IdentitySpec {
    /// The client certificate, then its chain.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

impl IdentitySpec {
    /// An identity from these files.
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        Self {
            cert: cert.into(),
            key: key.into(),
        }
    }
}

/// Everything the edge presents and trusts, as files (for [`IdentityStore::load`]).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct StoreSpec {
    /// Roots that origins' server certificates must chain to (for example Cloudflare's
    /// Origin CA root). Required: there is no insecure mode.
    pub roots: Vec<PathBuf>,
    /// The shared certificate, if any.
    pub shared: Option<IdentitySpec>,
    /// Per-zone certificates: `("example.com", …)` covers example.com and every name
    /// below it.
    pub zones: Vec<(String, IdentitySpec)>,
    /// Per-hostname certificates.
    pub hostnames: Vec<(String, IdentitySpec)>,
    /// ALPN protocols to offer, most preferred first. Default: `h2`, then `http/1.1`:
    /// an origin that offers HTTP/2 gets one multiplexed connection per identity, one that
    /// does not (or picks none) gets HTTP/1.1. Code that writes HTTP/1.1 itself over an
    /// identity's configuration must offer `http/1.1` alone (the probe does).
    pub alpn: Vec<Vec<u8>>,
    /// The cryptography every `ClientConfig` uses, and that checks each key matches its
    /// certificate (a FIPS build, another provider). Default:
    /// [`aop_pki::default_provider`] (the process default, else aws-lc-rs).
    pub provider: Arc<CryptoProvider>,
}

impl StoreSpec {
    /// Verify origins against `roots`; no client certificates yet.
    pub fn new(roots: impl IntoIterator<Item = impl Into<PathBuf>>) -> Self {
        Self {
            roots: roots.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }
}

impl Default for StoreSpec {
    /// No roots, no identities, ALPN `h2` then `http/1.1`, [`aop_pki::default_provider`].
    fn default() -> Self {
        Self {
            roots: Vec::new(),
            shared: None,
            zones: Vec::new(),
            hostnames: Vec::new(),
            alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            provider: aop_pki::default_provider(),
        }
    }
}

/// One loaded identity.
#[derive(Debug)]
pub struct Identity {
    id: u64,
    flavour: Flavour,
    label: String,
    cert: Arc<CertInfo>,
    config: Arc<ClientConfig>,
}

impl Identity {
    /// A number unique to this identity in this process (a reload gives new numbers);
    /// connection pools are keyed on it.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Which flavour it is.
    pub fn flavour(&self) -> Flavour {
        self.flavour
    }

    /// The hostname or zone it is for (`*` for the shared one).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The client certificate it presents.
    pub fn certificate(&self) -> &Arc<CertInfo> {
        &self.cert
    }

    /// The rustls client configuration that presents it.
    pub fn client_config(&self) -> &Arc<ClientConfig> {
        &self.config
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// All identities, loaded: every file read and every `ClientConfig` built.
#[derive(Debug)]
pub struct IdentityStore {
    shared: Option<Arc<Identity>>,
    zones: HashMap<String, Arc<Identity>>,
    hostnames: HashMap<String, Arc<Identity>>,
    anonymous: Arc<ClientConfig>,
}

impl IdentityStore {
    /// Read every file and build the client configurations. Errors name the file.
    pub fn load(spec: &StoreSpec) -> Result<Self> {
        let roots = load_roots(&spec.roots)?;
        let builder = || -> Result<_> {
            Ok(client_builder(spec.provider.clone())?.with_root_certificates(roots.clone()))
        };
        let build = |flavour, label: &str, id: &IdentitySpec| -> Result<Arc<Identity>> {
            let aop_pki::KeyPairFiles { chain, key } =
                aop_pki::load_key_pair(&id.cert, &id.key, &spec.provider)?;
            let cert =
                CertInfo::from_der(&chain[0], OffsetDateTime::now_utc()).map_err(|detail| {
                    aop_pki::Error::BadCertificate {
                        path: id.cert.clone(),
                        index: 1,
                        detail,
                    }
                })?;
            let mut config =
                builder()?
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| Error::BadIdentity {
                        path: id.cert.clone(),
                        detail: e.to_string(),
                    })?;
            config.alpn_protocols = spec.alpn.clone();
            Ok(Arc::new(Identity {
                id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                flavour,
                label: label.to_owned(),
                cert: Arc::new(cert),
                config: Arc::new(config),
            }))
        };
        let shared = spec
            .shared
            .as_ref()
            .map(|s| build(Flavour::Shared, "*", s))
            .transpose()?;
        // Zones and hostnames: each a DNS name, each given once.
        let named = |flavour, what, specs: &[(String, IdentitySpec)]| -> Result<HashMap<_, _>> {
            let mut map = HashMap::new();
            for (name, id) in specs {
                let name = dns_name(what, name)?;
                if map
                    .insert(name.clone(), build(flavour, &name, id)?)
                    .is_some()
                {
                    return Err(Error::Duplicate { what, name });
                }
            }
            Ok(map)
        };
        let zones = named(Flavour::Zone, "zone", &spec.zones)?;
        let hostnames = named(Flavour::Hostname, "hostname", &spec.hostnames)?;
        let mut anonymous = builder()?.with_no_client_auth();
        anonymous.alpn_protocols = spec.alpn.clone();
        Ok(Self {
            shared,
            zones,
            hostnames,
            anonymous: Arc::new(anonymous),
        })
    }

    /// The identity to present to origin `host`: per-hostname, else the longest
    /// matching zone, else shared.
    pub fn select(&self, host: &str) -> Option<&Arc<Identity>> {
        let host = aop_pki::normalize_dns_name(host);
        if let Some(id) = self.hostnames.get(&host) {
            return Some(id);
        }
        let mut suffix = host.as_str();
        loop {
            if let Some(id) = self.zones.get(suffix) {
                return Some(id);
            }
            match suffix.split_once('.') {
                Some((_, rest)) => suffix = rest,
                None => break,
            }
        }
        self.shared.as_ref()
    }

    /// Every identity: the shared one, then the zones', then the hostnames' (zones and
    /// hostnames in no set order). For reports: what a reload changed, expiry metrics.
    pub fn identities(&self) -> impl Iterator<Item = &Arc<Identity>> {
        self.shared
            .iter()
            .chain(self.zones.values())
            .chain(self.hostnames.values())
    }

    /// A configuration with the same roots and no client certificate (for probes).
    pub fn anonymous(&self) -> &Arc<ClientConfig> {
        &self.anonymous
    }
}

/// A client configuration under `provider`, TLS 1.3 and 1.2, server verification still
/// to choose. Fails if the provider has no cipher suite for either version, or no key
/// exchange group.
pub(crate) fn client_builder(
    provider: Arc<CryptoProvider>,
) -> Result<rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier>> {
    ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| Error::Provider {
            detail: e.to_string(),
        })
}

/// Load root certificates for verifying origins.
pub fn load_roots(paths: &[PathBuf]) -> Result<RootCertStore> {
    if paths.is_empty() {
        return Err(Error::NoRoots);
    }
    let mut store = RootCertStore::empty();
    for path in paths {
        for cert in aop_pki::load_certificates(path)? {
            store.add(cert).map_err(|e| Error::BadRoot {
                path: path.clone(),
                detail: e.to_string(),
            })?;
        }
    }
    Ok(store)
}

/// `name` normalised ([`aop_pki::normalize_dns_name`]), if it is a DNS name.
fn dns_name(what: &'static str, name: &str) -> Result<String> {
    let lower = aop_pki::normalize_dns_name(name);
    if !aop_pki::is_dns_name(&lower) {
        return Err(Error::BadName {
            what,
            name: name.to_owned(),
        });
    }
    Ok(lower)
}
