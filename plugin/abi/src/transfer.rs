//! The documents of the transfer maintenance ops (see [`crate::maintenance`] for the envelope and its rules):
//! moving the whole history between backends.
//!
//! - `copy` v1 ([`CopyParams`] → [`TransferReport`]): the open storage (the source) copies everything (every
//!   pattern version, every execution in any status with its events, every audit entry; ids and times kept)
//!   into the storage described by `target`, which the plugin opens itself. Resumable (the state is kept in
//!   the target), verified at the end (counts and a content checksum per table, both sides).
//! - `export` v1 ([`ExportParams`] → [`ExportReport`]): everything, in the archive's format (plus a
//!   `patterns` table), under a destination, with `export.json` written last.
//! - `import` v1 ([`ImportParams`] → [`TransferReport`]): an export (or a plain archive) into the open storage,
//!   with the same refusal of a non-empty target, `merge`, resume and verification as `copy`.
//! - `backup` v1 ([`BackupParams`] → [`BackupReport`]): a consistent copy of a SQLite file or a file store
//!   tree, taken while the plugin writes. PostgreSQL refuses it (`Unsupported`) and names `pg_dump`.
//!
//! **The snapshot cut** of `copy` and `export`: the copying process's clock when the run started (`snapshot`).
//! The copy holds every pattern version with `createdAt` ≤ cut, every execution with `startedAt` ≤ cut (with
//! its events as read) and every audit entry with `timestamp` ≤ cut. Newer rows are "after the snapshot":
//! counted and reported, not copied (a second `copy` run catches up with them). An execution that was pending
//! or running when copied and changed before the end of the run is reported as "changed after the snapshot".
//!
//! **Checksums** (`checksumVersion` 1): per table, the sum modulo 2^128 of the first 16 bytes of the SHA-256
//! of each row's canonical form (JSON documents with sorted keys and normalised numbers, times in
//! microseconds, IPs in canonical text), as 32 lower-case hex digits. Order-independent, so it is computed
//! page by page and survives a resume. It detects loss and corruption, not forgery.
//!
//! `target` in [`CopyParams`] is the target's resolved `storage` section as JSON text; it may hold a password.
//! The plugin never echoes, logs or stores it: reports name the target by [`CopyParams::target_label`] and a
//! location without secrets.
//!
//! Results are tolerant (no `deny_unknown_fields`): a later plugin may add fields to version 1 results.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The `copy` op.
pub const COPY: &str = "copy";
/// The `export` op.
pub const EXPORT: &str = "export";
/// The `import` op.
pub const IMPORT: &str = "import";
/// The `backup` op.
pub const BACKUP: &str = "backup";

/// The version of the checksum of [`TableTransfer`] (see the module documentation).
pub const CHECKSUM_VERSION: u32 = 1;

/// The tables a transfer reports, in order.
pub const TABLES: [&str; 4] = ["patterns", "executions", "execution_events", "audit_logs"];

/// Parameters of `copy` v1.
#[derive(Serialize, Deserialize, Clone, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CopyParams {
    /// The target's resolved `storage` section (the object under `storage:`, or the whole config), as JSON
    /// text. It may hold a password: never echoed, logged or stored.
    pub target: String,
    /// How messages name the target (the config file's path, `prod.yaml`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_label: Option<String>,
    /// Change nothing: open both sides, count what would be copied and what is already in the target.
    #[serde(default)]
    pub dry_run: bool,
    /// Allow a target that already holds rows: rows present by id are skipped (equal) or reported as conflicts
    /// (different), never overwritten.
    #[serde(default)]
    pub merge: bool,
}

impl std::fmt::Debug for CopyParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CopyParams")
            .field("target", &"<redacted>")
            .field("target_label", &self.target_label)
            .field("dry_run", &self.dry_run)
            .field("merge", &self.merge)
            .finish()
    }
}

