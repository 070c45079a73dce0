use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;

use super::*;

fn ok(v: serde_json::Value) -> StorageConfig {
    parse(&v.to_string()).unwrap_or_else(|e| panic!("unexpected error: {e}"))
}

fn err(v: serde_json::Value) -> ConfigError {
    match parse(&v.to_string()) {
        Ok(c) => panic!("expected an error, got {c:?}"),
        Err(e) => e,
    }
}

#[test]
fn null_and_empty_give_defaults() {
    for input in ["null", "{}"] {
        let c = parse(input).unwrap();
        assert_eq!(c.backend, BackendType::Sqlite);
        assert_eq!(c.sqlite.path, PathBuf::from("./parallax.db"));
        assert!(c.sqlite.wal_mode);
        assert_eq!(c.sqlite.busy_timeout_ms, 5000);
        assert_eq!(c.sqlite.synchronous, Synchronous::Full);
        assert_eq!(c.sqlite.read_pool_size, 4);
        assert!(c.postgresql.is_none() && c.file.is_none());
        assert_eq!(c.migrations, MigrationsConfig { enabled: true, auto_run: true });
        assert!(c.warnings().is_empty());
    }
    // A section key with nothing after it in YAML arrives as null and means "defaults".
    let c = ok(json!({"sqlite": null, "migrations": {"enabled": null}}));
    assert!(c.migrations.enabled);
}

#[test]
fn seed_examples_parse() {
    let c = ok(json!({
        "type": "postgresql",
        "postgresql": {
            "host": "postgres.example.com", "port": 5432, "database": "parallax", "username": "parallax",
            "password": "s3cret",
            "pool": {"minConnections": 5, "maxConnections": 20, "idleTimeout": 60000},
            "ssl": {"enabled": true, "mode": "verify-full", "ca": "/etc/ssl/certs/ca.crt"}
        }
    }));
    let pg = c.postgresql.as_ref().unwrap();
    assert_eq!(c.backend, BackendType::Postgresql);
    assert_eq!(pg.password.as_ref().unwrap().expose(), "s3cret");
    assert_eq!(pg.pool.max_connections, 20);
    assert_eq!(pg.pool.acquire_timeout_ms, 30_000);
    assert_eq!(pg.ssl.effective_mode(), SslMode::VerifyFull);
    assert!(!format!("{c:?}").contains("s3cret"));

    let c = ok(json!({"type": "sqlite",
               "sqlite": {"path": "/data/parallax.db", "walMode": true, "busyTimeout": 5000}}));
    assert_eq!(c.sqlite.path, PathBuf::from("/data/parallax.db"));

    let c = ok(
        json!({"type": "file", "file": {"basePath": "/data/parallax", "format": "yaml", "compress": true}}),
    );
    let f = c.file.unwrap();
    assert_eq!((f.format, f.compress), (FileFormat::Yaml, true));

    let c = ok(json!({"retention": {
        "executions": {"enabled": true, "maxAge": "30d", "maxCount": 100000},
        "auditLogs": {"enabled": true, "maxAge": "90d"},
        "cleanupSchedule": "0 2 * * *"
    }}));
    let ex = c.retention.executions.as_ref().unwrap();
    assert_eq!(ex.max_age, Some(Duration::from_secs(30 * 86_400)));
    assert_eq!(ex.max_count, Some(100_000));
    assert_eq!(c.retention.cleanup_schedule.as_ref().unwrap().expr, "0 2 * * *");
    assert_eq!(c.warnings(), Vec::<String>::new());
    let c = ok(json!({"retention": {"executions": {"maxAge": "30d"}}}));
    assert!(c.warnings()[0].contains("cleanupSchedule is not"), "{:?}", c.warnings());
    let c = ok(json!({"retention": {"cleanupSchedule": "0 2 * * *"}}));
    assert!(c.warnings()[0].contains("no retention rule is enabled"), "{:?}", c.warnings());

    let c = ok(json!({"postgresql": {
        "primary": {"host": "postgres-primary.example.com"},
        "replicas": [{"host": "postgres-replica-1.example.com"}, {"host": "r2", "port": 6432}],
        "readPreference": "replica"
    }}));
    let pg = c.postgresql.as_ref().unwrap();
    assert_eq!(pg.replicas[1], HostPort { host: "r2".into(), port: Some(6432) });
    // Enforced now: no "not enforced" warning, and replicas with readPreference replica draw none.
    assert_eq!(c.warnings(), Vec::<String>::new());
}

#[test]
fn max_replica_lag_default_range_and_form() {
    let pg = |v: serde_json::Value| ok(json!({"postgresql": v})).postgresql.unwrap();
    assert_eq!(pg(json!({})).max_replica_lag_ms, 10_000);
    assert_eq!(pg(json!({"maxReplicaLag": null})).max_replica_lag_ms, 10_000);
    assert_eq!(pg(json!({"maxReplicaLag": 100})).max_replica_lag_ms, 100);
    assert_eq!(pg(json!({"maxReplicaLag": 86_400_000})).max_replica_lag_ms, 86_400_000);
    assert_eq!(pg(json!({"maxReplicaLag": 2500})).max_replica_lag_ms, 2500);
    for (bad, found) in [
        (json!(99), "found 99"),
        (json!(0), "found 0"),
        (json!(86_400_001), "found 86400001"),
        (json!("10s"), "found string \"10s\""),
        (json!(1.5), "found number 1.5"),
        (json!(-5), "found number -5"),
        (json!(true), "found boolean true"),
    ] {
        let e = err(json!({"postgresql": {"maxReplicaLag": bad}}));
        assert_eq!(e.path, "storage.postgresql.maxReplicaLag", "{e}");
        assert!(e.message.contains(found), "{found}: {e}");
        assert!(e.message.contains("integer of milliseconds between 100 and 86400000"), "{e}");
    }
    let e = err(json!({"postgresql": {"maxReplicaLag": "5000"}}));
    assert!(e.message.ends_with("(write it without quotes)"), "{e}");
    // A misspelling is suggested; the key is known.
    let e = err(json!({"postgresql": {"maxReplicaLagMs": 5000}}));
    assert!(e.message.contains("`maxReplicaLag`"), "{e}");
}

