//! `import`: an export (or a plain archive) into the open storage, with `copy`'s rules: a non-empty target is
//! refused unless `merge`, rows present by id are skipped when equal and reported as conflicts when different
//! (never overwritten), a run killed half-way resumes, and the end verifies counts and checksums.
//!
//! 1. The whole source is verified first, as `restore` does (every manifest and object: size, SHA-256, every
//!    line a record, counts); an export's manifests must also add up to the rows of its `export.json`. A
//!    damaged source is refused before anything is written.
//! 2. Patterns, then executions (with their events), then audit entries are landed in batches (at most
//!    [`BATCH_ROWS`] rows and about [`BATCH_BYTES`] of documents) through [`super::land::Landing`]: insert if
//!    absent, read back by id, compare checksums. After every batch the transfer state is saved in the target
//!    with a cursor per manifest (records landed from it), so a re-run skips what was landed.
//! 3. `finish` verifies: per table the rows read back add up to the rows read, and for an export to its
//!    `export.json` (rows and checksum). A plain archive (no `export.json`) is checked by counts only.
//!
//! The source is named `export <run-id> at <source>` (or `archive at <source>`) in the transfer state: the
//! same import run again resumes an unfinished run, or finds everything landed (a catch-up with nothing to do).

use std::{collections::BTreeMap, time::Instant};

use parallax_storage_abi::transfer::{ImportParams, TransferReport};

use super::{
    checksum::Tally,
    export::{read_export_json, ExportJson},
    land::Landing,
    pause_point,
    state::{Cursor, Kind, Phase},
};
use crate::{
    archive::{
        format::{self, Manifest, Record, Table},
        read::{self, ObjectReader},
        run::{check_manifest, join, no_manifest, open_source, Source},
    },
    contract::Contract,
    error::{Error, Result},
    retention::PROGRESS_EVERY,
    time,
};

/// At most this many rows per landed batch.
pub const BATCH_ROWS: usize = 500;
/// About this many bytes of documents per landed batch (a batch ends once it reaches it).
pub const BATCH_BYTES: usize = 8 << 20;
/// Records per read from an object.
const READ: usize = 64;

/// The `import` op.
pub async fn run<S: Contract>(store: &S, params: ImportParams) -> Result<TransferReport> {
    let text = params.source.trim().to_string();
    let src = open_source(&store.storage_config().archive, &text).await?;
    // One manifest named: a plain archive of that manifest, even inside an export.
    let one_manifest = text.ends_with(".json") && text.contains("/manifests/");
    let export = if one_manifest { None } else { read_export_json(&src.dest).await? };
    let plan = verified_plan(&src, &text, export.as_ref()).await?;

    let (label, snapshot) = match &export {
        Some(e) => (format!("export {} at {text}", e.run_id), e.snapshot_micros()),
        None => {
            let newest = plan.iter().filter_map(|(_, m)| time::parse_rfc3339(&m.created_at)).max();
            (format!("archive at {text}"), newest.unwrap_or_else(time::now_micros))
        }
    };
    let health = store.health().await?;
    let target_label = format!("{} {}", health.backend, health.location);
    let _lock = match params.dry_run {
        true => None,
        false => Some(store.lock_runner().await?.ok_or_else(|| {
            Error::conflict(format!(
                "a cleanup, archive or transfer is running on the target {target_label}; retry when it ends"
            ))
        })?),
    };
    let mut landing =
        Landing::begin(store, Kind::Import, label.clone(), snapshot, params.merge, params.dry_run).await?;
    if let Some(e) = &export {
        if landing.state().after_snapshot.is_empty() {
            landing.state_mut().after_snapshot = e.after_snapshot.clone();
        }
    }
    tracing::info!(
        target: "parallax_storage::transfer",
        "import from {label} into {target_label}: {} run {}, snapshot {}",
        landing.mode(),
        landing.state().id,
        time::rfc3339(landing.state().snapshot)
    );
    let mut walk = Walk { progress: Instant::now(), first_batch: true, first_of_table: true };
    for table in Table::ALL {
        let phase = match table {
            Table::Patterns => Phase::Patterns,
            Table::Executions => Phase::Executions,
            Table::AuditLogs => Phase::Audit,
        };
        if landing.state().phase < phase {
            landing.state_mut().phase = phase;
        }
        walk.first_of_table = true;
        for (root, m) in plan.iter().filter(|(_, m)| m.table() == Some(table)) {
            land_manifest(&src, root, m, &mut landing, &mut walk).await?;
        }
        if table == Table::Patterns {
            landing.save().await?;
            pause_point("after-patterns").await;
        }
    }
    landing.state_mut().phase = Phase::Verify;
    landing.save().await?;
    pause_point("before-verify").await;
    if !params.dry_run {
        store.after_bulk_load().await?;
    }
    let expected: Option<BTreeMap<String, Tally>> = export.map(|e| e.tables);
    landing.finish(label, target_label, expected).await
}

