//! The `copy` op: the open storage (the source) copies everything up to a snapshot cut into a target the
//! plugin opens itself from `CopyParams.target`, landing page after page through [`super::land::Landing`]
//! (insert-if-absent, read back, compare), saving its state in the target after each page so that a killed
//! run resumes, and verifying counts and checksums per table at the end.
//!
//! Order: patterns (every version, by name) → executions (any status, with their events, by `(started_at,
//! id)`) → audit entries (by `(timestamp, id)`) → the unfinished executions copied are read again from the
//! source (those that changed are reported) → the source is recounted over the snapshot → verification.
//! While a page lands in the target the next one is read from the source.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use parallax_storage_abi::{
    retention::CleanupTarget,
    transfer::{CopyParams, TransferReport},
    ErrorKind, OpenOptions,
};
use serde_json::Value;

use super::{
    land::{hashed, Landing, RecordHashes},
    pause_point,
    state::{Cursor, Kind, Phase, RecountBase},
};
use crate::{
    archive::ExecutionRecord,
    config::{BackendType, StorageConfig},
    contract::Contract,
    error::{Error, Result},
    rules::{Key, Selection, MIN_ID},
    validate::Page,
};

/// Pattern names per source read.
const PATTERN_NAMES: usize = 200;
/// Audit entries per page.
const AUDIT_PAGE: usize = 2000;
/// Executions per page: the first page, the bounds, and the documents' size a page grows towards.
const FIRST_PAGE: usize = 64;
const MIN_PAGE: usize = 16;
const MAX_PAGE: usize = 4096;
/// The largest page of the owned fast path ([`super::state::TransferState::owned`]).
const MAX_OWNED_PAGE: usize = 16_384;
const PAGE_BYTES: usize = 8 << 20;
/// Executions per read of the target when an owned run computes the target's checksums.
const VERIFY_PAGE: usize = 8192;
/// Ids per read by id.
const FETCH_CHUNK: usize = 1000;
/// At most one progress line per this interval.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// Runs `copy` from `source` into the storage `params.target` describes.
pub async fn run<S: Contract>(source: &S, params: CopyParams) -> Result<TransferReport> {
    let label = params.target_label.clone().unwrap_or_else(|| "the copy target".to_string());
    let cfg = parse_target(&params.target, &label)?;
    if same_local_store(source.storage_config(), &cfg) {
        return Err(same_store(&label));
    }
    let options = OpenOptions { maintenance: params.dry_run };
    // What a dry run's open creates (an empty database file, a store directory) is removed again.
    let created = if params.dry_run { new_local_paths(&cfg) } else { Vec::new() };
    let result = open_and_copy(source, cfg, options, &params).await;
    for path in created.iter().filter(|p| p.exists()) {
        // It did not exist when this dry run started: what is in it is what the open put there.
        let removed = if path.is_dir() { std::fs::remove_dir_all(path) } else { std::fs::remove_file(path) };
        if let Err(e) = removed {
            tracing::warn!(target: "parallax_storage::transfer", "dry run: cannot remove {}: {e}", path.display());
        }
    }
    result
}

/// The local paths the target's open would create that do not exist yet.
fn new_local_paths(cfg: &StorageConfig) -> Vec<PathBuf> {
    let candidates: Vec<PathBuf> = match cfg.backend {
        BackendType::Sqlite => ["", "-wal", "-shm", "-journal"]
            .iter()
            .map(|suffix| {
                let mut p = cfg.sqlite.path.clone().into_os_string();
                p.push(suffix);
                PathBuf::from(p)
            })
            .collect(),
        BackendType::File => cfg.file.iter().map(|f| f.base_path.clone()).collect(),
        BackendType::Postgresql => Vec::new(),
    };
    candidates.into_iter().filter(|p| std::fs::symlink_metadata(p).is_err()).collect()
}

async fn open_and_copy<S: Contract>(
    source: &S,
    cfg: StorageConfig,
    options: OpenOptions,
    params: &CopyParams,
) -> Result<TransferReport> {
    match cfg.backend {
        BackendType::Sqlite => {
            let target = opened(crate::sqlite::SqliteBackend::open(cfg, options).await, params)?;
            with_target(source, target, params).await
        }
        BackendType::Postgresql => {
            let target = opened(crate::postgres::PostgresBackend::open(cfg, options).await, params)?;
            with_target(source, target, params).await
        }
        BackendType::File => {
            let target = opened(crate::file::FileBackend::open(cfg, options).await, params)?;
            with_target(source, target, params).await
        }
    }
}

/// The target's config; an error never echoes a value that may be a secret.
fn parse_target(text: &str, label: &str) -> Result<StorageConfig> {
    crate::config::parse(text).map_err(|e| {
        let message = match serde_json::from_str::<Value>(text) {
            Ok(v) => {
                let mut m = e.to_string();
                let mut secrets = Vec::new();
                secret_strings(&v, false, &mut secrets);
                for s in secrets.into_iter().filter(|s| !s.is_empty()) {
                    m = m.replace(&s, "***");
                }
                m
            }
            Err(j) => format!("it is not valid JSON (line {}, column {})", j.line(), j.column()),
        };
        Error::invalid(format!("{label}: invalid storage config: {message}"))
    })
}

/// The string values under keys that may hold a secret (a password, a URL with credentials, a key).
fn secret_strings(v: &Value, secret: bool, out: &mut Vec<String>) {
    match v {
        Value::String(s) if secret => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|i| secret_strings(i, secret, out)),
        Value::Object(map) => {
            for (k, v) in map {
                let k = k.to_ascii_lowercase();
                let secret = secret
                    || ["pass", "secret", "token", "url", "key", "credential", "dsn"]
                        .iter()
                        .any(|w| k.contains(w));
                secret_strings(v, secret, out);
            }
        }
        _ => {}
    }
}

/// The target's open, with the fix for a schema that is behind.
fn opened<T>(result: Result<T>, params: &CopyParams) -> Result<T> {
    let label = params.target_label.as_deref().unwrap_or("the copy target");
    result.map_err(|e| {
        let message = &e.0.message;
        match e.kind() {
            ErrorKind::Schema => {
                let config = params.target_label.as_deref().unwrap_or("<target config>");
                Error::schema(format!(
                    "{label}: {message}; run `parallax --config {config} storage migrate up` first"
                ))
            }
            kind => Error::new(kind, format!("{label}: {message}")),
        }
    })
}

fn same_store(label: &str) -> Error {
    Error::invalid(format!(
        "{label} is the storage this copy reads from; a copy needs another storage as its target (pass the \
         config of a different database, file or directory)"
    ))
}

