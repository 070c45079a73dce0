//! Giving space back to the file system after a cleanup: SQLite's incremental auto-vacuum.
//!
//! - A new database is created in `auto_vacuum = INCREMENTAL` mode ([`prepare_new`], called before the
//!   journal mode is set and before the first table exists: SQLite fixes the mode once page 1 is written).
//! - An existing database in another mode (created by an older build, or by another program) is converted
//!   once when the storage opens ([`convert_existing`]) with `VACUUM`, which rewrites the whole file while
//!   holding the write lock: done automatically while the file is at most [`CONVERT_AUTOMATICALLY_BYTES`];
//!   a larger file is left as it is, with a warning saying how to convert it (cleanups then free pages for
//!   reuse by new rows, but the file does not shrink).
//! - After a cleanup's deletes, [`reclaim`] frees the empty pages with `PRAGMA incremental_vacuum(N)` in small
//!   steps through the single writer (so other writes interleave), then checkpoints the WAL so the main file
//!   is truncated.

use std::{
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use diesel::{
    connection::SimpleConnection,
    sql_query,
    sql_types::{BigInt, Integer},
    sqlite::SqliteConnection,
    QueryableByName, RunQueryDsl,
};

use super::writer::Writer;
use crate::{
    config::SqliteConfig,
    error::{sqlite_error, Error, Result},
};

/// `PRAGMA auto_vacuum` values.
pub const INCREMENTAL: i32 = 2;

/// Existing databases up to this size are converted to incremental auto-vacuum when the storage opens: a
/// `VACUUM` of 64 MiB takes well under a second on an ordinary disk. Larger ones are left to the operator.
pub const CONVERT_AUTOMATICALLY_BYTES: u64 = 64 << 20;

/// Each vacuum step aims to hold the writer this long.
const STEP_TARGET: Duration = Duration::from_millis(5);
const PAGES_FIRST: i64 = 256;
const PAGES_MIN: i64 = 16;
const PAGES_MAX: i64 = 16_384;

#[derive(QueryableByName)]
struct AutoVacuum {
    #[diesel(sql_type = Integer)]
    auto_vacuum: i32,
}

#[derive(QueryableByName)]
struct N {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

pub fn mode(conn: &mut SqliteConnection) -> Result<i32> {
    Ok(sql_query("PRAGMA auto_vacuum").get_result::<AutoVacuum>(conn).map_err(sqlite_error)?.auto_vacuum)
}

fn freelist_count(conn: &mut SqliteConnection) -> Result<i64> {
    Ok(sql_query("SELECT freelist_count AS n FROM pragma_freelist_count()")
        .get_result::<N>(conn)
        .map_err(sqlite_error)?
        .n)
}

fn logical_bytes(conn: &mut SqliteConnection) -> Result<u64> {
    let n: N =
        sql_query("SELECT p.page_count * s.page_size AS n FROM pragma_page_count() p, pragma_page_size() s")
            .get_result(conn)
            .map_err(sqlite_error)?;
    Ok(n.n.max(0) as u64)
}

/// On a database without any table yet (a new file), selects incremental auto-vacuum. Must run before
/// `PRAGMA journal_mode = WAL`, which writes the first page and fixes the mode.
pub fn prepare_new(conn: &mut SqliteConnection) -> Result<()> {
    let tables: N =
        sql_query("SELECT count(*) AS n FROM sqlite_master").get_result(conn).map_err(sqlite_error)?;
    if tables.n == 0 {
        conn.batch_execute("PRAGMA auto_vacuum = INCREMENTAL;").map_err(sqlite_error)?;
    }
    Ok(())
}

/// The fix for a database that is not in incremental mode, as the operator runs it.
pub fn how_to_convert(path: &Path) -> String {
    format!(
        "convert it once with `sqlite3 {} 'PRAGMA auto_vacuum = INCREMENTAL; VACUUM;'` (rewrites the whole \
         file and blocks writers meanwhile; needs free disk space about the file's size; best with the service \
         stopped)",
        path.display()
    )
}

/// Converts an existing database that is not in incremental auto-vacuum mode, when it is small enough to do
/// unnoticed ([`CONVERT_AUTOMATICALLY_BYTES`]); otherwise warns. Never fails the open: a conversion that
/// cannot run (another process holds the database busy) is logged and tried at the next open.
pub fn convert_existing(conn: &mut SqliteConnection, path: &Path) {
    let outcome = (|| -> Result<Option<(u64, Duration)>> {
        if mode(conn)? == INCREMENTAL {
            return Ok(None);
        }
        let bytes = logical_bytes(conn)?;
        if bytes > CONVERT_AUTOMATICALLY_BYTES {
            tracing::warn!(
                path = %path.display(),
                bytes,
                "this SQLite database is not in incremental auto-vacuum mode (it was created by an older build \
                 or another program) and is too large to convert while opening: cleanups free space for reuse \
                 by new rows, but the file will not shrink; {}",
                how_to_convert(path)
            );
            return Ok(None);
        }
        let started = Instant::now();
        // `VACUUM` cannot run inside a transaction; on the writer's own connection before it starts.
        conn.batch_execute("PRAGMA auto_vacuum = INCREMENTAL; VACUUM;").map_err(sqlite_error)?;
        Ok(Some((bytes, started.elapsed())))
    })();
    match outcome {
        Ok(None) => {}
        Ok(Some((bytes, took))) => tracing::info!(
            path = %path.display(),
            bytes,
            took_ms = took.as_millis() as u64,
            "converted the SQLite database to incremental auto-vacuum (one-time VACUUM), so that cleanups \
             shrink the file"
        ),
        Err(e) => tracing::warn!(
            path = %path.display(),
            error = %e,
            "could not convert the SQLite database to incremental auto-vacuum now (tried again at the next \
             open); until then cleanups free space for reuse but the file does not shrink"
        ),
    }
}

/// The main database file's size on disk (0 when it cannot be read).
pub fn file_bytes(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Copies the WAL into the main file from a connection of its own, off the writer's thread: a `PASSIVE`
/// checkpoint waits for no one and blocks no writer (they keep appending to the WAL meanwhile). Once the WAL
/// is fully copied, the next write starts it over from the beginning, and SQLite truncates the main file to
/// the database's size (what makes the file shrink after a vacuum).
///
/// A cleanup keeps a checkpoint going in the background while its jobs run ([`Checkpointer::kick`]): its WAL
/// traffic is copied by the cleanup's own connection, instead of by SQLite's automatic checkpoint (every 1000
/// pages), which would run inside some caller's commit on the writer's thread and make that caller wait for
/// megabytes of copying and an fsync.
pub struct Checkpointer {
    conn: Arc<Mutex<SqliteConnection>>,
    running: Mutex<Option<tokio::task::JoinHandle<Result<()>>>>,
}

impl Checkpointer {
    pub async fn open(cfg: &SqliteConfig) -> Result<Checkpointer> {
        let cfg = cfg.clone();
        let conn = tokio::task::spawn_blocking(move || super::connection::plain(&cfg))
            .await
            .map_err(|e| Error::internal(format!("opening the checkpoint connection failed: {e}")))??;
        Ok(Checkpointer { conn: Arc::new(Mutex::new(conn)), running: Mutex::new(None) })
    }

    fn spawn(&self) -> tokio::task::JoinHandle<Result<()>> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = conn.lock().unwrap_or_else(|p| p.into_inner());
            conn.batch_execute("PRAGMA wal_checkpoint(PASSIVE);").map_err(sqlite_error)
        })
    }

    /// Starts a checkpoint unless one is still running; never waits.
    pub fn kick(&self) {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if running.as_ref().is_none_or(|h| h.is_finished()) {
            *running = Some(self.spawn());
        }
    }

    /// Waits for a running checkpoint, then checkpoints once more and waits for that.
    pub async fn run(&self) -> Result<()> {
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = running {
            if let Ok(Err(e)) = h.await {
                tracing::warn!(error = %e, "a background WAL checkpoint failed (the next one copies its pages)");
            }
        }
        self.spawn().await.map_err(|e| Error::internal(format!("a WAL checkpoint failed: {e}")))?
    }
}

