//! The single SQLite writer. Every write in the process goes through one connection on one thread
//! ([`crate::writer_thread`]), which takes whatever jobs are queued, runs each in its own savepoint inside one
//! `BEGIN IMMEDIATE` transaction, and commits the group once. Callers are answered only after the commit, so an
//! acknowledged write is durable (to the configured `synchronous` level), and concurrent callers never see
//! "database is locked" from each other. A failing job rolls back its own savepoint and nothing else; a panic
//! while the group runs (in a job, or in the search indexing after them) rolls back the group's transaction and
//! fails that group alone, and the writer goes on with the next one.

use std::panic::{catch_unwind, AssertUnwindSafe};

use diesel::{
    connection::{AnsiTransactionManager, Connection, TransactionManager},
    sqlite::SqliteConnection,
};

use super::search;
use crate::{
    error::{Error, Result, SqliteFailure},
    writer_thread::{run_solo, Answer, Handlers, Msg, WriterThread},
};

/// One write of a group: `run` inside the group transaction, then `finish` with the commit's outcome.
trait GroupWork: Send {
    fn run(&mut self, conn: &mut SqliteConnection);
    fn finish(self: Box<Self>, commit: Result<()>);
}

struct Work<T, F> {
    what: &'static str,
    f: Option<F>,
    outcome: Option<Result<T>>,
    done: Answer<T>,
}

impl<T, F> GroupWork for Work<T, F>
where
    T: Send + 'static,
    F: FnOnce(&mut SqliteConnection) -> Result<T> + Send + 'static,
{
    fn run(&mut self, conn: &mut SqliteConnection) {
        let Some(f) = self.f.take() else { return };
        let what = self.what;
        // `transaction` inside the group's transaction is a savepoint: a failed job undoes only itself.
        let outcome = conn.transaction(|conn| match catch_unwind(AssertUnwindSafe(|| f(conn))) {
            Ok(r) => r.map_err(SqliteFailure),
            Err(payload) => Err(SqliteFailure(Error::from_panic(payload, what))),
        });
        self.outcome = Some(outcome.map_err(Error::from));
    }

    fn finish(self: Box<Self>, commit: Result<()>) {
        let result = match (commit, self.outcome) {
            (Err(e), _) => Err(e),
            (Ok(()), Some(r)) => r,
            (Ok(()), None) => {
                Err(Error::internal("the SQLite writer committed a group without running a job"))
            }
        };
        self.done.send(result);
    }
}

type GroupJob = Box<dyn GroupWork>;
type SoloJob = Box<dyn FnOnce(&mut SqliteConnection) + Send>;

/// What the writer thread owns.
struct State {
    conn: SqliteConnection,
    /// Indexes the group's queued executions before the commit: [`search::index_queued`] (tests inject a
    /// panicking one).
    index: fn(&mut SqliteConnection) -> Result<()>,
}

pub struct Writer {
    thread: WriterThread<GroupJob, SoloJob>,
    /// The database file, for errors about its disk.
    path: std::path::PathBuf,
}

impl Writer {
    pub fn start(conn: SqliteConnection, path: &std::path::Path) -> Result<Self> {
        let mut w = Self::start_with(conn, search::index_queued)?;
        w.path = path.to_path_buf();
        Ok(w)
    }

    fn start_with(conn: SqliteConnection, index: fn(&mut SqliteConnection) -> Result<()>) -> Result<Self> {
        let handlers = Handlers {
            group: commit_group,
            fail: |job: GroupJob, e| job.finish(Err(e)),
            solo: |s: &mut State, job: SoloJob| {
                job(&mut s.conn);
                // A solo job that panicked inside a transaction (caught by `run_solo`) left it open.
                roll_back_open_transaction(&mut s.conn);
            },
            recover: |s: &mut State| roll_back_open_transaction(&mut s.conn),
        };
        let state = State { conn, index };
        Ok(Writer {
            thread: WriterThread::start("the SQLite writer", "parallax-sqlite-writer", state, handlers)?,
            path: std::path::PathBuf::new(),
        })
    }

