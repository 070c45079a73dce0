//! Read scenarios over the loaded history: a filtered page (pattern + status, newest first, 50 rows) and get
//! by id, on PostgreSQL and SQLite, one caller, against the same SELECT issued raw.
//!
//! On the same PostgreSQL history, `pg_replica_filtered_page` and `pg_replica_get_by_id` (issue 15) measure the
//! read routing: the same reads through a storage object with the harness's streaming replica and
//! `readPreference: replica` (ours, served by the replica) against one with `readPreference: primary` and no
//! replica (baseline), interleaved; target p50 and p99 ratio ≤ 1.05.

use std::time::{Duration, Instant};

use parallax_storage_host::*;

use crate::{
    data::{PgUuid, PATTERNS, STATUSES},
    load::{self, Loaded},
    pg, pg_writes, sqlite_writes,
    util::{self, Latencies, Opts},
};

pub const PAGE: u32 = 50;
/// Interleave ours and baseline in chunks of this many operations, so drift hits both alike.
const CHUNK: usize = 100;

pub const COLUMNS: &str = "id, pattern_name, pattern_version, status, input, output, error, started_at, \
    completed_at, duration_ms, metadata, tags";

/// The k-th filter of the sequence both sides run: every pattern with every status.
pub fn filter(k: usize) -> (&'static str, &'static str) {
    (PATTERNS[k % PATTERNS.len()], STATUSES[(k / PATTERNS.len()) % STATUSES.len()].0)
}

pub fn plugin_filter(pattern: &str, status: &str) -> ExecutionFilter {
    ExecutionFilter {
        pattern_name: Some(pattern.into()),
        statuses: vec![status.parse::<ExecutionStatus>().unwrap()],
        ..Default::default()
    }
}

pub fn page() -> Page {
    Page { limit: PAGE, cursor: None }
}

/// Chunks of each side run before measuring: every pooled connection has prepared its statements and
/// PostgreSQL has settled on its plans (custom plans for the first five executions of a statement).
const WARMUP_CHUNKS: usize = 3;

/// Runs `ops` operations of each side, interleaved in chunks, after a warm-up.
async fn interleaved<O, B>(ops: usize, mut ours: O, mut base: B) -> (Latencies, Latencies)
where
    O: AsyncFnMut(usize),
    B: AsyncFnMut(usize),
{
    let (mut lo, mut lb) = (Latencies::with_capacity(ops), Latencies::with_capacity(ops));
    for chunk in 0..WARMUP_CHUNKS + ops / CHUNK {
        let (mut o, mut b) = (Latencies::with_capacity(CHUNK), Latencies::with_capacity(CHUNK));
        for k in chunk * CHUNK..(chunk + 1) * CHUNK {
            let t = Instant::now();
            ours(k).await;
            o.push(t.elapsed());
        }
        for k in chunk * CHUNK..(chunk + 1) * CHUNK {
            let t = Instant::now();
            base(k).await;
            b.push(t.elapsed());
        }
        if chunk >= WARMUP_CHUNKS {
            lo.extend(o);
            lb.extend(b);
        }
    }
    (lo, lb)
}

async fn ours_page(s: &Storage, k: usize) -> usize {
    let (p, st) = filter(k);
    s.list_executions(plugin_filter(p, st), page()).await.expect("list_executions").items.len()
}

async fn ours_get(s: &Storage, ids: &[uuid::Uuid], k: usize) {
    let id = ids[k * 7919 % ids.len()];
    s.get_execution(id).await.expect("get_execution");
}

