//! Cleanup and retention on this backend ([`crate::retention::Store`]): persistence only; what goes and how a
//! run is checked, locked and recorded is decided in `src/retention`.
//!
//! - Counting (`plan_cleanup`, `nth_newest_execution`, `runs`) reads through the read-only pool.
//! - Deleting goes through the single writer as many small jobs, each one savepoint of a group commit like
//!   any other write, so callers' writes queue behind at most one short job. A job takes the next rows in
//!   `(started_at, id)` order after the previous job's last key and deletes, in its one savepoint, their
//!   full-text documents (`executions_fts` via `execution_search`), search mappings, queued search entries,
//!   events, then the executions: a cleanup killed at any point leaves every event and search entry with its
//!   execution, and the next run continues where the committed jobs stopped. The job size adapts so that a
//!   job holds the writer for about [`JOB_TARGET`].
//! - The foreign key `execution_events.execution_id … ON DELETE CASCADE` (enforced: every connection sets
//!   `foreign_keys = ON`) would delete events too; the job deletes them explicitly first (through the
//!   `UNIQUE (execution_id, seq)` index) so that they are counted and do not depend on the pragma, and the
//!   cascade then finds nothing. Likewise the `executions_search_delete` trigger finds its rows gone.
//! - While the jobs run, a connection of the cleanup's own keeps checkpointing the WAL in the background
//!   ([`vacuum::Checkpointer`]), so that SQLite's automatic checkpoint does not land inside a caller's commit.
//! - Afterwards the free pages go back to the file system ([`super::vacuum`]).
//! - The runner lock is `flock(LOCK_EX | LOCK_NB)` on `<database>-retention.lock` ([`lock_file`]).

use std::{
    ffi::OsString,
    fs::{File, OpenOptions},
    io::{self, Write},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use diesel::{
    sql_query,
    sql_types::{BigInt, Nullable, Text},
    sqlite::SqliteConnection,
    Connection, QueryableByName, RunQueryDsl,
};
use parallax_storage_abi::{
    retention::{CleanupTarget, TableReport},
    ErrorKind,
};

use super::{vacuum, SqliteBackend};
use crate::{
    archive::ArchiveState,
    config::StorageConfig,
    error::{sqlite_error, Error, Result, SqliteFailure},
    retention::{Plan, Precheck, Run, RunStatus, RunnerLock, Store, Tally, Trigger, SAMPLE_IDS},
    rules::{Key, Selection, FINAL_STATUSES},
    time,
};

/// Each delete job aims to hold the writer this long; callers' writes wait for at most about one job.
const JOB_TARGET: Duration = Duration::from_millis(5);
const ROWS_FIRST: i64 = 200;
const ROWS_MIN: i64 = 10;
const ROWS_MAX: i64 = 2_000;

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct Range {
    #[diesel(sql_type = BigInt)]
    n: i64,
    #[diesel(sql_type = Nullable<BigInt>)]
    oldest: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    newest: Option<i64>,
}

#[derive(QueryableByName)]
struct KeyRow {
    #[diesel(sql_type = BigInt)]
    at: i64,
    #[diesel(sql_type = Text)]
    id: String,
}

#[derive(QueryableByName)]
struct Tick {
    #[diesel(sql_type = Nullable<BigInt>)]
    tick: Option<i64>,
}

#[derive(QueryableByName)]
struct RunRow {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = Text)]
    trigger: String,
    #[diesel(sql_type = Nullable<BigInt>)]
    tick: Option<i64>,
    #[diesel(sql_type = BigInt)]
    started_at: i64,
    #[diesel(sql_type = Nullable<BigInt>)]
    finished_at: Option<i64>,
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = Text)]
    rows: String,
    #[diesel(sql_type = Nullable<Text>)]
    error: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    archive: Option<String>,
}

/// The table and its key columns a selection reads.
pub(super) struct Target {
    pub(super) table: &'static str,
    pub(super) at: &'static str,
    /// `<table> INDEXED BY <its time index>`: a selection always walks the time index. With statistics (after
    /// an `ANALYZE`) SQLite preferred scanning a covering index of the whole table and sorting it, for every
    /// batch (seen at a million executions: a second per job).
    pub(super) source: &'static str,
}

