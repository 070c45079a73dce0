//! The transfer primitives ([`crate::transfer::Store`]) of this backend: persistence only, see
//! `crate::transfer` for the rules.
//!
//! Everything runs on the **primary**, on raw clients of the connection budget like the archive primitives
//! (`archive.rs`): reads that verify a copy must see what was just written, never a replica's past. Writes are
//! counted for this object's read-your-writes mark.
//!
//! - **Patterns** are inserted as given (id, `created_at`, `created_by` kept), the definition sent as text and
//!   cast to `jsonb` by the server (numbers kept as spelled), `ON CONFLICT DO NOTHING` covering both unique keys
//!   (the id, and `(name, version)`). `search_vector` is a generated column.
//! - **Fetch by id**: one query for the rows and one for their events (bounded by the rows' `started_at` range,
//!   so only those partitions are read), in one `REPEATABLE READ READ ONLY` transaction; decoded by the
//!   archive's decoders (executions, events, audit) and the contract's row type (patterns).
//! - **Replace unfinished**: the archive's import transaction, which first locks and deletes the present rows
//!   that are still pending or running (with their events), then inserts only those again.
//! - **NUL**: PostgreSQL stores no NUL character, neither in `text` nor in `jsonb` (`\u0000`). Imports check
//!   every value first ([`check_storable`]) and refuse naming the row and the field, instead of failing the
//!   whole batch with a message that names neither.
//! - **Backup** is refused: a PostgreSQL database is backed up with `pg_dump` (README "Backups").

use std::{
    collections::HashSet,
    path::PathBuf,
    sync::atomic::{AtomicUsize, Ordering},
};

use abi_stable::std_types::{ROption, RString};
use parallax_storage_abi::{transfer::BackupReport, AuditEntry, ExecutionStatus, Pattern};
use tokio_postgres::Client;
use uuid::Uuid;

use super::{
    archive::{
        audit_of, ids_of, records_of, uuid_of, At, Retry, AUDIT_COLUMNS, EVENTS_OF, EXECUTION_COLUMNS,
    },
    models::PatternRow,
    retention::Step,
    schema::patterns,
    PostgresBackend,
};
use crate::{
    archive::{ExecutionRecord, Imported},
    error::{Error, Result},
};

/// Why a backup of this backend is refused, and what to do instead.
pub const BACKUP_REFUSED: &str = "the plugin does not back up a PostgreSQL database: dump the whole database with \
     `pg_dump --format=custom --file parallax.dump \"$DATABASE_URL\"` and restore it with `pg_restore --no-owner \
     --dbname <new database> parallax.dump` (README section \"Backups\"; single tables are not enough: on \
     PostgreSQL 15 `pg_dump -t executions` leaves out the rows of its monthly partitions)";

/// Whether a JSON document's text holds a NUL: the escape `\u0000` (not `\\u0000`, an escaped backslash) or the
/// raw character.
fn doc_has_nul(text: &str) -> bool {
    if text.contains('\0') {
        return true;
    }
    let mut rest = text;
    while let Some(p) = rest.find('\\') {
        let after = &rest[p + 1..];
        if after.starts_with("u0000") {
            return true;
        }
        // Skip the escaped character (a backslash escaping a backslash is not an escape's start).
        let mut chars = after.chars();
        chars.next();
        rest = chars.as_str();
    }
    false
}

fn opt(v: &ROption<RString>) -> Option<&str> {
    v.as_ref().map(|s| s.as_str()).into_option()
}

/// The field of `docs` (JSON documents) or `texts` (plain text) holding a NUL, by name.
fn nul_field<'a>(
    docs: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
    texts: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
) -> Option<&'a str> {
    docs.into_iter()
        .find(|(_, v)| v.is_some_and(doc_has_nul))
        .or_else(|| texts.into_iter().find(|(_, v)| v.is_some_and(|v| v.contains('\0'))))
        .map(|(name, _)| name)
}

