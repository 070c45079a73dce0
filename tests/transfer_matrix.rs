//! `copy` between every pair of backends (SQLite, PostgreSQL, the file store in YAML+gzip; plus the file store in
//! JSON once), through the loaded cdylib: the source holds everything a store can hold
//! (`common::transfer::populate_everything`), the target is a fresh store the plugin opens itself from the config
//! the factories build, and afterwards the target equals the source field by field (times to the microsecond,
//! documents by value), search answers the same, and on PostgreSQL every row sits in its month's partition. A
//! second copy catches up and copies nothing. Then what a non-empty target does (refused without `merge`; with
//! it, equal rows are present and a different one is a conflict, left as it was) and a copy while writers keep
//! writing to the source.

mod common;

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use common::transfer::*;
use common::*;
use parallax_storage_host::transfer::TABLES;
use parallax_storage_host::*;
use serde_json::json;

/// Populates `from`, copies it into `to` (a fresh store), and compares; then copies again.
async fn copy_case(from: Harness, to: Harness) {
    let counts = populate_everything(&from.storage).await;
    let source = full_snapshot(&from.storage).await;
    assert_eq!(source.counts(), counts, "the source holds what was written");
    let searches = search_answers(&from.storage).await;
    assert!(searches["executions:zeppelin"].len() >= 5, "the fixture is searchable: {searches:?}");
    release(&to).await;
    let when = format!("copy {} → {}", from.backend(), to.backend());

    let r = from.storage.copy(&copy_to(&to.config)).await.unwrap_or_else(|e| panic!("{when}: {e}"));
    assert_verified(&r, &when);
    assert_eq!(r.mode, "fresh", "{when}: {r:?}");
    assert!(!r.dry_run && !r.merge, "{when}: {r:?}");
    assert!(!r.run_id.is_empty() && !r.snapshot.is_empty(), "{when}: {r:?}");
    for t in TABLES {
        let e = table(&r, t);
        assert_eq!(e.source_rows, counts.of(t), "{when}: {t} rows in the snapshot: {e:?}");
        assert_eq!((e.copied, e.present, e.conflicts), (counts.of(t), 0, 0), "{when}: {t}: {e:?}");
    }
    assert_eq!(after_snapshot(&r), 0, "{when}: nothing was written after the snapshot: {r:?}");
    assert!(r.conflicts.is_empty() && r.conflict_count == 0, "{when}: {r:?}");
    assert!(r.changed_after_snapshot.is_empty(), "{when}: nothing changed meanwhile: {r:?}");
    assert!(!r.target.contains("password"), "{when}: the target is named without secrets: {}", r.target);

    let target = to.reopen();
    assert_same(&source, &full_snapshot(&target).await, &when);
    assert_eq!(search_answers(&target).await, searches, "{when}: search answers the same");
    assert_pg_clean(&to.config, &source, &when).await;

    // Again: a catch-up run with a new snapshot; nothing new to copy, still verified, nothing changed.
    let again = format!("{when}, again");
    if !to.concurrent_instances {
        target.shutdown().await.unwrap();
    }
    let r2 = from.storage.copy(&copy_to(&to.config)).await.unwrap_or_else(|e| panic!("{again}: {e}"));
    assert_verified(&r2, &again);
    assert_eq!(r2.mode, "catch-up", "{again}: {r2:?}");
    assert_ne!(r2.run_id, "", "{again}");
    // A catch-up carries the tallies of the run it continues: nothing new copied means the same counts.
    for t in TABLES {
        let (e, first) = (table(&r2, t), table(&r, t));
        assert_eq!((e.copied, e.conflicts), (first.copied, 0), "{again}: {t}: nothing new copied: {e:?}");
        assert_eq!(e.source_rows, counts.of(t), "{again}: {t}: {e:?}");
    }
    let target = to.reopen();
    assert_same(&source, &full_snapshot(&target).await, &again);
    assert_pg_clean(&to.config, &source, &again).await;
    target.shutdown().await.unwrap();
    from.finish().await;
    to.finish().await;
}

macro_rules! matrix {
    ($($name:ident: $from:path => $to:path;)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                copy_case($from().await, $to().await).await;
            }
        )*
    };
}

matrix! {
    sqlite_to_sqlite: common::sqlite => common::sqlite;
    sqlite_to_postgresql: common::sqlite => common::postgres;
    sqlite_to_file_yaml_gz: common::sqlite => common::file::yaml_gz;
    postgresql_to_sqlite: common::postgres => common::sqlite;
    postgresql_to_postgresql: common::postgres => common::postgres;
    postgresql_to_file_yaml_gz: common::postgres => common::file::yaml_gz;
    file_yaml_gz_to_sqlite: common::file::yaml_gz => common::sqlite;
    file_yaml_gz_to_postgresql: common::file::yaml_gz => common::postgres;
    file_yaml_gz_to_file_yaml_gz: common::file::yaml_gz => common::file::yaml_gz;
    sqlite_to_file_json: common::sqlite => common::file::json;
}

/// A copy into the store it reads from is refused, naming why, and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_into_its_own_source_is_refused() {
    let h = common::sqlite().await;
    populate_everything(&h.storage).await;
    let before = full_snapshot(&h.storage).await;
    let e = h.storage.copy(&copy_to(&h.config)).await.expect_err("a copy into itself");
    assert!(
        matches!(e.kind, ErrorKind::InvalidInput | ErrorKind::Conflict),
        "a copy into itself is bad input: {e}"
    );
    assert!(
        e.message.contains("target.yaml") && e.message.contains("reads from"),
        "the error names the target and says the copy reads from it: {e}"
    );
    assert_same(&before, &full_snapshot(&h.storage).await, "after the refused copy");
    h.finish().await;
}

