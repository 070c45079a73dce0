//! PostgreSQL write scenarios: the execution lifecycle at 16 callers, and audit batches against COPY; the
//! lifecycle with a read replica configured against the same without (issue 15: the cost of tracking each
//! write's commit position for read-your-writes).

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use futures_util::SinkExt;
use parallax_storage_host::*;
use serde_json::json;

use crate::{
    data::{now_us, BinaryCopy, PgJson, PgTs, PgUuid},
    pg,
    util::{self, Opts},
};

const CALLERS: usize = 16;
const INPUT: &str = r#"{"q":"summarize the quarterly report","user":"u42"}"#;
/// The document, validated once: each call then clones its text, as it copied the text into an `RString` before
/// the host API took plain types.
static INPUT_DOC: std::sync::OnceLock<Json> = std::sync::OnceLock::new();
const OUTPUT: &str = r#"{"result":"a short summary","tokens":321}"#;
static OUTPUT_DOC: std::sync::OnceLock<Json> = std::sync::OnceLock::new();

/// A fresh database and a plugin instance on it: with `pool`, connections fixed at that number (to match a
/// baseline's), otherwise the plugin's default pool.
pub async fn open(pool: Option<usize>) -> (String, Storage) {
    let server = pg::server();
    let db = server.fresh_database().await;
    let mut config = server.storage_config(&db);
    if let Some(n) = pool {
        config["postgresql"]["pool"] = json!({ "minConnections": n, "maxConnections": n });
    }
    let storage =
        util::plugin().open(&config).unwrap_or_else(|e| util::fail(&format!("open postgresql: {e}")));
    (db, storage)
}

/// The harness's streaming replica of the shared server, started (a base backup, then streaming) on first use.
/// Start it before loading data, so that it streams the load instead of copying it.
pub async fn replica() -> &'static pg::Replica {
    tokio::task::spawn_blocking(pg::replica).await.unwrap_or_else(|_| {
        util::fail(
            "the replica scenarios need the harness's streaming replica, which did not start (the panic above \
             says why)",
        )
    })
}

/// `config` with the harness's replica as its one `storage.postgresql.replicas` entry and `readPreference:
/// replica`.
pub fn with_replica(mut config: serde_json::Value, replica: &pg::Replica) -> serde_json::Value {
    let settings = replica.server().as_replica("replica");
    for key in ["replicas", "readPreference"] {
        config["postgresql"][key] = settings["postgresql"][key].clone();
    }
    config
}

/// The replica's `host:port`: its `host` label in the metrics.
pub fn replica_address(replica: &pg::Replica) -> String {
    format!("{}:{}", replica.server().host, replica.server().port)
}

/// The value of the sample of `family` whose labels are exactly `labels` (in the plugin's order), from
/// `storage`'s metrics; `None` when the plugin does not export it.
pub async fn metric(storage: &Storage, family: &str, labels: &str) -> Option<f64> {
    let text = storage.metrics_text().await.ok()?;
    let prefix = format!("{family}{{{labels}}} ");
    text.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.trim().parse().ok())
}

/// Reads the replica at `address` served through `storage` (`parallax_storage_reads_total`); 0 when the plugin
/// does not export it (a build without read routing).
pub async fn replica_reads(storage: &Storage, address: &str) -> f64 {
    let labels = format!("host=\"{address}\",role=\"replica\"");
    metric(storage, "parallax_storage_reads_total", &labels).await.unwrap_or(0.0)
}