pub(super) fn target(t: CleanupTarget) -> Target {
    match t {
        CleanupTarget::Executions => Target {
            table: "executions",
            at: "started_at",
            source: "executions INDEXED BY idx_executions_started_at",
        },
        CleanupTarget::AuditLogs => Target {
            table: "audit_logs",
            at: "timestamp",
            source: "audit_logs INDEXED BY idx_audit_timestamp",
        },
    }
}

pub(super) fn final_statuses() -> String {
    FINAL_STATUSES.iter().map(|s| format!("'{s}'")).collect::<Vec<_>>().join(", ")
}

/// The SQL of the selection rule ([`Selection`]) with `?1, ?2` = `before`: `(at, id) < before` (the first
/// term lets SQLite range-scan the time index), and for executions a final status unless `include_unfinished`.
pub(super) fn selected(sel: &Selection) -> String {
    let t = target(sel.target);
    let mut sql = format!("{at} <= ?1 AND ({at}, id) < (?1, ?2)", at = t.at);
    if sel.target == CleanupTarget::Executions && !sel.include_unfinished {
        // `+status`: never the status index, which would read every row of that status and sort them.
        sql.push_str(&format!(" AND +status IN ({})", final_statuses()));
    }
    sql
}

fn count(conn: &mut SqliteConnection, sql: &str, before: &Key) -> Result<i64> {
    let c: Count = sql_query(sql)
        .bind::<BigInt, _>(before.0)
        .bind::<Text, _>(&before.1)
        .get_result(conn)
        .map_err(sqlite_error)?;
    Ok(c.n)
}

fn range(conn: &mut SqliteConnection, sql: &str, before: &Key) -> Result<Range> {
    sql_query(sql)
        .bind::<BigInt, _>(before.0)
        .bind::<Text, _>(&before.1)
        .get_result(conn)
        .map_err(sqlite_error)
}

fn table(name: &str, rows: i64, oldest: Option<i64>, newest: Option<i64>) -> TableReport {
    TableReport {
        table: name.to_string(),
        rows: rows.max(0) as u64,
        oldest: oldest.map(time::rfc3339),
        newest: newest.map(time::rfc3339),
        ..TableReport::default()
    }
}

fn plan(conn: &mut SqliteConnection, sel: &Selection) -> Result<Plan> {
    let t = target(sel.target);
    let cond = selected(sel);
    let main = range(
        conn,
        &format!(
            "SELECT count(*) AS n, min({at}) AS oldest, max({at}) AS newest FROM {tb} WHERE {cond}",
            at = t.at,
            tb = t.source
        ),
        &sel.before,
    )?;
    let mut first = table(t.table, main.n, main.oldest, main.newest);
    first.sample_ids = sql_query(format!(
        "SELECT {at} AS at, id FROM {tb} WHERE {cond} ORDER BY {at}, id LIMIT {SAMPLE_IDS}",
        at = t.at,
        tb = t.source
    ))
    .bind::<BigInt, _>(sel.before.0)
    .bind::<Text, _>(&sel.before.1)
    .load::<KeyRow>(conn)
    .map_err(sqlite_error)?
    .into_iter()
    .map(|k| k.id)
    .collect();
    let total = sql_query(format!("SELECT count(*) AS n FROM {}", t.table))
        .get_result::<Count>(conn)
        .map_err(sqlite_error)?
        .n;
    let mut tables = vec![first];
    let mut unfinished_kept = 0;
    if sel.target == CleanupTarget::Executions {
        let ids = format!("SELECT id FROM {} WHERE {cond}", t.source);
        let events = range(
            conn,
            &format!(
                "SELECT count(*) AS n, min(recorded_at) AS oldest, max(recorded_at) AS newest FROM execution_events \
                 WHERE execution_id IN ({ids})"
            ),
            &sel.before,
        )?;
        tables.push(table("execution_events", events.n, events.oldest, events.newest));
        let search = count(
            conn,
            &format!("SELECT count(*) AS n FROM execution_search WHERE execution_id IN ({ids})"),
            &sel.before,
        )?;
        tables.push(table("execution_search", search, None, None));
        if !sel.include_unfinished {
            unfinished_kept = count(
                conn,
                &format!(
                    "SELECT count(*) AS n FROM executions INDEXED BY idx_executions_started_at \
                     WHERE started_at <= ?1 AND (started_at, id) < (?1, ?2) \
                     AND +status NOT IN ({})",
                    final_statuses()
                ),
                &sel.before,
            )?;
        }
    }
    // Everything goes in batches, the dependent rows in the same jobs as their executions. The number of jobs
    // is an estimate: their size adapts to how long each takes (it starts at ROWS_FIRST).
    let jobs = tables[0].rows.div_ceil(ROWS_FIRST as u64);
    for t in &mut tables {
        t.rows_in_batches = t.rows;
        t.batches = if t.rows > 0 { jobs } else { 0 };
    }
    Ok(Plan { tables, unfinished_kept: unfinished_kept.max(0) as u64, total_rows: total.max(0) as u64 })
}

