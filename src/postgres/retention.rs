//! Cleanup and retention on PostgreSQL ([`crate::retention::Store`]): persistence only; what goes and how a
//! run is checked, locked and recorded is decided in `src/retention`.
//!
//! How executions go (the selection is `(started_at, id) < before`, final statuses unless `include_unfinished`):
//!
//! 1. **Whole months.** `execution_events` is partitioned by month like `executions`, on its execution's
//!    `started_at` (`execution_started_at`), and the partition function makes both months together. A monthly
//!    partition whose whole range is below the limit ([`Selection::covers_range`]), that lies before the current
//!    month (the partition keeper only ever creates this month and later, so a dropped month is never
//!    re-created), whose events partition of the same month is attached and whose rows are all selected (no
//!    pending/running row unless `include_unfinished`) goes as a pair of partitions: O(1) in its rows, no event
//!    deleted row by row.
//!    - One short transaction: `SET LOCAL lock_timeout` ([`LOCK_TIMEOUT`]), the partition-DDL advisory lock (the
//!      keeper's), `DETACH PARTITION` of the executions month then of the events month (the order writers take
//!      them: an event append locks its execution's row, then inserts), a re-check that no unfinished row
//!      arrived (else it rolls back and the month is deleted in batches instead), and both tables renamed aside
//!      (`parallax_detached_…`). Its rows leave `executions` and `execution_events` together at that commit.
//!    - Then, holding no lock a writer waits for: an exact count of both detached tables for the report (no
//!      writer can reach them; one `count(*)`, which the planner answers from the small status index, or
//!      slices of days through the `started_at` index for a month of over [`COUNT_AT_ONCE`] rows) and their
//!      DROP: both tables in one statement, or for a month of over [`DROP_AT_ONCE_BYTES`] its indexes in
//!      statements of at most that size and then each table, so that no single statement spends long unlinking files (a DROP's time grows with
//!      the bytes it frees). Months are counted and dropped on a spare session
//!      while the next month is detached (counting is the server's CPU, a DROP its disk); the detaching session
//!      joins them once every month is detached, and finishes alone when the connection budget has no room
//!      ([`super::budget::Budget::spare`]). A run killed in between leaves the renamed tables, which the next run counts and drops
//!      first; the `parallax_detached_` prefix marks tables only this module detached, so a partition an
//!      operator detached on purpose is never touched.
//!    - Why plain DETACH with a lock timeout: `DETACH … CONCURRENTLY` is refused while a DEFAULT partition
//!      exists (it catches rows outside the months made ahead, and the keeper's stray moving relies on it), and
//!      a plain DETACH takes ACCESS EXCLUSIVE on the parent. Waiting for that lock queues every later writer
//!      behind it, so the wait is bounded by `lock_timeout`: a writer is held up at most [`LOCK_TIMEOUT`] plus
//!      the milliseconds the transaction holds the locks. When a lock is not granted in time the transaction
//!      gives up and retries with backoff ([`DROP_ATTEMPTS`]); after the last attempt the month's rows are
//!      deleted in batches like the rest, so a busy database still gets cleaned.
//! 2. **Everything else** — the boundary month, the current month, rows in `executions_default` below the
//!    limit (rows written late into a dropped month land there), months with unfinished rows — goes in
//!    batches of [`BATCH`] executions in `(started_at, id)` order (keyset, no rescans), each one short
//!    transaction: lock the batch's rows (`FOR UPDATE`: an event append holds its execution's row lock, so no
//!    event can slip in after the events are deleted), delete their events (pruned to the batch's
//!    `execution_started_at` range), delete them. Rows written late into a dropped month land in both default
//!    partitions and go this way.
//!
//! A real cleanup does not count first: [`Store::precheck`] answers the `--yes` rule and the unfinished rows
//! kept with index probes (`EXISTS` below and above the limit, a count of the few pending/running rows below it
//! through the status index). Only a dry run counts everything (whole months by partition).
//!
//! `Tally` is updated after each commit and each month dropped (a whole month
//! counts exactly the rows its two tables had at the DROP; its time range is read just before, so a row written
//! into it in between counts but may lie outside it). Killed at any point (kill -9), the database is consistent — events are
//! always deleted before or with their execution — and the next run picks up where this one stopped.
//!
//! Audit entries go in batches of [`BATCH`] in `(timestamp, id)` order. `audit_logs` is not partitioned: its
//! rows are small and need no second table cleaned with them, so batches keep a 90-day cleanup short; a
//! partitioned audit log would need a migration of existing data and is left for later.
//!
//! Statements run on raw tokio-postgres clients taken from the connection budget like audit `COPY` clients
//! (`budget.rs`). The runner lock is a session advisory lock ([`RUNNER_LOCK`]) on a dedicated connection,
//! opened for the run and never pooled, so it is released on the session that took it: unlocked, then closed,
//! when the [`RunnerLock`] drops. A run therefore needs two connections of `pool.maxConnections`.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use parallax_storage_abi::retention::TableReport;
use parallax_storage_abi::{retention::CleanupTarget, ErrorKind};
use tokio_postgres::{error::SqlState, types::ToSql, Client, Row};
use uuid::Uuid;

use super::{budget::Raw, partitions::PARTITION_LOCK, PostgresBackend};
use crate::{
    archive::ArchiveState,
    config::StorageConfig,
    error::{pg_sqlstate_kind, Error, Result},
    retention::{Plan, Precheck, Run, RunStatus, RunnerLock, Store, Tally, Trigger, SAMPLE_IDS},
    rules::{Key, Selection, FINAL_STATUSES},
    time,
};

/// Key of the one-runner-per-database advisory lock ("plx-retn").
pub const RUNNER_LOCK: i64 = 0x706c_782d_7265_746e;

/// Rows per batch (executions with their events, or audit entries): one short transaction each, well under
/// 200 ms with 16 writers busy (2000 came close).
pub const BATCH: i64 = 1000;

/// How long a partition drop waits for its locks before giving up (and letting blocked writers through).
pub const LOCK_TIMEOUT: &str = "150ms";

/// Attempts at a partition's DETACH + DROP before its rows are deleted in batches instead.
pub const DROP_ATTEMPTS: u32 = 12;

/// How long a batch waits for the row locks of its executions (an event append in progress) before retrying.
pub(super) const BATCH_LOCK_TIMEOUT: &str = "2s";

/// Attempts at one batch whose lock wait timed out.
pub(super) const BATCH_ATTEMPTS: u32 = 10;

/// `$n` (microseconds since 1970) as a `timestamptz`, exactly.
pub(super) fn ts(n: u8) -> String {
    format!("('epoch'::timestamptz + ${n}::int8 * interval '1 microsecond')")
}

/// A `timestamptz` expression as microseconds since 1970 (`int8`), exactly.
pub(super) fn us(expr: &str) -> String {
    format!("(extract(epoch FROM {expr}) * 1000000)::int8")
}

pub(super) fn final_list() -> String {
    FINAL_STATUSES.iter().map(|s| format!("'{s}'")).collect::<Vec<_>>().join(", ")
}

