//! Rebuilding the index on open: walks the store, removes stray temporary files, reads every record in
//! parallel, and checks that each file is where its content says it belongs. A file that cannot be read is
//! logged with its path and left out; the rest of the store loads.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
};

use parallax_storage_abi::{Execution, ExecutionEvent, Pattern};

use super::{
    codec::Encoding,
    docs::{AuditBatchDoc, ChainDoc, EventDoc, ExecutionDoc, PatternDoc, StoredAudit},
    durable::{parallel, FAN_OUT},
    index::{Found, Index, Manifest, PatternEntry},
    layout::{
        self, escape, id_of_stem, is_temp, unescape, Layout, AUDIT, EVENTS_SUFFIX, EXECUTIONS, PATTERNS,
        RETENTION, TRANSFERS,
    },
    search,
};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Pattern,
    Execution,
    Event,
    Audit,
}

impl Kind {
    /// Where the metrics count this kind's bytes ([`Index::bytes`], in the order of [`crate::metrics::TABLES`]).
    fn table(&self) -> usize {
        match self {
            Kind::Pattern => 0,
            Kind::Execution => 1,
            Kind::Event => 2,
            Kind::Audit => 3,
        }
    }
}

/// The metrics' table of a record file of the store (an index into [`crate::metrics::TABLES`]); `None` for
/// the manifest, the run records and anything outside the layout.
pub fn table_of(layout: &Layout, path: &Path) -> Option<usize> {
    classify(layout, path.to_path_buf()).map(|c| c.kind.table())
}

struct Candidate {
    kind: Kind,
    path: PathBuf,
    enc: Encoding,
}

enum Parsed {
    Pattern(Pattern),
    Execution(Execution),
    Event(ExecutionEvent),
    Audit(Vec<StoredAudit>),
}

/// Every file under `dir` (recursively), stray temporary files removed on the way.
fn walk(dir: &Path, out: &mut Vec<PathBuf>, dirs: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        match entry.file_type() {
            Ok(t) if t.is_dir() => {
                dirs.push(path.clone());
                walk(&path, out, dirs);
            }
            Ok(_) if is_temp(&name) => match fs::remove_file(&path) {
                Ok(()) => {
                    tracing::info!(path = %path.display(), "removed a temporary file left by an interrupted write")
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot remove a stray temporary file")
                }
            },
            Ok(_) => out.push(path),
            Err(_) => {}
        }
    }
}

fn classify(layout: &Layout, path: PathBuf) -> Option<Candidate> {
    let rel = path.strip_prefix(&layout.base).ok()?;
    let top = rel.components().next()?.as_os_str().to_str()?;
    let parent = path.parent()?.file_name()?.to_str()?;
    let enc = Encoding::of_path(&path)?;
    let kind = match top {
        PATTERNS if rel.components().count() == 3 => Kind::Pattern,
        EXECUTIONS if parent.ends_with(EVENTS_SUFFIX) => Kind::Event,
        EXECUTIONS => Kind::Execution,
        AUDIT => Kind::Audit,
        _ => return None,
    };
    Some(Candidate { kind, path, enc })
}

/// The record in a file, and the file's size (0 if it cannot be read).
fn parse(c: &Candidate) -> (Result<Parsed, String>, u64) {
    match fs::read(&c.path) {
        Ok(bytes) => (decode(c, &bytes), bytes.len() as u64),
        Err(e) => (Err(format!("cannot read it: {e}")), 0),
    }
}

fn decode(c: &Candidate, bytes: &[u8]) -> Result<Parsed, String> {
    Ok(match c.kind {
        Kind::Pattern => Parsed::Pattern(c.enc.decode::<PatternDoc>(bytes)?.into_pattern()?),
        Kind::Execution => Parsed::Execution(c.enc.decode::<ExecutionDoc>(bytes)?.into_execution()?),
        Kind::Event => Parsed::Event(c.enc.decode::<EventDoc>(bytes)?.into_event()?),
        Kind::Audit => Parsed::Audit(c.enc.decode::<AuditBatchDoc>(bytes)?.into_entries()?),
    })
}

