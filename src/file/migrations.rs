//! "Migrations" of the file store are versions of its on-disk format, recorded in the manifest
//! (`format_version`):
//!
//! - **1**: the layout in `README.txt`; applying it creates the store (manifest, README, top-level
//!   directories). It is the first format, so it cannot be rolled back: that would mean deleting the store,
//!   which is left to the operator.
//! - **2**: the tamper-evident audit chain. Every audit entry carries `chain_seq`, `chain_prev` and
//!   `chain_hash`, and the head record `audit-chain.json` holds the newest entry's position and the checkpoint
//!   of removed entries (see `README.txt`). The step from 1 chains every existing (legacy) audit entry once, in
//!   `(timestamp, id)` order: each batch file is rewritten with its entries' chain fields, then the head record
//!   and last the manifest are written, so an interrupted step leaves format 1 and running it again computes
//!   the same chain. An entry in a batch file that could not be read is not chained (repaired later, it shows
//!   as inserted). `migrate down` to 1 rewrites the batch files without the chain fields, writes the manifest,
//!   then removes the head record.
//!
//! `migrate up` (or the open, with `autoRun`) applies the pending steps; without `autoRun` a store in an older
//! format is refused until it is migrated (a maintenance open reads it as it is: a store in format 1 keeps no
//! chain, and its writes carry no chain fields; the step to 2 chains them).

use std::{collections::HashMap, fs, path::Path};

use abi_stable::std_types::RString;
use parallax_storage_abi::{MigrationInfo, MigrationReport};

use super::{
    archive::batch_of,
    codec::Encoding,
    docs::{AuditBatchDoc, ChainDoc, Doc, ManifestDoc, StoredAudit, StoredLink, STORE_KIND},
    durable::{ensure_dir, sync_dir, write_atomic},
    index::{Index, Manifest},
    layout::{
        self, format_ts, is_temp, Layout, AUDIT, CHAIN_FILE, EXECUTIONS, LOCK, PATTERNS, README, RETENTION,
        TRANSFERS,
    },
    plan::FileOp,
    writer::Ctx,
};
use crate::{
    audit_chain::{self, ChainState, Head},
    config::FileFormat,
    error::{Error, Result},
    time::now_micros,
};

/// The newest format this plugin reads and writes.
pub const CURRENT: u32 = 2;
const NAMES: [&str; 2] = [
    "file store layout 1 (described in README.txt in the store)",
    "audit chain: chain fields on audit entries, head record audit-chain.json (README.txt)",
];
pub const README_TEXT: &str = include_str!("README.txt");

pub fn format_versions() -> Vec<String> {
    (1..=CURRENT).map(|v| v.to_string()).collect()
}

const MANIFEST_NAMES: &[&str] = &["manifest.yaml", "manifest.yml", "manifest.json"];

/// The manifest, if the store has one.
pub fn read_manifest(layout: &Layout) -> Result<Option<Manifest>> {
    let found: Vec<_> = MANIFEST_NAMES.iter().map(|n| layout.base.join(n)).filter(|p| p.is_file()).collect();
    let path = match found.as_slice() {
        [] => return Ok(None),
        [one] => one.clone(),
        many => {
            return Err(Error::schema(format!(
                "the file store at {} has {} manifests ({}); keep the right one and remove the others",
                layout.base.display(),
                many.len(),
                many.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
            )))
        }
    };
    let damaged = |why: String| {
        Error::schema(format!(
            "the file store manifest {} is damaged ({why}); it must hold `store: {STORE_KIND}`, `format_version`, \
             `created_at` and `created_by`",
            path.display()
        ))
    };
    let bytes = fs::read(&path).map_err(|e| damaged(e.to_string()))?;
    let enc = Encoding::of_path(&path).ok_or_else(|| damaged("unknown extension".into()))?;
    let doc: ManifestDoc = enc.decode(&bytes).map_err(damaged)?;
    if doc.store != STORE_KIND {
        return Err(damaged(format!("store is {:?}", doc.store)));
    }
    let created_at = layout::parse_ts(&doc.created_at)
        .ok_or_else(|| damaged(format!("created_at {:?} is not a UTC timestamp", doc.created_at)))?;
    Ok(Some(Manifest { format_version: doc.format_version, created_at, path }))
}

/// Refuses to create a store in a directory that holds anything else.
pub fn check_fresh(base: &Path) -> Result<()> {
    let Ok(entries) = fs::read_dir(base) else { return Ok(()) };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let ours = [LOCK, README, PATTERNS, EXECUTIONS, AUDIT, RETENTION, TRANSFERS, CHAIN_FILE]
            .contains(&name.as_str())
            || is_temp(&name);
        if !ours {
            return Err(Error::invalid(format!(
                "{} is not empty ({name:?}) and has no manifest, so it is not a Parallax file store; point \
                 storage.file.basePath at a new or empty directory",
                base.display()
            )));
        }
    }
    Ok(())
}

