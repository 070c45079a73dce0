//! Archive, verify and restore (`archive`, `archive_verify`, `restore`) answer the same on every backend, to a
//! local destination (a directory in the harness's temp dir), read back here without the plugin: objects are
//! gzip NDJSON (`flate2` + `serde_json`), checksums SHA-256 (`ring`), manifests JSON (`common::archive`).
//! Old rows are made with an explicit `started_at` / `timestamp` days or months in the past, far from any
//! cutoff, as in `retention.rs`.

use std::collections::{BTreeMap, BTreeSet};

use parallax_storage_host::{
    archive::{ArchiveParams, ArchiveReport, RestoreParams, VerifyParams, VerifyReport},
    retention::{self, CleanupParams, CleanupTarget},
    *,
};
use serde_json::{json, Value};

use crate::common::{archive as ar, *};

const DAY: i64 = 86_400_000_000;

fn now() -> i64 {
    Timestamp::now().as_micros()
}

fn days_ago(days: i64) -> i64 {
    now() - days * DAY
}

/// The first instant (UTC) of the month `back` months before this one.
fn month_start(back: i32) -> i64 {
    use jiff::{tz::TimeZone, ToSpan};
    let today = jiff::Timestamp::now().to_zoned(TimeZone::UTC).date();
    let first = today.first_of_month().checked_sub(back.months()).unwrap();
    first.at(0, 0, 0, 0).to_zoned(TimeZone::UTC).unwrap().timestamp().as_microsecond()
}

/// `YYYY/MM` of an instant, in UTC.
fn year_month(micros: i64) -> String {
    let t = jiff::Timestamp::from_microsecond(micros).unwrap().to_zoned(jiff::tz::TimeZone::UTC);
    format!("{:04}/{:02}", t.year(), t.month())
}

fn executions_to(older_than: &str, destination: &str) -> ArchiveParams {
    ArchiveParams {
        target: CleanupTarget::Executions,
        older_than: Some(older_than.into()),
        max_count: None,
        destination: destination.into(),
        dry_run: false,
        keep: false,
        confirm_all: false,
    }
}

fn audit_to(older_than: &str, destination: &str) -> ArchiveParams {
    ArchiveParams { target: CleanupTarget::AuditLogs, ..executions_to(older_than, destination) }
}

fn kept(p: ArchiveParams) -> ArchiveParams {
    ArchiveParams { keep: true, ..p }
}

fn verify(source: &str) -> VerifyParams {
    VerifyParams { source: source.into() }
}

fn restore(source: &str) -> RestoreParams {
    RestoreParams { source: source.into(), dry_run: false }
}

fn count(map: &BTreeMap<String, u64>, table: &str) -> u64 {
    map.get(table).copied().unwrap_or(0)
}

/// An execution started at `started_at`, with documents in every JSON field, tags, `events` events recorded
/// after its start, then completed at a chosen time in `status` (left as is when not final).
async fn rich_execution(
    s: &Storage,
    started_at: i64,
    status: ExecutionStatus,
    word: &str,
    events: usize,
) -> Execution {
    let mut e = new_execution("archived", "2.1.0");
    e.started_at = Some(at(started_at));
    e.input =
        Some(json!({ "text": word, "n": 7, "nested": { "list": [1, 2.5, "drei", null, true] } }).into());
    e.metadata = Some(json!({ "team": "søren ✓", "priority": 3 }).into());
    e.tags = vec!["nightly".into(), "zz-last".into()];
    e.status =
        if status == ExecutionStatus::Pending { ExecutionStatus::Pending } else { ExecutionStatus::Running };
    let e = s.create_execution(e).await.unwrap();
    for i in 0..events {
        let kind = if i % 2 == 0 { EventKind::AgentAssignment } else { EventKind::StepResult };
        let ev = NewEvent {
            kind,
            payload: json!({ "step": i, "word": word, "deep": { "a": [i, { "b": "ü" }] } }).into(),
            recorded_at: Some(at(started_at + (i as i64 + 1) * 1_000_123)),
        };
        s.append_event(e.id, ev).await.unwrap();
    }
    if !status.is_final() {
        return e;
    }
    let (output, error) = match status {
        ExecutionStatus::Completed => (Some(json!({ "answer": word, "score": 0.75 }).into()), None),
        ExecutionStatus::Failed => (None, Some(json!({ "message": "boom", "code": 42 }).into())),
        _ => (None, None),
    };
    let done = ExecutionCompletion { status, output, error, completed_at: Some(at(started_at + 90_500_001)) };
    s.complete_execution(e.id, done).await.unwrap()
}

/// Audit entries at these times (one batch), their ids in the same order.
async fn audit_at(s: &Storage, times: &[i64]) -> Vec<Uuid> {
    let entries = times
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let mut a = audit("archive.test", "tester");
            a.timestamp = Some(at(*t));
            a.details = Some(json!({ "i": i, "what": "ärchive", "list": [1, 2] }).into());
            if i % 2 == 1 {
                a.ip_address = None;
                a.user_agent = None;
            }
            a
        })
        .collect();
    s.append_audit(entries).await.unwrap()
}

/// The executions of the main fixture: three old final ones in two months (a and b three months back, c two
/// months back), an old running one and a recent completed one.
struct Fixture {
    a: Execution,
    b: Execution,
    c: Execution,
    stuck: Execution,
    recent: Execution,
}

impl Fixture {
    async fn new(s: &Storage) -> Fixture {
        let m3 = month_start(3);
        Fixture {
            a: rich_execution(s, m3 + 2 * DAY, ExecutionStatus::Completed, "zeppelin alpha", 3).await,
            b: rich_execution(s, m3 + 5 * DAY, ExecutionStatus::Failed, "zeppelin beta", 1).await,
            c: rich_execution(s, month_start(2) + DAY, ExecutionStatus::Cancelled, "zeppelin gamma", 0).await,
            stuck: rich_execution(s, m3 + 3 * DAY, ExecutionStatus::Running, "zeppelin delta", 1).await,
            recent: rich_execution(s, days_ago(1), ExecutionStatus::Completed, "zeppelin epsilon", 2).await,
        }
    }

    fn old(&self) -> [&Execution; 3] {
        [&self.a, &self.b, &self.c]
    }

    fn old_ids(&self) -> BTreeSet<String> {
        self.old().iter().map(|e| e.id.to_string()).collect()
    }
}

async fn exists(s: &Storage, id: Uuid) -> bool {
    match s.get_execution(id).await {
        Ok(_) => true,
        Err(err) if err.kind == ErrorKind::NotFound => false,
        Err(err) => panic!("get_execution {id}: {err}"),
    }
}

