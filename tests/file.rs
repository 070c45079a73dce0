//! The contract suite on the file store in all four encodings, plus file-store behaviour: mixed stores,
//! the lock between processes, damaged and hand-edited files.

mod common;
mod contract;
#[path = "common/file_gen.rs"]
mod file_gen;

mod yaml {
    use crate::{contract_suite, contract_tests};
    contract_suite!(crate::common::file::yaml);
}

mod json {
    use crate::{contract_suite, contract_tests};
    contract_suite!(crate::common::file::json);
}

mod yaml_gz {
    use crate::{contract_suite, contract_tests};
    contract_suite!(crate::common::file::yaml_gz);
}

mod json_gz {
    use crate::{contract_suite, contract_tests};
    contract_suite!(crate::common::file::json_gz);
}

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use common::{file::*, *};
use parallax_storage_host::*;
use serde_json::json;

/// 2024-01-15T00:00:00Z in microseconds.
const T0: i64 = 1_705_276_800_000_000;

// ------------------------------------------------------------------ layout, encodings, names

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layout_is_documented_and_browsable() {
    let h = yaml_gz().await;
    let base = base(&h);
    let s = &h.storage;
    s.put_pattern(new_pattern("summarize", "1.0.0+build.5")).await.unwrap();
    let mut e = new_execution("summarize", "1.0.0");
    e.started_at = Some(at(T0 + 37_815_123_456)); // 10:30:15.123456
    let e = s.create_execution(e).await.unwrap();
    s.append_event(e.id, event(json!({ "step": 1 }))).await.unwrap();
    let mut a = audit("pattern.create", "alice");
    a.timestamp = Some(at(T0 + 1));
    s.append_audit(vec![a]).await.unwrap();

    assert!(base.join("manifest.yaml").is_file() && base.join("README.txt").is_file());
    let readme = std::fs::read_to_string(base.join("README.txt")).unwrap();
    assert!(readme.contains("executions/<YYYY>/<MM>/<DD>/<HHMMSS.ffffff>_<id>.<ext>"), "{readme}");
    let pid = std::fs::read_to_string(base.join(".lock")).unwrap();
    assert_eq!(pid.trim(), std::process::id().to_string(), "the lock file names its holder");
    assert!(base.join("patterns/summarize/1.0.0%2Bbuild.5.yaml.gz").is_file());
    let exec = base.join(format!("executions/2024/01/15/103015.123456_{}.yaml.gz", e.id));
    assert!(exec.is_file(), "{:?}", files(&base));
    assert!(base
        .join(format!("executions/2024/01/15/103015.123456_{}.events/000001.yaml.gz", e.id))
        .is_file());
    let day = base.join("audit/2024-01-15");
    assert_eq!(files(&day).len(), 1);
    // Compressed files are plain gzip: the standard tool reads them, and they are YAML inside.
    let out = Command::new("gzip").arg("-dc").arg(&exec).output().expect("gzip is installed");
    assert!(out.status.success());
    let doc: serde_json::Value = serde_yaml_ng::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["id"], json!(e.id.to_string()));
    assert_eq!(doc["started_at"], json!("2024-01-15T10:30:15.123456Z"));
    assert_eq!(doc["input"], json!({ "q": "hello" }), "documents are structures, not strings");
    // No temporary files are left behind by acknowledged writes.
    assert!(files(&base).iter().all(|p| !p.to_string_lossy().contains(".~")));

    let health = s.health().await.unwrap();
    assert_eq!(health.backend, "file");
    assert_eq!(health.location, base.display().to_string());
    let v = health.server_version.as_str();
    assert!(
        v.contains("format 2") && v.contains(" files") && v.contains(" free") && v.contains("yaml.gz"),
        "{v}"
    );
    let info = plugin().info();
    let file = info.backends.iter().find(|b| b.name == "file").unwrap();
    assert!(file.available && file.migrations.iter().map(|m| m.as_str()).eq(["1", "2"]));
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_store_reads_every_file_by_its_extension() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = |format: &str, compress: bool| config(dir.path(), format, compress);
    let s = open_ok(&cfg("yaml", false));
    s.put_pattern(new_pattern("mixed", "1.0.0")).await.unwrap();
    let e1 = s.create_execution(new_execution("mixed", "1.0.0")).await.unwrap();
    s.append_event(e1.id, event(json!(1))).await.unwrap();
    let a1 = s.append_audit(vec![audit("one", "mixer")]).await.unwrap();
    s.shutdown().await.unwrap();

    let s = open_ok(&cfg("json", true));
    s.put_pattern(new_pattern("mixed", "2.0.0")).await.unwrap();
    let e2 = s.create_execution(new_execution("mixed", "1.0.0")).await.unwrap();
    s.append_event(e1.id, event(json!(2))).await.unwrap();
    let upd = ExecutionUpdate { output: Some(common::doc("{\"half\": true}")), ..Default::default() };
    s.update_execution(e1.id, upd).await.unwrap();
    let a2 = s.append_audit(vec![audit("two", "mixer")]).await.unwrap();
    s.shutdown().await.unwrap();

    let s = open_ok(&cfg("json", false));
    let e3 = s.create_execution(new_execution("mixed", "1.0.0")).await.unwrap();
    let versions: Vec<String> =
        s.list_pattern_versions("mixed").await.unwrap().iter().map(|p| p.version.to_string()).collect();
    assert_eq!(versions, ["2.0.0", "1.0.0"]);
    let got = s.get_execution(e1.id).await.unwrap();
    assert_eq!(got.output.as_ref().map(|o| o.as_str()), Some("{\"half\":true}"));
    assert_eq!(
        s.list_events(e1.id).await.unwrap().iter().map(|e| e.payload.to_string()).collect::<Vec<_>>(),
        ["1", "2"]
    );
    s.get_execution(e2.id).await.unwrap();
    let q = AuditQuery { actor: Some("mixer".into()), ..Default::default() };
    let ids: Vec<String> =
        s.query_audit(q, page(10, None)).await.unwrap().items.iter().map(|a| a.id.to_string()).collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&a1[0].to_string()) && ids.contains(&a2[0].to_string()));
    s.shutdown().await.unwrap();

    let base = dir.path().join("store");
    let ext = |needle: &str| ext_of(&find(&base, needle, ""));
    assert_eq!(ext(&format!("_{}.", e1.id)), "yaml", "a rewrite keeps the file's own format");
    assert_eq!(ext(&format!("_{}.", e2.id)), "json.gz");
    assert_eq!(ext(&format!("_{}.", e3.id)), "json");
    let exec1 = find(&base, &format!("_{}.", e1.id), "yaml").display().to_string();
    let events = PathBuf::from(format!("{}.events", exec1.strip_suffix(".yaml").unwrap()));
    let kinds: Vec<String> = files(&events).iter().map(|p| ext_of(p)).collect();
    assert_eq!(kinds, ["yaml", "json.gz"]);
    assert_eq!(ext_of(&base.join("manifest.yaml")), "yaml", "the manifest keeps its first format");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_are_escaped_into_safe_reversible_file_names() {
    let h = json().await;
    let base = base(&h);
    let long = "é".repeat(255);
    let names = ["a/b", "..", ".hidden", "x y", "ünï/../..", "%41", "CON", long.as_str()];
    for n in names {
        h.storage.put_pattern(new_pattern(n, "1.0.0-rc.1+b")).await.unwrap();
    }
    h.storage.shutdown().await.unwrap();
    let patterns = base.join("patterns");
    for f in files(&patterns) {
        let rel = f.strip_prefix(&patterns).unwrap();
        assert_eq!(rel.components().count(), 2, "one directory per name: {rel:?}");
        let dir = rel.components().next().unwrap().as_os_str().to_str().unwrap();
        assert!(!dir.starts_with('.') && dir.len() <= 200, "{dir}");
    }
    assert!(patterns.join("a%2Fb/1.0.0-rc.1%2Bb.json").is_file());
    assert!(patterns.join("%2E./1.0.0-rc.1%2Bb.json").is_file());
    let s = h.reopen();
    for n in names {
        assert_eq!(s.get_pattern(n, "1.0.0-rc.1+b").await.unwrap().name, n);
    }
    assert_eq!(s.list_patterns(page(100, None)).await.unwrap().items.len(), names.len());
    s.delete_pattern("a/b", "1.0.0-rc.1+b").await.unwrap();
    assert!(!patterns.join("a%2Fb").exists(), "an emptied name directory is removed");
    s.shutdown().await.unwrap();
    h.finish().await;
}

