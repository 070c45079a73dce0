//! Moving the whole history between backends (`copy`, `export`, `import`, `backup`): a data set with
//! everything a store can hold ([`populate_everything`]), the whole store as parsed JSON documents
//! ([`full_snapshot`]: every pattern version, every execution with its events, every audit entry; times in
//! microseconds, numbers compared by value because PostgreSQL's jsonb prints `1e2` as `100`), the params of the
//! four ops (`Storage::copy`, `export`, `import`, `backup`) and checks of their reports.

use std::collections::{BTreeMap, BTreeSet};

use parallax_storage_host::transfer::{CopyParams, ExportParams, ImportParams, TransferReport, TABLES};
use parallax_storage_host::*;
use serde_json::{json, Value};

use super::{archive as ar, at, audit, doc, new_execution, page, Harness};

pub const DAY: i64 = 86_400_000_000;

/// Words the data set puts in documents, for `search_executions` (compared as sets across backends).
pub const WORDS: [&str; 5] = ["zeppelin", "harbour", "quartz", "ünïcode", "nightly"];

/// Words of pattern names, descriptions and definitions, for `search_patterns`.
pub const PATTERN_WORDS: [&str; 3] = ["summarise", "übersetzer", "triage"];

pub fn now() -> i64 {
    Timestamp::now().as_micros()
}

/// The first instant (UTC) of the month `back` months before this one.
pub fn month_start(back: i32) -> i64 {
    use jiff::{tz::TimeZone, ToSpan};
    let today = jiff::Timestamp::now().to_zoned(TimeZone::UTC).date();
    let first = today.first_of_month().checked_sub(back.months()).unwrap();
    first.at(0, 0, 0, 0).to_zoned(TimeZone::UTC).unwrap().timestamp().as_microsecond()
}

/// `executions_YYYY_MM`, the PostgreSQL partition holding `micros`.
pub fn partition_of(micros: i64) -> String {
    let t = jiff::Timestamp::from_microsecond(micros).unwrap().to_zoned(jiff::tz::TimeZone::UTC);
    format!("executions_{:04}_{:02}", t.year(), t.month())
}

// ------------------------------------------------------------------ the ops

/// `copy` into the store described by `target` (a storage config as the factories build it).
pub fn copy_to(target: &Value) -> CopyParams {
    CopyParams { target: target.to_string(), target_label: Some("target.yaml".into()), ..Default::default() }
}

pub fn merged(p: CopyParams) -> CopyParams {
    CopyParams { merge: true, ..p }
}

pub fn export_to(destination: &str) -> ExportParams {
    ExportParams { destination: destination.into(), dry_run: false }
}

pub fn import_from(source: &str, merge: bool) -> ImportParams {
    ImportParams { source: source.into(), merge, dry_run: false }
}

// ------------------------------------------------------------------ the data set

/// What [`populate_everything`] wrote, per table of [`TABLES`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Counts {
    pub patterns: u64,
    pub executions: u64,
    pub events: u64,
    pub audit: u64,
}

impl Counts {
    /// The count of table `table` (one of [`TABLES`]).
    pub fn of(&self, table: &str) -> u64 {
        match table {
            "patterns" => self.patterns,
            "executions" => self.executions,
            "execution_events" => self.events,
            "audit_logs" => self.audit,
            other => panic!("unknown table {other}"),
        }
    }
}

/// A document with the number spellings backends disagree on (`1e2`, `2.50`, an integer beyond 64 bits),
/// nested nulls, unicode and escapes.
fn awkward_doc(word: &str, i: i64) -> Json {
    doc(&format!(
        r#"{{"text": "{word} number {i}", "hundred": 1e2, "price": 2.50, "big": 123456789012345678901234,
            "neg": -7, "nothing": null, "list": [1, 2.5, "drei", null, true, {{"deep": "ü\u00e9\n"}}],
            "z": {{"b": 1, "a": [{{"y": null, "x": 0.1}}]}}}}"#
    ))
}

