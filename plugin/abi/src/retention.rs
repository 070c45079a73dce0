//! The documents of the retention maintenance ops (see [`crate::maintenance`] for the envelope and its rules):
//!
//! - `cleanup` v1 ([`CleanupParams`] → [`CleanupReport`]): remove old executions (with their events and search
//!   entries) or old audit entries now, or with `dryRun` only report what would go.
//! - `retention_status` v1 (no params → [`RetentionStatus`]): the configured policy and schedule, the next
//!   scheduled run and the recorded runs.
//! - `retention_run` v1 ([`RetentionRunParams`] → [`RetentionRunResult`]): run the configured policy now, as
//!   the scheduler does at each tick.
//!
//! Times are RFC 3339 text in UTC with microseconds (`2026-01-31T02:00:00.000000Z`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The `cleanup` op.
pub const CLEANUP: &str = "cleanup";
/// The `retention_status` op.
pub const RETENTION_STATUS: &str = "retention_status";
/// The `retention_run` op.
pub const RETENTION_RUN: &str = "retention_run";

/// What a cleanup removes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum CleanupTarget {
    /// Executions (final ones unless `includeUnfinished`), with their events and search entries.
    Executions,
    /// Audit entries.
    AuditLogs,
}

impl CleanupTarget {
    /// The name used in documents and messages: `executions` or `auditLogs`.
    pub fn as_str(&self) -> &'static str {
        match self {
            CleanupTarget::Executions => "executions",
            CleanupTarget::AuditLogs => "auditLogs",
        }
    }
}

/// Parameters of `cleanup` v1. Values are checked by the plugin, which names a bad one and its accepted form.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CleanupParams {
    /// What to remove.
    pub target: CleanupTarget,
    /// Remove rows older than this age (`30d`, `12h`, `1d12h`, `P30D`; units s, m, h, d, w), measured on
    /// `started_at` (executions) or `timestamp` (audit entries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub older_than: Option<String>,
    /// Executions only: also remove final executions beyond the newest `maxCount` (counting every status).
    /// At least 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_count: Option<i64>,
    /// Change nothing; report what would go.
    #[serde(default)]
    pub dry_run: bool,
    /// Executions only: remove old pending/running executions too.
    #[serde(default)]
    pub include_unfinished: bool,
    /// Allow a cleanup that removes every row of the table (the CLI's `--yes`).
    #[serde(default)]
    pub confirm_all: bool,
}

/// The result of `cleanup` v1 (and of each part of a retention run).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CleanupReport {
    /// `executions` or `auditLogs`.
    pub target: String,
    /// Nothing was changed.
    pub dry_run: bool,
    /// Rows older than this instant were selected (from `olderThan`), if given.
    pub cutoff: Option<String>,
    /// `maxCount`, if given.
    pub max_count: Option<u64>,
    /// Per table: what went (or would go).
    pub tables: Vec<TableReport>,
    /// Executions older than the cutoff kept because they are pending or running.
    pub unfinished_kept: u64,
    /// On a dry run, the rows of the main table that would stay (a real run does not count them).
    pub rows_left: Option<u64>,
    /// The recorded run, when the cleanup changed something.
    pub run_id: Option<String>,
    /// Wall time of the call.
    pub duration_ms: u64,
}

/// One table's part of a cleanup.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TableReport {
    /// The table (`executions`, `execution_events`, `execution_search`, `audit_logs`) or, for the file
    /// store, the kind of file.
    pub table: String,
    /// Rows that went (or would go).
    pub rows: u64,
    /// The oldest and newest time among them (`started_at`, `recorded_at` or `timestamp`).
    pub oldest: Option<String>,
    /// See `oldest`.
    pub newest: Option<String>,
    /// Whole partitions (PostgreSQL) or month directories (file store) dropped with all their rows.
    pub partitions_dropped: Vec<String>,
    /// Rows deleted one batch at a time (the rest of `rows` went with whole partitions).
    pub rows_in_batches: u64,
    /// Short transactions (or file rewrites) used for `rowsInBatches`.
    pub batches: u64,
    /// Bytes given back to the file system, where the backend can tell.
    pub bytes_reclaimed: Option<u64>,
    /// A few ids of rows that went (or would go), oldest first.
    pub sample_ids: Vec<String>,
}

/// No params for `retention_status` v1; the result.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RetentionStatus {
    /// `storage.retention.cleanupSchedule`, if set.
    pub schedule: Option<String>,
    /// Whether the configuration schedules runs (a schedule and at least one enabled rule). Every instance
    /// opened with it runs the schedule, except those opened with `runSchedule: false` (the CLI).
    pub scheduled: bool,
    /// The next scheduled run, if scheduled.
    pub next_run: Option<String>,
    /// `storage.retention.executions` as configured (`null` when absent).
    pub executions: Option<RetentionRuleView>,
    /// `storage.retention.auditLogs` as configured.
    pub audit_logs: Option<RetentionRuleView>,
    /// Recorded runs, newest first (at most 20).
    pub runs: Vec<RunRecord>,
}

/// A configured retention rule.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RetentionRuleView {
    /// `enabled`.
    pub enabled: bool,
    /// `maxAge`, e.g. `30d`.
    pub max_age: Option<String>,
    /// `maxCount` (executions only).
    pub max_count: Option<u64>,
}

/// One recorded run of retention: a manual cleanup, a scheduled tick, or the catch-up run at start.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RunRecord {
    /// The run's id (a UUID).
    pub id: String,
    /// `manual`, `scheduled` or `catch-up`.
    pub trigger: String,
    /// The schedule tick the run belongs to (scheduled and catch-up runs); one run per tick.
    pub tick: Option<String>,
    /// When it started.
    pub started_at: String,
    /// When it ended; `null` while running (or when its process died: status `interrupted`).
    pub finished_at: Option<String>,
    /// `running`, `succeeded`, `failed` or `interrupted`.
    pub status: String,
    /// Rows removed per table (`executions`, `execution_events`, `audit_logs`, …).
    pub rows: BTreeMap<String, u64>,
    /// What failed, for a failed run.
    pub error: Option<String>,
    /// Wall time, once finished.
    pub duration_ms: Option<u64>,
    /// For an archive run: where it wrote and how far it got.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<ArchiveRunView>,
}

/// An archive run's progress, as its run record shows it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveRunView {
    /// `executions` or `auditLogs`.
    pub target: String,
    /// The destination as given.
    pub destination: String,
    /// `writing`, `stored`, `deleting` or `done`.
    pub phase: String,
    /// The manifest's key relative to the destination, once stored.
    pub manifest: Option<String>,
    /// Objects of the manifest whose rows are deleted.
    pub objects_done: u64,
}

/// Parameters of `retention_run` v1.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetentionRunParams {
    /// Run as the scheduled run of this tick (RFC 3339): skipped if that tick already has a run. Without it,
    /// a manual run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tick: Option<String>,
    /// Report what the configured policy would remove; change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// The result of `retention_run` v1.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RetentionRunResult {
    /// Whether a run happened (false: skipped, see `skipped`).
    pub ran: bool,
    /// Why the run was skipped: another instance holds the runner lock, the tick already ran, or no rule is
    /// enabled.
    pub skipped: Option<String>,
    /// The recorded run.
    pub run: Option<RunRecord>,
    /// One report per enabled rule.
    pub reports: Vec<CleanupReport>,
    /// With `storage.retention.archiveDestination`: one archive report per enabled rule (each rule archives
    /// what it removes first; its `cleanup` is the matching entry of `reports`).
    #[serde(default)]
    pub archives: Vec<crate::archive::ArchiveReport>,
}
