//! One archive, verify or restore run, the same on every backend.
//!
//! An archive run is "cleanup that writes first", in phases kept in its run record ([`super::ArchiveState`]):
//!
//! 1. `writing`: select exactly what `cleanup` would (final executions only), scan it in pages into objects
//!    ([`super::writer`]), each read back and checked (size, SHA-256) once stored;
//! 2. `stored`: the manifest is written last (create-only), read back and compared;
//! 3. `deleting`: unless `keep`, each object is read back again (checked against the manifest) and exactly
//!    the ids in it are deleted, in batches; the record counts the objects done;
//! 4. `done`.
//!
//! Killed at any point, every row is in the database or in a verified archive: nothing is deleted before
//! step 3, and step 3 deletes by id what a verified object holds. The next archive run to the same
//! destination (under the runner lock) first finishes what an earlier run left: a run in `writing` has its
//! objects removed (its rows are all still in the database), a run in `stored`/`deleting` has the rest of its
//! manifest's rows deleted. So re-running after a kill neither duplicates objects nor rows.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::atomic::{AtomicBool, Ordering},
    time::Instant,
};

use futures_util::StreamExt;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use parallax_storage_abi::{
    archive::{
        ArchiveParams, ArchiveReport, ManifestCheck, ObjectCheck, RestoreParams, RestoreReport, ResumedRun,
        VerifyParams, VerifyReport,
    },
    retention::{CleanupParams, CleanupReport, CleanupTarget, TableReport},
    ErrorKind,
};

use super::{
    destination::Destination,
    format::{self, ChainLink, LimitKey, Manifest, ManifestChain, Record, Table, TimeRange},
    pause_point,
    read::{self, ObjectReader},
    writer::ObjectWriter,
    ArchiveState, Phase, Store,
};
use crate::{
    audit_chain,
    config::ArchiveConfig,
    error::{Error, Result},
    retention::{
        run::{self as cleanup, Spec},
        Run, Tally, Trigger, PROGRESS_EVERY,
    },
    rules::Selection,
    time,
};

/// Records per scan page.
const PAGE: usize = 500;
/// Ids per delete transaction.
const DELETE_BATCH: usize = 1000;
/// Records per import transaction.
const IMPORT_BATCH: usize = 500;
/// How many recorded runs a new run looks through for unfinished archive runs.
const RESUME_RUNS: usize = 500;

const EVENTS: &str = "execution_events";

/// Logs progress at info at most every [`PROGRESS_EVERY`] (`parallax -v storage archive …` shows it).
struct Progress {
    last: Instant,
}

impl Progress {
    fn new() -> Progress {
        Progress { last: Instant::now() }
    }

    fn tick(&mut self, what: &str, rows: u64, objects: usize, deleted: &Tally) {
        if self.last.elapsed() >= PROGRESS_EVERY {
            self.last = Instant::now();
            tracing::info!(
                target: "parallax_storage::archive",
                rows,
                objects,
                deleted = %deleted.describe(),
                "{what} in progress"
            );
        }
    }
}

/// The steps of the kill tests pause once per process (the first delete batch, the first part).
static PAUSED_MID_DELETE: AtomicBool = AtomicBool::new(false);

fn table_name(t: Table) -> &'static str {
    t.dir()
}

fn rows_map(table: Table, rows: u64, events: u64) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::from([(table_name(table).to_string(), rows)]);
    if table == Table::Executions {
        m.insert(EVENTS.to_string(), events);
    }
    m
}

// ------------------------------------------------------------------ archive