/// Every pattern (3 names × 3 versions, with `created_by`, one without), executions of every status in five
/// months (pending and running ones with events, final ones with output or error, tags, unicode, null and
/// absent fields, one input over 1 MiB), and audit entries with IPv4, IPv6 and no address.
pub async fn populate_everything(s: &Storage) -> Counts {
    let mut counts = Counts::default();
    let creators = [Some("tester"), Some("jürgen ✓ 日本"), None];
    for (n, name) in ["summarise", "übersetzer ✓", "triage"].iter().enumerate() {
        for (v, version) in ["1.0.0", "1.1.0", "2.0.0"].iter().enumerate() {
            let definition = doc(&format!(
                r#"{{"name": "{name}", "version": "{version}", "steps": [{{"agent": "writer", "weight": 2.50}},
                    {{"agent": "critic", "max": 1e2, "opt": null}}], "note": "übersetzer triage summarise"}}"#
            ));
            let mut p = NewPattern::new(*name, *version, definition);
            if (n + v) % 4 != 3 {
                p = p.description(format!("{name} {version}: summarise then triage ✓"));
            }
            if let Some(who) = creators[(n + v) % 3] {
                p = p.created_by(who);
            }
            s.put_pattern(p).await.unwrap_or_else(|e| panic!("put pattern {name}@{version}: {e}"));
            counts.patterns += 1;
        }
    }
    let statuses = [
        ExecutionStatus::Completed,
        ExecutionStatus::Failed,
        ExecutionStatus::Cancelled,
        ExecutionStatus::Running,
        ExecutionStatus::Pending,
    ];
    for i in 0..30i64 {
        let back = (i % 5) as i32;
        let started = month_start(back + 1) + (i + 1) * 3 * 3_600_000_000 + i * 1_234_567;
        let word = WORDS[i as usize % WORDS.len()];
        let status = statuses[i as usize % statuses.len()];
        let mut e = new_execution(["summarise", "übersetzer ✓", "triage"][i as usize % 3], "1.1.0");
        e.started_at = Some(at(started));
        e.input = Some(awkward_doc(word, i));
        e.metadata = match i % 3 {
            0 => None,
            1 => Some(json!({ "owner": "søren ✓", "n": i, "gone": null }).into()),
            _ => Some(json!({}).into()),
        };
        e.tags = match i % 4 {
            0 => vec![],
            1 => vec!["nightly".into()],
            2 => vec!["zz-last".into(), "ärger".into(), "a".into()],
            _ => vec![format!("t{i}")],
        };
        e.status = if status == ExecutionStatus::Pending {
            ExecutionStatus::Pending
        } else {
            ExecutionStatus::Running
        };
        let created = s.create_execution(e).await.unwrap();
        counts.executions += 1;
        for k in 0..(i % 4) {
            let kind = if k % 2 == 0 { EventKind::AgentAssignment } else { EventKind::StepResult };
            let ev = NewEvent {
                kind,
                payload: json!({ "k": k, "say": format!("{word} step"), "deep": { "a": [k, { "b": "ü" }] } })
                    .into(),
                recorded_at: Some(at(started + (k + 1) * 777_001)),
            };
            s.append_event(created.id, ev).await.unwrap();
            counts.events += 1;
        }
        if status.is_final() {
            let (output, error) = match status {
                ExecutionStatus::Completed => {
                    (Some(doc(r#"{"answer": "42", "score": 0.75, "n": 1e2, "none": null}"#)), None)
                }
                ExecutionStatus::Failed => (None, Some(json!({ "message": "boom ✗", "code": 42 }).into())),
                _ => (None, None),
            };
            let done = ExecutionCompletion {
                status,
                output,
                error,
                completed_at: Some(at(started + 61_000_123 + i)),
            };
            s.complete_execution(created.id, done).await.unwrap();
        }
    }
    // One input over 1 MiB: words from a vocabulary of 256 in a pseudo-random order (PostgreSQL's tsvector holds
    // at most 1 MiB of distinct lexemes: a MiB of distinct words is refused there, "string is too long for
    // tsvector").
    let mut big = String::with_capacity(1 << 21);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while big.len() < (1 << 20) + 4096 {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        big.push_str(&format!("w{:02x} ", x >> 56));
    }
    let mut e = new_execution("summarise", "2.0.0");
    e.started_at = Some(at(month_start(2) + 5 * DAY));
    e.input = Some(json!({ "text": "quartz large document", "blob": big }).into());
    e.tags = vec!["large".into()];
    let large = s.create_execution(e).await.unwrap();
    let done = ExecutionCompletion {
        status: ExecutionStatus::Completed,
        output: Some(json!({ "size": big.len() }).into()),
        error: None,
        completed_at: Some(at(month_start(2) + 5 * DAY + 1)),
    };
    s.complete_execution(large.id, done).await.unwrap();
    counts.executions += 1;
    // A recent running one with started_at defaulted (now).
    let mut e = new_execution("triage", "2.0.0");
    e.input = Some(json!({ "text": "zeppelin now" }).into());
    s.create_execution(e).await.unwrap();
    counts.executions += 1;

    let ips = [Some("10.1.2.3"), Some("2001:db8::1"), None, Some("192.168.0.0/24"), Some("::1")];
    let entries: Vec<NewAuditEntry> = (0..20i64)
        .map(|i| {
            let mut a = audit(&format!("action.{i}"), if i % 3 == 0 { "jürgen ✓ 日本" } else { "tester" });
            a.timestamp = Some(at(month_start((i % 6) as i32) + i * 1_000_001 + 17));
            a.details = match i % 3 {
                0 => None,
                1 => Some(doc(r#"{"i": 1e2, "w": "ünïcode", "p": 2.50, "n": null}"#)),
                _ => Some(json!({ "i": i, "w": WORDS[i as usize % 5] }).into()),
            };
            a.ip_address = ips[i as usize % ips.len()].map(String::from);
            if i % 4 == 0 {
                a.actor = None;
                a.user_agent = None;
                a.resource_id = None;
            }
            a
        })
        .collect();
    counts.audit += s.append_audit(entries).await.unwrap().len() as u64;
    counts
}

/// `n` executions (in the last `months` months, `events` events each, every fifth one left running) plus a
/// few patterns and audit entries, written by 8 tasks: a data set big enough that a copy takes several pages.
pub async fn populate_bulk(s: &Storage, n: usize, events: usize, months: i32) -> Counts {
    let mut counts = populate_small_patterns(s).await;
    let mut tasks = Vec::new();
    let chunks = 8;
    for t in 0..chunks {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut written = (0u64, 0u64);
            for i in (t..n).step_by(chunks) {
                let started = month_start(1 + (i as i32 % months)) + DAY + i as i64 * 1_000_003;
                let mut e = new_execution("bulk", "1.0.0");
                e.started_at = Some(at(started));
                e.input =
                    Some(json!({ "text": format!("{} bulk {i}", WORDS[i % 5]), "i": i, "f": 2.5 }).into());
                e.tags = if i % 3 == 0 { vec!["nightly".into()] } else { vec![] };
                let e = s.create_execution(e).await.unwrap();
                written.0 += 1;
                for k in 0..events {
                    let ev = NewEvent {
                        kind: EventKind::StepResult,
                        payload: json!({ "k": k, "i": i }).into(),
                        recorded_at: Some(at(started + 1 + k as i64)),
                    };
                    s.append_event(e.id, ev).await.unwrap();
                    written.1 += 1;
                }
                if i % 5 != 4 {
                    let done = ExecutionCompletion {
                        status: if i % 7 == 0 { ExecutionStatus::Failed } else { ExecutionStatus::Completed },
                        output: Some(json!({ "ok": i }).into()),
                        error: None,
                        completed_at: Some(at(started + 5_000_000)),
                    };
                    s.complete_execution(e.id, done).await.unwrap();
                }
            }
            written
        }));
    }
    for t in tasks {
        let (e, ev) = t.await.unwrap();
        counts.executions += e;
        counts.events += ev;
    }
    let entries: Vec<NewAuditEntry> = (0..300i64)
        .map(|i| {
            let mut a = audit(&format!("bulk.{i}"), "tester");
            a.timestamp = Some(at(month_start(1 + (i % months as i64) as i32) + i * 1_000_001));
            a
        })
        .collect();
    counts.audit += s.append_audit(entries).await.unwrap().len() as u64;
    counts
}

async fn populate_small_patterns(s: &Storage) -> Counts {
    for v in ["1.0.0", "1.0.1", "1.2.0"] {
        s.put_pattern(super::new_pattern("bulk", v)).await.unwrap();
    }
    Counts { patterns: 3, ..Counts::default() }
}

// ------------------------------------------------------------------ rows written identically into two stores

/// An execution with a client-chosen id and every time given, with `events` events, completed: writing it without
/// events with the same arguments into two stores makes equal rows (same checksum; events get ids of their own,
/// so an execution with events is never equal in two stores); another `word` makes a row with the same id and
/// other content.
pub async fn twin_execution(s: &Storage, id: Uuid, started: i64, word: &str, events: i64) -> Execution {
    let mut e = new_execution("twin", "1.0.0");
    e.id = Some(id);
    e.started_at = Some(at(started));
    e.input = Some(json!({ "text": word, "n": 3 }).into());
    e.tags = vec!["twin".into()];
    let e = s.create_execution(e).await.unwrap_or_else(|e| panic!("create twin {id}: {e}"));
    for k in 0..events {
        let ev = NewEvent {
            kind: EventKind::StepResult,
            payload: json!({ "k": k, "word": word }).into(),
            recorded_at: Some(at(started + 1 + k)),
        };
        s.append_event(e.id, ev).await.unwrap();
    }
    let done = ExecutionCompletion {
        status: ExecutionStatus::Completed,
        output: Some(json!({ "answer": word }).into()),
        error: None,
        completed_at: Some(at(started + 10_000_000)),
    };
    s.complete_execution(e.id, done).await.unwrap()
}

/// An audit entry with a client-chosen id and time (equal when written twice with the same arguments).
pub async fn twin_audit(s: &Storage, id: Uuid, timestamp: i64, word: &str) {
    let mut a = audit("twin", "tester");
    a.id = Some(id);
    a.timestamp = Some(at(timestamp));
    a.details = Some(json!({ "word": word }).into());
    s.append_audit(vec![a]).await.unwrap_or_else(|e| panic!("append twin audit {id}: {e}"));
}

/// A fixed UUID per small number (the same in every store).
pub fn uuid_n(n: u32) -> Uuid {
    super::id_of(&format!("0190a000-0000-7000-8000-{n:012x}"))
}

/// The merge fixture: in the source, executions 1 (equal in the target), 2 (different in the target) and 3 (only
/// in the source, with 2 events), audit entries 11 (equal) and 12 (only in the source), one pattern; in the
/// target also execution 4 of its own.
pub async fn merge_fixture(source: &Storage, target: &Storage) -> i64 {
    let t0 = month_start(2) + 3 * DAY;
    source.put_pattern(super::new_pattern("merge-source", "1.0.0")).await.unwrap();
    twin_execution(source, uuid_n(1), t0, "zeppelin same", 0).await;
    twin_execution(target, uuid_n(1), t0, "zeppelin same", 0).await;
    twin_execution(source, uuid_n(2), t0 + 1, "zeppelin source", 0).await;
    twin_execution(target, uuid_n(2), t0 + 1, "zeppelin target", 0).await;
    twin_execution(source, uuid_n(3), t0 + 2, "zeppelin only", 2).await;
    twin_execution(target, uuid_n(4), t0 + 3, "zeppelin own", 1).await;
    twin_audit(source, uuid_n(11), t0, "same").await;
    twin_audit(target, uuid_n(11), t0, "same").await;
    twin_audit(source, uuid_n(12), t0 + 1, "only").await;
    t0
}

// ------------------------------------------------------------------ the whole store as documents

/// A JSON value with every number in one spelling: integers (and floats with an integral value up to 2^53) as
/// integers, everything else as `f64`. PostgreSQL's jsonb prints `1e2` as `100` and keeps `2.50`; SQLite keeps the
/// caller's text; the file store re-serialises: equal by value is what a copy must keep.
pub fn canonical(v: Value) -> Value {
    match v {
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                json!(i)
            } else if let Some(u) = n.as_u64() {
                if u <= 1 << 53 {
                    json!(u)
                } else {
                    json!(u as f64)
                }
            } else {
                let f = n.as_f64().expect("a JSON number is an f64 at worst");
                if f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_992.0 {
                    json!(f as i64)
                } else {
                    json!(f)
                }
            }
        }
        Value::Array(a) => Value::Array(a.into_iter().map(canonical).collect()),
        Value::Object(m) => Value::Object(m.into_iter().map(|(k, v)| (k, canonical(v))).collect()),
        other => other,
    }
}

