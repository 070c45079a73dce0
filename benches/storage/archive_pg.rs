//! Archive and restore (issue 13): N executions (1,000,000; `--quick` 20,000), each with two events, archived
//! from PostgreSQL and from SQLite to a local S3 server (`s3s-fs`, started like the tests start it), then
//! restored.
//!
//! - `pg_archive`: ours is `parallax storage archive executions --older-than 300d --destination
//!   s3://archive/pg/ --yes` run as a child process (the CLI, the loaded plugin: scan, gzip, upload, read back
//!   and verify every object, manifest, then delete the archived rows by id); its peak RSS is the child's
//!   peak RSS as GNU `time` reports it (`%M`; target ≤ 100 MiB). The baseline, in the same run on the same rows: tokio-postgres `copy_out`
//!   of `COPY (SELECT json_build_object(…, 'events', (SELECT json_agg(…)))) TO STDOUT` (one JSON line per
//!   execution with its events, research §5), gzip at the same level, uploaded to the same server with the
//!   same part size and parts in flight. It neither verifies nor deletes: ratio = ours / baseline rows/s.
//! - `pg_restore`: `parallax storage restore --source s3://archive/pg/` into the same database (the archived
//!   rows were deleted): rows/s and peak RSS. The baseline is a plain binary `COPY` of the same executions and
//!   events into an empty copy of the schema (what loading them costs at best, without reading an archive).
//! - `sqlite_archive`, `sqlite_restore`: the same on SQLite; the archive baseline reads the rows with rusqlite
//!   (`json_object`, events by `json_group_array`), the restore baseline inserts them with rusqlite in one
//!   transaction.
//!
//! `PARALLAX_BENCH_ARCHIVE_ROWS=N` sets another N. The parallax binary must be built in release: `cargo build
//! --release -p parallax-storage-host` (the bench refuses a missing or stale one).

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use flate2::{write::GzEncoder, Compression};
use futures_util::{SinkExt, StreamExt};
use object_store::{aws::AmazonS3Builder, path::Path as Key, ObjectStore, ObjectStoreExt, WriteMultipart};
use serde_json::{json, Value};

use crate::{
    data::{copy_execution, now_us, BinaryCopy, History, DAY_US, EXECUTION_COPY_COLUMNS},
    pg,
    util::{self, Opts},
};

/// The test harness's S3 server (`s3s-fs`).
#[allow(dead_code)]
#[path = "../../tests/common/s3.rs"]
mod s3;

/// Events per execution.
pub(crate) const EVENTS: i64 = 2;
/// The history: `days` days ending 400 days ago, all archived by `--older-than 300d`.
pub(crate) const DAYS: i64 = 90;
const AGE: &str = "300d";
/// The plugin's gzip level and part size (src/archive/format.rs, storage.archive.partSize default), parts in
/// flight (src/archive/writer.rs): the baseline uses the same.
const GZIP_LEVEL: u32 = 1;
const PART: usize = 8 << 20;
const IN_FLIGHT: usize = 2;
const MIB: f64 = 1024.0 * 1024.0;
/// The issue's bound on the archiving process's peak RSS.
const MAX_RSS_MIB: f64 = 100.0;

/// Row `k` of the history, always final (archive takes final executions only).
fn history(n: usize) -> impl FnMut(usize) -> crate::data::ExecRow {
    let mut h = History::new(0xA5C4_1713, now_us() - 400 * DAY_US, DAYS, n);
    move |k| {
        let mut r = h.row(k);
        if matches!(r.status, "running" | "pending") {
            r.status = "cancelled";
            r.duration_ms = Some(1);
            r.completed_us = Some(r.started_us + 1000);
        }
        r
    }
}

fn event_id(execution: &uuid::Uuid, seq: i64) -> uuid::Uuid {
    let mut b = execution.into_bytes();
    b[15] ^= 0x5a ^ seq as u8;
    uuid::Uuid::from_bytes(b)
}

