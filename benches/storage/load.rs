//! Loading the execution history for the read scenarios by the fastest means, not through the plugin: binary
//! COPY on PostgreSQL (into the monthly partitions, created first with the plugin's own SQL function), one
//! prepared-statement transaction on SQLite. Both end with ANALYZE.

use std::{path::Path, time::Instant};

use futures_util::SinkExt;
use uuid::Uuid;

use crate::{
    data::{copy_execution, now_us, BinaryCopy, ExecRow, History, EXECUTION_COPY_COLUMNS},
    pg,
};

/// Days of history: `started_at` spreads over about six months.
const DAYS: i64 = 182;
const SEED: u64 = 0x5EED_2024;
/// How many ids to keep for the get-by-id scenario.
const SAMPLE: usize = 10_000;

/// What the read scenarios need to know about the loaded rows.
pub struct Loaded {
    /// Ids spread evenly over the history.
    pub ids: Vec<Uuid>,
}

fn sampler(rows: usize) -> impl FnMut(usize, &ExecRow, &mut Vec<Uuid>) {
    let every = (rows / SAMPLE).max(1);
    move |k, r, ids| {
        if k % every == 0 {
            ids.push(r.id);
        }
    }
}

pub async fn postgres(db: &str, rows: usize) -> Loaded {
    let t = Instant::now();
    let client = pg::server().client(db).await;
    // One partition per month of history (the plugin creates the current month and those ahead).
    for months_back in 0..=((DAYS / 28) as i32 + 1) {
        client
            .execute(
                "SELECT parallax_create_execution_partition(now() - make_interval(months => $1))",
                &[&months_back],
            )
            .await
            .expect("create partition");
    }
    // Secondary indexes are built faster once, after the load, than row by row during it: drop them and
    // recreate them from their own definitions (the primary key stays).
    let indexes: Vec<(String, String)> = client
        .query(
            "SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid) FROM pg_index \
             WHERE indrelid = 'executions'::regclass AND NOT indisprimary",
            &[],
        )
        .await
        .expect("list indexes")
        .iter()
        // A partitioned index's definition says `ON ONLY executions`; recreate it on every partition.
        .map(|r| (r.get(0), r.get::<_, String>(1).replace(" ON ONLY ", " ON ")))
        .collect();
    for (name, _) in &indexes {
        client.batch_execute(&format!("DROP INDEX {name}")).await.expect("drop index");
    }
    let sink = client
        .copy_in(&format!("COPY executions ({EXECUTION_COPY_COLUMNS}) FROM STDIN (FORMAT binary)"))
        .await
        .expect("COPY executions");
    futures_util::pin_mut!(sink);
    let (mut history, mut sample) = (History::new(SEED, now_us(), DAYS, rows), sampler(rows));
    let mut ids = Vec::with_capacity(SAMPLE + 1);
    let mut copy = BinaryCopy::new();
    for k in 0..rows {
        let r = history.row(k);
        sample(k, &r, &mut ids);
        copy_execution(&mut copy, &r);
        if copy.buf.len() > 4 << 20 {
            sink.send(copy.take()).await.expect("COPY data");
        }
    }
    sink.send(copy.finish()).await.expect("COPY data");
    let n = sink.finish().await.expect("COPY finish");
    assert_eq!(n as usize, rows);
    let copied = t.elapsed();
    client.batch_execute("SET maintenance_work_mem = '256MB'").await.expect("SET");
    for (_, def) in &indexes {
        client.batch_execute(def).await.expect("create index");
    }
    let indexed = t.elapsed();
    client.batch_execute("ANALYZE executions").await.expect("ANALYZE");
    let default_rows: i64 =
        client.query_one("SELECT count(*) FROM executions_default", &[]).await.expect("count").get(0);
    eprintln!(
        "# loaded {rows} executions into PostgreSQL: COPY {:.1} s, {} indexes {:.1} s, ANALYZE {:.1} s; \
         {default_rows} rows in the default partition",
        copied.as_secs_f64(),
        indexes.len(),
        (indexed - copied).as_secs_f64(),
        (t.elapsed() - indexed).as_secs_f64()
    );
    Loaded { ids }
}

