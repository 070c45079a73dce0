//! Owner-only files and directories: the one home of the rule. The stores hold every audit entry, IP address and
//! execution input, so whatever the plugin creates on a local disk — the SQLite database (its `-wal` and `-shm`
//! take the database file's mode from SQLite), the file store's tree, backups, local archive and export
//! destinations — is created `0600` (files) and `0700` (directories), whatever the process umask, as PostgreSQL
//! does with its data directory.
//!
//! Existing files keep their mode (an operator may have widened it on purpose, e.g. for a backup user's group):
//! opening a store that other local users can read logs a warning, and the health check (`parallax storage
//! test-connection`) lists it with the `chmod` that fixes it.

use std::{
    fs::{self, DirBuilder, OpenOptions},
    io,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
    path::Path,
};

/// The mode of every file the plugin creates.
pub const FILE_MODE: u32 = 0o600;
/// The mode of every directory the plugin creates.
pub const DIR_MODE: u32 = 0o700;

/// Creates the directory `path` (its parent must exist) owner-only.
pub fn create_dir(path: &Path) -> io::Result<()> {
    DirBuilder::new().mode(DIR_MODE).create(path)
}

/// Creates `path` and its missing parents, each new one owner-only (existing ones keep their mode).
pub fn create_dir_all(path: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(DIR_MODE).create(path)
}

/// Options that create a file owner-only (the caller adds write/create flags).
pub fn file_options() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.mode(FILE_MODE);
    o
}

/// Creates `path` empty and owner-only if nothing is there yet, so that a program that creates it next with
/// its own default mode (SQLite, for a new database or `VACUUM INTO`) finds it and keeps the mode. An existing
/// file is left alone; a missing directory is the caller's (or SQLite's) error to report.
pub fn precreate(path: &Path) -> io::Result<()> {
    match file_options().write(true).create_new(true).open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// A warning when `path` exists and its group or other permission bits are set, naming the fix; `what`
/// says what it is ("the SQLite database", "the file store directory").
pub fn exposure(path: &Path, what: &str) -> Option<String> {
    let meta = fs::metadata(path).ok()?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 == 0 {
        return None;
    }
    let (fix, recursive) = if meta.is_dir() { ("go-rwx", "-R ") } else { ("600", "") };
    Some(format!(
        "{what} {} is accessible to other local users (mode {mode:04o}): it holds audit entries, IP addresses \
         and execution inputs; run `chmod {recursive}{fix} {}` (the plugin creates its files 0600 and \
         directories 0700)",
        path.display(),
        path.display()
    ))
}

/// Logs each warning of [`exposures`] (at open).
pub fn warn_at_open(warnings: &[String]) {
    for w in warnings {
        tracing::warn!(target: "parallax_storage::access", "{w}");
    }
}

/// [`exposure`] of each path, in order.
pub fn exposures<'a>(paths: impl IntoIterator<Item = (&'a Path, &'a str)>) -> Vec<String> {
    paths.into_iter().filter_map(|(p, what)| exposure(p, what)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whatever the umask: a test process's is often 0022, which would make default files 0644.
    #[test]
    fn created_owner_only_and_exposure_named() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("a/b");
        create_dir_all(&sub).unwrap();
        for d in [dir.path().join("a"), sub.clone()] {
            assert_eq!(fs::metadata(&d).unwrap().permissions().mode() & 0o777, DIR_MODE, "{}", d.display());
        }
        let f = sub.join("db");
        precreate(&f).unwrap();
        precreate(&f).unwrap(); // present: left alone
        assert_eq!(fs::metadata(&f).unwrap().permissions().mode() & 0o777, FILE_MODE);
        assert_eq!(exposure(&f, "the file"), None);
        fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).unwrap();
        let w = exposure(&f, "the file").unwrap();
        assert!(w.contains("mode 0644") && w.contains(&format!("chmod 600 {}", f.display())), "{w}");
        fs::set_permissions(&sub, fs::Permissions::from_mode(0o750)).unwrap();
        let w = exposure(&sub, "the dir").unwrap();
        assert!(w.contains("mode 0750") && w.contains("chmod -R go-rwx"), "{w}");
        assert_eq!(exposure(&dir.path().join("missing"), "x"), None);
    }
}
