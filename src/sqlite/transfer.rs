//! The transfer primitives (`crate::transfer::Store`) of this backend: see `crate::transfer` for the rules.
//!
//! - Writes are jobs of the single writer (one savepoint of a group commit each), so the search entries are
//!   made as for any insert: the pattern insert trigger indexes a pattern version at once, the execution insert
//!   trigger queues an execution and the writer indexes the queue before the group commits.
//! - Fetches by id read through the read-only pool, with the row decoders of the queries and the archive scan.
//! - Transfer states are rows of `transfer_runs` (migration `2026-12-04-000000_transfer_runs`).
//! - `backup`: [`super::backup`].

use std::path::PathBuf;

use diesel::{
    connection::SimpleConnection,
    dsl::sql,
    prelude::*,
    sql_query,
    sql_types::{Bool, Text},
};
use parallax_storage_abi::{transfer::BackupReport, AuditEntry, Pattern};

use super::{
    archive::{import_executions, json_ids, with_events, IDS},
    models::{AuditRow, ExecutionRow, PatternRow},
    retention::final_statuses,
    schema::{audit_logs, patterns, transfer_runs},
    SqliteBackend,
};
use crate::{
    archive::{ExecutionRecord, Imported},
    error::{sqlite_error, Error, Result},
    time::now_micros,
};

/// `e` with what was being written, keeping its kind.
fn writing(what: &str, id: &str, e: Error) -> Error {
    Error::new(e.kind(), format!("{what} {id}: {}", e.0.message))
}

/// Inserts the pattern versions whose id and `(name, version)` are both free, exactly as given.
fn import_patterns(conn: &mut SqliteConnection, patterns: &[Pattern]) -> Result<Imported> {
    let mut done = Imported::default();
    for p in patterns {
        // No conflict target: either unique key (the id, or name and version) makes it a skip.
        let inserted = diesel::insert_into(patterns::table)
            .values(PatternRow::from(p))
            .on_conflict_do_nothing()
            .execute(conn)
            .map_err(|e| writing("copying pattern version", &p.id, sqlite_error(e)))?;
        if inserted == 0 {
            done.skipped += 1;
        } else {
            done.inserted += 1;
        }
    }
    Ok(done)
}

/// Replaces the pending or running executions among `records` (row, events, search entries).
fn replace_unfinished(conn: &mut SqliteConnection, records: &[ExecutionRecord]) -> Result<u64> {
    #[derive(QueryableByName)]
    struct IdRow {
        #[diesel(sql_type = Text)]
        id: String,
    }
    let given = json_ids(&records.iter().map(|r| r.execution.id.as_str()).collect::<Vec<_>>())?;
    let unfinished: Vec<IdRow> = sql_query(format!(
        "SELECT id FROM executions WHERE id IN {IDS} AND status NOT IN ({})",
        final_statuses()
    ))
    .bind::<Text, _>(&given)
    .load(conn)
    .map_err(sqlite_error)?;
    if unfinished.is_empty() {
        return Ok(0);
    }
    let ids: std::collections::HashSet<String> = unfinished.into_iter().map(|r| r.id).collect();
    let doomed = json_ids(&ids.iter().collect::<Vec<_>>())?;
    // The delete trigger removes the search document, mapping and queued entry; events go first (they
    // reference the execution).
    sql_query(format!("DELETE FROM execution_events WHERE execution_id IN {IDS}"))
        .bind::<Text, _>(&doomed)
        .execute(conn)
        .map_err(sqlite_error)?;
    let deleted = sql_query(format!("DELETE FROM executions WHERE id IN {IDS}"))
        .bind::<Text, _>(&doomed)
        .execute(conn)
        .map_err(sqlite_error)? as u64;
    // Once per id (the first record given for it).
    let mut taken = std::collections::HashSet::new();
    let fresh: Vec<ExecutionRecord> = records
        .iter()
        .filter(|r| ids.contains(r.execution.id.as_str()) && taken.insert(r.execution.id.as_str()))
        .cloned()
        .collect();
    let inserted = import_executions(conn, &fresh)?;
    if inserted.inserted != deleted {
        return Err(Error::internal(format!(
            "replacing unfinished executions: {deleted} deleted but {} inserted",
            inserted.inserted
        )));
    }
    Ok(deleted)
}

