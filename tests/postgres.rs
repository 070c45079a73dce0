//! The contract suite on PostgreSQL, plus PostgreSQL-specific behaviour: partitions, pool limits, server
//! restarts, TLS modes, concurrent migrations.

mod common;
mod contract;

contract_suite!(common::postgres);

use std::time::{Duration, Instant};

use common::{pg, *};
use parallax_storage_host::abi::*;
use serde_json::json;

/// The storage's own database, for looking behind the plugin.
async fn inspect(h: &Harness) -> tokio_postgres::Client {
    pg::server().client(h.pg_db.as_ref().unwrap()).await
}

fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
    match (a, b) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_are_made_ahead_and_route_rows() {
    let h = postgres().await;
    let db = inspect(&h).await;
    let parts: Vec<String> = db
        .query(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = 'executions'::regclass ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    // This month and three ahead (the default partitionMonthsAhead), plus the default partition.
    let months: Vec<String> = db
        .query(
            "SELECT 'executions_' || to_char((now() AT TIME ZONE 'UTC') + make_interval(months => m), 'YYYY_MM') \
             FROM generate_series(0, 3) m",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for m in &months {
        assert!(parts.contains(m), "{m} missing from {parts:?}");
    }
    assert!(parts.contains(&"executions_default".to_string()));

    let now = h.storage.create_execution(new_execution("route", "1.0.0")).await.unwrap();
    let mut old = new_execution("route", "1.0.0");
    old.started_at = Some(1_000_000_000_000_000).into(); // 2001-09-09
    let old = h.storage.create_execution(old).await.unwrap();
    let where_is = |id: String| {
        let db = &db;
        async move {
            let row = db
                .query_one(
                    "SELECT tableoid::regclass::text FROM executions WHERE id = $1::text::uuid",
                    &[&id],
                )
                .await
                .unwrap();
            row.get::<_, String>(0)
        }
    };
    assert_eq!(where_is(now.id.to_string()).await, months[0]);
    assert_eq!(
        where_is(old.id.to_string()).await,
        "executions_default",
        "out-of-range rows land in the default"
    );

    // Creating that month's partition late moves its rows out of the default partition.
    db.batch_execute("SELECT parallax_create_execution_partition('2001-09-15T00:00:00Z')").await.unwrap();
    assert_eq!(where_is(old.id.to_string()).await, "executions_2001_09");
    assert_eq!(h.storage.get_execution(&old.id).await.unwrap(), old, "the moved row is intact");

    // A UUIDv7 id carries its time: the lookup by id reads one partition, not all of them.
    let plan: Vec<String> = db
        .query(
            &format!(
                "EXPLAIN SELECT * FROM executions WHERE id = '{0}' AND started_at >= to_timestamp({1}) - interval '1 day' \
                 AND started_at < to_timestamp({1}) + interval '1 day'",
                now.id,
                now.started_at / 1_000_000
            ),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let scanned: Vec<&String> = plan.iter().filter(|l| l.contains(" on executions_")).collect();
    assert!(scanned.len() <= 2, "expected partition pruning, got plan {plan:#?}");
    h.finish().await;
}

/// The plugin's connections to `db` other than `admin`'s own, by backend pid.
async fn plugin_backends(admin: &tokio_postgres::Client) -> Vec<i32> {
    admin
        .query(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() \
             AND application_name = 'parallax-storage' AND pid <> pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Waits (up to 10 s) until the plugin has no connection to `db`.
async fn until_no_plugin_backends(admin: &tokio_postgres::Client, why: &str) {
    let started = Instant::now();
    while !plugin_backends(admin).await.is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{why}: the plugin's connections are still open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A pooled connection's I/O is driven by the call using it, so nothing watches it while it sits idle in the
/// pool. One the server closed meanwhile (restart, `pg_terminate_backend`, an idle timeout in a proxy) must be
/// noticed at checkout and replaced: the next call succeeds instead of failing with "connection closed".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_connection_the_server_closed_is_replaced_at_checkout() {
    let server = pg::server();
    let db = server.fresh_database().await;
    let mut cfg = server.storage_config(&db);
    merge(&mut cfg, json!({ "postgresql": { "pool": { "minConnections": 1, "maxConnections": 1 } } }));
    let storage = plugin().open(&cfg).unwrap();
    storage.put_pattern(new_pattern("kept", "1.0.0")).await.unwrap();
    let admin = server.client(&db).await;
    for round in 0..3 {
        let pids = plugin_backends(&admin).await;
        assert_eq!(pids.len(), 1, "round {round}: expected the pool's one connection, found {pids:?}");
        admin.execute("SELECT pg_terminate_backend($1)", &[&pids[0]]).await.unwrap();
        until_no_plugin_backends(&admin, &format!("round {round}: terminated")).await;
        // Let the plugin runtime's I/O driver see the closed socket.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let p = storage.get_pattern("kept", "1.0.0").await.unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(p.name.as_str(), "kept");
    }
    storage.shutdown().await.unwrap();
    drop(storage);
    until_no_plugin_backends(&admin, "after shutdown and drop").await;
    server.drop_database(&db).await;
}

/// Calls still waiting when the storage shuts down (one on the server, one for a pool connection) end
/// promptly with `unavailable`. They are polled by the caller, so once the plugin runtime has stopped they must
/// not touch its timers or sockets again (a stopped runtime's timer panics when polled).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_in_flight_at_shutdown_end_unavailable() {
    let server = pg::server();
    let db = server.fresh_database().await;
    let mut cfg = server.storage_config(&db);
    merge(
        &mut cfg,
        json!({ "postgresql": { "pool": { "minConnections": 1, "maxConnections": 1, "acquireTimeout": 30000 } } }),
    );
    let storage = plugin().open(&cfg).unwrap();
    storage.put_pattern(new_pattern("warm", "1.0.0")).await.unwrap();
    let mut blocker = server.client(&db).await;
    let tx = blocker.transaction().await.unwrap();
    tx.batch_execute("LOCK TABLE patterns IN ACCESS EXCLUSIVE MODE").await.unwrap();
    let calls: Vec<_> = ["on the server", "for a connection"]
        .into_iter()
        .map(|what| {
            let s = storage.clone();
            let call = tokio::spawn(async move { s.put_pattern(new_pattern(what, "1.0.0")).await });
            (what, call)
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (what, call) in &calls {
        assert!(!call.is_finished(), "the call waiting {what} finished early");
    }
    storage.shutdown().await.unwrap();
    for (what, call) in calls {
        let err = tokio::time::timeout(Duration::from_secs(10), call)
            .await
            .unwrap_or_else(|_| panic!("the call waiting {what} still waits after shutdown"))
            .unwrap()
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Unavailable, "the call waiting {what}: {err}");
    }
    tx.rollback().await.unwrap();
    drop(storage);
    server.drop_database(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_pool_times_out_instead_of_hanging() {
    let server = pg::server();
    let db = server.fresh_database().await;
    let mut cfg = server.storage_config(&db);
    merge(
        &mut cfg,
        json!({ "postgresql": { "pool": { "minConnections": 0, "maxConnections": 1, "acquireTimeout": 300 } } }),
    );
    let storage = plugin().open(&cfg).unwrap();
    storage.put_pattern(new_pattern("warm", "1.0.0")).await.unwrap();

    // Hold a lock so the plugin's only connection is stuck inside a write.
    let mut blocker = server.client(&db).await;
    let tx = blocker.transaction().await.unwrap();
    tx.batch_execute("LOCK TABLE patterns IN ACCESS EXCLUSIVE MODE").await.unwrap();
    let stuck = {
        let s = storage.clone();
        tokio::spawn(async move { s.put_pattern(new_pattern("stuck", "1.0.0")).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let err = storage.get_execution("0190b3f2-7c1e-7a00-8000-000000000001").await.unwrap_err();
    let waited = started.elapsed();
    assert_eq!(err.kind, ErrorKind::Timeout, "{err}");
    assert!(err.message.contains("maxConnections"), "{err}");
    assert!(
        waited < Duration::from_secs(5),
        "failed after {waited:?}, expected about acquireTimeout (300 ms)"
    );
    tx.rollback().await.unwrap();
    stuck.await.unwrap().unwrap();
    storage.get_pattern("stuck", "1.0.0").await.unwrap();
    storage.shutdown().await.unwrap();
    server.drop_database(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_storage_recovers_after_a_server_restart() {
    let cluster = pg::Cluster::start(pg::ClusterOptions::default());
    let server = &cluster.server;
    let db = server.fresh_database().await;
    let mut cfg = server.storage_config(&db);
    merge(&mut cfg, json!({ "postgresql": { "pool": { "acquireTimeout": 1000 } } }));
    let storage = plugin().open(&cfg).unwrap();
    storage.put_pattern(new_pattern("before", "1.0.0")).await.unwrap();

    cluster.stop_server();
    let started = Instant::now();
    let err = storage.get_pattern("before", "1.0.0").await.unwrap_err();
    assert!(matches!(err.kind, ErrorKind::Unavailable | ErrorKind::Timeout), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "a down server must fail fast, took {:?}",
        started.elapsed()
    );
    // Opening while the server is down fails clearly too.
    let open_err = plugin().open(&cfg).unwrap_err();
    assert_eq!(open_err.kind, ErrorKind::Unavailable, "{open_err}");
    assert!(open_err.message.contains(&format!("127.0.0.1:{}", server.port)), "{open_err}");

    cluster.start_server();
    let mut last = None;
    for _ in 0..50 {
        match storage.get_pattern("before", "1.0.0").await {
            Ok(p) => {
                last = Some(p);
                break;
            }
            Err(e) => {
                assert!(matches!(e.kind, ErrorKind::Unavailable | ErrorKind::Timeout), "{e}");
                tokio::time::sleep(Duration::from_millis(100)).await
            }
        }
    }
    assert!(last.is_some(), "the storage object did not recover after the server came back");
    storage.put_pattern(new_pattern("after", "1.0.0")).await.unwrap();
    storage.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_starting_together_apply_each_migration_once() {
    let server = pg::server();
    let db = server.fresh_database().await;
    let cfg = server.storage_config(&db);
    let handles: Vec<_> = (0..6)
        .map(|_| {
            let cfg = cfg.clone();
            std::thread::spawn(move || plugin().open(&cfg).map(|_s| ()).map_err(|e| e.to_string()))
        })
        .collect();
    for h in handles {
        h.join().unwrap().expect("every concurrent open succeeds");
    }
    let client = server.client(&db).await;
    let rows = client.query("SELECT version FROM __diesel_schema_migrations", &[]).await.unwrap();
    assert_eq!(
        rows.len(),
        plugin().info().backends.iter().find(|b| b.name == "postgresql").unwrap().migrations.len()
    );
    server.drop_database(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_or_unknown_migrations_refuse_to_open() {
    let server = pg::server();
    let db = server.fresh_database().await;
    let mut cfg = server.storage_config(&db);
    merge(&mut cfg, json!({ "migrations": { "autoRun": false } }));
    let err = plugin().open(&cfg).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Schema, "{err}");
    assert!(err.message.contains("migrate up"), "{err}");
    let s = plugin().open_with(&cfg, OpenOptions { maintenance: true }).unwrap();
    s.migrate_up().await.unwrap();
    s.shutdown().await.unwrap();
    server
        .client(&db)
        .await
        .batch_execute("INSERT INTO __diesel_schema_migrations (version) VALUES ('29990101000000')")
        .await
        .unwrap();
    let err = plugin().open(&cfg).unwrap_err();
    assert!(err.message.contains("29990101000000") && err.message.contains("newer"), "{err}");
    server.drop_database(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urls_and_env_style_config_work_and_hide_the_password() {
    let server = pg::server();
    let db = server.fresh_database().await;
    server
        .admin()
        .await
        .batch_execute(
            "DO $$ BEGIN CREATE ROLE parallax_pw LOGIN SUPERUSER PASSWORD 'hunter2'; \
        EXCEPTION WHEN duplicate_object THEN NULL; END $$",
        )
        .await
        .unwrap();
    let url =
        format!("postgresql://parallax_pw:hunter2@{}:{}/{db}?sslmode=disable", server.host, server.port);
    let cfg = json!({ "type": "postgresql", "postgresql": { "url": url } });
    let s = plugin().open(&cfg).unwrap();
    let health = s.health().await.unwrap();
    assert_eq!(health.backend, "postgresql");
    assert!(health.server_version.starts_with("PostgreSQL "), "{}", health.server_version);
    assert!(!health.location.contains("hunter2") && health.location.contains("***"), "{}", health.location);
    s.shutdown().await.unwrap();
    let bad = json!({ "type": "postgresql", "postgresql": { "url": url.replace(&db, "no_such_db") } });
    let err = plugin().open(&bad).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unavailable);
    assert!(err.message.contains("no_such_db") && !err.message.contains("hunter2"), "{err}");
    server.drop_database(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_modes_verify_what_they_promise() {
    let certs = tempfile::tempdir().unwrap();
    let ca = pg::make_ca(certs.path(), "test-ca");
    let other_ca = pg::make_ca(certs.path(), "other-ca");
    let (cert, key) = pg::make_server_cert(certs.path(), "test-ca");
    let cluster = pg::Cluster::start(pg::ClusterOptions { tls: Some((cert, key)) });
    let server = &cluster.server;
    let db = "postgres";
    let open = |host: &str, mode: &str, ca: Option<&std::path::Path>| {
        let mut cfg = server.storage_config(db);
        cfg["postgresql"]["host"] = json!(host);
        cfg["postgresql"]["ssl"] = json!({ "enabled": mode != "disable", "mode": mode });
        if let Some(ca) = ca {
            cfg["postgresql"]["ssl"]["ca"] = json!(ca);
        }
        // Maintenance mode: no migrations needed to prove the connection.
        plugin().open_with(&cfg, OpenOptions { maintenance: true })
    };
    let connects = |r: Result<parallax_storage_host::Storage, StorageError>, case: &str| match r {
        Ok(s) => drop(s),
        Err(e) => panic!("{case}: expected to connect, got {e}"),
    };
    let refused = |r: Result<parallax_storage_host::Storage, StorageError>, case: &str, needle: &str| match r
    {
        Ok(_) => panic!("{case}: expected a refusal"),
        Err(e) => {
            assert_eq!(e.kind, ErrorKind::Unavailable, "{case}: {e}");
            assert!(e.message.to_lowercase().contains(needle), "{case}: {e}");
        }
    };

    connects(open("127.0.0.1", "verify-full", Some(&ca)), "verify-full, right CA, name in certificate");
    refused(open("127.0.0.1", "verify-full", Some(&other_ca)), "verify-full, wrong CA", "certificate");
    refused(
        open("127.0.0.2", "verify-full", Some(&ca)),
        "verify-full, name not in certificate",
        "certificate",
    );
    connects(open("127.0.0.2", "verify-ca", Some(&ca)), "verify-ca ignores the name");
    refused(open("127.0.0.2", "verify-ca", Some(&other_ca)), "verify-ca, wrong CA", "certificate");
    connects(open("127.0.0.1", "require", None), "require without a CA");
    connects(open("127.0.0.1", "prefer", None), "prefer");
    // The server only accepts TLS from the network, so skipping TLS shows up.
    refused(open("127.0.0.1", "disable", None), "disable against a TLS-only server", "no encryption");

    let missing = certs.path().join("missing.crt");
    let err = open("127.0.0.1", "verify-full", Some(&missing)).unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidInput, "{err}");
    assert!(
        err.message.contains("storage.postgresql.ssl.ca") && err.message.contains("missing.crt"),
        "{err}"
    );
    let not_pem = certs.path().join("san.ext");
    let err = open("127.0.0.1", "verify-full", Some(&not_pem)).unwrap_err();
    assert!(err.message.contains("no PEM certificates"), "{err}");

    // The URL form with sslmode=verify-full (which tokio-postgres itself would reject) works too.
    let url = format!(
        "postgresql://postgres@127.0.0.1:{}/postgres?sslmode=verify-full&sslrootcert={}",
        server.port,
        ca.display()
    );
    let cfg = json!({ "type": "postgresql", "postgresql": { "url": url } });
    connects(plugin().open_with(&cfg, OpenOptions { maintenance: true }), "URL with sslmode=verify-full");
}
