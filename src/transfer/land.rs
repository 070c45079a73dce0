//! Landing a page in a target, written once for `copy` and `import`: insert-if-absent, read every row back
//! by id, compare canonical hashes ([`super::checksum`]) with the source's rows, count copied / present /
//! conflicts, keep the running checksums and the cursors in a [`TransferState`] saved in the target.
//!
//! - A row read back equal to the source's is *copied* (this run, or the runs it resumed, inserted it) or
//!   *present* (it was there already); both checksums get its hash.
//! - A row read back different is a *conflict*: never overwritten, left out of both checksums, reported with
//!   the first field that differs.
//! - A row missing after its insert is an error (a backend that lost a write), except a pattern version whose
//!   `(name, version)` is taken by another id: a conflict.
//! - **Owned fast path** ([`TransferState::owned`], a copy into a PostgreSQL target that was empty, no merge):
//!   executions pages land without an id search by `COPY` in one transaction with the state whose cursor is
//!   past them ([`Landing::executions_owned`]), so a resumed run never lands a page twice; nothing is read
//!   back per page: the target's executions and events checksums come from a scan of the target at the end
//!   ([`Landing::count_owned_target`]), which any row lost, added or altered makes differ.
//! - An execution copied while pending or running is remembered (`unfinished`): the copy driver re-reads it
//!   from the source at the end ([`Landing::refresh`]) and reports it when it changed (left out of both
//!   checksums), and a catch-up run refreshes it ([`Landing::catch_up_unfinished`]).

use std::collections::{BTreeMap, HashMap, HashSet};

use parallax_storage_abi::{
    transfer::{Conflict, TableTransfer, TransferReport, CHECKSUM_VERSION, TABLES},
    AuditEntry, AuditQuery, Execution, ExecutionEvent, ExecutionFilter, Pattern,
};
use serde_json::Value;

use super::{
    checksum::{self, Tally},
    state::{Kind, Phase, TransferState},
};
use crate::{
    archive::ExecutionRecord,
    contract::Contract,
    error::{Error, Result},
    validate::Page,
};

/// At most this many executions copied while pending or running are remembered; beyond it the run refuses.
pub const MAX_UNFINISHED: usize = 200_000;
/// At most this many conflicts are kept in the state and reported.
pub const MAX_CONFLICTS: usize = 100;
/// Ids per read of the target by id.
const FETCH_CHUNK: usize = 1000;
/// At most this many ids of executions changed after the snapshot are reported.
pub const MAX_CHANGED_REPORTED: usize = 20;

const PATTERNS: &str = "patterns";
const EXECUTIONS: &str = "executions";
const EVENTS: &str = "execution_events";
const AUDIT: &str = "audit_logs";

/// A transfer landing pages in `target` (see the module documentation).
pub struct Landing<'a, T: Contract> {
    target: &'a T,
    state: TransferState,
    dry_run: bool,
    /// A dry run into a target whose schema is not created yet: nothing is read back (every row would be
    /// copied).
    blank: bool,
    /// `fresh`, `resumed`, `catch-up` or `merge`.
    mode: &'static str,
    started: std::time::Instant,
    unfinished: HashSet<String>,
    changed: HashSet<String>,
}

/// How a row compared with its copy in the target.
enum Outcome {
    /// Equal: both hashes go into the tallies.
    Equal,
    /// Absent from the target (a dry run: would be copied).
    Absent,
    /// Different: the first differing field.
    Differs(String),
}

