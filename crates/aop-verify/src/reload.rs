//! Reloading the policy while serving.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::Result;
use crate::policy::{Policy, PolicySpec};

/// A shared, atomically replaceable policy.
///
/// Each connection takes a snapshot when it arrives and keeps it for its whole
/// handshake, so a reload never changes the rules under a connection in flight. A
/// policy that fails to load is refused with an error naming the file, and the old one
/// keeps serving.
#[derive(Clone, Debug)]
pub struct PolicyHandle(Arc<ArcSwap<Policy>>);

impl PolicyHandle {
    /// A handle serving `policy`.
    pub fn new(policy: Policy) -> Self {
        Self(Arc::new(ArcSwap::from_pointee(policy)))
    }

    /// Load `spec` and serve it.
    pub fn load(spec: &PolicySpec) -> Result<Self> {
        Ok(Self::new(Policy::load(spec)?))
    }

    /// The policy in force now.
    pub fn current(&self) -> Arc<Policy> {
        self.0.load_full()
    }

    /// Load `spec`; on success, serve it from the next connection on. On failure the
    /// running policy is untouched.
    pub fn reload(&self, spec: &PolicySpec) -> Result<()> {
        let next = Policy::load(spec)?;
        self.replace(next);
        Ok(())
    }

    /// Serve an already loaded policy from the next connection on.
    pub fn replace(&self, policy: Policy) {
        self.0.store(Arc::new(policy));
    }
}
