//! Cleanup and retention (`cleanup`, `retention_status`, `retention_run`) answer the same on every backend:
//! what goes (`src/rules.rs`, "retention"), what a dry run changes (nothing), what a report and a run record
//! say. Old rows are made with an explicit `started_at` / `timestamp` days in the past; a cleanup's cutoff is
//! "now" minus its age, so each body keeps its rows days away from any cutoff, and the exact boundary is
//! tested on the rule itself (`rules::tests`).

use std::collections::{BTreeMap, BTreeSet};

use parallax_storage_host::{
    retention::{CleanupParams, CleanupReport, CleanupTarget, RetentionRunParams, TableReport},
    *,
};
use serde_json::json;

use crate::common::*;

const DAY: i64 = 86_400_000_000;

fn now() -> i64 {
    Timestamp::now().as_micros()
}

/// `days` days before now (whole microseconds).
fn days_ago(days: i64) -> i64 {
    now() - days * DAY
}

/// A cleanup of executions older than `older_than`, nothing else set.
fn executions_older_than(older_than: &str) -> CleanupParams {
    CleanupParams {
        target: CleanupTarget::Executions,
        older_than: Some(older_than.into()),
        max_count: None,
        dry_run: false,
        include_unfinished: false,
        confirm_all: false,
    }
}

fn audit_older_than(older_than: &str) -> CleanupParams {
    CleanupParams { target: CleanupTarget::AuditLogs, ..executions_older_than(older_than) }
}

fn dry(p: CleanupParams) -> CleanupParams {
    CleanupParams { dry_run: true, ..p }
}

/// An execution started at `started_at` whose input holds `words`, with `events` events appended while it ran,
/// then left in `status` (completed with `completed_at` now when final).
async fn execution_at(
    s: &Storage,
    started_at: i64,
    status: ExecutionStatus,
    words: &str,
    events: usize,
) -> Execution {
    let mut e = new_execution("retained", "1.0.0");
    e.started_at = Some(at(started_at));
    e.input = Some(json!({ "text": words }).into());
    e.status =
        if status == ExecutionStatus::Pending { ExecutionStatus::Pending } else { ExecutionStatus::Running };
    let e = s.create_execution(e).await.unwrap();
    for i in 0..events {
        let ev = NewEvent::new(EventKind::StepResult, json!({ "step": i }));
        s.append_event(e.id, ev).await.unwrap();
    }
    if status.is_final() {
        let done = ExecutionCompletion { status, output: None, error: None, completed_at: None };
        s.complete_execution(e.id, done).await.unwrap()
    } else {
        e
    }
}

/// The same with a chosen id.
async fn execution_with_id(s: &Storage, id: &str, started_at: i64, status: ExecutionStatus) -> Execution {
    let mut e = new_execution("retained", "1.0.0");
    e.id = Some(id_of(id));
    e.started_at = Some(at(started_at));
    let e = s.create_execution(e).await.unwrap();
    if status.is_final() {
        let done = ExecutionCompletion { status, output: None, error: None, completed_at: None };
        s.complete_execution(e.id, done).await.unwrap()
    } else {
        e
    }
}

/// Audit entries at these times (one batch), their ids in the same order.
async fn audit_at(s: &Storage, times: &[i64]) -> Vec<Uuid> {
    let entries = times
        .iter()
        .map(|t| {
            let mut a = audit("retention.test", "tester");
            a.timestamp = Some(at(*t));
            a
        })
        .collect();
    s.append_audit(entries).await.unwrap()
}

/// The report's part for `table` (a default, zero report when the table is not listed).
fn part(r: &CleanupReport, table: &str) -> TableReport {
    r.tables
        .iter()
        .find(|t| t.table == table)
        .cloned()
        .unwrap_or_else(|| TableReport { table: table.into(), ..TableReport::default() })
}

fn time_of(text: &Option<String>) -> Option<i64> {
    text.as_ref()
        .map(|t| t.parse::<Timestamp>().unwrap_or_else(|e| panic!("{t:?} is not RFC 3339: {e}")).as_micros())
}

/// The report's main table, checked to come first.
#[track_caller]
fn main_part(r: &CleanupReport, table: &str) -> TableReport {
    let first = r.tables.first().unwrap_or_else(|| panic!("a report lists its main table first: {r:?}"));
    assert_eq!(first.table, table, "the main table comes first: {r:?}");
    first.clone()
}

fn ids(es: &[&Execution]) -> Vec<String> {
    es.iter().map(|e| e.id.to_string()).collect()
}

async fn exists(s: &Storage, e: &Execution) -> bool {
    match s.get_execution(e.id).await {
        Ok(_) => true,
        Err(err) if err.kind == ErrorKind::NotFound => false,
        Err(err) => panic!("get_execution {}: {err}", e.id),
    }
}

/// Which of `es` are still there, by id.
async fn kept(s: &Storage, es: &[&Execution]) -> Vec<String> {
    let mut out = Vec::new();
    for e in es {
        if exists(s, e).await {
            out.push(e.id.to_string());
        }
    }
    out
}

async fn search_ids(s: &Storage, word: &str) -> BTreeSet<String> {
    let hits = s.search_executions(word, page(100, None)).await.unwrap();
    hits.items.iter().map(|h| h.execution.id.to_string()).collect()
}

/// Everything a reader can see of the data, to show that a call changed nothing.
#[derive(Debug, PartialEq)]
struct Seen {
    executions: Vec<Execution>,
    events: BTreeMap<String, Vec<ExecutionEvent>>,
    audit: Vec<AuditEntry>,
    search: BTreeSet<String>,
    count: u64,
}

async fn seen(s: &Storage, word: &str) -> Seen {
    let executions = s.executions(ExecutionFilter::default(), 100).collect().await.unwrap();
    let mut events = BTreeMap::new();
    for e in &executions {
        events.insert(e.id.to_string(), s.list_events(e.id).await.unwrap());
    }
    Seen {
        events,
        audit: s.audit_entries(AuditQuery::default(), 100).collect().await.unwrap(),
        search: search_ids(s, word).await,
        count: s.count_executions(ExecutionFilter::default()).await.unwrap(),
        executions,
    }
}