/// The start of `id IN` a JSON array of ids bound once (no limit on their number, unlike a parameter per id).
const IN_IDS: &str = "id IN (SELECT value FROM json_each(";

#[derive(QueryableByName)]
struct StateRow {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = Text)]
    source: String,
    #[diesel(sql_type = Text)]
    state: String,
}

impl crate::transfer::Store for SqliteBackend {
    async fn import_patterns(&self, patterns: Vec<Pattern>) -> Result<Imported> {
        if patterns.is_empty() {
            return Ok(Imported::default());
        }
        self.writer.write("copying pattern versions", move |conn| import_patterns(conn, &patterns)).await
    }

    async fn fetch_executions(
        &self,
        ids: Vec<String>,
        _within: Option<(i64, i64)>,
    ) -> Result<Vec<ExecutionRecord>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.read(move |conn| {
            let rows: Vec<ExecutionRow> = sql_query(format!("SELECT * FROM executions WHERE id IN {IDS}"))
                .bind::<Text, _>(json_ids(&ids)?)
                .load(conn)
                .map_err(sqlite_error)?;
            with_events(conn, rows)
        })
        .await
    }

    async fn fetch_audit(&self, ids: Vec<String>) -> Result<Vec<AuditEntry>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.read(move |conn| {
            let rows: Vec<AuditRow> = audit_logs::table
                .filter(sql::<Bool>(IN_IDS).bind::<Text, _>(json_ids(&ids)?).sql("))"))
                .select(AuditRow::as_select())
                .load(conn)
                .map_err(sqlite_error)?;
            Ok(rows.into_iter().map(AuditEntry::from).collect())
        })
        .await
    }

    async fn fetch_patterns(&self, ids: Vec<String>) -> Result<Vec<Pattern>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.read(move |conn| {
            let rows: Vec<PatternRow> = patterns::table
                .filter(sql::<Bool>(IN_IDS).bind::<Text, _>(json_ids(&ids)?).sql("))"))
                .select(PatternRow::as_select())
                .load(conn)
                .map_err(sqlite_error)?;
            Ok(rows.into_iter().map(Pattern::from).collect())
        })
        .await
    }

    async fn replace_unfinished(&self, records: Vec<ExecutionRecord>) -> Result<u64> {
        if records.is_empty() {
            return Ok(0);
        }
        self.writer
            .write("replacing unfinished executions", move |conn| replace_unfinished(conn, &records))
            .await
    }

    async fn after_bulk_load(&self) -> Result<()> {
        self.writer
            .solo("PRAGMA optimize after a bulk load", |conn| {
                conn.batch_execute("PRAGMA optimize;").map_err(sqlite_error)
            })
            .await
    }

    async fn backup(&self, destination: PathBuf) -> Result<BackupReport> {
        self.backup_impl(destination).await
    }

    async fn save_transfer_state(&self, id: String, source: String, state: String) -> Result<()> {
        let now = now_micros();
        self.writer
            .write("saving a transfer state", move |conn| {
                diesel::insert_into(transfer_runs::table)
                    .values((
                        transfer_runs::id.eq(&id),
                        transfer_runs::source.eq(&source),
                        transfer_runs::started_at.eq(now),
                        transfer_runs::updated_at.eq(now),
                        transfer_runs::state.eq(&state),
                    ))
                    .on_conflict(transfer_runs::id)
                    .do_update()
                    .set((
                        transfer_runs::source.eq(&source),
                        transfer_runs::updated_at.eq(now),
                        transfer_runs::state.eq(&state),
                    ))
                    .execute(conn)
                    .map_err(|e| writing("saving transfer state", &id, sqlite_error(e)))?;
                Ok(())
            })
            .await
    }

    async fn transfer_states(&self) -> Result<Vec<(String, String, String)>> {
        self.read(|conn| {
            let rows: Vec<StateRow> = sql_query(
                "SELECT id, source, state FROM transfer_runs ORDER BY started_at DESC, updated_at DESC, id DESC",
            )
            .load(conn)
            .map_err(sqlite_error)?;
            Ok(rows.into_iter().map(|r| (r.id, r.source, r.state)).collect())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    };

    use abi_stable::std_types::{RNone, RSome, RVec};
    use parallax_storage_abi::{
        EventKind, Execution, ExecutionEvent, ExecutionStatus, NewAuditEntry, OpenOptions,
    };

    use super::*;
    use crate::{
        archive::Store as _,
        config::{SqliteConfig, StorageConfig},
        contract::Contract,
        transfer::Store as _,
        validate::Page,
    };

    const T0: i64 = 1_705_314_615_123_456; // 2024-01-15T10:30:15.123456Z

    async fn backend(dir: &tempfile::TempDir) -> SqliteBackend {
        let cfg = StorageConfig {
            sqlite: SqliteConfig { path: dir.path().join("t.db"), ..SqliteConfig::default() },
            ..StorageConfig::default()
        };
        SqliteBackend::open(cfg, OpenOptions::default()).await.unwrap()
    }

    fn id(n: u32) -> String {
        format!("0190b3f2-7c1e-7a00-8000-{n:012}")
    }

    fn pattern(n: u32, name: &str, version: &str) -> Pattern {
        Pattern {
            id: id(n).into(),
            name: name.into(),
            version: version.into(),
            description: RSome(format!("describes {name}").into()),
            definition: format!(r#"{{"steps": ["word{n}"]}}"#).into(),
            created_at: T0 - i64::from(n),
            created_by: RSome("ops@example.com".into()),
        }
    }

    /// Execution `n` with `events` events, in `status`.
    fn record(n: u32, status: ExecutionStatus, events: u32) -> ExecutionRecord {
        let done = status.is_final();
        ExecutionRecord {
            execution: Execution {
                id: id(n).into(),
                pattern_name: "summarize".into(),
                pattern_version: "1.0.0".into(),
                status,
                input: RSome(format!(r#"{{"text": "needle{n} common"}}"#).into()),
                output: if done { RSome(r#"{"summary": "finished"}"#.into()) } else { RNone },
                error: RNone,
                started_at: T0 + i64::from(n) * 1_000_000,
                completed_at: if done { RSome(T0 + i64::from(n) * 1_000_000 + 5) } else { RNone },
                duration_ms: if done { RSome(0) } else { RNone },
                metadata: RSome(r#"{"team": "a"}"#.into()),
                tags: RVec::from(vec!["x".into()]),
            },
            events: (1..=events)
                .map(|k| ExecutionEvent {
                    id: id(100_000 + n * 100 + k).into(),
                    execution_id: id(n).into(),
                    seq: i64::from(k),
                    kind: EventKind::StepResult,
                    payload: format!(r#"{{"step": {k}}}"#).into(),
                    recorded_at: T0 + i64::from(n) * 1_000_000 + i64::from(k),
                })
                .collect(),
        }
    }

    async fn search(b: &SqliteBackend, term: &str) -> Vec<String> {
        let hits = b.search_executions(vec![term.into()], Page { limit: 100, after: None }).await.unwrap();
        let mut ids: Vec<String> = hits.into_iter().map(|(e, _)| e.id.to_string()).collect();
        ids.sort();
        ids
    }

    async fn search_patterns(b: &SqliteBackend, term: &str) -> Vec<String> {
        let hits = b.search_patterns(vec![term.into()], Page { limit: 100, after: None }).await.unwrap();
        let mut ids: Vec<String> = hits.into_iter().map(|(p, _)| p.id.to_string()).collect();
        ids.sort();
        ids
    }

    fn sorted<T: Clone, K: Ord>(v: &[T], key: impl Fn(&T) -> K) -> Vec<T> {
        let mut v = v.to_vec();
        v.sort_by_key(key);
        v
    }

    /// Pattern versions land exactly as given (id, times, author), are searchable at once, and a present id or
    /// a taken name and version is skipped without touching the stored row.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn patterns_land_as_given_searchable_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let b = backend(&dir).await;
        let given = vec![
            pattern(1, "summarize", "1.0.0"),
            pattern(2, "summarize", "1.1.0"),
            pattern(3, "translate", "1.0.0"),
        ];
        let imported = b.import_patterns(given.clone()).await.unwrap();
        assert_eq!(imported, Imported { inserted: 3, skipped: 0, events_inserted: 0 });
        let ids = vec![id(1), id(2), id(3), id(99)];
        let fetched = b.fetch_patterns(ids.clone()).await.unwrap();
        assert_eq!(sorted(&fetched, |p| p.id.to_string()), given);
        assert_eq!(b.get_pattern("summarize".into(), "1.1.0".into()).await.unwrap(), given[1]);
        assert_eq!(search_patterns(&b, "word3").await, [id(3)]);

        // The same ids again (changed), and a new id on a taken name and version: all skipped.
        let mut changed = given[0].clone();
        changed.description = RSome("other".into());
        let taken = Pattern { id: id(4).into(), ..pattern(4, "translate", "1.0.0") };
        let again = b.import_patterns(vec![changed, taken]).await.unwrap();
        assert_eq!(again, Imported { inserted: 0, skipped: 2, events_inserted: 0 });
        let fetched = b.fetch_patterns(vec![id(1), id(4)]).await.unwrap();
        assert_eq!(fetched, [given[0].clone()]);
        assert_eq!(search_patterns(&b, "word4").await, Vec::<String>::new());
        b.shutdown().await.unwrap();
    }

    /// Fetch by id returns what is present (executions with every event in `seq` order, audit entries) and
    /// leaves out absent ids.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fetch_by_id_returns_the_present_rows_whole() {
        let dir = tempfile::tempdir().unwrap();
        let b = backend(&dir).await;
        let records = vec![
            record(1, ExecutionStatus::Completed, 3),
            record(2, ExecutionStatus::Running, 1),
            record(3, ExecutionStatus::Pending, 0),
        ];
        b.import_executions(records.clone()).await.unwrap();
        let fetched = b.fetch_executions(vec![id(3), id(1), id(2), id(77)], None).await.unwrap();
        assert_eq!(sorted(&fetched, |r| r.execution.id.to_string()), records);
        assert!(b.fetch_executions(vec![], None).await.unwrap().is_empty());

        let entries: Vec<NewAuditEntry> = (1..=3)
            .map(|n| NewAuditEntry {
                id: RSome(id(500 + n).into()),
                timestamp: RSome(T0 + i64::from(n)),
                action: "login".into(),
                actor: RSome(format!("user{n}").into()),
                ip_address: if n == 2 { RNone } else { RSome("2001:db8::1".into()) },
                ..NewAuditEntry::default()
            })
            .collect();
        b.append_audit(entries).await.unwrap();
        // More ids than SQLite takes parameters (32766): they are bound as one JSON array.
        let mut ids: Vec<String> = (0..40_000).map(|n| id(1_000_000 + n)).collect();
        ids.extend([id(503), id(501), id(599)]);
        let audit = b.fetch_audit(ids).await.unwrap();
        let mut got: Vec<(String, i64, Option<String>)> = audit
            .iter()
            .map(|a| (a.id.to_string(), a.timestamp, a.actor.as_ref().map(|s| s.to_string()).into_option()))
            .collect();
        got.sort();
        assert_eq!(got, [(id(501), T0 + 1, Some("user1".into())), (id(503), T0 + 3, Some("user3".into()))]);
        b.shutdown().await.unwrap();
    }

    /// Only a pending or running row is replaced (with its events and search entries); a final row and an
    /// absent id are left alone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replace_unfinished_refreshes_only_pending_or_running_rows() {
        let dir = tempfile::tempdir().unwrap();
        let b = backend(&dir).await;
        b.import_executions(vec![
            record(1, ExecutionStatus::Running, 1),
            record(2, ExecutionStatus::Completed, 2),
            record(4, ExecutionStatus::Pending, 0),
        ])
        .await
        .unwrap();

        // 1 finished meanwhile with more events and a new input word; 2 is final (a changed copy must not land);
        // 3 is absent (must not be inserted); 4 is still pending, unchanged.
        let mut done1 = record(1, ExecutionStatus::Completed, 3);
        done1.execution.input = RSome(r#"{"text": "fresh1"}"#.into());
        let mut changed2 = record(2, ExecutionStatus::Failed, 0);
        changed2.execution.error = RSome(r#"{"message": "other"}"#.into());
        let replaced = b
            .replace_unfinished(vec![
                done1.clone(),
                changed2,
                record(3, ExecutionStatus::Running, 1),
                record(4, ExecutionStatus::Pending, 0),
                // The same id twice: replaced once, by the first.
                record(1, ExecutionStatus::Failed, 0),
            ])
            .await
            .unwrap();
        assert_eq!(replaced, 2);
        let now = b.fetch_executions(vec![id(1), id(2), id(3), id(4)], None).await.unwrap();
        let now = sorted(&now, |r| r.execution.id.to_string());
        assert_eq!(
            now,
            [done1, record(2, ExecutionStatus::Completed, 2), record(4, ExecutionStatus::Pending, 0)]
        );
        assert_eq!(search(&b, "fresh1").await, [id(1)]);
        assert_eq!(search(&b, "needle1").await, Vec::<String>::new(), "the old search entry is gone");
        assert_eq!(search(&b, "common").await, [id(2), id(4)]);
        assert_eq!(b.replace_unfinished(vec![record(1, ExecutionStatus::Failed, 0)]).await.unwrap(), 0);
        b.after_bulk_load().await.unwrap();
        b.shutdown().await.unwrap();
    }

    /// A transfer state is inserted, then replaced under its id (keeping its start); listing is newest first;
    /// a state that is not a JSON object is refused by the schema.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn transfer_states_are_saved_replaced_and_listed_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let b = backend(&dir).await;
        assert!(b.transfer_states().await.unwrap().is_empty());
        b.save_transfer_state(id(1), "sqlite /a.db".into(), r#"{"phase": "executions"}"#.into())
            .await
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(2));
        b.save_transfer_state(id(2), "export r at s3://b/".into(), r#"{"phase": "patterns"}"#.into())
            .await
            .unwrap();
        b.save_transfer_state(id(1), "sqlite /a.db".into(), r#"{"phase": "done"}"#.into()).await.unwrap();
        assert_eq!(
            b.transfer_states().await.unwrap(),
            [
                (id(2), "export r at s3://b/".into(), r#"{"phase": "patterns"}"#.into()),
                (id(1), "sqlite /a.db".into(), r#"{"phase": "done"}"#.into()),
            ]
        );
        let err = b.save_transfer_state(id(3), "x".into(), "[1]".into()).await.unwrap_err();
        assert!(err.to_string().contains(&id(3)), "{err}");
        assert_eq!(b.transfer_states().await.unwrap().len(), 2);
        b.shutdown().await.unwrap();
    }

    /// Rows per table of a database file, read with another SQLite (rusqlite), plus its integrity check.
    fn inspect(path: &std::path::Path) -> (String, [i64; 5]) {
        let conn = rusqlite::Connection::open(path).unwrap();
        let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
        let count = |t: &str| -> i64 {
            conn.query_row(&format!("SELECT count(*) FROM {t}"), [], |r| r.get(0)).unwrap()
        };
        (
            check,
            [
                count("patterns"),
                count("executions"),
                count("execution_events"),
                count("audit_logs"),
                count("execution_search"),
            ],
        )
    }

    /// A backup taken while a writer commits one execution with three events per transaction is one snapshot:
    /// it passes the integrity check, every execution has all its events and its search entry, and its rows
    /// lie between what was there before and after.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_backup_during_writes_is_one_consistent_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let b = Arc::new(backend(&dir).await);
        b.import_patterns(vec![pattern(1, "summarize", "1.0.0")]).await.unwrap();
        b.import_executions((1..=50).map(|n| record(n, ExecutionStatus::Completed, 3)).collect())
            .await
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (b, stop) = (b.clone(), stop.clone());
            tokio::spawn(async move {
                let mut n = 1000;
                while !stop.load(Ordering::Relaxed) {
                    b.import_executions(vec![record(n, ExecutionStatus::Completed, 3)]).await.unwrap();
                    n += 1;
                }
                n - 1000
            })
        };
        // Let the writer get going, then back up twice while it commits.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let mut reports = Vec::new();
        for k in 0..2 {
            let dest = dir.path().join(format!("backup-{k}.db"));
            let report = b.backup(dest.clone()).await.unwrap();
            let (check, [patterns, executions, events, audit, search]) = inspect(&dest);
            assert_eq!(check, "ok");
            // The sqlite3 command-line shell (another SQLite build, as an operator would check) agrees.
            let shell = std::process::Command::new("sqlite3")
                .arg(&dest)
                .arg("PRAGMA integrity_check")
                .output()
                .expect("the sqlite3 shell is missing: install Debian's sqlite3 package (./test.sh does)");
            assert_eq!(String::from_utf8_lossy(&shell.stdout).trim(), "ok", "{shell:?}");
            assert_eq!(patterns, 1);
            assert!(executions >= 50, "{executions}");
            assert_eq!(events, 3 * executions, "every execution with all its events");
            assert_eq!(search, executions, "every execution with its search entry");
            assert_eq!(audit, 0);
            assert_eq!(report.integrity.as_deref(), Some("ok"));
            assert_eq!(report.rows["executions"], executions as u64);
            assert_eq!(report.rows["execution_events"], events as u64);
            assert_eq!(report.files, 1);
            assert_eq!(report.bytes, std::fs::metadata(&dest).unwrap().len());
            let leftovers: Vec<_> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains(".partial-"))
                .collect();
            assert!(leftovers.is_empty(), "{leftovers:?}");
            reports.push(report);
        }
        stop.store(true, Ordering::Relaxed);
        let written = writer.await.unwrap();
        assert!(written > 0, "the writer committed while the backups ran");
        let total = 50 + written as u64;
        assert!(reports[0].rows["executions"] <= reports[1].rows["executions"]);
        assert!(reports[1].rows["executions"] <= total);
        let b = Arc::into_inner(b).unwrap();
        b.shutdown().await.unwrap();
    }

    /// A destination that exists, the database itself or one of its side files, or a relative path is
    /// refused, naming the path; nothing is written.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn backup_refuses_unsafe_destinations() {
        let dir = tempfile::tempdir().unwrap();
        let b = backend(&dir).await;
        let exists = dir.path().join("exists.db");
        std::fs::write(&exists, b"keep").unwrap();
        let db = dir.path().join("t.db");
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let cases = [
            (exists.clone(), "exists already"),
            (db.clone(), "own file"),
            (dir.path().join("t.db-wal"), "own file"),
            (dir.path().join("t.db-shm"), "own file"),
            (dir.path().join("sub/../t.db-shm"), "own file"),
            (PathBuf::from("relative.db"), "not an absolute path"),
            (dir.path().join("missing/b.db"), "does not exist"),
        ];
        for (dest, why) in cases {
            let err = b.backup(dest.clone()).await.unwrap_err();
            assert_eq!(err.kind(), parallax_storage_abi::ErrorKind::InvalidInput, "{err}");
            assert!(err.to_string().contains(why), "{dest:?}: {err}");
        }
        assert_eq!(std::fs::read(&exists).unwrap(), b"keep");
        b.shutdown().await.unwrap();
    }

    /// Why the backup has a connection of its own: the read pool's `query_only` connections cannot write the
    /// copy.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn vacuum_into_is_refused_on_a_query_only_connection() {
        let dir = tempfile::tempdir().unwrap();
        let b = backend(&dir).await;
        let dest = dir.path().join("via-pool.db");
        let target = dest.to_str().unwrap().to_string();
        let outcome = b
            .read(move |conn| {
                sql_query("VACUUM INTO ?1").bind::<Text, _>(target).execute(conn).map_err(sqlite_error)
            })
            .await;
        assert!(outcome.is_err(), "{outcome:?}");
        b.shutdown().await.unwrap();
    }
}
