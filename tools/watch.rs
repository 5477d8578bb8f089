//! Reload on file change: one file for aop-origin and aop-edge-proxy (each includes it as
//! its `watch` module), so both watch the same way.
//!
//! What is watched is the directory of every file in use, not the file: the directory as
//! the path names it, and the directory of what its symbolic links lead to (so a link
//! swapped to a file elsewhere is followed there too), each without recursion. That sees
//! the three ways a file is replaced:
//!
//! - Kubernetes' atomic writer: `cert.pem -> ..data/cert.pem`, and an update renames a new
//!   `..data_tmp` link over `..data` (an event in the mounted directory);
//! - a rename over the file (`mv new cert.pem`);
//! - a write in place (truncate, then write, maybe in several steps).
//!
//! A directory that does not exist (removed, not made yet) is watched through its nearest
//! ancestor that does, until it is back.
//!
//! Events are debounced: a change is acted on once the directories have been quiet for
//! [`QUIET`], or [`CAP`] after the first event of a burst if they never are (a file
//! written without pause still reloads). Then every file in use is read and hashed
//! (SHA-256): only when a file's bytes differ from the last ones seen (or it became
//! readable or unreadable) is there a change to reload; an event that changes nothing
//! (the same bytes written again, a file opened, another file in the directory) is
//! dropped silently. A broken set is seen once: the reload it causes fails, is logged and
//! counted, and the same bytes do not cause another until something changes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use aop_pki::Sha256Fingerprint;
use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How long the watched directories must be quiet after an event before the files are
/// read again.
pub(crate) const QUIET: Duration = Duration::from_millis(300);

/// The longest a burst of events puts off reading the files: 2 s after its first event.
pub(crate) const CAP: Duration = Duration::from_secs(2);

/// What each file in use held when last read: its SHA-256, or `None` if it could not be
/// read (missing, not a regular file, too large).
type Seen = BTreeMap<PathBuf, Option<Sha256Fingerprint>>;

/// The watches on the directories of the files in use, and what those files held.
pub(crate) struct FileWatch {
    watcher: notify::RecommendedWatcher,
    /// The directories watched now.
    dirs: BTreeSet<PathBuf>,
    /// One wake-up for any number of events (a full channel already holds one).
    events: mpsc::Receiver<()>,
    seen: Seen,
}

impl std::fmt::Debug for FileWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileWatch")
            .field("dirs", &self.dirs)
            .field("files", &self.seen.keys())
            .finish_non_exhaustive()
    }
}

impl FileWatch {
    /// Watch the directories of `files` and read what they hold now. Made before the
    /// files are loaded, so a change made while they load is seen (at worst it reloads
    /// the same bytes once more). Fails when the watches cannot be set up at all (no
    /// inotify instance left); a directory that cannot be watched is only logged.
    pub(crate) fn new(files: Vec<PathBuf>) -> notify::Result<Self> {
        let (tx, events) = mpsc::channel(1);
        let watcher = notify::recommended_watcher(move |event: notify::Result<Event>| {
            // An error (the kernel's queue overflowed, say) may hide a change: look.
            if event.as_ref().map_or(true, relevant) {
                let _ = tx.try_send(());
            }
        })?;
        let mut watch = Self {
            watcher,
            dirs: BTreeSet::new(),
            events,
            seen: Seen::new(),
        };
        watch.point_at(&files);
        watch.seen = read(&files);
        Ok(watch)
    }

    /// The directories watched now.
    pub(crate) fn dirs(&self) -> impl Iterator<Item = &Path> {
        self.dirs.iter().map(PathBuf::as_path)
    }

    /// Wait for the files in use to change: an event, the debounce ([`QUIET`], [`CAP`]),
    /// then `files()` (the files in use now: a configuration may have named others), the
    /// watches moved to their directories, and each read and compared with what was last
    /// seen. Returns the files whose bytes changed, once some did; what they hold now is
    /// what the next call compares with. Cancel-safe.
    pub(crate) async fn changed(
        &mut self,
        mut files: impl FnMut() -> Vec<PathBuf>,
    ) -> Vec<PathBuf> {
        loop {
            self.settle().await;
            if let Some(changed) = self.look(&files()) {
                return changed;
            }
        }
    }

    /// Move the watches to `files`' directories, read each, and compare with what was
    /// last seen: the files whose bytes changed (empty if only the set of files did), or
    /// `None` for no change.
    fn look(&mut self, files: &[PathBuf]) -> Option<Vec<PathBuf>> {
        // Watched before being read: a write after the read is an event.
        self.point_at(files);
        let now = read(files);
        let changed: Vec<PathBuf> = now
            .iter()
            .filter(|(path, hash)| self.seen.get(*path) != Some(*hash))
            .map(|(path, _)| path.clone())
            .collect();
        let gone = self.seen.keys().any(|p| !now.contains_key(p));
        self.seen = now;
        (!changed.is_empty() || gone).then_some(changed)
    }

    /// Watch the directories of `files` (after a reload by signal, which may name others),
    /// without reading them.
    pub(crate) fn retarget(&mut self, files: &[PathBuf]) {
        self.point_at(files);
    }

