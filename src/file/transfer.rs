//! The transfer primitives (`crate::transfer::Store`) of this backend: see `crate::transfer` for the rules.
//!
//! - **Writes** are writer jobs planned like any write, so the index and its search words are updated once
//!   the files are durable. Every record is first converted to its file document and back, so one the store
//!   could not read after a restart is refused by name before anything is written.
//! - **Pattern versions** land as given (id, `created_at`, `created_by`) at their usual path, when both their
//!   id and their name and version are free.
//! - **Replacing an unfinished execution** rewrites its event files in place (each keeps its own encoding),
//!   removes event files the record does not have, then rewrites the execution file: events before the
//!   execution, as an import does, so a kill half-way leaves the old row (still unfinished: the next catch-up
//!   replaces it again) with some new events, never a final row with missing events.
//! - **Fetches** read the in-memory index (the events of an execution from its files, outside the lock).
//! - **Transfer states** are `transfers/<id>.json` (one JSON document each, written durably: temp file,
//!   fsync, rename, directory fsync), saved on the writer thread between groups so that a backup never sees
//!   half of one. The loader skips the directory (it holds no records) and a fresh-store check accepts it: no
//!   format version change.
//! - `backup`: [`super::backup`].

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    fs,
    path::{Path, PathBuf},
};

use parallax_storage_abi::{transfer::BackupReport, AuditEntry, Execution, Pattern};
use serde::{Deserialize, Serialize};

use super::{
    archive::stored_record,
    codec::Encoding,
    docs::{Doc, PatternDoc},
    durable,
    index::{damaged, Found},
    layout::{self, TRANSFERS},
    load,
    plan::{execution_change, pattern_change, Change, Plan},
    FileBackend,
};
use crate::{
    archive::{ExecutionRecord, Imported},
    error::{Error, Result},
    time,
};

/// A pattern version as the store would read it back from its file, or why it cannot be stored.
fn stored_pattern(p: &Pattern) -> std::result::Result<Pattern, String> {
    PatternDoc::new(p)?.into_pattern()
}

fn import_patterns(pl: &mut Plan<'_>, patterns: Vec<Pattern>) -> Result<Imported> {
    pl.idx.ready(&pl.layout.base)?;
    let mut done = Imported::default();
    for p in patterns {
        let p = stored_pattern(&p).map_err(|why| {
            Error::invalid(format!("copying pattern version {}: it cannot be stored: {why}", p.id))
        })?;
        // Present, damaged or not, or the id held by another version: skipped and left as it is.
        if !matches!(pl.pattern(&p.name, &p.version), Found::No) || pl.pattern_id_taken(&p.id) {
            done.skipped += 1;
            continue;
        }
        let path = pl.layout.pattern_file(&p.name, &p.version, pl.enc);
        pl.write(path.clone(), Doc::Pattern(p.clone()), pl.enc);
        pl.change(pattern_change(&p, path));
        done.inserted += 1;
    }
    Ok(done)
}

/// The event files in an execution's events directory, by `seq` (temporary files left out).
fn event_files(dir: &Path) -> HashMap<i64, PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else { return HashMap::new() };
    entries
        .flatten()
        .filter_map(|e| {
            let path = e.path();
            let name = path.file_name()?.to_str()?;
            if layout::is_temp(name) {
                return None;
            }
            let (stem, _) = Encoding::split(name)?;
            Some((stem.parse::<i64>().ok()?, path))
        })
        .collect()
}