/// A target that holds rows is refused without `merge` (a `Conflict` naming `--merge`, nothing written); with
/// `merge`, equal rows count as present, a different row is a conflict listed by id and left as it was, and
/// the rest is copied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_empty_target_needs_merge_and_conflicts_are_not_overwritten() {
    let from = common::sqlite().await;
    let to = common::postgres().await;
    merge_fixture(&from.storage, &to.storage).await;
    let target_before = full_snapshot(&to.storage).await;

    assert_kind(from.storage.copy(&copy_to(&to.config)).await, ErrorKind::Conflict, "--merge");
    assert_same(&target_before, &full_snapshot(&to.storage).await, "after the refused copy");

    let r = from.storage.copy(&merged(copy_to(&to.config))).await.expect("copy with merge");
    assert_eq!(r.mode, "merge", "{r:?}");
    assert!(r.merge, "{r:?}");
    assert_eq!(r.conflict_count, 1, "{r:?}");
    assert_eq!(r.conflicts.len(), 1, "{r:?}");
    assert_eq!(
        (r.conflicts[0].table.as_str(), r.conflicts[0].id.as_str()),
        ("executions", &*uuid_n(2).to_string())
    );
    assert!(!r.conflicts[0].reason.is_empty(), "a conflict says what differs: {r:?}");
    let e = table(&r, "executions");
    assert_eq!((e.source_rows, e.copied, e.present, e.conflicts), (3, 1, 1, 1), "{e:?}");
    let ev = table(&r, "execution_events");
    assert_eq!((ev.source_rows, ev.copied, ev.present), (2, 2, 0), "the events of the new execution: {ev:?}");
    let a = table(&r, "audit_logs");
    assert_eq!((a.source_rows, a.copied, a.present, a.conflicts), (2, 1, 1, 0), "{a:?}");
    let p = table(&r, "patterns");
    assert_eq!((p.copied, p.present), (1, 0), "{p:?}");
    // Conflicts are excluded from both checksums: what is compared is equal.
    assert!(r.tables.iter().all(|t| t.ok), "{r:?}");

    to.settle().await;
    let after = full_snapshot(&to.storage).await;
    let conflicted = uuid_n(2).to_string();
    assert_eq!(
        after.executions[&conflicted], target_before.executions[&conflicted],
        "the conflicting row is not overwritten"
    );
    assert_eq!(
        after.executions[&uuid_n(2).to_string()]["input"]["text"],
        json!("zeppelin target"),
        "the target keeps its own content"
    );
    let source = full_snapshot(&from.storage).await;
    for id in [uuid_n(1), uuid_n(3)] {
        assert_eq!(after.executions[&id.to_string()], source.executions[&id.to_string()], "{id}");
    }
    assert_eq!(after.executions[&uuid_n(4).to_string()], target_before.executions[&uuid_n(4).to_string()]);
    assert_eq!(after.executions.len(), 4);
    assert_eq!(after.audit.len(), 2);
    assert_eq!(after.audit[&uuid_n(12).to_string()], source.audit[&uuid_n(12).to_string()]);
    assert_eq!(after.patterns.len(), 1);
    assert_pg_clean(&to.config, &after, "after the merge").await;
    from.finish().await;
    to.finish().await;
}

/// Writers keep writing to a SQLite source while it is copied: the copy does not block them, the rows they
/// write after the snapshot are reported as such and not copied, and what was copied verifies. Once the writers
/// stop, a second copy catches up and the target equals the source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_copy_reports_what_came_after_the_snapshot_and_a_second_copy_catches_up() {
    let from = common::sqlite().await;
    let to = common::postgres().await;
    let counts = populate_bulk(&from.storage, 1_500, 2, 4).await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4 {
        let (s, stop) = (from.storage.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let mut e = new_execution("live", "1.0.0");
                e.input = Some(json!({ "text": format!("harbour live {w} {n}") }).into());
                let e = s.create_execution(e).await.unwrap();
                s.append_event(e.id, NewEvent::new(EventKind::StepResult, json!({ "n": n }))).await.unwrap();
                if n % 2 == 0 {
                    s.complete_execution(e.id, ExecutionCompletion::new(ExecutionStatus::Completed))
                        .await
                        .unwrap();
                }
                s.append_audit(vec![audit("live", "writer")]).await.unwrap();
                n += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            n
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = from.storage.copy(&copy_to(&to.config)).await.expect("copy while writers write");
    // Let the writers write a little after the copy, then stop them.
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::Relaxed);
    let mut written = 0;
    for w in writers {
        written += w.await.unwrap();
    }
    assert!(written > 0);
    assert_verified(&r, "the live copy");
    assert_eq!(r.mode, "fresh", "{r:?}");
    assert!(after_snapshot(&r) > 0, "writes during the copy are reported as after the snapshot: {r:?}");
    assert!(r.after_snapshot.get("executions").copied().unwrap_or(0) > 0, "{r:?}");
    assert!(table(&r, "executions").source_rows >= counts.executions, "{r:?}");

    let r2 = from.storage.copy(&copy_to(&to.config)).await.expect("the catch-up copy");
    assert_verified(&r2, "the catch-up copy");
    assert_eq!(r2.mode, "catch-up", "{r2:?}");
    assert_eq!(after_snapshot(&r2), 0, "no writer left: {r2:?}");
    assert!(table(&r2, "executions").copied > 0, "the catch-up copies the rows written meanwhile: {r2:?}");
    to.settle().await;
    let source = full_snapshot(&from.storage).await;
    assert_eq!(source.counts().executions, counts.executions + written);
    assert_same(&source, &full_snapshot(&to.storage).await, "after the catch-up");
    assert_pg_clean(&to.config, &source, "after the catch-up").await;
    from.finish().await;
    to.finish().await;
}