/// The selection's SQL over `executions` (or one of its partitions): `$1` micros, `$2` id of the limit.
fn selected(sel: &Selection) -> String {
    let mut p = format!("(started_at, id) < ({}, $2)", ts(1));
    if !sel.include_unfinished {
        p.push_str(&format!(" AND status IN ({})", final_list()));
    }
    p
}

fn limit_id(sel: &Selection) -> Result<Uuid> {
    Uuid::parse_str(&sel.before.1)
        .map_err(|_| Error::invalid(format!("cleanup limit id {:?} is not a UUID", sel.before.1)))
}

/// A table name from the catalogue (`executions_YYYY_MM`, matched by a pattern), quoted.
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A raw client from the connection budget (an idle audit `COPY` client, or a new connection), given back
/// when dropped.
pub(super) struct Session<'a> {
    backend: &'a PostgresBackend,
    client: Option<Client>,
    /// A transaction is open: if the cleanup is dropped now (its caller gave up), the client is closed, never
    /// given back with a transaction (and its locks) still open; the server rolls it back.
    in_transaction: AtomicBool,
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            if !self.in_transaction.load(Ordering::SeqCst) {
                self.backend.spec.budget.put_back_copy(c);
            }
        }
    }
}

impl Session<'_> {
    pub(super) fn client(&self) -> &Client {
        self.client.as_ref().expect("a session has its client until dropped")
    }

    pub(super) fn fail(&self, e: tokio_postgres::Error, what: &str) -> Error {
        let detail = match e.as_db_error() {
            Some(db) => db.message().to_string(),
            None => e.to_string(),
        };
        let detail = self.backend.spec.redact(&detail);
        if e.is_closed() || self.client().is_closed() {
            return Error::connection_lost(format!(
                "(PostgreSQL at {}) while {what}: {detail}",
                self.backend.spec.location
            ));
        }
        match e.code().and_then(pg_sqlstate_kind) {
            Some(kind) => Error::new(kind, format!("{what}: {detail}")).with_schema_hint(),
            None => Error::internal(format!("{what}: {detail}")),
        }
    }

    pub(super) async fn rows(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        what: &str,
    ) -> Result<Vec<Row>> {
        self.client().query(sql, params).await.map_err(|e| self.fail(e, what))
    }

    pub(super) async fn row(&self, sql: &str, params: &[&(dyn ToSql + Sync)], what: &str) -> Result<Row> {
        self.client().query_one(sql, params).await.map_err(|e| self.fail(e, what))
    }

    pub(super) async fn batch(&self, sql: &str, what: &str) -> Result<()> {
        self.client().batch_execute(sql).await.map_err(|e| self.fail(e, what))
    }

    /// Runs `f` in a transaction (`BEGIN` + `setup`), committing on success and rolling back on error. The
    /// error of a lock wait that timed out is told apart ([`Step::LockTimeout`]).
    pub(super) async fn transaction<T>(
        &self,
        setup: &str,
        what: &str,
        f: impl AsyncFnOnce(&Client) -> std::result::Result<Step<T>, tokio_postgres::Error>,
    ) -> Result<Step<T>> {
        self.in_transaction.store(true, Ordering::SeqCst);
        self.batch(&format!("BEGIN; {setup}"), what).await?;
        let outcome = self.finish(f(self.client()).await, what).await;
        if outcome.is_ok() {
            self.in_transaction.store(false, Ordering::SeqCst);
        }
        outcome
    }

    /// Runs `f` in a transaction (`BEGIN` + `setup`) whose failures are this crate's errors (statements run
    /// through [`Session::rows`] and the like, on this session): committed on `Ok`, rolled back on `Err`.
    pub(super) async fn transaction_of<T>(
        &self,
        setup: &str,
        what: &str,
        f: impl AsyncFnOnce() -> Result<T>,
    ) -> Result<T> {
        self.in_transaction.store(true, Ordering::SeqCst);
        self.batch(&format!("BEGIN; {setup}"), what).await?;
        match f().await {
            Ok(v) => {
                self.batch("COMMIT", what).await?;
                self.in_transaction.store(false, Ordering::SeqCst);
                Ok(v)
            }
            Err(e) => {
                if !self.client().is_closed() && self.client().batch_execute("ROLLBACK").await.is_ok() {
                    self.in_transaction.store(false, Ordering::SeqCst);
                }
                Err(e)
            }
        }
    }

    async fn finish<T>(
        &self,
        result: std::result::Result<Step<T>, tokio_postgres::Error>,
        what: &str,
    ) -> Result<Step<T>> {
        match result {
            Ok(Step::Done(v)) => {
                self.batch("COMMIT", what).await?;
                Ok(Step::Done(v))
            }
            Ok(other) => {
                self.batch("ROLLBACK", what).await?;
                Ok(other)
            }
            Err(e) => {
                // lock_timeout, or the statement_timeout bounding a multi-table LOCK.
                let timed_out = e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE)
                    || e.code() == Some(&SqlState::QUERY_CANCELED);
                if !e.is_closed() {
                    let _ = self.client().batch_execute("ROLLBACK").await;
                }
                if timed_out {
                    Ok(Step::LockTimeout)
                } else {
                    Err(self.fail(e, what))
                }
            }
        }
    }
}

/// How a transaction of [`Session::transaction`] ended.
pub(super) enum Step<T> {
    Done(T),
    /// A lock was not granted within `lock_timeout` (rolled back).
    LockTimeout,
    /// Rolled back for a reason the caller gave (busy partition lock, an unfinished row, already gone).
    Skip(&'static str),
}

impl PostgresBackend {
    pub(super) async fn session(&self) -> Result<Session<'_>> {
        let client = match self.spec.budget.for_raw(Some(&self.pool), true).await? {
            Raw::Idle(c) => c,
            Raw::New(slot) => super::connect::connect_raw(&self.spec, slot).await?,
        };
        Ok(Session { backend: self, client: Some(client), in_transaction: AtomicBool::new(false) })
    }
}

/// A monthly partition entirely below the limit and before this month, with its `execution_events` partition.
struct Month {
    name: String,
    /// `execution_events_YYYY_MM`: the events of the month's executions.
    events: String,
    /// Its range `[lower, upper)`, microseconds.
    lower: i64,
    upper: i64,
}

