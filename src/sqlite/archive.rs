//! Archive and restore primitives ([`crate::archive::Store`]) for this backend.
//!
//! - **Scans** read through the read-only pool, one read transaction per page: a keyset page of the selected
//!   rows in `(time, id)` order (walking the time index, with the selection rule of the cleanup,
//!   [`super::retention::selected`]), and for executions the page's events in one more query.
//! - **Deletes** are one job of the single writer per call (one savepoint of a group commit): of the given
//!   ids, the executions in a final status lose their full-text document, search mapping, queued search entry
//!   and events, then go themselves, in that order and in one transaction, so no event or search entry is ever
//!   left without its execution. Absent or unfinished ids are left alone (a resumed run may pass them again).
//! - **Imports** are one writer job per call: each execution whose id is absent is inserted exactly as
//!   archived (`ON CONFLICT (id) DO NOTHING`: a present row is skipped whole, events included), with its
//!   events (ids, `seq`, times). The insert trigger queues it for full-text indexing, and the writer indexes
//!   the queue before the group commits, as for any new execution, so search finds restored rows at once.

use diesel::{
    dsl::sql,
    prelude::*,
    sql_query,
    sql_types::{BigInt, Bool, Text},
};
use parallax_storage_abi::{retention::CleanupTarget, AuditEntry, Execution, ExecutionEvent};

use super::{
    chain,
    models::{AuditRow, ChainedAuditRow, EventRow, ExecutionRow},
    retention::{final_statuses, selected, target},
    schema::{audit_logs, execution_events, executions},
    SqliteBackend,
};
use crate::{
    archive::{Deleted, ExecutionRecord, Imported, Store},
    audit_chain::extend,
    error::{sqlite_error, Error, Result, SqliteFailure},
    rules::{Key, Selection},
};

/// An audit row read with raw SQL (the scan names its index).
#[derive(QueryableByName)]
#[diesel(table_name = audit_logs, check_for_backend(diesel::sqlite::Sqlite))]
struct AuditByName {
    id: String,
    timestamp: i64,
    action: String,
    actor: Option<String>,
    resource_type: Option<String>,
    resource_id: Option<String>,
    details: Option<String>,
    ip_address: Option<String>,
    user_agent: Option<String>,
}

impl From<AuditByName> for AuditEntry {
    fn from(r: AuditByName) -> Self {
        AuditEntry::from(AuditRow {
            id: r.id,
            timestamp: r.timestamp,
            action: r.action,
            actor: r.actor,
            resource_type: r.resource_type,
            resource_id: r.resource_id,
            details: r.details,
            ip_address: r.ip_address,
            user_agent: r.user_agent,
        })
    }
}

#[derive(QueryableByName)]
struct IdRow {
    #[diesel(sql_type = Text)]
    id: String,
}

/// `ids` as one JSON array, bound once and read with `json_each` (no limit on the number of ids).
pub(super) fn json_ids<S: AsRef<str>>(ids: &[S]) -> Result<String> {
    serde_json::to_string(&ids.iter().map(AsRef::as_ref).collect::<Vec<&str>>())
        .map_err(|e| Error::internal(format!("encoding ids: {e}")))
}

pub(super) const IDS: &str = "(SELECT value FROM json_each(?1))";

/// The page's SQL: the selection below `?1, ?2`, after `?3, ?4`, oldest first, on the time index.
fn page_sql(sel: &Selection, limit: usize) -> String {
    let t = target(sel.target);
    format!(
        "SELECT * FROM {src} WHERE {cond} AND {at} >= ?3 AND ({at}, id) > (?3, ?4) ORDER BY {at}, id LIMIT {limit}",
        src = t.source,
        cond = selected(sel),
        at = t.at,
    )
}

/// Binds a page's four keys; no `after` is a key below every row.
macro_rules! page_query {
    ($sel:expr, $after:expr, $limit:expr) => {{
        let (after_at, after_id) = $after.clone().unwrap_or((i64::MIN, String::new()));
        sql_query(page_sql(&$sel, $limit))
            .bind::<BigInt, _>($sel.before.0)
            .bind::<Text, _>($sel.before.1.clone())
            .bind::<BigInt, _>(after_at)
            .bind::<Text, _>(after_id)
    }};
}