// ------------------------------------------------------------------ format versions

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn format_version_one_is_applied_by_creating_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), "yaml", false);
    cfg["migrations"] = json!({ "autoRun": false });
    let err = open_err(&cfg);
    assert_eq!(err.kind, ErrorKind::Schema, "{err}");
    assert!(err.message.contains("does not exist yet") && err.message.contains("migrate up"), "{err}");
    let s = plugin().open_with(&cfg, OpenOptions { maintenance: true }).unwrap();
    let status = s.migration_status().await.unwrap();
    assert!(status.len() == 2 && status.iter().all(|m| !m.applied), "{status:?}");
    assert_kind(s.get_latest_pattern("x").await, ErrorKind::Schema, "migrate up");
    assert_kind(s.create_execution(new_execution("x", "1.0.0")).await, ErrorKind::Schema, "migrate up");
    let health = s.health().await.unwrap();
    assert_eq!((health.pending_migrations, health.schema_version.is_none()), (2, true));
    assert_kind(s.migrate_down().await, ErrorKind::InvalidInput, "nothing to roll back");
    let up = s.migrate_to("1").await.unwrap();
    assert_eq!(up.applied.iter().map(|v| v.as_str()).collect::<Vec<_>>(), ["1"]);
    s.put_pattern(new_pattern("created", "1.0.0")).await.unwrap();
    s.shutdown().await.unwrap();
    // Format 2 (the audit chain) is pending: refused without autoRun, applied by `migrate up`.
    let err = open_err(&cfg);
    assert!(err.kind == ErrorKind::Schema && err.message.contains("format version 2 is pending"), "{err}");
    let s = plugin().open_with(&cfg, OpenOptions { maintenance: true }).unwrap();
    let up = s.migrate_up().await.unwrap();
    assert_eq!(up.applied.iter().map(|v| v.as_str()).collect::<Vec<_>>(), ["2"]);
    s.shutdown().await.unwrap();
    let s = open_ok(&cfg);
    s.get_pattern("created", "1.0.0").await.unwrap();
    s.shutdown().await.unwrap();

    // A manifest from a newer plugin is refused; a directory that is not a store is never taken over.
    let manifest = dir.path().join("store/manifest.yaml");
    let text = std::fs::read_to_string(&manifest).unwrap().replace("format_version: 2", "format_version: 3");
    std::fs::write(&manifest, text).unwrap();
    let err = open_err(&cfg);
    assert!(err.kind == ErrorKind::Schema && err.message.contains("newer"), "{err}");
    let foreign = tempfile::tempdir().unwrap();
    std::fs::write(foreign.path().join("important.txt"), "keep me").unwrap();
    let fcfg = json!({ "type": "file", "file": { "basePath": foreign.path() } });
    let err = open_err(&fcfg);
    assert!(
        err.kind == ErrorKind::InvalidInput && err.message.contains("not a Parallax file store"),
        "{err}"
    );
    assert_eq!(files(foreign.path()).len(), 1, "nothing was created in a foreign directory");
    let err = open_err(&json!({ "type": "file", "file": { "basePath": "/nonexistent/dir/store" } }));
    assert!(err.kind == ErrorKind::InvalidInput && err.message.contains("does not exist"), "{err}");
}

