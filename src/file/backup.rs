//! `backup` of a file store: a consistent copy of the directory tree while the plugin keeps writing.
//!
//! Every file of the store is written once to a temporary name and renamed into place, never changed in
//! place, so a hard link to a file keeps that version of it. Hence:
//!
//! 1. On the writer thread between two group commits (`solo`: no commit is in flight, every file is in its
//!    final state), the tree is hard-linked into `<destination>.partial-<pid>/` (`.lock` and temporary files
//!    left out), and the index's row counts are taken: the same instant. Writes wait only for the linking.
//! 2. Then, with writes going on, each link is replaced by a real copy (copied to a temporary name, synced,
//!    renamed over the link), so the backup shares no inode with the live store; every directory is synced.
//! 3. The partial tree is renamed to the destination and its directory synced.
//!
//! When the destination is on another file system (no hard links across, `EXDEV`) step 1 copies instead, so
//! writes wait for the whole copy. Refused: a relative destination, one that exists, one inside `basePath`,
//! a directory that does not exist. The result is a file store: open it with `basePath` pointing at it.

use std::{
    collections::BTreeMap,
    fs, io,
    path::{Path, PathBuf},
    time::Instant,
};

use parallax_storage_abi::transfer::{BackupReport, TABLES};

use super::{
    durable::{self, parallel, sync_dir, temp_path, FAN_OUT},
    layout::{self, LOCK},
    FileBackend,
};
use crate::error::{Error, Result};

/// Refuses a destination the backup must not write; returns its directory.
fn check_destination(base: &Path, dest: &Path) -> Result<PathBuf> {
    if !dest.is_absolute() {
        return Err(Error::invalid(format!(
            "backup destination {} is not an absolute path; give the full path of a new directory",
            dest.display()
        )));
    }
    let dir = dest.parent().filter(|d| !d.as_os_str().is_empty()).ok_or_else(|| {
        Error::invalid(format!("backup destination {} has no parent directory", dest.display()))
    })?;
    let (Ok(base), Ok(parent)) = (fs::canonicalize(base), fs::canonicalize(dir)) else {
        return Err(Error::invalid(format!(
            "backup destination {}: directory {} does not exist; create it first",
            dest.display(),
            dir.display()
        )));
    };
    let name = dest.file_name().ok_or_else(|| {
        Error::invalid(format!("backup destination {} does not name a new directory", dest.display()))
    })?;
    if parent.join(name).starts_with(&base) {
        return Err(Error::invalid(format!(
            "backup destination {} is inside the store's basePath {}; choose a directory outside it",
            dest.display(),
            base.display()
        )));
    }
    if fs::symlink_metadata(dest).is_ok() {
        return Err(Error::invalid(format!(
            "backup destination {} exists already; a backup never overwrites: choose a new path or remove it",
            dest.display()
        )));
    }
    Ok(dir.to_path_buf())
}

/// How step 1 puts a file into the partial tree.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Link,
    Copy,
}

fn is_cross_device(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EXDEV)
}

/// Mirrors the tree `from` into `to` (which must not exist): directories created, files hard-linked or
/// copied, `.lock` (top level) and temporary files left out. Returns the files placed.
fn mirror(from: &Path, to: &Path, mode: Mode, top: bool, files: &mut Vec<PathBuf>) -> io::Result<()> {
    crate::private::create_dir(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        let text = name.to_string_lossy();
        if layout::is_temp(&text) || (top && text == LOCK) {
            continue;
        }
        let (src, dst) = (entry.path(), to.join(&name));
        let kind = entry.file_type()?;
        if kind.is_dir() {
            mirror(&src, &dst, mode, false, files)?;
        } else if kind.is_file() {
            match mode {
                Mode::Link => fs::hard_link(&src, &dst)?,
                Mode::Copy => {
                    fs::copy(&src, &dst)?;
                }
            }
            files.push(dst);
        }
    }
    Ok(())
}

/// Replaces the hard link `path` by a file of its own with the same contents, synced.
fn unlink_copy(path: &Path) -> io::Result<u64> {
    let tmp = temp_path(path);
    let copied = fs::copy(path, &tmp).and_then(|n| fs::File::open(&tmp)?.sync_all().map(|_| n));
    match copied.and_then(|n| fs::rename(&tmp, path).map(|_| n)) {
        Ok(n) => Ok(n),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

fn sync_file(path: &Path) -> io::Result<u64> {
    let f = fs::File::open(path)?;
    f.sync_all()?;
    Ok(f.metadata()?.len())
}

/// Every directory of the tree at `root`, `root` included.
fn dirs_of(root: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    out.push(root.to_path_buf());
    for entry in fs::read_dir(root)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            dirs_of(&entry.path(), out)?;
        }
    }
    Ok(())
}

impl FileBackend {
    pub(super) async fn backup_impl(&self, destination: PathBuf) -> Result<BackupReport> {
        self.backup_with(destination, Mode::Link).await
    }

