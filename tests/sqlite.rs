//! The contract suite on SQLite, plus SQLite-specific behaviour.

mod common;
mod contract;

use common::*;
use parallax_storage_host::*;
use serde_json::json;

contract_suite!(common::sqlite);

fn config_with(dir: &tempfile::TempDir, extra: serde_json::Value) -> serde_json::Value {
    let mut cfg = sqlite_config(dir);
    merge(&mut cfg, extra);
    cfg
}

fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
    match (a, b) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

#[tokio::test]
async fn pending_migrations_without_autorun_refuse_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_with(&dir, json!({ "migrations": { "autoRun": false } }));
    let err = plugin().open(&cfg).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Schema, "{err}");
    assert!(err.message.contains("pending") && err.message.contains("parallax storage migrate up"), "{err}");
    // Maintenance mode opens anyway, so the migrate commands work.
    let s = plugin().open_with(&cfg, OpenOptions { maintenance: true }).unwrap();
    assert!(s.migration_status().await.unwrap().iter().all(|m| !m.applied));
    s.migrate_up().await.unwrap();
    s.shutdown().await.unwrap();
    let s = plugin().open(&cfg).expect("opens once migrated");
    s.put_pattern(new_pattern("ok", "1.0.0")).await.unwrap();
    s.shutdown().await.unwrap();
    // migrations.enabled: false behaves the same.
    let dir2 = tempfile::tempdir().unwrap();
    let cfg2 = config_with(&dir2, json!({ "migrations": { "enabled": false } }));
    assert_eq!(plugin().open(&cfg2).unwrap_err().kind, ErrorKind::Schema);
}

#[tokio::test]
async fn a_database_newer_than_the_plugin_is_refused() {
    let h = sqlite().await;
    h.storage.shutdown().await.unwrap();
    let db = h.dir.path().join("parallax.db");
    // Pretend a newer plugin applied a migration this one does not know.
    {
        use diesel::{Connection, RunQueryDsl};
        let mut conn = diesel::SqliteConnection::establish(db.to_str().unwrap()).unwrap();
        diesel::sql_query("INSERT INTO __diesel_schema_migrations (version) VALUES ('29990101000000')")
            .execute(&mut conn)
            .unwrap();
    }
    let err = plugin().open(&h.config).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Schema);
    assert!(err.message.contains("29990101000000") && err.message.contains("newer"), "{err}");
}

#[tokio::test]
async fn wal_and_pragmas_are_applied() {
    let h = sqlite().await;
    h.storage.put_pattern(new_pattern("wal", "1.0.0")).await.unwrap();
    assert!(h.dir.path().join("parallax.db-wal").exists(), "WAL mode leaves a -wal file while open");
    let health = h.storage.health().await.unwrap();
    assert_eq!(health.backend, "sqlite");
    assert!(health.server_version.starts_with("SQLite 3."), "{}", health.server_version);
    h.storage.shutdown().await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let cfg = config_with(&dir, json!({ "sqlite": { "walMode": false } }));
    let s = plugin().open(&cfg).unwrap();
    s.put_pattern(new_pattern("nowal", "1.0.0")).await.unwrap();
    assert!(!dir.path().join("parallax.db-wal").exists());
    s.shutdown().await.unwrap();
}

#[tokio::test]
async fn two_instances_on_one_file_share_data() {
    let h = sqlite().await;
    let other = h.reopen();
    let e = h.storage.create_execution(new_execution("shared", "1.0.0")).await.unwrap();
    assert_eq!(other.get_execution(e.id).await.unwrap().id, e.id);
    // Writers in two instances (two writer threads) still do not fail: busy_timeout covers the overlap.
    let (a, b) = tokio::join!(
        async {
            for _ in 0..200 {
                h.storage.create_execution(new_execution("a", "1.0.0")).await.unwrap();
            }
        },
        async {
            for _ in 0..200 {
                other.create_execution(new_execution("b", "1.0.0")).await.unwrap();
            }
        }
    );
    let _ = (a, b);
    assert_eq!(h.storage.count_executions(ExecutionFilter::default()).await.unwrap(), 401);
    other.shutdown().await.unwrap();
    h.storage.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_paths_are_clear_errors() {
    let err = plugin().open(&json!({ "sqlite": { "path": "/nonexistent/dir/x.db" } })).unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidInput);
    assert!(err.message.contains("/nonexistent/dir") && err.message.contains("does not exist"), "{err}");
    let err = plugin().open(&json!({ "sqlite": { "path": ":memory:" } })).unwrap_err();
    assert!(err.message.contains("in-memory"), "{err}");
}

fn raw_sqlite(dir: &tempfile::TempDir) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(dir.path().join("parallax.db")).unwrap();
    conn.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
    conn
}

