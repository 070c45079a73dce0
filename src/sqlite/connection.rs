//! Opening SQLite connections with the configured pragmas.

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc,
};

use diesel::{
    connection::{Connection, SimpleConnection},
    r2d2::{
        event::{AcquireEvent, CheckinEvent, CheckoutEvent, ReleaseEvent},
        ConnectionManager, CustomizeConnection, HandleEvent, Pool,
    },
    sql_query,
    sql_types::Text,
    sqlite::SqliteConnection,
    QueryableByName, RunQueryDsl,
};

use crate::{
    config::SqliteConfig,
    error::{sqlite_error, Error, Result},
    metrics::WaitGauge,
};

pub type ReadPool = Pool<ConnectionManager<SqliteConnection>>;

fn common_pragmas(cfg: &SqliteConfig) -> String {
    format!(
        "PRAGMA busy_timeout = {}; PRAGMA foreign_keys = ON; PRAGMA synchronous = {};",
        cfg.busy_timeout_ms,
        cfg.synchronous.as_sql()
    )
}

#[derive(QueryableByName)]
struct JournalMode {
    #[diesel(sql_type = Text)]
    journal_mode: String,
}

/// Sets the plugin's SQLite library (bundled, its own copy) to multi-thread mode without memory statistics,
/// once, before its first connection; every connection is opened through [`url`] (or calls this itself).
///
/// - *Multi-thread mode*: the bundled SQLite defaults to serialized mode, where every call on a connection
///   (each `sqlite3_column_value` of each row) takes that connection's mutex. Our connections are never used by
///   two threads at once (the writer's is its thread's; a pooled reader belongs to whoever checked it out;
///   diesel's `SqliteConnection` is not `Sync`), which is the condition multi-thread mode asks for. rusqlite
///   opens its connections the same way (`SQLITE_OPEN_NO_MUTEX`).
/// - *No memory statistics*: with them, every `sqlite3_malloc` and `sqlite3_free` takes a global mutex. Nothing
///   here reads them (`sqlite3_status`, a soft heap limit).
///
/// Measured with `perf` over `sqlite_filtered_page` (BENCHMARKS.md, issue 20): the connection mutex was 7.6 %
/// of the plugin's samples, the statistics mutex 2.8 %. If the library was initialised already (a program
/// using the same copy opened a connection first), SQLite refuses the change and everything works as before.
pub fn library_mode() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: sqlite3_config before sqlite3_initialize is its documented use; after, it returns
        // SQLITE_MISUSE and changes nothing. The variadic arguments are the ones each option takes.
        unsafe {
            libsqlite3_sys::sqlite3_config(libsqlite3_sys::SQLITE_CONFIG_MULTITHREAD);
            libsqlite3_sys::sqlite3_config(libsqlite3_sys::SQLITE_CONFIG_MEMSTATUS, 0 as std::ffi::c_int);
        }
    });
}

pub fn url(cfg: &SqliteConfig) -> Result<String> {
    library_mode();
    let path = &cfg.path;
    let text = path.to_str().ok_or_else(|| {
        Error::invalid(format!("storage.sqlite.path {} is not valid UTF-8", path.display()))
    })?;
    if text == ":memory:" || text.starts_with("file:") {
        return Err(Error::invalid(format!(
            "storage.sqlite.path {text:?} is not supported: give a file path (an in-memory database would be \
             private to one connection and lose every write)"
        )));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.is_dir() {
            return Err(Error::invalid(format!(
                "storage.sqlite.path {}: directory {} does not exist; create it or choose another path",
                path.display(),
                dir.display()
            )));
        }
    }
    Ok(text.to_string())
}

/// Other local users' access to the database file and its `-wal` and `-shm` files, one warning per file.
pub fn access_warnings(cfg: &SqliteConfig) -> Vec<String> {
    let with = |suffix: &str| {
        let mut p = cfg.path.clone().into_os_string();
        p.push(suffix);
        std::path::PathBuf::from(p)
    };
    let (wal, shm) = (with("-wal"), with("-shm"));
    crate::private::exposures([
        (cfg.path.as_path(), "the SQLite database"),
        (wal.as_path(), "the SQLite WAL file"),
        (shm.as_path(), "the SQLite shared-memory file"),
    ])
}