// ------------------------------------------------------------------ damaged and hand-edited files

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_files_are_skipped_named_and_do_not_stop_the_store() {
    logs();
    let h = yaml().await;
    let base = base(&h);
    let s = &h.storage;
    s.put_pattern(new_pattern("dmg", "1.0.0")).await.unwrap();
    s.put_pattern(new_pattern("dmg", "2.0.0")).await.unwrap();
    s.put_pattern(new_pattern("fine", "1.0.0")).await.unwrap();
    let torn = s.create_execution(new_execution("dmg", "1.0.0")).await.unwrap();
    let edited = s.create_execution(new_execution("dmg", "1.0.0")).await.unwrap();
    let with_events = s.create_execution(new_execution("dmg", "1.0.0")).await.unwrap();
    s.append_event(with_events.id, event(json!(1))).await.unwrap();
    s.append_event(with_events.id, event(json!(2))).await.unwrap();
    let mut bad_batch = audit("lost", "auditor");
    bad_batch.timestamp = Some(at(T0));
    s.append_audit(vec![bad_batch]).await.unwrap();
    let kept = s.append_audit(vec![audit("kept", "auditor")]).await.unwrap();
    s.shutdown().await.unwrap();

    // A torn file, a valid hand edit, broken YAML, a wrong event, a bad audit batch, and litter.
    let torn_path = find(&base, &torn.id.to_string(), ".yaml");
    let bytes = std::fs::read(&torn_path).unwrap();
    std::fs::write(&torn_path, &bytes[..bytes.len() / 2]).unwrap();
    let edited_path = find(&base, &edited.id.to_string(), ".yaml");
    let text = std::fs::read_to_string(&edited_path).unwrap().replace("q: hello", "q: edited by hand");
    std::fs::write(&edited_path, text).unwrap();
    let pattern_path = base.join("patterns/dmg/1.0.0.yaml");
    std::fs::write(&pattern_path, "definition: [unclosed\n").unwrap();
    let event_path = PathBuf::from(format!(
        "{}.events/000002.yaml",
        find(&base, &with_events.id.to_string(), ".yaml")
            .display()
            .to_string()
            .strip_suffix(".yaml")
            .unwrap()
    ));
    std::fs::write(&event_path, "seq: 7\n").unwrap();
    let audit_path = files(&base.join("audit/2024-01-15"))[0].clone();
    std::fs::write(&audit_path, "entries: 5\n").unwrap();
    let temp = torn_path.with_file_name(".~x.yaml.1.2.tmp");
    std::fs::write(&temp, "half a write").unwrap();
    std::fs::write(base.join("patterns/notes.txt"), "an operator's notes").unwrap();

    let s = h.reopen();
    let named = |r: Result<_, Error>, path: &Path| {
        let e = r.expect_err("reading a damaged record fails");
        assert_eq!(e.kind, ErrorKind::Internal, "{e}");
        assert!(e.message.contains(&path.display().to_string()) && e.message.contains("damaged"), "{e}");
    };
    named(s.get_execution(torn.id).await.map(drop), &torn_path);
    named(s.get_pattern("dmg", "1.0.0").await.map(drop), &pattern_path);
    named(s.get_latest_pattern("dmg").await.map(drop), &pattern_path);
    named(s.list_events(with_events.id).await.map(drop), &event_path);
    for p in [&torn_path, &pattern_path, &event_path, &audit_path] {
        assert!(warned(&p.display().to_string()), "no warning names {}", p.display());
    }
    // The rest of the store is there, hand edits included.
    let got = s.get_execution(edited.id).await.unwrap();
    assert_eq!(got.input.as_ref().map(|i| i.as_str()), Some("{\"q\":\"edited by hand\"}"));
    assert_eq!(s.get_pattern("dmg", "2.0.0").await.unwrap().version, "2.0.0");
    s.get_pattern("fine", "1.0.0").await.unwrap();
    assert_eq!(s.count_executions(ExecutionFilter::default()).await.unwrap(), 2);
    let q = AuditQuery { actor: Some("auditor".into()), ..Default::default() };
    let left: Vec<String> =
        s.query_audit(q, page(10, None)).await.unwrap().items.iter().map(|a| a.id.to_string()).collect();
    assert_eq!(left, kept.iter().map(|id| id.to_string()).collect::<Vec<_>>());
    assert!(!temp.exists(), "stray temporary files are removed on open");
    assert!(base.join("patterns/notes.txt").exists(), "unknown files are left alone");
    let warnings: Vec<String> = s.health().await.unwrap().warnings.iter().map(|w| w.to_string()).collect();
    assert!(warnings.iter().any(|w| w.starts_with("4 file(s) could not be read")), "{warnings:?}");
    assert!(warnings.iter().any(|w| w.contains(&torn_path.display().to_string())), "{warnings:?}");
    // The damaged id stays taken; a damaged pattern version can be deleted, then stored again.
    let mut again = new_execution("dmg", "1.0.0");
    again.id = Some(torn.id);
    assert_kind(s.create_execution(again).await, ErrorKind::Conflict, "already exists");
    assert_kind(s.put_pattern(new_pattern("dmg", "1.0.0")).await, ErrorKind::Conflict, "damaged");
    s.delete_pattern("dmg", "1.0.0").await.unwrap();
    assert_eq!(s.get_latest_pattern("dmg").await.unwrap().version, "2.0.0");
    s.put_pattern(new_pattern("dmg", "1.0.0")).await.unwrap();
    s.shutdown().await.unwrap();
    h.finish().await;
}

// ------------------------------------------------------------------ child processes

