//! `export`: everything the store holds, in the archive's format ([`crate::archive::format`]) plus a
//! `patterns` table, under a destination (`s3://…`, `file:///…`, an absolute path).
//!
//! One run id for the three tables. The snapshot cut T is the clock when the run starts (see
//! `parallax_storage_abi::transfer`): every pattern version with `createdAt` ≤ T, every execution of any status
//! with `startedAt` ≤ T (with its events as read) and every audit entry with `timestamp` ≤ T. Each table is
//! scanned in pages into objects (each read back and checked, as an archive run's), then its manifest is
//! written (create-only, read back), then **`export.json` last**: the completion marker, with the snapshot,
//! the source (backend and location, never a secret) and per table the rows and content checksum
//! ([`crate::transfer::checksum`]) that an `import` checks what it landed against.
//!
//! An export is also a valid archive: `archive verify` checks it and `restore` reads it.
//!
//! While it runs, the destination holds `export-in-progress.json` (the run id). A destination that holds an
//! `export.json` is refused; the objects of an unfinished export (killed before `export.json`) are removed by
//! the next export to the same destination; any other content (an archive, unrelated files) is refused, so
//! an export never mixes with or removes what it did not write.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Instant,
};

use object_store::{ObjectStoreExt, PutPayload};
use parallax_storage_abi::{
    retention::CleanupTarget,
    transfer::{ExportParams, ExportReport, TableTransfer, CHECKSUM_VERSION, TABLES},
    ErrorKind, Pattern,
};
use serde::{Deserialize, Serialize};

use super::checksum::{self, Tally};
use crate::{
    archive::{
        destination::Destination,
        format::{self, LimitKey, Manifest, Record, Table, TimeRange},
        run::{self as archive_run, list, open_destination, write_created},
        writer::ObjectWriter,
    },
    contract::Contract,
    error::{Error, Result},
    retention::PROGRESS_EVERY,
    rules::{Selection, MIN_ID},
    time,
    validate::Page,
};

/// The completion marker's key, relative to the destination.
pub const EXPORT_JSON: &str = "export.json";
/// Present while an export writes (its run id); removed once `export.json` is stored.
pub const IN_PROGRESS: &str = "export-in-progress.json";
/// The version of `export.json`.
pub const EXPORT_FORMAT_VERSION: u32 = 1;

const EVENTS: &str = "execution_events";
/// Rows of a first scan page; pages grow (to [`MAX_PAGE`]) while their documents stay small.
const FIRST_PAGE: usize = 64;
const MAX_PAGE: usize = 1000;
/// A page whose documents total more than this shrinks the next one.
const PAGE_BYTES: usize = 8 << 20;
/// Pattern names per `patterns_after` call.
const PATTERN_NAMES: usize = 100;

/// Where an export's rows came from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ExportSource {
    /// `sqlite`, `postgresql` or `file`.
    pub backend: String,
    /// The store's location without secrets (a path, or a URL without password).
    pub location: String,
}

/// `export.json`: written last, the proof that an export is complete.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExportJson {
    pub format_version: u32,
    pub plugin_version: String,
    pub run_id: String,
    /// The snapshot cut, RFC 3339 with microseconds.
    pub snapshot: String,
    pub source: ExportSource,
    /// [`CHECKSUM_VERSION`] of `tables`.
    pub checksum_version: u32,
    /// Per table of [`TABLES`]: rows and content checksum of what was exported.
    pub tables: BTreeMap<String, Tally>,
    /// Rows newer than the snapshot, per table: not exported.
    #[serde(default)]
    pub after_snapshot: BTreeMap<String, u64>,
    /// The manifests, relative to the destination.
    #[serde(default)]
    pub manifests: Vec<String>,
    /// When the export finished, RFC 3339.
    #[serde(default)]
    pub created_at: Option<String>,
}

