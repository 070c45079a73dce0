//! Cleanup and retention on this backend ([`crate::retention::Store`]): persistence only; what goes and how a
//! run is checked, locked and recorded is decided in `src/retention`.
//!
//! - **Counting** (`plan_cleanup`, `nth_newest_execution`) reads the in-memory index only: no file is touched.
//! - **Removing** goes through the store's writer in small steps (a few executions or audit batch files per
//!   step, sized to take about [`STEP_TARGET`]; each step is one job of a group commit), so other writes
//!   queue between steps and keep going during a large cleanup. In a step, each execution's `.events`
//!   directory is removed *before* its execution file, so a crash (kill -9) at any point leaves at worst an
//!   execution with fewer events, never events without their execution; it is still selected, and the next run
//!   removes it. Day, month and year directories left empty are removed at the end of the step. The index
//!   entry (and with it the execution's search words) goes once the step is durable. (On power loss the order
//!   of the removals holds on file systems that journal metadata in order, as ext4 and XFS do.)
//! - **Audit batches**: a batch file whose entries all go is removed; one that spans the limit is rewritten
//!   atomically in place (temporary file, fsync, rename over it, directory fsync) with the entries at or after
//!   the limit, so it is either the old batch or the trimmed one, never torn. A rewritten batch keeps its name
//!   (and so stays under the day of its original earliest entry).
//! - **Reports**: every file goes in a step, so `rowsInBatches` is every row and `batches` the number of steps;
//!   `partitionsDropped` names the month directories (or, in a month that stays, the day directories) that
//!   were emptied and removed; `bytesReclaimed` is the size of the removed files, less what rewritten batches
//!   still take.
//! - **The runner lock** is the store's own lock (one process at a time, `lock.rs`) plus an in-process guard,
//!   so two runs of one instance never overlap.
//! - **Run records** live in `retention/runs.json` (one JSON document, the newest [`KEPT_RUNS`] runs, rewritten
//!   atomically on every change; see `README.txt`).

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    fs,
    ops::Bound,
    path::{Path, PathBuf},
    sync::Arc,
};

use parallax_storage_abi::retention::TableReport;
use serde::{Deserialize, Serialize};

use super::{
    codec::Encoding,
    docs::Doc,
    durable,
    index::{Found, Index},
    layout::{self, AUDIT, EXECUTIONS, RETENTION, RUNS_FILE},
    plan::{Change, FileOp, Plan},
    FileBackend,
};
use crate::{
    config::StorageConfig,
    error::{Error, Result},
    retention::{Plan as Counted, Precheck, Run, RunStatus, RunnerLock, Store, Tally, Trigger, SAMPLE_IDS},
    rules::{Key, Selection},
    time,
};

/// Executions removed by the first writer step (with their events); later steps adapt ([`StepSize`]).
const STEP_EXECUTIONS: usize = 64;
/// Index entries looked at per step (old unfinished executions that stay are skipped over, a step at a time).
const STEP_SCAN: usize = 4096;
/// Audit batch files removed or rewritten by the first step; later steps adapt ([`StepSize`]).
const STEP_AUDIT_FILES: usize = 16;
/// How long one step should take: writes queued behind a step (or committed in its group) wait about this long.
const STEP_TARGET: std::time::Duration = std::time::Duration::from_millis(40);

/// The size of the next step, adapted to how long the last one took, so that a step stays near
/// [`STEP_TARGET`] on a fast disk and a slow (or busy) one alike.
struct StepSize(usize);

impl StepSize {
    fn next(&mut self, took: std::time::Duration, full: bool) -> usize {
        if took > STEP_TARGET {
            self.0 = (self.0 / 2).max(4);
        } else if full && took < STEP_TARGET / 3 {
            self.0 = (self.0 * 2).min(2048);
        }
        self.0
    }
}
/// Run records kept in `retention/runs.json`.
const KEPT_RUNS: usize = 1000;

fn micros_text(t: Option<i64>) -> Option<String> {
    t.map(time::rfc3339)
}

