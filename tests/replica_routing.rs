//! The replica's lag and `readPreference: primary` as the `hosts` maintenance op reports them, against a real
//! streaming replica (the harness's standby, `tests/common/pg.rs`). Routing itself is tested in `tests/postgres.rs`.

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
    merge_json(&mut config, r.server().as_replica("replica"));
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
async fn read_preference_primary_uses_no_replica() {
    let r = pg::replica();
    let _turn = r.shared().await;
    let (s, _, db) = open_on_replica(json!({"postgresql": {"readPreference": "primary"}})).await;
    let e = s.create_execution(new_execution("p", "1")).await.unwrap();
    r.wait_caught_up(Duration::from_secs(10)).await;
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
    assert!((1..10_000).contains(&lag), "about 1.5 to 3.5 s behind (less when probes were late): {h}");
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
        // Other tests keep writing to the shared primary: caught up within a probe or so.
        if h["hosts"][1]["replayLagMs"].as_u64().is_some_and(|ms| ms < 1000) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "no lag once replay resumed: {h}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    writer.shutdown().await.unwrap();
    s.shutdown().await.unwrap();
    pg::server().drop_database(&db).await;
}
