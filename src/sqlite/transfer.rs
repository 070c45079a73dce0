//! The transfer primitives (`crate::transfer::Store`) of this backend: see `crate::transfer` for the rules.
//!
//! - Writes are jobs of the single writer (one savepoint of a group commit each), so the search entries are
//!   made as for any insert: the pattern insert trigger indexes a pattern version at once, the execution insert
//!   trigger queues an execution and the writer indexes the queue before the group commits.
//! - Fetches by id read through the read-only pool, with the row decoders of the queries and the archive scan.
//! - Transfer states are rows of `transfer_runs` (migration `2026-12-04-000000_transfer_runs`).
//! - `backup`: [`super::backup`].

use std::path::PathBuf;

use diesel::{connection::SimpleConnection, prelude::*, sql_query, sql_types::Text};
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
    let fresh: Vec<ExecutionRecord> =
        records.iter().filter(|r| ids.contains(r.execution.id.as_str())).cloned().collect();
    let inserted = import_executions(conn, &fresh)?;
    if inserted.inserted != deleted {
        return Err(Error::internal(format!(
            "replacing unfinished executions: {deleted} deleted but {} inserted",
            inserted.inserted
        )));
    }
    Ok(deleted)
}

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
                .filter(audit_logs::id.eq_any(&ids))
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
                .filter(patterns::id.eq_any(&ids))
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
