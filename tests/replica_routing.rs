//! Read routing to a real streaming replica (the harness's standby, `tests/common/pg.rs`): which host served
//! each read is taken from the `hosts` maintenance op's per-host read counters.

mod common;

use std::time::{Duration, Instant};

use common::{pg, *};
use parallax_storage_host::*;
use serde_json::{json, Value};

/// A fresh database with the shared replica configured, merged with `extra`.
async fn open_on_replica(extra: Value) -> (Storage, Value, String) {
    let r = pg::replica();
    let server = pg::server();
    let db = server.fresh_database().await;
    let mut config = server.storage_config(&db);
    merge_json(
        &mut config,
        json!({"postgresql": {
            "replicas": [{"host": r.server().host, "port": r.server().port}],
            "readPreference": "replica",
        }}),
    );
    merge_json(&mut config, extra);
    let storage = plugin().open(&config).unwrap_or_else(|e| panic!("open {config}: {e}"));
    (storage, config, db)
}

async fn hosts(s: &Storage) -> Value {
    s.maintenance(&MaintenanceRequest::new("hosts", 1, json!({}))).await.expect("hosts op").result
}

/// Reads served so far by (the primary, the replica).
async fn reads(s: &Storage) -> (u64, u64) {
    let h = hosts(s).await;
    let n = |i: usize| h["hosts"][i]["reads"].as_u64().unwrap_or_else(|| panic!("no reads in {h}"));
    (n(0), n(1))
}