impl ExportJson {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("export.json serializes") + "\n"
    }

    /// Reads `export.json`, refusing a newer format or checksum version and one without every table.
    pub fn parse(at: &str, bytes: &[u8]) -> Result<ExportJson> {
        let bad = |why: String| Error::invalid(format!("{EXPORT_JSON} at {at} is not valid: {why}"));
        let e: ExportJson = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        if e.format_version == 0 || e.format_version > EXPORT_FORMAT_VERSION {
            return Err(bad(format!(
                "formatVersion {} (this plugin reads 1 to {EXPORT_FORMAT_VERSION}; a newer plugin wrote it)",
                e.format_version
            )));
        }
        if e.checksum_version != CHECKSUM_VERSION {
            return Err(bad(format!(
                "checksumVersion {} (this plugin computes {CHECKSUM_VERSION}; a newer plugin wrote it)",
                e.checksum_version
            )));
        }
        if uuid::Uuid::parse_str(&e.run_id).is_err() {
            return Err(bad(format!("runId {:?} is not a UUID", e.run_id)));
        }
        if time::parse_rfc3339(&e.snapshot).is_none() {
            return Err(bad(format!("snapshot {:?} is not an RFC 3339 UTC time", e.snapshot)));
        }
        if let Some(t) = TABLES.iter().find(|t| !e.tables.contains_key(**t)) {
            return Err(bad(format!("it has no figures for table {t}")));
        }
        Ok(e)
    }

    /// The snapshot cut in microseconds (checked by [`ExportJson::parse`]).
    pub fn snapshot_micros(&self) -> i64 {
        time::parse_rfc3339(&self.snapshot).unwrap_or_default()
    }
}

/// `export-in-progress.json`.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct InProgress {
    run_id: String,
    snapshot: String,
}

/// Logs progress at info on `parallax_storage::transfer` at most every [`PROGRESS_EVERY`].
struct Progress {
    last: Instant,
}

impl Progress {
    fn tick(&mut self, table: &str, rows: u64, objects: usize) {
        if self.last.elapsed() >= PROGRESS_EVERY {
            self.last = Instant::now();
            tracing::info!(target: "parallax_storage::transfer", table, rows, objects, "export in progress");
        }
    }
}

/// Scan pages sized by their documents: doubling while a page is full and light, halving when heavy, so
/// memory holds about [`PAGE_BYTES`] of rows whatever their size.
struct PageSize(usize);

impl PageSize {
    fn next(&mut self, rows: usize, weight: usize) {
        if weight > PAGE_BYTES {
            self.0 = (self.0 / 2).max(1);
        } else if rows >= self.0 && weight < PAGE_BYTES / 2 {
            self.0 = (self.0 * 2).min(MAX_PAGE);
        }
    }
}

/// The selection of a table's snapshot: every row (any status) with time ≤ `snapshot`.
pub fn snapshot_selection(target: CleanupTarget, snapshot: i64) -> Selection {
    Selection { target, before: (snapshot + 1, MIN_ID.to_string()), include_unfinished: true }
}

/// Every pattern version, paging by name as the backend orders names.
pub async fn all_patterns<S: Contract>(store: &S) -> Result<Vec<Pattern>> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let rows = store.patterns_after(Page { limit: PATTERN_NAMES, after: after.clone() }).await?;
        let mut names = 0usize;
        let mut more = false;
        let mut last: Option<String> = None;
        for p in rows {
            if last.as_deref() != Some(p.name.as_str()) {
                if names == PATTERN_NAMES {
                    more = true;
                    break;
                }
                names += 1;
                last = Some(p.name.to_string());
            }
            out.push(p);
        }
        if !more {
            return Ok(out);
        }
        after = last;
    }
}

