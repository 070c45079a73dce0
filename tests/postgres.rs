//! The contract suite on PostgreSQL, plus PostgreSQL-specific behaviour: partitions, pool limits, server
//! restarts, TLS modes, concurrent migrations.

mod common;
mod contract;

contract_suite!(common::postgres);

/// The contract suite again with plain reads on the streaming replica (`readPreference: replica`):
/// `cargo test --test postgres on_replica` runs only it.
mod on_replica {
    // Not `use crate::contract_suite`: that name is also the module the suite above generated.
    use crate::contract_tests;
    crate::contract_suite!(crate::common::postgres_replica);
}

use std::time::{Duration, Instant};

use common::{pg, *};
use parallax_storage_host::*;
use serde_json::json;

/// The storage's own database, for looking behind the plugin.
async fn inspect(h: &Harness) -> tokio_postgres::Client {
    pg::server().client(h.pg_db.as_ref().unwrap()).await
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
    old.started_at = Some(at(1_000_000_000_000_000)); // 2001-09-09
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
    assert_eq!(h.storage.get_execution(old.id).await.unwrap(), old, "the moved row is intact");

    // A UUIDv7 id carries its time: the lookup by id reads one partition, not all of them.
    let plan: Vec<String> = db
        .query(
            &format!(
                "EXPLAIN SELECT * FROM executions WHERE id = '{0}' AND started_at >= to_timestamp({1}) - interval '1 day' \
                 AND started_at < to_timestamp({1}) + interval '1 day'",
                now.id,
                now.started_at.as_micros() / 1_000_000
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
    merge_json(&mut cfg, json!({ "postgresql": { "pool": { "minConnections": 1, "maxConnections": 1 } } }));
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
    merge_json(
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
    merge_json(
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
    let err = storage.get_execution(id_of("0190b3f2-7c1e-7a00-8000-000000000001")).await.unwrap_err();
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
    merge_json(&mut cfg, json!({ "postgresql": { "pool": { "acquireTimeout": 1000 } } }));
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
    merge_json(&mut cfg, json!({ "migrations": { "autoRun": false } }));
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
    assert!(!health.location.contains("hunter2"), "{}", health.location);
    assert_eq!(health.location, format!("parallax_pw@{}:{}/{db}", server.host, server.port));
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
    let cluster = pg::Cluster::start(pg::ClusterOptions { tls: Some((cert, key)), ..Default::default() });
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
    let connects = |r: Result<parallax_storage_host::Storage, Error>, case: &str| match r {
        Ok(s) => drop(s),
        Err(e) => panic!("{case}: expected to connect, got {e}"),
    };
    let refused = |r: Result<parallax_storage_host::Storage, Error>, case: &str, needle: &str| match r {
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

/// Every plugin log record of this test process, as text (message and fields).
fn captured_logs() -> &'static std::sync::Mutex<Vec<String>> {
    static LOGS: std::sync::OnceLock<std::sync::Mutex<Vec<String>>> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        parallax_storage_host::logs::set_hook(|l| {
            let fields: String = l.fields.iter().map(|(k, v)| format!(" {k}={v}")).collect();
            captured_logs().lock().unwrap().push(format!("{:?} {} {}{fields}", l.level, l.target, l.message));
        });
        std::sync::Mutex::new(Vec::new())
    })
}

/// Runs the `parallax` binary built next to this test with a config file and environment.
fn parallax_cli(dir: &std::path::Path, yaml: &str, env: &[(&str, &str)], args: &[&str]) -> String {
    std::fs::write(dir.join("parallax.config.yaml"), yaml).unwrap();
    let exe = target_dir().join(format!("parallax{}", std::env::consts::EXE_SUFFIX));
    assert!(exe.is_file(), "{} is missing: run `cargo build --workspace` first", exe.display());
    let mut cmd = std::process::Command::new(exe);
    cmd.args(args).arg("-vvv").arg("--plugin").arg(built_library("parallax_storage")).current_dir(dir);
    for var in ["PARALLAX_CONFIG", "PARALLAX_STORAGE_PLUGIN", "PARALLAX_STORAGE_TYPE", "RUST_LOG"] {
        cmd.env_remove(var);
    }
    for var in ["URL", "HOST", "PORT", "NAME", "USER", "PASSWORD"] {
        cmd.env_remove(format!("PARALLAX_DATABASE_{var}"));
    }
    cmd.envs(env.iter().copied());
    let out = cmd.output().expect("run parallax");
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A password given in any form (URL user info, `?password=`, a percent-encoded key, the `password` key,
/// `PARALLAX_DATABASE_URL`/`PASSWORD`, a key=value conninfo string) never appears in what the plugin and the
/// CLI say: open errors for an unreachable server and for a wrong password, `Health.location`, the plugin's
/// log records, and `parallax storage test-connection`'s stdout and stderr (at -vvv).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_output_ever_contains_a_password() {
    const RIGHT: &str = "Rght7pw-Qz81";
    const WRONG: &str = "Wrng3pw-Kx52";
    let logs = captured_logs();
    let cluster = pg::Cluster::start(pg::ClusterOptions { password_auth: true, ..Default::default() });
    let server = &cluster.server;
    server
        .admin()
        .await
        .batch_execute(&format!("CREATE ROLE secretive LOGIN SUPERUSER PASSWORD '{RIGHT}'"))
        .await
        .unwrap();
    let (host, live) = (server.host.as_str(), server.port);
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port() // closed again when `l` drops: nothing listens there
    };
    let db = "postgres";
    // Each form as a `storage.postgresql` section, for a password and a port.
    type Form = fn(&str, u16, &str, &str) -> serde_json::Value;
    let forms: &[(&str, Form)] = &[
        (
            "url user info",
            |pw, port, host, db| json!({ "url": format!("postgresql://secretive:{pw}@{host}:{port}/{db}") }),
        ),
        (
            "url ?password=",
            |pw, port, host, db| json!({ "url": format!("postgresql://secretive@{host}:{port}/{db}?password={pw}") }),
        ),
        (
            "url percent-encoded key",
            |pw, port, host, db| json!({ "url": format!("postgres://secretive@{host}:{port}/{db}?sslmode=disable&pass%77ord={pw}") }),
        ),
        (
            "url password with / and ?",
            |pw, port, host, db| json!({ "url": format!("postgresql://secretive:{pw}/?x@{host}:{port}/{db}") }),
        ),
        (
            "password key",
            |pw, port, host, db| json!({ "host": host, "port": port, "database": db, "username": "secretive", "password": pw }),
        ),
    ];
    let mut outputs: Vec<String> = Vec::new();
    for (name, form) in forms {
        let cfg =
            |pw: &str, port: u16| json!({ "type": "postgresql", "postgresql": form(pw, port, host, db) });
        let unreachable = plugin().open(&cfg(RIGHT, dead)).unwrap_err();
        assert_eq!(unreachable.kind, ErrorKind::Unavailable, "{name}: {unreachable}");
        assert!(
            unreachable.message.contains(&format!("secretive@127.0.0.1:{dead}/{db}")),
            "{name}: {unreachable}"
        );
        outputs.push(format!("{name}, nothing listening: {unreachable}"));
        // The fourth form's password really is `{pw}/?x`.
        let wrong = plugin().open(&cfg(WRONG, live)).unwrap_err();
        assert_eq!(wrong.kind, ErrorKind::Unavailable, "{name}: {wrong}");
        assert!(wrong.message.contains("password authentication failed"), "{name}: {wrong}");
        outputs.push(format!("{name}, wrong password: {wrong}"));
        if *name != "url password with / and ?" {
            let s = plugin().open_with(&cfg(RIGHT, live), OpenOptions { maintenance: true }).unwrap();
            let h = s.health().await.unwrap();
            assert_eq!(h.location, format!("secretive@127.0.0.1:{live}/{db}"), "{name}");
            outputs.push(format!("{name}, health: {h:?}"));
            s.shutdown().await.unwrap();
        }
    }
    // Not a URL: refused by the config check without quoting it.
    let conninfo = json!({ "type": "postgresql", "postgresql": {
        "url": format!("host={host} port={live} user=secretive password={RIGHT} dbname={db}") } });
    let err = plugin().open(&conninfo).unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidInput, "{err}");
    outputs.push(format!("conninfo: {err}"));

    // The CLI, with the URL from the environment, the file, or PARALLAX_DATABASE_PASSWORD.
    let dir = tempfile::tempdir().unwrap();
    let file = |url: &str| format!("storage:\n  type: postgresql\n  postgresql:\n    url: \"{url}\"\n");
    let query_url = |pw: &str, port: u16| format!("postgresql://secretive@{host}:{port}/{db}?password={pw}");
    let base = "storage:\n  type: postgresql\n";
    let keys = format!(
        "storage:\n  type: postgresql\n  postgresql:\n    host: {host}\n    port: {live}\n    database: {db}\n    \
         username: secretive\n"
    );
    let runs = [
        (
            "env url, ok",
            parallax_cli(
                dir.path(),
                base,
                &[("PARALLAX_DATABASE_URL", &query_url(RIGHT, live))],
                &["storage", "test-connection"],
            ),
            true,
        ),
        (
            "env url, wrong",
            parallax_cli(
                dir.path(),
                base,
                &[("PARALLAX_DATABASE_URL", &query_url(WRONG, live))],
                &["storage", "test-connection"],
            ),
            false,
        ),
        (
            "env url, dead",
            parallax_cli(
                dir.path(),
                base,
                &[("PARALLAX_DATABASE_URL", &query_url(RIGHT, dead))],
                &["storage", "test-connection"],
            ),
            false,
        ),
        (
            "file url, ok",
            parallax_cli(
                dir.path(),
                &file(&format!("postgresql://secretive:{RIGHT}@{host}:{live}/{db}")),
                &[],
                &["storage", "test-connection"],
            ),
            true,
        ),
        (
            "file url, json",
            parallax_cli(
                dir.path(),
                &file(&query_url(RIGHT, live)),
                &[],
                &["storage", "test-connection", "--output", "json"],
            ),
            true,
        ),
        (
            "env password, ok",
            parallax_cli(
                dir.path(),
                &keys,
                &[("PARALLAX_DATABASE_PASSWORD", RIGHT)],
                &["storage", "test-connection"],
            ),
            true,
        ),
        (
            "env password, wrong",
            parallax_cli(
                dir.path(),
                &keys,
                &[("PARALLAX_DATABASE_PASSWORD", WRONG)],
                &["storage", "test-connection"],
            ),
            false,
        ),
        (
            "env conninfo",
            parallax_cli(
                dir.path(),
                base,
                &[("PARALLAX_DATABASE_URL", &format!("host={host} password={RIGHT}"))],
                &["storage", "test-connection"],
            ),
            false,
        ),
        (
            "storage info",
            parallax_cli(dir.path(), &file(&query_url(RIGHT, live)), &[], &["storage", "info"]),
            true,
        ),
    ];
    for (name, out, ok) in runs {
        assert_eq!(out.starts_with("exit Some(0)"), ok, "{name}: {out}");
        if ok && name.ends_with("ok") {
            assert!(out.contains(&format!("secretive@127.0.0.1:{live}/{db}")), "{name}: {out}");
        }
        outputs.push(format!("CLI {name}: {out}"));
    }
    outputs.extend(logs.lock().unwrap().iter().cloned());
    assert!(outputs.iter().any(|o| o.contains("PostgreSQL storage opened")), "the log hook saw nothing");
    for out in &outputs {
        for pw in [RIGHT, WRONG, "Rght7pw", "Wrng3pw"] {
            assert!(!out.contains(pw), "a password leaked: {out}");
        }
    }
}

/// The server's connections from the plugin to the current database.
async fn plugin_connection_count(watcher: &tokio_postgres::Client) -> i64 {
    watcher
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND application_name = 'parallax-storage'",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// Counts the plugin's server connections from a separate connection while `work` runs; returns the most seen.
async fn peak_connections_during<F: std::future::Future>(db: &str, work: F) -> (i64, F::Output) {
    let watcher = pg::server().client(db).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poll = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut peak = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                peak = peak.max(plugin_connection_count(&watcher).await);
            }
            peak.max(plugin_connection_count(&watcher).await)
        })
    };
    let out = work.await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    (poll.await.unwrap(), out)
}