/// The `archive` op.
pub async fn archive<S: Store>(store: &S, params: ArchiveParams) -> Result<ArchiveReport> {
    let started = Instant::now();
    let spec = Spec::from_params(&CleanupParams {
        target: params.target,
        older_than: params.older_than.clone(),
        max_count: params.max_count,
        dry_run: params.dry_run,
        include_unfinished: false,
        confirm_all: params.confirm_all,
    })?;
    let dest = open_destination(store, &params.destination, params.dry_run).await?;
    let now = time::now_micros();
    let mut report = ArchiveReport {
        target: params.target.as_str().to_string(),
        dry_run: params.dry_run,
        destination: params.destination.clone(),
        cutoff: spec.cutoff(now).map(time::rfc3339),
        max_count: spec.max_count,
        ..ArchiveReport::default()
    };
    let Some(dest) = dest.filter(|_| !params.dry_run) else {
        let sel = spec.resolve(store, now).await?;
        report.rows = planned_rows(&cleanup::plan(store, &sel, &spec).await?);
        report.duration_ms = started.elapsed().as_millis() as u64;
        return Ok(report);
    };
    let _lock = store.lock_runner().await?.ok_or_else(cleanup::runner_locked)?;
    cleanup::mark_interrupted(store).await?;
    report.resumed = resume(store, &dest, spec.target).await?;
    let (sel, checkpoint) = spec.resolve_chained(store, now).await?;
    let segment = segment(store, checkpoint).await?;
    // As cleanup: a run that would delete every row of the table needs `confirmAll` (`--keep` deletes none).
    if let Some(sel) = sel.as_ref().filter(|_| !params.keep) {
        let check = store.precheck(sel.clone()).await?;
        if check.selects_any && !check.keeps_any && !params.confirm_all {
            return Err(crate::rules::confirm_removing_everything(spec.target));
        }
    }
    if !params.keep {
        cleanup::record_checkpoint(store, checkpoint).await?;
    }
    let mut run = start_run(&dest, spec.target, Trigger::Manual, params.keep);
    store.save_run(run.clone()).await?;
    let tally = Tally::default();
    let outcome =
        archive_run(store, &dest, &spec, sel, segment, params.keep, &mut run, &tally, &mut report).await;
    cleanup::finish(store, &mut run, &tally, outcome.as_ref().err()).await;
    outcome.map_err(|e| failed(&spec, &dest, &report, &tally, e))?;
    report.duration_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

/// Opens a destination and makes one harmless request, so that bad credentials, a missing bucket or an
/// unreachable endpoint fail before anything happens. A dry run creates nothing: for a local directory that
/// does not exist yet (the run would create it) it answers `None`.
pub(crate) async fn open_destination<S: Store>(
    store: &S,
    text: &str,
    dry_run: bool,
) -> Result<Option<Destination>> {
    let dest = match Destination::open(text, &store.storage_config().archive, !dry_run) {
        Ok(d) => d,
        Err(e) if dry_run && e.kind() == ErrorKind::NotFound && !text.trim().starts_with("s3://") => {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    dest.probe().await?;
    Ok(Some(dest))
}

/// Rows a plan would archive, per table.
fn planned_rows(plan: &crate::retention::Plan) -> BTreeMap<String, u64> {
    plan.tables
        .iter()
        .filter(|t| ["executions", EVENTS, "audit_logs"].contains(&t.table.as_str()))
        .map(|t| (t.table.clone(), t.rows))
        .collect()
}

/// A retention dry run's archive report for one rule: the destination checked, the rows the plan selects.
pub(crate) async fn dry_report<S: Store>(
    store: &S,
    destination: &str,
    spec: &Spec,
    now: i64,
    plan: &crate::retention::Plan,
) -> Result<ArchiveReport> {
    open_destination(store, destination, true).await?;
    Ok(ArchiveReport {
        target: spec.target.as_str().to_string(),
        dry_run: true,
        destination: destination.to_string(),
        cutoff: spec.cutoff(now).map(time::rfc3339),
        max_count: spec.max_count,
        rows: planned_rows(plan),
        ..ArchiveReport::default()
    })
}

fn start_run(dest: &Destination, target: CleanupTarget, trigger: Trigger, keep: bool) -> Run {
    let mut run = Run::start(trigger, None);
    run.archive = Some(ArchiveState {
        target,
        destination: dest.text().to_string(),
        phase: Phase::Writing,
        manifest: None,
        objects_done: 0,
        rows: BTreeMap::new(),
        keep,
    });
    run
}

/// A failed archive's error: the cause (which names the destination), what was stored and what deleted.
fn failed(spec: &Spec, dest: &Destination, report: &ArchiveReport, tally: &Tally, e: Error) -> Error {
    let stored = match (&report.manifest, report.objects.len()) {
        (Some(m), _) => format!("its manifest {m} is stored"),
        (None, 0) => "no object was stored".to_string(),
        (None, n) => {
            format!("{n} objects were stored without a manifest (the next archive run removes them)")
        }
    };
    Error::new(
        e.kind(),
        format!(
            "archive of {} to {} failed ({stored}; deleted {}): {}",
            spec.target.as_str(),
            dest.text(),
            tally.describe(),
            e.0.message
        ),
    )
}

fn state(run: &mut Run) -> &mut ArchiveState {
    run.archive.as_mut().expect("an archive run has an archive state")
}

/// The part of the audit chain an archive run takes: the entries after `after` (the checkpoint before the
/// run) up to `upto` (the checkpoint it records), as positions and hashes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Segment {
    after: (i64, audit_chain::Hash),
    upto: (i64, audit_chain::Hash),
}

impl Segment {
    fn manifest(&self) -> ManifestChain {
        ManifestChain {
            after_seq: self.after.0,
            prev_hash: audit_chain::hex(&self.after.1),
            last_seq: self.upto.0,
            last_hash: audit_chain::hex(&self.upto.1),
        }
    }
}

/// The segment of a run that moves the checkpoint to `checkpoint` (read before it is recorded).
pub(crate) async fn segment<S: Store>(
    store: &S,
    checkpoint: Option<audit_chain::Checkpoint>,
) -> Result<Option<Segment>> {
    let Some(cp) = checkpoint else { return Ok(None) };
    let Some(state) = store.chain_state().await? else { return Ok(None) };
    Ok(Some(Segment { after: state.start(), upto: (cp.seq, cp.hash) }))
}

/// Phases 1-4 of one run whose record is saved (phase `writing`).
#[allow(clippy::too_many_arguments)]
async fn archive_run<S: Store>(
    store: &S,
    dest: &Destination,
    spec: &Spec,
    sel: Option<Selection>,
    segment: Option<Segment>,
    keep: bool,
    run: &mut Run,
    tally: &Tally,
    report: &mut ArchiveReport,
) -> Result<()> {
    let table = Table::of(spec.target);
    report.run_id = Some(run.id.clone());
    pause_point("before-upload").await;
    let mut writer = ObjectWriter::new(dest, table, &run.id);
    let mut progress = Progress::new();
    let mut rows = 0u64;
    if let Some(sel) = &sel {
        let written = match segment.filter(|_| table == Table::AuditLogs) {
            Some(seg) => write_segment(store, seg, &mut writer, &mut rows, &mut progress, tally).await,
            None => write_all(store, sel, table, &mut writer, &mut rows, &mut progress, tally).await,
        };
        if let Err(e) = written {
            writer.abort().await;
            report.objects = writer.done.clone();
            return Err(e);
        }
    }
    let objects = std::mem::take(&mut writer.done);
    let (rows, events) = objects.iter().fold((0, 0), |(r, e), o| (r + o.rows, e + o.events));
    report.objects = objects.clone();
    report.rows = rows_map(table, rows, events);
    report.bytes = objects.iter().map(|o| o.size).sum();
    store.metrics().archive_written(report.bytes);
    if objects.is_empty() {
        state(run).phase = Phase::Done;
        store.save_run(run.clone()).await?;
        return Ok(());
    }
    pause_point("after-upload").await;
    let oldest = objects.iter().filter_map(|o| o.oldest.clone()).min();
    let newest = objects.iter().filter_map(|o| o.newest.clone()).max();
    let manifest = Manifest {
        format_version: format::FORMAT_VERSION,
        record_schema_version: format::RECORD_SCHEMA_VERSION,
        plugin_version: crate::PLUGIN_VERSION.to_string(),
        table: table.dir().to_string(),
        run_id: run.id.clone(),
        created_at: time::rfc3339(time::now_micros()),
        cutoff: report.cutoff.clone(),
        max_count: report.max_count,
        limit: sel.as_ref().map(|s| LimitKey { at: time::rfc3339(s.before.0), id: s.before.1.clone() }),
        time_range: oldest.zip(newest).map(|(oldest, newest)| TimeRange { oldest, newest }),
        rows,
        events,
        min_id: objects.iter().filter_map(|o| o.min_id.clone()).min(),
        max_id: objects.iter().filter_map(|o| o.max_id.clone()).max(),
        objects,
        chain: segment.filter(|_| table == Table::AuditLogs).map(|s| s.manifest()),
    };
    let key = format::manifest_key(table, &run.id);
    write_manifest(dest, &key, &manifest).await?;
    report.manifest = Some(key.clone());
    let st = state(run);
    st.phase = Phase::Stored;
    st.manifest = Some(key);
    st.rows = report.rows.clone();
    store.save_run(run.clone()).await?;
    pause_point("after-manifest").await;
    if keep {
        state(run).phase = Phase::Done;
        store.save_run(run.clone()).await?;
        return Ok(());
    }
    let tables = delete_archived(store, dest, &manifest, run, tally).await?;
    report.deleted = true;
    report.cleanup = Some(CleanupReport {
        target: spec.target.as_str().to_string(),
        cutoff: report.cutoff.clone(),
        max_count: report.max_count,
        tables,
        run_id: Some(run.id.clone()),
        ..CleanupReport::default()
    });
    state(run).phase = Phase::Done;
    store.save_run(run.clone()).await?;
    Ok(())
}

/// Scans what `sel` selects, page by page, into objects.
async fn write_all<S: Store>(
    store: &S,
    sel: &Selection,
    table: Table,
    writer: &mut ObjectWriter<'_>,
    rows: &mut u64,
    progress: &mut Progress,
    tally: &Tally,
) -> Result<()> {
    let mut after = None;
    loop {
        let page: Vec<Record> = match table {
            Table::Executions => store
                .scan_executions(sel.clone(), after.clone(), PAGE)
                .await?
                .into_iter()
                .map(Record::Execution)
                .collect(),
            Table::AuditLogs => store
                .scan_audit(sel.clone(), after.clone(), PAGE)
                .await?
                .into_iter()
                .map(|a| Record::Audit(a, None))
                .collect(),
            Table::Patterns => {
                return Err(Error::internal(
                    "an archive run never selects patterns (only export writes them)",
                ))
            }
        };
        let Some(last) = page.last() else { break };
        after = Some((last.at(), last.id().to_string()));
        for rec in &page {
            writer.push(rec).await?;
        }
        *rows += page.len() as u64;
        progress.tick("archive", *rows, writer.done.len(), tally);
        if page.len() < PAGE {
            break;
        }
    }
    writer.close().await
}

/// Writes an audit segment in chain order, each entry with its chain columns: every chained entry up to the
/// segment's end (those at or below the previous checkpoint are what an interrupted run left). Entries without
/// a position (written around the plugin) are not taken: `audit verify` keeps naming them.
async fn write_segment<S: Store>(
    store: &S,
    seg: Segment,
    writer: &mut ObjectWriter<'_>,
    rows: &mut u64,
    progress: &mut Progress,
    tally: &Tally,
) -> Result<()> {
    let mut after = 0;
    'pages: loop {
        let page = store.chain_scan(after, PAGE).await?;
        let full = page.len() == PAGE;
        for c in page {
            if c.seq > seg.upto.0 {
                break 'pages;
            }
            after = c.seq;
            let link =
                ChainLink { seq: c.seq, prev: audit_chain::hex(&c.prev), hash: audit_chain::hex(&c.hash) };
            writer.push(&Record::Audit(c.entry, Some(link))).await?;
            *rows += 1;
        }
        progress.tick("archive", *rows, writer.done.len(), tally);
        if !full {
            break;
        }
    }
    writer.close().await
}

/// Stores the manifest (never over an existing one), reads it back and compares.
async fn write_manifest(dest: &Destination, key: &str, manifest: &Manifest) -> Result<()> {
    write_created(dest, key, "manifest", &manifest.to_json()).await
}

/// Stores `text` at `key` (never over an existing object), reads it back and compares; `what` names it in
/// messages (`manifest`, `export.json`).
pub(crate) async fn write_created(dest: &Destination, key: &str, what: &str, text: &str) -> Result<()> {
    let name = if key.rsplit('/').next() == Some(what) { key.to_string() } else { format!("{what} {key}") };
    let path = dest.path(key);
    let opts = PutOptions { mode: PutMode::Create, ..PutOptions::default() };
    let payload = PutPayload::from(text.to_string().into_bytes());
    match dest.store().put_opts(&path, payload.clone(), opts).await {
        Ok(_) => {}
        // A store without conditional puts: the key holds a fresh run id, so a plain put overwrites nothing.
        Err(object_store::Error::NotImplemented { .. }) => {
            dest.store()
                .put(&path, payload)
                .await
                .map_err(|e| dest.error(&format!("cannot store {name}"), e))?;
        }
        Err(e) => return Err(dest.error(&format!("cannot store {name}"), e)),
    }
    dest.owner_only(key);
    let back = read_manifest_bytes(dest, key).await?;
    if back != text.as_bytes() {
        return Err(Error::unavailable(format!(
            "{name} at {} read back different from what was written; nothing was deleted",
            dest.text()
        )));
    }
    Ok(())
}

pub(crate) async fn read_manifest_bytes(dest: &Destination, key: &str) -> Result<Vec<u8>> {
    let got = dest
        .store()
        .get(&dest.path(key))
        .await
        .map_err(|e| dest.error(&format!("cannot read manifest {key}"), e))?;
    let bytes = got.bytes().await.map_err(|e| dest.error(&format!("cannot read manifest {key}"), e))?;
    Ok(bytes.to_vec())
}

pub(crate) async fn load_manifest(dest: &Destination, key: &str) -> Result<Manifest> {
    Manifest::parse(key, &read_manifest_bytes(dest, key).await?)
}

/// Deletes the rows of the manifest's objects from `objects_done` of the run's state on: each object is read
/// back and checked against the manifest first, then its ids are deleted in batches; the record counts the
/// objects done. Returns one report per table.
async fn delete_archived<S: Store>(
    store: &S,
    dest: &Destination,
    manifest: &Manifest,
    run: &mut Run,
    tally: &Tally,
) -> Result<Vec<TableReport>> {
    let table = manifest.table().expect("a parsed manifest names a known table");
    let main = table_name(table);
    let base = run.rows.clone();
    let from = state(run).objects_done as usize;
    let mut batches = 0u64;
    let mut progress = Progress::new();
    // The record says `deleting` before the first row goes: `stored` promises that nothing was deleted yet.
    if state(run).phase != Phase::Deleting {
        state(run).phase = Phase::Deleting;
        store.save_run(run.clone()).await?;
    }
    for (i, obj) in manifest.objects.iter().enumerate().skip(from) {
        let mut reader = ObjectReader::open(dest, &obj.key, Some(table)).await?;
        let mut ids: Vec<uuid::Uuid> = Vec::with_capacity(obj.rows as usize);
        loop {
            let batch = reader.next_batch(PAGE).await?;
            if batch.is_empty() {
                break;
            }
            for r in &batch {
                ids.push(uuid::Uuid::parse_str(r.id()).map_err(|_| {
                    Error::invalid(format!(
                        "object {} at {} holds id {:?}, which is not a UUID; its rows were not deleted",
                        obj.key,
                        dest.text(),
                        r.id()
                    ))
                })?);
            }
        }
        let got = reader.finish().await?;
        if let Some(why) = read::mismatch(obj, &got, true) {
            return Err(Error::invalid(format!(
                "object {} at {} no longer matches its manifest ({why}); its rows were not deleted",
                obj.key,
                dest.text()
            )));
        }
        for chunk in ids.chunks(DELETE_BATCH) {
            let ids: Vec<String> = chunk.iter().map(|u| u.to_string()).collect();
            let d = match table {
                Table::Executions => store.delete_executions(ids).await?,
                Table::AuditLogs => store.delete_audit(ids).await?,
                Table::Patterns => {
                    return Err(Error::invalid(format!(
                        "manifest of run {} at {} lists patterns; an archive run never deletes patterns",
                        manifest.run_id,
                        dest.text()
                    )))
                }
            };
            tally.add(main, d.rows);
            if table == Table::Executions {
                tally.add(EVENTS, d.events);
            }
            batches += 1;
            progress.tick("archive delete", manifest.rows, manifest.objects.len(), tally);
            if !PAUSED_MID_DELETE.swap(true, Ordering::SeqCst) {
                pause_point("mid-delete").await;
            }
        }
        let st = state(run);
        st.phase = Phase::Deleting;
        st.objects_done = i as u64 + 1;
        run.rows = merged(&base, tally);
        store.save_run(run.clone()).await?;
    }
    let snap = tally.snapshot();
    let mut tables = vec![TableReport {
        table: main.to_string(),
        rows: snap.get(main).copied().unwrap_or(0),
        rows_in_batches: snap.get(main).copied().unwrap_or(0),
        batches,
        oldest: manifest.time_range.as_ref().map(|t| t.oldest.clone()),
        newest: manifest.time_range.as_ref().map(|t| t.newest.clone()),
        ..TableReport::default()
    }];
    if table == Table::Executions {
        let n = snap.get(EVENTS).copied().unwrap_or(0);
        tables.push(TableReport {
            table: EVENTS.into(),
            rows: n,
            rows_in_batches: n,
            batches,
            ..Default::default()
        });
    }
    Ok(tables)
}

fn merged(base: &BTreeMap<String, u64>, tally: &Tally) -> BTreeMap<String, u64> {
    let mut m = base.clone();
    for (t, n) in tally.snapshot() {
        *m.entry(t).or_default() += n;
    }
    m
}

/// Finishes or clears every unfinished archive run of `target` to `dest` (the runner lock is held).
pub(crate) async fn resume<S: Store>(
    store: &S,
    dest: &Destination,
    target: CleanupTarget,
) -> Result<Vec<ResumedRun>> {
    let table = Table::of(target);
    let mut out = Vec::new();
    let mut runs = store.runs(RESUME_RUNS).await?;
    runs.reverse(); // oldest first
    for mut r in runs {
        let Some(a) = r.archive.clone() else { continue };
        if a.target != target || !same_destination(&a.destination, dest.text()) || a.phase == Phase::Done {
            continue;
        }
        match a.phase {
            Phase::Writing => {
                let removed = clear(dest, table, &r.id).await?;
                state(&mut r).phase = Phase::Done;
                store.save_run(r.clone()).await?;
                tracing::info!(run = %r.id, objects = removed, "cleared an archive run that died before its manifest");
                out.push(ResumedRun {
                    run_id: r.id.clone(),
                    action: "cleared".into(),
                    objects_removed: removed,
                    ..ResumedRun::default()
                });
            }
            _ => {
                let tally = Tally::default();
                let mut action = "finished";
                if !a.keep {
                    let key = a.manifest.clone().ok_or_else(|| {
                        Error::internal(format!(
                            "archive run {} is {} but has no manifest",
                            r.id,
                            a.phase.as_str()
                        ))
                    })?;
                    let manifest = match load_manifest(dest, &key).await {
                        Ok(m) => Some(m),
                        // Removed from the destination since: nothing more can be verified, so nothing more
                        // is deleted; its rows still in the database stay there (this run archives them again).
                        Err(e) if e.kind() == ErrorKind::NotFound => {
                            tracing::warn!(run = %r.id, manifest = %key, "the manifest of an unfinished archive run is gone from the destination; its remaining rows stay in the database");
                            None
                        }
                        Err(e) => return Err(e),
                    };
                    if let Some(manifest) = manifest {
                        if manifest.run_id != r.id || manifest.table() != Some(table) {
                            return Err(Error::invalid(format!(
                            "manifest {key} at {} belongs to run {} ({}), not to run {}; check the destination",
                            dest.text(),
                            manifest.run_id,
                            manifest.table,
                            r.id
                        )));
                        }
                        delete_archived(store, dest, &manifest, &mut r, &tally).await?;
                    } else {
                        action = "abandoned";
                    }
                }
                state(&mut r).phase = Phase::Done;
                store.save_run(r.clone()).await?;
                tracing::info!(run = %r.id, deleted = %tally.describe(), "finished an interrupted archive run");
                out.push(ResumedRun {
                    run_id: r.id.clone(),
                    action: action.into(),
                    rows: tally.snapshot(),
                    ..ResumedRun::default()
                });
            }
        }
    }
    Ok(out)
}

/// Two spellings of one destination (`s3://b/p/` and `s3://b/p`, surrounding blanks).
fn same_destination(a: &str, b: &str) -> bool {
    a.trim().trim_end_matches('/') == b.trim().trim_end_matches('/')
}

/// Removes what a run that died before its manifest stored: its manifest if it got that far (it died
/// before recording it), then its objects. Listing is paginated by the store.
pub(crate) async fn clear(dest: &Destination, table: Table, run_id: &str) -> Result<u64> {
    let manifest = format::manifest_key(table, run_id);
    match dest.store().delete(&dest.path(&manifest)).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
        Err(e) => return Err(dest.error(&format!("cannot remove manifest {manifest}"), e)),
    }
    let keys = list(dest, table.dir()).await?;
    let mut removed = 0;
    for key in keys.into_iter().filter(|k| format::is_object_of(k, table, run_id)) {
        match dest.store().delete(&dest.path(&key)).await {
            Ok(()) => removed += 1,
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(dest.error(&format!("cannot remove object {key}"), e)),
        }
    }
    Ok(removed)
}