/// The one manifest of a report, read from disk.
#[track_caller]
fn manifest_of(root: &std::path::Path, r: &ArchiveReport) -> Value {
    let key = r.manifest.as_ref().unwrap_or_else(|| panic!("the report names its manifest: {r:?}"));
    let text = std::fs::read_to_string(root.join(key)).unwrap_or_else(|e| panic!("manifest {key}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("manifest {key} is not JSON: {e}"))
}

/// A time as the archive writes it: RFC 3339 UTC with exactly six fractional digits.
#[track_caller]
fn archived_time(v: &Value, what: &str) -> i64 {
    let text = v.as_str().unwrap_or_else(|| panic!("{what} is a string: {v}"));
    let frac = text.strip_suffix('Z').and_then(|t| t.rsplit_once('.')).map(|(_, f)| f);
    assert!(
        frac.is_some_and(|f| f.len() == 6 && f.bytes().all(|b| b.is_ascii_digit())),
        "{what} {text:?} is RFC 3339 UTC with 6 fractional digits"
    );
    text.parse::<Timestamp>().unwrap().as_micros()
}

fn opt_time(v: &Value, what: &str) -> Option<i64> {
    (!v.is_null()).then(|| archived_time(v, what))
}

/// An archived execution record compared with the execution as the storage had it: every field, JSON fields as
/// values (not strings), times to the microsecond, events embedded.
#[track_caller]
fn assert_record_matches(rec: &Value, original: &Value) {
    let keys: BTreeSet<&str> = rec.as_object().unwrap().keys().map(String::as_str).collect();
    let expected: BTreeSet<&str> = [
        "recordSchema",
        "id",
        "patternName",
        "patternVersion",
        "status",
        "input",
        "output",
        "error",
        "startedAt",
        "completedAt",
        "durationMs",
        "metadata",
        "tags",
        "events",
    ]
    .into();
    assert!(expected.is_subset(&keys), "record keys {keys:?} hold every field of schema 1 {expected:?}");
    assert_eq!(rec["recordSchema"], 1, "{rec}");
    let id = rec["id"].as_str().unwrap();
    let mut as_doc = json!({
        "id": rec["id"],
        "patternName": rec["patternName"],
        "patternVersion": rec["patternVersion"],
        "status": rec["status"],
        "input": rec["input"],
        "output": rec["output"],
        "error": rec["error"],
        "startedAt": archived_time(&rec["startedAt"], "startedAt"),
        "completedAt": opt_time(&rec["completedAt"], "completedAt"),
        "durationMs": rec["durationMs"],
        "metadata": rec["metadata"],
        "tags": rec["tags"],
    });
    let events: Vec<Value> = rec["events"]
        .as_array()
        .unwrap_or_else(|| panic!("{id}: events is an array"))
        .iter()
        .map(|e| {
            json!({
                "id": e["id"], "executionId": id, "seq": e["seq"], "kind": e["kind"], "payload": e["payload"],
                "recordedAt": archived_time(&e["recordedAt"], "recordedAt"),
            })
        })
        .collect();
    as_doc["events"] = Value::Array(events);
    assert_eq!(&as_doc, original, "the archived record of {id} and the row it came from");
}

/// What a report's object list says, checked against the files: keys, sizes, SHA-256, rows.
#[track_caller]
fn assert_objects_stored(root: &std::path::Path, r: &ArchiveReport) {
    let manifest = manifest_of(root, r);
    let listed = manifest["objects"].as_array().unwrap();
    assert_eq!(listed.len(), r.objects.len(), "the manifest lists the report's objects: {manifest}");
    for (o, m) in r.objects.iter().zip(listed) {
        let bytes = std::fs::read(root.join(&o.key)).unwrap_or_else(|e| panic!("object {}: {e}", o.key));
        assert_eq!((o.size, o.sha256.clone()), (bytes.len() as u64, ar::sha256_hex(&bytes)), "{}", o.key);
        assert_eq!(ar::records_of(&bytes, &o.key).len() as u64, o.rows, "{}", o.key);
        assert_eq!(m["key"], json!(o.key));
        assert_eq!((m["size"].as_u64(), m["sha256"].as_str()), (Some(o.size), Some(o.sha256.as_str())));
        assert_eq!((m["rows"].as_u64(), m["events"].as_u64()), (Some(o.rows), Some(o.events)), "{}", o.key);
    }
    assert_eq!(r.bytes, r.objects.iter().map(|o| o.size).sum::<u64>(), "{r:?}");
}

async fn run_count(s: &Storage) -> usize {
    s.retention_status().await.unwrap().runs.len()
}

// ------------------------------------------------------------------ bodies

/// The old final executions go to gzip NDJSON objects, one per month, named after the run, each line one
/// execution with its events; the manifest lists them; the rows are gone from the storage (search included);
/// the unfinished and newer ones stay; the run is recorded with its archive.
pub async fn archive_executions_older_than_a_cutoff(h: &Harness) {
    let s = &h.storage;
    let f = Fixture::new(s).await;
    let (originals, _) = ar::snapshot(s).await;
    let (root, dest) = ar::destination(h, "archive");
    assert_eq!(ar::search_ids(s, "zeppelin").await.len(), 5);

    let started = now();
    let r = s.archive(&executions_to("30d", &dest)).await.unwrap();
    assert_eq!(
        (r.target.as_str(), r.dry_run, r.deleted, r.destination.as_str()),
        ("executions", false, true, &*dest)
    );
    let cutoff =
        r.cutoff.as_ref().expect("the report names the cutoff").parse::<Timestamp>().unwrap().as_micros();
    assert!((started - 30 * DAY..=now() - 30 * DAY).contains(&cutoff), "cutoff {:?} is now - 30d", r.cutoff);
    let run_id = r.run_id.clone().expect("a run id");
    assert_eq!(r.manifest.as_deref(), Some(&*format!("executions/manifests/{run_id}.json")), "{r:?}");
    assert!(r.resumed.is_empty(), "{r:?}");
    assert_eq!(count(&r.rows, "executions"), 3, "{r:?}");
    assert_eq!(count(&r.rows, "execution_events"), 4, "{r:?}");
    let cleanup = r.cleanup.as_ref().expect("the delete step reports");
    let removed = cleanup.tables.iter().find(|t| t.table == "executions").map(|t| t.rows);
    assert_eq!(removed, Some(3), "{r:?}");

    // One object per month, numbered across the run, named after the month of its records.
    let m3 = year_month(f.a.started_at.as_micros());
    let m2 = year_month(f.c.started_at.as_micros());
    let keys: Vec<&str> = r.objects.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            format!("executions/{m3}/{run_id}-0001.ndjson.gz"),
            format!("executions/{m2}/{run_id}-0002.ndjson.gz")
        ],
        "{r:?}"
    );
    assert_eq!(
        r.objects.iter().map(|o| (o.rows, o.events)).collect::<Vec<_>>(),
        [(2, 4), (1, 0)],
        "a (3 events) and b (1) in the first month, c in the second: {r:?}"
    );
    let first = &r.objects[0];
    assert_eq!(first.oldest.as_ref().map(|t| t.parse::<Timestamp>().unwrap()), Some(f.a.started_at));
    assert_eq!(first.newest.as_ref().map(|t| t.parse::<Timestamp>().unwrap()), Some(f.b.started_at));
    assert_objects_stored(&root, &r);
    assert_eq!(
        ar::all_files(&root),
        keys.iter().map(|k| k.to_string()).chain([r.manifest.clone().unwrap()]).collect(),
        "the objects and the manifest, nothing else"
    );

    // The manifest.
    let m = manifest_of(&root, &r);
    assert_eq!((m["formatVersion"].as_u64(), m["recordSchemaVersion"].as_u64()), (Some(1), Some(1)), "{m}");
    assert_eq!(
        (m["table"].as_str(), m["runId"].as_str()),
        (Some("executions"), Some(run_id.as_str())),
        "{m}"
    );
    assert_eq!((m["rows"].as_u64(), m["events"].as_u64()), (Some(3), Some(4)), "{m}");
    assert!(m["pluginVersion"].as_str().is_some_and(|v| !v.is_empty()), "{m}");
    let ids: Vec<String> = f.old().iter().map(|e| e.id.to_string()).collect();
    assert_eq!(m["minId"].as_str(), ids.iter().min().map(String::as_str), "{m}");
    assert_eq!(m["maxId"].as_str(), ids.iter().max().map(String::as_str), "{m}");

    // The records: exactly the archived executions, oldest first, every field, with their events.
    let records = ar::manifest_records(&root, &m);
    let got: Vec<&str> = records.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(got, ids, "the archived ids in (started_at, id) order");
    for rec in &records {
        assert_record_matches(rec, &originals[rec["id"].as_str().unwrap()]);
    }
    assert!(records[0]["input"].is_object(), "JSON documents are embedded as values: {}", records[0]);

    // Gone from the storage, the others kept.
    for e in f.old() {
        assert!(!exists(s, e.id).await, "{} was archived and deleted", e.id);
        assert_kind(s.list_events(e.id).await, ErrorKind::NotFound, &e.id.to_string());
    }
    let (left, _) = ar::snapshot(s).await;
    assert_eq!(
        left.keys().cloned().collect::<BTreeSet<_>>(),
        [f.stuck.id.to_string(), f.recent.id.to_string()].into()
    );
    for (id, d) in &left {
        assert_eq!(d, &originals[id], "a kept execution is unchanged");
    }
    let found = ar::search_ids(s, "zeppelin").await;
    assert_eq!(
        found,
        [f.stuck.id.to_string(), f.recent.id.to_string()].into(),
        "search no longer finds them"
    );
    assert!(ar::search_ids(s, "alpha").await.is_empty());

    // The run record shows the archive.
    let runs = s.retention_status().await.unwrap().runs;
    let run = runs.first().expect("the archive run is recorded");
    assert_eq!((Some(&run.id), run.status.as_str()), (Some(&run_id), "succeeded"), "{run:?}");
    let a = run.archive.as_ref().expect("the run record shows its archive");
    assert_eq!(
        (a.target.as_str(), a.destination.as_str(), a.phase.as_str()),
        ("executions", &*dest, "done"),
        "{a:?}"
    );
    assert_eq!(a.manifest, r.manifest, "{a:?}");
    assert_eq!(run.rows.get("executions"), Some(&3), "{run:?}");

    // Nothing left to archive: a second run finds nothing and writes no manifest.
    let again = s.archive(&executions_to("30d", &dest)).await.unwrap();
    assert_eq!((count(&again.rows, "executions"), again.manifest.clone()), (0, None), "{again:?}");
    assert!(again.objects.is_empty(), "{again:?}");
    assert_eq!(ar::manifests(&root).len(), 1);
}

