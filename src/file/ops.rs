//! The write operations, planned on the writer thread: the same rules and messages as the SQL backends
//! (`src/sqlite/queries.rs`): immutable pattern versions, final execution states, event sequence numbers,
//! all-or-nothing audit batches.

use abi_stable::std_types::{ROption::RSome, RString};
use parallax_storage_abi::{
    AuditEntry, Execution, ExecutionCompletion, ExecutionEvent, ExecutionUpdate, NewAuditEntry, NewEvent,
    NewExecution, NewPattern, Pattern,
};

use super::{
    codec::Encoding,
    docs::Doc,
    index::{damaged, exec_not_found, Found},
    layout,
    plan::{execution_change, pattern_change, Change, Plan},
};
use crate::{
    contract::created_execution,
    error::{Error, Result},
    time::now_micros,
};

fn ready(pl: &Plan<'_>) -> Result<()> {
    pl.idx.ready(&pl.layout.base)
}

/// The execution to change, or why it cannot be found or read.
fn existing(pl: &Plan<'_>, id: &str) -> Result<(Execution, std::path::PathBuf)> {
    match pl.execution(id) {
        Found::Yes(x) => Ok(x),
        Found::No => Err(exec_not_found(id)),
        Found::Damaged(path, why) => Err(damaged(&format!("execution {id}"), &path, &why)),
    }
}

/// A rewrite keeps the file's own encoding (its extension), whatever the configuration says now.
fn encoding_of(pl: &Plan<'_>, path: &std::path::Path) -> Encoding {
    Encoding::of_path(path).unwrap_or(pl.enc)
}

pub fn put_pattern(pl: &mut Plan<'_>, p: NewPattern) -> Result<Pattern> {
    ready(pl)?;
    match pl.pattern(&p.name, &p.version) {
        Found::No => {}
        Found::Yes(_) => {
            return Err(Error::conflict(format!(
                "pattern {:?} version {} already exists; versions are immutable",
                p.name, p.version
            )))
        }
        Found::Damaged(path, why) => {
            return Err(Error::conflict(format!(
                "pattern {:?} version {} already exists, but its file {} is damaged ({why}); delete that \
                 version first",
                p.name,
                p.version,
                path.display()
            )))
        }
    }
    let pattern = Pattern {
        id: p.id.clone().unwrap_or_default(),
        name: p.name,
        version: p.version,
        description: p.description,
        definition: p.definition,
        created_at: now_micros(),
        created_by: p.created_by,
    };
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
        Found::No => return Err(Error::not_found(format!("pattern {name:?} version {version} not found"))),
    };
    pl.remove(path, true);
    pl.change(Change::Pattern { key: (name, version), entry: None });
    Ok(())
}

pub fn create_execution(pl: &mut Plan<'_>, e: NewExecution) -> Result<Execution> {
    ready(pl)?;
    let id = e.id.clone().unwrap_or_default().to_string();
    if !matches!(pl.execution(&id), Found::No) {
        return Err(Error::conflict(format!("execution {id} already exists")));
    }
    let execution = created_execution(e);
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
    let (mut e, path) = existing(pl, &id)?;
    if e.status.is_final() {
        return Err(Error::conflict(format!(
            "execution {id} is {} and can no longer be updated",
            e.status.as_str()
        )));
    }
    if u.status.is_none() && u.output.is_none() && u.error.is_none() && u.metadata.is_none() {
        return Ok(e);
    }
    if let RSome(s) = u.status {
        e.status = s;
    }
    set(&mut e.output, u.output);
    set(&mut e.error, u.error);
    set(&mut e.metadata, u.metadata);
    rewrite(pl, &e, path);
    Ok(e)
}

/// `None` leaves a field alone, as the SQL backends' changesets do.
fn set(field: &mut abi_stable::std_types::ROption<RString>, value: abi_stable::std_types::ROption<RString>) {
    if value.is_some() {
        *field = value;
    }
}

pub fn complete_execution(pl: &mut Plan<'_>, id: String, c: ExecutionCompletion) -> Result<Execution> {
    ready(pl)?;
    let (mut e, path) = existing(pl, &id)?;
    if e.status.is_final() {
        return Err(Error::conflict(format!("execution {id} is already {}", e.status.as_str())));
    }
    let completed_at = c.completed_at.unwrap_or_else(now_micros);
    if completed_at < e.started_at {
        return Err(Error::invalid(format!(
            "completed_at {completed_at} is before the execution's started_at {}",
            e.started_at
        )));
    }
    e.status = c.status;
    set(&mut e.output, c.output);
    set(&mut e.error, c.error);
    e.completed_at = RSome(completed_at);
    e.duration_ms = RSome((completed_at - e.started_at) / 1000);
    rewrite(pl, &e, path);
    Ok(e)
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
    if x.status.is_final() {
        return Err(Error::conflict(format!(
            "execution {execution_id} is {}; events can only be appended to pending or running executions",
            x.status.as_str()
        )));
    }
    let dir = layout::events_dir(&path).ok_or_else(|| {
        Error::internal(format!("execution file {} has an unexpected name", path.display()))
    })?;
    let event = ExecutionEvent {
        id: event_id.into(),
        execution_id: execution_id.clone().into(),
        seq: pl.last_seq(&execution_id) + 1,
        kind: e.kind,
        payload: e.payload,
        recorded_at: e.recorded_at.unwrap_or_default(),
    };
    let file = layout::event_file(&dir, event.seq, pl.enc);
    pl.write(file, Doc::Event(event.clone()), pl.enc);
    pl.change(Change::Event { execution_id, seq: event.seq });
    Ok(event)
}

/// The whole batch is one new file (under the day of its earliest entry), so it lands entirely or not at all.
pub fn append_audit(pl: &mut Plan<'_>, entries: Vec<NewAuditEntry>) -> Result<()> {
    ready(pl)?;
    let mut seen = std::collections::HashSet::with_capacity(entries.len());
    let entries: Vec<AuditEntry> = entries
        .into_iter()
        .map(|a| AuditEntry {
            id: a.id.unwrap_or_default(),
            timestamp: a.timestamp.unwrap_or_default(),
            action: a.action,
            actor: a.actor,
            resource_type: a.resource_type,
            resource_id: a.resource_id,
            details: a.details,
            ip_address: a.ip_address,
            user_agent: a.user_agent,
        })
        .collect();
    for a in &entries {
        if pl.audit_id_taken(&a.id) || !seen.insert(a.id.as_str()) {
            return Err(Error::conflict(format!("audit entry {} already exists", a.id)));
        }
    }
    let Some(earliest) = entries.iter().map(|a| a.timestamp).min() else { return Ok(()) };
    let batch = uuid::Uuid::now_v7().hyphenated().to_string();
    let path = pl.layout.audit_file(earliest, &batch, pl.enc);
    pl.write(path, Doc::Audit { batch, entries: entries.clone() }, pl.enc);
    pl.change(Change::Audit { entries });
    Ok(())
}
