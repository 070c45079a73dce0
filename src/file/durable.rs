//! Durable file-system primitives: every file is written to a temporary name in its final directory, synced,
//! renamed into place, and the directory synced, so a crash leaves the old file or the new one, never a torn
//! one. Also the small thread fan-out the writer and the loader use to overlap `fsync`s and parsing.

use std::{
    collections::BTreeSet,
    fs::{self, File},
    io::{self, Write},
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

use super::layout::{TEMP_PREFIX, TEMP_SUFFIX};

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// `.~<name>.<pid>.<n>.tmp` beside `path`: hidden, never mistaken for a record, removed on open.
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!("{TEMP_PREFIX}{name}.{}.{n}{TEMP_SUFFIX}", std::process::id()))
}

/// Creates `path` (which must not exist) and writes `bytes`, not yet synced.
pub fn create_written(path: &Path, bytes: &[u8]) -> io::Result<File> {
    let mut f = crate::private::file_options().write(true).create_new(true).open(path)?;
    f.write_all(bytes)?;
    Ok(f)
}

/// Creates `path` (which must not exist), writes `bytes` and syncs them to disk.
pub fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    create_written(path, bytes)?.sync_all()
}

pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates `dir` and its missing parents, adding the parent of each directory it created to `to_sync`
/// (a new directory entry is durable only once its parent is synced).
pub fn ensure_dir(dir: &Path, to_sync: &mut BTreeSet<PathBuf>) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(parent) = parent {
        ensure_dir(parent, to_sync)?;
    }
    match crate::private::create_dir(dir) {
        Ok(()) => {
            if let Some(parent) = parent {
                to_sync.insert(parent.to_path_buf());
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// One file, atomically and durably (for the manifest and README; records go through the writer's groups).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().ok_or_else(|| io::Error::other("a file path without a directory"))?;
    let mut to_sync = BTreeSet::new();
    ensure_dir(dir, &mut to_sync)?;
    let tmp = temp_path(path);
    if let Err(e) = write_synced(&tmp, bytes).and_then(|_| fs::rename(&tmp, path)) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    to_sync.insert(dir.to_path_buf());
    to_sync.iter().try_for_each(|d| sync_dir(d))
}

/// How many threads overlap blocking work (directory syncs, parsing on open).
pub const FAN_OUT: usize = 16;

/// `f` over every item on up to `threads` scoped threads; results in input order.
pub fn parallel<T: Send, R: Send>(items: Vec<T>, threads: usize, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    let threads = threads.min(items.len());
    if threads <= 1 {
        return items.into_iter().map(f).collect();
    }
    let per = items.len().div_ceil(threads);
    let mut chunks: Vec<Vec<T>> = Vec::with_capacity(threads);
    let mut it = items.into_iter().peekable();
    while it.peek().is_some() {
        chunks.push(it.by_ref().take(per).collect());
    }
    let f = &f;
    std::thread::scope(|s| {
        let handles: Vec<_> =
            chunks.into_iter().map(|c| s.spawn(move || c.into_iter().map(f).collect::<Vec<R>>())).collect();
        // A panic in `f` re-raises here; the writer and loader catch it as a `Panicked` error.
        handles.into_iter().flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))).collect()
    })
}

/// Free bytes for an unprivileged user on the filesystem holding `path` (`statvfs`: `f_bavail × f_frsize`).
pub fn free_space(path: &Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a writable statvfs.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)]
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}

/// The free space of the filesystem holding a store's data, for the metrics: a failure reads as unknown
/// (`None`) and is logged once per storage object, not at every scrape.
#[derive(Debug)]
pub struct DiskFree {
    dir: std::path::PathBuf,
    warned: std::sync::atomic::AtomicBool,
}

impl DiskFree {
    /// For the directory `dir` (SQLite: the one holding the database file; the file store: `basePath`).
    pub fn new(dir: std::path::PathBuf) -> Self {
        DiskFree { dir, warned: Default::default() }
    }

    pub fn get(&self) -> Option<u64> {
        match free_space(&self.dir) {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                if !self.warned.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    tracing::warn!(
                        path = %self.dir.display(), error = %e,
                        "cannot read the free disk space for parallax_storage_disk_free_bytes; the metric is left \
                         out (logged once)"
                    );
                }
                None
            }
        }
    }
}