#[test]
fn primary_replaces_host_and_conflicts_name_both_values() {
    let pg_sel = |v: serde_json::Value| {
        let mut v = v;
        v["database"] = json!("d");
        v["username"] = json!("u");
        json!({"type": "postgresql", "postgresql": v})
    };
    // primary alone satisfies "host required"; database and username are still required.
    let c = ok(pg_sel(json!({"primary": {"host": "db1"}})));
    let p = c.postgresql.unwrap();
    assert_eq!(p.primary, Some(HostPort { host: "db1".into(), port: Some(5432) }));
    assert_eq!(p.host, None);
    let e = err(json!({"type": "postgresql", "postgresql": {"primary": {"host": "db1"}, "database": "d"}}));
    assert_eq!(e.path, "storage.postgresql.username");
    assert!(e.message.contains("host or primary is set"), "{e}");
    let e = err(json!({"type": "postgresql", "postgresql": {"database": "d", "username": "u"}}));
    assert!(e.message.contains("neither url nor host (nor primary)"), "{e}");

    // Both set and equal: accepted (the port defaults to 5432 on both sides; names compare without case).
    ok(pg_sel(json!({"host": "db1", "primary": {"host": "db1"}})));
    ok(pg_sel(json!({"host": "DB1", "port": 5432, "primary": {"host": "db1", "port": 5432}})));
    ok(pg_sel(json!({"port": 6432, "primary": {"host": "db1", "port": 6432}})));
    // Both set and different: an error at primary naming both values and the fix.
    let e = err(pg_sel(json!({"host": "db1", "primary": {"host": "db2"}})));
    assert_eq!(
        e.to_string(),
        "storage.postgresql.primary: both host/port (db1:5432) and primary (db2:5432) are set and differ; set \
         one of them (primary replaces host/port)"
    );
    let e = err(pg_sel(json!({"host": "db1", "port": 6432, "primary": {"host": "db1"}})));
    assert!(e.message.contains("(db1:6432)") && e.message.contains("primary (db1:5432)"), "{e}");
    let e = err(pg_sel(json!({"port": 6432, "primary": {"host": "db1"}})));
    assert!(e.message.starts_with("both port (6432) and primary (db1:5432)"), "{e}");
    let e = err(pg_sel(json!({"host": "::1", "primary": {"host": "::2", "port": 7000}})));
    assert!(e.message.contains("([::1]:5432)") && e.message.contains("([::2]:7000)"), "{e}");

    // A single-host url and primary: the url's authority is compared, never its user info.
    let url = |u: &str, extra: serde_json::Value| {
        let mut pg = json!({"url": u});
        for (k, v) in extra.as_object().unwrap() {
            pg[k] = v.clone();
        }
        json!({"type": "postgresql", "postgresql": pg})
    };
    let c = ok(url("postgresql://u:pw@db1/d", json!({"primary": {"host": "db1", "port": 5432}})));
    assert_eq!(c.postgresql.unwrap().primary.unwrap().port, Some(5432));
    ok(url("postgres://u@[::1]:6432/d", json!({"primary": {"host": "::1", "port": 6432}})));
    // No host in the url: primary supplies it.
    ok(url("postgresql://u:pw@/d", json!({"primary": {"host": "db1"}})));
    let e = err(url("postgresql://u:s3cret@db1:5433/d", json!({"primary": {"host": "db1"}})));
    assert_eq!(e.path, "storage.postgresql.primary");
    assert!(e.message.contains("url (server db1:5433) and primary (db1:5432)"), "{e}");
    assert!(e.message.contains("primary replaces the url's host:port"), "{e}");
    assert!(!e.to_string().contains("s3cret"), "{e}");
    let e = err(url("postgresql://u:s3cret@/d?host=db9", json!({"primary": {"host": "db1"}})));
    assert!(e.message.contains("host=") && !e.to_string().contains("s3cret"), "{e}");
    // A user info that hides the authority is never quoted.
    let e = err(url("postgresql://u:12/345@db1/d", json!({"primary": {"host": "db1"}})));
    assert_eq!(e.path, "storage.postgresql.url");
    assert!(!e.to_string().contains("12") && !e.to_string().contains("345"), "{e}");
    // A multi-host url with replicas (or primary): which host is the primary would be a guess.
    let e = err(url("postgresql://u:pw@h1:5432,h2:5433/d", json!({"replicas": [{"host": "r1"}]})));
    assert_eq!(e.path, "storage.postgresql.replicas");
    assert!(e.message.contains("several hosts (h1:5432,h2:5433)") && !e.message.contains("pw"), "{e}");
    let e = err(url("postgresql://u@h1,h2/d", json!({"primary": {"host": "h1"}})));
    assert_eq!(e.path, "storage.postgresql.primary");
    // Alone, a multi-host url is still accepted (tokio-postgres tries the hosts in order).
    ok(url("postgresql://u@h1,h2/d", json!({})));

    // Replica ports default to 5432.
    let c = ok(pg_sel(json!({"host": "db1", "replicas": [{"host": "r1"}, {"host": "r2", "port": 6432}],
                             "readPreference": "any"})));
    let p = c.postgresql.unwrap();
    assert_eq!(p.replicas[0], HostPort { host: "r1".into(), port: Some(5432) });
    assert_eq!(p.read_preference, ReadPreference::Any);
}

