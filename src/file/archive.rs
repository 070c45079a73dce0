//! Archive and restore primitives ([`crate::archive::Store`]) for this backend.
//!
//! - **Scans** read the in-memory index (the selected executions or audit entries in `(time, id)` order, from
//!   the same ordered maps cleanup walks), then each execution's event files, outside the index lock.
//! - **Deletes** go through the store's writer a few records per job, like cleanup: an execution's `.events`
//!   directory is removed before its file, so a kill at any point leaves at worst an execution with fewer
//!   events (still present, deleted by the next run: deleting is idempotent), never events without their
//!   execution. Unlike cleanup's removals, the execution file's removal is synced (its directory is fsynced
//!   before the job is answered), so a delete the archive run records as done stays done after a power cut.
//!   Audit entries are removed from their batch files: a file whose every entry goes is removed, one that
//!   keeps entries is rewritten atomically in place with the rest.
//! - **Imports** are one writer job per call, planned like any write (the index and its search words are
//!   updated once the files are durable). Each record is first converted to its file documents and back, so a
//!   record the store could not read again after a restart is refused by name before anything is written.
//!   An execution's event files are renamed into place before the execution file: a kill half-way leaves
//!   events of an execution that has no file (ignored, with a warning, when the store is opened), and the
//!   record is still absent, so restoring again writes it whole. Restored audit entries go into one new batch
//!   file per day (UTC) of their timestamps, under that day, as appended batches do.

use std::{
    collections::{BTreeMap, HashSet},
    fs,
    ops::Bound,
    path::{Path, PathBuf},
    sync::Arc,
};

use parallax_storage_abi::{AuditEntry, Execution, ExecutionEvent};

use super::{
    codec::Encoding,
    docs::{AuditBatchDoc, Doc, EventDoc, ExecutionDoc, StoredAudit},
    index::Found,
    layout::{self, AUDIT, EXECUTIONS},
    load,
    plan::{execution_change, Change, FileOp, Plan},
    FileBackend,
};
use crate::{
    archive::{Deleted, ExecutionRecord, Imported, Store},
    error::{Error, Result},
    rules::{Key, Selection},
    time,
};

/// Executions removed per writer job (with their events): about one cleanup step.
const DELETE_EXECUTIONS: usize = 128;
/// Audit batch files removed or rewritten per writer job.
const DELETE_AUDIT_FILES: usize = 32;

/// What the scan of one execution needs once the index lock is released.
struct Found1 {
    execution: Execution,
    path: PathBuf,
    last_seq: i64,
}

/// Plans the deletion of the final executions among `ids` (events directory first, then the file).
fn delete_executions(pl: &mut Plan<'_>, ids: &[String]) -> Result<Deleted> {
    pl.idx.ready(&pl.layout.base)?;
    let root = pl.layout.base.join(EXECUTIONS);
    let mut done = Deleted::default();
    let mut days = std::collections::BTreeSet::new();
    for id in ids {
        let Found::Yes((e, path)) = pl.execution(id) else { continue };
        if !e.status.is_final() {
            continue;
        }
        if let Some(dir) = layout::events_dir(&path) {
            if let Ok(entries) = fs::read_dir(&dir) {
                done.events +=
                    entries.flatten().filter(|e| !layout::is_temp(&e.file_name().to_string_lossy())).count()
                        as u64;
                pl.op(FileOp::RemoveAll { path: dir });
            }
        }
        days.extend(path.parent().map(PathBuf::from));
        // Synced: the day directory is fsynced before the job is answered.
        pl.remove(path, false);
        pl.change(Change::RemoveExecution { id: id.clone() });
        done.rows += 1;
    }
    for day in days {
        pl.op(FileOp::Prune { dir: day, root: root.clone() });
    }
    Ok(done)
}

/// The batch name and encoding of an audit batch file `<stamp>_<batch>.<ext>`.
pub(super) fn batch_of(file: &Path, fallback: Encoding) -> (String, Encoding) {
    let name = file.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let (stem, enc) = Encoding::split(name).unwrap_or((name, fallback));
    (stem.rsplit_once('_').map_or(stem, |(_, b)| b).to_string(), enc)
}