/// The `export` op.
pub async fn run<S: Contract>(store: &S, params: ExportParams) -> Result<ExportReport> {
    let started = Instant::now();
    let snapshot = time::now_micros();
    let run_id = uuid::Uuid::now_v7().to_string();
    let mut report = ExportReport {
        destination: params.destination.clone(),
        dry_run: params.dry_run,
        run_id: run_id.clone(),
        snapshot: time::rfc3339(snapshot),
        ..ExportReport::default()
    };
    let dest = open_destination(store, &params.destination, params.dry_run).await?;
    if let Some(dest) = &dest {
        prepare(dest, params.dry_run).await?;
    }
    let Some(dest) = dest.filter(|_| !params.dry_run) else {
        dry_counts(store, snapshot, &mut report).await?;
        report.duration_ms = started.elapsed().as_millis() as u64;
        return Ok(report);
    };
    // Scheduled cleanups and archives skip while this holds (they would delete rows ahead of the scan).
    let _runner = store.lock_runner().await?.ok_or_else(|| {
        Error::conflict(
            "a cleanup or archive is running on this storage; run the export again when it ends (an export \
             holds the retention runner lock so that no scheduled run deletes rows it has not read yet)",
        )
    })?;
    let marker = InProgress { run_id: run_id.clone(), snapshot: report.snapshot.clone() };
    dest.store()
        .put(&dest.path(IN_PROGRESS), PutPayload::from(serde_json::to_vec(&marker).expect("serializes")))
        .await
        .map_err(|e| dest.error(&format!("cannot store {IN_PROGRESS}"), e))?;
    let mut objects = 0u64;
    let outcome = export_all(store, &dest, &run_id, snapshot, &mut report, &mut objects).await;
    if let Err(e) = outcome {
        let stored = match objects {
            0 => "no object was stored".to_string(),
            n => format!("{n} objects were stored; the next export to {} removes them", dest.text()),
        };
        return Err(Error::new(
            e.kind(),
            format!("export to {} failed ({stored}): {}", dest.text(), e.0.message),
        ));
    }
    report.duration_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

/// Refuses a destination holding a finished export or content an export did not write; removes the objects
/// of an unfinished export (not on a dry run).
async fn prepare(dest: &Destination, dry_run: bool) -> Result<()> {
    let keys = list(dest, "").await?;
    if keys.iter().any(|k| k == EXPORT_JSON) {
        let what = match archive_run::read_manifest_bytes(dest, EXPORT_JSON).await {
            Ok(b) => match ExportJson::parse(dest.text(), &b) {
                Ok(e) => format!("run {}, snapshot {}", e.run_id, e.snapshot),
                Err(_) => "unreadable".to_string(),
            },
            Err(_) => "unreadable".to_string(),
        };
        return Err(Error::conflict(format!(
            "destination {} already holds a finished export ({EXPORT_JSON}: {what}); export to an empty \
             directory or prefix, or remove the old export first",
            dest.text()
        )));
    }
    let mut runs = BTreeSet::new();
    if keys.iter().any(|k| k == IN_PROGRESS) {
        let bytes = archive_run::read_manifest_bytes(dest, IN_PROGRESS).await?;
        if let Ok(m) = serde_json::from_slice::<InProgress>(&bytes) {
            runs.insert(m.run_id);
        }
    }
    // Only an export writes patterns: runs with pattern objects or manifests are unfinished exports.
    for k in keys.iter().filter_map(|k| k.strip_prefix("patterns/")) {
        if let Some(run) = run_of(k) {
            runs.insert(run);
        }
    }
    let ours = |k: &str| {
        k == IN_PROGRESS
            || runs.iter().any(|r| {
                Table::ALL
                    .into_iter()
                    .any(|t| format::is_object_of(k, t, r) || k == format::manifest_key(t, r))
            })
    };
    let foreign: Vec<&String> = keys.iter().filter(|k| !ours(k)).collect();
    if let Some(first) = foreign.first() {
        return Err(Error::conflict(format!(
            "destination {} is not empty and holds no unfinished export ({} files, e.g. {first}); export to \
             an empty directory or prefix",
            dest.text(),
            foreign.len()
        )));
    }
    if dry_run {
        return Ok(());
    }
    for r in &runs {
        let mut removed = 0;
        for t in Table::ALL {
            removed += archive_run::clear(dest, t, r).await?;
        }
        tracing::info!(target: "parallax_storage::transfer", run = %r, objects = removed, "removed an unfinished export");
    }
    Ok(())
}

/// The run id of `2024/01/<run-id>-0001.ndjson.gz` or `manifests/<run-id>.json` (under a table's directory).
fn run_of(rel: &str) -> Option<String> {
    let name = rel.rsplit('/').next()?;
    if let Some(stem) = name.strip_suffix(".ndjson.gz") {
        return stem.rsplit_once('-').map(|(run, _)| run.to_string());
    }
    if rel.starts_with("manifests/") {
        return name.strip_suffix(".json").map(str::to_string);
    }
    None
}

fn table_report(table: &str, t: &Tally) -> TableTransfer {
    TableTransfer {
        table: table.to_string(),
        source_rows: t.rows,
        source_checksum: t.hex(),
        ok: true,
        ..TableTransfer::default()
    }
}

/// A dry run: what would be exported and what is after the snapshot, counted.
async fn dry_counts<S: Contract>(store: &S, snapshot: i64, report: &mut ExportReport) -> Result<()> {
    let patterns = all_patterns(store).await?;
    let inside = patterns.iter().filter(|p| p.created_at <= snapshot).count() as u64;
    let mut rows = BTreeMap::from([("patterns".to_string(), inside)]);
    report.after_snapshot.insert("patterns".into(), patterns.len() as u64 - inside);
    for target in [CleanupTarget::Executions, CleanupTarget::AuditLogs] {
        let plan = store.plan_cleanup(snapshot_selection(target, snapshot)).await?;
        let main = plan.tables.first().map_or(0, |t| t.rows);
        for t in &plan.tables {
            if TABLES.contains(&t.table.as_str()) {
                rows.insert(t.table.clone(), t.rows);
            }
        }
        report.after_snapshot.insert(target.as_str().to_string(), plan.total_rows.saturating_sub(main));
    }
    report.tables = TABLES
        .iter()
        .map(|t| TableTransfer {
            table: t.to_string(),
            source_rows: rows.get(*t).copied().unwrap_or(0),
            ok: true,
            ..TableTransfer::default()
        })
        .collect();
    Ok(())
}

/// What one table's writing produced.
struct Written {
    manifest: Manifest,
    key: String,
}

/// Writes the three tables, their manifests, then `export.json`.
async fn export_all<S: Contract>(
    store: &S,
    dest: &Destination,
    run_id: &str,
    snapshot: i64,
    report: &mut ExportReport,
    objects: &mut u64,
) -> Result<()> {
    let mut tallies: BTreeMap<String, Tally> =
        TABLES.iter().map(|t| (t.to_string(), Tally::default())).collect();
    let mut progress = Progress { last: Instant::now() };
    let mut after = BTreeMap::new();

    // Patterns: few; every version, sorted by (createdAt, id) so objects split by month as the others.
    let mut patterns = all_patterns(store).await?;
    let total = patterns.len() as u64;
    patterns.retain(|p| p.created_at <= snapshot);
    after.insert("patterns".to_string(), total - patterns.len() as u64);
    patterns.sort_by(|a, b| (a.created_at, a.id.as_str()).cmp(&(b.created_at, b.id.as_str())));
    let mut writer = ObjectWriter::new(dest, Table::Patterns, run_id);
    let mut written = Vec::new();
    let pushed: Result<()> = async {
        for p in patterns {
            tallies.get_mut("patterns").expect("a table").add(checksum::pattern(&p));
            writer.push(&Record::Pattern(p)).await?;
        }
        writer.close().await
    }
    .await;
    written.push(finish_table(dest, Table::Patterns, run_id, snapshot, &mut writer, pushed, objects).await?);

    for table in [Table::Executions, Table::AuditLogs] {
        let mut writer = ObjectWriter::new(dest, table, run_id);
        let pushed =
            scan_table(store, table, snapshot, &mut writer, &mut tallies, &mut progress, *objects).await;
        written.push(finish_table(dest, table, run_id, snapshot, &mut writer, pushed, objects).await?);
    }

    // Counted at the end: what the snapshot left out, and that the source still holds exactly the rows read
    // up to the snapshot (a row written with an older time, or removed, while the scan ran would make the
    // export not "everything": it is then not finished, and the next export to the destination starts over).
    for (target, table) in
        [(CleanupTarget::Executions, Table::Executions), (CleanupTarget::AuditLogs, Table::AuditLogs)]
    {
        let plan = store.plan_cleanup(snapshot_selection(target, snapshot)).await?;
        let main = plan.tables.first().map_or(0, |t| t.rows);
        after.insert(target.as_str().to_string(), plan.total_rows.saturating_sub(main));
        let read = tallies[table.dir()].rows;
        if main != read {
            return Err(Error::conflict(format!(
                "{}: the source holds {main} rows up to the snapshot but the export read {read}: rows were \
                 written with an older time or removed while it ran; run the export again",
                table.dir()
            )));
        }
    }

    for w in &written {
        let table = w.manifest.table().expect("a known table");
        let want = tallies[table.dir()].rows;
        let events = if table == Table::Executions { tallies[EVENTS].rows } else { 0 };
        if w.manifest.rows != want || w.manifest.events != events {
            return Err(Error::internal(format!(
                "manifest {} lists {} rows and {} events, but {want} and {events} were read",
                w.key, w.manifest.rows, w.manifest.events
            )));
        }
    }

    let health = store.health().await?;
    let mut manifests: Vec<String> = written.iter().map(|w| w.key.clone()).collect();
    let marker = ExportJson {
        format_version: EXPORT_FORMAT_VERSION,
        plugin_version: crate::PLUGIN_VERSION.to_string(),
        run_id: run_id.to_string(),
        snapshot: time::rfc3339(snapshot),
        source: ExportSource { backend: health.backend.to_string(), location: health.location.to_string() },
        checksum_version: CHECKSUM_VERSION,
        tables: tallies.clone(),
        after_snapshot: after.clone(),
        manifests: manifests.clone(),
        created_at: Some(time::rfc3339(time::now_micros())),
    };
    write_created(dest, EXPORT_JSON, EXPORT_JSON, &marker.to_json()).await?;
    match dest.store().delete(&dest.path(IN_PROGRESS)).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
        Err(e) => {
            tracing::warn!(target: "parallax_storage::transfer", error = %e, "could not remove {IN_PROGRESS}; it is harmless")
        }
    }
    manifests.push(EXPORT_JSON.to_string());
    report.manifests = manifests;
    report.tables = TABLES.iter().map(|t| table_report(t, &tallies[*t])).collect();
    report.bytes = written.iter().flat_map(|w| &w.manifest.objects).map(|o| o.size).sum();
    report.objects = *objects;
    report.after_snapshot = after;
    tracing::info!(
        target: "parallax_storage::transfer",
        run = %run_id,
        objects = report.objects,
        bytes = report.bytes,
        "export finished"
    );
    Ok(())
}