/// SQLite into the same file or a file store into the same directory.
fn same_local_store(source: &StorageConfig, target: &StorageConfig) -> bool {
    match (source.backend, target.backend) {
        (BackendType::Sqlite, BackendType::Sqlite) => same_path(&source.sqlite.path, &target.sqlite.path),
        (BackendType::File, BackendType::File) => match (&source.file, &target.file) {
            (Some(a), Some(b)) => same_path(&a.base_path, &b.base_path),
            _ => false,
        },
        _ => false,
    }
}

fn same_path(a: &Path, b: &Path) -> bool {
    canonical(a) == canonical(b)
}

/// The canonical path, also for a file that does not exist yet (its directory's canonical path).
fn canonical(p: &Path) -> PathBuf {
    if let Ok(c) = p.canonicalize() {
        return c;
    }
    match (p.parent().and_then(|d| d.canonicalize().ok()), p.file_name()) {
        (Some(dir), Some(name)) => dir.join(name),
        _ => p.to_path_buf(),
    }
}

/// Copies into an opened target and always shuts it down.
async fn with_target<S: Contract, T: Contract>(
    source: &S,
    target: T,
    params: &CopyParams,
) -> Result<TransferReport> {
    let result = copy_into(source, &target, params).await;
    let closed = target.shutdown().await;
    let report = result?;
    closed?;
    Ok(report)
}

/// One progress line at most every [`PROGRESS_EVERY`].
struct Progress {
    last: Instant,
}

impl Progress {
    fn tick(&mut self, landing: &Landing<'_, impl Contract>, table: &str) {
        if self.last.elapsed() < PROGRESS_EVERY {
            return;
        }
        self.last = Instant::now();
        let t = landing.state().tables.get(table).cloned().unwrap_or_default();
        tracing::info!(
            target: "parallax_storage::transfer",
            "copy: {table}: {} rows read, {} copied, {} present, {} conflicts",
            t.source.rows + t.conflicts,
            t.copied,
            t.present,
            t.conflicts
        );
    }
}

async fn copy_into<S: Contract, T: Contract>(
    source: &S,
    target: &T,
    params: &CopyParams,
) -> Result<TransferReport> {
    let sh = source.health().await?;
    let source_label = format!("{} {}", sh.backend, sh.location);
    // A dry run opens the target without creating it: a target not created yet answers `Schema`.
    let not_created = |e: &Error| params.dry_run && e.kind() == ErrorKind::Schema;
    let (target_backend, target_location) = match target.health().await {
        Ok(th) => (th.backend.to_string(), format!("{} {}", th.backend, th.location)),
        Err(e) if not_created(&e) => (String::new(), "a storage not created yet".to_string()),
        Err(e) => return Err(e),
    };
    let target_label = match &params.target_label {
        Some(l) => format!("{l} ({target_location})"),
        None => target_location.clone(),
    };
    if target_location == source_label && sh.backend.as_str() == target_backend {
        return Err(same_store(&target_label));
    }
    let _source_lock = source.lock_runner().await?.ok_or_else(|| {
        Error::conflict("a cleanup or archive is running on the source; retry when it ends")
    })?;
    let _target_lock = match target.lock_runner().await {
        Ok(Some(lock)) => Some(lock),
        Ok(None) => {
            return Err(Error::conflict(format!(
                "a cleanup, archive or copy is running on the target {target_label}; retry when it ends"
            )))
        }
        Err(e) if not_created(&e) => None,
        Err(e) => return Err(e),
    };

    let snapshot = crate::time::now_micros();
    let mut landing =
        Landing::begin(target, Kind::Copy, source_label.clone(), snapshot, params.merge, params.dry_run)
            .await?;
    if !params.dry_run {
        // PostgreSQL: the state just saved in the target shows up in the source when both are one database.
        match source.transfer_states().await {
            Ok(states) if states.iter().any(|(id, _, _)| *id == landing.state().id) => {
                return Err(same_store(&target_label));
            }
            Err(e) if e.kind() != ErrorKind::Unsupported => return Err(e),
            _ => {}
        }
    }
    tracing::info!(
        target: "parallax_storage::transfer",
        "copy from {source_label} into {target_label}: {} run {}, snapshot {}",
        landing.mode(),
        landing.state().id,
        crate::time::rfc3339(landing.state().snapshot)
    );
    let mut progress = Progress { last: Instant::now() };

    if landing.state().previous_snapshot.is_some() && !landing.state().unfinished_refreshed && !params.dry_run
    {
        let ids = landing.state().unfinished.clone();
        let current = fetch_all(source, ids).await?;
        landing.catch_up_unfinished(current).await?;
        landing.state_mut().cursors.remove("patterns");
        landing.save().await?;
    }

    if landing.state().recount_base.is_none() {
        let base = ["executions", "audit_logs"]
            .map(|t| {
                let after = landing.state().cursors.get(t).cloned();
                (t.to_string(), RecountBase { rows: landing.rows_read(t), after })
            })
            .into();
        landing.state_mut().recount_base = Some(base);
        landing.save().await?;
    }

    if landing.state().phase <= Phase::Patterns {
        landing.state_mut().phase = Phase::Patterns;
        copy_patterns(source, &mut landing, &mut progress).await?;
        landing.state_mut().phase = Phase::Executions;
        landing.save().await?;
        pause_point("after-patterns").await;
    }
    if landing.state().phase <= Phase::Executions {
        landing.state_mut().phase = Phase::Executions;
        copy_executions(source, &mut landing, &mut progress).await?;
        landing.state_mut().phase = Phase::Audit;
        landing.save().await?;
    }
    if landing.state().phase <= Phase::Audit {
        landing.state_mut().phase = Phase::Audit;
        copy_audit(source, &mut landing, &mut progress).await?;
        landing.state_mut().phase = Phase::Refresh;
        landing.save().await?;
    }

    // The unfinished executions copied: those that changed since are reported and left out of both checksums.
    let ids = landing.state().unfinished.clone();
    let current = if params.dry_run { Vec::new() } else { fetch_all(source, ids).await? };
    landing.refresh(current).await?;
    recount(source, &mut landing).await?;
    landing.state_mut().phase = Phase::Verify;
    landing.save().await?;
    pause_point("before-verify").await;
    // The owned fast path read nothing back: the target's side of the executions and events checksums comes
    // from a scan of the target now, while the target's statistics are refreshed (another connection).
    let analyze = async {
        if params.dry_run {
            Ok(())
        } else {
            target.after_bulk_load().await
        }
    };
    let (analyzed, counted) = tokio::join!(analyze, landing.count_owned_target(VERIFY_PAGE));
    analyzed?;
    counted?;
    landing.finish(source_label, target_label, None).await
}

