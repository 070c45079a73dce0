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
    let w = c.warnings();
    assert_eq!(w.len(), 3, "{w:?}");
    assert!(w.iter().any(|s| s.starts_with("storage.postgresql.readPreference ")));
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