#[derive(QueryableByName)]
struct At {
    #[diesel(sql_type = BigInt)]
    at: i64,
}

/// The key of the execution with `skip` newer ones, in one read snapshot. Walks the `started_at` index
/// without sorting the table: the time first (`OFFSET` over the index), then the id among the rows of that
/// exact time (usually one).
fn nth_newest(conn: &mut SqliteConnection, skip: i64) -> Result<Option<Key>> {
    let at: Vec<At> =
        sql_query("SELECT started_at AS at FROM executions ORDER BY started_at DESC LIMIT 1 OFFSET ?1")
            .bind::<BigInt, _>(skip)
            .load(conn)
            .map_err(sqlite_error)?;
    let Some(at) = at.into_iter().next().map(|a| a.at) else { return Ok(None) };
    let newer: Count = sql_query("SELECT count(*) AS n FROM executions WHERE started_at > ?1")
        .bind::<BigInt, _>(at)
        .get_result(conn)
        .map_err(sqlite_error)?;
    let rows: Vec<KeyRow> =
        sql_query("SELECT started_at AS at, id FROM executions WHERE started_at = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2")
            .bind::<BigInt, _>(at)
            .bind::<BigInt, _>(skip - newer.n)
            .load(conn)
            .map_err(sqlite_error)?;
    Ok(rows.into_iter().next().map(|k| (k.at, k.id)))
}

#[derive(QueryableByName)]
struct Flag {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    yes: bool,
}

/// What a real cleanup needs to know first, from index probes instead of counting every selected row: is any
/// row selected, does any stay, and how many old unfinished executions are kept (few, found through the
/// status index).
fn precheck(conn: &mut SqliteConnection, sel: &Selection) -> Result<Precheck> {
    let t = target(sel.target);
    let cond = selected(sel);
    let flag = |conn: &mut SqliteConnection, sql: String| -> Result<bool> {
        Ok(sql_query(sql)
            .bind::<BigInt, _>(sel.before.0)
            .bind::<Text, _>(&sel.before.1)
            .get_result::<Flag>(conn)
            .map_err(sqlite_error)?
            .yes)
    };
    let selects_any = flag(conn, format!("SELECT EXISTS (SELECT 1 FROM {} WHERE {cond}) AS yes", t.source))?;
    let newer_any = flag(
        conn,
        format!(
            "SELECT EXISTS (SELECT 1 FROM {} WHERE {at} >= ?1 AND ({at}, id) >= (?1, ?2)) AS yes",
            t.source,
            at = t.at
        ),
    )?;
    let mut unfinished_kept = 0;
    if sel.target == CleanupTarget::Executions && !sel.include_unfinished {
        unfinished_kept = count(
            conn,
            &format!(
                "SELECT count(*) AS n FROM executions INDEXED BY idx_executions_status \
                 WHERE status NOT IN ({}) AND started_at <= ?1 AND (started_at, id) < (?1, ?2)",
                final_statuses()
            ),
            &sel.before,
        )?;
    }
    Ok(Precheck {
        selects_any,
        keeps_any: newer_any || unfinished_kept > 0,
        unfinished_kept: unfinished_kept.max(0) as u64,
    })
}

/// What one delete job removed.
#[derive(Debug, Default)]
struct Batch {
    /// The keys of the main table's rows, in order.
    keys: Vec<(i64, String)>,
    events: u64,
    search: u64,
    took: Duration,
}

