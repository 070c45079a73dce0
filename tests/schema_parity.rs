//! The two SQL backends' migrations must describe the same data model: the same migration versions, the same
//! tables and the same columns, except for the documented differences listed here.

use std::collections::{BTreeMap, BTreeSet};

/// Table name -> column names, read from a Diesel-generated schema file.
fn tables(schema: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in schema.lines().map(str::trim) {
        if let Some(head) = line.strip_suffix('{').map(str::trim) {
            if let Some((name, _key)) = head.split_once(" (") {
                if !name.contains(' ') && !name.starts_with("diesel") {
                    current = Some(name.to_string());
                    out.insert(name.to_string(), BTreeSet::new());
                }
            }
        } else if line == "}" {
            current = None;
        } else if let (Some(t), Some((col, _ty))) = (&current, line.split_once(" -> ")) {
            out.get_mut(t).unwrap().insert(col.to_string());
        }
    }
    out
}

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn migration_dirs(backend: &str) -> BTreeSet<String> {
    std::fs::read_dir(format!("{}/migrations/{backend}", env!("CARGO_MANIFEST_DIR")))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn both_backends_have_the_same_migrations() {
    assert_eq!(
        migration_dirs("sqlite"),
        migration_dirs("postgres"),
        "every change needs a migration for both backends, with the same directory name"
    );
}

#[test]
fn both_backends_have_the_same_tables_and_columns() {
    let mut sqlite = tables(&read("src/sqlite/schema.rs"));
    let mut pg = tables(&read("src/postgres/schema.rs"));
    assert!(sqlite.len() >= 4 && pg.len() >= 4, "schema files not parsed: {sqlite:?} {pg:?}");
    // Documented differences: PostgreSQL keeps a generated tsvector column, and execution_events carries its
    // execution's started_at (the partition key: events are partitioned by month like executions); SQLite keeps
    // FTS5 id mappings and the queue of executions to index at commit.
    for t in ["executions", "patterns"] {
        assert!(pg.get_mut(t).unwrap().remove("search_vector"), "{t}.search_vector expected on PostgreSQL");
    }
    assert!(
        pg.get_mut("execution_events").unwrap().remove("execution_started_at"),
        "execution_events.execution_started_at expected on PostgreSQL"
    );
    for t in ["execution_search", "execution_search_queue", "pattern_search"] {
        assert!(sqlite.remove(t).is_some(), "{t} expected on SQLite");
    }
    assert_eq!(sqlite, pg);
}