const SQLITE_INSERT: &str = "INSERT INTO executions (id, pattern_name, pattern_version, status, input, output, \
    error, started_at, completed_at, duration_ms, metadata, tags) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, \
    ?10, ?11, ?12)";

/// Fills the full-text tables for every execution at once, with the plugin's own indexing statements
/// (`INDEX_QUEUED_SQL`, which the writer runs before each commit) over a queue holding every loaded row.
fn sqlite_fts_backfill(tx: &rusqlite::Transaction<'_>) {
    tx.execute_batch(
        "INSERT INTO execution_search_queue (execution_id) SELECT id FROM executions ORDER BY started_at",
    )
    .unwrap();
    for sql in parallax_storage::sqlite::search::INDEX_QUEUED_SQL {
        tx.execute_batch(sql).unwrap();
    }
    let (rows, indexed): (i64, i64) = tx
        .query_row(
            "SELECT (SELECT count(*) FROM executions), (SELECT count(*) FROM executions_fts)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(rows, indexed, "the full-text backfill missed rows");
}

/// Schema objects of `executions` rebuilt after the load: `(name, type, sql)` of its indexes and its insert
/// trigger (4x faster than maintaining them row by row).
fn rebuilt_after_load(conn: &rusqlite::Connection) -> Vec<(String, String, String)> {
    let mut stmt = conn
        .prepare(
            "SELECT name, type, sql FROM sqlite_master WHERE tbl_name = 'executions' AND sql IS NOT NULL \
             AND (type = 'index' OR name = 'executions_search_insert')",
        )
        .unwrap();
    let objects = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap();
    objects.collect::<Result<_, _>>().unwrap()
}

/// Loads into a file the plugin has migrated (and closed).
pub fn sqlite(path: &Path, rows: usize) -> Loaded {
    let t = Instant::now();
    let mut conn = rusqlite::Connection::open(path).expect("open sqlite");
    // Loading only: durability does not matter here, speed does.
    conn.execute_batch("PRAGMA synchronous = OFF; PRAGMA cache_size = -262144;").unwrap();
    let (mut history, mut sample) = (History::new(SEED, now_us(), DAYS, rows), sampler(rows));
    let mut ids = Vec::with_capacity(SAMPLE + 1);
    let rebuilt = rebuilt_after_load(&conn);
    assert!(rebuilt.iter().any(|(_, kind, _)| kind == "trigger"), "no executions_search_insert trigger");
    let tx = conn.transaction().unwrap();
    for (name, kind, _) in &rebuilt {
        tx.execute_batch(&format!("DROP {} {name}", kind.to_uppercase())).unwrap();
    }
    {
        let mut stmt = tx.prepare(SQLITE_INSERT).unwrap();
        for k in 0..rows {
            let r = history.row(k);
            sample(k, &r, &mut ids);
            stmt.execute(rusqlite::params![
                r.id.hyphenated().to_string(),
                r.pattern,
                r.version,
                r.status,
                r.input,
                r.output,
                r.error,
                r.started_us,
                r.completed_us,
                r.duration_ms,
                r.metadata,
                r.tags
            ])
            .expect("insert");
        }
    }
    let inserted = t.elapsed();
    for (_, kind, sql) in &rebuilt {
        if kind == "index" {
            tx.execute_batch(sql).unwrap();
        }
    }
    sqlite_fts_backfill(&tx);
    for (_, kind, sql) in &rebuilt {
        if kind == "trigger" {
            tx.execute_batch(sql).unwrap();
        }
    }
    let indexed: i64 = tx.query_row("SELECT count(*) FROM executions_fts", [], |r| r.get(0)).unwrap();
    assert_eq!(indexed as usize, rows, "full-text rows");
    tx.commit().unwrap();
    let rebuilt_in = t.elapsed();
    conn.execute_batch("ANALYZE; PRAGMA wal_checkpoint(TRUNCATE);").unwrap();
    eprintln!(
        "# loaded {rows} executions into SQLite: inserts {:.1} s, {} indexes + full-text {:.1} s, \
         ANALYZE+checkpoint {:.1} s",
        inserted.as_secs_f64(),
        rebuilt.len() - 1,
        (rebuilt_in - inserted).as_secs_f64(),
        (t.elapsed() - rebuilt_in).as_secs_f64()
    );
    Loaded { ids }
}