/// Reads executions by id from the source, in chunks.
async fn fetch_all<S: Contract>(source: &S, ids: Vec<String>) -> Result<Vec<ExecutionRecord>> {
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(FETCH_CHUNK) {
        out.extend(source.fetch_executions(chunk.to_vec(), None).await?);
    }
    Ok(out)
}

/// Every pattern version with `created_at` ≤ the snapshot (in a catch-up: after the previous snapshot), by
/// name; newer versions are counted as after the snapshot.
async fn copy_patterns<S: Contract, T: Contract>(
    source: &S,
    landing: &mut Landing<'_, T>,
    progress: &mut Progress,
) -> Result<()> {
    let snapshot = landing.state().snapshot;
    let previous = landing.state().previous_snapshot;
    let mut after = landing.state().cursors.get("patterns").map(|c| c.id.clone());
    loop {
        let mut rows = source.patterns_after(Page { limit: PATTERN_NAMES, after: after.clone() }).await?;
        if rows.is_empty() {
            break;
        }
        let mut names: Vec<String> = rows.iter().map(|p| p.name.to_string()).collect();
        names.sort();
        names.dedup();
        let more = names.len() > PATTERN_NAMES;
        if more {
            let lookahead = names.pop().expect("more names than the limit");
            rows.retain(|p| p.name.as_str() != lookahead);
        }
        let newer = rows.iter().filter(|p| p.created_at > snapshot).count() as u64;
        rows.retain(|p| p.created_at <= snapshot && previous.is_none_or(|prev| p.created_at > prev));
        landing.patterns(rows).await?;
        landing.after_snapshot("patterns", newer);
        let last = names.pop().expect("a page has a name");
        landing.state_mut().cursors.insert("patterns".into(), Cursor { at: 0, id: last.clone() });
        landing.save().await?;
        progress.tick(landing, "patterns");
        if !more {
            break;
        }
        after = Some(last);
    }
    Ok(())
}

/// The documents' size of a page (what its rows weigh in memory and on the wire, roughly).
fn page_bytes(page: &[ExecutionRecord]) -> usize {
    let doc = |d: &abi_stable::std_types::ROption<abi_stable::std_types::RString>| {
        d.as_ref().map_or(0, |s| s.len())
    };
    page.iter()
        .map(|r| {
            let e = &r.execution;
            256 + doc(&e.input)
                + doc(&e.output)
                + doc(&e.error)
                + doc(&e.metadata)
                + r.events.iter().map(|v| 128 + v.payload.len()).sum::<usize>()
        })
        .sum()
}

/// The next page size: grows while pages stay small, shrinks when one is heavy.
fn next_limit(limit: usize, bytes: usize, max: usize) -> usize {
    if bytes > PAGE_BYTES {
        (limit / 2).max(MIN_PAGE)
    } else if bytes < PAGE_BYTES / 2 {
        (limit * 2).min(max)
    } else {
        limit
    }
}

fn snapshot_selection(target: CleanupTarget, snapshot: i64) -> Selection {
    Selection { target, before: (snapshot.saturating_add(1), MIN_ID.to_string()), include_unfinished: true }
}

/// Every execution (any status) with `started_at` ≤ the snapshot, after the cursor; while a page lands, the
/// next one is read.
async fn copy_executions<S: Contract, T: Contract>(
    source: &S,
    landing: &mut Landing<'_, T>,
    progress: &mut Progress,
) -> Result<()> {
    let sel = snapshot_selection(CleanupTarget::Executions, landing.state().snapshot);
    let after: Option<Key> = landing.state().cursors.get("executions").map(|c| (c.at, c.id.clone()));
    let mut limit = FIRST_PAGE;
    // The owned fast path lands bigger pages (each one a transaction with the state).
    let max = if landing.state().owned { MAX_OWNED_PAGE } else { MAX_PAGE };
    let owned = landing.state().owned;
    // The owned fast path hashes a page on a blocking thread right after reading it, so that the next page's
    // read and hashing overlap the landing of this one (the server's `COPY`).
    let read =
        async |after: Option<Key>, limit: usize| -> Result<(Vec<ExecutionRecord>, Vec<RecordHashes>)> {
            let rows = source.scan_executions(sel.clone(), after, limit).await?;
            if owned {
                hashed(rows).await
            } else {
                Ok((rows, Vec::new()))
            }
        };
    let (mut page, mut hashes) = read(after, limit).await?;
    let mut first = true;
    while !page.is_empty() {
        let more = page.len() >= limit;
        let last =
            page.last().map(|r| (r.execution.started_at, r.execution.id.to_string())).expect("not empty");
        limit = next_limit(limit, page_bytes(&page), max);
        let read_next = async {
            if more {
                read(Some(last.clone()), limit).await
            } else {
                Ok((Vec::new(), Vec::new()))
            }
        };
        let cursor = Cursor { at: last.0, id: last.1.clone() };
        let land = async {
            if owned {
                // The page and the state with the cursor past it commit together.
                landing.executions_owned(page, hashes, cursor).await
            } else {
                landing.executions(page).await
            }
        };
        let (landed, next) = tokio::join!(land, read_next);
        landed?;
        if !owned {
            landing.state_mut().cursors.insert("executions".into(), Cursor { at: last.0, id: last.1 });
        }
        if first {
            pause_point("before-save").await;
        }
        if !owned {
            landing.save().await?;
        }
        if first {
            pause_point("mid-executions").await;
            first = false;
        }
        progress.tick(landing, "executions");
        (page, hashes) = next?;
    }
    Ok(())
}

/// Every audit entry with `timestamp` ≤ the snapshot, after the cursor; while a page lands, the next one is
/// read.
async fn copy_audit<S: Contract, T: Contract>(
    source: &S,
    landing: &mut Landing<'_, T>,
    progress: &mut Progress,
) -> Result<()> {
    let sel = snapshot_selection(CleanupTarget::AuditLogs, landing.state().snapshot);
    let after: Option<Key> = landing.state().cursors.get("audit_logs").map(|c| (c.at, c.id.clone()));
    let mut page = source.scan_audit(sel.clone(), after, AUDIT_PAGE).await?;
    let mut first = true;
    while !page.is_empty() {
        let more = page.len() >= AUDIT_PAGE;
        let last = page.last().map(|a| (a.timestamp, a.id.to_string())).expect("not empty");
        let read_next = async {
            if more {
                source.scan_audit(sel.clone(), Some(last.clone()), AUDIT_PAGE).await
            } else {
                Ok(Vec::new())
            }
        };
        let (landed, next) = tokio::join!(landing.audit(page), read_next);
        landed?;
        landing.state_mut().cursors.insert("audit_logs".into(), Cursor { at: last.0, id: last.1 });
        landing.save().await?;
        if first {
            pause_point("mid-audit").await;
            first = false;
        }
        progress.tick(landing, "audit_logs");
        page = next?;
    }
    Ok(())
}