fn event_payload(seq: i64) -> &'static str {
    if seq == 1 {
        r#"{"agent":"a7","step":1}"#
    } else {
        r#"{"result":"ok","step":2,"tokens":812}"#
    }
}

fn event_kind(seq: i64) -> &'static str {
    if seq == 1 {
        "agent_assignment"
    } else {
        "step_result"
    }
}

// ---------------------------------------------------------------- the CLI child

/// `target/release/parallax`, refused when missing or older than the host crate's sources.
pub(crate) fn parallax_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target/<profile>/deps").to_path_buf();
    let bin = dir.join("parallax");
    let built = std::fs::metadata(&bin).and_then(|m| m.modified()).unwrap_or_else(|_| {
        util::fail(&format!(
            "{} does not exist: build it with `cargo build --release -p parallax-storage-host`",
            bin.display()
        ))
    });
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("plugin/host/src");
    let newest = walk_newest(&src);
    if newest.is_some_and(|t| t > built) && std::env::var_os("PARALLAX_BENCH_ALLOW_STALE").is_none() {
        util::fail(&format!(
            "{} is older than plugin/host/src: rebuild it with `cargo build --release -p parallax-storage-host`",
            bin.display()
        ));
    }
    bin
}

fn walk_newest(dir: &Path) -> Option<std::time::SystemTime> {
    let mut best = None;
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        let t = if p.is_dir() { walk_newest(&p) } else { e.metadata().and_then(|m| m.modified()).ok() };
        if t > best {
            best = t;
        }
    }
    best
}

/// What one CLI run took.
struct Child {
    out: Value,
    took: Duration,
    /// Peak resident set size of the child, MiB (GNU time's `%M`).
    rss_mib: f64,
}

/// Runs `parallax --config <config> --plugin <plugin> --output json <args>` under GNU time (its peak RSS),
/// and parses its JSON output.
fn cli(dir: &Path, storage: &Value, s3: &s3::S3Server, args: &[&str]) -> Child {
    let config = dir.join(format!("parallax-{}.json", uuid::Uuid::now_v7().simple()));
    std::fs::write(&config, serde_json::to_vec(&json!({ "storage": storage })).unwrap()).expect("config");
    let (out, err) = (config.with_extension("out"), config.with_extension("err"));
    let t = Instant::now();
    // Reaped by waitpid below, not by Child::wait.
    // Through GNU time, which forks from its own small process: a child spawned straight from this bench
    // (vfork + exec) inherits the bench's own high-water RSS in its `ru_maxrss` — after the SQLite fixture
    // load (a 256 MiB page cache) that read as 318 MiB for a CLI whose own peak is a fraction of it.
    let rss_file = config.with_extension("rss");
    #[allow(clippy::zombie_processes)]
    let child = Command::new(TIME)
        .args(["-f", "%M", "-o"])
        .arg(&rss_file)
        .arg(parallax_binary())
        .arg("--config")
        .arg(&config)
        .arg("--plugin")
        .arg(util::plugin_library())
        .args(["--output", "json"])
        .args(args)
        .env_remove("RUST_LOG")
        // The standard AWS environment reaching the server (as an operator would set it).
        .envs(s3.env())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("stdout file"))
        .stderr(std::fs::File::create(&err).expect("stderr file"))
        .spawn()
        .unwrap_or_else(|e| {
            util::fail(&format!("cannot start parallax under {TIME} (Debian package `time`): {e}"))
        });
    let mut status = 0i32;
    // SAFETY: waits for our own child; `status` is valid for writes.
    let pid = unsafe { libc::waitpid(child.id() as i32, &mut status, 0) };
    let took = t.elapsed();
    assert_eq!(pid, child.id() as i32, "waitpid");
    let stdout = std::fs::read_to_string(&out).unwrap_or_default();
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        util::fail(&format!(
            "parallax {} failed (status {status}):\n{stdout}\n{}",
            args.join(" "),
            std::fs::read_to_string(&err).unwrap_or_default()
        ));
    }
    let out = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        util::fail(&format!("parallax {}: output is not JSON ({e}): {stdout}", args.join(" ")))
    });
    let kib: f64 = std::fs::read_to_string(&rss_file)
        .ok()
        .and_then(|t| t.trim().lines().last().and_then(|l| l.trim().parse().ok()))
        .unwrap_or_else(|| util::fail(&format!("{TIME} wrote no peak RSS to {}", rss_file.display())));
    Child { out, took, rss_mib: kib / 1024.0 }
}