#[test]
fn replica_settings_without_effect_draw_warnings() {
    let w = |v: serde_json::Value| ok(json!({"postgresql": v})).warnings();
    for pref in ["replica", "any"] {
        let list = w(json!({"host": "h", "readPreference": pref}));
        assert_eq!(list.len(), 1, "{list:?}");
        assert!(
            list[0].starts_with(&format!("storage.postgresql.readPreference is {pref} but has no effect"))
        );
        assert!(list[0].contains("no replicas configured"), "{list:?}");
    }
    let list = w(json!({"host": "h", "replicas": [{"host": "r1"}, {"host": "r2"}]}));
    assert_eq!(list.len(), 1, "{list:?}");
    assert!(list[0].contains("lists 2 replicas") && list[0].contains("receive no reads"), "{list:?}");
    let list = w(json!({"host": "h", "replicas": [{"host": "r1"}], "readPreference": "primary"}));
    assert!(list[0].contains("lists 1 replica but"), "{list:?}");
    assert_eq!(
        w(json!({"host": "h", "replicas": [{"host": "r1"}], "readPreference": "any"})),
        Vec::<String>::new()
    );
    assert_eq!(w(json!({"host": "h"})), Vec::<String>::new());
    // Nothing is "configured but not enforced" any more.
    let all = w(json!({"primary": {"host": "h"}, "replicas": [{"host": "r"}], "readPreference": "replica",
                       "maxReplicaLag": 500}));
    assert!(all.iter().all(|s| !s.contains("not enforced")), "{all:?}");
}

#[test]
fn unknown_keys_name_path_and_suggest() {
    let e = err(json!({"sqlite": {"busyTimout": 1}}));
    assert_eq!(
        e.to_string(),
        "storage.sqlite.busyTimout: unknown key; did you mean `busyTimeout`? Valid keys here: path, walMode, \
         busyTimeout, synchronous, readPoolSize"
    );
    assert_eq!(err(json!({"typ": "sqlite"})).path, "storage.typ");
    assert!(err(json!({"sqlite": {"WALMODE": true}})).message.contains("did you mean `walMode`"));
    let e = err(json!({"postgresql": {"pool": {"maxConections": 3}}}));
    assert_eq!(e.path, "storage.postgresql.pool.maxConections");
    assert!(e.message.contains("`maxConnections`"));
    let e = err(json!({"postgresql": {"replicas": [{"host": "a"}, {"hots": "b"}]}}));
    assert_eq!(e.path, "storage.postgresql.replicas[1].hots");
    let e = err(json!({"retention": {"auditLogs": {"maxCount": 5}}}));
    assert_eq!(e.path, "storage.retention.auditLogs.maxCount");
    assert!(e.message.contains("Valid keys here: enabled, maxAge"), "{e}");
    let e = err(json!({"zzzz": 1}));
    assert!(e.message.starts_with("unknown key; valid keys here: type, postgresql"), "{e}");
}

#[test]
fn wrong_types_say_what_was_expected_and_found() {
    let e = err(json!({"sqlite": {"busyTimeout": "abc"}}));
    assert_eq!(
        e.to_string(),
        "storage.sqlite.busyTimeout: expected a non-negative integer (milliseconds), found string \"abc\""
    );
    let e = err(json!({"sqlite": {"busyTimeout": "5000"}}));
    assert!(e.message.ends_with("(write it without quotes)"), "{e}");
    assert!(err(json!({"sqlite": {"busyTimeout": -1}})).message.contains("found number -1"));
    assert!(err(json!({"sqlite": {"busyTimeout": 1.5}})).message.contains("found number 1.5"));
    let e = err(json!({"sqlite": {"walMode": "true"}}));
    assert!(e.message.contains("expected a boolean (true or false), found string \"true\""), "{e}");
    assert!(err(json!({"sqlite": {"walMode": 1}})).message.contains("found number 1"));
    let e = err(json!({"sqlite": 5}));
    assert_eq!(e.path, "storage.sqlite");
    assert!(e.message.contains("expected a mapping"));
    let e = err(json!("sqlite"));
    assert_eq!(e.path, "storage");
    let e = err(json!({"postgresql": {"password": true}}));
    assert_eq!(e.to_string(), "storage.postgresql.password: expected a string, found boolean true");
    let e = err(json!({"postgresql": {"replicas": {"host": "x"}}}));
    assert!(e.message.contains("expected a list"));
    assert!(parse("{not json").unwrap_err().message.contains("invalid JSON"));
}