/// Every key under `prefix` (relative to the destination's root); a prefix that does not exist is empty.
pub(crate) async fn list(dest: &Destination, prefix: &str) -> Result<Vec<String>> {
    // Under the destination's root (an S3 prefix), never the whole bucket.
    let path = dest.path(prefix);
    let mut stream = dest.store().list(if path.as_ref().is_empty() { None } else { Some(&path) });
    let root_listing = prefix.is_empty();
    let mut keys = Vec::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(meta) => {
                if let Some(k) = dest.relative(&meta.location) {
                    keys.push(k);
                }
            }
            Err(object_store::Error::NotFound { .. }) => break,
            Err(e) => {
                return Err(dest.error(
                    &format!("cannot list {}", if root_listing { "the destination" } else { prefix }),
                    e,
                ))
            }
        }
    }
    keys.sort();
    Ok(keys)
}

// ------------------------------------------------------------------ verify

/// A source: a prefix with manifests under it, or one manifest.
pub(crate) struct Source {
    pub(crate) dest: Destination,
    /// `(root, manifest key)`, both relative to the opened destination; object keys of a manifest are
    /// relative to its root.
    pub(crate) manifests: Vec<(String, String)>,
    /// Every `*.ndjson.gz` key under the source (prefix form only), for orphans.
    pub(crate) objects: Vec<String>,
}