/// Not a test of its own: the child side of the tests below, which run this binary again with
/// `PARALLAX_FILE_TEST_CHILD` set. In a normal run it returns at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_process() {
    let Ok(role) = std::env::var(CHILD_ROLE) else { return };
    let config: serde_json::Value = serde_json::from_str(&std::env::var(CHILD_CONFIG).unwrap()).unwrap();
    match role.as_str() {
        "probe" => match plugin().open(&config) {
            Ok(_) => println!("PROBE opened"),
            Err(e) => println!("PROBE {:?} {}", e.kind, e.message),
        },
        "hold" => {
            let _s = open_ok(&config);
            println!("READY {}", std::process::id());
            tokio::time::sleep(Duration::from_secs(120)).await;
        }
        other => panic!("unknown child role {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lock_refuses_other_processes_and_is_taken_over_after_a_crash() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "yaml", false);
    let base = dir.path().join("store");
    let lock = base.join(".lock");

    // Another process holds the store: we are refused, with its pid and the path.
    let (mut holder, rx) = spawn_child("hold", &cfg);
    let child_pid = wait_for(&rx, "READY", Duration::from_secs(30));
    let child_pid = child_pid.split_whitespace().nth(1).unwrap().to_string();
    assert_eq!(child_pid, holder.0.id().to_string());
    let err = open_err(&cfg);
    assert_eq!(err.kind, ErrorKind::Unavailable, "{err}");
    assert!(err.message.contains(&format!("process {child_pid}")), "{err}");
    assert!(err.message.contains(&base.display().to_string()) && err.message.contains(".lock"), "{err}");

    // It dies without cleaning up: the kernel dropped its flock, so the stale lock is taken over (and logged).
    holder.0.kill().unwrap();
    holder.0.wait().unwrap();
    assert_eq!(
        std::fs::read_to_string(&lock).unwrap().trim(),
        child_pid,
        "the dead holder's pid is still there"
    );
    let s = open_ok(&cfg);
    assert_eq!(std::fs::read_to_string(&lock).unwrap().trim(), std::process::id().to_string());
    assert!(warned(&format!("left by process {child_pid}")), "the takeover is logged");

    // Now we hold it: another process is refused, naming us.
    let (mut probe, rx) = spawn_child("probe", &cfg);
    let line = wait_for(&rx, "PROBE", Duration::from_secs(30));
    probe.0.wait().unwrap();
    assert!(line.starts_with("PROBE Unavailable"), "{line}");
    assert!(line.contains(&format!("process {}", std::process::id())), "{line}");
    // And so is another instance in this process.
    let err = open_err(&cfg);
    assert!(err.message.contains("another storage instance in this process"), "{err}");

    // A clean shutdown leaves an empty lock file, and the next opener gets in.
    s.shutdown().await.unwrap();
    assert_eq!(std::fs::read_to_string(&lock).unwrap(), "");
    open_ok(&cfg).shutdown().await.unwrap();
}

// ------------------------------------------------------------------ dropping without shutdown

/// Dropping the store without `shutdown()` while writes are queued does not wait for them; the writer commits
/// them and only then releases the lock, so the next instance opens on a store that holds every one of them.
/// Dropping an idle store releases the lock before the drop returns: it reopens at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_without_shutdown_commits_queued_writes_before_releasing_the_lock() {
    use std::{future::Future, task::Poll};
    const CALLS: usize = 300;
    let Harness { storage: plain, config, dir: _dir, .. } = json().await;
    // The storage object of the ABI, whose call futures may outlive it (the plain client's `async fn`s borrow
    // it), opened once the plain instance has released the store.
    plain.shutdown().await.unwrap();
    drop(plain);
    let storage = raw::open(&config);
    let mut calls: Vec<_> = (0..CALLS)
        .map(|_| Box::pin(storage.create_execution(raw::new_execution("dropped", "1.0.0"))))
        .collect();
    // One poll each: validated and queued.
    std::future::poll_fn(|cx| {
        for call in &mut calls {
            let _ = call.as_mut().poll(cx);
        }
        Poll::Ready(())
    })
    .await;
    let dropping = Instant::now();
    drop(storage);
    drop(calls); // the last holders of the backend
    let took = dropping.elapsed();

    let deadline = Instant::now() + Duration::from_secs(60);
    let reopened = loop {
        match plugin().open(&config) {
            Ok(s) => break s,
            Err(e) if e.kind == ErrorKind::Unavailable && e.message.contains("is in use") => {
                assert!(Instant::now() < deadline, "the lock was never released: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => panic!("reopen: {e}"),
        }
    };
    let reopened_after = dropping.elapsed();
    eprintln!("drop took {took:?}; the store reopened {reopened_after:?} after the drop began");
    // The lock is released once the queued writes are committed. When that takes long enough to tell (not on
    // a file system where 300 fsyncs are nearly free), the drop must not have waited for it.
    if reopened_after > Duration::from_millis(200) {
        assert!(took < reopened_after / 2, "dropping took {took:?}, waiting for the queued writes");
    }
    let f = ExecutionFilter { pattern_name: Some("dropped".into()), ..Default::default() };
    assert_eq!(reopened.count_executions(f.clone()).await.unwrap(), CALLS as u64);

    drop(reopened); // idle: the lock is released before this returns
    let again =
        plugin().open(&config).unwrap_or_else(|e| panic!("reopen right after dropping an idle store: {e}"));
    assert_eq!(again.count_executions(f).await.unwrap(), CALLS as u64);
    again.shutdown().await.unwrap();
}

// ------------------------------------------------------------------ cleanup and retention

const DAY: i64 = 86_400_000_000;

/// Old final executions go with their events, search words and emptied directories; an old running one stays
/// (and is reported), newer ones stay; bytes are reported; the store reopens clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_removes_executions_events_search_entries_and_empty_directories() {
    use retention::CleanupTarget::Executions;
    let h = json().await;
    let (s, base) = (&h.storage, base(&h));
    let jan15 = execution_at(s, T0, 2, true, "zebra").await;
    let jan16 = execution_at(s, T0 + DAY, 0, true, "other").await;
    let feb03 = execution_at(s, T0 + 19 * DAY, 3, true, "other").await;
    let running = execution_at(s, T0 + 26 * DAY, 1, false, "other").await; // 2024-02-10
    let recent = execution_at(s, now_micros() - 3_600_000_000, 1, true, "zebra").await;
    let hits = |s: &Storage| {
        let s = s.clone();
        async move { s.search_executions("zebra", page(10, None)).await.unwrap().items.len() }
    };
    assert_eq!(hits(s).await, 2);

    let r = s.cleanup(&cleanup_params(Executions, "30d", false)).await.unwrap();
    let (main, events) = (&r.tables[0], &r.tables[1]);
    assert_eq!(
        (main.table.as_str(), main.rows, events.table.as_str(), events.rows),
        ("executions", 3, "execution_events", 5),
        "{r:?}"
    );
    assert_eq!(main.partitions_dropped, ["executions/2024/01", "executions/2024/02/03"], "{r:?}");
    assert_eq!(main.sample_ids, [jan15.to_string(), jan16.to_string(), feb03.to_string()]);
    assert_eq!(main.oldest.as_deref(), Some("2024-01-15T00:00:00.000000Z"));
    assert!(main.bytes_reclaimed.unwrap() > 0 && events.bytes_reclaimed.unwrap() > 0, "{r:?}");
    assert!(main.batches >= 1 && main.rows_in_batches == 3, "{r:?}");
    assert_eq!((r.unfinished_kept, r.rows_left), (1, None), "a real run does not count what stays: {r:?}");

    for id in [jan15, jan16, feb03] {
        assert_eq!(s.get_execution(id).await.unwrap_err().kind, ErrorKind::NotFound);
    }
    assert_eq!(s.list_events(running).await.unwrap().len(), 1);
    assert_eq!(s.list_events(recent).await.unwrap().len(), 1);
    assert_eq!(hits(s).await, 1, "the removed execution's search words are gone");
    let ex = base.join("executions");
    assert!(!ex.join("2024/01").exists() && !ex.join("2024/02/03").exists(), "{:?}", files(&ex));
    assert!(ex.join("2024/02/10").is_dir() && ex.is_dir());
    assert!(files(&ex).iter().all(|p| !p.to_string_lossy().contains(&jan15.to_string())));

    // The run is recorded in the store, and a second cleanup finds nothing.
    let runs = s.retention_status().await.unwrap().runs;
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!((runs[0].status.as_str(), runs[0].trigger.as_str()), ("succeeded", "manual"));
    assert_eq!(runs[0].rows.get("executions"), Some(&3));
    assert!(base.join("retention/runs.json").is_file());
    let again = s.cleanup(&cleanup_params(Executions, "30d", false)).await.unwrap();
    assert_eq!(again.tables[0].rows, 0);
    h.storage.shutdown().await.unwrap();

    // Reopened: the same store, no unreadable or stray file (the run records are part of the layout).
    logs();
    let s = open_ok(&h.config);
    let health = s.health().await.unwrap();
    assert!(health.warnings.is_empty(), "{:?}", health.warnings);
    assert!(!warned(&base.join("retention").display().to_string()), "the run records are not a stray file");
    assert_eq!(s.count_executions(ExecutionFilter::default()).await.unwrap(), 2);
    assert_eq!(s.retention_status().await.unwrap().runs.len(), 2);
    s.shutdown().await.unwrap();
}

/// `--dry-run` reports what would go and changes no byte of any file (nor the directory list).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_changes_nothing() {
    use retention::CleanupTarget::{AuditLogs, Executions};
    let h = yaml().await;
    let (s, base) = (&h.storage, base(&h));
    for i in 0..6 {
        execution_at(s, T0 + i * DAY, 2, i != 3, "w").await;
    }
    execution_at(s, now_micros(), 1, true, "w").await;
    let mut batch: Vec<NewAuditEntry> = Vec::new();
    for t in [T0, T0 + DAY, now_micros() - 1_000_000] {
        let mut a = audit("dry", "dry-runner");
        a.timestamp = Some(at(t));
        batch.push(a);
    }
    s.append_audit(batch).await.unwrap();
    let before = snapshot(&base);

    let plan = s.cleanup(&cleanup_params(Executions, "30d", true)).await.unwrap();
    let audit_plan = s.cleanup(&cleanup_params(AuditLogs, "30d", true)).await.unwrap();
    assert!(plan.dry_run && plan.run_id.is_none());
    assert_eq!((plan.tables[0].rows, plan.tables[1].rows, plan.unfinished_kept), (5, 10, 1), "{plan:?}");
    assert_eq!((plan.rows_left, audit_plan.rows_left), (Some(2), Some(1)));
    // Every day went but 2024-01-18 (it holds the unfinished one), so the month stays.
    assert_eq!(plan.tables[0].partitions_dropped.len(), 5, "{plan:?}");
    assert!(!plan.tables[0].partitions_dropped.iter().any(|p| p.ends_with("2024/01/18")), "{plan:?}");
    assert_eq!(audit_plan.tables[0].rows, 2, "{audit_plan:?}");
    assert!(audit_plan.tables[0].partitions_dropped.is_empty(), "the batch spans the cutoff: {audit_plan:?}");
    assert_eq!(snapshot(&base), before, "a dry run changed the store");

    let done = s.cleanup(&cleanup_params(Executions, "30d", false)).await.unwrap();
    assert_eq!((done.tables[0].rows, done.tables[1].rows), (5, 10));
    assert_eq!(done.tables[0].partitions_dropped, plan.tables[0].partitions_dropped);
    h.finish().await;
}

