//! The single writer. Every write in the store goes through one thread, which takes whatever writes are
//! queued (up to 512), plans each against the index and the group's earlier writes, then commits the group:
//! all new files are written to temporary names and `fsync`ed in parallel (the file system batches
//! concurrent syncs into one journal commit), renamed into place in order, and each touched directory is
//! synced once. Only then is the index updated and are the callers answered, so an acknowledged write is on
//! disk, readers never see a write that is not, and concurrent callers serialise without ever colliding.
//!
//! The writer thread also owns the store's lock: it is released when the thread ends, after the last queued
//! write, so dropping the store without `shutdown()` neither blocks the caller nor lets another instance in
//! while writes are still being committed.

use std::{
    collections::BTreeSet,
    fs, io,
    panic::{catch_unwind, AssertUnwindSafe},
    path::PathBuf,
    sync::{Arc, RwLock},
};

use tokio::sync::oneshot;

use super::{
    codec::Encoding,
    durable::{self, ensure_dir, parallel, sync_dir, temp_path},
    index::Index,
    layout::Layout,
    load,
    lock::StoreLock,
    plan::{FileOp, Plan},
};
use crate::{
    error::{Error, Result},
    writer_thread::{run_solo, Handlers, Msg, WriterThread},
};

/// What the writer thread owns: where the store is, how new files are encoded, and the shared index.
pub struct Ctx {
    pub layout: Layout,
    pub enc: Encoding,
    pub index: Arc<RwLock<Index>>,
    /// Set after a commit failed half-way: the files may be ahead of the index, so writes are refused.
    broken: Option<String>,
    /// The store's lock, released when the writer thread ends (see the module docs).
    lock: Option<StoreLock>,
}

impl Ctx {
    pub fn new(layout: Layout, enc: Encoding, index: Arc<RwLock<Index>>, lock: StoreLock) -> Self {
        Ctx { layout, enc, index, broken: None, lock: Some(lock) }
    }

    /// After a panic escaped a group (it can only come after the files were committed, from updating the
    /// index): the index is rebuilt from the files, which are the truth, so reads and later writes see exactly
    /// what is on disk. If even that fails, writes are refused until the store is reopened.
    fn recover(&mut self) {
        let manifest = self.index.read().unwrap_or_else(|p| p.into_inner()).manifest.clone();
        match catch_unwind(AssertUnwindSafe(|| load::load(&self.layout, manifest))) {
            Ok(fresh) => *self.index.write().unwrap_or_else(|p| p.into_inner()) = fresh,
            Err(payload) => {
                let e = Error::from_panic(payload, "rebuilding the file store index");
                tracing::error!(path = %self.layout.base.display(), error = %e, "file store index rebuild failed");
                self.broken = Some(format!(
                    "the file store writer at {} panicked and could not rebuild its index ({e}); it takes no more \
                     writes: shut it down and open the store again",
                    self.layout.base.display()
                ));
            }
        }
    }
}

impl Drop for Ctx {
    fn drop(&mut self) {
        if let Some(lock) = self.lock.take() {
            lock.release();
            tracing::info!(path = %self.layout.base.display(), "file storage closed");
        }
    }
}

