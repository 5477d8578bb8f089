//! # aop-verify: the origin side of authenticated origin pulls
//!
//! An origin links this crate to talk to its edge and nobody else. Every TLS connection
//! it accepts, or refuses, gets exactly one **verdict**, named like nginx's
//! `$ssl_client_verify`:
//!
//! - `SUCCESS` — the client certificate chains to an anchor trusted for this SNI and
//!   every policy check passed;
//! - `FAILED:<reason>` — a certificate was presented and rejected; the reason is one of
//!   a closed vocabulary ([`Reason`]): `unknown_ca`, `expired`, `not_yet_valid`,
//!   `bad_signature`, `bad_eku`, `revoked`, `pin_mismatch`, `name_not_allowed`,
//!   `zone_mismatch`, `bad_encoding`, `chain_too_long`, `unsupported_algorithm`,
//!   `not_a_leaf`, `name_constraints`, `bad_key_usage`, `not_a_ca`,
//!   `unhandled_critical_extension`, `revocation_unknown`, `other`;
//! - `NONE` — no certificate was presented (or the connection never got that far: the
//!   log's `reason` field says `no_certificate`, `unknown_sni`, `no_sni`,
//!   `handshake_timeout` or `handshake_error`).
//!
//! ```text
//!                 ClientHello (SNI = shop.example.com)
//!   edge ───────────────────────────────────────────────▶ Acceptor
//!                                                          │ Policy::select(SNI)
//!                                                          │   exact > *.zone > default
//!                                                          ▼
//!                                     that rule's ServerConfig + Verifier
//!                                                          │ webpki chain check, anchor
//!                                                          │ validity, EKU, pins, SANs, CRLs
//!                                                          ▼
//!               Accepted { stream, verdict }  or  Refused { verdict } (TLS alert sent)
//!                                 verdict logged once: target "aop::verdict"
//! ```
//!
//! Per-SNI policy needs one rustls `ServerConfig` per rule, because rustls does not tell
//! a client-certificate verifier the SNI; the [`Acceptor`] reads the ClientHello first
//! and picks the config. Each config has its own session cache, and a resumed session's
//! stored certificate is re-checked against the policy in force. With
//! [`PolicySpec::session_ticket_keys`] (nginx's `ssl_session_ticket_key` files) each config
//! has a session ticket key of its own instead, derived from the files, the rule's name and
//! its policy: origins sharing the files resume each other's sessions, rule by rule (see
//! [`TicketKeys`]).
//!
//! Every configuration is built on one crypto provider, [`PolicySpec::provider`]:
//! by default [`aop_pki::default_provider`] (the process default if one is installed,
//! else aws-lc-rs); set another (a FIPS build, a provider with fewer algorithms) with
//! [`PolicySpec::with_provider`].
//!
//! ## Getting started
//!
//! The smallest real origin server is `examples/origin.rs`
//! (`cargo run -p aop-verify --features hyper --example origin -- --help`). In short:
//!
//! ```no_run
//! use aop_verify::{Acceptor, Limits, PolicyHandle, PolicySpec, RuleSpec, TrustSpec};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let rule = RuleSpec::new(
//!     "example.com",
//!     ["example.com", "*.example.com"],
//!     "origin/cert.pem",
//!     "origin/key.pem",
//!     TrustSpec::new(["edge-ca.pem"]), // several files overlap during a rotation
//! );
//! let policy = PolicyHandle::load(&PolicySpec::new(vec![rule]))?;
//! let acceptor = Acceptor::new(policy.clone(), Limits::default());
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8443").await?;
//! loop {
//!     let (tcp, peer) = listener.accept().await?;
//!     let acceptor = acceptor.clone();
//!     tokio::spawn(async move {
//!         match acceptor.accept(tcp, peer).await {
//!             Ok(conn) => {
//!                 // In require mode the verdict is SUCCESS; in optional mode, decide here.
//!                 assert!(conn.verdict().is_success());
//!                 let (tls, verdict) = conn.into_parts(); // or hand `conn` to the hyper glue
//!             }
//!             Err(refused) => { /* already logged: refused.verdict */ }
//!         }
//!     });
//! }
//! # }
//! ```
//!
//! [`Acceptor::accept`] takes any `AsyncRead + AsyncWrite + Unpin` stream and the peer's
//! address as the caller knows it: a TCP stream, a Unix socket, a stream behind a PROXY
//! protocol header (pass the address it names), an in-memory duplex in a test.
//!
//! `certtool verify` runs [`Trust::check`], the very function the TLS verifier runs, so
//! its offline verdict is the one the origin would log.
//!
//! ## In an axum, tonic or hyper server (feature `hyper`)
//!
//! `aop_verify::serve` is the accept loop: TLS through the [`Acceptor`], then HTTP/2 or HTTP/1.1
//! with the verdict in every request's extensions, for any tower service — axum's
//! `Router`, a tonic generated server, a `tower::service_fn`. For axum, the
//! aop-specific part is this (whole program: `examples/axum.rs`; gRPC:
//! `examples/tonic.rs`, where `request.extensions().get::<Arc<Verdict>>()` gives it):
//!
//! ```no_run
//! use std::sync::Arc;
//! use aop_verify::{Acceptor, Limits, PolicyHandle, PolicySpec, RuleSpec, TrustSpec, Verdict};
//! use axum::{Extension, Router, routing::get};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let rule = RuleSpec::new("shop", ["shop.example.com"], "origin/cert.pem", "origin/key.pem",
//!     TrustSpec::new(["edge-ca.pem"]));
//! let policy = PolicyHandle::load(&PolicySpec::new(vec![rule]))?;
//! let app = Router::new().route("/", get(|Extension(v): Extension<Arc<Verdict>>| async move {
//!     format!("verdict {v}\n") // SUCCESS: require mode refuses the rest in the handshake
//! }));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8443").await?;
//! aop_verify::serve(listener, Acceptor::new(policy, Limits::default()), app)
//!     .with_graceful_shutdown(async { let _ = tokio::signal::ctrl_c().await; })
//!     .await?;
//! # Ok(())
//! # }
//! ```
//!
//! `axum::serve` or tonic's own `Server` cannot take aop's place: they drive the
//! connection themselves (hyper-util's auto builder), so the verdict, the Host rule, the
//! re-check after a reload, the connection timers and the HTTP/2 limits — all per
//! connection — would have no place to run. aop drives the connection and hands each
//! request to the service; the service's own tower layers see the verdict too.
//!
//! ## What the hyper glue adds (feature `hyper`)
//!
//! `hyper::serve_connection` serves an accepted connection with the verdict in every
//! request's extensions, over HTTP/2 when ALPN chose `h2` and HTTP/1.1 otherwise
//! ([`PolicySpec::alpn`] offers `h2` then `http/1.1` by default; a rule may offer its
//! own, [`RuleSpec::alpn`]; [`Accepted::alpn`] says what was chosen).
//! `hyper::serve_connection_until` also stops on a shutdown signal and reports each 421,
//! 400 and timeout to a `hyper::Observer` for the caller's metrics. The glue guards what
//! comes after the handshake: every Host header, absolute-form authority and HTTP/2
//! `:authority` is parsed strictly by [`authority::parse`] (400 if it does not parse, if
//! there are two Host headers, if an HTTP/1.1 request has none or an HTTP/2 request names
//! no host, or if an HTTP/2 request's Host differs from its `:authority`) and must belong
//! to the connection's rule (421 otherwise, the default rule included); a request head
//! must arrive whole within [`Limits::header_read_timeout`] of its first byte (HTTP/1.1),
//! and the next request must start within [`Limits::keepalive_timeout`] (on HTTP/2: the
//! connection with no open stream for that long gets GOAWAY, whatever PINGs arrive); after
//! a reload a kept-alive connection's certificate is re-checked before its next request
//! or stream (`require`: 421 and close — on HTTP/2, GOAWAY — if it no longer passes;
//! `optional`: the request carries the new verdict). HTTP/2 connections are bounded by
//! [`Http2Limits`] (100 streams, 16 KiB header lists, small windows and send buffers).
//!
//! Reload with [`PolicyHandle::reload`]: the new policy serves from the next
//! connection; connections in flight keep the one they started with; a policy that fails
//! to load is refused with an error naming the file, and the old one keeps serving.

mod acceptor;
pub mod authority;
#[cfg(feature = "bench")]
#[doc(hidden)]
pub mod bench;
mod constraints;
#[cfg(test)]
mod der;
mod error;
#[cfg(feature = "hyper")]
pub mod hyper;
mod policy;
mod reload;
#[cfg(feature = "hyper")]
mod serve;
mod strict;
mod tickets;
mod trust;
mod verdict;
mod verifier;
mod view;

pub use acceptor::{Accepted, Acceptor, Http2Limits, Limits, Refused};
pub use error::{Error, Result};
pub use policy::{DEFAULT_TICKET_LIFETIME, Mode, Policy, PolicySpec, Rule, RuleSpec};
pub use reload::PolicyHandle;
#[cfg(feature = "hyper")]
pub use serve::{Serve, ServeFuture, serve};
pub use tickets::{MAX_TICKET_LIFETIME, TicketKeys};
pub use trust::{CRL_CLOCK_SKEW, Checked, CrlFacts, DEFAULT_MAX_DEPTH, Trust, TrustSpec};
pub use verdict::{NoneCause, Outcome, Reason, Verdict};