/// GNU time (Debian package `time`), for the child's own peak RSS.
pub(crate) const TIME: &str = "/usr/bin/time";

fn count(v: &Value, table: &str) -> u64 {
    v[table]["executions"].as_u64().unwrap_or(0)
}

// ---------------------------------------------------------------- the baseline uploader

/// The same server, bucket and multipart settings as the plugin's.
fn store(s3: &s3::S3Server) -> Arc<dyn ObjectStore> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Arc::new(
        AmazonS3Builder::new()
            .with_bucket_name(s3::BUCKET)
            .with_region(s3::REGION)
            .with_endpoint(s3.endpoint())
            .with_allow_http(true)
            .with_access_key_id(s3.access_key())
            .with_secret_access_key(s3.secret_key())
            .build()
            .unwrap_or_else(|e| util::fail(&format!("baseline S3 client: {e}"))),
    )
}

/// Gzip (the plugin's level) into parts of [`PART`], at most [`IN_FLIGHT`] uploading at once.
struct Upload {
    gz: GzEncoder<Vec<u8>>,
    parts: WriteMultipart,
    bytes: u64,
}

impl Upload {
    async fn start(store: &Arc<dyn ObjectStore>, key: &str) -> Upload {
        let up = store.put_multipart(&Key::from(key)).await.expect("baseline: start the upload");
        Upload {
            gz: GzEncoder::new(Vec::with_capacity(PART + (1 << 20)), Compression::new(GZIP_LEVEL)),
            parts: WriteMultipart::new_with_chunk_size(up, PART),
            bytes: 0,
        }
    }

    async fn write(&mut self, data: &[u8]) {
        self.gz.write_all(data).expect("gzip");
        if self.gz.get_ref().len() >= PART {
            let part = std::mem::take(self.gz.get_mut());
            self.send(part).await;
        }
    }

    async fn send(&mut self, part: Vec<u8>) {
        self.bytes += part.len() as u64;
        self.parts.wait_for_capacity(IN_FLIGHT).await.expect("baseline: upload a part");
        self.parts.put(Bytes::from(part));
    }

    async fn finish(mut self) -> u64 {
        self.gz.try_finish().expect("gzip");
        let rest = std::mem::take(self.gz.get_mut());
        self.send(rest).await;
        self.parts.finish().await.expect("baseline: complete the upload");
        self.bytes
    }
}

// ---------------------------------------------------------------- PostgreSQL

/// Opening the plugin once migrates the database.
async fn migrate_pg(db: &str) {
    let mut config = pg::server().storage_config(db);
    config["retention"] = json!({ "runSchedule": false });
    let s = util::plugin().open(&config).unwrap_or_else(|e| util::fail(&format!("open postgresql: {e}")));
    s.shutdown().await.expect("shutdown");
}

