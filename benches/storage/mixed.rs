//! The mixed workload (issue 20): 16 callers, 90 % reads and 10 % writes, on SQLite and PostgreSQL, against
//! the same mix on the raw drivers in the same run.
//!
//! Operation `k` of the sequence the callers share: 40 % get by id, 30 % a filtered page (pattern + status,
//! 50 rows), 20 % a full-text search for one user (`u0`..`u996`, about 1 in 997 executions, first page of
//! 20), 10 % a write (create one execution). Both sides run the plugin's own statements (the search SQL from
//! `search_executions_sql`, the insert from `lifecycle_sql` on PostgreSQL; on SQLite the insert plus the
//! full-text indexing the plugin's writer does before each commit).
//!
//! - SQLite baseline: rusqlite, one writer connection behind a mutex (each write its own transaction: insert,
//!   index, commit) and a pool of read connections, one per caller; the queries run on the caller's task.
//! - PostgreSQL baseline: tokio-postgres, 16 connections (one per caller), statements prepared once.
//!
//! Ours and the baseline alternate in ABBA rounds over the same history, so load drift hits both alike.

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc, Mutex,
};

use parallax_storage_host::*;

use crate::{
    data::{now_us, PgUuid},
    load::{self, Loaded},
    pg, pg_writes,
    reads::{self, COLUMNS, PAGE},
    sqlite_writes,
    util::{self, Opts},
};

const CALLERS: usize = 16;
const ROUNDS: usize = 4;
const SEARCH_PAGE: u32 = 20;

#[derive(Clone, Copy)]
enum Op {
    Get,
    Page,
    Search,
    Write,
}

fn op(k: usize) -> Op {
    match k % 10 {
        0..=3 => Op::Get,
        4..=6 => Op::Page,
        7 | 8 => Op::Search,
        _ => Op::Write,
    }
}

/// The user the k-th search looks for (the loaded inputs hold `"user":"u<n % 997>"`).
fn user(k: usize) -> String {
    format!("u{}", k * 31 % 997)
}

/// Runs `ops` operations of the shared sequence on 16 caller tasks; `caller(i)` gives caller i's worker, which
/// is called with each operation number it takes.
async fn callers<F, W, Fut>(ops: usize, caller: F)
where
    F: Fn(usize) -> W,
    W: FnMut(usize) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..CALLERS)
        .map(|i| {
            let mut work = caller(i);
            let next = next.clone();
            tokio::spawn(async move {
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    if k >= ops {
                        break;
                    }
                    work(k).await;
                }
            })
        })
        .collect();
    for h in handles {
        h.await.expect("caller task");
    }
}

async fn ours(s: &Storage, ids: &[uuid::Uuid], k: usize) {
    match op(k) {
        Op::Get => {
            s.get_execution(ids[k * 7919 % ids.len()]).await.expect("get_execution");
        }
        Op::Page => {
            let (p, st) = reads::filter(k);
            s.list_executions(reads::plugin_filter(p, st), reads::page()).await.expect("list_executions");
        }
        Op::Search => {
            let page = Page { limit: SEARCH_PAGE, cursor: None };
            s.search_executions(&user(k), page).await.expect("search_executions");
        }
        Op::Write => {
            s.create_execution(sqlite_writes::new_execution()).await.expect("create_execution");
        }
    }
}

/// One phase of ours: `n` operations of the sequence by the 16 callers through one storage object.
async fn ours_phase(n: usize, storage: &Storage, ids: &Arc<Vec<uuid::Uuid>>) {
    callers(n, |_| {
        let (s, ids) = (storage.clone(), ids.clone());
        move |k| {
            let (s, ids) = (s.clone(), ids.clone());
            async move { ours(&s, &ids, k).await }
        }
    })
    .await;
}

fn report(backend: &str, [ours, base]: [f64; 2], ops: usize, rows: usize, baseline: &str) {
    util::report_throughput(
        &format!("{backend}_mixed"),
        ours,
        base,
        "operations/s",
        0.8,
        &format!(
            "16 callers, {ops} operations per side ({ROUNDS} ABBA rounds): 40% get, 30% page of {PAGE}, 20% search \
             (page of {SEARCH_PAGE}), 10% create, over {rows} executions; baseline {baseline}"
        ),
    );
}