/// Scans one table's snapshot in pages (sized by their documents) into objects.
async fn scan_table<S: Contract>(
    store: &S,
    table: Table,
    snapshot: i64,
    writer: &mut ObjectWriter<'_>,
    tallies: &mut BTreeMap<String, Tally>,
    progress: &mut Progress,
    objects_before: u64,
) -> Result<()> {
    let target = match table {
        Table::Executions => CleanupTarget::Executions,
        _ => CleanupTarget::AuditLogs,
    };
    let sel = snapshot_selection(target, snapshot);
    let mut after = None;
    let mut size = PageSize(FIRST_PAGE);
    let mut rows = 0u64;
    loop {
        let limit = size.0;
        let page: Vec<Record> = match table {
            Table::Executions => store
                .scan_executions(sel.clone(), after.clone(), limit)
                .await?
                .into_iter()
                .map(Record::Execution)
                .collect(),
            _ => store
                .scan_audit(sel.clone(), after.clone(), limit)
                .await?
                .into_iter()
                .map(|a| Record::Audit(a, None))
                .collect(),
        };
        let Some(last) = page.last() else { break };
        after = Some((last.at(), last.id().to_string()));
        let n = page.len();
        let mut weight = 0;
        for rec in &page {
            weight += rec.weight();
            match rec {
                Record::Execution(r) => {
                    tallies.get_mut("executions").expect("a table").add(checksum::execution(&r.execution));
                    let ev = tallies.get_mut(EVENTS).expect("a table");
                    for v in &r.events {
                        ev.add(checksum::event(v));
                    }
                }
                Record::Audit(a, _) => {
                    tallies.get_mut("audit_logs").expect("a table").add(checksum::audit(a))
                }
                Record::Pattern(_) => {}
            }
            writer.push(rec).await?;
        }
        rows += n as u64;
        progress.tick(table.dir(), rows, objects_before as usize + writer.done.len());
        if n < limit {
            break;
        }
        size.next(n, weight);
    }
    writer.close().await
}