/// The bytes of every file of a file store (`<dir>/store`), or `None` for a database backend.
fn store_bytes(h: &Harness) -> Option<BTreeMap<std::path::PathBuf, Vec<u8>>> {
    let base = h.dir.path().join("store");
    base.is_dir().then(|| {
        file::files(&base).into_iter().map(|p| (p.clone(), std::fs::read(&p).unwrap_or_default())).collect()
    })
}

/// Another instance on the harness's data, opened with `storage.retention` set to `retention`. A single-writer
/// store (the file store) closes the harness's own instance first; the caller shuts the new one down.
async fn open_with_retention(h: &Harness, retention: serde_json::Value) -> Storage {
    if !h.concurrent_instances {
        h.storage.shutdown().await.unwrap();
    }
    let mut config = h.config.clone();
    config["retention"] = retention.clone();
    plugin().open(&config).unwrap_or_else(|e| panic!("open with storage.retention = {retention}: {e}"))
}

async fn run_count(s: &Storage) -> usize {
    s.retention_status().await.unwrap().runs.len()
}

// ------------------------------------------------------------------ bodies

pub async fn retention_dry_run_changes_nothing(h: &Harness) {
    let s = &h.storage;
    let oldest = execution_at(s, days_ago(60), ExecutionStatus::Completed, "zeppelin one", 2).await;
    let middle = execution_at(s, days_ago(50), ExecutionStatus::Failed, "zeppelin two", 1).await;
    let newest_old = execution_at(s, days_ago(40), ExecutionStatus::Cancelled, "zeppelin three", 0).await;
    let stuck = execution_at(s, days_ago(45), ExecutionStatus::Running, "zeppelin four", 1).await;
    let recent = execution_at(s, days_ago(1), ExecutionStatus::Completed, "zeppelin five", 1).await;
    let live = execution_at(s, now(), ExecutionStatus::Running, "zeppelin six", 0).await;
    let old_audit = audit_at(s, &[days_ago(120), days_ago(100)]).await;
    audit_at(s, &[days_ago(2)]).await;

    let before = seen(s, "zeppelin").await;
    assert_eq!((before.count, before.search.len(), before.audit.len()), (6, 6, 3));
    let bytes_before = store_bytes(h);

    let start = now();
    let r = s.cleanup(&dry(executions_older_than("30d"))).await.unwrap();
    assert!(r.dry_run && r.run_id.is_none(), "{r:?}");
    assert_eq!((r.target.as_str(), r.max_count), ("executions", None));
    let cutoff = time_of(&r.cutoff).expect("the report names the cutoff");
    assert!((start - 30 * DAY..=now() - 30 * DAY).contains(&cutoff), "cutoff {:?} is now - 30d", r.cutoff);
    let ex = main_part(&r, "executions");
    assert_eq!(ex.rows, 3, "{r:?}");
    assert_eq!(time_of(&ex.oldest), Some(oldest.started_at.as_micros()), "{r:?}");
    assert_eq!(time_of(&ex.newest), Some(newest_old.started_at.as_micros()), "{r:?}");
    assert_eq!(ex.sample_ids, ids(&[&oldest, &middle, &newest_old]), "samples, oldest first");
    assert_eq!(part(&r, "execution_events").rows, 3, "events of the executions that would go: {r:?}");
    assert_eq!(r.unfinished_kept, 1, "{r:?}");
    assert_eq!(r.rows_left, Some(3), "{r:?}");

    let r =
        s.cleanup(&dry(CleanupParams { max_count: Some(2), ..executions_older_than("30d") })).await.unwrap();
    // The newest two are `live` and `recent`; `stuck` stays (running), the three old final ones go either way.
    assert_eq!((main_part(&r, "executions").rows, r.unfinished_kept, r.max_count), (3, 1, Some(2)), "{r:?}");
    let r = s
        .cleanup(&dry(CleanupParams { include_unfinished: true, ..executions_older_than("30d") }))
        .await
        .unwrap();
    let ex = main_part(&r, "executions");
    assert_eq!((ex.rows, r.unfinished_kept, r.rows_left), (4, 0, Some(2)), "{r:?}");
    assert_eq!(ex.sample_ids, ids(&[&oldest, &middle, &stuck, &newest_old]));
    assert_eq!(part(&r, "execution_events").rows, 4, "{r:?}");

    let r = s.cleanup(&dry(audit_older_than("90d"))).await.unwrap();
    let au = main_part(&r, "audit_logs");
    assert_eq!(
        (r.target.as_str(), au.rows, r.rows_left, r.unfinished_kept),
        ("auditLogs", 2, Some(1), 0),
        "{r:?}"
    );
    let old_ids: Vec<String> = old_audit.iter().map(|i| i.to_string()).collect();
    assert_eq!(au.sample_ids, old_ids, "{r:?}");
    assert_eq!(time_of(&au.oldest), Some(before.audit[2].timestamp.as_micros()), "{r:?}");
    assert_eq!(time_of(&au.newest), Some(before.audit[1].timestamp.as_micros()), "{r:?}");
    // A dry run that would empty the table needs no confirmation.
    let r = s.cleanup(&dry(audit_older_than("1d"))).await.unwrap();
    assert_eq!((main_part(&r, "audit_logs").rows, r.rows_left), (3, Some(0)), "{r:?}");

    assert_eq!(seen(s, "zeppelin").await, before, "a dry run changed what readers see");
    assert_eq!(store_bytes(h), bytes_before, "a dry run changed the store's files");
    assert_eq!(run_count(s).await, 0, "dry runs are not recorded");
    let _ = (recent, live);
}