pub async fn sqlite(opts: &Opts) {
    let rows = opts.n(200_000, 20_000);
    let ops = opts.n(20_000, 2_000);
    let dir = tempfile::Builder::new().prefix("parallax-bench-").tempdir().expect("tempdir");
    let path = dir.path().join("mixed.db");
    sqlite_writes::migrated_file(&path).await;
    let p = path.clone();
    let Loaded { ids } = tokio::task::spawn_blocking(move || load::sqlite(&p, rows)).await.unwrap();
    let ids = Arc::new(ids);
    let storage = sqlite_writes::open(&path);
    let writer = Arc::new(Mutex::new(sqlite_writes::raw_connection(&path)));
    let readers: Vec<_> = (0..CALLERS)
        .map(|_| {
            let c = sqlite_writes::raw_connection(&path);
            c.execute_batch("PRAGMA query_only = ON;").unwrap();
            Arc::new(Mutex::new(c))
        })
        .collect();
    let page_sql = Arc::new(format!(
        "SELECT {COLUMNS} FROM executions WHERE pattern_name = ?1 AND status = ?2 \
         ORDER BY started_at DESC, id DESC LIMIT {}",
        PAGE + 1
    ));
    let get_sql = Arc::new(format!("SELECT {COLUMNS} FROM executions WHERE id = ?1"));
    let search_sql = Arc::new(
        parallax_storage::sqlite::search::search_executions_sql()
            .unwrap_or_else(|e| util::fail(&format!("search_executions_sql: {e}"))),
    );
    // Sanity: the searches find what the plugin finds.
    for k in [7, 17, 27] {
        let page = Page { limit: SEARCH_PAGE, cursor: None };
        let ours = storage.search_executions(&user(k), page).await.expect("search").items.len();
        let c = readers[0].lock().unwrap();
        let mut stmt = c.prepare_cached(&search_sql).unwrap();
        let raw = stmt
            .query_map(rusqlite::params![format!("\"{}\"", user(k)), SEARCH_PAGE + 1, 0], |_| Ok(()))
            .unwrap()
            .count()
            .min(SEARCH_PAGE as usize);
        assert_eq!(ours, raw, "search sizes differ for {}", user(k));
        assert!(raw > 0, "no search hit for {}", user(k));
    }
    let result = util::abba(ROUNDS, ops / ROUNDS, async |side, n| {
        if side == 0 {
            ours_phase(n, &storage, &ids).await;
        } else {
            callers(n, |i| {
                let (reader, writer, ids) = (readers[i].clone(), writer.clone(), ids.clone());
                let (page_sql, get_sql, search_sql) = (page_sql.clone(), get_sql.clone(), search_sql.clone());
                move |k| {
                    raw_sqlite(k, &reader, &writer, &ids, &page_sql, &get_sql, &search_sql);
                    std::future::ready(())
                }
            })
            .await;
        }
    })
    .await;
    report(
        "sqlite",
        result,
        ops,
        rows,
        "rusqlite: one writer connection (each create its own transaction, indexed), one read connection per \
         caller, queries on the caller's task",
    );
    storage.shutdown().await.expect("shutdown");
}

fn raw_sqlite(
    k: usize,
    reader: &Mutex<rusqlite::Connection>,
    writer: &Mutex<rusqlite::Connection>,
    ids: &[uuid::Uuid],
    page_sql: &str,
    get_sql: &str,
    search_sql: &str,
) {
    match op(k) {
        Op::Get => {
            let c = reader.lock().unwrap();
            let id = ids[k * 7919 % ids.len()].hyphenated().to_string();
            assert_eq!(reads::sqlite_rows(&mut c.prepare_cached(get_sql).unwrap(), [id]).len(), 1);
        }
        Op::Page => {
            let c = reader.lock().unwrap();
            let (p, st) = reads::filter(k);
            reads::sqlite_rows(&mut c.prepare_cached(page_sql).unwrap(), (p, st));
        }
        Op::Search => {
            let c = reader.lock().unwrap();
            let mut stmt = c.prepare_cached(search_sql).unwrap();
            let q = format!("\"{}\"", user(k));
            let rows = stmt
                .query_map(rusqlite::params![q, SEARCH_PAGE + 1, 0], |r| {
                    Ok((
                        r.get::<_, String>("id")?,
                        r.get::<_, Option<String>>("input")?,
                        r.get::<_, f64>("rank")?,
                    ))
                })
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            std::hint::black_box(rows);
        }
        Op::Write => {
            let c = writer.lock().unwrap();
            c.execute_batch("BEGIN IMMEDIATE").unwrap();
            sqlite_writes::raw_insert(&mut c.prepare_cached(sqlite_writes::INSERT).unwrap());
            sqlite_writes::raw_index(&c);
            c.execute_batch("COMMIT").unwrap();
        }
    }
}

