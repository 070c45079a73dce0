//! The execution write statements, hand-written (they need `coalesce`, `NOT EXISTS` and arithmetic on
//! `started_at`) but prepared once per connection: each is a `QueryFragment` with a static `QueryId`, so
//! diesel's statement cache keeps it, where a `sql_query` would be parsed and planned on every call.

use std::io::Write;

use diesel::{
    data_types::PgTimestamp,
    pg::Pg,
    query_builder::{AstPass, Query, QueryFragment, QueryId},
    serialize::{self, IsNull, Output, ToSql},
    sql_types::{BigInt, Jsonb, Nullable, Text, Timestamptz, Untyped, Uuid as SqlUuid},
    QueryResult,
};
use serde_json::Value;
use uuid::Uuid;

use crate::sql_text::sql_text;

/// JSON text the adapter already validated, sent as JSONB without parsing and re-serialising it.
#[derive(Debug, Clone, Copy)]
pub struct RawJson<'a>(pub &'a str);

impl ToSql<Jsonb, Pg> for RawJson<'_> {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
        out.write_all(&[1])?; // JSONB binary format version
        out.write_all(self.0.as_bytes())?;
        Ok(IsNull::No)
    }
}

/// The columns of [`ExecutionRow`], for `RETURNING`.
pub const EXECUTION_COLUMNS: &str =
    "id, pattern_name, pattern_version, status, input, output, error, started_at, \
    completed_at, duration_ms, metadata, tags";

/// A statement type is its own (static) query id: diesel caches its prepared statement per connection.
macro_rules! statement {
    ($($t:ident),*) => {$(
        impl QueryId for $t<'_> {
            type QueryId = $t<'static>;
            const HAS_STATIC_QUERY_ID: bool = true;
        }
        impl Query for $t<'_> {
            type SqlType = Untyped;
        }
    )*};
}

/// `INSERT` of a new execution. With `guard_id`, also refuses an id already used in another month (the
/// primary key is `(id, started_at)`); ids the plugin generated (UUIDv7) cannot collide and skip that probe of
/// every partition.
pub struct InsertExecution<'a> {
    pub id: Uuid,
    pub pattern_name: &'a str,
    pub pattern_version: &'a str,
    pub status: &'a str,
    pub input: Option<RawJson<'a>>,
    pub metadata: Option<RawJson<'a>>,
    pub started_at: PgTimestamp,
    pub tags: &'a Value,
    pub guard_id: bool,
}

/// `UPDATE` of a pending or running execution; `None` keeps a column. The SQL form of
/// [`crate::rules::updated_execution`]: when it changes no row, the backend reads the row and lets that
/// function say why, so the answer is the other backends'.
pub struct UpdateExecution<'a> {
    pub id: Uuid,
    pub status: Option<&'a str>,
    pub output: Option<RawJson<'a>>,
    pub error: Option<RawJson<'a>>,
    pub metadata: Option<RawJson<'a>>,
    pub lo: PgTimestamp,
    pub hi: PgTimestamp,
}

/// Final status of a pending or running execution, `completed_at` and `duration_ms`: the SQL form of
/// [`crate::rules::completed_execution`] (final states are final, `completed_at >= started_at`,
/// [`crate::rules::duration_ms`] in integer arithmetic); when it changes no row, the backend reads the row and
/// lets that function say why.
pub struct CompleteExecution<'a> {
    pub id: Uuid,
    pub status: &'a str,
    pub output: Option<RawJson<'a>>,
    pub error: Option<RawJson<'a>>,
    pub completed_at: PgTimestamp,
    pub completed_micros: i64,
    pub lo: PgTimestamp,
    pub hi: PgTimestamp,
}

/// Two distinct statements (with and without the id guard) need two cache keys: two types.
pub struct GuardedInsert<'a>(pub InsertExecution<'a>);