/// The past monthly partitions whose whole range is below the limit, whose rows are all selected and whose
/// events partition of the same month is attached (the partition keeper and the migration make both together;
/// a month without one goes in batches).
async fn whole_months(s: &Session<'_>, sel: &Selection) -> Result<Vec<Month>> {
    let rows = s
        .rows(
            &format!(
                "SELECT c.relname::text, {} AS upper, {} AS lower, ev.relname::text \
                 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
                 JOIN pg_class ev ON ev.relname = 'execution_events_' || substr(c.relname, 12) \
                 JOIN pg_inherits ei ON ei.inhrelid = ev.oid AND ei.inhparent = 'execution_events'::regclass \
                 CROSS JOIN LATERAL (SELECT (to_date(substr(c.relname, 12), 'YYYY_MM') + interval '1 month') \
                 AT TIME ZONE 'UTC' AS upper) u \
                 WHERE i.inhparent = 'executions'::regclass AND c.relname ~ '^executions_[0-9]{{4}}_[0-9]{{2}}$' \
                 AND u.upper <= date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' \
                 ORDER BY u.upper",
                us("u.upper"),
                us("u.upper - interval '1 month'")
            ),
            &[],
            "listing the executions partitions",
        )
        .await?;
    let mut months = Vec::new();
    for r in rows {
        let (name, upper, lower, events): (String, i64, i64, String) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        if !sel.covers_range(upper) {
            continue;
        }
        if !sel.include_unfinished && has_unfinished(s, &name).await? {
            continue;
        }
        months.push(Month { name, events, lower, upper });
    }
    Ok(months)
}

async fn has_unfinished(s: &Session<'_>, part: &str) -> Result<bool> {
    let r = s
        .row(
            &format!("SELECT EXISTS (SELECT 1 FROM {} WHERE status IN ('pending', 'running'))", quoted(part)),
            &[],
            "looking for unfinished executions",
        )
        .await?;
    Ok(r.get(0))
}

/// Rows, oldest and newest `time_column` of one partition (`started_at` of an executions month,
/// `recorded_at` of an events month).
async fn partition_rows(
    s: &Session<'_>,
    part: &str,
    time_column: &str,
) -> Result<(u64, Option<i64>, Option<i64>)> {
    let r = s
        .row(
            &format!(
                "SELECT count(*), {}, {} FROM {}",
                us(&format!("min({time_column})")),
                us(&format!("max({time_column})")),
                quoted(part)
            ),
            &[],
            "counting a partition's rows",
        )
        .await?;
    Ok((r.get::<_, i64>(0) as u64, r.get(1), r.get(2)))
}

/// SQL excluding the months' ranges (`AND NOT (started_at in [lower, upper))` each), so that partition pruning
/// skips them.
fn outside(months: &[Month], column: &str) -> String {
    let lit = |us: i64| format!("('epoch'::timestamptz + {us}::int8 * interval '1 microsecond')");
    months
        .iter()
        .map(|m| format!(" AND NOT ({column} >= {} AND {column} < {})", lit(m.lower), lit(m.upper)))
        .collect()
}

/// What went (or would go) from one table, gathered step by step.
#[derive(Default)]
struct Acc {
    rows: u64,
    oldest: Option<i64>,
    newest: Option<i64>,
    partitions: Vec<String>,
    in_batches: u64,
    batches: u64,
    bytes: Option<u64>,
    samples: Vec<String>,
}

impl Acc {
    fn seen(&mut self, lo: Option<i64>, hi: Option<i64>) {
        if let Some(lo) = lo {
            self.oldest = Some(self.oldest.map_or(lo, |o| o.min(lo)));
        }
        if let Some(hi) = hi {
            self.newest = Some(self.newest.map_or(hi, |n| n.max(hi)));
        }
    }

    fn batch(&mut self, rows: u64) {
        self.rows += rows;
        self.in_batches += rows;
        self.batches += 1;
    }

    fn report(self, table: &str) -> TableReport {
        TableReport {
            table: table.to_string(),
            rows: self.rows,
            oldest: self.oldest.map(time::rfc3339),
            newest: self.newest.map(time::rfc3339),
            partitions_dropped: self.partitions,
            rows_in_batches: self.in_batches,
            batches: self.batches,
            bytes_reclaimed: self.bytes,
            sample_ids: self.samples,
        }
    }
}

pub(super) fn when_lock_waits(attempt: u32) -> Duration {
    Duration::from_millis((50u64 << attempt.min(5)).min(2000))
}