/// `keep` archives and leaves the rows; a dry run writes no object and changes no row.
pub async fn archive_keep_and_dry_run(h: &Harness) {
    let s = &h.storage;
    let f = Fixture::new(s).await;
    let before = ar::snapshot(s).await;
    let (root, dest) = ar::destination(h, "dry");
    // A dry run reads the destination (to find bad credentials early) but creates nothing: it must exist.
    std::fs::create_dir_all(&root).unwrap();

    let r = s.archive(&ArchiveParams { dry_run: true, ..executions_to("30d", &dest) }).await.unwrap();
    assert!(r.dry_run && !r.deleted && r.cleanup.is_none() && r.manifest.is_none(), "{r:?}");
    assert_eq!((count(&r.rows, "executions"), count(&r.rows, "execution_events")), (3, 4), "would be: {r:?}");
    assert!(ar::all_files(&root).is_empty(), "a dry run wrote {:?}", ar::all_files(&root));
    assert_eq!(ar::snapshot(s).await, before, "a dry run changed the data");
    assert_eq!(run_count(s).await, 0, "a dry run is not recorded");
    let r = s.archive(&ArchiveParams { dry_run: true, ..audit_to("90d", &dest) }).await.unwrap();
    assert!(r.dry_run && ar::all_files(&root).is_empty(), "{r:?}");

    let (kroot, kdest) = ar::destination(h, "kept");
    let r = s.archive(&kept(executions_to("30d", &kdest))).await.unwrap();
    assert!(!r.dry_run && !r.deleted && r.cleanup.is_none(), "{r:?}");
    assert_eq!(count(&r.rows, "executions"), 3, "{r:?}");
    assert_objects_stored(&kroot, &r);
    let m = manifest_of(&kroot, &r);
    assert_eq!(ar::manifest_ids(&kroot, &m).into_iter().collect::<BTreeSet<_>>(), f.old_ids());
    assert_eq!(ar::snapshot(s).await, before, "--keep deleted something");
    let v = s.archive_verify(&verify(&kdest)).await.unwrap();
    assert!(v.ok, "{v:?}");
    let runs = s.retention_status().await.unwrap().runs;
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].archive.as_ref().map(|a| a.phase.as_str()), Some("done"), "{runs:?}");
    assert_eq!(ar::search_ids(s, "zeppelin").await.len(), 5);
}