/// Counts the source again over the keys this run read (after its starting cursor, up to the snapshot): rows
/// newer than the snapshot are reported; a count that differs from the rows this run read (rows written or
/// removed behind its cursor while it ran) fails the verification.
async fn recount<S: Contract, T: Contract>(source: &S, landing: &mut Landing<'_, T>) -> Result<()> {
    let snapshot = landing.state().snapshot;
    for (target, table) in
        [(CleanupTarget::Executions, "executions"), (CleanupTarget::AuditLogs, "audit_logs")]
    {
        let plan = source.plan_cleanup(snapshot_selection(target, snapshot)).await?;
        let upto = plan.tables.first().map_or(0, |t| t.rows);
        landing.after_snapshot(table, plan.total_rows.saturating_sub(upto));
        let base =
            landing.state().recount_base.as_ref().and_then(|b| b.get(table).cloned()).unwrap_or_default();
        let below = match &base.after {
            None => 0,
            Some(c) => {
                let sel = Selection { target, before: (c.at, c.id.clone()), include_unfinished: true };
                let under = source.plan_cleanup(sel).await?.tables.first().map_or(0, |t| t.rows);
                let at = match target {
                    CleanupTarget::Executions => {
                        source.fetch_executions(vec![c.id.clone()], Some((c.at, c.at))).await?.len()
                    }
                    CleanupTarget::AuditLogs => source.fetch_audit(vec![c.id.clone()]).await?.len(),
                };
                under + at as u64
            }
        };
        if base.after.is_some() && below > base.rows {
            // A catch-up: rows appeared in the source behind the previous run's cursor (a restore into the
            // source, a row written with an old time) that no catch-up reads. The next run rescans everything.
            landing.problem(format!(
                "{table}: the source holds {below} rows up to where the previous run stopped but that run read \
                 {}: rows were added there with an older time since; run the copy again: after a run that is not \
                 verified it reads the whole source again (no duplicates)",
                base.rows
            ));
        }
        let held = upto.saturating_sub(below);
        let read = landing.rows_read(table).saturating_sub(base.rows);
        if held != read {
            landing.problem(format!(
                "{table}: the source holds {held} rows in the span this run copied but it read {read}: rows were \
                 written or removed in the source behind the copy's cursor while it ran; the target keeps what \
                 was copied; run the copy again: after a run that is not verified it reads the whole source again (no \
                 duplicates)"
            ));
        }
    }
    Ok(())
}

// The PostgreSQL test server (`crate::postgres`'s own copy of this module is private to it).
#[cfg(test)]
#[allow(dead_code, clippy::duplicate_mod)]
#[path = "../../tests/common/pg.rs"]
mod test_pg;

#[cfg(test)]
mod tests {
    use abi_stable::std_types::{RNone, RSome, RVec};
    use parallax_storage_abi::{
        transfer::Conflict, EventKind, ExecutionStatus, NewAuditEntry, NewEvent, NewExecution, NewPattern,
    };

    use super::*;
    use crate::{
        archive::Store as _,
        config::SqliteConfig,
        rules::Completion,
        transfer::{checksum, land::Landing, Store as _},
    };

    const T0: i64 = 1_705_314_615_123_456; // 2024-01-15T10:30:15.123456Z

    fn sqlite_cfg(path: &Path) -> StorageConfig {
        StorageConfig {
            sqlite: SqliteConfig { path: path.to_path_buf(), ..SqliteConfig::default() },
            ..StorageConfig::default()
        }
    }

    async fn sqlite(path: &Path) -> crate::sqlite::SqliteBackend {
        crate::sqlite::SqliteBackend::open(sqlite_cfg(path), OpenOptions::default()).await.unwrap()
    }

    fn target_params(path: &Path) -> CopyParams {
        CopyParams {
            target: serde_json::json!({"type": "sqlite", "sqlite": {"path": path}}).to_string(),
            target_label: Some("target.yaml".into()),
            ..CopyParams::default()
        }
    }

    fn id(n: u32) -> String {
        format!("0190b3f2-7c1e-7a00-8000-{n:012}")
    }