/// An audit batch file with entries on both sides of the cutoff is rewritten in place with the newer entries
/// (still readable, also after a reopen); a batch whose entries all go is removed with its empty day.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_batch_spanning_the_cutoff_is_rewritten_not_deleted() {
    use retention::CleanupTarget::AuditLogs;
    let h = json_gz().await;
    let (s, base) = (&h.storage, base(&h));
    let now = now_micros();
    let entry = |t: i64, actor: &str| {
        let mut a = audit("retention.test", actor);
        a.timestamp = Some(at(t));
        a
    };
    // Written oldest first: cleanup removes the oldest entries only as a prefix of the audit chain (the order
    // they were written), so that what stays still verifies.
    s.append_audit(vec![entry(now - 50 * DAY, "old"), entry(now - 45 * DAY, "old")]).await.unwrap();
    let spanning = s
        .append_audit(vec![
            entry(now - 40 * DAY, "old"),
            entry(now - 35 * DAY, "old"),
            entry(now - DAY, "new"),
        ])
        .await
        .unwrap();
    let audit_dir = base.join("audit");
    let all = files(&audit_dir);
    assert_eq!(all.len(), 2);
    let (old_only, span_file): (Vec<_>, Vec<_>) = all.into_iter().partition(|p| {
        let day = p.parent().unwrap().file_name().unwrap().to_string_lossy().into_owned();
        day == file_day(now - 50 * DAY)
    });
    let (old_only, span_file) = (old_only[0].clone(), span_file[0].clone());
    let span_size = std::fs::metadata(&span_file).unwrap().len();

    let r = s.cleanup(&cleanup_params(AuditLogs, "30d", false)).await.unwrap();
    let t = &r.tables[0];
    assert_eq!((t.table.as_str(), t.rows), ("audit_logs", 4), "{r:?}");
    assert!(span_file.is_file(), "the spanning batch is rewritten, not deleted");
    assert!(std::fs::metadata(&span_file).unwrap().len() < span_size);
    assert!(!old_only.exists() && !old_only.parent().unwrap().exists(), "the emptied day goes");
    assert_eq!(t.partitions_dropped, [format!("audit/{}", file_day(now - 50 * DAY))], "{r:?}");
    assert!(t.bytes_reclaimed.unwrap() > 0);
    // The rewritten file holds exactly the kept entry, and the store reads it back (also after a reopen).
    let text = gunzip(&span_file);
    assert!(text.contains(&spanning[2].to_string()) && !text.contains(&spanning[0].to_string()), "{text}");
    assert!(files(&audit_dir).iter().all(|p| !p.to_string_lossy().contains(".~")), "no temporary file left");
    let q = AuditQuery { action: Some("retention.test".into()), ..Default::default() };
    let left = s.query_audit(q.clone(), page(10, None)).await.unwrap().items;
    assert_eq!(left.iter().map(|a| a.id).collect::<Vec<_>>(), [spanning[2]]);
    h.storage.shutdown().await.unwrap();
    let s = open_ok(&h.config);
    let left = s.query_audit(q, page(10, None)).await.unwrap().items;
    assert_eq!(
        left.iter().map(|a| (a.id, a.actor.clone())).collect::<Vec<_>>(),
        [(spanning[2], Some("new".into()))]
    );
    assert!(s.health().await.unwrap().warnings.is_empty());
    s.shutdown().await.unwrap();
}

fn file_day(micros: i64) -> String {
    let d = (micros / 1_000_000).div_euclid(86_400);
    // Reuse the generator's calendar through a generated file name would be roundabout; compute it here.
    let z = d + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    format!("{:04}-{m:02}-{day:02}", yoe + era * 400 + i64::from(m <= 2))
}

fn gunzip(p: &Path) -> String {
    let out = Command::new("gzip").arg("-dc").arg(p).output().expect("gzip is installed");
    String::from_utf8(out.stdout).unwrap()
}