impl<'a, T: Contract> Landing<'a, T> {
    /// Under the target's transfer states: an unfinished state of the same `source` and `kind` → resumed (its
    /// snapshot, cursors and tallies); a finished one → catch-up (new snapshot `snapshot`, a new run id, old
    /// cursors and tallies kept); none → fresh if the target holds no pattern, execution or audit entry, else
    /// `Conflict` "target … is not empty (…); use --merge to add to it" unless `merge`. Saves the first state
    /// (not on a dry run).
    pub async fn begin(
        target: &'a T,
        kind: Kind,
        source: String,
        snapshot: i64,
        merge: bool,
        dry_run: bool,
    ) -> Result<Landing<'a, T>> {
        let now = crate::time::now_micros();
        // A dry run opens the target without migrating it: a target not created yet holds nothing.
        let states = match target.transfer_states().await {
            // Blank only when no migration was ever applied; a schema that is merely behind is the open's
            // Schema error (the copy names `migrate up`), as a run that writes would get.
            Err(e) if dry_run && e.kind() == parallax_storage_abi::ErrorKind::Schema => {
                let applied = target.migration_status().await.is_ok_and(|m| m.iter().any(|m| m.applied));
                if applied {
                    return Err(e);
                }
                None
            }
            other => Some(other?),
        };
        let blank = states.is_none();
        let previous = states
            .unwrap_or_default()
            .into_iter()
            .filter(|(_, s, _)| *s == source)
            .filter_map(|(_, _, json)| TransferState::from_json(&json))
            .find(|st| st.kind == kind && st.source == source);
        let (state, mode) = match previous {
            Some(st) if st.phase != Phase::Done => (st, "resumed"),
            // The previous run was not verified (rows appeared or went behind its cursor): this one reads
            // everything again from the start. Insert-if-absent keeps it free of duplicates; every row is read
            // back and compared again; the figures start from zero.
            Some(old) if !old.problems.is_empty() => {
                let st = TransferState {
                    id: uuid::Uuid::now_v7().to_string(),
                    kind,
                    source,
                    snapshot,
                    started_at: now,
                    updated_at: now,
                    merge: old.merge || merge,
                    target_was_empty: old.target_was_empty,
                    phase: Phase::Patterns,
                    tables: TABLES.iter().map(|t| (t.to_string(), Default::default())).collect(),
                    unfinished_refreshed: true,
                    ..TransferState::default()
                };
                (st, "rescan")
            }
            Some(old) => {
                let st = TransferState {
                    id: uuid::Uuid::now_v7().to_string(),
                    snapshot,
                    previous_snapshot: Some(old.snapshot),
                    started_at: now,
                    updated_at: now,
                    merge: old.merge || merge,
                    phase: Phase::Patterns,
                    unfinished_refreshed: false,
                    recount_base: None,
                    after_snapshot: BTreeMap::new(),
                    problems: Vec::new(),
                    // The target holds the previous run's rows: insert-if-absent and read back again.
                    owned: false,
                    ..old
                };
                (st, "catch-up")
            }
            None => {
                let held = if blank { Holdings::default() } else { holdings(target).await? };
                let empty = held.is_empty();
                if !empty && !merge {
                    let location = target.health().await.map(|h| h.location.to_string()).unwrap_or_default();
                    let at = if location.is_empty() { String::new() } else { format!(" {location}") };
                    return Err(Error::conflict(format!(
                        "target{at} is not empty ({held}); use --merge to add to it (present rows are \
                         skipped when equal and reported as conflicts when different, never overwritten)"
                    )));
                }
                let st = TransferState {
                    id: uuid::Uuid::now_v7().to_string(),
                    kind,
                    source,
                    snapshot,
                    previous_snapshot: None,
                    started_at: now,
                    updated_at: now,
                    merge,
                    target_was_empty: empty,
                    owned: empty
                        && !merge
                        && !dry_run
                        && !blank
                        && kind == Kind::Copy
                        && target.lands_owned(),
                    phase: Phase::Patterns,
                    cursors: BTreeMap::new(),
                    tables: TABLES.iter().map(|t| (t.to_string(), Default::default())).collect(),
                    unfinished: Vec::new(),
                    conflicts: Vec::new(),
                    changed: Vec::new(),
                    unfinished_counted: BTreeMap::new(),
                    unfinished_refreshed: true,
                    recount_base: None,
                    excluded: BTreeMap::new(),
                    after_snapshot: BTreeMap::new(),
                    problems: Vec::new(),
                };
                (st, if empty { "fresh" } else { "merge" })
            }
        };
        let mut landing = Landing {
            target,
            unfinished: state.unfinished.iter().cloned().collect(),
            changed: state.changed.iter().cloned().collect(),
            state,
            dry_run,
            blank,
            mode,
            started: std::time::Instant::now(),
        };
        landing.save().await?;
        Ok(landing)
    }

    /// The state: snapshot, cursors and phase of a resumed run.
    pub fn state(&self) -> &TransferState {
        &self.state
    }

    /// The caller moves cursors and the phase.
    pub fn state_mut(&mut self) -> &mut TransferState {
        &mut self.state
    }

    /// `fresh`, `resumed`, `catch-up` or `merge`.
    pub fn mode(&self) -> &'static str {
        self.mode
    }

    fn table(&mut self, table: &str) -> &mut super::state::TableState {
        self.state.tables.entry(table.to_string()).or_default()
    }

    fn conflict(&mut self, table: &str, id: &str, reason: String, source_hash: u128) {
        self.table(table).conflicts += 1;
        self.state.excluded.entry(table.to_string()).or_default().add(source_hash);
        if self.state.conflicts.len() < MAX_CONFLICTS {
            self.state.conflicts.push(Conflict { table: table.into(), id: id.into(), reason });
        }
    }

    /// Counts an equal row: copied when inserted by this transfer, else present.
    fn equal(&mut self, table: &str, source_hash: u128, target_hash: u128) {
        let t = self.table(table);
        t.source.add(source_hash);
        t.target.add(target_hash);
    }

    /// Splits the equal rows of a page into copied and present: `inserted` of them were new. A target that was
    /// empty when this source's first run started holds only rows this transfer wrote (a row present here was
    /// inserted by a run killed before it saved its state), so every equal row counts as copied.
    fn attribute(&mut self, table: &str, equal: u64, inserted: u64) {
        let ours = self.state.target_was_empty;
        let t = self.table(table);
        let copied = if ours { equal } else { inserted.min(equal) };
        t.copied += copied;
        t.present += equal - copied;
    }

    /// Lands pattern versions: inserted when their id is absent and their `(name, version)` free, then read
    /// back. A version whose `(name, version)` is taken by another id is a conflict.
    pub async fn patterns(&mut self, rows: Vec<Pattern>) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = rows.iter().map(|p| p.id.to_string()).collect();
        let inserted =
            if self.dry_run { 0 } else { self.target.import_patterns(rows.clone()).await?.inserted };
        let back: HashMap<String, Pattern> = if self.blank {
            HashMap::new()
        } else {
            self.target.fetch_patterns(ids).await?.into_iter().map(|p| (p.id.to_string(), p)).collect()
        };
        let mut equal = 0u64;
        let mut would_copy = 0u64;
        for p in &rows {
            let h = checksum::pattern(p);
            let outcome = match back.get(p.id.as_str()) {
                Some(t) if checksum::pattern(t) == h => Outcome::Equal,
                Some(t) => Outcome::Differs(pattern_difference(p, t)),
                None if self.blank => Outcome::Absent,
                None => match self.target.get_pattern(p.name.to_string(), p.version.to_string()).await {
                    Ok(other) => Outcome::Differs(format!(
                        "{}@{} exists with id {}",
                        p.name.as_str(),
                        p.version.as_str(),
                        other.id.as_str()
                    )),
                    Err(e) if e.kind() == parallax_storage_abi::ErrorKind::NotFound => {
                        if self.dry_run {
                            Outcome::Absent
                        } else {
                            return Err(missing(PATTERNS, p.id.as_str()));
                        }
                    }
                    Err(e) => return Err(e),
                },
            };
            match outcome {
                Outcome::Equal => {
                    equal += 1;
                    self.equal(PATTERNS, h, h);
                }
                Outcome::Absent => {
                    would_copy += 1;
                    self.table(PATTERNS).source.add(h);
                }
                Outcome::Differs(reason) => self.conflict(PATTERNS, p.id.as_str(), reason, h),
            }
        }
        self.attribute(PATTERNS, equal, inserted);
        self.table(PATTERNS).copied += would_copy;
        Ok(())
    }

    /// Lands executions with their events (any status): inserted when their id is absent, then read back.
    pub async fn executions(&mut self, rows: Vec<ExecutionRecord>) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = rows.iter().map(|r| r.execution.id.to_string()).collect();
        let within = started_range(&rows);
        // Into a target that held rows before: which of these it holds already (an unfinished one of those is
        // not this transfer's copy, so a catch-up must never replace it).
        let held_before: HashSet<String> = if self.state.target_was_empty || self.blank {
            HashSet::new()
        } else {
            self.target
                .fetch_executions(ids.clone(), None)
                .await?
                .into_iter()
                .map(|r| r.execution.id.to_string())
                .collect()
        };
        let imported = if self.dry_run {
            Default::default()
        } else {
            self.target.import_executions(rows.clone()).await?
        };
        let mut back =
            if self.blank { HashMap::new() } else { by_id(self.target.fetch_executions(ids, within).await?) };
        // A row present with the same id but another `started_at` (merge) is outside `within`: look again.
        let outside: Vec<String> = rows
            .iter()
            .map(|r| r.execution.id.to_string())
            .filter(|id| !back.contains_key(id.as_str()))
            .collect();
        if !self.blank && !outside.is_empty() && within.is_some() {
            back.extend(by_id(self.target.fetch_executions(outside, None).await?));
        }
        let (mut equal, mut equal_events) = (0u64, 0u64);
        let (mut would_copy, mut would_copy_events) = (0u64, 0u64);
        for r in &rows {
            let id = r.execution.id.as_str();
            let (h, eh) = record_hashes(r);
            let unfinished = !r.execution.status.is_final();
            match back.get(id) {
                Some(t) => {
                    let (th, teh) = record_hashes(t);
                    if th == h && teh == eh {
                        equal += 1;
                        equal_events += r.events.len() as u64;
                        self.equal(EXECUTIONS, h, th);
                        for (s, t) in eh.iter().zip(&teh) {
                            self.equal(EVENTS, *s, *t);
                        }
                        if unfinished && !held_before.contains(id) {
                            self.remember_unfinished(id)?;
                            self.count_unfinished(h, &eh);
                        }
                    } else if self.state.target_was_empty
                        && !self.state.merge
                        && !t.execution.status.is_final()
                    {
                        // Copied by a run killed before it saved its state, while it was still running: it
                        // changed in the source since. Not a conflict: the target holds this transfer's copy.
                        self.remember_unfinished(id)?;
                        self.mark_changed(id);
                    } else {
                        let reason = execution_difference(r, t);
                        self.conflict(EXECUTIONS, id, reason, h);
                        let ex = self.state.excluded.entry(EVENTS.to_string()).or_default();
                        for e in &eh {
                            ex.add(*e);
                        }
                    }
                }
                None if self.dry_run => {
                    would_copy += 1;
                    would_copy_events += r.events.len() as u64;
                    self.table(EXECUTIONS).source.add(h);
                    for e in &eh {
                        self.table(EVENTS).source.add(*e);
                    }
                }
                None => return Err(missing(EXECUTIONS, id)),
            }
        }
        self.attribute(EXECUTIONS, equal, imported.inserted);
        self.attribute(EVENTS, equal_events, imported.events_inserted);
        self.table(EXECUTIONS).copied += would_copy;
        self.table(EVENTS).copied += would_copy_events;
        Ok(())
    }

    /// Lands audit entries: inserted when their id is absent, then read back.
    pub async fn audit(&mut self, rows: Vec<AuditEntry>) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = rows.iter().map(|a| a.id.to_string()).collect();
        let inserted = if self.dry_run { 0 } else { self.target.import_audit(rows.clone()).await?.inserted };
        let back: HashMap<String, AuditEntry> = if self.blank {
            HashMap::new()
        } else {
            self.target.fetch_audit(ids).await?.into_iter().map(|a| (a.id.to_string(), a)).collect()
        };
        let mut equal = 0u64;
        let mut would_copy = 0u64;
        for a in &rows {
            let h = checksum::audit(a);
            match back.get(a.id.as_str()) {
                Some(t) => {
                    let th = checksum::audit(t);
                    if th == h {
                        equal += 1;
                        self.equal(AUDIT, h, th);
                    } else {
                        self.conflict(AUDIT, a.id.as_str(), audit_difference(a, t), h);
                    }
                }
                None if self.dry_run => {
                    would_copy += 1;
                    self.table(AUDIT).source.add(h);
                }
                None => return Err(missing(AUDIT, a.id.as_str())),
            }
        }
        self.attribute(AUDIT, equal, inserted);
        self.table(AUDIT).copied += would_copy;
        Ok(())
    }

    /// Lands a page of executions (with their events) on the owned fast path ([`TransferState::owned`]): the
    /// source's checksums and the cursor `after` (the page's last key) go into the state, which the target
    /// saves in the same transaction as the rows ([`super::Store::land_owned`]). Nothing is read back here;
    /// [`Landing::count_owned_target`] computes the target's side at the end.
    /// `hashes`: [`hashed`]'s for `rows`, computed while the previous page landed.
    pub async fn executions_owned(
        &mut self,
        rows: Vec<ExecutionRecord>,
        hashes: Vec<RecordHashes>,
        after: super::state::Cursor,
    ) -> Result<()> {
        debug_assert!(self.state.owned && !self.dry_run);
        debug_assert_eq!(rows.len(), hashes.len());
        if rows.is_empty() {
            return Ok(());
        }
        let events: u64 = rows.iter().map(|r| r.events.len() as u64).sum();
        for (r, (h, eh)) in rows.iter().zip(hashes) {
            self.table(EXECUTIONS).source.add(h);
            for e in &eh {
                self.table(EVENTS).source.add(*e);
            }
            if !r.execution.status.is_final() {
                self.remember_unfinished(r.execution.id.as_str())?;
                self.count_unfinished(h, &eh);
            }
        }
        self.table(EXECUTIONS).copied += rows.len() as u64;
        self.table(EVENTS).copied += events;
        self.state.cursors.insert(EXECUTIONS.to_string(), after);
        self.state.updated_at = crate::time::now_micros();
        let (id, source, json) = (self.state.id.clone(), self.state.source.clone(), self.state.to_json());
        self.target.land_owned(rows, id, source, json).await?;
        Ok(())
    }

    /// The owned fast path's verification: the target's executions and events checksums computed from the
    /// target itself, by scanning every execution up to the snapshot in key order (the run owns them: the
    /// target was empty), leaving out the ones that changed after the snapshot (as the source's side does).
    /// Anything lost, duplicated or altered on the way makes the counts or the checksums differ from the
    /// source's. Computed from scratch each time (a resumed run scans again).
    pub async fn count_owned_target(&mut self, page: usize) -> Result<()> {
        if !self.state.owned || self.dry_run {
            return Ok(());
        }
        let sel = crate::rules::Selection {
            target: parallax_storage_abi::retention::CleanupTarget::Executions,
            before: (self.state.snapshot.saturating_add(1), crate::rules::MIN_ID.to_string()),
            include_unfinished: true,
        };
        let (mut rows, mut events) = (checksum::Tally::default(), checksum::Tally::default());
        let mut batch = self.target.scan_executions(sel.clone(), None, page).await?;
        while !batch.is_empty() {
            let more = batch.len() >= page;
            let last = batch.last().map(|r| (r.execution.started_at, r.execution.id.to_string()));
            let next = async {
                match last {
                    Some(key) if more => self.target.scan_executions(sel.clone(), Some(key), page).await,
                    _ => Ok(Vec::new()),
                }
            };
            // Hashed on a blocking thread while the next page is read and decoded.
            let (hashed, next) = tokio::join!(hashed(batch), next);
            let (batch_rows, hashes) = hashed?;
            for (r, (h, eh)) in batch_rows.iter().zip(hashes) {
                if self.changed.contains(r.execution.id.as_str()) {
                    continue;
                }
                rows.add(h);
                for e in eh {
                    events.add(e);
                }
            }
            batch = next?;
        }
        self.table(EXECUTIONS).target = rows;
        self.table(EVENTS).target = events;
        Ok(())
    }

    fn remember_unfinished(&mut self, id: &str) -> Result<()> {
        if self.unfinished.contains(id) {
            return Ok(());
        }
        if self.unfinished.len() >= MAX_UNFINISHED {
            return Err(Error::unsupported(format!(
                "more than {MAX_UNFINISHED} executions of the source are pending or running; a transfer \
                 re-checks each of them at the end and refuses this many: finish or cancel them (or remove stale \
                 ones with `parallax storage cleanup --include-unfinished`) and run it again"
            )));
        }
        self.unfinished.insert(id.to_string());
        self.state.unfinished.push(id.to_string());
        Ok(())
    }

    fn mark_changed(&mut self, id: &str) {
        if self.changed.insert(id.to_string()) {
            self.state.changed.push(id.to_string());
        }
    }

    /// Takes an execution counted in both checksums out of them again (it changed after the snapshot).
    fn uncount(&mut self, t: &ExecutionRecord) {
        let (h, eh) = record_hashes(t);
        // An owned run counts the target's executions and events only at the end, leaving the changed ones out
        // ([`Landing::count_owned_target`]).
        let owned = self.state.owned;
        let s = self.table(EXECUTIONS);
        s.source.remove(h);
        if !owned {
            s.target.remove(h);
        }
        self.state.unfinished_counted.entry(EXECUTIONS.to_string()).or_default().remove(h);
        for e in eh {
            let s = self.table(EVENTS);
            s.source.remove(e);
            if !owned {
                s.target.remove(e);
            }
            self.state.unfinished_counted.entry(EVENTS.to_string()).or_default().remove(e);
        }
    }

    /// The source's current rows of the unfinished executions copied (`state().unfinished`, as read from the
    /// source at the end of the run; an id missing from `current` was removed from the source). Each one that
    /// differs from its copy in the target changed after the snapshot: it stays in the target as copied, is
    /// left out of both checksums and is reported. Nothing is written.
    pub async fn refresh(&mut self, current: Vec<ExecutionRecord>) -> Result<()> {
        self.state.phase = Phase::Refresh;
        if self.state.unfinished.is_empty() || self.dry_run {
            return Ok(());
        }
        let current = by_id(current);
        let ids: Vec<String> =
            self.state.unfinished.iter().filter(|id| !self.changed.contains(*id)).cloned().collect();
        for chunk in ids.chunks(FETCH_CHUNK) {
            let landed = by_id(self.target.fetch_executions(chunk.to_vec(), None).await?);
            for id in chunk {
                let Some(t) = landed.get(id) else { continue };
                let same = current.get(id).is_some_and(|c| record_hashes(c) == record_hashes(t));
                if !same {
                    self.uncount(t);
                    self.mark_changed(id);
                }
            }
        }
        Ok(())
    }

    /// A catch-up run: the target's copies of the unfinished executions (`state().unfinished`) that are still
    /// pending or running there are replaced by `current` (their rows read from the source now, one call with
    /// all of them). What those rows added to both checksums when they were copied (kept in the state) is taken
    /// out, and the rows read back now are counted instead, so a run killed half-way through this step does it
    /// again with the same result. A copy that became final in the target meanwhile is left alone (a conflict
    /// when it differs). Afterwards `unfinished` holds the ids still pending or running in the source.
    /// Nothing is written on a dry run.
    pub async fn catch_up_unfinished(&mut self, current: Vec<ExecutionRecord>) -> Result<()> {
        if self.dry_run {
            return Ok(());
        }
        for (table, counted) in std::mem::take(&mut self.state.unfinished_counted) {
            let t = self.table(&table);
            for tally in [&mut t.source, &mut t.target] {
                tally.rows = tally.rows.saturating_sub(counted.rows);
                tally.sum = tally.sum.wrapping_sub(counted.sum);
            }
        }
        let current: Vec<ExecutionRecord> =
            current.into_iter().filter(|r| self.unfinished.contains(r.execution.id.as_str())).collect();
        for chunk in current.chunks(FETCH_CHUNK) {
            self.target.replace_unfinished(chunk.to_vec()).await?;
            let ids: Vec<String> = chunk.iter().map(|r| r.execution.id.to_string()).collect();
            let after = by_id(self.target.fetch_executions(ids, None).await?);
            for r in chunk {
                let id = r.execution.id.as_str();
                let (h, eh) = record_hashes(r);
                let reason = match after.get(id) {
                    Some(t) if record_hashes(t) == (h, eh.clone()) => {
                        self.count_equal(t);
                        if !t.execution.status.is_final() {
                            self.count_unfinished(h, &eh);
                        }
                        continue;
                    }
                    Some(t) => execution_difference(r, t),
                    None => "missing from the target (removed there after it was copied)".to_string(),
                };
                self.conflict(EXECUTIONS, id, reason, h);
                let ex = self.state.excluded.entry(EVENTS.to_string()).or_default();
                for e in &eh {
                    ex.add(*e);
                }
            }
        }
        self.changed.clear();
        self.state.changed.clear();
        let still: Vec<String> = current
            .iter()
            .filter(|r| !r.execution.status.is_final())
            .map(|r| r.execution.id.to_string())
            .collect();
        self.unfinished = still.iter().cloned().collect();
        self.state.unfinished = still;
        self.state.unfinished_refreshed = true;
        Ok(())
    }

    /// Remembers what an unfinished execution added to both checksums (taken out again by a catch-up).
    fn count_unfinished(&mut self, h: u128, events: &[u128]) {
        self.state.unfinished_counted.entry(EXECUTIONS.to_string()).or_default().add(h);
        let ev = self.state.unfinished_counted.entry(EVENTS.to_string()).or_default();
        for e in events {
            ev.add(*e);
        }
    }

    /// Counts an execution equal on both sides into both checksums.
    fn count_equal(&mut self, t: &ExecutionRecord) {
        let (h, eh) = record_hashes(t);
        self.equal(EXECUTIONS, h, h);
        for e in eh {
            self.equal(EVENTS, e, e);
        }
    }

    /// Rows of `table` read from the source so far: counted in the checksums, conflicts, and (executions)
    /// changed after the snapshot.
    pub fn rows_read(&self, table: &str) -> u64 {
        let t = self.state.tables.get(table).cloned().unwrap_or_default();
        let changed = if table == EXECUTIONS { self.state.changed.len() as u64 } else { 0 };
        t.source.rows + t.conflicts + changed
    }

    /// Records rows newer than the snapshot for `table` (not copied; reported).
    pub fn after_snapshot(&mut self, table: &str, rows: u64) {
        *self.state.after_snapshot.entry(table.to_string()).or_default() += rows;
    }

    /// Records a reason the run is not verified besides the per-table checksums (a source recount that
    /// differs from the rows read); `reason` starts with the table's name and a colon (that table is not ok).
    pub fn problem(&mut self, reason: String) {
        tracing::warn!(target: "parallax_storage::transfer", "{reason}");
        self.state.problems.push(reason);
    }

    /// Saves the state in the target (after the caller moved the cursor past the landed page). Nothing on a
    /// dry run.
    pub async fn save(&mut self) -> Result<()> {
        if self.dry_run {
            return Ok(());
        }
        self.state.updated_at = crate::time::now_micros();
        self.target
            .save_transfer_state(self.state.id.clone(), self.state.source.clone(), self.state.to_json())
            .await
    }

    /// Verifies and reports. `expected`: per table the source tallies the rows must add up to (an export's
    /// `export.json`), checked against what was landed plus the conflicts left out. Marks the state done and
    /// saves it (not on a dry run).
    pub async fn finish(
        mut self,
        source_label: String,
        target_label: String,
        expected: Option<BTreeMap<String, Tally>>,
    ) -> Result<TransferReport> {
        self.state.phase = Phase::Verify;
        let mut tables = Vec::with_capacity(TABLES.len());
        for name in TABLES {
            let t = self.state.tables.get(name).cloned().unwrap_or_default();
            // A dry run reads back only the rows already present: nothing to compare. A problem found on the
            // way (a source recount that differs) names its table.
            let prefix = format!("{name}:");
            let mut ok = (self.dry_run || t.source == t.target)
                && !self.state.problems.iter().any(|p| p.starts_with(&prefix));
            if let Some(exp) = expected.as_ref().and_then(|e| e.get(name)) {
                let mut all = t.source;
                if let Some(x) = self.state.excluded.get(name) {
                    all.merge(*x);
                }
                // Rows changed after the snapshot (only a copy has them) are not in an export's totals.
                if all != *exp {
                    ok = false;
                    self.state.problems.push(format!(
                        "{name}: the source's totals say {exp}, the rows read add up to {all}"
                    ));
                }
            }
            tables.push(TableTransfer {
                table: name.to_string(),
                source_rows: if name == EXECUTIONS {
                    self.rows_read(name)
                } else {
                    t.source.rows + t.conflicts
                },
                copied: t.copied,
                present: t.present,
                conflicts: t.conflicts,
                target_rows: t.target.rows,
                source_checksum: t.source.hex(),
                target_checksum: t.target.hex(),
                ok,
            });
        }
        let verified = tables.iter().all(|t| t.ok) && self.state.problems.is_empty();
        let conflict_count = tables.iter().map(|t| t.conflicts).sum();
        let changed_count = self.state.changed.len() as u64;
        self.state.phase = Phase::Done;
        self.save().await?;
        let mut after_snapshot: BTreeMap<String, u64> = TABLES.iter().map(|t| (t.to_string(), 0)).collect();
        after_snapshot.extend(self.state.after_snapshot.clone());
        Ok(TransferReport {
            source: source_label,
            target: target_label,
            dry_run: self.dry_run,
            merge: self.state.merge,
            mode: self.mode.to_string(),
            run_id: self.state.id.clone(),
            snapshot: crate::time::rfc3339(self.state.snapshot),
            checksum_version: CHECKSUM_VERSION,
            tables,
            after_snapshot,
            changed_after_snapshot: self.state.changed.iter().take(MAX_CHANGED_REPORTED).cloned().collect(),
            changed_after_snapshot_count: changed_count,
            conflicts: self.state.conflicts.clone(),
            conflict_count,
            verified,
            problems: self.state.problems.clone(),
            duration_ms: self.started.elapsed().as_millis() as u64,
        })
    }
}

