//! The pattern and execution rules, written once for every backend: pure functions, no I/O.
//!
//! A backend fetches, locks and persists; what a stored pattern, execution or event looks like after a call,
//! whether the call is allowed, and what the caller is told when it is not, are decided here, so the same
//! call gives the same answer (same [`ErrorKind`], same message) on SQLite, PostgreSQL and the file store.
//! The contract suite (`tests/contract/rules.rs`) holds every backend to that, message for message.
//!
//! PostgreSQL completes and updates an execution in one conditional `UPDATE` (`src/postgres/statements.rs`)
//! that encodes [`updated_execution`] and [`completed_execution`] in SQL; when it changes no row, the backend
//! reads the row and lets the same functions say why.
//!
//! The read-side shaping the adapter applies to every backend's rows (latest version of a pattern, version
//! order, pages) lives here too, so the adapter itself is only: guard, validate, call.

use abi_stable::std_types::{ROption, ROption::RSome, RString};
use parallax_storage_abi::{
    retention::CleanupTarget, ErrorKind, Execution, ExecutionCompletion, ExecutionEvent, ExecutionStatus,
    ExecutionUpdate, NewEvent, NewExecution, NewPattern, Pattern,
};

use crate::{
    error::{Error, Result},
    validate,
};

// ------------------------------------------------------------------ not found, already exists

pub fn execution_not_found(id: &str) -> Error {
    Error::not_found(format!("execution {id} not found"))
}

pub fn pattern_not_found(name: &str, version: &str) -> Error {
    Error::not_found(format!("pattern {name:?} version {version} not found"))
}

/// No version at all of pattern `name`.
pub fn pattern_name_not_found(name: &str) -> Error {
    Error::not_found(format!("pattern {name:?} not found"))
}

pub fn pattern_version_exists(name: &str, version: &str) -> Error {
    Error::conflict(format!("pattern {name:?} version {version} already exists; versions are immutable"))
}

/// The id a client chose for a new pattern belongs to another pattern version.
pub fn pattern_id_taken(id: &str) -> Error {
    Error::conflict(format!("pattern id {id} is already taken by another pattern version; choose another id"))
}

pub fn execution_exists(id: &str) -> Error {
    Error::conflict(format!("execution {id} already exists"))
}

/// Pattern `name` `version` exists, but its stored document cannot be read (only the file store keeps one
/// file a version, so only it can say this).
pub fn pattern_version_damaged(name: &str, version: &str, file: &std::path::Path, why: &str) -> Error {
    Error::conflict(format!(
        "pattern {name:?} version {version} already exists, but its file {} is damaged ({why}); delete that \
         version first",
        file.display()
    ))
}

/// A conditional write found execution `id` allowed to change, yet changed no row: another call changed it
/// in between (PostgreSQL's one-statement update and completion).
pub fn execution_changed_concurrently(id: &str) -> Error {
    Error::conflict(format!("execution {id} changed while this call ran; read it and retry"))
}

/// The id a client chose for an audit entry is taken. Audit entries are never rewritten.
pub fn audit_entry_exists(id: &str) -> Error {
    Error::conflict(format!(
        "audit entry {id} already exists; audit entries are immutable: give the new entry another id or \
         leave the id out to have one generated"
    ))
}

/// The entry that makes an audit batch break the id key, if one does: the first entry, in batch order,
/// whose id is `stored` already or repeats an earlier entry of the batch. Every backend names the same
/// entry: the file store checks before writing, SQLite and PostgreSQL ask after their key refused the batch.
pub fn audit_conflict<'a>(
    ids: impl IntoIterator<Item = &'a str>,
    stored: impl Fn(&str) -> bool,
) -> Option<Error> {
    let mut seen = std::collections::HashSet::new();
    ids.into_iter().find(|id| stored(id) || !seen.insert(*id)).map(audit_entry_exists)
}

/// [`audit_conflict`] for a batch the store's id key refused: when no entry explains it any more (the
/// clashing entry went away before the store was asked), says so.
pub fn explain_audit_conflict<'a>(
    ids: impl IntoIterator<Item = &'a str>,
    stored: impl Fn(&str) -> bool,
) -> Error {
    audit_conflict(ids, stored).unwrap_or_else(|| {
        Error::conflict(
            "an id of this audit batch was taken while it was stored, and is free again; nothing of the \
             batch was stored: retry it",
        )
    })
}

