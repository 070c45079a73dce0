//! The storage contract on SQLite: reads on the pool, writes through the group-committing writer.

use abi_stable::std_types::ROption::RSome;
use diesel::{
    dsl::{count_star, max},
    prelude::*,
    sql_query,
    sql_types::{BigInt, Bool, Text},
    sqlite::Sqlite,
};
use parallax_storage_abi::*;

use super::{
    chain,
    migrations::MIGRATIONS,
    models::{
        status_of, AuditRow, EventRow, ExecutionChanges, ExecutionHitRow, ExecutionRow, PatternHitRow,
        PatternRow,
    },
    schema::{audit_logs, execution_events, executions, patterns},
    search,
    statements::InsertExecution,
    SqliteBackend,
};
use crate::{
    audit_chain,
    contract::Contract,
    error::{sqlite_error, Error, Result, SqliteFailure},
    literal_limit::LiteralLimit,
    migrate,
    rules::{self, Completion},
    time::now_micros,
    validate::Page,
};

fn s(r: &abi_stable::std_types::RString) -> String {
    r.to_string()
}

/// An FTS5 query requiring every term as a whole word: `"a" "b"` (terms are letters and digits only).
fn fts_query(terms: &[String]) -> String {
    terms.iter().map(|t| format!("\"{}\"", t.replace('"', "\"\""))).collect::<Vec<_>>().join(" ")
}

/// The columns an update or completion may change, as `rules` left them.
fn changes_of(e: &Execution) -> ExecutionChanges {
    ExecutionChanges {
        status: Some(e.status.as_str().to_string()),
        output: e.output.as_ref().map(s).into_option(),
        error: e.error.as_ref().map(s).into_option(),
        metadata: e.metadata.as_ref().map(s).into_option(),
        completed_at: e.completed_at.into_option(),
        duration_ms: e.duration_ms.into_option(),
    }
}

fn load_execution(conn: &mut SqliteConnection, id: &str) -> Result<ExecutionRow> {
    // Without `first()`'s bound `LIMIT ?` (the key is unique): SQLite prepares a statement again whenever a
    // parameter its planner read is bound (see `literal_limit`), which the limit is.
    let rows: Vec<ExecutionRow> =
        executions::table.find(id).select(ExecutionRow::as_select()).load(conn).map_err(sqlite_error)?;
    rows.into_iter().next().ok_or_else(|| rules::execution_not_found(id))
}

fn apply_filter<'a, ST: 'a>(
    mut q: executions::BoxedQuery<'a, Sqlite, ST>,
    f: &ExecutionFilter,
) -> executions::BoxedQuery<'a, Sqlite, ST> {
    if let RSome(n) = &f.pattern_name {
        q = q.filter(executions::pattern_name.eq(s(n)));
    }
    if let RSome(v) = &f.pattern_version {
        q = q.filter(executions::pattern_version.eq(s(v)));
    }
    if !f.statuses.is_empty() {
        q = q.filter(Cacheable::status_in(f.statuses.iter().map(|st| st.as_str().to_string()).collect()));
    }
    if let RSome(from) = f.started_from {
        q = q.filter(executions::started_at.ge(from));
    }
    if let RSome(until) = f.started_until {
        q = q.filter(executions::started_at.lt(until));
    }
    for tag in f.tags.iter() {
        q = q.filter(Cacheable::has_tag(s(tag)));
    }
    q
}

/// A filter condition whose SQL text depends only on the filter's shape. diesel marks `eq_any` lists and
/// `sql` literals unsafe to cache, which made every filtered page a fresh `sqlite3_prepare` (the statement
/// cache is keyed by the SQL text for boxed queries); these conditions write the same SQL for the same number
/// of values, so each filter shape is prepared once per pooled connection.
struct Cacheable {
    /// The SQL before, between and after the values, each bound as text.
    open: &'static str,
    values: Vec<String>,
    close: &'static str,
}

impl Cacheable {
    fn status_in(statuses: Vec<String>) -> Self {
        Cacheable { open: "executions.status IN (", values: statuses, close: ")" }
    }

    fn has_tag(tag: String) -> Self {
        Cacheable {
            open: "EXISTS (SELECT 1 FROM json_each(executions.tags) WHERE json_each.value = ",
            values: vec![tag],
            close: ")",
        }
    }
}

impl diesel::Expression for Cacheable {
    type SqlType = Bool;
}

impl<QS> diesel::AppearsOnTable<QS> for Cacheable {}

impl diesel::expression::ValidGrouping<()> for Cacheable {
    type IsAggregate = diesel::expression::is_aggregate::Never;
}