fn count(conn: &rusqlite::Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

/// Another program's insert, as the Diesel CLI or the sqlite3 shell would do it: only the triggers run.
fn insert_behind_the_plugins_back(conn: &rusqlite::Connection, id: &str, word: &str) {
    conn.execute(
        "INSERT INTO executions (id, pattern_name, pattern_version, status, input, started_at, tags) \
         VALUES (?1, 'external', '1.0.0', 'running', ?2, 1700000000000000, '[]')",
        rusqlite::params![id, format!(r#"{{"q":"{word}"}}"#)],
    )
    .unwrap();
}

async fn search_ids(s: &parallax_storage_host::Storage, word: &str) -> Vec<String> {
    let page = s.search_executions(word, page(50, None)).await.unwrap();
    page.items.iter().map(|h| h.execution.id.to_string()).collect()
}

/// The plugin's writes enter the full-text index in their own transaction: nothing is left queued, and every
/// execution (created, then completed with new words) is indexed exactly once with its current text.
#[tokio::test]
async fn writes_are_indexed_in_their_own_commit() {
    let h = sqlite().await;
    let s = &h.storage;
    let mut ids = Vec::new();
    for i in 0..20 {
        let mut e = new_execution("indexed", "1.0.0");
        e.input = Some(doc(&format!(r#"{{"q":"alpha{i}"}}"#)));
        ids.push(s.create_execution(e).await.unwrap().id.to_string());
    }
    let done = ExecutionCompletion {
        status: ExecutionStatus::Completed,
        output: Some(doc(r#"{"answer":"zebra"}"#)),
        error: None,
        completed_at: None,
    };
    s.complete_execution(id_of(&ids[3]), done).await.unwrap();
    let raw = raw_sqlite(&h.dir);
    assert_eq!(count(&raw, "SELECT count(*) FROM execution_search_queue"), 0, "left queued after commit");
    assert_eq!(count(&raw, "SELECT count(*) FROM executions_fts"), 20, "one document per execution");
    assert_eq!(search_ids(s, "alpha7").await, vec![ids[7].clone()]);
    assert_eq!(search_ids(s, "zebra").await, vec![ids[3].clone()]);
    assert_eq!(search_ids(s, "alpha3").await, vec![ids[3].clone()], "the input words stay indexed");
    h.finish().await;
}

/// Rows another program wrote (queued by the triggers, not indexed) are indexed before a search reads, and a
/// migration back to per-row triggers indexes what is still queued.
#[tokio::test]
async fn rows_written_by_another_program_are_found_and_kept_on_migrate_down() {
    let h = sqlite().await;
    let s = &h.storage;
    let raw = raw_sqlite(&h.dir);
    insert_behind_the_plugins_back(&raw, "0190b3f2-7c1e-7a00-8000-00000000e001", "outsider");
    assert_eq!(count(&raw, "SELECT count(*) FROM execution_search_queue"), 1);
    assert_eq!(search_ids(s, "outsider").await, vec!["0190b3f2-7c1e-7a00-8000-00000000e001".to_string()]);
    assert_eq!(count(&raw, "SELECT count(*) FROM execution_search_queue"), 0);

    insert_behind_the_plugins_back(&raw, "0190b3f2-7c1e-7a00-8000-00000000e002", "straggler");
    s.migrate_to("20240117000000").await.unwrap();
    assert_eq!(
        count(&raw, "SELECT count(*) FROM sqlite_master WHERE name = 'execution_search_queue'"),
        0,
        "down.sql drops the queue"
    );
    assert_eq!(search_ids(s, "straggler").await, vec!["0190b3f2-7c1e-7a00-8000-00000000e002".to_string()]);
    // Back on the per-row triggers, the plugin's writes are still searchable; then up again.
    let mut e = new_execution("indexed", "1.0.0");
    e.input = Some(doc(r#"{"q":"between"}"#));
    let between = s.create_execution(e).await.unwrap().id.to_string();
    assert_eq!(search_ids(s, "between").await, vec![between]);
    s.migrate_up().await.unwrap();
    assert_eq!(search_ids(s, "outsider").await.len(), 1);
    h.finish().await;
}

/// Dropping the last storage object without `shutdown()` (as a host's async task may) returns without waiting
/// for the writes still queued, and those writes are committed all the same. Every call below is polled once,
/// which validates it and queues its write; then the storage is dropped, and then the calls (the last holders
/// of the backend: a call dropped after its storage is dropped on the caller's thread), so only the writer can
/// still commit their writes, on its own thread after the drop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_without_shutdown_does_not_wait_for_queued_writes_and_keeps_them() {
    use std::{
        future::Future,
        task::Poll,
        time::{Duration, Instant},
    };
    const CALLS: usize = 10;
    const BATCH: usize = 2_000;
    let h = sqlite().await;
    // The storage object of the ABI, whose call futures may outlive it (the plain client's `async fn`s borrow
    // it): the only instance once the plain one is shut down.
    let raw = h.raw();
    let Harness { storage: plain, dir, .. } = h;
    plain.shutdown().await.unwrap();
    let storage = raw.storage;
    let mut calls: Vec<_> = (0..CALLS)
        .map(|c| {
            let entries: Vec<_> = (0..BATCH)
                .map(|i| parallax_storage_abi::NewAuditEntry {
                    action: format!("bulk.{c}").into(),
                    actor: Some(raw::rs(&format!("actor-{i}"))).into(),
                    ..Default::default()
                })
                .collect();
            Box::pin(storage.append_audit(entries.into()))
        })
        .collect();
    std::future::poll_fn(|cx| {
        for call in &mut calls {
            assert!(call.as_mut().poll(cx).is_pending(), "a batch of {BATCH} finished at its first poll");
        }
        Poll::Ready(())
    })
    .await;

    let dropping = Instant::now();
    drop(storage);
    drop(calls);
    let took = dropping.elapsed();

    // The writer commits every queued batch after the drop.
    let conn = raw_sqlite(&dir);
    let started = Instant::now();
    let want = (CALLS * BATCH) as i64;
    loop {
        let n = count(&conn, "SELECT count(*) FROM audit_logs");
        if n == want {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "{n} of {want} queued audit entries committed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let commit = dropping.elapsed();
    eprintln!("drop took {took:?}; the queued writes were committed {commit:?} after it began");
    assert!(took < commit / 2, "dropping took {took:?}, waiting for the queued writes ({commit:?})");
}

// ------------------------------------------------------------------ cleanup and retention (issue 12)

mod retention_support {
    use std::path::Path;

    use parallax_storage_host::retention::{CleanupParams, CleanupTarget};

    /// 2020-01-01T00:00:00Z: far older than any `--older-than` a test uses.
    pub const OLD: i64 = 1_577_836_800_000_000;

    pub fn old_id(i: usize) -> String {
        format!("0190b3f2-0000-7000-8000-{i:012x}")
    }

    /// A new database holding `old` completed executions started in 2020 (one second apart, each with `events`
    /// events and its full-text document) and `recent` running ones started now (input text padded with `pad`
    /// bytes, to give the file some size), then `edit` applied, and the storage open on it.
    ///
    /// The rows are written with rusqlite while the storage is closed: this test process holds two copies of
    /// SQLite (rusqlite's and the loaded plugin's), and closing a connection of one copy while the other has
    /// the file open would checkpoint and delete the WAL under it (POSIX locks do not see each other within a
    /// process; SQLite's "how to corrupt" §2.2.1). Separate processes, as in production, are not affected.
    pub async fn filled(
        old: usize,
        events: usize,
        recent: usize,
        pad: usize,
        edit: impl FnOnce(&rusqlite::Connection),
    ) -> crate::Harness {
        let (dir, config) = prepared(old, events, recent, pad, edit).await;
        let storage = crate::plugin().open(&config).unwrap();
        crate::Harness::new(storage, config, dir)
    }

    /// As [`filled`], with the storage closed: a directory holding `parallax.db`, and its config.
    pub async fn prepared(
        old: usize,
        events: usize,
        recent: usize,
        pad: usize,
        edit: impl FnOnce(&rusqlite::Connection),
    ) -> (tempfile::TempDir, serde_json::Value) {
        let dir = tempfile::tempdir().unwrap();
        let config = crate::sqlite_config(&dir);
        // Migrated by the plugin, then closed for good (dropped: its read connections close too).
        let s = crate::plugin().open(&config).unwrap();
        s.shutdown().await.unwrap();
        drop(s);
        let db = dir.path().join("parallax.db");
        fill(&db, old, events, recent, pad);
        edit(&rusqlite::Connection::open(&db).unwrap());
        (dir, config)
    }

    fn fill(path: &Path, old: usize, events: usize, recent: usize, pad: usize) {
        let mut conn = rusqlite::Connection::open(path).unwrap();
        conn.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
        let tx = conn.transaction().unwrap();
        {
            let mut exe = tx
                .prepare(
                    "INSERT INTO executions (id, pattern_name, pattern_version, status, input, started_at, \
                     completed_at, tags) VALUES (?1, 'old', '1.0.0', ?2, ?3, ?4, ?5, '[]')",
                )
                .unwrap();
            let mut ev = tx
                .prepare(
                    "INSERT INTO execution_events (id, execution_id, seq, kind, payload, recorded_at) \
                     VALUES (?1, ?2, ?3, 'step_result', '{\"ok\":true}', ?4)",
                )
                .unwrap();
            let text = "x".repeat(pad);
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros()
                as i64;
            for i in 0..old + recent {
                let id = old_id(i);
                let (status, at, done) = if i < old {
                    ("completed", OLD + i as i64 * 1_000_000, Some(OLD + i as i64 * 1_000_000 + 1))
                } else {
                    ("running", now, None)
                };
                let input = format!(r#"{{"q":"needle{i} haystack","pad":"{text}"}}"#);
                exe.execute(rusqlite::params![id, status, input, at, done]).unwrap();
                for s in 0..events {
                    let eid = format!("0190b3f3-{s:04x}-7000-8000-{i:012x}");
                    ev.execute(rusqlite::params![eid, id, s as i64, at + s as i64]).unwrap();
                }
            }
        }
        for sql in parallax_storage::sqlite::search::INDEX_QUEUED_SQL {
            tx.execute_batch(sql).unwrap();
        }
        tx.commit().unwrap();
    }

    pub fn executions(older_than: &str) -> CleanupParams {
        CleanupParams {
            target: CleanupTarget::Executions,
            older_than: Some(older_than.into()),
            max_count: None,
            dry_run: false,
            include_unfinished: false,
            confirm_all: false,
        }
    }

    /// Rows that lost their execution: events, search mappings, full-text documents, queued search entries.
    pub fn orphans(conn: &rusqlite::Connection) -> [(&'static str, i64); 4] {
        let q = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
        [
            ("events", q("SELECT count(*) FROM execution_events v WHERE NOT EXISTS (SELECT 1 FROM executions e WHERE e.id = v.execution_id)")),
            ("search", q("SELECT count(*) FROM execution_search s WHERE NOT EXISTS (SELECT 1 FROM executions e WHERE e.id = s.execution_id)")),
            ("fts", q("SELECT count(*) FROM executions_fts f WHERE NOT EXISTS (SELECT 1 FROM execution_search s WHERE s.doc_id = f.rowid)")),
            ("queue", q("SELECT count(*) FROM execution_search_queue q WHERE NOT EXISTS (SELECT 1 FROM executions e WHERE e.id = q.execution_id)")),
        ]
    }

    /// The main file and the WAL, byte for byte.
    pub fn files(db: &Path) -> (Vec<u8>, Vec<u8>) {
        let mut wal = db.as_os_str().to_owned();
        wal.push("-wal");
        (std::fs::read(db).unwrap(), std::fs::read(&wal).unwrap_or_default())
    }
}

use retention_support as rs;

fn table<'a>(r: &'a retention::CleanupReport, name: &str) -> &'a retention::TableReport {
    r.tables.iter().find(|t| t.table == name).unwrap_or_else(|| panic!("no {name} in {r:?}"))
}

/// A large cleanup runs as many small jobs of the single writer: another caller's single-row writes keep
/// completing while it runs (they interleave with its jobs instead of waiting for the end). Events and search
/// entries go with their executions; new and unfinished executions stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_keep_completing_during_a_large_cleanup() {
    use std::{
        sync::{
            atomic::{AtomicBool, Ordering},
            Arc,
        },
        time::{Duration, Instant},
    };
    const OLD: usize = 20_000;
    let h = rs::filled(OLD, 2, 10, 0, |_| {}).await;
    let s = h.storage.clone();
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (s, done) = (s.clone(), done.clone());
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut completed_at = Vec::new();
            while !done.load(Ordering::Acquire) {
                let t = Instant::now();
                s.create_execution(new_execution("during", "1.0.0")).await.unwrap();
                latencies.push(t.elapsed());
                completed_at.push(Instant::now());
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            (latencies, completed_at)
        })
    };
    let started = Instant::now();
    let report = s.cleanup(&rs::executions("1d")).await.unwrap();
    let ended = Instant::now();
    done.store(true, Ordering::Release);
    let (latencies, completed_at) = writer.await.unwrap();

    let during = completed_at.iter().filter(|t| **t > started && **t < ended).count();
    let worst = latencies.iter().max().copied().unwrap_or_default();
    eprintln!(
        "cleanup of {OLD} took {:?} in {} batches; {during} writes completed meanwhile, the slowest {worst:?}",
        ended - started,
        table(&report, "executions").batches
    );
    assert_eq!(table(&report, "executions").rows, OLD as u64);
    assert_eq!(table(&report, "execution_events").rows, 2 * OLD as u64);
    assert_eq!(table(&report, "execution_search").rows, OLD as u64);
    assert!(table(&report, "executions").batches >= 10, "{report:?}");
    assert!(during >= 5, "only {during} writes completed during the cleanup: they waited for it");
    assert!(worst < Duration::from_secs(10), "a write waited {worst:?}");

    let raw = raw_sqlite(&h.dir);
    assert_eq!(raw.query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0)).unwrap(), "ok");
    assert_eq!(count(&raw, "SELECT count(*) FROM executions WHERE started_at < 1600000000000000"), 0);
    assert_eq!(
        count(&raw, "SELECT count(*) FROM executions WHERE pattern_name = 'old'"),
        10,
        "the recent ones stay"
    );
    assert_eq!(
        count(&raw, "SELECT count(*) FROM executions WHERE pattern_name = 'during'") as usize,
        latencies.len()
    );
    assert_eq!(rs::orphans(&raw), [("events", 0), ("search", 0), ("fts", 0), ("queue", 0)]);
    assert_eq!(
        count(&raw, "SELECT count(*) FROM executions_fts"),
        count(&raw, "SELECT count(*) FROM executions")
    );
    assert_eq!(search_ids(&s, "needle5").await, Vec::<String>::new(), "old documents left the index");
    assert_eq!(search_ids(&s, &format!("needle{}", OLD + 3)).await, vec![rs::old_id(OLD + 3)]);
    h.finish().await;
}

/// New databases are in incremental auto-vacuum mode and a cleanup gives the space back: the file shrinks,
/// and the report says by how much.
#[tokio::test]
async fn the_file_shrinks_after_a_cleanup() {
    let h = rs::filled(3_000, 1, 100, 2_000, |raw| {
        assert_eq!(
            count(raw, "PRAGMA auto_vacuum"),
            2,
            "new databases are created with auto_vacuum = INCREMENTAL"
        )
    })
    .await;
    let db = h.dir.path().join("parallax.db");
    let raw = raw_sqlite(&h.dir);
    let before = std::fs::metadata(&db).unwrap().len();
    let report = h.storage.cleanup(&rs::executions("30d")).await.unwrap();
    let after = std::fs::metadata(&db).unwrap().len();
    eprintln!("file {before} -> {after} bytes; report {:?}", table(&report, "executions").bytes_reclaimed);
    assert_eq!(table(&report, "executions").rows, 3_000);
    assert!(after * 4 < before, "the file did not shrink enough: {before} -> {after} bytes");
    let reclaimed = table(&report, "executions").bytes_reclaimed.expect("bytes_reclaimed");
    assert!(
        reclaimed >= (before - after) / 2 && reclaimed <= before,
        "reported {reclaimed}, file {before} -> {after}"
    );
    assert_eq!(count(&raw, "PRAGMA freelist_count"), 0);
    assert_eq!(raw.query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0)).unwrap(), "ok");
    h.finish().await;
}

/// A dry run reports what would go and changes nothing: the main file and the WAL are the same bytes after.
#[tokio::test]
async fn a_dry_run_changes_no_byte() {
    // One old unfinished execution: kept, and reported as kept.
    let h = rs::filled(500, 2, 20, 100, |raw| {
        raw.execute("UPDATE executions SET status = 'running' WHERE id = ?1", [rs::old_id(7)]).unwrap();
    })
    .await;
    let db = h.dir.path().join("parallax.db");
    // Closing the loader's connection checkpointed the WAL; the storage has only read since.
    let before = rs::files(&db);
    let mut params = rs::executions("30d");
    params.dry_run = true;
    let report = h.storage.cleanup(&params).await.unwrap();
    assert_eq!(rs::files(&db), before, "a dry run changed the database files");
    assert!(report.dry_run && report.run_id.is_none(), "{report:?}");
    let main = table(&report, "executions");
    assert_eq!(main.rows, 499);
    assert_eq!(report.unfinished_kept, 1);
    assert_eq!(report.rows_left, Some(21));
    assert_eq!(
        main.sample_ids,
        (0..6).filter(|i| *i != 7 && *i < 6).map(rs::old_id).take(5).collect::<Vec<_>>()
    );
    assert_eq!(main.oldest.as_deref(), Some("2020-01-01T00:00:00.000000Z"));
    assert_eq!(table(&report, "execution_events").rows, 998);
    assert_eq!(table(&report, "execution_search").rows, 499);
    assert_eq!(h.storage.count_executions(ExecutionFilter::default()).await.unwrap(), 520);
    assert_eq!(h.storage.retention_status().await.unwrap().runs.len(), 0);

    // The real thing removes exactly that, and records the run.
    params.dry_run = false;
    let done = h.storage.cleanup(&params).await.unwrap();
    assert_eq!(table(&done, "executions").rows, 499);
    assert_eq!(table(&done, "executions").sample_ids, main.sample_ids);
    assert_eq!(table(&done, "execution_events").rows, 998);
    // Read with rusqlite only now: a connection of this process's second SQLite copy that read before the
    // cleanup truncated the file would keep a stale view (the file itself is fine; another process sees it so).
    let raw = raw_sqlite(&h.dir);
    assert_eq!(count(&raw, "SELECT count(*) FROM executions"), 21);
    assert_eq!(rs::orphans(&raw), [("events", 0), ("search", 0), ("fts", 0), ("queue", 0)]);
    let status = h.storage.retention_status().await.unwrap();
    assert_eq!(status.runs.len(), 1);
    assert_eq!(status.runs[0].status, "succeeded");
    assert_eq!(status.runs[0].trigger, "manual");
    assert_eq!(status.runs[0].rows.get("executions"), Some(&499));
    assert_eq!(Some(&status.runs[0].id), done.run_id.as_ref());
    h.finish().await;
}

/// Audit entries go by `(timestamp, id)`, in batches.
#[tokio::test]
async fn old_audit_entries_go_in_batches() {
    let h = rs::filled(0, 0, 0, 0, |raw| {
        raw.execute_batch(
            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 2999) \
             INSERT INTO audit_logs (id, timestamp, action) \
             SELECT printf('0190b3f4-0000-7000-8000-%012x', i), 1577836800000000 + i, 'old.thing' FROM n",
        )
        .unwrap();
    })
    .await;
    h.storage.append_audit(vec![audit("new.thing", "me")]).await.unwrap();
    let params = retention::CleanupParams {
        target: retention::CleanupTarget::AuditLogs,
        older_than: Some("90d".into()),
        max_count: None,
        dry_run: false,
        include_unfinished: false,
        confirm_all: false,
    };
    let report = h.storage.cleanup(&params).await.unwrap();
    let t = table(&report, "audit_logs");
    assert_eq!(t.rows, 3_000);
    assert!(t.batches >= 2, "{report:?}");
    assert_eq!(t.sample_ids[0], "0190b3f4-0000-7000-8000-000000000000");
    let raw = raw_sqlite(&h.dir);
    assert_eq!(count(&raw, "SELECT count(*) FROM audit_logs"), 1);
    h.finish().await;
}

/// A database created without incremental auto-vacuum (an older build, another program) is converted once
/// when the storage opens, while small, so that cleanups shrink it.
#[tokio::test]
async fn an_existing_database_is_converted_to_incremental_vacuum_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("parallax.db");
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE unrelated (x INTEGER); INSERT INTO unrelated VALUES (1);")
            .unwrap();
        assert_eq!(count(&conn, "PRAGMA auto_vacuum"), 0);
    }
    let s = plugin().open(&sqlite_config(&dir)).unwrap();
    let raw = raw_sqlite(&dir);
    assert_eq!(count(&raw, "PRAGMA auto_vacuum"), 2);
    assert_eq!(count(&raw, "SELECT x FROM unrelated"), 1, "the data survives the conversion");
    s.create_execution(new_execution("after", "1.0.0")).await.unwrap();
    s.shutdown().await.unwrap();
}

/// One runner per database: while something else holds `<db>-retention.lock` (another process, or another
/// storage instance here: `flock` locks belong to the open file), a cleanup is refused and names the reason;
/// once released, it runs.
#[tokio::test]
async fn the_runner_lock_admits_one_cleanup_per_database() {
    use std::os::fd::AsRawFd;
    let h = rs::filled(50, 0, 1, 0, |_| {}).await;
    let lock_path = h.dir.path().join("parallax.db-retention.lock");
    let held = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path).unwrap();
    assert_eq!(unsafe { libc::flock(held.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) }, 0);
    let err = h.storage.cleanup(&rs::executions("1d")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Conflict, "{err}");
    assert!(err.message.contains("runner lock"), "{err}");
    // A second instance on the same file is refused the same way.
    let other = h.reopen();
    assert_eq!(other.cleanup(&rs::executions("1d")).await.unwrap_err().kind, ErrorKind::Conflict);
    // A dry run needs no lock.
    let mut dry = rs::executions("1d");
    dry.dry_run = true;
    assert_eq!(table(&other.cleanup(&dry).await.unwrap(), "executions").rows, 50);
    drop(held);
    assert_eq!(table(&other.cleanup(&rs::executions("1d")).await.unwrap(), "executions").rows, 50);
    other.shutdown().await.unwrap();
    h.finish().await;
}