/// `executions/2024/01` for a path under the store.
fn relative(base: &Path, p: &Path) -> String {
    p.strip_prefix(base).unwrap_or(p).to_string_lossy().into_owned()
}

fn size(path: &Path) -> u64 {
    fs::symlink_metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Whether a file the index could not read lies under `dir` (such a directory never empties).
fn holds_unreadable(idx: &Index, dir: &Path) -> bool {
    idx.unreadable.range(dir.to_path_buf()..).next().is_some_and(|(p, _)| p.starts_with(dir))
}

// ------------------------------------------------------------------ counting

/// The first [`SAMPLE_IDS`] ids, the oldest and newest time and the count of the selected rows.
#[derive(Default)]
struct Span {
    rows: u64,
    oldest: Option<i64>,
    newest: Option<i64>,
    /// The oldest [`SAMPLE_IDS`] keys seen, in order (rows arrive in file order, not time order).
    samples: Vec<(i64, String)>,
}

impl Span {
    fn add(&mut self, at: i64, id: &str) {
        self.rows += 1;
        self.oldest = Some(self.oldest.map_or(at, |o| o.min(at)));
        self.newest = Some(self.newest.map_or(at, |n| n.max(at)));
        self.sample(at, id.to_string());
    }

    fn sample(&mut self, at: i64, id: String) {
        let key = (at, id);
        if self.samples.len() == SAMPLE_IDS && self.samples.last().is_some_and(|last| *last <= key) {
            return;
        }
        let pos = self.samples.partition_point(|k| *k < key);
        self.samples.insert(pos, key);
        self.samples.truncate(SAMPLE_IDS);
    }

    fn report(self, table: &str) -> TableReport {
        TableReport {
            table: table.into(),
            rows: self.rows,
            oldest: micros_text(self.oldest),
            newest: micros_text(self.newest),
            sample_ids: self.samples.into_iter().map(|(_, id)| id).collect(),
            ..TableReport::default()
        }
    }
}

/// Directories that would be emptied: a month whose every day goes, else the days that go.
fn dropped_dirs(base: &Path, days: BTreeMap<PathBuf, bool>, idx: &Index) -> Vec<String> {
    let mut months: BTreeMap<PathBuf, Vec<(PathBuf, bool)>> = BTreeMap::new();
    for (day, goes) in days {
        let goes = goes && !holds_unreadable(idx, &day);
        let month = day.parent().map(PathBuf::from).unwrap_or_default();
        months.entry(month).or_default().push((day, goes));
    }
    let mut out = Vec::new();
    for (month, days) in months {
        if days.iter().all(|(_, goes)| *goes) && !holds_unreadable(idx, &month) {
            out.push(relative(base, &month));
        } else {
            out.extend(days.into_iter().filter(|(_, goes)| *goes).map(|(d, _)| relative(base, &d)));
        }
    }
    out
}

/// The first instant of the month after the one holding `micros` (UTC).
fn month_end(micros: i64) -> i64 {
    let first = time::utc(micros).date().first_of_month();
    first
        .checked_add(jiff::Span::new().months(1))
        .ok()
        .and_then(|next| time::utc_micros(next.to_datetime(jiff::civil::Time::midnight())))
        .unwrap_or(i64::MAX)
}

fn plan_executions(idx: &Index, base: &Path, sel: &Selection) -> Counted {
    let mut span = Span::default();
    let mut events = 0u64;
    let mut unfinished_kept = 0u64;
    // Whether every execution of each day directory goes, for the days up to the end of the limit's month.
    let month_end = month_end(sel.before.0);
    let mut days: BTreeMap<PathBuf, bool> = BTreeMap::new();
    for ((at, id), x) in &idx.executions {
        if *at >= month_end {
            break;
        }
        let goes = sel.selects(*at, id, Some(x.e.status));
        if goes {
            span.add(*at, id);
            events += x.last_seq.max(0) as u64;
        } else if sel.keeps_unfinished(*at, id, x.e.status) {
            unfinished_kept += 1;
        }
        if let Some(day) = x.path.parent() {
            *days.entry(day.to_path_buf()).or_insert(true) &= goes;
        }
    }
    let mut main = span.report("executions");
    main.partitions_dropped = dropped_dirs(base, days, idx);
    main.rows_in_batches = main.rows;
    let events = TableReport {
        table: "execution_events".into(),
        rows: events,
        rows_in_batches: events,
        ..TableReport::default()
    };
    Counted { tables: vec![main, events], unfinished_kept, total_rows: idx.executions.len() as u64 }
}

fn plan_audit(idx: &Index, base: &Path, sel: &Selection) -> Counted {
    let mut span = Span::default();
    for (at, id) in idx.audit.range(..sel.before.clone()).map(|(k, _)| k) {
        span.add(*at, id);
    }
    // A batch file lies under the day of its earliest entry: no file of a later day holds a selected entry.
    let limit_day = time::utc(sel.before.0).strftime("%Y-%m-%d").to_string();
    let mut days: BTreeMap<PathBuf, bool> = BTreeMap::new();
    for (file, keys) in &idx.audit_files {
        let Some(day) = file.parent() else { continue };
        if day.file_name().and_then(|d| d.to_str()).is_some_and(|d| d > limit_day.as_str()) {
            break; // paths sort by day
        }
        let goes = keys.iter().all(|(at, id)| sel.below(*at, id));
        *days.entry(day.to_path_buf()).or_insert(true) &= goes;
    }
    let mut main = span.report("audit_logs");
    main.rows_in_batches = main.rows;
    let holds = |d: &PathBuf| !holds_unreadable(idx, d);
    main.partitions_dropped =
        days.into_iter().filter(|(d, goes)| *goes && holds(d)).map(|(d, _)| relative(base, &d)).collect();
    Counted { tables: vec![main], unfinished_kept: 0, total_rows: idx.audit.len() as u64 }
}

// ------------------------------------------------------------------ removing, one writer step at a time

#[derive(Default)]
struct ExecStep {
    span: Span,
    events: u64,
    exec_bytes: u64,
    event_bytes: u64,
    days: BTreeSet<PathBuf>,
    /// The last key looked at; the next step starts after it.
    cursor: Option<Key>,
    /// Nothing selected is left after `cursor`.
    done: bool,
}

/// Plans the removal of the next few selected executions (events directory first, then the file).
fn execution_step(pl: &mut Plan<'_>, sel: &Selection, after: Option<Key>, max: usize) -> Result<ExecStep> {
    pl.idx.ready(&pl.layout.base)?;
    let idx: &Index = pl.idx;
    let root = pl.layout.base.join(EXECUTIONS);
    let start = after.map_or(Bound::Unbounded, Bound::Excluded);
    let mut step = ExecStep { done: true, ..ExecStep::default() };
    let range = idx.executions.range((start, Bound::Excluded(sel.before.clone())));
    for (scanned, (key, _)) in range.enumerate() {
        if scanned >= STEP_SCAN || step.span.rows as usize >= max {
            step.done = false;
            break;
        }
        step.cursor = Some(key.clone());
        // The state as the earlier writes of this group leave it.
        let Found::Yes((e, path)) = pl.execution(&key.1) else { continue };
        if !sel.selects(e.started_at, &key.1, Some(e.status)) {
            continue;
        }
        if let Some(dir) = layout::events_dir(&path) {
            if let Ok(entries) = fs::read_dir(&dir) {
                for entry in entries.flatten() {
                    step.events += 1;
                    step.event_bytes += entry.metadata().map(|m| m.len()).unwrap_or(0);
                }
                pl.op(FileOp::RemoveAll { path: dir });
            }
        }
        step.exec_bytes += size(&path);
        step.days.extend(path.parent().map(PathBuf::from));
        pl.op(FileOp::Discard { path });
        pl.change(Change::RemoveExecution { id: key.1.clone() });
        step.span.add(key.0, &key.1);
    }
    for day in &step.days {
        pl.op(FileOp::Prune { dir: day.clone(), root: root.clone() });
    }
    Ok(step)
}

#[derive(Default)]
struct AuditStep {
    span: Span,
    bytes: u64,
    rewritten: u64,
    days: BTreeSet<PathBuf>,
    done: bool,
}

/// Plans the next few audit batch files: removed when every entry goes, else rewritten with the rest.
fn audit_step(pl: &mut Plan<'_>, sel: &Selection, max: usize) -> Result<AuditStep> {
    pl.idx.ready(&pl.layout.base)?;
    let idx: &Index = pl.idx;
    let root = pl.layout.base.join(AUDIT);
    let mut files: Vec<Arc<Path>> = Vec::new();
    let mut seen: HashSet<&Arc<Path>> = HashSet::new();
    let mut step = AuditStep { done: true, ..AuditStep::default() };
    for (_, id) in idx.audit.range(..sel.before.clone()).map(|(k, _)| k) {
        let Some(file) = idx.audit_file_of.get(id) else { continue };
        if seen.insert(file) {
            if files.len() >= max {
                step.done = false;
                break;
            }
            files.push(file.clone());
        }
    }
    for file in files {
        let Some(keys) = idx.audit_files.get(&file).cloned() else { continue };
        let (removed, kept): (Vec<Key>, Vec<Key>) = keys.into_iter().partition(|(at, id)| sel.below(*at, id));
        for (at, id) in &removed {
            step.span.add(*at, id);
        }
        let old = size(&file);
        if kept.is_empty() {
            step.bytes += old;
            step.days.extend(file.parent().map(PathBuf::from));
            pl.op(FileOp::Discard { path: file.to_path_buf() });
        } else {
            let name = file.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            let (stem, enc) = Encoding::split(name).unwrap_or((name, pl.enc));
            let batch = stem.rsplit_once('_').map_or(stem, |(_, b)| b).to_string();
            let entries = kept.iter().filter_map(|k| idx.stored_audit(k)).collect();
            let doc = Doc::Audit { batch, entries };
            let new = doc
                .encode(enc)
                .map_err(|e| Error::internal(format!("cannot encode audit batch {}: {e}", file.display())))?
                .len() as u64;
            step.bytes += old.saturating_sub(new);
            step.rewritten += 1;
            pl.write(file.to_path_buf(), doc, enc);
        }
        pl.change(Change::TrimAudit { file: file.to_path_buf(), removed });
    }
    for day in &step.days {
        pl.op(FileOp::Prune { dir: day.clone(), root: root.clone() });
    }
    Ok(step)
}

fn widen(total: &mut Span, step: Span) {
    total.rows += step.rows;
    total.oldest = [total.oldest, step.oldest].into_iter().flatten().min();
    total.newest = [total.newest, step.newest].into_iter().flatten().max();
    for (at, id) in step.samples {
        total.sample(at, id);
    }
}

/// The touched day directories that are gone now: whole months where the month directory went too.
fn removed_dirs(base: &Path, days: &BTreeSet<PathBuf>) -> Vec<String> {
    let mut months: BTreeMap<&Path, Vec<&PathBuf>> = BTreeMap::new();
    for d in days {
        months.entry(d.parent().unwrap_or(d)).or_default().push(d);
    }
    let mut out = Vec::new();
    for (month, days) in months {
        if !month.exists() {
            out.push(relative(base, month));
        } else {
            out.extend(days.into_iter().filter(|d| !d.exists()).map(|d| relative(base, d)));
        }
    }
    out
}

impl FileBackend {
    async fn cleanup_executions(&self, sel: Selection, tally: Tally) -> Result<Vec<TableReport>> {
        let mut total = Span::default();
        let (mut events, mut exec_bytes, mut event_bytes, mut steps) = (0u64, 0u64, 0u64, 0u64);
        let mut days = BTreeSet::new();
        let mut cursor: Option<Key> = None;
        let (mut size, mut max) = (StepSize(STEP_EXECUTIONS), STEP_EXECUTIONS);
        loop {
            let (s, after) = (sel.clone(), cursor.clone());
            let started = std::time::Instant::now();
            let step = self.writer.write("cleanup", move |pl| execution_step(pl, &s, after, max)).await?;
            max = size.next(started.elapsed(), step.span.rows as usize >= max);
            if step.span.rows > 0 {
                steps += 1;
                tally.add("execution_events", step.events);
                tally.add("executions", step.span.rows);
            }
            events += step.events;
            exec_bytes += step.exec_bytes;
            event_bytes += step.event_bytes;
            days.extend(step.days);
            cursor = step.cursor;
            widen(&mut total, step.span);
            if step.done {
                break;
            }
        }
        let mut main = total.report("executions");
        main.rows_in_batches = main.rows;
        main.batches = steps;
        main.bytes_reclaimed = Some(exec_bytes);
        main.partitions_dropped = removed_dirs(&self.layout.base, &days);
        let events = TableReport {
            table: "execution_events".into(),
            rows: events,
            rows_in_batches: events,
            batches: steps,
            bytes_reclaimed: Some(event_bytes),
            ..TableReport::default()
        };
        Ok(vec![main, events])
    }

    async fn cleanup_audit(&self, sel: Selection, tally: Tally) -> Result<Vec<TableReport>> {
        let mut total = Span::default();
        let (mut bytes, mut steps, mut rewritten) = (0u64, 0u64, 0u64);
        let mut days = BTreeSet::new();
        let (mut size, mut max) = (StepSize(STEP_AUDIT_FILES), STEP_AUDIT_FILES);
        loop {
            let s = sel.clone();
            let started = std::time::Instant::now();
            let step = self.writer.write("cleanup", move |pl| audit_step(pl, &s, max)).await?;
            max = size.next(started.elapsed(), !step.done);
            if step.span.rows > 0 {
                steps += 1;
                tally.add("audit_logs", step.span.rows);
            }
            bytes += step.bytes;
            rewritten += step.rewritten;
            days.extend(step.days);
            let done = step.done || step.span.rows == 0;
            widen(&mut total, step.span);
            if done {
                break;
            }
        }
        if rewritten > 0 {
            tracing::info!(
                rewritten,
                "audit batch files spanning the cleanup limit were rewritten with the rest"
            );
        }
        let mut main = total.report("audit_logs");
        main.rows_in_batches = main.rows;
        main.batches = steps;
        main.bytes_reclaimed = Some(bytes);
        main.partitions_dropped =
            days.iter().filter(|d| !d.exists()).map(|d| relative(&self.layout.base, d)).collect();
        Ok(vec![main])
    }
}

// ------------------------------------------------------------------ run records

/// `retention/runs.json`.
#[derive(Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RunsDoc {
    runs: Vec<RunDoc>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunDoc {
    id: String,
    trigger: String,
    #[serde(default)]
    tick: Option<String>,
    started_at: String,
    #[serde(default)]
    finished_at: Option<String>,
    status: String,
    #[serde(default)]
    rows: BTreeMap<String, u64>,
    #[serde(default)]
    error: Option<String>,
    /// An archive run's state ([`crate::archive::ArchiveState`], as its JSON object); absent for a plain
    /// cleanup and in records written before archiving existed. Kept as a JSON value, so that a damaged
    /// state reads as none instead of making every record unreadable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    archive: Option<serde_json::Value>,
}

impl RunDoc {
    fn of(r: &Run) -> RunDoc {
        RunDoc {
            id: r.id.clone(),
            trigger: r.trigger.as_str().into(),
            tick: micros_text(r.tick),
            started_at: time::rfc3339(r.started_at),
            finished_at: micros_text(r.finished_at),
            status: r.status.as_str().into(),
            rows: r.rows.clone(),
            error: r.error.clone(),
            archive: r
                .archive
                .as_ref()
                .map(|a| serde_json::to_value(a).expect("an archive state serializes")),
        }
    }

    fn into_run(self) -> std::result::Result<Run, String> {
        let ts = |s: &str, field: &str| {
            time::parse_rfc3339(s)
                .ok_or_else(|| format!("run {}: {field} {s:?} is not an RFC 3339 UTC time", self.id))
        };
        Ok(Run {
            trigger: Trigger::parse(&self.trigger).ok_or_else(|| {
                format!("run {}: trigger {:?} is not manual, scheduled or catch-up", self.id, self.trigger)
            })?,
            tick: self.tick.as_deref().map(|t| ts(t, "tick")).transpose()?,
            started_at: ts(&self.started_at, "started_at")?,
            finished_at: self.finished_at.as_deref().map(|t| ts(t, "finished_at")).transpose()?,
            status: RunStatus::parse(&self.status).ok_or_else(|| {
                format!(
                    "run {}: status {:?} is not running, succeeded, failed or interrupted",
                    self.id, self.status
                )
            })?,
            rows: self.rows.clone(),
            error: self.error.clone(),
            archive: self.archive.and_then(|v| serde_json::from_value(v).ok()),
            id: self.id,
        })
    }
}

impl FileBackend {
    fn runs_path(&self) -> PathBuf {
        self.layout.base.join(RETENTION).join(RUNS_FILE)
    }

    /// The records, newest first (read from the file on first use).
    fn with_runs<T>(&self, f: impl FnOnce(&mut Vec<Run>) -> Result<T>) -> Result<T> {
        let mut cache = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        if cache.is_none() {
            *cache = Some(read_runs(&self.runs_path())?);
        }
        f(cache.as_mut().expect("read above"))
    }
}

fn read_runs(path: &Path) -> Result<Vec<Run>> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(Error::unavailable(format!("cannot read the run records {}: {e}", path.display())))
        }
    };
    let damaged = |why: String| {
        Error::internal(format!(
            "the run records {} are damaged ({why}); repair the file or remove it (it only holds the history of \
             cleanup runs)",
            path.display()
        ))
    };
    let doc: RunsDoc = serde_json::from_slice(&bytes).map_err(|e| damaged(e.to_string()))?;
    let mut runs = doc
        .runs
        .into_iter()
        .map(RunDoc::into_run)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(damaged)?;
    runs.sort_by(|a, b| b.started_at.cmp(&a.started_at).then_with(|| b.id.cmp(&a.id)));
    Ok(runs)
}

