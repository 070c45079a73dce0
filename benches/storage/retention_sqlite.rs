//! SQLite retention (issue 12): a cleanup of 1,000,000 expired executions (each with one event and its
//! full-text document) through the loaded plugin while single-row writers keep writing, against one plain
//! `DELETE` of the same rows with rusqlite on an identical copy of the database.
//!
//! - `sqlite_retention_writers`: the writers' latency during our cleanup (ours) and before it (baseline);
//!   target p99 ≤ 50 ms.
//! - `sqlite_retention_rows`: rows per second of our cleanup (deletes + incremental vacuum) and of the plain
//!   `DELETE` (which holds the write lock for its whole duration: no writer gets in; and gives no space back).
//!   Reported; no target. The note has the file sizes before and after.

use std::{
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use parallax_storage_host::{retention::*, *};

use crate::{
    data::{now_us, History, DAY_US},
    sqlite_writes,
    util::{self, Latencies, Opts},
};

/// Concurrent single-row writers, each writing about every [`WRITER_PAUSE`].
const WRITERS: usize = 4;
const WRITER_PAUSE: Duration = Duration::from_millis(5);
/// Executions that stay (started now).
const LIVE: usize = 10_000;

/// Loads `expired` executions started 400 to 490 days ago (all final, one event each) and [`LIVE`] running
/// ones into a file the plugin migrated and closed, with rusqlite in one transaction: the executions' indexes
/// and search trigger are dropped during the inserts and rebuilt after, the full-text index is filled with
/// the plugin's own statements.
fn load(path: &Path, expired: usize) {
    let t = Instant::now();
    let mut conn = rusqlite::Connection::open(path).expect("open sqlite");
    conn.execute_batch("PRAGMA synchronous = OFF; PRAGMA cache_size = -262144; PRAGMA foreign_keys = OFF;")
        .unwrap();
    let rebuilt: Vec<(String, String, String)> = {
        let mut stmt = conn
            .prepare(
                "SELECT name, type, sql FROM sqlite_master WHERE tbl_name = 'executions' AND sql IS NOT NULL \
                 AND (type = 'index' OR name = 'executions_search_insert')",
            )
            .unwrap();
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap();
        rows.collect::<Result<_, _>>().unwrap()
    };
    let tx = conn.transaction().unwrap();
    for (name, kind, _) in &rebuilt {
        tx.execute_batch(&format!("DROP {} {name}", kind.to_uppercase())).unwrap();
    }
    let now = now_us();
    {
        let mut exe = tx
            .prepare(
                "INSERT INTO executions (id, pattern_name, pattern_version, status, input, output, error, \
                 started_at, completed_at, duration_ms, metadata, tags) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, \
                 ?9, ?10, ?11, ?12)",
            )
            .unwrap();
        let mut ev = tx
            .prepare(
                "INSERT INTO execution_events (id, execution_id, seq, kind, payload, recorded_at) \
                 VALUES (?1, ?2, 0, 'step_result', '{\"step\":1,\"ok\":true}', ?3)",
            )
            .unwrap();
        let mut old = History::new(12, now - 400 * DAY_US, 90, expired);
        let mut live = History::new(13, now, 1, LIVE);
        for k in 0..expired + LIVE {
            let r = if k < expired { old.row(k) } else { live.row(k - expired) };
            let status = match (k < expired, r.status) {
                (true, "running" | "pending") => "completed",
                (true, s) => s,
                (false, _) => "running",
            };
            let id = r.id.hyphenated().to_string();
            exe.execute(rusqlite::params![
                id,
                r.pattern,
                r.version,
                status,
                r.input,
                r.output,
                r.error,
                r.started_us,
                r.completed_us.or(Some(r.started_us + 1000)),
                r.duration_ms,
                r.metadata,
                r.tags
            ])
            .expect("insert execution");
            let mut event_id = r.id.into_bytes();
            event_id[15] ^= 0x5a;
            ev.execute(rusqlite::params![
                uuid::Uuid::from_bytes(event_id).hyphenated().to_string(),
                id,
                r.started_us
            ])
            .expect("insert event");
        }
    }
    let inserted = t.elapsed();
    for (_, kind, sql) in &rebuilt {
        if kind == "index" {
            tx.execute_batch(sql).unwrap();
        }
    }
    tx.execute_batch(
        "INSERT INTO execution_search_queue (execution_id) SELECT id FROM executions ORDER BY started_at",
    )
    .unwrap();
    for sql in parallax_storage::sqlite::search::INDEX_QUEUED_SQL {
        tx.execute_batch(sql).unwrap();
    }
    for (_, kind, sql) in &rebuilt {
        if kind == "trigger" {
            tx.execute_batch(sql).unwrap();
        }
    }
    tx.commit().unwrap();
    conn.execute_batch("ANALYZE; PRAGMA wal_checkpoint(TRUNCATE);").unwrap();
    eprintln!(
        "# sqlite_retention: loaded {expired} expired + {LIVE} live executions with one event each: inserts {:.1} s, \
         indexes + full-text {:.1} s",
        inserted.as_secs_f64(),
        (t.elapsed() - inserted).as_secs_f64()
    );
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1_048_576.0
}

/// The writers: each creates an execution, records the call's latency, pauses, until `stop`.
fn start_writers(
    storage: &Storage,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<(Latencies, usize)>> {
    (0..WRITERS)
        .map(|_| {
            let (s, stop) = (storage.clone(), stop.clone());
            tokio::spawn(async move {
                let (mut lat, mut n) = (Latencies::with_capacity(100_000), 0);
                while !stop.load(Ordering::Acquire) {
                    let e = NewExecution::new("bench-retention", "1.0.0")
                        .input(serde_json::json!({ "q": "live" }));
                    let t = Instant::now();
                    s.create_execution(e).await.expect("create_execution during the cleanup");
                    lat.push(t.elapsed());
                    n += 1;
                    tokio::time::sleep(WRITER_PAUSE).await;
                }
                (lat, n)
            })
        })
        .collect()
}

/// Stops the writers: their latencies and how many writes they made.
async fn stop_writers(
    stop: &Arc<AtomicBool>,
    writers: Vec<tokio::task::JoinHandle<(Latencies, usize)>>,
) -> (Latencies, usize) {
    stop.store(true, Ordering::Release);
    let (mut all, mut count) = (Latencies::default(), 0);
    for w in writers {
        let (lat, n) = w.await.expect("writer task");
        all.extend(lat);
        count += n;
    }
    (all, count)
}

/// One plain `DELETE` of the same rows (its foreign key cascades to the events, its trigger removes the
/// full-text documents), with the plugin's pragmas. Returns (rows, seconds).
fn raw_delete(path: &Path, cutoff: i64) -> (usize, f64) {
    let conn = sqlite_writes::raw_connection(path);
    let t = Instant::now();
    let n = conn
        .execute(
            "DELETE FROM executions WHERE started_at < ?1 AND status IN ('completed', 'failed', 'cancelled')",
            [cutoff],
        )
        .expect("plain DELETE");
    (n, t.elapsed().as_secs_f64())
}

pub async fn run(opts: &Opts) {
    let expired = opts.n(1_000_000, 20_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let ours_path = dir.path().join("ours.db");
    let raw_path = dir.path().join("raw.db");
    sqlite_writes::migrated_file(&ours_path).await;
    load(&ours_path, expired);
    std::fs::copy(&ours_path, &raw_path).expect("copy the database");

    // The baseline first, on the copy, while nothing else runs.
    let raw_before = std::fs::metadata(&raw_path).unwrap().len();
    let (raw_rows, raw_secs) = raw_delete(&raw_path, now_us() - 30 * DAY_US);
    let raw_after = std::fs::metadata(&raw_path).unwrap().len();
    assert_eq!(raw_rows, expired, "the plain DELETE removed a different number of rows");
    let _ = std::fs::remove_file(&raw_path);

    let storage = sqlite_writes::open(&ours_path);
    // The writers alone, for their latency without a cleanup.
    let stop = Arc::new(AtomicBool::new(false));
    let writers = start_writers(&storage, &stop);
    tokio::time::sleep(Duration::from_secs(if opts.quick { 1 } else { 5 })).await;
    let (quiet, _) = stop_writers(&stop, writers).await;

    let before = std::fs::metadata(&ours_path).unwrap().len();
    let stop = Arc::new(AtomicBool::new(false));
    let writers = start_writers(&storage, &stop);
    let t = Instant::now();
    let report = storage
        .cleanup(&CleanupParams {
            target: CleanupTarget::Executions,
            older_than: Some("30d".into()),
            max_count: None,
            dry_run: false,
            include_unfinished: false,
            confirm_all: false,
        })
        .await
        .unwrap_or_else(|e| util::fail(&format!("cleanup: {e}")));
    let secs = t.elapsed().as_secs_f64();
    let (during, writes) = stop_writers(&stop, writers).await;
    let after = std::fs::metadata(&ours_path).unwrap().len();
    storage.shutdown().await.expect("shutdown");
    let main = report.tables.iter().find(|t| t.table == "executions").expect("executions report");
    assert_eq!(main.rows as usize, expired, "our cleanup removed a different number of rows");

    let ours_rate = expired as f64 / secs;
    let raw_rate = raw_rows as f64 / raw_secs;
    util::report_latency(
        "sqlite_retention_writers",
        &during,
        &quiet,
        50_000.0,
        &format!(
            "{WRITERS} writers (a create_execution each every {} ms) during the cleanup of {expired} executions vs \
             the same writers without it; {} writes during the cleanup",
            WRITER_PAUSE.as_millis(),
            writes
        ),
    );
    util::report_throughput(
        "sqlite_retention_rows",
        ours_rate,
        raw_rate,
        "executions/s",
        0.0,
        &format!(
            "no target: ours {secs:.1} s in {} small writer jobs while writers ran, events + search rows + \
             incremental vacuum included, file {:.0} -> {:.0} MiB (reported reclaimed {:.0} MiB); plain DELETE \
             {raw_secs:.1} s holding the write lock throughout, file {:.0} -> {:.0} MiB (no space given back)",
            main.batches,
            mib(before),
            mib(after),
            mib(main.bytes_reclaimed.unwrap_or(0)),
            mib(raw_before),
            mib(raw_after),
        ),
    );
}
