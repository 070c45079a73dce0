//! Cleanup and scheduled retention, written once for every backend.
//!
//! - What goes is [`crate::rules::Selection`]; how a cleanup is checked, confirmed, locked, recorded and
//!   reported is [`run`]; when the configured policy runs is [`schedule`].
//! - A backend only persists: it implements [`Store`] (count and sample what a selection covers, delete it in
//!   small steps, hold the one-runner-per-database lock, keep the run records).
//!
//! The maintenance ops `cleanup`, `retention_status` and `retention_run` (`parallax_storage_abi::retention`)
//! call into [`run`].

pub mod run;
pub mod schedule;

use std::{
    collections::BTreeMap,
    future::Future,
    sync::{Arc, Mutex},
};

use parallax_storage_abi::retention::{RunRecord, TableReport};

use crate::{
    config::StorageConfig,
    error::Result,
    rules::{Key, Selection},
    time,
};

/// How many ids a report shows as a sample.
pub const SAMPLE_IDS: usize = 5;

/// What a selection covers, counted without changing anything.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// The main table first (`executions` or `audit_logs`), then the tables whose rows go with it
    /// (`execution_events`, and `execution_search` where search entries are rows of their own). `rows`,
    /// `oldest`/`newest` of the main table, `partitions_dropped` (what would go whole) and `sample_ids` (up to
    /// [`SAMPLE_IDS`], oldest first) are filled in.
    pub tables: Vec<TableReport>,
    /// Executions below the limit kept because they are pending or running (0 for audit entries).
    pub unfinished_kept: u64,
    /// Every row of the main table, selected or not.
    pub total_rows: u64,
}

/// What a cleanup must know before it deletes, without counting everything: whether it selects any row,
/// whether it keeps any (a cleanup that would empty the table needs the caller's confirmation), and how many
/// unfinished rows below the limit it keeps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Precheck {
    pub selects_any: bool,
    pub keeps_any: bool,
    pub unfinished_kept: u64,
}

/// Rows deleted so far per table, updated by the backend after each committed step, so that a failure can say
/// what was already deleted and the run record has it. It also logs progress (info, at most every
/// [`PROGRESS_EVERY`]), which `parallax -v storage cleanup …` shows.
#[derive(Clone, Debug, Default)]
pub struct Tally(Arc<Mutex<Counts>>);

#[derive(Debug, Default)]
pub struct Counts {
    rows: BTreeMap<String, u64>,
    logged: Option<std::time::Instant>,
}

/// How often a long cleanup logs its progress.
pub const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

impl Tally {
    pub fn add(&self, table: &str, rows: u64) {
        let mut c = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *c.rows.entry(table.to_string()).or_default() += rows;
        let now = std::time::Instant::now();
        let first = *c.logged.get_or_insert(now);
        if now.duration_since(first) >= PROGRESS_EVERY {
            c.logged = Some(now);
            let so_far: Vec<String> = c.rows.iter().map(|(t, n)| format!("{n} {t}")).collect();
            tracing::info!(target: "parallax_storage::retention", removed = %so_far.join(", "), "cleanup in progress");
        }
    }

    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).rows.clone()
    }

    /// `12 executions, 40 execution_events` (only tables with rows), or `nothing`.
    pub fn describe(&self) -> String {
        let rows: Vec<String> =
            self.snapshot().into_iter().filter(|(_, n)| *n > 0).map(|(t, n)| format!("{n} {t}")).collect();
        if rows.is_empty() {
            "nothing".to_string()
        } else {
            rows.join(", ")
        }
    }
}

/// Held while a cleanup or retention run is in progress; dropping it releases the lock.
pub struct RunnerLock(#[allow(dead_code)] pub Box<dyn Send + Sync>);

/// Why a run started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// `parallax storage cleanup …` or `retention run`.
    Manual,
    /// A tick of `cleanupSchedule`.
    Scheduled,
    /// The tick missed while no instance was running, run once at start.
    CatchUp,
}

impl Trigger {
    pub fn as_str(&self) -> &'static str {
        match self {
            Trigger::Manual => "manual",
            Trigger::Scheduled => "scheduled",
            Trigger::CatchUp => "catch-up",
        }
    }

    pub fn parse(s: &str) -> Option<Trigger> {
        [Trigger::Manual, Trigger::Scheduled, Trigger::CatchUp].into_iter().find(|t| t.as_str() == s)
    }
}

/// A run's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunStatus {
    Running,
    Succeeded,
    Failed,
    /// Was running when its process died or its connection broke; set by the next run that takes the lock.
    Interrupted,
}

impl RunStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Interrupted => "interrupted",
        }
    }

    pub fn parse(s: &str) -> Option<RunStatus> {
        [RunStatus::Running, RunStatus::Succeeded, RunStatus::Failed, RunStatus::Interrupted]
            .into_iter()
            .find(|t| t.as_str() == s)
    }
}