/// Writes the manifest at `path` (its own encoding), recording format `version`.
fn write_manifest_at(path: &Path, created_at: i64, version: u32) -> Result<Manifest> {
    let enc = Encoding::of_path(path).unwrap_or(Encoding { format: FileFormat::Yaml, gzip: false });
    let doc = ManifestDoc {
        store: STORE_KIND.into(),
        format_version: version,
        created_at: format_ts(created_at),
        created_by: format!("parallax-storage {}", crate::PLUGIN_VERSION),
    };
    let bytes = enc.encode(&doc).map_err(Error::internal)?;
    write_atomic(path, &bytes)
        .map_err(|e| Error::unavailable(format!("cannot write the manifest {}: {e}", path.display())))?;
    Ok(Manifest { format_version: version, created_at, path: path.to_path_buf() })
}

/// A new store's manifest path (never compressed).
fn new_manifest_path(layout: &Layout, enc: Encoding) -> std::path::PathBuf {
    layout.manifest(Encoding { gzip: false, ..enc })
}

/// Writes the audit chain's head record, atomically.
fn write_chain(layout: &Layout, state: &ChainState, since: i64) -> Result<()> {
    let path = layout.chain_file();
    let json = Encoding { format: FileFormat::Json, gzip: false };
    let bytes = json.encode(&ChainDoc::new(state, since)).map_err(Error::internal)?;
    write_atomic(&path, &bytes)
        .map_err(|e| Error::unavailable(format!("cannot write the audit chain head {}: {e}", path.display())))
}

/// Creates a store in format `version` (1 or 2): the README, the top-level directories, the head record (2),
/// and last the manifest (a crash before it leaves a directory that the next open finishes creating).
fn create_format(layout: &Layout, enc: Encoding, version: u32) -> Result<Manifest> {
    let fail = |what: &str, e: std::io::Error| {
        Error::unavailable(format!("cannot create the file store at {} ({what}): {e}", layout.base.display()))
    };
    write_atomic(&layout.base.join(README), README_TEXT.as_bytes()).map_err(|e| fail(README, e))?;
    let mut to_sync = Default::default();
    for dir in [PATTERNS, EXECUTIONS, AUDIT] {
        ensure_dir(&layout.base.join(dir), &mut to_sync).map_err(|e| fail(dir, e))?;
    }
    sync_dir(&layout.base).map_err(|e| fail("sync", e))?;
    let now = now_micros();
    if version >= 2 {
        write_chain(layout, &ChainState::default(), now)?;
    }
    let manifest = write_manifest_at(&new_manifest_path(layout, enc), now, version)?;
    let format = if enc.format == FileFormat::Yaml { "yaml" } else { "json" };
    tracing::info!(path = %layout.base.display(), format, compress = enc.gzip, version, "created a file store");
    Ok(manifest)
}

/// Creates a store in the current format.
pub fn create(layout: &Layout, enc: Encoding) -> Result<Manifest> {
    create_format(layout, enc, CURRENT)
}

pub fn status(idx: &Index) -> Vec<MigrationInfo> {
    let m = idx.manifest.as_ref();
    let applied = |v: u32| m.is_some_and(|m| m.format_version >= v);
    let mut out: Vec<MigrationInfo> = (1..=CURRENT)
        .map(|v| MigrationInfo {
            version: v.to_string().into(),
            name: NAMES[v as usize - 1].into(),
            applied: applied(v),
            applied_at: match v {
                1 => m.map(|m| m.created_at),
                _ if applied(v) => idx.chain_since.or(m.map(|m| m.created_at)),
                _ => None,
            }
            .into(),
        })
        .collect();
    if let Some(m) = m.filter(|m| m.format_version > CURRENT) {
        out.push(MigrationInfo {
            version: m.format_version.to_string().into(),
            name: "(unknown to this plugin: the store was written by a newer one)".into(),
            applied: true,
            applied_at: None.into(),
        });
    }
    out
}

fn report(ctx: &Ctx, applied: Vec<u32>, reverted: Vec<u32>) -> MigrationReport {
    let idx = ctx.index.read().unwrap_or_else(|p| p.into_inner());
    MigrationReport {
        applied: applied.into_iter().map(|v| RString::from(v.to_string())).collect(),
        reverted: reverted.into_iter().map(|v| RString::from(v.to_string())).collect(),
        status: status(&idx).into(),
    }
}

fn current(ctx: &Ctx) -> Option<Manifest> {
    ctx.index.read().unwrap_or_else(|p| p.into_inner()).manifest.clone()
}