/// Two instances on one database racing: while one instance's cleanup holds the runner lock (its run is
/// recorded as running), the other's is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_instance_cannot_clean_up_while_the_first_runs() {
    use std::time::{Duration, Instant};
    let h = rs::filled(20_000, 1, 1, 0, |_| {}).await;
    let other = h.reopen();
    let first = {
        let s = h.storage.clone();
        tokio::spawn(async move { s.cleanup(&rs::executions("1d")).await })
    };
    let t = Instant::now();
    while !other.retention_status().await.unwrap().runs.iter().any(|r| r.status == "running") {
        assert!(t.elapsed() < Duration::from_secs(60), "the first cleanup never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let second = other.cleanup(&rs::executions("1d")).await;
    let first = first.await.unwrap().unwrap();
    assert_eq!(table(&first, "executions").rows, 20_000);
    match second {
        Err(e) => assert_eq!(e.kind, ErrorKind::Conflict, "{e}"),
        // The first finished before the second took the lock: then the second found nothing left to remove.
        Ok(r) => assert_eq!(table(&r, "executions").rows, 0, "both instances removed rows: {r:?}"),
    }
    other.shutdown().await.unwrap();
    h.finish().await;
}

/// A cleanup killed with SIGKILL at any moment leaves a consistent database (integrity check ok, no event or
/// search entry without its execution), and the next run finishes the job. The cleanups are the real CLI
/// (`target/debug/parallax`), each in its own process.
#[tokio::test]
async fn a_cleanup_killed_at_any_moment_leaves_a_consistent_database_and_the_next_run_finishes() {
    use std::{
        process::{Command, Stdio},
        time::{Duration, Instant},
    };
    const OLD: usize = 30_000;
    let (dir, _) = rs::prepared(OLD, 3, 10, 200, |_| {}).await;
    let db = dir.path().join("parallax.db");
    let cfg = dir.path().join("parallax.yaml");
    std::fs::write(&cfg, format!("storage:\n  type: sqlite\n  sqlite:\n    path: {}\n", db.display()))
        .unwrap();
    let cli = target_dir().join("parallax");
    assert!(cli.is_file(), "{} is missing: run `cargo build --workspace`", cli.display());
    let cleanup = || {
        let mut c = Command::new(&cli);
        c.args(["storage", "cleanup", "executions", "--older-than", "1d", "--yes", "--config"])
            .arg(&cfg)
            .arg("--plugin")
            .arg(fresh_plugin_library())
            .env_remove("PARALLAX_CONFIG");
        c
    };
    let old_left = || -> i64 {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.busy_timeout(Duration::from_secs(10)).unwrap();
        count(&conn, "SELECT count(*) FROM executions WHERE pattern_name = 'old' AND status = 'completed'")
    };
    // A small deterministic generator for the kill moments (no extra crate).
    let mut seed =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    let mut next = move |below: u64| {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (seed >> 33) % below
    };
    let mut kills_mid_delete = 0;
    for round in 0..6 {
        let before = old_left();
        if before == 0 {
            break;
        }
        let mut child = cleanup().stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        let started = Instant::now();
        if round == 0 {
            // The first kill lands while rows are being deleted, for sure.
            while old_left() == before {
                assert!(child.try_wait().unwrap().is_none(), "the cleanup ended before deleting anything");
                assert!(started.elapsed() < Duration::from_secs(60), "the cleanup deleted nothing in 60 s");
                std::thread::sleep(Duration::from_millis(5));
            }
        } else {
            std::thread::sleep(Duration::from_millis(50 + next(1_500)));
        }
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        let after = old_left();
        if after < before && after > 0 {
            kills_mid_delete += 1;
        }
        eprintln!(
            "round {round}: killed after {:?} ({status}); old executions {before} -> {after}",
            started.elapsed()
        );
        let conn = rusqlite::Connection::open(&db).unwrap();
        assert_eq!(conn.query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0)).unwrap(), "ok");
        assert_eq!(
            rs::orphans(&conn),
            [("events", 0), ("search", 0), ("fts", 0), ("queue", 0)],
            "round {round}"
        );
        assert_eq!(
            count(&conn, "SELECT count(*) FROM executions_fts"),
            count(&conn, "SELECT count(*) FROM executions")
        );
    }
    assert!(kills_mid_delete >= 1, "no kill landed while rows were being deleted");

    let out = cleanup().output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the final cleanup failed: {stdout}{stderr}");
    let conn = rusqlite::Connection::open(&db).unwrap();
    assert_eq!(conn.query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0)).unwrap(), "ok");
    assert_eq!(count(&conn, "SELECT count(*) FROM executions WHERE started_at < 1600000000000000"), 0);
    assert_eq!(count(&conn, "SELECT count(*) FROM executions"), 10, "the recent executions stay");
    assert_eq!(count(&conn, "SELECT count(*) FROM execution_events"), 30);
    assert_eq!(rs::orphans(&conn), [("events", 0), ("search", 0), ("fts", 0), ("queue", 0)]);
    // The killed runs that had started deleting were recorded as running; the next run marked them.
    assert!(
        count(&conn, "SELECT count(*) FROM retention_runs WHERE status = 'interrupted'") >= 1,
        "no interrupted run recorded"
    );
    assert_eq!(count(&conn, "SELECT count(*) FROM retention_runs WHERE status = 'running'"), 0);
    // The final run succeeded (and a round whose kill came too late, if any).
    assert!(count(&conn, "SELECT count(*) FROM retention_runs WHERE status = 'succeeded'") >= 1);
}

