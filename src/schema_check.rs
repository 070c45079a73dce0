//! The hand-written copies of the `executions` column list, checked against the Diesel schemas
//! (`src/postgres/schema.rs`, `src/sqlite/schema.rs`, generated from the migrations): a column added by a
//! migration but missed by one copy fails here, naming the copy and the column.
//!
//! The copies: the PostgreSQL `RETURNING` list (`EXECUTION_COLUMNS`), the PostgreSQL `INSERT` list, the
//! PostgreSQL search `SELECT`, `parallax_move_strays()` (which re-inserts rows moved out of the default
//! partition, so a missed column there loses data silently), and the full-text bodies (SQLite's FTS5 body in
//! `src/sqlite/search.rs` and the migrations, PostgreSQL's generated `search_vector`). The statements are read
//! as the plugin sends them (`lifecycle_sql`, `INDEX_QUEUED_SQL`) where they are public, as source text where
//! they are not, and the migrations from `migrations/*/`. `migrations/README.md` says what else a new column
//! touches.

use std::collections::BTreeSet;

use diesel::{debug_query, QueryDsl};

/// Stored columns the database computes; no statement writes or returns them.
const GENERATED: &[&str] = &["search_vector"];

/// Columns the `INSERT` of a new execution leaves to their default, because the update and completion
/// statements set them later.
const SET_AFTER_INSERT: &[&str] = &["output", "error", "completed_at", "duration_ms"];

/// The columns whose string values full-text search finds, in the order the bodies concatenate them.
const SEARCHED: &[&str] = &["input", "output", "error"];

/// The columns search does not index. With [`SEARCHED`] and [`GENERATED`], every column must be in exactly one
/// list, so a new column cannot be left out of search by omission.
const NOT_SEARCHED: &[&str] = &[
    "id",
    "pattern_name",
    "pattern_version",
    "status",
    "started_at",
    "completed_at",
    "duration_ms",
    "metadata",
    "tags",
];

/// Column names from diesel's SQL for `SELECT <all_columns> FROM <table>`.
fn select_list(sql: &str) -> Vec<String> {
    let list = sql
        .strip_prefix("SELECT ")
        .and_then(|s| s.split_once(" FROM "))
        .unwrap_or_else(|| panic!("unexpected diesel SQL: {sql}"))
        .0;
    list.split(", ").map(|c| c.rsplit('.').next().unwrap().trim_matches(['"', '`']).to_string()).collect()
}

/// Every column of `executions` in `src/postgres/schema.rs`, in order.
fn pg_columns() -> Vec<String> {
    use crate::postgres::schema::executions;
    let query = executions::table.select(executions::all_columns);
    select_list(&debug_query::<diesel::pg::Pg, _>(&query).to_string())
}

/// Every column of `executions` in `src/sqlite/schema.rs`, in order.
fn sqlite_columns() -> Vec<String> {
    use crate::sqlite::schema::executions;
    let query = executions::table.select(executions::all_columns);
    select_list(&debug_query::<diesel::sqlite::Sqlite, _>(&query).to_string())
}

/// The columns a statement must write or return: every column but the generated ones.
fn stored(columns: &[String]) -> Vec<String> {
    columns.iter().filter(|c| !GENERATED.contains(&c.as_str())).cloned().collect()
}

/// `a, b ,c` -> `[a, b, c]`, with `prefix.` stripped from each item that has it.
fn list(text: &str, prefix: &str) -> Vec<String> {
    text.split(',')
        .map(|c| {
            let c = c.split_whitespace().collect::<Vec<_>>().join(" ");
            c.strip_prefix(prefix).map(str::to_string).unwrap_or(c)
        })
        .filter(|c| !c.is_empty())
        .collect()
}

/// Fails naming `copy`, what it lacks and what it has that `expected` does not, when `found` is not `expected`
/// (compared in order when `ordered`).
fn assert_same(copy: &str, found: &[String], expected: &[String], ordered: bool, fix: &str) {
    assert_same_as(copy, found, "the Diesel schema", expected, ordered, fix)
}

fn assert_same_as(copy: &str, found: &[String], source: &str, expected: &[String], ordered: bool, fix: &str) {
    let (f, e): (BTreeSet<_>, BTreeSet<_>) = (found.iter().collect(), expected.iter().collect());
    let missing: Vec<_> = e.difference(&f).collect();
    let unknown: Vec<_> = f.difference(&e).collect();
    let mut dup = found.to_vec();
    dup.sort();
    dup.dedup();
    assert!(
        missing.is_empty()
            && unknown.is_empty()
            && dup.len() == found.len()
            && (!ordered || found == expected),
        "{copy} does not match {source}.\n  missing: {missing:?}\n  not in {source}: {unknown:?}\n  \
         found:    {found:?}\n  expected: {expected:?}{}\n{fix}",
        if ordered { " (in this order)" } else { "" },
    );
}

