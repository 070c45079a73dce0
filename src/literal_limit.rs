//! `<query> LIMIT <n>` with the limit written into the SQL instead of bound, on both SQL backends. A page query
//! is then cached once per distinct SQL text (filter shape and page size) and keeps its plan:
//!
//! - PostgreSQL: with `LIMIT $n` it cannot cost a generic plan (it assumes a tenth of the rows), so it planned
//!   a page query on the partitioned table anew at every call (~650 µs over 7 partitions, measured).
//! - SQLite: the planner reads a bound `LIMIT ?` (the row-count estimate), which marks the statement to be
//!   prepared again whenever that parameter is bound, i.e. at every call: `sqlite3Reprepare` (parser included)
//!   was 4.7 % of the CPU of the get-by-id benchmark (BENCHMARKS.md, issue 20).

use diesel::{
    backend::Backend,
    query_builder::{AstPass, Query, QueryFragment, QueryId},
    QueryResult,
};

pub struct LiteralLimit<Q> {
    pub query: Q,
    pub limit: i64,
}

impl<Q> QueryId for LiteralLimit<Q> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Q: Query> Query for LiteralLimit<Q> {
    type SqlType = Q::SqlType;
}

impl<Q: QueryFragment<DB>, DB: Backend> QueryFragment<DB> for LiteralLimit<Q> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        self.query.walk_ast(out.reborrow())?;
        out.push_sql(&format!(" LIMIT {}", self.limit));
        Ok(())
    }
}

impl<Q, Conn> diesel::RunQueryDsl<Conn> for LiteralLimit<Q> {}
