//! Metrics (issue 14): what recording costs the hot path, and what a scrape costs with a large history.
//!
//! - `pg_lifecycle_metrics` / `sqlite_writes_metrics`: the `pg_lifecycle` and `sqlite_writes` workloads through
//!   two storage objects in the same run, one with metrics on (the default) and one with
//!   `storage.metrics.enabled: false`; ours = on, baseline = off, target on/off ≥ 0.97. The two alternate in
//!   an ABBA order (on, off, off, on, …) so drift (the table growing, the machine's load) hits both alike.
//! - `pg_metrics_scrape` / `sqlite_metrics_scrape`: `metrics_text()` 200 times after the first refresh, with
//!   N executions loaded (1,000,000, or `PARALLAX_BENCH_METRICS_ROWS`), target p99 ≤ 50 ms. The baseline is
//!   the statistics queried at scrape time by a raw client (what a scrape that asked the database would
//!   cost): PostgreSQL `reltuples` and `pg_total_relation_size` of the four tables over their partitions from
//!   the catalog; SQLite `count(*)` of the four tables and `page_count × page_size`. Ours reads cached values.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use parallax_storage_host::*;
use serde_json::json;

use crate::{
    load, pg, pg_writes, sqlite_writes,
    util::{self, Latencies, Opts},
};

const SCRAPES: usize = 200;
const TABLES: [&str; 4] = ["patterns", "executions", "execution_events", "audit_logs"];

fn metrics_off(mut config: serde_json::Value) -> serde_json::Value {
    config["metrics"] = json!({ "enabled": false });
    config
}

fn open(config: &serde_json::Value, what: &str) -> Storage {
    util::plugin().open(config).unwrap_or_else(|e| util::fail(&format!("open {what}: {e}")))
}

/// `pg_lifecycle` (create + complete, 16 callers, pool 16) with metrics on vs off.
pub async fn pg_lifecycle(opts: &Opts) {
    let ops = opts.n(16_000, 800);
    let rounds = 8;
    let server = pg::server();
    let db = server.fresh_database().await;
    let mut config = server.storage_config(&db);
    config["postgresql"]["pool"] = json!({ "minConnections": 16, "maxConnections": 16 });
    let on = open(&config, "postgresql (metrics on)");
    let off = open(&metrics_off(config), "postgresql (metrics off)");
    for s in [&on, &off] {
        pg_writes::plugin_lifecycles(s, ops / 10).await;
    }
    let [r_on, r_off] = util::abba(rounds, ops / rounds, |side, n| {
        let s = if side == 0 { on.clone() } else { off.clone() };
        async move {
            pg_writes::plugin_lifecycles(&s, n).await;
        }
    })
    .await;
    // The instance with metrics on really recorded the calls (a no-op build would measure nothing).
    let text = on.metrics_text().await.unwrap_or_else(|e| util::fail(&format!("metrics: {e}")));
    let writes = write_count(&text);
    util::report_throughput(
        "pg_lifecycle_metrics",
        r_on,
        r_off,
        "lifecycles/s",
        0.97,
        &format!(
            "{ops} create+complete per side, 16 callers, pool 16; ours = metrics on, baseline = \
             storage.metrics.enabled: false, same database, ABBA x{rounds}; the on side counted {writes} writes"
        ),
    );
    on.shutdown().await.expect("shutdown");
    off.shutdown().await.expect("shutdown");
    server.drop_database(&db).await;
}

/// `sqlite_writes` (creates by 16 callers through the group-committing writer) with metrics on vs off, each on
/// its own file in the same directory.
pub async fn sqlite_writes(opts: &Opts) {
    let ops = opts.n(30_000, 2_000);
    let rounds = 8;
    let dir = tempfile::Builder::new().prefix("parallax-bench-").tempdir().expect("tempdir");
    let on = open(&sqlite_writes::config(&dir.path().join("on.db")), "sqlite (metrics on)");
    let off = open(&metrics_off(sqlite_writes::config(&dir.path().join("off.db"))), "sqlite (metrics off)");
    for s in [&on, &off] {
        sqlite_writes::plugin_creates(s, ops / 10).await;
    }
    let [r_on, r_off] = util::abba(rounds, ops / rounds, |side, n| {
        let s = if side == 0 { on.clone() } else { off.clone() };
        async move {
            sqlite_writes::plugin_creates(&s, n).await;
        }
    })
    .await;
    let text = on.metrics_text().await.unwrap_or_else(|e| util::fail(&format!("metrics: {e}")));
    let writes = write_count(&text);
    util::report_throughput(
        "sqlite_writes_metrics",
        r_on,
        r_off,
        "rows/s",
        0.97,
        &format!(
            "{ops} creates per side by 16 callers; ours = metrics on, baseline = storage.metrics.enabled: false, \
             ABBA x{rounds}; the on side counted {writes} writes; {}",
            dir.path().display()
        ),
    );
    on.shutdown().await.expect("shutdown");
    off.shutdown().await.expect("shutdown");
}

