//! The SQL text diesel sends for a statement (placeholders, not values), for the benchmarks' raw baselines,
//! which must run the plugin's exact statements.

use diesel::{
    backend::Backend,
    query_builder::{QueryBuilder, QueryFragment},
    QueryResult,
};

pub fn sql_text<DB>(q: &impl QueryFragment<DB>) -> QueryResult<String>
where
    DB: Backend + Default,
    DB::QueryBuilder: Default,
{
    let mut b = DB::QueryBuilder::default();
    q.to_sql(&mut b, &DB::default())?;
    Ok(b.finish())
}
