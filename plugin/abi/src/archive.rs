//! The documents of the archive maintenance ops (see [`crate::maintenance`] for the envelope and its rules):
//!
//! - `archive` v1 ([`ArchiveParams`] → [`ArchiveReport`]): write old executions (with their events) or old
//!   audit entries to a destination as gzip-compressed newline-delimited JSON with a manifest, verify what was
//!   stored, then (unless `keep`) delete exactly the archived rows. "Cleanup that writes first": the same
//!   selection as `cleanup` (`crate::retention`).
//! - `archive_verify` v1 ([`VerifyParams`] → [`VerifyReport`]): check every manifest under a source (sizes,
//!   SHA-256, row counts, that every object gunzips and parses); changes nothing.
//! - `restore` v1 ([`RestoreParams`] → [`RestoreReport`]): verify, then import an archive into the open
//!   storage, keeping ids and times, skipping rows already present.
//!
//! Destinations and sources are URLs without secrets: `s3://bucket/prefix/`, `file:///abs/path/` or an
//! absolute local path. S3 credentials come from the plugin's configuration (`storage.archive`) and the AWS
//! environment of the process that opened the storage; they never travel in these documents.
//!
//! Times are RFC 3339 text in UTC with microseconds (`2026-01-31T02:00:00.000000Z`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::retention::{CleanupReport, CleanupTarget};

/// The `archive` op.
pub const ARCHIVE: &str = "archive";
/// The `archive_verify` op.
pub const ARCHIVE_VERIFY: &str = "archive_verify";
/// The `restore` op.
pub const RESTORE: &str = "restore";

/// Parameters of `archive` v1. Values are checked by the plugin, which names a bad one and its accepted form.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ArchiveParams {
    /// What to archive. Executions are archived only in a final status (completed, failed, cancelled).
    pub target: CleanupTarget,
    /// Archive rows older than this age (`30d`, `12h`, `P30D`), as `cleanup`'s `olderThan`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub older_than: Option<String>,
    /// Executions only: also archive final executions beyond the newest `maxCount`, as `cleanup`'s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_count: Option<i64>,
    /// Where to write: `s3://bucket/prefix/`, `file:///abs/path/` or an absolute local path.
    pub destination: String,
    /// Change nothing: report what would be archived, and check that the destination can be reached.
    #[serde(default)]
    pub dry_run: bool,
    /// Archive without deleting the archived rows.
    #[serde(default)]
    pub keep: bool,
    /// Allow an archive that removes every row of the table (the CLI's `--yes`).
    #[serde(default)]
    pub confirm_all: bool,
}

/// The result of `archive` v1.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveReport {
    /// `executions` or `auditLogs`.
    pub target: String,
    /// Nothing was changed or written.
    pub dry_run: bool,
    /// Rows were deleted after archiving (false with `keep` or `dryRun`).
    pub deleted: bool,
    /// The destination as given (it never holds a secret).
    pub destination: String,
    /// Rows older than this instant were selected (from `olderThan`), if given.
    pub cutoff: Option<String>,
    /// `maxCount`, if given.
    pub max_count: Option<u64>,
    /// The run's id; the objects' names and the manifest's name carry it.
    pub run_id: Option<String>,
    /// Unfinished archive runs to this destination that this run finished first (their stored manifests
    /// verified and their rows deleted) or cleared (objects without a manifest removed).
    pub resumed: Vec<ResumedRun>,
    /// The manifest's key relative to the destination (`executions/manifests/<run-id>.json`); absent when
    /// nothing was selected or on a dry run.
    pub manifest: Option<String>,
    /// Objects written, in order.
    pub objects: Vec<ObjectEntry>,
    /// Rows archived per table (`executions`, `execution_events`, `audit_logs`); on a dry run, rows that
    /// would be.
    pub rows: BTreeMap<String, u64>,
    /// Compressed bytes written.
    pub bytes: u64,
    /// What the delete step removed (absent with `keep` or `dryRun`).
    pub cleanup: Option<CleanupReport>,
    /// Wall time of the call.
    pub duration_ms: u64,
}