pub async fn retention_unfinished_are_kept_unless_included(h: &Harness) {
    let s = &h.storage;
    let pending = execution_at(s, days_ago(40), ExecutionStatus::Pending, "stuck pending", 0).await;
    let running = execution_at(s, days_ago(41), ExecutionStatus::Running, "stuck running", 2).await;
    let done = execution_at(s, days_ago(42), ExecutionStatus::Completed, "old done", 1).await;
    let live = execution_at(s, days_ago(1), ExecutionStatus::Running, "live", 1).await;
    let all = [&pending, &running, &done, &live];

    let r = s.cleanup(&executions_older_than("30d")).await.unwrap();
    assert_eq!((main_part(&r, "executions").rows, r.unfinished_kept, r.rows_left), (1, 2, None), "{r:?}");
    assert_eq!(kept(s, &all).await, ids(&[&pending, &running, &live]));
    assert_eq!(s.list_events(running.id).await.unwrap().len(), 2, "a kept execution keeps its events");
    // Running again: nothing final is left to go, the unfinished are still reported as kept.
    let r = s.cleanup(&executions_older_than("30d")).await.unwrap();
    assert_eq!((main_part(&r, "executions").rows, r.unfinished_kept), (0, 2), "{r:?}");

    let with = CleanupParams { include_unfinished: true, ..executions_older_than("30d") };
    let r = s.cleanup(&with).await.unwrap();
    let ex = main_part(&r, "executions");
    assert_eq!((ex.rows, r.unfinished_kept, r.rows_left), (2, 0, None), "{r:?}");
    assert_eq!(part(&r, "execution_events").rows, 2, "{r:?}");
    assert_eq!(kept(s, &all).await, ids(&[&live]), "the recent running execution stays");
    assert_kind(s.list_events(running.id).await, ErrorKind::NotFound, "not found");
}

pub async fn retention_events_and_search_go_with_their_execution(h: &Harness) {
    let s = &h.storage;
    let gone = execution_at(s, days_ago(40), ExecutionStatus::Completed, "zeppelin alpha", 3).await;
    let stays = execution_at(s, days_ago(2), ExecutionStatus::Completed, "zeppelin beta", 2).await;
    let stuck = execution_at(s, days_ago(40), ExecutionStatus::Running, "zeppelin gamma", 1).await;
    let word = |es: &[&Execution]| -> BTreeSet<String> { es.iter().map(|e| e.id.to_string()).collect() };
    assert_eq!(search_ids(s, "zeppelin").await, word(&[&gone, &stays, &stuck]));

    let r = s.cleanup(&executions_older_than("30d")).await.unwrap();
    assert_eq!(main_part(&r, "executions").rows, 1, "{r:?}");
    assert_eq!(part(&r, "execution_events").rows, 3, "{r:?}");
    assert_kind(s.get_execution(gone.id).await, ErrorKind::NotFound, &gone.id.to_string());
    assert_kind(s.list_events(gone.id).await, ErrorKind::NotFound, &gone.id.to_string());
    assert_kind(
        s.append_event(gone.id, NewEvent::new(EventKind::StepResult, json!({}))).await,
        ErrorKind::NotFound,
        "not found",
    );
    assert_eq!(search_ids(s, "zeppelin").await, word(&[&stays, &stuck]), "search no longer finds it");
    assert!(search_ids(s, "alpha").await.is_empty(), "no search entry left behind");
    assert_eq!(search_ids(s, "beta").await, word(&[&stays]));
    assert_eq!(s.list_events(stays.id).await.unwrap().len(), 2);
    assert_eq!(s.list_events(stuck.id).await.unwrap().len(), 1);
    assert_eq!(s.count_executions(ExecutionFilter::default()).await.unwrap(), 2);
    let listed = s.executions(ExecutionFilter::default(), 10).collect().await.unwrap();
    assert_eq!(listed.iter().map(|e| e.id).collect::<BTreeSet<_>>(), [stays.id, stuck.id].into());

    let r =
        s.cleanup(&CleanupParams { include_unfinished: true, ..executions_older_than("30d") }).await.unwrap();
    assert_eq!((main_part(&r, "executions").rows, part(&r, "execution_events").rows), (1, 1), "{r:?}");
    assert!(search_ids(s, "gamma").await.is_empty());
    assert_eq!(search_ids(s, "zeppelin").await, word(&[&stays]));
    // The id is free again: nothing of the removed execution lingers.
    let mut again = new_execution("retained", "1.0.0");
    again.id = Some(gone.id);
    again.input = Some(json!({ "text": "zeppelin reborn" }).into());
    s.create_execution(again).await.unwrap();
    assert!(s.list_events(gone.id).await.unwrap().is_empty(), "no old events under a reused id");
    assert_eq!(search_ids(s, "alpha").await, BTreeSet::new());
    assert_eq!(search_ids(s, "reborn").await, word(&[&gone]));
}

