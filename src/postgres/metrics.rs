//! What this backend reports for metrics ([`crate::metrics::Source`]): pool state, table stats, disk space.
//!
//! - Pool: bb8's own counters (`connections`, `idle_connections`) for active and idle query connections, and the
//!   connection budget's count of callers waiting for a connection (`budget.rs`: callers inside the pool's `get`
//!   and audit `COPY`, cleanup and migration connects waiting for a permit). No query, no connection.
//! - Tables: one catalog query ([`TABLE_STATS_SQL`]) on a pooled connection, run by the background refresher every
//!   `storage.metrics.statsInterval`. A partitioned table (`executions`, `execution_events`) is summed over its
//!   leaf partitions.
//! - Disk: `None`. A client cannot see the server's filesystem; `pg_database_size` is not free space, and the
//!   server's own node_exporter reports its disk.

use diesel::{
    sql_query,
    sql_types::{Array, BigInt, Text},
    QueryableByName,
};
use diesel_async::{AsyncConnection, RunQueryDsl, SimpleAsyncConnection};

use super::PostgresBackend;
use crate::{
    error::{Error, Result},
    metrics::{HostMetrics, Metrics, PoolState, RoutingMetrics, Source, TableStat, TABLES},
};

/// Rows and bytes of each named table: a partitioned table's leaf partitions summed (`pg_partition_tree`), a
/// plain table by itself. Rows: `n_live_tup` from the statistics system (current once a writing transaction's counts are
/// flushed, within about a second), or the planner's `reltuples` for a leaf the statistics know nothing about
/// (no row counted since the statistics were reset or lost in a crash, while `ANALYZE` or `VACUUM` left an
/// estimate). Bytes: `pg_total_relation_size` (heap, TOAST and indexes). A table missing from the schema
/// yields no row. The per-leaf statistics functions are called directly, not through `pg_stat_user_tables`,
/// which would read every table of the database.
const TABLE_STATS_SQL: &str = "\
SELECT t.name AS name,
       coalesce(sum(CASE
           WHEN pg_stat_get_live_tuples(p.relid) = 0
                AND pg_stat_get_tuples_inserted(p.relid) = 0
                AND pg_stat_get_tuples_updated(p.relid) = 0
                AND pg_stat_get_tuples_deleted(p.relid) = 0
           THEN greatest(c.reltuples, 0)::bigint
           ELSE pg_stat_get_live_tuples(p.relid)
       END), 0)::bigint AS rows,
       coalesce(sum(pg_total_relation_size(p.relid)), 0)::bigint AS size_bytes
FROM unnest($1::text[]) AS t(name)
JOIN pg_class top ON top.oid = to_regclass(t.name)
CROSS JOIN LATERAL (
    SELECT tree.relid FROM pg_partition_tree(top.oid) AS tree WHERE tree.isleaf AND top.relkind = 'p'
    UNION ALL
    SELECT top.oid WHERE top.relkind <> 'p'
) AS p(relid)
JOIN pg_class c ON c.oid = p.relid
GROUP BY t.name";

/// How long the stats query waits for a table lock. `pg_partition_tree` and `pg_total_relation_size` take
/// `ACCESS SHARE` on every leaf, so a partition held `ACCESS EXCLUSIVE` (a cleanup's `DETACH`/`DROP`, a migration,
/// an operator's `LOCK TABLE`) would hold the refresher and its pooled connection; it gives up instead (and the
/// statement as a whole gives up after 30 s).
const STATS_LOCK_WAIT: &str = "1s";

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = BigInt)]
    rows: i64,
    #[diesel(sql_type = BigInt)]
    size_bytes: i64,
}

