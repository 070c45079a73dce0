//! Behaviour of the boundary itself: plugin info, logs with fields reaching the host, several instances from
//! one loaded module, config errors through the loaded plugin.

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use parallax_storage_host::{abi::*, logs};
use serde_json::json;

#[test]
fn info_describes_the_build() {
    let info = plugin().info();
    assert_eq!(info.abi_version, ABI_VERSION);
    assert!(!info.plugin_version.is_empty());
    let sqlite = info.backends.iter().find(|b| b.name == "sqlite").expect("sqlite backend");
    assert!(sqlite.available);
    assert!(sqlite.migrations.iter().any(|v| v.starts_with("20240115")), "{:?}", sqlite.migrations);
    for b in info.backends.iter().filter(|b| !b.available) {
        assert!(!b.note.is_empty(), "an unavailable backend says why: {b:?}");
    }
}

#[tokio::test]
async fn plugin_logs_reach_the_host_with_fields() {
    let seen: Arc<Mutex<Vec<logs::PluginLog>>> = Arc::default();
    let sink = seen.clone();
    logs::set_hook(move |l| sink.lock().unwrap().push(l.clone()));
    let h = sqlite().await;
    h.storage.shutdown().await.unwrap();
    let seen = seen.lock().unwrap();
    let opened = seen
        .iter()
        .find(|l| l.message.contains("SQLite storage opened"))
        .unwrap_or_else(|| panic!("no 'opened' event among {seen:?}"));
    assert_eq!(opened.level, LogLevel::Info);
    assert!(opened.target.starts_with("parallax_storage"), "{opened:?}");
    let path = opened.fields.iter().find(|(k, _)| k == "path").expect("the path field");
    assert!(path.1.ends_with("parallax.db"), "{path:?}");
}

#[tokio::test]
async fn one_module_opens_many_independent_instances() {
    let a = sqlite().await;
    let b = sqlite().await;
    a.storage.put_pattern(new_pattern("only-in-a", "1.0.0")).await.unwrap();
    assert_eq!(b.storage.get_pattern("only-in-a", "1.0.0").await.unwrap_err().kind, ErrorKind::NotFound);
    a.storage.shutdown().await.unwrap();
    // b keeps working after a is shut down.
    b.storage.put_pattern(new_pattern("in-b", "1.0.0")).await.unwrap();
    b.storage.shutdown().await.unwrap();
}

#[test]
fn config_errors_name_the_key_and_the_fix() {
    let p = plugin();
    let check = |cfg: serde_json::Value| p.check_config(&cfg).unwrap_err();

    let e = check(json!({ "sqlite": { "busyTimout": 100 } }));
    assert_eq!(e.kind, ErrorKind::InvalidInput);
    assert!(e.message.contains("storage.sqlite.busyTimout") && e.message.contains("busyTimeout"), "{e}");

    let e = check(json!({ "sqlite": { "busyTimeout": "soon" } }));
    assert!(e.message.contains("storage.sqlite.busyTimeout") && e.message.contains("soon"), "{e}");

    let e = check(json!({ "type": "postgres" }));
    assert!(e.message.contains("postgresql"), "{e}");

    let e = check(json!({ "retention": { "executions": { "maxAge": "30 parsecs" } } }));
    assert!(
        e.message.contains("storage.retention.executions.maxAge") && e.message.contains("30 parsecs"),
        "{e}"
    );

    let e = check(json!({ "retention": { "cleanupSchedule": "0 25 * * *" } }));
    assert!(e.message.contains("cleanupSchedule") && e.message.contains("hour field \"25\""), "{e}");

    // Opening refuses the same way, and nothing is created.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("x.db");
    let e = p.open(&json!({ "sqlite": { "path": db, "wallMode": true } })).unwrap_err();
    assert!(e.message.contains("walMode"), "{e}");
    assert!(!db.exists(), "a refused config must not create the database");
}

#[test]
fn defaults_and_not_yet_enforced_keys_are_reported() {
    let report = plugin().check_config(&json!({})).unwrap();
    assert_eq!(report.backend, "sqlite");
    let eff: serde_json::Value = serde_json::from_str(&report.effective_json).unwrap();
    assert_eq!(eff["sqlite"]["path"], "./parallax.db");
    assert_eq!(eff["sqlite"]["walMode"], true);
    assert_eq!(eff["sqlite"]["busyTimeout"], 5000);
    assert!(report.warnings.is_empty());

    let report = plugin()
        .check_config(&json!({
            "retention": { "executions": { "enabled": true, "maxAge": "30d", "maxCount": 100000 },
                           "cleanupSchedule": "0 2 * * *" }
        }))
        .unwrap();
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("storage.retention.executions") && w.contains("not enforced")),
        "{:?}",
        report.warnings
    );
}

#[test]
fn secrets_never_appear_in_reports() {
    let cfg = json!({
        "type": "postgresql",
        "postgresql": { "host": "db.example.com", "database": "parallax", "username": "parallax",
                        "password": "hunter2-secret" }
    });
    let report = plugin().check_config(&cfg).unwrap();
    assert!(!report.effective_json.contains("hunter2-secret"), "{}", report.effective_json);
    // Port 1 on loopback: refused at once, no network needed.
    let url = "postgres://u:hunter2-secret@127.0.0.1:1/parallax";
    let cfg = json!({ "type": "postgresql", "postgresql": { "url": url } });
    let report = plugin().check_config(&cfg).unwrap();
    assert!(!report.effective_json.contains("hunter2-secret"), "{}", report.effective_json);
    // Opening fails (nothing listens there) and says where it tried, without the secret.
    let e = plugin().open(&cfg).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unavailable, "{e}");
    assert!(e.message.contains("127.0.0.1:1") && !e.message.contains("hunter2"), "{e}");
}

#[tokio::test]
async fn host_config_file_resolution_feeds_the_plugin() {
    use parallax_storage_host::config;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("parallax.config.yaml");
    std::fs::write(
        &file,
        format!(
            "server:\n  port: 8080\nstorage:\n  type: sqlite\n  sqlite:\n    path: {}/${{DB_NAME:-fallback}}.db\n    busyTimeout: ${{BUSY}}\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let env = |k: &str| (k == "BUSY").then(|| "2500".to_string());
    let resolved = config::resolve(Some(&file), &env).unwrap();
    assert_eq!(resolved.storage["sqlite"]["busyTimeout"], 2500);
    let s = plugin().open(&resolved.storage).unwrap();
    s.put_pattern(new_pattern("from-yaml", "1.0.0")).await.unwrap();
    s.shutdown().await.unwrap();
    assert!(dir.path().join("fallback.db").exists());

    let no_env = |_: &str| None;
    let err = config::resolve(Some(&file), &no_env).unwrap_err().to_string();
    assert!(
        err.contains("${BUSY}") && err.contains("storage.sqlite.busyTimeout") && !err.contains('\n'),
        "{err}"
    );
}