pub async fn retention_max_count_keeps_the_newest(h: &Harness) {
    let s = &h.storage;
    let a = execution_at(s, days_ago(50), ExecutionStatus::Completed, "a", 1).await;
    let b = execution_at(s, days_ago(45), ExecutionStatus::Running, "b", 0).await;
    let c = execution_at(s, days_ago(40), ExecutionStatus::Failed, "c", 2).await;
    let d = execution_at(s, days_ago(10), ExecutionStatus::Cancelled, "d", 0).await;
    let e = execution_at(s, days_ago(5), ExecutionStatus::Completed, "e", 0).await;
    let f = execution_at(s, days_ago(1), ExecutionStatus::Pending, "f", 0).await;
    let all = [&a, &b, &c, &d, &e, &f];
    let max = |n: i64| CleanupParams { older_than: None, max_count: Some(n), ..executions_older_than("1d") };

    // The newest 3 of any status (f, e, d) count toward N; beyond them the final ones go, running b stays.
    let r = s.cleanup(&dry(max(3))).await.unwrap();
    let ex = main_part(&r, "executions");
    assert_eq!((ex.rows, r.unfinished_kept, r.rows_left, r.max_count), (2, 1, Some(4), Some(3)), "{r:?}");
    assert_eq!(ex.sample_ids, ids(&[&a, &c]));
    assert_eq!(r.cutoff, None, "{r:?}");
    let r = s.cleanup(&max(3)).await.unwrap();
    assert_eq!((main_part(&r, "executions").rows, part(&r, "execution_events").rows), (2, 3), "{r:?}");
    assert_eq!(kept(s, &all).await, ids(&[&b, &d, &e, &f]));

    // More than there are: nothing to count beyond.
    let r = s.cleanup(&max(10)).await.unwrap();
    assert_eq!((main_part(&r, "executions").rows, r.rows_left), (0, None), "{r:?}");
    // Exactly as many as there are: the N-th newest is the oldest, nothing is beyond it.
    let r = s.cleanup(&max(4)).await.unwrap();
    assert_eq!((main_part(&r, "executions").rows, r.rows_left), (0, None), "{r:?}");

    // With an age too, a row goes when either limit selects it: here the count reaches further (d is only 10
    // days old but beyond the newest 2; e is the 2nd newest and stays).
    let r = s.cleanup(&CleanupParams { max_count: Some(2), ..executions_older_than("30d") }).await.unwrap();
    assert_eq!((main_part(&r, "executions").rows, r.unfinished_kept), (1, 1), "{r:?}");
    assert_eq!(kept(s, &all).await, ids(&[&b, &e, &f]));
    // … and here the age does (e is 5 days old; a count of 100 selects nothing).
    let r = s.cleanup(&CleanupParams { max_count: Some(100), ..executions_older_than("3d") }).await.unwrap();
    assert_eq!((main_part(&r, "executions").rows, r.unfinished_kept), (1, 1), "{r:?}");
    assert_eq!(kept(s, &all).await, ids(&[&b, &f]));
}

/// Executions started at the same instant are ordered by id: "the newest N" is exact even on ties.
pub async fn retention_max_count_breaks_ties_by_id(h: &Harness) {
    let s = &h.storage;
    let t = days_ago(40);
    let id = |n: &str| format!("0190b3f2-7c1e-7a00-8000-0000000000{n}");
    // Created out of order, so neither insertion order nor a clock decides.
    let mut made = BTreeMap::new();
    for n in ["0b", "0a", "09", "1f", "c0"] {
        made.insert(n, execution_with_id(s, &id(n), t, ExecutionStatus::Completed).await);
    }
    let all: Vec<&Execution> = made.values().collect();
    let r = s
        .cleanup(&dry(CleanupParams { older_than: None, max_count: Some(2), ..executions_older_than("1d") }))
        .await
        .unwrap();
    let ex = main_part(&r, "executions");
    assert_eq!(ex.rows, 3, "{r:?}");
    assert_eq!(ex.sample_ids, [id("09"), id("0a"), id("0b")], "same time: id order");
    let r = s
        .cleanup(&CleanupParams { older_than: None, max_count: Some(2), ..executions_older_than("1d") })
        .await
        .unwrap();
    assert_eq!(main_part(&r, "executions").rows, 3, "{r:?}");
    assert_eq!(kept(s, &all).await, [id("1f"), id("c0")]);
    let r = s
        .cleanup(&CleanupParams { older_than: None, max_count: Some(1), ..executions_older_than("1d") })
        .await
        .unwrap();
    assert_eq!(main_part(&r, "executions").rows, 1, "{r:?}");
    assert_eq!(kept(s, &all).await, [id("c0")]);
}

pub async fn retention_removing_everything_needs_confirmation(h: &Harness) {
    let s = &h.storage;
    let old: Vec<Execution> = old_completed(s, 3).await;
    let refs: Vec<&Execution> = old.iter().collect();
    let err = s.cleanup(&executions_older_than("30d")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidInput, "{err}");
    assert!(err.message.contains("--yes") && err.message.contains("every execution"), "{err}");
    assert_eq!(kept(s, &refs).await.len(), 3, "nothing removed without confirmation");
    assert_eq!(run_count(s).await, 0, "a refused cleanup is not a run");
    let r = s.cleanup(&CleanupParams { confirm_all: true, ..executions_older_than("30d") }).await.unwrap();
    assert_eq!((main_part(&r, "executions").rows, r.rows_left), (3, None), "{r:?}");
    assert_eq!(s.count_executions(ExecutionFilter::default()).await.unwrap(), 0);
    // An empty table: nothing to remove, nothing to confirm.
    let r = s.cleanup(&executions_older_than("30d")).await.unwrap();
    assert_eq!((main_part(&r, "executions").rows, r.rows_left), (0, None), "{r:?}");

    // An old unfinished execution is not "everything": with it kept, no confirmation is needed.
    let stuck = execution_at(s, days_ago(40), ExecutionStatus::Running, "", 0).await;
    execution_at(s, days_ago(40), ExecutionStatus::Completed, "", 0).await;
    let r = s.cleanup(&executions_older_than("30d")).await.unwrap();
    assert_eq!((main_part(&r, "executions").rows, r.unfinished_kept), (1, 1), "{r:?}");
    // … but including it empties the table.
    let with = CleanupParams { include_unfinished: true, ..executions_older_than("30d") };
    assert_kind(s.cleanup(&with).await, ErrorKind::InvalidInput, "--yes");
    assert!(exists(s, &stuck).await);
    // max_count cannot empty the table (N ≥ 1 stay).

    audit_at(s, &[days_ago(100), days_ago(95)]).await;
    let err = s.cleanup(&audit_older_than("90d")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidInput, "{err}");
    assert!(err.message.contains("--yes") && err.message.contains("every audit entry"), "{err}");
    assert_eq!(s.audit_entries(AuditQuery::default(), 10).collect().await.unwrap().len(), 2);
    let r = s.cleanup(&CleanupParams { confirm_all: true, ..audit_older_than("90d") }).await.unwrap();
    assert_eq!((main_part(&r, "audit_logs").rows, r.rows_left), (2, None), "{r:?}");
    assert!(s.audit_entries(AuditQuery::default(), 10).collect().await.unwrap().is_empty());
}

