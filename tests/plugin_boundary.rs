//! Behaviour of the boundary itself: plugin info, logs with fields reaching the host, several instances from
//! one loaded module, config errors through the loaded plugin, and ABI compatibility across versions: a plugin
//! of ABI 2.0.0 (the frozen copy in `plugin/testing/abi-2.0/`) in this host, this plugin in a 2.0.0 host, a
//! plugin of another major refused, maintenance documents, and open-enum values a peer does not know.

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use parallax_storage_abi::{
    maintenance::{self, MAINTENANCE_SINCE},
    ABI_VERSION,
};
use parallax_storage_host::*;
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
    let eff: serde_json::Value = serde_json::from_str(report.effective.as_str()).unwrap();
    assert_eq!(eff["sqlite"]["path"], "./parallax.db");
    assert_eq!(eff["sqlite"]["walMode"], true);
    assert_eq!(eff["sqlite"]["busyTimeout"], 5000);
    assert!(report.warnings.is_empty());

    // Retention is enforced: a complete policy draws no warning, rules without a schedule do.
    let report = plugin()
        .check_config(&json!({
            "retention": { "executions": { "enabled": true, "maxAge": "30d", "maxCount": 100000 },
                           "cleanupSchedule": "0 2 * * *" }
        }))
        .unwrap();
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    let report =
        plugin().check_config(&json!({ "retention": { "auditLogs": { "maxAge": "90d" } } })).unwrap();
    assert!(report.warnings.iter().any(|w| w.contains("cleanupSchedule is not")), "{:?}", report.warnings);
}