async fn load_pg(db: &str, n: usize) {
    let t = Instant::now();
    let server = pg::server();
    migrate_pg(db).await;
    let c = server.client(db).await;
    let start = now_us() - 400 * DAY_US - DAYS * DAY_US - 2 * DAY_US;
    let mut at = start;
    while at < now_us() - 399 * DAY_US {
        let secs = at as f64 / 1e6;
        c.execute("SELECT parallax_create_execution_partition(to_timestamp($1))", &[&secs])
            .await
            .expect("partition");
        at += 20 * DAY_US;
    }
    let indexes: Vec<(String, String)> = c
        .query(
            "SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid) FROM pg_index \
             WHERE indrelid = 'executions'::regclass AND NOT indisprimary",
            &[],
        )
        .await
        .expect("list indexes")
        .iter()
        .map(|r| (r.get(0), r.get::<_, String>(1).replace(" ON ONLY ", " ON ")))
        .collect();
    for (name, _) in &indexes {
        c.batch_execute(&format!("DROP INDEX {name}")).await.expect("drop index");
    }
    copy_history(&c, n).await;
    c.batch_execute("SET maintenance_work_mem = '256MB'").await.expect("SET");
    for (_, def) in &indexes {
        c.batch_execute(def).await.expect("create index");
    }
    c.batch_execute("VACUUM ANALYZE").await.expect("VACUUM ANALYZE");
    let default: i64 = c.query_one("SELECT count(*) FROM executions_default", &[]).await.unwrap().get(0);
    assert_eq!(default, 0, "rows in the default partition");
    eprintln!(
        "# archive: loaded {n} executions and {} events into PostgreSQL in {:.1} s",
        n as i64 * EVENTS,
        t.elapsed().as_secs_f64()
    );
}

/// The PostgreSQL baseline: `COPY (… json_build_object …) TO STDOUT` → gzip → multipart upload.
async fn pg_baseline(db: &str, store: &Arc<dyn ObjectStore>, cutoff_us: i64) -> (Duration, u64, u64) {
    let c = pg::server().client(db).await;
    let cutoff = format!("to_timestamp({})", cutoff_us as f64 / 1e6);
    let sql = format!(
        "COPY (SELECT json_build_object('id', e.id, 'patternName', e.pattern_name, 'patternVersion', \
         e.pattern_version, 'status', e.status, 'input', e.input, 'output', e.output, 'error', e.error, \
         'startedAt', e.started_at, 'completedAt', e.completed_at, 'durationMs', e.duration_ms, \
         'metadata', e.metadata, 'tags', e.tags, \
         'events', COALESCE((SELECT json_agg(json_build_object('id', v.id, 'seq', v.seq, 'kind', v.kind, \
         'payload', v.payload, 'recordedAt', v.recorded_at) ORDER BY v.seq) FROM execution_events v \
         WHERE v.execution_id = e.id AND v.execution_started_at = e.started_at), '[]'::json)) \
         FROM executions e WHERE e.started_at < {cutoff} AND e.status IN ('completed', 'failed', 'cancelled') \
         ORDER BY e.started_at, e.id) TO STDOUT WITH (FORMAT csv, QUOTE E'\\x01', DELIMITER E'\\x02')"
    );
    let t = Instant::now();
    let mut up = Upload::start(store, "baseline/pg.ndjson.gz").await;
    let stream = c.copy_out(&sql).await.expect("COPY TO STDOUT");
    futures_util::pin_mut!(stream);
    let (mut raw, mut lines) = (0u64, 0u64);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.expect("COPY data");
        raw += chunk.len() as u64;
        lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
        up.write(&chunk).await;
    }
    let bytes = up.finish().await;
    let took = t.elapsed();
    eprintln!(
        "# pg_archive baseline: {lines} lines, {:.0} MiB of JSON, {:.1} MiB gzipped",
        raw as f64 / MIB,
        bytes as f64 / MIB
    );
    (took, lines, bytes)
}