/// An earlier archive run that a new run found unfinished.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ResumedRun {
    /// Its id.
    pub run_id: String,
    /// `finished` (its manifest was stored: its rows were deleted now), `cleared` (it died before its
    /// manifest: its objects were removed, its rows were still in the database) or `abandoned` (its manifest
    /// is gone from the destination: nothing of it is deleted, its rows stay in the database).
    pub action: String,
    /// Rows deleted (finished) per table.
    pub rows: BTreeMap<String, u64>,
    /// Objects removed (cleared).
    pub objects_removed: u64,
}

/// One stored object, as the manifest lists it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ObjectEntry {
    /// Key relative to the archive's root (the destination): `executions/2024/01/<run-id>-0001.ndjson.gz`.
    pub key: String,
    /// Size in bytes of the stored (compressed) object.
    pub size: u64,
    /// SHA-256 of the stored bytes, lower-case hex.
    pub sha256: String,
    /// Records (lines) in it.
    pub rows: u64,
    /// Events embedded in its execution records (0 for audit entries).
    pub events: u64,
    /// The oldest and newest `startedAt` / `timestamp` among its records.
    pub oldest: Option<String>,
    /// See `oldest`.
    pub newest: Option<String>,
    /// The smallest and largest id among its records.
    pub min_id: Option<String>,
    /// See `min_id`.
    pub max_id: Option<String>,
}

/// Parameters of `archive_verify` v1.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VerifyParams {
    /// An archive root or prefix (every manifest under it) or one manifest (`…/manifests/<run-id>.json`).
    pub source: String,
}

/// The result of `archive_verify` v1.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct VerifyReport {
    /// The source as given.
    pub source: String,
    /// Every manifest checked.
    pub manifests: Vec<ManifestCheck>,
    /// Objects under the source that no manifest names (left by a run that died before its manifest; the next
    /// archive run to this destination removes them). Keys relative to the source.
    pub orphans: Vec<String>,
    /// True when every manifest and every object checked out.
    pub ok: bool,
    /// Wall time.
    pub duration_ms: u64,
}

/// One manifest's check.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ManifestCheck {
    /// The manifest's key relative to the source.
    pub key: String,
    /// Its run.
    pub run_id: String,
    /// `executions` or `audit_logs`.
    pub table: String,
    /// Rows the manifest promises.
    pub rows: u64,
    /// Rows found in its objects.
    pub rows_found: u64,
    /// Per object.
    pub objects: Vec<ObjectCheck>,
    /// What is wrong with the manifest itself (unreadable, wrong format version, counts that do not add up).
    pub problem: Option<String>,
    /// True when the manifest and all its objects checked out.
    pub ok: bool,
}

/// One object's check.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ObjectCheck {
    /// Key relative to the archive's root, as in the manifest.
    pub key: String,
    /// True when size, SHA-256, gzip stream and row count match the manifest.
    pub ok: bool,
    /// What is wrong: missing, size, checksum, truncated or corrupt gzip, a line that is not a record, a row
    /// count that differs.
    pub problem: Option<String>,
}

/// Parameters of `restore` v1.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RestoreParams {
    /// An archive root or prefix (every manifest under it) or one manifest.
    pub source: String,
    /// Verify and count what would be inserted; write nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// The result of `restore` v1.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RestoreReport {
    /// The source as given.
    pub source: String,
    /// Nothing was written.
    pub dry_run: bool,
    /// Manifests restored, in the order they were applied (oldest run first).
    pub manifests: Vec<String>,
    /// Per table (`executions`, `execution_events`, `audit_logs`): rows inserted (on a dry run: that would be).
    pub inserted: BTreeMap<String, u64>,
    /// Per table: rows already present by id, left as they are.
    pub skipped: BTreeMap<String, u64>,
    /// Wall time.
    pub duration_ms: u64,
}