/// The text between `start` (included in the search, excluded from the result) and the next `end`.
fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = text.find(start)? + start.len();
    let len = text[from..].find(end)?;
    Some(&text[from..from + len])
}

/// `(migration directory name, up.sql, down.sql)` of one backend, oldest first.
fn migrations(backend: &str) -> Vec<(String, String, String)> {
    let dir = format!("{}/migrations/{backend}", env!("CARGO_MANIFEST_DIR"));
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {dir}: {e}"))
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let read = |f: &str| {
                let path = format!("{dir}/{name}/{f}");
                std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
            };
            let (up, down) = (read("up.sql"), read("down.sql"));
            (name, up, down)
        })
        .collect()
}

#[test]
fn the_two_schemas_have_the_same_stored_columns_in_the_same_order() {
    assert_same(
        "src/sqlite/schema.rs (executions)",
        &sqlite_columns(),
        &stored(&pg_columns()),
        true,
        "Add the column to both backends' migrations in the same position (tests/schema_parity.rs compares \
         the tables), then regenerate both schema.rs files with the Diesel CLI (migrations/README.md).",
    );
}

#[test]
fn returning_list_is_every_stored_column() {
    let [_, complete] = crate::postgres::lifecycle_sql().unwrap();
    let returning = complete.rsplit_once(" RETURNING ").expect("the complete statement returns the row").1;
    assert_same(
        "EXECUTION_COLUMNS (src/postgres/statements.rs, the RETURNING list)",
        &list(returning, ""),
        &stored(&pg_columns()),
        true,
        "Add the column to EXECUTION_COLUMNS and to ExecutionRow (src/postgres/models.rs), in schema order: \
         rows are read by position.",
    );
}

#[test]
fn insert_writes_every_column_not_set_later() {
    let [insert, complete] = crate::postgres::lifecycle_sql().unwrap();
    let columns = list(between(&insert, "INSERT INTO executions (", ")").expect("an INSERT column list"), "");
    let expected: Vec<String> =
        stored(&pg_columns()).into_iter().filter(|c| !SET_AFTER_INSERT.contains(&c.as_str())).collect();
    assert_same(
        "the INSERT of a new execution (src/postgres/statements.rs, insert_sql)",
        &columns,
        &expected,
        false,
        "Write the new column in insert_sql (and InsertExecution), or, when only a later update sets it, add \
         it to SET_AFTER_INSERT in src/schema_check.rs.",
    );
    for c in SET_AFTER_INSERT {
        assert!(
            complete.contains(&format!(" {c} = ")),
            "SET_AFTER_INSERT says `{c}` is set after the insert, but the completion statement does not set \
             it: {complete}"
        );
    }
}

#[test]
fn search_select_returns_every_stored_column() {
    let sql = crate::postgres::search_executions_sql().unwrap();
    let select = between(&sql, "SELECT ", " FROM ").expect("a SELECT list");
    let columns: Vec<String> =
        select.split(',').filter_map(|c| c.trim().strip_prefix("e.")).map(str::to_string).collect();
    assert_same(
        "the execution search SELECT (src/postgres/statements.rs, SearchExecutions)",
        &columns,
        &stored(&pg_columns()),
        true,
        "Add `e.<column>` to the search SELECT, in schema order.",
    );
}

/// The INSERT and SELECT lists of the last definition of `parallax_move_strays()` in the migrations.
#[test]
fn move_strays_copies_every_stored_column() {
    let mut latest = None;
    for (name, up, _) in migrations("postgres") {
        if let Some(i) = up.rfind("FUNCTION parallax_move_strays()") {
            latest = Some((name.clone(), up[i..].split_whitespace().collect::<Vec<_>>().join(" ")));
        }
        // A migration that adds a stored column to executions must redefine the function in the same up.sql.
        const ADD: &str = "ALTER TABLE executions ADD COLUMN ";
        for stmt in up.split(';') {
            let s = stmt.split_whitespace().collect::<Vec<_>>().join(" ");
            if let Some(rest) = s.find(ADD).map(|i| &s[i + ADD.len()..]) {
                let column = rest.split_whitespace().next().unwrap_or_default();
                assert!(
                    s.contains("GENERATED ALWAYS") || up.contains("FUNCTION parallax_move_strays()"),
                    "migrations/postgres/{name}/up.sql adds executions.{column} but does not redefine \
                     parallax_move_strays(): rows moved out of the default partition would lose it. Add \
                     `CREATE OR REPLACE FUNCTION parallax_move_strays()` with the column (see \
                     2024-01-15-000000_add_execution_tags), and the previous definition to down.sql."
                );
            }
        }
    }
    let (name, body) = latest.expect("parallax_move_strays() is defined in migrations/postgres");
    let file = format!("parallax_move_strays() (last defined in migrations/postgres/{name}/up.sql)");
    let insert = list(between(&body, "INSERT INTO executions (", ")").expect("an INSERT column list"), "");
    let select = list(between(&body, "SELECT ", " FROM parallax_strays").expect("a SELECT list"), "");
    let expected = stored(&pg_columns());
    let fix = "Redefine the function in the migration that adds the column (CREATE OR REPLACE FUNCTION \
               parallax_move_strays(), the column in both lists), and restore the old definition in its down.sql.";
    assert_same(&format!("{file}, INSERT list"), &insert, &expected, false, fix);
    assert_eq!(
        insert, select,
        "{file}: the INSERT and SELECT lists must name the same columns in the same order"
    );
}

