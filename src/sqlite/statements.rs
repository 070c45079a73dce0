//! The execution insert as a statement with a static query id, so diesel prepares it once per connection and
//! keeps it. `insert_into(executions).values(&row)` leaves out the columns whose value is `None` (they take
//! their default), so its SQL text depends on the row and diesel writes it anew and looks it up by that text
//! for every insert: 7 % of the writer thread's samples in `sqlite_writes` (BENCHMARKS.md, issue 20). Here
//! every column is bound (`NULL` for `None`, which is each nullable column's default), and the SQL is built
//! from the schema's column names.

use std::sync::LazyLock;

use diesel::{
    query_builder::{AstPass, QueryFragment, QueryId},
    sql_types::{BigInt, Nullable, Text},
    sqlite::Sqlite,
    Column, QueryResult, RunQueryDsl,
};

use super::{models::ExecutionRow, schema::executions::dsl as e};

/// `INSERT` of one [`ExecutionRow`], every column bound.
pub struct InsertExecution<'a>(pub &'a ExecutionRow);

impl QueryId for InsertExecution<'_> {
    type QueryId = InsertExecution<'static>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl<Conn> RunQueryDsl<Conn> for InsertExecution<'_> {}

/// Each column with its SQL type, named once: the column list of the SQL ([`COLUMNS`]) and the binds
/// ([`bind_row`]) come from the same list, so they cannot fall out of order. The fields of [`ExecutionRow`] carry
/// the columns' names.
macro_rules! execution_columns {
    ($($col:ident: $ty:ty),+ $(,)?) => {
        const COLUMNS: &[&str] = &[$(e::$col::NAME),+];

        /// `?, ?, …`: the row's values, bound in [`COLUMNS`] order.
        fn bind_row<'b>(r: &'b ExecutionRow, out: &mut AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
            let mut sep = "";
            $(
                out.push_sql(sep);
                out.push_bind_param::<$ty, _>(&r.$col)?;
                sep = ", ";
            )+
            let _ = sep;
            Ok(())
        }
    };
}

execution_columns!(
    id: Text,
    pattern_name: Text,
    pattern_version: Text,
    status: Text,
    input: Nullable<Text>,
    output: Nullable<Text>,
    error: Nullable<Text>,
    started_at: BigInt,
    completed_at: Nullable<BigInt>,
    duration_ms: Nullable<BigInt>,
    metadata: Nullable<Text>,
    tags: Text,
);

/// `INSERT INTO executions (<COLUMNS>) VALUES (`, written once: `walk_ast` runs at every insert (to collect the
/// binds), so the text is not built there.
static HEAD: LazyLock<String> =
    LazyLock::new(|| format!("INSERT INTO executions ({}) VALUES (", COLUMNS.join(", ")));

impl QueryFragment<Sqlite> for InsertExecution<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        out.push_sql(&HEAD);
        bind_row(self.0, &mut out)?;
        out.push_sql(")");
        Ok(())
    }
}
