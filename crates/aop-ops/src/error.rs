//! The one error type of this crate.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in an operator workflow.
///
/// `Display` gives one line an operator can act on, naming the file or the rotation
/// directory: `PATH: what is wrong`.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading, checking, issuing or writing a certificate or file failed (aop-pki's
    /// error, which names the file).
    #[error(transparent)]
    Pki(#[from] aop_pki::Error),

    /// A rotation step cannot be taken: wrong phase, origins not ready, another step
    /// running, nothing to roll back.
    #[error("{}: {reason}", dir.display())]
    Rotation {
        /// The rotation directory.
        dir: PathBuf,
        /// Why, and what to do instead.
        reason: String,
    },

    /// `manifest.json` cannot be read as a rotation state (bad JSON, an unknown step or
    /// key type, a certificate id that is not a plain directory name).
    #[error("{}: manifest.json is damaged: {detail}", dir.display())]
    Damaged {
        /// The rotation directory.
        dir: PathBuf,
        /// What is wrong, on one line.
        detail: String,
    },

    /// The rotation keeps `DIR/edge` as a symbolic link, which this platform lacks
    /// (rotation is supported on Unix).
    #[error("{}: rotation needs symbolic links (DIR/edge), which this platform does not have", dir.display())]
    Unsupported {
        /// The rotation directory.
        dir: PathBuf,
    },

    /// The caller's write hook ([`crate::rotate::Rotation::with_write_hook`]) stopped the
    /// step right after one of its writes, as a crash there would.
    #[error("{}: stopped after write {write}: {error}", dir.display())]
    Stopped {
        /// The rotation directory.
        dir: PathBuf,
        /// Which write, counted from 1 for the `Rotation` value.
        write: usize,
        /// What the hook returned.
        error: io::Error,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