#[test]
fn secrets_never_appear_in_reports() {
    let cfg = json!({
        "type": "postgresql",
        "postgresql": { "host": "db.example.com", "database": "parallax", "username": "parallax",
                        "password": "hunter2-secret" }
    });
    let report = plugin().check_config(&cfg).unwrap();
    assert!(!report.effective.as_str().contains("hunter2-secret"), "{}", report.effective);
    // Port 1 on loopback: refused at once, no network needed.
    let url = "postgres://u:hunter2-secret@127.0.0.1:1/parallax";
    let cfg = json!({ "type": "postgresql", "postgresql": { "url": url } });
    let report = plugin().check_config(&cfg).unwrap();
    assert!(!report.effective.as_str().contains("hunter2-secret"), "{}", report.effective);
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

// ------------------------------------------------------------------ ABI compatibility

#[tokio::test]
async fn a_plugin_built_at_abi_2_0_works_in_this_host() {
    // The frozen ABI is the previous minor of this one: the test means something only while that holds.
    assert!(maintenance::abi_has(ABI_VERSION, "2.0.0") && ABI_VERSION != "2.0.0", "{ABI_VERSION}");
    let old = Plugin::load(&compat::fixtures().old_plugin).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(old.info().abi_version, "2.0.0");
    let s = old.open(&json!({})).unwrap_or_else(|e| panic!("open: {e}"));
    assert_eq!(s.plugin_abi_version(), "2.0.0");

    // The calls of 2.0.0 work.
    let p = s.put_pattern(new_pattern("old-plugin", "1.0.0")).await.unwrap();
    assert_eq!(s.get_pattern("old-plugin", "1.0.0").await.unwrap(), p);
    assert_kind(s.get_pattern("old-plugin", "9.0.0").await, ErrorKind::NotFound, "9.0.0");
    let e = s.create_execution(new_execution("old-plugin", "1.0.0")).await.unwrap();
    let got = s.get_execution(e.id).await.unwrap();
    assert_eq!(got, e);
    assert_eq!(got.status, ExecutionStatus::Running);
    s.ping(PingMode::Echo).await.unwrap();

    // The call appended in 2.1.0 answers `Unsupported`, naming both versions: through the client ...
    let err = s.describe().await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unsupported, "{err}");
    assert!(
        err.message.contains("maintenance")
            && err.message.contains("2.0.0")
            && err.message.contains(ABI_VERSION),
        "{err}"
    );
    // The retention calls ride on it: an old plugin answers them `Unsupported` too, and nothing is removed.
    let params = parallax_storage_host::retention::CleanupParams {
        target: parallax_storage_host::retention::CleanupTarget::Executions,
        older_than: Some("1s".into()),
        max_count: None,
        dry_run: false,
        include_unfinished: true,
        confirm_all: true,
    };
    assert_kind(s.cleanup(&params).await, ErrorKind::Unsupported, "maintenance");
    assert_kind(s.retention_status().await, ErrorKind::Unsupported, "maintenance");
    // So do the archive calls (issue 13): nothing is written to the destination, nothing removed.
    use parallax_storage_host::archive::{ArchiveParams, RestoreParams, VerifyParams};
    let dest = tempfile::tempdir().unwrap();
    let destination = dest.path().display().to_string();
    let archive = ArchiveParams {
        target: parallax_storage_host::retention::CleanupTarget::Executions,
        older_than: Some("1s".into()),
        max_count: None,
        destination: destination.clone(),
        dry_run: false,
        keep: false,
        confirm_all: true,
    };
    assert_kind(s.archive(&archive).await, ErrorKind::Unsupported, "maintenance");
    assert_kind(
        s.archive_verify(&VerifyParams { source: destination.clone() }).await,
        ErrorKind::Unsupported,
        "maintenance",
    );
    assert_kind(
        s.restore(&RestoreParams { source: destination, dry_run: false }).await,
        ErrorKind::Unsupported,
        "maintenance",
    );
    assert_eq!(std::fs::read_dir(dest.path()).unwrap().count(), 0, "the old plugin wrote an archive");
    assert_eq!(s.get_execution(e.id).await.unwrap(), got);
    // And the metrics (issue 14): an old plugin has no registry to render, so a host's `/metrics` gets a clear
    // `Unsupported` naming both versions, never an empty exposition that would look like a healthy plugin.
    let err = s.metrics().await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unsupported, "{err}");
    assert!(
        err.message.contains("maintenance")
            && err.message.contains("2.0.0")
            && err.message.contains(ABI_VERSION),
        "{err}"
    );
    assert_kind(s.metrics_text().await, ErrorKind::Unsupported, "maintenance");
    // ... and through the raw trait object, where abi_stable finds no vtable entry and runs the trait's default
    // body in the host (no panic, no made-up answer).
    let old_raw = raw::open_with(raw::load(&compat::fixtures().old_plugin), &json!({}));
    let describe = maintenance::MaintenanceRequest::describe().to_json();
    let err = raw::plain(old_raw.maintenance(describe.into()).await).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unsupported, "{err}");
    assert!(err.message.contains(MAINTENANCE_SINCE) && err.message.contains(ABI_VERSION), "{err}");
    raw::plain(old_raw.shutdown().await).unwrap();

    // The old instance still answers afterwards, and the current plugin works alongside it in this process.
    assert_eq!(s.count_executions(ExecutionFilter::default()).await.unwrap(), 1);
    let h = sqlite().await;
    assert_eq!(h.storage.describe().await.unwrap().abi_version, ABI_VERSION);
    h.finish().await;
    s.shutdown().await.unwrap();
}

#[test]
fn this_plugin_works_in_a_host_built_at_abi_2_0() {
    let host = &compat::fixtures().old_host;
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(host)
        .arg(fresh_plugin_library())
        .arg(dir.path())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", host.display()));
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the ABI 2.0.0 host failed: {stdout}{stderr}");
    assert!(stdout.starts_with("OK: "), "{stdout}");
    assert!(
        stdout.contains(&format!("(ABI {ABI_VERSION})")) && stdout.contains("host of ABI 2.0.0"),
        "{stdout}"
    );
    assert!(dir.path().join("old-host.db").is_file(), "the old host's calls reached SQLite");
}

