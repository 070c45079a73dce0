//! The in-memory index, rebuilt from the files on open and updated by the writer after each group commit.
//! It answers every read: lookups, the contract's filters, keyset pages in exactly the SQL backends' order
//! (newest first, id breaking ties), counts and search.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    ops::Bound,
    path::{Path, PathBuf},
};

use abi_stable::std_types::{ROption::RSome, RString};
use parallax_storage_abi::{AuditEntry, AuditQuery, Execution, ExecutionFilter, Pattern};

use super::search::{self, Terms};
use crate::{
    error::{Error, Result},
    rules,
    validate::Page,
};

pub struct PatternEntry {
    pub p: Pattern,
    pub path: PathBuf,
    pub terms: Terms,
}

pub struct ExecEntry {
    pub e: Execution,
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
    /// Files that could not be read when the store was opened, and why.
    pub unreadable: BTreeMap<PathBuf, String>,
    /// Unreadable files whose record is known from the path alone.
    pub bad_patterns: HashMap<(String, String), PathBuf>,
    pub bad_executions: HashMap<String, PathBuf>,
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
            Found::Yes(p) => Ok(p.p.clone()),
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
            .map(|(_, p)| p.p.clone())
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
            out.push(p.p.clone());
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
            .map(|x| x.e.clone())
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

    /// Best first; ties newest first (`started_at` desc, id desc), as the SQL backends order them.
    pub fn search_executions(&self, terms: &[String], page: &Page<usize>) -> Vec<(Execution, f64)> {
        let mut hits = search::matches(self.executions.values().map(|x| (&x.terms, &x.e)), terms);
        hits.sort_by(|(a, ra), (b, rb)| {
            rb.total_cmp(ra).then(b.started_at.cmp(&a.started_at)).then(b.id.cmp(&a.id))
        });
        let skip = page.after.unwrap_or(0);
        hits.into_iter().skip(skip).take(page.limit + 1).map(|(e, r)| (e.clone(), r)).collect()
    }

    /// Best first; ties newest first (`created_at` desc, id desc).
    pub fn search_patterns(&self, terms: &[String], page: &Page<usize>) -> Vec<(Pattern, f64)> {
        let mut hits = search::matches(self.patterns.values().map(|x| (&x.terms, &x.p)), terms);
        hits.sort_by(|(a, ra), (b, rb)| {
            rb.total_cmp(ra).then(b.created_at.cmp(&a.created_at)).then(b.id.cmp(&a.id))
        });
        let skip = page.after.unwrap_or(0);
        hits.into_iter().skip(skip).take(page.limit + 1).map(|(p, r)| (p.clone(), r)).collect()
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
        self.executions.insert((e.started_at, id), ExecEntry { e, path, terms, last_seq });
    }
}