impl PostgresBackend {
    async fn plan_executions(&self, sel: &Selection) -> Result<Plan> {
        let s = self.session().await?;
        let id = limit_id(sel)?;
        let params: [&(dyn ToSql + Sync); 2] = [&sel.before.0, &id];
        // Whole months are counted by partition (both tables), the rest by the selection outside them.
        let mut exec = Acc::default();
        let mut events = Acc::default();
        let months = whole_months(&s, sel).await?;
        let (mut bytes, mut ev_bytes) = (0u64, 0u64);
        for m in &months {
            let (n, lo, hi) = partition_rows(&s, &m.name, "started_at").await?;
            exec.rows += n;
            exec.seen(lo, hi);
            let (n, lo, hi) = partition_rows(&s, &m.events, "recorded_at").await?;
            events.rows += n;
            events.seen(lo, hi);
            let sizes = s
                .row(
                    "SELECT pg_total_relation_size($1::text::regclass), pg_total_relation_size($2::text::regclass)",
                    &[&m.name, &m.events],
                    "sizing a month's partitions",
                )
                .await?;
            bytes += sizes.get::<_, i64>(0) as u64;
            ev_bytes += sizes.get::<_, i64>(1) as u64;
            exec.partitions.push(m.name.clone());
            events.partitions.push(m.events.clone());
        }
        if !months.is_empty() {
            exec.bytes = Some(bytes);
            events.bytes = Some(ev_bytes);
        }
        let r = s
            .row(
                &format!(
                    "SELECT count(*) FILTER (WHERE going), {}, {}, count(*) FILTER (WHERE NOT going) FROM \
                     (SELECT started_at, ($3 OR status IN ({})) AS going FROM executions \
                     WHERE (started_at, id) < ({}, $2){}) s",
                    us("min(started_at) FILTER (WHERE going)"),
                    us("max(started_at) FILTER (WHERE going)"),
                    final_list(),
                    ts(1),
                    outside(&months, "started_at")
                ),
                &[&sel.before.0, &id, &sel.include_unfinished],
                "counting the executions to remove",
            )
            .await?;
        let rest = r.get::<_, i64>(0) as u64;
        exec.rows += rest;
        exec.in_batches = rest;
        exec.seen(r.get(1), r.get(2));
        let unfinished_kept = r.get::<_, i64>(3) as u64;
        let total: i64 = s.row("SELECT count(*) FROM executions", &[], "counting executions").await?.get(0);
        exec.samples = s
            .rows(
                &format!(
                    "SELECT id::text FROM executions WHERE {} ORDER BY started_at, id LIMIT {SAMPLE_IDS}",
                    selected(sel)
                ),
                &params,
                "sampling the executions to remove",
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        // Events outside the whole months: only partitions below the limit are read (the partition key).
        let e = s
            .row(
                &format!(
                    "SELECT count(*), {}, {} FROM execution_events e WHERE e.execution_started_at <= {}{} \
                     AND EXISTS (SELECT 1 FROM executions x WHERE x.id = e.execution_id \
                     AND x.started_at = e.execution_started_at AND {})",
                    us("min(recorded_at)"),
                    us("max(recorded_at)"),
                    ts(1),
                    outside(&months, "e.execution_started_at"),
                    selected(sel)
                        .replace("(started_at, id)", "(x.started_at, x.id)")
                        .replace("status", "x.status")
                ),
                &params,
                "counting the events to remove",
            )
            .await?;
        let n = e.get::<_, i64>(0) as u64;
        events.rows += n;
        events.in_batches = n;
        events.seen(e.get(1), e.get(2));
        Ok(Plan {
            tables: vec![exec.report("executions"), events.report("execution_events")],
            unfinished_kept,
            total_rows: total as u64,
        })
    }

    async fn plan_audit(&self, sel: &Selection) -> Result<Plan> {
        let s = self.session().await?;
        let id = limit_id(sel)?;
        let params: [&(dyn ToSql + Sync); 2] = [&sel.before.0, &id];
        let r = s
            .row(
                &format!(
                    "SELECT count(*), {}, {} FROM audit_logs WHERE (timestamp, id) < ({}, $2)",
                    us("min(timestamp)"),
                    us("max(timestamp)"),
                    ts(1)
                ),
                &params,
                "counting the audit entries to remove",
            )
            .await?;
        let n = r.get::<_, i64>(0) as u64;
        let mut acc = Acc { rows: n, in_batches: n, ..Acc::default() };
        acc.seen(r.get(1), r.get(2));
        acc.samples = s
            .rows(
                &format!(
                    "SELECT id::text FROM audit_logs WHERE (timestamp, id) < ({}, $2) ORDER BY timestamp, id \
                     LIMIT {SAMPLE_IDS}",
                    ts(1)
                ),
                &params,
                "sampling the audit entries to remove",
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let total: i64 =
            s.row("SELECT count(*) FROM audit_logs", &[], "counting audit entries").await?.get(0);
        Ok(Plan { tables: vec![acc.report("audit_logs")], unfinished_kept: 0, total_rows: total as u64 })
    }

    async fn cleanup_executions(&self, sel: &Selection, tally: &Tally) -> Result<Vec<TableReport>> {
        let s = self.session().await?;
        let id = limit_id(sel)?;
        let mut exec = Acc::default();
        let mut events = Acc::default();
        exec.samples = s
            .rows(
                &format!(
                    "SELECT id::text FROM executions WHERE {} ORDER BY started_at, id LIMIT {SAMPLE_IDS}",
                    selected(sel)
                ),
                &[&sel.before.0, &id],
                "sampling the executions to remove",
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();

        // 0. Months a killed run detached but did not drop (their rows left `executions` then), and 1. whole
        // months: DETACH of the month's executions and events partitions together (one short lock_timeout
        // transaction, renamed aside), then counted and dropped without holding any lock that writers wait for.
        // Accounted in month order, also when a step failed (the report names what already went).
        let done = std::sync::Mutex::new(Vec::new());
        let outcome = self.months_away(&s, sel, &done, tally).await;
        let mut done = done.into_inner().unwrap_or_else(|p| p.into_inner());
        done.sort_by(|a: &Finished, b| a.month().cmp(b.month()));
        for f in &done {
            if let Some((bytes, ev_bytes)) = f.job.bytes {
                exec.bytes = Some(exec.bytes.unwrap_or(0) + bytes);
                events.bytes = Some(events.bytes.unwrap_or(0) + ev_bytes);
            }
            let (name, ev_name) = (f.job.name.as_deref(), f.job.events.as_deref());
            account(&mut exec, &mut events, &f.dropped, name.map(original), ev_name.map(original));
        }
        outcome?;
        // 2. The rest in batches, oldest first.
        let first = format!(
            "SELECT {}, id, started_at FROM executions WHERE {} ORDER BY started_at, id LIMIT {BATCH} FOR UPDATE",
            us("started_at"),
            selected(sel)
        );
        let next = format!(
            "SELECT {}, id, started_at FROM executions WHERE {} AND (started_at, id) > ({}, $4) \
             ORDER BY started_at, id LIMIT {BATCH} FOR UPDATE",
            us("started_at"),
            selected(sel),
            ts(3)
        );
        let del_events = format!(
            "WITH d AS (DELETE FROM execution_events WHERE execution_id = ANY($1) AND execution_started_at >= {} \
             AND execution_started_at <= {} RETURNING recorded_at) SELECT count(*), {}, {} FROM d",
            ts(2),
            ts(3),
            us("min(recorded_at)"),
            us("max(recorded_at)")
        );
        let del_execs = format!(
            "DELETE FROM executions WHERE id = ANY($1) AND started_at >= {} AND started_at <= {}",
            ts(2),
            ts(3)
        );
        let mut last: Option<(i64, Uuid)> = None;
        loop {
            let mut attempt = 0;
            let step = loop {
                let step = s
                    .transaction(
                        &format!("SET LOCAL lock_timeout = '{BATCH_LOCK_TIMEOUT}'"),
                        "deleting a batch of executions",
                        async |c| {
                            let rows = match &last {
                                None => c.query(&first, &[&sel.before.0, &id]).await?,
                                Some((t, i)) => c.query(&next, &[&sel.before.0, &id, t, i]).await?,
                            };
                            let (Some(lo), Some(hi)) = (rows.first(), rows.last()) else {
                                return Ok(Step::Done(None));
                            };
                            let (lo, hi): (i64, i64) = (lo.get(0), hi.get(0));
                            let key: (i64, Uuid) = (rows[rows.len() - 1].get(0), rows[rows.len() - 1].get(1));
                            let ids: Vec<Uuid> = rows.iter().map(|r| r.get(1)).collect();
                            let ev = c.query_one(&del_events, &[&ids, &lo, &hi]).await?;
                            let n = c.execute(&del_execs, &[&ids, &lo, &hi]).await?;
                            Ok(Step::Done(Some((
                                key,
                                n,
                                lo,
                                hi,
                                ev.get::<_, i64>(0) as u64,
                                ev.get(1),
                                ev.get(2),
                            ))))
                        },
                    )
                    .await?;
                match step {
                    Step::LockTimeout if attempt + 1 < BATCH_ATTEMPTS => {
                        attempt += 1;
                        tokio::time::sleep(when_lock_waits(attempt)).await;
                    }
                    Step::LockTimeout => {
                        return Err(Error::new(
                            ErrorKind::Timeout,
                            format!(
                                "a batch of executions stayed locked by other sessions through {BATCH_ATTEMPTS} \
                                 attempts (lock_timeout {BATCH_LOCK_TIMEOUT} each); run the cleanup again later"
                            ),
                        ))
                    }
                    Step::Skip(_) => unreachable!("batches are never skipped"),
                    Step::Done(v) => break v,
                }
            };
            let Some((key, n, lo, hi, n_events, ev_lo, ev_hi)) = step else { break };
            tally.add("execution_events", n_events);
            tally.add("executions", n);
            events.batch(n_events);
            events.seen(ev_lo, ev_hi);
            exec.batch(n);
            exec.seen(Some(lo), Some(hi));
            last = Some(key);
        }
        Ok(vec![exec.report("executions"), events.report("execution_events")])
    }

    async fn cleanup_audit(&self, sel: &Selection, tally: &Tally) -> Result<Vec<TableReport>> {
        let s = self.session().await?;
        let id = limit_id(sel)?;
        let params: [&(dyn ToSql + Sync); 2] = [&sel.before.0, &id];
        let samples = s
            .rows(
                &format!(
                    "SELECT id::text FROM audit_logs WHERE (timestamp, id) < ({}, $2) ORDER BY timestamp, id \
                     LIMIT {SAMPLE_IDS}",
                    ts(1)
                ),
                &params,
                "sampling the audit entries to remove",
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut acc = Acc { samples, ..Acc::default() };
        // Keyset batches: each starts after the last key of the one before ($3, $4), so no batch walks past
        // the index entries of the rows the earlier ones deleted (dead until vacuum).
        let sql = format!(
            "WITH b AS (SELECT id, timestamp FROM audit_logs WHERE (timestamp, id) < ({}, $2) \
             AND (timestamp, id) > ({}, $4) ORDER BY timestamp, id LIMIT {BATCH}), \
             d AS (DELETE FROM audit_logs a USING b WHERE a.id = b.id RETURNING a.timestamp), \
             l AS (SELECT timestamp, id FROM b ORDER BY timestamp DESC, id DESC LIMIT 1) \
             SELECT (SELECT count(*) FROM b), (SELECT count(*) FROM d), (SELECT {} FROM d), (SELECT {} FROM d), \
             (SELECT {} FROM l), (SELECT id FROM l)",
            ts(1),
            ts(3),
            us("min(timestamp)"),
            us("max(timestamp)"),
            us("timestamp")
        );
        // Stored times start in 1970: one microsecond before it is below every row.
        let (mut last_at, mut last_id) = (-1_i64, Uuid::nil());
        loop {
            let params: [&(dyn ToSql + Sync); 4] = [&sel.before.0, &id, &last_at, &last_id];
            let r = s.row(&sql, &params, "deleting a batch of audit entries").await?;
            if r.get::<_, i64>(0) == 0 {
                break;
            }
            let n = r.get::<_, i64>(1) as u64;
            tally.add("audit_logs", n);
            acc.batch(n);
            acc.seen(r.get(2), r.get(3));
            (last_at, last_id) = (r.get(4), r.get(5));
        }
        Ok(vec![acc.report("audit_logs")])
    }
}

/// Prefix of a month's tables between their DETACH and their DROP: only ever tables this module detached.
const ASIDE: &str = "parallax_detached_";

fn aside(name: &str) -> String {
    format!("{ASIDE}{name}")
}

fn original(name: &str) -> &str {
    name.strip_prefix(ASIDE).unwrap_or(name)
}

/// The most rows (by the table's statistics) one counting statement covers: about 12 ms through the status
/// index here for a 333,000-row month, idle; a larger month is counted in slices.
const COUNT_AT_ONCE: u64 = 400_000;

/// The most bytes (tables and indexes) one DROP statement frees, unless a single table or index is larger.
/// Unlinking is the cost: up to about 1 ms a MiB here with 16 writers busy (a 178 MB month's two tables took
/// 189 ms in one statement).
const DROP_AT_ONCE_BYTES: u64 = 32 << 20;

/// What one month's detached tables held when dropped.
#[derive(Default)]
struct Dropped {
    rows: u64,
    lo: Option<i64>,
    hi: Option<i64>,
    events: u64,
    ev_lo: Option<i64>,
    ev_hi: Option<i64>,
}

fn account(exec: &mut Acc, events: &mut Acc, d: &Dropped, name: Option<&str>, ev_name: Option<&str>) {
    exec.rows += d.rows;
    exec.seen(d.lo, d.hi);
    exec.partitions.extend(name.map(str::to_string));
    events.rows += d.events;
    events.seen(d.ev_lo, d.ev_hi);
    events.partitions.extend(ev_name.map(str::to_string));
    tracing::info!(partition = ?name, rows = d.rows, events = d.events, "dropped an expired month");
}

/// A month's detached tables, to be counted and dropped by a lane of [`PostgresBackend::months_away`].
struct Detached {
    /// The tables' names (set aside: [`ASIDE`]); either may be missing in a killed run's leftovers.
    name: Option<String>,
    events: Option<String>,
    /// Their sizes when detached by this run (`None`: a leftover, whose size was not taken).
    bytes: Option<(u64, u64)>,
}

/// A month counted and dropped.
struct Finished {
    job: Detached,
    dropped: Dropped,
}

impl Finished {
    fn month(&self) -> &str {
        let name = self.job.name.as_deref().or(self.job.events.as_deref()).unwrap_or_default();
        &name[name.len().saturating_sub(7)..]
    }
}

impl PostgresBackend {
    /// Steps 0 and 1 of an executions cleanup: a killed run's leftovers and the whole expired months are
    /// detached on `s` (one month at a time) and finished (counted, dropped) on a spare session meanwhile, when
    /// the connection budget has room for one ([`super::budget::Budget::spare`]); once every month is detached,
    /// `s` finishes months too (all of them without a spare). Each month finished goes into `done`, also when
    /// another step fails; the first error is returned after both lanes have stopped. Only one spare: with two,
    /// three lanes and 16 writers on this 2-core machine stretched a month's count to 241 ms (the statement
    /// bound is 200 ms) for a few milliseconds gained.
    async fn months_away(
        &self,
        s: &Session<'_>,
        sel: &Selection,
        done: &std::sync::Mutex<Vec<Finished>>,
        tally: &Tally,
    ) -> Result<()> {
        let leftovers = detached_leftovers(s).await?;
        let months = whole_months(s, sel).await?;
        let jobs = leftovers.len() + months.len();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Detached>();
        for (name, events) in leftovers {
            let _ = tx.send(Detached { name, events, bytes: None });
        }
        // A second lane only when there is a second month to finish.
        let spare = if jobs > 1 { self.spare_session().await } else { None };
        let rx = tokio::sync::Mutex::new(rx);
        let lane = async |ls: Option<&Session<'_>>| -> Result<()> {
            let Some(ls) = ls else { return Ok(()) };
            loop {
                let Some(job) = rx.lock().await.recv().await else { return Ok(()) };
                // On failure the month stays detached: the next run finds it among the leftovers.
                let sizes = job.bytes.map(|(b, eb)| b + eb);
                let dropped = finish_month(ls, job.name.as_deref(), job.events.as_deref(), sizes).await?;
                tally.add("execution_events", dropped.events);
                tally.add("executions", dropped.rows);
                done.lock().unwrap_or_else(|p| p.into_inner()).push(Finished { job, dropped });
            }
        };
        // This session detaches, then finishes months too; the spare lane finishes months from the start.
        let main = async move {
            // A local, so that it is dropped (ending the lanes' queue) however the detaching ends.
            let tx = tx;
            let mut detached = Ok(());
            for m in &months {
                // Not detached (`None`): its rows go in batches.
                match detach_month(s, m, sel).await {
                    Ok(Some(bytes)) => {
                        let (name, events) = (Some(aside(&m.name)), Some(aside(&m.events)));
                        let _ = tx.send(Detached { name, events, bytes: Some(bytes) });
                    }
                    Ok(None) => {}
                    Err(e) => {
                        detached = Err(e);
                        break;
                    }
                }
            }
            drop(tx);
            detached.and(lane(Some(s)).await)
        };
        let (main, spare) = tokio::join!(main, lane(spare.as_ref()));
        main.and(spare)
    }

    /// A session from the budget's spare room ([`super::budget::Budget::spare`]), never waiting: `None` when
    /// there is none or its connection failed (the work it would have done runs on a session already held).
    async fn spare_session(&self) -> Option<Session<'_>> {
        let client = match self.spec.budget.spare()? {
            Raw::Idle(c) => c,
            Raw::New(slot) => match super::connect::connect_raw(&self.spec, slot).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(error = %e, "no spare session for a cleanup lane");
                    return None;
                }
            },
        };
        Some(Session { backend: self, client: Some(client), in_transaction: AtomicBool::new(false) })
    }
}