/// Checks every manifest to import and every object they name before anything is written; for an export,
/// only its own three manifests, which must add up to its `export.json`. Returns `(root, manifest)` in the
/// order to import: table (patterns, executions, audit entries), then oldest run first.
async fn verified_plan(
    src: &Source,
    text: &str,
    export: Option<&ExportJson>,
) -> Result<Vec<(String, Manifest)>> {
    let keys: Vec<(String, String)> = match export {
        Some(e) => {
            let mut keys = Vec::new();
            for t in Table::ALL {
                let key = format::manifest_key(t, &e.run_id);
                if !src.manifests.iter().any(|(root, k)| root.is_empty() && *k == key) {
                    return Err(Error::invalid(format!(
                        "import from {text} refused, nothing was written: export.json names run {} but its \
                         manifest {key} is missing; the export is incomplete or damaged, export again",
                        e.run_id
                    )));
                }
                keys.push((String::new(), key));
            }
            keys
        }
        None if src.manifests.is_empty() => return Err(no_manifest(text)),
        None => src.manifests.clone(),
    };
    let mut problems = Vec::new();
    let mut plan = Vec::new();
    for (root, key) in &keys {
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
    if let Some(e) = export {
        for (_, m) in &plan {
            let Some(table) = m.table() else { continue };
            let rows = e.tables.get(table.dir()).map_or(0, |t| t.rows);
            let events = match table {
                Table::Executions => e.tables.get("execution_events").map_or(0, |t| t.rows),
                _ => 0,
            };
            if m.run_id != e.run_id {
                problems.push(format!(
                    "manifest {}: run {}, but export.json names run {}",
                    format::manifest_key(table, &m.run_id),
                    m.run_id,
                    e.run_id
                ));
            }
            if m.rows != rows || m.events != events {
                problems.push(format!(
                    "manifest {}: {} rows and {} events, export.json says {rows} and {events}",
                    format::manifest_key(table, &m.run_id),
                    m.rows,
                    m.events
                ));
            }
        }
    }
    if !problems.is_empty() {
        return Err(Error::invalid(format!(
            "import from {text} refused, nothing was written: {}",
            problems.join("; ")
        )));
    }
    plan.sort_by(|a, b| {
        (a.1.table(), &a.1.created_at, &a.1.run_id).cmp(&(b.1.table(), &b.1.created_at, &b.1.run_id))
    });
    Ok(plan)
}

/// Progress and the one-time pause points of a run.
struct Walk {
    progress: Instant,
    first_batch: bool,
    first_of_table: bool,
}

/// A batch being filled.
#[derive(Default)]
struct Batch {
    records: Vec<Record>,
    bytes: usize,
}

impl Batch {
    fn full(&self) -> bool {
        self.records.len() >= BATCH_ROWS || self.bytes >= BATCH_BYTES
    }
}

/// Lands one manifest's records from its cursor (records landed from it before) on.
async fn land_manifest<T: Contract>(
    src: &Source,
    root: &str,
    m: &Manifest,
    landing: &mut Landing<'_, T>,
    walk: &mut Walk,
) -> Result<()> {
    let table = m.table().expect("a parsed manifest names a known table");
    let mkey = join(root, &format::manifest_key(table, &m.run_id));
    let cursor = landing.state().cursors.get(&mkey).cloned();
    let skip = cursor.as_ref().map_or(0, |c| c.at.max(0) as u64);
    if skip >= m.rows {
        return Ok(());
    }
    let mut position = 0u64; // records of this manifest read so far
    let mut batch = Batch::default();
    for obj in &m.objects {
        if position + obj.rows <= skip {
            position += obj.rows;
            continue;
        }
        let key = join(root, &obj.key);
        let mut reader = ObjectReader::open(&src.dest, &key, Some(table)).await?;
        loop {
            let records = reader.next_batch(READ).await?;
            if records.is_empty() {
                break;
            }
            for r in records {
                position += 1;
                if position <= skip {
                    if position == skip {
                        check_resume_point(cursor.as_ref(), &r, &mkey)?;
                    }
                    continue;
                }
                batch.bytes += r.weight();
                batch.records.push(r);
                if batch.full() {
                    land(landing, &mkey, position, std::mem::take(&mut batch), walk, table).await?;
                }
            }
        }
        let got = reader.finish().await?;
        if let Some(why) = read::mismatch(obj, &got, true) {
            return Err(Error::invalid(format!(
                "object {key} changed while it was imported ({why}); the rows landed before stay, importing \
                 again resumes"
            )));
        }
    }
    if !batch.records.is_empty() {
        land(landing, &mkey, position, batch, walk, table).await?;
    }
    Ok(())
}

/// The record before a resumed run's first one must be the one its state names: the source is the same.
fn check_resume_point(cursor: Option<&Cursor>, r: &Record, mkey: &str) -> Result<()> {
    match cursor {
        Some(c) if !c.id.is_empty() && c.id != r.id() => Err(Error::conflict(format!(
            "the saved import state says record {} of {mkey} is {}, the source has {} there: the source \
             changed since the interrupted import; import from the original source",
            c.at,
            c.id,
            r.id()
        ))),
        _ => Ok(()),
    }
}

/// Lands one batch, moves the manifest's cursor past it and saves the state.
async fn land<T: Contract>(
    landing: &mut Landing<'_, T>,
    mkey: &str,
    position: u64,
    batch: Batch,
    walk: &mut Walk,
    table: Table,
) -> Result<()> {
    let last = batch.records.last().map(|r| r.id().to_string()).unwrap_or_default();
    let mut patterns = Vec::new();
    let mut executions = Vec::new();
    let mut audit = Vec::new();
    for r in batch.records {
        match r {
            Record::Pattern(p) => patterns.push(p),
            Record::Execution(e) => executions.push(e),
            Record::Audit(a) => audit.push(a),
        }
    }
    landing.patterns(patterns).await?;
    landing.executions(executions).await?;
    landing.audit(audit).await?;
    landing.state_mut().cursors.insert(mkey.to_string(), Cursor { at: position as i64, id: last });
    let first_executions = walk.first_batch && table == Table::Executions;
    if first_executions {
        // The first executions batch landed, its state not saved: the window a re-run must not duplicate.
        pause_point("before-save").await;
    }
    landing.save().await?;
    if first_executions {
        walk.first_batch = false;
    }
    if walk.first_of_table {
        walk.first_of_table = false;
        match table {
            Table::Executions => pause_point("mid-executions").await,
            Table::AuditLogs => pause_point("mid-audit").await,
            Table::Patterns => {}
        }
    }
    if walk.progress.elapsed() >= PROGRESS_EVERY {
        walk.progress = Instant::now();
        let t = landing.state().tables.get(table.dir()).cloned().unwrap_or_default();
        tracing::info!(
            target: "parallax_storage::transfer",
            "import: {}: {} rows read, {} copied, {} present, {} conflicts",
            table.dir(),
            t.source.rows + t.conflicts,
            t.copied,
            t.present,
            t.conflicts
        );
    }
    Ok(())
}