/// A pattern version as a document: every field, the definition parsed, `createdAt` in microseconds.
pub fn pattern_doc(p: &Pattern) -> Value {
    json!({
        "id": p.id.to_string(),
        "name": p.name,
        "version": p.version,
        "description": p.description,
        "definition": p.definition.value(),
        "createdAt": p.created_at.as_micros(),
        "createdBy": p.created_by,
    })
}

/// Everything a store holds, as documents by id.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    pub patterns: BTreeMap<String, Value>,
    pub executions: BTreeMap<String, Value>,
    pub audit: BTreeMap<String, Value>,
}

impl Snapshot {
    pub fn counts(&self) -> Counts {
        Counts {
            patterns: self.patterns.len() as u64,
            executions: self.executions.len() as u64,
            events: self.executions.values().map(|e| e["events"].as_array().map_or(0, Vec::len) as u64).sum(),
            audit: self.audit.len() as u64,
        }
    }
}

/// Every pattern version (with `createdAt` µs and `createdBy`), every execution with its events and every
/// audit entry (`common::archive::snapshot`), numbers made [`canonical`].
pub async fn full_snapshot(s: &Storage) -> Snapshot {
    let mut patterns = BTreeMap::new();
    for latest in s.patterns(100).collect().await.unwrap() {
        for p in s.list_pattern_versions(&latest.name).await.unwrap() {
            patterns.insert(p.id.to_string(), canonical(pattern_doc(&p)));
        }
    }
    let (executions, audit) = ar::snapshot(s).await;
    let fix = |m: BTreeMap<String, Value>| m.into_iter().map(|(k, v)| (k, canonical(v))).collect();
    Snapshot { patterns, executions: fix(executions), audit: fix(audit) }
}