    /// An event, then quiet for [`QUIET`] (at most [`CAP`] after that event).
    async fn settle(&mut self) {
        if self.events.recv().await.is_none() {
            // The watcher is gone (it lives as long as `self`): nothing will change.
            std::future::pending::<()>().await;
        }
        let cap = Instant::now() + CAP;
        loop {
            let until = (Instant::now() + QUIET).min(cap);
            match tokio::time::timeout_at(until, self.events.recv()).await {
                Ok(Some(())) if Instant::now() < cap => {}
                _ => return,
            }
        }
    }

    /// Watch exactly the directories `files` need.
    fn point_at(&mut self, files: &[PathBuf]) {
        let want: BTreeSet<PathBuf> = files.iter().flat_map(|f| dirs_of(f)).collect();
        for gone in self.dirs.difference(&want) {
            let _ = self.watcher.unwatch(gone);
        }
        // Every one again, kept or not: a directory removed and made again is another
        // directory, whose watch is a new one (re-adding a live watch changes nothing).
        for dir in &want {
            if let Err(e) = self.watcher.watch(dir, RecursiveMode::NonRecursive) {
                tracing::warn!(dir = %dir.display(), error = %e,
                    "cannot watch this directory: a change there reloads only on SIGHUP");
            }
        }
        self.dirs = want;
    }
}

/// Whether an event may mean a file changed: anything but a file opened or read, or
/// closed without having been written (the reads of a reload make those).
fn relevant(event: &Event) -> bool {
    match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// The directories to watch for `file`: its own as named and the one its links lead to,
/// each the nearest that exists.
fn dirs_of(file: &Path) -> Vec<PathBuf> {
    let named = parent(file);
    let mut dirs = vec![existing(&named)];
    if let Ok(real) = std::fs::canonicalize(file) {
        let real = parent(&real);
        if !dirs.contains(&real) {
            dirs.push(real);
        }
    }
    dirs
}

/// `file`'s directory (`.` for a bare name).
fn parent(file: &Path) -> PathBuf {
    match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// `dir`, or its nearest ancestor that is a directory.
fn existing(dir: &Path) -> PathBuf {
    dir.ancestors()
        .find(|d| !d.as_os_str().is_empty() && d.is_dir())
        .map_or_else(|| PathBuf::from("."), Path::to_owned)
}

/// Each of `files` read and hashed, as the reload will read it (a regular file, at most
/// `aop_pki::MAX_FILE_SIZE`).
fn read(files: &[PathBuf]) -> Seen {
    files
        .iter()
        .map(|f| {
            let hash = aop_pki::read_file(f)
                .ok()
                .map(|b| Sha256Fingerprint::of(&b));
            (f.clone(), hash)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_directories_of_a_link_are_its_own_and_its_targets() {
        let d = tempfile::tempdir().unwrap();
        let (here, there) = (d.path().join("here"), d.path().join("there"));
        std::fs::create_dir_all(&here).unwrap();
        std::fs::create_dir_all(&there).unwrap();
        std::fs::write(there.join("cert.pem"), "x").unwrap();
        std::os::unix::fs::symlink(there.join("cert.pem"), here.join("cert.pem")).unwrap();
        let dirs = dirs_of(&here.join("cert.pem"));
        assert_eq!(dirs, [here.clone(), there.canonicalize().unwrap()]);
        // A directory that is not there: its nearest ancestor.
        assert_eq!(dirs_of(&d.path().join("gone/deeper/key.pem")), [d.path()]);
        assert_eq!(dirs_of(Path::new("bare.pem"))[0], Path::new("."));
    }

    #[test]
    fn opens_and_reads_are_not_changes_but_a_closed_write_is() {
        let kind = |k| Event::new(k);
        assert!(!relevant(&kind(EventKind::Access(AccessKind::Open(
            AccessMode::Any
        )))));
        assert!(!relevant(&kind(EventKind::Access(AccessKind::Close(
            AccessMode::Read
        )))));
        assert!(relevant(&kind(EventKind::Access(AccessKind::Close(
            AccessMode::Write
        )))));
        assert!(relevant(&kind(EventKind::Modify(
            notify::event::ModifyKind::Any
        ))));
    }

    #[test]
    fn the_same_bytes_again_are_no_change_and_other_bytes_are() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("cert.pem");
        let files = [file.clone()];
        std::fs::write(&file, "one").unwrap();
        let mut w = FileWatch::new(files.to_vec()).unwrap();
        std::fs::write(&file, "one").unwrap();
        assert_eq!(w.look(&files), None, "rewritten with the same bytes");
        std::fs::write(&file, "two").unwrap();
        assert_eq!(w.look(&files), Some(files.to_vec()));
        assert_eq!(w.look(&files), None, "seen already");
        std::fs::remove_file(&file).unwrap();
        assert_eq!(w.look(&files), Some(files.to_vec()), "gone is a change");
        assert_eq!(w.look(&files), None, "still gone is not");
        // Another file named (a reloaded configuration): a change of the set.
        let other = d.path().join("key.pem");
        std::fs::write(&other, "k").unwrap();
        assert_eq!(w.look(std::slice::from_ref(&other)), Some(vec![other]));
    }

    #[tokio::test]
    async fn a_write_in_a_watched_directory_wakes_the_watch() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("cert.pem");
        std::fs::write(&file, "one").unwrap();
        let mut w = FileWatch::new(vec![file.clone()]).unwrap();
        std::fs::write(&file, "two").unwrap();
        let changed =
            tokio::time::timeout(Duration::from_secs(30), w.changed(|| vec![file.clone()]))
                .await
                .expect("the write was seen");
        assert_eq!(changed, [file]);
    }
}