/// Waits (at most `timeout`) until `storage`'s router reports the replica at `address` up
/// (`parallax_storage_replica_up` 1: its first health check passed, so reads go to it). False when it never
/// does: a build without read routing, or a replica that is down or lagging.
pub async fn wait_replica_up(storage: &Storage, address: &str, timeout: Duration) -> bool {
    let started = Instant::now();
    let labels = format!("host=\"{address}\"");
    loop {
        if metric(storage, "parallax_storage_replica_up", &labels).await == Some(1.0) {
            return true;
        }
        if started.elapsed() >= timeout {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs `ops` jobs over `CALLERS` concurrent tasks, each built by `caller(i)` and pulling job numbers from a
/// shared counter; returns operations per second.
async fn concurrent<F, Fut>(ops: usize, caller: F) -> f64
where
    F: Fn(usize, Arc<AtomicUsize>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let next = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..CALLERS).map(|i| caller(i, next.clone())).collect();
    util::throughput(ops, async move {
        let handles: Vec<_> = tasks.into_iter().map(tokio::spawn).collect();
        for h in handles {
            h.await.expect("caller task");
        }
    })
    .await
}

fn json_doc(cell: &std::sync::OnceLock<Json>, text: &str) -> Json {
    cell.get_or_init(|| Json::parse(text).expect("a valid JSON constant")).clone()
}

fn new_execution() -> NewExecution {
    NewExecution {
        id: None,
        pattern_name: "bench-lifecycle".into(),
        pattern_version: "1.0.0".into(),
        status: ExecutionStatus::Running,
        input: Some(json_doc(&INPUT_DOC, INPUT)),
        metadata: None,
        tags: Default::default(),
        started_at: None,
    }
}

pub async fn plugin_lifecycles(storage: &Storage, ops: usize) -> f64 {
    concurrent(ops, |_, next| {
        let s = storage.clone();
        async move {
            while next.fetch_add(1, Ordering::Relaxed) < ops {
                let e = s.create_execution(new_execution()).await.expect("create_execution");
                let done = ExecutionCompletion {
                    status: ExecutionStatus::Completed,
                    output: Some(json_doc(&OUTPUT_DOC, OUTPUT)),
                    error: None,
                    completed_at: None,
                };
                s.complete_execution(e.id, done).await.expect("complete_execution");
            }
        }
    })
    .await
}

const INSERT: &str = "INSERT INTO executions (id, pattern_name, pattern_version, status, input, metadata, \
    started_at, tags) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
const COMPLETE: &str = "UPDATE executions SET status = $2, output = $3, completed_at = $4, duration_ms = $5 \
    WHERE id = $1 AND started_at = $6 AND status IN ('pending', 'running')";

/// The create half of a raw lifecycle: the same eight values for both raw loops.
pub async fn raw_create(
    c: &tokio_postgres::Client,
    insert: &tokio_postgres::Statement,
    id: &PgUuid,
    started: i64,
) {
    let md: Option<PgJson> = None;
    let input = PgJson(INPUT);
    let (at, tags) = (PgTs(started), PgJson("[]"));
    c.execute(insert, &[id, &"bench-lifecycle", &"1.0.0", &"running", &input, &md, &at, &tags])
        .await
        .expect("raw insert");
}

async fn raw_lifecycles(clients: &[Arc<tokio_postgres::Client>], ops: usize) -> f64 {
    concurrent(ops, |i, next| {
        let c = clients[i].clone();
        async move {
            let (insert, complete) = (c.prepare(INSERT).await.unwrap(), c.prepare(COMPLETE).await.unwrap());
            while next.fetch_add(1, Ordering::Relaxed) < ops {
                let (id, started) = (PgUuid(uuid::Uuid::now_v7()), now_us());
                raw_create(&c, &insert, &id, started).await;
                let done = now_us();
                let n = c
                    .execute(
                        &complete,
                        &[
                            &id,
                            &"completed",
                            &PgJson(OUTPUT),
                            &PgTs(done),
                            &((done - started) / 1000),
                            &PgTs(started),
                        ],
                    )
                    .await
                    .expect("raw update");
                assert_eq!(n, 1);
            }
        }
    })
    .await
}

/// The plugin's own two statements (`lifecycle_sql`: the same text, prepared the same way), issued from raw
/// tokio-postgres with the values the plugin would send, the returned row read.
async fn raw_same_sql_lifecycles(clients: &[Arc<tokio_postgres::Client>], ops: usize) -> f64 {
    const DAY: i64 = 86_400_000_000;
    let [insert_sql, complete_sql] = parallax_storage::postgres::lifecycle_sql()
        .unwrap_or_else(|e| util::fail(&format!("lifecycle_sql: {e}")));
    let (insert_sql, complete_sql) = (Arc::new(insert_sql), Arc::new(complete_sql));
    concurrent(ops, |i, next| {
        let c = clients[i].clone();
        let (insert_sql, complete_sql) = (insert_sql.clone(), complete_sql.clone());
        async move {
            let insert = c.prepare(&insert_sql).await.unwrap();
            let complete = c.prepare(&complete_sql).await.unwrap();
            while next.fetch_add(1, Ordering::Relaxed) < ops {
                let (id, started) = (PgUuid(uuid::Uuid::now_v7()), now_us());
                raw_create(&c, &insert, &id, started).await;
                let done = now_us();
                let no_error: Option<PgJson> = None;
                let rows = c
                    .query(
                        &complete,
                        &[
                            &"completed",
                            &PgJson(OUTPUT),
                            &no_error,
                            &PgTs(done),
                            &done,
                            &id,
                            &PgTs(started - DAY),
                            &PgTs(started + DAY),
                            &PgTs(done),
                        ],
                    )
                    .await
                    .expect("raw complete");
                assert_eq!(rows.len(), 1);
            }
        }
    })
    .await
}

/// Scenario 1: create + complete one execution, 16 callers, vs raw tokio-postgres on 16 connections.
pub async fn lifecycle(opts: &Opts) {
    let ops = opts.n(16_000, 800);
    let (db, storage) = open(Some(CALLERS)).await;
    let server = pg::server();
    let mut clients = Vec::new();
    for _ in 0..CALLERS {
        clients.push(Arc::new(server.client(&db).await));
    }
    // Warm up every path (connections, plans, caches), then measure in turn. The baseline is raw
    // tokio-postgres issuing the plugin's own SQL; hand-written SQL (the parent table addressed by the exact
    // `started_at` the client kept, no row returned) is reported beside it.
    plugin_lifecycles(&storage, ops / 10).await;
    raw_same_sql_lifecycles(&clients, ops / 10).await;
    raw_lifecycles(&clients, ops / 10).await;
    let (mut ours, mut base, mut hand) = (0.0, 0.0, 0.0);
    // Per lifecycle: client CPU (this process: host, plugin and raw client) and server CPU (every `postgres`
    // process; zero when the server runs elsewhere); machine busy share (below 100 %: waiting, not CPU bound).
    let server_cpu = || util::processes_cpu_secs("postgres");
    let mut cost = [[0.0; 3]; 3];
    for _ in 0..2 {
        let mut phase = |i: usize, before: (f64, f64, (f64, f64))| {
            let after = (util::process_cpu_secs(), server_cpu(), util::machine_cpu_ticks());
            cost[i][0] += (after.0 - before.0) * 1e6 / ops as f64;
            cost[i][1] += (after.1 - before.1) * 1e6 / ops as f64;
            cost[i][2] += util::busy_percent(before.2, after.2) / 2.0;
            after
        };
        let t0 = (util::process_cpu_secs(), server_cpu(), util::machine_cpu_ticks());
        ours += plugin_lifecycles(&storage, ops / 2).await / 2.0;
        let t1 = phase(0, t0);
        base += raw_same_sql_lifecycles(&clients, ops / 2).await / 2.0;
        let t2 = phase(1, t1);
        hand += raw_lifecycles(&clients, ops / 2).await / 2.0;
        phase(2, t2);
    }
    let [o, b, h] = cost;
    util::report_throughput(
        "pg_lifecycle",
        ours,
        base,
        "lifecycles/s",
        0.8,
        &format!(
            "{ops} create+complete, {CALLERS} callers; plugin pool 16 = raw 16 connections; baseline = the \
             plugin's SQL from raw tokio-postgres; hand-written SQL {hand:.0}/s (ours/hand {:.2}); per lifecycle \
             client CPU ours={:.0}us same-SQL={:.0}us hand={:.0}us, server CPU ours={:.0}us same-SQL={:.0}us \
             hand={:.0}us; machine busy {:.0}%/{:.0}%/{:.0}%",
            ours / hand,
            o[0],
            b[0],
            h[0],
            o[1],
            b[1],
            h[1],
            o[2],
            b[2],
            h[2]
        ),
    );
    storage.shutdown().await.expect("shutdown");
    drop(clients);
    server.drop_database(&db).await;
}

/// `pg_lifecycle_replicas`: the `pg_lifecycle` workload (create + complete, 16 callers, pool 16) through two
/// storage objects on one database: ours has the harness's streaming replica configured with `readPreference:
/// replica`, so it records the primary's commit position after every write (the read-your-writes mark); the
/// baseline has no replica. No reads: the difference is the mark's cost per write (and the replica's health
/// checks, once a second). ABBA rounds, target ≥ 0.95.
pub async fn lifecycle_replicas(opts: &Opts) {
    let ops = opts.n(16_000, 800);
    let rounds = 8;
    let replica = replica().await;
    let _turn = replica.shared().await;
    let server = pg::server();
    let db = server.fresh_database().await;
    let mut config = server.storage_config(&db);
    config["postgresql"]["pool"] = json!({ "minConnections": CALLERS, "maxConnections": CALLERS });
    let open = |config: &serde_json::Value, what: &str| {
        util::plugin().open(config).unwrap_or_else(|e| util::fail(&format!("open postgresql ({what}): {e}")))
    };
    let routed = open(&with_replica(config.clone(), replica), "readPreference replica");
    let plain = open(&config, "no replicas");
    let address = replica_address(replica);
    let up = wait_replica_up(&routed, &address, Duration::from_secs(10)).await;
    for s in [&routed, &plain] {
        plugin_lifecycles(s, ops / 10).await;
    }
    replica.wait_caught_up(Duration::from_secs(120)).await;
    let [ours, base] = util::abba(rounds, ops / rounds, |side, n| {
        let s = if side == 0 { routed.clone() } else { plain.clone() };
        async move {
            plugin_lifecycles(&s, n).await;
        }
    })
    .await;
    // Wall time each lifecycle costs one of the 16 callers more than without the replica, split over its two
    // writes (create, complete).
    let extra_us = CALLERS as f64 * (1.0 / ours - 1.0 / base) * 1e6 / 2.0;
    util::report_throughput_if(
        "pg_lifecycle_replicas",
        ours,
        base,
        "lifecycles/s",
        0.95,
        (!up).then_some("the router never reported the replica up: no read routing, so no mark, was measured"),
        &format!(
            "{ops} create+complete per side, {CALLERS} callers, pool {CALLERS}; ours = replica {address} with \
             readPreference replica (each write counted for read-your-writes), baseline = no replicas, same \
             database, ABBA x{rounds}; {extra_us:.0}us more per write at {CALLERS} callers"
        ),
    );
    routed.shutdown().await.expect("shutdown");
    plain.shutdown().await.expect("shutdown");
    server.drop_database(&db).await;
}

pub const BATCH: usize = 1000;

pub fn audit_batch(b: usize) -> Vec<NewAuditEntry> {
    (0..BATCH)
        .map(|i| NewAuditEntry {
            action: "pattern.update".into(),
            actor: Some(format!("user-{}", (b * BATCH + i) % 50)),
            resource_type: Some("pattern".into()),
            resource_id: Some(format!("p-{}", i % 200)),
            details: Some(Json::parse(format!(r#"{{"batch":{b},"n":{i},"ok":true}}"#)).expect("valid JSON")),
            ip_address: Some("10.1.2.3".into()),
            user_agent: Some("parallax-bench/1.0".into()),
            ..Default::default()
        })
        .collect()
}

const COPY_AUDIT: &str =
    "COPY audit_logs (id, timestamp, action, actor, resource_type, resource_id, details, \
    ip_address, user_agent) FROM STDIN (FORMAT binary)";

async fn copy_batch(client: &tokio_postgres::Client, b: usize) {
    let now = now_us();
    let mut c = BinaryCopy::new();
    for i in 0..BATCH {
        c.row(9);
        c.uuid(&uuid::Uuid::now_v7());
        c.timestamptz(now);
        c.text("pattern.update");
        c.text(&format!("user-{}", (b * BATCH + i) % 50));
        c.text("pattern");
        c.text(&format!("p-{}", i % 200));
        c.jsonb(&format!(r#"{{"batch":{b},"n":{i},"ok":true}}"#));
        c.inet4([10, 1, 2, 3]);
        c.text("parallax-bench/1.0");
    }
    let sink = client.copy_in(COPY_AUDIT).await.expect("COPY audit_logs");
    futures_util::pin_mut!(sink);
    sink.send(c.finish()).await.expect("COPY data");
    let n = sink.finish().await.expect("COPY finish");
    assert_eq!(n as usize, BATCH);
}

/// Scenario 3: batches of 1,000 audit entries through the plugin vs binary COPY of the same rows.
pub async fn audit_batches(opts: &Opts) {
    let batches = opts.n(100, 10);
    let (db, storage) = open(None).await;
    let client = pg::server().client(&db).await;
    for b in 0..3 {
        storage.append_audit(audit_batch(b)).await.expect("append_audit");
        copy_batch(&client, b).await;
    }
    let (mut ours, mut base) = (0.0, 0.0);
    for round in 0..2 {
        let first = 10 + round * batches;
        ours += util::throughput(batches / 2 * BATCH, async {
            for b in first..first + batches / 2 {
                storage.append_audit(audit_batch(b)).await.expect("append_audit");
            }
        })
        .await
            / 2.0;
        base += util::throughput(batches / 2 * BATCH, async {
            for b in first..first + batches / 2 {
                copy_batch(&client, b).await;
            }
        })
        .await
            / 2.0;
    }
    util::report_throughput(
        "pg_audit_batch",
        ours,
        base,
        "rows/s",
        0.7,
        &format!("{batches} batches of {BATCH}, one caller; baseline COPY (FORMAT binary)"),
    );
    storage.shutdown().await.expect("shutdown");
    drop(client);
    pg::server().drop_database(&db).await;
}