fn stem(path: &Path) -> Option<&str> {
    Encoding::split(path.file_name()?.to_str()?).map(|(s, _)| s)
}

/// Reads every record file of the store into a new index.
pub fn load(layout: &Layout, manifest: Option<Manifest>) -> Index {
    let started = std::time::Instant::now();
    let (mut files, mut dirs) = (Vec::new(), Vec::new());
    walk(&layout.base, &mut files, &mut dirs);
    let mut candidates = Vec::new();
    for path in files {
        let top_level = path.parent() == Some(layout.base.as_path());
        let parent = path.parent();
        if top_level
            || parent == Some(layout.base.join(RETENTION).as_path())
            || parent == Some(layout.base.join(TRANSFERS).as_path())
        {
            // manifest, README, .lock; the run records (read by `retention`); the transfer states (`transfer`)
            continue;
        }
        match classify(layout, path.clone()) {
            Some(c) => candidates.push(c),
            None => {
                tracing::warn!(path = %path.display(), "ignoring a file that is not part of the store layout")
            }
        }
    }
    let parsed = parallel(candidates, FAN_OUT, |c| {
        let (r, size) = parse(&c);
        (c, r, size)
    });
    let chained = manifest.as_ref().is_some_and(|m| m.format_version >= 2);
    let mut idx = Index { manifest, ..Index::default() };
    let mut events: BTreeMap<String, (PathBuf, i64)> = BTreeMap::new();
    let bad = |idx: &mut Index, path: &Path, why: String| {
        tracing::warn!(path = %path.display(), error = %why, "skipping a file that cannot be read");
        idx.unreadable.insert(path.to_path_buf(), why);
    };
    for (c, r, size) in parsed {
        // Every record file counts, readable or not: the metrics report the disk the store uses.
        idx.bytes[c.kind.table()] += size;
        let path = c.path;
        match (c.kind, r) {
            (Kind::Pattern, Ok(Parsed::Pattern(p))) => {
                let (dir, file) = (path.parent().and_then(|d| d.file_name()), stem(&path));
                if dir.and_then(|d| d.to_str()) != Some(&escape(&p.name)) || file != Some(&escape(&p.version))
                {
                    let want = layout.pattern_file(&p.name, &p.version, c.enc);
                    let why = format!(
                        "it holds pattern {:?} version {}, which belongs at {}",
                        p.name,
                        p.version,
                        want.display()
                    );
                    let key = (p.name.to_string(), p.version.to_string());
                    idx.bad_patterns.entry(key).or_insert_with(|| path.clone());
                    bad(&mut idx, &path, why);
                    continue;
                }
                let key = (p.name.to_string(), p.version.to_string());
                if let Some(other) = idx.patterns.get(&key) {
                    let why = format!("a duplicate of {}", other.path.display());
                    bad(&mut idx, &path, why);
                    continue;
                }
                let terms = search::pattern_terms(&p);
                idx.patterns.insert(key, PatternEntry { p: p.into(), path, terms });
            }
            (Kind::Execution, Ok(Parsed::Execution(e))) => {
                if stem(&path).and_then(id_of_stem) != Some(e.id.as_str()) {
                    idx.bad_executions.entry(e.id.to_string()).or_insert_with(|| path.clone());
                    bad(&mut idx, &path, format!("it holds execution {}, but its name has another id", e.id));
                    continue;
                }
                let other = match idx.execution(&e.id) {
                    Found::Yes(x) => Some(x.path.clone()),
                    Found::Damaged(p, _) => Some(p),
                    Found::No => None,
                };
                if let Some(other) = other {
                    bad(&mut idx, &path, format!("a duplicate of {}", other.display()));
                    continue;
                }
                let terms = search::execution_terms(&e);
                idx.insert_execution(e, path, terms);
            }
            (Kind::Event, r) => {
                let seq = stem(&path).and_then(|s| s.parse::<i64>().ok());
                let dir_id = path
                    .parent()
                    .and_then(|d| d.file_name())
                    .and_then(|d| d.to_str())
                    .and_then(|d| d.strip_suffix(EVENTS_SUFFIX))
                    .and_then(id_of_stem);
                let (Some(seq), Some(id)) = (seq, dir_id) else {
                    bad(&mut idx, &path, "its name is not <seq>.<ext> inside <time>_<id>.events".into());
                    continue;
                };
                let entry = events.entry(id.to_string()).or_insert((path.clone(), 0));
                entry.1 = entry.1.max(seq);
                match r {
                    Ok(Parsed::Event(ev)) if ev.seq == seq && ev.execution_id == id => {}
                    Ok(_) => bad(&mut idx, &path, format!("it does not hold event {seq} of execution {id}")),
                    Err(why) => bad(&mut idx, &path, why),
                }
            }
            (Kind::Audit, Ok(Parsed::Audit(entries))) => {
                let file: std::sync::Arc<Path> = path.clone().into();
                for a in entries {
                    let id = a.entry.id.to_string();
                    if !idx.insert_audit(&file, a) {
                        tracing::warn!(path = %path.display(), id = %id, "skipping a duplicate audit entry");
                    }
                }
            }
            (kind, Ok(_)) => bad(&mut idx, &path, format!("unexpected content for a {kind:?} file")),
            (kind, Err(why)) => {
                match kind {
                    Kind::Pattern => {
                        let name = path
                            .parent()
                            .and_then(|d| d.file_name())
                            .and_then(|d| d.to_str())
                            .and_then(unescape);
                        if let (Some(name), Some(version)) = (name, stem(&path).and_then(unescape)) {
                            idx.bad_patterns.insert((name, version), path.clone());
                        }
                    }
                    Kind::Execution => {
                        if let Some(id) = stem(&path).and_then(id_of_stem) {
                            idx.bad_executions.insert(id.to_string(), path.clone());
                        }
                    }
                    _ => {}
                }
                bad(&mut idx, &path, why);
            }
        }
    }
    if chained {
        read_chain(layout, &mut idx);
    }
    for (id, (path, last_seq)) in events {
        match idx.exec_start.get(&id).copied() {
            Some(t) => {
                if let Some(x) = idx.executions.get_mut(&(t, id)) {
                    x.last_seq = last_seq;
                }
            }
            None if idx.bad_executions.contains_key(&id) => {}
            None => {
                tracing::warn!(path = %path.display(), "ignoring events of an execution that has no file")
            }
        }
    }
    for dir in dirs.iter().rev() {
        // Empty pattern directories (left when a crash interrupted a delete) and empty day, month and year
        // directories of executions and audit batches (left when a crash interrupted a cleanup) are tidied
        // away, deepest first.
        let rel = dir.strip_prefix(&layout.base).unwrap_or(dir);
        let top = rel.components().next().and_then(|c| c.as_os_str().to_str());
        let dated = matches!(top, Some(EXECUTIONS | AUDIT))
            && rel.components().count() >= 2
            && !dir.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with(EVENTS_SUFFIX));
        if dated || dir.parent().and_then(|p| p.file_name()).is_some_and(|n| n == PATTERNS) {
            let _ = fs::remove_dir(dir);
        }
    }
    tracing::info!(
        path = %layout.base.display(),
        patterns = idx.patterns.len(),
        executions = idx.executions.len(),
        audit_entries = idx.audit.len(),
        unreadable = idx.unreadable.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "file store indexed"
    );
    idx
}