impl Source for PostgresBackend {
    fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The query pools (audit `COPY` clients and cleanup sessions are not in them, though they share the
    /// primary's `maxConnections`), summed over the primary and every read replica's pool; `waiting` also counts
    /// connects of those kinds waiting for a slot.
    fn pool_state(&self) -> PoolState {
        let mut out = PoolState { waiting: self.spec.budget.waiting(), ..PoolState::default() };
        let replicas = self.replicas.list.iter().filter_map(|r| r.pool.as_ref().map(|p| (p, &r.spec)));
        for (pool, spec) in std::iter::once((&self.pool, &self.spec)).chain(replicas) {
            let state = pool.state();
            let idle = u64::from(state.idle_connections);
            out.active += u64::from(state.connections).saturating_sub(idle);
            out.idle += idle;
            if !std::ptr::eq(spec, &self.spec) {
                out.waiting += spec.budget.waiting();
            }
        }
        out
    }

    /// The router's counters and each replica's last probed state: no query. `None` without replicas.
    fn routing(&self) -> Option<RoutingMetrics> {
        use super::replicas::State;
        let r = &self.replicas;
        if r.list.is_empty() {
            return None;
        }
        let max_lag = Some(r.max_lag.as_secs_f64());
        let mut hosts = vec![HostMetrics {
            host: r.primary_host.clone(),
            role: "primary",
            reads: r.primary_read_count(),
            up: None,
            lag_seconds: None,
            max_lag_seconds: None,
        }];
        for x in &r.list {
            let state = x.health.state();
            // Up = receives reads (a lagging replica is 0 and keeps its lag gauge). Not probed at all with
            // readPreference primary: no sample then.
            let reachable = matches!(state, State::Up | State::Lagging);
            hosts.push(HostMetrics {
                host: x.host.clone(),
                role: "replica",
                reads: x.health.read_count(),
                up: r.tracking().then_some(state == State::Up),
                lag_seconds: if reachable { x.health.lag_ms().map(|ms| ms as f64 / 1000.0) } else { None },
                max_lag_seconds: max_lag,
            });
        }
        Some(RoutingMetrics { hosts, fallbacks: r.fallbacks() })
    }

    async fn table_stats(&self) -> Result<Vec<TableStat>> {
        let names: Vec<&str> = TABLES.to_vec();
        let rows: Vec<Row> = self
            .with_conn(async |conn| {
                conn.transaction::<_, Error, _>(async |conn| {
                    let limits = format!(
                        "SET LOCAL lock_timeout = '{STATS_LOCK_WAIT}'; SET LOCAL statement_timeout = '30s'"
                    );
                    conn.batch_execute(&limits).await?;
                    Ok(sql_query(TABLE_STATS_SQL).bind::<Array<Text>, _>(&names).load(conn).await?)
                })
                .await
            })
            .await
            .map_err(|e| {
                Error::new(
                    e.kind(),
                    format!(
                        "table rows and sizes for metrics not refreshed (the previous figures stay; a table \
                         locked for more than {STATS_LOCK_WAIT}, e.g. by a cleanup dropping a partition, is \
                         retried at the next refresh): {}",
                        e.0.message
                    ),
                )
            })?;
        // In the order of TABLES, with the static names the registry labels with.
        Ok(TABLES
            .iter()
            .filter_map(|&table| {
                rows.iter().find(|r| r.name == table).map(|r| TableStat {
                    table,
                    rows: r.rows.max(0) as u64,
                    size_bytes: r.size_bytes.max(0) as u64,
                })
            })
            .collect())
    }

    /// The server's disk is not visible to a client: not exported rather than a wrong number.
    fn disk_free_bytes(&self) -> Option<u64> {
        None
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::Arc,
        time::{Duration, Instant},
    };

    use parallax_storage_abi::{ErrorKind, OpenOptions};
    use serde_json::json;

    use super::*;
    use crate::postgres::test_pg;

    /// A backend on a fresh database with `pool` as `storage.postgresql.pool`, and a plain client on it.
    async fn backend(pool: serde_json::Value) -> (Arc<PostgresBackend>, tokio_postgres::Client) {
        let server = test_pg::server();
        let db = server.fresh_database().await;
        let mut cfg = server.storage_config(&db);
        cfg["postgresql"]["pool"] = pool;
        let cfg = crate::config::parse(&cfg.to_string()).unwrap();
        let b = PostgresBackend::open(cfg, OpenOptions::default()).await.unwrap();
        (Arc::new(b), server.client(&db).await)
    }

    /// Polls `f` every 20 ms until it holds; fails after 10 s naming `what` and the last state seen.
    async fn until<T: std::fmt::Debug>(
        what: &str,
        mut read: impl FnMut() -> T,
        ok: impl Fn(&T) -> bool,
    ) -> T {
        let started = Instant::now();
        loop {
            let seen = read();
            if ok(&seen) {
                return seen;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "{what}: still {seen:?} after 10 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn callers_held_by_a_full_pool_are_counted_as_waiting_until_served() {
        let (b, _c) =
            backend(json!({ "minConnections": 0, "maxConnections": 2, "acquireTimeout": 10_000 })).await;
        let held = [b.conn().await.unwrap(), b.conn().await.unwrap()];
        assert_eq!(b.pool_state(), PoolState { active: 2, idle: 0, waiting: 0 });

        // Six queries wait inside the pool's `get`, and a cleanup session for a slot of the budget.
        let mut queries = Vec::new();
        for _ in 0..6 {
            let b = b.clone();
            queries.push(tokio::spawn(async move { b.conn().await.map(drop) }));
        }
        let session = {
            let b = b.clone();
            tokio::spawn(async move { b.session().await.map(drop) })
        };
        let seen = until("7 callers waiting", || b.pool_state(), |s| s.waiting == 7).await;
        assert_eq!((seen.active, seen.idle), (2, 0), "{seen:?}");

        drop(held);
        for q in queries {
            tokio::time::timeout(Duration::from_secs(20), q)
                .await
                .expect("a query still waits")
                .unwrap()
                .unwrap();
        }
        tokio::time::timeout(Duration::from_secs(20), session)
            .await
            .expect("the session still waits")
            .unwrap()
            .unwrap();
        let seen =
            until("no caller waiting, none active", || b.pool_state(), |s| s.waiting == 0 && s.active == 0)
                .await;
        assert!(seen.idle <= 2, "{seen:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_caller_that_gives_up_stops_counting_as_waiting() {
        let (b, _c) =
            backend(json!({ "minConnections": 0, "maxConnections": 1, "acquireTimeout": 200 })).await;
        let held = b.conn().await.unwrap();
        let err = b.conn().await.map(drop).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
        let err = b.session().await.map(drop).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
        assert_eq!(b.pool_state(), PoolState { active: 1, idle: 0, waiting: 0 });
        drop(held);
        b.conn().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn table_stats_give_up_on_a_locked_partition_instead_of_holding_a_connection() {
        let (b, mut c) = backend(json!({ "minConnections": 0, "maxConnections": 2 })).await;
        let tx = c.transaction().await.unwrap();
        tx.batch_execute("LOCK TABLE executions_default IN ACCESS EXCLUSIVE MODE").await.unwrap();
        let err = tokio::time::timeout(Duration::from_secs(20), b.table_stats())
            .await
            .expect("the stats query waited for the lock")
            .unwrap_err();
        assert!(err.0.message.contains("not refreshed") && err.0.message.contains("lock"), "{err}");
        assert_eq!(b.pool_state().active, 0, "the connection went back to the pool");
        tx.rollback().await.unwrap();
        assert_eq!(b.table_stats().await.unwrap().len(), TABLES.len());
    }

    /// Row counts of the four tables, as `table_stats` reports them.
    async fn rows(b: &PostgresBackend) -> Vec<(&'static str, u64)> {
        b.table_stats().await.unwrap().into_iter().map(|s| (s.table, s.rows)).collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn table_stats_sum_partitions_and_follow_writes() {
        let (b, c) = backend(json!({})).await;
        assert_eq!(b.disk_free_bytes(), None);
        let empty = b.table_stats().await.unwrap();
        assert_eq!(empty.iter().map(|s| s.table).collect::<Vec<_>>(), TABLES, "{empty:?}");
        assert!(empty.iter().all(|s| s.rows == 0 && s.size_bytes > 0), "{empty:?}");

        // Executions in this month, next month and 2001 (the default partition), with their events.
        c.batch_execute(
            "INSERT INTO patterns (id, name, version, definition, created_at) \
               SELECT gen_random_uuid(), 'p' || i, '1.0.0', '{}', now() FROM generate_series(1, 3) i;
             INSERT INTO executions (id, pattern_name, pattern_version, status, started_at, tags) \
               SELECT gen_random_uuid(), 'p1', '1.0.0', 'running', at, '[]' \
               FROM generate_series(1, 5), unnest(ARRAY[now(), now() + interval '1 month', \
                 timestamptz '2001-02-03 04:05:06+00']) AS at;
             INSERT INTO execution_events (id, execution_id, seq, kind, payload, recorded_at, execution_started_at) \
               SELECT gen_random_uuid(), e.id, s, 'step_result', '{}', e.started_at, e.started_at \
               FROM executions e, generate_series(1, 4) s;
             INSERT INTO audit_logs (id, timestamp, action) \
               SELECT gen_random_uuid(), now(), 'a' FROM generate_series(1, 7);
             SELECT pg_stat_force_next_flush();",
        )
        .await
        .unwrap();
        let want = vec![("patterns", 3), ("executions", 15), ("execution_events", 60), ("audit_logs", 7)];
        // The statistics see a transaction's rows once its session flushes them: at most once a second, so a
        // session that flushed less than a second ago waits until it is idle for 10 s, unless told to flush
        // (PostgreSQL 15).
        let mut seen = Vec::new();
        let started = Instant::now();
        while seen != want {
            assert!(started.elapsed() < Duration::from_secs(15), "rows still {seen:?}, want {want:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
            seen = rows(&b).await;
        }
        let grown = b.table_stats().await.unwrap();
        for (before, after) in empty.iter().zip(&grown) {
            assert!(after.size_bytes > before.size_bytes, "{before:?} → {after:?}");
        }
        // Bytes are every leaf's heap, TOAST and indexes.
        let leaves: i64 = c
            .query_one(
                "SELECT sum(pg_total_relation_size(relid))::bigint FROM pg_partition_tree('executions') \
                 WHERE isleaf",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(grown[1].size_bytes, leaves as u64);

        // A delete is seen too.
        let deleted = tokio_postgres::Client::execute(
            &c,
            "DELETE FROM audit_logs WHERE id = (SELECT id FROM audit_logs LIMIT 1)",
            &[],
        )
        .await
        .unwrap();
        assert_eq!(deleted, 1);
        c.batch_execute("SELECT pg_stat_force_next_flush()").await.unwrap();
        let started = Instant::now();
        let want = vec![("patterns", 3), ("executions", 15), ("execution_events", 60), ("audit_logs", 6)];
        while seen != want {
            assert!(started.elapsed() < Duration::from_secs(15), "rows still {seen:?}, want {want:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
            seen = rows(&b).await;
        }

        // Statistics lost (reset): the planner's estimates (exact here, after ANALYZE) stand in.
        c.batch_execute("ANALYZE").await.unwrap();
        c.query_one("SELECT pg_stat_reset()", &[]).await.unwrap();
        let live: i64 = c
            .query_one("SELECT coalesce(sum(n_live_tup), 0)::bigint FROM pg_stat_user_tables", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(live, 0, "the statistics were reset");
        assert_eq!(rows(&b).await, want);
    }
}