/// `archive_verify` checks every object of every manifest; a flipped byte, a truncated object and a deleted one
/// each make it fail naming that object (the others still check out); an object no manifest names is an
/// orphan. Verify changes nothing.
pub async fn archive_verify_names_a_damaged_object(h: &Harness) {
    let s = &h.storage;
    Fixture::new(s).await;
    let (root, dest) = ar::destination(h, "verify");
    let r = s.archive(&executions_to("30d", &dest)).await.unwrap();
    assert_eq!(r.objects.len(), 2, "{r:?}");
    let manifest_key = r.manifest.clone().unwrap();

    let check = |v: &VerifyReport, bad: Option<&str>| {
        assert_eq!(v.ok, bad.is_none(), "{v:?}");
        assert_eq!(v.manifests.len(), 1, "{v:?}");
        let m = &v.manifests[0];
        assert_eq!(
            (m.key.as_str(), m.run_id.as_str(), m.table.as_str()),
            (&*manifest_key, r.run_id.as_deref().unwrap(), "executions"),
            "{m:?}"
        );
        assert_eq!(m.ok, bad.is_none(), "{m:?}");
        assert_eq!(m.objects.len(), 2, "{m:?}");
        for o in &m.objects {
            let is_bad = Some(o.key.as_str()) == bad;
            assert_eq!(o.ok, !is_bad, "{o:?}");
            assert_eq!(o.problem.is_some(), is_bad, "{o:?}");
        }
    };
    let v = s.archive_verify(&verify(&dest)).await.unwrap();
    check(&v, None);
    assert_eq!((v.manifests[0].rows, v.manifests[0].rows_found), (3, 3), "{v:?}");
    assert!(v.orphans.is_empty(), "{v:?}");
    assert_eq!(v.source, dest);
    // One manifest as the source, as a path and as a file:// URL.
    let one = format!("{}", root.join(&manifest_key).display());
    check(&s.archive_verify(&verify(&one)).await.unwrap(), None);
    check(&s.archive_verify(&verify(&format!("file://{one}"))).await.unwrap(), None);
    check(&s.archive_verify(&verify(&ar::file_url(&root))).await.unwrap(), None);

    let files_before: BTreeMap<String, Vec<u8>> = ar::all_files(&root)
        .into_iter()
        .map(|k| (k.clone(), std::fs::read(root.join(&k)).unwrap()))
        .collect();
    for (i, o) in r.objects.iter().enumerate() {
        let path = root.join(&o.key);
        let good = files_before[&o.key].clone();
        // A flipped byte in the middle.
        let mut bad = good.clone();
        bad[good.len() / 2] ^= 0x5a;
        std::fs::write(&path, &bad).unwrap();
        let v = s.archive_verify(&verify(&dest)).await.unwrap();
        check(&v, Some(&o.key));
        // Truncated.
        std::fs::write(&path, &good[..good.len() - 7]).unwrap();
        check(&s.archive_verify(&verify(&dest)).await.unwrap(), Some(&o.key));
        // Deleted.
        std::fs::remove_file(&path).unwrap();
        let v = s.archive_verify(&verify(&dest)).await.unwrap();
        check(&v, Some(&o.key));
        let problem = v.manifests[0].objects[i].problem.clone().unwrap_or_default();
        assert!(
            problem.to_lowercase().contains("missing") || problem.to_lowercase().contains("not found"),
            "{problem}"
        );
        std::fs::write(&path, &good).unwrap();
    }
    check(&s.archive_verify(&verify(&dest)).await.unwrap(), None);

    // An object no manifest names (left by a run killed before its manifest).
    let orphan = "executions/2001/01/0190b3f2-7c1e-7a00-8000-000000000000-0001.ndjson.gz";
    std::fs::create_dir_all(root.join("executions/2001/01")).unwrap();
    std::fs::write(root.join(orphan), &files_before[&r.objects[0].key]).unwrap();
    let v = s.archive_verify(&verify(&dest)).await.unwrap();
    assert_eq!(v.orphans, [orphan.to_string()], "{v:?}");
    assert!(v.manifests[0].ok, "{v:?}");
    std::fs::remove_file(root.join(orphan)).unwrap();

    // Verify never wrote anything.
    let files_after: BTreeMap<String, Vec<u8>> = ar::all_files(&root)
        .into_iter()
        .map(|k| (k.clone(), std::fs::read(root.join(&k)).unwrap()))
        .collect();
    let files_after: BTreeMap<_, _> =
        files_after.into_iter().filter(|(k, _)| !k.starts_with("executions/2001")).collect();
    assert_eq!(files_after, files_before);
    // A source with no archive at all is not "ok": there is nothing to vouch for.
    let (_, empty) = ar::destination(h, "nothing-here");
    std::fs::create_dir_all(h.dir.path().join("nothing-here")).unwrap();
    match s.archive_verify(&verify(&empty)).await {
        Ok(v) => assert!(v.manifests.is_empty() && !v.ok, "{v:?}"),
        Err(e) => assert!(e.message.contains("nothing-here"), "{e}"),
    }
}