/// `v` as text, cut to `max` characters (documents of a MiB would drown a failure message).
pub fn short(v: &Value, max: usize) -> String {
    let text = v.to_string();
    if text.chars().count() <= max {
        text
    } else {
        format!("{}… ({} bytes)", text.chars().take(max).collect::<String>(), text.len())
    }
}

/// The first difference between two documents, as `path: left ≠ right`.
pub fn first_difference(path: &str, a: &Value, b: &Value) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter().find_map(|k| {
                let null = Value::Null;
                first_difference(&format!("{path}.{k}"), x.get(k).unwrap_or(&null), y.get(k).unwrap_or(&null))
            })
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (p, q))| first_difference(&format!("{path}[{i}]"), p, q)),
        _ if a == b => None,
        _ => Some(format!("{path}: {} ≠ {}", short(a, 300), short(b, 300))),
    }
}

/// Panics with the differing ids and the first differing field of each table, unless `target == source`.
#[track_caller]
pub fn assert_same(source: &Snapshot, target: &Snapshot, when: &str) {
    let mut problems = Vec::new();
    for (table, a, b) in [
        ("patterns", &source.patterns, &target.patterns),
        ("executions", &source.executions, &target.executions),
        ("audit_logs", &source.audit, &target.audit),
    ] {
        let missing: Vec<&String> = a.keys().filter(|k| !b.contains_key(*k)).take(5).collect();
        let extra: Vec<&String> = b.keys().filter(|k| !a.contains_key(*k)).take(5).collect();
        if !missing.is_empty() || !extra.is_empty() {
            problems.push(format!(
                "{table}: source {} rows, target {} rows; missing in the target {missing:?}, only in the target \
                 {extra:?}",
                a.len(),
                b.len()
            ));
        }
        let differing: Vec<String> = a
            .iter()
            .filter_map(|(k, v)| b.get(k).and_then(|w| first_difference(&format!("{table}[{k}]"), v, w)))
            .take(3)
            .collect();
        problems.extend(differing);
    }
    assert!(problems.is_empty(), "{when}: the target differs from the source:\n{}", problems.join("\n"));
}