/// The writer's connection: sets the journal mode too (persistent in the file) and reports what it got.
pub fn writer(cfg: &SqliteConfig) -> Result<SqliteConnection> {
    let url = url(cfg)?;
    // A new database file is created owner-only; SQLite gives its -wal and -shm files the database's mode. A
    // failure here (a missing directory, no permission) is SQLite's to report next, in its words.
    let _ = crate::private::precreate(&cfg.path);
    let mut conn = SqliteConnection::establish(&url)
        .map_err(|e| Error::unavailable(format!("cannot open SQLite database {url}: {e}")))?;
    conn.batch_execute(&common_pragmas(cfg)).map_err(sqlite_error)?;
    // Statement journals (a savepoint per job, and one per statement that fires a trigger) stay in memory
    // instead of spilling to a temporary file: the bench's profile had a quarter of the writer's time in those
    // `pwrite`s. The journals hold the pages one job changes (a row or a pattern), so memory stays small;
    // migrations, which may sort whole tables, switch back to temporary files (`migrations::exclusive`).
    conn.batch_execute("PRAGMA temp_store = MEMORY;").map_err(sqlite_error)?;
    // A new database gives space back after cleanups (`super::vacuum`); the mode is fixed by the first page
    // written, so this comes before the journal mode.
    super::vacuum::prepare_new(&mut conn)?;
    let want = if cfg.wal_mode { "wal" } else { "delete" };
    let got: JournalMode =
        sql_query(format!("PRAGMA journal_mode = {want}")).get_result(&mut conn).map_err(sqlite_error)?;
    if !got.journal_mode.eq_ignore_ascii_case(want) {
        tracing::warn!(
            path = %url,
            wanted = want,
            got = %got.journal_mode,
            "SQLite did not switch the journal mode (another connection may hold the database open)"
        );
    }
    Ok(conn)
}

/// A connection of its own for maintenance beside the writer (the WAL checkpoints of a cleanup): the common
/// pragmas, nothing else.
pub fn plain(cfg: &SqliteConfig) -> Result<SqliteConnection> {
    let url = url(cfg)?;
    let mut conn = SqliteConnection::establish(&url)
        .map_err(|e| Error::unavailable(format!("cannot open SQLite database {url}: {e}")))?;
    conn.batch_execute(&common_pragmas(cfg)).map_err(sqlite_error)?;
    Ok(conn)
}

#[derive(Debug)]
struct ReaderPragmas(String);

impl CustomizeConnection<SqliteConnection, diesel::r2d2::Error> for ReaderPragmas {
    fn on_acquire(&self, conn: &mut SqliteConnection) -> Result<(), diesel::r2d2::Error> {
        conn.batch_execute(&self.0).map_err(diesel::r2d2::Error::QueryError)
    }
}

/// The read pool's state for the metrics, kept with atomics by r2d2's event hooks, so that a scrape never
/// takes the pool's lock.
#[derive(Debug, Default)]
pub struct ReadGauges {
    /// Connections established and not closed yet.
    open: AtomicU64,
    /// Connections checked out by a read.
    checked_out: AtomicU64,
    /// Reads waiting in `pool.get()` for a connection.
    pub waiting: WaitGauge,
}

impl ReadGauges {
    /// Takes a connection without waiting, counted as `pool.get()`'s are: r2d2 reports no checkout event for
    /// `try_get`, but does report the checkin when the connection goes back, so without this the count
    /// would wrap below zero.
    pub fn try_get(
        &self,
        pool: &ReadPool,
    ) -> Option<diesel::r2d2::PooledConnection<ConnectionManager<SqliteConnection>>> {
        let conn = pool.try_get()?;
        self.checked_out.fetch_add(1, Ordering::Relaxed);
        Some(conn)
    }

    pub fn active(&self) -> u64 {
        self.checked_out.load(Ordering::Relaxed)
    }

