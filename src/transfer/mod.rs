//! Moving the whole history between backends (`copy`, `export`, `import`) and consistent backups (`backup`):
//! written once for every backend.
//!
//! - The rules live here: the snapshot cut, resume and catch-up ([`state`]), the canonical per-row checksum
//!   ([`checksum`]), landing a page in a target with conflict detection and read-back (`land`), the copy
//!   driver (`copy`), the export writer (`export`, the archive's format plus patterns) and the import walk
//!   (`import`).
//! - A backend only persists: it implements [`Store`] (insert patterns as given, fetch rows by id, replace an
//!   unfinished execution the copy itself wrote, keep a transfer state, back itself up) on top of the archive
//!   primitives ([`crate::archive::Store`]: scan in key order, insert-if-absent).
//!
//! The maintenance ops `copy`, `export`, `import` and `backup` (`parallax_storage_abi::transfer`) call into
//! this module.

pub mod checksum;
pub mod copy;
pub mod export;
pub mod import;
pub mod land;
pub mod state;

use std::{future::Future, path::PathBuf};

use parallax_storage_abi::{
    transfer::{BackupParams, BackupReport},
    AuditEntry, Pattern,
};

use crate::{
    archive::{ExecutionRecord, Imported},
    error::{Error, Result},
};

/// The environment variable that pauses a `copy` or `import` at a named step, for the tests that kill the
/// process at each step (`PARALLAX_TRANSFER_PAUSE_AT=mid-executions`): the run prints `transfer paused at
/// <step>` on stderr and sleeps until killed. Steps: `after-patterns` (patterns landed and saved),
/// `mid-executions` (the first executions page landed and its state saved), `before-save` (a page landed, its
/// state not saved), `mid-audit` (the first audit page landed and saved), `before-verify` (everything landed,
/// nothing verified). Unset in production: one `getenv` per step.
pub const PAUSE_ENV: &str = "PARALLAX_TRANSFER_PAUSE_AT";

/// Pauses here if [`PAUSE_ENV`] names `step`.
pub async fn pause_point(step: &str) {
    if std::env::var(PAUSE_ENV).is_ok_and(|v| v == step) {
        eprintln!("transfer paused at {step}");
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
        }
    }
}

/// The `backup` op: checks the destination (an absolute path that does not exist yet, in a directory that
/// does), then lets the backend write its consistent copy there.
pub async fn backup<S: crate::contract::Contract>(store: &S, params: BackupParams) -> Result<BackupReport> {
    let destination = backup_destination(&params.destination)?;
    let mut report = store.backup(destination).await?;
    report.destination = params.destination;
    Ok(report)
}

