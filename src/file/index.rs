//! The in-memory index, rebuilt from the files on open and updated by the writer after each group commit.
//! It answers every read: lookups, the contract's filters, keyset pages in exactly the SQL backends' order
//! (newest first, id breaking ties), counts and search.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    ops::Bound,
    path::{Path, PathBuf},
    sync::Arc,
};

use abi_stable::std_types::{ROption::RSome, RString};
use parallax_storage_abi::{AuditEntry, AuditQuery, Execution, ExecutionFilter, Pattern};

use super::{
    docs::{StoredAudit, StoredLink},
    search::Terms,
};
use crate::audit_chain::ChainState;
use crate::{
    error::{Error, Result},
    rules,
    validate::Page,
};

/// Records are shared (`Arc`), so that a search collects them under the read lock without copying them.
pub struct PatternEntry {
    pub p: Arc<Pattern>,
    pub path: PathBuf,
    pub terms: Terms,
}

pub struct ExecEntry {
    pub e: Arc<Execution>,
    pub path: PathBuf,
    pub terms: Terms,
    /// The highest committed event sequence number (0: none).
    pub last_seq: i64,
}

/// The store's manifest as the index knows it.
#[derive(Clone, Debug)]
pub struct Manifest {
    pub format_version: u32,
    pub created_at: i64,
    pub path: PathBuf,
}

#[derive(Default)]
pub struct Index {
    /// `None` until the store exists (format 1 applied).
    pub manifest: Option<Manifest>,
    pub patterns: BTreeMap<(String, String), PatternEntry>,
    pub executions: BTreeMap<(i64, String), ExecEntry>,
    pub exec_start: HashMap<String, i64>,
    pub audit: BTreeMap<(i64, String), AuditEntry>,
    pub audit_ids: HashSet<String>,
    /// The batch file of each indexed audit entry (by id), for cleanup.
    pub audit_file_of: HashMap<String, Arc<Path>>,
    /// Each audit batch file and the keys of its indexed entries (a file's path sorts by its day).
    pub audit_files: BTreeMap<Arc<Path>, Vec<(i64, String)>>,
    /// The chain fields of each indexed audit entry that has them (by id).
    pub audit_links: HashMap<String, StoredLink>,
    /// The chained entries in chain order: `(seq, id)` → timestamp (with the id, the entry's key in `audit`).
    pub audit_seqs: BTreeMap<(i64, String), i64>,
    /// The audit chain's head record (`None` before format 2: the store keeps no chain).
    pub chain: Option<ChainState>,
    /// When format 2 was applied (from the head record).
    pub chain_since: Option<i64>,
    /// Files that could not be read when the store was opened, and why.
    pub unreadable: BTreeMap<PathBuf, String>,
    /// Unreadable files whose record is known from the path alone.
    pub bad_patterns: HashMap<(String, String), PathBuf>,
    pub bad_executions: HashMap<String, PathBuf>,
    /// Bytes of the record files per table (in the order of [`crate::metrics::TABLES`]), for the metrics:
    /// summed when the store is loaded, then moved by every commit (the writer measures the files a group
    /// touches before and after it), so that no scrape or refresh walks the tree.
    pub bytes: [u64; 4],
}

/// What a lookup found.
pub enum Found<T> {
    Yes(T),
    No,
    /// The record's file exists but cannot be read.
    Damaged(PathBuf, String),
}

pub fn damaged(what: &str, path: &Path, why: &str) -> Error {
    Error::internal(format!(
        "{what} cannot be read: file {} is damaged ({why}); repair it by hand or restore it from a backup",
        path.display()
    ))
}

fn eq(want: &ROption<RString>, have: &RString) -> bool {
    match want {
        RSome(w) => w == have,
        _ => true,
    }
}

fn eq_opt(want: &ROption<RString>, have: &ROption<RString>) -> bool {
    match want {
        RSome(w) => have.as_ref().into_option() == Some(w),
        _ => true,
    }
}

use abi_stable::std_types::ROption;