/// What a target already holds (for the refusal of a non-empty target).
#[derive(Default)]
struct Holdings {
    patterns: usize,
    patterns_more: bool,
    executions: u64,
    audit: usize,
    audit_more: bool,
}

impl Holdings {
    fn is_empty(&self) -> bool {
        self.patterns == 0 && self.executions == 0 && self.audit == 0
    }
}

impl std::fmt::Display for Holdings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let more = |m: bool| if m { " or more" } else { "" };
        write!(
            f,
            "{} pattern versions{}, {} executions, {} audit entries{}",
            self.patterns,
            more(self.patterns_more),
            self.executions,
            self.audit,
            more(self.audit_more)
        )
    }
}

async fn holdings<T: Contract>(target: &T) -> Result<Holdings> {
    let executions = target.count_executions(ExecutionFilter::default()).await?;
    let patterns = target.patterns_after(Page { limit: 1, after: None }).await?;
    let names: HashSet<&str> = patterns.iter().map(|p| p.name.as_str()).collect();
    let audit = target.query_audit(AuditQuery::default(), Page { limit: 1, after: None }).await?;
    Ok(Holdings {
        patterns: patterns.len(),
        patterns_more: names.len() > 1,
        executions,
        audit: audit.len().min(1),
        audit_more: audit.len() > 1,
    })
}

