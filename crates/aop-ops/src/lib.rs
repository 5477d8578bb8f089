//! # aop-ops: the operator's workflows over aop-pki
//!
//! [`aop_pki`] is the certificate core: load, inspect, fingerprint, issue, write. This
//! crate holds what an operator *does* with certificates over time, the workflows behind
//! `certtool inventory` and `certtool rotate`:
//!
//! ```text
//!   certtool ──▶ aop-ops ──▶ aop-pki (features issue, serde)
//!                  │           ▲
//!                  │           └── aop-verify, aop-edge (the core only)
//!                  ├─ inventory: every certificate under some paths (and presented by live
//!                  │             endpoints): where, what, when it expires, what is wrong
//!                  └─ rotate:    the edge's client certificate (and its CA) replaced in
//!                                the safe order, stage → activate → retire, crash-safe
//! ```
//!
//! A verifier never links this crate: it carries the JSON manifest, the TOML reading
//! and the issuing that only tools need.
//!
//! ## Getting started
//!
//! An inventory of a directory, with the crypto provider picked at the edge of the
//! program ([`aop_pki::default_provider`], the default of [`inventory::Options`]):
//!
//! ```
//! use aop_ops::inventory::{self, Options};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let ca = aop_pki::CaRequest::new("example CA").create_in(dir.path(), time::OffsetDateTime::now_utc())?;
//! let inv = inventory::scan(&[dir.path().to_owned()], &[], &Options::default());
//! assert_eq!(inv.summary.certificates, 1);
//! assert_eq!(inv.certificates[0].subject, ca.info().subject);
//! assert_eq!(inv.exit_code(), 0);
//! # Ok::<(), aop_ops::Error>(())
//! ```
//!
//! A rotation, from its first certificate to the next one staged:
//!
//! ```
//! use aop_ops::rotate::{Phase, Rotation, Step};
//! use aop_pki::{CaRequest, KeyType};
//! use time::OffsetDateTime;
//!
//! let now = OffsetDateTime::now_utc();
//! let root = tempfile::tempdir().unwrap();
//! CaRequest::new("edge CA").create_in(&root.path().join("ca"), now)?;
//!
//! let rot = Rotation::new(root.path().join("rot"));
//! rot.init(&root.path().join("ca"), "edge", 90, KeyType::EcdsaP256, now)?;
//! let staged = rot.stage(None, now)?;
//! assert_eq!(staged.step, Step::Stage);
//! assert_eq!(staged.manifest.phase, Phase::Staged);
//! // trust.pem now holds both CAs (here the same one, once); edge/ is still the first.
//! assert!(rot.files_in_step(&staged.manifest)?);
//! # Ok::<(), aop_ops::Error>(())
//! ```

mod error;
pub mod inventory;
pub mod rotate;

pub use error::{Error, Result};