/// One job: the next `limit` selected rows after `after`, deleted with everything that belongs to them.
fn delete_batch(
    conn: &mut SqliteConnection,
    sel: &Selection,
    after: Option<&Key>,
    limit: i64,
) -> Result<Batch> {
    let started = Instant::now();
    let t = target(sel.target);
    let mut cond = selected(sel);
    if after.is_some() {
        cond.push_str(&format!(" AND {at} >= ?3 AND ({at}, id) > (?3, ?4)", at = t.at));
    }
    let (after_at, after_id) = after.cloned().unwrap_or_default();
    let keys: Vec<KeyRow> = sql_query(format!(
        "SELECT {at} AS at, id FROM {tb} WHERE {cond} ORDER BY {at}, id LIMIT ?5",
        at = t.at,
        tb = t.source
    ))
    .bind::<BigInt, _>(sel.before.0)
    .bind::<Text, _>(&sel.before.1)
    .bind::<BigInt, _>(after_at)
    .bind::<Text, _>(after_id)
    .bind::<BigInt, _>(limit)
    .load(conn)
    .map_err(sqlite_error)?;
    let mut batch = Batch { keys: keys.into_iter().map(|k| (k.at, k.id)).collect(), ..Batch::default() };
    if batch.keys.is_empty() {
        batch.took = started.elapsed();
        return Ok(batch);
    }
    let ids = serde_json::to_string(&batch.keys.iter().map(|k| &k.1).collect::<Vec<_>>())
        .map_err(|e| Error::internal(format!("encoding a cleanup batch: {e}")))?;
    let run = |conn: &mut SqliteConnection, sql: &str| -> Result<u64> {
        Ok(sql_query(sql).bind::<Text, _>(&ids).execute(conn).map_err(sqlite_error)? as u64)
    };
    const IDS: &str = "(SELECT value FROM json_each(?1))";
    let deleted = if sel.target == CleanupTarget::Executions {
        run(conn, &format!("DELETE FROM executions_fts WHERE rowid IN (SELECT doc_id FROM execution_search WHERE execution_id IN {IDS})"))?;
        batch.search = run(conn, &format!("DELETE FROM execution_search WHERE execution_id IN {IDS}"))?;
        run(conn, &format!("DELETE FROM execution_search_queue WHERE execution_id IN {IDS}"))?;
        batch.events = run(conn, &format!("DELETE FROM execution_events WHERE execution_id IN {IDS}"))?;
        run(conn, &format!("DELETE FROM executions WHERE id IN {IDS}"))?
    } else {
        run(conn, &format!("DELETE FROM audit_logs WHERE id IN {IDS}"))?
    };
    if deleted != batch.keys.len() as u64 {
        // Only this writer deletes inside its transaction: a difference means the selection changed under us.
        return Err(Error::internal(format!(
            "a cleanup batch selected {} rows of {} but deleted {deleted}; nothing of this batch was kept \
             deleted (run the cleanup again)",
            batch.keys.len(),
            t.table
        )));
    }
    batch.took = started.elapsed();
    Ok(batch)
}

/// Per-table totals of a cleanup, turned into reports at the end.
#[derive(Default)]
struct Totals {
    rows: u64,
    events: u64,
    search: u64,
    batches: u64,
    oldest: Option<i64>,
    newest: Option<i64>,
    samples: Vec<String>,
}

impl Totals {
    fn add(&mut self, b: &Batch) {
        self.rows += b.keys.len() as u64;
        self.events += b.events;
        self.search += b.search;
        self.batches += 1;
        if let (Some(first), Some(last)) = (b.keys.first(), b.keys.last()) {
            self.oldest = Some(self.oldest.map_or(first.0, |o| o.min(first.0)));
            self.newest = Some(self.newest.map_or(last.0, |n| n.max(last.0)));
        }
        for k in &b.keys {
            if self.samples.len() >= SAMPLE_IDS {
                break;
            }
            self.samples.push(k.1.clone());
        }
    }
}

fn batched(name: &str, rows: u64, batches: u64) -> TableReport {
    TableReport { table: name.into(), rows, rows_in_batches: rows, batches, ..TableReport::default() }
}

/// `<database>-retention.lock`, next to the database file.
pub fn lock_path(db: &Path) -> PathBuf {
    let mut name = OsString::from(db.as_os_str());
    name.push("-retention.lock");
    PathBuf::from(name)
}