fn scan_executions(
    conn: &mut SqliteConnection,
    sel: &Selection,
    after: &Option<Key>,
    limit: usize,
) -> Result<Vec<ExecutionRecord>> {
    let rows: Vec<ExecutionRow> = page_query!(sel, after, limit).load(conn).map_err(sqlite_error)?;
    with_events(conn, rows)
}

/// The executions of `rows`, in their order, each with all its events in `seq` order (one more query).
pub(super) fn with_events(
    conn: &mut SqliteConnection,
    rows: Vec<ExecutionRow>,
) -> Result<Vec<ExecutionRecord>> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let ids = json_ids(&rows.iter().map(|r| r.id.as_str()).collect::<Vec<_>>())?;
    let events: Vec<EventRow> = execution_events::table
        .filter(sql::<Bool>("execution_id IN (SELECT value FROM json_each(").bind::<Text, _>(ids).sql("))"))
        .order((execution_events::execution_id, execution_events::seq))
        .select(EventRow::as_select())
        .load(conn)
        .map_err(sqlite_error)?;
    let mut by_execution: std::collections::HashMap<String, Vec<ExecutionEvent>> = Default::default();
    for ev in events {
        by_execution.entry(ev.execution_id.clone()).or_default().push(ExecutionEvent::try_from(ev)?);
    }
    rows.into_iter()
        .map(|r| {
            let events = by_execution.remove(&r.id).unwrap_or_default();
            Ok(ExecutionRecord { execution: Execution::try_from(r)?, events })
        })
        .collect()
}

/// Deletes the final executions among `ids` with everything that belongs to them.
fn delete_executions(conn: &mut SqliteConnection, ids: &[String]) -> Result<Deleted> {
    let given = json_ids(ids)?;
    let finals: Vec<IdRow> = sql_query(format!(
        "SELECT id FROM executions WHERE id IN {IDS} AND status IN ({})",
        final_statuses()
    ))
    .bind::<Text, _>(&given)
    .load(conn)
    .map_err(sqlite_error)?;
    if finals.is_empty() {
        return Ok(Deleted::default());
    }
    let ids = json_ids(&finals.iter().map(|r| r.id.as_str()).collect::<Vec<_>>())?;
    let run = |conn: &mut SqliteConnection, sql: &str| -> Result<u64> {
        Ok(sql_query(sql).bind::<Text, _>(&ids).execute(conn).map_err(sqlite_error)? as u64)
    };
    run(
        conn,
        &format!(
            "DELETE FROM executions_fts WHERE rowid IN \
             (SELECT doc_id FROM execution_search WHERE execution_id IN {IDS})"
        ),
    )?;
    run(conn, &format!("DELETE FROM execution_search WHERE execution_id IN {IDS}"))?;
    run(conn, &format!("DELETE FROM execution_search_queue WHERE execution_id IN {IDS}"))?;
    let events = run(conn, &format!("DELETE FROM execution_events WHERE execution_id IN {IDS}"))?;
    let rows = run(conn, &format!("DELETE FROM executions WHERE id IN {IDS}"))?;
    Ok(Deleted { rows, events })
}

/// The row an archived execution is stored as.
fn execution_row(e: &Execution) -> Result<ExecutionRow> {
    let opt = |o: &abi_stable::std_types::ROption<abi_stable::std_types::RString>| {
        o.as_ref().map(|s| s.to_string()).into_option()
    };
    let tags: Vec<&str> = e.tags.iter().map(|t| t.as_str()).collect();
    Ok(ExecutionRow {
        id: e.id.to_string(),
        pattern_name: e.pattern_name.to_string(),
        pattern_version: e.pattern_version.to_string(),
        status: e.status.as_str().to_string(),
        input: opt(&e.input),
        output: opt(&e.output),
        error: opt(&e.error),
        started_at: e.started_at,
        completed_at: e.completed_at.into_option(),
        duration_ms: e.duration_ms.into_option(),
        metadata: opt(&e.metadata),
        tags: serde_json::to_string(&tags).map_err(|err| Error::internal(err.to_string()))?,
    })
}