#[test]
fn numeric_strings_for_names_and_secrets_are_kept() {
    // A lone ${VAR} is re-typed by the host; a numeric password arrives as a number.
    let c = ok(json!({"postgresql": {"password": 12345, "username": 42}}));
    let pg = c.postgresql.unwrap();
    assert_eq!(pg.password.unwrap().expose(), "12345");
    assert_eq!(pg.username.as_deref(), Some("42"));
}

#[test]
fn enumerations_list_choices() {
    let e = err(json!({"type": "postgres"}));
    assert_eq!(
        e.to_string(),
        "storage.type: unknown backend \"postgres\"; expected one of postgresql, sqlite, file (did you mean \
         postgresql?)"
    );
    let e = err(json!({"type": "mongo"}));
    assert!(e.message.ends_with("expected one of postgresql, sqlite, file"), "{e}");
    let e = err(json!({"sqlite": {"synchronous": "FULL"}}));
    assert!(e.message.contains("did you mean full?"));
    let e = err(json!({"postgresql": {"ssl": {"enabled": true, "mode": "verify_full"}}}));
    assert!(e.message.contains("did you mean verify-full?"), "{e}");
    assert!(err(json!({"file": {"basePath": "/x", "format": "toml"}})).message.contains("yaml, json"));
    assert!(err(json!({"postgresql": {"readPreference": "secondary"}}))
        .message
        .contains("primary, replica, any"));
    let c = ok(json!({"sqlite": {"synchronous": "normal"}}));
    assert_eq!(c.sqlite.synchronous.as_sql(), "NORMAL");
}

#[test]
fn backend_requirements() {
    let e = err(json!({"type": "file"}));
    assert_eq!(e.to_string(), "storage.file.basePath: required when storage.type is file");
    assert_eq!(err(json!({"type": "file", "file": {"compress": true}})).path, "storage.file.basePath");

    let e = err(json!({"type": "postgresql"}));
    assert_eq!(e.path, "storage.postgresql");
    assert!(e.message.contains("neither url nor host"), "{e}");
    let e = err(json!({"type": "postgresql", "postgresql": {"host": "h", "username": "u"}}));
    assert_eq!(e.path, "storage.postgresql.database");
    let e = err(json!({"type": "postgresql", "postgresql": {"host": "h", "database": "d"}}));
    assert_eq!(e.path, "storage.postgresql.username");

    let c = ok(json!({"type": "postgresql", "postgresql": {"url": "postgresql://u:pw@h:5432/db"}}));
    assert_eq!(c.postgresql.as_ref().unwrap().url.as_ref().unwrap().expose(), "postgresql://u:pw@h:5432/db");
    assert!(!format!("{c:?}").contains("pw@"));
    let e = err(json!({"postgresql": {"url": "mysql://u:topsecret@h/db"}}));
    assert!(!e.to_string().contains("topsecret"));
    assert!(e.message.contains("must start with postgresql://"));
    // A raw `@` in the password: tokio-postgres would split at the first one and take `ss@db` as the host.
    for url in
        ["postgresql://u:p@ss@db/x", "postgres://u@x:pw@db:5432/x?sslmode=disable", "postgresql://u:@@db/x"]
    {
        let e = err(json!({"postgresql": {"url": url}}));
        assert_eq!(e.path, "storage.postgresql.url", "{url}: {e}");
        assert!(e.message.contains("percent-encode") && e.message.contains("%40"), "{url}: {e}");
        for secret in ["p@ss", "ss@db", "x:pw", "u:p", "pw@", "db"] {
            assert!(!e.to_string().contains(secret), "{url}: {e}");
        }
    }
    let c = ok(json!({"postgresql": {"url": "postgresql://u:p%40ss@db/x"}}));
    assert_eq!(c.postgresql.unwrap().url.unwrap().expose(), "postgresql://u:p%40ss@db/x");
    let e = err(json!({"postgresql": {"url": "postgres://u:p@h/db", "password": "x"}}));
    assert_eq!(e.path, "storage.postgresql.password");
    ok(json!({"postgresql": {"url": "postgres://u@h/db?sslmode=require", "password": "x"}}));
    let e = err(json!({"postgresql": {"url": "postgres://h/db", "host": "h"}}));
    assert!(e.message.contains("both url and host are set"), "{e}");

    // verify-full without a CA uses the system roots.
    ok(json!({"postgresql": {"ssl": {"enabled": true, "mode": "verify-full"}}}));
    let e = err(json!({"postgresql": {"ssl": {"mode": "require"}}}));
    assert_eq!(e.path, "storage.postgresql.ssl.mode");

    let e = err(json!({"sqlite": {"path": ""}}));
    assert_eq!(e.path, "storage.sqlite.path");
    assert!(e.message.contains("must not be empty"));
}

#[test]
fn value_ranges() {
    assert!(err(json!({"postgresql": {"port": 0}})).message.contains("between 1 and 65535"));
    assert!(err(json!({"postgresql": {"port": 70000}})).message.contains("found 70000"));
    assert!(err(json!({"sqlite": {"busyTimeout": 3_600_001}})).message.contains("at most 3600000"));
    ok(json!({"sqlite": {"busyTimeout": 3_600_000, "readPoolSize": 64}}));
    assert!(err(json!({"sqlite": {"readPoolSize": 0}})).message.contains("between 1 and 64"));
    assert!(err(json!({"postgresql": {"pool": {"maxConnections": 10_001}}})).message.contains("10000"));
    assert!(err(json!({"postgresql": {"pool": {"maxConnections": 0}}})).message.contains("between 1"));
    let e = err(json!({"postgresql": {"pool": {"minConnections": 50, "maxConnections": 20}}}));
    assert_eq!(
        e.to_string(),
        "storage.postgresql.pool.minConnections: must not exceed maxConnections (20), found 50"
    );
    assert!(err(json!({"postgresql": {"primary": {"port": 5432}}})).path.ends_with("primary.host"));
}