pub async fn postgres(opts: &Opts) {
    let rows = opts.n(200_000, 20_000);
    let ops = opts.n(20_000, 2_000);
    let (db, storage) = pg_writes::open(Some(CALLERS)).await;
    let Loaded { ids } = load::postgres(&db, rows).await;
    let ids = Arc::new(ids);
    let [insert_sql, _] = parallax_storage::postgres::lifecycle_sql()
        .unwrap_or_else(|e| util::fail(&format!("lifecycle_sql: {e}")));
    let search_sql = parallax_storage::postgres::search_executions_sql()
        .unwrap_or_else(|e| util::fail(&format!("search_executions_sql: {e}")));
    let page_sql = format!(
        "SELECT {COLUMNS} FROM executions WHERE pattern_name = $1 AND status = $2 \
         ORDER BY started_at DESC, id DESC LIMIT {}",
        PAGE + 1
    );
    let get_sql = format!("SELECT {COLUMNS} FROM executions WHERE id = $1");
    let mut clients = Vec::new();
    for _ in 0..CALLERS {
        let c = pg::server().client(&db).await;
        let stmts = [&get_sql, &page_sql, &search_sql, &insert_sql];
        let mut prepared = Vec::new();
        for sql in stmts {
            prepared
                .push(c.prepare(sql).await.unwrap_or_else(|e| util::fail(&format!("prepare {sql}: {e}"))));
        }
        clients.push(Arc::new((c, prepared)));
    }
    for k in [7, 17, 27] {
        let page = Page { limit: SEARCH_PAGE, cursor: None };
        let ours = storage.search_executions(&user(k), page).await.expect("search").items.len();
        let (c, st) = &*clients[0];
        let raw = c.query(&st[2], &[&user(k), &(SEARCH_PAGE as i64 + 1), &0i64]).await.unwrap().len();
        assert_eq!(ours, raw.min(SEARCH_PAGE as usize), "search sizes differ for {}", user(k));
        assert!(raw > 0, "no search hit for {}", user(k));
    }
    let result = util::abba(ROUNDS, ops / ROUNDS, async |side, n| {
        if side == 0 {
            ours_phase(n, &storage, &ids).await;
        } else {
            callers(n, |i| {
                let (client, ids) = (clients[i].clone(), ids.clone());
                move |k| {
                    let (client, ids) = (client.clone(), ids.clone());
                    async move { raw_pg(k, &client.0, &client.1, &ids).await }
                }
            })
            .await;
        }
    })
    .await;
    report(
        "pg",
        result,
        ops,
        rows,
        "tokio-postgres, 16 connections (one per caller), the plugin's statements prepared once",
    );
    storage.shutdown().await.expect("shutdown");
    drop(clients);
    pg::server().drop_database(&db).await;
}

async fn raw_pg(k: usize, c: &tokio_postgres::Client, st: &[tokio_postgres::Statement], ids: &[uuid::Uuid]) {
    match op(k) {
        Op::Get => {
            let id = PgUuid(ids[k * 7919 % ids.len()]);
            assert_eq!(c.query(&st[0], &[&id]).await.unwrap().len(), 1);
        }
        Op::Page => {
            let (p, s) = reads::filter(k);
            c.query(&st[1], &[&p, &s]).await.unwrap();
        }
        Op::Search => {
            c.query(&st[2], &[&user(k), &(SEARCH_PAGE as i64 + 1), &0i64]).await.unwrap();
        }
        Op::Write => {
            pg_writes::raw_create(c, &st[3], &PgUuid(uuid::Uuid::now_v7()), now_us()).await;
        }
    }
}
