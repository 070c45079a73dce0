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

    // `dir/` and `dir` are one source: a re-run resumes whichever way it is spelled.
    let shown = match text.trim_end_matches('/') {
        "" => text.as_str(),
        t => t,
    };
    let (label, snapshot) = match &export {
        Some(e) => (format!("export {} at {shown}", e.run_id), e.snapshot_micros()),
        None => {
            let newest = plan.iter().filter_map(|(_, m)| time::parse_rfc3339(&m.created_at)).max();
            (format!("archive at {shown}"), newest.unwrap_or_else(time::now_micros))
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
            Record::Audit(a, _) => audit.push(a),
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

/// Helpers of the tests below (SQLite stores; they need the SQLite transfer primitives).
#[cfg(test)]
mod tests_support {
    use std::path::Path;

    use abi_stable::std_types::{RNone, RSome, RVec};
    use parallax_storage_abi::{
        transfer::TransferReport, EventKind, ExecutionStatus, NewAuditEntry, NewEvent, NewExecution,
        NewPattern, OpenOptions,
    };

    use super::*;
    use crate::{
        config::{SqliteConfig, StorageConfig},
        rules::Completion,
        transfer::export::{all_patterns, snapshot_selection},
    };

    const T0: i64 = 1_705_314_615_123_456; // 2024-01-15T10:30:15.123456Z
    const MONTH: i64 = 31 * 86_400_000_000;

    pub(super) async fn sqlite(path: &Path) -> crate::sqlite::SqliteBackend {
        let cfg = StorageConfig {
            sqlite: SqliteConfig { path: path.to_path_buf(), ..SqliteConfig::default() },
            ..StorageConfig::default()
        };
        crate::sqlite::SqliteBackend::open(cfg, OpenOptions::default()).await.unwrap()
    }

    pub(super) fn id(n: u32) -> String {
        format!("0190b3f2-7c1e-7a00-8000-{n:012}")
    }

    /// Three pattern names with versions (unicode, no description/author, a large definition), executions
    /// of every status over three months with events (one with a 1 MiB input), audit entries.
    pub(super) async fn seeded(path: &Path) -> crate::sqlite::SqliteBackend {
        let b = sqlite(path).await;
        for (n, name, version) in
            [(1, "naïve ✓", "1.0.0"), (2, "naïve ✓", "1.1.0"), (3, "b", "0.1.0"), (4, "c", "2.0.0")]
        {
            let p = NewPattern {
                id: RSome(id(5000 + n).into()),
                name: name.into(),
                version: version.into(),
                description: if n == 3 { RNone } else { RSome("日本 description".into()) },
                definition: if n == 4 {
                    format!(r#"{{"steps": ["{}"], "n": 1e2}}"#, "y".repeat(300_000)).into()
                } else {
                    format!(r#"{{"steps": [{n}], "z": 2.50}}"#).into()
                },
                created_by: if n == 3 { RNone } else { RSome("ünïcode".into()) },
            };
            b.put_pattern(p, true).await.unwrap();
        }
        let statuses = [
            None,
            Some(ExecutionStatus::Completed),
            Some(ExecutionStatus::Failed),
            Some(ExecutionStatus::Cancelled),
            Some(ExecutionStatus::Completed),
            None,
        ];
        for (i, status) in statuses.into_iter().enumerate() {
            let n = i as u32 + 1;
            let at = T0 + i64::from(n % 3) * MONTH + i64::from(n) * 1_000_000;
            let input = if n == 2 {
                format!(r#"{{"big": "{}"}}"#, "x".repeat(1 << 20))
            } else {
                format!(r#"{{"text": "needle{n} 🚀"}}"#)
            };
            let e = NewExecution {
                id: RSome(id(n).into()),
                pattern_name: "naïve ✓".into(),
                pattern_version: "1.0.0".into(),
                status: if n == 6 { ExecutionStatus::Pending } else { ExecutionStatus::Running },
                input: RSome(input.into()),
                metadata: RSome(r#"{"team": "a", "k": [1, 2.0]}"#.into()),
                tags: RVec::from(vec!["x".into(), "y z".into()]),
                started_at: RSome(at),
            };
            b.create_execution(e, true).await.unwrap();
            for k in 1..=3u32 {
                let ev = NewEvent {
                    kind: EventKind::StepResult,
                    payload: format!(r#"{{"step": {k}}}"#).into(),
                    recorded_at: RSome(at + i64::from(k)),
                };
                b.append_event(id(n), id(1000 + n * 10 + k), ev).await.unwrap();
            }
            if let Some(status) = status {
                let c = Completion {
                    status,
                    output: RSome(r#"{"summary": "done"}"#.into()),
                    error: if status == ExecutionStatus::Failed {
                        RSome(r#"{"message": "boom"}"#.into())
                    } else {
                        RNone
                    },
                    completed_at: at + 500_123,
                };
                b.complete_execution(id(n), c).await.unwrap();
            }
        }
        for n in 1..=5u32 {
            let a = NewAuditEntry {
                id: RSome(id(9000 + n).into()),
                timestamp: RSome(T0 + i64::from(n) * MONTH / 2),
                action: "execution.create".into(),
                actor: if n == 2 { RNone } else { RSome("alice ✓".into()) },
                ip_address: if n == 3 { RSome("2001:db8::1".into()) } else { RSome("10.0.0.1".into()) },
                details: RSome(r#"{"b": 1, "a": [true]}"#.into()),
                ..NewAuditEntry::default()
            };
            b.append_audit(vec![a]).await.unwrap();
        }
        b
    }

    /// Everything a store holds, as comparable text (patterns, executions with events, audit entries).
    pub(super) async fn everything<B: Contract>(b: &B) -> (Vec<String>, Vec<String>, Vec<String>) {
        let mut patterns: Vec<String> =
            all_patterns(b).await.unwrap().iter().map(|p| format::encode_pattern(p).unwrap()).collect();
        patterns.sort();
        let now = time::now_micros();
        let sel = snapshot_selection(parallax_storage_abi::retention::CleanupTarget::Executions, now);
        let executions = b
            .scan_executions(sel, None, 10_000)
            .await
            .unwrap()
            .iter()
            .map(|r| format::encode_execution(r).unwrap())
            .collect();
        let sel = snapshot_selection(parallax_storage_abi::retention::CleanupTarget::AuditLogs, now);
        let audit = b
            .scan_audit(sel, None, 10_000)
            .await
            .unwrap()
            .iter()
            .map(|a| format::encode_audit(a, None).unwrap())
            .collect();
        (patterns, executions, audit)
    }

    pub(super) fn table<'r>(
        r: &'r TransferReport,
        name: &str,
    ) -> &'r parallax_storage_abi::transfer::TableTransfer {
        r.tables.iter().find(|t| t.table == name).unwrap()
    }

    pub(super) fn import_params(dir: &Path) -> ImportParams {
        ImportParams { source: dir.display().to_string(), ..ImportParams::default() }
    }
}

/// Export → import over SQLite: every table, every status, checked row by row; the export is a valid
/// archive; re-runs, refusals and damage.
#[cfg(test)]
mod tests {
    use parallax_storage_abi::{archive::VerifyParams, transfer::ExportParams, ErrorKind};

    use super::{tests_support::*, *};
    use crate::{
        archive::run::verify,
        transfer::{
            export::{self, EXPORT_JSON, IN_PROGRESS},
            Store as _,
        },
    };

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_export_imports_exactly_and_is_an_archive() {
        let dir = tempfile::tempdir().unwrap();
        let source = seeded(&dir.path().join("source.db")).await;
        let out = dir.path().join("export");
        let dest = out.display().to_string();

        let dry =
            export::run(&source, ExportParams { destination: dest.clone(), dry_run: true }).await.unwrap();
        assert!(!out.exists(), "a dry run creates nothing");
        let rows: Vec<u64> = dry.tables.iter().map(|t| t.source_rows).collect();
        assert_eq!(rows, [4, 6, 18, 5], "{dry:#?}");

        let e =
            export::run(&source, ExportParams { destination: dest.clone(), dry_run: false }).await.unwrap();
        let rows: Vec<u64> = e.tables.iter().map(|t| t.source_rows).collect();
        assert_eq!(rows, [4, 6, 18, 5], "{e:#?}");
        assert_eq!(e.manifests.last().map(String::as_str), Some(EXPORT_JSON));
        assert_eq!(e.manifests.len(), 4);
        assert!(out.join(EXPORT_JSON).exists() && !out.join(IN_PROGRESS).exists());
        assert!(e.objects >= 5, "objects split by month: {}", e.objects);
        let v = verify(&crate::config::ArchiveConfig::default(), VerifyParams { source: dest.clone() })
            .await
            .unwrap();
        assert!(v.ok && v.orphans.is_empty() && v.manifests.len() == 3, "{v:#?}");

        // restore reads it too: every table, patterns included.
        let restored = sqlite(&dir.path().join("restored.db")).await;
        let rr = crate::archive::run::restore(
            &restored,
            parallax_storage_abi::archive::RestoreParams { source: dest.clone(), dry_run: false },
        )
        .await
        .unwrap();
        let want: BTreeMap<String, u64> =
            [("patterns", 4), ("executions", 6), ("execution_events", 18), ("audit_logs", 5)]
                .map(|(t, n)| (t.to_string(), n))
                .into();
        assert_eq!(rr.inserted, want, "{rr:#?}");
        assert_eq!(everything(&restored).await, everything(&source).await);
        let _ = restored.shutdown().await;

        // A second export to the same destination is refused, naming export.json.
        let again = export::run(&source, ExportParams { destination: dest.clone(), dry_run: false }).await;
        let err = again.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Conflict);
        assert!(err.to_string().contains("already holds a finished export (export.json: run"), "{err}");

        // Import into an empty store: verified against export.json, equal row by row.
        let target = sqlite(&dir.path().join("target.db")).await;
        let dry = run(&target, ImportParams { dry_run: true, ..import_params(&out) }).await.unwrap();
        assert!(dry.dry_run && table(&dry, "executions").copied == 6, "{dry:#?}");
        assert!(everything(&target).await.0.is_empty(), "a dry run writes nothing");
        let r = run(&target, import_params(&out)).await.unwrap();
        assert!(r.verified, "{r:#?}");
        assert_eq!(r.mode, "fresh");
        assert_eq!(r.source, format!("export {} at {dest}", e.run_id));
        for (t, n) in [("patterns", 4), ("executions", 6), ("execution_events", 18), ("audit_logs", 5)] {
            let got = table(&r, t);
            assert_eq!((got.source_rows, got.copied, got.target_rows, got.conflicts), (n, n, n, 0), "{t}");
            let want = e.tables.iter().find(|x| x.table == t).unwrap();
            assert_eq!(got.source_checksum, want.source_checksum, "{t}");
            assert_eq!(got.target_checksum, want.source_checksum, "{t}");
        }
        assert_eq!(everything(&target).await, everything(&source).await);

        // The same import again: nothing to do, still verified.
        let r = run(&target, import_params(&out)).await.unwrap();
        assert!(r.verified && r.mode == "catch-up", "{r:#?}");
        assert_eq!(table(&r, "executions").source_rows, 6);

        // Another export's import into the now non-empty store is refused without merge; with merge the
        // equal rows are present and a changed one is a conflict, not overwritten.
        let third = sqlite(&dir.path().join("third.db")).await;
        let r = run(&third, import_params(&out)).await.unwrap();
        assert!(r.verified);
        let err = run(
            &third,
            ImportParams {
                source: format!("{dest}/executions/manifests/{}.json", e.run_id),
                ..ImportParams::default()
            },
        )
        .await
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
        assert!(err.to_string().contains("is not empty"), "{err}");
        let merged = run(
            &third,
            ImportParams {
                source: format!("{dest}/executions/manifests/{}.json", e.run_id),
                merge: true,
                ..ImportParams::default()
            },
        )
        .await
        .unwrap();
        assert!(merged.verified, "{merged:#?}");
        assert_eq!(merged.mode, "merge");
        assert_eq!(table(&merged, "executions").present, 6);
        assert!(merged.source.starts_with("archive at "), "{}", merged.source);
        let _ = source.shutdown().await;
        let _ = target.shutdown().await;
        let _ = third.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn damage_is_refused_before_writing_and_unfinished_exports_are_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let source = seeded(&dir.path().join("source.db")).await;
        let out = dir.path().join("export");
        let dest = out.display().to_string();
        let e =
            export::run(&source, ExportParams { destination: dest.clone(), dry_run: false }).await.unwrap();

        // A damaged object: refused, nothing written.
        let obj = std::fs::read_dir(out.join("audit_logs/2024/02")).unwrap().next().unwrap().unwrap().path();
        let good = std::fs::read(&obj).unwrap();
        let mut bad = good.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0xff;
        std::fs::write(&obj, &bad).unwrap();
        let target = sqlite(&dir.path().join("target.db")).await;
        let err = run(&target, import_params(&out)).await.unwrap_err();
        assert!(
            err.to_string().contains("refused, nothing was written")
                && err.to_string().contains("audit_logs/2024/02"),
            "{err}"
        );
        assert!(target.transfer_states().await.unwrap().is_empty(), "no state saved");
        assert_eq!(everything(&target).await, (vec![], vec![], vec![]));
        std::fs::write(&obj, &good).unwrap();

        // export.json whose figures do not match its manifests: refused.
        let ej = out.join(EXPORT_JSON);
        let text = std::fs::read_to_string(&ej).unwrap();
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["tables"]["audit_logs"]["rows"] = 4.into();
        std::fs::write(&ej, v.to_string()).unwrap();
        let err = run(&target, import_params(&out)).await.unwrap_err();
        assert!(err.to_string().contains("export.json says 4 and 0"), "{err}");
        // A checksum that does not match what the rows add up to: imported, not verified.
        v["tables"]["audit_logs"]["rows"] = 5.into();
        v["tables"]["audit_logs"]["sum"] = format!("{:032x}", 1).into();
        std::fs::write(&ej, v.to_string()).unwrap();
        let r = run(&target, import_params(&out)).await.unwrap();
        assert!(!r.verified && !table(&r, "audit_logs").ok && table(&r, "executions").ok, "{r:#?}");
        std::fs::write(&ej, &text).unwrap();

        // An export killed before export.json: its objects go, the next export succeeds.
        std::fs::remove_file(&ej).unwrap();
        std::fs::write(out.join(IN_PROGRESS), format!(r#"{{"runId":"{}","snapshot":"x"}}"#, e.run_id))
            .unwrap();
        let e2 =
            export::run(&source, ExportParams { destination: dest.clone(), dry_run: false }).await.unwrap();
        assert_ne!(e2.run_id, e.run_id);
        let v = verify(&crate::config::ArchiveConfig::default(), VerifyParams { source: dest.clone() })
            .await
            .unwrap();
        assert!(v.ok && v.orphans.is_empty() && v.manifests.iter().all(|m| m.run_id == e2.run_id), "{v:#?}");

        // Content an export did not write is refused.
        let other = dir.path().join("other");
        std::fs::create_dir_all(other.join("executions/manifests")).unwrap();
        std::fs::write(other.join("executions/manifests/x.json"), "{}").unwrap();
        let err =
            export::run(&source, ExportParams { destination: other.display().to_string(), dry_run: false })
                .await
                .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Conflict);
        assert!(
            err.to_string()
                .contains("holds no unfinished export (1 files, e.g. executions/manifests/x.json)"),
            "{err}"
        );
        let _ = source.shutdown().await;
        let _ = target.shutdown().await;
    }
}

#[cfg(test)]
mod resume_tests {
    use parallax_storage_abi::transfer::ExportParams;

    use super::{tests_support::*, *};
    use crate::transfer::export;

    /// A run stopped after its patterns and the first execution (state saved) resumes from its cursors: the
    /// rest lands once, the totals match export.json (a record counted twice would not).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stopped_import_resumes_from_its_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let source = seeded(&dir.path().join("source.db")).await;
        let out = dir.path().join("export");
        let e = export::run(&source, ExportParams { destination: out.display().to_string(), dry_run: false })
            .await
            .unwrap();
        let target = sqlite(&dir.path().join("target.db")).await;

        let src =
            open_source(&crate::config::ArchiveConfig::default(), &out.display().to_string()).await.unwrap();
        let ej = read_export_json(&src.dest).await.unwrap().unwrap();
        let plan = verified_plan(&src, "x", Some(&ej)).await.unwrap();
        let label = format!("export {} at {}", e.run_id, out.display());
        let mut landing =
            Landing::begin(&target, Kind::Import, label, ej.snapshot_micros(), false, false).await.unwrap();
        let mut walk = Walk { progress: Instant::now(), first_batch: false, first_of_table: false };
        land_manifest(&src, "", &plan[0].1, &mut landing, &mut walk).await.unwrap();
        let m = &plan[1].1;
        assert_eq!(m.table(), Some(Table::Executions));
        let mut reader =
            ObjectReader::open(&src.dest, &m.objects[0].key, Some(Table::Executions)).await.unwrap();
        let first = reader.next_batch(1).await.unwrap().remove(0);
        let mkey = format::manifest_key(Table::Executions, &m.run_id);
        let batch = Batch { bytes: 0, records: vec![first.clone()] };
        land(&mut landing, &mkey, 1, batch, &mut walk, Table::Executions).await.unwrap();
        drop(landing);

        let r = run(&target, import_params(&out)).await.unwrap();
        assert_eq!(r.mode, "resumed");
        assert!(r.verified, "{r:#?}");
        let ex = table(&r, "executions");
        assert_eq!((ex.source_rows, ex.copied, ex.target_rows), (6, 6, 6));
        assert_eq!(table(&r, "patterns").copied, 4);
        assert_eq!(everything(&target).await, everything(&source).await);

        // A saved cursor that names another record than the source has there: the source changed.
        let other = sqlite(&dir.path().join("other.db")).await;
        let label = format!("export {} at {}", e.run_id, out.display());
        let mut landing =
            Landing::begin(&other, Kind::Import, label, ej.snapshot_micros(), false, false).await.unwrap();
        landing.state_mut().cursors.insert(mkey.clone(), Cursor { at: 1, id: id(999) });
        landing.save().await.unwrap();
        drop(landing);
        let err = run(&other, import_params(&out)).await.unwrap_err();
        assert!(err.to_string().contains("the source changed since the interrupted import"), "{err}");
        for s in [&source, &target, &other] {
            let _ = s.shutdown().await;
        }
    }
}