pub(crate) fn join(root: &str, key: &str) -> String {
    if root.is_empty() {
        key.to_string()
    } else {
        format!("{root}/{key}")
    }
}

pub(crate) async fn open_source(config: &ArchiveConfig, text: &str) -> Result<Source> {
    let trimmed = text.trim();
    if trimmed.ends_with(".json") {
        if let Some(at) = trimmed.rfind("/manifests/") {
            let table_dir = &trimmed[..at];
            let cut = table_dir.rfind('/').ok_or_else(|| {
                Error::invalid(format!(
                    "source {text:?}: a manifest is <root>/<table>/manifests/<run-id>.json"
                ))
            })?;
            let table = &table_dir[cut + 1..];
            if Table::parse(table).is_none() {
                return Err(Error::invalid(format!(
                    "source {text:?}: a manifest is <root>/executions/manifests/<run-id>.json, \
                     <root>/audit_logs/manifests/<run-id>.json or <root>/patterns/manifests/<run-id>.json"
                )));
            }
            let root = &trimmed[..=cut];
            let dest = Destination::open(root, config, false)?;
            let key = format!("{table}{}", &trimmed[at..]);
            return Ok(Source { dest, manifests: vec![(String::new(), key)], objects: Vec::new() });
        }
    }
    let dest = Destination::open(text, config, false)?;
    let keys = list(&dest, "").await?;
    let mut manifests = Vec::new();
    let mut objects = Vec::new();
    for k in keys {
        let parts: Vec<&str> = k.split('/').collect();
        let n = parts.len();
        if n >= 3
            && parts[n - 2] == "manifests"
            && parts[n - 1].ends_with(".json")
            && Table::parse(parts[n - 3]).is_some()
        {
            manifests.push((parts[..n - 3].join("/"), parts[n - 3..].join("/")));
        } else if k.ends_with(".ndjson.gz") {
            objects.push(k);
        }
    }
    Ok(Source { dest, manifests, objects })
}