    /// Execution `n` started at `T0 + n` seconds with two events, finished with `status` (or left running).
    async fn execution<B: Contract>(b: &B, n: u32, status: Option<ExecutionStatus>) {
        let e = NewExecution {
            id: RSome(id(n).into()),
            pattern_name: "summarize".into(),
            pattern_version: "1.0.0".into(),
            status: ExecutionStatus::Running,
            input: RSome(format!(r#"{{"text": "needle{n}", "n": {n}}}"#).into()),
            metadata: RSome(r#"{"team": "a"}"#.into()),
            tags: RVec::from(vec!["x".into()]),
            started_at: RSome(T0 + i64::from(n) * 1_000_000),
        };
        b.create_execution(e, true).await.unwrap();
        for k in 1..=2u32 {
            let ev = NewEvent {
                kind: EventKind::StepResult,
                payload: format!(r#"{{"step": {k}}}"#).into(),
                recorded_at: RSome(T0 + i64::from(n) * 1_000_000 + i64::from(k)),
            };
            b.append_event(id(n), id(1000 + n * 10 + k), ev).await.unwrap();
        }
        if let Some(status) = status {
            complete(b, n, status).await;
        }
    }

    async fn complete<B: Contract>(b: &B, n: u32, status: ExecutionStatus) {
        let c = Completion {
            status,
            output: RSome(r#"{"summary": "done"}"#.into()),
            error: RNone,
            completed_at: T0 + i64::from(n) * 1_000_000 + 500_123,
        };
        b.complete_execution(id(n), c).await.unwrap();
    }

    async fn pattern<B: Contract>(b: &B, n: u32, version: &str) {
        let p = NewPattern {
            id: RSome(id(5000 + n).into()),
            name: format!("p{}", n % 3).into(),
            version: version.into(),
            description: RSome("d".into()),
            definition: format!(r#"{{"steps": [{n}]}}"#).into(),
            created_by: RNone,
        };
        b.put_pattern(p, true).await.unwrap();
    }

    async fn audit<B: Contract>(b: &B, n: u32) {
        let a = NewAuditEntry {
            id: RSome(id(9000 + n).into()),
            timestamp: RSome(T0 + i64::from(n)),
            action: "execution.create".into(),
            actor: RSome("alice".into()),
            ip_address: RSome("10.0.0.1".into()),
            ..NewAuditEntry::default()
        };
        b.append_audit(vec![a]).await.unwrap();
    }

    /// Two pattern names (three versions), five executions (one running), four audit entries.
    async fn seeded(path: &Path) -> crate::sqlite::SqliteBackend {
        let b = sqlite(path).await;
        for (n, v) in [(1, "1.0.0"), (2, "1.0.0"), (4, "2.0.0")] {
            pattern(&b, n, v).await;
        }
        for n in 1..=5 {
            let status = if n == 3 { None } else { Some(ExecutionStatus::Completed) };
            execution(&b, n, status).await;
        }
        for n in 1..=4 {
            audit(&b, n).await;
        }
        b
    }

    fn table<'r>(r: &'r TransferReport, name: &str) -> &'r parallax_storage_abi::transfer::TableTransfer {
        r.tables.iter().find(|t| t.table == name).unwrap()
    }

    /// A fresh copy lands every row of every table (the running execution too), verifies both checksums,
    /// and a second run catches up with what the source got since, copying only that.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_fresh_copy_is_verified_and_a_second_run_catches_up() {
        let dir = tempfile::tempdir().unwrap();
        let source = seeded(&dir.path().join("source.db")).await;
        let target_path = dir.path().join("target.db");

        let r = run(&source, target_params(&target_path)).await.unwrap();
        assert_eq!(r.mode, "fresh");
        assert!(r.verified, "{r:#?}");
        assert_eq!(r.tables.iter().map(|t| t.table.as_str()).collect::<Vec<_>>(), TABLES_IN_ORDER);
        for (name, rows) in [("patterns", 3), ("executions", 5), ("execution_events", 10), ("audit_logs", 4)]
        {
            let t = table(&r, name);
            assert_eq!(
                (t.source_rows, t.copied, t.present, t.conflicts, t.target_rows),
                (rows, rows, 0, 0, rows),
                "{t:?}"
            );
            assert_eq!(t.source_checksum, t.target_checksum);
            assert!(t.ok);
        }
        assert_eq!(r.conflict_count, 0);
        assert_eq!(r.changed_after_snapshot_count, 0);
        assert!(r.source.starts_with("sqlite "), "{}", r.source);
        assert!(r.target.starts_with("target.yaml (sqlite "), "{}", r.target);

        // The target holds equal rows (the running one still running).
        let target = sqlite(&target_path).await;
        let back = target.fetch_executions((1..=5).map(id).collect(), None).await.unwrap();
        let original = source.fetch_executions((1..=5).map(id).collect(), None).await.unwrap();
        let sum = |rows: &[ExecutionRecord]| {
            rows.iter().map(|r| checksum::execution(&r.execution)).fold(0u128, u128::wrapping_add)
        };
        assert_eq!(sum(&back), sum(&original));
        target.shutdown().await.unwrap();

        // The running execution completes and a new one starts: the catch-up refreshes the first and copies
        // the second.
        complete(&source, 3, ExecutionStatus::Failed).await;
        execution(&source, 6, Some(ExecutionStatus::Completed)).await;
        let r = run(&source, target_params(&target_path)).await.unwrap();
        assert_eq!(r.mode, "catch-up");
        assert!(r.verified, "{r:#?}");
        let t = table(&r, "executions");
        assert_eq!((t.source_rows, t.copied, t.target_rows), (6, 6, 6), "{t:?}");
        let target = sqlite(&target_path).await;
        let three = target.get_execution(id(3)).await.unwrap();
        assert_eq!(three.status, ExecutionStatus::Failed);
        target.shutdown().await.unwrap();
        source.shutdown().await.unwrap();
    }

    const TABLES_IN_ORDER: [&str; 4] = ["patterns", "executions", "execution_events", "audit_logs"];

    /// A target that holds rows is refused without `merge`; with it, equal rows are present, a row with other
    /// content is a conflict named by its first differing field and left as it was.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_non_empty_target_needs_merge_and_conflicts_are_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let source = seeded(&dir.path().join("source.db")).await;
        let target_path = dir.path().join("target.db");
        let target = sqlite(&target_path).await;
        execution(&target, 1, Some(ExecutionStatus::Completed)).await; // equal
        execution(&target, 2, Some(ExecutionStatus::Cancelled)).await; // differs
        target.shutdown().await.unwrap();

        let e = run(&source, target_params(&target_path)).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Conflict);
        assert!(
            e.0.message.contains("is not empty (0 pattern versions, 2 executions, 0 audit entries)"),
            "{e}"
        );
        assert!(e.0.message.contains("--merge"), "{e}");

        let dry = run(&source, CopyParams { merge: true, dry_run: true, ..target_params(&target_path) })
            .await
            .unwrap();
        assert!(dry.dry_run);
        let t = table(&dry, "executions");
        assert_eq!((t.copied, t.present, t.conflicts), (3, 1, 1), "{t:?}");

        let r = run(&source, CopyParams { merge: true, ..target_params(&target_path) }).await.unwrap();
        assert_eq!(r.mode, "merge");
        let t = table(&r, "executions");
        assert_eq!((t.source_rows, t.copied, t.present, t.conflicts), (5, 3, 1, 1), "{t:?}");
        assert!(t.ok, "conflicts are left out of both checksums: {t:?}");
        assert_eq!(
            r.conflicts,
            vec![Conflict {
                table: "executions".into(),
                id: id(2),
                reason: "status: source completed, target cancelled".into()
            }]
        );
        assert_eq!(r.conflict_count, 1);
        assert!(r.verified);
        let target = sqlite(&target_path).await;
        assert_eq!(target.get_execution(id(2)).await.unwrap().status, ExecutionStatus::Cancelled);
        target.shutdown().await.unwrap();
        source.shutdown().await.unwrap();
    }

    /// A dry run writes nothing (not even a state), and a copy into the store it reads from is refused.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dry_run_writes_nothing_and_the_same_store_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let source_path = dir.path().join("source.db");
        let source = seeded(&source_path).await;
        let target_path = dir.path().join("target.db");
        sqlite(&target_path).await.shutdown().await.unwrap();

        let r = run(&source, CopyParams { dry_run: true, ..target_params(&target_path) }).await.unwrap();
        assert_eq!((r.mode.as_str(), r.dry_run), ("fresh", true));
        assert_eq!(table(&r, "executions").copied, 5);
        let target = sqlite(&target_path).await;
        assert_eq!(target.count_executions(Default::default()).await.unwrap(), 0);
        assert!(target.transfer_states().await.unwrap().is_empty());
        target.shutdown().await.unwrap();

        let e = run(&source, target_params(&source_path)).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(e.0.message.contains("is the storage this copy reads from"), "{e}");
        source.shutdown().await.unwrap();
    }