fn write_runs(path: &Path, runs: &[Run]) -> Result<()> {
    let doc = RunsDoc { runs: runs.iter().map(RunDoc::of).collect() };
    let mut bytes = serde_json::to_vec_pretty(&doc).map_err(|e| Error::internal(e.to_string()))?;
    bytes.push(b'\n');
    durable::write_atomic(path, &bytes)
        .map_err(|e| Error::unavailable(format!("cannot write the run records {}: {e}", path.display())))
}

impl Store for FileBackend {
    fn storage_config(&self) -> &StorageConfig {
        &self.cfg
    }

    async fn nth_newest_execution(&self, n: u64) -> Result<Option<Key>> {
        let idx = self.read()?;
        let skip = usize::try_from(n.saturating_sub(1)).unwrap_or(usize::MAX);
        Ok(if n == 0 { None } else { idx.executions.keys().rev().nth(skip).cloned() })
    }

    async fn plan_cleanup(&self, sel: Selection) -> Result<Counted> {
        let idx = self.read()?;
        Ok(match sel.target {
            parallax_storage_abi::retention::CleanupTarget::Executions => {
                plan_executions(&idx, &self.layout.base, &sel)
            }
            parallax_storage_abi::retention::CleanupTarget::AuditLogs => {
                plan_audit(&idx, &self.layout.base, &sel)
            }
        })
    }

