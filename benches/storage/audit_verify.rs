//! Issue 17: `audit verify` over a chain of 1,000,000 entries (50,000 with `--quick`), PostgreSQL and SQLite.
//!
//! Ours: the `audit-verify` maintenance op through the loaded cdylib, which reads the chain in order, rebuilds
//! each entry's canonical form (JSON details with sorted keys, the IP's text form, …), hashes it with the
//! previous link and compares, and also checks the time order for slipped-in entries. Baseline: the floor of
//! any verifier on the same rows — one raw read of every entry in chain order (tokio-postgres streaming the
//! binary wire form; rusqlite stepping a statement) and one SHA-256 per entry over its raw column bytes chained
//! to the previous digest, no canonical form, no comparison. No target: the issue asks for the figure.

use parallax_storage_host::*;
use ring::digest;

use crate::{
    pg, pg_writes,
    util::{self, Opts},
};

const COLUMNS: &str =
    "id, timestamp, action, actor, resource_type, resource_id, details, ip_address, user_agent, \
                       chain_hash";

pub async fn run(opts: &Opts) {
    let entries = opts.n(1_000_000, 50_000);
    if opts.wants("pg_audit_verify") {
        postgres(entries).await;
    }
    if opts.wants("sqlite_audit_verify") {
        sqlite(entries).await;
    }
}

/// Appends `entries` audit entries through the plugin, in batches of 1,000 (each batch extends the chain).
async fn load(storage: &Storage, entries: usize) {
    for b in 0..entries.div_ceil(pg_writes::BATCH) {
        storage.append_audit(pg_writes::audit_batch(b)).await.expect("append_audit");
    }
}

/// Ours: entries checked per second by one `audit verify`, which must find no break.
async fn ours(storage: &Storage, entries: usize) -> f64 {
    let started = std::time::Instant::now();
    let report = storage.audit_verify(&Default::default()).await.expect("audit verify");
    let secs = started.elapsed().as_secs_f64();
    assert!(report.ok, "the benchmark's chain does not verify: {:?}", report.breaks);
    assert_eq!(report.checked as usize, entries, "entries checked");
    report.checked as f64 / secs
}

/// A chained SHA-256 over each row's raw column bytes (`None` for NULL).
struct Digest {
    prev: [u8; 32],
    ctx: Option<digest::Context>,
    rows: usize,
}

impl Digest {
    fn new() -> Digest {
        Digest { prev: [0; 32], ctx: None, rows: 0 }
    }

    fn column(&mut self, c: Option<&[u8]>) {
        let prev = self.prev;
        let ctx = self.ctx.get_or_insert_with(|| {
            let mut ctx = digest::Context::new(&digest::SHA256);
            ctx.update(&prev);
            ctx
        });
        match c {
            Some(b) => {
                ctx.update(&(b.len() as u32).to_be_bytes());
                ctx.update(b);
            }
            None => ctx.update(&[0xff; 4]),
        }
    }

    fn end_row(&mut self) {
        let ctx = self.ctx.take().expect("a row with columns");
        self.prev.copy_from_slice(ctx.finish().as_ref());
        self.rows += 1;
    }
}

/// Any column's binary wire form, as is.
struct Raw<'a>(&'a [u8]);

impl<'a> tokio_postgres::types::FromSql<'a> for Raw<'a> {
    fn from_sql(
        _: &tokio_postgres::types::Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(raw))
    }

    fn accepts(_: &tokio_postgres::types::Type) -> bool {
        true
    }
}

async fn postgres(entries: usize) {
    let (db, storage) = pg_writes::open(None).await;
    load(&storage, entries).await;
    let client = pg::server().client(&db).await;
    client.batch_execute("VACUUM ANALYZE audit_logs").await.expect("VACUUM ANALYZE");
    // Warm both (the buffer cache holds the table after the first pass), then the better of two runs each.
    let mut best = (0.0f64, 0.0f64);
    for _ in 0..3 {
        best.0 = best.0.max(ours(&storage, entries).await);
        best.1 = best.1.max(raw_pg(&client, entries).await);
    }
    util::report_throughput(
        "pg_audit_verify",
        best.0,
        best.1,
        "entries/s",
        0.0,
        &format!(
            "{entries} entries; baseline one streamed read in chain order + one chained SHA-256 per row; \
             best of 3"
        ),
    );
    storage.shutdown().await.expect("shutdown");
    drop(client);
    pg::server().drop_database(&db).await;
}

async fn raw_pg(client: &tokio_postgres::Client, entries: usize) -> f64 {
    use futures_util::TryStreamExt;
    let started = std::time::Instant::now();
    let rows = client
        .query_raw(&format!("SELECT {COLUMNS} FROM audit_logs ORDER BY chain_seq"), std::iter::empty::<i32>())
        .await
        .expect("SELECT audit_logs");
    futures_util::pin_mut!(rows);
    let mut d = Digest::new();
    while let Some(row) = rows.try_next().await.expect("a row") {
        for i in 0..row.len() {
            d.column(row.get::<_, Option<Raw>>(i).map(|r| r.0));
        }
        d.end_row();
    }
    assert_eq!(d.rows, entries);
    entries as f64 / started.elapsed().as_secs_f64()
}

async fn sqlite(entries: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("audit.db");
    let storage = crate::sqlite_writes::open(&path);
    load(&storage, entries).await;
    let mut best = (0.0f64, 0.0f64);
    for _ in 0..3 {
        best.0 = best.0.max(ours(&storage, entries).await);
        let p = path.clone();
        best.1 = best.1.max(tokio::task::spawn_blocking(move || raw_sqlite(&p, entries)).await.unwrap());
    }
    util::report_throughput(
        "sqlite_audit_verify",
        best.0,
        best.1,
        "entries/s",
        0.0,
        &format!(
            "{entries} entries; baseline rusqlite stepping every row in chain order + one chained SHA-256 per \
             row; best of 3"
        ),
    );
    storage.shutdown().await.expect("shutdown");
}

fn raw_sqlite(path: &std::path::Path, entries: usize) -> f64 {
    let started = std::time::Instant::now();
    let conn = crate::sqlite_writes::raw_connection(path);
    let mut stmt =
        conn.prepare(&format!("SELECT {COLUMNS} FROM audit_logs ORDER BY chain_seq")).expect("prepare");
    let n = stmt.column_count();
    let mut rows = stmt.query([]).expect("query");
    let mut d = Digest::new();
    while let Some(row) = rows.next().expect("a row") {
        for i in 0..n {
            match row.get_ref(i).expect("column") {
                rusqlite::types::ValueRef::Null => d.column(None),
                rusqlite::types::ValueRef::Integer(v) => d.column(Some(&v.to_be_bytes())),
                rusqlite::types::ValueRef::Real(v) => d.column(Some(&v.to_be_bytes())),
                rusqlite::types::ValueRef::Text(b) | rusqlite::types::ValueRef::Blob(b) => d.column(Some(b)),
            }
        }
        d.end_row();
    }
    assert_eq!(d.rows, entries);
    entries as f64 / started.elapsed().as_secs_f64()
}
