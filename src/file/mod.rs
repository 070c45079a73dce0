#![doc = include_str!("README.txt")]
//!
//! Implementation
//! --------------
//!
//! The store above is the source of truth; an in-memory `index::Index` rebuilt on open (`load`) answers
//! every read. All writes go through one `writer` thread that commits queued writes in groups (parallel
//! temp-file fsyncs, ordered renames, one fsync per directory), then updates the index and answers. The
//! store is single-writer: `lock` holds `flock` on `.lock` for the life of the writer thread. Format versions are
//! the store's "migrations" (`migrations`).
//!
//! Cleanup and retention (`retention`) remove files through the same writer, a few at a time, so writes keep
//! going during a large cleanup; see that module for the order of removals, audit batch rewrites and the run
//! records in `retention/runs.json`.
//!
//! Events are one file each rather than lines appended to a shared events file: appending and fsyncing a
//! line costs the same single fsync as a new small file, but a crash mid-append would leave a torn last line
//! that every reader must detect and repair; a new file is either fully there or not at all.

mod archive;
mod backup;
mod chain;
mod codec;
mod docs;
pub(crate) mod durable;
mod index;
mod layout;
mod load;
mod lock;
mod metrics;
pub mod migrations;
mod ops;
mod plan;
mod retention;
mod search;
mod transfer;
mod writer;

use std::{
    path::{Path, PathBuf},
    sync::{Arc, RwLock, RwLockReadGuard},
};

use parallax_storage_abi::*;

pub(crate) use self::durable::DiskFree;
use self::{codec::Encoding, index::Index, layout::Layout, lock::StoreLock, writer::Writer};
use crate::{
    config::StorageConfig,
    contract::Contract,
    error::{Error, Result},
    validate::Page,
};

pub struct FileBackend {
    cfg: StorageConfig,
    layout: Layout,
    enc: Encoding,
    index: Arc<RwLock<Index>>,
    /// Owns the store's lock (released when its thread ends).
    writer: Writer,
    /// One cleanup or retention run at a time in this instance (the store lock keeps other processes out).
    runner: Arc<tokio::sync::Mutex<()>>,
    /// The run records (`retention/runs.json`), read on first use.
    runs: std::sync::Mutex<Option<Vec<crate::retention::Run>>>,
    /// The filesystem holding `basePath`.
    disk: DiskFree,
    metrics: crate::metrics::Metrics,
}

/// `basePath` itself may be created, but its parent must exist (a typo should not create a directory tree).
/// Other local users' access to the store: its directory (whose mode guards every file in it).
fn access_warnings(layout: &Layout) -> Vec<String> {
    crate::private::exposures([(layout.base.as_path(), "the file store directory")])
}

/// The loader's decoding of one record file, every kind in every encoding (the fuzz target's entry,
/// [`crate::fuzz_api::file_record`]).
pub(crate) fn fuzz_decode(bytes: &[u8]) {
    use crate::config::FileFormat;
    for format in [FileFormat::Yaml, FileFormat::Json] {
        for gzip in [false, true] {
            let enc = codec::Encoding { format, gzip };
            if let Ok(d) = enc.decode::<docs::PatternDoc>(bytes) {
                let _ = d.into_pattern();
            }
            if let Ok(d) = enc.decode::<docs::ExecutionDoc>(bytes) {
                let _ = d.into_execution();
            }
            if let Ok(d) = enc.decode::<docs::EventDoc>(bytes) {
                let _ = d.into_event();
            }
            if let Ok(d) = enc.decode::<docs::AuditBatchDoc>(bytes) {
                let _ = d.into_entries();
            }
            let _ = enc.decode::<docs::ChainDoc>(bytes);
            let _ = enc.decode::<docs::ManifestDoc>(bytes);
        }
    }
}

fn prepare_base(base: &Path) -> Result<()> {
    if base.is_dir() {
        return Ok(());
    }
    if base.exists() {
        return Err(Error::invalid(format!("storage.file.basePath {} is not a directory", base.display())));
    }
    let parent = base.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !parent.is_dir() {
        return Err(Error::invalid(format!(
            "storage.file.basePath {}: directory {} does not exist; create it or choose another path",
            base.display(),
            parent.display()
        )));
    }
    let mut to_sync = Default::default();
    durable::ensure_dir(base, &mut to_sync)
        .and_then(|_| to_sync.iter().try_for_each(|d: &PathBuf| durable::sync_dir(d)))
        .map_err(|e| Error::unavailable(format!("cannot create {}: {e}", base.display())))
}