/// Plans the removal of the audit entries `ids` from the batch files in `files`.
fn delete_audit(pl: &mut Plan<'_>, files: &[Arc<Path>], ids: &HashSet<String>) -> Result<Deleted> {
    pl.idx.ready(&pl.layout.base)?;
    let root = pl.layout.base.join(AUDIT);
    let mut done = Deleted::default();
    for file in files {
        let Some(keys) = pl.idx.audit_files.get(file).cloned() else { continue };
        let (removed, kept): (Vec<Key>, Vec<Key>) = keys.into_iter().partition(|(_, id)| ids.contains(id));
        if removed.is_empty() {
            continue;
        }
        done.rows += removed.len() as u64;
        if kept.is_empty() {
            pl.remove(file.to_path_buf(), false);
            if let Some(day) = file.parent() {
                pl.op(FileOp::Prune { dir: day.to_path_buf(), root: root.clone() });
            }
        } else {
            let (batch, enc) = batch_of(file, pl.enc);
            let entries = kept.iter().filter_map(|k| pl.idx.stored_audit(k)).collect();
            pl.write(file.to_path_buf(), Doc::Audit { batch, entries }, enc);
        }
        pl.change(Change::TrimAudit { file: file.to_path_buf(), removed });
    }
    Ok(done)
}

/// A record as the store would read it back from its files, or why it cannot be stored.
pub(super) fn stored_record(
    r: &ExecutionRecord,
) -> std::result::Result<(Execution, Vec<ExecutionEvent>), String> {
    let execution = ExecutionDoc::new(&r.execution)?.into_execution()?;
    let mut seqs = HashSet::new();
    let events = r
        .events
        .iter()
        .map(|ev| {
            if !seqs.insert(ev.seq) {
                return Err(format!("two events have seq {}", ev.seq));
            }
            let ev = ExecutionEvent { execution_id: execution.id.clone(), ..ev.clone() };
            EventDoc::new(&ev)?.into_event().map_err(|why| format!("event {}: {why}", ev.seq))
        })
        .collect::<std::result::Result<Vec<_>, String>>()?;
    Ok((execution, events))
}

fn import_executions(pl: &mut Plan<'_>, records: Vec<ExecutionRecord>) -> Result<Imported> {
    pl.idx.ready(&pl.layout.base)?;
    let mut done = Imported::default();
    for r in records {
        let (execution, events) = stored_record(&r).map_err(|why| {
            Error::invalid(format!("restoring execution {}: it cannot be stored: {why}", r.execution.id))
        })?;
        let id = execution.id.to_string();
        match pl.execution(&id) {
            Found::No => {}
            Found::Yes(_) => {
                done.skipped += 1;
                continue;
            }
            Found::Damaged(path, why) => {
                // Present, though unreadable: left as it is (the archive keeps the record).
                tracing::warn!(
                    execution = %id, path = %path.display(), error = %why,
                    "not restoring an execution whose file is present but damaged"
                );
                done.skipped += 1;
                continue;
            }
        }
        let path = pl.layout.execution_file(execution.started_at, &id, pl.enc);
        let dir = layout::events_dir(&path).ok_or_else(|| {
            Error::internal(format!("execution file {} has an unexpected name", path.display()))
        })?;
        pl.change(execution_change(&execution, path.clone()));
        // The events are renamed into place before the execution file (see the module docs).
        for ev in events {
            pl.change(Change::Event { execution_id: id.clone(), seq: ev.seq });
            pl.write(layout::event_file(&dir, ev.seq, pl.enc), Doc::Event(ev), pl.enc);
            done.events_inserted += 1;
        }
        pl.write(path, Doc::Execution(execution), pl.enc);
        done.inserted += 1;
    }
    Ok(done)
}

/// The UTC day of `micros`, as audit directories name it.
fn day_of(micros: i64) -> String {
    time::utc(micros).strftime("%Y-%m-%d").to_string()
}

