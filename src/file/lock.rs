//! The store's exclusive lock: `flock(LOCK_EX | LOCK_NB)` on `<basePath>/.lock`, which holds the owner's pid.
//!
//! `flock` locks belong to an open file description, so a second opener is refused whether it is another
//! process or another storage instance in this one. The kernel releases the lock when its holder dies, so
//! a lock file left by a crashed process is simply taken over (and logged). The file is never deleted —
//! unlinking a lock file while another process is about to lock it would let two holders in — only emptied
//! on a clean shutdown.

use std::{
    fs::File,
    io::{self, Read, Seek, Write},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
};

use super::layout::LOCK;
use crate::error::{Error, Result};

pub struct StoreLock {
    file: File,
    path: PathBuf,
}

fn holder(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut text).ok()?;
    text.split_whitespace().next()?.parse().ok()
}

impl StoreLock {
    pub fn acquire(base: &Path) -> Result<StoreLock> {
        let path = base.join(LOCK);
        let mut file = crate::private::file_options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::unavailable(format!("cannot open the lock file {}: {e}", path.display())))?;
        // SAFETY: `file` is an open descriptor for the lifetime of this call.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::WouldBlock {
                return Err(Error::unavailable(format!("cannot lock {}: {err}", path.display())));
            }
            let who = match holder(&mut file) {
                Some(pid) if pid == std::process::id() => {
                    format!("another storage instance in this process (pid {pid})")
                }
                Some(pid) => format!("process {pid}"),
                None => "another process (its pid is not written yet)".to_string(),
            };
            return Err(Error::unavailable(format!(
                "the file store at {} is in use by {who}: its lock {} is held. A file store has one writer at a \
                 time; stop the other user (or shut the other instance down) and try again",
                base.display(),
                path.display()
            )));
        }
        match holder(&mut file) {
            Some(pid) if pid != std::process::id() => tracing::warn!(
                path = %path.display(),
                stale_pid = pid,
                "took over the file store lock left by process {pid}, which is no longer running (it did not shut down cleanly)"
            ),
            _ => {}
        }
        let me = format!("{}\n", std::process::id());
        file.set_len(0)
            .and_then(|_| file.rewind())
            .and_then(|_| file.write_all(me.as_bytes()))
            .and_then(|_| file.sync_all())
            .map_err(|e| Error::unavailable(format!("cannot write the lock file {}: {e}", path.display())))?;
        Ok(StoreLock { file, path })
    }

    /// Empties the lock file (a clean shutdown leaves no pid behind) and releases the lock.
    pub fn release(self) {
        if let Err(e) = self.file.set_len(0).and_then(|_| self.file.sync_all()) {
            tracing::warn!(path = %self.path.display(), error = %e, "could not empty the lock file");
        }
        // Closing the descriptor releases the flock.
        drop(self.file);
    }
}