fn nul_refused(row: &str, field: &str) -> Error {
    Error::invalid(format!(
        "{row}: its {field} holds the NUL character (\\u0000), which PostgreSQL cannot store; remove or replace \
         it in that row where it comes from, then run the command again (a copy resumes where it stopped)"
    ))
}

/// Refuses, naming the execution and the field, a record PostgreSQL cannot store (a NUL anywhere).
pub(super) fn check_storable(records: &[ExecutionRecord]) -> Result<()> {
    for r in records {
        let e = &r.execution;
        let docs = [
            ("input", opt(&e.input)),
            ("output", opt(&e.output)),
            ("error", opt(&e.error)),
            ("metadata", opt(&e.metadata)),
        ];
        let texts = [
            ("pattern name", Some(e.pattern_name.as_str())),
            ("pattern version", Some(e.pattern_version.as_str())),
        ];
        let tag = e.tags.iter().any(|t| t.contains('\0')).then_some(("tags", Some("\0")));
        if let Some(field) = nul_field(docs, texts.into_iter().chain(tag)) {
            return Err(nul_refused(&format!("execution {}", e.id), field));
        }
        for v in &r.events {
            if doc_has_nul(&v.payload) {
                let field = format!("event {} (seq {}) payload", v.id, v.seq);
                return Err(nul_refused(&format!("execution {}", e.id), &field));
            }
        }
    }
    Ok(())
}

/// [`check_storable`] for audit entries.
pub(super) fn check_storable_audit(entries: &[AuditEntry]) -> Result<()> {
    for a in entries {
        let texts = [
            ("action", Some(a.action.as_str())),
            ("actor", opt(&a.actor)),
            ("resource type", opt(&a.resource_type)),
            ("resource id", opt(&a.resource_id)),
            ("ip address", opt(&a.ip_address)),
            ("user agent", opt(&a.user_agent)),
        ];
        if let Some(field) = nul_field([("details", opt(&a.details))], texts) {
            return Err(nul_refused(&format!("audit entry {}", a.id), field));
        }
    }
    Ok(())
}

/// [`check_storable`] for pattern versions.
fn check_storable_patterns(patterns: &[Pattern]) -> Result<()> {
    for p in patterns {
        let texts = [
            ("name", Some(p.name.as_str())),
            ("version", Some(p.version.as_str())),
            ("description", opt(&p.description)),
            ("createdBy", opt(&p.created_by)),
        ];
        if let Some(field) = nul_field([("definition", Some(p.definition.as_str()))], texts) {
            return Err(nul_refused(&pattern_name(p), field));
        }
    }
    Ok(())
}

fn pattern_name(p: &Pattern) -> String {
    format!("pattern {}@{} (id {})", p.name, p.version, p.id)
}

