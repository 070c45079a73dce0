//! "Migrations" of the file store are versions of its on-disk format, recorded in the manifest. Format 1 is
//! the layout in `README.txt`; applying it creates the store (manifest, README, top-level directories). It is
//! the first format, so it cannot be rolled back: that would mean deleting the store, which is left to the
//! operator. A later layout change would add a step here, run by `migrate up` (or on open with `autoRun`).

use std::{fs, path::Path};

use abi_stable::std_types::RString;
use parallax_storage_abi::{MigrationInfo, MigrationReport};

use super::{
    codec::Encoding,
    docs::{ManifestDoc, STORE_KIND},
    durable::{ensure_dir, sync_dir, write_atomic},
    index::{Index, Manifest},
    layout::{
        self, format_ts, is_temp, Layout, AUDIT, EXECUTIONS, LOCK, PATTERNS, README, RETENTION, TRANSFERS,
    },
    writer::Ctx,
};
use crate::{
    config::FileFormat,
    error::{Error, Result},
    time::now_micros,
};

/// The newest format this plugin reads and writes.
pub const CURRENT: u32 = 1;
const NAME_1: &str = "file store layout 1 (described in README.txt in the store)";
pub const README_TEXT: &str = include_str!("README.txt");

pub fn format_versions() -> Vec<String> {
    vec![CURRENT.to_string()]
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
        let ours = [LOCK, README, PATTERNS, EXECUTIONS, AUDIT, RETENTION, TRANSFERS].contains(&name.as_str())
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

fn write_manifest(layout: &Layout, enc: Encoding, created_at: i64) -> Result<Manifest> {
    let enc = Encoding { gzip: false, ..enc };
    let path = layout.manifest(enc);
    let doc = ManifestDoc {
        store: STORE_KIND.into(),
        format_version: CURRENT,
        created_at: format_ts(created_at),
        created_by: format!("parallax-storage {}", crate::PLUGIN_VERSION),
    };
    let bytes = enc.encode(&doc).map_err(Error::internal)?;
    write_atomic(&path, &bytes)
        .map_err(|e| Error::unavailable(format!("cannot write the manifest {}: {e}", path.display())))?;
    Ok(Manifest { format_version: CURRENT, created_at, path })
}

/// Applies format 1: the README, the top-level directories, and last the manifest (a crash before it leaves a
/// directory that the next open finishes creating).
pub fn create(layout: &Layout, enc: Encoding) -> Result<Manifest> {
    let fail = |what: &str, e: std::io::Error| {
        Error::unavailable(format!("cannot create the file store at {} ({what}): {e}", layout.base.display()))
    };
    write_atomic(&layout.base.join(README), README_TEXT.as_bytes()).map_err(|e| fail(README, e))?;
    let mut to_sync = Default::default();
    for dir in [PATTERNS, EXECUTIONS, AUDIT] {
        ensure_dir(&layout.base.join(dir), &mut to_sync).map_err(|e| fail(dir, e))?;
    }
    sync_dir(&layout.base).map_err(|e| fail("sync", e))?;
    let manifest = write_manifest(layout, enc, now_micros())?;
    let format = if enc.format == FileFormat::Yaml { "yaml" } else { "json" };
    tracing::info!(path = %layout.base.display(), format, compress = enc.gzip, "created a file store (format 1)");
    Ok(manifest)
}

pub fn status(idx: &Index) -> Vec<MigrationInfo> {
    let m = idx.manifest.as_ref();
    let mut out = vec![MigrationInfo {
        version: "1".into(),
        name: NAME_1.into(),
        applied: m.is_some(),
        applied_at: m.map(|m| m.created_at).into(),
    }];
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

fn report(ctx: &Ctx, applied: Vec<String>) -> MigrationReport {
    let idx = ctx.index.read().unwrap_or_else(|p| p.into_inner());
    MigrationReport {
        applied: applied.into_iter().map(RString::from).collect(),
        reverted: Default::default(),
        status: status(&idx).into(),
    }
}

fn current(ctx: &Ctx) -> Option<Manifest> {
    ctx.index.read().unwrap_or_else(|p| p.into_inner()).manifest.clone()
}

fn set_manifest(ctx: &Ctx, m: Manifest) {
    ctx.index.write().unwrap_or_else(|p| p.into_inner()).manifest = Some(m);
}

pub fn up(ctx: &mut Ctx) -> Result<MigrationReport> {
    if current(ctx).is_some() {
        return Ok(report(ctx, vec![]));
    }
    set_manifest(ctx, create(&ctx.layout, ctx.enc)?);
    Ok(report(ctx, vec!["1".into()]))
}

fn cannot_revert(ctx: &Ctx) -> Error {
    Error::unsupported(format!(
        "format version 1 is the file store's first format; there is no older format to go back to. To remove \
         the store, stop Parallax and delete {} (after a backup)",
        ctx.layout.base.display()
    ))
}

pub fn down(ctx: &mut Ctx) -> Result<MigrationReport> {
    match current(ctx) {
        Some(_) => Err(cannot_revert(ctx)),
        None => Err(Error::invalid("no format version is applied; there is nothing to roll back")),
    }
}

/// A full version or a unique prefix; `0` means none.
fn resolve(target: &str) -> Result<Option<u32>> {
    match target.trim() {
        "0" => Ok(None),
        t if !t.is_empty() && CURRENT.to_string().starts_with(t) => Ok(Some(CURRENT)),
        t => Err(Error::invalid(format!(
            "no file store format version matches {t:?}; known versions: {CURRENT}, or 0 to revert all"
        ))),
    }
}

pub fn to(ctx: &mut Ctx, target: &str) -> Result<MigrationReport> {
    match (resolve(target)?, current(ctx)) {
        (Some(_), _) => up(ctx),
        (None, Some(_)) => Err(cannot_revert(ctx)),
        (None, None) => Ok(report(ctx, vec![])),
    }
}

/// Records format 1 as applied (writes the manifest) without creating anything else.
pub fn mark_applied(ctx: &mut Ctx, target: &str) -> Result<MigrationReport> {
    let Some(version) = resolve(target)? else {
        return Err(Error::invalid("give the version to mark as applied, not 0"));
    };
    if current(ctx).is_some() {
        return Err(crate::migrate::already_applied(&version.to_string()));
    }
    set_manifest(ctx, write_manifest(&ctx.layout, ctx.enc, now_micros())?);
    tracing::warn!(version, "file store format marked as applied without running it");
    Ok(report(ctx, vec![version.to_string()]))
}