    /// From the index, without the per-day bookkeeping of a full plan.
    async fn precheck(&self, sel: Selection) -> Result<Precheck> {
        let idx = self.read()?;
        Ok(match sel.target {
            parallax_storage_abi::retention::CleanupTarget::Executions => {
                let (mut going, mut unfinished_kept) = (0u64, 0u64);
                for ((at, id), x) in idx.executions.range(..sel.before.clone()) {
                    if sel.selects(*at, id, Some(x.e.status)) {
                        going += 1;
                    } else if sel.keeps_unfinished(*at, id, x.e.status) {
                        unfinished_kept += 1;
                    }
                }
                Precheck {
                    selects_any: going > 0,
                    keeps_any: going < idx.executions.len() as u64,
                    unfinished_kept,
                }
            }
            parallax_storage_abi::retention::CleanupTarget::AuditLogs => {
                let going = idx.audit.range(..sel.before.clone()).count() as u64;
                Precheck {
                    selects_any: going > 0,
                    keeps_any: going < idx.audit.len() as u64,
                    unfinished_kept: 0,
                }
            }
        })
    }

    async fn cleanup(&self, sel: Selection, tally: Tally) -> Result<Vec<TableReport>> {
        match sel.target {
            parallax_storage_abi::retention::CleanupTarget::Executions => {
                self.cleanup_executions(sel, tally).await
            }
            parallax_storage_abi::retention::CleanupTarget::AuditLogs => self.cleanup_audit(sel, tally).await,
        }
    }