/// `e` with what it was doing and which record, keeping its kind.
fn restoring(what: &str, id: &str, e: Error) -> Error {
    Error::new(e.kind(), format!("restoring {what} {id}: {}", e.0.message))
}

pub(super) fn import_executions(
    conn: &mut SqliteConnection,
    records: &[ExecutionRecord],
) -> Result<Imported> {
    let mut done = Imported::default();
    for r in records {
        let id = r.execution.id.as_str();
        let row = execution_row(&r.execution)?;
        let inserted = diesel::insert_into(executions::table)
            .values(&row)
            .on_conflict(executions::id)
            .do_nothing()
            .execute(conn)
            .map_err(|e| restoring("execution", id, sqlite_error(e)))?;
        if inserted == 0 {
            done.skipped += 1;
            continue;
        }
        done.inserted += 1;
        // One row per statement: diesel keeps the prepared statement, where a multi-row insert would be
        // prepared anew for every execution.
        for ev in &r.events {
            let row = EventRow {
                id: ev.id.to_string(),
                execution_id: id.to_string(),
                seq: ev.seq,
                kind: ev.kind.as_str().to_string(),
                payload: ev.payload.to_string(),
                recorded_at: ev.recorded_at,
            };
            done.events_inserted += diesel::insert_into(execution_events::table)
                .values(&row)
                .execute(conn)
                .map_err(|e| restoring("the events of execution", id, sqlite_error(e)))?
                as u64;
        }
    }
    Ok(done)
}

/// Inserts the entries whose id is absent, each chained after the head as it is inserted (so the inserted ones
/// get contiguous sequence numbers, the skipped ones none); the writer's transaction holds the write lock.
fn import_audit(conn: &mut SqliteConnection, entries: &[AuditEntry]) -> Result<Imported> {
    let mut done = Imported::default();
    let mut head = chain::read_head(conn)?;
    for a in entries {
        let mut next = head;
        let link = extend(&mut next, [a]).remove(0);
        let inserted = diesel::insert_into(audit_logs::table)
            .values(ChainedAuditRow::new(AuditRow::from(a), &link))
            .on_conflict(audit_logs::id)
            .do_nothing()
            .execute(conn)
            .map_err(|e| restoring("audit entry", a.id.as_str(), sqlite_error(e)))?;
        if inserted == 0 {
            done.skipped += 1;
        } else {
            done.inserted += 1;
            head = next;
        }
    }
    if done.inserted > 0 {
        chain::write_head(conn, &head)?;
    }
    Ok(done)
}

impl Store for SqliteBackend {
    async fn scan_executions(
        &self,
        sel: Selection,
        after: Option<Key>,
        limit: usize,
    ) -> Result<Vec<ExecutionRecord>> {
        if sel.target != CleanupTarget::Executions {
            return Err(Error::internal("scan_executions needs a selection of executions"));
        }
        // One read transaction: the page and its events are one snapshot.
        self.read(move |conn| {
            conn.transaction(|conn| scan_executions(conn, &sel, &after, limit).map_err(SqliteFailure))
                .map_err(Error::from)
        })
        .await
    }

    async fn scan_audit(&self, sel: Selection, after: Option<Key>, limit: usize) -> Result<Vec<AuditEntry>> {
        if sel.target != CleanupTarget::AuditLogs {
            return Err(Error::internal("scan_audit needs a selection of audit entries"));
        }
        self.read(move |conn| {
            let rows: Vec<AuditByName> = page_query!(sel, after, limit).load(conn).map_err(sqlite_error)?;
            Ok(rows.into_iter().map(AuditEntry::from).collect())
        })
        .await
    }

    async fn delete_executions(&self, ids: Vec<String>) -> Result<Deleted> {
        if ids.is_empty() {
            return Ok(Deleted::default());
        }
        self.writer.write("deleting archived executions", move |conn| delete_executions(conn, &ids)).await
    }