impl diesel::query_builder::QueryId for Cacheable {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl diesel::query_builder::QueryFragment<Sqlite> for Cacheable {
    fn walk_ast<'b>(&'b self, mut out: diesel::query_builder::AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        out.push_sql(self.open);
        for (i, v) in self.values.iter().enumerate() {
            if i > 0 {
                out.push_sql(", ");
            }
            out.push_bind_param::<Text, _>(v)?;
        }
        out.push_sql(self.close);
        Ok(())
    }
}

impl Contract for SqliteBackend {
    async fn put_pattern(&self, p: NewPattern, _id_from_client: bool) -> Result<Pattern> {
        let pattern = rules::stored_pattern(p, now_micros());
        let row = PatternRow::from(&pattern);
        let conflict = pattern.clone();
        self.writer
            .write("put_pattern", move |conn| {
                let inserted = diesel::insert_into(patterns::table).values(&row).execute(conn);
                match inserted.map_err(sqlite_error) {
                    Ok(_) => Ok(()),
                    // Two keys can refuse the row: (name, version) or the id. diesel keeps no constraint name
                    // for SQLite (only its message), so a query tells which.
                    Err(e) if e.kind() == ErrorKind::Conflict => {
                        let (name, version) = (conflict.name.as_str(), conflict.version.as_str());
                        let on_name_version = diesel::select(diesel::dsl::exists(
                            patterns::table
                                .filter(patterns::name.eq(name).and(patterns::version.eq(version))),
                        ))
                        .get_result::<bool>(conn)
                        .map_err(sqlite_error)?;
                        Err(rules::pattern_conflict(&conflict, on_name_version))
                    }
                    Err(e) => Err(e),
                }
            })
            .await?;
        Ok(pattern)
    }

    async fn get_pattern(&self, name: String, version: String) -> Result<Pattern> {
        self.read_short(move |conn| {
            // (name, version) is unique: no `first()`, whose bound limit re-prepares (see `load_execution`).
            let rows: Vec<PatternRow> = patterns::table
                .filter(patterns::name.eq(&name).and(patterns::version.eq(&version)))
                .select(PatternRow::as_select())
                .load(conn)
                .map_err(sqlite_error)?;
            rows.into_iter()
                .next()
                .map(Pattern::from)
                .ok_or_else(|| rules::pattern_not_found(&name, &version))
        })
        .await
    }

    async fn pattern_versions(&self, name: String) -> Result<Vec<Pattern>> {
        self.read(move |conn| {
            let rows = patterns::table
                .filter(patterns::name.eq(&name))
                .select(PatternRow::as_select())
                .load(conn)
                .map_err(sqlite_error)?;
            Ok(rows.into_iter().map(Pattern::from).collect())
        })
        .await
    }

    async fn patterns_after(&self, page: Page<String>) -> Result<Vec<Pattern>> {
        self.read(move |conn| {
            let mut names =
                patterns::table.select(patterns::name).distinct().order(patterns::name).into_boxed();
            if let Some(after) = &page.after {
                names = names.filter(patterns::name.gt(after.clone()));
            }
            let names: Vec<String> = names.limit(page.limit as i64 + 1).load(conn).map_err(sqlite_error)?;
            let rows = patterns::table
                .filter(patterns::name.eq_any(&names))
                .order(patterns::name)
                .select(PatternRow::as_select())
                .load(conn)
                .map_err(sqlite_error)?;
            Ok(rows.into_iter().map(Pattern::from).collect())
        })
        .await
    }

    async fn delete_pattern(&self, name: String, version: String) -> Result<()> {
        self.writer
            .write("delete_pattern", move |conn| {
                let n = diesel::delete(
                    patterns::table.filter(patterns::name.eq(&name).and(patterns::version.eq(&version))),
                )
                .execute(conn)
                .map_err(sqlite_error)?;
                if n == 0 {
                    return Err(rules::pattern_not_found(&name, &version));
                }
                Ok(())
            })
            .await
    }

    async fn create_execution(&self, e: NewExecution, _id_from_client: bool) -> Result<Execution> {
        let execution = rules::created_execution(e);
        let tags: Vec<String> = execution.tags.iter().map(s).collect();
        let row = ExecutionRow {
            id: s(&execution.id),
            pattern_name: s(&execution.pattern_name),
            pattern_version: s(&execution.pattern_version),
            status: execution.status.as_str().into(),
            input: execution.input.as_ref().map(s).into_option(),
            output: None,
            error: None,
            started_at: execution.started_at,
            completed_at: None,
            duration_ms: None,
            metadata: execution.metadata.as_ref().map(s).into_option(),
            tags: serde_json::to_string(&tags).map_err(|e| Error::internal(e.to_string()))?,
        };
        self.writer
            .write("create_execution", move |conn| {
                InsertExecution(&row).execute(conn).map_err(|e| {
                    rules::explain_conflict(sqlite_error(e), |_| rules::execution_exists(&row.id))
                })?;
                Ok(())
            })
            .await?;
        Ok(execution)
    }

