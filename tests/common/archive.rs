//! Reading an archive the way an operator would, without the plugin: objects are gzip-compressed
//! newline-delimited JSON (read with `flate2` + `serde_json`), checksums are SHA-256 (`ring`), manifests are
//! JSON files at `<table>/manifests/<run-id>.json` under the destination. And the stored data as parsed JSON
//! documents, so an original and a restored row compare by value (PostgreSQL's jsonb reorders keys), not text.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Read,
    path::{Path, PathBuf},
};

use parallax_storage_host::*;
use serde_json::{json, Value};

use super::{file, Harness};

/// SHA-256 of `bytes`, lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The records of one object: one gzip member whose lines are JSON objects. Panics naming the file and line
/// when the object is not that.
#[track_caller]
pub fn read_object(path: &Path) -> Vec<Value> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    records_of(&bytes, &path.display().to_string())
}

/// [`read_object`] on bytes already read (`name` for messages).
#[track_caller]
pub fn records_of(bytes: &[u8], name: &str) -> Vec<Value> {
    let mut gz = flate2::read::GzDecoder::new(bytes);
    let mut text = String::new();
    gz.read_to_string(&mut text).unwrap_or_else(|e| panic!("{name} does not gunzip to UTF-8 text: {e}"));
    assert!(gz.into_inner().is_empty(), "{name} holds more than one gzip member");
    assert!(text.is_empty() || text.ends_with('\n'), "{name}: the last line is not terminated");
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{name} line {}: not JSON ({e}): {line:.200}", i + 1));
            assert!(v.is_object(), "{name} line {}: not a JSON object", i + 1);
            v
        })
        .collect()
}

/// Every manifest under `root` (`<table>/manifests/*.json`), by key relative to `root`.
pub fn manifests(root: &Path) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for table in ["executions", "audit_logs"] {
        let dir = root.join(table).join("manifests");
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if !name.ends_with(".json") {
                continue;
            }
            let text = std::fs::read_to_string(entry.path()).unwrap();
            let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
                panic!("manifest {}: not JSON ({e}): {text:.300}", entry.path().display())
            });
            out.insert(format!("{table}/manifests/{name}"), v);
        }
    }
    out
}

/// The object keys a manifest lists.
pub fn manifest_keys(manifest: &Value) -> Vec<String> {
    manifest["objects"]
        .as_array()
        .unwrap_or_else(|| panic!("a manifest lists its objects: {manifest}"))
        .iter()
        .map(|o| o["key"].as_str().expect("an object entry has a key").to_string())
        .collect()
}

/// Every data object under `root` (files ending `.ndjson.gz`), keys relative to `root`.
pub fn object_files(root: &Path) -> BTreeSet<String> {
    file::files(root)
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".ndjson.gz"))
        .map(|p| relative(root, &p))
        .collect()
}

/// Every file under `root` (objects, manifests, anything a run left), keys relative to `root`.
pub fn all_files(root: &Path) -> BTreeSet<String> {
    file::files(root).into_iter().map(|p| relative(root, &p)).collect()
}

pub fn relative(root: &Path, p: &Path) -> String {
    p.strip_prefix(root)
        .unwrap_or_else(|_| panic!("{} is not under {}", p.display(), root.display()))
        .to_string_lossy()
        .replace('\\', "/")
}

/// The ids of the records of every object of a manifest, checking on the way what an operator would: each
/// object's size and SHA-256 as the manifest says, its row count, and that no id repeats.
#[track_caller]
pub fn manifest_ids(root: &Path, manifest: &Value) -> Vec<String> {
    let mut ids = Vec::new();
    for o in manifest["objects"].as_array().expect("objects") {
        let key = o["key"].as_str().unwrap();
        let path = root.join(key);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("object {key} of the manifest: {e}"));
        assert_eq!(Some(bytes.len() as u64), o["size"].as_u64(), "size of {key}");
        assert_eq!(Some(sha256_hex(&bytes).as_str()), o["sha256"].as_str(), "SHA-256 of {key}");
        let records = records_of(&bytes, key);
        assert_eq!(Some(records.len() as u64), o["rows"].as_u64(), "rows of {key}");
        ids.extend(records.iter().map(|r| r["id"].as_str().expect("a record has an id").to_string()));
    }
    let unique: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "an id appears twice in one archive");
    ids
}

