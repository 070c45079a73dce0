//! Full-text indexing of executions, once per write transaction. The triggers of migration
//! `2026-11-24-000000_index_execution_search_per_commit` only note changed executions in
//! `execution_search_queue`; [`index_queued`] indexes all of them with one statement per step before the
//! writer commits (FTS5 writes an index segment per savepoint, so indexing row by row from a trigger cost a
//! segment per row). The statements are prepared once per connection (static query ids).

use diesel::{
    query_builder::{AstPass, Query, QueryFragment, QueryId},
    sql_types::{BigInt, Bool, Text, Untyped},
    sqlite::{Sqlite, SqliteConnection},
    QueryResult, RunQueryDsl,
};

use parallax_storage_abi::ErrorKind;

use crate::error::{sqlite_error, Result};

/// A fixed SQL statement that diesel prepares once per connection and keeps in its statement cache.
macro_rules! statement {
    ($($(#[$doc:meta])* $name:ident = $sql:expr;)*) => {$(
        $(#[$doc])*
        struct $name;
        impl QueryId for $name {
            type QueryId = $name;
            const HAS_STATIC_QUERY_ID: bool = true;
        }
        impl QueryFragment<Sqlite> for $name {
            fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
                out.push_sql($sql);
                Ok(())
            }
        }
        impl RunQueryDsl<SqliteConnection> for $name {}
    )*};
}

/// The steps of indexing the queue, in order (public for the benchmark's raw baseline, which does the same work).
///
/// `CROSS JOIN` makes the queue the outer loop whatever the statistics say: after an `ANALYZE` taken while
/// the queue was empty, SQLite preferred scanning every row of `execution_search` and probing the queue, at
/// each commit (seen at a million executions: hundreds of milliseconds per commit).
pub const INDEX_QUEUED_SQL: [&str; 4] = [
    // A stable FTS document id for each new execution.
    "INSERT OR IGNORE INTO execution_search (execution_id) SELECT execution_id FROM execution_search_queue",
    // Updated executions lose their old document (new ones have none: nothing to delete).
    "DELETE FROM executions_fts WHERE rowid IN (SELECT s.doc_id FROM execution_search_queue q \
     CROSS JOIN execution_search s ON s.execution_id = q.execution_id)",
    // The string values of the JSON documents, as PostgreSQL's to_tsvector(jsonb) sees them.
    "INSERT INTO executions_fts (rowid, body) SELECT s.doc_id, \
     coalesce((SELECT group_concat(value, ' ') FROM json_tree(e.input) WHERE type = 'text'), '') || ' ' || \
     coalesce((SELECT group_concat(value, ' ') FROM json_tree(e.output) WHERE type = 'text'), '') || ' ' || \
     coalesce((SELECT group_concat(value, ' ') FROM json_tree(e.error) WHERE type = 'text'), '') \
     FROM execution_search_queue q CROSS JOIN execution_search s ON s.execution_id = q.execution_id \
     CROSS JOIN executions e ON e.id = q.execution_id",
    "DELETE FROM execution_search_queue",
];

statement! {
    /// Is anything waiting to be indexed?
    AnyQueued = "SELECT EXISTS (SELECT 1 FROM execution_search_queue)";
    MapNew = INDEX_QUEUED_SQL[0];
    DropOld = INDEX_QUEUED_SQL[1];
    IndexQueued = INDEX_QUEUED_SQL[2];
    ClearQueue = INDEX_QUEUED_SQL[3];
}

impl Query for AnyQueued {
    type SqlType = Bool;
}

/// Whether executions are waiting to be indexed. A database migrated down to before the queue has no queue
/// (its triggers index every row themselves): nothing is waiting.
pub fn any_queued(conn: &mut SqliteConnection) -> Result<bool> {
    match AnyQueued.get_result::<bool>(conn).map_err(sqlite_error) {
        Ok(any) => Ok(any),
        // The query reads the queue table alone: SQLite's missing-table error (`schema`) means no queue.
        Err(e) if e.kind() == ErrorKind::Schema => Ok(false),
        Err(e) => Err(e),
    }
}

/// Indexes every queued execution and empties the queue. Runs inside the caller's transaction.
pub fn index_queued(conn: &mut SqliteConnection) -> Result<()> {
    if !any_queued(conn)? {
        return Ok(());
    }
    MapNew.execute(conn).map_err(sqlite_error)?;
    DropOld.execute(conn).map_err(sqlite_error)?;
    IndexQueued.execute(conn).map_err(sqlite_error)?;
    ClearQueue.execute(conn).map_err(sqlite_error)?;
    Ok(())
}

/// The execution search: FTS5 terms, page size + 1 and offset bound. A statement with a static query id, so
/// each pooled connection prepares it once (a `sql_query` is prepared anew at every call).
pub struct SearchExecutions {
    pub fts_query: String,
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

impl RunQueryDsl<SqliteConnection> for SearchExecutions {}

impl QueryFragment<Sqlite> for SearchExecutions {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        out.push_sql(
            "SELECT e.*, -bm25(executions_fts) AS rank FROM executions_fts \
             JOIN execution_search s ON s.doc_id = executions_fts.rowid \
             JOIN executions e ON e.id = s.execution_id \
             WHERE executions_fts MATCH ",
        );
        out.push_bind_param::<Text, _>(&self.fts_query)?;
        out.push_sql(" ORDER BY rank DESC, e.started_at DESC, e.id DESC LIMIT ");
        out.push_bind_param::<BigInt, _>(&self.limit)?;
        out.push_sql(" OFFSET ");
        out.push_bind_param::<BigInt, _>(&self.offset)?;
        Ok(())
    }
}

/// The SQL text of [`SearchExecutions`] (binds: the FTS5 query, limit, offset), for the benchmark's raw
/// baseline, which must run the plugin's exact statement.
pub fn search_executions_sql() -> QueryResult<String> {
    crate::sql_text::sql_text::<Sqlite>(&SearchExecutions { fts_query: String::new(), limit: 0, offset: 0 })
}