/// The `…_count{operation="write",table="executions"}` sample of an exposition.
fn write_count(text: &str) -> String {
    text.lines()
        .find(|l| {
            l.starts_with("parallax_storage_operation_duration_seconds_count{")
                && l.contains("operation=\"write\"")
                && l.contains("table=\"executions\"")
        })
        .and_then(|l| l.rsplit(' ').next())
        .unwrap_or("none (metrics not recorded)")
        .to_string()
}

/// Executions to load for the scrape scenarios.
fn scrape_rows(opts: &Opts) -> usize {
    std::env::var("PARALLAX_BENCH_METRICS_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| opts.n(1_000_000, 50_000))
}

/// Some calls of each kind, so the latency summary has every family it will have in production.
async fn traffic(s: &Storage) {
    for _ in 0..20 {
        let e = s.create_execution(NewExecution::new("scraped", "1.0.0")).await.expect("create");
        s.get_execution(e.id).await.expect("get");
        s.complete_execution(e.id, ExecutionCompletion::new(ExecutionStatus::Completed))
            .await
            .expect("complete");
    }
    s.list_executions(ExecutionFilter::default(), Page { limit: 20, cursor: None }).await.expect("list");
    s.append_audit(vec![NewAuditEntry::new("scrape.bench")]).await.expect("audit");
    let missing: Uuid = "0190b3f4-0000-7000-8000-00000000dead".parse().unwrap();
    assert!(s.get_execution(missing).await.is_err());
}

/// Times `SCRAPES` scrapes of ours and of the baseline, alternating one by one after a warm-up of 20 each.
async fn scrapes<B, BF>(storage: &Storage, mut baseline: B) -> (Latencies, Latencies, usize)
where
    B: FnMut() -> BF,
    BF: std::future::Future<Output = ()>,
{
    let mut size = 0;
    for _ in 0..20 {
        size = storage.metrics_text().await.expect("metrics").len();
        baseline().await;
    }
    let (mut ours, mut base) = (Latencies::with_capacity(SCRAPES), Latencies::with_capacity(SCRAPES));
    for _ in 0..SCRAPES {
        let t = Instant::now();
        let text = storage.metrics_text().await.expect("metrics");
        ours.push(t.elapsed());
        assert!(
            text.contains("parallax_storage_table_rows{table=\"executions\"}"),
            "no table stats:\n{text}"
        );
        let t = Instant::now();
        baseline().await;
        base.push(t.elapsed());
    }
    (ours, base, size)
}

/// The first scrape of a new storage object (it waits, bounded, for the first statistics refresh): its time,
/// the time until the table statistics are exported (a refresh over a large history may outlast that bound),
/// and the exported executions row count.
async fn first_scrape(storage: &Storage) -> (Duration, Duration, String) {
    let rows_of = |text: &str| {
        text.lines()
            .find(|l| l.starts_with("parallax_storage_table_rows{table=\"executions\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .map(str::to_string)
    };
    let t = Instant::now();
    let mut text = storage.metrics_text().await.unwrap_or_else(|e| util::fail(&format!("metrics: {e}")));
    let first = t.elapsed();
    loop {
        if let Some(rows) = rows_of(&text) {
            return (first, t.elapsed(), rows);
        }
        if t.elapsed() > Duration::from_secs(600) {
            util::fail(&format!("no table statistics exported after 600 s:\n{text}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        text = storage.metrics_text().await.unwrap_or_else(|e| util::fail(&format!("metrics: {e}")));
    }
}

/// The statistics a scrape would need, asked of the server: live rows and total bytes of each table, a
/// partitioned table's leaf partitions summed (`pg_partition_tree` lists nothing for a plain table).
const PG_STATS: &str = "SELECT t, sum(pg_stat_get_live_tuples(r))::int8, sum(pg_total_relation_size(r))::int8 \
    FROM unnest($1::text[]) t, LATERAL (SELECT relid AS r FROM pg_partition_tree(t::regclass) WHERE isleaf \
    UNION ALL SELECT t::regclass WHERE NOT EXISTS (SELECT FROM pg_partition_tree(t::regclass))) leaves GROUP BY t";

pub async fn pg_scrape(opts: &Opts) {
    let rows = scrape_rows(opts);
    let server = pg::server();
    let db = server.fresh_database().await;
    let config = server.storage_config(&db);
    // The schema first (the loader needs the partition function), then the history, then the instance that
    // is scraped (opened after ANALYZE, like a long-running one).
    open(&config, "postgresql").shutdown().await.expect("shutdown");
    load::postgres(&db, rows).await;
    let storage = open(&config, "postgresql");
    traffic(&storage).await;
    let (first, stats_after, exported) = first_scrape(&storage).await;
    let client = server.client(&db).await;
    let stats = client.prepare(PG_STATS).await.expect("prepare the catalog query");
    let tables: Vec<String> = TABLES.iter().map(|t| t.to_string()).collect();
    let (ours, base, size) = scrapes(&storage, || {
        let (client, stats, tables) = (&client, &stats, &tables);
        async move {
            assert_eq!(client.query(stats, &[tables]).await.expect("catalog query").len(), 4);
        }
    })
    .await;
    util::report_latency(
        "pg_metrics_scrape",
        &ours,
        &base,
        50_000.0,
        &format!(
            "{SCRAPES} scrapes of {size} bytes with {rows} executions (exported rows {exported}); first scrape \
             {:.1} ms, table stats exported after {:.1} s; baseline = live rows + pg_total_relation_size over \
             the leaf partitions from the catalog, raw tokio-postgres",
            first.as_secs_f64() * 1e3,
            stats_after.as_secs_f64()
        ),
    );
    storage.shutdown().await.expect("shutdown");
    drop(client);
    server.drop_database(&db).await;
}

fn sqlite_stats(conn: &rusqlite::Connection) -> i64 {
    let mut total = 0;
    for t in TABLES {
        total += conn
            .prepare_cached(&format!("SELECT count(*) FROM {t}"))
            .unwrap()
            .query_row([], |r| r.get::<_, i64>(0))
            .unwrap();
    }
    let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0)).unwrap();
    let size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap();
    total + pages * size
}

pub async fn sqlite_scrape(opts: &Opts) {
    let rows = scrape_rows(opts);
    let dir = tempfile::Builder::new().prefix("parallax-bench-").tempdir().expect("tempdir");
    let path = dir.path().join("history.db");
    sqlite_writes::migrated_file(&path).await;
    let p = path.clone();
    tokio::task::spawn_blocking(move || load::sqlite(&p, rows)).await.unwrap();
    let storage = sqlite_writes::open(&path);
    traffic(&storage).await;
    let (first, stats_after, exported) = first_scrape(&storage).await;
    let conn = std::sync::Mutex::new(open_raw(&path));
    let (ours, base, size) = scrapes(&storage, || {
        let conn = &conn;
        async move {
            assert!(sqlite_stats(&conn.lock().unwrap()) > 0);
        }
    })
    .await;
    util::report_latency(
        "sqlite_metrics_scrape",
        &ours,
        &base,
        50_000.0,
        &format!(
            "{SCRAPES} scrapes of {size} bytes with {rows} executions (exported rows {exported}); first scrape \
             {:.1} ms, table stats exported after {:.1} s; baseline = count(*) of the four tables + page_count x \
             page_size, raw rusqlite; {}",
            first.as_secs_f64() * 1e3,
            stats_after.as_secs_f64(),
            dir.path().display()
        ),
    );
    storage.shutdown().await.expect("shutdown");
}

fn open_raw(path: &Path) -> rusqlite::Connection {
    let conn = sqlite_writes::raw_connection(path);
    conn.execute_batch("PRAGMA query_only = ON;").unwrap();
    conn
}