    async fn delete_audit(&self, ids: Vec<String>) -> Result<Deleted> {
        if ids.is_empty() {
            return Ok(Deleted::default());
        }
        self.writer
            .write("deleting archived audit entries", move |conn| {
                let ids = json_ids(&ids)?;
                let rows = sql_query(format!("DELETE FROM audit_logs WHERE id IN {IDS}"))
                    .bind::<Text, _>(&ids)
                    .execute(conn)
                    .map_err(sqlite_error)? as u64;
                Ok(Deleted { rows, events: 0 })
            })
            .await
    }

    async fn import_executions(&self, records: Vec<ExecutionRecord>) -> Result<Imported> {
        if records.is_empty() {
            return Ok(Imported::default());
        }
        self.writer.write("restoring executions", move |conn| import_executions(conn, &records)).await
    }

    async fn import_audit(&self, entries: Vec<AuditEntry>) -> Result<Imported> {
        if entries.is_empty() {
            return Ok(Imported::default());
        }
        self.writer.write("restoring audit entries", move |conn| import_audit(conn, &entries)).await
    }
}

#[cfg(test)]
mod tests {
    use abi_stable::std_types::{RNone, RSome, RVec};
    use parallax_storage_abi::{
        AuditQuery, EventKind, ExecutionStatus, NewAuditEntry, NewEvent, NewExecution, OpenOptions,
    };

    use super::*;
    use crate::{
        archive::{ArchiveState, Phase},
        config::{SqliteConfig, StorageConfig},
        contract::Contract,
        retention::{Run, RunStatus, Store as _, Trigger},
        rules::{Completion, MIN_ID},
        validate::Page,
    };

    const T0: i64 = 1_705_314_615_123_456; // 2024-01-15T10:30:15.123456Z

    async fn backend(dir: &tempfile::TempDir) -> SqliteBackend {
        let cfg = StorageConfig {
            sqlite: SqliteConfig { path: dir.path().join("a.db"), ..SqliteConfig::default() },
            ..StorageConfig::default()
        };
        SqliteBackend::open(cfg, OpenOptions::default()).await.unwrap()
    }

    fn id(n: u32) -> String {
        format!("0190b3f2-7c1e-7a00-8000-{n:012}")
    }