fn matches_filter(e: &Execution, f: &ExecutionFilter) -> bool {
    eq(&f.pattern_name, &e.pattern_name)
        && eq(&f.pattern_version, &e.pattern_version)
        && (f.statuses.is_empty() || f.statuses.contains(&e.status))
        && f.started_from.into_option().is_none_or(|from| e.started_at >= from)
        && f.started_until.into_option().is_none_or(|until| e.started_at < until)
        && f.tags.iter().all(|t| e.tags.contains(t))
}

fn matches_audit(a: &AuditEntry, q: &AuditQuery) -> bool {
    eq(&q.action, &a.action)
        && eq_opt(&q.actor, &a.actor)
        && eq_opt(&q.resource_type, &a.resource_type)
        && eq_opt(&q.resource_id, &a.resource_id)
        && q.from.into_option().is_none_or(|from| a.timestamp >= from)
        && q.until.into_option().is_none_or(|until| a.timestamp < until)
}

/// Entries of a `(time, id)`-keyed map strictly before the cursor, newest first.
fn newest_first<'a, V>(
    map: &'a BTreeMap<(i64, String), V>,
    after: &Option<(i64, String)>,
) -> Box<dyn Iterator<Item = &'a V> + 'a> {
    match after {
        Some(key) => {
            Box::new(map.range((Bound::Unbounded, Bound::Excluded(key.clone()))).rev().map(|(_, v)| v))
        }
        None => Box::new(map.values().rev()),
    }
}

impl Index {
    /// Moves [`Index::bytes`] by a committed group's changes.
    pub fn add_bytes(&mut self, delta: &[i64; 4]) {
        for (total, d) in self.bytes.iter_mut().zip(delta) {
            *total = total.saturating_add_signed(*d);
        }
    }

    /// Rows per table (in the order of [`crate::metrics::TABLES`]): patterns, executions, events (each
    /// execution's events are numbered 1..=`last_seq`, and removed only with their execution) and audit entries.
    pub fn rows(&self) -> [u64; 4] {
        let events = self.executions.values().map(|x| x.last_seq.max(0) as u64).sum();
        [self.patterns.len() as u64, self.executions.len() as u64, events, self.audit.len() as u64]
    }

    /// Refuses every call while the store has not been created (format 1 not applied).
    pub fn ready(&self, base: &Path) -> Result<()> {
        match self.manifest {
            Some(_) => Ok(()),
            None => Err(Error::schema(format!(
                "the file store at {} has not been created yet (format version 1 is pending); run `parallax \
                 storage migrate up`",
                base.display()
            ))),
        }
    }

    pub fn pattern(&self, name: &str, version: &str) -> Found<&PatternEntry> {
        let key = (name.to_string(), version.to_string());
        if let Some(p) = self.patterns.get(&key) {
            return Found::Yes(p);
        }
        match self.bad_patterns.get(&key) {
            Some(path) => Found::Damaged(path.clone(), self.why(path)),
            None => Found::No,
        }
    }

    pub fn execution(&self, id: &str) -> Found<&ExecEntry> {
        if let Some(e) = self.exec_start.get(id).and_then(|&t| self.executions.get(&(t, id.to_string()))) {
            return Found::Yes(e);
        }
        match self.bad_executions.get(id) {
            Some(path) => Found::Damaged(path.clone(), self.why(path)),
            None => Found::No,
        }
    }

    fn why(&self, path: &Path) -> String {
        self.unreadable.get(path).cloned().unwrap_or_else(|| "unreadable".into())
    }

    pub fn get_pattern(&self, name: &str, version: &str) -> Result<Pattern> {
        match self.pattern(name, version) {
            Found::Yes(p) => Ok(Pattern::clone(&p.p)),
            Found::No => Err(rules::pattern_not_found(name, version)),
            Found::Damaged(path, why) => {
                Err(damaged(&format!("pattern {name:?} version {version}"), &path, &why))
            }
        }
    }