fn replace_unfinished(pl: &mut Plan<'_>, records: Vec<ExecutionRecord>) -> Result<u64> {
    pl.idx.ready(&pl.layout.base)?;
    let mut replaced = 0;
    let mut seen = HashSet::new();
    for r in records {
        let (execution, events) = stored_record(&r).map_err(|why| {
            Error::invalid(format!("replacing execution {}: it cannot be stored: {why}", r.execution.id))
        })?;
        let id = execution.id.to_string();
        let Found::Yes((current, old_path)) = pl.execution(&id) else { continue };
        if current.status.is_final() || !seen.insert(id.clone()) {
            continue;
        }
        let unexpected =
            |p: &Path| Error::internal(format!("execution file {} has an unexpected name", p.display()));
        let old_dir = layout::events_dir(&old_path).ok_or_else(|| unexpected(&old_path))?;
        let mut old_events = event_files(&old_dir);
        // The same start keeps the same file (in its own encoding); another start moves the record.
        let path = if current.started_at == execution.started_at {
            old_path.clone()
        } else {
            pl.layout.execution_file(execution.started_at, &id, pl.enc)
        };
        let dir = layout::events_dir(&path).ok_or_else(|| unexpected(&path))?;
        let moved = path != old_path;
        pl.change(Change::RemoveExecution { id: id.clone() });
        pl.change(execution_change(&execution, path.clone()));
        for ev in events {
            let (file, enc) = match old_events.remove(&ev.seq).filter(|_| !moved) {
                Some(file) => {
                    let enc = Encoding::of_path(&file).unwrap_or(pl.enc);
                    (file, enc)
                }
                None => (layout::event_file(&dir, ev.seq, pl.enc), pl.enc),
            };
            pl.change(Change::Event { execution_id: id.clone(), seq: ev.seq });
            pl.write(file, Doc::Event(ev), enc);
        }
        if moved {
            pl.remove(old_path.clone(), false);
            pl.op(super::plan::FileOp::RemoveAll { path: old_dir });
        } else {
            for (_, file) in old_events {
                pl.remove(file, false);
            }
        }
        let enc = Encoding::of_path(&path).unwrap_or(pl.enc);
        pl.write(path, Doc::Execution(execution), enc);
        replaced += 1;
    }
    Ok(replaced)
}

/// What `fetch_executions` needs once the index lock is released.
struct Found1 {
    execution: Execution,
    path: PathBuf,
    last_seq: i64,
}

/// `transfers/<id>.json`.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct StateDoc {
    id: String,
    source: String,
    started_at: String,
    updated_at: String,
    state: serde_json::Value,
}

fn states_dir(base: &Path) -> PathBuf {
    base.join(TRANSFERS)
}

/// A transfer state id is a UUID (it names a file: nothing else may reach the file system).
fn check_id(id: &str) -> Result<()> {
    match uuid::Uuid::parse_str(id) {
        Ok(u) if u.hyphenated().to_string() == id => Ok(()),
        _ => Err(Error::invalid(format!("transfer state id {id:?} is not a lower-case hyphenated UUID"))),
    }
}

fn save_state(base: &Path, id: &str, source: &str, state: &str) -> Result<()> {
    check_id(id)?;
    let value: serde_json::Value = serde_json::from_str(state)
        .map_err(|e| Error::invalid(format!("saving transfer state {id}: the state is not JSON: {e}")))?;
    if !value.is_object() {
        return Err(Error::invalid(format!("saving transfer state {id}: the state is not a JSON object")));
    }
    let path = states_dir(base).join(format!("{id}.json"));
    let now = time::rfc3339(time::now_micros());
    let started_at = match read_state(&path) {
        Ok(old) => old.started_at,
        Err(e) if e.kind() == parallax_storage_abi::ErrorKind::NotFound => now.clone(),
        Err(e) => return Err(e),
    };
    let doc = StateDoc { id: id.into(), source: source.into(), started_at, updated_at: now, state: value };
    let mut bytes = serde_json::to_vec_pretty(&doc).map_err(|e| Error::internal(e.to_string()))?;
    bytes.push(b'\n');
    durable::write_atomic(&path, &bytes)
        .map_err(|e| Error::unavailable(format!("cannot write the transfer state {}: {e}", path.display())))
}

fn read_state(path: &Path) -> Result<StateDoc> {
    let bytes = fs::read(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::not_found(format!("no transfer state {}", path.display()))
        } else {
            Error::unavailable(format!("cannot read the transfer state {}: {e}", path.display()))
        }
    })?;
    let bad = |why: String| {
        Error::internal(format!(
            "the transfer state {} is damaged ({why}); repair or remove it (a removed state makes the next copy \
             into this store start over, skipping the rows already present)",
            path.display()
        ))
    };
    let doc: StateDoc = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
    if doc.id != stem || !doc.state.is_object() {
        return Err(bad(format!("it must hold state {stem} as a JSON object")));
    }
    for t in [&doc.started_at, &doc.updated_at] {
        time::parse_rfc3339(t).ok_or_else(|| bad(format!("{t:?} is not an RFC 3339 UTC time")))?;
    }
    Ok(doc)
}

