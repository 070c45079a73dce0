//! The storage contract on PostgreSQL.

use abi_stable::std_types::ROption::RSome;
use diesel::{
    data_types::PgTimestamp,
    dsl::{count_star, max},
    pg::Pg,
    prelude::*,
    sql_query,
    sql_types::{BigInt, Text},
};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use parallax_storage_abi::*;
use serde_json::Value;
use uuid::Uuid;

use super::{
    migrations::{self, MIGRATIONS},
    models::{
        json, status_of, to_pg, uuid, AuditRow, EventRow, ExecutionHitRow, ExecutionRow, PatternHitRow,
        PatternRow,
    },
    schema::{audit_logs, execution_events, executions, patterns},
    statements::{
        CompleteExecution, GuardedInsert, InsertExecution, RawJson, SearchExecutions, UpdateExecution,
    },
    PostgresBackend,
};
use crate::{
    contract::Contract,
    error::{Error, Result},
    literal_limit::LiteralLimit,
    migrate,
    rules::{self, Completion},
    time::now_micros,
    validate::Page,
};

const DAY: i64 = 86_400_000_000;

/// The creation time a UUIDv7 carries, in microseconds.
fn v7_micros(id: &Uuid) -> Option<i64> {
    if id.get_version_num() != 7 {
        return None;
    }
    let (secs, nanos) = id.get_timestamp()?.to_unix();
    Some(secs as i64 * 1_000_000 + nanos as i64 / 1000)
}

/// Finds an execution by id, optionally locking it. A UUIDv7 id carries its creation time, which is (unless
/// the client chose `started_at`) within moments of `started_at`: look in that day's partition first, so the
/// lookup touches one partition instead of all of them; fall back to every partition.
async fn find_execution(conn: &mut AsyncPgConnection, id: &Uuid, lock: bool) -> Result<ExecutionRow> {
    if let Some(t) = v7_micros(id) {
        let q = executions::table
            .filter(executions::id.eq(id))
            .filter(executions::started_at.ge(to_pg(t - DAY)))
            .filter(executions::started_at.lt(to_pg(t + DAY)))
            .select(ExecutionRow::as_select());
        let row = if lock { q.for_update().first(conn).await } else { q.first(conn).await }.optional()?;
        if let Some(row) = row {
            return Ok(row);
        }
    }
    let q = executions::table.filter(executions::id.eq(id)).select(ExecutionRow::as_select());
    let row = if lock { q.for_update().first(conn).await } else { q.first(conn).await }.optional()?;
    row.ok_or_else(|| rules::execution_not_found(&id.to_string()))
}

/// A conditional statement changed no row, yet the row exists and the rules allow the change: it changed
/// between the two statements.
fn refused_unexplained(id: &Uuid) -> Error {
    rules::execution_changed_concurrently(&id.to_string())
}

/// `started_at` ranges to try for an id: the day around a UUIDv7's time first (one partition), then all.
fn id_ranges(id: &Uuid) -> Vec<(PgTimestamp, PgTimestamp)> {
    let all = (PgTimestamp(i64::MIN), PgTimestamp(i64::MAX));
    match v7_micros(id) {
        Some(t) => vec![(to_pg(t - DAY), to_pg(t + DAY)), all],
        None => vec![all],
    }
}

fn apply_filter<'a, ST: 'a>(
    mut q: executions::BoxedQuery<'a, Pg, ST>,
    f: &ExecutionFilter,
) -> executions::BoxedQuery<'a, Pg, ST> {
    if let RSome(n) = &f.pattern_name {
        q = q.filter(executions::pattern_name.eq(n.to_string()));
    }
    if let RSome(v) = &f.pattern_version {
        q = q.filter(executions::pattern_version.eq(v.to_string()));
    }
    match f.statuses.as_slice() {
        [] => {}
        // `status = $1` lets PostgreSQL walk the (pattern_name, status, started_at, id) index in order and stop
        // after one page; `status = ANY($1)` makes it read and sort every match (12x slower at 1M rows).
        [one] => q = q.filter(executions::status.eq(one.as_str())),
        many => q = q.filter(executions::status.eq_any(many.iter().map(|s| s.as_str()).collect::<Vec<_>>())),
    }
    if let RSome(from) = f.started_from {
        q = q.filter(executions::started_at.ge(to_pg(from)));
    }
    if let RSome(until) = f.started_until {
        q = q.filter(executions::started_at.lt(to_pg(until)));
    }
    if !f.tags.is_empty() {
        let tags: Vec<String> = f.tags.iter().map(|t| t.to_string()).collect();
        q = q.filter(executions::tags.contains(Value::from(tags)));
    }
    q
}

