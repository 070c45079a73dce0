//! Retention on PostgreSQL (issue 12): 1,000,000 executions over three whole months, 10,000 in the first day of
//! the next month (the boundary day) and 100,000 live ones after it, one event per ten executions.
//!
//! - `pg_retention`: the issue's case, a cutoff at a month boundary (1,000,000 expired executions over three
//!   months): our cleanup through the loaded plugin (`cleanup executions --older-than …`: three months dropped,
//!   executions and events partitions together) against plain `DELETE … WHERE started_at < cutoff` of the same
//!   rows (their events first, then the executions: one statement each) on an identical database, made from the
//!   same template. Ratio = baseline time / our time; target ≥ 20×.
//! - `pg_retention_boundary`: the same with the cutoff at the end of the boundary day: the three months dropped
//!   and the boundary day's 10,000 executions (and their events) deleted in batches.
//! - `pg_retention_writers`: 16 callers running the execution lifecycle (create + complete) through the
//!   plugin, during the boundary case's cleanup (on its own copy) vs without it on the same database; target ≥ 0.8× the throughput. The note
//!   gives the longest statement of the cleanup's sessions and the longest lock wait of any session, sampled
//!   from `pg_stat_activity` every 10 ms (target ≤ 200 ms), and the writers' slowest call.