    /// A run stopped after a landed page resumes from its saved state (same run id, tallies kept); a running
    /// execution that changed in the source after it was copied is reported and left out of both checksums.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stopped_run_resumes_and_a_changed_running_execution_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let source = seeded(&dir.path().join("source.db")).await;
        let target = sqlite(&dir.path().join("target.db")).await;
        let label = "sqlite source".to_string();
        let snapshot = crate::time::now_micros();
        let sel = snapshot_selection(CleanupTarget::Executions, snapshot);

        let mut first =
            Landing::begin(&target, Kind::Copy, label.clone(), snapshot, false, false).await.unwrap();
        assert_eq!(first.mode(), "fresh");
        let page = source.scan_executions(sel.clone(), None, 3).await.unwrap();
        let last = page.last().map(|r| (r.execution.started_at, r.execution.id.to_string())).unwrap();
        first.executions(page).await.unwrap();
        first.state_mut().phase = Phase::Executions;
        first.state_mut().cursors.insert("executions".into(), Cursor { at: last.0, id: last.1.clone() });
        first.save().await.unwrap();
        let run_id = first.state().id.clone();
        drop(first); // killed

        let mut again =
            Landing::begin(&target, Kind::Copy, label.clone(), snapshot + 99, false, false).await.unwrap();
        assert_eq!(
            (again.mode(), again.state().id.as_str(), again.state().snapshot),
            ("resumed", run_id.as_str(), snapshot)
        );
        assert_eq!(again.state().unfinished, vec![id(3)]);
        let rest = source.scan_executions(sel, Some(last), 10).await.unwrap();
        assert_eq!(rest.len(), 2);
        again.executions(rest).await.unwrap();
        complete(&source, 3, ExecutionStatus::Completed).await;
        let current = source.fetch_executions(vec![id(3)], None).await.unwrap();
        again.refresh(current).await.unwrap();
        let r = again.finish(label, "t".into(), None).await.unwrap();
        assert_eq!(r.mode, "resumed");
        assert_eq!((r.changed_after_snapshot.clone(), r.changed_after_snapshot_count), (vec![id(3)], 1));
        let t = table(&r, "executions");
        assert_eq!((t.copied, t.target_rows), (5, 4), "{t:?}");
        assert!(r.verified, "{r:#?}");