    /// Every version of `name`; an error if one of them is damaged (it might be the latest).
    pub fn pattern_versions(&self, name: &str) -> Result<Vec<Pattern>> {
        if let Some(((_, v), path)) = self.bad_patterns.iter().find(|((n, _), _)| n == name) {
            return Err(damaged(&format!("pattern {name:?} version {v}"), path, &self.why(path)));
        }
        let from = (name.to_string(), String::new());
        Ok(self
            .patterns
            .range(from..)
            .take_while(|((n, _), _)| n == name)
            .map(|(_, p)| Pattern::clone(&p.p))
            .collect())
    }

    pub fn patterns_after(&self, page: &Page<String>) -> Vec<Pattern> {
        let start = match &page.after {
            Some(after) => Bound::Excluded((after.clone(), String::new())),
            None => Bound::Unbounded,
        };
        let mut names = 0;
        let mut out: Vec<Pattern> = Vec::new();
        for ((name, _), p) in self.patterns.range((start, Bound::Unbounded)) {
            if page.after.as_ref() == Some(name) {
                continue;
            }
            if out.last().is_none_or(|last| last.name != *name) {
                names += 1;
                if names > page.limit + 1 {
                    break;
                }
            }
            out.push(Pattern::clone(&p.p));
        }
        out
    }

    pub fn get_execution(&self, id: &str) -> Result<&ExecEntry> {
        match self.execution(id) {
            Found::Yes(e) => Ok(e),
            Found::No => Err(rules::execution_not_found(id)),
            Found::Damaged(path, why) => Err(damaged(&format!("execution {id}"), &path, &why)),
        }
    }

    pub fn list_executions(&self, f: &ExecutionFilter, page: &Page<(i64, String)>) -> Vec<Execution> {
        newest_first(&self.executions, &page.after)
            .filter(|x| matches_filter(&x.e, f))
            .take(page.limit + 1)
            .map(|x| Execution::clone(&x.e))
            .collect()
    }

    pub fn count_executions(&self, f: &ExecutionFilter) -> u64 {
        self.executions.values().filter(|x| matches_filter(&x.e, f)).count() as u64
    }

    pub fn query_audit(&self, q: &AuditQuery, page: &Page<(i64, String)>) -> Vec<AuditEntry> {
        newest_first(&self.audit, &page.after)
            .filter(|a| matches_audit(a, q))
            .take(page.limit + 1)
            .cloned()
            .collect()
    }

    /// Every execution with its search words, for [`search::rank_executions`] once the lock is released.
    ///
    /// [`search::rank_executions`]: super::search::rank_executions
    pub fn execution_docs(&self) -> Vec<(Terms, Arc<Execution>)> {
        self.executions.values().map(|x| (x.terms.clone(), x.e.clone())).collect()
    }

    /// Every pattern with its search words, for [`search::rank_patterns`] once the lock is released.
    ///
    /// [`search::rank_patterns`]: super::search::rank_patterns
    pub fn pattern_docs(&self) -> Vec<(Terms, Arc<Pattern>)> {
        self.patterns.values().map(|x| (x.terms.clone(), x.p.clone())).collect()
    }

    /// Indexes an audit entry read from (or written to) `file`; `false` if its id is already indexed.
    pub fn insert_audit(&mut self, file: &Arc<Path>, stored: StoredAudit) -> bool {
        let StoredAudit { entry: a, link } = stored;
        if !self.audit_ids.insert(a.id.to_string()) {
            return false;
        }
        let key = (a.timestamp, a.id.to_string());
        if let Some(link) = link {
            self.audit_seqs.insert((link.seq, a.id.to_string()), a.timestamp);
            self.audit_links.insert(a.id.to_string(), link);
        }
        self.audit_file_of.insert(a.id.to_string(), file.clone());
        self.audit_files.entry(file.clone()).or_default().push(key.clone());
        self.audit.insert(key, a);
        true
    }