/// The runner lock: `flock(LOCK_EX | LOCK_NB)` on [`lock_path`]. `flock` locks belong to an open file
/// description, so a second storage instance in this process is refused as well as another process; the
/// kernel releases the lock when the file is closed (the [`RunnerLock`] dropped) or its process dies. The
/// file holds the holder's pid, for the curious; it is never deleted (unlinking a lock file while another
/// process is about to lock it would let two holders in).
pub fn lock_file(db: &Path) -> Result<Option<File>> {
    let path = lock_path(db);
    let mut file =
        OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(|e| {
            Error::unavailable(format!("cannot open the runner lock file {}: {e}", path.display()))
        })?;
    // SAFETY: `file` is an open descriptor for the lifetime of this call.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let err = io::Error::last_os_error();
        if err.kind() == io::ErrorKind::WouldBlock {
            return Ok(None);
        }
        return Err(Error::unavailable(format!("cannot lock {}: {err}", path.display())));
    }
    let me = format!("{}\n", std::process::id());
    // The pid is informative only: a failure to write it does not matter.
    let _ = file.set_len(0).and_then(|_| file.write_all(me.as_bytes()));
    Ok(Some(file))
}

impl SqliteBackend {
    async fn delete_all(
        &self,
        sel: Selection,
        tally: Tally,
        checkpointer: &vacuum::Checkpointer,
    ) -> Result<Totals> {
        let mut totals = Totals::default();
        let mut after: Option<Key> = None;
        let mut limit = ROWS_FIRST;
        let main = target(sel.target).table;
        loop {
            let (s, a) = (sel.clone(), after.clone());
            let batch = self
                .writer
                .write("a cleanup batch", move |conn| delete_batch(conn, &s, a.as_ref(), limit))
                .await?;
            if batch.keys.is_empty() {
                break;
            }
            // Committed: count it.
            tally.add(main, batch.keys.len() as u64);
            if sel.target == CleanupTarget::Executions {
                tally.add("execution_events", batch.events);
                tally.add("execution_search", batch.search);
            }
            totals.add(&batch);
            let full = batch.keys.len() as i64 >= limit;
            after = batch.keys.last().cloned();
            if !full {
                break;
            }
            limit = vacuum::pace(limit, batch.took, JOB_TARGET, ROWS_MIN, ROWS_MAX);
            checkpointer.kick();
        }
        Ok(totals)
    }
}

impl Store for SqliteBackend {
    fn storage_config(&self) -> &StorageConfig {
        &self.cfg
    }

    async fn nth_newest_execution(&self, n: u64) -> Result<Option<Key>> {
        let Some(skip) = n.checked_sub(1).and_then(|k| i64::try_from(k).ok()) else { return Ok(None) };
        self.read(move |conn| {
            conn.transaction(|conn| nth_newest(conn, skip).map_err(SqliteFailure)).map_err(Error::from)
        })
        .await
    }

    async fn plan_cleanup(&self, sel: Selection) -> Result<Plan> {
        // One read transaction: every count sees the same snapshot, even while another instance deletes.
        self.read(move |conn| {
            conn.transaction(|conn| plan(conn, &sel).map_err(SqliteFailure)).map_err(Error::from)
        })
        .await
    }

    async fn precheck(&self, sel: Selection) -> Result<Precheck> {
        self.read(move |conn| {
            conn.transaction(|conn| precheck(conn, &sel).map_err(SqliteFailure)).map_err(Error::from)
        })
        .await
    }

    async fn cleanup(&self, sel: Selection, tally: Tally) -> Result<Vec<TableReport>> {
        let path = self.cfg.sqlite.path.clone();
        let what = sel.target;
        let checkpointer = vacuum::Checkpointer::open(&self.cfg.sqlite).await?;
        // The size before, with the WAL copied in so that both sizes measure the same thing.
        checkpointer.run().await?;
        let before = vacuum::file_bytes(&path);
        let totals = self.delete_all(sel, tally, &checkpointer).await?;
        let mut reclaimed = vacuum::Reclaimed::default();
        if totals.rows > 0 {
            reclaimed = vacuum::reclaim(&self.writer, &checkpointer, &path).await?;
        }
        let after = vacuum::file_bytes(&path);
        tracing::info!(
            path = %path.display(),
            rows = totals.rows,
            batches = totals.batches,
            incremental_vacuum = reclaimed.incremental,
            pages_freed = reclaimed.pages,
            vacuum_steps = reclaimed.steps,
            bytes_before = before,
            bytes_after = after,
            "SQLite cleanup finished"
        );
        let mut main = batched(target(what).table, totals.rows, totals.batches);
        main.oldest = totals.oldest.map(time::rfc3339);
        main.newest = totals.newest.map(time::rfc3339);
        main.sample_ids = totals.samples;
        main.bytes_reclaimed = Some(before.saturating_sub(after));
        let mut reports = vec![main];
        if what == CleanupTarget::Executions {
            reports.push(batched("execution_events", totals.events, totals.batches));
            reports.push(batched("execution_search", totals.search, totals.batches));
        }
        Ok(reports)
    }

