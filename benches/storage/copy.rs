//! Copy between backends (issue 16), scenario `copy_sqlite_pg`: N executions (1,000,000; `--quick` 20,000;
//! `PARALLAX_BENCH_COPY_ROWS=N` for another N), each with two events, in a SQLite file (the fixture of
//! `archive_pg.rs`: months of history ending 400 days ago), copied into an empty, migrated PostgreSQL
//! database.
//!
//! - Ours: `parallax --config sqlite.json --output json storage copy --to-config pg.json` run as a child
//!   process under GNU time (its own peak RSS, `%M`; target ≤ 150 MiB): the loaded plugin opens the target
//!   itself, scans the source in key order and, the target being empty, owns it: every page lands by binary
//!   `COPY` straight into the tables in one transaction with the resume state (month partitions made as
//!   needed), the source's rows are checksummed as read, and at the end the target is scanned to checksum its
//!   side while `ANALYZE` runs. Its report must say verified.
//! - Baseline, in the same run on the same rows: rusqlite reads the executions, then the events (with their
//!   execution's `started_at`), on a thread, streamed into tokio-postgres binary `COPY` of `executions` and
//!   `execution_events` of another empty, migrated database whose month partitions were made first. No id
//!   checks, no read-back, no checksums, no resume state.
//!
//! Rows = executions + events; ratio = ours / baseline rows/s, target ≥ 0.5. The parallax binary must be a
//! release build: `cargo build --release -p parallax-storage-host`.

use std::{
    collections::HashMap,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use futures_util::SinkExt;
use serde_json::{json, Value};

use crate::{
    archive_pg::{load_sqlite, parallax_binary, DAYS, EVENTS, TIME},
    data::{copy_execution, now_us, BinaryCopy, ExecRow, DAY_US, EXECUTION_COPY_COLUMNS},
    pg,
    util::{self, Opts},
};

const MIB: f64 = 1024.0 * 1024.0;
/// The bound on the copying process's peak RSS.
const MAX_RSS_MIB: f64 = 150.0;
/// Bytes of COPY data the baseline buffers before sending.
const CHUNK: usize = 4 << 20;

/// What the CLI child took.
struct Child {
    out: Value,
    took: Duration,
    rss_mib: f64,
}

/// `parallax --config <source> --plugin <plugin> --output json storage copy --to-config <target>` under GNU
/// time (a child spawned straight from this bench would inherit the bench's own high-water RSS).
fn copy_cli(dir: &Path, source: &Value, target: &Value) -> Child {
    let write = |name: &str, storage: &Value| {
        let path = dir.join(name);
        std::fs::write(&path, serde_json::to_vec(&json!({ "storage": storage })).unwrap()).expect("config");
        path
    };
    let (src, dst) = (write("copy-source.json", source), write("copy-target.json", target));
    let (out, err, rss) = (dir.join("copy.out"), dir.join("copy.err"), dir.join("copy.rss"));
    let t = Instant::now();
    #[allow(clippy::zombie_processes)]
    let child = Command::new(TIME)
        .args(["-f", "%M", "-o"])
        .arg(&rss)
        .arg(parallax_binary())
        .arg("--config")
        .arg(&src)
        .arg("--plugin")
        .arg(util::plugin_library())
        .args(["--output", "json", "storage", "copy", "--to-config"])
        .arg(&dst)
        .env_remove("RUST_LOG")
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
            "parallax storage copy failed (status {status}):\n{stdout}\n{}",
            std::fs::read_to_string(&err).unwrap_or_default()
        ));
    }
    let out = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        util::fail(&format!("parallax storage copy: output is not JSON ({e}): {stdout}"))
    });
    let kib: f64 = std::fs::read_to_string(&rss)
        .ok()
        .and_then(|t| t.trim().lines().last().and_then(|l| l.trim().parse().ok()))
        .unwrap_or_else(|| util::fail(&format!("{TIME} wrote no peak RSS to {}", rss.display())));
    Child { out, took, rss_mib: kib / 1024.0 }
}

/// A fresh database migrated by opening the plugin on it once.
async fn migrated_database() -> (String, Value) {
    let server = pg::server();
    let db = server.fresh_database().await;
    let mut config = server.storage_config(&db);
    config["retention"] = json!({ "runSchedule": false });
    let s = util::plugin().open(&config).unwrap_or_else(|e| util::fail(&format!("open postgresql: {e}")));
    s.shutdown().await.expect("shutdown");
    (db, config)
}

