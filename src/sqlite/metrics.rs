//! What this backend reports for metrics ([`crate::metrics::Source`]): pool state, table stats, disk space.
//!
//! The "pool" of SQLite is the read pool plus the writer: `active` counts read connections checked out and the
//! writer while it runs a group, `idle` the open read connections nobody uses and the writer while it waits
//! for work, `waiting` the reads waiting for a connection and the writes queued behind the writer.

use std::time::{Duration, Instant};

use diesel::{
    sql_query,
    sql_types::{BigInt, Text},
    QueryableByName, RunQueryDsl, SqliteConnection,
};

use super::SqliteBackend;
use crate::{
    error::{sqlite_error, Result},
    metrics::{Metrics, PoolState, Source, TableStat, TABLES},
};

#[derive(QueryableByName)]
struct Stat {
    #[diesel(sql_type = Text)]
    tbl: String,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Rows per table: exact counts (SQLite counts a table by walking its smallest index). With 1,000,000
/// executions, 2,000,000 events and 200,000 audit entries (a 1.3 GB file) the four counts take about 0.2 s.
const ROWS: &str = "SELECT 'patterns' AS tbl, count(*) AS n FROM patterns \
    UNION ALL SELECT 'executions', count(*) FROM executions \
    UNION ALL SELECT 'execution_events', count(*) FROM execution_events \
    UNION ALL SELECT 'audit_logs', count(*) FROM audit_logs";

/// Bytes per table, its indexes included: the pages of every b-tree of the table (`dbstat`, compiled into the
/// bundled SQLite), summed by the table the b-tree belongs to. It reads every page of those tables: about
/// 1.4 s for the 1.3 GB file above, hence [`BUDGET`].
const SIZES: &str = "SELECT s.tbl_name AS tbl, sum(d.pgsize) AS n FROM dbstat AS d \
    JOIN sqlite_schema AS s ON s.name = d.name \
    WHERE d.aggregate = 1 AND s.tbl_name IN ('patterns', 'executions', 'execution_events', 'audit_logs') \
    GROUP BY s.tbl_name";

/// A measurement (the counts, or the sizes) is repeated once it is older than this many times what it took,
/// so the refresher spends at most about 1/`BUDGET` of one core on it whatever `statsInterval` says: on a
/// small database both run at every refresh; on the file above the counts every 10 s and the sizes every
/// 70 s (the refresher's `statsInterval` permitting).
const BUDGET: u32 = 50;

/// The last measurements of [`Source::table_stats`] (only the background refresher measures).
#[derive(Default)]
pub(super) struct StatsCache {
    rows: Option<Measured>,
    sizes: Option<Measured>,
}

#[derive(Clone, Copy)]
struct Measured {
    /// Per table, in the order of [`TABLES`].
    values: [u64; 4],
    /// Rows when the sizes were measured (for the rows themselves: the same values).
    rows: [u64; 4],
    at: Instant,
    took: Duration,
}

impl Measured {
    fn due(m: &Option<Measured>) -> bool {
        m.is_none_or(|m| m.at.elapsed() >= m.took * BUDGET)
    }
}

fn per_table(stats: &[Stat]) -> [u64; 4] {
    std::array::from_fn(|t| stats.iter().find(|s| s.tbl == TABLES[t]).map_or(0, |s| s.n.max(0) as u64))
}

/// Runs `sql` if `due`, timing it.
fn measure(conn: &mut SqliteConnection, due: bool, sql: &str) -> Result<Option<([u64; 4], Duration)>> {
    if !due {
        return Ok(None);
    }
    let started = Instant::now();
    let stats: Vec<Stat> = sql_query(sql).load(conn).map_err(sqlite_error)?;
    Ok(Some((per_table(&stats), started.elapsed())))
}

impl Source for SqliteBackend {
    fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn pool_state(&self) -> PoolState {
        let writer = self.writer.load();
        let readers = &self.read_gauges;
        PoolState {
            active: readers.active() + u64::from(writer.running),
            idle: readers.idle() + u64::from(!writer.running),
            waiting: readers.waiting.get() + writer.queued,
        }
    }