pub async fn postgres(opts: &Opts) {
    let rows = opts.n(1_000_000, 50_000);
    let (db, storage) = pg_writes::open(None).await;
    let Loaded { ids } = load::postgres(&db, rows).await;
    let client = pg::server().client(&db).await;
    let page_sql = client
        .prepare(&format!(
            "SELECT {COLUMNS} FROM executions WHERE pattern_name = $1 AND status = $2 \
             ORDER BY started_at DESC, id DESC LIMIT {}",
            PAGE + 1
        ))
        .await
        .unwrap();
    let get_sql = client.prepare(&format!("SELECT {COLUMNS} FROM executions WHERE id = $1")).await.unwrap();

    // Sanity: both sides return the same page sizes.
    for k in 0..PATTERNS.len() * STATUSES.len() {
        let (p, st) = filter(k);
        let raw = client.query(&page_sql, &[&p, &st]).await.unwrap().len().min(PAGE as usize);
        assert_eq!(ours_page(&storage, k).await, raw, "page sizes differ for {p}/{st}");
    }

    if opts.wants("pg_filtered_page") {
        let ops = opts.n(5_000, 500);
        let (ours, base) = interleaved(
            ops,
            async |k| {
                ours_page(&storage, k).await;
            },
            async |k| {
                let (p, st) = filter(k);
                client.query(&page_sql, &[&p, &st]).await.unwrap();
            },
        )
        .await;
        util::report_latency(
            "pg_filtered_page",
            &ours,
            &base,
            5_000.0,
            &format!("{ops} pages of {PAGE} (20 patterns x 5 statuses) over {rows} executions, one caller"),
        );
    }
    if opts.wants("pg_get_by_id") {
        let ops = opts.n(20_000, 1_000);
        let (ours, base) = interleaved(
            ops,
            async |k| ours_get(&storage, &ids, k).await,
            async |k| {
                let id = PgUuid(ids[k * 7919 % ids.len()]);
                assert_eq!(client.query(&get_sql, &[&id]).await.unwrap().len(), 1);
            },
        )
        .await;
        util::report_latency(
            "pg_get_by_id",
            &ours,
            &base,
            1_000.0,
            &format!(
                "{ops} lookups of random ids over {rows} executions, one caller; baseline WHERE id = $1"
            ),
        );
    }
    storage.shutdown().await.expect("shutdown");
    drop(client);
    if std::env::var_os("PARALLAX_BENCH_KEEP_DB").is_some() {
        // For EXPLAIN ANALYZE afterwards (with PARALLAX_TEST_POSTGRES_URL: the throwaway cluster dies with us).
        eprintln!("# kept database {}", pg::server().url(&db));
    } else {
        pg::server().drop_database(&db).await;
    }
}

/// `pg_replica_filtered_page` and `pg_replica_get_by_id`: the history of [`postgres`] loaded anew while the
/// harness's replica streams it, then two storage objects on it, ours routed to the replica, the baseline on
/// the primary alone. Run after every other scenario (benches/storage.rs): from its start on, the standby
/// replays every write of the cluster, which would take CPU from the scenarios after it.
pub async fn postgres_replica(opts: &Opts) {
    let rows = opts.n(1_000_000, 50_000);
    // Started before the load, so that the standby streams it rather than copying it afterwards.
    let replica = pg_writes::replica().await;
    let _turn = replica.shared().await;
    // Opening migrates the fresh database (the loader fills the plugin's schema); the scenarios open their own.
    let (db, migrated) = pg_writes::open(None).await;
    migrated.shutdown().await.expect("shutdown");
    let Loaded { ids } = load::postgres(&db, rows).await;
    // Before any measurement: replaying the load competes for the cores.
    let took = replica.wait_caught_up(Duration::from_secs(900)).await;
    eprintln!("# the replica replayed the load {:.1} s after it ended", took.as_secs_f64());
    replica_reads(opts, replica, &db, rows, &ids).await;
    pg::server().drop_database(&db).await;
}

async fn replica_reads(
    opts: &Opts,
    replica: &'static pg::Replica,
    db: &str,
    rows: usize,
    ids: &[uuid::Uuid],
) {
    let config = pg::server().storage_config(db);
    let mut primary_config = config.clone();
    primary_config["postgresql"]["readPreference"] = serde_json::json!("primary");
    let open = |config: &serde_json::Value, what: &str| {
        util::plugin().open(config).unwrap_or_else(|e| util::fail(&format!("open postgresql ({what}): {e}")))
    };
    let routed = open(&pg_writes::with_replica(config, replica), "readPreference replica");
    let primary = open(&primary_config, "readPreference primary");
    let address = pg_writes::replica_address(replica);
    let up = pg_writes::wait_replica_up(&routed, &address, Duration::from_secs(10)).await;
    if !up {
        eprintln!(
            "# the router never reported the replica {address} up within 10 s (no read routing in this build?): \
             both sides read from the primary"
        );
    }
    // Sanity: both sides see the same data.
    for k in 0..PATTERNS.len() * STATUSES.len() {
        let (p, st) = filter(k);
        assert_eq!(
            ours_page(&routed, k).await,
            ours_page(&primary, k).await,
            "page sizes differ for {p}/{st}"
        );
    }
    // What the replica served of ours' reads in a scenario (warm-up included): a run in which it served (almost)
    // none measured no routing, whatever its ratio.
    let served = async |before: f64, ops: usize| {
        let total = (WARMUP_CHUNKS + ops / CHUNK) * CHUNK;
        let n = pg_writes::replica_reads(&routed, &address).await - before;
        let note = format!("the replica {address} served {n:.0} of ours' {total} reads");
        let invalid = (n < 0.99 * total as f64)
            .then(|| format!("the replica served {n:.0} of {total} reads, not all: no routing measured"));
        (note, invalid)
    };

    if opts.wants("pg_replica_filtered_page") {
        let ops = opts.n(5_000, 500);
        let before = pg_writes::replica_reads(&routed, &address).await;
        let (ours, base) = interleaved(
            ops,
            async |k| {
                ours_page(&routed, k).await;
            },
            async |k| {
                ours_page(&primary, k).await;
            },
        )
        .await;
        let (note, invalid) = served(before, ops).await;
        util::report_latency_ratio(
            "pg_replica_filtered_page",
            &ours,
            &base,
            1.05,
            invalid.as_deref(),
            &format!(
                "{ops} pages of {PAGE} over {rows} executions, one caller; ours = readPreference replica, \
                 baseline = readPreference primary without replicas, same database; {note}"
            ),
        );
    }
    if opts.wants("pg_replica_get_by_id") {
        let ops = opts.n(20_000, 1_000);
        let before = pg_writes::replica_reads(&routed, &address).await;
        let (ours, base) = interleaved(
            ops,
            async |k| ours_get(&routed, ids, k).await,
            async |k| ours_get(&primary, ids, k).await,
        )
        .await;
        let (note, invalid) = served(before, ops).await;
        util::report_latency_ratio(
            "pg_replica_get_by_id",
            &ours,
            &base,
            1.05,
            invalid.as_deref(),
            &format!(
                "{ops} lookups of random ids over {rows} executions, one caller; ours = readPreference replica, \
                 baseline = readPreference primary without replicas, same database; {note}"
            ),
        );
    }
    routed.shutdown().await.expect("shutdown");
    primary.shutdown().await.expect("shutdown");
}