/// Reads the audit chain's head record (format 2), then rolls it forward over the entries written after it.
/// A missing or damaged record is logged and read as an empty chain (the roll forward then takes every entry
/// that links from the start), so the store opens and `audit verify` judges what is there.
fn read_chain(layout: &Layout, idx: &mut Index) {
    let path = layout.chain_file();
    let read = fs::read(&path).map_err(|e| e.to_string()).and_then(|bytes| {
        Encoding::of_path(&path)
            .ok_or_else(|| "unknown extension".to_string())?
            .decode::<ChainDoc>(&bytes)?
            .into_state()
    });
    let (state, since) = match read {
        Ok(read) => read,
        Err(why) => {
            tracing::warn!(
                path = %path.display(), error = %why,
                "the audit chain's head record cannot be read; taking the chain as it links from its start"
            );
            idx.unreadable.insert(path.clone(), why);
            (Default::default(), crate::time::now_micros())
        }
    };
    idx.chain = Some(roll_forward(idx, state));
    idx.chain_since = Some(since);
}

/// Recovery: an append writes its batch files before the head record, so a crash between the two leaves entries
/// beyond the head. Each entry at the next sequence number that links from the head (its `prev` is the head's
/// hash and its own hash is that of its content after it) moves the head forward; the first that does not (or
/// a gap) stops it. The record is written again by the next append. An entry slipped in around the plugin
/// cannot pass without its hash being computed the plugin's way, and then it is what the chain says.
pub(super) fn roll_forward(
    idx: &Index,
    mut state: crate::audit_chain::ChainState,
) -> crate::audit_chain::ChainState {
    let from = state.head.seq;
    loop {
        let next = state.head.seq + 1;
        let found = idx.audit_seqs.range((next, String::new())..(next + 1, String::new())).find_map(
            |((_, id), &t)| {
                let link = idx.audit_links.get(id)?;
                let entry = idx.audit.get(&(t, id.clone()))?;
                let fits = link.prev.as_slice() == state.head.hash.as_slice()
                    && crate::audit_chain::link(&link.prev, entry).as_slice() == link.hash.as_slice();
                fits.then(|| crate::audit_chain::hash_of(&link.hash)).flatten()
            },
        );
        match found {
            Some(hash) => state.head = crate::audit_chain::Head { seq: next, hash },
            None => break,
        }
    }
    if state.head.seq > from {
        tracing::info!(
            from, to = state.head.seq,
            "the audit chain's head record was behind its entries (an append was interrupted); moved it forward"
        );
    }
    state
}