    /// Exact row counts and `dbstat` sizes, each repeated within [`BUDGET`]; between two measurements of the
    /// sizes, a table's size follows its rows (scaled by the rows now over the rows when it was measured).
    async fn table_stats(&self) -> Result<Vec<TableStat>> {
        let (rows_due, sizes_due) = {
            let cache = self.stats.lock().unwrap_or_else(|p| p.into_inner());
            (Measured::due(&cache.rows), Measured::due(&cache.sizes))
        };
        let (rows, sizes) = self
            .read(move |conn| Ok((measure(conn, rows_due, ROWS)?, measure(conn, sizes_due, SIZES)?)))
            .await?;
        let mut cache = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if let Some((values, took)) = rows {
            cache.rows = Some(Measured { values, rows: values, at: now, took });
        }
        let rows = cache.rows.map_or([0; 4], |m| m.values);
        if let Some((values, took)) = sizes {
            cache.sizes = Some(Measured { values, rows, at: now, took });
        }
        let sizes = cache.sizes.map_or([0; 4], |m| m.values);
        let then = cache.sizes.map_or([0; 4], |m| m.rows);
        Ok((0..TABLES.len())
            .map(|t| {
                let size_bytes = match then[t] {
                    0 => sizes[t],
                    then => (sizes[t] as u128 * rows[t] as u128 / then as u128) as u64,
                };
                TableStat { table: TABLES[t], rows: rows[t], size_bytes }
            })
            .collect())
    }

    fn disk_free_bytes(&self) -> Option<u64> {
        self.disk.get()
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::Arc,
        time::{Duration, Instant},
    };

    use abi_stable::std_types::ROption::{RNone, RSome};
    use parallax_storage_abi::{ErrorKind, NewAuditEntry, OpenOptions};

    use super::*;
    use crate::contract::Contract;

    async fn open(dir: &tempfile::TempDir, sqlite: serde_json::Value) -> Arc<SqliteBackend> {
        let mut sqlite = sqlite;
        sqlite["path"] = dir.path().join("m.db").to_str().unwrap().into();
        let json = serde_json::json!({ "type": "sqlite", "sqlite": sqlite });
        let cfg = crate::config::parse(&json.to_string()).unwrap();
        Arc::new(SqliteBackend::open(cfg, OpenOptions::default()).await.unwrap())
    }

    fn entry(n: u32) -> NewAuditEntry {
        NewAuditEntry {
            id: RSome(format!("0190b3f2-7c1e-7a00-8000-{n:012}").into()),
            timestamp: RSome(1_705_276_800_000_000 + i64::from(n)),
            action: "login".into(),
            actor: RSome("metrics".into()),
            resource_type: RNone,
            resource_id: RNone,
            details: RNone,
            ip_address: RNone,
            user_agent: RNone,
        }
    }

