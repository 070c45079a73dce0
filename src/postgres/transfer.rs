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

/// Inserts or replaces a transfer state: `(id, source, state JSON text)`.
pub(super) const SAVE_STATE: &str = "INSERT INTO transfer_runs (id, source, started_at, updated_at, state) \
     VALUES ($1, $2, clock_timestamp(), clock_timestamp(), $3::text::jsonb) \
     ON CONFLICT (id) DO UPDATE SET source = EXCLUDED.source, updated_at = EXCLUDED.updated_at, \
     state = EXCLUDED.state";

/// A transfer state's id, checked like [`crate::transfer::Store::save_transfer_state`] checks it.
fn checked_state(id: &str, source: &str, state: &str) -> Result<Uuid> {
    let uuid = uuid_of("transfer state", id)?;
    match serde_json::from_str::<serde_json::Value>(state) {
        Ok(serde_json::Value::Object(_)) => {}
        _ => return Err(Error::invalid(format!("transfer state {id}: its state is not a JSON object"))),
    }
    if doc_has_nul(state) || source.contains('\0') {
        return Err(nul_refused(&format!("transfer state {id}"), "state or source"));
    }
    Ok(uuid)
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
        let at = AtomicUsize::new(usize::MAX);
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
                .map_err(|e| match rows.get(at.load(Ordering::Relaxed)) {
                    Some((_, p, _)) => Error::new(e.kind(), format!("{}: {}", pattern_name(p), e.0.message)),
                    None => e,
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
        Ok(self.import_records(records, super::archive::ImportMode::Replace).await?.inserted)
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
        let uuid = checked_state(&id, &source, &state)?;
        let s = self.session().await?;
        s.client()
            .execute(SAVE_STATE, &[&uuid, &source, &state])
            .await
            .map_err(|e| s.fail(e, &format!("saving transfer state {id}")))?;
        Ok(())
    }

    fn lands_owned(&self) -> bool {
        true
    }

    async fn land_owned(
        &self,
        records: Vec<ExecutionRecord>,
        id: String,
        source: String,
        state: String,
    ) -> Result<Imported> {
        let uuid = checked_state(&id, &source, &state)?;
        let mode = super::archive::ImportMode::Owned { id: uuid, source: &source, state: &state };
        self.import_records(records, mode).await
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

#[cfg(test)]
mod tests {
    use abi_stable::std_types::{ROption, RString};
    use parallax_storage_abi::{EventKind, ExecutionEvent};
    use serde_json::json;

    use super::*;
    use crate::{
        archive::Store as _,
        contract::Contract,
        postgres::archive::tests::{backend, count, micros, record, some},
        transfer::Store as _,
        validate::Page,
    };

    fn pattern(i: u128, name: &str, version: &str, definition: &str, at: &str) -> Pattern {
        Pattern {
            id: Uuid::from_u128(0x0190_0000_0000_7000_b000_0000_0000_0000 + i).to_string().into(),
            name: name.into(),
            version: version.into(),
            description: if i % 2 == 0 {
                ROption::RSome(format!("zebra pattern {i}").into())
            } else {
                ROption::RNone
            },
            definition: definition.into(),
            created_at: micros(at),
            created_by: if i % 2 == 1 { ROption::RSome("ada@example.com".into()) } else { ROption::RNone },
        }
    }

    fn parsed(text: &str) -> serde_json::Value {
        serde_json::from_str(text).unwrap()
    }

    /// `p` as read back: the definition compared as parsed JSON (PostgreSQL's jsonb reorders keys).
    fn same_pattern(got: &Pattern, want: &Pattern) {
        assert_eq!(parsed(&got.definition), parsed(&want.definition), "{}", want.name);
        let blank = |p: &Pattern| Pattern { definition: RString::new(), ..p.clone() };
        assert_eq!(blank(got), blank(want));
    }

    fn sorted<T: Clone, K: Ord>(v: &[T], key: impl Fn(&T) -> K) -> Vec<T> {
        let mut v = v.to_vec();
        v.sort_by_key(key);
        v
    }

    #[test]
    fn nul_is_found_in_documents_and_only_there() {
        for (text, nul) in [
            (r#"{"a":"x\u0000y"}"#, true),
            (r#"{"a":"\\\u0000"}"#, true),
            (r#"{"a":"\\u0000"}"#, false),
            (r#"{"a":"\\\\u0000"}"#, false),
            (r#"{"a":"\u00001"}"#, true),
            (r#"{"a":"\u0001","ü":"\\"}"#, false),
            ("{\"a\":\"\0\"}", true),
            (r#"{"a":"é\"\u0000"}"#, true),
            ("\\", false),
        ] {
            assert_eq!(doc_has_nul(text), nul, "{text}");
        }
        assert_eq!(unfinished_list(), "'pending', 'running'");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn patterns_import_as_given_skip_either_key_and_read_back() {
        let (b, c) = backend().await;
        let given = vec![
            pattern(
                1,
                "alpha",
                "1.0.0",
                r#"{"steps":[{"n":2.50}],"big":123456789012345678901234567890}"#,
                "2019-01-02T03:04:05.678901Z",
            ),
            pattern(2, "alpha", "2.0.0", r#"{"b":1,"a":{"ü":"ß"}}"#, "2020-01-01T00:00:00Z"),
            pattern(3, "beta", "1.0.0", r#"{"k":null}"#, "2018-06-30T23:59:59.999999Z"),
        ];
        let mut twice = given.clone();
        twice.push(given[0].clone());
        assert_eq!(
            b.import_patterns(twice).await.unwrap(),
            Imported { inserted: 3, skipped: 1, events_inserted: 0 }
        );
        // Present id, or present name@version under another id: skipped, the row left as it is.
        let taken = pattern(9, "alpha", "1.0.0", r#"{"other":true}"#, "2021-01-01T00:00:00Z");
        let mut again = given.clone();
        again.push(taken.clone());
        assert_eq!(
            b.import_patterns(again).await.unwrap(),
            Imported { inserted: 0, skipped: 4, events_inserted: 0 }
        );
        assert_eq!(count(&c, "SELECT count(*) FROM patterns").await, 3);

        let mut ids: Vec<String> = given.iter().map(|p| p.id.to_string()).collect();
        ids.push(taken.id.to_string());
        let got = sorted(&b.fetch_patterns(ids).await.unwrap(), |p| p.id.to_string());
        assert_eq!(got.len(), 3);
        for (g, w) in got.iter().zip(&given) {
            same_pattern(g, w);
        }
        // The number is stored as spelled (cast by the server, not through a float).
        let big: String = c
            .query_one(
                "SELECT definition->>'big' FROM patterns WHERE name = 'alpha' AND version = '1.0.0'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(big, "123456789012345678901234567890");
        // The ordinary reads and search see them.
        same_pattern(&b.get_pattern("alpha".into(), "2.0.0".into()).await.unwrap(), &given[1]);
        let hits = b.search_patterns(vec!["zebra".into()], Page { limit: 10, after: None }).await.unwrap();
        assert_eq!(
            hits.iter().map(|h| h.0.id.to_string()).collect::<Vec<_>>(),
            vec![given[1].id.to_string()]
        );
        assert!(b.fetch_patterns(Vec::new()).await.unwrap().is_empty());
        let bad = b.fetch_patterns(vec!["nope".into()]).await.unwrap_err();
        assert!(bad.to_string().contains("pattern id \"nope\" is not a UUID"), "{bad}");

        // A failing row is named (here a name longer than the column).
        let long = pattern(10, &"x".repeat(300), "1.0.0", "{}", "2020-01-01T00:00:00Z");
        let err = b
            .import_patterns(vec![pattern(11, "gamma", "1.0.0", "{}", "2020-01-01T00:00:00Z"), long.clone()])
            .await
            .unwrap_err();
        assert!(err.to_string().contains(&format!("@1.0.0 (id {})", long.id)), "{err}");
        assert!(err.to_string().contains("too long"), "{err}");
        assert_eq!(count(&c, "SELECT count(*) FROM patterns").await, 3, "one transaction: nothing written");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn executions_fetch_by_id_with_their_events_from_old_months() {
        let (b, c) = backend().await;
        let records: Vec<ExecutionRecord> = (0..6)
            .map(|i| {
                let at = match i {
                    0..=2 => micros("2017-02-10T12:00:00Z") + i as i64,
                    3 | 4 => micros("2017-11-30T23:59:59.999999Z"),
                    _ => micros("2018-01-01T00:00:00Z"),
                };
                let status = if i == 4 { ExecutionStatus::Running } else { ExecutionStatus::Completed };
                record(i, at, status, (i as i64 % 3) + 1)
            })
            .collect();
        assert_eq!(b.import_executions(records.clone()).await.unwrap().inserted, 6);
        // Old months land in their own partitions; nothing in the default ones.
        assert_eq!(count(&c, "SELECT count(*) FROM executions_2017_02").await, 3);
        assert_eq!(count(&c, "SELECT count(*) FROM execution_events_2017_11").await, 3);
        assert_eq!(count(&c, "SELECT count(*) FROM executions_default").await, 0);
        assert_eq!(count(&c, "SELECT count(*) FROM execution_events_default").await, 0);

        let id = |i: usize| records[i].execution.id.to_string();
        let absent = Uuid::from_u128(7).to_string();
        let by_id = |v: &ExecutionRecord| v.execution.id.to_string();
        let got = b.fetch_executions(vec![id(0), id(4), absent.clone(), id(5)], None).await.unwrap();
        assert_eq!(
            sorted(&got, by_id),
            sorted(&[records[0].clone(), records[4].clone(), records[5].clone()], by_id)
        );
        for r in &got {
            assert!(r.events.windows(2).all(|w| w[0].seq < w[1].seq), "events in seq order");
        }
        // Within a range: the rows in it (partitions pruned), the others missed.
        let within = Some((micros("2017-11-01T00:00:00Z"), micros("2017-12-31T00:00:00Z")));
        let got = b.fetch_executions((0..6).map(id).chain([absent]).collect(), within).await.unwrap();
        assert_eq!(sorted(&got, by_id), sorted(&records[3..5], by_id));
        assert!(b.fetch_executions(Vec::new(), None).await.unwrap().is_empty());
        let bad = b.fetch_executions(vec!["x".into()], None).await.unwrap_err();
        assert!(bad.to_string().contains("execution id \"x\" is not a UUID"), "{bad}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replace_unfinished_replaces_pending_and_running_rows_only() {
        let (b, c) = backend().await;
        let at = micros("2016-05-05T05:05:05Z");
        let before = vec![
            record(1, at, ExecutionStatus::Running, 2),
            record(2, at + 1, ExecutionStatus::Pending, 0),
            record(3, at + 2, ExecutionStatus::Completed, 2),
            record(4, at + 3, ExecutionStatus::Failed, 1),
        ];
        b.import_executions(before.clone()).await.unwrap();
        // The source's newer state of each, plus one the target does not hold.
        let mut after = vec![
            record(1, at, ExecutionStatus::Completed, 4),
            record(2, at + 1, ExecutionStatus::Running, 1),
            record(3, at + 2, ExecutionStatus::Cancelled, 3),
            record(4, at + 3, ExecutionStatus::Running, 0),
            record(5, at + 4, ExecutionStatus::Running, 1),
        ];
        after[0].execution.output = some(json!({"note": "heliotrope"}));
        assert_eq!(b.replace_unfinished(after.clone()).await.unwrap(), 2);

        let ids: Vec<String> = after.iter().map(|r| r.execution.id.to_string()).collect();
        let by_id = |v: &ExecutionRecord| v.execution.id.to_string();
        let got = sorted(&b.fetch_executions(ids.clone(), None).await.unwrap(), by_id);
        // Unfinished rows replaced (row and events); final rows untouched; the absent id not inserted.
        assert_eq!(got, vec![after[0].clone(), after[1].clone(), before[2].clone(), before[3].clone()]);
        assert_eq!(count(&c, "SELECT count(*) FROM executions").await, 4);
        assert_eq!(count(&c, "SELECT count(*) FROM execution_events").await, 4 + 1 + 2 + 1);
        assert_eq!(count(&c, "SELECT count(*) FROM executions_default").await, 0);
        // Still searchable, with the new content (the generated column).
        let hits =
            b.search_executions(vec!["heliotrope".into()], Page { limit: 10, after: None }).await.unwrap();
        assert_eq!(hits.iter().map(|h| h.0.id.to_string()).collect::<Vec<_>>(), vec![ids[0].clone()]);
        assert_eq!(b.get_execution(ids[0].clone()).await.unwrap(), after[0].execution);
        assert_eq!(b.list_events(ids[0].clone()).await.unwrap(), after[0].events);

        // Again: the replaced rows are final now, nothing happens.
        assert_eq!(b.replace_unfinished(after.clone()).await.unwrap(), 1, "only the still-running one");
        assert_eq!(b.replace_unfinished(vec![after[2].clone(), after[4].clone()]).await.unwrap(), 0);
        assert_eq!(b.replace_unfinished(Vec::new()).await.unwrap(), 0);
        assert_eq!(count(&c, "SELECT count(*) FROM executions").await, 4);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn audit_fetch_by_id() {
        let (b, _c) = backend().await;
        let entry = |i: u128, ip: Option<&str>| AuditEntry {
            id: Uuid::from_u128(0x0190_0000_0000_7000_c000_0000_0000_0000 + i).to_string().into(),
            timestamp: micros("2015-03-03T03:03:03.000003Z") + i as i64,
            action: "execution.create".into(),
            actor: ROption::RSome("ünïcode".into()),
            resource_type: ROption::RNone,
            resource_id: ROption::RSome(format!("r{i}").into()),
            details: if i == 2 { ROption::RNone } else { some(json!({"i": i as u64})) },
            ip_address: ip.map(RString::from).into(),
            user_agent: ROption::RNone,
        };
        let entries = vec![entry(1, Some("10.0.0.1")), entry(2, Some("2001:db8::/32")), entry(3, None)];
        b.import_audit(entries.clone()).await.unwrap();
        let ids = vec![entries[0].id.to_string(), entries[2].id.to_string(), Uuid::from_u128(1).to_string()];
        let got = sorted(&b.fetch_audit(ids).await.unwrap(), |a| a.id.to_string());
        assert_eq!(got, vec![entries[0].clone(), entries[2].clone()]);
        assert!(b.fetch_audit(Vec::new()).await.unwrap().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nul_is_refused_naming_the_row_and_nothing_is_written() {
        let (b, c) = backend().await;
        let at = micros("2019-01-01T00:00:00Z");
        let mut bad = record(1, at, ExecutionStatus::Completed, 1);
        bad.execution.output = ROption::RSome(r#"{"text":"a\u0000b"}"#.into());
        let err = b
            .import_executions(vec![record(2, at, ExecutionStatus::Completed, 1), bad.clone()])
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&format!("execution {}: its output", bad.execution.id)), "{text}");
        assert!(text.contains("\\u0000") && text.contains("run the command again"), "{text}");
        assert_eq!(err.kind(), parallax_storage_abi::ErrorKind::InvalidInput);

        let mut in_event = record(3, at, ExecutionStatus::Completed, 2);
        in_event.events[1] = ExecutionEvent {
            payload: r#"{"x":"\u0000"}"#.into(),
            kind: EventKind::StepResult,
            ..in_event.events[1].clone()
        };
        let err = b.replace_unfinished(vec![in_event.clone()]).await.unwrap_err().to_string();
        assert!(
            err.contains(&format!(
                "execution {}: its event {} (seq 2) payload",
                in_event.execution.id, in_event.events[1].id
            )),
            "{err}"
        );

        let mut tag = record(4, at, ExecutionStatus::Completed, 0);
        tag.execution.tags = vec![RString::from("a\0b")].into();
        assert!(b.import_executions(vec![tag]).await.unwrap_err().to_string().contains("its tags"));
        // An escaped backslash before `u0000` is ordinary text.
        let mut fine = record(5, at, ExecutionStatus::Completed, 0);
        fine.execution.input = ROption::RSome(r#"{"path":"C:\\u0000"}"#.into());
        assert_eq!(b.import_executions(vec![fine]).await.unwrap().inserted, 1);

        let audit = AuditEntry {
            id: Uuid::from_u128(0x0190_0000_0000_7000_d000_0000_0000_0001).to_string().into(),
            timestamp: at,
            action: "x".into(),
            actor: ROption::RNone,
            resource_type: ROption::RNone,
            resource_id: ROption::RNone,
            details: ROption::RSome(r#"{"a":["\u0000"]}"#.into()),
            ip_address: ROption::RNone,
            user_agent: ROption::RNone,
        };
        let err = b.import_audit(vec![audit.clone()]).await.unwrap_err().to_string();
        assert!(err.contains(&format!("audit entry {}: its details", audit.id)), "{err}");
        let p = pattern(1, "nul", "1.0.0", r#"{"a":"\u0000"}"#, "2019-01-01T00:00:00Z");
        let err = b.import_patterns(vec![p.clone()]).await.unwrap_err().to_string();
        assert!(err.contains(&format!("pattern nul@1.0.0 (id {}): its definition", p.id)), "{err}");

        assert_eq!(count(&c, "SELECT count(*) FROM executions").await, 1);
        assert_eq!(count(&c, "SELECT count(*) FROM audit_logs").await, 0);
        assert_eq!(count(&c, "SELECT count(*) FROM patterns").await, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn transfer_states_upsert_and_list_newest_first() {
        let (b, c) = backend().await;
        assert!(b.transfer_states().await.unwrap().is_empty());
        let (first, second) = (Uuid::from_u128(0x1901).to_string(), Uuid::from_u128(0x1902).to_string());
        b.save_transfer_state(
            first.clone(),
            "sqlite /data/parallax.db".into(),
            r#"{"phase":"executions","n":1}"#.into(),
        )
        .await
        .unwrap();
        b.save_transfer_state(second.clone(), "file /data/store".into(), r#"{"phase":"patterns"}"#.into())
            .await
            .unwrap();
        b.save_transfer_state(
            first.clone(),
            "sqlite /data/parallax.db".into(),
            r#"{"phase":"done","n":2}"#.into(),
        )
        .await
        .unwrap();
        let got = b.transfer_states().await.unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].0.as_str(), got[0].1.as_str()), (second.as_str(), "file /data/store"));
        assert_eq!(parsed(&got[0].2), json!({"phase": "patterns"}));
        assert_eq!((got[1].0.as_str(), got[1].1.as_str()), (first.as_str(), "sqlite /data/parallax.db"));
        assert_eq!(parsed(&got[1].2), json!({"phase": "done", "n": 2}));
        let stamps: (bool, bool) = c
            .query_one(
                &format!("SELECT updated_at > started_at, started_at < (SELECT started_at FROM transfer_runs WHERE id = '{second}') FROM transfer_runs WHERE id = '{first}'"),
                &[],
            )
            .await
            .map(|r| (r.get(0), r.get(1)))
            .unwrap();
        assert_eq!(stamps, (true, true), "the first save's start is kept, its update time moves");

        let err = b.save_transfer_state("run-1".into(), "x".into(), "{}".into()).await.unwrap_err();
        assert!(err.to_string().contains("transfer state id \"run-1\" is not a UUID"), "{err}");
        let err = b.save_transfer_state(first.clone(), "x".into(), "[1]".into()).await.unwrap_err();
        assert!(
            err.to_string().contains(&format!("transfer state {first}: its state is not a JSON object")),
            "{err}"
        );
        // A real state round-trips.
        let state = crate::transfer::state::TransferState {
            id: second.clone(),
            kind: crate::transfer::state::Kind::Copy,
            source: "sqlite /x.db".into(),
            snapshot: 1_700_000_000_000_001,
            started_at: 1,
            updated_at: 2,
            merge: false,
            target_was_empty: true,
            phase: crate::transfer::state::Phase::Audit,
            cursors: [(
                "executions".to_string(),
                crate::transfer::state::Cursor { at: 5, id: first.clone() },
            )]
            .into(),
            tables: Default::default(),
            unfinished: vec![first.clone()],
            conflicts: Vec::new(),
            ..Default::default()
        };
        b.save_transfer_state(second.clone(), state.source.clone(), state.to_json()).await.unwrap();
        let back = b.transfer_states().await.unwrap();
        assert_eq!(crate::transfer::state::TransferState::from_json(&back[0].2), Some(state));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn after_bulk_load_analyzes_the_partitioned_tables_and_backup_names_pg_dump() {
        let (b, c) = backend().await;
        let at = micros("2019-07-07T00:00:00Z");
        b.import_executions(
            (0..20).map(|i| record(i, at + i as i64, ExecutionStatus::Completed, 2)).collect(),
        )
        .await
        .unwrap();
        let stats = "SELECT count(*) FROM pg_stats WHERE schemaname = current_schema() AND tablename = ";
        assert_eq!(
            count(&c, &format!("{stats}'executions'")).await,
            0,
            "autovacuum never analyzes the parent"
        );
        b.after_bulk_load().await.unwrap();
        assert!(count(&c, &format!("{stats}'executions'")).await > 0);
        assert!(count(&c, &format!("{stats}'execution_events'")).await > 0);

        let err = b.backup(PathBuf::from("/tmp/x.db")).await.unwrap_err();
        assert_eq!(err.kind(), parallax_storage_abi::ErrorKind::Unsupported);
        for word in ["pg_dump --format=custom", "pg_restore", "\"Backups\""] {
            assert!(err.to_string().contains(word), "{err}");
        }
    }
}