// ------------------------------------------------------------------ metrics (issue 14)

mod metrics_support {
    pub use crate::common::exposition::{
        filesystem_size, until, value_of as sample, ACTIVE, BYTES, DISK_FREE, ROWS, WAITING,
    };

    pub fn table(text: &str, name: &str, table: &str) -> f64 {
        sample(text, name, &format!("table=\"{table}\""))
            .unwrap_or_else(|| panic!("no {name} for {table} in:\n{text}"))
    }

    /// A `BEGIN IMMEDIATE` transaction held by another process (python3's sqlite3 module) until
    /// [`WriteLockHolder::release`].
    pub struct WriteLockHolder(std::process::Child);

    impl WriteLockHolder {
        pub fn start(db: &std::path::Path) -> WriteLockHolder {
            use std::io::BufRead as _;
            const HOLD: &str = "import sqlite3, sys\n\
                c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)\n\
                c.execute('BEGIN IMMEDIATE')\n\
                print('held', flush=True)\n\
                sys.stdin.read()\n\
                c.execute('COMMIT')\n";
            let mut child = std::process::Command::new("python3")
                .args(["-c", HOLD])
                .arg(db)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("python3 (to hold the write lock from another process): {e}"));
            let mut line = String::new();
            std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
            assert_eq!(line.trim(), "held", "the holder process did not take the write lock");
            WriteLockHolder(child)
        }