/// `pool.maxConnections` bounds every connection the plugin opens: 32 concurrent audit batches (raw `COPY`
/// clients) mixed with pooled queries, health and migration status never have more than 4 open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_audit_batches_stay_within_max_connections() {
    let server = pg::server();
    let db = server.fresh_database().await;
    let mut cfg = server.storage_config(&db);
    merge_json(
        &mut cfg,
        json!({ "postgresql": { "pool": { "minConnections": 1, "maxConnections": 4, "acquireTimeout": 60000 } } }),
    );
    let storage = plugin().open(&cfg).unwrap();
    storage.put_pattern(new_pattern("p", "1.0.0")).await.unwrap();
    let (peak, results) = peak_connections_during(&db, async {
        let mut calls = Vec::new();
        for i in 0..32 {
            let s = storage.clone();
            calls.push(tokio::spawn(async move {
                let batch: Vec<_> = (0..200).map(|j| audit(&format!("a{i}"), &format!("actor{j}"))).collect();
                s.append_audit(batch).await.map(|_| ())
            }));
            let s = storage.clone();
            calls.push(tokio::spawn(async move {
                match i % 3 {
                    0 => s.get_pattern("p", "1.0.0").await.map(|_| ()),
                    1 => s.health().await.map(|_| ()),
                    _ => s.migration_status().await.map(|_| ()),
                }
            }));
        }
        let mut results = Vec::new();
        for c in calls {
            results.push(c.await.unwrap());
        }
        results
    })
    .await;
    for r in results {
        r.unwrap();
    }
    let written = storage.query_audit(AuditQuery::default(), page(10, None)).await.unwrap();
    assert!(!written.items.is_empty());
    assert!(peak >= 1, "the watcher saw no plugin connection at all");
    assert!(peak <= 4, "{peak} server connections open at once, maxConnections is 4");
    storage.shutdown().await.unwrap();
    drop(storage);
    server.drop_database(&db).await;
}

/// `health()` and migration status use pooled connections: called again and again, they open no backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_migration_status_open_no_new_connection() {
    let server = pg::server();
    let db = server.fresh_database().await;
    let mut cfg = server.storage_config(&db);
    merge_json(&mut cfg, json!({ "postgresql": { "pool": { "minConnections": 1, "maxConnections": 1 } } }));
    let storage = plugin().open(&cfg).unwrap();
    storage.health().await.unwrap();
    let admin = server.client(&db).await;
    let before = plugin_backends(&admin).await;
    assert_eq!(before.len(), 1, "{before:?}");
    let (peak, ()) = peak_connections_during(&db, async {
        for _ in 0..20 {
            storage.health().await.unwrap();
            storage.migration_status().await.unwrap();
        }
    })
    .await;
    assert_eq!(peak, 1, "health or migration status opened a connection of its own");
    assert_eq!(plugin_backends(&admin).await, before, "the pooled connection was replaced");
    storage.shutdown().await.unwrap();
    drop(storage);
    server.drop_database(&db).await;
}

// ------------------------------------------------------------------ cleanup and retention (issue 12)

/// The runner lock's key (`src/postgres/retention.rs`, "plx-retn").
const RUNNER_LOCK: i64 = 0x706c_782d_7265_746e;

/// Inserts `n` executions of pattern `tag` spread evenly over `[from, to)` (UTC), with `events` events each.
async fn fill(
    db: &tokio_postgres::Client,
    tag: &str,
    status: &str,
    from: &str,
    to: &str,
    n: i64,
    events: i64,
) {
    db.batch_execute(&format!(
        "INSERT INTO executions (id, pattern_name, pattern_version, status, input, started_at, completed_at) \
         SELECT gen_random_uuid(), '{tag}', '1.0.0', '{status}', jsonb_build_object('n', g), t, \
                CASE WHEN '{status}' IN ('pending', 'running') THEN NULL ELSE t + interval '1 second' END \
         FROM generate_series(0, {n} - 1) g, \
              LATERAL (SELECT '{from}'::timestamptz + ('{to}'::timestamptz - '{from}'::timestamptz) * g / {n} AS t) s; \
         INSERT INTO execution_events (id, execution_id, seq, kind, payload, recorded_at, execution_started_at) \
         SELECT gen_random_uuid(), e.id, k, 'step_result', '{{}}', e.started_at + interval '1 second', e.started_at \
         FROM executions e, generate_series(1, {events}) k WHERE e.pattern_name = '{tag}';"
    ))
    .await
    .unwrap();
}

async fn count(db: &tokio_postgres::Client, sql: &str) -> i64 {
    db.query_one(sql, &[]).await.unwrap_or_else(|e| panic!("{sql}: {e}")).get(0)
}

async fn orphan_events(db: &tokio_postgres::Client) -> i64 {
    count(
        db,
        "SELECT count(*) FROM execution_events e WHERE NOT EXISTS (SELECT 1 FROM executions x WHERE x.id = e.execution_id)",
    )
    .await
}

async fn partitions(db: &tokio_postgres::Client) -> Vec<String> {
    partitions_of(db, "executions").await
}

async fn partitions_of(db: &tokio_postgres::Client, parent: &str) -> Vec<String> {
    db.query(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = $1::text::regclass ORDER BY 1",
        &[&parent],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

async fn table_exists(db: &tokio_postgres::Client, name: &str) -> bool {
    db.query_one("SELECT to_regclass($1) IS NOT NULL", &[&name]).await.unwrap().get(0)
}

/// An `--older-than` age whose cutoff is `at` (RFC 3339), in whole seconds.
async fn age_until(db: &tokio_postgres::Client, at: &str) -> String {
    let secs: i64 = count(db, &format!("SELECT extract(epoch FROM now() - '{at}'::timestamptz)::int8")).await;
    format!("{secs}s")
}

fn cleanup_params(older_than: &str) -> retention::CleanupParams {
    retention::CleanupParams {
        target: retention::CleanupTarget::Executions,
        older_than: Some(older_than.to_string()),
        max_count: None,
        dry_run: false,
        include_unfinished: false,
        confirm_all: false,
    }
}

/// Expired months go whole (DETACH + DROP: gone from pg_inherits and pg_class), with their events partition of
/// the same month; the boundary month, a month holding an unfinished execution and old rows in the default
/// partitions go in batches (also a row written late into a dropped month, with its events); a dry run first
/// reports exactly that and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_drops_expired_months_whole_and_deletes_the_rest_in_batches() {
    let h = postgres().await;
    let db = inspect(&h).await;
    for m in ["2024-01-15Z", "2024-02-15Z", "2024-03-15Z"] {
        db.batch_execute(&format!("SELECT parallax_create_execution_partition('{m}')")).await.unwrap();
    }
    // 2023-06 has no partition: its rows sit in executions_default.
    fill(&db, "stray", "failed", "2023-06-01Z", "2023-07-01Z", 10, 1).await;
    fill(&db, "jan", "completed", "2024-01-01Z", "2024-02-01Z", 3000, 2).await;
    fill(&db, "feb", "completed", "2024-02-01Z", "2024-03-01Z", 3000, 1).await;
    fill(&db, "feb_running", "running", "2024-02-10Z", "2024-02-11Z", 1, 3).await;
    fill(&db, "mar", "cancelled", "2024-03-01Z", "2024-04-01Z", 3000, 1).await;
    let live = h.storage.create_execution(new_execution("live", "1.0.0")).await.unwrap();
    // Half-way between two March rows (15 minutes apart), so the cutoff moving by the seconds the test takes
    // selects no other row.
    let cutoff: String = db
        .query_one(
            "SELECT to_char(date_trunc('second', (a + (b - a) / 2) AT TIME ZONE 'UTC'), 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') \
             FROM (SELECT started_at a, lead(started_at) OVER (ORDER BY started_at) b FROM executions \
             WHERE pattern_name = 'mar' ORDER BY started_at OFFSET 1500 LIMIT 1) s",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let cutoff = cutoff.as_str();
    let mar_before: i64 = count(
        &db,
        &format!("SELECT count(*) FROM executions WHERE pattern_name = 'mar' AND started_at < '{cutoff}'"),
    )
    .await;
    assert!(mar_before > 1000 && mar_before < 2000, "{mar_before}");
    let going = 10 + 3000 + 3000 + mar_before;
    let events_going = 10 + 6000 + 3000 + mar_before;
    let age = age_until(&db, cutoff).await;

    let mut p = cleanup_params(&age);
    p.dry_run = true;
    let counts =
        "SELECT (SELECT count(*) FROM executions) * 1000000 + (SELECT count(*) FROM execution_events)";
    let before = count(&db, counts).await;
    // Each monthly executions partition has its events partition (made together by the partition function).
    let ev_parts = partitions_of(&db, "execution_events").await;
    for p in ["execution_events_2024_01", "execution_events_2024_02", "execution_events_2024_03"] {
        assert!(ev_parts.contains(&p.to_string()), "{p} missing from {ev_parts:?}");
    }
    assert_eq!(count(&db, "SELECT count(*) FROM execution_events_2024_01").await, 6000);
    let dry = h.storage.cleanup(&p).await.unwrap();
    assert_eq!(count(&db, counts).await, before, "a dry run changed rows");
    assert!(table_exists(&db, "executions_2024_01").await);
    let (ex, ev) = (&dry.tables[0], &dry.tables[1]);
    assert_eq!((ex.table.as_str(), ex.rows as i64), ("executions", going), "{dry:#?}");
    assert_eq!(ex.partitions_dropped, vec!["executions_2024_01".to_string()], "{dry:#?}");
    assert_eq!(ex.rows_in_batches as i64, going - 3000, "{dry:#?}");
    assert!(ex.bytes_reclaimed.unwrap() > 0);
    assert_eq!(dry.unfinished_kept, 1, "the running execution of February is kept");
    assert_eq!((ev.table.as_str(), ev.rows as i64), ("execution_events", events_going), "{dry:#?}");
    assert_eq!(ev.partitions_dropped, vec!["execution_events_2024_01".to_string()], "{dry:#?}");
    assert_eq!(ev.rows_in_batches as i64, events_going - 6000, "{dry:#?}");
    let oldest: Vec<String> = db
        .query("SELECT id::text FROM executions ORDER BY started_at, id LIMIT 5", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ex.sample_ids, oldest, "samples are the oldest ids");
    assert!(ex.oldest.as_deref().unwrap().starts_with("2023-06-01"), "{ex:?}");
    assert!(ex.newest.as_deref().unwrap() < cutoff, "{ex:?}");

    let done = h.storage.cleanup(&cleanup_params(&age)).await.unwrap();
    let (ex, ev) = (&done.tables[0], &done.tables[1]);
    assert_eq!(ex.rows as i64, going, "{done:#?}");
    assert_eq!(ex.partitions_dropped, vec!["executions_2024_01".to_string()], "{done:#?}");
    assert_eq!(ex.rows_in_batches as i64, going - 3000);
    assert!(ex.batches >= 3, "1000-row batches: {done:#?}");
    assert_eq!(ev.rows as i64, events_going, "{done:#?}");
    assert_eq!(ev.partitions_dropped, vec!["execution_events_2024_01".to_string()], "{done:#?}");
    assert_eq!(ev.rows_in_batches as i64, events_going - 6000, "{done:#?}");
    assert!(ev.bytes_reclaimed.unwrap() > 0);
    assert_eq!(done.unfinished_kept, 1);

    // The events partition went with its month (detached and dropped, not deleted row by row).
    let ev_parts = partitions_of(&db, "execution_events").await;
    assert!(!ev_parts.contains(&"execution_events_2024_01".to_string()), "{ev_parts:?}");
    assert!(!table_exists(&db, "execution_events_2024_01").await, "dropped, not left detached");
    for p in ["execution_events_2024_02", "execution_events_2024_03", "execution_events_default"] {
        assert!(ev_parts.contains(&p.to_string()), "{p} missing from {ev_parts:?}");
    }

    // The month went as a table, not row by row; the others are still attached.
    let parts = partitions(&db).await;
    assert!(!parts.contains(&"executions_2024_01".to_string()), "{parts:?}");
    assert!(!table_exists(&db, "executions_2024_01").await, "dropped, not left detached");
    for p in ["executions_2024_02", "executions_2024_03", "executions_default"] {
        assert!(parts.contains(&p.to_string()), "{p} missing from {parts:?}");
    }
    assert_eq!(count(&db, "SELECT count(*) FROM executions_2024_02").await, 1, "only the running one stays");
    assert_eq!(
        count(&db, "SELECT count(*) FROM executions_default WHERE started_at < '2024-01-01Z'").await,
        0
    );
    assert_eq!(
        count(
            &db,
            &format!("SELECT count(*) FROM executions WHERE started_at < '{cutoff}' AND status <> 'running'")
        )
        .await,
        0
    );
    assert_eq!(count(&db, "SELECT count(*) FROM executions_2024_03").await, 3000 - mar_before);
    assert_eq!(orphan_events(&db).await, 0);
    assert_eq!(count(&db, "SELECT count(*) FROM execution_events").await, 3 + (3000 - mar_before));
    assert_eq!(h.storage.get_execution(live.id).await.unwrap().id, live.id);

    // The run is recorded with its rows.
    let status = h.storage.retention_status().await.unwrap();
    let run = &status.runs[0];
    assert_eq!((run.trigger.as_str(), run.status.as_str()), ("manual", "succeeded"), "{run:?}");
    assert_eq!(run.rows.get("executions").copied(), Some(going as u64));
    assert_eq!(run.rows.get("execution_events").copied(), Some(events_going as u64));
    assert_eq!(done.run_id.as_deref(), Some(run.id.as_str()));

    // A row written late into the dropped January lands in the default partitions, its events too; the next
    // run deletes them in batches. Then nothing is left to do.
    fill(&db, "late", "completed", "2024-01-10Z", "2024-01-11Z", 1, 2).await;
    let late = "SELECT (SELECT count(*) FROM executions_default WHERE started_at >= '2024-01-01Z') * 1000 + \
                (SELECT count(*) FROM execution_events_default WHERE execution_started_at >= '2024-01-01Z')";
    assert_eq!(count(&db, late).await, 1002, "the late row and its two events sit in the default partitions");
    let again = h.storage.cleanup(&cleanup_params(&age)).await.unwrap();
    assert_eq!((again.tables[0].rows, again.tables[1].rows), (1, 2), "{again:#?}");
    assert!(again.tables[0].partitions_dropped.is_empty(), "{again:#?}");
    assert_eq!(count(&db, late).await, 0);
    assert_eq!(orphan_events(&db).await, 0);
    let again = h.storage.cleanup(&cleanup_params(&age)).await.unwrap();
    assert_eq!((again.tables[0].rows, again.tables[1].rows), (0, 0), "{again:#?}");
    // With --include-unfinished the running one goes, February now being a whole month of selected rows.
    let mut p = cleanup_params(&age);
    p.include_unfinished = true;
    let all = h.storage.cleanup(&p).await.unwrap();
    assert_eq!(all.tables[0].partitions_dropped, vec!["executions_2024_02".to_string()], "{all:#?}");
    assert_eq!(all.tables[1].partitions_dropped, vec!["execution_events_2024_02".to_string()], "{all:#?}");
    assert_eq!((all.tables[0].rows, all.tables[1].rows), (1, 3), "{all:#?}");
    assert_eq!(orphan_events(&db).await, 0);
    h.finish().await;
}

/// A run killed between a month's DETACH and its DROP leaves both tables renamed aside (`parallax_detached_…`,
/// out of `executions` and `execution_events` together): the next run counts and drops them and reports them.
/// A table an operator detached under its own name is left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn months_left_detached_by_a_killed_run_are_dropped_by_the_next() {
    let h = postgres().await;
    let db = inspect(&h).await;
    for m in ["2024-01-15Z", "2024-02-15Z"] {
        db.batch_execute(&format!("SELECT parallax_create_execution_partition('{m}')")).await.unwrap();
    }
    fill(&db, "jan", "completed", "2024-01-01Z", "2024-02-01Z", 100, 2).await;
    fill(&db, "feb", "completed", "2024-02-01Z", "2024-03-01Z", 50, 1).await;
    // What the killed run had committed: January detached and set aside; February detached by an operator.
    db.batch_execute(
        "ALTER TABLE executions DETACH PARTITION executions_2024_01; \
         ALTER TABLE execution_events DETACH PARTITION execution_events_2024_01; \
         ALTER TABLE executions_2024_01 RENAME TO parallax_detached_executions_2024_01; \
         ALTER TABLE execution_events_2024_01 RENAME TO parallax_detached_execution_events_2024_01; \
         ALTER TABLE executions DETACH PARTITION executions_2024_02; \
         ALTER TABLE execution_events DETACH PARTITION execution_events_2024_02",
    )
    .await
    .unwrap();
    assert_eq!(orphan_events(&db).await, 0, "both months left the parents together");
    let done = h.storage.cleanup(&cleanup_params("30d")).await.unwrap();
    let (ex, ev) = (&done.tables[0], &done.tables[1]);
    assert_eq!((ex.rows, ev.rows), (100, 200), "{done:#?}");
    assert_eq!(ex.partitions_dropped, vec!["executions_2024_01".to_string()], "{done:#?}");
    assert_eq!(ev.partitions_dropped, vec!["execution_events_2024_01".to_string()], "{done:#?}");
    for t in ["parallax_detached_executions_2024_01", "parallax_detached_execution_events_2024_01"] {
        assert!(!table_exists(&db, t).await, "{t} left behind");
    }
    assert_eq!(
        count(&db, "SELECT count(*) FROM executions_2024_02").await,
        50,
        "the operator's table is kept"
    );
    assert_eq!(count(&db, "SELECT count(*) FROM execution_events_2024_02").await, 50);
    let again = h.storage.cleanup(&cleanup_params("30d")).await.unwrap();
    assert_eq!((again.tables[0].rows, again.tables[1].rows), (0, 0), "{again:#?}");
    h.finish().await;
}

/// `--max-count` keeps the newest N (any status) and deletes older final executions in batches; audit entries
/// go by age in batches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_count_and_audit_cleanup_delete_in_batches() {
    let h = postgres().await;
    let db = inspect(&h).await;
    fill(&db, "old", "completed", "2023-06-01Z", "2023-06-02Z", 4500, 1).await;
    let mut p = cleanup_params("3650d");
    p.older_than = None;
    p.max_count = Some(1000);
    let r = h.storage.cleanup(&p).await.unwrap();
    assert_eq!(r.tables[0].rows, 3500, "{r:#?}");
    assert!(r.tables[0].partitions_dropped.is_empty(), "the default partition is never dropped");
    assert_eq!(r.tables[0].batches, 4, "3500 rows in batches of 1000");
    assert_eq!(count(&db, "SELECT count(*) FROM executions").await, 1000);
    assert_eq!(count(&db, "SELECT count(*) FROM execution_events").await, 1000);
    assert_eq!(orphan_events(&db).await, 0);

    db.batch_execute(
        "INSERT INTO audit_logs (id, timestamp, action) SELECT gen_random_uuid(), \
         '2020-01-01Z'::timestamptz + g * interval '1 minute', 'old' FROM generate_series(1, 4100) g",
    )
    .await
    .unwrap();
    h.storage.append_audit(vec![audit("new", "me")]).await.unwrap();
    let a = h
        .storage
        .cleanup(&retention::CleanupParams {
            target: retention::CleanupTarget::AuditLogs,
            older_than: Some("90d".into()),
            max_count: None,
            dry_run: false,
            include_unfinished: false,
            confirm_all: false,
        })
        .await
        .unwrap();
    assert_eq!(
        (a.tables[0].table.as_str(), a.tables[0].rows, a.tables[0].batches),
        ("audit_logs", 4100, 5),
        "{a:#?}"
    );
    assert_eq!(count(&db, "SELECT count(*) FROM audit_logs").await, 1);
    h.finish().await;
}