/// Restore into a fresh storage of the same backend brings back every field of every execution, its events
/// and the audit entries, as the originals; search finds the restored executions; a second restore skips
/// everything; a dry run writes nothing; restoring into the storage the rows are still in skips them.
pub async fn restore_into_a_fresh_storage_equals_the_originals(h: &Harness) {
    let s = &h.storage;
    let f = Fixture::new(s).await;
    let old_audit = audit_at(s, &[month_start(5) + DAY, days_ago(120), days_ago(95)]).await;
    audit_at(s, &[days_ago(1)]).await;
    let (originals, audit_originals) = ar::snapshot(s).await;
    let (root, dest) = ar::destination(h, "restore");
    let r = s.archive(&kept(executions_to("30d", &dest))).await.unwrap();
    assert_eq!(count(&r.rows, "executions"), 3, "{r:?}");
    let r = s.archive(&kept(audit_to("90d", &dest))).await.unwrap();
    assert_eq!(count(&r.rows, "audit_logs"), 3, "{r:?}");
    assert_eq!(ar::manifests(&root).len(), 2);

    let fresh = ar::fresh_like(h).await;
    let t = &fresh.storage;
    let dry = s_restore(t, RestoreParams { source: dest.clone(), dry_run: true }).await;
    assert!(dry.dry_run, "{dry:?}");
    assert_eq!(
        (
            count(&dry.inserted, "executions"),
            count(&dry.inserted, "execution_events"),
            count(&dry.inserted, "audit_logs")
        ),
        (3, 4, 3),
        "{dry:?}"
    );
    assert_eq!(ar::snapshot(t).await, (BTreeMap::new(), BTreeMap::new()), "a dry run wrote");

    let rr = s_restore(t, restore(&dest)).await;
    assert!(!rr.dry_run, "{rr:?}");
    assert_eq!(rr.manifests.len(), 2, "{rr:?}");
    assert_eq!(
        (
            count(&rr.inserted, "executions"),
            count(&rr.inserted, "execution_events"),
            count(&rr.inserted, "audit_logs")
        ),
        (3, 4, 3),
        "{rr:?}"
    );
    assert_eq!(rr.skipped.values().sum::<u64>(), 0, "{rr:?}");
    let (restored, restored_audit) = ar::snapshot(t).await;
    let want: BTreeMap<String, Value> = originals
        .iter()
        .filter(|(id, _)| f.old_ids().contains(*id))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(restored, want, "restored executions and events equal the originals");
    let want_audit: BTreeMap<String, Value> = audit_originals
        .iter()
        .filter(|(id, _)| old_audit.iter().any(|a| a.to_string() == **id))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(restored_audit, want_audit, "restored audit entries equal the originals");
    assert_eq!(ar::search_ids(t, "zeppelin").await, f.old_ids(), "search finds the restored executions");
    assert_eq!(ar::search_ids(t, "alpha").await, [f.a.id.to_string()].into());
    // Filters and counts see them as any other row.
    let failed =
        t.count_executions(ExecutionFilter::default().status(ExecutionStatus::Failed)).await.unwrap();
    assert_eq!(failed, 1);
    assert_eq!(t.list_events(f.a.id).await.unwrap().len(), 3);

    // Again: everything is present, nothing is inserted or changed.
    let again = s_restore(t, restore(&dest)).await;
    assert_eq!(again.inserted.values().sum::<u64>(), 0, "{again:?}");
    assert_eq!(
        (count(&again.skipped, "executions"), count(&again.skipped, "audit_logs")),
        (3, 3),
        "{again:?}"
    );
    assert_eq!(ar::snapshot(t).await, (restored, restored_audit));
    // Into the storage the rows were never deleted from: all skipped, nothing changed.
    let same = s_restore(s, restore(&dest)).await;
    assert_eq!((same.inserted.values().sum::<u64>(), count(&same.skipped, "executions")), (0, 3), "{same:?}");
    assert_eq!(ar::snapshot(s).await, (originals, audit_originals));
    let _ = (f.stuck, f.recent);
    fresh.finish().await;
}

async fn s_restore(s: &Storage, p: RestoreParams) -> parallax_storage_host::archive::RestoreReport {
    let source = p.source.clone();
    s.restore(&p).await.unwrap_or_else(|e| panic!("restore {source}: {e}"))
}

/// A restore of a damaged archive (an object truncated, one with a flipped byte, one deleted) is refused naming
/// the object, and nothing at all is written, not even the records of the objects that are fine.
pub async fn restore_refuses_a_damaged_archive_and_writes_nothing(h: &Harness) {
    let s = &h.storage;
    Fixture::new(s).await;
    audit_at(s, &[days_ago(120), days_ago(1)]).await;
    let (root, dest) = ar::destination(h, "damaged");
    let r = s.archive(&kept(executions_to("30d", &dest))).await.unwrap();
    assert_eq!(r.objects.len(), 2, "{r:?}");
    s.archive(&kept(audit_to("90d", &dest))).await.unwrap();
    let fresh = ar::fresh_like(h).await;
    let t = &fresh.storage;
    let empty = (BTreeMap::new(), BTreeMap::new());
    let last = &r.objects[1].key;
    let path = root.join(last);
    let good = std::fs::read(&path).unwrap();

    type Damage = fn(&[u8]) -> Option<Vec<u8>>;
    let damages: [(&str, Damage); 3] = [
        ("truncated", |b| Some(b[..b.len() / 2].to_vec())),
        ("flipped", |b| {
            let mut v = b.to_vec();
            let i = v.len() - 9;
            v[i] ^= 0x01;
            Some(v)
        }),
        ("deleted", |_| None),
    ];
    for (what, damage) in damages {
        match damage(&good) {
            Some(bytes) => std::fs::write(&path, bytes).unwrap(),
            None => std::fs::remove_file(&path).unwrap(),
        }
        for dry_run in [false, true] {
            let err = t.restore(&RestoreParams { source: dest.clone(), dry_run }).await.unwrap_err();
            assert!(err.message.contains(last.as_str()), "{what}: the error names the object {last}: {err}");
            assert!(
                !err.message.contains(r.objects[0].key.as_str()),
                "{what}: only the bad object is named: {err}"
            );
        }
        assert_eq!(ar::snapshot(t).await, empty, "{what}: a refused restore wrote something");
        assert!(ar::search_ids(t, "zeppelin").await.is_empty(), "{what}");
        std::fs::write(&path, &good).unwrap();
    }
    // Repaired: it restores.
    let rr = s_restore(t, restore(&dest)).await;
    assert_eq!((count(&rr.inserted, "executions"), count(&rr.inserted, "audit_logs")), (3, 1), "{rr:?}");
    fresh.finish().await;
}