/// `search_executions` of every word of [`WORDS`] (ids as sets: ranking differs between backends) and
/// `search_patterns` of every word of [`PATTERN_WORDS`].
pub async fn search_answers(s: &Storage) -> BTreeMap<String, BTreeSet<String>> {
    let mut out = BTreeMap::new();
    for w in WORDS {
        out.insert(format!("executions:{w}"), ar::search_ids(s, w).await);
    }
    for w in PATTERN_WORDS {
        let hits = s.search_patterns(w, page(100, None)).await.unwrap();
        out.insert(format!("patterns:{w}"), hits.items.iter().map(|h| h.pattern.id.to_string()).collect());
    }
    out
}

// ------------------------------------------------------------------ reports

/// The report's entry for `table`.
#[track_caller]
pub fn table<'a>(r: &'a TransferReport, table: &str) -> &'a parallax_storage_host::transfer::TableTransfer {
    r.tables.iter().find(|t| t.table == table).unwrap_or_else(|| panic!("no {table} in the report: {r:?}"))
}

/// The report lists [`TABLES`] in order, each with equal rows and checksums on both sides, and says verified.
#[track_caller]
pub fn assert_verified(r: &TransferReport, when: &str) {
    let names: Vec<&str> = r.tables.iter().map(|t| t.table.as_str()).collect();
    assert_eq!(names, TABLES, "{when}: the report's tables: {r:?}");
    for t in &r.tables {
        assert!(
            t.ok && t.source_rows == t.target_rows && t.source_checksum == t.target_checksum,
            "{when}: table {} does not verify: {t:?}",
            t.table
        );
        assert_eq!(t.source_checksum.len(), 32, "{when}: a checksum is 32 hex digits: {t:?}");
    }
    assert!(r.verified, "{when}: not verified: {r:?}");
    assert_eq!(r.checksum_version, parallax_storage_host::transfer::CHECKSUM_VERSION, "{when}");
}

