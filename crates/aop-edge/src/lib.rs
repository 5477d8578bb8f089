//! # aop-edge: the edge side of authenticated origin pulls
//!
//! The edge must present the right client certificate to each origin, and must check the
//! origin's own certificate. This crate
//! - keeps the edge's **identities** ([`IdentityStore`]): a shared certificate,
//!   per-zone certificates and per-hostname certificates, chosen per origin hostname with
//!   Cloudflare's precedence: per-hostname > per-zone > shared;
//! - **connects** to an origin ([`connect_tls`]): TCP to an address that may differ from
//!   the hostname (like `curl --resolve`, see [`Resolve`]), SNI and server-certificate
//!   verification on the hostname, connect and handshake timeouts;
//! - **probes** an origin ([`probe()`]): the negative test that proves its back door is
//!   shut — or shows that it is open. Content served means open; the decision table, and
//!   the pure reply classifier [`probe::classify_reply`], are in [`probe`](mod@probe);
//! - probes a **fleet** ([`fleet::probe_all`]): many origins at once, at most a given
//!   number in flight, each under its own timeouts, results in input order; and reads the
//!   origins file that lists one (`URL [HOST:PORT:ADDR]` a line, [`fleet::read_origins`]);
//! - with the `hyper` feature, gives hyper-util's pooled client a connector and keeps
//!   **one pool per identity** (`EdgeClient`), so a connection made with one certificate
//!   never carries a request that needs another. It offers `h2` then `http/1.1` by ALPN
//!   ([`StoreSpec::alpn`]): where the origin chooses `h2`, an identity's requests to it
//!   share one multiplexed connection.
//!
//! ```text
//!   request for shop.example.com ──▶ IdentityStore::select("shop.example.com")
//!                                      hostname cert? ─ zone cert (example.com)? ─ shared?
//!                                                        │
//!                       that identity's ClientConfig (+ its own session cache and pool)
//!                                                        │  TCP to --resolve ADDR or DNS
//!                                                        ▼  SNI shop.example.com
//!                                                     origin (aop-verify, nginx, …)
//! ```
//!
//! The origin's server certificate is always verified, against the roots you give (for
//! example Cloudflare's Origin CA root); there is no silent insecure mode. The one
//! exception, for `certtool probe --insecure`, lives in [`danger`].
//!
//! The cryptography is the caller's: every `ClientConfig` is built, and every key checked
//! against its certificate, with the crypto provider given ([`StoreSpec::provider`], an
//! argument of [`danger::unverified_server_config`]); by default
//! [`aop_pki::default_provider`], the process default if one is installed, else aws-lc-rs.
//! A FIPS build or another provider goes there. The probe and the connector use the
//! provider of the configuration they are handed.
//!
//! ## Getting started
//!
//! ```no_run
//! use aop_edge::{IdentitySpec, IdentityStore, Resolve, StoreSpec, Timeouts};
//!
//! # async fn run() -> Result<(), aop_edge::Error> {
//! let mut spec = StoreSpec::new(["origin-ca.pem"]);
//! spec.shared = Some(IdentitySpec::new("edge/cert.pem", "edge/key.pem"));
//! spec.zones.push(("example.com".into(), IdentitySpec::new("zone/cert.pem", "zone/key.pem")));
//! let store = IdentityStore::load(&spec)?;
//!
//! let identity = store.select("shop.example.com").expect("the zone certificate");
//! let resolve = Resolve::new(["shop.example.com:443:192.0.2.10".parse()?]);
//! let addr = aop_edge::address("shop.example.com", 443, &resolve).await?;
//! let tls = aop_edge::connect_tls(identity.client_config().clone(), "shop.example.com", addr, Timeouts::default()).await?;
//! # drop(tls);
//! # Ok(())
//! # }
//! ```

#[cfg(feature = "hyper")]
mod client;
mod connect;
pub mod danger;
mod error;
pub mod fleet;
mod identity;
pub mod probe;

#[cfg(feature = "hyper")]
pub use client::{EdgeClient, EdgeConnector, EdgeStream, Presented, PresentedIdentity};
pub use connect::{
    Failure, Resolve, ResolveEntry, Timeouts, address, alert_name, classify, connect_tls,
    rustls_error,
};
pub use error::{Error, Result};
pub use fleet::{Origin, probe_all};
pub use identity::{Flavour, Identity, IdentitySpec, IdentityStore, StoreSpec, load_roots};
pub use probe::{Conclusion, Expectation, Judgement, Observed, ProbeResult, Target, probe};
