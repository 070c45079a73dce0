//! Archive before delete, and restore: written once for every backend.
//!
//! - Where archives go: [`destination`] (`s3://bucket/prefix/`, `file:///abs/path/`, an absolute path; one
//!   `object_store::ObjectStore` API for all of them; S3 settings from `storage.archive` over the AWS
//!   environment; errors name the destination, never a secret).
//! - What an archive is: [`format`] (the record schema, version [`format::RECORD_SCHEMA_VERSION`]: one JSON
//!   object per line, gzip-compressed, objects split by month and size; the manifest written last).
//! - How a run goes: [`run`] (select with the cleanup rules of [`crate::rules::Selection`], write and verify
//!   the objects, write and verify the manifest, then delete exactly the archived ids; resume an unfinished
//!   run first; `archive_verify`; `restore`).
//! - A backend only persists: it implements [`Store`] (scan what a selection covers with events, delete by
//!   id, insert records that are not present yet) on top of the cleanup [`crate::retention::Store`] (runner
//!   lock, run records, which carry an [`ArchiveState`]).
//!
//! The maintenance ops `archive`, `archive_verify` and `restore` (`parallax_storage_abi::archive`) call into
//! [`run`].

pub mod destination;
pub mod format;
pub mod read;
pub mod run;
pub mod writer;

use std::future::Future;

use parallax_storage_abi::{
    retention::{ArchiveRunView, CleanupTarget},
    AuditEntry, Execution, ExecutionEvent,
};
use serde::{Deserialize, Serialize};

use crate::{
    error::Result,
    rules::{Key, Selection},
};

/// An execution with all its events (in `seq` order): the unit that is archived, deleted and restored.
#[derive(Clone, Debug, PartialEq)]
pub struct ExecutionRecord {
    pub execution: Execution,
    pub events: Vec<ExecutionEvent>,
}

/// What an import inserted and skipped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Imported {
    /// Main rows (executions or audit entries) inserted.
    pub inserted: u64,
    /// Main rows skipped because a row with the same id is present (left exactly as it is).
    pub skipped: u64,
    /// Events inserted with the inserted executions (0 for audit entries).
    pub events_inserted: u64,
}

/// What a delete removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Deleted {
    /// Main rows (executions or audit entries).
    pub rows: u64,
    /// Events of the deleted executions.
    pub events: u64,
}

/// What a backend does for archive and restore; every rule is decided by the caller ([`run`]).
pub trait Store: crate::retention::Store {
    /// Up to `limit` executions that `sel` selects with `(started_at, id) > after` (all when `after` is
    /// `None`), in ascending `(started_at, id)` order, each with all its events in `seq` order. `sel` never
    /// includes unfinished executions here (archive selects final ones only), so what is returned cannot
    /// change any more. Reads only (a dry run calls it too).
    fn scan_executions(
        &self,
        sel: Selection,
        after: Option<Key>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<ExecutionRecord>>> + Send;

    /// Up to `limit` audit entries that `sel` selects with `(timestamp, id) > after`, ascending.
    fn scan_audit(
        &self,
        sel: Selection,
        after: Option<Key>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<AuditEntry>>> + Send;

    /// Deletes the executions with these ids that are in a final status, with their events and search
    /// entries, in one short transaction (the caller passes at most a few thousand ids). Ids not present (or
    /// not final) are left alone: deleting is idempotent, so a resumed run may pass ids deleted before.
    fn delete_executions(&self, ids: Vec<String>) -> impl Future<Output = Result<Deleted>> + Send;

    /// Deletes the audit entries with these ids in one short transaction; absent ids are ignored.
    fn delete_audit(&self, ids: Vec<String>) -> impl Future<Output = Result<Deleted>> + Send;

    /// Inserts the records whose execution id is not present, exactly as given (ids, statuses, every time,
    /// duration, metadata, tags; events with their ids, `seq` and times), with the search entries a normal
    /// insert makes, in one transaction; a record whose id is present is skipped whole (events included) and
    /// left as it is. On PostgreSQL the month partitions the rows need are created.
    fn import_executions(
        &self,
        records: Vec<ExecutionRecord>,
    ) -> impl Future<Output = Result<Imported>> + Send;

    /// Inserts the audit entries whose id is not present, exactly as given, in one transaction.
    fn import_audit(&self, entries: Vec<AuditEntry>) -> impl Future<Output = Result<Imported>> + Send;
}

/// How far an archive run got; kept in its run record ([`crate::retention::Run::archive`]).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveState {
    /// What it archives.
    pub target: CleanupTarget,
    /// The destination as given (never holds a secret).
    pub destination: String,
    /// The step it reached.
    pub phase: Phase,
    /// The manifest's key relative to the destination, once stored.
    pub manifest: Option<String>,
    /// Objects of the manifest whose rows are deleted (phase `deleting`), in manifest order.
    #[serde(default)]
    pub objects_done: u64,
    /// Rows archived per table.
    #[serde(default)]
    pub rows: std::collections::BTreeMap<String, u64>,
    /// Archived without deleting (`--keep`): a run found in `stored` deletes nothing when finished.
    #[serde(default)]
    pub keep: bool,
}

/// The steps of an archive run, in order. A run killed in `writing` has stored no manifest: its rows are all
/// in the database, and the next run to the destination removes its objects. A run killed in `stored` or
/// `deleting` has a verified manifest: the next run deletes the rows it names.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum Phase {
    /// Writing and verifying objects.
    Writing,
    /// Objects and manifest stored and verified; nothing deleted yet.
    Stored,
    /// Deleting the archived rows.
    Deleting,
    /// Finished (rows deleted, or kept with `--keep`), or cleared by a later run.
    Done,
}

impl ArchiveState {
    /// The stored form (one JSON text column, or a field of the file store's run line).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an archive state serializes")
    }

    /// Reads back [`ArchiveState::to_json`]; a damaged value reads as `None` (the run then looks like a plain
    /// cleanup, and its archive, if any, stays verifiable and restorable by hand).
    pub fn from_json(text: &str) -> Option<ArchiveState> {
        serde_json::from_str(text).ok()
    }

    /// As a run record shows it.
    pub fn view(&self) -> ArchiveRunView {
        ArchiveRunView {
            target: self.target.as_str().to_string(),
            destination: self.destination.clone(),
            phase: self.phase.as_str().to_string(),
            manifest: self.manifest.clone(),
            objects_done: self.objects_done,
        }
    }
}

impl Phase {
    pub fn as_str(&self) -> &'static str {
        match self {
            Phase::Writing => "writing",
            Phase::Stored => "stored",
            Phase::Deleting => "deleting",
            Phase::Done => "done",
        }
    }
}

/// The environment variable that pauses an archive run at a named step, for the tests that kill the process
/// at each step (`PARALLAX_ARCHIVE_PAUSE_AT=after-manifest`): the run logs `archive paused at <step>` on
/// stderr and sleeps until killed. Steps: `before-upload` (run recorded, nothing written), `mid-upload` (one
/// part of a multipart upload stored, not completed), `after-upload` (objects stored and verified, no
/// manifest), `after-manifest` (manifest stored, nothing deleted), `mid-delete` (the first delete batch
/// committed). Unset in production: one `getenv` per step.
pub const PAUSE_ENV: &str = "PARALLAX_ARCHIVE_PAUSE_AT";

/// Pauses here if [`PAUSE_ENV`] names `step`.
pub async fn pause_point(step: &str) {
    if std::env::var(PAUSE_ENV).is_ok_and(|v| v == step) {
        eprintln!("archive paused at {step}");
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
        }
    }
}
