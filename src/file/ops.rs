//! The write operations, planned on the writer thread. What is stored and every refusal come from
//! [`crate::rules`], as for the SQL backends; the file-specific parts are the files written, damaged files,
//! and all-or-nothing audit batches.

use parallax_storage_abi::{
    AuditEntry, Execution, ExecutionEvent, ExecutionUpdate, NewAuditEntry, NewEvent, NewExecution,
    NewPattern, Pattern,
};

use super::{
    codec::Encoding,
    docs::Doc,
    index::{damaged, Found},
    layout,
    plan::{execution_change, pattern_change, Change, Plan},
};
use crate::{
    error::{Error, Result},
    rules::{self, Completion},
    time::now_micros,
};

fn ready(pl: &Plan<'_>) -> Result<()> {
    pl.idx.ready(&pl.layout.base)
}

/// The execution to change, or why it cannot be found or read.
fn existing(pl: &Plan<'_>, id: &str) -> Result<(Execution, std::path::PathBuf)> {
    match pl.execution(id) {
        Found::Yes(x) => Ok(x),
        Found::No => Err(rules::execution_not_found(id)),
        Found::Damaged(path, why) => Err(damaged(&format!("execution {id}"), &path, &why)),
    }
}

/// A rewrite keeps the file's own encoding (its extension), whatever the configuration says now.
fn encoding_of(pl: &Plan<'_>, path: &std::path::Path) -> Encoding {
    Encoding::of_path(path).unwrap_or(pl.enc)
}

/// `id_from_client`: the caller chose the id, which another version may hold (generated UUIDv7s cannot).
pub fn put_pattern(pl: &mut Plan<'_>, p: NewPattern, id_from_client: bool) -> Result<Pattern> {
    ready(pl)?;
    match pl.pattern(&p.name, &p.version) {
        Found::No => {}
        Found::Yes(_) => return Err(rules::pattern_version_exists(&p.name, &p.version)),
        Found::Damaged(path, why) => {
            // Only the file store has damaged files.
            return Err(rules::pattern_version_damaged(&p.name, &p.version, &path, &why));
        }
    }
    let pattern = rules::stored_pattern(p, now_micros());
    if id_from_client && pl.pattern_id_taken(&pattern.id) {
        return Err(rules::pattern_id_taken(&pattern.id));
    }
    let path = pl.layout.pattern_file(&pattern.name, &pattern.version, pl.enc);
    pl.write(path.clone(), Doc::Pattern(pattern.clone()), pl.enc);
    pl.change(pattern_change(&pattern, path));
    Ok(pattern)
}

/// Removes a version; a damaged version's file can be removed too (that is how an operator clears it).
pub fn delete_pattern(pl: &mut Plan<'_>, name: String, version: String) -> Result<()> {
    ready(pl)?;
    let path = match pl.pattern(&name, &version) {
        Found::Yes((_, path)) | Found::Damaged(path, _) => path,
        Found::No => return Err(rules::pattern_not_found(&name, &version)),
    };
    pl.remove(path, true);
    pl.change(Change::Pattern { key: (name, version), entry: None });
    Ok(())
}

pub fn create_execution(pl: &mut Plan<'_>, e: NewExecution) -> Result<Execution> {
    ready(pl)?;
    let id = e.id.clone().unwrap_or_default().to_string();
    if !matches!(pl.execution(&id), Found::No) {
        return Err(rules::execution_exists(&id));
    }
    let execution = rules::created_execution(e);
    let path = pl.layout.execution_file(execution.started_at, &id, pl.enc);
    pl.write(path.clone(), Doc::Execution(execution.clone()), pl.enc);
    pl.change(execution_change(&execution, path));
    Ok(execution)
}

fn rewrite(pl: &mut Plan<'_>, e: &Execution, path: std::path::PathBuf) {
    let enc = encoding_of(pl, &path);
    pl.write(path.clone(), Doc::Execution(e.clone()), enc);
    pl.change(execution_change(e, path));
}

pub fn update_execution(pl: &mut Plan<'_>, id: String, u: ExecutionUpdate) -> Result<Execution> {
    ready(pl)?;
    let (current, path) = existing(pl, &id)?;
    let (updated, changed) = rules::updated_execution(current, u)?;
    if changed {
        rewrite(pl, &updated, path);
    }
    Ok(updated)
}

pub fn complete_execution(pl: &mut Plan<'_>, id: String, c: Completion) -> Result<Execution> {
    ready(pl)?;
    let (current, path) = existing(pl, &id)?;
    let completed = rules::completed_execution(current, c)?;
    rewrite(pl, &completed, path);
    Ok(completed)
}

/// One new file per event beside the execution file; the execution file itself is not rewritten.
pub fn append_event(
    pl: &mut Plan<'_>,
    execution_id: String,
    event_id: String,
    e: NewEvent,
) -> Result<ExecutionEvent> {
    ready(pl)?;
    let (x, path) = existing(pl, &execution_id)?;
    rules::check_accepts_events(&execution_id, x.status)?;
    let dir = layout::events_dir(&path).ok_or_else(|| {
        Error::internal(format!("execution file {} has an unexpected name", path.display()))
    })?;
    let event = rules::appended_event(&execution_id, &event_id, Some(pl.last_seq(&execution_id)), e);
    let file = layout::event_file(&dir, event.seq, pl.enc);
    pl.write(file, Doc::Event(event.clone()), pl.enc);
    pl.change(Change::Event { execution_id, seq: event.seq });
    Ok(event)
}

/// The whole batch is one new file (under the day of its earliest entry), so it lands entirely or not at all.
/// Its entries are chained in the order given, after the group's head record, which the group writes after
/// the batch file ([`Plan::into_parts`]).
pub fn append_audit(pl: &mut Plan<'_>, entries: Vec<NewAuditEntry>) -> Result<()> {
    ready(pl)?;
    let entries: Vec<AuditEntry> = entries.iter().map(crate::audit_chain::entry_of).collect();
    if let Some(e) = rules::audit_conflict(entries.iter().map(|a| a.id.as_str()), |id| pl.audit_id_taken(id))
    {
        return Err(e);
    }
    let Some(earliest) = entries.iter().map(|a| a.timestamp).min() else { return Ok(()) };
    let entries = pl.chain_entries(&entries);
    let batch = uuid::Uuid::now_v7().hyphenated().to_string();
    let path = pl.layout.audit_file(earliest, &batch, pl.enc);
    pl.write(path.clone(), Doc::Audit { batch, entries: entries.clone() }, pl.enc);
    pl.change(Change::Audit { entries, file: path.into() });
    Ok(())
}