/// Closes a table's writer (aborting on failure), then writes and checks its manifest (also for a table
/// without rows, so an export always has its three manifests).
async fn finish_table(
    dest: &Destination,
    table: Table,
    run_id: &str,
    snapshot: i64,
    writer: &mut ObjectWriter<'_>,
    pushed: Result<()>,
    objects: &mut u64,
) -> Result<Written> {
    if let Err(e) = pushed {
        writer.abort().await;
        *objects += writer.done.len() as u64;
        return Err(e);
    }
    let done = std::mem::take(&mut writer.done);
    *objects += done.len() as u64;
    let (rows, events) = done.iter().fold((0, 0), |(r, e), o| (r + o.rows, e + o.events));
    let oldest = done.iter().filter_map(|o| o.oldest.clone()).min();
    let newest = done.iter().filter_map(|o| o.newest.clone()).max();
    let manifest = Manifest {
        format_version: format::FORMAT_VERSION,
        record_schema_version: format::RECORD_SCHEMA_VERSION,
        plugin_version: crate::PLUGIN_VERSION.to_string(),
        table: table.dir().to_string(),
        run_id: run_id.to_string(),
        created_at: time::rfc3339(time::now_micros()),
        cutoff: None,
        max_count: None,
        limit: Some(LimitKey { at: time::rfc3339(snapshot + 1), id: MIN_ID.to_string() }),
        time_range: oldest.zip(newest).map(|(oldest, newest)| TimeRange { oldest, newest }),
        rows,
        events,
        min_id: done.iter().filter_map(|o| o.min_id.clone()).min(),
        max_id: done.iter().filter_map(|o| o.max_id.clone()).max(),
        objects: done,
        chain: None,
    };
    let key = format::manifest_key(table, run_id);
    write_created(dest, &key, "manifest", &manifest.to_json()).await?;
    Ok(Written { manifest, key })
}