    async fn lock_runner(&self) -> Result<Option<RunnerLock>> {
        let db = self.cfg.sqlite.path.clone();
        let file = tokio::task::spawn_blocking(move || lock_file(&db))
            .await
            .map_err(|e| Error::internal(format!("taking the runner lock failed: {e}")))??;
        Ok(file.map(|f| RunnerLock(Box::new(f))))
    }

    async fn save_run(&self, run: Run) -> Result<()> {
        let tick = run.tick;
        self.writer
            .write("recording a retention run", move |conn| {
                sql_query(
                    "INSERT INTO retention_runs (id, \"trigger\", tick, started_at, finished_at, status, \"rows\", error, \
                     archive) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
                     ON CONFLICT (id) DO UPDATE SET \"trigger\" = excluded.\"trigger\", tick = excluded.tick, \
                     started_at = excluded.started_at, finished_at = excluded.finished_at, status = excluded.status, \
                     \"rows\" = excluded.\"rows\", error = excluded.error, archive = excluded.archive",
                )
                .bind::<Text, _>(&run.id)
                .bind::<Text, _>(run.trigger.as_str())
                .bind::<Nullable<BigInt>, _>(run.tick)
                .bind::<BigInt, _>(run.started_at)
                .bind::<Nullable<BigInt>, _>(run.finished_at)
                .bind::<Text, _>(run.status.as_str())
                .bind::<Text, _>(run.rows_json())
                .bind::<Nullable<Text>, _>(run.error.as_deref())
                .bind::<Nullable<Text>, _>(run.archive.as_ref().map(|a| a.to_json()))
                .execute(conn)
                .map_err(sqlite_error)?;
                Ok(())
            })
            .await
            .map_err(|e| match (e.kind(), tick) {
                (ErrorKind::Conflict, Some(t)) => {
                    Error::conflict(format!("the schedule tick {} already has a retention run ({e})", time::rfc3339(t)))
                }
                _ => e,
            })
    }