/// Rows after the snapshot, all tables.
pub fn after_snapshot(r: &TransferReport) -> u64 {
    r.after_snapshot.values().sum()
}

// ------------------------------------------------------------------ PostgreSQL facts

/// The database of a PostgreSQL storage config.
pub fn pg_database(config: &Value) -> Option<String> {
    config["postgresql"]["database"].as_str().map(String::from)
}

async fn pg_count(c: &tokio_postgres::Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).await.unwrap_or_else(|e| panic!("{sql}: {e}")).get(0)
}

/// Rows in `executions_default` and `execution_events_default`, ids that appear twice in `executions` and in
/// `execution_events` (partitioned tables cannot enforce a unique id), and the execution partitions' names.
pub struct PgFacts {
    pub default_executions: i64,
    pub default_events: i64,
    pub duplicate_executions: i64,
    pub duplicate_events: i64,
    pub partitions: BTreeSet<String>,
}

pub async fn pg_facts(db: &str) -> PgFacts {
    let c = super::pg::server().client(db).await;
    let partitions = c
        .query(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'executions'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect();
    PgFacts {
        default_executions: pg_count(&c, "SELECT count(*) FROM executions_default").await,
        default_events: pg_count(&c, "SELECT count(*) FROM execution_events_default").await,
        duplicate_executions: pg_count(
            &c,
            "SELECT count(*) FROM (SELECT id FROM executions GROUP BY id HAVING count(*) > 1) d",
        )
        .await,
        duplicate_events: pg_count(
            &c,
            "SELECT count(*) FROM (SELECT id FROM execution_events GROUP BY id HAVING count(*) > 1) d",
        )
        .await,
        partitions,
    }
}

/// On a PostgreSQL store: nothing in the default partitions, no id twice, a partition for the month of every
/// execution of `snapshot`.
pub async fn assert_pg_clean(config: &Value, snapshot: &Snapshot, when: &str) {
    let Some(db) = pg_database(config) else { return };
    let f = pg_facts(&db).await;
    assert_eq!(
        (f.default_executions, f.default_events),
        (0, 0),
        "{when}: rows in executions_default / execution_events_default"
    );
    assert_eq!((f.duplicate_executions, f.duplicate_events), (0, 0), "{when}: ids present twice");
    for e in snapshot.executions.values() {
        let part = partition_of(e["startedAt"].as_i64().unwrap());
        assert!(f.partitions.contains(&part), "{when}: no partition {part}: {:?}", f.partitions);
    }
}

/// Shuts a harness's storage down when only one instance may be open (the file store), so that the plugin
/// can open the store as a copy target.
pub async fn release(h: &Harness) {
    if !h.concurrent_instances {
        h.storage.shutdown().await.expect("shut the harness's instance down");
    }
}