/// The statuses `replace_unfinished` may replace, for an SQL `IN` list.
fn unfinished_list() -> String {
    ExecutionStatus::ALL
        .iter()
        .filter(|s| !s.is_final())
        .map(|s| format!("'{}'", s.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Inside the import transaction of `replace_unfinished` (after the import lock and the `COPY` into
/// `parallax_import_executions`): locks the present executions among `ids` that are pending or running, deletes
/// their events and them, and leaves in the import table only their records. `false` when there is none.
pub(super) async fn clear_unfinished(
    c: &Client,
    ids: &[Uuid],
) -> std::result::Result<bool, tokio_postgres::Error> {
    let unfinished = unfinished_list();
    let rows = c
        .query(
            &format!(
                "SELECT id, started_at FROM executions WHERE id = ANY($1) AND status IN ({unfinished}) FOR UPDATE"
            ),
            &[&ids],
        )
        .await?;
    let mut locked = Vec::with_capacity(rows.len());
    let (mut lo, mut hi) = (At(i64::MAX), At(i64::MIN));
    for r in &rows {
        let at: At = r.try_get(1)?;
        (lo, hi) = (lo.min(at), hi.max(at));
        locked.push(r.try_get::<_, Uuid>(0)?);
    }
    if locked.is_empty() {
        return Ok(false);
    }
    c.execute(
        "DELETE FROM execution_events WHERE execution_id = ANY($1) AND execution_started_at >= $2 \
         AND execution_started_at <= $3",
        &[&locked, &lo, &hi],
    )
    .await?;
    c.execute(
        &format!(
            "DELETE FROM executions WHERE id = ANY($1) AND started_at >= $2 AND started_at <= $3 \
             AND status IN ({unfinished})"
        ),
        &[&locked, &lo, &hi],
    )
    .await?;
    c.execute("DELETE FROM parallax_import_executions WHERE NOT (id = ANY($1))", &[&locked]).await?;
    Ok(true)
}

fn cancelled(what: &str) -> Error {
    Error::new(
        parallax_storage_abi::ErrorKind::Timeout,
        format!("{what}: the statement was cancelled (statement_timeout?)"),
    )
}

impl crate::transfer::Store for PostgresBackend {
    async fn import_patterns(&self, patterns: Vec<Pattern>) -> Result<Imported> {
        // Reads through this object must not miss the change on a replica.
        let _counted = self.counts_as_write();
        let mut seen = HashSet::with_capacity(patterns.len());
        let mut rows = Vec::with_capacity(patterns.len());
        for p in &patterns {
            let id = uuid_of("pattern", &p.id)?;
            if seen.insert(id) {
                rows.push((id, p, At(p.created_at)));
            }
        }
        if rows.is_empty() {
            return Ok(Imported::default());
        }
        check_storable_patterns(&patterns)?;
        let insert =
            "INSERT INTO patterns (id, name, version, description, definition, created_at, created_by) \
             VALUES ($1, $2, $3, $4, $5::text::jsonb, $6, $7) ON CONFLICT DO NOTHING RETURNING 1";
        let s = self.session().await?;
        // The row being written: an error names it.
        let at = AtomicUsize::new(0);
        let mut retry = Retry::new("importing patterns");
        let inserted = loop {
            let step = s
                .transaction(&Retry::setup(""), "importing patterns", async |c| {
                    let stmt = c.prepare(insert).await?;
                    let mut inserted = 0u64;
                    for (i, (id, p, created)) in rows.iter().enumerate() {
                        at.store(i, Ordering::Relaxed);
                        let got = c
                            .query_opt(
                                &stmt,
                                &[
                                    id,
                                    &p.name.as_str(),
                                    &p.version.as_str(),
                                    &opt(&p.description),
                                    &p.definition.as_str(),
                                    created,
                                    &opt(&p.created_by),
                                ],
                            )
                            .await?;
                        inserted += got.is_some() as u64;
                    }
                    Ok(Step::Done(inserted))
                })
                .await
                .map_err(|e| {
                    Error::new(
                        e.kind(),
                        format!("{}: {}", pattern_name(rows[at.load(Ordering::Relaxed)].1), e.0.message),
                    )
                })?;
            if let Some(v) = retry.next(step).await? {
                break v;
            }
        };
        Ok(Imported { inserted, skipped: patterns.len() as u64 - inserted, events_inserted: 0 })
    }

    async fn fetch_executions(
        &self,
        ids: Vec<String>,
        within: Option<(i64, i64)>,
    ) -> Result<Vec<ExecutionRecord>> {
        let ids = ids_of("execution", &ids)?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let what = "reading executions back by id";
        let page = match within {
            // The plain bounds let the planner prune partitions.
            Some(_) => format!(
                "SELECT {EXECUTION_COLUMNS} FROM executions WHERE id = ANY($1) AND started_at >= $2 AND started_at <= $3"
            ),
            None => format!("SELECT {EXECUTION_COLUMNS} FROM executions WHERE id = ANY($1)"),
        };
        let s = self.session().await?;
        let step = s
            .transaction("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY", what, async |c| {
                let rows = match within {
                    Some((lo, hi)) => c.query(&page, &[&ids, &At(lo), &At(hi)]).await?,
                    None => c.query(&page, &[&ids]).await?,
                };
                if rows.is_empty() {
                    return Ok(Step::Done((rows, Vec::new())));
                }
                let (mut lo, mut hi) = (At(i64::MAX), At(i64::MIN));
                let mut found = Vec::with_capacity(rows.len());
                for r in &rows {
                    let at: At = r.try_get(7)?;
                    (lo, hi) = (lo.min(at), hi.max(at));
                    found.push(r.try_get::<_, Uuid>(0)?);
                }
                let ev = c.query(EVENTS_OF, &[&found, &lo, &hi]).await?;
                Ok(Step::Done((rows, ev)))
            })
            .await?;
        match step {
            Step::Done((rows, ev)) => records_of(&rows, &ev),
            _ => Err(cancelled(what)),
        }
    }

    async fn fetch_audit(&self, ids: Vec<String>) -> Result<Vec<AuditEntry>> {
        let ids = ids_of("audit entry", &ids)?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let s = self.session().await?;
        s.rows(
            &format!("SELECT {AUDIT_COLUMNS} FROM audit_logs WHERE id = ANY($1)"),
            &[&ids],
            "reading audit entries back by id",
        )
        .await?
        .iter()
        .map(audit_of)
        .collect()
    }

    async fn fetch_patterns(&self, ids: Vec<String>) -> Result<Vec<Pattern>> {
        let ids = ids_of("pattern", &ids)?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        use diesel::prelude::*;
        use diesel_async::RunQueryDsl;
        // The primary's pool (`with_conn`), never a replica: the caller compares with what it just wrote.
        self.with_conn(async move |conn| {
            let rows = patterns::table
                .filter(patterns::id.eq_any(&ids))
                .select(PatternRow::as_select())
                .load(conn)
                .await?;
            Ok(rows.into_iter().map(Pattern::from).collect())
        })
        .await
    }

    async fn replace_unfinished(&self, records: Vec<ExecutionRecord>) -> Result<u64> {
        Ok(self.import_records(records, true).await?.inserted)
    }

    async fn after_bulk_load(&self) -> Result<()> {
        let s = self.session().await?;
        // Autovacuum never analyzes a partitioned parent: without this the first queries plan on empty statistics.
        s.batch(
            "ANALYZE patterns, executions, execution_events, audit_logs",
            "refreshing the planner statistics after a bulk load (ANALYZE)",
        )
        .await
    }

    async fn backup(&self, destination: PathBuf) -> Result<BackupReport> {
        let _ = destination;
        Err(Error::unsupported(BACKUP_REFUSED))
    }

    async fn save_transfer_state(&self, id: String, source: String, state: String) -> Result<()> {
        let _counted = self.counts_as_write();
        let uuid = uuid_of("transfer state", &id)?;
        match serde_json::from_str::<serde_json::Value>(&state) {
            Ok(serde_json::Value::Object(_)) => {}
            _ => return Err(Error::invalid(format!("transfer state {id}: its state is not a JSON object"))),
        }
        if doc_has_nul(&state) || source.contains('\0') {
            return Err(nul_refused(&format!("transfer state {id}"), "state or source"));
        }
        let s = self.session().await?;
        s.client()
            .execute(
                "INSERT INTO transfer_runs (id, source, started_at, updated_at, state) \
                 VALUES ($1, $2, clock_timestamp(), clock_timestamp(), $3::text::jsonb) \
                 ON CONFLICT (id) DO UPDATE SET source = EXCLUDED.source, updated_at = EXCLUDED.updated_at, \
                 state = EXCLUDED.state",
                &[&uuid, &source, &state],
            )
            .await
            .map_err(|e| s.fail(e, &format!("saving transfer state {id}")))?;
        Ok(())
    }

    async fn transfer_states(&self) -> Result<Vec<(String, String, String)>> {
        let s = self.session().await?;
        let rows = s
            .rows(
                "SELECT id, source, state::text FROM transfer_runs ORDER BY started_at DESC, id DESC",
                &[],
                "reading the saved transfer states",
            )
            .await?;
        Ok(rows.iter().map(|r| (r.get::<_, Uuid>(0).hyphenated().to_string(), r.get(1), r.get(2))).collect())
    }
}