/// Reads and checks `export.json` at the root of `dest`; `None` when there is none.
pub async fn read_export_json(dest: &Destination) -> Result<Option<ExportJson>> {
    match dest.store().get(&dest.path(EXPORT_JSON)).await {
        Ok(got) => {
            let bytes =
                got.bytes().await.map_err(|e| dest.error(&format!("cannot read {EXPORT_JSON}"), e))?;
            ExportJson::parse(dest.text(), &bytes).map(Some)
        }
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => {
            let e = dest.error(&format!("cannot read {EXPORT_JSON}"), e);
            if e.kind() == ErrorKind::NotFound {
                Ok(None)
            } else {
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_of_export_keys() {
        let r = "0190b3f2-7c1e-7a00-8000-000000000001";
        assert_eq!(run_of(&format!("2024/01/{r}-0001.ndjson.gz")).as_deref(), Some(r));
        assert_eq!(run_of(&format!("manifests/{r}.json")).as_deref(), Some(r));
        assert_eq!(run_of("notes.txt"), None);
    }

    #[test]
    fn pages_follow_their_documents() {
        let mut p = PageSize(FIRST_PAGE);
        p.next(64, 1000);
        assert_eq!(p.0, 128, "a full light page doubles");
        p.next(10, 1000);
        assert_eq!(p.0, 128, "a short page stays");
        p.next(128, PAGE_BYTES + 1);
        assert_eq!(p.0, 64, "a heavy page halves");
        for _ in 0..20 {
            p.next(p.0, 10);
        }
        assert_eq!(p.0, MAX_PAGE);
        for _ in 0..20 {
            p.next(p.0, usize::MAX);
        }
        assert_eq!(p.0, 1);
    }

    #[test]
    fn export_json_is_checked() {
        let mut tables: BTreeMap<String, Tally> =
            TABLES.iter().map(|t| (t.to_string(), Tally::default())).collect();
        tables.get_mut("executions").unwrap().add(12345);
        let e = ExportJson {
            format_version: 1,
            plugin_version: "0.1.0".into(),
            run_id: uuid::Uuid::now_v7().to_string(),
            snapshot: time::rfc3339(1_705_314_615_123_456),
            source: ExportSource { backend: "sqlite".into(), location: "/tmp/x.db".into() },
            checksum_version: CHECKSUM_VERSION,
            tables,
            after_snapshot: BTreeMap::from([("executions".into(), 2)]),
            manifests: vec!["executions/manifests/r.json".into()],
            created_at: None,
        };
        let back = ExportJson::parse("d", e.to_json().as_bytes()).unwrap();
        assert_eq!(back, e);
        assert_eq!(back.snapshot_micros(), 1_705_314_615_123_456);
        let v: serde_json::Value = serde_json::from_str(&e.to_json()).unwrap();
        assert_eq!(v["tables"]["executions"]["rows"], 1);
        assert_eq!(v["tables"]["executions"]["sum"], format!("{:032x}", 12345));
        for (bad, needle) in [
            (ExportJson { format_version: 2, ..e.clone() }, "formatVersion 2"),
            (ExportJson { checksum_version: 9, ..e.clone() }, "checksumVersion 9"),
            (ExportJson { run_id: "r".into(), ..e.clone() }, "runId \"r\""),
            (ExportJson { snapshot: "now".into(), ..e.clone() }, "snapshot \"now\""),
            (
                ExportJson {
                    tables: e.tables.clone().into_iter().filter(|(t, _)| t != "audit_logs").collect(),
                    ..e.clone()
                },
                "table audit_logs",
            ),
        ] {
            let err = ExportJson::parse("d", bad.to_json().as_bytes()).unwrap_err();
            assert!(
                err.to_string().contains("export.json at d is not valid") && err.to_string().contains(needle),
                "{err}"
            );
        }
    }
}