/// Writers keep going while a cleanup drops months and deletes batches, even while another session holds a
/// lock that makes the DETACH wait: the DETACH gives up after its lock_timeout and retries, instead of
/// queueing every writer behind it until that session ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_keep_going_during_a_cleanup() {
    let h = postgres().await;
    let db = inspect(&h).await;
    for m in ["2024-01-15Z", "2024-02-15Z", "2024-03-15Z"] {
        db.batch_execute(&format!("SELECT parallax_create_execution_partition('{m}')")).await.unwrap();
    }
    for (tag, from, to) in [("a", "2024-01-01Z", "2024-02-01Z"), ("b", "2024-02-01Z", "2024-03-01Z")] {
        fill(&db, tag, "completed", from, to, 20_000, 0).await;
    }
    // Events for a few executions.
    fill(&db, "c", "completed", "2024-03-01Z", "2024-04-01Z", 20_000, 0).await;
    db.batch_execute(
        "INSERT INTO execution_events (id, execution_id, seq, kind, payload, recorded_at, execution_started_at) \
         SELECT gen_random_uuid(), id, 1, 'step_result', '{}', started_at, started_at FROM executions \
         WHERE random() < 0.05",
    )
    .await
    .unwrap();
    // Another session reads `executions` in a long transaction: DETACH must wait for it.
    let blocker = pg::server().client(h.pg_db.as_ref().unwrap()).await;
    blocker.batch_execute("BEGIN; LOCK TABLE executions IN ACCESS SHARE MODE").await.unwrap();
    let hold = Duration::from_secs(4);

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4 {
        let (s, stop) = (h.storage.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let (mut done, mut slowest) = (0u32, Duration::ZERO);
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let t = Instant::now();
                let e = s.create_execution(new_execution(&format!("w{w}"), "1.0.0")).await.unwrap();
                s.append_event(e.id, NewEvent::new(EventKind::StepResult, doc("{}"))).await.unwrap();
                slowest = slowest.max(t.elapsed());
                done += 1;
            }
            (done, slowest)
        }));
    }
    let released = tokio::spawn(async move {
        tokio::time::sleep(hold).await;
        blocker.batch_execute("COMMIT").await.unwrap();
    });
    let started = Instant::now();
    let mut p = cleanup_params("30d");
    p.confirm_all = false;
    let r = h.storage.cleanup(&p).await.unwrap();
    let took = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    released.await.unwrap();
    let mut total = 0;
    for w in writers {
        let (done, slowest) = w.await.unwrap();
        total += done;
        // Generous: the bound is lock_timeout (150 ms) plus the short DDL transaction, far below the 4 s the
        // blocking session holds its lock.
        assert!(slowest < Duration::from_millis(2500), "a writer waited {slowest:?} during the cleanup");
    }
    assert!(took >= hold, "the DETACH could not have succeeded while the lock was held ({took:?})");
    assert!(total > 0, "no writer call completed during a {took:?} cleanup");
    assert_eq!(r.tables[0].rows, 60_000, "{r:#?}");
    assert_eq!(r.tables[0].partitions_dropped.len(), 3, "{r:#?}");
    assert_eq!(orphan_events(&db).await, 0);
    assert_eq!(count(&db, "SELECT count(*) FROM executions WHERE started_at < '2025-01-01Z'").await, 0);
    h.finish().await;
}

fn retention_config(db: &str) -> serde_json::Value {
    let mut cfg = pg::server().storage_config(db);
    merge_json(
        &mut cfg,
        json!({ "retention": { "executions": { "enabled": true, "maxAge": "30d" }, "cleanupSchedule": "0 3 * * *",
                           "runSchedule": false } }),
    );
    cfg
}

/// The runner lock: while another session holds it, a retention run skips and a manual cleanup is refused;
/// once that session lets go a run goes ahead, and its own lock is released after the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_runner_skips_while_the_lock_is_held() {
    let server = pg::server();
    let name = server.fresh_database().await;
    let storage = plugin().open(&retention_config(&name)).unwrap();
    let db = server.client(&name).await;
    fill(&db, "old", "completed", "2023-06-01Z", "2023-06-02Z", 10, 1).await;
    let other = server.client(&name).await;
    assert!(other
        .query_one("SELECT pg_try_advisory_lock($1)", &[&RUNNER_LOCK])
        .await
        .unwrap()
        .get::<_, bool>(0));

    let r =
        storage.retention_run(&retention::RetentionRunParams { tick: None, dry_run: false }).await.unwrap();
    assert!(!r.ran, "{r:?}");
    assert!(r.skipped.as_deref().unwrap().contains("runner lock"), "{r:?}");
    let mut p = cleanup_params("30d");
    p.confirm_all = true;
    assert_kind(storage.cleanup(&p).await, ErrorKind::Conflict, "runner lock");
    assert_eq!(count(&db, "SELECT count(*) FROM executions").await, 10, "nothing removed while locked");
    assert_eq!(count(&db, "SELECT count(*) FROM retention_runs").await, 0, "a skipped run is not recorded");

    other.query_one("SELECT pg_advisory_unlock($1)", &[&RUNNER_LOCK]).await.unwrap();
    let r =
        storage.retention_run(&retention::RetentionRunParams { tick: None, dry_run: false }).await.unwrap();
    assert!(r.ran, "{r:?}");
    assert_eq!(r.run.as_ref().unwrap().rows.get("executions"), Some(&10));
    assert_eq!(count(&db, "SELECT count(*) FROM executions").await, 0);
    // Released after the run (its session unlocks, then closes): another session can take it.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if other
            .query_one("SELECT pg_try_advisory_lock($1)", &[&RUNNER_LOCK])
            .await
            .unwrap()
            .get::<_, bool>(0)
        {
            break;
        }
        assert!(Instant::now() < deadline, "the runner lock is still held 5 s after the run");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A second run of the same tick is skipped: one run per tick.
    other.query_one("SELECT pg_advisory_unlock($1)", &[&RUNNER_LOCK]).await.unwrap();
    let tick = retention::RetentionRunParams { tick: Some("2026-01-01T03:00:00Z".into()), dry_run: false };
    assert!(storage.retention_run(&tick).await.unwrap().ran);
    let again = storage.retention_run(&tick).await.unwrap();
    assert!(!again.ran && again.skipped.as_deref().unwrap().contains("already has a run"), "{again:?}");
    storage.shutdown().await.unwrap();
    drop(storage);
    server.drop_database(&name).await;
}