        // Finished: the next begin of the same source is a catch-up with a new run id.
        let next = Landing::begin(&target, Kind::Copy, "sqlite source".into(), snapshot + 5, false, true)
            .await
            .unwrap();
        assert_eq!(next.mode(), "catch-up");
        assert_ne!(next.state().id, run_id);
        assert_eq!(next.state().previous_snapshot, Some(snapshot));
        target.shutdown().await.unwrap();
        source.shutdown().await.unwrap();
    }

    #[test]
    fn a_target_config_error_never_echoes_a_secret() {
        let text =
            r#"{"type":"postgresql","postgresql":{"url":"postgres://u:hunter22@db/x","poolSize":"many"}}"#;
        let e = parse_target(text, "prod.yaml").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(e.0.message.starts_with("prod.yaml: invalid storage config"), "{e}");
        assert!(!e.0.message.contains("hunter22"), "{e}");
        let e = parse_target(r#"{"type":"postgresql","password":"hunter22""#, "t").unwrap_err();
        assert!(e.0.message.contains("not valid JSON"), "{e}");
        assert!(!e.0.message.contains("hunter22"), "{e}");
    }

    #[test]
    fn the_same_sqlite_file_or_file_store_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = |json: String| crate::config::parse(&json).unwrap();
        let db = dir.path().join("a.db");
        let a = cfg(format!(r#"{{"type":"sqlite","sqlite":{{"path":{:?}}}}}"#, db.to_str().unwrap()));
        let same = cfg(format!(
            r#"{{"type":"sqlite","sqlite":{{"path":{:?}}}}}"#,
            dir.path().join(".").join("a.db").to_str().unwrap()
        ));
        let other = cfg(format!(
            r#"{{"type":"sqlite","sqlite":{{"path":{:?}}}}}"#,
            dir.path().join("b.db").to_str().unwrap()
        ));
        assert!(same_local_store(&a, &same));
        assert!(!same_local_store(&a, &other));
        let files =
            cfg(format!(r#"{{"type":"file","file":{{"basePath":{:?}}}}}"#, dir.path().to_str().unwrap()));
        assert!(same_local_store(&files, &files.clone()));
        assert!(!same_local_store(&files, &a));
    }

    #[test]
    fn pages_grow_while_small_and_shrink_when_heavy() {
        assert_eq!(next_limit(64, 1000, MAX_PAGE), 128);
        assert_eq!(next_limit(MAX_PAGE, 10, MAX_PAGE), MAX_PAGE);
        assert_eq!(next_limit(MAX_PAGE, 10, MAX_OWNED_PAGE), MAX_PAGE * 2);
        assert_eq!(next_limit(64, PAGE_BYTES + 1, MAX_PAGE), 32);
        assert_eq!(next_limit(MIN_PAGE, PAGE_BYTES * 4, MAX_PAGE), MIN_PAGE);
        assert_eq!(next_limit(100, PAGE_BYTES * 3 / 4, MAX_PAGE), 100);
    }

    /// A catch-up killed after it replaced the target's unfinished copies but before it saved its state does
    /// that step again when resumed, with the same checksums (what the old rows added is kept in the state).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_catch_up_killed_while_refreshing_unfinished_rows_resumes_verified() {
        let dir = tempfile::tempdir().unwrap();
        let source = seeded(&dir.path().join("source.db")).await;
        let target_path = dir.path().join("target.db");
        let first = run(&source, target_params(&target_path)).await.unwrap();
        assert!(first.verified);
        complete(&source, 3, ExecutionStatus::Completed).await;

        let h = source.health().await.unwrap();
        let label = format!("{} {}", h.backend, h.location);
        let target = sqlite(&target_path).await;
        let mut landing =
            Landing::begin(&target, Kind::Copy, label.clone(), crate::time::now_micros(), false, false)
                .await
                .unwrap();
        assert_eq!(landing.mode(), "catch-up");
        assert!(!landing.state().unfinished_refreshed);
        let current = source.fetch_executions(vec![id(3)], None).await.unwrap();
        landing.catch_up_unfinished(current).await.unwrap();
        drop(landing); // killed before the state was saved
        assert_eq!(target.get_execution(id(3)).await.unwrap().status, ExecutionStatus::Completed);
        target.shutdown().await.unwrap();

        let r = run(&source, target_params(&target_path)).await.unwrap();
        assert_eq!(r.mode, "resumed");
        assert!(r.verified, "{r:#?}");
        let t = table(&r, "executions");
        assert_eq!((t.source_rows, t.target_rows, t.conflicts), (5, 5, 0), "{t:?}");
        assert_eq!(r.changed_after_snapshot_count, 0);
        source.shutdown().await.unwrap();
    }

    /// SQLite → PostgreSQL → SQLite: both copies verified, the rows equal at the end (PostgreSQL's JSONB
    /// rewrites documents: the canonical checksum does not mind), and a copy of a PostgreSQL database into
    /// itself is refused (its saved state shows up in the source).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_to_postgresql_and_back_is_verified_and_the_same_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let source = seeded(&dir.path().join("source.db")).await;
        let server = super::test_pg::server();
        let db = server.fresh_database().await;
        let pg_params = CopyParams {
            target: server.storage_config(&db).to_string(),
            target_label: Some("pg.yaml".into()),
            ..CopyParams::default()
        };
        let r = run(&source, pg_params.clone()).await.unwrap();
        assert!(r.verified, "{r:#?}");
        assert!(r.target.starts_with("pg.yaml (postgresql "), "{}", r.target);
        assert_eq!(table(&r, "execution_events").copied, 10);

        let pg_cfg = crate::config::parse(&pg_params.target).unwrap();
        let pg = crate::postgres::PostgresBackend::open(pg_cfg, OpenOptions::default()).await.unwrap();
        let back_path = dir.path().join("back.db");
        let back = run(&pg, target_params(&back_path)).await.unwrap();
        assert!(back.verified, "{back:#?}");
        for name in TABLES_IN_ORDER {
            assert_eq!(table(&back, name).source_checksum, table(&r, name).source_checksum, "{name}");
        }
        let e = run(&pg, CopyParams { merge: true, ..pg_params }).await.unwrap_err();
        assert!(e.0.message.contains("is the storage this copy reads from"), "{e}");
        pg.shutdown().await.unwrap();
        source.shutdown().await.unwrap();
    }

    /// Into an empty PostgreSQL database a copy owns the target: each executions page lands by `COPY` with its
    /// state in one transaction, nothing is read back per page, and the target's side of the checksums comes
    /// from a scan of the target at the end. That scan catches a row altered, an event lost and an id present
    /// twice after landing (each makes the run unverified); untouched, the run is verified. A target that held
    /// rows (merge) never takes the owned path.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_owned_fast_path_s_scan_of_the_target_catches_any_difference() {
        let dir = tempfile::tempdir().unwrap();
        let source = seeded(&dir.path().join("source.db")).await;
        let h = source.health().await.unwrap();
        let label = format!("{} {}", h.backend, h.location);
        let server = super::test_pg::server();
        let cols =
            "id, pattern_name, pattern_version, status, input, output, error, started_at, completed_at, \
                    duration_ms, metadata, tags";
        let tampers = [
            (None, None),
            (
                Some(format!("UPDATE executions SET output = '{{\"summary\": \"other\"}}' WHERE id = '{}'", id(1))),
                Some("executions"),
            ),
            (Some(format!("DELETE FROM execution_events WHERE id = '{}'", id(1022))), Some("execution_events")),
            (
                Some(format!(
                    "INSERT INTO executions ({cols}) SELECT id, pattern_name, pattern_version, status, input, \
                     output, error, started_at + interval '1 second', completed_at, duration_ms, metadata, tags \
                     FROM executions WHERE id = '{}'",
                    id(2)
                )),
                Some("executions"),
            ),
        ];
        for (tamper, broken) in tampers {
            let db = server.fresh_database().await;
            let cfg = crate::config::parse(&server.storage_config(&db).to_string()).unwrap();
            let target = crate::postgres::PostgresBackend::open(cfg, OpenOptions::default()).await.unwrap();
            let snapshot = crate::time::now_micros();
            let mut landing =
                Landing::begin(&target, Kind::Copy, label.clone(), snapshot, false, false).await.unwrap();
            assert!(landing.state().owned, "an empty PostgreSQL target is owned");
            let sel = snapshot_selection(CleanupTarget::Executions, snapshot);
            for after in [None, Some((T0 + 2_000_000, id(2)))] {
                let (page, hashes) =
                    hashed(source.scan_executions(sel.clone(), after, 2).await.unwrap()).await.unwrap();
                let last = page.last().unwrap();
                let cursor = Cursor { at: last.execution.started_at, id: last.execution.id.to_string() };
                landing.executions_owned(page, hashes, cursor).await.unwrap();
            }
            let rest = source.scan_executions(sel.clone(), Some((T0 + 4_000_000, id(4))), 10).await.unwrap();
            let (rest, hashes) = hashed(rest).await.unwrap();
            landing.executions_owned(rest, hashes, Cursor { at: T0 + 5_000_000, id: id(5) }).await.unwrap();
            // The state saved with the last page says where the run got.
            let saved = target.transfer_states().await.unwrap();
            let st = crate::transfer::state::TransferState::from_json(&saved[0].2).unwrap();
            assert_eq!(st.cursors["executions"], Cursor { at: T0 + 5_000_000, id: id(5) });
            assert_eq!(st.tables["executions"].source.rows, 5);
            if let Some(sql) = &tamper {
                server.client(&db).await.batch_execute(sql).await.unwrap();
            }
            landing.count_owned_target(2).await.unwrap();
            let r = landing.finish(label.clone(), "pg".into(), None).await.unwrap();
            assert_eq!(r.verified, broken.is_none(), "{tamper:?}: {r:#?}");
            for name in ["executions", "execution_events"] {
                assert_eq!(table(&r, name).ok, broken != Some(name), "{tamper:?}: {name}: {r:#?}");
            }
            if broken.is_none() {
                assert_eq!(
                    (table(&r, "executions").target_rows, table(&r, "execution_events").target_rows),
                    (5, 10)
                );
            }
            target.shutdown().await.unwrap();
            server.drop_database(&db).await;
        }

        // Merge into a target that holds rows: the ordinary path (insert-if-absent, read back).
        let db = server.fresh_database().await;
        let cfg = crate::config::parse(&server.storage_config(&db).to_string()).unwrap();
        let target = crate::postgres::PostgresBackend::open(cfg, OpenOptions::default()).await.unwrap();
        execution(&target, 9, Some(ExecutionStatus::Completed)).await;
        let landing =
            Landing::begin(&target, Kind::Copy, label.clone(), crate::time::now_micros(), true, false)
                .await
                .unwrap();
        assert!(!landing.state().owned);
        drop(landing);
        target.shutdown().await.unwrap();
        server.drop_database(&db).await;
        source.shutdown().await.unwrap();
    }

    /// A row written in the source behind the copy's cursor while it ran (an execution with an old start
    /// time) is not copied: the source's recount sees it and the run is not verified.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_row_written_behind_the_cursor_fails_the_recount() {
        let dir = tempfile::tempdir().unwrap();
        let source = seeded(&dir.path().join("source.db")).await;
        let target = sqlite(&dir.path().join("target.db")).await;
        let snapshot = crate::time::now_micros();
        let mut landing =
            Landing::begin(&target, Kind::Copy, "s".into(), snapshot, false, false).await.unwrap();
        landing.state_mut().recount_base = Some(Default::default());
        let sel = snapshot_selection(CleanupTarget::Executions, snapshot);
        landing.executions(source.scan_executions(sel, None, 100).await.unwrap()).await.unwrap();
        let audit_sel = snapshot_selection(CleanupTarget::AuditLogs, snapshot);
        landing.audit(source.scan_audit(audit_sel, None, 100).await.unwrap()).await.unwrap();
        execution(&source, 0, Some(ExecutionStatus::Completed)).await; // started before every copied row
        recount(&source, &mut landing).await.unwrap();
        let r = landing.finish("s".into(), "t".into(), None).await.unwrap();
        assert!(!r.verified, "{r:#?}");
        assert!(!table(&r, "executions").ok);
        assert!(table(&r, "audit_logs").ok);
        target.shutdown().await.unwrap();
        source.shutdown().await.unwrap();
    }

    /// A row written behind a finished copy's cursor (an older `started_at`) is caught by the next catch-up's
    /// recount, and the run after that reads the whole source again (mode `rescan`): verified, no duplicates.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_row_missed_behind_the_cursor_is_copied_by_the_next_run_s_rescan() {
        let dir = tempfile::tempdir().unwrap();
        let source = seeded(&dir.path().join("source.db")).await;
        let target_path = dir.path().join("target.db");
        let first = run(&source, target_params(&target_path)).await.unwrap();
        assert_eq!((first.mode.as_str(), first.verified), ("fresh", true), "{first:#?}");
        execution(&source, 0, Some(ExecutionStatus::Completed)).await; // before every copied row

        let second = run(&source, target_params(&target_path)).await.unwrap();
        assert_eq!((second.mode.as_str(), second.verified), ("catch-up", false), "{second:#?}");
        assert!(second.problems.iter().any(|p| p.starts_with("executions: ")), "{:?}", second.problems);

        let third = run(&source, target_params(&target_path)).await.unwrap();
        assert_eq!((third.mode.as_str(), third.verified), ("rescan", true), "{third:#?}");
        assert!(third.problems.is_empty(), "{:?}", third.problems);
        let t = table(&third, "executions");
        // The target was empty before the first run: every row in it is this transfer's copy.
        assert_eq!((t.source_rows, t.target_rows, t.copied, t.present), (6, 6, 6, 0), "{t:?}");
        let fourth = run(&source, target_params(&target_path)).await.unwrap();
        assert_eq!((fourth.mode.as_str(), fourth.verified), ("catch-up", true), "{fourth:#?}");
        let target = sqlite(&target_path).await;
        assert_eq!(target.count_executions(Default::default()).await.unwrap(), 6);
        assert_eq!(target.get_execution(id(0)).await.unwrap().status, ExecutionStatus::Completed);
        target.shutdown().await.unwrap();
        source.shutdown().await.unwrap();
    }

    /// A merge's catch-up refreshes only the unfinished rows this transfer copied: one the target held
    /// before the first run is the target's own and keeps its content.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_merge_catch_up_never_replaces_an_unfinished_row_the_target_held_before() {
        let dir = tempfile::tempdir().unwrap();
        let source = seeded(&dir.path().join("source.db")).await;
        let target_path = dir.path().join("target.db");
        let target = sqlite(&target_path).await;
        execution(&target, 3, None).await; // equal to the source's running execution 3
        target.shutdown().await.unwrap();

        let first = run(&source, CopyParams { merge: true, ..target_params(&target_path) }).await.unwrap();
        assert_eq!((first.mode.as_str(), first.verified), ("merge", true), "{first:#?}");
        complete(&source, 3, ExecutionStatus::Failed).await;
        let second = run(&source, CopyParams { merge: true, ..target_params(&target_path) }).await.unwrap();
        assert_eq!(second.mode, "catch-up", "{second:#?}");
        let target = sqlite(&target_path).await;
        assert_eq!(target.get_execution(id(3)).await.unwrap().status, ExecutionStatus::Running);
        target.shutdown().await.unwrap();
        source.shutdown().await.unwrap();
    }

    /// SQLite → file store → SQLite: both copies verified with the same checksums.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_to_a_file_store_and_back_is_verified() {
        let dir = tempfile::tempdir().unwrap();
        let source = seeded(&dir.path().join("source.db")).await;
        let files = dir.path().join("files");
        let file_target = serde_json::json!({"type": "file", "file": {"basePath": files}}).to_string();
        let there =
            run(&source, CopyParams { target: file_target.clone(), ..CopyParams::default() }).await.unwrap();
        assert!(there.verified, "{there:#?}");
        assert!(there.target.starts_with("file "), "{}", there.target);

        let store = crate::file::FileBackend::open(
            crate::config::parse(&file_target).unwrap(),
            OpenOptions::default(),
        )
        .await
        .unwrap();
        let back = run(&store, target_params(&dir.path().join("back.db"))).await.unwrap();
        assert!(back.verified, "{back:#?}");
        for name in TABLES_IN_ORDER {
            let (a, b) = (table(&there, name), table(&back, name));
            assert_eq!((a.source_rows, &a.source_checksum), (b.source_rows, &b.source_checksum), "{name}");
        }
        store.shutdown().await.unwrap();
        source.shutdown().await.unwrap();
    }

    /// A dry run into a target that does not exist yet counts every row as to be copied and leaves nothing
    /// behind (no database file, no store directory).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dry_run_into_a_target_not_created_yet_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let source = seeded(&dir.path().join("source.db")).await;
        let new_db = dir.path().join("new.db");
        let r = run(&source, CopyParams { dry_run: true, ..target_params(&new_db) }).await.unwrap();
        assert_eq!(
            (r.mode.as_str(), table(&r, "executions").copied, table(&r, "patterns").copied),
            ("fresh", 5, 3)
        );
        assert!(!new_db.exists());
        let files = dir.path().join("files");
        let file_target = serde_json::json!({"type": "file", "file": {"basePath": files}}).to_string();
        let r = run(&source, CopyParams { target: file_target, dry_run: true, ..CopyParams::default() })
            .await
            .unwrap();
        assert_eq!(table(&r, "audit_logs").copied, 4);
        assert!(!files.exists());
        source.shutdown().await.unwrap();
    }
}