    /// Execution `n` started at `T0 + n` seconds, with two events, finished with `status` (or left running).
    async fn execution(b: &SqliteBackend, n: u32, status: Option<ExecutionStatus>) {
        let e = NewExecution {
            id: RSome(id(n).into()),
            pattern_name: "summarize".into(),
            pattern_version: "1.0.0".into(),
            status: ExecutionStatus::Running,
            input: RSome(format!(r#"{{"text": "needle{n} common", "n": {n}}}"#).into()),
            metadata: RSome(r#"{"team": "a"}"#.into()),
            tags: RVec::from(vec!["x".into(), "y".into()]),
            started_at: RSome(T0 + i64::from(n) * 1_000_000),
        };
        b.create_execution(e, true).await.unwrap();
        for k in 1..=2u32 {
            let ev = NewEvent {
                kind: EventKind::StepResult,
                payload: format!(r#"{{"step": {k}}}"#).into(),
                recorded_at: RSome(T0 + i64::from(n) * 1_000_000 + i64::from(k)),
            };
            b.append_event(id(n), id(1000 + n * 10 + k), ev).await.unwrap();
        }
        if let Some(status) = status {
            let c = Completion {
                status,
                output: RSome(r#"{"summary": "done"}"#.into()),
                error: RNone,
                completed_at: T0 + i64::from(n) * 1_000_000 + 500_123,
            };
            b.complete_execution(id(n), c).await.unwrap();
        }
    }

    fn everything(target: CleanupTarget) -> Selection {
        Selection { target, before: (i64::MAX, MIN_ID.to_string()), include_unfinished: false }
    }

    async fn search(b: &SqliteBackend, term: &str) -> Vec<String> {
        let hits = b.search_executions(vec![term.into()], Page { limit: 100, after: None }).await.unwrap();
        let mut ids: Vec<String> = hits.into_iter().map(|(e, _)| e.id.to_string()).collect();
        ids.sort();
        ids
    }

    /// Scan in pages, delete, restore: the restored executions equal the originals, with their events, and
    /// full-text search finds them again (their FTS documents are made as for any new execution).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn restored_executions_are_equal_and_found_by_search() {
        let dir = tempfile::tempdir().unwrap();
        let b = backend(&dir).await;
        for n in 1..=5 {
            let status = match n {
                3 => None,
                4 => Some(ExecutionStatus::Failed),
                _ => Some(ExecutionStatus::Completed),
            };
            execution(&b, n, status).await;
        }

        // Keyset pages of two, oldest first; the running execution (3) is not selected.
        let sel = everything(CleanupTarget::Executions);
        let mut scanned: Vec<ExecutionRecord> = Vec::new();
        loop {
            let after = scanned.last().map(|r| (r.execution.started_at, r.execution.id.to_string()));
            let page = b.scan_executions(sel.clone(), after, 2).await.unwrap();
            assert!(page.len() <= 2);
            if page.is_empty() {
                break;
            }
            scanned.extend(page);
        }
        let ids: Vec<String> = scanned.iter().map(|r| r.execution.id.to_string()).collect();
        assert_eq!(ids, [id(1), id(2), id(4), id(5)]);
        for r in &scanned {
            let id = r.execution.id.to_string();
            assert_eq!(r.execution, b.get_execution(id.clone()).await.unwrap());
            assert_eq!(r.events, b.list_events(id).await.unwrap());
            assert_eq!(r.events.len(), 2);
        }
        // The limit is exclusive: a selection below execution 4 holds 1 and 2.
        let below = Selection { before: (scanned[2].execution.started_at, id(4)), ..sel.clone() };
        assert_eq!(b.scan_executions(below, None, 10).await.unwrap().len(), 2);

        // Delete by id: the running one and an unknown id are left alone; a repeat deletes nothing.
        let mut doomed = ids.clone();
        doomed.extend([id(3), id(99)]);
        assert_eq!(b.delete_executions(doomed.clone()).await.unwrap(), Deleted { rows: 4, events: 8 });
        assert_eq!(b.delete_executions(doomed).await.unwrap(), Deleted::default());
        assert_eq!(search(&b, "common").await, [id(3)]);
        assert_eq!(search(&b, "needle1").await, Vec::<String>::new());
        assert!(b.get_execution(id(1)).await.is_err());

        // Restore: everything comes back as it was, and search finds it.
        let imported = b.import_executions(scanned.clone()).await.unwrap();
        assert_eq!(imported, Imported { inserted: 4, skipped: 0, events_inserted: 8 });
        for r in &scanned {
            let id = r.execution.id.to_string();
            assert_eq!(r.execution, b.get_execution(id.clone()).await.unwrap());
            assert_eq!(r.events, b.list_events(id).await.unwrap());
        }
        assert_eq!(search(&b, "common").await, [id(1), id(2), id(3), id(4), id(5)]);
        assert_eq!(search(&b, "needle4").await, [id(4)]);
        assert_eq!(b.scan_executions(sel.clone(), None, 10).await.unwrap(), scanned);

        // Again: every record is present and skipped whole; a changed copy does not overwrite the stored row.
        let mut changed = scanned.clone();
        changed[0].execution.output = RSome(r#"{"summary": "other"}"#.into());
        changed[0].events.clear();
        let again = b.import_executions(changed).await.unwrap();
        assert_eq!(again, Imported { inserted: 0, skipped: 4, events_inserted: 0 });
        assert_eq!(b.scan_executions(sel, None, 10).await.unwrap(), scanned);
        b.shutdown().await.unwrap();
    }

    /// A record the schema refuses fails the whole import with the record named; nothing of it is kept.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refused_record_fails_the_import_by_name_and_keeps_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let b = backend(&dir).await;
        execution(&b, 1, Some(ExecutionStatus::Completed)).await;
        execution(&b, 2, Some(ExecutionStatus::Completed)).await;
        let mut records = b.scan_executions(everything(CleanupTarget::Executions), None, 10).await.unwrap();
        b.delete_executions(vec![id(1), id(2)]).await.unwrap();
        records[1].execution.input = RSome("not json".into());
        let err = b.import_executions(records).await.unwrap_err();
        assert!(err.to_string().contains(&format!("restoring execution {}", id(2))), "{err}");
        assert!(b.get_execution(id(1)).await.is_err(), "the batch is one transaction");
        assert_eq!(search(&b, "common").await, Vec::<String>::new());
        b.shutdown().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn audit_entries_scan_delete_and_restore_by_id() {
        let dir = tempfile::tempdir().unwrap();
        let b = backend(&dir).await;
        let entries: Vec<NewAuditEntry> = (1..=5)
            .map(|n| NewAuditEntry {
                id: RSome(id(n).into()),
                // Two entries share a time: the id orders them.
                timestamp: RSome(T0 + i64::from(n.min(4))),
                action: "login".into(),
                actor: RSome(format!("user{n}").into()),
                details: RSome(r#"{"ok": true}"#.into()),
                ip_address: RSome("10.0.0.1".into()),
                ..NewAuditEntry::default()
            })
            .collect();
        b.append_audit(entries).await.unwrap();
        let sel = Selection { before: (T0 + 4, id(5)), ..everything(CleanupTarget::AuditLogs) };
        let first = b.scan_audit(sel.clone(), None, 3).await.unwrap();
        let after = first.last().map(|a| (a.timestamp, a.id.to_string()));
        let rest = b.scan_audit(sel.clone(), after, 3).await.unwrap();
        let all: Vec<AuditEntry> = first.into_iter().chain(rest).collect();
        assert_eq!(all.iter().map(|a| a.id.to_string()).collect::<Vec<_>>(), [id(1), id(2), id(3), id(4)]);

        let ids: Vec<String> = all.iter().map(|a| a.id.to_string()).collect();
        assert_eq!(b.delete_audit(ids.clone()).await.unwrap(), Deleted { rows: 4, events: 0 });
        assert_eq!(b.delete_audit(ids).await.unwrap(), Deleted::default());
        let q = || b.query_audit(AuditQuery::default(), Page { limit: 10, after: None });
        assert_eq!(q().await.unwrap().len(), 1);

        assert_eq!(
            b.import_audit(all.clone()).await.unwrap(),
            Imported { inserted: 4, skipped: 0, events_inserted: 0 }
        );
        assert_eq!(
            b.import_audit(all.clone()).await.unwrap(),
            Imported { inserted: 0, skipped: 4, events_inserted: 0 }
        );
        let mut stored = q().await.unwrap();
        stored.reverse();
        assert_eq!(&stored[..4], &all[..]);
        b.shutdown().await.unwrap();
    }

    /// The archive state is kept in the `archive` column; a plain cleanup's record has none.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn run_records_keep_the_archive_state() {
        let dir = tempfile::tempdir().unwrap();
        let b = backend(&dir).await;
        let plain = Run { started_at: 10, ..Run::start(Trigger::Manual, None) };
        let mut archived = Run { started_at: 20, ..Run::start(Trigger::Manual, None) };
        archived.archive = Some(ArchiveState {
            target: CleanupTarget::Executions,
            destination: "s3://backups/parallax/".into(),
            phase: Phase::Writing,
            manifest: None,
            objects_done: 0,
            keep: false,
            rows: Default::default(),
        });
        b.save_run(plain.clone()).await.unwrap();
        b.save_run(archived.clone()).await.unwrap();
        assert_eq!(b.runs(10).await.unwrap(), [archived.clone(), plain.clone()]);

        // The same run moves on: the record is replaced, archive state included.
        let state = archived.archive.as_mut().unwrap();
        state.phase = Phase::Deleting;
        state.manifest = Some("executions/manifests/r.json".into());
        state.objects_done = 3;
        state.rows.insert("executions".into(), 12);
        archived.status = RunStatus::Succeeded;
        b.save_run(archived.clone()).await.unwrap();
        assert_eq!(b.runs(10).await.unwrap(), [archived.clone(), plain]);
        let view = b.runs(1).await.unwrap()[0].record().archive.unwrap();
        assert_eq!((view.phase.as_str(), view.objects_done), ("deleting", 3));
        b.shutdown().await.unwrap();
    }
}