/// The checked destination of a backup.
fn backup_destination(text: &str) -> Result<PathBuf> {
    if text.trim().is_empty() {
        return Err(Error::invalid(
            "backup destination is empty; pass an absolute path that does not exist yet, such as \
             /var/backups/parallax-2026-12-02.db",
        ));
    }
    let path = PathBuf::from(text);
    if !path.is_absolute() {
        return Err(Error::invalid(format!(
            "backup destination {text:?} is not an absolute path; pass one such as /var/backups/{}",
            path.file_name().map_or("parallax.db".into(), |n| n.to_string_lossy().into_owned())
        )));
    }
    match std::fs::symlink_metadata(&path) {
        Ok(_) => {
            return Err(Error::invalid(format!(
                "backup destination {text:?} already exists; a backup never overwrites: pass a new path or \
                 remove it first"
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::invalid(format!("backup destination {text:?} cannot be checked: {e}"))),
    }
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    match parent {
        Some(dir) if dir.is_dir() => Ok(path),
        Some(dir) => Err(Error::invalid(format!(
            "backup destination {text:?}: its directory {} does not exist; create it first (mkdir -p {})",
            dir.display(),
            dir.display()
        ))),
        None => Err(Error::invalid(format!(
            "backup destination {text:?} has no parent directory; pass a path below one"
        ))),
    }
}

/// The error of a primitive a backend does not implement (yet).
pub fn unsupported(what: &str) -> Error {
    Error::unsupported(format!("this backend does not support {what}"))
}

/// What a backend does for transfers; every rule is decided by the caller (this module).
pub trait Store: crate::archive::Store {
    /// Inserts the pattern versions whose id is absent and whose `(name, version)` is free, exactly as given
    /// (id, name, version, description, definition, `created_at`, `created_by`), with their search entries,
    /// in one transaction; any other is skipped and left as it is (`Imported.skipped`).
    fn import_patterns(&self, patterns: Vec<Pattern>) -> impl Future<Output = Result<Imported>> + Send {
        let _ = patterns;
        async { Err(unsupported("importing patterns")) }
    }

    /// The executions with these ids that are present, each with all its events in `seq` order, in any order.
    /// `within`: the smallest and largest `started_at` of the wanted rows, when the caller knows them (lets
    /// PostgreSQL prune partitions); rows outside it may be missed.
    fn fetch_executions(
        &self,
        ids: Vec<String>,
        within: Option<(i64, i64)>,
    ) -> impl Future<Output = Result<Vec<ExecutionRecord>>> + Send {
        let _ = (ids, within);
        async { Err(unsupported("fetching executions by id")) }
    }

    /// The audit entries with these ids that are present, in any order.
    fn fetch_audit(&self, ids: Vec<String>) -> impl Future<Output = Result<Vec<AuditEntry>>> + Send {
        let _ = ids;
        async { Err(unsupported("fetching audit entries by id")) }
    }

    /// The pattern versions with these ids that are present, in any order.
    fn fetch_patterns(&self, ids: Vec<String>) -> impl Future<Output = Result<Vec<Pattern>>> + Send {
        let _ = ids;
        async { Err(unsupported("fetching patterns by id")) }
    }

    /// For each record: if an execution with its id is present **and pending or running**, replaces it (row,
    /// events, search entries) by the record, in one transaction. Returns how many were replaced. A final
    /// execution is never touched. Used by a catch-up copy to refresh the unfinished rows it copied itself.
    fn replace_unfinished(&self, records: Vec<ExecutionRecord>) -> impl Future<Output = Result<u64>> + Send {
        let _ = records;
        async { Err(unsupported("replacing unfinished executions")) }
    }

    /// Whether [`Store::land_owned`] is implemented (the fast path of a copy into a target it owns).
    fn lands_owned(&self) -> bool {
        false
    }

    /// The fast path of a copy into a target the run owns (it held no pattern, execution or audit entry when
    /// the run began, and no `--merge`): inserts the records (rows and events) as given **without looking for
    /// present ids**, and saves the transfer state `id` (as [`Store::save_transfer_state`]) whose cursor is
    /// past them, **in one transaction**: a run killed at any moment has landed either the page and the state
    /// that says so, or neither, so a resumed run never lands a page twice. Nothing is read back: the copy
    /// computes the target's checksums by scanning the target at the end.
    fn land_owned(
        &self,
        records: Vec<ExecutionRecord>,
        id: String,
        source: String,
        state: String,
    ) -> impl Future<Output = Result<Imported>> + Send {
        let _ = (records, id, source, state);
        async { Err(unsupported("landing a copy into a target it owns")) }
    }

    /// After a bulk load: refresh planner statistics (PostgreSQL `ANALYZE`, SQLite `PRAGMA optimize`).
    fn after_bulk_load(&self) -> impl Future<Output = Result<()>> + Send {
        async { Ok(()) }
    }

    /// A consistent copy of the whole store at `destination` (absolute, not existing yet), taken while the
    /// plugin keeps writing. PostgreSQL refuses (`Unsupported`, naming `pg_dump`).
    fn backup(&self, destination: PathBuf) -> impl Future<Output = Result<BackupReport>> + Send {
        let _ = destination;
        async { Err(unsupported("backup")) }
    }

    /// Saves (inserts or replaces) the transfer state `id`: `source` names where its rows come from (never a
    /// secret), `state` is the JSON text of [`state::TransferState`]. Durable when it returns.
    fn save_transfer_state(
        &self,
        id: String,
        source: String,
        state: String,
    ) -> impl Future<Output = Result<()>> + Send {
        let _ = (id, source, state);
        async { Err(unsupported("keeping a transfer state")) }
    }

    /// Every saved transfer state as `(id, source, state JSON)`, newest first.
    fn transfer_states(&self) -> impl Future<Output = Result<Vec<(String, String, String)>>> + Send {
        async { Err(unsupported("keeping a transfer state")) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backup_destination_must_be_absolute_new_and_in_an_existing_directory() {
        let dir = tempfile::tempdir().unwrap();
        let fresh = dir.path().join("copy.db");
        assert_eq!(backup_destination(fresh.to_str().unwrap()).unwrap(), fresh);

        let e = backup_destination("relative/copy.db").unwrap_err();
        assert!(e.0.message.contains("\"relative/copy.db\" is not an absolute path"), "{e}");
        let e = backup_destination("").unwrap_err();
        assert!(e.0.message.contains("empty"), "{e}");

        std::fs::write(&fresh, b"x").unwrap();
        let e = backup_destination(fresh.to_str().unwrap()).unwrap_err();
        assert!(e.0.message.contains("already exists"), "{e}");

        let deep = dir.path().join("missing/copy.db");
        let e = backup_destination(deep.to_str().unwrap()).unwrap_err();
        assert!(e.0.message.contains("does not exist; create it first"), "{e}");
        assert_eq!(e.kind(), parallax_storage_abi::ErrorKind::InvalidInput);
    }
}