fn insert_sql<'b>(r: &'b InsertExecution<'_>, out: &mut AstPass<'_, 'b, Pg>) -> QueryResult<()> {
    out.push_sql(
        "INSERT INTO executions (id, pattern_name, pattern_version, status, input, metadata, started_at, tags) \
         SELECT ",
    );
    out.push_bind_param::<SqlUuid, _>(&r.id)?;
    out.push_sql(", ");
    out.push_bind_param::<Text, _>(r.pattern_name)?;
    out.push_sql(", ");
    out.push_bind_param::<Text, _>(r.pattern_version)?;
    out.push_sql(", ");
    out.push_bind_param::<Text, _>(r.status)?;
    out.push_sql(", ");
    out.push_bind_param::<Nullable<Jsonb>, _>(&r.input)?;
    out.push_sql(", ");
    out.push_bind_param::<Nullable<Jsonb>, _>(&r.metadata)?;
    out.push_sql(", ");
    out.push_bind_param::<Timestamptz, _>(&r.started_at)?;
    out.push_sql(", ");
    out.push_bind_param::<Jsonb, _>(r.tags)?;
    if r.guard_id {
        out.push_sql(" WHERE NOT EXISTS (SELECT 1 FROM executions WHERE id = ");
        out.push_bind_param::<SqlUuid, _>(&r.id)?;
        out.push_sql(")");
    }
    Ok(())
}

impl QueryFragment<Pg> for InsertExecution<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        insert_sql(self, &mut out)
    }
}

impl QueryFragment<Pg> for GuardedInsert<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        insert_sql(&self.0, &mut out)
    }
}

impl QueryFragment<Pg> for UpdateExecution<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("UPDATE executions SET status = coalesce(");
        out.push_bind_param::<Nullable<Text>, _>(&self.status)?;
        out.push_sql(", status), output = coalesce(");
        out.push_bind_param::<Nullable<Jsonb>, _>(&self.output)?;
        out.push_sql(", output), error = coalesce(");
        out.push_bind_param::<Nullable<Jsonb>, _>(&self.error)?;
        out.push_sql(", error), metadata = coalesce(");
        out.push_bind_param::<Nullable<Jsonb>, _>(&self.metadata)?;
        out.push_sql(", metadata) WHERE id = ");
        out.push_bind_param::<SqlUuid, _>(&self.id)?;
        out.push_sql(" AND started_at >= ");
        out.push_bind_param::<Timestamptz, _>(&self.lo)?;
        out.push_sql(" AND started_at < ");
        out.push_bind_param::<Timestamptz, _>(&self.hi)?;
        out.push_sql(" AND status IN ('pending', 'running') RETURNING ");
        out.push_sql(EXECUTION_COLUMNS);
        Ok(())
    }
}

impl QueryFragment<Pg> for CompleteExecution<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("UPDATE executions SET status = ");
        out.push_bind_param::<Text, _>(&self.status)?;
        out.push_sql(", output = coalesce(");
        out.push_bind_param::<Nullable<Jsonb>, _>(&self.output)?;
        out.push_sql(", output), error = coalesce(");
        out.push_bind_param::<Nullable<Jsonb>, _>(&self.error)?;
        out.push_sql(", error), completed_at = ");
        out.push_bind_param::<Timestamptz, _>(&self.completed_at)?;
        out.push_sql(", duration_ms = (");
        out.push_bind_param::<BigInt, _>(&self.completed_micros)?;
        out.push_sql(" - (EXTRACT(EPOCH FROM started_at) * 1000000)::bigint) / 1000 WHERE id = ");
        out.push_bind_param::<SqlUuid, _>(&self.id)?;
        out.push_sql(" AND started_at >= ");
        out.push_bind_param::<Timestamptz, _>(&self.lo)?;
        out.push_sql(" AND started_at < ");
        out.push_bind_param::<Timestamptz, _>(&self.hi)?;
        out.push_sql(" AND started_at <= ");
        out.push_bind_param::<Timestamptz, _>(&self.completed_at)?;
        out.push_sql(" AND status IN ('pending', 'running') RETURNING ");
        out.push_sql(EXECUTION_COLUMNS);
        Ok(())
    }
}