/// Tables set aside by a run killed between a month's DETACH and its DROP: (executions, events) names by month.
async fn detached_leftovers(s: &Session<'_>) -> Result<Vec<(Option<String>, Option<String>)>> {
    let rows = s
        .rows(
            &format!(
                "SELECT m, max(relname::text) FILTER (WHERE relname::text LIKE '{ASIDE}executions\\_%'), \
                 max(relname::text) FILTER (WHERE relname::text LIKE '{ASIDE}execution\\_events\\_%') \
                 FROM (SELECT relname, right(relname::text, 7) AS m FROM pg_class \
                 WHERE relkind = 'r' AND relnamespace = current_schema()::regnamespace \
                 AND relname ~ '^{ASIDE}(executions|execution_events)_[0-9]{{4}}_[0-9]{{2}}$') t GROUP BY m ORDER BY m"
            ),
            &[],
            "looking for months detached by an interrupted cleanup",
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(1), r.get(2))).collect())
}

/// Counts (exactly: no writer can reach a detached table) and drops a month's detached tables; `bytes`: their
/// size together, when known.
async fn finish_month(
    s: &Session<'_>,
    name: Option<&str>,
    ev_name: Option<&str>,
    bytes: Option<u64>,
) -> Result<Dropped> {
    let mut d = Dropped::default();
    if let Some(t) = name {
        let q = quoted(t);
        let r = s
            .row(
                &format!(
                    "SELECT (SELECT {} FROM {q}), (SELECT {} FROM {q}), (SELECT CASE WHEN reltuples >= 0 \
                     THEN reltuples::int8 ELSE pg_relation_size(oid) / 100 END FROM pg_class WHERE oid = $1::text::regclass)",
                    us("min(started_at)"),
                    us("max(started_at)")
                ),
                &[&q],
                "reading a detached month's time range",
            )
            .await?;
        (d.lo, d.hi) = (r.get(0), r.get(1));
        let estimate = r.get::<_, Option<i64>>(2).unwrap_or(0).max(0) as u64;
        if let (Some(lo), Some(hi)) = (d.lo, d.hi) {
            let slices = estimate.div_ceil(COUNT_AT_ONCE).max(1);
            if slices == 1 {
                // One statement: the planner counts through the smallest index (status, a few MB a month).
                d.rows = s
                    .row(&format!("SELECT count(*) FROM {q}"), &[], "counting a detached month's executions")
                    .await?
                    .get::<_, i64>(0) as u64;
            } else {
                // A large month: a slice of its days at a time through its started_at index, so that no single
                // statement runs long.
                let count = format!(
                    "SELECT count(*) FROM {q} WHERE started_at >= {} AND started_at < {}",
                    ts(1),
                    ts(2)
                );
                let span = ((hi - lo) as u64 / slices + 1) as i64;
                let mut from = lo;
                while from <= hi {
                    let to = from.saturating_add(span);
                    d.rows += s
                        .row(&count, &[&from, &to], "counting a detached month's executions")
                        .await?
                        .get::<_, i64>(0) as u64;
                    from = to;
                }
            }
        }
    }
    if let Some(t) = ev_name {
        let r = s
            .row(
                &format!(
                    "SELECT count(*), {}, {} FROM {}",
                    us("min(recorded_at)"),
                    us("max(recorded_at)"),
                    quoted(t)
                ),
                &[],
                "counting a detached month's events",
            )
            .await?;
        (d.events, d.ev_lo, d.ev_hi) = (r.get::<_, i64>(0) as u64, r.get(1), r.get(2));
    }
    let tables: Vec<&str> = name.into_iter().chain(ev_name).collect();
    // Measured at the DETACH; a killed run's leftovers are measured now.
    let bytes = match bytes {
        Some(b) => b,
        None => s
            .row(
                "SELECT coalesce(sum(pg_total_relation_size(to_regclass(t))), 0)::int8 FROM unnest($1::text[]) t",
                &[&tables.iter().map(|t| quoted(t)).collect::<Vec<_>>()],
                "measuring a detached month",
            )
            .await?
            .get::<_, i64>(0)
            .max(0) as u64,
    };
    if bytes <= DROP_AT_ONCE_BYTES {
        let list: Vec<String> = tables.iter().map(|t| quoted(t)).collect();
        s.batch(&format!("DROP TABLE IF EXISTS {}", list.join(", ")), "dropping a detached month").await?;
    } else {
        for t in tables {
            drop_detached(s, t).await?;
        }
    }
    Ok(d)
}