/// Audit entries older than the cutoff are archived (one object per month, under `audit_logs/`), deleted, and
/// restored as they were.
pub async fn archive_audit_logs_and_restore(h: &Harness) {
    let s = &h.storage;
    let old = audit_at(s, &[month_start(6) + DAY, month_start(6) + 2 * DAY, month_start(4) + DAY]).await;
    let recent = audit_at(s, &[days_ago(10), now()]).await;
    let exec = rich_execution(s, days_ago(400), ExecutionStatus::Completed, "untouched", 1).await;
    let (_, audit_originals) = ar::snapshot(s).await;
    let (root, dest) = ar::destination(h, "audit");

    let r = s.archive(&audit_to("90d", &dest)).await.unwrap();
    assert_eq!((r.target.as_str(), r.deleted), ("auditLogs", true), "{r:?}");
    assert_eq!(count(&r.rows, "audit_logs"), 3, "{r:?}");
    let run_id = r.run_id.clone().unwrap();
    assert_eq!(r.manifest.as_deref(), Some(&*format!("audit_logs/manifests/{run_id}.json")), "{r:?}");
    let keys: Vec<&str> = r.objects.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            format!("audit_logs/{}/{run_id}-0001.ndjson.gz", year_month(month_start(6))),
            format!("audit_logs/{}/{run_id}-0002.ndjson.gz", year_month(month_start(4)))
        ],
        "{r:?}"
    );
    assert_objects_stored(&root, &r);
    let m = manifest_of(&root, &r);
    assert_eq!((m["table"].as_str(), m["rows"].as_u64()), (Some("audit_logs"), Some(3)), "{m}");
    let records = ar::manifest_records(&root, &m);
    let want_ids: Vec<String> = old.iter().map(|i| i.to_string()).collect();
    assert_eq!(records.iter().map(|r| r["id"].as_str().unwrap().to_string()).collect::<Vec<_>>(), want_ids);
    for rec in &records {
        assert_eq!(rec["recordSchema"], 1, "{rec}");
        let id = rec["id"].as_str().unwrap();
        let as_doc = json!({
            "id": id,
            "timestamp": archived_time(&rec["timestamp"], "timestamp"),
            "action": rec["action"], "actor": rec["actor"], "resourceType": rec["resourceType"],
            "resourceId": rec["resourceId"], "details": rec["details"], "ipAddress": rec["ipAddress"],
            "userAgent": rec["userAgent"],
        });
        assert_eq!(as_doc, audit_originals[id], "the archived entry {id}");
        assert!(rec["details"].is_object(), "details embedded as JSON: {rec}");
    }
    let (_, left) = ar::snapshot(s).await;
    assert_eq!(left.keys().cloned().collect::<BTreeSet<_>>(), recent.iter().map(|i| i.to_string()).collect());
    assert!(exists(s, exec.id).await, "an audit archive leaves executions alone");
    assert!(s.archive_verify(&verify(&dest)).await.unwrap().ok);

    let fresh = ar::fresh_like(h).await;
    let rr = s_restore(&fresh.storage, restore(&ar::file_url(&root))).await;
    assert_eq!((count(&rr.inserted, "audit_logs"), count(&rr.inserted, "executions")), (3, 0), "{rr:?}");
    let (no_exec, restored) = ar::snapshot(&fresh.storage).await;
    assert!(no_exec.is_empty());
    let want: BTreeMap<String, Value> =
        audit_originals.into_iter().filter(|(id, _)| want_ids.contains(id)).collect();
    assert_eq!(restored, want);
    fresh.finish().await;
}

/// `maxCount` archives exactly the rows the same cleanup would remove (the newest N of any status stay, old
/// unfinished ones stay).
pub async fn archive_max_count_selects_what_cleanup_would(h: &Harness) {
    let s = &h.storage;
    let a = rich_execution(s, days_ago(50), ExecutionStatus::Completed, "a", 1).await;
    let b = rich_execution(s, days_ago(45), ExecutionStatus::Running, "b", 0).await;
    let c = rich_execution(s, days_ago(40), ExecutionStatus::Failed, "c", 2).await;
    let d = rich_execution(s, days_ago(10), ExecutionStatus::Cancelled, "d", 0).await;
    let e = rich_execution(s, days_ago(5), ExecutionStatus::Completed, "e", 0).await;
    let f = rich_execution(s, days_ago(1), ExecutionStatus::Pending, "f", 0).await;
    let (root, dest) = ar::destination(h, "max");
    let p = ArchiveParams { older_than: None, max_count: Some(3), ..executions_to("1d", &dest) };
    let plan = s
        .cleanup(&CleanupParams {
            target: CleanupTarget::Executions,
            older_than: None,
            max_count: Some(3),
            dry_run: true,
            include_unfinished: false,
            confirm_all: false,
        })
        .await
        .unwrap();
    let would = &plan.tables[0];
    assert_eq!((would.table.as_str(), would.rows), ("executions", 2), "{plan:?}");

    std::fs::create_dir_all(&root).unwrap(); // a dry run creates nothing, not even the directory
    let dry = s.archive(&ArchiveParams { dry_run: true, ..p.clone() }).await.unwrap();
    assert_eq!(count(&dry.rows, "executions"), would.rows, "{dry:?}");
    let r = s.archive(&p).await.unwrap();
    assert_eq!((r.max_count, r.cutoff.clone()), (Some(3), None), "{r:?}");
    let m = manifest_of(&root, &r);
    let archived: Vec<String> = ar::manifest_ids(&root, &m);
    assert_eq!(archived, would.sample_ids, "the archive holds what the cleanup plan names");
    assert_eq!(archived, [a.id.to_string(), c.id.to_string()]);
    for x in [&b, &d, &e, &f] {
        assert!(exists(s, x.id).await, "{} stays", x.id);
    }
    for x in [&a, &c] {
        assert!(!exists(s, x.id).await, "{} went", x.id);
    }
    // The same again: the newest 3 are already all that is left beyond the unfinished one.
    let again = s.archive(&p).await.unwrap();
    assert_eq!(count(&again.rows, "executions"), 0, "{again:?}");
    // Bad values are refused by name, as for cleanup, and write nothing.
    let (broot, bdest) = ar::destination(h, "bad");
    for (params, needle) in [
        (ArchiveParams { max_count: Some(0), ..p.clone() }, "--max-count 0"),
        (ArchiveParams { older_than: Some("banana".into()), ..p.clone() }, "banana"),
        (ArchiveParams { max_count: Some(5), ..audit_to("90d", &bdest) }, "--max-count"),
        (ArchiveParams { older_than: None, ..audit_to("90d", &bdest) }, "--older-than"),
    ] {
        let params = ArchiveParams { destination: bdest.clone(), ..params };
        assert_kind(s.archive(&params).await, ErrorKind::InvalidInput, needle);
    }
    // (A plain relative path is taken relative to the working directory, as the CLI does.)
    for bad in ["file://relative/", "ftp://example.com/x/"] {
        let err = s.archive(&executions_to("30d", bad)).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidInput, "{bad}: {err}");
        assert!(err.message.contains(bad.trim_end_matches('/')), "{bad}: the error names it: {err}");
    }
    assert!(ar::all_files(&broot).iter().all(|k| !k.ends_with(".json") && !k.ends_with(".gz")));
}