// ------------------------------------------------------------------ statuses asked for by a call

/// A new execution starts pending or running.
pub fn check_new_status(status: ExecutionStatus) -> Result<()> {
    validate::known_status(status, "status")?;
    if status.is_final() {
        return Err(Error::invalid(format!(
            "a new execution must be pending or running, not {}; create it, then complete it",
            status.as_str()
        )));
    }
    Ok(())
}

/// An update may move an execution between pending and running; a final status is set by completing it.
pub fn check_update_status(status: ROption<ExecutionStatus>) -> Result<()> {
    if let RSome(s) = status {
        validate::known_status(s, "status")?;
    }
    match status {
        RSome(s) if s.is_final() => Err(Error::invalid(format!(
            "status {} is final: use complete_execution (`parallax executions finish`) to set it",
            s.as_str()
        ))),
        _ => Ok(()),
    }
}

/// Completing sets a final status.
pub fn check_completion_status(status: ExecutionStatus) -> Result<()> {
    validate::known_status(status, "status")?;
    if !status.is_final() {
        return Err(Error::invalid(format!(
            "cannot complete an execution with status {}; use completed, failed or cancelled",
            status.as_str()
        )));
    }
    Ok(())
}

// ------------------------------------------------------------------ the lifecycle of a stored execution

/// Final states are final: an execution that is completed, failed or cancelled cannot be updated.
pub fn check_updatable(id: &str, status: ExecutionStatus) -> Result<()> {
    if status.is_final() {
        return Err(Error::conflict(format!(
            "execution {id} is {} and can no longer be updated",
            status.as_str()
        )));
    }
    Ok(())
}

/// Final states are final: an execution is completed once.
pub fn check_completable(id: &str, status: ExecutionStatus) -> Result<()> {
    if status.is_final() {
        return Err(Error::conflict(format!("execution {id} is already {}", status.as_str())));
    }
    Ok(())
}

/// Events are recorded only while an execution is pending or running.
pub fn check_accepts_events(id: &str, status: ExecutionStatus) -> Result<()> {
    if status.is_final() {
        return Err(Error::conflict(format!(
            "execution {id} is {}; events can only be appended to pending or running executions",
            status.as_str()
        )));
    }
    Ok(())
}

/// An execution cannot complete before it started.
pub fn check_completed_after_start(completed_at: i64, started_at: i64) -> Result<()> {
    if completed_at < started_at {
        return Err(Error::invalid(format!(
            "completed_at {completed_at} is before the execution's started_at {started_at}"
        )));
    }
    Ok(())
}

/// Whole milliseconds from `started_at` to `completed_at` (both in microseconds, `completed_at >= started_at`),
/// rounded down.
pub fn duration_ms(started_at: i64, completed_at: i64) -> i64 {
    (completed_at - started_at) / 1000
}

/// A completion whose time is decided: what the adapter hands a backend, so no backend picks its own "now".
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub status: ExecutionStatus,
    pub output: ROption<RString>,
    pub error: ROption<RString>,
    pub completed_at: i64,
}

/// `c` with `completed_at` defaulted to `now` (microseconds) when the caller left it out.
pub fn completion(c: ExecutionCompletion, now: i64) -> Completion {
    Completion {
        status: c.status,
        output: c.output,
        error: c.error,
        completed_at: c.completed_at.unwrap_or(now),
    }
}

// ------------------------------------------------------------------ what gets stored

/// The pattern version stored for `p` (whose id the adapter filled in), created at `now` (microseconds).
pub fn stored_pattern(p: NewPattern, now: i64) -> Pattern {
    Pattern {
        id: p.id.unwrap_or_default(),
        name: p.name,
        version: p.version,
        description: p.description,
        definition: p.definition,
        created_at: now,
        created_by: p.created_by,
    }
}

/// The execution stored for `e`, whose `id` and `started_at` the adapter filled in: what `create_execution`
/// answers without reading the row back.
pub fn created_execution(e: NewExecution) -> Execution {
    Execution {
        id: e.id.unwrap_or_default(),
        pattern_name: e.pattern_name,
        pattern_version: e.pattern_version,
        status: e.status,
        input: e.input,
        output: None.into(),
        error: None.into(),
        started_at: e.started_at.unwrap_or_default(),
        completed_at: None.into(),
        duration_ms: None.into(),
        metadata: e.metadata,
        tags: e.tags,
    }
}