pub type SqliteRow = (
    String,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    i64,
    Option<i64>,
    Option<i64>,
    Option<String>,
    String,
);

pub fn sqlite_rows(
    stmt: &mut rusqlite::CachedStatement<'_>,
    params: impl rusqlite::Params,
) -> Vec<SqliteRow> {
    stmt.query_map(params, |r| {
        Ok((
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
            r.get(6)?,
            r.get(7)?,
            r.get(8)?,
            r.get(9)?,
            r.get(10)?,
            r.get(11)?,
        ))
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

pub async fn sqlite(opts: &Opts) {
    let rows = opts.n(1_000_000, 50_000);
    let dir = tempfile::Builder::new().prefix("parallax-bench-").tempdir().expect("tempdir");
    let path = dir.path().join("history.db");
    sqlite_writes::migrated_file(&path).await;
    let p = path.clone();
    let Loaded { ids } = tokio::task::spawn_blocking(move || load::sqlite(&p, rows)).await.unwrap();
    // Opened after ANALYZE, so its connections plan with the statistics.
    let storage = sqlite_writes::open(&path);
    let conn = sqlite_writes::raw_connection(&path);
    conn.execute_batch("PRAGMA query_only = ON;").unwrap();
    let page_sql = format!(
        "SELECT {COLUMNS} FROM executions WHERE pattern_name = ?1 AND status = ?2 \
         ORDER BY started_at DESC, id DESC LIMIT {}",
        PAGE + 1
    );
    let get_sql = format!("SELECT {COLUMNS} FROM executions WHERE id = ?1");

    for k in 0..PATTERNS.len() * STATUSES.len() {
        let (p, st) = filter(k);
        let raw = sqlite_rows(&mut conn.prepare_cached(&page_sql).unwrap(), (p, st)).len().min(PAGE as usize);
        assert_eq!(ours_page(&storage, k).await, raw, "page sizes differ for {p}/{st}");
    }

    if opts.wants("sqlite_filtered_page") {
        let ops = opts.n(5_000, 500);
        let (ours, base) = interleaved(
            ops,
            async |k| {
                ours_page(&storage, k).await;
            },
            async |k| {
                let (p, st) = filter(k);
                sqlite_rows(&mut conn.prepare_cached(&page_sql).unwrap(), (p, st));
            },
        )
        .await;
        util::report_latency(
            "sqlite_filtered_page",
            &ours,
            &base,
            10_000.0,
            &format!("{ops} pages of {PAGE} (20 patterns x 5 statuses) over {rows} executions, one caller"),
        );
    }
    if opts.wants("sqlite_get_by_id") {
        let ops = opts.n(20_000, 1_000);
        let (ours, base) = interleaved(
            ops,
            async |k| ours_get(&storage, &ids, k).await,
            async |k| {
                let id = ids[k * 7919 % ids.len()].hyphenated().to_string();
                assert_eq!(sqlite_rows(&mut conn.prepare_cached(&get_sql).unwrap(), [id]).len(), 1);
            },
        )
        .await;
        util::report_latency(
            "sqlite_get_by_id",
            &ours,
            &base,
            1_000.0,
            &format!(
                "{ops} lookups of random ids over {rows} executions, one caller; baseline WHERE id = ?1"
            ),
        );
    }
    storage.shutdown().await.expect("shutdown");
}