/// Scheduled runs are recorded in the store: one run per tick (a second run of the same tick is skipped),
/// and the records survive a reopen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_runs_are_recorded_once_per_tick() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), "yaml", false);
    cfg["retention"] = json!({ "executions": { "enabled": true, "maxAge": "30d" } });
    let s = open_ok(&cfg);
    execution_at(&s, T0, 1, true, "w").await;
    let tick = retention::RetentionRunParams { tick: Some("2026-01-31T02:00:00Z".into()), dry_run: false };
    let first = s.retention_run(&tick).await.unwrap();
    assert!(first.ran, "{first:?}");
    assert_eq!(first.run.as_ref().unwrap().rows.get("executions"), Some(&1));
    let second = s.retention_run(&tick).await.unwrap();
    assert!(
        !second.ran && second.skipped.as_deref().unwrap_or("").contains("already has a run"),
        "{second:?}"
    );
    s.shutdown().await.unwrap();
    let s = open_ok(&cfg);
    let runs = s.retention_status().await.unwrap().runs;
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(
        (runs[0].trigger.as_str(), runs[0].tick.as_deref()),
        ("scheduled", Some("2026-01-31T02:00:00.000000Z"))
    );
    assert!(!s.retention_run(&tick).await.unwrap().ran, "the tick is remembered across a reopen");
    s.shutdown().await.unwrap();
}

/// Every `.events` directory has its execution file beside it.
fn orphan_events(base: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![base.join("executions")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(stem) = name.strip_suffix(".events") {
                if !["json", "yaml", "json.gz", "yaml.gz"]
                    .iter()
                    .any(|x| d.join(format!("{stem}.{x}")).is_file())
                {
                    out.push(p);
                }
            } else if p.is_dir() {
                stack.push(p);
            }
        }
    }
    out
}

/// `parallax storage cleanup executions` killed with SIGKILL at random moments, round after round: each time
/// the store opens, no events are left without their execution, every remaining execution and its events read
/// back; a last run finishes the job and the killed runs are recorded as interrupted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_cleanup_leaves_a_consistent_store_and_the_next_run_finishes() {
    const OLD: usize = 2000;
    const ROUNDS: usize = 6;
    let seed = now_micros() as u64 | 1;
    println!("cleanup crash test seed {seed}");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "json", false);
    let base = dir.path().join("store");
    let s = open_ok(&cfg);
    let recent = execution_at(&s, now_micros() - 60_000_000, 2, true, "kept").await;
    s.shutdown().await.unwrap();
    file_gen::write_executions(&base, OLD, 2, T0, 37 * 60 * 1_000_000); // ~77 days from 2024-01-15
    let config_file = dir.path().join("parallax.config.yaml");
    std::fs::write(
        &config_file,
        format!("storage:\n  type: file\n  file:\n    basePath: {}\n    format: json\n", base.display()),
    )
    .unwrap();
    let exe = common::target_dir().join(format!("parallax{}", std::env::consts::EXE_SUFFIX));
    assert!(exe.is_file(), "{} is missing: run `cargo build --workspace` first", exe.display());
    let cli = || {
        let mut cmd = Command::new(&exe);
        cmd.args(["storage", "cleanup", "executions", "--older-than", "1d", "--yes", "--config"])
            .arg(&config_file)
            .arg("--plugin")
            .arg(built_library("parallax_storage"))
            .env_remove("RUST_LOG")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        cmd
    };
    let runs_file = base.join("retention/runs.json");
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let mut left_after = Vec::new();
    let mut generated = OLD;
    for round in 0..ROUNDS {
        let mut left = left_after.last().map_or(OLD, |&(_, after)| after);
        if left < OLD / 4 {
            // A fast disk finished the job before the kill: more old executions for the next rounds.
            file_gen::write_executions_from(&base, generated, OLD, 2, T0, 37 * 60 * 1_000_000);
            generated += OLD;
            left += OLD;
        }
        let before = mtime(&runs_file);
        let mut child = ChildGuard(cli().spawn().unwrap());
        if round % 3 == 2 {
            // While opening or planning.
            std::thread::sleep(Duration::from_millis(rng.below(400)));
        } else {
            // Once the run is recorded, i.e. while removing.
            let deadline = Instant::now() + Duration::from_secs(60);
            while mtime(&runs_file) == before && child.0.try_wait().unwrap().is_none() {
                assert!(Instant::now() < deadline, "the cleanup never started");
                std::thread::sleep(Duration::from_millis(2));
            }
            // Within the first steps, or anywhere in a longer stretch.
            let within = if round % 3 == 0 { 40 } else { 1500 };
            std::thread::sleep(Duration::from_millis(rng.below(within)));
        }
        child.0.kill().unwrap(); // SIGKILL (a no-op if it already finished)
        child.0.wait().unwrap();
        drop(child);

        let orphans = orphan_events(&base);
        assert!(orphans.is_empty(), "round {round}: events without their execution: {orphans:?}");
        let s = open_ok(&cfg);
        let health = s.health().await.unwrap();
        assert!(health.warnings.is_empty(), "round {round}: {:?}", health.warnings);
        let all = s.list_executions(ExecutionFilter::default(), page(1000, None)).await.unwrap();
        let mut count = 0;
        let mut pages = all;
        loop {
            for e in &pages.items {
                s.get_execution(e.id).await.unwrap_or_else(|err| panic!("round {round}: {}: {err}", e.id));
                s.list_events(e.id)
                    .await
                    .unwrap_or_else(|err| panic!("round {round}: events of {}: {err}", e.id));
                count += 1;
            }
            match pages.next_cursor.clone() {
                Some(c) => {
                    pages = s.list_executions(ExecutionFilter::default(), page(1000, Some(&c))).await.unwrap()
                }
                None => break,
            }
        }
        assert_eq!(s.list_events(recent).await.unwrap().len(), 2);
        s.shutdown().await.unwrap();
        left_after.push((left, count - 1));
    }
    println!("old executions before and after each SIGKILL: {left_after:?}");
    assert!(
        left_after.iter().any(|&(before, after)| after > 0 && after < before),
        "no kill landed in the middle of a cleanup: {left_after:?}"
    );

    let out = cli().output().unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let s = open_ok(&cfg);
    assert_eq!(
        s.count_executions(ExecutionFilter::default()).await.unwrap(),
        1,
        "only the recent one is left"
    );
    assert!(orphan_events(&base).is_empty());
    assert!(!base.join("executions/2024").exists(), "{:?}", files(&base.join("executions")));
    let runs = s.retention_status().await.unwrap().runs;
    assert_eq!(runs[0].status, "succeeded", "{runs:?}");
    assert!(runs.iter().all(|r| r.status != "running"), "{runs:?}");
    assert!(runs.iter().any(|r| r.status == "interrupted"), "killed runs are marked interrupted: {runs:?}");
    s.shutdown().await.unwrap();
}