/// Drops a detached table larger than [`DROP_AT_ONCE_BYTES`]: its indexes first, packed into statements of at
/// most that many bytes each (a large index alone), then the table. A DROP's time grows with the bytes it frees
/// (unlinking is the cost), so no single statement runs long. Only the detached table's own locks are held.
async fn drop_detached(s: &Session<'_>, table: &str) -> Result<()> {
    let indexes: Vec<(String, i64)> = s
        .rows(
            "SELECT i.indexrelid::regclass::text, pg_relation_size(i.indexrelid) FROM pg_index i \
             WHERE i.indrelid = to_regclass($1) \
             AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid) \
             ORDER BY pg_relation_size(i.indexrelid) DESC",
            &[&table],
            "listing a detached month's indexes",
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut statements: Vec<(Vec<String>, u64)> = Vec::new();
    for (name, bytes) in indexes {
        let bytes = bytes.max(0) as u64;
        match statements.last_mut() {
            Some((names, total)) if *total + bytes <= DROP_AT_ONCE_BYTES => {
                names.push(name);
                *total += bytes;
            }
            _ => statements.push((vec![name], bytes)),
        }
    }
    for (names, _) in statements {
        // regclass text: already quoted where needed.
        s.batch(&format!("DROP INDEX IF EXISTS {}", names.join(", ")), "dropping a detached month's indexes")
            .await?;
    }
    s.batch(&format!("DROP TABLE IF EXISTS {}", quoted(table)), "dropping a detached month").await
}

/// DETACH of one expired month's executions and events partitions in one short transaction under
/// `lock_timeout`, retried with backoff; both are renamed aside ([`ASIDE`]) in the same transaction, so a run
/// killed before their DROP leaves them to the next run. `Some((bytes, event bytes))` when detached; `None` when
/// its rows must go in batches instead (locks not granted in [`DROP_ATTEMPTS`] attempts, or an unfinished row
/// that arrived since it was chosen).
async fn detach_month(s: &Session<'_>, m: &Month, sel: &Selection) -> Result<Option<(u64, u64)>> {
    let (q, qe) = (quoted(&m.name), quoted(&m.events));
    let unfinished = format!("SELECT EXISTS (SELECT 1 FROM {q} WHERE status IN ('pending', 'running'))");
    for attempt in 0..DROP_ATTEMPTS {
        let step = s
            .transaction(
                &format!("SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"),
                "detaching an expired month's partitions",
                async |c| {
                    if !c
                        .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&PARTITION_LOCK])
                        .await?
                        .get::<_, bool>(0)
                    {
                        return Ok(Step::Skip("the partition keeper holds the partition lock"));
                    }
                    let attached: bool = c
                        .query_one(
                            "SELECT EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = to_regclass($1) \
                             AND inhparent = 'executions'::regclass) AND EXISTS (SELECT 1 FROM pg_inherits \
                             WHERE inhrelid = to_regclass($2) AND inhparent = 'execution_events'::regclass)",
                            &[&m.name, &m.events],
                        )
                        .await?
                        .get(0);
                    if !attached {
                        return Ok(Step::Skip("gone"));
                    }
                    // Every lock the two DETACHes need (both parents, both months, both default partitions), in
                    // one statement under a statement_timeout: `lock_timeout` bounds each wait separately, so
                    // holding the first lock while waiting for the next would queue writers behind us for
                    // several timeouts. Now a writer waits at most LOCK_TIMEOUT plus the catalog changes below.
                    c.batch_execute(&format!(
                        "SET LOCAL statement_timeout = '{LOCK_TIMEOUT}'; \
                         LOCK TABLE executions, execution_events, {q}, {qe}, executions_default, \
                         execution_events_default IN ACCESS EXCLUSIVE MODE; \
                         SET LOCAL statement_timeout = 0"
                    ))
                    .await?;
                    let sizes = c
                        .query_one(
                            "SELECT pg_total_relation_size($1::text::regclass), \
                             pg_total_relation_size($2::text::regclass)",
                            &[&m.name, &m.events],
                        )
                        .await?;
                    // Executions first, then events: the order writers take them in (an event append locks its
                    // execution's row, then inserts).
                    c.batch_execute(&format!(
                        "ALTER TABLE executions DETACH PARTITION {q}; \
                         ALTER TABLE execution_events DETACH PARTITION {qe}"
                    ))
                    .await?;
                    if !sel.include_unfinished && c.query_one(&unfinished, &[]).await?.get::<_, bool>(0) {
                        return Ok(Step::Skip("unfinished"));
                    }
                    c.batch_execute(&format!(
                        "ALTER TABLE {q} RENAME TO {}; ALTER TABLE {qe} RENAME TO {}",
                        quoted(&aside(&m.name)),
                        quoted(&aside(&m.events))
                    ))
                    .await?;
                    Ok(Step::Done((sizes.get::<_, i64>(0) as u64, sizes.get::<_, i64>(1) as u64)))
                },
            )
            .await?;
        match step {
            Step::Done(d) => return Ok(Some(d)),
            Step::Skip("gone") => return Ok(None),
            Step::Skip("unfinished") => {
                tracing::info!(
                    partition = %m.name,
                    "an unfinished execution arrived in an expired month; deleting it in batches"
                );
                return Ok(None);
            }
            Step::Skip(_) | Step::LockTimeout => {
                tracing::debug!(
                    partition = %m.name,
                    attempt,
                    "partition locks not granted in {LOCK_TIMEOUT}; retrying"
                );
                tokio::time::sleep(when_lock_waits(attempt)).await;
            }
        }
    }
    tracing::warn!(
        partition = %m.name,
        "could not lock executions for {DROP_ATTEMPTS} attempts of {LOCK_TIMEOUT} (busy writers); deleting the \
         month's rows in batches instead"
    );
    Ok(None)
}

