//! Round trips across backends: archive from one backend to a local destination, restore into another, and the
//! rows, their events, the audit entries and the search results are equal (compared as parsed JSON documents,
//! not text: PostgreSQL's jsonb reorders keys). SQLite → PostgreSQL and file store → SQLite, as the issue
//! asks, and PostgreSQL → file store to close the circle.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{archive as ar, *};
use parallax_storage_host::{
    archive::{ArchiveParams, RestoreParams, VerifyParams},
    retention::CleanupTarget,
    *,
};
use serde_json::{json, Value};

const DAY: i64 = 86_400_000_000;

fn now() -> i64 {
    Timestamp::now().as_micros()
}

const WORDS: [&str; 5] = ["zeppelin", "harbour", "quartz", "ünïcode", "nightly"];

/// Old executions of every final status across four months (documents in every field, unicode, tags, a few
/// events with payloads), old unfinished and recent ones, and old and recent audit entries.
async fn populate(s: &Storage) {
    let base = now() - 150 * DAY;
    for i in 0..24i64 {
        let started = base + i * 4 * DAY + i * 1_234_567;
        let word = WORDS[i as usize % WORDS.len()];
        let mut e = new_execution(&format!("pattern-{}", i % 3), "1.2.3");
        e.started_at = Some(at(started));
        e.input = Some(json!({ "text": format!("{word} number {i}"), "i": i, "f": 0.5, "nested": { "k": [word, null] } }).into());
        e.metadata = if i % 2 == 0 { Some(json!({ "owner": "ops", "n": i }).into()) } else { None };
        e.tags = if i % 3 == 0 { vec!["nightly".into(), format!("t{i}")] } else { vec![] };
        e.status = ExecutionStatus::Running;
        let e = s.create_execution(e).await.unwrap();
        for k in 0..(i % 4) {
            let kind = if k % 2 == 0 { EventKind::AgentAssignment } else { EventKind::StepResult };
            let ev = NewEvent {
                kind,
                payload: json!({ "k": k, "say": format!("{word} step") }).into(),
                recorded_at: Some(at(started + (k + 1) * 777_001)),
            };
            s.append_event(e.id, ev).await.unwrap();
        }
        let (status, output, error) = match i % 3 {
            0 => (ExecutionStatus::Completed, Some(json!({ "answer": word })), None),
            1 => (ExecutionStatus::Failed, None, Some(json!({ "message": "timeout", "after": 30 }))),
            _ => (ExecutionStatus::Cancelled, None, None),
        };
        let done = ExecutionCompletion {
            status,
            output: output.map(Into::into),
            error: error.map(Into::into),
            completed_at: Some(at(started + 61_000_123)),
        };
        s.complete_execution(e.id, done).await.unwrap();
    }
    // Old but running: stays.
    let mut e = new_execution("stuck", "1.0.0");
    e.started_at = Some(at(base));
    e.input = Some(json!({ "text": "zeppelin stuck" }).into());
    s.create_execution(e).await.unwrap();
    // Recent: stays.
    let mut e = new_execution("recent", "1.0.0");
    e.input = Some(json!({ "text": "zeppelin recent" }).into());
    s.create_execution(e).await.unwrap();
    let entries = (0..14i64)
        .map(|i| {
            let mut a = audit(&format!("action.{i}"), "tester");
            a.timestamp = Some(at(now() - (200 - i * 15) * DAY));
            a.details = Some(json!({ "i": i, "w": WORDS[i as usize % 5] }).into());
            if i % 2 == 0 {
                a.actor = None;
                a.ip_address = None;
            }
            a
        })
        .collect();
    s.append_audit(entries).await.unwrap();
}

struct Originals {
    executions: BTreeMap<String, Value>,
    audit: BTreeMap<String, Value>,
    search: BTreeMap<&'static str, BTreeSet<String>>,
}

async fn originals(s: &Storage) -> Originals {
    let (executions, audit) = ar::snapshot(s).await;
    let mut search = BTreeMap::new();
    for w in WORDS {
        search.insert(w, ar::search_ids(s, w).await);
    }
    Originals { executions, audit, search }
}