    /// Polls `f` until it holds (at most 20 s), naming `what` and the last pool state on failure.
    async fn until(s: &SqliteBackend, what: &str, f: impl Fn(PoolState) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let state = s.pool_state();
            if f(state) {
                return;
            }
            assert!(Instant::now() < deadline, "{what}: the pool state stayed {state:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The writer counts as one connection: idle at rest, active while a group waits for the write lock another
    /// program holds, and the writes submitted meanwhile wait for it until it takes them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_queued_behind_a_held_write_lock_are_waiting_requests() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(&dir, serde_json::json!({ "busyTimeout": 60_000 })).await;
        let rest = s.pool_state();
        assert_eq!((rest.active, rest.waiting), (0, 0), "{rest:?}");
        assert!(rest.idle >= 2, "the writer and the pool's first read connection are idle: {rest:?}");

        let holder = rusqlite::Connection::open(dir.path().join("m.db")).unwrap();
        holder.execute_batch("BEGIN IMMEDIATE").unwrap();
        let first = tokio::spawn({
            let s = s.clone();
            async move { s.append_audit(vec![entry(0)]).await }
        });
        until(&s, "the writer starts its group and waits for the lock", |p| p.active == 1).await;
        let queued: Vec<_> = (1..8)
            .map(|n| {
                let s = s.clone();
                tokio::spawn(async move { s.append_audit(vec![entry(n)]).await })
            })
            .collect();
        until(&s, "seven writes wait behind the held writer", |p| p.waiting == 7 && p.active == 1).await;

        holder.execute_batch("COMMIT").unwrap();
        first.await.unwrap().unwrap();
        for w in queued {
            w.await.unwrap().unwrap();
        }
        until(&s, "everything answered, the writer idle again", |p| p.active == 0 && p.waiting == 0).await;
        s.shutdown().await.unwrap();
    }

    /// Reads waiting for the only read connection are waiting requests; one that gives up after the pool's
    /// timeout fails as a timeout and is counted in `parallax_storage_pool_acquire_timeouts_total`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_waiting_for_a_connection_are_counted_and_a_timeout_fails_as_one() {
        let dir = tempfile::tempdir().unwrap();
        // busyTimeout 0: the pool waits its floor of one second for a connection.
        let s = open(&dir, serde_json::json!({ "readPoolSize": 1, "busyTimeout": 0 })).await;
        let slow = tokio::spawn({
            let s = s.clone();
            async move {
                s.read(|_| {
                    std::thread::sleep(Duration::from_millis(2500));
                    Ok(())
                })
                .await
            }
        });
        until(&s, "the slow read holds the only connection", |p| p.active == 1).await;
        let waiting = tokio::spawn({
            let s = s.clone();
            async move { s.read(|_| Ok(())).await }
        });
        until(&s, "the second read waits for the connection", |p| p.waiting == 1).await;
        let err = waiting.await.unwrap().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
        assert_eq!(s.pool_state().waiting, 0);
        let text = crate::metrics::render(&*s).await.unwrap();
        assert!(text.lines().any(|l| l == "parallax_storage_pool_acquire_timeouts_total 1"), "{text}");
        slow.await.unwrap().unwrap();
        until(&s, "the connection is back", |p| p.active == 0 && p.idle >= 2).await;
        s.shutdown().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn table_stats_count_rows_and_bytes_per_table() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(&dir, serde_json::json!({})).await;
        let before = s.table_stats().await.unwrap();
        assert_eq!(before.iter().map(|t| t.table).collect::<Vec<_>>(), TABLES);
        assert!(before.iter().all(|t| t.rows == 0), "{before:?}");
        let audit_before = before[3].size_bytes;
        assert!(audit_before > 0, "an empty table and its indexes take pages: {before:?}");

        s.append_audit((0..2000).map(entry).collect()).await.unwrap();
        // Each measurement is repeated once older than `BUDGET` times what it took (milliseconds here).
        let deadline = Instant::now() + Duration::from_secs(20);
        let after = loop {
            let after = s.table_stats().await.unwrap();
            if after[3].rows == 2000 && after[3].size_bytes > audit_before + 2000 * 50 {
                break after;
            }
            assert!(Instant::now() < deadline, "the audit table's stats did not move: {after:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(&after[..3], &before[..3], "the other tables did not move");
        s.shutdown().await.unwrap();
    }

    /// Between two measurements of the sizes (here: one that "took an hour", so not due again), a table's size
    /// follows its rows; the rows are counted again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sizes_between_two_measurements_follow_the_rows() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(&dir, serde_json::json!({})).await;
        s.append_audit((0..1000).map(entry).collect()).await.unwrap();
        let measured = s.table_stats().await.unwrap()[3].clone();
        assert_eq!(measured.rows, 1000);
        {
            let mut cache = s.stats.lock().unwrap();
            cache.sizes.as_mut().unwrap().took = Duration::from_secs(3600);
            cache.rows.as_mut().unwrap().took = Duration::ZERO; // due at once
        }

        s.append_audit((1000..3000).map(entry).collect()).await.unwrap();
        let now = s.table_stats().await.unwrap()[3].clone();
        assert_eq!(now.rows, 3000);
        assert_eq!(now.size_bytes, measured.size_bytes * 3, "scaled by the rows: {measured:?} -> {now:?}");
        s.shutdown().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn disk_free_bytes_is_the_free_space_of_the_database_directory() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(&dir, serde_json::json!({})).await;
        let free = s.disk_free_bytes().expect("statvfs of the database directory");
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        let c = std::ffi::CString::new(dir.path().to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path and a writable statvfs.
        assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
        #[allow(clippy::unnecessary_cast)]
        let size = st.f_blocks as u64 * st.f_frsize as u64;
        assert!(free > 0 && free <= size, "free {free} of {size}");
        s.shutdown().await.unwrap();
    }
}