/// The runner lock's session: unlocked and closed when dropped.
struct Held(Option<Client>);

/// Runner locks of this process being released (the unlock runs on a spawned task once the lock drops): a run
/// started right after another one in the same process waits for them instead of finding its own previous lock
/// still held.
static RELEASING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// How long `lock_runner` waits for this process's own releases in progress.
const RELEASE_WAIT: Duration = Duration::from_secs(5);

/// When this process's last release ended, in milliseconds since [`release_clock`]'s start (0: none yet). A
/// release whose unlock failed ends by closing its session, which the server notices a moment later: a run
/// that finds the lock held this soon after a release of its own retries for [`RELEASE_GRACE`].
static LAST_RELEASE_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// See [`LAST_RELEASE_MS`].
const RELEASE_GRACE: Duration = Duration::from_secs(1);

fn release_clock() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed().as_millis() as u64 + 1
}

/// Whether one of this process's runner locks is being released, or was released less than [`RELEASE_GRACE`]
/// ago.
fn own_release_in_progress() -> bool {
    let last = LAST_RELEASE_MS.load(Ordering::SeqCst);
    RELEASING.load(Ordering::SeqCst) > 0
        || (last != 0 && release_clock().saturating_sub(last) < RELEASE_GRACE.as_millis() as u64)
}

/// Counts one release in [`RELEASING`] while it lives: moved into the unlock task, it is dropped when the
/// task ends — or when the runtime drops the task without running it (shutdown), so the count never sticks.
struct Releasing;

impl Releasing {
    fn start() -> Releasing {
        RELEASING.fetch_add(1, Ordering::SeqCst);
        Releasing
    }
}

impl Drop for Releasing {
    fn drop(&mut self) {
        LAST_RELEASE_MS.store(release_clock(), Ordering::SeqCst);
        RELEASING.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let Some(client) = self.0.take() else { return };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                let releasing = Releasing::start();
                let _detached = rt.spawn(async move {
                    let _releasing = releasing;
                    if let Err(e) = client.execute("SELECT pg_advisory_unlock($1)", &[&RUNNER_LOCK]).await {
                        tracing::debug!(error = %e, "runner lock: unlock failed; closing its session releases it");
                    }
                    drop(client);
                });
            }
            // Closing the session releases its advisory locks.
            Err(_) => drop(client),
        }
    }
}

fn run_from_row(r: &Row) -> Result<Run> {
    let trigger: String = r.get(1);
    let status: String = r.get(5);
    let rows: String = r.get(6);
    Ok(Run {
        id: r.get::<_, Uuid>(0).to_string(),
        trigger: Trigger::parse(&trigger)
            .ok_or_else(|| Error::internal(format!("retention_runs: unknown trigger {trigger:?}")))?,
        tick: r.get(2),
        started_at: r.get(3),
        finished_at: r.get(4),
        status: RunStatus::parse(&status)
            .ok_or_else(|| Error::internal(format!("retention_runs: unknown status {status:?}")))?,
        rows: Run::rows_from_json(&rows),
        error: r.get(7),
        archive: r.get::<_, Option<String>>(8).as_deref().and_then(ArchiveState::from_json),
    })
}