/// A large cleanup runs in writer steps: other writes keep being acknowledged while it runs, and a second
/// cleanup of the same instance is refused (one runner at a time) rather than overlapping it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_keep_going_during_a_large_cleanup_and_a_second_run_is_refused() {
    use std::sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    };
    const OLD: usize = 2000;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "json", false);
    let base = dir.path().join("store");
    open_ok(&cfg).shutdown().await.unwrap();
    file_gen::write_executions(&base, OLD, 1, T0, 60_000_000);
    let s = open_ok(&cfg);
    assert_eq!(s.count_executions(ExecutionFilter::default()).await.unwrap(), OLD as u64);

    let cleaning = Arc::new(AtomicBool::new(true));
    let during = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (s, cleaning, during) = (s.clone(), cleaning.clone(), during.clone());
        tokio::spawn(async move {
            let mut ids = Vec::new();
            while cleaning.load(Ordering::SeqCst) {
                ids.push(execution_at(&s, now_micros(), 1, true, "live").await);
                if cleaning.load(Ordering::SeqCst) {
                    during.fetch_add(1, Ordering::SeqCst);
                }
            }
            ids
        })
    };
    let params = cleanup_params(retention::CleanupTarget::Executions, "1d", false);
    let first = {
        let (s, params) = (s.clone(), params.clone());
        tokio::spawn(async move { s.cleanup(&params).await })
    };
    // Once the first run holds the runner lock, a second one is refused.
    let deadline = Instant::now() + Duration::from_secs(60);
    let second = loop {
        if let Some(run) = s.retention_status().await.unwrap().runs.first().filter(|r| r.status == "running")
        {
            let _ = run;
            break s.cleanup(&params).await;
        }
        assert!(
            !first.is_finished() && Instant::now() < deadline,
            "the first cleanup never showed as running"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    let report = first.await.unwrap().unwrap();
    cleaning.store(false, Ordering::SeqCst);
    let live = writer.await.unwrap();

    let err = second.expect_err("a second cleanup while the first runs");
    assert_eq!(err.kind, ErrorKind::Conflict, "{err}");
    assert!(err.message.contains("runner lock"), "{err}");
    assert_eq!(report.tables[0].rows, OLD as u64, "{report:?}");
    assert!(report.tables[0].batches > 1, "removed in steps: {report:?}");
    let during = during.load(Ordering::SeqCst);
    println!(
        "{during} writes acknowledged during a cleanup of {OLD} executions in {} ms",
        report.duration_ms
    );
    assert!(during > 0, "no write was acknowledged while the cleanup ran");
    for id in &live {
        assert_eq!(s.list_events(*id).await.unwrap().len(), 1);
    }
    assert_eq!(s.count_executions(ExecutionFilter::default()).await.unwrap(), live.len() as u64);
    s.shutdown().await.unwrap();
}

/// `--max-count N` keeps the newest N executions (any status) and removes older final ones;
/// `--include-unfinished` removes old pending/running ones too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_count_keeps_the_newest_and_include_unfinished_takes_stuck_runs() {
    use retention::CleanupTarget::Executions;
    let h = yaml_gz().await;
    let s = &h.storage;
    let now = now_micros();
    let mut ids = Vec::new();
    for i in 0..6i64 {
        // Oldest first; the second oldest is still running.
        ids.push(execution_at(s, now - (10 - i) * 3_600_000_000, 1, i != 1, "w").await);
    }
    let params = retention::CleanupParams {
        older_than: None,
        max_count: Some(2),
        ..cleanup_params(Executions, "1d", false)
    };
    let r = s.cleanup(&params).await.unwrap();
    assert_eq!((r.tables[0].rows, r.unfinished_kept), (3, 1), "{r:?}");
    assert_eq!(r.tables[0].sample_ids, [ids[0].to_string(), ids[2].to_string(), ids[3].to_string()]);
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(s.get_execution(*id).await.is_ok(), [1, 4, 5].contains(&i), "execution {i}");
    }
    let params = retention::CleanupParams { include_unfinished: true, ..params };
    let r = s.cleanup(&params).await.unwrap();
    assert_eq!((r.tables[0].rows, r.unfinished_kept), (1, 0), "{r:?}");
    assert_eq!(s.get_execution(ids[1]).await.unwrap_err().kind, ErrorKind::NotFound);
    assert_eq!(s.count_executions(ExecutionFilter::default()).await.unwrap(), 2);
    h.finish().await;
}

// ------------------------------------------------------------------ metrics (issue 14)

mod metrics_support {
    use std::path::Path;

    pub use crate::common::exposition::{
        filesystem_size, until, value_of as sample, ACTIVE, BYTES, DISK_FREE, IDLE, ROWS, TABLES, WAITING,
    };

    /// Per table (in [`TABLES`] order) the values of `name`, if all are there.
    pub fn tables(text: &str, name: &str) -> Option<[u64; 4]> {
        let mut out = [0; 4];
        for (slot, table) in out.iter_mut().zip(TABLES) {
            *slot = sample(text, name, &format!("table=\"{table}\""))? as u64;
        }
        Some(out)
    }

    /// Bytes of the store's record files per table, by walking the tree: patterns, executions, their
    /// events (`*.events` directories), audit batches.
    pub fn walked(base: &Path) -> [u64; 4] {
        let mut out = [0; 4];
        for f in crate::common::file::files(base) {
            let rel = f.strip_prefix(base).unwrap();
            let in_events = f
                .parent()
                .and_then(|d| d.file_name())
                .is_some_and(|n| n.to_string_lossy().ends_with(".events"));
            let t = match rel.components().next().unwrap().as_os_str().to_str().unwrap() {
                "patterns" => 0,
                "executions" if in_events => 2,
                "executions" => 1,
                "audit" => 3,
                _ => continue, // manifest, README, lock, run records
            };
            out[t] += std::fs::metadata(&f).unwrap().len();
        }
        out
    }
}

use metrics_support as ms;

fn metrics_config(dir: &Path, format: &str, compress: bool) -> serde_json::Value {
    let mut cfg = config(dir, format, compress);
    cfg["metrics"] = json!({ "statsInterval": "1s" });
    cfg
}

