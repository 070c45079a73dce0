//! Network faults between the plugin and PostgreSQL (the reliability suite; RELIABILITY.md says which timeout
//! bounds each case). A TCP proxy (`common::proxy`) sits between one storage object and the test server:
//! refused connections, connections reset mid-stream, and a blackhole (accepted, then nothing forwarded) each
//! make every call end within the configured timeouts with `unavailable` or `timeout`; shutdown does not hang;
//! once the proxy heals, the same storage object works again without a reopen.

mod common;

use std::time::{Duration, Instant};

use common::{proxy::Proxy, *};
use parallax_storage_host::*;
use serde_json::json;

const ACQUIRE_MS: u64 = 1000;
const QUERY_MS: u64 = 2000;
/// Scheduling slack on a loaded 2-core machine.
const SLACK: Duration = Duration::from_millis(1500);

/// A storage object on a fresh database, through `proxy`.
async fn through(proxy: &Proxy) -> (String, Storage) {
    let server = pg::server();
    let db = server.fresh_database().await;
    let mut cfg = server.storage_config(&db);
    merge_json(
        &mut cfg,
        json!({ "host": "127.0.0.1", "port": proxy.port, "queryTimeout": QUERY_MS,
                "pool": { "acquireTimeout": ACQUIRE_MS, "maxConnections": 4 } })
        .as_object()
        .map(|o| json!({ "postgresql": o }))
        .unwrap(),
    );
    let s = plugin().open(&cfg).unwrap_or_else(|e| panic!("open through the proxy: {e}"));
    (db, s)
}

/// One call's outcome and how long it took.
async fn timed<T>(f: impl std::future::Future<Output = Result<T, Error>>) -> (Result<T, Error>, Duration) {
    let started = Instant::now();
    let r = f.await;
    (r, started.elapsed())
}

/// `n` reads at once (each its own call); every one fails with one of `kinds` within `bound`.
async fn all_fail_within(
    s: &Storage,
    n: usize,
    kinds: &[ErrorKind],
    bound: Duration,
    what: &str,
) -> Duration {
    let calls: Vec<_> = (0..n)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move { timed(s.get_pattern(&format!("p{}", i % 3), "1.0.0")).await })
        })
        .collect();
    let mut slowest = Duration::ZERO;
    for c in calls {
        let (r, took) = c.await.unwrap();
        let e = r.err().unwrap_or_else(|| panic!("{what}: a call succeeded"));
        assert!(kinds.contains(&e.kind), "{what}: {:?}: {e}", e.kind);
        assert!(took <= bound, "{what}: a call took {took:?} (bound {bound:?}): {e}");
        slowest = slowest.max(took);
    }
    slowest
}

/// Calls succeed again within `within` (the pool replaces what the fault broke).
async fn recovers(s: &Storage, within: Duration, what: &str) -> Duration {
    let started = Instant::now();
    loop {
        match s.get_pattern("p0", "1.0.0").await {
            Ok(_) => return started.elapsed(),
            Err(e) => {
                assert!(matches!(e.kind, ErrorKind::Unavailable | ErrorKind::Timeout), "{what}: {e}");
                assert!(started.elapsed() < within, "{what}: not recovered within {within:?}: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_reset_and_blackholed_connections_are_bounded_and_heal() {
    let server = pg::server();
    let proxy = Proxy::start(&server.host, server.port);
    let (db, s) = through(&proxy).await;
    for i in 0..3 {
        s.put_pattern(new_pattern(&format!("p{i}"), "1.0.0")).await.unwrap();
    }

    // (a) Refused: new connections refused, open ones closed. A call on a pooled connection fails when it
    // finds the connection closed; a call that needs a new one, when the connect is refused (at once) or at
    // acquireTimeout.
    proxy.refuse();
    let refused = all_fail_within(
        &s,
        8,
        &[ErrorKind::Unavailable, ErrorKind::Timeout],
        Duration::from_millis(ACQUIRE_MS) + SLACK,
        "refused",
    )
    .await;
    proxy.heal();
    let healed_refused = recovers(&s, Duration::from_secs(10), "after refusing").await;

    // (b) Reset mid-stream, with calls in flight: each fails at once or succeeds on a new connection.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..8)
        .map(|i| {
            let (s, stop) = (s.clone(), stop.clone());
            tokio::spawn(async move {
                let mut failed = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let (r, took) = timed(s.get_pattern(&format!("p{}", i % 3), "1.0.0")).await;
                    if let Err(e) = r {
                        failed.push((e.kind, took, e.to_string()));
                    }
                }
                failed
            })
        })
        .collect();
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        proxy.reset();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut reset_failures = 0;
    for w in workers {
        for (kind, took, e) in w.await.unwrap() {
            reset_failures += 1;
            assert!(matches!(kind, ErrorKind::Unavailable | ErrorKind::Timeout), "reset: {kind:?}: {e}");
            assert!(took <= Duration::from_millis(ACQUIRE_MS) + SLACK, "reset: a call took {took:?}: {e}");
        }
    }
    let healed_reset = recovers(&s, Duration::from_secs(10), "after resets").await;

    // (c) Blackhole: calls on open connections wait for queryTimeout, calls needing a new connection for
    // acquireTimeout (the handshake is bounded by it too); then the connection is closed.
    let (db2, other) = through(&proxy).await;
    other.put_pattern(new_pattern("p0", "1.0.0")).await.unwrap();
    proxy.blackhole();
    let blackholed = all_fail_within(
        &s,
        8,
        &[ErrorKind::Timeout, ErrorKind::Unavailable],
        Duration::from_millis(QUERY_MS.max(ACQUIRE_MS)) + Duration::from_millis(ACQUIRE_MS) + SLACK,
        "blackhole",
    )
    .await;
    // Shutting a storage object down while its server is blackholed does not hang.
    let (r, shutdown) = timed(other.shutdown()).await;
    r.unwrap();
    assert!(shutdown < Duration::from_secs(10), "shutdown while blackholed took {shutdown:?}");
    proxy.heal();
    let healed_blackhole = recovers(&s, Duration::from_secs(10), "after the blackhole").await;
    s.put_pattern(new_pattern("after", "1.0.0")).await.unwrap();
    s.shutdown().await.unwrap();
    println!(
        "fault figures: refused: slowest failed call {refused:?}, healed in {healed_refused:?}; reset x5 with 8 \
         callers: {reset_failures} failed calls, healed in {healed_reset:?}; blackhole: slowest failed call \
         {blackholed:?}, shutdown {shutdown:?}, healed in {healed_blackhole:?} (acquireTimeout {ACQUIRE_MS} ms, \
         queryTimeout {QUERY_MS} ms)"
    );
    drop(proxy);
    server.drop_database(&db).await;
    server.drop_database(&db2).await;
}