fn read_states(base: &Path) -> Result<Vec<(String, String, String)>> {
    let dir = states_dir(base);
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::unavailable(format!("cannot read {}: {e}", dir.display()))),
    };
    let mut docs = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if layout::is_temp(&name) || !name.ends_with(".json") {
            continue;
        }
        let doc = read_state(&path)?;
        let key =
            (time::parse_rfc3339(&doc.started_at), time::parse_rfc3339(&doc.updated_at), doc.id.clone());
        docs.push((key, doc));
    }
    docs.sort_by(|a, b| b.0.cmp(&a.0));
    Ok(docs.into_iter().map(|(_, d)| (d.id, d.source, d.state.to_string())).collect())
}

impl crate::transfer::Store for FileBackend {
    async fn import_patterns(&self, patterns: Vec<Pattern>) -> Result<Imported> {
        if patterns.is_empty() {
            return Ok(Imported::default());
        }
        self.writer.write("copying pattern versions", move |pl| import_patterns(pl, patterns)).await
    }

    async fn fetch_executions(
        &self,
        ids: Vec<String>,
        _within: Option<(i64, i64)>,
    ) -> Result<Vec<ExecutionRecord>> {
        let found: Vec<Found1> = {
            let idx = self.read()?;
            let mut found = Vec::new();
            for id in ids.iter().collect::<BTreeSet<_>>() {
                match idx.execution(id) {
                    Found::Yes(x) => found.push(Found1 {
                        execution: Execution::clone(&x.e),
                        path: x.path.clone(),
                        last_seq: x.last_seq,
                    }),
                    Found::No => {}
                    Found::Damaged(path, why) => {
                        return Err(damaged(&format!("execution {id}"), &path, &why))
                    }
                }
            }
            found
        };
        tokio::task::spawn_blocking(move || {
            found
                .into_iter()
                .map(|f| {
                    let events = if f.last_seq > 0 {
                        load::read_events(&f.path, &f.execution.id, f.last_seq)?
                    } else {
                        Vec::new()
                    };
                    Ok(ExecutionRecord { execution: f.execution, events })
                })
                .collect()
        })
        .await
        .map_err(|e| Error::internal(format!("reading events failed: {e}")))?
    }

    async fn fetch_audit(&self, ids: Vec<String>) -> Result<Vec<AuditEntry>> {
        let idx = self.read()?;
        let mut out = Vec::new();
        for id in ids.iter().collect::<BTreeSet<_>>() {
            let Some(file) = idx.audit_file_of.get(id.as_str()) else { continue };
            let key = idx.audit_files.get(file).and_then(|keys| keys.iter().find(|(_, k)| k == id));
            if let Some(a) = key.and_then(|k| idx.audit.get(k)) {
                out.push(a.clone());
            }
        }
        Ok(out)
    }

    async fn fetch_patterns(&self, ids: Vec<String>) -> Result<Vec<Pattern>> {
        let wanted: HashSet<String> = ids.into_iter().collect();
        let idx = self.read()?;
        Ok(idx
            .patterns
            .values()
            .filter(|x| wanted.contains(x.p.id.as_str()))
            .map(|x| Pattern::clone(&x.p))
            .collect())
    }

    async fn replace_unfinished(&self, records: Vec<ExecutionRecord>) -> Result<u64> {
        if records.is_empty() {
            return Ok(0);
        }
        self.writer.write("replacing unfinished executions", move |pl| replace_unfinished(pl, records)).await
    }

    async fn backup(&self, destination: PathBuf) -> Result<BackupReport> {
        self.backup_impl(destination).await
    }

    async fn save_transfer_state(&self, id: String, source: String, state: String) -> Result<()> {
        self.read().map(drop)?;
        self.writer
            .solo("saving a transfer state", move |ctx| save_state(&ctx.layout.base, &id, &source, &state))
            .await
    }

    async fn transfer_states(&self) -> Result<Vec<(String, String, String)>> {
        self.read().map(drop)?;
        let base = self.layout.base.clone();
        tokio::task::spawn_blocking(move || read_states(&base))
            .await
            .map_err(|e| Error::internal(format!("reading the transfer states failed: {e}")))?
    }
}

#[cfg(test)]
mod tests {
    use std::{
        os::unix::fs::MetadataExt,
        sync::{
            atomic::{AtomicBool, Ordering},
            Arc,
        },
    };

    use abi_stable::std_types::{RNone, ROption, RSome, RString, RVec};
    use parallax_storage_abi::{EventKind, ExecutionEvent, ExecutionStatus, NewAuditEntry, OpenOptions};

