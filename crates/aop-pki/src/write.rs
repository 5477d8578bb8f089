//! Writing files safely: atomically, with the right permissions, never clobbering by
//! accident.
//!
//! Every file is written to a temporary file in the same directory (created 0600, so a
//! key is never readable by others, not even for a moment), flushed to disk, then
//! renamed over the target; the directory is then synced so the rename itself survives
//! a crash. A reader sees the old file or the new one, never a mix.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Who may read a file we write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileMode {
    /// 0644: certificates, CRLs, trust bundles.
    Public,
    /// 0600: private keys, and anything that contains one.
    Secret,
}

impl FileMode {
    /// The Unix permission bits.
    pub fn bits(self) -> u32 {
        match self {
            Self::Public => 0o644,
            Self::Secret => 0o600,
        }
    }
}

/// Whether an existing target may be replaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overwrite {
    /// Refuse with [`Error::Exists`] if the target exists (the default everywhere).
    Refuse,
    /// Replace it (atomically). `--force` in certtool.
    Replace,
}

/// One file to write.
#[derive(Debug)]
pub struct PendingFile<'a> {
    /// Where it goes.
    pub path: PathBuf,
    /// Its contents.
    pub contents: &'a [u8],
    /// Its permissions.
    pub mode: FileMode,
}

/// Write one file atomically: temp file in the same directory, fsync, rename, fsync the
/// directory. The file never exists with wrong permissions or partial contents.
pub fn write_atomic(
    path: &Path,
    contents: &[u8],
    mode: FileMode,
    overwrite: Overwrite,
) -> Result<()> {
    write_all_atomic(
        &[PendingFile {
            path: path.to_owned(),
            contents,
            mode,
        }],
        overwrite,
    )
}

/// Write a set of files that belong together (a certificate and its key).
///
/// Nothing is renamed into place until every file has been written and synced to a
/// temporary file, and with [`Overwrite::Refuse`] nothing is written at all if any
/// target exists. If a rename fails part way, the files already renamed are removed
/// (if they are new) or put back from a hard-linked backup (if they replaced one), so
/// the set appears whole or not at all. (A crash between two renames can still leave a
/// mix; the old file then survives as `.NAME.aop-old` beside it.)
pub fn write_all_atomic(files: &[PendingFile<'_>], overwrite: Overwrite) -> Result<()> {
    if overwrite == Overwrite::Refuse {
        for f in files {
            if fs::symlink_metadata(&f.path).is_ok() {
                return Err(Error::Exists {
                    path: f.path.clone(),
                });
            }
        }
    }
    let mut staged = Vec::with_capacity(files.len());
    for f in files {
        staged.push((f, stage(f)?));
    }
    // With Replace, keep a hard link to each old file until the whole set is in place, so
    // a failure part way can put the old set back (never a new key beside an old
    // certificate).
    let mut backups: Vec<(&Path, PathBuf)> = Vec::new();
    // One file needs no backup: its rename alone is atomic.
    if overwrite == Overwrite::Replace && files.len() > 1 {
        for f in files {
            if fs::symlink_metadata(&f.path).is_ok() {
                let backup = backup_path(&f.path);
                // A backup left by a process killed mid-write is stale: the target is
                // whole (renames are atomic), so the old backup can go.
                let _ = fs::remove_file(&backup);
                fs::hard_link(&f.path, &backup).map_err(|error| Error::Write {
                    path: backup.clone(),
                    error,
                })?;
                backups.push((&f.path, backup));
            }
        }
    }
    let mut done: Vec<&Path> = Vec::with_capacity(files.len());
    for (f, tmp) in staged {
        let result = match overwrite {
            Overwrite::Replace => tmp.persist(&f.path).map(drop),
            Overwrite::Refuse => tmp.persist_noclobber(&f.path).map(drop),
        };
        if let Err(e) = result {
            // Undo: files that did not exist before go; replaced ones come back.
            for p in &done {
                match backups.iter().find(|(target, _)| target == p) {
                    Some((target, backup)) => {
                        let _ = fs::rename(backup, target);
                    }
                    None => {
                        let _ = fs::remove_file(p);
                    }
                }
            }
            for (_, backup) in &backups {
                let _ = fs::remove_file(backup);
            }
            return Err(if e.error.kind() == std::io::ErrorKind::AlreadyExists {
                Error::Exists {
                    path: f.path.clone(),
                }
            } else {
                Error::Write {
                    path: f.path.clone(),
                    error: e.error,
                }
            });
        }
        done.push(&f.path);
    }
    for (_, backup) in &backups {
        let _ = fs::remove_file(backup);
    }
    let mut dirs: Vec<&Path> = files.iter().map(|f| parent_of(&f.path)).collect();
    dirs.dedup();
    for dir in dirs {
        sync_dir(dir)?;
    }
    Ok(())
}

/// `.NAME.aop-old` beside `path`.
fn backup_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    parent_of(path).join(format!(".{name}.aop-old"))
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn stage(f: &PendingFile<'_>) -> Result<tempfile::NamedTempFile> {
    let werr = |error| Error::Write {
        path: f.path.clone(),
        error,
    };
    let name = f
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(parent_of(&f.path))
        .map_err(werr)?;
    // tempfile creates the file 0600; widen only what is public, after creation.
    #[cfg(unix)]
    if f.mode == FileMode::Public {
        use std::os::unix::fs::PermissionsExt as _;
        tmp.as_file()
            .set_permissions(fs::Permissions::from_mode(f.mode.bits()))
            .map_err(werr)?;
    }
    tmp.write_all(f.contents).map_err(werr)?;
    tmp.as_file().sync_all().map_err(werr)?;
    Ok(tmp)
}

fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|error| Error::Write {
            path: dir.to_owned(),
            error,
        })?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Create `dir` (and its parents) if missing. A directory this creates itself is 0700