/// The entries not present yet are chained, in the order given (contiguous sequence numbers after the head),
/// then written in one batch file per day.
fn import_audit(pl: &mut Plan<'_>, entries: Vec<AuditEntry>) -> Result<Imported> {
    pl.idx.ready(&pl.layout.base)?;
    let mut done = Imported::default();
    let mut seen = HashSet::new();
    let mut inserted = Vec::new();
    for a in entries {
        let stored = AuditBatchDoc::new("restore", &[StoredAudit::unchained(a.clone())])
            .and_then(AuditBatchDoc::into_entries)
            .map_err(|why| {
                Error::invalid(format!("restoring audit entry {}: it cannot be stored: {why}", a.id))
            })?;
        let a = stored.into_iter().next().expect("one entry in, one out").entry;
        if pl.audit_id_taken(&a.id) || !seen.insert(a.id.to_string()) {
            done.skipped += 1;
            continue;
        }
        inserted.push(a);
    }
    let mut days: BTreeMap<String, Vec<StoredAudit>> = BTreeMap::new();
    for a in pl.chain_entries(&inserted) {
        days.entry(day_of(a.entry.timestamp)).or_default().push(a);
    }
    for (_, entries) in days {
        let Some(earliest) = entries.iter().map(|a| a.entry.timestamp).min() else { continue };
        done.inserted += entries.len() as u64;
        let batch = uuid::Uuid::now_v7().hyphenated().to_string();
        let path = pl.layout.audit_file(earliest, &batch, pl.enc);
        pl.write(path.clone(), Doc::Audit { batch, entries: entries.clone() }, pl.enc);
        pl.change(Change::Audit { entries, file: path.into() });
    }
    Ok(done)
}

fn add(total: &mut Deleted, d: Deleted) {
    total.rows += d.rows;
    total.events += d.events;
}