/// `(executions, events, rows in the default partitions)` of a database.
async fn counts(db: &str) -> (i64, i64, i64) {
    let c = pg::server().client(db).await;
    let r = c
        .query_one(
            "SELECT (SELECT count(*) FROM executions), (SELECT count(*) FROM execution_events), \
             (SELECT count(*) FROM executions_default) + (SELECT count(*) FROM execution_events_default)",
            &[],
        )
        .await
        .expect("count rows");
    (r.get(0), r.get(1), r.get(2))
}

/// The few distinct texts of the fixture's short columns as `&'static str` (what [`ExecRow`] holds), each
/// leaked once.
#[derive(Default)]
struct Interned(HashMap<String, &'static str>);

impl Interned {
    fn get(&mut self, s: &str) -> &'static str {
        if let Some(v) = self.0.get(s) {
            return v;
        }
        let v: &'static str = Box::leak(s.to_string().into_boxed_str());
        self.0.insert(s.to_string(), v);
        v
    }
}

/// Reads the SQLite file on a thread and sends binary COPY data for `executions`, then (after `None`) for
/// `execution_events`.
fn read_sqlite(
    path: &Path,
    tx: tokio::sync::mpsc::Sender<Option<bytes::Bytes>>,
) -> std::thread::JoinHandle<(u64, u64)> {
    let path = path.to_path_buf();
    std::thread::spawn(move || {
        let conn = rusqlite::Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open sqlite");
        let text = |r: &rusqlite::Row, i: usize| -> Option<String> {
            r.get_ref(i).unwrap().as_str_or_null().unwrap().map(str::to_string)
        };
        let mut strings = Interned::default();
        let mut copy = BinaryCopy::new();
        let mut execs = 0u64;
        let mut stmt = conn
            .prepare(
                "SELECT id, pattern_name, pattern_version, status, input, output, error, started_at, completed_at, \
                 duration_ms, metadata, tags FROM executions",
            )
            .expect("prepare executions");
        let mut rows = stmt.query([]).expect("query executions");
        while let Some(r) = rows.next().expect("row") {
            let id: String = r.get(0).unwrap();
            let row = ExecRow {
                id: uuid::Uuid::parse_str(&id).expect("execution id"),
                pattern: strings.get(r.get_ref(1).unwrap().as_str().unwrap()),
                version: strings.get(r.get_ref(2).unwrap().as_str().unwrap()),
                status: strings.get(r.get_ref(3).unwrap().as_str().unwrap()),
                input: text(r, 4).unwrap_or_else(|| "null".into()),
                output: text(r, 5),
                error: text(r, 6),
                started_us: r.get(7).unwrap(),
                completed_us: r.get(8).unwrap(),
                duration_ms: r.get(9).unwrap(),
                metadata: text(r, 10).map(|m| strings.get(&m)),
                tags: strings.get(r.get_ref(11).unwrap().as_str().unwrap()),
            };
            copy_execution(&mut copy, &row);
            execs += 1;
            if copy.buf.len() > CHUNK {
                tx.blocking_send(Some(copy.take())).expect("send");
            }
        }
        tx.blocking_send(Some(copy.finish())).expect("send");
        tx.blocking_send(None).expect("send");
        let mut copy = BinaryCopy::new();
        let mut events = 0u64;
        let mut stmt = conn
            .prepare(
                "SELECT v.id, v.execution_id, v.seq, v.kind, v.payload, v.recorded_at, e.started_at \
                 FROM execution_events v JOIN executions e ON e.id = v.execution_id",
            )
            .expect("prepare events");
        let mut rows = stmt.query([]).expect("query events");
        while let Some(r) = rows.next().expect("row") {
            let uuid =
                |i: usize| uuid::Uuid::parse_str(r.get_ref(i).unwrap().as_str().unwrap()).expect("uuid");
            copy.row(7);
            copy.uuid(&uuid(0));
            copy.uuid(&uuid(1));
            copy.opt_i64(Some(r.get(2).unwrap()));
            copy.text(r.get_ref(3).unwrap().as_str().unwrap());
            copy.jsonb(r.get_ref(4).unwrap().as_str().unwrap());
            copy.timestamptz(r.get(5).unwrap());
            copy.timestamptz(r.get(6).unwrap());
            events += 1;
            if copy.buf.len() > CHUNK {
                tx.blocking_send(Some(copy.take())).expect("send");
            }
        }
        tx.blocking_send(Some(copy.finish())).expect("send");
        (execs, events)
    })
}