use std::{
    collections::HashSet,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use parallax_storage_host::{retention, *};
use serde_json::json;

use crate::{
    pg,
    util::{self, Latencies, Opts},
};

const WRITERS: usize = 16;

/// Loads the data into `db` (migrated by opening the plugin once): partitions for the last six months,
/// `expired` executions in the three months before the month two months back, 1 % more in that month's first
/// day (an hour in), `live` after it, one event per ten executions.
async fn load(db: &str, expired: i64, live: i64) {
    let server = pg::server();
    let mut config = server.storage_config(db);
    config["retention"] = json!({ "runSchedule": false });
    let s = util::plugin().open(&config).unwrap_or_else(|e| util::fail(&format!("open: {e}")));
    s.shutdown().await.expect("shutdown");
    drop(s);
    let c = server.client(db).await;
    let boundary = expired / 100; // after the three months: the first day of the next month
    let sql = format!(
        "SELECT parallax_create_execution_partition(date_trunc('month', now()) - make_interval(months => m)) \
         FROM generate_series(1, 6) m;
         CREATE TEMP TABLE b AS SELECT date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' \
           - interval '5 months' AS lo, date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' \
           - interval '2 months' AS mid, now() - interval '1 minute' AS hi;
         INSERT INTO executions (id, pattern_name, pattern_version, status, input, output, started_at, completed_at,
                                 duration_ms)
         SELECT gen_random_uuid(), 'bench-retention', '1.0.0', 'completed', '{{\"q\":\"summarize\",\"n\":1}}',
                '{{\"ok\":true}}', t, t + interval '2 seconds', 2000
         FROM b, generate_series(0, {expired} - 1) g, LATERAL (SELECT b.lo + (b.mid - b.lo) * (g::float8 / {expired}) AS t) s;
         INSERT INTO executions (id, pattern_name, pattern_version, status, input, output, started_at, completed_at,
                                 duration_ms)
         SELECT gen_random_uuid(), 'bench-retention', '1.0.0', 'failed', '{{\"q\":\"summarize\",\"n\":2}}',
                '{{\"ok\":false}}', t, t + interval '2 seconds', 2000
         FROM b, generate_series(0, {boundary} - 1) g,
              LATERAL (SELECT b.mid + interval '1 hour' + interval '23 hours' * (g::float8 / {boundary}) AS t) s;
         INSERT INTO executions (id, pattern_name, pattern_version, status, input, output, started_at, completed_at,
                                 duration_ms)
         SELECT gen_random_uuid(), 'bench-retention', '1.0.0', 'completed', '{{\"q\":\"summarize\",\"n\":3}}',
                '{{\"ok\":true}}', t, t + interval '2 seconds', 2000
         FROM b, generate_series(0, {live} - 1) g,
              LATERAL (SELECT b.mid + interval '1 day 1 hour' + (b.hi - b.mid - interval '1 day 1 hour') * (g::float8 / {live}) AS t) s;
         INSERT INTO execution_events (id, execution_id, seq, kind, payload, recorded_at, execution_started_at)
         SELECT gen_random_uuid(), id, 1, 'step_result', '{{\"step\":1}}', started_at + interval '1 second', started_at
         FROM executions WHERE random() < 0.1;",
    );
    c.batch_execute(&sql).await.unwrap_or_else(|e| util::fail(&format!("loading the retention data: {e}")));
    c.batch_execute("VACUUM ANALYZE").await.expect("VACUUM ANALYZE");
}

/// `--older-than` in seconds for a cutoff `offset` after the start of the month two months back (the end of
/// the three expired months), computed just before use so that the cutoff does not drift.
async fn age(db: &str, offset: &str) -> i64 {
    let c = pg::server().client(db).await;
    c.query_one(
        &format!(
            "SELECT extract(epoch FROM now() - ((date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC') \
             - interval '2 months' + interval '{offset}'))::int8"
        ),
        &[],
    )
    .await
    .expect("cutoff")
    .get(0)
}

/// Where the whole-months case cuts (before the boundary day's first row, an hour into the month), and where the
/// boundary case cuts (after its last row, before the first live one).
const WHOLE_MONTHS: &str = "10 minutes";
const BOUNDARY: &str = "1 day 30 minutes";

async fn copy_of(template: &str) -> String {
    let server = pg::server();
    let db = format!("parallax_bench_{}", uuid::Uuid::now_v7().simple());
    server
        .admin()
        .await
        .batch_execute(&format!("CREATE DATABASE {db} TEMPLATE {template}"))
        .await
        .unwrap_or_else(|e| util::fail(&format!("CREATE DATABASE … TEMPLATE: {e}")));
    db
}

fn open(db: &str, pool: Option<usize>) -> Storage {
    let mut config = pg::server().storage_config(db);
    config["retention"] = json!({ "runSchedule": false });
    if let Some(n) = pool {
        config["postgresql"]["pool"] = json!({ "minConnections": n, "maxConnections": n });
    }
    util::plugin().open(&config).unwrap_or_else(|e| util::fail(&format!("open postgresql: {e}")))
}

fn params(age_secs: i64) -> retention::CleanupParams {
    retention::CleanupParams {
        target: retention::CleanupTarget::Executions,
        older_than: Some(format!("{age_secs}s")),
        max_count: None,
        dry_run: false,
        include_unfinished: false,
        confirm_all: false,
    }
}

/// 16 lifecycle callers until `stop`: (lifecycles, per-call latencies).
async fn writers(storage: &Storage, stop: Arc<AtomicBool>) -> (usize, Latencies) {
    let input = Json::parse(r#"{"q":"summarize the quarterly report","user":"u42"}"#).expect("json");
    let tasks: Vec<_> = (0..WRITERS)
        .map(|_| {
            let (s, stop, input) = (storage.clone(), stop.clone(), input.clone());
            tokio::spawn(async move {
                let (mut lat, mut n) = (Latencies::default(), 0usize);
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let e = s
                        .create_execution(NewExecution {
                            id: None,
                            pattern_name: "bench-lifecycle".into(),
                            pattern_version: "1.0.0".into(),
                            status: ExecutionStatus::Running,
                            input: Some(input.clone()),
                            metadata: None,
                            tags: Default::default(),
                            started_at: None,
                        })
                        .await
                        .expect("create_execution");
                    s.complete_execution(e.id, ExecutionCompletion::new(ExecutionStatus::Completed))
                        .await
                        .expect("complete_execution");
                    lat.push(t.elapsed());
                    n += 1;
                }
                (n, lat)
            })
        })
        .collect();
    let mut all = Latencies::default();
    let mut n = 0;
    for t in tasks {
        let (k, l) = t.await.expect("writer");
        n += k;
        all.extend(l);
    }
    (n, all)
}

/// Samples `pg_stat_activity` every 10 ms until `stop`: the longest-running statement of a session not in
/// `writers` (the cleanup's), and the longest lock wait of any session, in ms.
async fn watch(db: String, writers: HashSet<i32>, stop: Arc<AtomicBool>) -> (f64, f64, String) {
    let c = pg::server().client(&db).await;
    let (mut stmt, mut wait, mut what) = (0.0f64, 0.0f64, String::new());
    while !stop.load(Ordering::Relaxed) {
        let rows = c
            .query(
                "SELECT pid, extract(epoch FROM clock_timestamp() - query_start)::float8 * 1000, \
                 coalesce(wait_event_type, ''), left(query, 80) FROM pg_stat_activity \
                 WHERE datname = current_database() AND state = 'active' AND pid <> pg_backend_pid() \
                 AND application_name = 'parallax-storage'",
                &[],
            )
            .await
            .expect("pg_stat_activity");
        for r in rows {
            let (pid, ms, wait_type, query): (i32, f64, String, String) =
                (r.get(0), r.get(1), r.get(2), r.get(3));
            if wait_type == "Lock" {
                wait = wait.max(ms);
            }
            if !writers.contains(&pid) && ms > stmt {
                stmt = ms;
                what = query;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (stmt, wait, what)
}

/// A `CHECKPOINT`, then `sync`: the server's dirty pages written and the kernel's writeback of them done, so
/// that neither side of a comparison runs against the other's (or the template copies') disk traffic.
async fn flush_to_disk() {
    pg::server()
        .admin()
        .await
        .batch_execute("CHECKPOINT")
        .await
        .unwrap_or_else(|e| util::fail(&format!("CHECKPOINT: {e}")));
    let synced = std::process::Command::new("sync").status();
    if !synced.as_ref().is_ok_and(|s| s.success()) {
        util::fail(&format!("sync: {synced:?}"));
    }
}

/// Our cleanup vs plain DELETEs of the same rows, each on a fresh copy of `template`, with the cutoff `offset`
/// after the end of the three months; reports `scenario`.
async fn compare(template: &str, scenario: &str, offset: &str, expect: u64, total: i64) {
    let server = pg::server();
    let ours_db = copy_of(template).await;
    let base_db = copy_of(template).await;
    let storage = open(&ours_db, None);
    storage.health().await.expect("health");
    // What counting costs (a dry run; a real cleanup only probes): for the note.
    let mut dry = params(age(&ours_db, offset).await);
    dry.dry_run = true;
    let t = Instant::now();
    storage.cleanup(&dry).await.unwrap_or_else(|e| util::fail(&format!("dry run: {e}")));
    let counting = t.elapsed();
    // Each side starts with no checkpoint or writeback pending: the two template copies just wrote the databases
    // through the WAL, and the checkpoint and writeback they cause would otherwise run during whichever side
    // comes first (ours). And the months' files are then on disk, as those of months that expired weeks ago
    // are: freshly copied files are only in the page cache, and dropping them mostly discards cached pages (a
    // 164 MB heap's truncate(2): 14.9 ms so, 41.5 ms once on disk; BENCHMARKS.md).
    flush_to_disk().await;
    let secs = age(&ours_db, offset).await;
    let t = Instant::now();
    let report =
        storage.cleanup(&params(secs)).await.unwrap_or_else(|e| util::fail(&format!("cleanup: {e}")));
    let ours = t.elapsed();
    let rows = report.tables[0].rows;
    let events = report.tables.get(1).map_or(0, |t| t.rows);
    if rows != expect {
        util::fail(&format!("our cleanup removed {rows} executions, expected {expect}: {report:?}"));
    }
    storage.shutdown().await.expect("shutdown");
    drop(storage);

    // The baseline: plain DELETEs of the same rows on an identical database.
    let c = server.client(&base_db).await;
    let cutoff = format!(
        "((date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC') - interval '2 months' + interval '{offset}')"
    );
    flush_to_disk().await;
    let t = Instant::now();
    let ev = c
        .execute(
            &format!(
                "DELETE FROM execution_events WHERE execution_id IN (SELECT id FROM executions WHERE started_at < \
                 {cutoff} AND status IN ('completed', 'failed', 'cancelled'))"
            ),
            &[],
        )
        .await
        .expect("baseline DELETE of events");
    let t_events = t.elapsed();
    let n = c
        .execute(
            &format!("DELETE FROM executions WHERE started_at < {cutoff} AND status IN ('completed', 'failed', 'cancelled')"),
            &[],
        )
        .await
        .expect("baseline DELETE");
    let base = t.elapsed();
    // Deleted rows keep their space until VACUUM; dropped partitions give it back at once.
    let t = Instant::now();
    c.batch_execute("VACUUM executions, execution_events").await.expect("VACUUM");
    let vacuum = t.elapsed();
    if n != rows || ev != events {
        util::fail(&format!("baseline removed {n} executions and {ev} events, ours {rows} and {events}"));
    }
    drop(c);
    let (ex, evr) = (&report.tables[0], report.tables.get(1));
    util::report_throughput(
        scenario,
        rows as f64 / ours.as_secs_f64(),
        rows as f64 / base.as_secs_f64(),
        "executions removed/s",
        20.0,
        &format!(
            "{rows} expired executions and {events} events of {total} executions; ours {:.3} s ({} + {} partitions \
             dropped, {} executions and {} events in {} batches; a dry run, which counts everything, {:.2} s) vs \
             plain DELETE {:.2} s (events {:.2} s + executions {:.2} s; the VACUUM that gives their space back \
             {:.2} s more: ratio {:.1}× counting it; dropped partitions give theirs back at once)",
            ours.as_secs_f64(),
            ex.partitions_dropped.len(),
            evr.map_or(0, |t| t.partitions_dropped.len()),
            ex.rows_in_batches,
            evr.map_or(0, |t| t.rows_in_batches),
            ex.batches,
            counting.as_secs_f64(),
            base.as_secs_f64(),
            t_events.as_secs_f64(),
            (base - t_events).as_secs_f64(),
            vacuum.as_secs_f64(),
            (base + vacuum).as_secs_f64() / ours.as_secs_f64()
        ),
    );
    for db in [ours_db, base_db] {
        server.drop_database(&db).await;
    }
}

pub async fn run(opts: &Opts) {
    let (expired, live) = if opts.quick { (100_000, 10_000) } else { (1_000_000, 100_000) };
    let boundary = expired / 100;
    let total = expired + boundary + live;
    let server = pg::server();
    let template = server.fresh_database().await;
    let t = Instant::now();
    load(&template, expired, live).await;
    eprintln!(
        "# pg_retention: loaded {expired} executions in three months + {boundary} in the boundary day + {live} live \
         in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    compare(&template, "pg_retention", WHOLE_MONTHS, expired as u64, total).await;
    compare(&template, "pg_retention_boundary", BOUNDARY, (expired + boundary) as u64, total).await;
    let load_db = copy_of(&template).await;
    flush_to_disk().await;

    // Writers during the cleanup vs without, on a third copy. The cleanup runs on its own storage instance.
    let writer_storage = open(&load_db, Some(WRITERS));
    let cleaner = open(&load_db, None);
    cleaner.health().await.expect("health");
    let window = Duration::from_secs(if opts.quick { 3 } else { 8 });
    // Warm up, then a window without cleanup.
    let stop = Arc::new(AtomicBool::new(false));
    let warm = {
        let (s, stop) = (writer_storage.clone(), stop.clone());
        tokio::spawn(async move { writers(&s, stop).await })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::SeqCst);
    warm.await.expect("warm-up");
    let admin = server.client(&load_db).await;
    let writer_pids: HashSet<i32> = admin
        .query(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'parallax-storage'",
            &[],
        )
        .await
        .expect("pids")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let quiet = {
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (writer_storage.clone(), stop.clone());
        let task = tokio::spawn(async move { writers(&s, st).await });
        let t = Instant::now();
        tokio::time::sleep(window).await;
        stop.store(true, Ordering::SeqCst);
        let (n, lat) = task.await.expect("writers");
        (n as f64 / t.elapsed().as_secs_f64(), lat)
    };
    let stop = Arc::new(AtomicBool::new(false));
    let (s, st) = (writer_storage.clone(), stop.clone());
    let task = tokio::spawn(async move { writers(&s, st).await });
    let watcher = tokio::spawn(watch(load_db.clone(), writer_pids, stop.clone()));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t = Instant::now();
    let during_report = cleaner
        .cleanup(&params(age(&load_db, BOUNDARY).await))
        .await
        .unwrap_or_else(|e| util::fail(&format!("cleanup: {e}")));
    let took = t.elapsed();
    // Keep the writers' window at least as long as the quiet one.
    if took + Duration::from_millis(200) < window {
        tokio::time::sleep(window - took - Duration::from_millis(200)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let elapsed = t.elapsed() + Duration::from_millis(200);
    let (n, lat) = task.await.expect("writers");
    let (stmt_ms, wait_ms, what) = watcher.await.expect("watcher");
    let during = n as f64 / elapsed.as_secs_f64();
    let slowest = lat.quantile_us(1.0) / 1000.0;
    let bound_met = stmt_ms <= 200.0 && wait_ms <= 200.0;
    eprintln!(
        "# pg_retention_stall longest cleanup statement {stmt_ms:.0} ms ({what:?}), longest lock wait {wait_ms:.0} ms, \
         slowest writer call {slowest:.0} ms: target ≤ 200 ms met={}",
        if bound_met { "yes" } else { "NO" }
    );
    util::report_throughput(
        "pg_retention_writers",
        during,
        quiet.0,
        "lifecycles/s",
        0.8,
        &format!(
            "{WRITERS} callers create+complete; the cleanup of {} executions took {:.2} s of the {:.1} s window; \
             longest cleanup statement {stmt_ms:.0} ms, longest lock wait {wait_ms:.0} ms (pg_stat_activity every \
             10 ms; target ≤ 200 ms met={}); writer call p99 {:.1} ms / slowest {slowest:.0} ms during, p99 {:.1} ms \
             / slowest {:.0} ms without",
            during_report.tables[0].rows,
            took.as_secs_f64(),
            elapsed.as_secs_f64(),
            if bound_met { "yes" } else { "NO" },
            lat.p99() / 1000.0,
            quiet.1.p99() / 1000.0,
            quiet.1.quantile_us(1.0) / 1000.0,
        ),
    );
    writer_storage.shutdown().await.expect("shutdown");
    cleaner.shutdown().await.expect("shutdown");
    drop((writer_storage, cleaner, admin));
    for db in [template, load_db] {
        server.drop_database(&db).await;
    }
}