fn missing(table: &str, id: &str) -> Error {
    Error::internal(format!(
        "{table} row {id} is not in the target after it was inserted: the target lost a write; nothing was \
         overwritten, run the transfer again to resume"
    ))
}

fn by_id(rows: Vec<ExecutionRecord>) -> HashMap<String, ExecutionRecord> {
    rows.into_iter().map(|r| (r.execution.id.to_string(), r)).collect()
}

fn started_range(rows: &[ExecutionRecord]) -> Option<(i64, i64)> {
    let lo = rows.iter().map(|r| r.execution.started_at).min()?;
    let hi = rows.iter().map(|r| r.execution.started_at).max()?;
    Some((lo, hi))
}

/// An execution's hash and its events' hashes ([`record_hashes`]).
pub type RecordHashes = (u128, Vec<u128>);

/// The rows with their [`record_hashes`], computed on a blocking thread (the caller's task keeps driving its
/// I/O meanwhile).
pub async fn hashed(rows: Vec<ExecutionRecord>) -> Result<(Vec<ExecutionRecord>, Vec<RecordHashes>)> {
    tokio::task::spawn_blocking(move || {
        let hashes = rows.iter().map(record_hashes).collect();
        (rows, hashes)
    })
    .await
    .map_err(|e| Error::internal(format!("hashing a page of executions: {e}")))
}