    async fn lock_runner(&self) -> Result<Option<RunnerLock>> {
        self.read().map(drop)?;
        Ok(self.runner.clone().try_lock_owned().ok().map(|guard| RunnerLock(Box::new(guard))))
    }

    async fn save_run(&self, run: Run) -> Result<()> {
        self.read().map(drop)?;
        let path = self.runs_path();
        tokio::task::block_in_place(|| {
            self.with_runs(|runs| {
                let mut next = runs.clone();
                match next.iter_mut().find(|r| r.id == run.id) {
                    Some(r) => *r = run,
                    None => {
                        if let Some(t) = run.tick {
                            if let Some(other) = next.iter().find(|r| r.tick == Some(t)) {
                                return Err(Error::conflict(format!(
                                    "the tick of {} already has run {}",
                                    time::rfc3339(t),
                                    other.id
                                )));
                            }
                        }
                        next.push(run);
                    }
                }
                next.sort_by(|a, b| b.started_at.cmp(&a.started_at).then_with(|| b.id.cmp(&a.id)));
                next.truncate(KEPT_RUNS);
                write_runs(&path, &next)?;
                *runs = next;
                Ok(())
            })
        })
    }

    async fn runs(&self, limit: usize) -> Result<Vec<Run>> {
        self.read().map(drop)?;
        tokio::task::block_in_place(|| self.with_runs(|runs| Ok(runs.iter().take(limit).cloned().collect())))
    }

