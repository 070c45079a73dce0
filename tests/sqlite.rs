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