statement!(InsertExecution, GuardedInsert, UpdateExecution, CompleteExecution);

/// The primary's WAL insert position in bytes ([`super::replicas::INSERT_LSN_SQL`]), read by the read-your-writes
/// marker and the health task: prepared once per connection like the write statements (no parse per read).
pub struct InsertLsn;

impl QueryId for InsertLsn {
    type QueryId = InsertLsn;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl Query for InsertLsn {
    type SqlType = BigInt;
}

impl QueryFragment<Pg> for InsertLsn {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql(super::replicas::INSERT_LSN_SQL);
        Ok(())
    }
}

/// The execution search (terms as a `to_tsquery('simple', …)` text, page size + 1, offset): prepared once per
/// connection (a `sql_query` is parsed and planned at every call). [`search_executions_sql`] gives its text.
pub struct SearchExecutions {
    pub ts_query: String,
    pub limit: i64,
    pub offset: i64,
}

impl QueryId for SearchExecutions {
    type QueryId = SearchExecutions;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl Query for SearchExecutions {
    type SqlType = Untyped;
}

impl QueryFragment<Pg> for SearchExecutions {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql(
            "SELECT e.id, e.pattern_name, e.pattern_version, e.status, e.input, e.output, e.error, e.started_at, \
             e.completed_at, e.duration_ms, e.metadata, e.tags, ts_rank(e.search_vector, q)::float8 AS rank \
             FROM executions e, to_tsquery('simple', ",
        );
        out.push_bind_param::<Text, _>(&self.ts_query)?;
        out.push_sql(
            ") q WHERE e.search_vector @@ q ORDER BY rank DESC, e.started_at DESC, e.id DESC LIMIT ",
        );
        out.push_bind_param::<BigInt, _>(&self.limit)?;
        out.push_sql(" OFFSET ");
        out.push_bind_param::<BigInt, _>(&self.offset)?;
        Ok(())
    }
}

/// The SQL text of [`SearchExecutions`] (`$1` the tsquery text, `$2` limit, `$3` offset), for the benchmark's
/// raw baseline, which must run the plugin's exact statement.
pub fn search_executions_sql() -> QueryResult<String> {
    sql_text::<Pg>(&SearchExecutions { ts_query: String::new(), limit: 0, offset: 0 })
}

/// The SQL text of the two statements of an execution's lifecycle as the plugin sends them (create with a
/// generated id, then complete), for the benchmark's raw baseline that must issue the same SQL. Parameters:
/// insert `$1..$8` = id, pattern_name, pattern_version, status, input, metadata, started_at, tags; complete
/// `$1..$9` = status, output, error, completed_at, completed_at in µs, id, `started_at` lower and upper bound,
/// completed_at.
pub fn lifecycle_sql() -> QueryResult<[String; 2]> {
    let (id, ts, tags) = (Uuid::nil(), PgTimestamp(0), Value::Array(Vec::new()));
    let insert = InsertExecution {
        id,
        pattern_name: "",
        pattern_version: "",
        status: "",
        input: None,
        metadata: None,
        started_at: ts,
        tags: &tags,
        guard_id: false,
    };
    let complete = CompleteExecution {
        id,
        status: "",
        output: None,
        error: None,
        completed_at: ts,
        completed_micros: 0,
        lo: ts,
        hi: ts,
    };
    Ok([sql_text::<Pg>(&insert)?, sql_text::<Pg>(&complete)?])
}

#[cfg(test)]
mod tests {
    #[test]
    fn lifecycle_sql_is_the_statements_text() {
        let [insert, complete] = super::lifecycle_sql().unwrap();
        assert!(
            insert.starts_with("INSERT INTO executions (") && insert.contains("$8") && !insert.contains("$9")
        );
        assert!(!insert.contains("NOT EXISTS"), "generated ids skip the id guard: {insert}");
        assert!(complete.starts_with("UPDATE executions SET") && complete.contains("$9"), "{complete}");
        assert!(complete.ends_with(super::EXECUTION_COLUMNS), "{complete}");
    }
}