/// when `private` (it will hold keys); an existing one is left as it is.
pub fn ensure_dir(dir: &Path, private: bool) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut b = fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::DirBuilderExt as _;
        b.mode(0o700);
    }
    #[cfg(not(unix))]
    let _ = private;
    b.create(dir).map_err(|error| Error::Write {
        path: dir.to_owned(),
        error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    fn mode(p: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt as _;
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn refuses_then_replaces() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.pem");
        write_atomic(&p, b"one", FileMode::Public, Overwrite::Refuse).unwrap();
        let e = write_atomic(&p, b"two", FileMode::Public, Overwrite::Refuse).unwrap_err();
        assert!(matches!(e, Error::Exists { .. }), "{e}");
        assert_eq!(fs::read(&p).unwrap(), b"one");
        write_atomic(&p, b"two", FileMode::Public, Overwrite::Replace).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        // No temporary files left behind.
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[cfg(unix)]
    #[test]
    fn modes() {
        let d = tempfile::tempdir().unwrap();
        let k = d.path().join("k");
        let c = d.path().join("c");
        write_atomic(&k, b"k", FileMode::Secret, Overwrite::Refuse).unwrap();
        write_atomic(&c, b"c", FileMode::Public, Overwrite::Refuse).unwrap();
        assert_eq!(mode(&k), 0o600);
        assert_eq!(mode(&c), 0o644);
        let sub = d.path().join("x/y");
        ensure_dir(&sub, true).unwrap();
        assert_eq!(mode(&sub), 0o700);
    }

    #[test]
    fn a_set_is_all_or_nothing() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("a");
        let b = d.path().join("b");
        fs::write(&b, b"old").unwrap();
        let files = [
            PendingFile {
                path: a.clone(),
                contents: b"new-a",
                mode: FileMode::Secret,
            },
            PendingFile {
                path: b.clone(),
                contents: b"new-b",
                mode: FileMode::Public,
            },
        ];
        let e = write_all_atomic(&files, Overwrite::Refuse).unwrap_err();
        assert!(matches!(e, Error::Exists { ref path } if *path == b), "{e}");
        assert!(!a.exists());
        assert_eq!(fs::read(&b).unwrap(), b"old");
    }
}