/// The audit page query of `q`, after the `(timestamp, id)` cursor `after`.
fn audit_query<'a>(
    q: &AuditQuery,
    after: Option<(PgTimestamp, Uuid)>,
) -> audit_logs::BoxedQuery<'a, Pg, diesel::dsl::SqlTypeOf<diesel::dsl::AsSelect<AuditRow, Pg>>> {
    let mut b = audit_logs::table.select(AuditRow::as_select()).into_boxed();
    if let RSome(v) = &q.actor {
        b = b.filter(audit_logs::actor.eq(v.to_string()));
    }
    if let RSome(v) = &q.action {
        b = b.filter(audit_logs::action.eq(v.to_string()));
    }
    if let RSome(v) = &q.resource_type {
        b = b.filter(audit_logs::resource_type.eq(v.to_string()));
    }
    if let RSome(v) = &q.resource_id {
        b = b.filter(audit_logs::resource_id.eq(v.to_string()));
    }
    if let RSome(v) = q.from {
        b = b.filter(audit_logs::timestamp.ge(to_pg(v)));
    }
    if let RSome(v) = q.until {
        b = b.filter(audit_logs::timestamp.lt(to_pg(v)));
    }
    if let Some((ts, id)) = after {
        b = b
            .filter(audit_logs::timestamp.lt(ts).or(audit_logs::timestamp.eq(ts).and(audit_logs::id.lt(id))));
    }
    b
}

/// A tsquery requiring every term: `a & b` (terms are letters and digits only).
fn ts_query(terms: &[String]) -> String {
    terms.join(" & ")
}

fn raw(doc: &abi_stable::std_types::ROption<abi_stable::std_types::RString>) -> Option<RawJson<'_>> {
    doc.as_ref().map(|d| RawJson(d.as_str())).into_option()
}

/// The constraint a unique violation names, if `e` is one.
fn violated_constraint(e: &diesel::result::Error) -> Option<String> {
    match e {
        diesel::result::Error::DatabaseError(diesel::result::DatabaseErrorKind::UniqueViolation, info) => {
            info.constraint_name().map(str::to_string)
        }
        _ => None,
    }
}

impl PostgresBackend {
    async fn migrate_op<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut migrations::Wrapper) -> Result<T> + Send + 'static,
    {
        // A migrated schema must be on a replica before it serves this object (also after a failed step or a
        // dropped call: the steps before it committed).
        let _counted = self.counts_as_write();
        let conn = self.migration_conn().await?;
        migrations::with_wrapper(conn, f).await
    }
}

impl Contract for PostgresBackend {
    async fn put_pattern(&self, p: NewPattern, _id_from_client: bool) -> Result<Pattern> {
        let pattern = rules::stored_pattern(p, now_micros());
        let row = PatternRow::from_pattern(&pattern)?;
        self.with_write(async move |conn| {
            diesel::insert_into(patterns::table).values(&row).execute(conn).await.map_err(|e| {
                // `patterns_name_version_key` or `patterns_pkey` (the id).
                let on_name_version = violated_constraint(&e).is_some_and(|c| c.contains("name"));
                rules::explain_conflict(Error::from(e), |_| {
                    rules::pattern_conflict(&pattern, on_name_version)
                })
            })?;
            Ok(pattern)
        })
        .await
    }

    async fn get_pattern(&self, name: String, version: String) -> Result<Pattern> {
        self.with_read(async move |conn| {
            patterns::table
                .filter(patterns::name.eq(&name).and(patterns::version.eq(&version)))
                .select(PatternRow::as_select())
                .first(conn)
                .await
                .optional()?
                .map(Pattern::from)
                .ok_or_else(|| rules::pattern_not_found(&name, &version))
        })
        .await
    }

    async fn pattern_versions(&self, name: String) -> Result<Vec<Pattern>> {
        self.with_read(async move |conn| {
            let rows = patterns::table
                .filter(patterns::name.eq(&name))
                .select(PatternRow::as_select())
                .load(conn)
                .await?;
            Ok(rows.into_iter().map(Pattern::from).collect())
        })
        .await
    }