/// `current` after update `u`, and whether anything changed (an empty update writes nothing). A field the
/// update leaves out keeps its value.
pub fn updated_execution(mut current: Execution, u: ExecutionUpdate) -> Result<(Execution, bool)> {
    check_updatable(&current.id, current.status)?;
    if u.status.is_none() && u.output.is_none() && u.error.is_none() && u.metadata.is_none() {
        return Ok((current, false));
    }
    if let RSome(s) = u.status {
        current.status = s;
    }
    keep_or_set(&mut current.output, u.output);
    keep_or_set(&mut current.error, u.error);
    keep_or_set(&mut current.metadata, u.metadata);
    Ok((current, true))
}

/// `current` after completion `c`: its final status, `completed_at` and `duration_ms`.
pub fn completed_execution(mut current: Execution, c: Completion) -> Result<Execution> {
    check_completable(&current.id, current.status)?;
    check_completed_after_start(c.completed_at, current.started_at)?;
    current.status = c.status;
    keep_or_set(&mut current.output, c.output);
    keep_or_set(&mut current.error, c.error);
    current.completed_at = RSome(c.completed_at);
    current.duration_ms = RSome(duration_ms(current.started_at, c.completed_at));
    Ok(current)
}

fn keep_or_set(field: &mut ROption<RString>, value: ROption<RString>) {
    if value.is_some() {
        *field = value;
    }
}

/// The sequence number of the event after `last_seq` (`None`: the execution has no event yet).
pub fn next_seq(last_seq: Option<i64>) -> i64 {
    last_seq.unwrap_or(0) + 1
}

/// The event appended to an execution whose last event has sequence number `last_seq` (`None`: no event
/// yet); `e.recorded_at` was filled in by the adapter.
pub fn appended_event(
    execution_id: &str,
    event_id: &str,
    last_seq: Option<i64>,
    e: NewEvent,
) -> ExecutionEvent {
    ExecutionEvent {
        id: event_id.into(),
        execution_id: execution_id.into(),
        seq: next_seq(last_seq),
        kind: e.kind,
        payload: e.payload,
        recorded_at: e.recorded_at.unwrap_or_default(),
    }
}

/// A unique-key violation raised while storing pattern `p`, explained: its (name, version) exists, or the id
/// the client chose is taken. `on_name_version` tells which key the store reported.
pub fn pattern_conflict(p: &Pattern, on_name_version: bool) -> Error {
    if on_name_version {
        pattern_version_exists(&p.name, &p.version)
    } else {
        pattern_id_taken(&p.id)
    }
}

/// Keeps `e` unless it is a unique-key violation, which `conflict` explains.
pub fn explain_conflict(e: Error, conflict: impl FnOnce(&Error) -> Error) -> Error {
    if e.kind() == ErrorKind::Conflict {
        conflict(&e)
    } else {
        e
    }
}

// ------------------------------------------------------------------ reading: versions and pages

/// Highest semantic version first (semver's total order), then newest `created_at`; unparsable versions last.
pub fn sort_versions(mut v: Vec<Pattern>) -> Vec<Pattern> {
    v.sort_by_cached_key(|p| {
        (std::cmp::Reverse(semver::Version::parse(&p.version).ok()), std::cmp::Reverse(p.created_at))
    });
    v
}

/// The latest of the versions of pattern `name`.
pub fn latest_version(name: &str, versions: Vec<Pattern>) -> Result<Pattern> {
    sort_versions(versions).into_iter().next().ok_or_else(|| pattern_name_not_found(name))
}

/// The latest version of each name, from rows grouped by name (names in order), in that order.
pub fn latest_of_each(rows: Vec<Pattern>) -> Vec<Pattern> {
    let mut latest: Vec<Pattern> = Vec::new();
    let mut group: Vec<Pattern> = Vec::new();
    for p in rows {
        if group.last().is_some_and(|g| g.name != p.name) {
            latest.extend(sort_versions(std::mem::take(&mut group)).into_iter().next());
        }
        group.push(p);
    }
    latest.extend(sort_versions(group).into_iter().next());
    latest
}

/// A page of at most `limit` rows from a backend's `limit + 1`, and the key of its last row when more follow.
pub fn into_page<T, K>(mut rows: Vec<T>, limit: usize, key: impl Fn(&T) -> K) -> (Vec<T>, Option<K>) {
    if rows.len() > limit {
        rows.truncate(limit);
        let next = rows.last().map(key);
        (rows, next)
    } else {
        (rows, None)
    }
}