/// `n` completed executions started 40 days ago.
async fn old_completed(s: &Storage, n: usize) -> Vec<Execution> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(execution_at(s, days_ago(40) - i as i64, ExecutionStatus::Completed, "", 1).await);
    }
    out
}

pub async fn retention_bad_values_are_refused_by_name(h: &Harness) {
    let s = &h.storage;
    execution_at(s, days_ago(40), ExecutionStatus::Completed, "zeppelin", 1).await;
    execution_at(s, days_ago(1), ExecutionStatus::Completed, "zeppelin", 0).await;
    audit_at(s, &[days_ago(100), days_ago(1)]).await;
    let before = seen(s, "zeppelin").await;
    for text in ["0d", "-5d", "banana", "30", ""] {
        for target in [CleanupTarget::Executions, CleanupTarget::AuditLogs] {
            let p = CleanupParams { target, ..executions_older_than(text) };
            assert_kind(s.cleanup(&p).await, ErrorKind::InvalidInput, &format!("--older-than {text:?}"));
            assert_kind(s.cleanup(&dry(p)).await, ErrorKind::InvalidInput, &format!("--older-than {text:?}"));
        }
    }
    let e = s.cleanup(&executions_older_than("30")).await.unwrap_err();
    assert!(e.message.contains("30d"), "the accepted form is named: {e}");
    for n in [-1, 0] {
        let p = CleanupParams { max_count: Some(n), ..executions_older_than("30d") };
        let e = s.cleanup(&p).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidInput, "{e}");
        assert!(e.message.contains(&format!("--max-count {n}")) && e.message.contains("at least 1"), "{e}");
    }
    let p = CleanupParams { max_count: Some(5), ..audit_older_than("90d") };
    assert_kind(s.cleanup(&p).await, ErrorKind::InvalidInput, "--max-count");
    let p = CleanupParams { include_unfinished: true, ..audit_older_than("90d") };
    assert_kind(s.cleanup(&p).await, ErrorKind::InvalidInput, "--include-unfinished");
    let p = CleanupParams { older_than: None, ..executions_older_than("30d") };
    assert_kind(s.cleanup(&p).await, ErrorKind::InvalidInput, "--older-than");
    let p = CleanupParams { older_than: None, ..audit_older_than("90d") };
    assert_kind(s.cleanup(&p).await, ErrorKind::InvalidInput, "--older-than");
    let tick = RetentionRunParams { tick: Some("tomorrow".into()), dry_run: false };
    assert_kind(s.retention_run(&tick).await, ErrorKind::InvalidInput, "\"tomorrow\"");

    assert_eq!(seen(s, "zeppelin").await, before, "a refused cleanup changed something");
    assert_eq!(run_count(s).await, 0, "refused cleanups are not runs");
    // The accepted forms work (and still change nothing here: nothing is that old).
    for text in ["400d", "9600h", "57w", "399d12h", "P400D"] {
        let r = s.cleanup(&executions_older_than(text)).await.unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(main_part(&r, "executions").rows, 0, "{text}: {r:?}");
    }
    assert_eq!(seen(s, "zeppelin").await, before);
}

pub async fn retention_audit_goes_by_age(h: &Harness) {
    let s = &h.storage;
    // Written in time order, as an application does (an entry written later with an older time stays until
    // the entries chained before it go: `audit_chain::audit_chain_survives_cleanup_and_archive`).
    let old = audit_at(s, &[days_ago(200), days_ago(95)]).await;
    // A batch spanning the cutoff: its old entry goes, its new one stays.
    let span = audit_at(s, &[days_ago(91), days_ago(85)]).await;
    let mid = audit_at(s, &[days_ago(80), days_ago(30)]).await;
    let recent = audit_at(s, &[now()]).await;
    let r = s.cleanup(&audit_older_than("90d")).await.unwrap();
    let au = main_part(&r, "audit_logs");
    assert_eq!((au.rows, r.rows_left), (3, None), "{r:?}");
    assert_eq!(au.sample_ids, [old[0].to_string(), old[1].to_string(), span[0].to_string()], "oldest first");
    let left: BTreeSet<Uuid> =
        s.audit_entries(AuditQuery::default(), 10).collect().await.unwrap().iter().map(|e| e.id).collect();
    assert_eq!(left, BTreeSet::from([span[1], mid[0], mid[1], recent[0]]));
    // The remaining entries keep their contents.
    let q = AuditQuery { actor: Some("tester".into()), ..Default::default() };
    let pg = s.query_audit(q, page(10, None)).await.unwrap();
    assert_eq!(pg.items.len(), 4);
    assert!(pg
        .items
        .iter()
        .all(|e| e.action == "retention.test" && e.ip_address.as_deref() == Some("10.1.2.3")));
    let r = s.cleanup(&audit_older_than("60d")).await.unwrap();
    assert_eq!((main_part(&r, "audit_logs").rows, r.rows_left), (2, None), "{r:?}");
    // Executions are untouched by an audit cleanup and the other way round.
    let e = execution_at(s, days_ago(400), ExecutionStatus::Completed, "", 0).await;
    execution_at(s, now(), ExecutionStatus::Completed, "", 0).await;
    let r = s.cleanup(&audit_older_than("1w")).await.unwrap();
    assert_eq!((main_part(&r, "audit_logs").rows, r.rows_left), (1, None), "{r:?}");
    assert!(exists(s, &e).await);
    s.cleanup(&executions_older_than("1w")).await.unwrap();
    assert!(!exists(s, &e).await);
    assert_eq!(s.audit_entries(AuditQuery::default(), 10).collect().await.unwrap().len(), 1);
}