/// The committed events (`seq <= last_seq`) of the execution stored at `execution_file`, in order.
pub fn read_events(
    execution_file: &Path,
    execution_id: &str,
    last_seq: i64,
) -> crate::error::Result<Vec<ExecutionEvent>> {
    use super::index::damaged;
    let what = format!("the events of execution {execution_id}");
    let dir = layout::events_dir(execution_file)
        .ok_or_else(|| damaged(&what, execution_file, "unexpected file name"))?;
    let entries = fs::read_dir(&dir).map_err(|e| damaged(&what, &dir, &e.to_string()))?;
    let mut files: Vec<(i64, PathBuf, Encoding)> = entries
        .flatten()
        .filter_map(|e| {
            let path = e.path();
            let (stem, enc) = Encoding::split(path.file_name()?.to_str()?)?;
            let seq = stem.parse::<i64>().ok().filter(|&s| s <= last_seq)?;
            Some((seq, path, enc))
        })
        .collect();
    files.sort_by_key(|(seq, _, _)| *seq);
    files
        .into_iter()
        .map(|(seq, path, enc)| {
            let what = format!("event {seq} of execution {execution_id}");
            let bytes = fs::read(&path).map_err(|e| damaged(&what, &path, &e.to_string()))?;
            let ev = enc
                .decode::<EventDoc>(&bytes)
                .and_then(EventDoc::into_event)
                .map_err(|why| damaged(&what, &path, &why))?;
            if ev.seq != seq || ev.execution_id != execution_id {
                return Err(damaged(&what, &path, "it holds another event"));
            }
            Ok(ev)
        })
        .collect()
}