#[test]
fn retention_values() {
    let e = err(json!({"retention": {"executions": {"maxAge": 30}}}));
    assert_eq!(e.path, "storage.retention.executions.maxAge");
    assert!(e.message.contains("missing unit"), "{e}");
    assert!(err(json!({"retention": {"executions": {"maxAge": "30"}}})).message.contains("missing unit"));
    assert!(err(json!({"retention": {"executions": {"maxAge": "0d"}}}))
        .message
        .contains("greater than zero"));
    assert!(err(json!({"retention": {"executions": {"maxCount": 0}}})).message.contains("between 1"));
    let e = err(json!({"retention": {"cleanupSchedule": "0 25 * * *"}}));
    assert_eq!(e.path, "storage.retention.cleanupSchedule");
    assert!(e.message.contains("hour field"), "{e}");
    assert!(err(json!({"retention": {"cleanupSchedule": 5}})).message.contains("cron expression"));
    let c = ok(json!({"retention": {"auditLogs": {}}}));
    assert_eq!(c.retention.audit_logs, Some(RetentionRule { enabled: true, max_age: None, max_count: None }));
}

#[test]
fn effective_json_fills_defaults_and_hides_secrets() {
    let c = ok(json!({"type": "postgresql", "postgresql": {
        "url": "postgresql://u:hunter2@h/db", "password": null,
    }, "retention": {"executions": {"maxAge": "14d"}}}));
    let v = c.effective_json();
    assert!(!v.to_string().contains("hunter2"));
    assert_eq!(v["type"], "postgresql");
    assert_eq!(v["postgresql"]["url"], "***");
    assert_eq!(v["postgresql"]["password"], serde_json::Value::Null);
    assert_eq!(v["postgresql"]["port"], serde_json::Value::Null); // the url carries the port
    assert_eq!(v["postgresql"]["pool"]["maxIdleTime"], 300_000);
    assert_eq!(v["postgresql"]["ssl"]["mode"], "prefer");
    assert_eq!(v["postgresql"]["readPreference"], "primary");
    assert_eq!(v["postgresql"]["maxReplicaLag"], 10_000);
    assert_eq!(v["sqlite"]["busyTimeout"], 5000);
    assert_eq!(v["sqlite"]["synchronous"], "full");
    assert_eq!(v["migrations"]["autoRun"], true);
    assert_eq!(v["retention"]["executions"]["maxAge"], "14d");
    assert_eq!(v["retention"]["executions"]["maxCount"], serde_json::Value::Null);
    assert!(v.get("file").is_none());
    // The effective configuration parses back to the same thing (apart from the hidden secrets).
    let mut round = v.clone();
    round["postgresql"]["url"] = json!("postgresql://u:hunter2@h/db");
    round["postgresql"].as_object_mut().unwrap().retain(|_, v| !v.is_null());
    let again = parse(&round.to_string()).unwrap().effective_json();
    assert_eq!(again, v);

    let v = ok(json!({"postgresql": {"password": "pw"}})).effective_json();
    assert_eq!(v["postgresql"]["password"], "***");
    assert_eq!(v["type"], "sqlite");
}

#[test]
fn secret_formatting() {
    let s = Secret::new("pw");
    assert_eq!(format!("{s} {s:?}"), "*** ***");
    assert_eq!(s.expose(), "pw");
}

#[test]
fn effective_port_defaults_without_url() {
    let v = ok(json!({"postgresql": {"host": "h"}})).effective_json();
    assert_eq!(v["postgresql"]["port"], 5432);
}

const AK: &str = "AKIAEXAMPLEKEYID";
const SK: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLE";
const TOKEN: &str = "FwoGZXIvYXdzSESSIONTOKENEXAMPLE";

