//! The single SQLite writer. Every write in the process goes through one connection on one thread, which
//! takes whatever jobs are queued, runs each in its own savepoint inside one `BEGIN IMMEDIATE` transaction, and
//! commits the group once. Callers are answered only after the commit, so an acknowledged write is durable
//! (to the configured `synchronous` level), and concurrent callers never see "database is locked" from each
//! other. A failing job rolls back its own savepoint and nothing else.

use std::{
    panic::{catch_unwind, AssertUnwindSafe},
    sync::Mutex,
    thread::JoinHandle,
};

use diesel::{connection::Connection, sqlite::SqliteConnection};
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};

/// Most jobs committed together.
const MAX_GROUP: usize = 512;
/// Queue depth before callers wait (back-pressure instead of unbounded memory).
const QUEUE: usize = 8192;

/// One write of a group: `run` inside the group transaction, then `finish` with the commit's outcome.
trait GroupWork: Send {
    fn run(&mut self, conn: &mut SqliteConnection);
    fn finish(self: Box<Self>, commit: Result<()>);
}

struct Work<T, F> {
    what: &'static str,
    f: Option<F>,
    outcome: Option<Result<T>>,
    done: oneshot::Sender<Result<T>>,
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
        self.outcome = Some(conn.transaction(|conn| match catch_unwind(AssertUnwindSafe(|| f(conn))) {
            Ok(r) => r,
            Err(payload) => Err(Error::from_panic(payload, what)),
        }));
    }

    fn finish(self: Box<Self>, commit: Result<()>) {
        let result = match (commit, self.outcome) {
            (Err(e), _) => Err(e),
            (Ok(()), Some(r)) => r,
            (Ok(()), None) => {
                Err(Error::internal("the SQLite writer committed a group without running a job"))
            }
        };
        let _ = self.done.send(result);
    }
}

type GroupJob = Box<dyn GroupWork>;
type SoloJob = Box<dyn FnOnce(&mut SqliteConnection) + Send>;

enum Job {
    /// A write that may share a transaction with others.
    Group(GroupJob),
    /// Runs alone, outside any transaction (migrations manage their own).
    Solo(SoloJob),
}

pub struct Writer {
    tx: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Writer {
    pub fn start(conn: SqliteConnection) -> Result<Self> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let thread = std::thread::Builder::new()
            .name("parallax-sqlite-writer".into())
            .spawn(move || run(conn, rx))
            .map_err(|e| Error::internal(format!("cannot start the SQLite writer thread: {e}")))?;
        Ok(Writer { tx: Mutex::new(Some(tx)), thread: Mutex::new(Some(thread)) })
    }

    /// Runs `f` in a savepoint of the next group transaction; resolves after the group commits.
    pub async fn write<T, F>(&self, what: &'static str, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut SqliteConnection) -> Result<T> + Send + 'static,
    {
        let (done, result) = oneshot::channel::<Result<T>>();
        let job: GroupJob = Box::new(Work { what, f: Some(f), outcome: None, done });
        self.send(Job::Group(job)).await?;
        result.await.map_err(|_| Error::unavailable("the SQLite writer stopped before answering"))?
    }

    /// Runs `f` alone on the writer connection, outside any transaction.
    pub async fn solo<T, F>(&self, what: &'static str, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut SqliteConnection) -> Result<T> + Send + 'static,
    {
        let (done, result) = oneshot::channel::<Result<T>>();
        let job: SoloJob = Box::new(move |conn| {
            let r = match catch_unwind(AssertUnwindSafe(|| f(conn))) {
                Ok(r) => r,
                Err(payload) => Err(Error::from_panic(payload, what)),
            };
            let _ = done.send(r);
        });
        self.send(Job::Solo(job)).await?;
        result.await.map_err(|_| Error::unavailable("the SQLite writer stopped before answering"))?
    }

    async fn send(&self, job: Job) -> Result<()> {
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let tx = tx.ok_or_else(|| Error::unavailable("the SQLite storage is shut down"))?;
        tx.send(job).await.map_err(|_| Error::unavailable("the SQLite writer has stopped"))
    }

    /// Lets the queued jobs finish, then stops the thread (blocking until it has).
    pub fn stop(&self) {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(mut conn: SqliteConnection, mut rx: mpsc::Receiver<Job>) {
    let mut group: Vec<GroupJob> = Vec::with_capacity(MAX_GROUP);
    let mut pending_solo: Option<SoloJob> = None;
    loop {
        if let Some(solo) = pending_solo.take() {
            solo(&mut conn);
        }
        let Some(first) = rx.blocking_recv() else { return };
        match first {
            Job::Solo(solo) => {
                solo(&mut conn);
                continue;
            }
            Job::Group(job) => group.push(job),
        }
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(Job::Group(job)) => group.push(job),
                Ok(Job::Solo(solo)) => {
                    pending_solo = Some(solo);
                    break;
                }
                Err(_) => break,
            }
        }
        commit_group(&mut conn, &mut group);
    }
}

fn commit_group(conn: &mut SqliteConnection, group: &mut Vec<GroupJob>) {
    let outcome: Result<()> = conn.immediate_transaction(|conn| {
        for job in group.iter_mut() {
            job.run(conn);
        }
        Ok::<(), Error>(())
    });
    if let Err(e) = &outcome {
        tracing::error!(error = %e, jobs = group.len(), "SQLite group commit failed");
    }
    for job in group.drain(..) {
        job.finish(outcome.clone());
    }
}