trait Work: Send {
    fn plan(&mut self, plan: &mut Plan<'_>);
    fn finish(self: Box<Self>, commit: &Result<()>);
}

struct Job<T, F> {
    what: &'static str,
    f: Option<F>,
    outcome: Option<Result<T>>,
    done: oneshot::Sender<Result<T>>,
}

impl<T, F> Work for Job<T, F>
where
    T: Send + 'static,
    F: FnOnce(&mut Plan<'_>) -> Result<T> + Send + 'static,
{
    fn plan(&mut self, plan: &mut Plan<'_>) {
        let Some(f) = self.f.take() else { return };
        let mark = plan.mark();
        let outcome = match catch_unwind(AssertUnwindSafe(|| f(plan))) {
            Ok(r) => r,
            Err(payload) => Err(Error::from_panic(payload, self.what)),
        };
        if outcome.is_err() {
            plan.rollback(mark);
        }
        self.outcome = Some(outcome);
    }

    fn finish(self: Box<Self>, commit: &Result<()>) {
        let result = match (commit, self.outcome) {
            (_, Some(Err(e))) => Err(e),
            (Err(e), _) => Err(e.clone()),
            (Ok(()), Some(Ok(v))) => Ok(v),
            (Ok(()), None) => Err(Error::internal("the file store writer committed a write it never ran")),
        };
        let _ = self.done.send(result);
    }
}

type Solo = Box<dyn FnOnce(&mut Ctx) + Send>;

pub struct Writer {
    thread: WriterThread<Box<dyn Work>, Solo>,
}

impl Writer {
    pub fn start(ctx: Ctx) -> Result<Self> {
        let handlers = Handlers {
            group: commit_group,
            fail: |job: Box<dyn Work>, e| job.finish(&Err(e)),
            solo: |ctx: &mut Ctx, job: Solo| job(ctx),
            recover: Ctx::recover,
        };
        Ok(Writer {
            thread: WriterThread::start("the file store writer", "parallax-file-writer", ctx, handlers)?,
        })
    }

    /// Plans `f` into the next group; resolves once the group is durable (or failed).
    pub async fn write<T, F>(&self, what: &'static str, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Plan<'_>) -> Result<T> + Send + 'static,
    {
        let (done, result) = oneshot::channel::<Result<T>>();
        self.thread.send(Msg::Group(Box::new(Job { what, f: Some(f), outcome: None, done }))).await?;
        self.thread.answer(result).await
    }

    /// Runs `f` alone on the writer thread, between groups (format-version changes).
    pub async fn solo<T, F>(&self, what: &'static str, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Ctx) -> Result<T> + Send + 'static,
    {
        let (done, result) = oneshot::channel::<Result<T>>();
        self.thread.send(Msg::Solo(Box::new(move |ctx| run_solo(ctx, what, f, done)))).await?;
        self.thread.answer(result).await
    }

    /// Lets queued writes finish, then stops the thread (blocking until it has and the lock is released).
    pub fn stop(&self) {
        self.thread.stop();
    }
}

fn commit_group(ctx: &mut Ctx, group: &mut Vec<Box<dyn Work>>) {
    let outcome = match &ctx.broken {
        Some(why) => Err(Error::unavailable(why.clone())),
        None => {
            let index = ctx.index.clone();
            let (ops, changes) = {
                let idx = index.read().unwrap_or_else(|p| p.into_inner());
                let mut plan = Plan::new(&idx, &ctx.layout, ctx.enc);
                for job in group.iter_mut() {
                    job.plan(&mut plan);
                }
                plan.into_parts()
            };
            match catch_unwind(AssertUnwindSafe(|| commit(ops))) {
                Ok(Ok(())) => {
                    index.write().unwrap_or_else(|p| p.into_inner()).apply(changes);
                    Ok(())
                }
                Ok(Err(Failed::Clean(e))) => Err(e),
                Ok(Err(Failed::Dirty(e))) => {
                    let why = format!(
                        "the file store at {} hit an I/O error while committing ({e}); the files may be ahead of \
                         this instance, so it takes no more writes: shut it down and open the store again",
                        ctx.layout.base.display()
                    );
                    tracing::error!(path = %ctx.layout.base.display(), error = %e, "file store commit failed half-way");
                    ctx.broken = Some(why.clone());
                    Err(Error::unavailable(why))
                }
                Err(payload) => Err(Error::from_panic(payload, "the file store commit")),
            }
        }
    };
    for job in group.drain(..) {
        job.finish(&outcome);
    }
}

enum Failed {
    /// Nothing on disk changed (temporary files were removed).
    Clean(Error),
    /// Some renames may have happened.
    Dirty(String),
}

fn io_failed(what: &str, path: &std::path::Path, e: impl std::fmt::Display) -> Error {
    Error::unavailable(format!(
        "the file store could not {what} {}: {e}; nothing was written",
        path.display()
    ))
}

/// Makes every operation durable: directories, then all temporary files (written and synced in parallel),
/// then the renames and removals in order, then one sync per touched directory.
fn commit(ops: Vec<FileOp>) -> std::result::Result<(), Failed> {
    if ops.is_empty() {
        return Ok(());
    }
    let mut dirs: BTreeSet<PathBuf> = BTreeSet::new();
    for op in &ops {
        if let FileOp::Write { path, .. } = op {
            let dir = path.parent().unwrap_or(path);
            ensure_dir(dir, &mut dirs).map_err(|e| Failed::Clean(io_failed("create directory", dir, e)))?;
        }
    }
    let writes: Vec<&FileOp> = ops.iter().filter(|op| matches!(op, FileOp::Write { .. })).collect();
    let mut temps: Vec<PathBuf> = Vec::with_capacity(writes.len());
    let mut failure: Option<Error> = None;
    // In chunks, so that a large group never holds too many descriptors open.
    for chunk in writes.chunks(128) {
        // First encode and write every temporary file (CPU-bound: a few threads), then sync them all at once:
        // concurrent fsyncs share the file system's journal commits, and no file is created while one runs.
        let written = parallel(chunk.to_vec(), 4, |op| {
            let FileOp::Write { path, doc, enc } = op else { unreachable!("only writes are fanned out") };
            let tmp = temp_path(path);
            let bytes = doc
                .encode(*enc)
                .map_err(|e| Error::internal(format!("cannot encode {}: {e}", path.display())))?;
            let file = durable::create_written(&tmp, &bytes);
            Ok((path, tmp, file))
        });
        let synced = parallel(written, 64, |w: Result<_>| {
            let (path, tmp, file) = w?;
            let done = file.and_then(|f| f.sync_all()).map_err(|e| io_failed("write", path, e));
            Ok((tmp, done))
        });
        for s in synced {
            match s {
                Ok((tmp, done)) => {
                    temps.push(tmp);
                    if let Err(e) = done {
                        failure.get_or_insert(e);
                    }
                }
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
        if failure.is_some() {
            break;
        }
    }
    if let Some(err) = failure {
        for tmp in temps {
            let _ = fs::remove_file(tmp);
        }
        return Err(Failed::Clean(err));
    }
    let mut temps = temps.into_iter();
    let mut prune: Vec<PathBuf> = Vec::new();
    for op in &ops {
        let (path, result) = match op {
            FileOp::Write { path, .. } => {
                let tmp =
                    temps.next().ok_or_else(|| Failed::Dirty("a temporary file went missing".into()))?;
                (path, fs::rename(&tmp, path))
            }
            FileOp::Remove { path, prune_dir } => {
                if *prune_dir {
                    prune.extend(path.parent().map(PathBuf::from));
                }
                (
                    path,
                    fs::remove_file(path).or_else(|e| {
                        if e.kind() == io::ErrorKind::NotFound {
                            Ok(())
                        } else {
                            Err(e)
                        }
                    }),
                )
            }
        };
        result.map_err(|e| Failed::Dirty(format!("{}: {e}", path.display())))?;
        dirs.extend(path.parent().map(PathBuf::from));
    }
    for dir in prune {
        // Only succeeds when empty; a pattern name directory without versions goes away.
        if fs::remove_dir(&dir).is_ok() {
            dirs.remove(&dir);
            dirs.extend(dir.parent().map(PathBuf::from));
        }
    }
    let synced = parallel(dirs.into_iter().collect(), durable::FAN_OUT, |d| {
        sync_dir(&d).map_err(|e| format!("sync of directory {}: {e}", d.display()))
    });
    synced.into_iter().collect::<std::result::Result<Vec<()>, String>>().map_err(Failed::Dirty)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use parallax_storage_abi::NewAuditEntry;

    use super::*;
    use crate::{
        config::FileFormat,
        file::{migrations, ops},
    };

    /// A panic that escapes a group can only come from updating the index after the files were committed;
    /// recovery rebuilds the index from the files, so the store reads what is on disk again.
    #[tokio::test]
    async fn recovery_rebuilds_the_index_from_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path().join("store"));
        std::fs::create_dir(&layout.base).unwrap();
        let enc = Encoding { format: FileFormat::Json, gzip: false };
        let manifest = migrations::create(&layout, enc).unwrap();
        let lock = StoreLock::acquire(&layout.base).unwrap();
        let index = Arc::new(RwLock::new(load::load(&layout, Some(manifest))));
        let writer = Writer::start(Ctx::new(layout, enc, index.clone(), lock)).unwrap();

        let entry = NewAuditEntry {
            id: abi_stable::std_types::RSome("0190a5b2-7c3e-7000-8000-000000000001".into()),
            timestamp: abi_stable::std_types::RSome(1_705_276_800_000_000),
            action: "kept".into(),
            ..Default::default()
        };
        writer.write("append_audit", move |pl| ops::append_audit(pl, vec![entry])).await.unwrap();
        // As if updating the index had panicked half-way: the index no longer matches the files.
        index.write().unwrap().audit.clear();

        writer
            .solo("recover", |ctx| {
                ctx.recover();
                Ok(())
            })
            .await
            .unwrap();
        let idx = index.read().unwrap();
        assert_eq!(idx.audit.values().map(|a| a.action.to_string()).collect::<Vec<_>>(), ["kept"]);
        drop(idx);
        writer.stop();
    }
}