/// An archive that would remove every execution (or every audit entry) needs `confirmAll`, as a cleanup does,
/// and a refused one writes nothing; archives and cleanups share the runner lock: run together, each row goes
/// exactly once, and every archived row is in exactly one manifest.
pub async fn archive_confirm_all_and_runner_lock(h: &Harness) {
    let s = &h.storage;
    let all = [
        rich_execution(s, days_ago(40), ExecutionStatus::Completed, "one", 1).await,
        rich_execution(s, days_ago(41), ExecutionStatus::Failed, "two", 0).await,
    ];
    let (root, dest) = ar::destination(h, "confirm");
    let err = s.archive(&executions_to("30d", &dest)).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidInput, "{err}");
    assert!(err.message.contains("--yes") && err.message.contains("every execution"), "{err}");
    assert!(ar::object_files(&root).is_empty() && ar::manifests(&root).is_empty(), "a refused archive wrote");
    for e in &all {
        assert!(exists(s, e.id).await);
    }
    assert_eq!(run_count(s).await, 0, "a refused archive is not a run");
    audit_at(s, &[days_ago(100)]).await;
    assert_kind(s.archive(&audit_to("90d", &dest)).await, ErrorKind::InvalidInput, "--yes");
    let r = s.archive(&ArchiveParams { confirm_all: true, ..executions_to("30d", &dest) }).await.unwrap();
    assert_eq!(count(&r.rows, "executions"), 2, "{r:?}");
    assert_eq!(s.count_executions(ExecutionFilter::default()).await.unwrap(), 0);

    // Many old rows; two archives and a cleanup at once.
    const OLD: usize = 60;
    let mut old = BTreeSet::new();
    for i in 0..OLD {
        let e = rich_execution(s, days_ago(40) - i as i64 * 1_000_000, ExecutionStatus::Completed, "many", 1)
            .await;
        old.insert(e.id.to_string());
    }
    let live = rich_execution(s, now(), ExecutionStatus::Running, "live", 0).await;
    let (root2, dest2) = ar::destination(h, "together");
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let s = s.clone();
        let p = executions_to("30d", &dest2);
        tasks.push(tokio::spawn(async move { s.archive(&p).await.map(Some) }));
    }
    let cleaner = {
        let s = s.clone();
        tokio::spawn(async move {
            let p = CleanupParams {
                target: CleanupTarget::Executions,
                older_than: Some("30d".into()),
                max_count: None,
                dry_run: false,
                include_unfinished: false,
                confirm_all: false,
            };
            s.cleanup(&p).await
        })
    };
    let mut archived_rows = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(Some(r)) => archived_rows += count(&r.rows, "executions"),
            Ok(None) => unreachable!(),
            Err(e) => {
                assert_eq!(e.kind, ErrorKind::Conflict, "{e}");
                assert!(e.message.contains("runner lock"), "{e}");
            }
        }
    }
    let cleaned = match cleaner.await.unwrap() {
        Ok(r) => r.tables.iter().find(|t| t.table == "executions").map_or(0, |t| t.rows),
        Err(e) => {
            assert_eq!(e.kind, ErrorKind::Conflict, "{e}");
            0
        }
    };
    assert_eq!(archived_rows + cleaned, OLD as u64, "every old row went exactly once");
    let mut in_manifests = Vec::new();
    for m in ar::manifests(&root2).values() {
        in_manifests.extend(ar::manifest_ids(&root2, m));
    }
    let unique: BTreeSet<String> = in_manifests.iter().cloned().collect();
    assert_eq!(unique.len(), in_manifests.len(), "an id in two manifests");
    assert_eq!(in_manifests.len() as u64, archived_rows);
    assert!(unique.is_subset(&old));
    assert_eq!(s.count_executions(ExecutionFilter::default()).await.unwrap(), 1);
    assert!(exists(s, live.id).await);
    if archived_rows > 0 {
        assert!(s.archive_verify(&verify(&dest2)).await.unwrap().ok);
    }
    let _ = root2;
}

/// A second archive to the same destination adds a second manifest next to the first; verify of the prefix
/// checks both; restore of the prefix brings back both runs' rows.
pub async fn a_second_archive_adds_a_second_manifest(h: &Harness) {
    let s = &h.storage;
    let f = Fixture::new(s).await;
    let (root, dest) = ar::destination(h, "twice");
    // First the older month (a, b: three months back), then the rest (c).
    let age = (now() - month_start(2)) / DAY + 1;
    let first = s.archive(&executions_to(&format!("{age}d"), &dest)).await.unwrap();
    assert_eq!(count(&first.rows, "executions"), 2, "{first:?}");
    let second = s.archive(&executions_to("30d", &ar::file_url(&root))).await.unwrap();
    assert_eq!(count(&second.rows, "executions"), 1, "{second:?}");
    assert_ne!(first.run_id, second.run_id);
    let manifests = ar::manifests(&root);
    assert_eq!(
        manifests.keys().cloned().collect::<BTreeSet<_>>(),
        [first.manifest.clone().unwrap(), second.manifest.clone().unwrap()].into()
    );
    let mut ids = Vec::new();
    for m in manifests.values() {
        ids.extend(ar::manifest_ids(&root, m));
    }
    assert_eq!(ids.len(), 3, "no id in two manifests: {ids:?}");
    assert_eq!(ids.into_iter().collect::<BTreeSet<_>>(), f.old_ids());
    let keys: Vec<&String> = first.objects.iter().chain(&second.objects).map(|o| &o.key).collect();
    assert_eq!(keys.iter().collect::<BTreeSet<_>>().len(), keys.len(), "no object key reused: {keys:?}");

    let v = s.archive_verify(&verify(&dest)).await.unwrap();
    assert!(v.ok && v.orphans.is_empty(), "{v:?}");
    assert_eq!(v.manifests.len(), 2, "{v:?}");
    assert!(v.manifests.iter().all(|m| m.ok), "{v:?}");
    assert_eq!(v.manifests.iter().map(|m| m.rows).sum::<u64>(), 3, "{v:?}");
    // Damage the second run's object: only its manifest fails.
    let path = root.join(&second.objects[0].key);
    let good = std::fs::read(&path).unwrap();
    std::fs::write(&path, &good[..good.len() - 1]).unwrap();
    let v = s.archive_verify(&verify(&dest)).await.unwrap();
    assert!(!v.ok, "{v:?}");
    let bad: Vec<&str> = v.manifests.iter().filter(|m| !m.ok).map(|m| m.key.as_str()).collect();
    assert_eq!(bad, [second.manifest.as_deref().unwrap()], "{v:?}");
    std::fs::write(&path, &good).unwrap();

    let fresh = ar::fresh_like(h).await;
    let rr = s_restore(&fresh.storage, restore(&dest)).await;
    assert_eq!(rr.manifests.len(), 2, "{rr:?}");
    assert_eq!(rr.manifests[0], first.manifest.clone().unwrap(), "the older run is applied first: {rr:?}");
    assert_eq!(count(&rr.inserted, "executions"), 3, "{rr:?}");
    // One manifest as the source restores only its rows.
    let other = ar::fresh_like(h).await;
    let one = format!("{}", root.join(second.manifest.as_deref().unwrap()).display());
    let rr = s_restore(&other.storage, restore(&one)).await;
    assert_eq!((rr.manifests.len(), count(&rr.inserted, "executions")), (1, 1), "{rr:?}");
    assert!(exists(&other.storage, f.c.id).await && !exists(&other.storage, f.a.id).await);
    fresh.finish().await;
    other.finish().await;
}