    /// [`Self::backup_impl`] starting with `first` (tests force the copy a cross-device backup falls back to).
    async fn backup_with(&self, destination: PathBuf, first: Mode) -> Result<BackupReport> {
        let started = Instant::now();
        self.read().map(drop)?;
        let base = self.layout.base.clone();
        let dir = check_destination(&base, &destination)?;
        let name = destination.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let partial = dir.join(format!("{name}.partial-{}", std::process::id()));
        let failed = |what: &str, e: &dyn std::fmt::Display| {
            Error::unavailable(format!("backup to {}: {what} failed: {e}", destination.display()))
        };
        // A leftover of this very process (an earlier failed backup): never another process's.
        if fs::symlink_metadata(&partial).is_ok() {
            fs::remove_dir_all(&partial)
                .map_err(|e| failed(&format!("removing {}", partial.display()), &e))?;
        }

        // Step 1, between two group commits.
        let index = self.index.clone();
        let (from, to) = (base.clone(), partial.clone());
        let linked = self
            .writer
            .solo("backing up the file store", move |_| {
                let rows = index.read().unwrap_or_else(|p| p.into_inner()).rows();
                let mut files = Vec::new();
                let mode = match mirror(&from, &to, first, true, &mut files) {
                    Ok(()) => first,
                    Err(e) if first == Mode::Link && is_cross_device(&e) => {
                        let _ = fs::remove_dir_all(&to);
                        files.clear();
                        mirror(&from, &to, Mode::Copy, true, &mut files).map(|_| Mode::Copy).map_err(|e| {
                            let _ = fs::remove_dir_all(&to);
                            Error::unavailable(format!("copying the store to {} failed: {e}", to.display()))
                        })?
                    }
                    Err(e) => {
                        let _ = fs::remove_dir_all(&to);
                        return Err(Error::unavailable(format!(
                            "placing the store's files into {} failed: {e}",
                            to.display()
                        )));
                    }
                };
                Ok((rows, files, mode))
            })
            .await;
        let (rows, files, mode) = linked.map_err(|e| {
            Error::new(e.kind(), format!("backup to {}: {}", destination.display(), e.0.message))
        })?;

        // Steps 2 and 3, while writes go on.
        let (to, dest, parent) = (partial.clone(), destination.clone(), dir.clone());
        let finished = tokio::task::spawn_blocking(move || -> io::Result<u64> {
            let sizes = parallel(files, FAN_OUT, |f| match mode {
                Mode::Link => unlink_copy(&f),
                Mode::Copy => sync_file(&f),
            });
            let bytes = sizes.into_iter().collect::<io::Result<Vec<u64>>>()?.into_iter().sum();
            let mut dirs = Vec::new();
            dirs_of(&to, &mut dirs)?;
            parallel(dirs, FAN_OUT, |d| sync_dir(&d)).into_iter().collect::<io::Result<Vec<()>>>()?;
            if fs::symlink_metadata(&dest).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "the destination appeared meanwhile",
                ));
            }
            fs::rename(&to, &dest)?;
            durable::sync_dir(&parent)?;
            Ok(bytes)
        })
        .await
        .map_err(|e| Error::internal(format!("the file store backup task failed: {e}")))?;
        let bytes = match finished {
            Ok(bytes) => bytes,
            Err(e) => {
                let _ = fs::remove_dir_all(&partial);
                return Err(failed("copying", &e));
            }
        };
        let files = {
            let mut dirs = Vec::new();
            dirs_of(&destination, &mut dirs).map_err(|e| failed("listing the copy", &e))?;
            dirs.iter()
                .map(|d| fs::read_dir(d).map(|es| es.flatten().filter(|e| e.path().is_file()).count() as u64))
                .sum::<io::Result<u64>>()
                .map_err(|e| failed("listing the copy", &e))?
        };
        let rows: BTreeMap<String, u64> = TABLES.iter().zip(rows).map(|(t, n)| (t.to_string(), n)).collect();
        tracing::info!(
            destination = %destination.display(), files, bytes, linked = (mode == Mode::Link),
            "file store backed up"
        );
        Ok(BackupReport {
            backend: "file".into(),
            destination: destination.display().to_string(),
            bytes,
            files,
            rows,
            integrity: None,
            duration_ms: started.elapsed().as_millis() as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use parallax_storage_abi::{NewAuditEntry, OpenOptions};

    use super::*;
    use crate::contract::Contract;

    async fn open(base: &Path) -> FileBackend {
        let json = serde_json::json!({ "type": "file", "file": { "basePath": base, "format": "json" } });
        FileBackend::open(crate::config::parse(&json.to_string()).unwrap(), OpenOptions::default())
            .await
            .unwrap()
    }

    /// The copy a cross-device backup falls back to (no hard links) gives the same store, with its own files.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_backup_by_copy_gives_the_same_store() {
        let dir = tempfile::tempdir().unwrap();
        let b = open(&dir.path().join("store")).await;
        let entries: Vec<NewAuditEntry> = (1..=4)
            .map(|n| NewAuditEntry {
                id: abi_stable::std_types::RSome(format!("0190b3f2-7c1e-7a00-8000-{n:012}").into()),
                timestamp: abi_stable::std_types::RSome(1_705_314_615_123_456 + n),
                action: "login".into(),
                ..NewAuditEntry::default()
            })
            .collect();
        b.append_audit(entries).await.unwrap();
        let dest = dir.path().join("copied");
        let report = b.backup_with(dest.clone(), Mode::Copy).await.unwrap();
        assert_eq!(report.rows["audit_logs"], 4);
        assert_eq!(report.backend, "file");
        let mut todo = vec![dest.clone()];
        let mut files = 0;
        while let Some(d) = todo.pop() {
            for e in fs::read_dir(&d).unwrap().flatten() {
                if e.file_type().unwrap().is_dir() {
                    todo.push(e.path());
                } else {
                    files += 1;
                    assert_eq!(e.metadata().unwrap().nlink(), 1);
                    assert_ne!(e.file_name().to_string_lossy(), LOCK);
                }
            }
        }
        assert_eq!(report.files, files);
        let copy = open(&dest).await;
        let q = parallax_storage_abi::AuditQuery::default();
        let page = crate::validate::Page { limit: 10, after: None };
        assert_eq!(
            copy.query_audit(q.clone(), page.clone()).await.unwrap(),
            b.query_audit(q, page).await.unwrap()
        );
        copy.shutdown().await.unwrap();
        b.shutdown().await.unwrap();
    }
}