/// The row's hash and its events' hashes, in `seq` order.
fn record_hashes(r: &ExecutionRecord) -> (u128, Vec<u128>) {
    let mut events: Vec<&ExecutionEvent> = r.events.iter().collect();
    events.sort_by_key(|e| e.seq);
    (checksum::execution(&r.execution), events.into_iter().map(checksum::event).collect())
}

// ---------------------------------------------------------------- the first differing field

fn ropt(v: &abi_stable::std_types::ROption<abi_stable::std_types::RString>) -> Option<&str> {
    v.as_ref().map(|s| s.as_str()).into_option()
}

/// A short value for a message (long ones are cut).
fn short(v: Option<&str>) -> String {
    match v {
        None => "none".into(),
        Some(s) if s.chars().count() > 40 => format!("{}…", s.chars().take(40).collect::<String>()),
        Some(s) => s.to_string(),
    }
}

fn scalar(field: &str, s: Option<&str>, t: Option<&str>) -> Option<String> {
    (s != t).then(|| format!("{field}: source {}, target {}", short(s), short(t)))
}

fn number(field: &str, s: Option<i64>, t: Option<i64>) -> Option<String> {
    (s != t).then(|| {
        let f = |v: Option<i64>| v.map_or("none".to_string(), |v| v.to_string());
        format!("{field}: source {}, target {}", f(s), f(t))
    })
}