    use super::*;
    use crate::{archive::Store as _, contract::Contract, transfer::Store as _, validate::Page};

    const T0: i64 = 1_705_314_615_123_456; // 2024-01-15T10:30:15.123456Z

    async fn open(base: &Path, format: &str, compress: bool) -> FileBackend {
        let json = serde_json::json!({
            "type": "file",
            "file": { "basePath": base, "format": format, "compress": compress },
        });
        let cfg = crate::config::parse(&json.to_string()).unwrap();
        FileBackend::open(cfg, OpenOptions::default()).await.unwrap()
    }

    fn id(n: u32) -> String {
        format!("0190b3f2-7c1e-7a00-8000-{n:012}")
    }

    fn pattern(n: u32, name: &str, version: &str) -> Pattern {
        Pattern {
            id: id(n).into(),
            name: name.into(),
            version: version.into(),
            description: RSome(format!("describes {name}").into()),
            definition: format!(r#"{{"steps":["word{n}"]}}"#).into(),
            created_at: T0 - i64::from(n),
            created_by: RSome("ops@example.com".into()),
        }
    }

    /// Execution `n` with `events` events, in `status` (JSON documents in canonical form: the store keeps
    /// documents, not their text).
    fn record(n: u32, status: ExecutionStatus, events: u32) -> ExecutionRecord {
        let done = status.is_final();
        ExecutionRecord {
            execution: Execution {
                id: id(n).into(),
                pattern_name: "summarize".into(),
                pattern_version: "1.0.0".into(),
                status,
                input: RSome(format!(r#"{{"text":"needle{n} common"}}"#).into()),
                output: if done { RSome(r#"{"summary":"finished"}"#.into()) } else { RNone },
                error: RNone,
                started_at: T0 + i64::from(n) * 1_000_000,
                completed_at: if done { RSome(T0 + i64::from(n) * 1_000_000 + 5) } else { RNone },
                duration_ms: if done { RSome(0) } else { RNone },
                metadata: RSome(r#"{"team":"a"}"#.into()),
                tags: RVec::from(vec![RString::from("x")]),
            },
            events: (1..=events)
                .map(|k| ExecutionEvent {
                    id: id(100_000 + n * 100 + k).into(),
                    execution_id: id(n).into(),
                    seq: i64::from(k),
                    kind: EventKind::StepResult,
                    payload: format!(r#"{{"step":{k}}}"#).into(),
                    recorded_at: T0 + i64::from(n) * 1_000_000 + i64::from(k),
                })
                .collect(),
        }
    }

    fn canon(text: &ROption<RString>) -> ROption<RString> {
        text.as_ref().map(|t| serde_json::from_str::<serde_json::Value>(t).unwrap().to_string().into())
    }

    /// Records with canonical JSON documents, sorted by id.
    fn canonical(records: &[ExecutionRecord]) -> Vec<ExecutionRecord> {
        let mut out: Vec<ExecutionRecord> = records
            .iter()
            .map(|r| {
                let mut r = r.clone();
                let e = &mut r.execution;
                (e.input, e.output, e.error, e.metadata) =
                    (canon(&e.input), canon(&e.output), canon(&e.error), canon(&e.metadata));
                for ev in &mut r.events {
                    ev.payload = canon(&RSome(ev.payload.clone())).unwrap();
                }
                r
            })
            .collect();
        out.sort_by_key(|r| r.execution.id.to_string());
        out
    }

    fn canonical_patterns(patterns: &[Pattern]) -> Vec<Pattern> {
        let mut out: Vec<Pattern> = patterns
            .iter()
            .map(|p| Pattern { definition: canon(&RSome(p.definition.clone())).unwrap(), ..p.clone() })
            .collect();
        out.sort_by_key(|p| p.id.to_string());
        out
    }

    async fn search(b: &FileBackend, term: &str) -> Vec<String> {
        let hits = b.search_executions(vec![term.into()], Page { limit: 100, after: None }).await.unwrap();
        let mut ids: Vec<String> = hits.into_iter().map(|(e, _)| e.id.to_string()).collect();
        ids.sort();
        ids
    }

    async fn search_patterns(b: &FileBackend, term: &str) -> Vec<String> {
        let hits = b.search_patterns(vec![term.into()], Page { limit: 100, after: None }).await.unwrap();
        let mut ids: Vec<String> = hits.into_iter().map(|(p, _)| p.id.to_string()).collect();
        ids.sort();
        ids
    }

    fn unreadable(b: &FileBackend) -> Vec<PathBuf> {
        b.index.read().unwrap().unreadable.keys().cloned().collect()
    }

    /// Pattern versions land exactly as given (id, times, author), are searchable at once and after a reopen,
    /// and a present id or a taken name and version is skipped without touching the stored file.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn patterns_land_as_given_searchable_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("store");
        let b = open(&base, "yaml", true).await;
        let given = vec![
            pattern(1, "summarize", "1.0.0"),
            pattern(2, "summarize", "1.1.0"),
            pattern(3, "a/b", "1.0.0"),
        ];
        let imported = b.import_patterns(given.clone()).await.unwrap();
        assert_eq!(imported, Imported { inserted: 3, skipped: 0, events_inserted: 0 });
        let fetched = b.fetch_patterns(vec![id(1), id(2), id(3), id(99)]).await.unwrap();
        assert_eq!(canonical_patterns(&fetched), canonical_patterns(&given));
        assert_eq!(search_patterns(&b, "word3").await, [id(3)]);

        let mut changed = given[0].clone();
        changed.description = RSome("other".into());
        let taken = pattern(4, "a/b", "1.0.0");
        let same_id_elsewhere = Pattern { id: id(2).into(), ..pattern(5, "other", "2.0.0") };
        let again = b.import_patterns(vec![changed, taken, same_id_elsewhere]).await.unwrap();
        assert_eq!(again, Imported { inserted: 0, skipped: 3, events_inserted: 0 });
        assert_eq!(
            canonical_patterns(&b.fetch_patterns(vec![id(1), id(4)]).await.unwrap()),
            canonical_patterns(&given[..1])
        );
        assert!(b.get_pattern("other".into(), "2.0.0".into()).await.is_err());
        b.shutdown().await.unwrap();

        let b = open(&base, "json", false).await;
        assert_eq!(
            canonical_patterns(&b.fetch_patterns(vec![id(1), id(2), id(3)]).await.unwrap()),
            canonical_patterns(&given)
        );
        assert_eq!(search_patterns(&b, "word1").await, [id(1)]);
        b.shutdown().await.unwrap();
    }

    /// Fetch by id returns what is present (executions with every event in `seq` order, audit entries) and
    /// leaves out absent ids.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fetch_by_id_returns_the_present_rows_whole() {
        let dir = tempfile::tempdir().unwrap();
        let b = open(dir.path(), "json", false).await;
        let records = vec![
            record(1, ExecutionStatus::Completed, 3),
            record(2, ExecutionStatus::Running, 1),
            record(3, ExecutionStatus::Pending, 0),
        ];
        b.import_executions(records.clone()).await.unwrap();
        let fetched = b.fetch_executions(vec![id(3), id(1), id(2), id(77), id(1)], None).await.unwrap();
        assert_eq!(canonical(&fetched), canonical(&records));

        let entries: Vec<NewAuditEntry> = (1..=3)
            .map(|n| NewAuditEntry {
                id: RSome(id(500 + n).into()),
                timestamp: RSome(T0 + i64::from(n)),
                action: "login".into(),
                actor: RSome(format!("user{n}").into()),
                ..NewAuditEntry::default()
            })
            .collect();
        b.append_audit(entries).await.unwrap();
        let audit = b.fetch_audit(vec![id(503), id(501), id(599)]).await.unwrap();
        let mut got: Vec<(String, i64)> = audit.iter().map(|a| (a.id.to_string(), a.timestamp)).collect();
        got.sort();
        assert_eq!(got, [(id(501), T0 + 1), (id(503), T0 + 3)]);
        b.shutdown().await.unwrap();
    }

    /// Only a pending or running execution is replaced, events and search words included (event files it
    /// no longer has are removed); a final one and an absent id are left alone; a reopen reads the same.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replace_unfinished_refreshes_only_pending_or_running_rows() {
        let dir = tempfile::tempdir().unwrap();
        let b = open(dir.path(), "yaml", false).await;
        b.import_executions(vec![
            record(1, ExecutionStatus::Running, 1),
            record(2, ExecutionStatus::Completed, 2),
            record(4, ExecutionStatus::Running, 3),
        ])
        .await
        .unwrap();
        let mut done1 = record(1, ExecutionStatus::Completed, 3);
        done1.execution.input = RSome(r#"{"text":"fresh1"}"#.into());
        let mut changed2 = record(2, ExecutionStatus::Failed, 0);
        changed2.execution.error = RSome(r#"{"message":"other"}"#.into());
        // 4 with fewer events than stored: the extra event file goes.
        let fewer4 = record(4, ExecutionStatus::Failed, 1);
        let replaced = b
            .replace_unfinished(vec![
                done1.clone(),
                changed2,
                record(3, ExecutionStatus::Running, 1),
                fewer4.clone(),
            ])
            .await
            .unwrap();
        assert_eq!(replaced, 2);
        let want = canonical(&[done1, record(2, ExecutionStatus::Completed, 2), fewer4]);
        let ids = vec![id(1), id(2), id(3), id(4)];
        assert_eq!(canonical(&b.fetch_executions(ids.clone(), None).await.unwrap()), want);
        assert_eq!(search(&b, "fresh1").await, [id(1)]);
        assert_eq!(search(&b, "needle1").await, Vec::<String>::new());
        assert_eq!(b.list_events(id(4)).await.unwrap().len(), 1);
        assert_eq!(b.replace_unfinished(vec![record(1, ExecutionStatus::Failed, 0)]).await.unwrap(), 0);
        b.after_bulk_load().await.unwrap();
        b.shutdown().await.unwrap();

        let b = open(dir.path(), "yaml", false).await;
        assert!(unreadable(&b).is_empty(), "{:?}", unreadable(&b));
        assert_eq!(canonical(&b.fetch_executions(ids, None).await.unwrap()), want);
        b.shutdown().await.unwrap();
    }

    /// A transfer state is written to `transfers/<id>.json`, replaced under its id (keeping its start), listed
    /// newest first, and the directory changes nothing for the loader (no warning, no unreadable file) or
    /// the format version; a bad id or a state that is not a JSON object is refused.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn transfer_states_are_files_saved_durably_and_listed_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let b = open(dir.path(), "json", true).await;
        assert!(b.transfer_states().await.unwrap().is_empty());
        b.save_transfer_state(id(1), "sqlite /a.db".into(), r#"{"phase":"executions"}"#.into())
            .await
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(2));
        b.save_transfer_state(id(2), "export r at s3://b/".into(), r#"{"phase":"patterns"}"#.into())
            .await
            .unwrap();
        let first = fs::read_to_string(dir.path().join("transfers").join(format!("{}.json", id(1)))).unwrap();
        b.save_transfer_state(id(1), "sqlite /a.db".into(), r#"{"phase":"done"}"#.into()).await.unwrap();
        let want = vec![
            (id(2), "export r at s3://b/".to_string(), r#"{"phase":"patterns"}"#.to_string()),
            (id(1), "sqlite /a.db".to_string(), r#"{"phase":"done"}"#.to_string()),
        ];
        assert_eq!(b.transfer_states().await.unwrap(), want);
        let second =
            fs::read_to_string(dir.path().join("transfers").join(format!("{}.json", id(1)))).unwrap();
        let started = |t: &str| serde_json::from_str::<serde_json::Value>(t).unwrap()["startedAt"].clone();
        assert_eq!(started(&first), started(&second));

        for (bad_id, state, why) in [
            ("../../escape", "{}", "not a lower-case hyphenated UUID"),
            ("0190B3F2-7C1E-7A00-8000-000000000009", "{}", "not a lower-case hyphenated UUID"),
            (id(3).as_str(), "[1]", "not a JSON object"),
            (id(3).as_str(), "{", "not JSON"),
        ] {
            let err = b.save_transfer_state(bad_id.into(), "x".into(), state.into()).await.unwrap_err();
            assert!(err.to_string().contains(why), "{bad_id} {state}: {err}");
        }
        b.shutdown().await.unwrap();

        let b = open(dir.path(), "json", true).await;
        assert!(unreadable(&b).is_empty(), "{:?}", unreadable(&b));
        assert_eq!(b.transfer_states().await.unwrap(), want);
        b.shutdown().await.unwrap();
        // A directory holding only the states is still accepted as a new store's place.
        let other = tempfile::tempdir().unwrap();
        fs::create_dir(other.path().join(TRANSFERS)).unwrap();
        super::super::migrations::check_fresh(other.path()).unwrap();
    }

    /// Every regular file under `root`.
    fn files(root: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut todo = vec![root.to_path_buf()];
        while let Some(d) = todo.pop() {
            for e in fs::read_dir(&d).unwrap().flatten() {
                if e.file_type().unwrap().is_dir() {
                    todo.push(e.path());
                } else {
                    out.push(e.path());
                }
            }
        }
        out
    }

    /// A backup taken while a writer commits one execution with three events per write is one snapshot: it
    /// opens as a file store, every execution has all its events, its rows are the report's and lie between
    /// what was there before and after, and no file shares an inode with the live store.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_backup_during_writes_is_one_consistent_snapshot_sharing_no_inode() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("store");
        let b = Arc::new(open(&base, "yaml", true).await);
        b.import_patterns(vec![pattern(1, "summarize", "1.0.0")]).await.unwrap();
        b.import_executions((1..=30).map(|n| record(n, ExecutionStatus::Completed, 3)).collect())
            .await
            .unwrap();
        b.save_transfer_state(id(9), "sqlite /a.db".into(), r#"{"phase":"done"}"#.into()).await.unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (b, stop) = (b.clone(), stop.clone());
            tokio::spawn(async move {
                let mut n = 1000;
                while !stop.load(Ordering::Relaxed) {
                    b.import_executions(vec![record(n, ExecutionStatus::Completed, 3)]).await.unwrap();
                    n += 1;
                }
                n - 1000
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let dest = dir.path().join("backup");
        let report = b.backup(dest.clone()).await.unwrap();
        stop.store(true, Ordering::Relaxed);
        let written = writer.await.unwrap();
        assert!(written > 0, "the writer committed meanwhile");

        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".partial-"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        let copied = files(&dest);
        assert_eq!(report.files, copied.len() as u64);
        assert!(copied.iter().all(|f| fs::metadata(f).unwrap().nlink() == 1), "a copy still shares an inode");
        assert!(!dest.join(LOCK_NAME).exists());
        assert_eq!(report.bytes, copied.iter().map(|f| fs::metadata(f).unwrap().len()).sum::<u64>());

        let copy = open(&dest, "yaml", true).await;
        assert!(unreadable(&copy).is_empty(), "{:?}", unreadable(&copy));
        let rows = copy.index.read().unwrap().rows();
        let by_table: Vec<u64> = ["patterns", "executions", "execution_events", "audit_logs"]
            .iter()
            .map(|t| report.rows[*t])
            .collect();
        assert_eq!(by_table, rows.to_vec(), "the report counts what the copy holds");
        assert_eq!(rows[0], 1);
        assert!(rows[1] >= 30 && rows[1] <= 30 + u64::from(written), "{rows:?}");
        assert_eq!(rows[2], 3 * rows[1], "every execution with all its events");
        let ids: Vec<String> = copy.index.read().unwrap().exec_start.keys().cloned().collect();
        let all = copy.fetch_executions(ids.clone(), None).await.unwrap();
        assert!(all.iter().all(|r| r.events.len() == 3));
        assert_eq!(canonical(&all), canonical(&b.fetch_executions(ids, None).await.unwrap()));
        assert_eq!(copy.transfer_states().await.unwrap().len(), 1);
        copy.shutdown().await.unwrap();
        let b = Arc::into_inner(b).unwrap();
        b.shutdown().await.unwrap();
    }

    /// A destination inside basePath, one that exists, a relative one or one whose directory is missing is
    /// refused, naming it; nothing is written.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn backup_refuses_unsafe_destinations() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("store");
        let b = open(&base, "json", false).await;
        let exists = dir.path().join("exists");
        fs::create_dir(&exists).unwrap();
        let cases = [
            (base.join("inside"), "inside the store's basePath"),
            (base.clone(), "inside the store's basePath"),
            (dir.path().join("exists/../store/x"), "inside the store's basePath"),
            (exists.clone(), "exists already"),
            (PathBuf::from("relative"), "not an absolute path"),
            (dir.path().join("missing/b"), "does not exist"),
        ];
        for (dest, why) in cases {
            let err = b.backup(dest.clone()).await.unwrap_err();
            assert_eq!(err.kind(), parallax_storage_abi::ErrorKind::InvalidInput, "{err}");
            assert!(err.to_string().contains(why), "{dest:?}: {err}");
        }
        assert!(!base.join("inside").exists());
        assert_eq!(fs::read_dir(&exists).unwrap().count(), 0);
        b.shutdown().await.unwrap();
    }

    const LOCK_NAME: &str = layout::LOCK;
}