        /// Commits the holder's transaction and waits for the process to end.
        pub fn release(mut self) {
            drop(self.0.stdin.take());
            let status = self.0.wait().unwrap();
            assert!(status.success(), "the holder process failed: {status}");
        }
    }

    impl Drop for WriteLockHolder {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

use metrics_support as ms;

/// The writer counts in the pool: while another program holds the write lock, the writer's group waits for it
/// (one active connection) and the writes submitted meanwhile are waiting requests; once the lock is released
/// every write succeeds and nothing waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_count_writes_waiting_behind_a_held_write_lock() {
    let dir = tempfile::tempdir().unwrap();
    // The hold below lasts well under busyTimeout, so that the held writer waits instead of failing.
    let cfg = config_with(&dir, json!({ "sqlite": { "busyTimeout": 60_000 } }));
    let s = std::sync::Arc::new(plugin().open(&cfg).unwrap());
    let text = s.metrics_text().await.unwrap();
    assert_eq!(ms::sample(&text, ms::WAITING, ""), Some(0.0), "{text}");
    assert_eq!(ms::sample(&text, ms::ACTIVE, ""), Some(0.0), "{text}");

    // Another process: the plugin's SQLite and this test's rusqlite are two copies of the library in one
    // process, and POSIX locks do not exclude each other within a process, so an in-process holder would not
    // hold the plugin's writer at all.
    let holder = ms::WriteLockHolder::start(&dir.path().join("parallax.db"));
    let write = |n: u32| {
        let s = s.clone();
        tokio::spawn(async move { s.put_pattern(new_pattern(&format!("held-{n}"), "1.0.0")).await })
    };
    let first = write(0);
    ms::until(&s, "the writer's group waits for the write lock", |t| {
        ms::sample(t, ms::ACTIVE, "") == Some(1.0)
    })
    .await;
    let queued: Vec<_> = (1..8).map(write).collect();
    let text = ms::until(&s, "writes wait behind the held writer", |t| {
        ms::sample(t, ms::WAITING, "").is_some_and(|w| w >= 1.0)
    })
    .await;
    assert!(ms::sample(&text, ms::WAITING, "").unwrap() <= 7.0, "{text}");

    holder.release();
    first.await.unwrap().unwrap();
    for w in queued {
        w.await.unwrap().unwrap();
    }
    ms::until(&s, "nothing waits once the lock is released", |t| {
        ms::sample(t, ms::WAITING, "") == Some(0.0) && ms::sample(t, ms::ACTIVE, "") == Some(0.0)
    })
    .await;
    s.shutdown().await.unwrap();
}

