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