/// A JSON document compared canonically (key order, number spelling and `null` = absent do not matter).
fn document(field: &str, s: Option<&str>, t: Option<&str>) -> Option<String> {
    (!same_doc(s, t)).then(|| format!("{field}: differs"))
}

fn parse_doc(text: Option<&str>) -> Value {
    match text {
        None => Value::Null,
        Some(t) => serde_json::from_str(t).unwrap_or_else(|_| Value::String(format!("unparsable:{t}"))),
    }
}

fn same_doc(s: Option<&str>, t: Option<&str>) -> bool {
    same_value(&parse_doc(s), &parse_doc(t))
}

fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(i), Some(j)) => i == j,
            _ => match (x.as_u64(), y.as_u64()) {
                (Some(i), Some(j)) => i == j,
                _ => x.as_f64() == y.as_f64(),
            },
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same_value(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same_value(v, w)))
        }
        _ => a == b,
    }
}

fn execution_row_difference(s: &Execution, t: &Execution) -> Option<String> {
    let status = |e: &Execution| e.status.as_str().to_string();
    scalar("patternName", Some(s.pattern_name.as_str()), Some(t.pattern_name.as_str()))
        .or_else(|| {
            scalar("patternVersion", Some(s.pattern_version.as_str()), Some(t.pattern_version.as_str()))
        })
        .or_else(|| scalar("status", Some(&status(s)), Some(&status(t))))
        .or_else(|| document("input", ropt(&s.input), ropt(&t.input)))
        .or_else(|| document("output", ropt(&s.output), ropt(&t.output)))
        .or_else(|| document("error", ropt(&s.error), ropt(&t.error)))
        .or_else(|| number("startedAt", Some(s.started_at), Some(t.started_at)))
        .or_else(|| number("completedAt", s.completed_at.into(), t.completed_at.into()))
        .or_else(|| number("durationMs", s.duration_ms.into(), t.duration_ms.into()))
        .or_else(|| document("metadata", ropt(&s.metadata), ropt(&t.metadata)))
        .or_else(|| {
            let tags = |e: &Execution| e.tags.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(",");
            scalar("tags", Some(&tags(s)), Some(&tags(t)))
        })
}

