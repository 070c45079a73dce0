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

use super::{
    codec::Encoding,
    durable::{self, ensure_dir, parallel, sync_dir, temp_path},
    index::Index,
    layout::Layout,
    load,
    lock::StoreLock,
    plan::{Change, FileOp, Plan},
};
use crate::{
    error::{Error, Result},
    writer_thread::{run_solo, Answer, Handlers, Msg, WriterThread},
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
    /// Commits a group's file operations: [`commit`] (tests inject a panicking one).
    commit: fn(Vec<FileOp>) -> std::result::Result<(), Failed>,
    /// Applies a committed group's changes to the index: [`Index::apply`] (tests inject a panicking one).
    apply: fn(&mut Index, Vec<Change>),
}

impl Ctx {
    pub fn new(layout: Layout, enc: Encoding, index: Arc<RwLock<Index>>, lock: StoreLock) -> Self {
        Ctx { layout, enc, index, broken: None, lock: Some(lock), commit, apply: Index::apply }
    }

    /// Commits file operations outside a group (a format step, run alone on the writer thread), keeping the
    /// index's byte counts. A failure half-way leaves the files partly rewritten: the step is run again.
    pub fn commit_files(&mut self, ops: Vec<FileOp>) -> Result<()> {
        let sizes = Sizes::before(&self.layout, &ops);
        let outcome = (self.commit)(ops);
        self.index.write().unwrap_or_else(|p| p.into_inner()).add_bytes(&sizes.delta());
        match outcome {
            Ok(()) => Ok(()),
            Err(Failed::Clean(e)) => Err(e),
            Err(Failed::Dirty(why)) => Err(Error::unavailable(format!(
                "the file store at {} hit an I/O error while rewriting files ({why}); fix the cause and run the \
                 step again",
                self.layout.base.display()
            ))),
        }
    }