#[test]
fn every_column_is_classified_for_search() {
    let mut columns: BTreeSet<String> = pg_columns().into_iter().collect();
    columns.extend(sqlite_columns());
    for c in &columns {
        let lists = [SEARCHED, NOT_SEARCHED, GENERATED].iter().filter(|l| l.contains(&c.as_str())).count();
        assert_eq!(
            lists, 1,
            "executions.{c} must be in exactly one of SEARCHED, NOT_SEARCHED, GENERATED in src/schema_check.rs. \
             A searched column goes into the full-text bodies: src/sqlite/search.rs (INDEX_QUEUED_SQL), a new \
             SQLite migration that re-indexes, a new PostgreSQL migration redefining search_vector, and the \
             file store's search text (src/file/search.rs)."
        );
    }
    for c in SEARCHED.iter().chain(NOT_SEARCHED).chain(GENERATED) {
        assert!(
            columns.contains(*c),
            "src/schema_check.rs lists executions.{c}, which no schema has any more"
        );
    }
}

/// The columns whose string values an executions FTS statement indexes: `json_tree(<alias>.<column>)`.
fn fts_columns(statement: &str) -> Vec<String> {
    statement
        .split("json_tree(")
        .skip(1)
        .map(|s| s.split(')').next().unwrap().rsplit('.').next().unwrap().to_string())
        .collect()
}

#[test]
fn sqlite_fts_bodies_index_the_searched_columns() {
    let searched: Vec<String> = SEARCHED.iter().map(|c| c.to_string()).collect();
    let fix = "Every executions FTS body concatenates the string values of SEARCHED (src/schema_check.rs), in \
               order. When the searched columns change, src/sqlite/search.rs changes with a migration that \
               re-indexes; older migrations keep their bodies, and this test then learns which list each had.";
    let live = crate::sqlite::search::INDEX_QUEUED_SQL
        .iter()
        .find(|s| s.contains("executions_fts (rowid, body)"))
        .expect("INDEX_QUEUED_SQL writes executions_fts");
    let source = "SEARCHED (src/schema_check.rs)";
    assert_same_as(
        "src/sqlite/search.rs (INDEX_QUEUED_SQL)",
        &fts_columns(live),
        source,
        &searched,
        true,
        fix,
    );
    let mut copies = 0;
    for (name, up, down) in migrations("sqlite") {
        for (file, sql) in [("up.sql", &up), ("down.sql", &down)] {
            for marker in ["executions_fts (rowid, body)", "UPDATE executions_fts SET body"] {
                for (i, _) in sql.match_indices(marker) {
                    let statement = &sql[i..i + sql[i..].find(';').unwrap_or(sql.len() - i)];
                    let copy = format!("the executions FTS body in migrations/sqlite/{name}/{file}");
                    assert_same_as(&copy, &fts_columns(statement), source, &searched, true, fix);
                    copies += 1;
                }
            }
        }
    }
    assert!(
        copies >= 4,
        "found only {copies} executions FTS bodies in migrations/sqlite: the markers changed?"
    );
}

#[test]
fn postgres_search_vector_indexes_the_searched_columns() {
    let searched: Vec<String> = SEARCHED.iter().map(|c| c.to_string()).collect();
    let (name, up) = migrations("postgres")
        .into_iter()
        .filter(|(_, up, _)| up.contains("ALTER TABLE executions ADD COLUMN search_vector"))
        .map(|(name, up, _)| (name, up))
        .next_back()
        .expect("a PostgreSQL migration adds executions.search_vector");
    let expr = between(&up, "ALTER TABLE executions ADD COLUMN search_vector", "STORED").unwrap();
    let columns: Vec<String> = expr
        .split("to_tsvector('simple'::regconfig,")
        .skip(1)
        .map(|s| {
            let s = s.trim_start();
            let s = s.strip_prefix("coalesce(").unwrap_or(s);
            s.split([',', ')']).next().unwrap().trim().to_string()
        })
        .collect();
    assert_same_as(
        &format!("executions.search_vector (migrations/postgres/{name}/up.sql)"),
        &columns,
        "SEARCHED (src/schema_check.rs)",
        &searched,
        true,
        "A new searched column needs a PostgreSQL migration that redefines the generated search_vector.",
    );
}