/// Repeats `read` until the replica serves one (the health task probes every second), at most 10 s.
async fn until_replica_serves<F: AsyncFn()>(s: &Storage, read: F) {
    let started = Instant::now();
    loop {
        let (_, before) = reads(s).await;
        read().await;
        if reads(s).await.1 > before {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the replica never served a read: {}",
            hosts(s).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_go_to_a_caught_up_replica() {
    let r = pg::replica();
    let _turn = r.shared().await;
    let (s, _, db) = open_on_replica(json!({})).await;
    let e = s.create_execution(new_execution("p", "1")).await.unwrap();
    r.wait_caught_up(Duration::from_secs(10)).await;
    until_replica_serves(&s, async || drop(s.get_execution(e.id).await.unwrap())).await;
    let (p0, r0) = reads(&s).await;
    for _ in 0..20 {
        assert_eq!(s.get_execution(e.id).await.unwrap().id, e.id);
        s.count_executions(ExecutionFilter::default()).await.unwrap();
    }
    let (p1, r1) = reads(&s).await;
    assert_eq!((p1 - p0, r1 - r0), (0, 40), "every read on the caught-up replica");
    let h = hosts(&s).await;
    assert_eq!(h["readPreference"], "replica");
    assert_eq!(h["hosts"][1]["state"], "up", "{h}");
    assert_eq!(h["hosts"][1]["serverRole"], "standby", "{h}");
    assert_eq!(h["hosts"][0]["serverRole"], "primary", "{h}");
    assert_eq!(h["hosts"][1]["receivesReads"], true, "{h}");
    s.shutdown().await.unwrap();
    pg::server().drop_database(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_writes_are_never_stale_while_replay_is_paused() {
    let r = pg::replica();
    let _turn = r.exclusive().await;
    // Paused for a few seconds only: well within the default maxReplicaLag (10 s).
    let (s, config, db) = open_on_replica(json!({})).await;
    let old = s.create_execution(new_execution("p", "1")).await.unwrap();
    r.wait_caught_up(Duration::from_secs(10)).await;
    // A second object that writes nothing: its reads of old rows may use the replica throughout.
    let reader = plugin().open(&config).unwrap();
    until_replica_serves(&s, async || drop(s.get_execution(old.id).await.unwrap())).await;
    until_replica_serves(&reader, async || drop(reader.get_execution(old.id).await.unwrap())).await;
    r.pause_replay().await;

    for i in 0..5 {
        let e = s.create_execution(new_execution("p", "1")).await.unwrap();
        assert_eq!(s.get_execution(e.id).await.unwrap().id, e.id, "round {i}: created execution missing");
        let upd =
            ExecutionUpdate { metadata: Some(doc(&format!("{{\"round\":{i}}}"))), ..Default::default() };
        s.update_execution(e.id, upd).await.unwrap();
        let listed = s.list_executions(ExecutionFilter::default(), page(100, None)).await.unwrap().items;
        let mine = listed.iter().find(|x| x.id == e.id).expect("listed");
        assert_eq!(
            mine.metadata.as_ref().map(|m| m.as_str()),
            Some(format!("{{\"round\":{i}}}").as_str()),
            "round {i}: update missing"
        );
        s.append_event(e.id, NewEvent::new(EventKind::StepResult, json!({"i": i}))).await.unwrap();
        assert_eq!(s.list_events(e.id).await.unwrap().len(), 1, "round {i}: event missing");
        let p = s.put_pattern(new_pattern(&format!("pat{i}"), "1.0.0")).await.unwrap();
        assert_eq!(s.get_pattern(&p.name, "1.0.0").await.unwrap().id, p.id, "round {i}");
        s.append_audit(vec![audit(&format!("act{i}"), "me")]).await.unwrap();
        let found = s.query_audit(
            AuditQuery { action: Some(format!("act{i}")), ..Default::default() },
            page(10, None),
        );
        assert_eq!(found.await.unwrap().items.len(), 1, "round {i}: audit entry missing");
        assert_eq!(s.count_executions(ExecutionFilter::default()).await.unwrap(), i + 2, "round {i}");
    }
    // The writer's reads went to the primary (own writes not replayed); the reader's still go to the replica.
    let (_, before) = reads(&reader).await;
    for _ in 0..10 {
        assert_eq!(reader.get_execution(old.id).await.unwrap().id, old.id);
    }
    let after = reads(&reader).await.1;
    assert_eq!(after - before, 10, "reads without own writes stay on the replica: {}", hosts(&reader).await);
    let metrics = s.metrics_text().await.unwrap_or_default();
    r.resume_replay().await;
    s.shutdown().await.unwrap();
    reader.shutdown().await.unwrap();
    pg::server().drop_database(&db).await;
    if metrics.contains("parallax_storage_replica_fallbacks_total") {
        assert!(metrics.contains("reason=\"own_write\""), "{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_replica_falls_back_to_the_primary_and_returns() {
    let r = pg::replica();
    let _turn = r.exclusive().await;
    let (s, _, db) = open_on_replica(json!({})).await;
    let e = s.create_execution(new_execution("p", "1")).await.unwrap();
    r.wait_caught_up(Duration::from_secs(10)).await;
    until_replica_serves(&s, async || drop(s.get_execution(e.id).await.unwrap())).await;

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s = std::sync::Arc::new(s);
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (s, stop) = (s.clone(), stop.clone());
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    s.get_execution(e.id).await.expect("a read failed while the replica stopped");
                    n += 1;
                }
                n
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    r.stop_immediate();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let h = hosts(&s).await;
    assert_eq!(h["hosts"][1]["state"], "down", "{h}");
    assert_eq!(h["hosts"][1]["reachable"], false, "{h}");
    let (p0, _) = reads(&s).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(reads(&s).await.0 > p0, "the primary serves while the replica is down");
    r.start().await;
    until_replica_serves(&s, async || drop(s.get_execution(e.id).await.unwrap())).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in workers {
        assert!(w.await.unwrap() > 0);
    }
    s.shutdown().await.unwrap();
    pg::server().drop_database(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_preference_primary_uses_no_replica() {
    let r = pg::replica();
    let _turn = r.shared().await;
    let (s, _, db) = open_on_replica(json!({"postgresql": {"readPreference": "primary"}})).await;
    let e = s.create_execution(new_execution("p", "1")).await.unwrap();
    r.wait_caught_up(Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for _ in 0..5 {
        s.get_execution(e.id).await.unwrap();
    }
    assert_eq!(reads(&s).await, (5, 0));
    // Still shown (probed on a one-off connection) for test-connection.
    let h = hosts(&s).await;
    assert_eq!(h["hosts"][1]["reachable"], true, "{h}");
    assert_eq!(h["hosts"][1]["receivesReads"], false, "{h}");
    s.shutdown().await.unwrap();
    pg::server().drop_database(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_replica_shows_its_lag_and_catches_up() {
    let r = pg::replica();
    let _turn = r.exclusive().await;
    let (s, config, db) = open_on_replica(json!({})).await;
    let e = s.create_execution(new_execution("p", "1")).await.unwrap();
    r.wait_caught_up(Duration::from_secs(10)).await;
    until_replica_serves(&s, async || drop(s.get_execution(e.id).await.unwrap())).await;
    r.pause_replay().await;
    // Writes through another object: this one's own mark stays where the replica is.
    let writer = plugin().open(&config).unwrap();
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(3500) {
        writer.create_execution(new_execution("p", "1")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let h = hosts(&s).await;
    let lag = h["hosts"][1]["replayLagMs"].as_u64().unwrap_or_else(|| panic!("{h}"));
    // 3.5 s of unreplayed writes, measured by 1 s probes (the lag counts from the first probe that saw WAL
    // beyond the replay position, as of the last probe).
    assert!((1000..10_000).contains(&lag), "about 1.5 to 3.5 s behind: {h}");
    assert!(h["hosts"][1]["replayLagBytes"].as_u64().unwrap() > 0, "{h}");
    assert_eq!(h["hosts"][1]["state"], "up", "within the default maxReplicaLag of 10 s: {h}");
    // Reads of what this object wrote (before the pause) still go to the replica.
    let (_, before) = reads(&s).await;
    s.get_execution(e.id).await.unwrap();
    assert_eq!(reads(&s).await.1, before + 1, "{}", hosts(&s).await);
    r.resume_replay().await;
    let started = Instant::now();
    loop {
        let h = hosts(&s).await;
        if h["hosts"][1]["replayLagMs"] == 0 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "no lag once replay resumed: {h}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    writer.shutdown().await.unwrap();
    s.shutdown().await.unwrap();
    pg::server().drop_database(&db).await;
}