// ------------------------------------------------------------------ retention: what a cleanup removes

/// The smallest id: a limit `(t, MIN_ID)` selects every row strictly before `t`, whatever its id.
pub const MIN_ID: &str = "00000000-0000-0000-0000-000000000000";

/// A row's position in time order: `(started_at, id)` for executions, `(timestamp, id)` for audit entries.
/// Ids compare as lower-case UUID text, which is also PostgreSQL's `uuid` order.
pub type Key = (i64, String);

/// The statuses a cleanup may remove without `include_unfinished` (as stored, for SQL `IN` lists).
pub const FINAL_STATUSES: [&str; 3] = ["completed", "failed", "cancelled"];

/// Which rows a cleanup removes, written once for every backend:
///
/// - executions whose key `(started_at, id)` is below `before`, and whose status is final unless
///   `include_unfinished`; their events and search entries go with them;
/// - audit entries whose key `(timestamp, id)` is below `before`.
///
/// `before` folds both limits of a cleanup into one key ([`retention_limit`]): "older than the cutoff" is
/// `key < (cutoff, MIN_ID)`, and "beyond the newest N" is `key < key of the N-th newest`; a row matching
/// either is below the larger of the two. Backends turn this into SQL (`(started_at, id) < ($1, $2) AND
/// status IN (…)`) or test rows with [`Selection::selects`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection {
    pub target: CleanupTarget,
    pub before: Key,
    pub include_unfinished: bool,
}

impl Selection {
    /// Whether a row goes: its key and, for executions, its status (`None` for audit entries).
    pub fn selects(&self, at: i64, id: &str, status: Option<ExecutionStatus>) -> bool {
        self.below(at, id) && (self.include_unfinished || status.is_none_or(|s| s.is_final()))
    }

    /// An old pending/running execution that stays because `include_unfinished` is off (reported as kept).
    pub fn keeps_unfinished(&self, at: i64, id: &str, status: ExecutionStatus) -> bool {
        self.below(at, id) && !self.include_unfinished && !status.is_final()
    }

    /// Whether the key is below the limit, status aside.
    pub fn below(&self, at: i64, id: &str) -> bool {
        (at, id) < (self.before.0, self.before.1.as_str())
    }

    /// Whether the whole time range `[from, to)` is below the limit: a PostgreSQL partition or file-store month
    /// in it can go whole when every row in it is selected.
    pub fn covers_range(&self, to: i64) -> bool {
        to <= self.before.0
    }
}

