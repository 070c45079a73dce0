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
    land::Landing,
    pause_point,
    state::{Cursor, Kind, Phase},
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
const PAGE_BYTES: usize = 8 << 20;
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
    match cfg.backend {
        BackendType::Sqlite => {
            let target = opened(crate::sqlite::SqliteBackend::open(cfg, options).await, &params)?;
            with_target(source, target, &params).await
        }
        BackendType::Postgresql => {
            let target = opened(crate::postgres::PostgresBackend::open(cfg, options).await, &params)?;
            with_target(source, target, &params).await
        }
        BackendType::File => {
            let target = opened(crate::file::FileBackend::open(cfg, options).await, &params)?;
            with_target(source, target, &params).await
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
    let th = target.health().await?;
    let source_label = format!("{} {}", sh.backend, sh.location);
    let target_location = format!("{} {}", th.backend, th.location);
    let target_label = match &params.target_label {
        Some(l) => format!("{l} ({target_location})"),
        None => target_location.clone(),
    };
    if sh.backend == th.backend && sh.location == th.location {
        return Err(same_store(&target_label));
    }
    let _source_lock = source.lock_runner().await?.ok_or_else(|| {
        Error::conflict("a cleanup or archive is running on the source; retry when it ends")
    })?;
    let _target_lock = target.lock_runner().await?.ok_or_else(|| {
        Error::conflict(format!(
            "a cleanup, archive or copy is running on the target {target_label}; retry when it ends"
        ))
    })?;

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

    if landing.mode() == "catch-up" && !params.dry_run {
        let ids = landing.state().unfinished.clone();
        let current = fetch_all(source, ids).await?;
        landing.catch_up_unfinished(current).await?;
        landing.state_mut().cursors.remove("patterns");
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
    if !params.dry_run {
        target.after_bulk_load().await?;
    }
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
fn next_limit(limit: usize, bytes: usize) -> usize {
    if bytes > PAGE_BYTES {
        (limit / 2).max(MIN_PAGE)
    } else if bytes < PAGE_BYTES / 2 {
        (limit * 2).min(MAX_PAGE)
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
    let mut page = source.scan_executions(sel.clone(), after, limit).await?;
    let mut first = true;
    while !page.is_empty() {
        let more = page.len() >= limit;
        let last =
            page.last().map(|r| (r.execution.started_at, r.execution.id.to_string())).expect("not empty");
        limit = next_limit(limit, page_bytes(&page));
        let read_next = async {
            if more {
                source.scan_executions(sel.clone(), Some(last.clone()), limit).await
            } else {
                Ok(Vec::new())
            }
        };
        let (landed, next) = tokio::join!(landing.executions(page), read_next);
        landed?;
        landing.state_mut().cursors.insert("executions".into(), Cursor { at: last.0, id: last.1 });
        if first {
            pause_point("before-save").await;
        }
        landing.save().await?;
        if first {
            pause_point("mid-executions").await;
            first = false;
        }
        progress.tick(landing, "executions");
        page = next?;
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

/// Counts the source over the snapshot again: rows newer than the snapshot are reported; a count that differs
/// from the rows the copy read (rows written or removed behind its cursor) fails the verification.
async fn recount<S: Contract, T: Contract>(source: &S, landing: &mut Landing<'_, T>) -> Result<()> {
    let snapshot = landing.state().snapshot;
    for (target, table) in
        [(CleanupTarget::Executions, "executions"), (CleanupTarget::AuditLogs, "audit_logs")]
    {
        let plan = source.plan_cleanup(snapshot_selection(target, snapshot)).await?;
        let held = plan.tables.first().map_or(0, |t| t.rows);
        landing.after_snapshot(table, plan.total_rows.saturating_sub(held));
        let t = landing.state().tables.get(table).cloned().unwrap_or_default();
        let changed = if table == "executions" { landing.state().changed.len() as u64 } else { 0 };
        let read = t.source.rows + t.conflicts + changed;
        if held != read {
            landing.problem(format!(
                "{table}: the source holds {held} rows up to the snapshot but the copy read {read}: rows were \
                 written or removed in the source behind the copy's cursor while it ran; the target keeps what was \
                 copied, compare the two stores before relying on it"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(next_limit(64, 1000), 128);
        assert_eq!(next_limit(MAX_PAGE, 10), MAX_PAGE);
        assert_eq!(next_limit(64, PAGE_BYTES + 1), 32);
        assert_eq!(next_limit(MIN_PAGE, PAGE_BYTES * 4), MIN_PAGE);
        assert_eq!(next_limit(100, PAGE_BYTES * 3 / 4), 100);
    }
}