/// The N executions of [`history`] and their events, by binary COPY (events regenerated from the same seed).
async fn copy_history(c: &tokio_postgres::Client, n: usize) {
    let execs = c
        .copy_in(&format!("COPY executions ({EXECUTION_COPY_COLUMNS}) FROM STDIN (FORMAT binary)"))
        .await
        .expect("COPY executions");
    // Executions first, then their events (regenerated from the same seed).
    futures_util::pin_mut!(execs);
    let mut row = history(n);
    let mut copy = BinaryCopy::new();
    for k in 0..n {
        copy_execution(&mut copy, &row(k));
        if copy.buf.len() > 4 << 20 {
            execs.send(copy.take()).await.expect("COPY data");
        }
    }
    execs.send(copy.finish()).await.expect("COPY data");
    assert_eq!(execs.finish().await.expect("COPY finish") as usize, n);
    let events = c
        .copy_in(
            "COPY execution_events (id, execution_id, seq, kind, payload, recorded_at, execution_started_at) \
             FROM STDIN (FORMAT binary)",
        )
        .await
        .expect("COPY events");
    futures_util::pin_mut!(events);
    let mut row = history(n);
    let mut copy = BinaryCopy::new();
    for k in 0..n {
        let r = row(k);
        for seq in 1..=EVENTS {
            copy.row(7);
            copy.uuid(&event_id(&r.id, seq));
            copy.uuid(&r.id);
            copy.opt_i64(Some(seq));
            copy.text(event_kind(seq));
            copy.jsonb(event_payload(seq));
            copy.timestamptz(r.started_us + seq * 1000);
            copy.timestamptz(r.started_us);
        }
        if copy.buf.len() > 4 << 20 {
            events.send(copy.take()).await.expect("COPY data");
        }
    }
    events.send(copy.finish()).await.expect("COPY data");
    assert_eq!(events.finish().await.expect("COPY finish") as usize, n * EVENTS as usize);
}

/// The restore baseline: binary COPY of the same rows into an empty, migrated database.
async fn pg_copy_in(db: &str, n: usize) -> Duration {
    let c = pg::server().client(db).await;
    let start = now_us() - 400 * DAY_US - DAYS * DAY_US - 2 * DAY_US;
    let mut at = start;
    while at < now_us() - 399 * DAY_US {
        c.execute("SELECT parallax_create_execution_partition(to_timestamp($1))", &[&(at as f64 / 1e6)])
            .await
            .expect("partition");
        at += 20 * DAY_US;
    }
    let t = Instant::now();
    copy_history(&c, n).await;
    t.elapsed()
}