    async fn update_execution(&self, id: String, u: ExecutionUpdate) -> Result<Execution> {
        self.writer
            .write("update_execution", move |conn| {
                let current = Execution::try_from(load_execution(conn, &id)?)?;
                let (updated, changed) = rules::updated_execution(current, u)?;
                if changed {
                    diesel::update(executions::table.find(&id))
                        .set(&changes_of(&updated))
                        .execute(conn)
                        .map_err(sqlite_error)?;
                }
                Ok(updated)
            })
            .await
    }

    async fn complete_execution(&self, id: String, c: Completion) -> Result<Execution> {
        self.writer
            .write("complete_execution", move |conn| {
                let current = Execution::try_from(load_execution(conn, &id)?)?;
                let completed = rules::completed_execution(current, c)?;
                diesel::update(executions::table.find(&id))
                    .set(&changes_of(&completed))
                    .execute(conn)
                    .map_err(sqlite_error)?;
                Ok(completed)
            })
            .await
    }

    async fn get_execution(&self, id: String) -> Result<Execution> {
        self.read_short(move |conn| Execution::try_from(load_execution(conn, &id)?)).await
    }

    async fn list_executions(&self, f: ExecutionFilter, page: Page<(i64, String)>) -> Result<Vec<Execution>> {
        // A tag filter has no index (`json_each` over each row): it may scan the table, so it is not short.
        let short = f.tags.is_empty();
        self.read_if(short, move |conn| {
            let mut q = apply_filter(executions::table.select(ExecutionRow::as_select()).into_boxed(), &f);
            if let Some((ts, id)) = page.after {
                q = q.filter(
                    executions::started_at
                        .lt(ts)
                        .or(executions::started_at.eq(ts).and(executions::id.lt(id))),
                );
            }
            let query = q.order((executions::started_at.desc(), executions::id.desc()));
            let rows: Vec<ExecutionRow> =
                LiteralLimit { query, limit: page.limit as i64 + 1 }.load(conn).map_err(sqlite_error)?;
            rows.into_iter().map(Execution::try_from).collect()
        })
        .await
    }

    async fn count_executions(&self, f: ExecutionFilter) -> Result<u64> {
        self.read(move |conn| {
            let n: i64 = apply_filter(executions::table.select(count_star()).into_boxed(), &f)
                .first(conn)
                .map_err(sqlite_error)?;
            Ok(n as u64)
        })
        .await
    }

    async fn append_event(
        &self,
        execution_id: String,
        event_id: String,
        e: NewEvent,
    ) -> Result<ExecutionEvent> {
        self.writer
            .write("append_event", move |conn| {
                let status: String = executions::table
                    .find(&execution_id)
                    .select(executions::status)
                    .first(conn)
                    .optional()
                    .map_err(sqlite_error)?
                    .ok_or_else(|| rules::execution_not_found(&execution_id))?;
                rules::check_accepts_events(&execution_id, status_of(&status)?)?;
                let last: Option<i64> = execution_events::table
                    .filter(execution_events::execution_id.eq(&execution_id))
                    .select(max(execution_events::seq))
                    .first(conn)
                    .map_err(sqlite_error)?;
                let event = rules::appended_event(&execution_id, &event_id, last, e);
                let row = EventRow {
                    id: event_id,
                    execution_id,
                    seq: event.seq,
                    kind: event.kind.as_str().to_string(),
                    payload: s(&event.payload),
                    recorded_at: event.recorded_at,
                };
                diesel::insert_into(execution_events::table)
                    .values(&row)
                    .execute(conn)
                    .map_err(sqlite_error)?;
                Ok(event)
            })
            .await
    }

    async fn list_events(&self, execution_id: String) -> Result<Vec<ExecutionEvent>> {
        self.read(move |conn| {
            let rows = execution_events::table
                .filter(execution_events::execution_id.eq(&execution_id))
                .order(execution_events::seq)
                .select(EventRow::as_select())
                .load(conn)
                .map_err(sqlite_error)?;
            if rows.is_empty() {
                // Distinguish "no events yet" from "no such execution".
                load_execution(conn, &execution_id)?;
            }
            rows.into_iter().map(ExecutionEvent::try_from).collect()
        })
        .await
    }

