//! For aop-bench, not API: aop's TLS settings on their own, so the bench can run a bare
//! rustls server with them and measure what aop's own code costs beyond them. Hidden
//! from the docs; may change or go away in any release.

pub use crate::policy::{tune_server_config, tuned_provider};