pub async fn retention_manual_runs_are_recorded(h: &Harness) {
    let s = &h.storage;
    let status = s.retention_status().await.unwrap();
    assert!(status.runs.is_empty() && !status.scheduled && status.schedule.is_none(), "{status:?}");
    assert_eq!(
        (status.executions.clone(), status.audit_logs.clone(), status.next_run.clone()),
        (None, None, None)
    );
    execution_at(s, days_ago(40), ExecutionStatus::Completed, "", 2).await;
    execution_at(s, days_ago(41), ExecutionStatus::Failed, "", 1).await;
    execution_at(s, days_ago(1), ExecutionStatus::Completed, "", 1).await;
    audit_at(s, &[days_ago(100), days_ago(1)]).await;

    s.cleanup(&dry(executions_older_than("30d"))).await.unwrap();
    assert_eq!(run_count(s).await, 0, "a dry run is not recorded");
    let before = now();
    let r = s.cleanup(&executions_older_than("30d")).await.unwrap();
    let status = s.retention_status().await.unwrap();
    assert_eq!(status.runs.len(), 1, "{status:?}");
    let run = &status.runs[0];
    assert_eq!(Some(&run.id), r.run_id.as_ref(), "the report names its run");
    assert_eq!(
        (run.trigger.as_str(), run.status.as_str(), run.tick.as_deref()),
        ("manual", "succeeded", None)
    );
    assert_eq!(run.rows.get("executions"), Some(&2), "{run:?}");
    assert_eq!(run.rows.get("execution_events"), Some(&3), "{run:?}");
    assert_eq!(run.error, None);
    let started = time_of(&Some(run.started_at.clone())).unwrap();
    let finished = time_of(&run.finished_at).expect("a finished run has finished_at");
    assert!(before <= started && started <= finished && finished <= now(), "{run:?}");
    assert!(run.duration_ms.is_some(), "{run:?}");
    let first = run.clone();

    let r = s.cleanup(&audit_older_than("90d")).await.unwrap();
    let status = s.retention_status().await.unwrap();
    assert_eq!(status.runs.len(), 2, "{status:?}");
    assert_eq!(Some(&status.runs[0].id), r.run_id.as_ref(), "newest first");
    assert_eq!(status.runs[0].rows.get("audit_logs"), Some(&1), "{:?}", status.runs[0]);
    assert_eq!(status.runs[0].rows.get("executions").copied().unwrap_or(0), 0);
    assert_eq!(status.runs[1], first, "a recorded run does not change");
    s.cleanup(&dry(audit_older_than("1d"))).await.unwrap();
    // Even a cleanup that finds nothing is a run (an operator can see it ran).
    let r = s.cleanup(&executions_older_than("30d")).await.unwrap();
    let status = s.retention_status().await.unwrap();
    assert_eq!(status.runs.len(), 3, "{status:?}");
    assert_eq!((Some(&status.runs[0].id), status.runs[0].status.as_str()), (r.run_id.as_ref(), "succeeded"));
    assert_eq!(status.runs[0].rows.values().sum::<u64>(), 0, "{:?}", status.runs[0]);
}

pub async fn retention_run_follows_the_configured_rules(h: &Harness) {
    // Without any rule, a run is skipped and says why.
    let r = h.storage.retention_run(&RetentionRunParams::default()).await.unwrap();
    assert!(!r.ran && r.run.is_none() && r.reports.is_empty(), "{r:?}");
    assert!(r.skipped.as_deref().unwrap_or("").contains("no retention rule is enabled"), "{r:?}");
    let tick = RetentionRunParams { tick: Some("2026-01-31T02:00:00Z".into()), dry_run: false };
    assert!(!h.storage.retention_run(&tick).await.unwrap().ran);
    let s = &h.storage;
    let old = execution_at(s, days_ago(40), ExecutionStatus::Completed, "", 2).await;
    let stuck = execution_at(s, days_ago(40), ExecutionStatus::Running, "", 0).await;
    let young = execution_at(s, days_ago(20), ExecutionStatus::Completed, "", 0).await;
    let newest = execution_at(s, days_ago(1), ExecutionStatus::Completed, "", 0).await;
    audit_at(s, &[days_ago(100), days_ago(1)]).await;
    let all = [&old, &stuck, &young, &newest];

    // A disabled rule is no rule.
    h.settle().await;
    let off = open_with_retention(h, json!({ "executions": { "enabled": false, "maxAge": "1d" } })).await;
    let r = off.retention_run(&RetentionRunParams::default()).await.unwrap();
    assert!(!r.ran && r.skipped.as_deref().unwrap_or("").contains("no retention rule"), "{r:?}");
    off.shutdown().await.unwrap();
    let s = reopen_on(
        h,
        json!({
            "executions": { "maxAge": "30d", "maxCount": 100 },
            "auditLogs": { "enabled": true, "maxAge": "90d" }
        }),
    )
    .await;
    let status = s.retention_status().await.unwrap();
    assert!(!status.scheduled && status.next_run.is_none() && status.schedule.is_none(), "{status:?}");
    let ex = status.executions.clone().expect("the executions rule is shown");
    assert_eq!((ex.enabled, ex.max_age.as_deref(), ex.max_count), (true, Some("30d"), Some(100)));
    let au = status.audit_logs.clone().expect("the audit rule is shown");
    assert_eq!((au.enabled, au.max_age.as_deref(), au.max_count), (true, Some("90d"), None));

    // A dry run reports per rule and records nothing.
    let r = s.retention_run(&RetentionRunParams { tick: None, dry_run: true }).await.unwrap();
    assert!(!r.ran && r.run.is_none(), "{r:?}");
    assert_eq!(r.reports.len(), 2, "{r:?}");
    assert_eq!(
        (r.reports[0].target.as_str(), main_part(&r.reports[0], "executions").rows),
        ("executions", 1)
    );
    assert_eq!(r.reports[0].unfinished_kept, 1);
    assert_eq!((r.reports[1].target.as_str(), main_part(&r.reports[1], "audit_logs").rows), ("auditLogs", 1));
    assert!(r.reports.iter().all(|p| p.dry_run));
    assert_eq!(run_count(&s).await, 0);
    assert_eq!(kept(&s, &all).await.len(), 4);

    // The run of a tick.
    let tick_text = "2026-01-31T02:00:00Z";
    let tick = |t: &str| RetentionRunParams { tick: Some(t.into()), dry_run: false };
    let r = s.retention_run(&tick(tick_text)).await.unwrap();
    assert!(r.ran && r.skipped.is_none(), "{r:?}");
    let run = r.run.clone().expect("a run that ran is returned");
    assert_eq!((run.trigger.as_str(), run.status.as_str()), ("scheduled", "succeeded"), "{run:?}");
    assert_eq!(time_of(&run.tick), time_of(&Some(tick_text.into())), "{run:?}");
    assert_eq!(run.rows.get("executions"), Some(&1), "{run:?}");
    assert_eq!(run.rows.get("execution_events"), Some(&2), "{run:?}");
    assert_eq!(run.rows.get("audit_logs"), Some(&1), "{run:?}");
    assert_eq!(r.reports.len(), 2, "{r:?}");
    assert!(r.reports.iter().all(|p| p.run_id.as_ref() == Some(&run.id) && !p.dry_run), "{r:?}");
    assert_eq!(kept(&s, &all).await, ids(&[&stuck, &young, &newest]));
    assert_eq!(s.audit_entries(AuditQuery::default(), 10).collect().await.unwrap().len(), 1);
    let status = s.retention_status().await.unwrap();
    assert_eq!(status.runs.first(), Some(&run), "status shows the run as the call returned it");

    // The same tick again, or an earlier one: skipped, nothing recorded.
    for t in [tick_text, "2026-01-31T02:00:00.000000Z", "2026-01-30T02:00:00Z"] {
        let r = s.retention_run(&tick(t)).await.unwrap();
        assert!(!r.ran && r.run.is_none(), "{t}: {r:?}");
        assert!(r.skipped.as_deref().unwrap_or("").contains("already has a run"), "{t}: {r:?}");
    }
    assert_eq!(run_count(&s).await, 1);
    // A later tick runs (finding nothing), and a manual run has no tick.
    let r = s.retention_run(&tick("2026-02-01T02:00:00Z")).await.unwrap();
    assert!(r.ran, "{r:?}");
    assert_eq!(r.run.as_ref().map(|r| r.rows.values().sum::<u64>()), Some(0), "{r:?}");
    let r = s.retention_run(&RetentionRunParams::default()).await.unwrap();
    let manual = r.run.clone().unwrap();
    assert_eq!((manual.trigger.as_str(), manual.tick.as_deref()), ("manual", None), "{r:?}");
    let status = s.retention_status().await.unwrap();
    let triggers: Vec<&str> = status.runs.iter().map(|r| r.trigger.as_str()).collect();
    assert_eq!(triggers, ["manual", "scheduled", "scheduled"], "newest first");
    assert_eq!(time_of(&status.runs[1].tick), time_of(&Some("2026-02-01T02:00:00Z".into())));
    s.shutdown().await.unwrap();
}