    async fn append_audit(&self, entries: Vec<NewAuditEntry>) -> Result<()> {
        let entries: Vec<AuditEntry> = entries.iter().map(audit_chain::entry_of).collect();
        self.writer
            .write("append_audit", move |conn| {
                // Inside the writer's `BEGIN IMMEDIATE` transaction: no other process appends between reading
                // the head and committing the rows chained after it.
                let head = chain::read_head(conn)?;
                // A savepoint of its own: when the id key refuses a row, the rows before it are undone before
                // the store is asked which id clashed.
                let inserted = conn.transaction(|conn| -> Result<(), SqliteFailure> {
                    let mut next = head;
                    chain::insert(conn, &mut next, &entries).map_err(SqliteFailure)?;
                    chain::write_head(conn, &next).map_err(SqliteFailure)
                });
                match inserted.map_err(Error::from) {
                    // The id is the table's unique key; the sequence number is unique too, taken only by rows
                    // written around the plugin.
                    Err(e) if e.kind() == ErrorKind::Conflict => {
                        let ids: Vec<&str> = entries.iter().map(|r| r.id.as_str()).collect();
                        let mut stored = std::collections::HashSet::new();
                        for chunk in ids.chunks(1000) {
                            let found: Vec<String> = audit_logs::table
                                .filter(audit_logs::id.eq_any(chunk))
                                .select(audit_logs::id)
                                .load(conn)
                                .map_err(sqlite_error)?;
                            stored.extend(found);
                        }
                        if let Some(e) = rules::audit_conflict(ids.iter().copied(), |id| stored.contains(id))
                        {
                            return Err(e);
                        }
                        if let Some(max) = chain::past_head(conn, head.seq)? {
                            return Err(chain::seq_taken(head.seq, max));
                        }
                        Err(rules::explain_audit_conflict(ids, |id| stored.contains(id)))
                    }
                    r => r,
                }
            })
            .await
    }

    async fn query_audit(&self, q: AuditQuery, page: Page<(i64, String)>) -> Result<Vec<AuditEntry>> {
        self.read_short(move |conn| {
            let mut b = audit_logs::table.select(AuditRow::as_select()).into_boxed();
            if let RSome(v) = &q.actor {
                b = b.filter(audit_logs::actor.eq(s(v)));
            }
            if let RSome(v) = &q.action {
                b = b.filter(audit_logs::action.eq(s(v)));
            }
            if let RSome(v) = &q.resource_type {
                b = b.filter(audit_logs::resource_type.eq(s(v)));
            }
            if let RSome(v) = &q.resource_id {
                b = b.filter(audit_logs::resource_id.eq(s(v)));
            }
            if let RSome(v) = q.from {
                b = b.filter(audit_logs::timestamp.ge(v));
            }
            if let RSome(v) = q.until {
                b = b.filter(audit_logs::timestamp.lt(v));
            }
            if let Some((ts, id)) = page.after {
                b = b.filter(
                    audit_logs::timestamp.lt(ts).or(audit_logs::timestamp.eq(ts).and(audit_logs::id.lt(id))),
                );
            }
            let query = b.order((audit_logs::timestamp.desc(), audit_logs::id.desc()));
            let rows: Vec<AuditRow> =
                LiteralLimit { query, limit: page.limit as i64 + 1 }.load(conn).map_err(sqlite_error)?;
            Ok(rows.into_iter().map(AuditEntry::from).collect())
        })
        .await
    }

    async fn migration_status(&self) -> Result<Vec<MigrationInfo>> {
        self.read(|c| migrate::status(c, &MIGRATIONS)).await
    }

    async fn migrate_up(&self) -> Result<MigrationReport> {
        self.writer
            .solo("migrate_up", |c| {
                let report = migrate::up(c, &MIGRATIONS)?;
                // The command that brings the chain chains the entries written before it.
                chain::chain_legacy(c)?;
                Ok(report)
            })
            .await
    }

    async fn migrate_down(&self) -> Result<MigrationReport> {
        self.writer.solo("migrate_down", |c| migrate::down(c, &MIGRATIONS)).await
    }

    async fn migrate_to(&self, version: String) -> Result<MigrationReport> {
        self.writer
            .solo("migrate_to", move |c| {
                let report = migrate::to(c, &MIGRATIONS, &version)?;
                chain::chain_legacy(c)?;
                Ok(report)
            })
            .await
    }

    async fn mark_migration_applied(&self, version: String) -> Result<MigrationReport> {
        self.writer
            .solo("mark_migration_applied", move |c| migrate::mark_applied(c, &MIGRATIONS, &version))
            .await
    }