/// Table rows come from the index and bytes from a running total of the record files: after writes, a
/// rewrite (completion), events, audit batches and a cleanup they match what a walk of the tree finds; free
/// disk space is that of basePath's filesystem.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_table_stats_follow_writes_and_cleanups_and_match_the_files() {
    use retention::CleanupTarget::Executions;
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("store");
    let s = open_ok(&metrics_config(dir.path(), "yaml", true));
    let text = ms::until(&s, "the first table stats", |t| ms::tables(t, ms::ROWS).is_some()).await;
    assert_eq!(ms::tables(&text, ms::ROWS), Some([0; 4]), "{text}");
    assert_eq!(ms::tables(&text, ms::BYTES), Some([0; 4]), "{text}");
    let free =
        ms::sample(&text, ms::DISK_FREE, "").unwrap_or_else(|| panic!("no disk free bytes in:\n{text}"));
    let size = ms::filesystem_size(dir.path()) as f64;
    assert!(free > 0.0 && free <= size, "free {free} of {size}");

    s.put_pattern(new_pattern("stats", "1.0.0")).await.unwrap();
    for k in 0..3 {
        execution_at(&s, T0 + k * DAY, 2, true, "old").await;
    }
    execution_at(&s, now_micros() - 3_600_000_000, 1, false, "recent").await;
    s.append_audit(vec![audit("login", "ann"), audit("logout", "ann")]).await.unwrap();
    let matches_files = |want_rows: [u64; 4]| {
        let base = base.clone();
        move |t: &str| {
            ms::tables(t, ms::ROWS) == Some(want_rows) && ms::tables(t, ms::BYTES) == Some(ms::walked(&base))
        }
    };
    let text = ms::until(&s, "rows and bytes match the files", matches_files([1, 4, 7, 2])).await;
    assert!(ms::tables(&text, ms::BYTES).unwrap().iter().all(|&b| b > 0), "{text}");

    let r = s.cleanup(&cleanup_params(Executions, "30d", false)).await.unwrap();
    assert_eq!(r.tables[0].rows, 3, "{r:?}");
    ms::until(&s, "rows and bytes match the files after a cleanup", matches_files([1, 1, 1, 2])).await;
    s.shutdown().await.unwrap();
}

/// The writer counts as the pool's one connection: idle at rest; under a burst of writes arriving faster than
/// the group commits end, the writes queued behind a running commit show as waiting requests; every write
/// succeeds and nothing waits afterwards. (The file store has no lock another program could hold, so the
/// test makes the writer busy with real load and scrapes meanwhile.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_count_writes_queued_behind_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let s = std::sync::Arc::new(open_ok(&metrics_config(dir.path(), "json", false)));
    let text = s.metrics_text().await.unwrap();
    assert_eq!(
        [ms::ACTIVE, ms::IDLE, ms::WAITING].map(|m| ms::sample(&text, m, "")),
        [Some(0.0), Some(1.0), Some(0.0)],
        "{text}"
    );

    let seen = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let deadline = Instant::now() + Duration::from_secs(60);
    let scraper = tokio::spawn({
        let (s, seen) = (s.clone(), seen.clone());
        async move {
            let mut most = 0.0f64;
            while !seen.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline {
                let text = s.metrics_text().await.unwrap();
                let waiting = ms::sample(&text, ms::WAITING, "").unwrap();
                if waiting >= 1.0 {
                    seen.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                most = most.max(waiting);
                tokio::task::yield_now().await;
            }
            most
        }
    });
    // Open-loop bursts: 16 writes every millisecond, whether or not the earlier ones are answered.
    let mut writes = Vec::new();
    while !seen.load(std::sync::atomic::Ordering::Relaxed)
        && Instant::now() < deadline
        && writes.len() < 20_000
    {
        for _ in 0..16 {
            let s = s.clone();
            writes
                .push(tokio::spawn(async move { s.create_execution(new_execution("burst", "1.0.0")).await }));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let most = scraper.await.unwrap();
    assert!(most >= 1.0, "no scrape saw a write waiting for the writer during {} writes", writes.len());
    let n = writes.len() as u64;
    eprintln!("a scrape saw {most} write(s) waiting; {n} writes submitted");
    for w in writes {
        w.await.unwrap().unwrap();
    }
    assert_eq!(s.count_executions(ExecutionFilter::default()).await.unwrap(), n);
    ms::until(&s, "nothing waits once every write is answered", |t| {
        ms::sample(t, ms::WAITING, "") == Some(0.0) && ms::sample(t, ms::ACTIVE, "") == Some(0.0)
    })
    .await;
    s.shutdown().await.unwrap();
}

// ------------------------------------------------------------------ the audit chain on disk

async fn audit_verify(s: &Storage) -> parallax_storage_abi::audit::AuditVerifyReport {
    let request = MaintenanceRequest::new(parallax_storage_abi::audit::AUDIT_VERIFY, 1, json!({}));
    let response = s.maintenance(&request).await.unwrap_or_else(|e| panic!("audit-verify: {e}"));
    serde_json::from_value(response.result).unwrap()
}

/// Hand edits of the audit batch files (as `tests/common/tamper_file.rs` makes them: the YAML or JSON edited,
/// gzip undone and redone) load, and `audit verify` names each kind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_edits_of_audit_batch_files_load_and_audit_verify_names_them() {
    for enc in ["yaml_gz", "json"] {
        for (n, want) in [(0, "altered"), (1, "missing"), (2, "inserted"), (3, "reordered")] {
            let h = if enc == "json" { json().await } else { yaml_gz().await };
            let entries = (0..5).map(|i| audit(&format!("chained.{i}"), "alice")).collect();
            let ids: Vec<String> =
                h.storage.append_audit(entries).await.unwrap().iter().map(|u| u.to_string()).collect();
            assert!(audit_verify(&h.storage).await.ok);
            h.storage.shutdown().await.unwrap();
            let forged = "0190b3f2-7c1e-7a00-8000-999999999999";
            let t = match n {
                0 => tamper::Tamper::Alter(&ids[2]),
                1 => tamper::Tamper::Delete(&ids[2]),
                2 => tamper::Tamper::Forge(forged),
                _ => tamper::Tamper::Swap(&ids[1], &ids[3]),
            };
            tamper::tamper(&h, t);
            let s = open_ok(&h.config);
            let r = audit_verify(&s).await;
            assert!(!r.ok && r.breaks[0].kind == want, "{enc} {t:?}: {r:?}");
            let listed = s.query_audit(AuditQuery::default(), page(10, None)).await.unwrap().items.len();
            assert_eq!(
                listed,
                if n == 1 {
                    4
                } else if n == 2 {
                    6
                } else {
                    5
                },
                "{enc} {t:?}"
            );
            s.shutdown().await.unwrap();
        }
    }
}