impl Store for FileBackend {
    async fn scan_executions(
        &self,
        sel: Selection,
        after: Option<Key>,
        limit: usize,
    ) -> Result<Vec<ExecutionRecord>> {
        let found: Vec<Found1> = {
            let idx = self.read()?;
            let start = after.map_or(Bound::Unbounded, Bound::Excluded);
            idx.executions
                .range((start, Bound::Excluded(sel.before.clone())))
                .filter(|((at, id), x)| sel.selects(*at, id, Some(x.e.status)))
                .take(limit)
                .map(|(_, x)| Found1 {
                    execution: Execution::clone(&x.e),
                    path: x.path.clone(),
                    last_seq: x.last_seq,
                })
                .collect()
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

    async fn scan_audit(&self, sel: Selection, after: Option<Key>, limit: usize) -> Result<Vec<AuditEntry>> {
        let idx = self.read()?;
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        Ok(idx
            .audit
            .range((start, Bound::Excluded(sel.before.clone())))
            .take(limit)
            .map(|(_, a)| a.clone())
            .collect())
    }

    async fn delete_executions(&self, ids: Vec<String>) -> Result<Deleted> {
        let mut total = Deleted::default();
        for chunk in ids.chunks(DELETE_EXECUTIONS) {
            let chunk = chunk.to_vec();
            let d = self
                .writer
                .write("deleting archived executions", move |pl| delete_executions(pl, &chunk))
                .await?;
            add(&mut total, d);
        }
        Ok(total)
    }

    async fn delete_audit(&self, ids: Vec<String>) -> Result<Deleted> {
        // The batch files holding these ids, in path (day) order.
        let files: Vec<Arc<Path>> = {
            let idx = self.read()?;
            let files: std::collections::BTreeSet<Arc<Path>> =
                ids.iter().filter_map(|id| idx.audit_file_of.get(id).cloned()).collect();
            files.into_iter().collect()
        };
        let ids: Arc<HashSet<String>> = Arc::new(ids.into_iter().collect());
        let mut total = Deleted::default();
        for chunk in files.chunks(DELETE_AUDIT_FILES) {
            let (chunk, ids) = (chunk.to_vec(), ids.clone());
            let d = self
                .writer
                .write("deleting archived audit entries", move |pl| delete_audit(pl, &chunk, &ids))
                .await?;
            add(&mut total, d);
        }
        Ok(total)
    }

    async fn import_executions(&self, records: Vec<ExecutionRecord>) -> Result<Imported> {
        if records.is_empty() {
            return Ok(Imported::default());
        }
        self.writer.write("restoring executions", move |pl| import_executions(pl, records)).await
    }

    async fn import_audit(&self, entries: Vec<AuditEntry>) -> Result<Imported> {
        if entries.is_empty() {
            return Ok(Imported::default());
        }
        self.writer.write("restoring audit entries", move |pl| import_audit(pl, entries)).await
    }
}

#[cfg(test)]
mod tests {
    use abi_stable::std_types::{RNone, ROption, RSome, RString, RVec};
    use parallax_storage_abi::{
        retention::CleanupTarget, AuditQuery, EventKind, ExecutionStatus, NewAuditEntry, NewEvent,
        NewExecution, OpenOptions,
    };

    use super::*;
    use crate::{
        contract::Contract,
        rules::{Completion, MIN_ID},
        validate::Page,
    };

    const T0: i64 = 1_705_314_615_123_456; // 2024-01-15T10:30:15.123456Z
    const DAY: i64 = 86_400_000_000;

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

    /// Execution `n`, started `n` days after `T0` (so in several day and month directories), with `n % 3`
    /// events, finished with `status` (or left running).
    async fn execution(b: &FileBackend, n: u32, status: Option<ExecutionStatus>) {
        let at = T0 + i64::from(n) * 9 * DAY;
        let e = NewExecution {
            id: RSome(id(n).into()),
            pattern_name: "summarize".into(),
            pattern_version: "1.0.0".into(),
            status: ExecutionStatus::Running,
            input: RSome(format!(r#"{{"text": "needle{n} common", "n": {n}}}"#).into()),
            metadata: RSome(r#"{"team": "a"}"#.into()),
            tags: RVec::from(vec!["x".into()]),
            started_at: RSome(at),
        };
        b.create_execution(e, true).await.unwrap();
        for k in 1..=(n % 3) {
            let ev = NewEvent {
                kind: EventKind::AgentAssignment,
                payload: format!(r#"{{"agent": "a{k}"}}"#).into(),
                recorded_at: RSome(at + i64::from(k)),
            };
            b.append_event(id(n), id(1000 + n * 10 + k), ev).await.unwrap();
        }
        if let Some(status) = status {
            let c = Completion {
                status,
                output: RSome(r#"{"summary": "done"}"#.into()),
                error: RNone,
                completed_at: at + 2_000_000,
            };
            b.complete_execution(id(n), c).await.unwrap();
        }
    }

    /// Executions 1..=6 (4 running), read back as archive records.
    async fn source(dir: &Path) -> (FileBackend, Vec<ExecutionRecord>) {
        let b = open(dir, "json", false).await;
        for n in 1..=6 {
            let status = if n == 4 { None } else { Some(ExecutionStatus::Completed) };
            execution(&b, n, status).await;
        }
        let records = canonical(&scan_all(&b).await);
        (b, records)
    }

    fn everything(target: CleanupTarget) -> Selection {
        Selection { target, before: (i64::MAX, MIN_ID.to_string()), include_unfinished: false }
    }

    async fn scan_all(b: &FileBackend) -> Vec<ExecutionRecord> {
        let mut out: Vec<ExecutionRecord> = Vec::new();
        loop {
            let after = out.last().map(|r| (r.execution.started_at, r.execution.id.to_string()));
            let page = b.scan_executions(everything(CleanupTarget::Executions), after, 2).await.unwrap();
            if page.is_empty() {
                return out;
            }
            out.extend(page);
        }
    }

    /// JSON documents in canonical form: a store keeps documents, not their text (the file store writes them
    /// as YAML/JSON structures), so records are compared as parsed JSON, as restore does.
    fn canon(text: &ROption<RString>) -> ROption<RString> {
        text.as_ref().map(|t| serde_json::from_str::<serde_json::Value>(t).unwrap().to_string().into())
    }

    fn canonical(records: &[ExecutionRecord]) -> Vec<ExecutionRecord> {
        records
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
            .collect()
    }

    fn canonical_audit(entries: &[AuditEntry]) -> Vec<AuditEntry> {
        entries.iter().map(|a| AuditEntry { details: canon(&a.details), ..a.clone() }).collect()
    }

    async fn search(b: &FileBackend, term: &str) -> Vec<String> {
        let hits = b.search_executions(vec![term.into()], Page { limit: 100, after: None }).await.unwrap();
        let mut ids: Vec<String> = hits.into_iter().map(|(e, _)| e.id.to_string()).collect();
        ids.sort();
        ids
    }

    /// What the store holds for `records`' ids: each execution and its events, read through the contract.
    async fn stored(b: &FileBackend, records: &[ExecutionRecord]) -> Vec<ExecutionRecord> {
        let mut out = Vec::new();
        for r in records {
            let id = r.execution.id.to_string();
            let execution = b.get_execution(id.clone()).await.unwrap();
            out.push(ExecutionRecord { execution, events: b.list_events(id).await.unwrap() });
        }
        canonical(&out)
    }

    fn unreadable(b: &FileBackend) -> usize {
        b.index.read().unwrap().unreadable.len()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_import_into_an_empty_store_reads_back_the_same_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let (src, records) = source(&dir.path().join("src")).await;
        assert_eq!(
            records.iter().map(|r| r.execution.id.to_string()).collect::<Vec<_>>(),
            [id(1), id(2), id(3), id(5), id(6)],
            "final executions only, oldest first"
        );
        assert_eq!(records.iter().map(|r| r.events.len()).sum::<usize>(), 5, "1 + 2 + 0 + 2 + 0");
        assert_eq!(canonical(&stored(&src, &records).await), records, "a scan reads what the contract reads");

        // Another encoding: the files are written in the target store's own format.
        let base = dir.path().join("dst");
        let dst = open(&base, "yaml", true).await;
        let imported = dst.import_executions(records.clone()).await.unwrap();
        assert_eq!(imported, Imported { inserted: 5, skipped: 0, events_inserted: 5 });
        assert_eq!(stored(&dst, &records).await, records);
        assert_eq!(search(&dst, "common").await, [id(1), id(2), id(3), id(5), id(6)]);
        assert_eq!(search(&dst, "needle5").await, [id(5)]);
        assert_eq!(scan_all(&dst).await, records);
        let file = base.join("executions/2024/02/02").join(format!("103015.123456_{}.yaml.gz", id(2)));
        assert!(file.is_file(), "{}", file.display());
        assert!(layout::event_file(&layout::events_dir(&file).unwrap(), 2, dst.enc).is_file());
        dst.shutdown().await.unwrap();
        drop(dst);

        // The files are the truth: reopened, the store indexes the same records, and nothing is unreadable.
        let dst = open(&base, "json", false).await;
        assert_eq!(unreadable(&dst), 0);
        assert_eq!(stored(&dst, &records).await, records);
        assert_eq!(scan_all(&dst).await, records);
        assert_eq!(search(&dst, "needle3").await, [id(3)]);
        dst.shutdown().await.unwrap();
        src.shutdown().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_import_skips_the_ids_present_and_leaves_them_as_they_are() {
        let dir = tempfile::tempdir().unwrap();
        let (src, records) = source(&dir.path().join("src")).await;
        let base = dir.path().join("dst");
        let dst = open(&base, "json", false).await;
        // Execution 2 is present with other content (completed with another output, no events); 5 is present
        // as archived.
        execution(&dst, 2, Some(ExecutionStatus::Failed)).await;
        dst.import_executions(vec![records[3].clone()]).await.unwrap();
        let before = stored(&dst, &[records[1].clone()]).await;
        assert_ne!(before[0], records[1]);

        // A repeat inside the batch is skipped too.
        let mut batch = records.clone();
        batch.push(records[0].clone());
        let imported = dst.import_executions(batch).await.unwrap();
        assert_eq!(imported, Imported { inserted: 3, skipped: 3, events_inserted: 1 });
        assert_eq!(stored(&dst, &[records[1].clone()]).await, before, "a present execution is left alone");
        for r in [&records[0], &records[2], &records[3], &records[4]] {
            assert_eq!(&stored(&dst, std::slice::from_ref(r)).await[..], std::slice::from_ref(r));
        }
        let again = dst.import_executions(records.clone()).await.unwrap();
        assert_eq!(again, Imported { inserted: 0, skipped: 5, events_inserted: 0 });
        dst.shutdown().await.unwrap();
        drop(dst);
        let dst = open(&base, "json", false).await;
        assert_eq!(unreadable(&dst), 0);
        assert_eq!(dst.count_executions(Default::default()).await.unwrap(), 5);
        dst.shutdown().await.unwrap();
        src.shutdown().await.unwrap();
    }

    /// A record the store could not read back is refused by name, and nothing of the batch is written.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_record_the_store_cannot_keep_fails_the_import_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let (src, records) = source(&dir.path().join("src")).await;
        let base = dir.path().join("dst");
        let dst = open(&base, "json", false).await;
        for (what, bad) in [
            ("input is not valid JSON", {
                let mut r = records[1].clone();
                r.execution.input = RSome("{".into());
                r
            }),
            ("two events have seq 1", {
                let mut r = records[1].clone();
                r.events[1].seq = 1;
                r
            }),
            ("is not a UUID", {
                let mut r = records[1].clone();
                r.execution.id = "../../etc".into();
                r
            }),
        ] {
            let batch = vec![records[0].clone(), bad];
            let err = dst.import_executions(batch).await.unwrap_err();
            assert!(
                err.to_string().contains("restoring execution") && err.to_string().contains(what),
                "{err}"
            );
        }
        assert_eq!(dst.count_executions(Default::default()).await.unwrap(), 0);
        let exec_dir = base.join(EXECUTIONS);
        assert!(!exec_dir.exists() || walkdir(&exec_dir).is_empty(), "nothing written");
        dst.shutdown().await.unwrap();
        src.shutdown().await.unwrap();
    }

    /// Deletes remove an execution's events before its file (planned in that order, so a kill between them
    /// leaves the execution), skip unfinished and absent ids, prune emptied directories, and repeat safely.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deletes_go_events_first_and_repeat_safely() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("s");
        let (b, records) = source(&base).await;
        let mut ids: Vec<String> = records.iter().map(|r| r.execution.id.to_string()).collect();
        ids.extend([id(4), id(99)]);

        // The planned order: for each execution, its events directory, then its file.
        {
            let idx = b.index.read().unwrap();
            let mut plan = Plan::new(&idx, &b.layout, b.enc);
            let d = delete_executions(&mut plan, &ids).unwrap();
            assert_eq!(d, Deleted { rows: 5, events: 5 });
            let (ops, _) = plan.into_parts();
            let mut events_gone: HashSet<PathBuf> = HashSet::new();
            for op in &ops {
                match op {
                    FileOp::RemoveAll { path } => {
                        events_gone.insert(path.clone());
                    }
                    FileOp::Remove { path, .. } => {
                        let events = layout::events_dir(path).unwrap();
                        assert!(
                            events_gone.contains(&events) || !events.exists(),
                            "{} goes before its events",
                            path.display()
                        );
                    }
                    FileOp::Prune { .. } => {}
                    _ => panic!("only removals are planned"),
                }
            }
        }

        let d = b.delete_executions(ids.clone()).await.unwrap();
        assert_eq!(d, Deleted { rows: 5, events: 5 });
        assert_eq!(b.delete_executions(ids).await.unwrap(), Deleted::default());
        assert_eq!(search(&b, "common").await, [id(4)]);
        assert!(b.get_execution(id(1)).await.is_err());
        // Emptied day, month and year directories are gone; the running execution's stay.
        let mut left: Vec<String> = Vec::new();
        for entry in walkdir(&base.join(EXECUTIONS)) {
            left.push(entry.strip_prefix(&base).unwrap().display().to_string());
        }
        left.sort();
        let running = format!("executions/2024/02/20/103015.123456_{}", id(4));
        assert_eq!(left, [format!("{running}.events/000001.json"), format!("{running}.json")]);
        b.shutdown().await.unwrap();
    }

    fn walkdir(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in fs::read_dir(dir).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                out.extend(walkdir(&e.path()));
            } else {
                out.push(e.path());
            }
        }
        out
    }

    /// An import plans each execution's event files before the execution file.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_import_writes_events_before_their_execution() {
        let dir = tempfile::tempdir().unwrap();
        let (src, records) = source(&dir.path().join("src")).await;
        let dst = open(&dir.path().join("dst"), "json", false).await;
        let ops = {
            let idx = dst.index.read().unwrap();
            let mut plan = Plan::new(&idx, &dst.layout, dst.enc);
            import_executions(&mut plan, records.clone()).unwrap();
            plan.into_parts().0
        };
        let mut written: HashSet<PathBuf> = HashSet::new();
        for op in &ops {
            let FileOp::Write { path, doc, .. } = op else { panic!("only writes are planned") };
            match &**doc {
                Doc::Event(_) => assert!(
                    !written.iter().any(|w| layout::events_dir(w).as_deref() == path.parent()),
                    "{} is written after its execution",
                    path.display()
                ),
                Doc::Execution(_) => {}
                _ => panic!("only executions and events"),
            }
            written.insert(path.clone());
        }
        assert_eq!(ops.len(), 5 + 5);
        dst.shutdown().await.unwrap();
        src.shutdown().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn audit_entries_leave_and_come_back_by_id() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("s");
        let b = open(&base, "json", false).await;
        let entry = |n: u32, at: i64| NewAuditEntry {
            id: RSome(id(n).into()),
            timestamp: RSome(at),
            action: "login".into(),
            actor: RSome(format!("user{n}").into()),
            details: RSome(r#"{"ok": true}"#.into()),
            ..NewAuditEntry::default()
        };
        // One batch over two days, and one batch of its own.
        b.append_audit(vec![entry(1, T0), entry(2, T0 + 1), entry(3, T0 + DAY)]).await.unwrap();
        b.append_audit(vec![entry(4, T0 + 2)]).await.unwrap();
        let sel =
            Selection { before: (T0 + DAY, MIN_ID.to_string()), ..everything(CleanupTarget::AuditLogs) };
        let first = b.scan_audit(sel.clone(), None, 2).await.unwrap();
        let rest = b
            .scan_audit(sel.clone(), first.last().map(|a| (a.timestamp, a.id.to_string())), 2)
            .await
            .unwrap();
        let archived: Vec<AuditEntry> = canonical_audit(&first.into_iter().chain(rest).collect::<Vec<_>>());
        assert_eq!(archived.iter().map(|a| a.id.to_string()).collect::<Vec<_>>(), [id(1), id(2), id(4)]);

        // The first batch is rewritten with entry 3; the second goes whole.
        let ids: Vec<String> = archived.iter().map(|a| a.id.to_string()).collect();
        assert_eq!(b.delete_audit(ids.clone()).await.unwrap(), Deleted { rows: 3, events: 0 });
        assert_eq!(b.delete_audit(ids).await.unwrap(), Deleted::default());
        let day = base.join(AUDIT).join("2024-01-15");
        let files: Vec<PathBuf> = walkdir(&day);
        assert_eq!(files.len(), 1, "{files:?}");
        let q = || b.query_audit(AuditQuery::default(), Page { limit: 10, after: None });
        assert_eq!(q().await.unwrap().iter().map(|a| a.id.to_string()).collect::<Vec<_>>(), [id(3)]);

        // Restored: one new batch file for their day; a repeat skips them all.
        let imported = b.import_audit(archived.clone()).await.unwrap();
        assert_eq!(imported, Imported { inserted: 3, skipped: 0, events_inserted: 0 });
        assert_eq!(walkdir(&day).len(), 2);
        assert_eq!(
            b.import_audit(archived.clone()).await.unwrap(),
            Imported { skipped: 3, ..Imported::default() }
        );
        let mut all = canonical_audit(&q().await.unwrap());
        all.reverse();
        assert_eq!(&all[..3], &archived[..]);
        b.shutdown().await.unwrap();
        drop(b);
        let b = open(&base, "json", false).await;
        assert_eq!(unreadable(&b), 0);
        assert_eq!(
            b.query_audit(AuditQuery::default(), Page { limit: 10, after: None }).await.unwrap().len(),
            4
        );
        b.shutdown().await.unwrap();
    }
}