async fn postgres(opts: &Opts, n: usize, s3: &s3::S3Server, store: &Arc<dyn ObjectStore>, dir: &Path) {
    let server = pg::server();
    let db = server.fresh_database().await;
    load_pg(&db, n).await;
    let mut storage = server.storage_config(&db);
    storage["retention"] = json!({ "runSchedule": false });
    let cutoff = now_us() - 300 * DAY_US;
    let (base, lines, base_bytes) = pg_baseline(&db, store, cutoff).await;
    assert_eq!(lines as usize, n, "baseline lines");

    let dest = s3.url("pg");
    let ours = cli(
        dir,
        &storage,
        s3,
        &["storage", "archive", "executions", "--older-than", AGE, "--destination", &dest, "--yes"],
    );
    let archived = count(&ours.out, "rows");
    if archived as usize != n {
        util::fail(&format!("our archive took {archived} executions, expected {n}: {}", ours.out));
    }
    let left: i64 =
        server.client(&db).await.query_one("SELECT count(*) FROM executions", &[]).await.unwrap().get(0);
    assert_eq!(left, 0, "the archived executions were deleted");
    let objects = ours.out["objects"].as_array().map_or(0, Vec::len);
    let bytes = ours.out["bytes"].as_u64().unwrap_or(0);
    if opts.wants("pg_archive") {
        util::report_throughput(
            "pg_archive",
            n as f64 / ours.took.as_secs_f64(),
            n as f64 / base.as_secs_f64(),
            "executions archived/s",
            0.0,
            &format!(
                "{n} executions with {} events each to s3s-fs on 127.0.0.1: ours {:.1} s (the CLI child: open, scan, \
                 gzip level {GZIP_LEVEL}, {objects} objects {:.1} MiB in {} MiB parts, each read back and \
                 SHA-256-checked, manifest, then every row deleted by id), peak RSS {:.0} MiB (target ≤ \
                 {MAX_RSS_MIB} MiB met={}); baseline COPY (json_build_object) TO STDOUT → gzip → multipart {:.1} s, \
                 {:.1} MiB, no verification, no delete",
                EVENTS,
                ours.took.as_secs_f64(),
                bytes as f64 / MIB,
                PART >> 20,
                ours.rss_mib,
                if ours.rss_mib <= MAX_RSS_MIB { "yes" } else { "NO" },
                base.as_secs_f64(),
                base_bytes as f64 / MIB,
            ),
        );
    }

    // Restore into the same database (its rows were deleted), against COPY of the same rows into a new one.
    let restored = cli(dir, &storage, s3, &["storage", "restore", "--source", &dest]);
    let inserted = count(&restored.out, "inserted");
    if inserted as usize != n {
        util::fail(&format!("our restore inserted {inserted} executions, expected {n}: {}", restored.out));
    }
    let c = server.client(&db).await;
    let (execs, events, default): (i64, i64, i64) = {
        let r = c
            .query_one(
                "SELECT (SELECT count(*) FROM executions), (SELECT count(*) FROM execution_events), \
                 (SELECT count(*) FROM executions_default)",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    assert_eq!((execs as usize, events as usize, default), (n, n * EVENTS as usize, 0), "restored rows");
    let empty = server.fresh_database().await;
    migrate_pg(&empty).await;
    let copy = pg_copy_in(&empty, n).await;
    // The restore reads the archive just written: reported with it.
    if opts.wants("pg_restore") || opts.wants("pg_archive") {
        util::report_throughput(
            "pg_restore",
            n as f64 / restored.took.as_secs_f64(),
            n as f64 / copy.as_secs_f64(),
            "executions restored/s",
            0.0,
            &format!(
                "the {n} executions and {} events archived above, restored into PostgreSQL: ours {:.1} s (the CLI \
                 child: every object verified first, then read again and imported in batches of 500 by binary COPY \
                 into temp tables + INSERT … WHERE NOT EXISTS), peak RSS {:.0} MiB; baseline: plain binary COPY of \
                 the same rows into an empty database {:.1} s (no archive to read, no check of ids present)",
                n as i64 * EVENTS,
                restored.took.as_secs_f64(),
                restored.rss_mib,
                copy.as_secs_f64(),
            ),
        );
    }
    drop(c);
    for d in [db, empty] {
        server.drop_database(&d).await;
    }
}

// ---------------------------------------------------------------- SQLite

pub(crate) fn load_sqlite(path: &Path, n: usize) {
    let t = Instant::now();
    let mut conn = rusqlite::Connection::open(path).expect("open sqlite");
    conn.execute_batch("PRAGMA synchronous = OFF; PRAGMA cache_size = -262144; PRAGMA foreign_keys = OFF;")
        .unwrap();
    let tx = conn.transaction().unwrap();
    insert_sqlite(&tx, n);
    tx.commit().unwrap();
    conn.execute_batch("ANALYZE; PRAGMA wal_checkpoint(TRUNCATE);").unwrap();
    eprintln!(
        "# archive: loaded {n} executions and {} events into SQLite in {:.1} s",
        n as i64 * EVENTS,
        t.elapsed().as_secs_f64()
    );
}

/// The executions and events with plain INSERTs in the caller's transaction (the search trigger queues
/// every execution, as the plugin's writes do).
fn insert_sqlite(tx: &rusqlite::Transaction<'_>, n: usize) {
    let mut exe = tx
        .prepare(
            "INSERT INTO executions (id, pattern_name, pattern_version, status, input, output, error, started_at, \
             completed_at, duration_ms, metadata, tags) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        )
        .unwrap();
    let mut ev = tx
        .prepare(
            "INSERT INTO execution_events (id, execution_id, seq, kind, payload, recorded_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .unwrap();
    let mut row = history(n);
    for k in 0..n {
        let r = row(k);
        let id = r.id.hyphenated().to_string();
        exe.execute(rusqlite::params![
            id,
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
        .expect("insert execution");
        for seq in 1..=EVENTS {
            ev.execute(rusqlite::params![
                event_id(&r.id, seq).hyphenated().to_string(),
                id,
                seq,
                event_kind(seq),
                event_payload(seq),
                r.started_us + seq * 1000
            ])
            .expect("insert event");
        }
    }
    // Index the queued executions as the plugin does before each commit, so the file is what the plugin
    // would have left (an unindexed queue of N executions would be indexed by the first write of the
    // archiving process, in one transaction, and charged to its time and memory).
    drop((exe, ev));
    for sql in parallax_storage::sqlite::search::INDEX_QUEUED_SQL {
        tx.execute_batch(sql).expect("index the search queue");
    }
}

/// The SQLite baseline: rusqlite `json_object` lines (a blocking thread) → gzip → multipart upload.
async fn sqlite_baseline(path: &Path, store: &Arc<dyn ObjectStore>, cutoff_us: i64) -> (Duration, u64) {
    let t = Instant::now();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    let path = path.to_path_buf();
    let reader = std::thread::spawn(move || {
        let conn = rusqlite::Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open sqlite");
        let mut stmt = conn
            .prepare(
                "SELECT json_object('id', e.id, 'patternName', e.pattern_name, 'patternVersion', e.pattern_version, \
                 'status', e.status, 'input', json(e.input), 'output', json(e.output), 'error', json(e.error), \
                 'startedAt', e.started_at, 'completedAt', e.completed_at, 'durationMs', e.duration_ms, \
                 'metadata', json(e.metadata), 'tags', json(e.tags), 'events', (SELECT json_group_array(json_object(\
                 'id', v.id, 'seq', v.seq, 'kind', v.kind, 'payload', json(v.payload), 'recordedAt', v.recorded_at)) \
                 FROM (SELECT * FROM execution_events v WHERE v.execution_id = e.id ORDER BY v.seq) v)) \
                 FROM executions e WHERE e.started_at < ?1 AND e.status IN ('completed', 'failed', 'cancelled') \
                 ORDER BY e.started_at, e.id",
            )
            .expect("prepare");
        let mut rows = stmt.query([cutoff_us]).expect("query");
        let (mut buf, mut lines) = (Vec::with_capacity(1 << 20), 0u64);
        while let Some(r) = rows.next().expect("row") {
            buf.extend_from_slice(r.get_ref(0).unwrap().as_str().unwrap().as_bytes());
            buf.push(b'\n');
            lines += 1;
            if buf.len() >= 1 << 20 {
                tx.blocking_send(std::mem::replace(&mut buf, Vec::with_capacity(1 << 20))).expect("send");
            }
        }
        tx.blocking_send(buf).expect("send");
        lines
    });
    let mut up = Upload::start(store, "baseline/sqlite.ndjson.gz").await;
    while let Some(chunk) = rx.recv().await {
        up.write(&chunk).await;
    }
    up.finish().await;
    let lines = reader.join().expect("reader");
    (t.elapsed(), lines)
}

async fn sqlite(opts: &Opts, n: usize, s3: &s3::S3Server, store: &Arc<dyn ObjectStore>, dir: &Path) {
    let db = dir.join("archive.db");
    let storage =
        json!({ "type": "sqlite", "sqlite": { "path": db }, "retention": { "runSchedule": false } });
    let s = util::plugin().open(&storage).unwrap_or_else(|e| util::fail(&format!("open sqlite: {e}")));
    s.shutdown().await.expect("shutdown");
    drop(s);
    load_sqlite(&db, n);
    let cutoff = now_us() - 300 * DAY_US;
    let (base, lines) = sqlite_baseline(&db, store, cutoff).await;
    assert_eq!(lines as usize, n, "baseline lines");
    let dest = s3.url("sqlite");
    let ours = cli(
        dir,
        &storage,
        s3,
        &["storage", "archive", "executions", "--older-than", AGE, "--destination", &dest, "--yes"],
    );
    let archived = count(&ours.out, "rows");
    if archived as usize != n {
        util::fail(&format!("our SQLite archive took {archived} executions, expected {n}: {}", ours.out));
    }
    if opts.wants("sqlite_archive") {
        util::report_throughput(
            "sqlite_archive",
            n as f64 / ours.took.as_secs_f64(),
            n as f64 / base.as_secs_f64(),
            "executions archived/s",
            0.0,
            &format!(
                "{n} executions with {EVENTS} events each from SQLite to s3s-fs: ours {:.1} s (the CLI child, as \
                 pg_archive: write, verify, delete by id), peak RSS {:.0} MiB (target ≤ {MAX_RSS_MIB} MiB met={}); \
                 baseline rusqlite SELECT json_object(…) → gzip → multipart {:.1} s",
                ours.took.as_secs_f64(),
                ours.rss_mib,
                if ours.rss_mib <= MAX_RSS_MIB { "yes" } else { "NO" },
                base.as_secs_f64(),
            ),
        );
    }
    let restored = cli(dir, &storage, s3, &["storage", "restore", "--source", &dest]);
    let inserted = count(&restored.out, "inserted");
    if inserted as usize != n {
        util::fail(&format!(
            "our SQLite restore inserted {inserted} executions, expected {n}: {}",
            restored.out
        ));
    }
    // Baseline: the same rows inserted with rusqlite into a fresh, migrated file.
    let fresh = dir.join("baseline.db");
    let s = util::plugin()
        .open(
            &json!({ "type": "sqlite", "sqlite": { "path": fresh }, "retention": { "runSchedule": false } }),
        )
        .unwrap_or_else(|e| util::fail(&format!("open sqlite: {e}")));
    s.shutdown().await.expect("shutdown");
    drop(s);
    let t = Instant::now();
    let mut conn = rusqlite::Connection::open(&fresh).expect("open sqlite");
    let tx = conn.transaction().unwrap();
    insert_sqlite(&tx, n);
    tx.commit().unwrap();
    let copy = t.elapsed();
    if opts.wants("sqlite_restore") || opts.wants("sqlite_archive") {
        util::report_throughput(
            "sqlite_restore",
            n as f64 / restored.took.as_secs_f64(),
            n as f64 / copy.as_secs_f64(),
            "executions restored/s",
            0.0,
            &format!(
                "the {n} executions archived above restored into SQLite: ours {:.1} s (the CLI child), peak RSS \
                 {:.0} MiB; baseline rusqlite INSERTs of the same rows in one transaction into a fresh file {:.1} s",
                restored.took.as_secs_f64(),
                restored.rss_mib,
                copy.as_secs_f64(),
            ),
        );
    }
}

pub async fn run(opts: &Opts) {
    let pg_wanted = opts.wants("pg_archive") || opts.wants("pg_restore");
    let sqlite_wanted = opts.wants("sqlite_archive") || opts.wants("sqlite_restore");
    if !pg_wanted && !sqlite_wanted {
        return;
    }
    // PARALLAX_BENCH_ARCHIVE_ROWS: another N (a shorter run on a busy machine).
    let n = std::env::var("PARALLAX_BENCH_ARCHIVE_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| opts.n(1_000_000, 20_000));
    let dir = tempfile::tempdir().expect("tempdir");
    let s3 = s3::S3Server::start();
    let store = store(&s3);
    if pg_wanted {
        postgres(opts, n, &s3, &store, dir.path()).await;
    }
    if sqlite_wanted {
        sqlite(opts, n, &s3, &store, dir.path()).await;
    }
}