/// The built `parallax` binary with the plugin, for process tests.
fn parallax_command(config: &std::path::Path) -> std::process::Command {
    let exe = target_dir().join(format!("parallax{}", std::env::consts::EXE_SUFFIX));
    assert!(exe.is_file(), "{} is missing: run `cargo build --workspace` first", exe.display());
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("--plugin").arg(built_library("parallax_storage")).arg("--config").arg(config);
    for var in ["PARALLAX_CONFIG", "PARALLAX_STORAGE_PLUGIN", "PARALLAX_STORAGE_TYPE", "RUST_LOG"] {
        cmd.env_remove(var);
    }
    cmd.stdin(std::process::Stdio::null());
    cmd
}

fn write_config(dir: &std::path::Path, storage: serde_json::Value) -> std::path::PathBuf {
    let path = dir.join("parallax.config.yaml");
    std::fs::write(&path, json!({ "storage": storage }).to_string()).unwrap();
    path
}

struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Three processes on one database with a schedule firing every minute: each tick (the catch-up at start,
/// then the next minute) has exactly one run, by one of them; the others skip.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_make_one_run_per_tick() {
    let server = pg::server();
    let name = server.fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = retention_config(&name);
    cfg["retention"]["cleanupSchedule"] = json!("* * * * *");
    cfg["retention"]["runSchedule"] = json!(true);
    let config = write_config(dir.path(), cfg);
    // Migrate first (serve opens with autoRun like any host).
    drop(plugin().open(&retention_config(&name)).unwrap());
    let db = server.client(&name).await;
    fill(&db, "old", "completed", "2023-06-01Z", "2023-06-02Z", 3000, 1).await;

    // Concurrent `retention run --tick T` (the test-only way to fire a tick now): exactly one runs it.
    let tick = "2026-01-01T03:00:00Z";
    let outs: Vec<std::process::Output> = (0..3)
        .map(|_| {
            parallax_command(&config)
                .args(["--output", "json", "storage", "retention", "run", "--tick", tick])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let ran = outs
        .iter()
        .filter(|o| {
            let text = String::from_utf8_lossy(&o.stdout);
            assert!(o.status.success(), "{text}\n{}", String::from_utf8_lossy(&o.stderr));
            let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
            v["ran"] == json!(true)
        })
        .count();
    assert_eq!(ran, 1, "one of three concurrent runs of a tick runs it");
    assert_eq!(count(&db, &format!("SELECT count(*) FROM retention_runs WHERE tick = '{tick}'")).await, 1);

    // Three `retention serve` processes.
    let started: String = db.query_one("SELECT now()::text", &[]).await.unwrap().get(0);
    let procs: Vec<Killed> = (0..3)
        .map(|_| {
            Killed(
                parallax_command(&config)
                    .args(["storage", "retention", "serve"])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .unwrap(),
            )
        })
        .collect();
    // The catch-up run of the minute before they started, then the next minute's run.
    let deadline = Instant::now() + Duration::from_secs(150);
    let scheduled_sql = format!(
        "SELECT count(*) FROM retention_runs WHERE trigger = 'scheduled' AND tick > '{started}'::timestamptz"
    );
    while count(&db, &scheduled_sql).await < 1 {
        assert!(Instant::now() < deadline, "no scheduled run within 150 s");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await; // let a late duplicate show up if there were one
    drop(procs);
    let rows = db
        .query(
            "SELECT tick::text, count(*), bool_and(status = 'succeeded') FROM retention_runs \
             WHERE tick IS NOT NULL AND tick <> $1::text::timestamptz GROUP BY tick ORDER BY tick",
            &[&tick],
        )
        .await
        .unwrap();
    assert!(rows.len() >= 2, "expected a catch-up and a scheduled tick: {rows:?}");
    for r in &rows {
        assert_eq!(r.get::<_, i64>(1), 1, "tick {} has {} runs", r.get::<_, String>(0), r.get::<_, i64>(1));
        assert!(r.get::<_, bool>(2), "tick {} failed", r.get::<_, String>(0));
    }
    // Consecutive minutes: no tick in between was missed or run twice.
    let ticks: i64 =
        count(&db, "SELECT count(DISTINCT tick) FROM retention_runs WHERE trigger <> 'manual'").await;
    let span: i64 = count(
        &db,
        &format!(
            "SELECT (extract(epoch FROM max(tick) - min(tick)) / 60)::int8 + 1 FROM retention_runs \
             WHERE tick <> '{tick}'"
        ),
    )
    .await;
    assert_eq!(ticks - 1, span, "one run for each minute from the catch-up on");
    assert_eq!(count(&db, "SELECT count(*) FROM executions").await, 0);
    server.drop_database(&name).await;
}

/// kill -9 at random moments of a large cleanup: after each, no event is without its execution; a final run
/// finishes the job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_cleanup_leaves_no_orphans_and_the_next_run_finishes() {
    let server = pg::server();
    let name = server.fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), server.storage_config(&name));
    drop(plugin().open(&server.storage_config(&name)).unwrap());
    let db = server.client(&name).await;
    for m in ["2024-01-15Z", "2024-02-15Z"] {
        db.batch_execute(&format!("SELECT parallax_create_execution_partition('{m}')")).await.unwrap();
    }
    fill(&db, "jan", "completed", "2024-01-01Z", "2024-02-01Z", 30_000, 2).await;
    fill(&db, "feb", "failed", "2024-02-01Z", "2024-03-01Z", 20_000, 1).await;
    fill(&db, "stray", "completed", "2023-01-01Z", "2023-12-01Z", 30_000, 2).await;
    fill(&db, "keep", "running", "2023-05-01Z", "2023-05-02Z", 5, 1).await;
    let old_final =
        "SELECT count(*) FROM executions WHERE started_at < now() - interval '1 day' AND status <> 'running'";
    let mut seed =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    let mut killed_mid_way = 0;
    for round in 0..6 {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        // Kill at a random moment after the run has started (its record exists): on a fast machine the whole
        // cleanup takes a fraction of a second, so a delay counted from the spawn often lands after the end.
        let wait = Duration::from_millis((seed >> 33) % if round == 0 { 40 } else { 400 });
        let runs_before = count(&db, "SELECT count(*) FROM retention_runs").await;
        let mut child = parallax_command(&config)
            .args(["storage", "cleanup", "executions", "--older-than", "1d", "--yes"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let started = std::time::Instant::now();
        while count(&db, "SELECT count(*) FROM retention_runs").await == runs_before
            && child.try_wait().unwrap().is_none()
            && started.elapsed() < Duration::from_secs(30)
        {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        tokio::time::sleep(wait).await;
        let finished = child.try_wait().unwrap().is_some();
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        if !finished {
            killed_mid_way += 1;
        }
        assert_eq!(
            orphan_events(&db).await,
            0,
            "round {round}: events left without their execution (killed after {wait:?})"
        );
        let left = count(&db, old_final).await;
        if left == 0 {
            break;
        }
    }
    assert!(killed_mid_way >= 1, "no cleanup was killed mid-way");
    let out = parallax_command(&config)
        .args(["storage", "cleanup", "executions", "--older-than", "1d", "--yes"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(count(&db, old_final).await, 0, "the final run finished the job");
    assert_eq!(orphan_events(&db).await, 0);
    assert_eq!(count(&db, "SELECT count(*) FROM executions").await, 5, "unfinished executions are kept");
    assert_eq!(count(&db, "SELECT count(*) FROM execution_events").await, 5);
    let statuses: Vec<String> =
        db.query("SELECT status FROM retention_runs", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    assert!(statuses.iter().any(|s| s == "succeeded"), "{statuses:?}");
    assert!(!statuses.iter().any(|s| s == "failed"), "{statuses:?}");
    server.drop_database(&name).await;
}

// ------------------------------------------------------------------ metrics (issue 14)

const ACTIVE: &str = "parallax_storage_pool_connections_active";
const IDLE: &str = "parallax_storage_pool_connections_idle";
const WAITING: &str = "parallax_storage_pool_waiting_requests";
const ACQUIRE_TIMEOUTS: &str = "parallax_storage_pool_acquire_timeouts_total";
const SECS_10: Duration = Duration::from_secs(10);

/// The value of sample `name` with exactly the label set `labels` (any order) in a Prometheus text exposition.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric, found) = match series.split_once('{') {
            Some((metric, rest)) => {
                let inner = rest.strip_suffix('}')?;
                let mut found: Vec<(&str, &str)> = inner
                    .split(',')
                    .filter(|p| !p.is_empty())
                    .map(|p| {
                        let (k, v) = p.split_once('=').unwrap_or((p, ""));
                        (k, v.trim_matches('"'))
                    })
                    .collect();
                found.sort();
                (metric, found)
            }
            None => (series, Vec::new()),
        };
        let mut want = labels.to_vec();
        want.sort();
        (metric == name && found == want).then(|| value.parse().ok()).flatten()
    })
}

/// Scrapes `storage` every 50 ms until `ok` holds for the exposition; fails after `within` with the last one.
async fn metrics_until(storage: &Storage, what: &str, within: Duration, ok: impl Fn(&str) -> bool) -> String {
    let started = Instant::now();
    loop {
        let text = storage.metrics_text().await.unwrap_or_else(|e| panic!("metrics: {e}"));
        if ok(&text) {
            return text;
        }
        assert!(started.elapsed() < within, "{what}: not within {within:?}; last scrape:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_a_held_pool_and_its_waiting_callers() {
    let server = pg::server();
    let db = server.fresh_database().await;
    let mut cfg = server.storage_config(&db);
    merge_json(
        &mut cfg,
        json!({ "postgresql": { "pool": { "minConnections": 0, "maxConnections": 2, "acquireTimeout": 10_000 } } }),
    );
    let storage = plugin().open(&cfg).unwrap();
    storage.put_pattern(new_pattern("p", "1.0.0")).await.unwrap();
    let writes_of = |text: &str| {
        sample(
            text,
            "parallax_storage_operation_duration_seconds_count",
            &[("operation", "write"), ("table", "executions")],
        )
        .unwrap_or(0.0)
    };
    // The first scrape (it may wait for the first table refresh) before the pool is held.
    let first = storage.metrics_text().await.unwrap();
    assert_eq!(sample(&first, WAITING, &[]), Some(0.0), "{first}");
    assert_eq!(sample(&first, ACQUIRE_TIMEOUTS, &[]), Some(0.0), "{first}");
    let writes_before = writes_of(&first);

    // Both connections stuck inside writes, six more writes waiting for one.
    let mut blocker = server.client(&db).await;
    let tx = blocker.transaction().await.unwrap();
    tx.batch_execute("LOCK TABLE executions IN ACCESS EXCLUSIVE MODE").await.unwrap();
    let writes: Vec<_> = (0..8)
        .map(|_| {
            let s = storage.clone();
            tokio::spawn(async move { s.create_execution(new_execution("p", "1.0.0")).await })
        })
        .collect();
    // Scrapes go on while the pool is held (they never wait for it).
    let held = metrics_until(&storage, "2 active connections and callers waiting", SECS_10, |t| {
        sample(t, ACTIVE, &[]) == Some(2.0) && sample(t, WAITING, &[]).is_some_and(|w| w >= 1.0)
    })
    .await;
    assert_eq!(sample(&held, IDLE, &[]), Some(0.0), "{held}");
    assert!(sample(&held, WAITING, &[]).unwrap() <= 6.0, "{held}");

    tx.rollback().await.unwrap();
    for w in writes {
        w.await.unwrap().unwrap();
    }
    let after =
        metrics_until(&storage, "no caller waiting", SECS_10, |t| sample(t, WAITING, &[]) == Some(0.0)).await;
    assert_eq!(writes_of(&after), writes_before + 8.0, "{after}");
    assert_eq!(sample(&after, ACQUIRE_TIMEOUTS, &[]), Some(0.0), "no caller gave up:\n{after}");
    storage.shutdown().await.unwrap();
    server.drop_database(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_pool_acquire_that_timed_out() {
    let server = pg::server();
    let db = server.fresh_database().await;
    let mut cfg = server.storage_config(&db);
    merge_json(
        &mut cfg,
        json!({ "postgresql": { "pool": { "minConnections": 0, "maxConnections": 1, "acquireTimeout": 300 } } }),
    );
    let storage = plugin().open(&cfg).unwrap();
    storage.put_pattern(new_pattern("warm", "1.0.0")).await.unwrap();
    let first = storage.metrics_text().await.unwrap();
    assert_eq!(sample(&first, ACQUIRE_TIMEOUTS, &[]), Some(0.0), "{first}");

    let mut blocker = server.client(&db).await;
    let tx = blocker.transaction().await.unwrap();
    tx.batch_execute("LOCK TABLE patterns IN ACCESS EXCLUSIVE MODE").await.unwrap();
    let stuck = {
        let s = storage.clone();
        tokio::spawn(async move { s.put_pattern(new_pattern("stuck", "1.0.0")).await })
    };
    metrics_until(&storage, "the only connection busy", SECS_10, |t| sample(t, ACTIVE, &[]) == Some(1.0))
        .await;
    let err = storage.get_execution(id_of("0190b3f2-7c1e-7a00-8000-000000000001")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Timeout, "{err}");
    let text = storage.metrics_text().await.unwrap();
    // Exactly one: the refresher (statsInterval 30 s) took no connection meanwhile, and a wait is counted once.
    assert_eq!(sample(&text, ACQUIRE_TIMEOUTS, &[]), Some(1.0), "{text}");
    assert_eq!(
        sample(
            &text,
            "parallax_storage_errors_total",
            &[("operation", "read"), ("table", "executions"), ("kind", "timeout")]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(sample(&text, WAITING, &[]), Some(0.0), "the caller stopped waiting when it gave up:\n{text}");

    tx.rollback().await.unwrap();
    stuck.await.unwrap().unwrap();
    storage.shutdown().await.unwrap();
    server.drop_database(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_table_rows_follow_writes_without_disk_space_or_password() {
    let server = pg::server();
    let db = server.fresh_database().await;
    // A password in the URL (the test server may not ask for one): it must never reach the exposition.
    let password = server.password.clone().unwrap_or_else(|| "Mtr9pw-Zq71".to_string());
    let url = format!("postgresql://{}:{password}@{}:{}/{db}", server.user, server.host, server.port);
    let cfg =
        json!({ "type": "postgresql", "postgresql": { "url": url }, "metrics": { "statsInterval": 1000 } });
    let storage = plugin().open(&cfg).unwrap();

    let rows = |text: &str, table: &str| sample(text, "parallax_storage_table_rows", &[("table", table)]);
    let first = metrics_until(&storage, "table rows after the first refresh", SECS_10, |t| {
        rows(t, "executions").is_some()
    })
    .await;
    for table in ["patterns", "executions", "execution_events", "audit_logs"] {
        assert_eq!(rows(&first, table), Some(0.0), "{table}:\n{first}");
    }

    storage.put_pattern(new_pattern("p", "1.0.0")).await.unwrap();
    storage.put_pattern(new_pattern("p", "1.0.1")).await.unwrap();
    for _ in 0..5 {
        let e = storage.create_execution(new_execution("p", "1.0.0")).await.unwrap();
        for step in 0..3 {
            storage
                .append_event(e.id, NewEvent::new(EventKind::StepResult, json!({ "step": step })))
                .await
                .unwrap();
        }
    }
    storage
        .append_audit(vec![audit("a", "me"), audit("b", "me"), audit("c", "me"), audit("d", "me")])
        .await
        .unwrap();

    let want = [("patterns", 2.0), ("executions", 5.0), ("execution_events", 15.0), ("audit_logs", 4.0)];
    // A session's row counts reach the statistics once it flushes them: at most once a second, else after 10 s
    // idle (PostgreSQL 15), then the next refresh (`statsInterval`: 1 s here).
    let text = metrics_until(&storage, "table rows after the writes", Duration::from_secs(30), |t| {
        want.iter().all(|&(table, n)| rows(t, table) == Some(n))
    })
    .await;
    for (table, _) in want {
        let bytes = sample(&text, "parallax_storage_table_size_bytes", &[("table", table)]);
        assert!(bytes.is_some_and(|b| b > 0.0), "{table}: {bytes:?}\n{text}");
    }
    // A client cannot see the server's disk: no number rather than a wrong one.
    assert!(!text.contains("parallax_storage_disk_free_bytes"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("parallax_storage_build_info{") && l.contains("backend=\"postgresql\"")),
        "{text}"
    );
    assert!(!text.contains(&password), "the password reached the exposition:\n{text}");
    storage.shutdown().await.unwrap();
    server.drop_database(&db).await;
}

// ---- The harness's streaming replica ----
//
// Proof that `pg::replica()` is a real hot standby of the test server: it follows the primary, pausing replay
// really holds rows back, and a crashed standby comes back and catches up.

async fn in_recovery(client: &tokio_postgres::Client) -> bool {
    client.query_one("SELECT pg_is_in_recovery()", &[]).await.unwrap().get(0)
}

async fn ids(client: &tokio_postgres::Client) -> Vec<i32> {
    client.query("SELECT id FROM t ORDER BY id", &[]).await.unwrap().iter().map(|r| r.get(0)).collect()
}

/// A database with table `t` holding row 1, on the primary and (caught up) on the standby.
async fn replicated_table(replica: &pg::Replica) -> (String, tokio_postgres::Client) {
    let primary = pg::server();
    let db = primary.fresh_database().await;
    let p = primary.client(&db).await;
    p.batch_execute("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'one')")
        .await
        .unwrap();
    replica.wait_caught_up(SECS_10).await;
    (db, p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_harness_replica_streams_the_primarys_writes() {
    let replica = pg::replica();
    let _turn = replica.shared().await;
    let primary = pg::server();
    let (db, p) = replicated_table(replica).await;
    let r = replica.server().client(&db).await;
    let v: String = r.query_one("SELECT v FROM t WHERE id = 1", &[]).await.unwrap().get(0);
    assert_eq!(v, "one");
    assert!(in_recovery(&r).await, "the replica is not in recovery");
    assert!(!in_recovery(&p).await, "the primary is in recovery");
    assert_ne!(replica.server().port, primary.port);
    let err = r.batch_execute("INSERT INTO t VALUES (2, 'two')").await.unwrap_err();
    assert_eq!(err.code(), Some(&tokio_postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION), "{err}");

    p.batch_execute("UPDATE t SET v = 'uno' WHERE id = 1").await.unwrap();
    replica.wait_caught_up(SECS_10).await;
    let v: String = r.query_one("SELECT v FROM t WHERE id = 1", &[]).await.unwrap().get(0);
    assert_eq!(v, "uno");
    assert!(replica.replay_lsn().await <= replica.primary_lsn().await);
    drop(r);
    primary.drop_database(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_harness_replica_with_replay_paused_shows_no_new_rows_until_resumed() {
    let replica = pg::replica();
    let _turn = replica.exclusive().await;
    let (db, p) = replicated_table(replica).await;
    let r = replica.server().client(&db).await;

    replica.pause_replay().await;
    p.batch_execute("INSERT INTO t VALUES (2, 'two')").await.unwrap();
    // The row's WAL has reached the standby, which still does not show it: held back by the pause, not by
    // the network or the WAL writer.
    let mark = replica.primary_mark().await;
    replica.wait_received(mark, SECS_10).await;
    let replayed = replica.replay_lsn().await;
    assert!(replayed < mark, "replayed {replayed} while paused, past {mark}");
    assert_eq!(ids(&r).await, [1], "a row written after the pause is visible on the standby");
    assert_eq!(ids(&p).await, [1, 2]);

    replica.resume_replay().await;
    replica.wait_caught_up(SECS_10).await;
    assert_eq!(ids(&r).await, [1, 2]);
    drop(r);
    pg::server().drop_database(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_harness_replica_stopped_immediately_refuses_connections_and_catches_up_after_restart() {
    let replica = pg::replica();
    let _turn = replica.exclusive().await;
    let (db, p) = replicated_table(replica).await;

    replica.stop_immediate();
    let Err(err) = replica.server().try_client(&db).await else {
        panic!("the stopped standby accepted a connection");
    };
    let io =
        std::error::Error::source(&err).and_then(|s| s.downcast_ref::<std::io::Error>()).map(|e| e.kind());
    assert_eq!(io, Some(std::io::ErrorKind::ConnectionRefused), "{err}");
    // Written while the standby is down: it must fetch this from the primary after its restart.
    p.batch_execute("INSERT INTO t VALUES (2, 'two')").await.unwrap();

    replica.start().await;
    replica.wait_caught_up(SECS_10).await;
    let r = replica.server().client(&db).await;
    assert!(in_recovery(&r).await, "the restarted standby is not in recovery");
    assert_eq!(ids(&r).await, [1, 2]);
    drop(r);
    pg::server().drop_database(&db).await;
}

/// Tests share one replica: a test that fails while holding it paused and stopped must not fail the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_harness_replica_left_paused_and_stopped_by_a_failed_test_works_for_the_next() {
    let replica = pg::replica();
    let failed = tokio::spawn(async move {
        let _turn = replica.exclusive().await;
        replica.pause_replay().await;
        replica.stop_immediate();
        panic!("a test failing while the replica is paused and stopped");
    })
    .await;
    assert!(failed.is_err_and(|e| e.is_panic()));

    let _turn = replica.shared().await;
    let (db, p) = replicated_table(replica).await;
    p.batch_execute("INSERT INTO t VALUES (2, 'two')").await.unwrap();
    replica.wait_caught_up(SECS_10).await;
    let r = replica.server().client(&db).await;
    assert_eq!(ids(&r).await, [1, 2]);
    drop(r);
    pg::server().drop_database(&db).await;
}

// ------------------------------------------------------------------ read replicas (issue 15)
//
// Storage objects with a streaming standby configured as a read replica. Which host served a read comes from
// the object's own `parallax_storage_reads_total{host,role}` counters (deltas around the reads), fallbacks from
// `parallax_storage_replica_fallbacks_total{reason}`. Tests that pause or stop the shared standby hold its
// exclusive turn; the harness undoes a pause or stop left behind by a test that failed halfway.

const READS: &str = "parallax_storage_reads_total";
const FALLBACKS: &str = "parallax_storage_replica_fallbacks_total";
const REPLICA_UP: &str = "parallax_storage_replica_up";
const REPLICA_LAG: &str = "parallax_storage_replica_lag_seconds";
const REPLICA_MAX_LAG: &str = "parallax_storage_replica_max_lag_seconds";

/// `host:port`, as the metrics' `host` label and the hosts report name a server.
fn address(s: &pg::Server) -> String {
    format!("{}:{}", s.host, s.port)
}

/// The config of database `db` on `primary` with `replica` as its read replica, `readPreference` `preference`
/// and `extra` merged in (e.g. `maxReplicaLag`).
fn replica_config(
    primary: &pg::Server,
    replica: &pg::Server,
    db: &str,
    preference: &str,
    extra: serde_json::Value,
) -> serde_json::Value {
    let mut config = primary.storage_config(db);
    merge_json(&mut config, replica.as_replica(preference));
    merge_json(&mut config, extra);
    config
}

/// One storage object's routing counters at one instant.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Routed {
    /// Reads served by the primary.
    primary: f64,
    /// Reads served by the replica.
    replica: f64,
    /// Reads sent to the primary because no replica was up.
    unavailable: f64,
    /// Reads sent to the primary because no replica had replayed the object's own last write.
    own_write: f64,
    /// Reads that failed on a replica and were retried on the primary.
    error: f64,
}

impl std::ops::Sub for Routed {
    type Output = Routed;
    fn sub(self, b: Routed) -> Routed {
        Routed {
            primary: self.primary - b.primary,
            replica: self.replica - b.replica,
            unavailable: self.unavailable - b.unavailable,
            own_write: self.own_write - b.own_write,
            error: self.error - b.error,
        }
    }
}

/// The primary and the replica of a storage object, to read its routing counters by host.
struct Hosts {
    primary: pg::Server,
    replica: pg::Server,
}

impl Hosts {
    fn shared() -> Hosts {
        Hosts { primary: pg::server().clone(), replica: pg::replica().server().clone() }
    }

    async fn routed(&self, storage: &Storage) -> Routed {
        let text = storage.metrics_text().await.unwrap_or_else(|e| panic!("metrics: {e}"));
        self.routed_in(&text)
    }

    fn routed_in(&self, text: &str) -> Routed {
        let reads = |s: &pg::Server, role: &str| {
            sample(text, READS, &[("host", &address(s)), ("role", role)]).unwrap_or(0.0)
        };
        let fallbacks = |reason: &str| sample(text, FALLBACKS, &[("reason", reason)]).unwrap_or(0.0);
        Routed {
            primary: reads(&self.primary, "primary"),
            replica: reads(&self.replica, "replica"),
            unavailable: fallbacks("unavailable"),
            own_write: fallbacks("own_write"),
            error: fallbacks("error"),
        }
    }

    /// `parallax_storage_replica_up` of the replica in exposition `text`.
    fn up_in(&self, text: &str) -> Option<f64> {
        sample(text, REPLICA_UP, &[("host", &address(&self.replica))])
    }

    /// Waits (at most 15 s) until `storage`'s health check has found the replica up.
    async fn until_up(&self, storage: &Storage) {
        metrics_until(storage, "the replica is up", Duration::from_secs(15), |t| self.up_in(t) == Some(1.0))
            .await;
    }

    /// Repeats `read` until the replica serves one (at most `within`); returns how long that took.
    async fn until_replica_serves<F, Fut, T>(&self, storage: &Storage, within: Duration, read: F) -> Duration
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, Error>>,
    {
        let started = Instant::now();
        loop {
            let before = self.routed(storage).await;
            read().await.unwrap_or_else(|e| panic!("a read failed while waiting for the replica: {e}"));
            let d = self.routed(storage).await - before;
            if d.replica > 0.0 {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < within,
                "no read served by the replica {} within {within:?} (last: {d:?}); metrics:\n{}",
                address(&self.replica),
                storage.metrics_text().await.unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Resumes the standby's replay when dropped, also when the test panics while replay is paused (the next
/// holder of the replica would resume it too, see `Replica::exclusive`; this does not leave it to chance).
struct ResumeReplayOnDrop(&'static pg::Replica);

impl Drop for ResumeReplayOnDrop {
    fn drop(&mut self) {
        let replica = self.0;
        // Off the test's runtime: a thread of its own with a runtime of its own; a failure here is not raised
        // again (the test's own failure, if any, is the one to see).
        std::thread::scope(|s| {
            let _ = s
                .spawn(|| {
                    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                    rt.block_on(replica.resume_replay());
                })
                .join();
        });
    }
}

/// What a seeding storage object wrote before the readers look.
struct Seeded {
    pattern: Pattern,
    execution: Execution,
    audit: Vec<Uuid>,
}

/// A fresh database seeded by a storage object of its own without replicas ([`seed_for_readers`]), so the
/// readers a test opens have no write of theirs to wait for; returned once `replica` has replayed it.
async fn seeded_database(replica: &pg::Replica) -> (String, Storage, Seeded) {
    let db = pg::server().fresh_database().await;
    let writer = plugin().open(&pg::server().storage_config(&db)).unwrap();
    let seeded = seed_for_readers(&writer).await;
    replica.wait_caught_up(SECS_10).await;
    (db, writer, seeded)
}

/// Writes a pattern, an execution (pattern `seeded`, input word `zeppelin`) with one event, and one audit
/// entry by actor `seeder`.
async fn seed_for_readers(s: &Storage) -> Seeded {
    let pattern = s.put_pattern(new_pattern("seeded", "1.0.0")).await.unwrap();
    let mut e = new_execution("seeded", "1.0.0");
    e.input = Some(doc(r#"{"q": "zeppelin"}"#));
    let execution = s.create_execution(e).await.unwrap();
    s.append_event(execution.id, NewEvent::new(EventKind::StepResult, json!({ "step": 1 }))).await.unwrap();
    let audit = s.append_audit(vec![audit("seeded.put", "seeder")]).await.unwrap();
    Seeded { pattern, execution, audit }
}

/// An execution's metadata as a JSON value (`null` when it has none).
fn metadata(e: &Execution) -> serde_json::Value {
    e.metadata.as_ref().map_or(serde_json::Value::Null, |m| serde_json::from_str(m.as_str()).unwrap())
}

/// The ten plain reads (each one storage call), by name.
const PLAIN_READS: [&str; 10] = [
    "get_pattern",
    "list_pattern_versions",
    "list_patterns",
    "get_execution",
    "list_executions",
    "count_executions",
    "list_events",
    "query_audit",
    "search_executions",
    "search_patterns",
];

/// Runs plain read `kind` through `s` and checks its answer against the seed.
async fn plain_read(s: &Storage, seeded: &Seeded, kind: &str) {
    let id = seeded.execution.id;
    let seeded_only = || ExecutionFilter::default().pattern("seeded");
    let ok = match kind {
        "get_pattern" => s.get_pattern("seeded", "1.0.0").await.unwrap().id == seeded.pattern.id,
        "list_pattern_versions" => s.list_pattern_versions("seeded").await.unwrap().len() == 1,
        "list_patterns" => s.list_patterns(page(10, None)).await.unwrap().items.len() == 1,
        "get_execution" => s.get_execution(id).await.unwrap().id == id,
        "list_executions" => s.list_executions(seeded_only(), page(10, None)).await.unwrap().items.len() == 1,
        "count_executions" => s.count_executions(seeded_only()).await.unwrap() == 1,
        "list_events" => s.list_events(id).await.unwrap().len() == 1,
        "query_audit" => {
            let q = AuditQuery { actor: Some("seeder".into()), ..AuditQuery::default() };
            s.query_audit(q, page(10, None))
                .await
                .unwrap()
                .items
                .iter()
                .map(|a| a.id)
                .eq(seeded.audit.clone())
        }
        "search_executions" => s
            .search_executions("zeppelin", page(10, None))
            .await
            .unwrap()
            .items
            .iter()
            .any(|h| h.execution.id == id),
        "search_patterns" => s
            .search_patterns("seeded", page(10, None))
            .await
            .unwrap()
            .items
            .iter()
            .any(|h| h.pattern.name == "seeded"),
        other => panic!("no plain read {other}"),
    };
    assert!(ok, "{kind} did not return the seeded data");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_follow_read_preference() {
    let replica = pg::replica();
    let _turn = replica.shared().await;
    let hosts = Hosts::shared();
    let (db, writer, seeded) = seeded_database(replica).await;
    let open = |preference: &str| {
        let config = replica_config(&hosts.primary, &hosts.replica, &db, preference, json!({}));
        plugin().open(&config).unwrap_or_else(|e| panic!("open with readPreference {preference}: {e}"))
    };

    // primary: every read on the primary, none on the replica.
    let s = open("primary");
    let before = hosts.routed(&s).await;
    for kind in PLAIN_READS {
        plain_read(&s, &seeded, kind).await;
    }
    let d = hosts.routed(&s).await - before;
    assert_eq!((d.primary, d.replica), (PLAIN_READS.len() as f64, 0.0), "readPreference primary: {d:?}");
    s.shutdown().await.unwrap();

    // replica: each of the ten plain reads on the replica. A read on the primary only with a fallback counted
    // for it (a health probe that failed under load), never for an own write (this object wrote nothing).
    let s = open("replica");
    hosts.until_up(&s).await;
    let mut on_replica = 0;
    for kind in PLAIN_READS {
        let before = hosts.routed(&s).await;
        plain_read(&s, &seeded, kind).await;
        let d = hosts.routed(&s).await - before;
        assert_eq!(d.primary + d.replica, 1.0, "{kind}: one read, served by one host: {d:?}");
        assert_eq!(d.own_write, 0.0, "{kind}: an object that wrote nothing has no write to wait for: {d:?}");
        assert_eq!(d.primary, d.unavailable + d.error, "{kind}: on the primary without a fallback: {d:?}");
        on_replica += d.replica as usize;
    }
    assert!(
        on_replica >= PLAIN_READS.len() - 2,
        "only {on_replica} of {} reads on the caught-up replica",
        PLAIN_READS.len()
    );
    s.shutdown().await.unwrap();

    // any: spread over both hosts.
    let s = open("any");
    hosts.until_up(&s).await;
    let before = hosts.routed(&s).await;
    const ANY_READS: usize = 40;
    for i in 0..ANY_READS {
        plain_read(&s, &seeded, PLAIN_READS[i % PLAIN_READS.len()]).await;
    }
    let d = hosts.routed(&s).await - before;
    assert_eq!(d.primary + d.replica, ANY_READS as f64, "{d:?}");
    assert!(d.primary >= 1.0 && d.replica >= 1.0, "readPreference any used one host only: {d:?}");
    assert_eq!(d.own_write, 0.0, "{d:?}");
    s.shutdown().await.unwrap();

    writer.shutdown().await.unwrap();
    pg::server().drop_database(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_replay_never_shows_a_caller_its_own_write_missing() {
    let replica = pg::replica();
    let _turn = replica.exclusive().await;
    let hosts = Hosts::shared();
    let (db, writer, seeded) = seeded_database(replica).await;
    // Lag never disqualifies the paused standby here: only the own-write rule keeps reads off it.
    let config = replica_config(
        &hosts.primary,
        &hosts.replica,
        &db,
        "replica",
        json!({ "postgresql": {
        "maxReplicaLag": 600000 } }),
    );
    let (s1, s2) = (plugin().open(&config).unwrap(), plugin().open(&config).unwrap());
    hosts.until_up(&s1).await;
    hosts.until_up(&s2).await;

    let _resume = ResumeReplayOnDrop(replica);
    replica.pause_replay().await;
    let e0 = seeded.execution.id;
    let before = hosts.routed(&s1).await;
    let mut reads = 0.0;
    // create-then-get
    let e1 = s1.create_execution(new_execution("after-pause", "1.0.0")).await.unwrap();
    assert_eq!(s1.get_execution(e1.id).await.unwrap().id, e1.id, "create-then-get");
    // append-then-list, on a new execution and on one the standby has with one event
    s1.append_event(e1.id, NewEvent::new(EventKind::StepResult, json!({ "step": 1 }))).await.unwrap();
    assert_eq!(s1.list_events(e1.id).await.unwrap().len(), 1, "append-then-list_events");
    s1.append_event(e0, NewEvent::new(EventKind::StepResult, json!({ "step": 2 }))).await.unwrap();
    assert_eq!(s1.list_events(e0).await.unwrap().len(), 2, "append-then-list_events (existing execution)");
    reads += 3.0;
    // update-then-list: the standby holds the old version of e0
    let update = ExecutionUpdate { metadata: Some(doc(r#"{"v": 2}"#)), ..ExecutionUpdate::default() };
    s1.update_execution(e0, update).await.unwrap();
    let listed =
        s1.list_executions(ExecutionFilter::default().pattern("seeded"), page(10, None)).await.unwrap();
    assert_eq!(listed.items.len(), 1);
    assert_eq!(metadata(&listed.items[0]), json!({ "v": 2 }), "update-then-list");
    assert_eq!(metadata(&s1.get_execution(e0).await.unwrap()), json!({ "v": 2 }), "update-then-get");
    reads += 2.0;
    // complete-then-count
    s1.complete_execution(e0, ExecutionCompletion::new(ExecutionStatus::Completed)).await.unwrap();
    let completed = ExecutionFilter::default().pattern("seeded").status(ExecutionStatus::Completed);
    assert_eq!(s1.count_executions(completed.clone()).await.unwrap(), 1, "complete-then-count");
    reads += 1.0;
    // append_audit-then-query_audit
    let ids = s1.append_audit(vec![audit("after.pause", "s1")]).await.unwrap();
    let q = AuditQuery { actor: Some("s1".into()), ..AuditQuery::default() };
    let found: Vec<Uuid> =
        s1.query_audit(q, page(10, None)).await.unwrap().items.iter().map(|a| a.id).collect();
    assert_eq!(found, ids, "append_audit-then-query_audit");
    reads += 1.0;
    // put_pattern-then-get_pattern
    s1.put_pattern(new_pattern("seeded", "1.1.0")).await.unwrap();
    assert_eq!(
        s1.get_pattern("seeded", "1.1.0").await.unwrap().version,
        "1.1.0",
        "put_pattern-then-get_pattern"
    );
    assert_eq!(s1.list_pattern_versions("seeded").await.unwrap().len(), 2, "put_pattern-then-versions");
    reads += 2.0;

    // The writes reached the standby, which has not applied them: the reads above were current because
    // they went to the primary, each counted as an own-write fallback.
    let mark = replica.primary_mark().await;
    replica.wait_received(mark, SECS_10).await;
    let replayed = replica.replay_lsn().await;
    assert!(replayed < mark, "replayed {replayed} while paused, past {mark}");
    let d = hosts.routed(&s1).await - before;
    // Own-write fallbacks; `unavailable` too if a health probe timed out on this loaded machine meanwhile.
    assert_eq!(
        (d.replica, d.primary, d.own_write + d.unavailable),
        (0.0, reads, reads),
        "s1's reads after its writes: {d:?}"
    );
    assert!(d.own_write >= 1.0, "{d:?}");

    // Now every write of s1 is covered by its mark (the marker ran long before the standby received the WAL),
    // so only the comparison of the standby's replay position with that mark keeps s1's reads current.
    let before = hosts.routed(&s1).await;
    assert_eq!(s1.get_execution(e1.id).await.unwrap().id, e1.id, "create-then-get, later");
    assert_eq!(metadata(&s1.get_execution(e0).await.unwrap()), json!({ "v": 2 }), "update-then-get, later");
    assert_eq!(s1.count_executions(completed).await.unwrap(), 1, "complete-then-count, later");
    let d = hosts.routed(&s1).await - before;
    assert_eq!((d.replica, d.primary), (0.0, 3.0), "s1's later reads: {d:?}");

    // A second object that wrote nothing reads what existed before the pause from the replica, as it was
    // then: read-your-writes is per storage object (s1's writes are not visible to it yet).
    // (Retried while a health probe that timed out on this loaded machine keeps the replica down a moment.)
    let deadline = Instant::now() + SECS_10;
    loop {
        hosts.until_up(&s2).await;
        let before = hosts.routed(&s2).await;
        let old = s2.get_execution(e0).await.unwrap();
        let events = s2.list_events(e0).await.unwrap().len();
        let pattern = s2.get_pattern("seeded", "1.0.0").await.unwrap().id;
        let q = AuditQuery { actor: Some("seeder".into()), ..AuditQuery::default() };
        let audit = s2.query_audit(q, page(10, None)).await.unwrap().items.len();
        let missing = s2.get_execution(e1.id).await;
        let d = hosts.routed(&s2).await - before;
        if d.replica == 5.0 {
            assert_eq!(
                (old.status, old.metadata),
                (ExecutionStatus::Running, None),
                "s2 reads the standby's e0"
            );
            assert_eq!((events, pattern, audit), (1, seeded.pattern.id, 1));
            assert_kind(missing, ErrorKind::NotFound, "not found");
            break;
        }
        assert_eq!(d.own_write, 0.0, "s2 wrote nothing: {d:?}");
        assert!(Instant::now() < deadline, "s2's reads are served by the paused replica: {d:?}");
    }

    replica.resume_replay().await;
    replica.wait_caught_up(SECS_10).await;
    hosts.until_replica_serves(&s2, Duration::from_secs(10), || s2.get_execution(e1.id)).await;
    for s in [s1, s2, writer] {
        s.shutdown().await.unwrap();
    }
    pg::server().drop_database(&db).await;
}

/// A cleanup commits on connections of its own, not through a write call: it still counts as a write of the
/// storage object that ran it, so that object's reads never show the removed rows from a standby that has not
/// replayed the cleanup. (Migrations and archive deletes and imports count by the same guard.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cleanup_counts_as_a_write_for_read_your_writes() {
    let replica = pg::replica();
    let _turn = replica.exclusive().await;
    let hosts = Hosts::shared();
    let db = pg::server().fresh_database().await;
    let config = replica_config(
        &hosts.primary,
        &hosts.replica,
        &db,
        "replica",
        json!({ "postgresql": { "maxReplicaLag": 600000 } }),
    );
    let s = plugin().open(&config).unwrap();
    let old = Timestamp::now().as_micros() - 40 * 86_400_000_000;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let e = s.create_execution(new_execution("cleaned", "1.0.0").started_at(at(old))).await.unwrap();
        s.complete_execution(e.id, ExecutionCompletion::new(ExecutionStatus::Completed)).await.unwrap();
        ids.push(e.id);
    }
    let all = || ExecutionFilter::default().pattern("cleaned");
    replica.wait_caught_up(SECS_10).await;
    hosts.until_up(&s).await;
    // Once its writes are covered and replayed, this object's reads are served by the standby.
    hosts.until_replica_serves(&s, SECS_10, || s.count_executions(all())).await;

    let _resume = ResumeReplayOnDrop(replica);
    replica.pause_replay().await;
    let every = retention::CleanupParams { confirm_all: true, ..cleanup_params("30d") };
    let report = s.cleanup(&every).await.unwrap();
    assert!(!report.dry_run, "{report:?}");
    let before = hosts.routed(&s).await;
    assert_eq!(s.count_executions(all()).await.unwrap(), 0, "cleanup-then-count");
    assert_kind(s.get_execution(ids[0]).await, ErrorKind::NotFound, "not found");
    let d = hosts.routed(&s).await - before;
    assert_eq!((d.replica, d.primary), (0.0, 2.0), "read from the primary, not the paused standby: {d:?}");
    // The standby still has the rows: only the storage object's own mark kept it from serving them.
    let standby = replica.server().client(&db).await;
    let left: i64 = standby
        .query_one("SELECT count(*) FROM executions WHERE pattern_name = 'cleaned'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 3, "the paused standby has not replayed the cleanup");
    s.shutdown().await.unwrap();
    drop(_resume);
    pg::server().drop_database(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_replica_stops_receiving_reads() {
    let replica = pg::replica();
    let _turn = replica.exclusive().await;
    let hosts = Hosts::shared();
    let (db, writer, seeded) = seeded_database(replica).await;
    let config = replica_config(
        &hosts.primary,
        &hosts.replica,
        &db,
        "replica",
        json!({ "postgresql": { "maxReplicaLag": 500 } }),
    );
    let s = plugin().open(&config).unwrap();
    hosts.until_up(&s).await;
    let id = seeded.execution.id;
    hosts.until_replica_serves(&s, SECS_10, || s.get_execution(id)).await;

    let _resume = ResumeReplayOnDrop(replica);
    replica.pause_replay().await;
    // Another object writes: the primary moves on, the standby does not follow.
    writer.create_execution(new_execution("moving-on", "1.0.0")).await.unwrap();
    let r = address(&hosts.replica);
    let text = metrics_until(&s, "the replica is seen lagging or down", Duration::from_secs(15), |t| {
        let lag = sample(t, REPLICA_LAG, &[("host", &r)]);
        let max = sample(t, REPLICA_MAX_LAG, &[("host", &r)]);
        hosts.up_in(t) == Some(0.0) || matches!((lag, max), (Some(l), Some(m)) if l > m)
    })
    .await;
    assert_eq!(sample(&text, REPLICA_MAX_LAG, &[("host", &r)]), Some(0.5), "maxReplicaLag 500 ms:\n{text}");

    const N: f64 = 10.0;
    let before = hosts.routed(&s).await;
    for _ in 0..N as usize {
        assert_eq!(s.get_execution(id).await.unwrap().id, id);
    }
    let d = hosts.routed(&s).await - before;
    assert_eq!((d.primary, d.replica, d.unavailable), (N, 0.0, N), "reads while the replica lags: {d:?}");

    replica.resume_replay().await;
    let back = hosts.until_replica_serves(&s, Duration::from_secs(15), || s.get_execution(id)).await;
    eprintln!("reads returned to the replica {back:?} after replay resumed");
    s.shutdown().await.unwrap();
    writer.shutdown().await.unwrap();
    pg::server().drop_database(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_replica_falls_back_to_the_primary_and_returns() {
    let replica = pg::replica();
    let _turn = replica.exclusive().await;
    let hosts = Hosts::shared();
    let (db, writer, seeded) = seeded_database(replica).await;
    let s =
        plugin().open(&replica_config(&hosts.primary, &hosts.replica, &db, "replica", json!({}))).unwrap();
    hosts.until_up(&s).await;

    // A read workload of four tasks, collecting every error a caller sees.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let id = seeded.execution.id;
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let (s, stop) = (s.clone(), stop.clone());
            tokio::spawn(async move {
                let (mut ok, mut errors) = (0usize, Vec::new());
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    match s.get_execution(id).await {
                        Ok(e) if e.id == id => ok += 1,
                        Ok(e) => errors.push(format!("wrong execution {}", e.id)),
                        Err(e) => errors.push(e.to_string()),
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                (ok, errors)
            })
        })
        .collect();
    let until = async |what: &str, within: Duration, ok: &dyn Fn(Routed) -> bool| -> Duration {
        let started = Instant::now();
        loop {
            let r = hosts.routed(&s).await;
            if ok(r) {
                return started.elapsed();
            }
            assert!(started.elapsed() < within, "{what}: not within {within:?}; routing {r:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let start = hosts.routed(&s).await;
    until("the workload reads from the replica", SECS_10, &|r| r.replica > start.replica).await;

    let before_stop = hosts.routed(&s).await;
    tokio::task::block_in_place(|| replica.stop_immediate());
    let fell_back = until("reads fall back to the primary", SECS_10, &|r| {
        let d = r - before_stop;
        d.unavailable + d.error > 0.0 && d.primary > 0.0
    })
    .await;
    // Reads keep going on the primary while the standby is down.
    let down = hosts.routed(&s).await;
    until("reads continue on the primary", SECS_10, &|r| r.primary > down.primary + 8.0).await;

    replica.start().await;
    let restarted = hosts.routed(&s).await;
    let back =
        until("reads return to the restarted replica", SECS_10, &|r| r.replica > restarted.replica).await;
    eprintln!("fell back {fell_back:?} after the stop; back on the replica {back:?} after the restart");

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tasks {
        let (ok, errors) = t.await.unwrap();
        assert!(errors.is_empty(), "a caller saw {} errors, e.g. {:?}", errors.len(), errors.first());
        assert!(ok > 0, "a task read nothing");
    }
    s.shutdown().await.unwrap();
    writer.shutdown().await.unwrap();
    pg::server().drop_database(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_primary_fails_writes_and_keeps_replica_reads() {
    // A private primary and standby: this test stops the primary.
    let (cluster, standby) = tokio::task::block_in_place(|| {
        let cluster = pg::Cluster::start(pg::ClusterOptions::default());
        let standby = pg::Replica::standby_of(&cluster);
        (cluster, standby)
    });
    let hosts = Hosts { primary: cluster.server.clone(), replica: standby.server().clone() };
    let db = cluster.server.fresh_database().await;
    const ACQUIRE_MS: u64 = 2000;
    let open = |preference: &str| {
        let extra = json!({ "postgresql": { "pool": { "acquireTimeout": ACQUIRE_MS } } });
        plugin().open(&replica_config(&hosts.primary, &hosts.replica, &db, preference, extra)).unwrap()
    };
    let writer = open("replica");
    let written = writer.create_execution(new_execution("before-stop", "1.0.0")).await.unwrap();
    standby.wait_caught_up(SECS_10).await;
    let (on_replica, on_any) = (open("replica"), open("any"));
    hosts.until_up(&on_replica).await;
    hosts.until_up(&on_any).await;
    hosts.until_replica_serves(&on_replica, SECS_10, || on_replica.get_execution(written.id)).await;

    tokio::task::block_in_place(|| cluster.stop_server());

    // Writes fail, as unavailable (or a timeout waiting for a connection), within acquireTimeout.
    for i in 0..3 {
        let started = Instant::now();
        let err = writer.create_execution(new_execution("after-stop", "1.0.0")).await.unwrap_err();
        let took = started.elapsed();
        assert!(matches!(err.kind, ErrorKind::Unavailable | ErrorKind::Timeout), "write {i}: {err}");
        assert!(
            took < Duration::from_millis(ACQUIRE_MS + 3000),
            "write {i} failed only after {took:?}: {err}"
        );
    }

    // `replica` reads keep working from the standby, every one of them.
    let before = hosts.routed(&on_replica).await;
    for _ in 0..5 {
        let e = on_replica.get_execution(written.id).await.unwrap_or_else(|e| panic!("replica read: {e}"));
        assert_eq!(e.id, written.id);
    }
    assert_eq!(on_replica.count_executions(ExecutionFilter::default()).await.unwrap(), 1);
    let d = hosts.routed(&on_replica).await - before;
    assert_eq!(d.replica, 6.0, "{d:?}");

    // `any` reads too, once its health check has seen the primary go (a read already on its way to the
    // primary may fail within that second).
    let started = Instant::now();
    while let Err(e) = on_any.get_execution(written.id).await {
        assert!(
            started.elapsed() < SECS_10,
            "readPreference any still fails 10 s after the primary stopped: {e}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before = hosts.routed(&on_any).await;
    for _ in 0..10 {
        let e = on_any.get_execution(written.id).await.unwrap_or_else(|e| panic!("any read: {e}"));
        assert_eq!(e.id, written.id);
    }
    let d = hosts.routed(&on_any).await - before;
    assert_eq!(d.replica, 10.0, "with the primary down, any reads only the replica: {d:?}");

    for s in [writer, on_replica, on_any] {
        s.shutdown().await.unwrap();
    }
    tokio::task::block_in_place(|| {
        drop(standby);
        drop(cluster);
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_config_errors_name_the_values() {
    let server = pg::server();
    let db = server.fresh_database().await;
    let base = server.storage_config(&db);
    let with = |extra: serde_json::Value| {
        let mut c = base.clone();
        merge_json(&mut c, extra);
        c
    };
    let refused = |config: serde_json::Value, needles: &[&str]| {
        let err = match plugin().open(&config) {
            Ok(_) => panic!("opened with {config}"),
            Err(e) => e,
        };
        assert_eq!(err.kind, ErrorKind::InvalidInput, "{config}: {err}");
        for n in needles {
            assert!(err.message.contains(n), "{config}: {err:?} does not name {n:?}");
        }
    };
    let port = server.port.to_string();

    // primary next to a different host/port: both named.
    refused(
        with(json!({ "postgresql": { "primary": { "host": "db-primary.invalid", "port": 6543 } } })),
        &["primary", "db-primary.invalid", "6543", &server.host, &port],
    );
    refused(
        with(json!({ "postgresql": { "primary": { "host": server.host, "port": 6543 } } })),
        &["6543", &port],
    );
    // The same with a url.
    let url = json!({ "type": "postgresql", "postgresql": {
        "url": server.url(&db), "primary": { "host": "db-primary.invalid", "port": 6543 } } });
    refused(url, &["primary", "db-primary.invalid", "6543"]);
    // Equal: fine. And primary alone replaces host/port.
    let same = with(json!({ "postgresql": { "primary": { "host": server.host, "port": server.port } } }));
    plugin().open(&same).unwrap_or_else(|e| panic!("{same}: {e}")).shutdown().await.unwrap();
    let mut alone = base.clone();
    let pg = alone["postgresql"].as_object_mut().unwrap();
    pg.remove("host");
    pg.remove("port");
    pg.insert("primary".into(), json!({ "host": server.host, "port": server.port }));
    let s = plugin().open(&alone).unwrap_or_else(|e| panic!("{alone}: {e}"));
    s.put_pattern(new_pattern("via-primary", "1.0.0")).await.unwrap();
    s.shutdown().await.unwrap();

    // maxReplicaLag: integer milliseconds within 100..=86400000, refused by name and value otherwise.
    for bad in [json!(0), json!(99), json!(86_400_001_u64)] {
        let config = with(json!({ "postgresql": { "maxReplicaLag": bad.clone() } }));
        refused(config, &["maxReplicaLag", &bad.to_string()]);
    }
    refused(with(json!({ "postgresql": { "maxReplicaLag": "10s" } })), &["maxReplicaLag", "10s"]);
    for good in [100, 86_400_000_u64] {
        let config = with(json!({ "postgresql": { "maxReplicaLag": good } }));
        plugin()
            .open(&config)
            .unwrap_or_else(|e| panic!("maxReplicaLag {good}: {e}"))
            .shutdown()
            .await
            .unwrap();
    }
    server.drop_database(&db).await;
}

/// The `hosts` maintenance op (what `parallax storage test-connection` prints).
async fn hosts_report(s: &Storage) -> parallax_storage_abi::hosts::HostsReport {
    let request = MaintenanceRequest::new(parallax_storage_abi::hosts::HOSTS, 1, json!({}));
    let response = s.maintenance(&request).await.unwrap_or_else(|e| panic!("hosts: {e}"));
    serde_json::from_value(response.result.clone())
        .unwrap_or_else(|e| panic!("the hosts result {} is not a HostsReport: {e}", response.result))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_connection_lists_the_primary_and_the_replica() {
    let replica = pg::replica();
    let _turn = replica.shared().await;
    let hosts = Hosts::shared();
    let (db, writer, seeded) = seeded_database(replica).await;
    let s =
        plugin().open(&replica_config(&hosts.primary, &hosts.replica, &db, "replica", json!({}))).unwrap();
    hosts.until_up(&s).await;
    let id = seeded.execution.id;
    hosts.until_replica_serves(&s, SECS_10, || s.get_execution(id)).await;

    let report = hosts_report(&s).await;
    assert_eq!(report.read_preference, "replica", "{report:?}");
    assert_eq!(report.max_replica_lag_ms, Some(10_000), "the default maxReplicaLag: {report:?}");
    assert_eq!(report.hosts.len(), 2, "{report:?}");
    let (p, r) = (&report.hosts[0], &report.hosts[1]);
    assert_eq!(p.role, "primary", "{p:?}");
    assert!(p.address.contains(&address(&hosts.primary)), "{p:?}");
    assert!(p.reachable && p.server_role.as_deref() == Some("primary"), "{p:?}");
    assert!(p.latency_us.is_some_and(|l| l >= 0), "{p:?}");
    assert_eq!(r.role, "replica", "{r:?}");
    assert!(r.address.contains(&address(&hosts.replica)), "{r:?}");
    assert!(r.reachable && r.server_role.as_deref() == Some("standby"), "{r:?}");
    assert_eq!((r.state.as_str(), r.receives_reads), ("up", true), "{r:?}");
    assert!(r.latency_us.is_some() && r.replay_lag_ms.is_some(), "{r:?}");
    assert!(r.reads >= 1, "the read above went to the replica: {r:?}");
    assert!(r.error.is_none(), "{r:?}");
    s.shutdown().await.unwrap();

    // Without replicas: the primary alone.
    let report = hosts_report(&writer).await;
    assert_eq!(report.hosts.len(), 1, "{report:?}");
    assert_eq!((report.hosts[0].role.as_str(), report.read_preference.as_str()), ("primary", "primary"));
    assert!(report.hosts[0].address.contains(&address(&hosts.primary)), "{report:?}");
    writer.shutdown().await.unwrap();
    pg::server().drop_database(&db).await;
}

/// Every pattern version, execution (with events) and audit entry the store holds.
async fn everything(
    s: &Storage,
) -> (
    Vec<Pattern>,
    std::collections::BTreeMap<String, serde_json::Value>,
    std::collections::BTreeMap<String, serde_json::Value>,
) {
    let mut patterns = Vec::new();
    for p in s.patterns(100).collect().await.unwrap() {
        patterns.extend(s.list_pattern_versions(&p.name).await.unwrap());
    }
    patterns.sort_by_key(|p| p.id);
    patterns.dedup_by_key(|p| p.id);
    let (executions, audit) = common::archive::snapshot(s).await;
    (patterns, executions, audit)
}

/// The README's PostgreSQL backup (`pg_dump` of the whole database, `createdb`, `pg_restore`), run as written:
/// the restored database opens through the plugin with every row, the monthly partitions' rows included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_pg_dump_backup_restores_everything() {
    let h = postgres().await;
    let s = &h.storage;
    for (name, versions) in [("backup-a", 3), ("backup-b", 1)] {
        for v in 0..versions {
            s.put_pattern(new_pattern(name, &format!("1.{v}.0"))).await.unwrap();
        }
    }
    // Executions in two monthly partitions (this month and one ahead), every status, with events.
    let now = jiff::Timestamp::now().as_microsecond();
    for i in 0..12i64 {
        let mut e = new_execution("backup-a", "1.0.0");
        e.started_at = Some(at(if i % 2 == 0 { now - i } else { now + 40 * 86_400_000_000 + i }));
        e.input = Some(json!({ "text": format!("word{i} ünïcode"), "n": i, "f": 2.5 }).into());
        e.tags = vec!["backup".into()];
        let e = s.create_execution(e).await.unwrap();
        for k in 0..(i % 3) {
            let ev = NewEvent {
                kind: EventKind::StepResult,
                payload: json!({ "step": k }).into(),
                recorded_at: Some(at(now + k)),
            };
            s.append_event(e.id, ev).await.unwrap();
        }
        if i % 4 != 3 {
            let status = [ExecutionStatus::Completed, ExecutionStatus::Failed, ExecutionStatus::Cancelled]
                [(i % 3) as usize];
            let done = ExecutionCompletion {
                status,
                output: Some(json!({ "ok": i }).into()),
                error: None,
                completed_at: Some(at(e.started_at.as_micros() + 1_000_000)),
            };
            s.complete_execution(e.id, done).await.unwrap();
        }
    }
    s.append_audit((0..5).map(|i| audit("backup.test", &format!("actor{i}"))).collect()).await.unwrap();
    let before = everything(s).await;
    assert_eq!((before.0.len(), before.1.len(), before.2.len()), (4, 12, 5));
    let db = inspect(&h).await;
    assert_eq!(count(&db, "SELECT count(*) FROM executions_default").await, 0);
    let months = count(&db, "SELECT count(DISTINCT tableoid) FROM executions").await;
    assert_eq!(months, 2, "rows in two monthly partitions");

    let server = pg::server();
    let restored = "parallax_restored";
    server.drop_database(restored).await;
    let path = format!("{}:{}", pg::server_bin_dir().display(), std::env::var("PATH").unwrap_or_default());
    let mut cmd = std::process::Command::new("bash");
    cmd.args(["-euo", "pipefail", "-c", &tested_block("README.md", "pg-dump")])
        .current_dir(h.dir.path())
        .env("PATH", path)
        .env("DATABASE_URL", server.url(h.pg_db.as_ref().unwrap()))
        .env("PGHOST", &server.host)
        .env("PGPORT", server.port.to_string())
        .env("PGUSER", &server.user)
        .env_remove("PGDATABASE");
    match &server.password {
        Some(pw) => cmd.env("PGPASSWORD", pw),
        None => cmd.env_remove("PGPASSWORD"),
    };
    let out = cmd.output().expect("bash runs");
    assert!(
        out.status.success(),
        "the README's pg-dump block failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(h.dir.path().join("parallax.dump").is_file());

    let copy = plugin()
        .open(&server.storage_config(restored))
        .unwrap_or_else(|e| panic!("open the restored database: {e}"));
    let after = everything(&copy).await;
    assert_eq!(after.0, before.0, "pattern versions");
    assert_eq!(after.1, before.1, "executions with their events");
    assert_eq!(after.2, before.2, "audit entries");
    let rdb = server.client(restored).await;
    assert_eq!(count(&rdb, "SELECT count(*) FROM executions_default").await, 0);
    assert_eq!(count(&rdb, "SELECT count(*) FROM execution_events_default").await, 0);
    assert_eq!(count(&rdb, "SELECT count(DISTINCT tableoid) FROM executions").await, 2);
    // Still a working store: the partition function came along, search finds restored rows.
    let hits = copy.search_executions("word4", page(10, None)).await.unwrap();
    assert_eq!(hits.items.len(), 1);
    let mut old = new_execution("backup-a", "1.0.0");
    old.started_at = Some(at(1_000_000_000_000_000));
    copy.create_execution(old).await.unwrap();
    copy.shutdown().await.unwrap();
    drop(rdb);
    server.drop_database(restored).await;
    h.finish().await;
}
