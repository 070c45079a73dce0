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
    format::{self, LimitKey, Manifest, Record, Table, TimeRange},
    pause_point,
    read::{self, ObjectReader},
    writer::ObjectWriter,
    ArchiveState, Phase, Store,
};
use crate::{
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
    let dest = Destination::open(&params.destination, &store.storage_config().archive, !params.dry_run)?;
    // Bad credentials, a missing bucket or an unreachable endpoint fail here, before anything happens.
    dest.probe().await?;
    let now = time::now_micros();
    let mut report = ArchiveReport {
        target: params.target.as_str().to_string(),
        dry_run: params.dry_run,
        destination: dest.text().to_string(),
        cutoff: spec.cutoff(now).map(time::rfc3339),
        max_count: spec.max_count,
        ..ArchiveReport::default()
    };
    if params.dry_run {
        let sel = spec.resolve(store, now).await?;
        let plan = cleanup::plan(store, &sel, &spec).await?;
        for t in &plan.tables {
            if ["executions", EVENTS, "audit_logs"].contains(&t.table.as_str()) {
                report.rows.insert(t.table.clone(), t.rows);
            }
        }
        report.duration_ms = started.elapsed().as_millis() as u64;
        return Ok(report);
    }
    let _lock = store.lock_runner().await?.ok_or_else(cleanup::runner_locked)?;
    cleanup::mark_interrupted(store).await?;
    report.resumed = resume(store, &dest, spec.target).await?;
    let sel = spec.resolve(store, now).await?;
    if let Some(sel) = &sel {
        let check = store.precheck(sel.clone()).await?;
        if check.selects_any && !check.keeps_any && !params.confirm_all {
            return Err(crate::rules::confirm_removing_everything(spec.target));
        }
    }
    let mut run = start_run(&dest, spec.target, Trigger::Manual, params.keep);
    store.save_run(run.clone()).await?;
    let tally = Tally::default();
    let outcome = archive_run(store, &dest, &spec, sel, params.keep, &mut run, &tally, &mut report).await;
    cleanup::finish(store, &mut run, &tally, outcome.as_ref().err()).await;
    outcome.map_err(|e| failed(&spec, &dest, &report, &tally, e))?;
    report.duration_ms = started.elapsed().as_millis() as u64;
    Ok(report)
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

/// Phases 1-4 of one run whose record is saved (phase `writing`).
#[allow(clippy::too_many_arguments)]
async fn archive_run<S: Store>(
    store: &S,
    dest: &Destination,
    spec: &Spec,
    sel: Option<Selection>,
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
        let written = write_all(store, sel, table, &mut writer, &mut rows, &mut progress, tally).await;
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
                .map(Record::Audit)
                .collect(),
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

/// Stores the manifest (never over an existing one), reads it back and compares.
async fn write_manifest(dest: &Destination, key: &str, manifest: &Manifest) -> Result<()> {
    let text = manifest.to_json();
    let path = dest.path(key);
    let opts = PutOptions { mode: PutMode::Create, ..PutOptions::default() };
    dest.store()
        .put_opts(&path, PutPayload::from(text.clone().into_bytes()), opts)
        .await
        .map_err(|e| dest.error(&format!("cannot store manifest {key}"), e))?;
    let back = read_manifest_bytes(dest, key).await?;
    if back != text.as_bytes() {
        return Err(Error::unavailable(format!(
            "manifest {key} at {} read back different from what was written; nothing was deleted",
            dest.text()
        )));
    }
    Ok(())
}

async fn read_manifest_bytes(dest: &Destination, key: &str) -> Result<Vec<u8>> {
    let got = dest
        .store()
        .get(&dest.path(key))
        .await
        .map_err(|e| dest.error(&format!("cannot read manifest {key}"), e))?;
    let bytes = got.bytes().await.map_err(|e| dest.error(&format!("cannot read manifest {key}"), e))?;
    Ok(bytes.to_vec())
}

async fn load_manifest(dest: &Destination, key: &str) -> Result<Manifest> {
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
    for (i, obj) in manifest.objects.iter().enumerate().skip(from) {
        let mut reader = ObjectReader::open(dest, &obj.key, Some(table)).await?;
        let mut ids: Vec<uuid::Uuid> = Vec::with_capacity(obj.rows as usize);
        loop {
            let batch = reader.next_batch(PAGE).await?;
            if batch.is_empty() {
                break;
            }
            for r in &batch {
                ids.push(uuid::Uuid::parse_str(r.id()).expect("decoded ids are UUIDs"));
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
        if a.target != target || a.destination != dest.text() || a.phase == Phase::Done {
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
                if !a.keep {
                    let key = a.manifest.clone().ok_or_else(|| {
                        Error::internal(format!(
                            "archive run {} is {} but has no manifest",
                            r.id,
                            a.phase.as_str()
                        ))
                    })?;
                    let manifest = load_manifest(dest, &key).await?;
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
                }
                state(&mut r).phase = Phase::Done;
                store.save_run(r.clone()).await?;
                tracing::info!(run = %r.id, deleted = %tally.describe(), "finished an interrupted archive run");
                out.push(ResumedRun {
                    run_id: r.id.clone(),
                    action: "finished".into(),
                    rows: tally.snapshot(),
                    ..ResumedRun::default()
                });
            }
        }
    }
    Ok(out)
}

/// Removes what a run that died before its manifest stored: its manifest if it got that far (it died
/// before recording it), then its objects. Listing is paginated by the store.
async fn clear(dest: &Destination, table: Table, run_id: &str) -> Result<u64> {
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
async fn list(dest: &Destination, prefix: &str) -> Result<Vec<String>> {
    let path = dest.path(prefix);
    let mut stream = dest.store().list(if prefix.is_empty() { None } else { Some(&path) });
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
struct Source {
    dest: Destination,
    /// `(root, manifest key)`, both relative to the opened destination; object keys of a manifest are
    /// relative to its root.
    manifests: Vec<(String, String)>,
    /// Every `*.ndjson.gz` key under the source (prefix form only), for orphans.
    objects: Vec<String>,
}

fn join(root: &str, key: &str) -> String {
    if root.is_empty() {
        key.to_string()
    } else {
        format!("{root}/{key}")
    }
}

async fn open_source(config: &ArchiveConfig, text: &str) -> Result<Source> {
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
                    "source {text:?}: a manifest is <root>/executions/manifests/<run-id>.json or \
                     <root>/audit_logs/manifests/<run-id>.json"
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
async fn check_manifest(dest: &Destination, root: &str, key: &str) -> (ManifestCheck, Option<Manifest>) {
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
    for obj in &manifest.objects {
        let okey = join(root, &obj.key);
        let problem = match check_object(dest, &okey, table).await {
            Ok(got) => {
                check.rows_found += got.rows;
                read::mismatch(obj, &got, true)
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Some(format!("missing: {}", e.0.message)),
            Err(e) => Some(e.0.message.to_string()),
        };
        ok &= problem.is_none();
        check.objects.push(ObjectCheck { key: obj.key.clone(), ok: problem.is_none(), problem });
    }
    check.ok = ok;
    (check, Some(manifest))
}

async fn check_object(dest: &Destination, key: &str, table: Table) -> Result<read::Read> {
    let mut r = ObjectReader::open(dest, key, Some(table)).await?;
    while !r.next_batch(PAGE * 4).await?.is_empty() {}
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

fn no_manifest(source: &str) -> Error {
    Error::not_found(format!(
        "no archive manifest under {source} (expected <table>/manifests/<run-id>.json below it, e.g. \
         executions/manifests/…; give the archive's root or one manifest)"
    ))
}

// ------------------------------------------------------------------ restore

/// The `restore` op: verify everything first, then import oldest run first.
pub async fn restore<S: Store>(store: &S, params: RestoreParams) -> Result<RestoreReport> {
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
    plan.sort_by(|a, b| (&a.1.created_at, &a.1.run_id).cmp(&(&b.1.created_at, &b.1.run_id)));
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

async fn import<S: Store>(store: &S, batch: Vec<Record>) -> Result<super::Imported> {
    let mut executions = Vec::new();
    let mut audit = Vec::new();
    for r in batch {
        match r {
            Record::Execution(e) => executions.push(e),
            Record::Audit(a) => audit.push(a),
        }
    }
    let mut total = super::Imported::default();
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
    let sel = spec.resolve(store, now).await?;
    let mut run = start_run(&dest, spec.target, trigger, false);
    store.save_run(run.clone()).await?;
    let own = Tally::default();
    let outcome = archive_run(store, &dest, spec, sel, false, &mut run, &own, &mut report).await;
    cleanup::finish(store, &mut run, &own, outcome.as_ref().err()).await;
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