    async fn search_executions(
        &self,
        terms: Vec<String>,
        page: Page<usize>,
    ) -> Result<Vec<(Execution, f64)>> {
        // Our writes index in their own transaction; another program's may have left executions queued.
        if self.read_short(search::any_queued).await? {
            self.writer.write("index_search", |_| Ok(())).await?;
        }
        self.read(move |conn| {
            let hits: Vec<ExecutionHitRow> = search::SearchExecutions {
                fts_query: fts_query(&terms),
                limit: page.limit as i64 + 1,
                offset: page.after.unwrap_or(0) as i64,
            }
            .load(conn)
            .map_err(sqlite_error)?;
            hits.into_iter().map(|h| Ok((Execution::try_from(h.record)?, h.rank))).collect()
        })
        .await
    }

    async fn search_patterns(&self, terms: Vec<String>, page: Page<usize>) -> Result<Vec<(Pattern, f64)>> {
        self.read(move |conn| {
            let hits: Vec<PatternHitRow> = sql_query(
                "SELECT p.*, -bm25(patterns_fts) AS rank FROM patterns_fts \
                 JOIN pattern_search s ON s.doc_id = patterns_fts.rowid \
                 JOIN patterns p ON p.id = s.pattern_id \
                 WHERE patterns_fts MATCH ? ORDER BY rank DESC, p.created_at DESC, p.id DESC LIMIT ? OFFSET ?",
            )
            .bind::<Text, _>(fts_query(&terms))
            .bind::<BigInt, _>(page.limit as i64 + 1)
            .bind::<BigInt, _>(page.after.unwrap_or(0) as i64)
            .load(conn).map_err(sqlite_error)?;
            Ok(hits.into_iter().map(|h| (Pattern::from(h.record), h.rank)).collect())
        })
        .await
    }

    async fn health(&self) -> Result<Health> {
        self.health_impl().await
    }

    async fn shutdown(&self) -> Result<()> {
        let writer = &self.writer;
        tokio::task::block_in_place(|| writer.stop());
        tracing::info!(path = %self.cfg.sqlite.path.display(), "SQLite storage closed");
        Ok(())
    }

    fn close_on_drop(&self) {
        self.writer.close();
    }
}

#[cfg(test)]
mod tests {
    use abi_stable::std_types::ROption::RNone;

    use super::*;

    fn entry(id: &str, actor: &str) -> NewAuditEntry {
        NewAuditEntry {
            id: RSome(id.into()),
            timestamp: RSome(1_705_276_800_000_000),
            action: "login".into(),
            actor: RSome(actor.into()),
            resource_type: RNone,
            resource_id: RNone,
            details: RNone,
            ip_address: RNone,
            user_agent: RNone,
        }
    }

    /// The id key's refusal is explained by `rules`: the first clashing entry of the batch is named, and the
    /// rows inserted before the clash are undone with the batch.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_duplicate_audit_id_is_named_by_the_rule_and_the_batch_is_atomic() {
        let dir = tempfile::tempdir().unwrap();
        let json = serde_json::json!({ "type": "sqlite", "sqlite": { "path": dir.path().join("a.db") } });
        let cfg = crate::config::parse(&json.to_string()).unwrap();
        let s = SqliteBackend::open(cfg, OpenOptions::default()).await.unwrap();
        let taken = "0190b3f2-7c1e-7a00-8000-000000000abc";
        s.append_audit(vec![entry(taken, "first")]).await.unwrap();
        let fresh = |n: u32| format!("0190b3f2-7c1e-7a00-8000-{n:012}");
        // 1500 rows: the clash is in the second 1000-row INSERT, after the first one succeeded.
        let mut batch: Vec<NewAuditEntry> = (0..1500).map(|n| entry(&fresh(n), "carol")).collect();
        batch.push(entry(taken, "carol"));
        let err = s.append_audit(batch.clone()).await.unwrap_err();
        assert_eq!(err, rules::audit_entry_exists(taken));
        // A repeat inside the batch, before the stored id: the repeat is the first clash.
        batch.insert(1200, entry(&fresh(7), "carol"));
        let err = s.append_audit(batch).await.unwrap_err();
        assert_eq!(err, rules::audit_entry_exists(&fresh(7)));
        let q = AuditQuery { actor: RSome("carol".into()), ..Default::default() };
        let stored = s.query_audit(q, Page { limit: 10, after: None }).await.unwrap();
        assert!(stored.is_empty(), "nothing of a refused batch is stored: {stored:?}");
        s.shutdown().await.unwrap();
    }
}