/// Checks one manifest and every object it names (exists, size, SHA-256, gunzips, every line a record,
/// counts); the parsed manifest when it could be read.
pub(crate) async fn check_manifest(
    dest: &Destination,
    root: &str,
    key: &str,
) -> (ManifestCheck, Option<Manifest>) {
    let full = join(root, key);
    let mut check = ManifestCheck { key: full.clone(), ..ManifestCheck::default() };
    let manifest = match load_manifest(dest, &full).await {
        Ok(m) => m,
        Err(e) => {
            check.problem = Some(e.0.message.to_string());
            return (check, None);
        }
    };
    check.run_id = manifest.run_id.clone();
    check.table = manifest.table.clone();
    check.rows = manifest.rows;
    let table = manifest.table().expect("a parsed manifest names a known table");
    let mut ok = true;
    let mut segment =
        manifest.chain.as_ref().map(|c| audit_chain::SegmentCheck::new(c.after_seq, &c.prev_hash));
    for obj in &manifest.objects {
        let okey = join(root, &obj.key);
        let problem = match check_object(dest, &okey, table, segment.as_mut()).await {
            Ok(got) => {
                check.rows_found += got.rows;
                read::mismatch(obj, &got, true)
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Some(format!("missing: {}", e.0.message)),
            // A damaged object usually fails to decode before its end: say whether its bytes differ too.
            Err(e) => {
                match read::checksum(dest, &okey).await.ok().and_then(|got| read::mismatch(obj, &got, false))
                {
                    Some(differs) => Some(format!("{differs}; {}", e.0.message)),
                    None => Some(e.0.message.to_string()),
                }
            }
        };
        ok &= problem.is_none();
        check.objects.push(ObjectCheck { key: obj.key.clone(), ok: problem.is_none(), problem });
    }
    if let (Some(seg), Some(c)) = (segment, &manifest.chain) {
        if let Err(why) = seg.finish(c.last_seq, &c.last_hash) {
            ok = false;
            check.problem.get_or_insert(why);
        }
    }
    check.ok = ok;
    (check, Some(manifest))
}

async fn check_object(
    dest: &Destination,
    key: &str,
    table: Table,
    mut segment: Option<&mut audit_chain::SegmentCheck>,
) -> Result<read::Read> {
    let mut r = ObjectReader::open(dest, key, Some(table)).await?;
    loop {
        let batch = r.next_batch(PAGE * 4).await?;
        if batch.is_empty() {
            break;
        }
        if let Some(seg) = segment.as_deref_mut() {
            for rec in &batch {
                if let Record::Audit(a, link) = rec {
                    seg.push(a, link.as_ref().map(|l| (l.seq, l.prev.as_str(), l.hash.as_str())));
                }
            }
        }
    }
    r.finish().await
}

/// The `archive_verify` op (changes nothing; needs no backend).
pub async fn verify(config: &ArchiveConfig, params: VerifyParams) -> Result<VerifyReport> {
    let started = Instant::now();
    let src = open_source(config, &params.source).await?;
    if src.manifests.is_empty() {
        return Err(no_manifest(&params.source));
    }
    let mut report = VerifyReport { source: params.source.clone(), ..VerifyReport::default() };
    let mut named = BTreeSet::new();
    for (root, key) in &src.manifests {
        let (check, manifest) = check_manifest(&src.dest, root, key).await;
        if let Some(m) = manifest {
            named.extend(m.objects.iter().map(|o| join(root, &o.key)));
        }
        report.manifests.push(check);
    }
    report.orphans = src.objects.into_iter().filter(|k| !named.contains(k)).collect();
    report.ok = report.manifests.iter().all(|m| m.ok && m.problem.is_none());
    report.duration_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

pub(crate) fn no_manifest(source: &str) -> Error {
    Error::not_found(format!(
        "no archive manifest under {source} (expected <table>/manifests/<run-id>.json below it, e.g. \
         executions/manifests/…; give the archive's root or one manifest)"
    ))
}

// ------------------------------------------------------------------ restore

/// The `restore` op: verify everything first, then import oldest run first (an export's three manifests:
/// patterns, executions, audit entries).
pub async fn restore<S: crate::transfer::Store>(store: &S, params: RestoreParams) -> Result<RestoreReport> {
    let started = Instant::now();
    let src = open_source(&store.storage_config().archive, &params.source).await?;
    if src.manifests.is_empty() {
        return Err(no_manifest(&params.source));
    }
    let mut problems = Vec::new();
    let mut plan: Vec<(String, Manifest)> = Vec::new();
    for (root, key) in &src.manifests {
        let (check, manifest) = check_manifest(&src.dest, root, key).await;
        if let Some(p) = &check.problem {
            problems.push(format!("manifest {}: {p}", check.key));
        }
        for o in check.objects.iter().filter(|o| !o.ok) {
            problems.push(format!(
                "object {}: {}",
                join(root, &o.key),
                o.problem.clone().unwrap_or_default()
            ));
        }
        if let Some(m) = manifest {
            plan.push((root.clone(), m));
        }
    }
    if !problems.is_empty() {
        return Err(Error::invalid(format!(
            "restore from {} refused, nothing was written: {}",
            params.source,
            problems.join("; ")
        )));
    }
    plan.sort_by(|a, b| {
        (&a.1.created_at, &a.1.run_id, a.1.table()).cmp(&(&b.1.created_at, &b.1.run_id, b.1.table()))
    });
    let mut report =
        RestoreReport { source: params.source.clone(), dry_run: params.dry_run, ..Default::default() };
    let mut progress = Progress::new();
    let none = Tally::default();
    let mut done_rows = 0u64;
    for (root, m) in &plan {
        let table = m.table().expect("a parsed manifest names a known table");
        report.manifests.push(join(root, &format::manifest_key(table, &m.run_id)));
        if params.dry_run {
            for (t, n) in rows_map(table, m.rows, m.events) {
                *report.inserted.entry(t).or_default() += n;
            }
            continue;
        }
        for obj in &m.objects {
            let key = join(root, &obj.key);
            let mut reader = ObjectReader::open(&src.dest, &key, Some(table)).await?;
            loop {
                let batch = reader.next_batch(IMPORT_BATCH).await?;
                if batch.is_empty() {
                    break;
                }
                let n = batch.len() as u64;
                let imported = import(store, batch).await?;
                *report.inserted.entry(table_name(table).into()).or_default() += imported.inserted;
                *report.skipped.entry(table_name(table).into()).or_default() += imported.skipped;
                if table == Table::Executions {
                    *report.inserted.entry(EVENTS.into()).or_default() += imported.events_inserted;
                }
                done_rows += n;
                progress.tick("restore", done_rows, 0, &none);
            }
            let got = reader.finish().await?;
            if let Some(why) = read::mismatch(obj, &got, true) {
                return Err(Error::invalid(format!(
                    "object {key} changed while it was restored ({why}); rows read before were imported, \
                     restoring again skips them"
                )));
            }
        }
    }
    report.duration_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

async fn import<S: crate::transfer::Store>(store: &S, batch: Vec<Record>) -> Result<super::Imported> {
    let mut executions = Vec::new();
    let mut audit = Vec::new();
    let mut patterns = Vec::new();
    for r in batch {
        match r {
            Record::Execution(e) => executions.push(e),
            Record::Audit(a, _) => audit.push(a),
            Record::Pattern(p) => patterns.push(p),
        }
    }
    let mut total = super::Imported::default();
    if !patterns.is_empty() {
        let i = store.import_patterns(patterns).await?;
        total.inserted += i.inserted;
        total.skipped += i.skipped;
    }
    if !executions.is_empty() {
        let i = store.import_executions(executions).await?;
        total.inserted += i.inserted;
        total.skipped += i.skipped;
        total.events_inserted += i.events_inserted;
    }
    if !audit.is_empty() {
        let i = store.import_audit(audit).await?;
        total.inserted += i.inserted;
        total.skipped += i.skipped;
    }
    Ok(total)
}

// ------------------------------------------------------------------ scheduled retention

/// One rule of a retention run with `storage.retention.archiveDestination`: archive what the rule selects to
/// the destination, then delete it (an archive run of its own, recorded beside the policy's run). Returns the
/// cleanup report (for `reports`) and the archive report (for `archives`); deleted rows are added to `tally`.
pub(crate) async fn archive_rule<S: Store>(
    store: &S,
    destination: &str,
    spec: &Spec,
    now: i64,
    trigger: Trigger,
    tally: &Tally,
) -> Result<(CleanupReport, ArchiveReport)> {
    let started = Instant::now();
    let dest = Destination::open(destination, &store.storage_config().archive, true)?;
    dest.probe().await?;
    let mut report = ArchiveReport {
        target: spec.target.as_str().to_string(),
        destination: dest.text().to_string(),
        cutoff: spec.cutoff(now).map(time::rfc3339),
        max_count: spec.max_count,
        ..ArchiveReport::default()
    };
    report.resumed = resume(store, &dest, spec.target).await?;
    let (sel, checkpoint) = spec.resolve_chained(store, now).await?;
    let segment = segment(store, checkpoint).await?;
    cleanup::record_checkpoint(store, checkpoint).await?;
    let mut run = start_run(&dest, spec.target, trigger, false);
    store.save_run(run.clone()).await?;
    let own = Tally::default();
    let outcome = archive_run(store, &dest, spec, sel, segment, false, &mut run, &own, &mut report).await;
    // The retention run this rule belongs to counts the rows (they are added to its tally) and reports them.
    cleanup::finish_unreported(store, &mut run, &own, outcome.as_ref().err()).await;
    for (t, n) in own.snapshot() {
        tally.add(&t, n);
    }
    outcome.map_err(|e| failed(spec, &dest, &report, &own, e))?;
    report.duration_ms = started.elapsed().as_millis() as u64;
    let mut cleanup_report = report.cleanup.clone().unwrap_or_else(|| {
        let mut r = spec.report(now, false);
        r.tables = vec![TableReport { table: cleanup::main_table(spec.target).into(), ..Default::default() }];
        r
    });
    cleanup_report.duration_ms = report.duration_ms;
    Ok((cleanup_report, report))
}

#[cfg(test)]
mod tests {
    use std::{io::Read as _, path::Path, sync::atomic::Ordering};

    use abi_stable::std_types::ROption;
    use parallax_storage_abi::{retention::RetentionRunParams, ExecutionStatus};

    use super::*;
    use crate::{
        archive::ExecutionRecord,
        config::{RetentionConfig, RetentionRule, StorageConfig},
        retention::{run::tests::Fake, RunStatus, Store as _},
    };

    const DAY: i64 = 86_400_000_000;
    /// 2024-01-01T00:00:00Z.
    const JAN: i64 = 1_704_067_200_000_000;
    const FEB: i64 = JAN + 31 * DAY;
    const MAR: i64 = FEB + 29 * DAY;

    fn id(n: u32) -> String {
        format!("0190b3f2-7c1e-7a00-8000-{n:012x}")
    }

    /// Restore needs the transfer primitives (patterns); the fake has none (its defaults answer `Unsupported`).
    impl crate::transfer::Store for Fake {}

    fn fake(cfg: ArchiveConfig) -> Fake {
        Fake { config: StorageConfig { archive: cfg, ..StorageConfig::default() }, ..Fake::default() }
    }

    fn add(store: &Fake, at: i64, n: u32, status: ExecutionStatus) -> String {
        store.executions.lock().unwrap().push((at, id(n), status));
        id(n)
    }

    fn params(dir: &Path, older: &str) -> ArchiveParams {
        ArchiveParams {
            target: CleanupTarget::Executions,
            older_than: Some(older.into()),
            max_count: None,
            destination: dir.display().to_string(),
            dry_run: false,
            keep: false,
            confirm_all: false,
        }
    }

    fn files(dir: &Path) -> Vec<String> {
        fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(base, &p, out);
                } else {
                    out.push(p.strip_prefix(base).unwrap().display().to_string());
                }
            }
        }
        let mut v = Vec::new();
        walk(dir, dir, &mut v);
        v.sort();
        v
    }

    fn lines(path: &Path) -> Vec<serde_json::Value> {
        let mut text = String::new();
        flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap()).read_to_string(&mut text).unwrap();
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    fn sha(path: &Path) -> String {
        format::hex(ring::digest::digest(&ring::digest::SHA256, &std::fs::read(path).unwrap()).as_ref())
    }

    fn last_archive_run(store: &Fake) -> Run {
        store.runs.lock().unwrap().iter().rfind(|r| r.archive.is_some()).unwrap().clone()
    }

    #[tokio::test]
    async fn objects_split_by_month_then_manifest_then_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = fake(ArchiveConfig::default());
        for (n, at) in
            [(1, JAN + DAY), (2, JAN + 2 * DAY), (3, JAN + 20 * DAY), (4, FEB), (5, FEB + DAY), (6, MAR)]
        {
            add(&store, at, n, ExecutionStatus::Completed);
        }
        let running = add(&store, JAN + 3 * DAY, 7, ExecutionStatus::Running);
        let young = add(&store, time::now_micros() - DAY, 8, ExecutionStatus::Completed);
        let r = archive(&store, params(dir.path(), "30d")).await.unwrap();
        let run_id = r.run_id.clone().unwrap();
        let keys: Vec<&str> = r.objects.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                format!("executions/2024/01/{run_id}-0001.ndjson.gz"),
                format!("executions/2024/02/{run_id}-0002.ndjson.gz"),
                format!("executions/2024/03/{run_id}-0003.ndjson.gz"),
            ]
        );
        assert_eq!(r.objects.iter().map(|o| o.rows).collect::<Vec<_>>(), [3, 2, 1]);
        assert_eq!(r.rows, BTreeMap::from([("executions".into(), 6), (EVENTS.into(), 6)]));
        assert!(r.deleted && r.resumed.is_empty());
        let cleanup = r.cleanup.clone().unwrap();
        assert_eq!((cleanup.tables[0].rows, cleanup.tables[1].rows), (6, 6));
        assert_eq!(store.execution_ids(), [running, young], "exactly the archived rows went");

        // The objects are ordinary gzip files of JSON lines, as the manifest describes them.
        for o in &r.objects {
            let path = dir.path().join(&o.key);
            assert_eq!((std::fs::metadata(&path).unwrap().len(), sha(&path)), (o.size, o.sha256.clone()));
            let l = lines(&path);
            assert_eq!(l.len() as u64, o.rows);
            assert!(l
                .iter()
                .all(|v| v["recordSchema"] == 1 && v["status"] == "completed" && v["events"][0]["seq"] == 1));
        }
        let mkey = r.manifest.clone().unwrap();
        assert_eq!(mkey, format!("executions/manifests/{run_id}.json"));
        let m = Manifest::parse(&mkey, &std::fs::read(dir.path().join(&mkey)).unwrap()).unwrap();
        assert_eq!((m.format_version, m.record_schema_version, m.table.as_str()), (1, 1, "executions"));
        assert_eq!((m.rows, m.events, m.objects.clone()), (6, 6, r.objects.clone()));
        assert_eq!(
            m.time_range.unwrap(),
            TimeRange { oldest: time::rfc3339(JAN + DAY), newest: time::rfc3339(MAR) }
        );
        assert_eq!((m.min_id, m.max_id), (Some(id(1)), Some(id(6))));
        assert_eq!(m.cutoff, r.cutoff);
        assert_eq!(m.plugin_version, crate::PLUGIN_VERSION);

        let run = last_archive_run(&store);
        let st = run.archive.clone().unwrap();
        assert_eq!(
            (run.status, st.phase, st.objects_done, st.manifest),
            (RunStatus::Succeeded, Phase::Done, 3, Some(mkey))
        );
        assert_eq!(run.rows, BTreeMap::from([("executions".into(), 6), (EVENTS.into(), 6)]));
        assert!(!store.locked.load(Ordering::SeqCst));

        // Nothing left to archive: no object, no manifest.
        let before = files(dir.path());
        let again = archive(&store, params(dir.path(), "30d")).await.unwrap();
        assert!(again.objects.is_empty() && again.manifest.is_none() && again.resumed.is_empty());
        assert_eq!(files(dir.path()), before);
    }

    #[tokio::test]
    async fn objects_split_by_size_and_audit_entries_archive_too() {
        let dir = tempfile::tempdir().unwrap();
        let store = fake(ArchiveConfig { max_object_bytes: 1, ..ArchiveConfig::default() });
        for n in 1..=3 {
            add(&store, JAN + n as i64 * DAY, n, ExecutionStatus::Failed);
            store.audit.lock().unwrap().push((JAN + n as i64, id(100 + n)));
        }
        let r =
            archive(&store, ArchiveParams { confirm_all: true, ..params(dir.path(), "30d") }).await.unwrap();
        let run_id = r.run_id.unwrap();
        let keys: Vec<String> = r.objects.iter().map(|o| o.key.clone()).collect();
        assert_eq!(
            keys,
            (1..=3).map(|n| format!("executions/2024/01/{run_id}-{n:04}.ndjson.gz")).collect::<Vec<_>>()
        );
        let r = archive(
            &store,
            ArchiveParams {
                target: CleanupTarget::AuditLogs,
                confirm_all: true,
                ..params(dir.path(), "90d")
            },
        )
        .await
        .unwrap();
        assert_eq!(r.rows, BTreeMap::from([("audit_logs".into(), 3)]));
        assert_eq!(r.objects.len(), 3);
        assert!(store.audit.lock().unwrap().is_empty());
        let l = lines(&dir.path().join(&r.objects[0].key));
        assert_eq!(
            (l[0]["action"].as_str(), l[0]["details"]["a"].as_i64()),
            (Some("pattern.create"), Some(1))
        );
        assert!(dir.path().join(r.manifest.unwrap()).starts_with(dir.path().join("audit_logs/manifests")));
    }

    /// Pseudo-random text that gzip cannot shrink much.
    fn noise(seed: u64, len: usize) -> String {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                char::from(b'a' + (x % 26) as u8)
            })
            .collect()
    }

    #[tokio::test]
    async fn a_large_object_goes_up_in_parts_and_restores_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let store = fake(ArchiveConfig { part_size: 5 << 20, ..ArchiveConfig::default() });
        let mut originals = BTreeMap::new();
        for n in 1..=12u32 {
            let i = add(&store, JAN + n as i64 * 1000, n, ExecutionStatus::Completed);
            let mut rec = ExecutionRecord {
                execution: parallax_storage_abi::Execution {
                    id: i.clone().into(),
                    pattern_name: "big".into(),
                    pattern_version: "2.0.0".into(),
                    status: ExecutionStatus::Completed,
                    input: ROption::RSome(format!("{{\"noise\":\"{}\"}}", noise(n as u64, 1 << 20)).into()),
                    output: ROption::RSome("[1,2,3]".into()),
                    error: ROption::RNone,
                    started_at: JAN + n as i64 * 1000,
                    completed_at: ROption::RSome(JAN + n as i64 * 1000 + 7),
                    duration_ms: ROption::RSome(0),
                    metadata: ROption::RSome("{\"ü\":\"✓\"}".into()),
                    tags: vec!["x".into()].into(),
                },
                events: Vec::new(),
            };
            rec.events = (1..=2)
                .map(|s| parallax_storage_abi::ExecutionEvent {
                    id: format!("0190b3f2-7c1e-7a00-9000-{:012x}", n * 10 + s).into(),
                    execution_id: i.clone().into(),
                    seq: s as i64,
                    kind: parallax_storage_abi::EventKind::AgentAssignment,
                    payload: "{\"agent\":\"a\"}".into(),
                    recorded_at: JAN + n as i64 * 1000 + s as i64,
                })
                .collect();
            store.records.lock().unwrap().insert(i.clone(), rec.clone());
            originals.insert(i, rec);
        }
        // --keep deletes nothing, so archiving every row needs no confirmation.
        let r = archive(&store, ArchiveParams { keep: true, ..params(dir.path(), "30d") }).await.unwrap();
        assert_eq!(r.objects.len(), 1);
        let o = &r.objects[0];
        assert!(o.size > 5 << 20, "more than one part: {}", o.size);
        let path = dir.path().join(&o.key);
        assert_eq!((std::fs::metadata(&path).unwrap().len(), sha(&path)), (o.size, o.sha256.clone()));
        assert!(
            !r.deleted && r.cleanup.is_none() && store.execution_ids().len() == 12,
            "--keep deletes nothing"
        );
        assert_eq!(last_archive_run(&store).archive.unwrap().phase, Phase::Done);

        let other = fake(ArchiveConfig::default());
        let rr = restore(&other, RestoreParams { source: dir.path().display().to_string(), dry_run: false })
            .await
            .unwrap();
        assert_eq!(rr.inserted, BTreeMap::from([("executions".into(), 12), (EVENTS.into(), 24)]));
        assert!(*other.records.lock().unwrap() == originals, "every field restored as archived");
    }

    fn dead_run(store: &Fake, dest: &str, phase: Phase) -> Run {
        let mut run = Run::start(Trigger::Manual, None);
        run.started_at -= DAY;
        run.archive = Some(ArchiveState {
            target: CleanupTarget::Executions,
            destination: dest.to_string(),
            phase,
            manifest: None,
            objects_done: 0,
            rows: BTreeMap::new(),
            keep: false,
        });
        store.runs.lock().unwrap().push(run.clone());
        run
    }

    #[tokio::test]
    async fn a_run_that_died_before_its_manifest_is_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().display().to_string();
        let store = fake(ArchiveConfig::default());
        add(&store, JAN, 1, ExecutionStatus::Completed);
        add(&store, FEB, 2, ExecutionStatus::Completed);
        let dead = dead_run(&store, &dest, Phase::Writing);
        for k in [
            format!("executions/2024/01/{}-0001.ndjson.gz", dead.id),
            format!("executions/2024/02/{}-0002.ndjson.gz", dead.id),
            format!("executions/manifests/{}.json", dead.id),
            "executions/2024/01/someone-else-0001.ndjson.gz".to_string(),
        ] {
            std::fs::create_dir_all(dir.path().join(&k).parent().unwrap()).unwrap();
            std::fs::write(dir.path().join(&k), b"partial").unwrap();
        }
        let r =
            archive(&store, ArchiveParams { confirm_all: true, ..params(dir.path(), "30d") }).await.unwrap();
        assert_eq!(
            r.resumed,
            [ResumedRun {
                run_id: dead.id.clone(),
                action: "cleared".into(),
                objects_removed: 2,
                ..Default::default()
            }]
        );
        let left = files(dir.path());
        assert!(left.iter().all(|f| !f.contains(&dead.id)), "{left:?}");
        assert!(left.contains(&"executions/2024/01/someone-else-0001.ndjson.gz".to_string()));
        assert_eq!(r.objects.len(), 2);
        assert!(store.execution_ids().is_empty());
        let runs = store.runs.lock().unwrap().clone();
        let old = runs.iter().find(|x| x.id == dead.id).unwrap();
        assert_eq!((old.status, old.archive.as_ref().unwrap().phase), (RunStatus::Interrupted, Phase::Done));
        // Only to the same destination and target: another destination's unfinished run is left alone.
        let other = tempfile::tempdir().unwrap();
        let mut elsewhere = dead_run(&store, "/elsewhere/", Phase::Writing);
        add(&store, JAN, 3, ExecutionStatus::Completed);
        let r = archive(&store, ArchiveParams { confirm_all: true, ..params(other.path(), "30d") })
            .await
            .unwrap();
        assert!(r.resumed.is_empty());
        elsewhere.status = RunStatus::Interrupted;
        assert!(store.runs.lock().unwrap().contains(&elsewhere));
    }

    /// An archive with `keep`, then its record set back to `phase` (deleting `done` objects' rows first), as
    /// if the process died there.
    async fn killed_after_manifest(store: &Fake, dir: &Path, phase: Phase, done: u64) -> ArchiveReport {
        let r = archive(store, ArchiveParams { keep: true, ..params(dir, "30d") }).await.unwrap();
        let mut runs = store.runs.lock().unwrap();
        let run = runs.iter_mut().find(|x| Some(&x.id) == r.run_id.as_ref()).unwrap();
        run.status = RunStatus::Running;
        let st = run.archive.as_mut().unwrap();
        (st.phase, st.keep, st.objects_done) = (phase, false, done);
        drop(runs);
        for o in &r.objects[..done as usize] {
            let ids: Vec<String> =
                lines(&dir.join(&o.key)).iter().map(|l| l["id"].as_str().unwrap().to_string()).collect();
            store.executions.lock().unwrap().retain(|e| !ids.contains(&e.1));
        }
        r
    }

    #[tokio::test]
    async fn a_run_that_died_after_its_manifest_is_finished() {
        for (phase, done) in [(Phase::Stored, 0), (Phase::Deleting, 1)] {
            let dir = tempfile::tempdir().unwrap();
            let store = fake(ArchiveConfig::default());
            for (n, at) in [(1, JAN), (2, JAN + DAY), (3, FEB), (4, FEB + DAY), (5, MAR)] {
                add(&store, at, n, ExecutionStatus::Completed);
            }
            let young = add(&store, time::now_micros(), 9, ExecutionStatus::Completed);
            let first = killed_after_manifest(&store, dir.path(), phase, done).await;
            let files_before = files(dir.path());
            store.deletes.store(0, Ordering::SeqCst);
            let r = archive(&store, params(dir.path(), "30d")).await.unwrap();
            let want = if done == 0 { 5 } else { 3 };
            assert_eq!(r.resumed.len(), 1, "{phase:?}");
            assert_eq!(
                (r.resumed[0].run_id.as_str(), r.resumed[0].action.as_str()),
                (first.run_id.as_deref().unwrap(), "finished")
            );
            assert_eq!(
                r.resumed[0].rows,
                BTreeMap::from([("executions".into(), want), (EVENTS.into(), want)])
            );
            assert_eq!(store.deletes.load(Ordering::SeqCst), 3 - done, "one batch per object not done yet");
            assert!(r.objects.is_empty() && r.manifest.is_none(), "nothing archived twice");
            assert_eq!(files(dir.path()), files_before, "no new object");
            assert_eq!(store.execution_ids(), std::slice::from_ref(&young));
            let runs = store.runs.lock().unwrap().clone();
            let old = runs.iter().find(|x| Some(&x.id) == first.run_id.as_ref()).unwrap();
            let st = old.archive.clone().unwrap();
            assert_eq!((old.status, st.phase, st.objects_done), (RunStatus::Interrupted, Phase::Done, 3));
        }
    }

    #[tokio::test]
    async fn a_run_whose_manifest_is_gone_is_abandoned_without_deleting() {
        let dir = tempfile::tempdir().unwrap();
        let store = fake(ArchiveConfig::default());
        add(&store, JAN, 1, ExecutionStatus::Completed);
        add(&store, time::now_micros(), 9, ExecutionStatus::Completed);
        let first = killed_after_manifest(&store, dir.path(), Phase::Stored, 0).await;
        std::fs::remove_file(dir.path().join(first.manifest.unwrap())).unwrap();
        store.deletes.store(0, Ordering::SeqCst);
        let r = archive(&store, ArchiveParams { keep: true, ..params(dir.path(), "30d") }).await.unwrap();
        assert_eq!((r.resumed[0].action.as_str(), r.resumed[0].rows.is_empty()), ("abandoned", true));
        assert_eq!(store.deletes.load(Ordering::SeqCst), 0, "nothing unverifiable is deleted");
        assert_eq!(
            (r.rows["executions"], store.execution_ids().len()),
            (1, 2),
            "archived again, still there"
        );
    }

    #[tokio::test]
    async fn a_failed_delete_is_recorded_and_finished_by_the_next_run() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = fake(ArchiveConfig::default());
        store.fail_deletes_after = Some(1);
        for (n, at) in [(1, JAN), (2, FEB)] {
            add(&store, at, n, ExecutionStatus::Completed);
        }
        add(&store, time::now_micros(), 9, ExecutionStatus::Completed);
        let e = archive(&store, params(dir.path(), "30d")).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        let m = e.to_string();
        assert!(
            m.contains(&dir.path().display().to_string())
                && m.contains("manifest")
                && m.contains("1 executions)"),
            "{m}"
        );
        let run = last_archive_run(&store);
        let st = run.archive.clone().unwrap();
        assert_eq!((run.status, st.phase, st.objects_done), (RunStatus::Failed, Phase::Deleting, 1));
        assert_eq!(store.execution_ids().len(), 2);
        store.fail_deletes_after = None;
        let r = archive(&store, params(dir.path(), "30d")).await.unwrap();
        assert_eq!(r.resumed[0].rows["executions"], 1);
        assert!(r.objects.is_empty());
        assert_eq!(store.execution_ids().len(), 1);
    }

    #[tokio::test]
    async fn confirm_lock_dry_run_and_bad_params() {
        let dir = tempfile::tempdir().unwrap();
        let store = fake(ArchiveConfig::default());
        add(&store, JAN, 1, ExecutionStatus::Completed);
        add(&store, FEB, 2, ExecutionStatus::Cancelled);
        let e = archive(&store, params(dir.path(), "30d")).await.unwrap_err();
        assert!(e.to_string().contains("--yes"), "{e}");
        assert!(files(dir.path()).is_empty() && store.execution_ids().len() == 2);

        let fresh = dir.path().join("not-yet");
        let r = archive(&store, ArchiveParams { dry_run: true, ..params(&fresh, "30d") }).await.unwrap();
        assert_eq!((r.dry_run, r.rows["executions"], r.run_id.clone()), (true, 2, None));
        assert!(!fresh.exists(), "a dry run creates nothing");

        let held = store.lock_runner().await.unwrap().unwrap();
        let e = archive(&store, ArchiveParams { confirm_all: true, ..params(dir.path(), "30d") })
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Conflict);
        drop(held);
        let e = archive(&store, params(dir.path(), "soon")).await.unwrap_err();
        assert!(e.to_string().contains("\"soon\""), "{e}");
        let e =
            archive(&store, ArchiveParams { destination: "ftp://x/".into(), ..params(dir.path(), "30d") })
                .await
                .unwrap_err();
        assert!(e.to_string().contains("ftp://x/"), "{e}");
        let r =
            archive(&store, ArchiveParams { confirm_all: true, ..params(dir.path(), "30d") }).await.unwrap();
        assert_eq!(r.rows["executions"], 2);
        assert!(store.execution_ids().is_empty());
    }

    /// Three months of executions archived with `keep` into a fresh directory.
    async fn kept_archive() -> (tempfile::TempDir, Fake, ArchiveReport) {
        let dir = tempfile::tempdir().unwrap();
        let store = fake(ArchiveConfig::default());
        for (n, at) in [(1, JAN), (2, JAN + DAY), (3, FEB), (4, MAR)] {
            add(&store, at, n, ExecutionStatus::Completed);
        }
        add(&store, time::now_micros(), 9, ExecutionStatus::Completed);
        let r = archive(&store, ArchiveParams { keep: true, ..params(dir.path(), "30d") }).await.unwrap();
        (dir, store, r)
    }

    #[tokio::test]
    async fn verify_checks_every_object_and_finds_orphans() {
        let (dir, _, r) = kept_archive().await;
        let root = dir.path().display().to_string();
        let ok = verify(&ArchiveConfig::default(), VerifyParams { source: root.clone() }).await.unwrap();
        assert!(ok.ok && ok.orphans.is_empty(), "{ok:?}");
        assert_eq!((ok.manifests.len(), ok.manifests[0].rows, ok.manifests[0].rows_found), (1, 4, 4));
        let one = format!("{root}/{}", r.manifest.clone().unwrap());
        let single = verify(&ArchiveConfig::default(), VerifyParams { source: format!("file://{one}") })
            .await
            .unwrap();
        assert!(single.ok && single.manifests[0].objects.len() == 3, "{single:?}");

        let p = |i: usize| dir.path().join(&r.objects[i].key);
        let mut bytes = std::fs::read(p(0)).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x01;
        std::fs::write(p(0), &bytes).unwrap();
        let bytes = std::fs::read(p(1)).unwrap();
        std::fs::write(p(1), &bytes[..bytes.len() - 5]).unwrap();
        std::fs::remove_file(p(2)).unwrap();
        let orphan = "executions/2024/05/0190-dead-0001.ndjson.gz";
        std::fs::create_dir_all(dir.path().join("executions/2024/05")).unwrap();
        std::fs::write(dir.path().join(orphan), b"x").unwrap();

        let bad = verify(&ArchiveConfig::default(), VerifyParams { source: root.clone() }).await.unwrap();
        assert!(!bad.ok && !bad.manifests[0].ok);
        assert_eq!(bad.orphans, [orphan]);
        let problems: Vec<String> =
            bad.manifests[0].objects.iter().map(|o| o.problem.clone().unwrap()).collect();
        assert!(problems[0].starts_with("SHA-256"), "a flipped byte: {problems:?}");
        assert!(
            problems[1].starts_with("size") && problems[1].contains("damaged"),
            "truncated: {problems:?}"
        );
        assert!(problems[2].starts_with("missing"), "{problems:?}");
        assert!(
            problems.iter().zip(&r.objects).skip(1).all(|(p, o)| p.contains(&o.key) || p.contains("size")),
            "{problems:?}"
        );
        let e = verify(
            &ArchiveConfig::default(),
            VerifyParams { source: dir.path().join("executions/2024").display().to_string() },
        )
        .await
        .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    }

    #[tokio::test]
    async fn restore_refuses_a_damaged_archive_and_writes_nothing() {
        let (dir, _, r) = kept_archive().await;
        let p = dir.path().join(&r.objects[1].key);
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
        let target = fake(ArchiveConfig::default());
        let e = restore(&target, RestoreParams { source: dir.path().display().to_string(), dry_run: false })
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(
            e.to_string().contains(&r.objects[1].key) && e.to_string().contains("nothing was written"),
            "{e}"
        );
        assert_eq!(target.imports.load(Ordering::SeqCst), 0);
        assert!(target.execution_ids().is_empty());
        std::fs::remove_file(&p).unwrap();
        let e = restore(&target, RestoreParams { source: dir.path().display().to_string(), dry_run: true })
            .await
            .unwrap_err();
        assert!(e.to_string().contains(&r.objects[1].key), "{e}");
    }

    #[tokio::test]
    async fn restore_is_idempotent_and_a_dry_run_writes_nothing() {
        let (dir, source, _) = kept_archive().await;
        let audit_dir = dir.path().display().to_string();
        for n in 1..=2 {
            source.audit.lock().unwrap().push((JAN + n, id(200 + n as u32)));
        }
        archive(
            &source,
            ArchiveParams {
                target: CleanupTarget::AuditLogs,
                confirm_all: true,
                ..params(dir.path(), "90d")
            },
        )
        .await
        .unwrap();
        let target = fake(ArchiveConfig::default());
        add(&target, JAN, 1, ExecutionStatus::Completed); // already there: skipped
        let dry = restore(&target, RestoreParams { source: audit_dir.clone(), dry_run: true }).await.unwrap();
        assert_eq!(
            dry.inserted,
            BTreeMap::from([("executions".into(), 4), (EVENTS.into(), 4), ("audit_logs".into(), 2)])
        );
        assert_eq!(target.imports.load(Ordering::SeqCst), 0);
        let r = restore(&target, RestoreParams { source: audit_dir.clone(), dry_run: false }).await.unwrap();
        assert_eq!(
            r.inserted,
            BTreeMap::from([("executions".into(), 3), (EVENTS.into(), 3), ("audit_logs".into(), 2)])
        );
        assert_eq!(r.skipped, BTreeMap::from([("executions".into(), 1), ("audit_logs".into(), 0)]));
        assert_eq!(r.manifests.len(), 2);
        let again = restore(&target, RestoreParams { source: audit_dir, dry_run: false }).await.unwrap();
        assert_eq!(again.inserted.values().sum::<u64>(), 0);
        assert_eq!(again.skipped, BTreeMap::from([("executions".into(), 4), ("audit_logs".into(), 2)]));
        let ids: Vec<String> = (1..=4).map(id).collect();
        assert_eq!(target.execution_ids(), ids);
    }

    #[tokio::test]
    async fn archive_runs_report_bytes_and_rows_once_to_the_metrics() {
        let counter = |store: &Fake, line: &str| {
            let text = store.metrics.rendered_counters();
            text.lines()
                .find_map(|l| l.strip_prefix(line).and_then(|v| v.trim().parse::<u64>().ok()))
                .unwrap_or_else(|| panic!("no {line} in {text}"))
        };
        let dir = tempfile::tempdir().unwrap();
        let store = fake(ArchiveConfig::default());
        add(&store, JAN, 1, ExecutionStatus::Completed);
        add(&store, FEB, 2, ExecutionStatus::Completed);
        add(&store, time::now_micros(), 3, ExecutionStatus::Completed);
        let dry =
            archive(&store, ArchiveParams { dry_run: true, ..params(dir.path(), "30d") }).await.unwrap();
        assert_eq!(dry.bytes, 0);
        assert_eq!(counter(&store, "parallax_storage_archive_bytes_total"), 0);
        let r = archive(&store, params(dir.path(), "30d")).await.unwrap();
        assert!(r.bytes > 0);
        assert_eq!(counter(&store, "parallax_storage_archive_bytes_total"), r.bytes);
        assert_eq!(counter(&store, "parallax_storage_retention_rows_removed_total{table=\"executions\"}"), 2);
        assert!(store.metrics.retention_times().0.is_some());

        // Within a retention run, the rule's archive run is counted once (by the retention run).
        let dir = tempfile::tempdir().unwrap();
        let rule = Some(RetentionRule {
            enabled: true,
            max_age: Some(std::time::Duration::from_secs(30 * 86_400)),
            max_count: None,
        });
        let retention = RetentionConfig {
            executions: rule,
            archive_destination: Some(dir.path().display().to_string()),
            ..RetentionConfig::default()
        };
        let store =
            Fake { config: StorageConfig { retention, ..StorageConfig::default() }, ..Fake::default() };
        add(&store, JAN, 1, ExecutionStatus::Completed);
        add(&store, time::now_micros(), 2, ExecutionStatus::Completed);
        let r = crate::retention::run::retention_run(&store, RetentionRunParams::default()).await.unwrap();
        assert_eq!(counter(&store, "parallax_storage_archive_bytes_total"), r.archives[0].bytes);
        assert_eq!(counter(&store, "parallax_storage_retention_rows_removed_total{table=\"executions\"}"), 1);
        assert_eq!(
            counter(&store, "parallax_storage_retention_rows_removed_total{table=\"execution_events\"}"),
            1
        );
    }

    #[tokio::test]
    async fn a_retention_run_with_an_archive_destination_archives_first() {
        let dir = tempfile::tempdir().unwrap();
        let rule = |days: u64| {
            Some(RetentionRule {
                enabled: true,
                max_age: Some(std::time::Duration::from_secs(days * 86_400)),
                max_count: None,
            })
        };
        let store = Fake {
            config: StorageConfig {
                retention: RetentionConfig {
                    executions: rule(30),
                    audit_logs: rule(90),
                    archive_destination: Some(dir.path().display().to_string()),
                    ..RetentionConfig::default()
                },
                ..StorageConfig::default()
            },
            ..Fake::default()
        };
        add(&store, JAN, 1, ExecutionStatus::Completed);
        let young = add(&store, time::now_micros(), 2, ExecutionStatus::Completed);
        store.audit.lock().unwrap().push((JAN, id(100)));
        let r = crate::retention::run::retention_run(&store, RetentionRunParams::default()).await.unwrap();
        assert!(r.ran, "{r:?}");
        assert_eq!(r.archives.len(), 2);
        assert_eq!((r.archives[0].rows["executions"], r.archives[1].rows["audit_logs"]), (1, 1));
        assert!(r.archives.iter().all(|a| a.deleted && a.manifest.is_some()));
        assert_eq!((r.reports[0].tables[0].rows, r.reports[1].tables[0].rows), (1, 1));
        let policy_run = r.run.unwrap();
        assert!(r.reports.iter().all(|p| p.run_id.as_ref() == Some(&policy_run.id)));
        assert_eq!(
            policy_run.rows,
            BTreeMap::from([("executions".into(), 1), (EVENTS.into(), 1), ("audit_logs".into(), 1)])
        );
        assert_eq!(store.execution_ids(), [young]);
        assert!(store.audit.lock().unwrap().is_empty());
        for a in &r.archives {
            assert!(dir.path().join(a.manifest.as_ref().unwrap()).exists());
        }
        let runs = store.runs.lock().unwrap().clone();
        assert_eq!(
            runs.iter().filter(|x| x.archive.as_ref().is_some_and(|a| a.phase == Phase::Done)).count(),
            2
        );
        // A dry run reports what each rule would archive, and writes nothing.
        let young = store.execution_ids();
        add(&store, JAN, 3, ExecutionStatus::Completed);
        let before = files(dir.path());
        let dry =
            crate::retention::run::retention_run(&store, RetentionRunParams { tick: None, dry_run: true })
                .await
                .unwrap();
        let got: Vec<(bool, u64)> = dry.archives.iter().map(|a| (a.dry_run, a.rows.values().sum())).collect();
        assert_eq!(
            got,
            [(true, 1), (true, 0)],
            "one execution (the in-memory plan counts no events); no audit entry"
        );
        assert_eq!(files(dir.path()), before);
        assert_eq!(store.execution_ids().len(), young.len() + 1);
    }
}