    async fn runs(&self, limit: usize) -> Result<Vec<Run>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            let rows: Vec<RunRow> = sql_query(
                "SELECT id, \"trigger\" AS \"trigger\", tick, started_at, finished_at, status, \"rows\" AS \"rows\", \
                 error, archive FROM retention_runs ORDER BY started_at DESC, id DESC LIMIT ?1",
            )
            .bind::<BigInt, _>(limit)
            .load(conn)
            .map_err(sqlite_error)?;
            rows.into_iter()
                .map(|r| {
                    let trigger = Trigger::parse(&r.trigger).ok_or_else(|| {
                        Error::internal(format!("retention run {} has an unknown trigger {:?}", r.id, r.trigger))
                    })?;
                    let status = RunStatus::parse(&r.status).ok_or_else(|| {
                        Error::internal(format!("retention run {} has an unknown status {:?}", r.id, r.status))
                    })?;
                    Ok(Run {
                        rows: Run::rows_from_json(&r.rows),
                        id: r.id,
                        trigger,
                        tick: r.tick,
                        started_at: r.started_at,
                        finished_at: r.finished_at,
                        status,
                        error: r.error,
                        archive: r.archive.as_deref().and_then(ArchiveState::from_json),
                    })
                })
                .collect()
        })
        .await
    }

    async fn last_tick(&self) -> Result<Option<i64>> {
        self.read(|conn| {
            Ok(sql_query("SELECT max(tick) AS tick FROM retention_runs")
                .get_result::<Tick>(conn)
                .map_err(sqlite_error)?
                .tick)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use parallax_storage_abi::OpenOptions;

    use super::*;
    use crate::config::SqliteConfig;

    async fn backend(dir: &tempfile::TempDir) -> SqliteBackend {
        let cfg = StorageConfig {
            sqlite: SqliteConfig { path: dir.path().join("r.db"), ..SqliteConfig::default() },
            ..StorageConfig::default()
        };
        SqliteBackend::open(cfg, OpenOptions::default()).await.unwrap()
    }

    fn run(tick: Option<i64>, started_at: i64) -> Run {
        Run { started_at, ..Run::start(Trigger::Scheduled, tick) }
    }

    #[tokio::test]
    async fn run_records_one_per_tick_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let b = backend(&dir).await;
        assert_eq!(b.last_tick().await.unwrap(), None);
        let mut first = run(Some(5_000_000), 10);
        b.save_run(first.clone()).await.unwrap();
        let err = b.save_run(run(Some(5_000_000), 20)).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
        assert!(err.to_string().contains("1970-01-01T00:00:05.000000Z"), "{err}");
        // The same id replaces its record.
        first.status = RunStatus::Succeeded;
        first.finished_at = Some(30);
        first.rows.insert("executions".into(), 7);
        b.save_run(first.clone()).await.unwrap();
        let manual = Run { started_at: 40, ..Run::start(Trigger::Manual, None) };
        b.save_run(manual.clone()).await.unwrap();
        assert_eq!(b.runs(10).await.unwrap(), vec![manual.clone(), first]);
        assert_eq!(b.runs(1).await.unwrap(), vec![manual]);
        assert_eq!(b.last_tick().await.unwrap(), Some(5_000_000));
        b.writer.stop();
    }

    #[tokio::test]
    async fn the_runner_lock_is_exclusive_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (backend(&dir).await, backend(&dir).await);
        let held = a.lock_runner().await.unwrap().expect("free at first");
        assert!(b.lock_runner().await.unwrap().is_none(), "another instance holds it");
        assert!(a.lock_runner().await.unwrap().is_none(), "not reentrant either");
        drop(held);
        assert!(b.lock_runner().await.unwrap().is_some());
        assert!(dir.path().join("r.db-retention.lock").is_file());
        a.writer.stop();
        b.writer.stop();
    }

    #[tokio::test]
    async fn nth_newest_orders_by_time_then_id() {
        let dir = tempfile::tempdir().unwrap();
        let b = backend(&dir).await;
        b.writer
            .write("rows", |conn| {
                for (id, at) in [("a", 1), ("b", 2), ("c", 2), ("d", 2), ("e", 3)] {
                    sql_query(format!(
                        "INSERT INTO executions (id, pattern_name, pattern_version, status, started_at) \
                         VALUES ('0190b3f2-0000-7000-8000-00000000000{id}', 'p', '1', 'completed', {at})"
                    ))
                    .execute(conn)?;
                }
                Ok(())
            })
            .await
            .unwrap();
        let id = |c: &str| format!("0190b3f2-0000-7000-8000-00000000000{c}");
        let want = [(3, "e"), (2, "d"), (2, "c"), (2, "b"), (1, "a")];
        for (n, (at, c)) in want.iter().enumerate() {
            assert_eq!(
                b.nth_newest_execution(n as u64 + 1).await.unwrap(),
                Some((*at, id(c))),
                "n = {}",
                n + 1
            );
        }
        assert_eq!(b.nth_newest_execution(6).await.unwrap(), None);

        // The precheck's probes agree with the plan's counts.
        b.writer
            .write("an unfinished one", |conn| {
                sql_query(
                    "INSERT INTO executions (id, pattern_name, pattern_version, status, started_at) \
                     VALUES ('0190b3f2-0000-7000-8000-00000000000f', 'p', '1', 'running', 2)",
                )
                .execute(conn)?;
                Ok(())
            })
            .await
            .unwrap();
        for (before, include_unfinished) in
            [((0, id("a")), false), ((2, id("c")), false), ((9, id("a")), false), ((9, id("a")), true)]
        {
            let sel = Selection { target: CleanupTarget::Executions, before, include_unfinished };
            let pre = b.precheck(sel.clone()).await.unwrap();
            let plan = b.plan_cleanup(sel.clone()).await.unwrap();
            let going = plan.tables[0].rows;
            assert_eq!(pre.selects_any, going > 0, "{sel:?}");
            assert_eq!(pre.keeps_any, going < plan.total_rows, "{sel:?}");
            assert_eq!(pre.unfinished_kept, plan.unfinished_kept, "{sel:?}");
        }
        assert_eq!(b.nth_newest_execution(0).await.unwrap(), None);
        b.writer.stop();
    }
}