/// The result of `copy` v1 and `import` v1.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TransferReport {
    /// Where rows came from, without secrets (`sqlite /var/lib/parallax.db`, `postgresql
    /// parallax@db:5432/parallax`, `file /srv/parallax (yaml, gzip)`, `export <run-id> at s3://b/p/`).
    pub source: String,
    /// Where rows went, the same way (with the target label when given).
    pub target: String,
    /// Nothing was written.
    pub dry_run: bool,
    /// `merge` was set.
    pub merge: bool,
    /// `fresh` (empty target), `resumed` (an unfinished run of the same source finished), `catch-up` (a
    /// finished run of the same source continued with a new snapshot), `rescan` (after a run that was not
    /// verified: the whole source read again), `merge` (a non-empty target).
    pub mode: String,
    /// This run's id (kept in the target's transfer state).
    pub run_id: String,
    /// The snapshot cut, RFC 3339 with microseconds.
    pub snapshot: String,
    /// [`CHECKSUM_VERSION`].
    pub checksum_version: u32,
    /// One entry per table of [`TABLES`], in that order.
    pub tables: Vec<TableTransfer>,
    /// Rows newer than the snapshot, per table: not copied.
    pub after_snapshot: BTreeMap<String, u64>,
    /// Executions copied while pending or running that changed before the end of the run (first 20 ids);
    /// left in the target as copied, excluded from both checksums.
    pub changed_after_snapshot: Vec<String>,
    /// How many such executions.
    pub changed_after_snapshot_count: u64,
    /// Rows present in the target with different content (first 100): not overwritten, excluded from both
    /// checksums.
    pub conflicts: Vec<Conflict>,
    /// How many conflicts.
    pub conflict_count: u64,
    /// Counts and checksums are equal on both sides for every table, and nothing below went wrong.
    pub verified: bool,
    /// Why the run is not verified besides a table's figures (a source recount that differs from the rows
    /// read, an export's totals that differ), each starting with its table's name and a colon. Running the
    /// command again after such a run reads the whole source again (mode `rescan`).
    #[serde(default)]
    pub problems: Vec<String>,
    /// Wall time of the call.
    pub duration_ms: u64,
}

/// One table of a transfer.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TableTransfer {
    /// One of [`TABLES`].
    pub table: String,
    /// Rows in the snapshot on the source side.
    pub source_rows: u64,
    /// Rows inserted into the target (by this run and the runs it resumed).
    pub copied: u64,
    /// Rows already present in the target with equal content.
    pub present: u64,
    /// Rows present in the target with different content.
    pub conflicts: u64,
    /// Rows of the snapshot read back from the target.
    pub target_rows: u64,
    /// The source's checksum (32 hex digits).
    pub source_checksum: String,
    /// The target's checksum over the same rows, read back.
    pub target_checksum: String,
    /// Rows and checksums equal.
    pub ok: bool,
}

/// A row present in the target with content different from the source's.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Conflict {
    /// One of [`TABLES`].
    pub table: String,
    /// The row's id.
    pub id: String,
    /// What differs (`status: source completed, target failed`), or `name@version exists with id X`.
    pub reason: String,
}

/// Parameters of `export` v1.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExportParams {
    /// Where to write: `s3://bucket/prefix/`, `file:///abs/path/` or an absolute local path. A destination
    /// that holds a finished export is refused; the objects of an unfinished one are removed first.
    pub destination: String,
    /// Change nothing: count what would be exported and check the destination.
    #[serde(default)]
    pub dry_run: bool,
}

/// The result of `export` v1.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ExportReport {
    /// The destination as given.
    pub destination: String,
    /// Nothing was written.
    pub dry_run: bool,
    /// The run id (manifests and objects carry it).
    pub run_id: String,
    /// The snapshot cut, RFC 3339 with microseconds.
    pub snapshot: String,
    /// The manifests written (keys relative to the destination), then `export.json`.
    pub manifests: Vec<String>,
    /// Per table: `sourceRows` and `sourceChecksum` (the target side is empty).
    pub tables: Vec<TableTransfer>,
    /// Objects written.
    pub objects: u64,
    /// Compressed bytes written.
    pub bytes: u64,
    /// Rows newer than the snapshot, per table: not exported.
    pub after_snapshot: BTreeMap<String, u64>,
    /// Wall time of the call.
    pub duration_ms: u64,
}

/// Parameters of `import` v1.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImportParams {
    /// An export (or an archive): `s3://bucket/prefix/`, `file:///abs/path/` or an absolute local path.
    pub source: String,
    /// Allow a non-empty target, as `copy`'s.
    #[serde(default)]
    pub merge: bool,
    /// Change nothing: verify the source and count what would be imported.
    #[serde(default)]
    pub dry_run: bool,
}

/// Parameters of `backup` v1.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackupParams {
    /// An absolute local path that does not exist yet: the SQLite file, or the file store's directory.
    pub destination: String,
}

/// The result of `backup` v1.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct BackupReport {
    /// `sqlite` or `file`.
    pub backend: String,
    /// The destination as given.
    pub destination: String,
    /// Bytes written.
    pub bytes: u64,
    /// Files written (1 for SQLite).
    pub files: u64,
    /// Rows in the copy per table (`patterns`, `executions`, `execution_events`, `audit_logs`).
    pub rows: BTreeMap<String, u64>,
    /// SQLite: the copy's `PRAGMA integrity_check` answer (`ok`).
    pub integrity: Option<String>,
    /// Wall time of the call.
    pub duration_ms: u64,
}