/// Free disk space is that of the database's filesystem; table rows and sizes (refreshed every
/// statsInterval) move after writes, each table on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_report_disk_free_bytes_and_table_stats_that_move_after_writes() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_with(&dir, json!({ "metrics": { "statsInterval": "1s" } }));
    let s = plugin().open(&cfg).unwrap();
    let text = s.metrics_text().await.unwrap();
    let free =
        ms::sample(&text, ms::DISK_FREE, "").unwrap_or_else(|| panic!("no disk free bytes in:\n{text}"));
    let size = ms::filesystem_size(dir.path()) as f64;
    assert!(free > 0.0 && free <= size, "free {free} of {size}");
    let before =
        ms::until(&s, "the first table stats", |t| ms::sample(t, ms::ROWS, "table=\"executions\"").is_some())
            .await;
    for table in ["patterns", "executions", "execution_events", "audit_logs"] {
        assert_eq!(ms::table(&before, ms::ROWS, table), 0.0, "{before}");
        assert!(ms::table(&before, ms::BYTES, table) > 0.0, "an empty table still has pages:\n{before}");
    }

    s.put_pattern(new_pattern("stats", "1.0.0")).await.unwrap();
    for _ in 0..300 {
        s.create_execution(new_execution("stats", "1.0.0")).await.unwrap();
    }
    let grew = |t: &str| {
        ms::table(t, ms::ROWS, "executions") == 300.0
            && ms::table(t, ms::ROWS, "patterns") == 1.0
            && ms::table(t, ms::BYTES, "executions") > ms::table(&before, ms::BYTES, "executions")
    };
    let after = ms::until(&s, "executions and patterns rows and bytes move", grew).await;
    for table in ["execution_events", "audit_logs"] {
        assert_eq!(ms::table(&after, ms::ROWS, table), 0.0, "{after}");
    }
    s.shutdown().await.unwrap();
}
