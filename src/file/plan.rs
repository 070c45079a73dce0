//! One group commit in the making: the writer runs each queued write against the index *plus the effects of
//! the earlier writes of the same group*, collecting the files to write or remove and the index changes to
//! apply once those files are durable. A write that fails validation leaves nothing behind.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    sync::Arc,
};

use parallax_storage_abi::{Execution, Pattern};

use super::{
    codec::Encoding,
    docs::{ChainDoc, Doc, StoredAudit},
    index::{Found, Index},
    layout::Layout,
    search::{self, Terms},
};

pub enum FileOp {
    Write {
        path: PathBuf,
        doc: Box<Doc>,
        enc: Encoding,
    },
    /// Removes a file; `prune_dir` also removes its directory if that is now empty.
    Remove {
        path: PathBuf,
        prune_dir: bool,
    },
    /// Cleanup: removes a file without syncing its directory. A removal lost to a power cut only brings
    /// back a file that is still selected, which the next cleanup removes; removals reach the disk in order
    /// (the file system journals metadata in order), so none of them needs a sync of its own.
    Discard {
        path: PathBuf,
    },
    /// Cleanup: removes a directory and everything in it (an execution's events directory), unsynced like
    /// [`FileOp::Discard`].
    RemoveAll {
        path: PathBuf,
    },
    /// Cleanup, after every other operation of the group: removes `dir`, then its parents, while they are
    /// empty, up to (not including) `root`; unsynced like [`FileOp::Discard`].
    Prune {
        dir: PathBuf,
        root: PathBuf,
    },
}

/// What the index learns once a group is durable.
pub enum Change {
    Pattern {
        key: (String, String),
        entry: Option<(Pattern, PathBuf, Terms)>,
    },
    Execution {
        e: Execution,
        path: PathBuf,
        terms: Terms,
    },
    Event {
        execution_id: String,
        seq: i64,
    },
    Audit {
        entries: Vec<StoredAudit>,
        file: Arc<Path>,
    },
    /// The audit chain's new head record, and when format 2 was applied.
    Chain {
        state: crate::audit_chain::ChainState,
        since: i64,
    },
    /// Cleanup removed an execution's file and events.
    RemoveExecution {
        id: String,
    },
    /// Cleanup removed these entries from audit batch `file` (removed or rewrote it).
    TrimAudit {
        file: PathBuf,
        removed: Vec<(i64, String)>,
    },
}

pub struct Plan<'a> {
    pub idx: &'a Index,
    pub layout: &'a Layout,
    /// The encoding of new files (the current configuration).
    pub enc: Encoding,
    ops: Vec<FileOp>,
    changes: Vec<Change>,
    audit_ids: HashSet<String>,
    /// The audit chain's head record as this group left it, when a write of the group moved it (written
    /// after every other file of the group: see [`Plan::into_parts`]).
    chain: Option<crate::audit_chain::ChainState>,
}

/// Where a plan was before a write, to undo it if the write fails ([`Plan::mark`]).
pub struct Mark {
    ops: usize,
    changes: usize,
    chain: Option<crate::audit_chain::ChainState>,
}

impl<'a> Plan<'a> {
    pub fn new(idx: &'a Index, layout: &'a Layout, enc: Encoding) -> Self {
        Plan {
            idx,
            layout,
            enc,
            ops: Vec::new(),
            changes: Vec::new(),
            audit_ids: HashSet::new(),
            chain: None,
        }
    }

    pub fn write(&mut self, path: PathBuf, doc: Doc, enc: Encoding) {
        self.ops.push(FileOp::Write { path, doc: Box::new(doc), enc });
    }

    pub fn op(&mut self, op: FileOp) {
        self.ops.push(op);
    }

    pub fn remove(&mut self, path: PathBuf, prune_dir: bool) {
        self.ops.push(FileOp::Remove { path, prune_dir });
    }

    pub fn change(&mut self, c: Change) {
        if let Change::Audit { entries, .. } = &c {
            self.audit_ids.extend(entries.iter().map(|a| a.entry.id.to_string()));
        }
        self.changes.push(c);
    }

    pub fn mark(&self) -> Mark {
        Mark { ops: self.ops.len(), changes: self.changes.len(), chain: self.chain }
    }

    /// Undoes everything planned since `mark` (a write that failed).
    pub fn rollback(&mut self, mark: Mark) {
        self.ops.truncate(mark.ops);
        self.chain = mark.chain;
        for c in self.changes.drain(mark.changes..) {
            if let Change::Audit { entries, .. } = c {
                for a in entries {
                    self.audit_ids.remove(a.entry.id.as_str());
                }
            }
        }
    }

    /// The group's files and index changes. When the group moved the audit chain's head record, it is written
    /// last, after the audit batch files it covers: renamed into place after them, so that after a crash the
    /// head never names entries that are not on disk (entries beyond it are picked up by the loader, see
    /// `load::roll_forward`).
    pub fn into_parts(mut self) -> (Vec<FileOp>, Vec<Change>) {
        if let Some(state) = self.chain.take() {
            let since = self.idx.chain_since.unwrap_or_else(crate::time::now_micros);
            let json = Encoding { format: crate::config::FileFormat::Json, gzip: false };
            self.ops.push(FileOp::Write {
                path: self.layout.chain_file(),
                doc: Box::new(Doc::Chain(ChainDoc::new(&state, since))),
                enc: json,
            });
            self.changes.push(Change::Chain { state, since });
        }
        (self.ops, self.changes)
    }