    /// Open connections nobody has checked out (the counters are read one after the other, so a connection
    /// moving meanwhile may be missed by one scrape, never counted twice).
    pub fn idle(&self) -> u64 {
        let checked_out = self.checked_out.load(Ordering::Relaxed);
        self.open.load(Ordering::Relaxed).saturating_sub(checked_out)
    }
}

#[derive(Debug)]
struct Events(Arc<ReadGauges>);

impl HandleEvent for Events {
    fn handle_acquire(&self, _: AcquireEvent) {
        self.0.open.fetch_add(1, Ordering::Relaxed);
    }

    fn handle_release(&self, _: ReleaseEvent) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }

    fn handle_checkout(&self, _: CheckoutEvent) {
        self.0.checked_out.fetch_add(1, Ordering::Relaxed);
    }

    fn handle_checkin(&self, _: CheckinEvent) {
        self.0.checked_out.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Read-only connections for queries; they never take the write lock. `gauges` follows the pool's
/// connections for the metrics.
pub fn read_pool(cfg: &SqliteConfig, gauges: Arc<ReadGauges>) -> Result<ReadPool> {
    let url = url(cfg)?;
    Pool::builder()
        .event_handler(Box::new(Events(gauges)))
        .max_size(cfg.read_pool_size)
        .min_idle(Some(1))
        // Connections are local files: no `SELECT 1` round before every checkout.
        .test_on_check_out(false)
        .connection_timeout(std::time::Duration::from_millis(cfg.busy_timeout_ms.max(1000)))
        .connection_customizer(Box::new(ReaderPragmas(format!(
            "{} PRAGMA query_only = ON;",
            common_pragmas(cfg)
        ))))
        .build(ConnectionManager::new(url.clone()))
        .map_err(|e| Error::unavailable(format!("cannot open SQLite database {url}: {e}")))
}

#[cfg(test)]
mod tests {
    use std::ptr;

    use libsqlite3_sys as ffi;

    use super::library_mode;

    const CHILD: &str = "PARALLAX_TEST_LIBRARY_MODE_CHILD";

    /// The library's mode is process-wide and fixed by whichever connection is opened first, and the other unit
    /// tests of this binary open connections on parallel threads: so the test runs itself again in a fresh
    /// process of this test binary (marked by an environment variable), where [`library_mode`] comes first as
    /// it does in the plugin.
    #[test]
    fn connections_are_opened_without_the_connection_mutex_and_memory_statistics() {
        const NAME: &str =
            "sqlite::connection::tests::connections_are_opened_without_the_connection_mutex_and_memory_statistics";
        if std::env::var_os(CHILD).is_none() {
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", NAME, "--test-threads", "1"])
                .env(CHILD, "1")
                .output()
                .unwrap();
            let text =
                format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            assert!(
                out.status.success() && text.contains("1 passed"),
                "the check in a fresh process failed:\n{text}"
            );
            return;
        }
        library_mode();
        // SAFETY: a private in-memory connection, opened and closed here.
        unsafe {
            let mut db = ptr::null_mut();
            let rc = ffi::sqlite3_open_v2(
                c":memory:".as_ptr(),
                &mut db,
                ffi::SQLITE_OPEN_READWRITE | ffi::SQLITE_OPEN_CREATE,
                ptr::null(),
            );
            assert_eq!(rc, ffi::SQLITE_OK);
            // Multi-thread mode: a connection has no mutex of its own.
            assert!(ffi::sqlite3_db_mutex(db).is_null(), "the connection has a mutex: serialized mode");
            // No memory statistics: nothing is counted however much is allocated.
            let p = ffi::sqlite3_malloc(1 << 20);
            let (mut now, mut peak) = (0i64, 0i64);
            ffi::sqlite3_status64(ffi::SQLITE_STATUS_MEMORY_USED, &mut now, &mut peak, 0);
            ffi::sqlite3_free(p);
            assert_eq!((now, peak), (0, 0), "SQLite counts its memory");
            ffi::sqlite3_close(db);
        }
    }
}