#[test]
fn archive_section_parses_with_defaults_and_every_key() {
    let c = ok(json!({}));
    assert_eq!(c.archive, ArchiveConfig::default());
    assert_eq!((c.archive.part_size, c.archive.max_object_bytes), (8 << 20, 256 << 20));
    assert_eq!((c.archive.retries, c.archive.timeout_ms, c.archive.allow_http), (3, 30_000, None));
    assert_eq!(c.retention.archive_destination, None);

    let c = ok(json!({"archive": {
        "endpoint": "http://127.0.0.1:9000", "region": "eu-central-1", "accessKeyId": AK,
        "secretAccessKey": SK, "sessionToken": TOKEN, "allowHttp": true,
        "maxObjectSize": 64 << 20, "partSize": 5 << 20, "retries": 0, "timeout": 2500,
    }}));
    let a = &c.archive;
    assert_eq!(a.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
    assert_eq!(a.region.as_deref(), Some("eu-central-1"));
    assert_eq!(a.access_key_id.as_deref(), Some(AK));
    assert_eq!(a.secret_access_key.as_ref().unwrap().expose(), SK);
    assert_eq!(a.session_token.as_ref().unwrap().expose(), TOKEN);
    assert_eq!(a.allow_http, Some(true));
    assert_eq!((a.max_object_bytes, a.part_size, a.retries, a.timeout_ms), (64 << 20, 5 << 20, 0, 2500));
    let debug = format!("{c:?}");
    assert!(!debug.contains(SK) && !debug.contains(TOKEN), "{debug}");
    assert_eq!(ok(json!({"archive": {"allowHttp": false}})).archive.allow_http, Some(false));
    // A larger part size lifts the default object size with it.
    let c = ok(json!({"archive": {"partSize": 512 << 20}}));
    assert_eq!(c.archive.max_object_bytes, 512 << 20);
}

#[test]
fn archive_bad_values_are_named() {
    for (archive, path, needle) in [
        (json!({"endpoint": "127.0.0.1:9000"}), "endpoint", "expected an http:// or https:// URL"),
        (json!({"endpoint": "http://"}), "endpoint", "has no host"),
        (json!({"endpoint": 9000}), "endpoint", "expected an http:// or https:// URL"),
        (json!({"endpoint": false}), "endpoint", "expected a string, found boolean false"),
        (json!({"region": ""}), "region", "must not be empty"),
        (json!({"region": true}), "region", "expected a string"),
        (json!({"accessKeyId": ["x"]}), "accessKeyId", "expected a string, found a list"),
        (json!({"secretAccessKey": false}), "secretAccessKey", "expected a string, found boolean false"),
        (json!({"sessionToken": ""}), "sessionToken", "must not be empty"),
        (json!({"allowHttp": "true"}), "allowHttp", "(write it without quotes)"),
        (json!({"allowHttp": 1}), "allowHttp", "expected a boolean"),
        (json!({"partSize": 1_000_000}), "partSize", "between 5242880 and 5368709120, found 1000000"),
        (json!({"partSize": 6u64 << 30}), "partSize", "between 5242880"),
        (json!({"partSize": "8MiB"}), "partSize", "expected an integer (bytes, at least 5242880 = 5 MiB)"),
        (
            json!({"maxObjectSize": 1_000_000}),
            "maxObjectSize",
            "at least partSize (8388608 bytes), found 1000000",
        ),
        (json!({"maxObjectSize": 0}), "maxObjectSize", "between 1"),
        (json!({"maxObjectSize": 10u64 << 40, "partSize": 5 << 20}), "maxObjectSize", "10000 parts"),
        (json!({"maxObjectSize": -1}), "maxObjectSize", "found number -1"),
        (json!({"retries": 21}), "retries", "at most 20, found 21"),
        (json!({"retries": "3"}), "retries", "(write it without quotes)"),
        (json!({"timeout": 0}), "timeout", "between 1 and 3600000"),
        (json!({"timeout": 3_600_001}), "timeout", "found 3600001"),
        (json!({"timeout": 1.5}), "timeout", "found number 1.5"),
    ] {
        let e = err(json!({ "archive": archive }));
        assert_eq!(e.path, format!("storage.archive.{path}"), "{archive}: {e}");
        assert!(e.message.contains(needle), "{archive}: {e:?} does not say {needle:?}");
    }
    let e = err(json!({"archive": {"secretAccesKey": SK}}));
    assert_eq!(e.path, "storage.archive.secretAccesKey");
    assert!(e.message.contains("did you mean `secretAccessKey`?"), "{e}");
    assert!(!e.to_string().contains(SK), "{e}");
    let e = err(json!({"archive": {"bucket": "b"}}));
    assert!(e.message.contains("valid keys here: endpoint, region, accessKeyId"), "{e}");
    let e = err(json!({"archiv": {}}));
    assert!(e.message.contains("did you mean `archive`?"), "{e}");
    let e = err(json!({"retention": {"partSize": 5 << 20}}));
    assert!(e.message.contains("belongs under storage.archive"), "{e}");
    let e = err(json!({"archive": "s3://b/"}));
    assert_eq!(e.path, "storage.archive");
    assert!(e.message.contains("expected a mapping"), "{e}");
}

#[test]
fn archive_secrets_never_appear_in_errors_debug_or_effective_json() {
    // Wrong types of the secrets and the key id: the value is never quoted.
    for key in ["secretAccessKey", "sessionToken", "accessKeyId"] {
        let e = err(json!({"archive": { key: {"nested": SK} }}));
        assert!(!e.to_string().contains(SK), "{e}");
        let e = err(json!({"archive": { key: 1.5 }}));
        assert!(!e.to_string().contains("1.5"), "{key}: {e}");
    }
    let e = err(json!({"archive": {"endpoint": format!("https://{AK}:{SK}@s3.example.com")}}));
    assert_eq!(e.path, "storage.archive.endpoint");
    assert!(e.message.contains("must not carry credentials"), "{e}");
    assert!(!e.to_string().contains(SK) && !e.to_string().contains(AK), "{e}");

    let c = ok(json!({"archive": {"accessKeyId": AK, "secretAccessKey": SK, "sessionToken": TOKEN}}));
    let v = c.effective_json();
    let text = v.to_string();
    assert!(!text.contains(SK) && !text.contains(TOKEN), "{text}");
    assert_eq!(v["archive"]["secretAccessKey"], "***");
    assert_eq!(v["archive"]["sessionToken"], "***");
    assert_eq!(v["archive"]["accessKeyId"], AK);
    assert!(!format!("{:?}", c.archive).contains(SK));
}

#[test]
fn archive_effective_json_fills_defaults_and_parses_back() {
    let c = ok(json!({"archive": {"region": "us-west-2", "timeout": 1000},
                      "retention": {"archiveDestination": "s3://backups/parallax/"}}));
    let v = c.effective_json();
    assert_eq!(
        v["archive"],
        json!({"endpoint": null, "region": "us-west-2", "accessKeyId": null, "secretAccessKey": null,
               "sessionToken": null, "allowHttp": null, "maxObjectSize": 256 << 20, "partSize": 8 << 20,
               "retries": 3, "timeout": 1000})
    );
    assert_eq!(v["retention"]["archiveDestination"], "s3://backups/parallax/");
    let again = parse(&v.to_string()).unwrap();
    assert_eq!(again.archive, c.archive);
    assert_eq!(again.effective_json(), v);
    assert_eq!(ok(json!({})).effective_json()["retention"]["archiveDestination"], serde_json::Value::Null);
}

#[test]
fn retention_archive_destination_syntax_is_checked_without_io() {
    for good in [
        "s3://backups/parallax/executions/",
        "s3://backups",
        "file:///var/backups/parallax/",
        "/var/backups/parallax",
        // Need not exist: nothing is touched until a run.
        "/definitely/not/here/parallax-archive",
    ] {
        let c = ok(json!({"retention": {"archiveDestination": good}}));
        assert_eq!(c.retention.archive_destination.as_deref(), Some(good));
    }
    let trimmed = ok(json!({"retention": {"archiveDestination": " s3://backups/p/ "}}));
    assert_eq!(trimmed.retention.archive_destination.as_deref(), Some("s3://backups/p/"));
    for (bad, needle) in [
        ("s3://Backups/", "lower-case"),
        ("s3://b/", "3 to 63"),
        ("s3://backups//x", "empty segment"),
        ("gs://backups/", "unsupported scheme"),
        ("file://relative/x", "absolute path"),
        ("backups/parallax", "relative path"),
        ("", "must not be empty"),
    ] {
        let e = err(json!({"retention": {"archiveDestination": bad}}));
        assert_eq!(e.path, "storage.retention.archiveDestination", "{bad}");
        assert!(e.message.contains(needle), "{bad}: {e:?} does not say {needle:?}");
    }
    let e = err(json!({"retention": {"archiveDestination": format!("s3://{AK}:{SK}@backups/p/")}}));
    assert!(!e.to_string().contains(SK) && !e.to_string().contains(AK), "{e}");
    let e = err(json!({"retention": {"archiveDestination": true}}));
    assert!(e.message.contains("expected a string, found boolean true"), "{e}");
}

#[test]
fn metrics_section_defaults_and_every_key() {
    let d = ok(json!({})).metrics;
    assert_eq!(d, MetricsConfig::default());
    assert!(d.enabled && d.latency_buckets.is_none());
    assert_eq!(d.quantiles, vec![0.5, 0.9, 0.95, 0.99]);
    assert_eq!((d.summary_window_ms, d.stats_interval_ms), (60_000, 30_000));
    assert_eq!(ok(json!({"metrics": null})).metrics, MetricsConfig::default());

    let c = ok(json!({"metrics": {
        "enabled": false,
        "latencyBuckets": [0.005, 0.01, 1, 2.5],
        "quantiles": [0.99, 0.5, 1, 0],
        "summaryWindow": "2m",
        "statsInterval": 1500,
    }}))
    .metrics;
    assert!(!c.enabled);
    assert_eq!(c.latency_buckets, Some(vec![0.005, 0.01, 1.0, 2.5]));
    assert_eq!(c.quantiles, vec![0.0, 0.5, 0.99, 1.0], "sorted");
    assert_eq!((c.summary_window_ms, c.stats_interval_ms), (120_000, 1500));
    let c = ok(json!({"metrics": {"summaryWindow": "1m 30s", "statsInterval": "500ms"}})).metrics;
    assert_eq!((c.summary_window_ms, c.stats_interval_ms), (90_000, 500));
}

#[test]
fn metrics_bad_values_are_named_with_the_accepted_form() {
    let e = err(json!({"metrics": {"latencyBuckets": []}}));
    assert_eq!(e.path, "storage.metrics.latencyBuckets");
    assert!(e.message.contains("must not be empty") && e.message.contains("e.g. [0.005"), "{e}");
    let e = err(json!({"metrics": {"latencyBuckets": [0.1, 0.5, 0.5]}}));
    assert_eq!(e.path, "storage.metrics.latencyBuckets[2]");
    assert!(e.message.contains("greater than the bound before it (0.5), found 0.5"), "{e}");
    let e = err(json!({"metrics": {"latencyBuckets": [1, 0.5]}}));
    assert_eq!(e.path, "storage.metrics.latencyBuckets[1]");
    let e = err(json!({"metrics": {"latencyBuckets": [0, 1]}}));
    assert_eq!(e.path, "storage.metrics.latencyBuckets[0]");
    assert!(e.message.contains("greater than 0"), "{e}");
    let e = err(json!({"metrics": {"latencyBuckets": [0.1, "1s"]}}));
    assert_eq!(e.path, "storage.metrics.latencyBuckets[1]");
    assert!(e.message.contains("expected a number, found string \"1s\""), "{e}");
    let e = err(json!({"metrics": {"latencyBuckets": 0.5}}));
    assert_eq!(e.path, "storage.metrics.latencyBuckets");
    assert!(e.message.contains("found number 0.5"), "{e}");

    let e = err(json!({"metrics": {"quantiles": [0.5, 1.5]}}));
    assert_eq!(e.path, "storage.metrics.quantiles[1]");
    assert!(e.message.contains("between 0 and 1, found 1.5") && e.message.contains("[0.5, 0.9"), "{e}");
    let e = err(json!({"metrics": {"quantiles": [-0.1]}}));
    assert_eq!(e.path, "storage.metrics.quantiles[0]");
    let e = err(json!({"metrics": {"quantiles": []}}));
    assert!(e.path == "storage.metrics.quantiles" && e.message.contains("must not be empty"), "{e}");
    let e = err(json!({"metrics": {"quantiles": [0.9, 0.5, 0.9]}}));
    assert!(e.message.contains("lists 0.9 twice"), "{e}");

    for key in ["summaryWindow", "statsInterval"] {
        let e = err(json!({"metrics": {key: 0}}));
        assert_eq!(e.path, format!("storage.metrics.{key}"));
        assert!(
            e.message.contains("between 1 ms and 1 day, found 0 ms") && e.message.contains("\"30s\""),
            "{e}"
        );
        let e = err(json!({"metrics": {key: "0s"}}));
        assert!(e.message.contains("greater than zero"), "{e}");
        let e = err(json!({"metrics": {key: "2d"}}));
        assert!(e.message.contains("found 172800000 ms"), "{e}");
        let e = err(json!({"metrics": {key: "30"}}));
        assert!(e.message.contains("missing unit"), "{e}");
        let e = err(json!({"metrics": {key: true}}));
        assert!(e.message.contains("found boolean true"), "{e}");
        let e = err(json!({"metrics": {key: 1.5}}));
        assert!(e.message.contains("found number 1.5"), "{e}");
    }
    let e = err(json!({"metrics": {"enabled": "yes"}}));
    assert_eq!(e.path, "storage.metrics.enabled");
    let e = err(json!({"metrics": {"statsIntervall": 5}}));
    assert!(
        e.path == "storage.metrics.statsIntervall" && e.message.contains("did you mean `statsInterval`"),
        "{e}"
    );
    let e = err(json!({"quantiles": [0.5]}));
    assert!(e.message.contains("belongs under storage.metrics"), "{e}");
}

#[test]
fn metrics_effective_json_fills_defaults_and_parses_back() {
    let v = ok(json!({})).effective_json();
    assert_eq!(
        v["metrics"],
        json!({"enabled": true, "latencyBuckets": null, "quantiles": [0.5, 0.9, 0.95, 0.99],
               "summaryWindow": 60000, "statsInterval": 30000})
    );
    let c = ok(json!({"metrics": {"latencyBuckets": [0.1, 1], "statsInterval": "5s", "enabled": false}}));
    let v = c.effective_json();
    assert_eq!(v["metrics"]["latencyBuckets"], json!([0.1, 1.0]));
    assert_eq!(v["metrics"]["statsInterval"], json!(5000));
    let again = parse(&v.to_string()).unwrap();
    assert_eq!(again.metrics, c.metrics);
    assert_eq!(again.effective_json(), v);
}

#[test]
fn replica_effective_json_parses_back() {
    let c = ok(json!({"type": "postgresql", "postgresql": {
        "primary": {"host": "db1", "port": 6432}, "database": "d", "username": "u",
        "replicas": [{"host": "r1"}, {"host": "r2", "port": 6433}],
        "readPreference": "replica", "maxReplicaLag": 2500,
    }}));
    let v = c.effective_json();
    let pg = &v["postgresql"];
    assert_eq!(pg["primary"], json!({"host": "db1", "port": 6432}));
    assert_eq!(pg["replicas"], json!([{"host": "r1", "port": 5432}, {"host": "r2", "port": 6433}]));
    assert_eq!(pg["readPreference"], "replica");
    assert_eq!(pg["maxReplicaLag"], 2500);
    // primary carries the port: the top-level one is not shown (it would conflict with 6432 on the way back).
    assert_eq!(pg["port"], serde_json::Value::Null);
    let mut round = v.clone();
    round["postgresql"].as_object_mut().unwrap().retain(|_, v| !v.is_null());
    assert_eq!(parse(&round.to_string()).unwrap().effective_json(), v);
}

#[test]
fn query_timeout_defaults_to_30s_and_refuses_bad_values_by_name() {
    let pg = |v: serde_json::Value| json!({"type": "postgresql", "postgresql": v});
    let c = ok(pg(json!({"host": "h", "database": "d", "username": "u"})));
    assert_eq!(c.postgresql.unwrap().query_timeout_ms, 30_000);
    let c = ok(pg(json!({"host": "h", "database": "d", "username": "u", "queryTimeout": 0})));
    assert_eq!(c.postgresql.unwrap().query_timeout_ms, 0, "0: no limit");
    for bad in [json!("banana"), json!(-5), json!(1.5)] {
        let e =
            err(pg(json!({"host": "h", "database": "d", "username": "u", "queryTimeout": bad}))).to_string();
        assert!(e.contains("storage.postgresql.queryTimeout") && e.contains("milliseconds"), "{e}");
    }
}