/// Archives (and deletes) the old executions and audit entries of `from`, restores them into `to`, and compares.
async fn round_trip(from: Harness, to: Harness) {
    populate(&from.storage).await;
    let before = originals(&from.storage).await;
    assert!(before.search["zeppelin"].len() >= 5, "the fixture is searchable: {:?}", before.search);
    let (root, dest) = ar::destination(&from, "archive");
    let archive = |target| ArchiveParams {
        target,
        older_than: Some("30d".into()),
        max_count: None,
        destination: dest.clone(),
        dry_run: false,
        keep: false,
        confirm_all: false,
    };
    let r = from.storage.archive(&archive(CleanupTarget::Executions)).await.unwrap();
    assert_eq!(r.rows.get("executions"), Some(&24), "{r:?}");
    assert!(r.objects.len() >= 3, "one object per month at least: {r:?}");
    let r = from.storage.archive(&archive(CleanupTarget::AuditLogs)).await.unwrap();
    let old_audit = r.rows.get("audit_logs").copied().unwrap_or(0);
    assert_eq!(old_audit, 12, "{r:?}");
    let (left, left_audit) = ar::snapshot(&from.storage).await;
    assert_eq!(left.len(), 2, "the stuck and the recent execution stay");
    let archived: BTreeSet<String> =
        ar::manifests(&root).values().flat_map(|m| ar::manifest_ids(&root, m)).collect();
    assert_eq!(archived.len() as u64, 24 + old_audit);

    let v = to.storage.archive_verify(&VerifyParams { source: dest.clone() }).await.unwrap();
    assert!(v.ok && v.manifests.len() == 2, "{v:?}");
    let rr =
        to.storage.restore(&RestoreParams { source: ar::file_url(&root), dry_run: false }).await.unwrap();
    assert_eq!(rr.inserted.get("executions"), Some(&24), "{rr:?}");
    assert_eq!(rr.inserted.get("audit_logs"), Some(&old_audit), "{rr:?}");
    let events: u64 = (0..24u64).map(|i| i % 4).sum();
    assert_eq!(rr.inserted.get("execution_events"), Some(&events), "{rr:?}");

    let (restored, restored_audit) = ar::snapshot(&to.storage).await;
    let want: BTreeMap<String, Value> = before
        .executions
        .iter()
        .filter(|(id, _)| !left.contains_key(*id))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(restored.len(), want.len());
    for (id, doc) in &want {
        assert_eq!(restored.get(id), Some(doc), "execution {id} (with its events) after the round trip");
    }
    let want_audit: BTreeMap<String, Value> = before
        .audit
        .iter()
        .filter(|(id, _)| !left_audit.contains_key(*id))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(restored_audit, want_audit, "audit entries after the round trip");
    for w in WORDS {
        let expected: BTreeSet<String> =
            before.search[w].iter().filter(|id| want.contains_key(*id)).cloned().collect();
        assert_eq!(ar::search_ids(&to.storage, w).await, expected, "search for {w:?} after the round trip");
    }
    // Filters see restored rows as any others.
    let failed = to
        .storage
        .count_executions(ExecutionFilter::default().status(ExecutionStatus::Failed))
        .await
        .unwrap();
    assert_eq!(failed, 8);
    let tagged = to.storage.count_executions(ExecutionFilter::default().tag("nightly")).await.unwrap();
    assert_eq!(tagged, 8);
    // Idempotent across backends too.
    let again = to.storage.restore(&RestoreParams { source: dest.clone(), dry_run: false }).await.unwrap();
    assert_eq!(again.inserted.values().sum::<u64>(), 0, "{again:?}");
    assert_eq!(again.skipped.get("executions"), Some(&24), "{again:?}");
    // And back into the source: the archived rows come home next to the ones that stayed.
    let home = from.storage.restore(&RestoreParams { source: dest, dry_run: false }).await.unwrap();
    assert_eq!(home.inserted.get("executions"), Some(&24), "{home:?}");
    let after = originals(&from.storage).await;
    assert_eq!(after.executions, before.executions);
    assert_eq!(after.audit, before.audit);
    assert_eq!(after.search, before.search);
    from.finish().await;
    to.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_to_postgresql() {
    round_trip(sqlite().await, postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_store_to_sqlite() {
    round_trip(file::yaml_gz().await, sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_to_file_store() {
    round_trip(postgres().await, file::json().await).await;
}