    async fn last_tick(&self) -> Result<Option<i64>> {
        self.read().map(drop)?;
        tokio::task::block_in_place(|| self.with_runs(|runs| Ok(runs.iter().filter_map(|r| r.tick).max())))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn steps_shrink_on_a_slow_disk_and_grow_back_when_full_and_fast() {
        let mut s = StepSize(64);
        assert_eq!(s.next(Duration::from_millis(200), true), 32);
        assert_eq!(s.next(Duration::from_millis(200), true), 16);
        assert_eq!(s.next(Duration::from_millis(20), true), 16, "near the target: unchanged");
        assert_eq!(s.next(Duration::from_millis(1), false), 16, "a partial step says nothing about speed");
        assert_eq!(s.next(Duration::from_millis(1), true), 32);
        for _ in 0..20 {
            s.next(Duration::from_secs(1), true);
        }
        assert_eq!(s.0, 4, "never below 4");
        for _ in 0..20 {
            s.next(Duration::ZERO, true);
        }
        assert_eq!(s.0, 2048, "never above 2048");
    }

    #[test]
    fn a_month_ends_at_the_first_instant_of_the_next() {
        let jan15 = 1_705_314_615_123_456; // 2024-01-15T10:30:15.123456Z
        assert_eq!(time::rfc3339(month_end(jan15)), "2024-02-01T00:00:00.000000Z");
        assert_eq!(time::rfc3339(month_end(1_703_980_800_000_000)), "2024-01-01T00:00:00.000000Z"); // Dec 31
        assert_eq!(month_end(month_end(jan15) - 1), month_end(jan15));
    }

    #[test]
    fn run_records_round_trip_and_damage_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(RETENTION).join(RUNS_FILE);
        assert_eq!(read_runs(&path).unwrap(), Vec::<Run>::new(), "no file: no runs");
        let mut a = Run::start(Trigger::Scheduled, Some(1_769_824_800_000_000));
        a.finished_at = Some(a.started_at + 1_500);
        a.status = RunStatus::Failed;
        a.rows.insert("executions".into(), 12);
        a.error = Some("disk full".into());
        let mut b = Run::start(Trigger::Manual, None);
        b.started_at = a.started_at + 10;
        write_runs(&path, &[a.clone(), b.clone()]).unwrap();
        assert_eq!(read_runs(&path).unwrap(), [b, a], "newest first");
        std::fs::write(&path, br#"{"runs": [{"id": "x", "trigger": "hourly"}]}"#).unwrap();
        let e = read_runs(&path).unwrap_err().to_string();
        assert!(e.contains(&path.display().to_string()) && e.contains("remove it"), "{e}");
    }

    /// An archive run's record keeps its state as a JSON object under `archive`; a plain cleanup's record has
    /// no such field, and records written before archiving existed (no field) still read.
    #[test]
    fn run_records_with_and_without_an_archive_state() {
        use crate::archive::{ArchiveState, Phase};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(RETENTION).join(RUNS_FILE);
        let plain = Run { started_at: 10, ..Run::start(Trigger::Manual, None) };
        let mut archived = Run { started_at: 20, ..Run::start(Trigger::Scheduled, Some(5_000_000)) };
        archived.archive = Some(ArchiveState {
            target: parallax_storage_abi::retention::CleanupTarget::AuditLogs,
            destination: "file:///var/backups/parallax/".into(),
            phase: Phase::Stored,
            manifest: Some("audit_logs/manifests/0190b3f2-7c1e-7a00-8000-000000000001.json".into()),
            objects_done: 2,
            keep: false,
            rows: [("audit_logs".to_string(), 40u64)].into(),
        });
        write_runs(&path, &[plain.clone(), archived.clone()]).unwrap();
        assert_eq!(read_runs(&path).unwrap(), [archived.clone(), plain.clone()]);
        let doc: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        let line = |id: &str| doc["runs"].as_array().unwrap().iter().find(|r| r["id"] == id).unwrap().clone();
        assert_eq!(line(&archived.id)["archive"]["phase"], "stored", "{doc}");
        assert_eq!(line(&archived.id)["archive"]["objectsDone"], 2, "{doc}");
        assert!(line(&plain.id).get("archive").is_none(), "a plain cleanup has no archive field: {doc}");

        // A record of an older plugin (no archive field), and one whose state is damaged: both read, without
        // an archive state.
        fs::write(
            &path,
            br#"{"runs": [
                {"id": "0190b3f2-7c1e-7a00-8000-000000000001", "trigger": "manual",
                 "started_at": "2026-11-30T10:00:00.000000Z", "finished_at": "2026-11-30T10:00:01.000000Z",
                 "status": "succeeded", "rows": {"executions": 3}},
                {"id": "0190b3f2-7c1e-7a00-8000-000000000002", "trigger": "manual",
                 "started_at": "2026-11-29T10:00:00.000000Z", "status": "failed", "archive": {"phase": 7}}
            ]}"#,
        )
        .unwrap();
        let runs = read_runs(&path).unwrap();
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[0].rows.get("executions"), Some(&3));
        assert!(runs.iter().all(|r| r.archive.is_none()), "{runs:?}");
    }
}
