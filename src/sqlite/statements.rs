//! The execution insert as a statement with a static query id, so diesel prepares it once per connection and
//! keeps it. `insert_into(executions).values(&row)` leaves out the columns whose value is `None` (they take
//! their default), so its SQL text depends on the row and diesel writes it anew and looks it up by that text
//! for every insert: 7 % of the writer thread's samples in `sqlite_writes` (BENCHMARKS.md, issue 20). Here
//! every column is bound (`NULL` for `None`, which is each nullable column's default), and the SQL is built
//! from the schema's column names.

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

/// The columns in the order [`InsertExecution`] binds them.
const COLUMNS: [&str; 12] = [
    e::id::NAME,
    e::pattern_name::NAME,
    e::pattern_version::NAME,
    e::status::NAME,
    e::input::NAME,
    e::output::NAME,
    e::error::NAME,
    e::started_at::NAME,
    e::completed_at::NAME,
    e::duration_ms::NAME,
    e::metadata::NAME,
    e::tags::NAME,
];

impl QueryFragment<Sqlite> for InsertExecution<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        let r = self.0;
        out.push_sql("INSERT INTO executions (");
        out.push_sql(&COLUMNS.join(", "));
        out.push_sql(") VALUES (");
        out.push_bind_param::<Text, _>(&r.id)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&r.pattern_name)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&r.pattern_version)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&r.status)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<Text>, _>(&r.input)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<Text>, _>(&r.output)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<Text>, _>(&r.error)?;
        out.push_sql(", ");
        out.push_bind_param::<BigInt, _>(&r.started_at)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<BigInt>, _>(&r.completed_at)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<BigInt>, _>(&r.duration_ms)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<Text>, _>(&r.metadata)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&r.tags)?;
        out.push_sql(")");
        Ok(())
    }
}