    /// Runs `f` in a savepoint of the next group transaction; resolves after the group commits.
    pub async fn write<T, F>(&self, what: &'static str, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut SqliteConnection) -> Result<T> + Send + 'static,
    {
        let (done, result) = self.thread.reply::<T>();
        self.thread.send(Msg::Group(Box::new(Work { what, f: Some(f), outcome: None, done }))).await?;
        self.thread.answer(result).await.map_err(|e| disk_full(e, &self.path))
    }

    /// Runs `f` alone on the writer connection, outside any transaction.
    pub async fn solo<T, F>(&self, what: &'static str, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut SqliteConnection) -> Result<T> + Send + 'static,
    {
        let (done, result) = self.thread.reply::<T>();
        self.thread.send(Msg::Solo(Box::new(move |conn| run_solo(conn, what, f, done)))).await?;
        self.thread.answer(result).await.map_err(|e| disk_full(e, &self.path))
    }

    /// Whether a group is running and how many writes wait for the writer (for the metrics).
    pub fn load(&self) -> crate::writer_thread::Load {
        self.thread.load()
    }

    /// Lets the queued jobs finish, then stops the thread (blocking until it has).
    pub fn stop(&self) {
        self.thread.stop();
    }

    /// Closes the queue; waits only if idle (the connection is closed when this returns), see `WriterThread::close`.
    pub fn close(&self) {
        self.thread.close();
    }
}

fn commit_group(state: &mut State, group: &mut Vec<GroupJob>) {
    let index = state.index;
    // `SqliteFailure`: a busy `BEGIN IMMEDIATE` or a failed `COMMIT` converts as SQLite's error (`timeout`, …).
    let outcome = state.conn.immediate_transaction(|conn| -> Result<(), SqliteFailure> {
        // Diesel rolls back only when this closure returns an error: a panic unwinding through it would leave
        // the transaction open, and every later group would run inside it, never committed. So a panic here
        // becomes this group's error (each job already catches its own).
        catch_unwind(AssertUnwindSafe(|| {
            for job in group.iter_mut() {
                job.run(conn);
            }
            // The group's executions enter the full-text index in the same transaction, all at once.
            index(conn).map_err(SqliteFailure)
        }))
        .unwrap_or_else(|payload| {
            let panic = Error::from_panic(payload, "the SQLite writer's group commit");
            Err(SqliteFailure(Error::panicked(format!(
                "{}; the group's {} write(s) were rolled back, none was committed (retry them); the writer goes on",
                panic.0.message,
                group.len()
            ))))
        })
    });
    let outcome: Result<()> = outcome.map_err(Error::from);
    if let Err(e) = &outcome {
        tracing::error!(error = %e, jobs = group.len(), "SQLite group commit failed");
    }
    for job in group.drain(..) {
        job.finish(outcome.clone());
    }
}

/// SQLite's "database or disk is full" (`SQLITE_FULL`), said as what it is: the disk holding the database file
/// (named, with its free space) has no room; nothing of the write was committed. Any other error as it is.
fn disk_full(e: Error, path: &std::path::Path) -> Error {
    // SAFETY: sqlite3_errstr returns a pointer to a static, NUL-terminated string for any code.
    let full =
        unsafe { std::ffi::CStr::from_ptr(libsqlite3_sys::sqlite3_errstr(libsqlite3_sys::SQLITE_FULL)) };
    let full = full.to_str().unwrap_or("database or disk is full");
    if !e.0.message.contains(full) {
        return e;
    }
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    let free = crate::file::durable::free_space(dir).map_or("unknown".to_string(), |b| format!("{b} bytes"));
    Error::unavailable(format!(
        "the disk holding the SQLite database {} is full (SQLite: {full}; free now: {free}): the write was not \
         committed, and what was acknowledged before is intact; free space on that filesystem, then write again",
        path.display()
    ))
}

/// After a panic (one that escaped a group from inside diesel itself, or a solo job's): rolls back whatever
/// transaction and savepoints diesel still counts as open, so that the next group's `BEGIN IMMEDIATE` starts a
/// real transaction again. Nothing open: no statement runs.
fn roll_back_open_transaction(conn: &mut SqliteConnection) {
    for _ in 0..64 {
        match AnsiTransactionManager::rollback_transaction(conn) {
            Ok(()) => {}
            Err(diesel::result::Error::NotInTransaction) => return,
            Err(e) => {
                tracing::error!(error = %e, "the SQLite writer could not roll back after a panic");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use diesel::{sql_query, RunQueryDsl};
    use parallax_storage_abi::ErrorKind;

    use super::*;

    fn open(dir: &tempfile::TempDir) -> SqliteConnection {
        let path = dir.path().join("w.db");
        let mut conn = SqliteConnection::establish(path.to_str().unwrap()).unwrap();
        sql_query("CREATE TABLE IF NOT EXISTS t (x INTEGER NOT NULL)").execute(&mut conn).unwrap();
        conn
    }

    /// What another connection sees: only committed rows.
    fn committed(dir: &tempfile::TempDir) -> Vec<i64> {
        let conn = rusqlite::Connection::open(dir.path().join("w.db")).unwrap();
        let mut stmt = conn.prepare("SELECT x FROM t ORDER BY x").unwrap();
        let rows = stmt.query_map([], |r| r.get(0)).unwrap();
        rows.map(Result::unwrap).collect()
    }

    /// Stands in for the search indexing: panics when the group wrote a 13.
    fn index_panics_on_13(conn: &mut SqliteConnection) -> Result<()> {
        let n: i64 = diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(
            "(SELECT count(*) FROM t WHERE x = 13)",
        ))
        .get_result(conn)?;
        if n > 0 {
            panic!("injected failure while indexing");
        }
        Ok(())
    }

    async fn insert(w: &Writer, x: i64) -> Result<()> {
        w.write("insert", move |conn| {
            sql_query(format!("INSERT INTO t (x) VALUES ({x})")).execute(conn)?;
            Ok(())
        })
        .await
    }

    #[tokio::test]
    async fn a_panic_while_indexing_rolls_back_its_group_and_later_writes_commit() {
        let dir = tempfile::tempdir().unwrap();
        let w = Writer::start_with(open(&dir), index_panics_on_13).unwrap();
        insert(&w, 1).await.unwrap();

        let err = insert(&w, 13).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Panicked, "{err}");
        let msg = err.0.message.to_string();
        assert!(msg.contains("the SQLite writer's group commit: injected failure while indexing"), "{msg}");
        assert!(msg.contains("rolled back"), "{msg}");

        insert(&w, 2).await.unwrap();
        insert(&w, 3).await.unwrap();
        // Committed for real (another connection sees them), and the panicking group left nothing behind.
        assert_eq!(committed(&dir), [1, 2, 3]);
        w.stop();
    }

    #[tokio::test]
    async fn a_solo_job_that_panics_inside_a_transaction_leaves_none_open() {
        let dir = tempfile::tempdir().unwrap();
        let w = Writer::start_with(open(&dir), index_panics_on_13).unwrap();
        let err = w
            .solo("a migration", |conn| {
                conn.immediate_transaction(|conn| -> Result<()> {
                    sql_query("INSERT INTO t (x) VALUES (7)").execute(conn)?;
                    panic!("injected failure in a migration");
                })
            })
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Panicked, "{err}");
        insert(&w, 1).await.unwrap();
        assert_eq!(committed(&dir), [1]);
        w.stop();
    }

    #[test]
    fn recovery_closes_a_transaction_a_panic_left_open() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open(&dir);
        let escaped = catch_unwind(AssertUnwindSafe(|| {
            conn.immediate_transaction(|conn| -> Result<()> {
                sql_query("INSERT INTO t (x) VALUES (13)").execute(conn)?;
                panic!("unwinds through diesel");
            })
        }));
        assert!(escaped.is_err());

        roll_back_open_transaction(&mut conn);
        conn.immediate_transaction(|conn| sql_query("INSERT INTO t (x) VALUES (1)").execute(conn)).unwrap();
        // Without the rollback the second "transaction" is a savepoint inside the first one: never committed.
        assert_eq!(committed(&dir), [1]);
    }
}