/// Like [`open_with_retention`] when the harness's instance may already be closed.
async fn reopen_on(h: &Harness, retention: serde_json::Value) -> Storage {
    let mut config = h.config.clone();
    config["retention"] = retention.clone();
    plugin().open(&config).unwrap_or_else(|e| panic!("open with storage.retention = {retention}: {e}"))
}

/// The first instant (UTC) of the month `back` months before this one.
fn month_start(back: i32) -> i64 {
    use jiff::{tz::TimeZone, ToSpan};
    let today = jiff::Timestamp::now().to_zoned(TimeZone::UTC).date();
    let first = today.first_of_month().checked_sub(back.months()).unwrap();
    first.at(0, 0, 0, 0).to_zoned(TimeZone::UTC).unwrap().timestamp().as_microsecond()
}

/// Rows months old, at and around month boundaries, where a backend may remove whole months (PostgreSQL
/// partitions, file-store month directories): a month goes whole only when every row in it is selected. An
/// old running execution keeps its month; a limit inside an instant at a month's first microsecond takes the
/// smaller id and keeps the larger.
pub async fn retention_whole_months_and_their_edges(h: &Harness) {
    let s = &h.storage;
    let m2 = month_start(2);
    let a = execution_at(s, month_start(5), ExecutionStatus::Completed, "zeppelin", 2).await;
    let b = execution_at(s, month_start(4) + 10 * DAY, ExecutionStatus::Completed, "zeppelin", 0).await;
    let c = execution_at(s, month_start(4) + 12 * DAY, ExecutionStatus::Running, "zeppelin", 1).await;
    let d = execution_at(s, m2 - 1, ExecutionStatus::Failed, "zeppelin", 1).await;
    let e =
        execution_with_id(s, "0190b3f2-7c1e-7a00-8000-000000000e01", m2, ExecutionStatus::Completed).await;
    let f =
        execution_with_id(s, "0190b3f2-7c1e-7a00-8000-000000000e02", m2, ExecutionStatus::Completed).await;
    let g = execution_at(s, month_start(1) + 3 * DAY, ExecutionStatus::Completed, "zeppelin", 1).await;
    let n = execution_at(s, now(), ExecutionStatus::Completed, "zeppelin", 1).await;
    let all = [&a, &b, &c, &d, &e, &f, &g, &n];
    // The newest 3 are n, g, f: f is the limit; e (same instant, smaller id) and everything older goes,
    // except running c.
    let three = CleanupParams { older_than: None, max_count: Some(3), ..executions_older_than("1d") };
    let r = s.cleanup(&dry(three.clone())).await.unwrap();
    let ex = main_part(&r, "executions");
    assert_eq!((ex.rows, r.unfinished_kept, r.rows_left), (4, 1, Some(4)), "{r:?}");
    assert_eq!(ex.sample_ids, ids(&[&a, &b, &d, &e]), "oldest first");
    assert_eq!((time_of(&ex.oldest), time_of(&ex.newest)), (Some(month_start(5)), Some(m2)), "{r:?}");
    assert_eq!(part(&r, "execution_events").rows, 3, "{r:?}");
    let r = s.cleanup(&three).await.unwrap();
    assert_eq!((main_part(&r, "executions").rows, part(&r, "execution_events").rows), (4, 3), "{r:?}");
    assert_eq!(kept(s, &all).await, ids(&[&c, &f, &g, &n]));
    assert_eq!(s.list_events(c.id).await.unwrap().len(), 1, "the running one keeps its events");
    assert_eq!(s.count_executions(ExecutionFilter::default()).await.unwrap(), 4);
    let ids_found = search_ids(s, "zeppelin").await;
    assert_eq!(ids_found, [&c, &g, &n].iter().map(|e| e.id.to_string()).collect());
    // The running one may still be updated and finish, in its old month.
    let done = ExecutionCompletion {
        status: ExecutionStatus::Cancelled,
        output: None,
        error: None,
        completed_at: None,
    };
    s.complete_execution(c.id, done).await.unwrap();
    // By age, with the cutoff in the day before last month's start: c and f go, g and n stay.
    let age_days = (now() - month_start(1)) / DAY + 1;
    let r = s.cleanup(&executions_older_than(&format!("{age_days}d"))).await.unwrap();
    assert_eq!((main_part(&r, "executions").rows, r.unfinished_kept, r.rows_left), (2, 0, None), "{r:?}");
    assert_eq!(kept(s, &all).await, ids(&[&g, &n]));
}