fn open_blocking(cfg: StorageConfig, options: OpenOptions) -> Result<FileBackend> {
    let fc = cfg.file.clone().ok_or_else(|| {
        Error::invalid("storage.file.basePath: required when storage.type is file".to_string())
    })?;
    let layout = Layout::new(fc.base_path.clone());
    let enc = Encoding::of_config(&fc);
    prepare_base(&layout.base)?;
    if migrations::read_manifest(&layout)?.is_none() {
        migrations::check_fresh(&layout.base)?;
    }
    let lock = StoreLock::acquire(&layout.base)?;
    crate::private::warn_at_open(&access_warnings(&layout));
    let manifest = match migrations::read_manifest(&layout)? {
        Some(m) if m.format_version > migrations::CURRENT && !options.maintenance => {
            return Err(Error::schema(format!(
                "the file store at {} has format version {}, newer than this plugin's {}: it was written by a \
                 newer plugin; upgrade the plugin",
                layout.base.display(),
                m.format_version,
                migrations::CURRENT
            )))
        }
        Some(m) => Some(m),
        None if options.maintenance => None,
        None if cfg.migrations.enabled && cfg.migrations.auto_run => Some(migrations::create(&layout, enc)?),
        None => {
            return Err(Error::schema(format!(
                "the file store at {} does not exist yet (format version 1 is pending); run `parallax storage \
                 migrate up`, or set storage.migrations.enabled and storage.migrations.autoRun to true",
                layout.base.display()
            )))
        }
    };
    let pending = manifest.as_ref().is_some_and(|m| m.format_version < migrations::CURRENT);
    let auto_run = cfg.migrations.enabled && cfg.migrations.auto_run;
    if pending && !options.maintenance && !auto_run {
        return Err(Error::schema(format!(
            "the file store at {} has format version {}; format version {} is pending; run `parallax storage \
             migrate up`, or set storage.migrations.enabled and storage.migrations.autoRun to true",
            layout.base.display(),
            manifest.as_ref().map_or(0, |m| m.format_version),
            migrations::CURRENT
        )));
    }
    let index = Arc::new(RwLock::new(load::load(&layout, manifest)));
    let mut ctx = writer::Ctx::new(layout.clone(), enc, index.clone(), lock);
    if pending && !options.maintenance {
        let report = migrations::up(&mut ctx)?;
        tracing::info!(versions = ?report.applied, "applied pending file store format versions");
    }
    let writer = Writer::start(ctx)?;
    tracing::info!(path = %layout.base.display(), format = fc.format.as_str(), compress = fc.compress, "file storage opened");
    let metrics = crate::metrics::Metrics::new(&cfg.metrics, "file");
    let disk = DiskFree::new(layout.base.clone());
    Ok(FileBackend {
        cfg,
        layout,
        enc,
        index,
        writer,
        runner: Default::default(),
        runs: Default::default(),
        disk,
        metrics,
    })
}

impl FileBackend {
    pub async fn open(cfg: StorageConfig, options: OpenOptions) -> Result<Self> {
        tokio::task::spawn_blocking(move || open_blocking(cfg, options))
            .await
            .map_err(|e| Error::internal(format!("opening the file store failed: {e}")))?
    }

    /// The index, once the store exists.
    fn read(&self) -> Result<RwLockReadGuard<'_, Index>> {
        let idx = self.index.read().unwrap_or_else(|p| p.into_inner());
        idx.ready(&self.layout.base)?;
        Ok(idx)
    }

    async fn health_impl(&self) -> Result<Health> {
        let (status, unreadable) = {
            let idx = self.index.read().unwrap_or_else(|p| p.into_inner());
            let shown: Vec<String> =
                idx.unreadable.iter().take(10).map(|(p, why)| format!("{}: {why}", p.display())).collect();
            (migrations::status(&idx), (idx.unreadable.len(), shown, idx.manifest.clone()))
        };
        let (count, shown, manifest) = unreadable;
        let base = self.layout.base.clone();
        let probe = manifest.as_ref().map_or(base.clone(), |m| m.path.clone());
        let (latency_us, files, free) = tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            std::fs::metadata(&probe)
                .and_then(|m| if m.is_file() { std::fs::read(&probe).map(drop) } else { Ok(()) })
                .map_err(|e| Error::unavailable(format!("cannot read {}: {e}", probe.display())))?;
            let latency = started.elapsed().as_micros() as i64;
            Ok::<_, Error>((latency, count_files(&base), durable::free_space(&base).ok()))
        })
        .await
        .map_err(|e| Error::internal(format!("health check failed: {e}")))??;
        let mut warnings = self.cfg.warnings();
        warnings.extend(access_warnings(&self.layout));
        if count > 0 {
            warnings.push(format!(
                "{count} file(s) could not be read when the store was opened and are left out"
            ));
            warnings.extend(shown.into_iter().map(|s| format!("unreadable: {s}")));
        }
        let free = free.map_or("free space unknown".into(), |b| format!("{} free", human_bytes(b)));
        let format = manifest.map_or("not created yet".into(), |m| format!("format {}", m.format_version));
        Ok(Health {
            backend: "file".into(),
            server_version: format!(
                "file store {format}; {files} files; {free}; new files .{}",
                self.enc.ext()
            )
            .into(),
            location: self.layout.base.display().to_string().into(),
            latency_us,
            schema_version: status.iter().rev().find(|m| m.applied).map(|m| m.version.clone()).into(),
            pending_migrations: status.iter().filter(|m| !m.applied).count() as u32,
            warnings: warnings.into_iter().map(Into::into).collect(),
        })
    }
}