/// The limit of a cleanup: the larger of `(cutoff, MIN_ID)` and the key of the N-th newest execution (rows
/// below it are beyond the newest N). `None`: nothing is selected.
pub fn retention_limit(cutoff: Option<i64>, nth_newest: Option<Key>) -> Option<Key> {
    let by_age = cutoff.map(|c| (c, MIN_ID.to_string()));
    match (by_age, nth_newest) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// A cleanup that would remove every row of its table needs the caller's confirmation.
pub fn confirm_removing_everything(target: CleanupTarget) -> Error {
    let what = match target {
        CleanupTarget::Executions => "execution",
        CleanupTarget::AuditLogs => "audit entry",
    };
    Error::invalid(format!(
        "this cleanup would remove every {what}; check it with --dry-run, then add --yes to \
         confirm (`confirmAll: true` in the maintenance request)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn execution(status: ExecutionStatus, started_at: i64) -> Execution {
        Execution {
            id: "0190b3f2-7c1e-7a00-8000-000000000001".into(),
            pattern_name: "p".into(),
            pattern_version: "1.0.0".into(),
            status,
            input: None.into(),
            output: RSome("\"old\"".into()),
            error: None.into(),
            started_at,
            completed_at: None.into(),
            duration_ms: None.into(),
            metadata: None.into(),
            tags: Default::default(),
        }
    }

    fn pattern(name: &str, version: &str, created_at: i64) -> Pattern {
        Pattern {
            id: RString::new(),
            name: name.into(),
            version: version.into(),
            description: None.into(),
            definition: "{}".into(),
            created_at,
            created_by: None.into(),
        }
    }

    #[test]
    fn completion_sets_time_and_rounds_duration_down() {
        let e = execution(ExecutionStatus::Running, 1_000_000);
        let c = completion(
            ExecutionCompletion {
                status: ExecutionStatus::Failed,
                output: None.into(),
                error: RSome("{}".into()),
                completed_at: None.into(),
            },
            1_002_999,
        );
        let done = completed_execution(e, c).unwrap();
        assert_eq!(done.completed_at, RSome(1_002_999));
        assert_eq!(done.duration_ms, RSome(2));
        assert_eq!(done.output, RSome("\"old\"".into()), "left out: kept");
        assert_eq!(done.error, RSome("{}".into()));
        let c = ExecutionCompletion {
            status: ExecutionStatus::Completed,
            output: None.into(),
            error: None.into(),
            completed_at: None.into(),
        };
        let again = completed_execution(done, completion(c, 2_000_000));
        assert_eq!(again.unwrap_err().kind(), ErrorKind::Conflict);
    }

    #[test]
    fn completion_before_start_is_refused() {
        let c = Completion {
            status: ExecutionStatus::Completed,
            output: None.into(),
            error: None.into(),
            completed_at: 9,
        };
        let err = completed_execution(execution(ExecutionStatus::Pending, 10), c).unwrap_err();
        assert_eq!(err.0.message, "completed_at 9 is before the execution's started_at 10");
    }

    #[test]
    fn empty_update_changes_nothing_but_final_is_still_refused() {
        let (same, changed) =
            updated_execution(execution(ExecutionStatus::Running, 0), ExecutionUpdate::default()).unwrap();
        assert!(!changed);
        assert_eq!(same, execution(ExecutionStatus::Running, 0));
        let err = updated_execution(execution(ExecutionStatus::Cancelled, 0), ExecutionUpdate::default());
        assert_eq!(err.unwrap_err().kind(), ErrorKind::Conflict);
    }

    #[test]
    fn versions_sort_by_semver_then_newest() {
        let sorted = sort_versions(vec![
            pattern("a", "1.2.0", 1),
            pattern("a", "1.10.0", 2),
            pattern("a", "1.0.0+x", 5),
            pattern("a", "1.0.0+y", 6),
            pattern("a", "2.0.0-rc.1", 3),
        ]);
        let v: Vec<&str> = sorted.iter().map(|p| p.version.as_str()).collect();
        assert_eq!(v, ["2.0.0-rc.1", "1.10.0", "1.2.0", "1.0.0+y", "1.0.0+x"]);
    }

    #[test]
    fn latest_of_each_keeps_name_order() {
        let rows = vec![pattern("a", "1.0.0", 0), pattern("a", "1.1.0", 0), pattern("b", "0.1.0", 0)];
        let latest: Vec<(String, String)> =
            latest_of_each(rows).into_iter().map(|p| (p.name.into(), p.version.into())).collect();
        assert_eq!(latest, [("a".into(), "1.1.0".into()), ("b".into(), "0.1.0".into())]);
        assert!(latest_of_each(Vec::new()).is_empty());
        assert_eq!(latest_version("zz", Vec::new()).unwrap_err().0.message, "pattern \"zz\" not found");
    }

    #[test]
    fn audit_conflicts_name_the_first_clashing_entry_in_batch_order() {
        let stored = |id: &str| id == "s";
        assert_eq!(audit_conflict(["a", "b", "c"], stored), None);
        let named = |ids: &[&'static str]| audit_conflict(ids.iter().copied(), stored).map(|e| e.0.message);
        assert_eq!(named(&["a", "s", "a"]), Some(audit_entry_exists("s").0.message));
        assert_eq!(named(&["a", "b", "a", "s"]), Some(audit_entry_exists("a").0.message));
        assert_eq!(audit_conflict(["s"], stored).unwrap().kind(), ErrorKind::Conflict);
        assert!(audit_entry_exists("0190b3f2-7c1e-7a00-8000-000000000009")
            .0
            .message
            .starts_with("audit entry 0190b3f2-7c1e-7a00-8000-000000000009 already exists; "));
        let unexplained = explain_audit_conflict(["a"], |_| false);
        assert_eq!(unexplained.kind(), ErrorKind::Conflict);
        assert!(unexplained.0.message.contains("retry"), "{unexplained}");
    }

    #[test]
    fn pages_stop_at_the_limit() {
        assert_eq!(into_page(vec![1, 2, 3], 2, |x| *x), (vec![1, 2], Some(2)));
        assert_eq!(into_page(vec![1, 2], 2, |x| *x), (vec![1, 2], None));
    }
}