    /// After a panic while a group was being committed or indexed (see [`commit_group`]), or one that escaped
    /// a group or solo job: the index is rebuilt from the files, which are the truth, so reads and later writes
    /// see exactly what is on disk (stray temporary files are removed on the way). If even that fails, writes
    /// are refused until the store is reopened.
    fn recover(&mut self) {
        let manifest = self.index.read().unwrap_or_else(|p| p.into_inner()).manifest.clone();
        match catch_unwind(AssertUnwindSafe(|| load::load(&self.layout, manifest))) {
            Ok(fresh) => {
                *self.index.write().unwrap_or_else(|p| p.into_inner()) = fresh;
                self.index.clear_poison();
            }
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
    done: Answer<T>,
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
        self.done.send(result);
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
        let (done, result) = self.thread.reply::<T>();
        self.thread.send(Msg::Group(Box::new(Job { what, f: Some(f), outcome: None, done }))).await?;
        self.thread.answer(result).await
    }

    /// Runs `f` alone on the writer thread, between groups (format-version changes).
    pub async fn solo<T, F>(&self, what: &'static str, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Ctx) -> Result<T> + Send + 'static,
    {
        let (done, result) = self.thread.reply::<T>();
        self.thread.send(Msg::Solo(Box::new(move |ctx| run_solo(ctx, what, f, done)))).await?;
        self.thread.answer(result).await
    }

    /// Whether a group is being committed and how many writes wait for the writer (for the metrics).
    pub fn load(&self) -> crate::writer_thread::Load {
        self.thread.load()
    }

    /// Lets queued writes finish, then stops the thread (blocking until it has and the lock is released).
    pub fn stop(&self) {
        self.thread.stop();
    }

    /// Closes the queue; waits only if idle (the lock is released when this returns), see `WriterThread::close`.
    pub fn close(&self) {
        self.thread.close();
    }
}

/// Plans the group against the index, commits its files, then updates the index and answers every job.
///
/// Planning writes nothing, so a panic there may escape to the writer thread, which tells every caller to
/// retry. Once the commit has started, no panic escapes: one while updating the index (the files are
/// committed) rebuilds the index from the files and answers each job with its own result; one in the middle
/// of the commit (some files may have been renamed into place) rebuilds the index the same way and tells the
/// callers to read before retrying.
fn commit_group(ctx: &mut Ctx, group: &mut Vec<Box<dyn Work>>) {
    let outcome = match &ctx.broken {
        Some(why) => Err(Error::unavailable(why.clone())),
        // One stat per group: a store whose directory was removed (or replaced) under this process is not
        // silently recreated as an empty one by the next write.
        None if !ctx.layout.base.join(super::layout::LOCK).is_file() => Err(Error::unavailable(format!(
            "the file store at {} is gone: its directory (or its lock file) was removed while this process \
             had it open; nothing was written. Restore it from a backup, or restart Parallax to start a new \
             store there",
            ctx.layout.base.display()
        ))),
        None => {
            let (ops, changes) = {
                let idx = ctx.index.read().unwrap_or_else(|p| p.into_inner());
                let mut plan = Plan::new(&idx, &ctx.layout, ctx.enc);
                for job in group.iter_mut() {
                    job.plan(&mut plan);
                }
                plan.into_parts()
            };
            let jobs = group.len();
            catch_unwind(AssertUnwindSafe(|| commit_and_index(ctx, ops, changes))).unwrap_or_else(|payload| {
                let panic = Error::from_panic(payload, "the file store commit");
                tracing::error!(
                    path = %ctx.layout.base.display(), error = %panic, jobs,
                    "file store commit panicked half-way; rebuilding the index from the files"
                );
                ctx.recover();
                Err(Error::panicked(format!(
                    "{}; the group's {jobs} write(s) may or may not have been written: read before retrying them; \
                     the writer goes on",
                    panic.0.message
                )))
            })
        }
    };
    for job in group.drain(..) {
        job.finish(&outcome);
    }
}

/// Commits the planned files, then applies the changes to the index. A panic while applying them is caught
/// here: the writes are on disk, so the index is rebuilt from the files and the group succeeds.
fn commit_and_index(ctx: &mut Ctx, ops: Vec<FileOp>, changes: Vec<Change>) -> Result<()> {
    let sizes = Sizes::before(&ctx.layout, &ops);
    match (ctx.commit)(ops) {
        Ok(()) => {
            let apply = ctx.apply;
            let delta = sizes.delta();
            let applied = catch_unwind(AssertUnwindSafe(|| {
                let mut idx = ctx.index.write().unwrap_or_else(|p| p.into_inner());
                idx.add_bytes(&delta);
                apply(&mut idx, changes)
            }));
            if let Err(payload) = applied {
                let panic = Error::from_panic(payload, "updating the file store index after a commit");
                tracing::error!(
                    path = %ctx.layout.base.display(), error = %panic,
                    "the group is committed; rebuilding the index from the files"
                );
                ctx.recover();
            }
            Ok(())
        }
        Err(Failed::Clean(e)) => Err(e),
        Err(Failed::Dirty(e)) => {
            let why = format!(
                "the file store at {} hit an I/O error while committing ({e}); the files may be ahead of \
                 this instance, so it takes no more writes: shut it down and open the store again",
                ctx.layout.base.display()
            );
            tracing::error!(path = %ctx.layout.base.display(), error = %e, "file store commit failed half-way");
            ctx.broken = Some(why.clone());
            Err(Error::unavailable(why))
        }
    }
}

/// The sizes of the record files a group touches, taken before its commit, for [`Index::bytes`]: after the
/// commit each file is measured again (absent: 0), so a file written twice in one group, rewritten, or
/// removed counts once, by what is on disk. A stat per file, beside the group's fsyncs.
struct Sizes(std::collections::BTreeMap<PathBuf, (usize, u64)>);

impl Sizes {
    fn before(layout: &Layout, ops: &[FileOp]) -> Sizes {
        let mut files = std::collections::BTreeMap::new();
        let mut note = |path: &std::path::Path| {
            if let (false, Some(table)) = (files.contains_key(path), load::table_of(layout, path)) {
                files.insert(path.to_path_buf(), (table, size_of(path)));
            }
        };
        for op in ops {
            match op {
                FileOp::Write { path, .. } | FileOp::Remove { path, .. } | FileOp::Discard { path } => {
                    note(path)
                }
                FileOp::RemoveAll { path } => {
                    for entry in fs::read_dir(path).into_iter().flatten().flatten() {
                        note(&entry.path());
                    }
                }
                FileOp::Prune { .. } => {}
            }
        }
        Sizes(files)
    }

    /// Bytes gained (or lost) per table since [`Sizes::before`].
    fn delta(&self) -> [i64; 4] {
        let mut delta = [0i64; 4];
        for (path, &(table, before)) in &self.0 {
            delta[table] += size_of(path) as i64 - before as i64;
        }
        delta
    }
}

fn size_of(path: &std::path::Path) -> u64 {
    fs::metadata(path).map_or(0, |m| m.len())
}

fn not_found_is_ok(e: io::Error) -> io::Result<()> {
    if e.kind() == io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(e)
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
    let mut prune_up: Vec<(&PathBuf, &PathBuf)> = Vec::new();
    for op in &ops {
        let (path, result) = match op {
            FileOp::Prune { dir, root } => {
                prune_up.push((dir, root));
                continue;
            }
            FileOp::RemoveAll { path } => {
                // A directory that is gone is neither synced nor a place for later renames of this group
                // (cleanup only removes executions that later writes of the group cannot see).
                dirs.retain(|d| !d.starts_with(path));
                fs::remove_dir_all(path)
                    .or_else(not_found_is_ok)
                    .map_err(|e| Failed::Dirty(format!("{}: {e}", path.display())))?;
                continue;
            }
            FileOp::Discard { path } => {
                fs::remove_file(path)
                    .or_else(not_found_is_ok)
                    .map_err(|e| Failed::Dirty(format!("{}: {e}", path.display())))?;
                continue;
            }
            FileOp::Write { path, .. } => {
                let tmp =
                    temps.next().ok_or_else(|| Failed::Dirty("a temporary file went missing".into()))?;
                (path, fs::rename(&tmp, path))
            }
            FileOp::Remove { path, prune_dir } => {
                if *prune_dir {
                    prune.extend(path.parent().map(PathBuf::from));
                }
                (path, fs::remove_file(path).or_else(not_found_is_ok))
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
    for (dir, root) in prune_up {
        // Only empty directories go (cleanup's day, month and year directories), deepest first, never `root`.
        let mut d = dir.clone();
        while d != *root && d.starts_with(root) && fs::remove_dir(&d).is_ok() {
            dirs.retain(|x| !x.starts_with(&d));
            let Some(parent) = d.parent().map(PathBuf::from) else { break };
            d = parent;
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

    /// A writer on a new store in `dir`, its index, with `tweak` applied to its state (to inject failures).
    fn start(dir: &tempfile::TempDir, tweak: impl FnOnce(&mut Ctx)) -> (Writer, Arc<RwLock<Index>>) {
        let layout = Layout::new(dir.path().join("store"));
        std::fs::create_dir(&layout.base).unwrap();
        let enc = Encoding { format: FileFormat::Json, gzip: false };
        let manifest = migrations::create(&layout, enc).unwrap();
        let lock = StoreLock::acquire(&layout.base).unwrap();
        let index = Arc::new(RwLock::new(load::load(&layout, Some(manifest))));
        let mut ctx = Ctx::new(layout, enc, index.clone(), lock);
        tweak(&mut ctx);
        (Writer::start(ctx).unwrap(), index)
    }

    async fn audit(writer: &Writer, n: u32, action: &str) -> Result<()> {
        let entry = NewAuditEntry {
            id: abi_stable::std_types::RSome(format!("0190a5b2-7c3e-7000-8000-{n:012}").as_str().into()),
            timestamp: abi_stable::std_types::RSome(1_705_276_800_000_000 + i64::from(n)),
            action: action.into(),
            ..Default::default()
        };
        writer.write("append_audit", move |pl| ops::append_audit(pl, vec![entry])).await.map(|_| ())
    }

    fn actions(index: &RwLock<Index>) -> Vec<String> {
        let mut actions: Vec<String> =
            index.read().unwrap().audit.values().map(|a| a.action.to_string()).collect();
        actions.sort();
        actions
    }

    /// The files are committed before the index is updated: a panic while updating it must not tell the
    /// callers their writes failed (a retry would write them twice). They succeed, and the index is rebuilt
    /// from the files.
    #[tokio::test]
    async fn a_panic_while_updating_the_index_answers_success_and_rebuilds_it() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, index) =
            start(&dir, |ctx| ctx.apply = |_, _| panic!("injected failure in the index update"));
        audit(&writer, 1, "first").await.expect("the write is on disk: it succeeded");
        audit(&writer, 2, "second").await.expect("the write is on disk: it succeeded");
        assert_eq!(actions(&index), ["first", "second"], "the index is rebuilt from the files");
        writer.stop();
    }

    /// A panic in the middle of a commit (here: after the renames) leaves the files ahead of the index: the
    /// index is rebuilt from the files, and the callers are told the write may have happened.
    #[tokio::test]
    async fn a_panic_in_the_middle_of_a_commit_rebuilds_the_index_and_says_to_read_first() {
        static PANICKED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        fn commit_then_panic_once(ops: Vec<FileOp>) -> std::result::Result<(), Failed> {
            commit(ops)?;
            if !PANICKED.swap(true, std::sync::atomic::Ordering::SeqCst) {
                panic!("injected failure after the renames");
            }
            Ok(())
        }
        let dir = tempfile::tempdir().unwrap();
        let (writer, index) = start(&dir, |ctx| ctx.commit = commit_then_panic_once);

        let err = audit(&writer, 1, "unknown").await.unwrap_err();
        assert_eq!(err.kind(), parallax_storage_abi::ErrorKind::Panicked, "{err}");
        let msg = err.0.message.to_string();
        assert!(msg.contains("injected failure after the renames"), "{msg}");
        assert!(msg.contains("may or may not have been written: read before retrying"), "{msg}");
        assert_eq!(actions(&index), ["unknown"], "the index shows what is on disk");

        audit(&writer, 2, "later").await.expect("the writer goes on");
        assert_eq!(actions(&index), ["later", "unknown"]);
        writer.stop();
    }

    /// The metrics' view of the writer: busy while a (slow) group commits, and the writes submitted meanwhile
    /// queued behind it until it takes them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_commit_shows_the_writer_busy_and_the_writes_queued_behind_it() {
        fn slow_commit(ops: Vec<FileOp>) -> std::result::Result<(), Failed> {
            std::thread::sleep(std::time::Duration::from_millis(400));
            commit(ops)
        }
        let dir = tempfile::tempdir().unwrap();
        let (writer, index) = start(&dir, |ctx| ctx.commit = slow_commit);
        let writer = Arc::new(writer);
        let until = |what: &str, f: &dyn Fn(crate::writer_thread::Load) -> bool| {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            while !f(writer.load()) {
                assert!(std::time::Instant::now() < deadline, "{what}: {:?}", writer.load());
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        };
        let spawn = |n: u32| {
            let w = writer.clone();
            tokio::spawn(async move { audit(&w, n, "queued").await })
        };
        let first = spawn(0);
        until("the first group is committing", &|l| l.running);
        let rest: Vec<_> = (1..=5).map(spawn).collect();
        until("five writes wait behind it", &|l| l.queued == 5);
        first.await.unwrap().unwrap();
        for w in rest {
            w.await.unwrap().unwrap();
        }
        until("idle again", &|l| !l.running && l.queued == 0);
        assert_eq!(index.read().unwrap().audit.len(), 6);
        writer.stop();
    }

    /// Recovery rebuilds the index from the files, so the store reads what is on disk again.
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