/// A cleanup runs while writers keep writing, and a second cleanup at the same time either waits its turn or
/// is refused by the runner lock (never both deleting, never an error of another kind); nothing written
/// during the cleanup is lost, and everything old is gone.
pub async fn retention_cleanup_runs_alongside_writers(h: &Harness) {
    const OLD: usize = 200;
    const WRITERS: usize = 4;
    const WRITES: usize = 40;
    let s = &h.storage;
    let mut seeders = Vec::new();
    for t in 0..8 {
        let s = s.clone();
        seeders.push(tokio::spawn(async move {
            for i in 0..OLD / 8 {
                let at = days_ago(40) - ((t * OLD / 8 + i) as i64) * 1_000_000;
                execution_at(&s, at, ExecutionStatus::Completed, "zeppelin old", 1).await;
            }
        }));
    }
    for t in seeders {
        t.await.unwrap();
    }
    let live = execution_at(s, now(), ExecutionStatus::Running, "zeppelin live", 0).await;

    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let s = s.clone();
        let live = live.id;
        writers.push(tokio::spawn(async move {
            for i in 0..WRITES {
                let mut e = new_execution("fresh", "1.0.0");
                e.input = Some(json!({ "text": format!("fresh {w} {i}") }).into());
                s.create_execution(e).await.unwrap_or_else(|e| panic!("writer {w} write {i}: {e}"));
                if i % 8 == 0 {
                    s.append_event(live, NewEvent::new(EventKind::StepResult, json!({ "w": w, "i": i })))
                        .await
                        .unwrap_or_else(|e| panic!("writer {w} event {i}: {e}"));
                }
            }
        }));
    }
    let cleanups: Vec<_> = (0..2)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move { s.cleanup(&executions_older_than("30d")).await })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let (mut removed, mut events, mut succeeded) = (0, 0, 0);
    for c in cleanups {
        match c.await.unwrap() {
            Ok(r) => {
                succeeded += 1;
                removed += main_part(&r, "executions").rows;
                events += part(&r, "execution_events").rows;
            }
            Err(e) => {
                assert_eq!(e.kind, ErrorKind::Conflict, "{e}");
                assert!(e.message.contains("runner lock"), "{e}");
            }
        }
    }
    assert!(succeeded >= 1, "one of two concurrent cleanups runs");
    assert_eq!((removed, events), (OLD as u64, OLD as u64), "every old execution went exactly once");
    let fresh = (WRITERS * WRITES) as u64;
    assert_eq!(s.count_executions(ExecutionFilter::default()).await.unwrap(), 1 + fresh);
    assert_eq!(s.count_executions(ExecutionFilter::default().pattern("fresh")).await.unwrap(), fresh);
    assert_eq!(search_ids(s, "zeppelin").await, BTreeSet::from([live.id.to_string()]));
    assert!(search_ids(s, "old").await.is_empty());
    assert_eq!(s.list_events(live.id).await.unwrap().len(), WRITERS * WRITES.div_ceil(8));
    let runs = s.retention_status().await.unwrap().runs;
    assert_eq!(runs.len(), succeeded, "{runs:?}");
    assert!(runs.iter().all(|r| r.status == "succeeded"), "{runs:?}");
}

/// Run records live with the data: another instance (or the next process) sees them as they were written, and
/// what a cleanup removed stays removed.
pub async fn retention_runs_outlive_the_instance(h: &Harness) {
    let s = &h.storage;
    let old = execution_at(s, days_ago(40), ExecutionStatus::Completed, "zeppelin", 2).await;
    let young = execution_at(s, days_ago(1), ExecutionStatus::Completed, "zeppelin", 0).await;
    audit_at(s, &[days_ago(100), days_ago(1)]).await;
    s.cleanup(&executions_older_than("30d")).await.unwrap();
    s.cleanup(&audit_older_than("90d")).await.unwrap();
    let runs = s.retention_status().await.unwrap().runs;
    assert_eq!(runs.len(), 2, "{runs:?}");
    if !h.concurrent_instances {
        h.storage.shutdown().await.unwrap();
    }
    h.settle().await;
    let other = h.reopen();
    assert_eq!(other.retention_status().await.unwrap().runs, runs, "the records as written");
    assert_eq!(kept(&other, &[&old, &young]).await, ids(&[&young]));
    assert_eq!(search_ids(&other, "zeppelin").await, BTreeSet::from([young.id.to_string()]));
    assert_eq!(other.audit_entries(AuditQuery::default(), 10).collect().await.unwrap().len(), 1);
    // The other instance records its own runs next to them.
    let r = other.cleanup(&executions_older_than("30d")).await.unwrap();
    let now_runs = other.retention_status().await.unwrap().runs;
    assert_eq!(now_runs.len(), 3);
    assert_eq!(Some(&now_runs[0].id), r.run_id.as_ref());
    assert_eq!(&now_runs[1..], &runs[..]);
    other.shutdown().await.unwrap();
}