    /// Forgets the entries `removed` of audit batch `file` (cleanup removed or rewrote the file).
    pub fn remove_audit(&mut self, file: &Path, removed: &[(i64, String)]) {
        for key in removed {
            self.audit.remove(key);
            self.audit_ids.remove(&key.1);
            self.audit_file_of.remove(&key.1);
            if let Some(link) = self.audit_links.remove(&key.1) {
                self.audit_seqs.remove(&(link.seq, key.1.clone()));
            }
        }
        if let Some(keys) = self.audit_files.get_mut(file) {
            let gone: HashSet<&(i64, String)> = removed.iter().collect();
            keys.retain(|k| !gone.contains(k));
            if keys.is_empty() {
                self.audit_files.remove(file);
            }
        }
    }

    /// The indexed entry with key `key`, with its chain fields (for a rewrite of its batch file).
    pub fn stored_audit(&self, key: &(i64, String)) -> Option<StoredAudit> {
        let entry = self.audit.get(key)?.clone();
        Some(StoredAudit { link: self.audit_links.get(&key.1).cloned(), entry })
    }

    /// Forgets an execution (cleanup removed its file and events); its search words go with its entry.
    pub fn remove_execution(&mut self, id: &str) {
        if let Some(t) = self.exec_start.remove(id) {
            self.executions.remove(&(t, id.to_string()));
        }
    }

    pub fn insert_execution(&mut self, e: Execution, path: PathBuf, terms: Terms) {
        let id = e.id.to_string();
        let mut last_seq = 0;
        if let Some(old) = self.exec_start.insert(id.clone(), e.started_at) {
            if let Some(prev) = self.executions.remove(&(old, id.clone())) {
                last_seq = prev.last_seq;
            }
        }
        self.bad_executions.remove(&id);
        self.executions.insert((e.started_at, id), ExecEntry { e: Arc::new(e), path, terms, last_seq });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::RwLock;

    use abi_stable::std_types::{RNone, RVec};
    use parallax_storage_abi::ExecutionStatus;

    use super::*;
    use crate::file::search::{execution_terms, rank_executions};

    fn execution(id: &str, started_at: i64, input: &str) -> Execution {
        Execution {
            id: id.into(),
            pattern_name: "p".into(),
            pattern_version: "1.0.0".into(),
            status: ExecutionStatus::Pending,
            input: RSome(input.into()),
            output: RNone,
            error: RNone,
            started_at,
            completed_at: RNone,
            duration_ms: RNone,
            metadata: RNone,
            tags: RVec::new(),
        }
    }

    fn insert(idx: &mut Index, e: Execution) {
        let terms = execution_terms(&e);
        idx.insert_execution(e, PathBuf::from("unused"), terms);
    }

    /// A search collects under the read lock, then ranks with the lock released: a writer takes the lock while
    /// the (large) snapshot is being ranked, and the ranking answers for the moment it was collected.
    #[test]
    fn search_ranks_after_the_lock_is_released() {
        let index = RwLock::new(Index::default());
        {
            let mut idx = index.write().unwrap();
            for i in 0..20_000i64 {
                let input = if i % 1000 == 0 { r#"{"w": "needle needle hay"}"# } else { r#"{"w": "hay"}"# };
                insert(&mut idx, execution(&format!("e{i:05}"), i, input));
            }
        }

        let docs = index.read().unwrap().execution_docs();
        {
            // The writer is not held up by the search below.
            let mut idx = index.try_write().expect("the index lock is free while a search ranks");
            insert(&mut idx, execution("late", 99_999, r#"{"w": "needle"}"#));
        }
        let hits = rank_executions(docs, &["needle".into()], &Page { limit: 100, after: None });
        let ids: Vec<String> = hits.iter().map(|(e, _)| e.id.to_string()).collect();
        let want: Vec<String> = (0..20).rev().map(|k| format!("e{:05}", k * 1000)).collect();
        assert_eq!(ids, want, "equal scores, newest first; the later write is not in this search");

        let docs = index.read().unwrap().execution_docs();
        let hits = rank_executions(docs, &["needle".into()], &Page { limit: 100, after: None });
        assert_eq!(hits.len(), 21);
    }
}
