//! For aop-bench, not API: aop's TLS settings on their own, so the bench can run a bare
//! rustls server with them and measure what aop's own code costs beyond them. Hidden
//! from the docs; may change or go away in any release.

use std::sync::Arc;

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;

/// `provider` with aop's cipher-suite order (AES-128-GCM first).
pub fn tuned_provider(provider: &CryptoProvider) -> Arc<CryptoProvider> {
    crate::policy::tuned_provider(provider)
}

/// aop's server settings: the server's suite order, one ticket per handshake, up to four
/// on request.
pub fn tune_server_config(config: &mut ServerConfig) {
    crate::policy::tune_server_config(config);
}