/// What [`reclaim`] did.
#[derive(Debug, Default)]
pub struct Reclaimed {
    /// Whether the database is in incremental mode (else nothing was freed to the file system).
    pub incremental: bool,
    pub pages: i64,
    pub steps: u64,
}

/// Gives the free pages back in small steps through the writer, each its own short job and checkpointed
/// after, then checkpoints once more.
pub async fn reclaim(writer: &Writer, checkpointer: &Checkpointer, path: &Path) -> Result<Reclaimed> {
    let (incremental, mut free) = writer
        .solo("reading the free page count", |conn| Ok((mode(conn)? == INCREMENTAL, freelist_count(conn)?)))
        .await?;
    let mut done = Reclaimed { incremental, ..Reclaimed::default() };
    if !incremental {
        if free > 0 {
            tracing::warn!(
                path = %path.display(),
                free_pages = free,
                "the cleanup's free pages are reused by new rows, but the file does not shrink: the database is \
                 not in incremental auto-vacuum mode; {}",
                how_to_convert(path)
            );
        }
        return Ok(done);
    }
    let mut pages = PAGES_FIRST;
    while free > 0 {
        let step = pages;
        let (left, took) = writer
            .write("an incremental vacuum step", move |conn| {
                let started = Instant::now();
                conn.batch_execute(&format!("PRAGMA incremental_vacuum({step});")).map_err(sqlite_error)?;
                Ok((freelist_count(conn)?, started.elapsed()))
            })
            .await?;
        done.pages += (free - left).max(0);
        done.steps += 1;
        if left >= free {
            // Nothing freed (another writer's pages in between?): stop rather than spin.
            break;
        }
        free = left;
        pages = pace(pages, took, STEP_TARGET, PAGES_MIN, PAGES_MAX);
        checkpointer.kick();
    }
    checkpointer.run().await?;
    Ok(done)
}

/// The next step's size: scaled toward `target` time (at most doubled or halved per step), within bounds.
pub fn pace(current: i64, took: Duration, target: Duration, min: i64, max: i64) -> i64 {
    let factor = (target.as_secs_f64() / took.as_secs_f64().max(1e-5)).clamp(0.5, 2.0);
    ((current as f64 * factor) as i64).clamp(min, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pace_moves_toward_the_target_within_bounds() {
        let t = Duration::from_millis(10);
        assert_eq!(pace(100, Duration::from_millis(10), t, 10, 1000), 100);
        assert_eq!(pace(100, Duration::from_millis(1), t, 10, 1000), 200, "at most doubled");
        assert_eq!(pace(100, Duration::from_millis(100), t, 10, 1000), 50, "at most halved");
        assert_eq!(pace(15, Duration::from_secs(1), t, 10, 1000), 10);
        assert_eq!(pace(900, Duration::ZERO, t, 10, 1000), 1000);
    }
}