    async fn patterns_after(&self, page: Page<String>) -> Result<Vec<Pattern>> {
        self.with_read(async move |conn| {
            let mut names =
                patterns::table.select(patterns::name).distinct().order(patterns::name).into_boxed();
            if let Some(after) = &page.after {
                names = names.filter(patterns::name.gt(after.clone()));
            }
            let names: Vec<String> = names.limit(page.limit as i64 + 1).load(conn).await?;
            let rows = patterns::table
                .filter(patterns::name.eq_any(&names))
                .order(patterns::name)
                .select(PatternRow::as_select())
                .load(conn)
                .await?;
            Ok(rows.into_iter().map(Pattern::from).collect())
        })
        .await
    }

    async fn delete_pattern(&self, name: String, version: String) -> Result<()> {
        self.with_write(async move |conn| {
            let n = diesel::delete(
                patterns::table.filter(patterns::name.eq(&name).and(patterns::version.eq(&version))),
            )
            .execute(conn)
            .await?;
            if n == 0 {
                return Err(rules::pattern_not_found(&name, &version));
            }
            Ok(())
        })
        .await
    }

    async fn create_execution(&self, e: NewExecution, id_from_client: bool) -> Result<Execution> {
        let id = uuid(e.id.as_ref().into_option().map(|s| s.as_str()).unwrap_or_default())?;
        let tags = Value::from(e.tags.iter().map(|t| t.to_string()).collect::<Vec<_>>());
        let started_at = e.started_at.unwrap_or_default();
        self.with_write(async move |conn| {
            // One prepared statement, one round trip; the documents go as the adapter's validated text.
            let stmt = InsertExecution {
                id,
                pattern_name: &e.pattern_name,
                pattern_version: &e.pattern_version,
                status: e.status.as_str(),
                input: raw(&e.input),
                metadata: raw(&e.metadata),
                started_at: to_pg(started_at),
                tags: &tags,
                guard_id: id_from_client,
            };
            let conflict = || rules::execution_exists(&id.to_string());
            let inserted = if id_from_client {
                GuardedInsert(stmt).execute(conn).await
            } else {
                stmt.execute(conn).await
            }
            .map_err(|e| rules::explain_conflict(Error::from(e), |_| conflict()))?;
            if inserted == 0 {
                return Err(conflict());
            }
            Ok(rules::created_execution(e))
        })
        .await
    }

    async fn update_execution(&self, id: String, u: ExecutionUpdate) -> Result<Execution> {
        let id = uuid(&id)?;
        let status = u.status.map(|s| s.as_str().to_string()).into_option();
        let (output, error, metadata) = (raw(&u.output), raw(&u.error), raw(&u.metadata));
        let u = &u;
        self.with_write(async move |conn| {
            for (lo, hi) in id_ranges(&id) {
                let stmt = UpdateExecution { id, status: status.as_deref(), output, error, metadata, lo, hi };
                let rows: Vec<ExecutionRow> = stmt.load(conn).await?;
                if let Some(row) = rows.into_iter().next() {
                    return Execution::try_from(row);
                }
            }
            // Nothing updated: the rule the statement encodes says why.
            let current = Execution::try_from(find_execution(conn, &id, false).await?)?;
            Err(rules::updated_execution(current, u.clone())
                .err()
                .unwrap_or_else(|| refused_unexplained(&id)))
        })
        .await
    }

    async fn complete_execution(&self, id: String, c: Completion) -> Result<Execution> {
        let id = uuid(&id)?;
        let completed_at = c.completed_at;
        let (output, error) = (raw(&c.output), raw(&c.error));
        let c = &c;
        self.with_write(async move |conn| {
            for (lo, hi) in id_ranges(&id) {
                let stmt = CompleteExecution {
                    id,
                    status: c.status.as_str(),
                    output,
                    error,
                    completed_at: to_pg(completed_at),
                    completed_micros: completed_at,
                    lo,
                    hi,
                };
                let rows: Vec<ExecutionRow> = stmt.load(conn).await?;
                if let Some(row) = rows.into_iter().next() {
                    return Execution::try_from(row);
                }
            }
            // Nothing completed: the rules the statement encodes say why.
            let current = Execution::try_from(find_execution(conn, &id, false).await?)?;
            Err(rules::completed_execution(current, c.clone())
                .err()
                .unwrap_or_else(|| refused_unexplained(&id)))
        })
        .await
    }

    async fn get_execution(&self, id: String) -> Result<Execution> {
        let id = uuid(&id)?;
        self.with_read(async move |conn| Execution::try_from(find_execution(conn, &id, false).await?)).await
    }