#[test]
fn a_plugin_of_another_abi_major_is_refused_in_one_line() {
    let lib = built_library("parallax_incompatible_plugin");
    let err = Plugin::load(&lib).unwrap_err().to_string();
    println!("{err}");
    assert!(!err.contains('\n'), "the error must be one line: {err}");
    assert!(err.contains("incompatible") && err.contains(&lib.display().to_string()), "{err}");
    assert_eq!(Plugin::load(&lib).unwrap_err().kind(), LoadErrorKind::Incompatible);
    assert!(err.contains("3.0.0"), "names the plugin's ABI version: {err}");
    assert!(err.contains(ABI_VERSION), "names the host's ABI version: {err}");
}

#[test]
fn a_plugin_of_an_older_abi_major_is_refused_as_stale_in_one_line() {
    let lib = built_library("parallax_stale_plugin");
    let err = Plugin::load(&lib).unwrap_err();
    let text = err.to_string();
    println!("{text}");
    assert_eq!(err.kind(), LoadErrorKind::Stale, "{text}");
    assert!(!text.contains('\n'), "the error must be one line: {text}");
    assert!(text.contains("stale") && text.contains(&lib.display().to_string()), "{text}");
    assert!(text.contains("1.0.0"), "names the plugin's ABI version: {text}");
    assert!(text.contains(ABI_VERSION), "names the host's ABI version: {text}");
}

#[tokio::test]
async fn maintenance_documents_are_versioned_and_unknown_ones_refused_by_name() {
    let h = sqlite().await;
    let d: Describe = h.storage.describe().await.unwrap();
    assert_eq!(d.abi_version, ABI_VERSION);
    assert_eq!(d.plugin_version, plugin().info().plugin_version.as_str());
    assert!(d.ops.contains(&OpVersions { op: "describe".into(), versions: vec![1] }), "{d:?}");

    let unknown_op = MaintenanceRequest::new("replicate", 1, json!({ "to": "s3://bucket" }));
    assert_kind(h.storage.maintenance(&unknown_op).await, ErrorKind::Unsupported, "\"replicate\"");
    let unknown_version = MaintenanceRequest::new("describe", 99, serde_json::Value::Null);
    assert_kind(h.storage.maintenance(&unknown_version).await, ErrorKind::Unsupported, "version 99");
    // An envelope the plain API cannot write (no version), from a host on the ABI alone.
    let r = h.raw();
    assert_kind(
        raw::plain(r.storage.maintenance(r#"{"op":"describe"}"#.into()).await),
        ErrorKind::InvalidInput,
        "version",
    );
    r.finish().await;
    h.finish().await;
}

#[tokio::test]
async fn values_this_plugin_does_not_know_are_refused_not_stored() {
    // A host of a newer ABI minor may send an enum value this plugin was not built with.
    let h = sqlite().await;
    let s = &h.storage;
    let future = ExecutionStatus::Unknown(200);
    assert_eq!((future.as_str(), future.to_string().as_str()), ("unknown", "unknown (200)"));
    let mut e = new_execution("p", "1.0.0");
    e.status = future;
    assert_kind(s.create_execution(e).await, ErrorKind::InvalidInput, "unknown (200)");

    let running = s.create_execution(new_execution("p", "1.0.0")).await.unwrap();
    let u = ExecutionUpdate { status: Some(future), ..Default::default() };
    assert_kind(s.update_execution(running.id, u).await, ErrorKind::InvalidInput, "unknown (200)");
    let filter = ExecutionFilter { statuses: vec![future], ..Default::default() };
    assert_kind(s.count_executions(filter).await, ErrorKind::InvalidInput, "unknown (200)");
    let event = NewEvent::new(EventKind::Unknown(7), json!({}));
    assert_kind(s.append_event(running.id, event).await, ErrorKind::InvalidInput, "unknown (7)");
    assert!(s.list_events(running.id).await.unwrap().is_empty());
    assert_kind(s.ping(PingMode::Unknown(250)).await, ErrorKind::Unsupported, "unknown (250)");
    assert_eq!(s.get_execution(running.id).await.unwrap().status, ExecutionStatus::Running);
    h.finish().await;
}