/// Every record of every object of a manifest, in manifest order.
pub fn manifest_records(root: &Path, manifest: &Value) -> Vec<Value> {
    manifest_keys(manifest).iter().flat_map(|k| read_object(&root.join(k))).collect()
}

/// A local destination inside the harness's temp dir (created on first use by the plugin), as a plain path.
pub fn destination(h: &Harness, name: &str) -> (PathBuf, String) {
    let root = h.dir.path().join(name);
    let text = format!("{}/", root.display());
    (root, text)
}

/// The same as a `file://` URL.
pub fn file_url(root: &Path) -> String {
    format!("file://{}/", root.display())
}

// ------------------------------------------------------------------ the data as documents

fn doc_of(j: &Option<Json>) -> Value {
    j.as_ref().map(|j| j.value()).unwrap_or(Value::Null)
}

/// An execution as a document: every field, JSON fields parsed, times in microseconds.
pub fn execution_doc(e: &Execution) -> Value {
    json!({
        "id": e.id.to_string(),
        "patternName": e.pattern_name,
        "patternVersion": e.pattern_version,
        "status": e.status.as_str(),
        "input": doc_of(&e.input),
        "output": doc_of(&e.output),
        "error": doc_of(&e.error),
        "startedAt": e.started_at.as_micros(),
        "completedAt": e.completed_at.map(|t| t.as_micros()),
        "durationMs": e.duration_ms,
        "metadata": doc_of(&e.metadata),
        "tags": e.tags,
    })
}

/// An event as a document.
pub fn event_doc(e: &ExecutionEvent) -> Value {
    json!({
        "id": e.id.to_string(),
        "executionId": e.execution_id.to_string(),
        "seq": e.seq,
        "kind": e.kind.as_str(),
        "payload": e.payload.value(),
        "recordedAt": e.recorded_at.as_micros(),
    })
}

/// An audit entry as a document.
pub fn audit_doc(a: &AuditEntry) -> Value {
    json!({
        "id": a.id.to_string(),
        "timestamp": a.timestamp.as_micros(),
        "action": a.action,
        "actor": a.actor,
        "resourceType": a.resource_type,
        "resourceId": a.resource_id,
        "details": doc_of(&a.details),
        "ipAddress": a.ip_address,
        "userAgent": a.user_agent,
    })
}

/// Everything a reader sees: every execution with its events, and every audit entry, as documents by id.
pub async fn snapshot(s: &Storage) -> (BTreeMap<String, Value>, BTreeMap<String, Value>) {
    let mut executions = BTreeMap::new();
    for e in s.executions(ExecutionFilter::default(), 200).collect().await.unwrap() {
        let events: Vec<Value> = s.list_events(e.id).await.unwrap().iter().map(event_doc).collect();
        let mut d = execution_doc(&e);
        d["events"] = Value::Array(events);
        executions.insert(e.id.to_string(), d);
    }
    let audit = s
        .audit_entries(AuditQuery::default(), 200)
        .collect()
        .await
        .unwrap()
        .iter()
        .map(|a| (a.id.to_string(), audit_doc(a)))
        .collect();
    (executions, audit)
}

/// The ids `search_executions(word)` finds.
pub async fn search_ids(s: &Storage, word: &str) -> BTreeSet<String> {
    let hits = s.search_executions(word, super::page(100, None)).await.unwrap();
    hits.items.iter().map(|h| h.execution.id.to_string()).collect()
}

/// A second, empty storage of the same backend as `h` (another SQLite file, another PostgreSQL database,
/// another file-store directory with the same format).
pub async fn fresh_like(h: &Harness) -> Harness {
    match h.config["type"].as_str() {
        Some("sqlite") => super::sqlite().await,
        Some("postgresql") | Some("postgres") => super::postgres().await,
        Some("file") => {
            let format = h.config["file"]["format"].as_str().unwrap_or("yaml").to_string();
            let compress = h.config["file"]["compress"].as_bool().unwrap_or(false);
            file::open(&format, compress).await
        }
        other => panic!("fresh_like: unknown backend {other:?} in {}", h.config),
    }
}