impl Store for PostgresBackend {
    fn storage_config(&self) -> &StorageConfig {
        &self.cfg
    }

    async fn nth_newest_execution(&self, n: u64) -> Result<Option<Key>> {
        let s = self.session().await?;
        let offset = n.saturating_sub(1).min(i64::MAX as u64) as i64;
        let rows = s
            .rows(
                &format!(
                    "SELECT {}, id::text FROM executions ORDER BY started_at DESC, id DESC LIMIT 1 OFFSET $1",
                    us("started_at")
                ),
                &[&offset],
                "finding the newest executions to keep",
            )
            .await?;
        Ok(rows.first().map(|r| (r.get(0), r.get(1))))
    }

    async fn plan_cleanup(&self, sel: Selection) -> Result<Plan> {
        match sel.target {
            CleanupTarget::Executions => self.plan_executions(&sel).await,
            CleanupTarget::AuditLogs => self.plan_audit(&sel).await,
        }
    }

    async fn precheck(&self, sel: Selection) -> Result<Precheck> {
        // Index probes only (EXISTS, and a count of the few unfinished rows through the status index): no
        // count of the rows that go.
        let s = self.session().await?;
        let id = limit_id(&sel)?;
        let (table, key) = match sel.target {
            CleanupTarget::Executions => ("executions", "(started_at, id)"),
            CleanupTarget::AuditLogs => ("audit_logs", "(timestamp, id)"),
        };
        let going = match sel.target {
            CleanupTarget::Executions => selected(&sel),
            CleanupTarget::AuditLogs => format!("{key} < ({}, $2)", ts(1)),
        };
        let unfinished = matches!(sel.target, CleanupTarget::Executions) && !sel.include_unfinished;
        let r = s
            .row(
                &format!(
                    "SELECT EXISTS (SELECT 1 FROM {table} WHERE {going}), \
                     EXISTS (SELECT 1 FROM {table} WHERE {key} >= ({t}, $2)), \
                     CASE WHEN $3 THEN (SELECT count(*) FROM executions WHERE status IN ('pending', 'running') \
                     AND (started_at, id) < ({t}, $2)) ELSE 0 END",
                    t = ts(1)
                ),
                &[&sel.before.0, &id, &unfinished],
                "checking what the cleanup selects",
            )
            .await?;
        let unfinished_kept = r.get::<_, i64>(2) as u64;
        Ok(Precheck {
            selects_any: r.get(0),
            keeps_any: r.get::<_, bool>(1) || unfinished_kept > 0,
            unfinished_kept,
        })
    }

    async fn cleanup(&self, sel: Selection, tally: Tally) -> Result<Vec<TableReport>> {
        // Reads through this object must not see the removed rows on a replica (also after a failure or a dropped
        // call: the batches before it committed).
        let _counted = self.counts_as_write();
        match sel.target {
            CleanupTarget::Executions => self.cleanup_executions(&sel, &tally).await,
            CleanupTarget::AuditLogs => self.cleanup_audit(&sel, &tally).await,
        }
    }

    async fn lock_runner(&self) -> Result<Option<RunnerLock>> {
        // A dedicated session, never a pooled one: the lock must be released on the session that took it.
        let slot = self.spec.budget.for_new(Some(&self.pool)).await?;
        let client = super::connect::connect_raw(&self.spec, slot).await?;
        // The session sits idle while the run works on other connections: a server-side idle_session_timeout
        // must not end it (and with it the lock). Best effort: the setting exists from PostgreSQL 14 on.
        let _ = client.batch_execute("SET idle_session_timeout = 0").await;
        let waited = std::time::Instant::now();
        let got = loop {
            let got: bool = match client.query_one("SELECT pg_try_advisory_lock($1)", &[&RUNNER_LOCK]).await {
                Ok(r) => r.get(0),
                Err(e) => {
                    return Err(Error::unavailable(format!(
                        "taking the retention runner lock on PostgreSQL at {}: {}",
                        self.spec.location,
                        self.spec.redact(&e.to_string())
                    )))
                }
            };
            // Held by another instance: skip. Held by this process's previous run, still being released (or
            // its session still closing): wait for that (a few milliseconds).
            if got || !own_release_in_progress() || waited.elapsed() > RELEASE_WAIT {
                break got;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        Ok(got.then(|| RunnerLock(Box::new(Held(Some(client))))))
    }

    async fn save_run(&self, run: Run) -> Result<()> {
        let s = self.session().await?;
        let id = Uuid::parse_str(&run.id)
            .map_err(|_| Error::invalid(format!("run id {:?} is not a UUID", run.id)))?;
        let sql = format!(
            "INSERT INTO retention_runs (id, trigger, tick, started_at, finished_at, status, rows, error, archive) \
             VALUES ($1, $2, {tick}, {started}, {finished}, $6, $7::text::jsonb, $8, $9::text::jsonb) \
             ON CONFLICT (id) DO UPDATE SET trigger = EXCLUDED.trigger, tick = EXCLUDED.tick, \
             started_at = EXCLUDED.started_at, finished_at = EXCLUDED.finished_at, status = EXCLUDED.status, \
             rows = EXCLUDED.rows, error = EXCLUDED.error, archive = EXCLUDED.archive",
            tick = ts(3),
            started = ts(4),
            finished = ts(5)
        );
        let rows = run.rows_json();
        let archive = run.archive.as_ref().map(ArchiveState::to_json);
        let result = s
            .client()
            .execute(
                &sql,
                &[
                    &id,
                    &run.trigger.as_str(),
                    &run.tick,
                    &run.started_at,
                    &run.finished_at,
                    &run.status.as_str(),
                    &rows,
                    &run.error,
                    &archive,
                ],
            )
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => Err(Error::conflict(format!(
                "the retention tick {} already has a recorded run",
                run.tick.map_or_else(|| "(none)".to_string(), time::rfc3339)
            ))),
            Err(e) => Err(s.fail(e, "recording a retention run")),
        }
    }

    async fn runs(&self, limit: usize) -> Result<Vec<Run>> {
        let s = self.session().await?;
        let rows = s
            .rows(
                &format!(
                    "SELECT id, trigger, {}, {}, {}, status, rows::text, error, archive::text FROM retention_runs \
                     ORDER BY started_at DESC, id DESC LIMIT $1",
                    us("tick"),
                    us("started_at"),
                    us("finished_at")
                ),
                &[&(limit.min(i64::MAX as usize) as i64)],
                "reading the recorded retention runs",
            )
            .await?;
        rows.iter().map(run_from_row).collect()
    }

    async fn last_tick(&self) -> Result<Option<i64>> {
        let s = self.session().await?;
        let r = s
            .row(
                &format!("SELECT {} FROM retention_runs", us("max(tick)")),
                &[],
                "reading the last retention tick",
            )
            .await?;
        Ok(r.get(0))
    }
}