/// One recorded run, as a backend stores it (times in UTC microseconds). The record format is this struct;
/// a backend maps it to columns or a line of JSON.
#[derive(Clone, Debug, PartialEq)]
pub struct Run {
    /// A UUID.
    pub id: String,
    pub trigger: Trigger,
    /// The schedule tick (scheduled and catch-up runs). At most one run per tick: a backend refuses a second
    /// run with the same tick as `Conflict`.
    pub tick: Option<i64>,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub status: RunStatus,
    /// Rows removed per table.
    pub rows: BTreeMap<String, u64>,
    pub error: Option<String>,
    /// For an archive run (manual `archive`, or a retention run with `archiveDestination`): where it writes
    /// and how far it got, so the next archive run to the same destination can finish it. A backend stores it
    /// as the JSON of [`crate::archive::ArchiveState::to_json`] in one column (`archive`), `NULL`/absent for
    /// a plain cleanup.
    pub archive: Option<crate::archive::ArchiveState>,
}

impl Run {
    pub fn start(trigger: Trigger, tick: Option<i64>) -> Run {
        Run {
            id: uuid::Uuid::now_v7().to_string(),
            trigger,
            tick,
            started_at: time::now_micros(),
            finished_at: None,
            status: RunStatus::Running,
            rows: BTreeMap::new(),
            error: None,
            archive: None,
        }
    }

    /// The record as the maintenance documents show it.
    pub fn record(&self) -> RunRecord {
        RunRecord {
            id: self.id.clone(),
            trigger: self.trigger.as_str().to_string(),
            tick: self.tick.map(time::rfc3339),
            started_at: time::rfc3339(self.started_at),
            finished_at: self.finished_at.map(time::rfc3339),
            status: self.status.as_str().to_string(),
            rows: self.rows.clone(),
            error: self.error.clone(),
            duration_ms: self.finished_at.map(|f| ((f - self.started_at).max(0) / 1000) as u64),
            archive: self.archive.as_ref().map(crate::archive::ArchiveState::view),
        }
    }

    /// `rows` as JSON text, for backends that keep it in one column.
    pub fn rows_json(&self) -> String {
        serde_json::to_string(&self.rows).expect("a map of counts serializes")
    }

    /// Reads back [`Run::rows_json`]; a damaged value reads as no rows.
    pub fn rows_from_json(text: &str) -> BTreeMap<String, u64> {
        serde_json::from_str(text).unwrap_or_default()
    }
}

/// What a backend does for cleanup and retention; every rule is decided by the caller ([`run`]). Its metrics
/// ([`crate::metrics::Source`]) record each finished run.
pub trait Store: crate::metrics::Source + crate::audit_chain::Store + Send + Sync + 'static {
    fn storage_config(&self) -> &StorageConfig;

    /// The key of the `n`-th newest execution (1 = newest; `(started_at, id)` descending, any status), or
    /// `None` when there are fewer than `n`.
    fn nth_newest_execution(&self, n: u64) -> impl Future<Output = Result<Option<Key>>> + Send;

    /// Counts what `sel` covers ([`Plan`]); changes nothing (not even a file's access time matters: no writes).
    fn plan_cleanup(&self, sel: Selection) -> impl Future<Output = Result<Plan>> + Send;

    /// [`Precheck`] for `sel`. The default counts with [`Store::plan_cleanup`]; a backend where counting is
    /// costly (PostgreSQL, millions of rows) answers with a few index probes instead.
    fn precheck(&self, sel: Selection) -> impl Future<Output = Result<Precheck>> + Send {
        async move {
            let p = self.plan_cleanup(sel).await?;
            let going = p.tables.first().map_or(0, |t| t.rows);
            Ok(Precheck {
                selects_any: going > 0,
                keeps_any: going < p.total_rows,
                unfinished_kept: p.unfinished_kept,
            })
        }
    }

    /// Removes what `sel` covers in short steps (whole partitions or months where every row in them is
    /// selected, else batches), so writers keep going; after each committed step it adds the rows to `tally`.
    /// Events and search entries go before (or with) their execution: interrupted at any point, no event or
    /// search entry is left without its execution, and running again finishes the job. Returns one report per
    /// table (rows, partitions dropped, batches, bytes reclaimed where known).
    fn cleanup(&self, sel: Selection, tally: Tally) -> impl Future<Output = Result<Vec<TableReport>>> + Send;

    /// The one-runner-per-database lock, without waiting: `None` when another instance (any process or host)
    /// holds it. Dropping the returned lock releases it, also when the run fails.
    fn lock_runner(&self) -> impl Future<Output = Result<Option<RunnerLock>>> + Send;

    /// Inserts or replaces the record with this id. Inserting a second run with a tick that already has one
    /// is refused with `Conflict`.
    fn save_run(&self, run: Run) -> impl Future<Output = Result<()>> + Send;

    /// Recorded runs, newest first (by `started_at`), at most `limit`.
    fn runs(&self, limit: usize) -> impl Future<Output = Result<Vec<Run>>> + Send;

    /// The latest tick that has a recorded run (any status).
    fn last_tick(&self) -> impl Future<Output = Result<Option<i64>>> + Send;
}