/// A restore into a storage that already holds some of the archived ids inserts the others and leaves the present
/// ones exactly as they are (their own fields and events, not the archive's): skipped whole.
pub async fn restore_skips_present_rows_whole(h: &Harness) {
    let s = &h.storage;
    let f = Fixture::new(s).await;
    let (originals, _) = ar::snapshot(s).await;
    let (_, dest) = ar::destination(h, "partial");
    s.archive(&executions_to("30d", &dest)).await.unwrap();

    let fresh = ar::fresh_like(h).await;
    let t = &fresh.storage;
    // The same id as `a`, with other contents and one event of its own.
    let mut mine = new_execution("local-version", "9.9.9");
    mine.id = Some(f.a.id);
    mine.input = Some(json!({ "text": "mine" }).into());
    mine.status = ExecutionStatus::Running;
    let mine = t.create_execution(mine).await.unwrap();
    t.append_event(mine.id, NewEvent::new(EventKind::StepResult, json!({ "local": true }))).await.unwrap();
    let (before, _) = ar::snapshot(t).await;

    let rr = s_restore(t, restore(&dest)).await;
    assert_eq!((count(&rr.inserted, "executions"), count(&rr.skipped, "executions")), (2, 1), "{rr:?}");
    assert_eq!(count(&rr.inserted, "execution_events"), 1, "only b's event; a's are skipped with it: {rr:?}");
    let (after, _) = ar::snapshot(t).await;
    let a = f.a.id.to_string();
    assert_eq!(after[&a], before[&a], "the present row is left exactly as it was");
    for e in [&f.b, &f.c] {
        let id = e.id.to_string();
        assert_eq!(after[&id], originals[&id], "{id} restored as archived");
    }
    // The present execution is still alive: it can go on and finish.
    let done = ExecutionCompletion {
        status: ExecutionStatus::Completed,
        output: None,
        error: None,
        completed_at: None,
    };
    t.complete_execution(mine.id, done).await.unwrap();
    fresh.finish().await;
}

/// With `storage.retention.archiveDestination` set, a retention run archives what each rule removes first: one
/// archive report per rule, the objects and manifests at the destination, the rows gone, and the archive restores
/// to the originals. A dry run reports and writes nothing.
pub async fn retention_archives_first_with_an_archive_destination(h: &Harness) {
    let s = &h.storage;
    let f = Fixture::new(s).await;
    let old_audit = audit_at(s, &[days_ago(120), days_ago(100)]).await;
    audit_at(s, &[days_ago(1)]).await;
    let (originals, audit_originals) = ar::snapshot(s).await;
    let (root, dest) = ar::destination(h, "scheduled");
    std::fs::create_dir_all(&root).unwrap();
    if !h.concurrent_instances {
        h.storage.shutdown().await.unwrap();
    }
    h.settle().await;
    let mut config = h.config.clone();
    config["retention"] = json!({
        "executions": { "maxAge": "30d" },
        "auditLogs": { "enabled": true, "maxAge": "90d" },
        "archiveDestination": dest,
    });
    let t = plugin().open(&config).unwrap_or_else(|e| panic!("open with archiveDestination {dest}: {e}"));

    let dry = t.retention_run(&retention::RetentionRunParams { tick: None, dry_run: true }).await.unwrap();
    assert!(!dry.ran && dry.run.is_none(), "{dry:?}");
    assert_eq!(dry.archives.len(), 2, "a dry run reports what each rule would archive: {dry:?}");
    assert!(dry.archives.iter().all(|a| a.dry_run), "{dry:?}");
    assert!(ar::all_files(&root).is_empty(), "a dry run wrote {:?}", ar::all_files(&root));
    assert_eq!(ar::snapshot(&t).await, (originals.clone(), audit_originals.clone()));

    let r = t.retention_run(&retention::RetentionRunParams::default()).await.unwrap();
    assert!(r.ran, "{r:?}");
    assert_eq!(r.archives.len(), 2, "one archive per rule: {r:?}");
    let by_target: BTreeMap<&str, &ArchiveReport> =
        r.archives.iter().map(|a| (a.target.as_str(), a)).collect();
    assert_eq!(count(&by_target["executions"].rows, "executions"), 3, "{r:?}");
    assert_eq!(count(&by_target["auditLogs"].rows, "audit_logs"), 2, "{r:?}");
    assert!(r.archives.iter().all(|a| a.deleted && a.destination == dest), "{r:?}");
    let run = r.run.clone().expect("the run is recorded");
    assert_eq!(run.rows.get("executions"), Some(&3), "{run:?}");
    let manifests = ar::manifests(&root);
    assert_eq!(manifests.len(), 2, "{manifests:?}");
    let archived: BTreeSet<String> = manifests.values().flat_map(|m| ar::manifest_ids(&root, m)).collect();
    let want: BTreeSet<String> =
        f.old_ids().into_iter().chain(old_audit.iter().map(|i| i.to_string())).collect();
    assert_eq!(archived, want);
    let (left, left_audit) = ar::snapshot(&t).await;
    assert_eq!(
        left.keys().cloned().collect::<BTreeSet<_>>(),
        [f.stuck.id.to_string(), f.recent.id.to_string()].into()
    );
    assert_eq!(left_audit.len(), 1);
    assert!(t.archive_verify(&verify(&dest)).await.unwrap().ok);

    let fresh = ar::fresh_like(h).await;
    s_restore(&fresh.storage, restore(&dest)).await;
    let (restored, restored_audit) = ar::snapshot(&fresh.storage).await;
    for (id, d) in &restored {
        assert_eq!(Some(d), originals.get(id), "{id}");
    }
    for (id, d) in &restored_audit {
        assert_eq!(Some(d), audit_originals.get(id), "{id}");
    }
    assert_eq!((restored.len(), restored_audit.len()), (3, 2));
    fresh.finish().await;
    t.shutdown().await.unwrap();
}