fn set_manifest(ctx: &Ctx, m: Manifest) {
    ctx.index.write().unwrap_or_else(|p| p.into_inner()).manifest = Some(m);
}

/// Audit batch files rewritten per commit by a format step.
const FILES_PER_COMMIT: usize = 256;

/// Rewrites every readable audit batch file with the chain fields `links` gives its entries (by id; `None`
/// for all: without chain fields), keeping each file's name and encoding, in commits of a few hundred files.
/// Each file is read again, so that everything in it stays (an entry the index skipped as a duplicate of
/// another file's is kept, without chain fields).
fn rewrite_batches(ctx: &mut Ctx, links: Option<&HashMap<String, StoredLink>>) -> Result<()> {
    let files: Vec<_> = {
        let idx = ctx.index.read().unwrap_or_else(|p| p.into_inner());
        idx.audit_files.keys().cloned().collect()
    };
    for chunk in files.chunks(FILES_PER_COMMIT) {
        let ops: Vec<FileOp> = {
            let idx = ctx.index.read().unwrap_or_else(|p| p.into_inner());
            let mut ops = Vec::with_capacity(chunk.len());
            for file in chunk {
                let (batch, enc) = batch_of(file, ctx.enc);
                let read = fs::read(file)
                    .map_err(|e| e.to_string())
                    .and_then(|bytes| enc.decode::<AuditBatchDoc>(&bytes))
                    .and_then(AuditBatchDoc::into_entries)
                    .map_err(|why| {
                        Error::unavailable(format!(
                            "cannot read audit batch {} again to rewrite it ({why}); the format step stopped \
                             before its end: repair or move the file, then run it again",
                            file.display()
                        ))
                    })?;
                let entries = read
                    .into_iter()
                    .map(|StoredAudit { entry, .. }| {
                        let id = entry.id.as_str();
                        let indexed_here = idx.audit_file_of.get(id).is_some_and(|f| f == file);
                        let link = links.filter(|_| indexed_here).and_then(|l| l.get(id).cloned());
                        StoredAudit { entry, link }
                    })
                    .collect();
                ops.push(FileOp::Write {
                    path: file.to_path_buf(),
                    doc: Box::new(Doc::Audit { batch, entries }),
                    enc,
                });
            }
            ops
        };
        ctx.commit_files(ops)?;
    }
    Ok(())
}

/// Format 1 → 2: chains every audit entry in `(timestamp, id)` order (see the module documentation).
fn upgrade_2(ctx: &mut Ctx, m: Manifest) -> Result<()> {
    let started = std::time::Instant::now();
    let (links, head) = {
        let idx = ctx.index.read().unwrap_or_else(|p| p.into_inner());
        let mut head = Head::default();
        let links = audit_chain::extend(&mut head, idx.audit.values());
        let links: HashMap<String, StoredLink> =
            idx.audit.keys().zip(links).map(|((_, id), l)| (id.clone(), l.into())).collect();
        (links, head)
    };
    rewrite_batches(ctx, Some(&links))?;
    let state = ChainState { head, checkpoint: None, legacy_pending: false };
    let since = now_micros();
    write_chain(&ctx.layout, &state, since)?;
    write_atomic(&ctx.layout.base.join(README), README_TEXT.as_bytes())
        .map_err(|e| Error::unavailable(format!("cannot write {README}: {e}")))?;
    let manifest = write_manifest_at(&m.path, m.created_at, 2)?;
    let mut idx = ctx.index.write().unwrap_or_else(|p| p.into_inner());
    let seqs: std::collections::BTreeMap<(i64, String), i64> =
        idx.audit.keys().filter_map(|(t, id)| links.get(id).map(|l| ((l.seq, id.clone()), *t))).collect();
    idx.audit_seqs = seqs;
    idx.audit_links = links;
    idx.chain = Some(state);
    idx.chain_since = Some(since);
    idx.manifest = Some(manifest);
    tracing::info!(
        path = %ctx.layout.base.display(), entries = head.seq,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "file store format 2 applied: the existing audit entries are chained"
    );
    Ok(())
}

/// Format 2 → 1: the batch files without chain fields, the manifest, then the head record removed.
fn downgrade_2(ctx: &mut Ctx, m: Manifest) -> Result<()> {
    rewrite_batches(ctx, None)?;
    let manifest = write_manifest_at(&m.path, m.created_at, 1)?;
    let head = ctx.layout.chain_file();
    match fs::remove_file(&head) {
        Ok(()) => {
            let _ = sync_dir(&ctx.layout.base);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(path = %head.display(), error = %e, "cannot remove the audit chain head record")
        }
    }
    let mut idx = ctx.index.write().unwrap_or_else(|p| p.into_inner());
    idx.audit_links.clear();
    idx.audit_seqs.clear();
    idx.chain = None;
    idx.chain_since = None;
    idx.manifest = Some(manifest);
    tracing::info!(path = %ctx.layout.base.display(), "file store format 2 reverted: audit entries carry no chain");
    Ok(())
}