fn event_difference(s: &ExecutionEvent, t: &ExecutionEvent) -> Option<String> {
    let at = |f: &str| format!("event {} {f}", s.seq);
    scalar(&at("id"), Some(s.id.as_str()), Some(t.id.as_str()))
        .or_else(|| number(&at("seq"), Some(s.seq), Some(t.seq)))
        .or_else(|| scalar(&at("kind"), Some(s.kind.as_str()), Some(t.kind.as_str())))
        .or_else(|| document(&at("payload"), Some(s.payload.as_str()), Some(t.payload.as_str())))
        .or_else(|| number(&at("recordedAt"), Some(s.recorded_at), Some(t.recorded_at)))
}

/// The first field that differs between the source's execution and the target's (row, then events).
fn execution_difference(s: &ExecutionRecord, t: &ExecutionRecord) -> String {
    if let Some(d) = execution_row_difference(&s.execution, &t.execution) {
        return d;
    }
    if s.events.len() != t.events.len() {
        return format!("events: source has {}, target {}", s.events.len(), t.events.len());
    }
    let mut se: Vec<&ExecutionEvent> = s.events.iter().collect();
    let mut te: Vec<&ExecutionEvent> = t.events.iter().collect();
    se.sort_by_key(|e| e.seq);
    te.sort_by_key(|e| e.seq);
    se.iter().zip(&te).find_map(|(a, b)| event_difference(a, b)).unwrap_or_else(|| "content differs".into())
}