    async fn list_executions(&self, f: ExecutionFilter, page: Page<(i64, String)>) -> Result<Vec<Execution>> {
        let after = match page.after {
            Some((ts, id)) => Some((to_pg(ts), uuid(&id)?)),
            None => None,
        };
        // Built per attempt: a read that failed on a replica runs again on the primary.
        self.with_read(async move |conn| {
            let mut q = apply_filter(executions::table.select(ExecutionRow::as_select()).into_boxed(), &f);
            if let Some((ts, id)) = after {
                q = q.filter(
                    executions::started_at
                        .lt(ts)
                        .or(executions::started_at.eq(ts).and(executions::id.lt(id))),
                );
            }
            let query = q.order((executions::started_at.desc(), executions::id.desc()));
            let rows: Vec<ExecutionRow> =
                LiteralLimit { query, limit: page.limit as i64 + 1 }.load(conn).await?;
            rows.into_iter().map(Execution::try_from).collect()
        })
        .await
    }

    async fn count_executions(&self, f: ExecutionFilter) -> Result<u64> {
        self.with_read(async move |conn| {
            let n: i64 =
                apply_filter(executions::table.select(count_star()).into_boxed(), &f).first(conn).await?;
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
        let (eid, id) = (uuid(&execution_id)?, uuid(&event_id)?);
        let payload = json(&e.payload)?;
        self.with_write(async move |conn| {
            let row = conn
                .transaction::<_, Error, _>(async |conn| {
                    // Locking the execution row serialises appends (seq numbering) and completion.
                    let exec = find_execution(conn, &eid, true).await?;
                    rules::check_accepts_events(&eid.to_string(), status_of(&exec.status)?)?;
                    let last: Option<i64> = execution_events::table
                        .filter(execution_events::execution_id.eq(&eid))
                        .filter(execution_events::execution_started_at.eq(exec.started_at))
                        .select(max(execution_events::seq))
                        .first(conn)
                        .await?;
                    let row = EventRow {
                        id,
                        execution_id: eid,
                        seq: rules::next_seq(last),
                        kind: e.kind.as_str().to_string(),
                        payload,
                        recorded_at: to_pg(e.recorded_at.unwrap_or_default()),
                        execution_started_at: exec.started_at,
                    };
                    diesel::insert_into(execution_events::table).values(&row).execute(conn).await?;
                    Ok(row)
                })
                .await?;
            ExecutionEvent::try_from(row)
        })
        .await
    }

    async fn list_events(&self, execution_id: String) -> Result<Vec<ExecutionEvent>> {
        let eid = uuid(&execution_id)?;
        self.with_read(async move |conn| {
            // The execution first (one partition for a UUIDv7 id): its started_at is the events' partition key.
            let exec = find_execution(conn, &eid, false).await?;
            let rows = execution_events::table
                .filter(execution_events::execution_id.eq(&eid))
                .filter(execution_events::execution_started_at.eq(exec.started_at))
                .order(execution_events::seq)
                .select(EventRow::as_select())
                .load(conn)
                .await?;
            rows.into_iter().map(ExecutionEvent::try_from).collect()
        })
        .await
    }

    async fn append_audit(&self, entries: Vec<NewAuditEntry>) -> Result<()> {
        let rows = entries.iter().map(AuditRow::from_new).collect::<Result<Vec<_>>>()?;
        let details: Vec<Option<&str>> =
            entries.iter().map(|a| a.details.as_ref().map(|d| d.as_str()).into_option()).collect();
        // Hashed as they will read back: the INET column's text form.
        let stored: Vec<AuditEntry> = entries
            .iter()
            .zip(&rows)
            .map(|(a, r)| {
                let mut e = crate::audit_chain::entry_of(a);
                e.ip_address = r.ip_address.map(|n| super::models::ip_text(n).into()).into();
                e
            })
            .collect();
        // Binary COPY: one statement, no per-row parameters; all rows or none, chained after the head.
        self.copy.audit(&rows, &details, &stored).await
    }

    async fn query_audit(&self, q: AuditQuery, page: Page<(i64, String)>) -> Result<Vec<AuditEntry>> {
        let after = match page.after {
            Some((ts, id)) => Some((to_pg(ts), uuid(&id)?)),
            None => None,
        };
        // Built per attempt: a read that failed on a replica runs again on the primary.
        self.with_read(async move |conn| {
            let query = audit_query(&q, after).order((audit_logs::timestamp.desc(), audit_logs::id.desc()));
            let rows: Vec<AuditRow> = LiteralLimit { query, limit: page.limit as i64 + 1 }.load(conn).await?;
            Ok(rows.into_iter().map(AuditEntry::from).collect())
        })
        .await
    }

    async fn migration_status(&self) -> Result<Vec<MigrationInfo>> {
        self.pooled_migration_status().await
    }

    async fn migrate_up(&self) -> Result<MigrationReport> {
        let report = self.migrate_op(|w| migrate::up(w, &MIGRATIONS)).await?;
        self.after_schema_change().await;
        Ok(report)
    }

    async fn migrate_down(&self) -> Result<MigrationReport> {
        self.migrate_op(|w| migrate::down(w, &MIGRATIONS)).await
    }

    async fn migrate_to(&self, version: String) -> Result<MigrationReport> {
        let report = self.migrate_op(move |w| migrate::to(w, &MIGRATIONS, &version)).await?;
        self.after_schema_change().await;
        Ok(report)
    }

    async fn mark_migration_applied(&self, version: String) -> Result<MigrationReport> {
        self.migrate_op(move |w| migrate::mark_applied(w, &MIGRATIONS, &version)).await
    }

    async fn search_executions(
        &self,
        terms: Vec<String>,
        page: Page<usize>,
    ) -> Result<Vec<(Execution, f64)>> {
        self.with_read(async move |conn| {
            let hits: Vec<ExecutionHitRow> = SearchExecutions {
                ts_query: ts_query(&terms),
                limit: page.limit as i64 + 1,
                offset: page.after.unwrap_or(0) as i64,
            }
            .load(conn)
            .await?;
            hits.into_iter().map(|h| Ok((Execution::try_from(h.record)?, h.rank))).collect()
        })
        .await
    }

    async fn search_patterns(&self, terms: Vec<String>, page: Page<usize>) -> Result<Vec<(Pattern, f64)>> {
        self.with_read(async move |conn| {
            let hits: Vec<PatternHitRow> = sql_query(
                "SELECT p.id, p.name, p.version, p.description, p.definition, p.created_at, p.created_by, \
                 ts_rank(p.search_vector, q)::float8 AS rank \
                 FROM patterns p, to_tsquery('simple', $1) q WHERE p.search_vector @@ q \
                 ORDER BY rank DESC, p.created_at DESC, p.id DESC LIMIT $2 OFFSET $3",
            )
            .bind::<Text, _>(ts_query(&terms))
            .bind::<BigInt, _>(page.limit as i64 + 1)
            .bind::<BigInt, _>(page.after.unwrap_or(0) as i64)
            .load(conn)
            .await?;
            Ok(hits.into_iter().map(|h| (Pattern::from(h.record), h.rank)).collect())
        })
        .await
    }

    async fn health(&self) -> Result<Health> {
        #[derive(QueryableByName)]
        struct Version {
            #[diesel(sql_type = Text)]
            v: String,
        }
        let started = std::time::Instant::now();
        let version: Version = {
            self.with_conn(async |conn| {
                Ok(sql_query("SELECT current_setting('server_version') AS v").get_result(conn).await?)
            })
            .await?
        };
        let latency_us = started.elapsed().as_micros() as i64;
        let status = self.pooled_migration_status().await?;
        Ok(Health {
            backend: "postgresql".into(),
            server_version: format!("PostgreSQL {}", version.v).into(),
            location: self.spec.location.clone().into(),
            latency_us,
            schema_version: migrate::current_version(&status),
            pending_migrations: migrate::pending(&status).len() as u32,
            warnings: self.cfg.warnings().into_iter().map(Into::into).collect(),
        })
    }

    async fn hosts_report(&self) -> Result<hosts::HostsReport> {
        self.hosts_now().await
    }

    async fn shutdown(&self) -> Result<()> {
        self.stop_maintenance();
        tracing::info!(location = %self.spec.location, "PostgreSQL storage closed");
        Ok(())
    }
}

impl PostgresBackend {
    /// After migrating up, make sure the partitions exist (the schema may have been missing at open).
    async fn after_schema_change(&self) {
        if let Err(e) =
            super::partitions::ensure(&self.pool, &self.spec, self.pg.partition_months_ahead).await
        {
            tracing::debug!(error = %e, "partitions not ensured after migrating (schema incomplete?)");
        }
        // Migrated up to (or past) the audit chain: chain the entries written before it.
        if let Err(e) = self.chain_legacy().await {
            tracing::debug!(error = %e, "legacy audit entries not chained after migrating (schema incomplete?)");
        }
    }
}