/// Moves the store to format `target` (≥ 1), one step at a time; the versions applied and reverted.
fn move_to(ctx: &mut Ctx, target: u32) -> Result<(Vec<u32>, Vec<u32>)> {
    let Some(m) = current(ctx) else {
        set_manifest(ctx, create_format(&ctx.layout, ctx.enc, target)?);
        return Ok(((1..=target).collect(), vec![]));
    };
    if m.format_version > CURRENT {
        return Err(newer(ctx, m.format_version));
    }
    let (mut applied, mut reverted) = (vec![], vec![]);
    if m.format_version < target {
        upgrade_2(ctx, m)?;
        applied.push(2);
    } else if m.format_version > target {
        downgrade_2(ctx, m)?;
        reverted.push(2);
    }
    Ok((applied, reverted))
}

fn newer(ctx: &Ctx, version: u32) -> Error {
    Error::schema(format!(
        "the file store at {} has format version {version}, newer than this plugin's {CURRENT}: use the newer          plugin to change its format",
        ctx.layout.base.display()
    ))
}

pub fn up(ctx: &mut Ctx) -> Result<MigrationReport> {
    let (applied, _) = move_to(ctx, CURRENT)?;
    Ok(report(ctx, applied, vec![]))
}

fn cannot_revert(ctx: &Ctx) -> Error {
    Error::unsupported(format!(
        "format version 1 is the file store's first format; there is no older format to go back to. To remove          the store, stop Parallax and delete {} (after a backup)",
        ctx.layout.base.display()
    ))
}

pub fn down(ctx: &mut Ctx) -> Result<MigrationReport> {
    match current(ctx) {
        Some(m) if m.format_version == 1 => Err(cannot_revert(ctx)),
        Some(m) if m.format_version > CURRENT => Err(newer(ctx, m.format_version)),
        Some(m) => {
            let (_, reverted) = move_to(ctx, m.format_version - 1)?;
            Ok(report(ctx, vec![], reverted))
        }
        None => Err(Error::invalid("no format version is applied; there is nothing to roll back")),
    }
}

/// A full version or a unique prefix; `0` means none.
fn resolve(target: &str) -> Result<Option<u32>> {
    let t = target.trim();
    if t == "0" {
        return Ok(None);
    }
    let found: Vec<u32> = (1..=CURRENT).filter(|v| !t.is_empty() && v.to_string().starts_with(t)).collect();
    match found.as_slice() {
        [one] => Ok(Some(*one)),
        _ => Err(Error::invalid(format!(
            "no file store format version matches {t:?}; known versions: {}, or 0 to revert all",
            format_versions().join(", ")
        ))),
    }
}

pub fn to(ctx: &mut Ctx, target: &str) -> Result<MigrationReport> {
    match (resolve(target)?, current(ctx)) {
        (Some(v), _) => {
            let (applied, reverted) = move_to(ctx, v)?;
            Ok(report(ctx, applied, reverted))
        }
        (None, Some(_)) => Err(cannot_revert(ctx)),
        (None, None) => Ok(report(ctx, vec![], vec![])),
    }
}

/// Records format `target` as applied (writes the manifest) without running it: no store is created, no
/// audit entry chained (a store marked 2 without its head record reads as an empty chain rolled forward over
/// whatever entries link from the start).
pub fn mark_applied(ctx: &mut Ctx, target: &str) -> Result<MigrationReport> {
    let Some(version) = resolve(target)? else {
        return Err(Error::invalid("give the version to mark as applied, not 0"));
    };
    let m = current(ctx);
    if m.as_ref().is_some_and(|m| m.format_version >= version) {
        return Err(crate::migrate::already_applied(&version.to_string()));
    }
    let from = m.as_ref().map_or(0, |m| m.format_version);
    let (path, created_at) =
        m.map_or_else(|| (new_manifest_path(&ctx.layout, ctx.enc), now_micros()), |m| (m.path, m.created_at));
    set_manifest(ctx, write_manifest_at(&path, created_at, version)?);
    if version >= 2 {
        let mut idx = ctx.index.write().unwrap_or_else(|p| p.into_inner());
        let state = super::load::roll_forward(&idx, ChainState::default());
        idx.chain = Some(state);
        idx.chain_since = Some(now_micros());
    }
    tracing::warn!(version, "file store format marked as applied without running it");
    Ok(report(ctx, ((from + 1)..=version).collect(), vec![]))
}