fn audit_difference(s: &AuditEntry, t: &AuditEntry) -> String {
    let ip = |v: Option<&str>| v.map(checksum::canonical_ip);
    number("timestamp", Some(s.timestamp), Some(t.timestamp))
        .or_else(|| scalar("action", Some(s.action.as_str()), Some(t.action.as_str())))
        .or_else(|| scalar("actor", ropt(&s.actor), ropt(&t.actor)))
        .or_else(|| scalar("resourceType", ropt(&s.resource_type), ropt(&t.resource_type)))
        .or_else(|| scalar("resourceId", ropt(&s.resource_id), ropt(&t.resource_id)))
        .or_else(|| document("details", ropt(&s.details), ropt(&t.details)))
        .or_else(|| {
            scalar("ipAddress", ip(ropt(&s.ip_address)).as_deref(), ip(ropt(&t.ip_address)).as_deref())
        })
        .or_else(|| scalar("userAgent", ropt(&s.user_agent), ropt(&t.user_agent)))
        .unwrap_or_else(|| "content differs".into())
}

fn pattern_difference(s: &Pattern, t: &Pattern) -> String {
    scalar("name", Some(s.name.as_str()), Some(t.name.as_str()))
        .or_else(|| scalar("version", Some(s.version.as_str()), Some(t.version.as_str())))
        .or_else(|| scalar("description", ropt(&s.description), ropt(&t.description)))
        .or_else(|| document("definition", Some(s.definition.as_str()), Some(t.definition.as_str())))
        .or_else(|| number("createdAt", Some(s.created_at), Some(t.created_at)))
        .or_else(|| scalar("createdBy", ropt(&s.created_by), ropt(&t.created_by)))
        .unwrap_or_else(|| "content differs".into())
}

#[cfg(test)]
mod tests {
    use abi_stable::std_types::{RNone, RSome, RVec};
    use parallax_storage_abi::{EventKind, ExecutionStatus};

    use super::*;

    fn record(events: i64) -> ExecutionRecord {
        let id = "0190b3f2-7c1e-7a00-8000-000000000001";
        ExecutionRecord {
            execution: Execution {
                id: id.into(),
                pattern_name: "p".into(),
                pattern_version: "1.0.0".into(),
                status: ExecutionStatus::Completed,
                input: RSome(r#"{"a": 1, "b": [1.0, "x"]}"#.into()),
                output: RNone,
                error: RNone,
                started_at: 10,
                completed_at: RSome(20),
                duration_ms: RSome(0),
                metadata: RNone,
                tags: RVec::from(vec!["t".into()]),
            },
            events: (1..=events)
                .map(|seq| ExecutionEvent {
                    id: format!("0190b3f2-7c1e-7a00-8000-00000000010{seq}").into(),
                    execution_id: id.into(),
                    seq,
                    kind: EventKind::StepResult,
                    payload: format!(r#"{{"step": {seq}}}"#).into(),
                    recorded_at: 10 + seq,
                })
                .collect(),
        }
    }

    #[test]
    fn a_conflict_names_the_first_field_that_differs() {
        let s = record(4);
        let mut t = s.clone();
        // Key order and number spelling are not differences (as in the checksum).
        t.execution.input = RSome(r#"{"b": [1, "x"], "a": 1.0}"#.into());
        assert_eq!(execution_difference(&s, &t), "content differs");
        assert_eq!(record_hashes(&s), record_hashes(&t));

        t.execution.status = ExecutionStatus::Failed;
        t.execution.output = RSome("{}".into());
        assert_eq!(execution_difference(&s, &t), "status: source completed, target failed");
        assert_eq!(execution_difference(&s, &record(3)), "events: source has 4, target 3");
        let mut e = s.clone();
        e.events[2].payload = r#"{"step": 99}"#.into();
        assert_eq!(execution_difference(&s, &e), "event 3 payload: differs");

        let a = AuditEntry {
            id: "x".into(),
            timestamp: 1,
            action: "login".into(),
            actor: RSome("alice".into()),
            resource_type: RNone,
            resource_id: RNone,
            details: RNone,
            ip_address: RSome("10.0.0.1/32".into()),
            user_agent: RNone,
        };
        let b = AuditEntry { ip_address: RSome("10.0.0.1".into()), ..a.clone() };
        assert_eq!(audit_difference(&a, &b), "content differs");
        let c = AuditEntry { actor: RNone, ..a.clone() };
        assert_eq!(audit_difference(&a, &c), "actor: source alice, target none");
    }
}