/// The baseline: the SQLite rows streamed into binary COPY of a migrated database with its month partitions
/// made first (not timed).
async fn baseline(sqlite: &Path, db: &str) -> (Duration, u64) {
    let c = pg::server().client(db).await;
    let mut at = now_us() - 400 * DAY_US - DAYS * DAY_US - 2 * DAY_US;
    while at < now_us() - 399 * DAY_US {
        c.execute("SELECT parallax_create_execution_partition(to_timestamp($1))", &[&(at as f64 / 1e6)])
            .await
            .expect("partition");
        at += 20 * DAY_US;
    }
    let t = Instant::now();
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    let reader = read_sqlite(sqlite, tx);
    let execs = c
        .copy_in(&format!("COPY executions ({EXECUTION_COPY_COLUMNS}) FROM STDIN (FORMAT binary)"))
        .await
        .expect("COPY executions");
    futures_util::pin_mut!(execs);
    while let Some(Some(chunk)) = rx.recv().await {
        execs.send(chunk).await.expect("COPY data");
    }
    let copied = execs.finish().await.expect("COPY executions finish");
    let events = c
        .copy_in(
            "COPY execution_events (id, execution_id, seq, kind, payload, recorded_at, execution_started_at) \
             FROM STDIN (FORMAT binary)",
        )
        .await
        .expect("COPY events");
    futures_util::pin_mut!(events);
    while let Some(Some(chunk)) = rx.recv().await {
        events.send(chunk).await.expect("COPY data");
    }
    let copied_events = events.finish().await.expect("COPY events finish");
    let took = t.elapsed();
    let (read, read_events) = reader.join().expect("reader");
    assert_eq!((copied, copied_events), (read, read_events), "baseline rows");
    (took, copied + copied_events)
}

/// Rows the copy report says the target holds for `table` (copied + present).
fn landed(out: &Value, table: &str) -> u64 {
    out["tables"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["table"] == table))
        .map_or(0, |t| t["copied"].as_u64().unwrap_or(0) + t["present"].as_u64().unwrap_or(0))
}

pub async fn run(opts: &Opts) {
    if !opts.wants("copy_sqlite_pg") {
        return;
    }
    let n = std::env::var("PARALLAX_BENCH_COPY_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| opts.n(1_000_000, 20_000));
    let rows = n as u64 * (1 + EVENTS as u64);
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = dir.path().join("copy-source.db");
    let source =
        json!({ "type": "sqlite", "sqlite": { "path": sqlite }, "retention": { "runSchedule": false } });
    let s = util::plugin().open(&source).unwrap_or_else(|e| util::fail(&format!("open sqlite: {e}")));
    s.shutdown().await.expect("shutdown");
    drop(s);
    load_sqlite(&sqlite, n);

    let (target_db, target) = migrated_database().await;
    let ours = copy_cli(dir.path(), &source, &target);
    if ours.out["verified"] != json!(true) {
        util::fail(&format!("our copy did not verify: {}", ours.out));
    }
    let (execs, events, default) = counts(&target_db).await;
    assert_eq!((execs as usize, events as usize, default), (n, n * EVENTS as usize, 0), "copied rows");
    assert_eq!(landed(&ours.out, "executions") as usize, n, "the report's executions: {}", ours.out);

    let (base_db, _) = migrated_database().await;
    let (base, base_rows) = baseline(&sqlite, &base_db).await;
    assert_eq!(base_rows, rows, "baseline rows");
    let (execs, events, default) = counts(&base_db).await;
    assert_eq!((execs as usize, events as usize, default), (n, n * EVENTS as usize, 0), "baseline rows");

    let rss_ok = ours.rss_mib <= MAX_RSS_MIB;
    let too_big = format!("peak RSS {:.0} MiB > {MAX_RSS_MIB} MiB", ours.rss_mib);
    util::report_throughput_if(
        "copy_sqlite_pg",
        rows as f64 / ours.took.as_secs_f64(),
        rows as f64 / base.as_secs_f64(),
        "rows/s (executions + events)",
        0.5,
        (!rss_ok).then_some(too_big.as_str()),
        &format!(
            "{n} executions with {EVENTS} events each ({:.0} MiB SQLite file) into an empty PostgreSQL database: \
             ours {:.1} s (the CLI child `storage copy --to-config`: scan, land each page by COPY with its \
             state, month partitions made as needed, checksum the source as read and the target by a scan at the \
             end, ANALYZE; mode {}), peak RSS {:.0} MiB (target ≤ \
             {MAX_RSS_MIB} MiB met={}); baseline rusqlite read → binary COPY of executions then events, \
             partitions made first, {:.1} s (no id check, no read-back, no checksum, no resume state)",
            std::fs::metadata(&sqlite).map(|m| m.len() as f64 / MIB).unwrap_or(0.0),
            ours.took.as_secs_f64(),
            ours.out["mode"].as_str().unwrap_or("?"),
            ours.rss_mib,
            if rss_ok { "yes" } else { "NO" },
            base.as_secs_f64(),
        ),
    );
    let server = pg::server();
    for db in [target_db, base_db] {
        server.drop_database(&db).await;
    }
}