    /// The audit chain's head record, counting the earlier writes of this group; `None` while the store is in
    /// format 1 (no chain is kept: entries are written without chain fields, and the step to format 2 chains
    /// them).
    pub fn chain_state(&self) -> Option<crate::audit_chain::ChainState> {
        self.chain.or(self.idx.chain)
    }

    /// Moves the head record (written when the group commits).
    pub fn set_chain_state(&mut self, state: crate::audit_chain::ChainState) {
        self.chain = Some(state);
    }

    /// Chains `entries` (in this order) after the head record and moves it; `None` for each entry in format 1.
    pub fn chain_entries(&mut self, entries: &[parallax_storage_abi::AuditEntry]) -> Vec<StoredAudit> {
        let links: Vec<Option<super::docs::StoredLink>> = match self.chain_state() {
            Some(mut state) => {
                let links = crate::audit_chain::extend(&mut state.head, entries);
                self.set_chain_state(state);
                links.into_iter().map(|l| Some(l.into())).collect()
            }
            None => vec![None; entries.len()],
        };
        entries.iter().cloned().zip(links).map(|(entry, link)| StoredAudit { entry, link }).collect()
    }

    pub fn pattern(&self, name: &str, version: &str) -> Found<(Pattern, PathBuf)> {
        for c in self.changes.iter().rev() {
            if let Change::Pattern { key, entry } = c {
                if key.0 == name && key.1 == version {
                    return match entry {
                        Some((p, path, _)) => Found::Yes((p.clone(), path.clone())),
                        None => Found::No,
                    };
                }
            }
        }
        match self.idx.pattern(name, version) {
            Found::Yes(p) => Found::Yes((Pattern::clone(&p.p), p.path.clone())),
            Found::No => Found::No,
            Found::Damaged(path, why) => Found::Damaged(path, why),
        }
    }

    pub fn execution(&self, id: &str) -> Found<(Execution, PathBuf)> {
        for c in self.changes.iter().rev() {
            match c {
                Change::Execution { e, path, .. } if e.id == id => {
                    return Found::Yes((e.clone(), path.clone()))
                }
                Change::RemoveExecution { id: gone } if gone == id => return Found::No,
                _ => {}
            }
        }
        match self.idx.execution(id) {
            Found::Yes(x) => Found::Yes((Execution::clone(&x.e), x.path.clone())),
            Found::No => Found::No,
            Found::Damaged(path, why) => Found::Damaged(path, why),
        }
    }

    pub fn last_seq(&self, execution_id: &str) -> i64 {
        for c in self.changes.iter().rev() {
            if let Change::Event { execution_id: id, seq } = c {
                if id == execution_id {
                    return *seq;
                }
            }
        }
        match self.idx.execution(execution_id) {
            Found::Yes(x) => x.last_seq,
            _ => 0,
        }
    }

    /// Whether a pattern version holds id `id`, counting the earlier writes of this group (a linear scan:
    /// only ids a client chose are checked).
    pub fn pattern_id_taken(&self, id: &str) -> bool {
        let mut decided: HashSet<&(String, String)> = HashSet::new();
        for c in self.changes.iter().rev() {
            if let Change::Pattern { key, entry } = c {
                if decided.insert(key) && entry.as_ref().is_some_and(|(p, _, _)| p.id == id) {
                    return true;
                }
            }
        }
        self.idx.patterns.iter().any(|(key, x)| x.p.id == id && !decided.contains(key))
    }

    pub fn audit_id_taken(&self, id: &str) -> bool {
        self.audit_ids.contains(id) || self.idx.audit_ids.contains(id)
    }
}

impl Index {
    /// Applies a committed group's changes, in order.
    pub fn apply(&mut self, changes: Vec<Change>) {
        for c in changes {
            match c {
                Change::Pattern { key, entry } => {
                    if let Some(path) = self.bad_patterns.remove(&key) {
                        self.unreadable.remove(&path);
                    }
                    match entry {
                        Some((p, path, terms)) => {
                            self.patterns
                                .insert(key, super::index::PatternEntry { p: p.into(), path, terms });
                        }
                        None => {
                            self.patterns.remove(&key);
                        }
                    }
                }
                Change::Execution { e, path, terms } => self.insert_execution(e, path, terms),
                Change::Event { execution_id, seq } => {
                    if let Some(&t) = self.exec_start.get(&execution_id) {
                        if let Some(x) = self.executions.get_mut(&(t, execution_id)) {
                            x.last_seq = x.last_seq.max(seq);
                        }
                    }
                }
                Change::Audit { entries, file } => {
                    for a in entries {
                        self.insert_audit(&file, a);
                    }
                }
                Change::Chain { state, since } => {
                    self.chain = Some(state);
                    self.chain_since = Some(since);
                }
                Change::RemoveExecution { id } => self.remove_execution(&id),
                Change::TrimAudit { file, removed } => self.remove_audit(&file, &removed),
            }
        }
    }
}

pub fn pattern_change(p: &Pattern, path: PathBuf) -> Change {
    let key = (p.name.to_string(), p.version.to_string());
    Change::Pattern { key, entry: Some((p.clone(), path, search::pattern_terms(p))) }
}

pub fn execution_change(e: &Execution, path: PathBuf) -> Change {
    Change::Execution { e: e.clone(), terms: search::execution_terms(e), path }
}