fn count_files(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => count_files(&e.path()),
            Ok(_) => 1,
            Err(_) => 0,
        })
        .sum()
}

fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let (mut v, mut u) = (b as f64, 0);
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

impl Contract for FileBackend {
    async fn put_pattern(&self, p: NewPattern, id_from_client: bool) -> Result<Pattern> {
        self.writer.write("put_pattern", move |pl| ops::put_pattern(pl, p, id_from_client)).await
    }

    async fn get_pattern(&self, name: String, version: String) -> Result<Pattern> {
        self.read()?.get_pattern(&name, &version)
    }

    async fn pattern_versions(&self, name: String) -> Result<Vec<Pattern>> {
        self.read()?.pattern_versions(&name)
    }

    async fn patterns_after(&self, page: Page<String>) -> Result<Vec<Pattern>> {
        Ok(self.read()?.patterns_after(&page))
    }

    async fn delete_pattern(&self, name: String, version: String) -> Result<()> {
        self.writer.write("delete_pattern", move |pl| ops::delete_pattern(pl, name, version)).await
    }

    async fn create_execution(&self, e: NewExecution, _id_from_client: bool) -> Result<Execution> {
        self.writer.write("create_execution", move |pl| ops::create_execution(pl, e)).await
    }

    async fn update_execution(&self, id: String, u: ExecutionUpdate) -> Result<Execution> {
        self.writer.write("update_execution", move |pl| ops::update_execution(pl, id, u)).await
    }

    async fn complete_execution(&self, id: String, c: crate::rules::Completion) -> Result<Execution> {
        self.writer.write("complete_execution", move |pl| ops::complete_execution(pl, id, c)).await
    }

    async fn get_execution(&self, id: String) -> Result<Execution> {
        Ok(Execution::clone(&self.read()?.get_execution(&id)?.e))
    }

    async fn list_executions(&self, f: ExecutionFilter, page: Page<(i64, String)>) -> Result<Vec<Execution>> {
        Ok(self.read()?.list_executions(&f, &page))
    }

    async fn count_executions(&self, f: ExecutionFilter) -> Result<u64> {
        Ok(self.read()?.count_executions(&f))
    }

    async fn append_event(
        &self,
        execution_id: String,
        event_id: String,
        e: NewEvent,
    ) -> Result<ExecutionEvent> {
        self.writer.write("append_event", move |pl| ops::append_event(pl, execution_id, event_id, e)).await
    }

    async fn list_events(&self, execution_id: String) -> Result<Vec<ExecutionEvent>> {
        let (path, last_seq) = {
            let idx = self.read()?;
            let x = idx.get_execution(&execution_id)?;
            (x.path.clone(), x.last_seq)
        };
        if last_seq == 0 {
            return Ok(Vec::new());
        }
        tokio::task::spawn_blocking(move || load::read_events(&path, &execution_id, last_seq))
            .await
            .map_err(|e| Error::internal(format!("reading events failed: {e}")))?
    }

    async fn append_audit(&self, entries: Vec<NewAuditEntry>) -> Result<()> {
        self.writer.write("append_audit", move |pl| ops::append_audit(pl, entries)).await
    }

    async fn query_audit(&self, q: AuditQuery, page: Page<(i64, String)>) -> Result<Vec<AuditEntry>> {
        Ok(self.read()?.query_audit(&q, &page))
    }

    async fn migration_status(&self) -> Result<Vec<MigrationInfo>> {
        Ok(migrations::status(&self.index.read().unwrap_or_else(|p| p.into_inner())))
    }

    async fn migrate_up(&self) -> Result<MigrationReport> {
        self.writer.solo("migrate_up", migrations::up).await
    }

    async fn migrate_down(&self) -> Result<MigrationReport> {
        self.writer.solo("migrate_down", migrations::down).await
    }

    async fn migrate_to(&self, version: String) -> Result<MigrationReport> {
        self.writer.solo("migrate_to", move |ctx| migrations::to(ctx, &version)).await
    }

    async fn mark_migration_applied(&self, version: String) -> Result<MigrationReport> {
        self.writer.solo("mark_migration_applied", move |ctx| migrations::mark_applied(ctx, &version)).await
    }

    async fn search_executions(
        &self,
        terms: Vec<String>,
        page: Page<usize>,
    ) -> Result<Vec<(Execution, f64)>> {
        let docs = self.read()?.execution_docs(); // the read lock ends here
        Ok(search::rank_executions(docs, &terms, &page))
    }

    async fn search_patterns(&self, terms: Vec<String>, page: Page<usize>) -> Result<Vec<(Pattern, f64)>> {
        let docs = self.read()?.pattern_docs(); // the read lock ends here
        Ok(search::rank_patterns(docs, &terms, &page))
    }

    async fn health(&self) -> Result<Health> {
        self.health_impl().await
    }

    async fn shutdown(&self) -> Result<()> {
        // Waits for the queued writes and the lock's release (dropping without this does not wait).
        tokio::task::block_in_place(|| self.writer.stop());
        Ok(())
    }

    fn close_on_drop(&self) {
        self.writer.close();
    }
}
